//! The shared-state phase: three servers on one PostgreSQL database and one S3 bucket, next
//! to one embedded server (sled, local files), measured the same way in the same run.

use std::time::{Duration, Instant};

use super::load::{self, LoadResult};
use super::{
    ADMIN, Binaries, CLIENTS, Data, EXPORT_SQL, Options, fresh_data_dir, mb_per_s, spawn_server,
    start_server, submit, wait,
};
use crate::services::{self, Fsync, Services};

/// Processes of the shared service.
const PROCESSES: usize = 3;

/// What one deployment measured.
struct Figures {
    polls: LoadResult,
    submissions: LoadResult,
    export_seconds: f64,
    export_bytes: u64,
}

/// Polls, then the CSV export, then submissions (last, since the queries they queue keep the
/// workers busy afterwards), spreading the clients over `bases`.
fn measure(options: &Options, bases: &[String]) -> anyhow::Result<Figures> {
    let agent = ureq::AgentBuilder::new().build();
    let first = &bases[0];
    let finished = submit(&agent, first, "select d_year from dates limit 1", "csv")?;
    wait(&agent, first, &finished)?;
    let duration = Duration::from_secs(options.load_seconds);
    let status_urls: Vec<String> = bases
        .iter()
        .map(|b| format!("{b}/kylin/api/async_query/{finished}/status"))
        .collect();
    let polls = load::run_spread(CLIENTS, duration, &|client: usize, agent: &ureq::Agent| {
        agent
            .get(&status_urls[client % status_urls.len()])
            .set("Authorization", ADMIN)
            .call()
            .is_ok_and(|r| r.status() == 200 && r.into_string().is_ok())
    })?;

    let started = Instant::now();
    let id = submit(&agent, first, EXPORT_SQL, "csv")?;
    wait(&agent, &bases[bases.len() - 1], &id)?;
    let export_seconds = started.elapsed().as_secs_f64();
    let export_bytes = super::result_size(&agent, first, &id)?;

    let submit_urls: Vec<String> = bases
        .iter()
        .map(|b| format!("{b}/kylin/api/async_query"))
        .collect();
    let body = serde_json::json!({ "sql": "select d_year from dates limit 1", "project": "ssb" })
        .to_string();
    let submissions =
        load::run_spread(CLIENTS, duration, &|client: usize, agent: &ureq::Agent| {
            agent
                .post(&submit_urls[client % submit_urls.len()])
                .set("Authorization", ADMIN)
                .set("Content-Type", "application/json")
                .send_string(&body)
                .is_ok_and(|r| r.status() == 200 && r.into_string().is_ok())
        })?;
    Ok(Figures {
        polls,
        submissions,
        export_seconds,
        export_bytes,
    })
}

pub(super) fn phase(
    options: &Options,
    binaries: &Binaries,
    data: &Data,
    emit: &mut impl FnMut(String),
    charts: &mut Vec<super::charts::BarChart>,
) -> anyhow::Result<()> {
    let embedded = {
        let server = start_server(&binaries.jemalloc, data, "shared-embedded", 1)?;
        measure(options, std::slice::from_ref(&server.base))?
    };

    // PostgreSQL as production runs it: fsync on.
    let backends = Services::start_stores(Fsync::On)?;
    let env = backends.env();
    let value = |name: &str| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let extra = format!(
        "job_store = \"{}\"\nresult_store = \"s3://{}/bench\"\ns3_endpoint = \"{}\"\n\
         s3_allow_http = true\n",
        value("SPOOL_TEST_POSTGRES"),
        services::BUCKET,
        value("SPOOL_TEST_S3_ENDPOINT"),
    );
    let dir = fresh_data_dir(data, "shared", &extra)?;
    let servers = (0..PROCESSES)
        .map(|_| spawn_server(&binaries.jemalloc, &dir, 1, &env))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let shared = measure(options, &bases)?;
    let peak = servers
        .iter()
        .map(super::RunningServer::peak_rss_mib)
        .fold(0.0, f64::max);
    drop(servers);
    backends.stop();

    let row = |what: &str, embedded: &LoadResult, shared: &LoadResult| {
        format!(
            "| {what} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {} |\n",
            embedded.per_second(),
            embedded.p99_ms,
            shared.per_second(),
            shared.p50_ms,
            shared.p99_ms,
            shared.errors + embedded.errors,
        )
    };
    emit(format!(
        "## Shared state: {PROCESSES} processes on PostgreSQL + S3 (SeaweedFS) against one embedded process\n\n\
         {CLIENTS} clients on keep-alive connections, {} s each, spread over the processes; one \
         worker per process; PostgreSQL with fsync on; clients, servers, PostgreSQL and SeaweedFS \
         share the {} cores.\n\n\
         | calls | embedded requests/s | embedded p99 (ms) | shared requests/s | shared p50 (ms) | shared p99 (ms) | errors |\n\
         |---|---:|---:|---:|---:|---:|---:|\n{}{}\n\
         | `{EXPORT_SQL}` as CSV | seconds | bytes | MB/s |\n|---|---:|---:|---:|\n\
         | embedded (sled, local files) | {:.2} | {} | {:.0} |\n\
         | shared (PostgreSQL, S3) | {:.2} | {} | {:.0} |\n\n\
         Shared export at {:.0} % of the embedded speed. Peak RSS of a shared process: {peak:.0} MiB.\n\n",
        options.load_seconds,
        super::cores_or_one(),
        row("status polls", &embedded.polls, &shared.polls),
        row(
            "submissions (durable before the answer)",
            &embedded.submissions,
            &shared.submissions
        ),
        embedded.export_seconds,
        embedded.export_bytes,
        mb_per_s(embedded.export_bytes, embedded.export_seconds),
        shared.export_seconds,
        shared.export_bytes,
        mb_per_s(shared.export_bytes, shared.export_seconds),
        100.0 * embedded.export_seconds / shared.export_seconds,
    ));
    charts.push(super::charts::BarChart {
        name: "shared-calls".into(),
        title: format!("One embedded process against {PROCESSES} on PostgreSQL + S3 (requests/s)"),
        y_label: "requests/s".into(),
        groups: vec!["status polls".into(), "submissions".into()],
        series: vec![
            (
                "embedded".into(),
                vec![
                    embedded.polls.per_second(),
                    embedded.submissions.per_second(),
                ],
            ),
            (
                "shared".into(),
                vec![shared.polls.per_second(), shared.submissions.per_second()],
            ),
        ],
    });
    charts.push(super::charts::BarChart {
        name: "shared-export".into(),
        title: format!("{EXPORT_SQL} as CSV (MB/s)"),
        y_label: "MB/s".into(),
        groups: vec![
            "embedded (sled, files)".into(),
            "shared (PostgreSQL, S3)".into(),
        ],
        series: vec![(
            "CSV export".into(),
            vec![
                mb_per_s(embedded.export_bytes, embedded.export_seconds),
                mb_per_s(shared.export_bytes, shared.export_seconds),
            ],
        )],
    });
    Ok(())
}
