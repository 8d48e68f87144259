//! Projects on a real Spark cluster, through the real server: a standalone master, two workers
//! and a Spark Connect server on loopback, started by `cargo xtask ci` (which sets
//! `SPOOL_TEST_SPARK_REMOTE`, `SPOOL_TEST_SPARK_UI` and `SPOOL_TEST_SPARK_WORKERS`).
//!
//! Each server gets the SSB sample twice: `ssb` on Polars and `ssb_spark` (the same files, and a
//! `project.toml` with `engine = "spark"`), so one run compares the two engines.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use spool_ssb::Ssb;
use spool_ssb::answers::{QUERIES, answers, check};

use crate::harness::{Server, xlsx_cells};

const SF: f64 = 0.02;

/// The suite shares one cluster, and some tests look at every job it runs (a stop leaves none
/// running) or kill its executors: they take turns.
static CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn cluster_turn() -> std::sync::MutexGuard<'static, ()> {
    CLUSTER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the Spark tests need a Spark cluster with a Connect server. \
             `cargo xtask ci` installs pyspark and starts one; for a shell, \
             `eval \"$(cargo xtask services start)\"` does the same"
        )
    })
}

/// Copies the server's `ssb` sample into a project `ssb_spark` that runs on Spark.
pub(crate) fn add_spark_project(data_dir: &Path) {
    let from = data_dir.join("projects/ssb");
    let to = data_dir.join("projects/ssb_spark");
    if to.exists() {
        return;
    }
    let staging = data_dir.join("projects/.ssb_spark.tmp");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).expect("mkdir");
    for entry in std::fs::read_dir(&from).expect("the ssb sample") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), staging.join(entry.file_name())).expect("copy");
    }
    std::fs::write(staging.join("project.toml"), "engine = \"spark\"\n").expect("project.toml");
    std::fs::rename(&staging, &to).expect("rename");
}

/// A server with `ssb` on Polars and `ssb_spark` on the test cluster.
fn server(extra: &str) -> Server {
    let remote = env("SPOOL_TEST_SPARK_REMOTE");
    let server = Server::start(&format!(
        "workers = 2\nsample_sf = {SF}\nspark_remote = \"{remote}\"\n{extra}"
    ));
    add_spark_project(&server.data_dir);
    server
}

fn rows_of(csv: &str) -> Vec<Vec<String>> {
    csv.lines()
        .map(|line| line.split(',').map(str::to_owned).collect())
        .collect()
}

/// Submits a JSON body and returns the query id.
fn submit(server: &Server, body: &Value) -> String {
    let (code, v) = server.json("POST", "/kylin/api/async_query", Some(&body.to_string()));
    assert_eq!(code, 200, "{v}");
    v["data"]["queryID"].as_str().expect("id").to_owned()
}

fn download(server: &Server, id: &str, query: &str) -> Vec<u8> {
    let res = server.http_get(&format!("/kylin/api/async_query/{id}/result{query}"), &[]);
    assert_eq!(res.status().as_u16(), 200, "download of {id}");
    res.bytes().expect("body").to_vec()
}

#[test]
fn the_13_ssb_queries_on_spark_give_the_oracles_rows() {
    let _turn = cluster_turn();
    let server = server("");
    let ssb = Ssb::new(SF).expect("scale");
    let answers = answers(&ssb);
    for ((name, sql), (_, answer)) in QUERIES.iter().zip(&answers) {
        for (variant, text) in [
            ("as written", sql.to_string()),
            ("on P_LINEORDER", sql.replace("lineorder", "p_lineorder")),
        ] {
            let before = spark_jobs("succeeded");
            let csv = server.run(&text, "ssb_spark");
            assert!(
                spark_jobs("succeeded") > before,
                "{name} {variant} ran on the cluster"
            );
            if let Err(e) = check(answer, &rows_of(&csv)) {
                panic!("{name} {variant} on Spark: {e}\n{text}");
            }
        }
    }
}

#[test]
fn spark_and_polars_write_the_same_files() {
    let _turn = cluster_turn();
    let server = server("");
    let sql = "select * from p_lineorder order by lo_orderkey, lo_linenumber";
    for (format, identical) in [
        ("csv", true),
        ("json", true),
        ("parquet", false),
        ("xlsx", false),
    ] {
        let mut results = Vec::new();
        for project in ["ssb", "ssb_spark"] {
            let before = spark_jobs("succeeded");
            let id = submit(
                &server,
                &serde_json::json!({"sql": sql, "project": project, "format": format, "include_header": true}),
            );
            let v = server.wait(&id);
            assert_eq!(
                v["data"]["status"], "SUCCESSFUL",
                "{format} on {project}: {v}"
            );
            assert_eq!(
                spark_jobs("succeeded") > before,
                project == "ssb_spark",
                "{format}: only the Spark project runs on the cluster"
            );
            results.push(id);
        }
        let (polars, spark) = (&results[0], &results[1]);
        if identical {
            let (a, b) = (download(&server, polars, ""), download(&server, spark, ""));
            assert!(a.len() > 100_000, "a real export: {} bytes", a.len());
            assert!(
                a == b,
                "{format}: the same bytes from both engines ({} vs {} bytes; first difference at {:?})",
                a.len(),
                b.len(),
                a.iter().zip(&b).position(|(x, y)| x != y)
            );
        } else if format == "parquet" {
            // Parquet files carry their writer's metadata; their rows must match, read back
            // through the server's own conversion.
            let (a, b) = (
                download(&server, polars, "?format=csv&include_header=true"),
                download(&server, spark, "?format=csv&include_header=true"),
            );
            assert!(a == b, "parquet: the same rows from both engines");
        } else {
            let (a, b) = (
                xlsx_cells(&download(&server, polars, "")),
                xlsx_cells(&download(&server, spark, "")),
            );
            assert!(a.len() > 1_000, "{} rows", a.len());
            assert!(a == b, "xlsx: the same cells from both engines");
        }
    }
}

