//! The soak phase: one server under mixed load for `--soak-minutes` (20 by default), as a day
//! of use looks: the 13 SSB queries, exports in every format, Kylin's synchronous query, bad
//! SQL, queries stopped while they run, listings and polls, every result downloaded and every
//! query deleted. Reports the server's resident memory and open file descriptors (its own and
//! its worker processes') once warmed up and at the end, and every unexpected answer.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use super::{
    ADMIN, Binaries, Data, Options, children, cores_or_one, delete, download, fresh_data_dir, json,
    queries, spawn_server, status_kib, submit,
};

/// What the server holds at one moment: resident memory and open descriptors, its own plus
/// its worker processes'.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    rss_mib: f64,
    fds: usize,
    processes: usize,
}

fn footprint(pid: u32) -> Footprint {
    let pids: Vec<u32> = std::iter::once(pid).chain(children(pid)).collect();
    let rss_kib: f64 = pids.iter().filter_map(|&p| status_kib(p, "VmRSS:")).sum();
    let fds = pids
        .iter()
        .map(|p| std::fs::read_dir(format!("/proc/{p}/fd")).map_or(0, Iterator::count))
        .sum();
    Footprint {
        rss_mib: rss_kib / 1024.0,
        fds,
        processes: pids.len(),
    }
}

/// Counts of what the clients did, and what went wrong.
#[derive(Default)]
struct Tally {
    queries: AtomicU64,
    exports: AtomicU64,
    sync_queries: AtomicU64,
    invalid: AtomicU64,
    stopped: AtomicU64,
    polls: AtomicU64,
    bytes: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn error(&self, what: String) {
        let mut errors = self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if errors.len() < 1000 {
            errors.push(what);
        }
    }
}

fn status_of(agent: &ureq::Agent, base: &str, id: &str) -> anyhow::Result<Value> {
    json(
        agent
            .get(&format!("{base}/kylin/api/async_query/{id}/status"))
            .set("Authorization", ADMIN)
            .call()?,
    )
}