/// Jobs of the Connect server's driver in `status` (`running`, `succeeded`), from its UI's
/// REST API.
fn spark_jobs(status: &str) -> usize {
    let ui = env("SPOOL_TEST_SPARK_UI");
    let client = reqwest::blocking::Client::new();
    let apps: Value = client
        .get(format!("{ui}/api/v1/applications"))
        .send()
        .and_then(|r| r.json())
        .expect("the driver's UI");
    let app = apps[0]["id"].as_str().expect("an application").to_owned();
    let jobs: Value = client
        .get(format!(
            "{ui}/api/v1/applications/{app}/jobs?status={status}"
        ))
        .send()
        .and_then(|r| r.json())
        .expect("jobs");
    jobs.as_array().map_or(0, Vec::len)
}

fn running_spark_jobs() -> usize {
    spark_jobs("running")
}

/// A query that keeps the cluster busy for several seconds, even warm: a self-join of about
/// 360 million pairs at SF 0.02 (120,000 rows, 40 suppliers). Its answer is
/// [`HEAVY_BY_KEY`]'s.
const HEAVY: &str = "select count(*), sum(a.lo_quantity * b.lo_discount) from lineorder a join lineorder b on a.lo_suppkey = b.lo_suppkey";

/// [`HEAVY`]'s answer computed per key, which Polars gives in a moment: the pairs of a key are
/// its rows squared, and the sum over them of one side's quantity times the other's discount
/// is the product of the key's two sums.
const HEAVY_BY_KEY: &str = "select sum(n * n), sum(q * d) from (select lo_suppkey, count(*) as n, sum(lo_quantity) as q, sum(lo_discount) as d from lineorder group by lo_suppkey) t";

/// A query that keeps the cluster busy for minutes.
const ENDLESS: &str =
    "select count(*) from lineorder a, lineorder b where a.lo_revenue + b.lo_revenue > 0";