/// Polls until the query ends; returns its last status.
fn finish(agent: &ureq::Agent, base: &str, id: &str, tally: &Tally) -> anyhow::Result<Value> {
    loop {
        let status = status_of(agent, base, id)?;
        tally.polls.fetch_add(1, Ordering::Relaxed);
        if status["data"]["status"] != "RUNNING" {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `sql` to the end, downloads it and deletes it; fails unless it is SUCCESSFUL.
fn round_trip(
    agent: &ureq::Agent,
    base: &str,
    sql: &str,
    format: &str,
    tally: &Tally,
) -> anyhow::Result<()> {
    let id = submit(agent, base, sql, format)?;
    let status = finish(agent, base, &id, tally)?;
    anyhow::ensure!(status["data"]["status"] == "SUCCESSFUL", "{sql}: {status}");
    tally
        .bytes
        .fetch_add(download(agent, base, &id)?, Ordering::Relaxed);
    delete(agent, base, &id)
}

/// One client's loop: `step` until `stop`; every error is tallied and the client goes on.
fn client(
    stop: &AtomicBool,
    tally: &Tally,
    name: &str,
    mut step: impl FnMut(u64) -> anyhow::Result<()>,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = step(n) {
            tally.error(format!("{name}: {e:#}"));
            std::thread::sleep(Duration::from_millis(100));
        }
        n += 1;
    }
}

pub(super) fn phase(
    options: &Options,
    binaries: &Binaries,
    data: &Data,
    emit: &mut impl FnMut(String),
) -> anyhow::Result<()> {
    let minutes = options.soak_minutes;
    let data_dir = fresh_data_dir(data, "soak", "")?;
    let server = spawn_server(&binaries.jemalloc, &data_dir, cores_or_one(), &[])?;
    let pid = server.child.id();
    let base = server.base.clone();
    let ssb = queries()?;
    let tally = Tally::default();
    let stop = AtomicBool::new(false);
    let duration = Duration::from_secs_f64(minutes * 60.0);
    // The first tenth warms the caches (the engine's, the allocator's, sled's) and starts the
    // worker processes; the figures compare the footprint after it with the one at the end.
    let warm = duration / 10;
    let samples: Mutex<Vec<(f64, Footprint)>> = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        let (base, tally, stop, ssb) = (&base, &tally, &stop, &ssb);
        scope.spawn(move || {
            let agent = ureq::AgentBuilder::new().build();
            client(stop, tally, "ssb", |n| {
                let (_, sql) = &ssb[n as usize % ssb.len()];
                round_trip(&agent, base, sql, "csv", tally)?;
                tally.queries.fetch_add(1, Ordering::Relaxed);
                Ok(())
            });
        });
        scope.spawn(move || {
            let agent = ureq::AgentBuilder::new().build();
            client(stop, tally, "export", |n| {
                let format = ["csv", "parquet", "json", "xlsx"][n as usize % 4];
                let sql = "select * from p_lineorder where lo_orderkey % 20 = 0";
                round_trip(&agent, base, sql, format, tally)?;
                tally.exports.fetch_add(1, Ordering::Relaxed);
                Ok(())
            });
        });
        scope.spawn(move || {
            let agent = ureq::AgentBuilder::new().build();
            client(stop, tally, "sync", |n| {
                let sql = format!(
                    "select d_year, count(*) from dates where d_daynuminyear > {} group by d_year",
                    n % 300
                );
                let body = serde_json::json!({ "sql": sql, "project": "ssb" }).to_string();
                let v = json(
                    agent
                        .post(&format!("{base}/kylin/api/query"))
                        .set("Authorization", ADMIN)
                        .set("Content-Type", "application/json")
                        .send_string(&body)?,
                )?;
                anyhow::ensure!(v["isException"] == false, "sync query: {v}");
                tally.sync_queries.fetch_add(1, Ordering::Relaxed);
                let id = v["queryId"].as_str().context("sync query id")?;
                delete(&agent, base, id)
            });
        });
        scope.spawn(move || {
            let agent = ureq::AgentBuilder::new().build();
            client(stop, tally, "faults", |n| {
                if n % 2 == 0 {
                    let id = submit(&agent, base, "select no_such_column from lineorder", "csv")?;
                    let status = finish(&agent, base, &id, tally)?;
                    anyhow::ensure!(
                        status["data"]["error_code"] == "SPOOL-QUERY-INVALID",
                        "bad SQL: {status}"
                    );
                    tally.invalid.fetch_add(1, Ordering::Relaxed);
                    delete(&agent, base, &id)
                } else {
                    let id = submit(
                        &agent,
                        base,
                        "select * from p_lineorder cross join dates",
                        "csv",
                    )?;
                    std::thread::sleep(Duration::from_millis(300));
                    agent
                        .delete(&format!("{base}/kylin/api/async_query/stop/{id}"))
                        .set("Authorization", ADMIN)
                        .call()?;
                    let status = finish(&agent, base, &id, tally)?;
                    anyhow::ensure!(
                        status["data"]["error_code"] == "SPOOL-QUERY-CANCELLED",
                        "stopped: {status}"
                    );
                    tally.stopped.fetch_add(1, Ordering::Relaxed);
                    delete(&agent, base, &id)
                }
            });
        });
        scope.spawn(move || {
            let agent = ureq::AgentBuilder::new().build();
            client(stop, tally, "list", |_| {
                let v = json(
                    agent
                        .get(&format!("{base}/kylin/api/async_query?limit=100"))
                        .set("Authorization", ADMIN)
                        .call()?,
                )?;
                anyhow::ensure!(v["code"] == "000", "listing: {v}");
                tally.polls.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
                Ok(())
            });
        });
        let (samples, stop) = (&samples, &stop);
        let mut sampled = Duration::ZERO;
        while started.elapsed() < duration {
            std::thread::sleep(Duration::from_millis(200));
            if started.elapsed() >= sampled {
                let at = started.elapsed().as_secs_f64();
                samples
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((at, footprint(pid)));
                sampled += Duration::from_secs(10).min(warm);
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let end = footprint(pid);
    let samples = samples.into_inner().unwrap_or_default();
    let start = samples
        .iter()
        .find(|(at, _)| *at >= warm.as_secs_f64())
        .map_or(end, |(_, f)| *f);
    let peak_rss = samples
        .iter()
        .map(|(_, f)| f.rss_mib)
        .fold(end.rss_mib, f64::max);
    let growth = |a: f64, b: f64| if a > 0.0 { (b - a) / a * 100.0 } else { 0.0 };
    let errors = tally.errors.into_inner().unwrap_or_default();
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    emit(format!(
        "## Soak: {minutes} minutes of mixed load on one server\n\n\
         Five clients at once: the 13 SSB queries in turn; exports of a twentieth of \
         `p_lineorder` as CSV, Parquet, JSON and XLSX; Kylin's synchronous query; bad SQL and \
         queries stopped while they run; listings. Every result is downloaded and every query \
         deleted. Memory and descriptors are the server's plus its worker processes', after the \
         first tenth (warm-up) and at the end.\n\n\
         | | after warm-up ({:.0} s) | end ({:.0} s) | growth |\n|---|---:|---:|---:|\n\
         | resident memory (MiB) | {:.0} | {:.0} | {:+.1} % |\n\
         | open file descriptors | {} | {} | {:+.1} % |\n\
         | processes | {} | {} | |\n\n\
         Peak resident memory {peak_rss:.0} MiB. Done: {} SSB queries, {} exports, {} synchronous \
         queries, {} bad-SQL queries, {} stopped queries, {} status polls and listings, {:.1} GB \
         downloaded. Unexpected answers: {}.\n\n",
        warm.as_secs_f64(),
        duration.as_secs_f64(),
        start.rss_mib,
        end.rss_mib,
        growth(start.rss_mib, end.rss_mib),
        start.fds,
        end.fds,
        growth(start.fds as f64, end.fds as f64),
        start.processes,
        end.processes,
        n(&tally.queries),
        n(&tally.exports),
        n(&tally.sync_queries),
        n(&tally.invalid),
        n(&tally.stopped),
        n(&tally.polls),
        n(&tally.bytes) as f64 / 1e9,
        if errors.is_empty() {
            "none".to_owned()
        } else {
            format!("{} (first: {})", errors.len(), errors[0])
        },
    ));
    Ok(())
}