#[test]
fn a_stop_interrupts_the_spark_job_within_seconds() {
    let _turn = cluster_turn();
    let server = server("");
    let id = server.submit(ENDLESS, "ssb_spark");
    let deadline = Instant::now() + Duration::from_secs(60);
    while running_spark_jobs() == 0 {
        assert!(
            Instant::now() < deadline,
            "the query never started a Spark job"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let stopped_at = Instant::now();
    let (code, v) = server.json("DELETE", &format!("/kylin/api/async_query/stop/{id}"), None);
    assert_eq!(code, 200, "stop: {v}");
    let v = server.status(&id);
    assert_eq!(v["data"]["state"], "CANCELLED", "{v}");
    while running_spark_jobs() > 0 {
        assert!(
            stopped_at.elapsed() < Duration::from_secs(10),
            "the Spark job still runs {:?} after the stop",
            stopped_at.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("Spark job gone {:?} after the stop", stopped_at.elapsed());
    // The cluster is free again: a small query runs at once.
    let started = Instant::now();
    let csv = server.run("select count(*) from dates", "ssb_spark");
    assert_eq!(csv.trim(), "2556");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

/// Executor JVMs of the test cluster's workers.
fn executor_pids() -> Vec<u32> {
    let workers = env("SPOOL_TEST_SPARK_WORKERS");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        if cmdline.contains("CoarseGrainedExecutorBackend")
            && workers.split(':').any(|w| cwd.starts_with(w))
        {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn a_killed_executor_does_not_fail_the_query() {
    let _turn = cluster_turn();
    let server = server("");
    // Long enough to kill an executor in the middle; the answer comes from Polars.
    let sql = HEAVY;
    let expected = server.run(HEAVY_BY_KEY, "ssb");
    let id = server.submit(sql, "ssb_spark");
    let deadline = Instant::now() + Duration::from_secs(60);
    while running_spark_jobs() == 0 {
        assert!(
            Instant::now() < deadline,
            "the query never started a Spark job"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let executors = executor_pids();
    assert!(
        !executors.is_empty(),
        "no executor JVM found under the workers"
    );
    let status = std::process::Command::new("kill")
        .args(["-9", &executors[0].to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let killed_at = Instant::now();
    assert_eq!(
        server.status(&id)["data"]["state"],
        "RUNNING",
        "the query was still running when its executor died"
    );
    let v = server.wait(&id);
    eprintln!(
        "SUCCESSFUL {:?} after an executor was killed",
        killed_at.elapsed()
    );
    assert_eq!(v["data"]["status"], "SUCCESSFUL", "{v}");
    assert_eq!(
        String::from_utf8(server.result(&id)).expect("utf-8"),
        expected
    );
}

#[test]
fn a_connect_server_that_is_down_fails_the_query_within_seconds() {
    let _turn = cluster_turn();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let server = Server::start(&format!(
        "workers = 1\nsample_sf = 0.002\nspark_remote = \"sc://127.0.0.1:{port}\"\n"
    ));
    add_spark_project(&server.data_dir);
    let started = Instant::now();
    let id = server.submit("select count(*) from dates", "ssb_spark");
    let v = server.wait(&id);
    let took = started.elapsed();
    assert_eq!(v["data"]["status"], "FAILED", "{v}");
    let (_, status) = server.json("GET", &format!("/kylin/api/async_query/{id}/status"), None);
    let reason = status["data"]["info"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains(&format!(
            "the Spark cluster at sc://127.0.0.1:{port} cannot be reached"
        )),
        "{status}"
    );
    assert_eq!(status["data"]["retryable"], true, "{status}");
    eprintln!("FAILED {took:?} after the submit");
    assert!(took < Duration::from_secs(15), "failed after {took:?}");
}

#[test]
fn the_sandbox_holds_on_spark() {
    let _turn = cluster_turn();
    let server = server("");
    // Nothing that reads a file, calls into the JVM or changes the session binds: Spark is
    // handed plans printed by Spool, never the client's text.
    for (sql, expected) in [
        (
            "select * from parquet.`/etc/passwd`",
            "not found in project 'ssb_spark'",
        ),
        (
            "select * from csv.`/etc/hostname`",
            "not found in project 'ssb_spark'",
        ),
        (
            "select reflect('java.lang.Runtime', 'getRuntime')",
            "function reflect not found",
        ),
        (
            "select java_method('java.lang.System', 'exit', 1)",
            "function java_method not found",
        ),
        (
            "select * from read_files('/etc')",
            "table functions are not allowed",
        ),
        ("add jar /tmp/evil.jar", "SQL syntax error"),
        (
            "create temporary view v2 as select 1",
            "only read-only queries",
        ),
        ("create temporary function f as 'x.Y'", "SQL syntax error"),
    ] {
        let id = server.submit(sql, "ssb_spark");
        let v = server.wait(&id);
        assert_eq!(v["data"]["status"], "FAILED", "{sql}: {v}");
        let (_, status) = server.json("GET", &format!("/kylin/api/async_query/{id}/status"), None);
        let info = status["data"]["info"].as_str().unwrap_or_default();
        assert!(
            info.to_lowercase().contains(&expected.to_lowercase()),
            "{sql}: {info}"
        );
    }
    // A string is a value: Spark substitutes no variable into it and reads no escape in it.
    let csv = server.run(
        "select '${spark.driver.host}' as v, 'C:\\temp\\new' as w",
        "ssb_spark",
    );
    assert_eq!(csv, "${spark.driver.host},C:\\temp\\new\n");
}

/// The quoting attack of the Polars engine's sandbox and its variants, on Spark: refused before
/// anything is sent to the cluster.
#[test]
fn the_quoting_attack_and_its_variants_are_refused_on_spark() {
    let _turn = cluster_turn();
    let server = server("");
    crate::sandbox::each_attack_is_refused(&server, "ssb_spark", "dates");
}

#[test]
fn three_processes_on_postgres_s3_and_spark_finish_a_query_whose_process_died() {
    let _turn = cluster_turn();
    use crate::scaled::{config, fresh_backends, runner_of, start_all, status_of};
    let b = fresh_backends();
    let dir = tempfile::tempdir().expect("tempdir");
    let remote = env("SPOOL_TEST_SPARK_REMOTE");
    let extra = format!("spark_remote = \"{remote}\"\nlease_secs = 2\n");
    let mut servers = start_all(dir.path(), &vec![config(&b, &extra); 3]);
    add_spark_project(&dir.path().join("data"));
    let sql = HEAVY;
    let expected = servers[0].run(HEAVY_BY_KEY, "ssb");
    let id = servers[0].submit(sql, "ssb_spark");
    let runner = runner_of(&servers, &id);
    servers.remove(runner).kill();
    let (still, _) = status_of(&servers[0], &id);
    assert_eq!(still, "RUNNING", "the query was caught while it ran");
    let v = servers[1].wait(&id);
    assert_eq!(v["data"]["status"], "SUCCESSFUL", "{v}");
    assert_eq!(v["data"]["attempt"], 2, "finished by another process: {v}");
    for server in &servers {
        assert_eq!(
            String::from_utf8(server.result(&id)).expect("utf-8"),
            expected
        );
    }
}
