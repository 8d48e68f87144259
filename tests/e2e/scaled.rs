//! Several `spool-server` processes as one service: one PostgreSQL database, one S3 bucket,
//! one shared data dir. The servers are real (started by `cargo xtask ci`, which sets
//! `SPOOL_TEST_POSTGRES`, `SPOOL_TEST_S3_ENDPOINT`, `SPOOL_TEST_S3_BUCKET` and the AWS keys).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use object_store::ObjectStore as _;
use serde_json::Value;

use crate::harness::{Server, basic};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the multi-process tests need PostgreSQL and an S3 server. \
             `cargo xtask ci` installs and starts both; for a shell, \
             `eval \"$(cargo xtask services start)\"` does the same"
        )
    })
}

/// A fresh database on the test server and a fresh prefix in the test bucket.
pub(crate) struct Backends {
    pub postgres: String,
    pub bucket: String,
    pub prefix: String,
}

pub(crate) fn fresh_backends() -> Backends {
    let base = env("SPOOL_TEST_POSTGRES");
    let name = format!("spool_e2e_{}", uuid_like());
    let status = std::process::Command::new("psql")
        .arg(&base)
        .args(["-q", "-c", &format!("CREATE DATABASE {name}")])
        .status()
        .expect("psql (PostgreSQL's client, installed with the server)");
    assert!(status.success(), "creating the test database");
    let (prefix, _) = base.rsplit_once('/').expect("a database URL");
    Backends {
        postgres: format!("{prefix}/{name}"),
        bucket: env("SPOOL_TEST_S3_BUCKET"),
        prefix: format!("e2e-{}", uuid_like()),
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", nanos, std::process::id())
}

/// A config file for one process of the service.
pub(crate) fn config(b: &Backends, extra: &str) -> String {
    format!(
        "job_store = \"{}\"\nresult_store = \"s3://{}/{}\"\ns3_endpoint = \"{}\"\n\
         s3_allow_http = true\nsample_sf = 0.05\n{extra}\n",
        b.postgres,
        b.bucket,
        b.prefix,
        env("SPOOL_TEST_S3_ENDPOINT"),
    )
}

/// Starts `configs.len()` processes on one shared data dir, all at once (so that their first
/// start's sample creation races, as it does in production).
pub(crate) fn start_all(dir: &Path, configs: &[String]) -> Vec<Server> {
    let data = dir.join("data");
    let paths: Vec<PathBuf> = configs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let path = dir.join(format!("spool-{i}.toml"));
            std::fs::write(&path, text).expect("config");
            path
        })
        .collect();
    std::thread::scope(|scope| {
        let started: Vec<_> = paths
            .iter()
            .map(|path| {
                let data = data.clone();
                scope.spawn(move || Server::start_on(&data, path))
            })
            .collect();
        started
            .into_iter()
            .map(|h| h.join().expect("server start"))
            .collect()
    })
}

/// The bucket's object store, to look at what the service left there.
fn bucket(b: &Backends) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(&b.bucket)
        .with_endpoint(env("SPOOL_TEST_S3_ENDPOINT"))
        .with_allow_http(true)
        .with_region("us-east-1")
        .build()
        .expect("s3 client")
}

fn objects(b: &Backends) -> Vec<String> {
    let store = bucket(b);
    let prefix = object_store::path::Path::from(b.prefix.as_str());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        use futures::StreamExt;
        let mut names = Vec::new();
        let mut listing = store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            names.push(meta.expect("listing").location.to_string());
        }
        names
    })
}

/// The status word and info of a query as one server reports it.
pub(crate) fn status_of(server: &Server, id: &str) -> (String, String) {
    let v: Value = server.status(id);
    (
        v["data"]["status"].as_str().unwrap_or_default().to_owned(),
        v["data"]["info"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Polls `server` until the query is claimed by a worker (info `still running`).
fn wait_until_claimed(server: &Server, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, info) = status_of(server, id);
        if status != "RUNNING" || info == "still running" {
            return;
        }
        assert!(Instant::now() < deadline, "query {id} never claimed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Which of `servers` runs query `id`, from their logs (waits up to a minute for a claim).
pub(crate) fn runner_of(servers: &[Server], id: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(i) = servers.iter().position(|s| {
            s.log()
                .lines()
                .any(|l| l.contains(id) && l.contains("query started"))
        }) {
            return i;
        }
        assert!(Instant::now() < deadline, "nobody claimed {id}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The same query on the embedded defaults (sled, local files), for comparison.
fn embedded_result(sql: &str) -> Vec<u8> {
    let server = Server::start("sample_sf = 0.05\n");
    let id = server.submit(sql, "ssb");
    assert_eq!(server.wait(&id)["data"]["status"], "SUCCESSFUL");
    server.result(&id)
}

const EXPORT: &str = "select * from p_lineorder";

#[test]
fn three_processes_are_one_service() {
    let b = fresh_backends();
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = start_all(dir.path(), &vec![config(&b, ""); 3]);
    let (a, bb, c) = (&servers[0], &servers[1], &servers[2]);
    let expected = embedded_result(EXPORT);
    assert!(
        expected.len() > 20 << 20,
        "a result of several parts: {}",
        expected.len()
    );

    // Submit through A, poll through B, download through C.
    let id = a.submit(EXPORT, "ssb");
    let v = bb.wait(&id);
    assert_eq!(v["data"]["status"], "SUCCESSFUL", "{v}");
    let got = c.result(&id);
    assert!(
        got == expected,
        "byte-identical to the embedded run ({} vs {} bytes)",
        got.len(),
        expected.len()
    );
    // A range through A.
    let res = a.http_get(
        &format!("/kylin/api/async_query/{id}/result"),
        &[("Range", "bytes=100-199")],
    );
    assert_eq!(res.status().as_u16(), 206);
    assert_eq!(res.bytes().expect("body").as_ref(), &expected[100..200]);

    // Users are the service's: one added through one process logs in on all.
    a.add_user(&["carol", "--project", "ssb"], "carol-pw");
    let carol = basic("carol", "carol-pw");
    let deadline = Instant::now() + Duration::from_secs(10);
    for server in [a, bb, c] {
        loop {
            let res = server.send(
                "GET",
                &format!("/kylin/api/async_query/{id}/status"),
                Some(&carol),
                None,
            );
            if res.status().as_u16() == 200 {
                let v: Value = res.json().expect("json");
                assert_eq!(
                    v["data"]["status"], "MISSING",
                    "carol does not see ADMIN's query"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "carol cannot log in on {}",
                server.base
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Delete through B: the object is gone from the bucket.
    let object = format!("{}/{id}.1", b.prefix);
    assert!(objects(&b).contains(&object), "{:?}", objects(&b));
    let (status, v) = bb.json("DELETE", &format!("/kylin/api/async_query/{id}"), None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(status_of(c, &id).0, "MISSING");
    assert!(
        objects(&b).is_empty(),
        "left in the bucket: {:?}",
        objects(&b)
    );
}

/// Submits a JSON export of the whole fact table (slow enough to be caught running).
fn submit_json_export(server: &Server) -> String {
    let body = serde_json::json!({ "sql": EXPORT, "project": "ssb", "format": "json" }).to_string();
    let (status, v) = server.json("POST", "/kylin/api/async_query", Some(&body));
    assert_eq!(status, 200, "{v}");
    v["data"]["queryID"].as_str().expect("queryID").to_owned()
}

#[test]
fn a_query_whose_process_is_killed_is_finished_by_another() {
    let b = fresh_backends();
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = {
        let server = Server::start("sample_sf = 0.05\n");
        let id = submit_json_export(&server);
        assert_eq!(server.wait(&id)["data"]["status"], "SUCCESSFUL");
        server.result(&id)
    };
    let mut servers = start_all(dir.path(), &vec![config(&b, "lease_secs = 2\n"); 3]);
    let id = submit_json_export(&servers[0]);
    // Find the process running it from the logs, and kill it mid-export.
    let runner = runner_of(&servers, &id);
    servers.remove(runner).kill();
    let (still, _) = status_of(&servers[0], &id);
    assert_eq!(still, "RUNNING", "the export was caught while it ran");

    // Another process takes it over once the lease lapses; no status ever goes backward.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen: Vec<String> = Vec::new();
    let mut polls = 0;
    loop {
        let (status, info) = status_of(&servers[polls % 2], &id);
        polls += 1;
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status != "RUNNING" {
            assert_eq!(status, "SUCCESSFUL", "{info}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not taken over; a log:\n{}",
            servers[0].log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        seen,
        ["RUNNING", "SUCCESSFUL"],
        "statuses only move forward"
    );
    for server in &servers {
        let got = server.result(&id);
        assert!(
            got == expected,
            "identical to an uninterrupted run ({} vs {} bytes)",
            got.len(),
            expected.len()
        );
    }
    // Only the second attempt's result is in the bucket: the first never completed its upload.
    let listed = objects(&b);
    assert_eq!(listed, vec![format!("{}/{id}.2", b.prefix)]);
}

#[test]
fn a_stop_through_one_process_ends_the_query_another_runs() {
    let b = fresh_backends();
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = start_all(
        dir.path(),
        &[config(&b, "workers = 1\n"), config(&b, "workers = 0\n")],
    );
    let (runner, front) = (&servers[0], &servers[1]);
    let sql = "select * from p_lineorder order by lo_revenue";
    let id = front.submit(sql, "ssb");
    wait_until_claimed(front, &id);
    let started = Instant::now();
    let (status, v) = front.json("DELETE", &format!("/kylin/api/async_query/stop/{id}"), None);
    assert_eq!(status, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, info) = status_of(front, &id);
        if status == "FAILED" {
            assert_eq!(info, "stopped by user");
            break;
        }
        // A query that finished before the stop reached it is no test of the stop.
        assert_eq!(status, "RUNNING", "{info}");
        assert!(
            Instant::now() < deadline,
            "not stopped; runner's log:\n{}",
            runner.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        started.elapsed()
    );
    assert_eq!(
        status_of(runner, &id),
        ("FAILED".into(), "stopped by user".into())
    );
}

#[test]
fn the_per_user_cap_holds_across_processes() {
    let b = fresh_backends();
    let dir = tempfile::tempdir().expect("tempdir");
    // No workers anywhere: submitted queries stay queued.
    let servers = start_all(
        dir.path(),
        &vec![config(&b, "workers = 0\nmax_in_flight_per_user = 2\n"); 3],
    );
    let submit = |server: &Server| {
        let body = serde_json::json!({ "sql": "select 1", "project": "ssb" }).to_string();
        server.json("POST", "/kylin/api/async_query", Some(&body))
    };
    assert_eq!(submit(&servers[0]).0, 200);
    assert_eq!(submit(&servers[1]).0, 200);
    let (status, v) = submit(&servers[2]);
    assert_eq!(status, 429, "{v}");
    assert!(
        v["msg"]
            .as_str()
            .is_some_and(|m| m.contains("at most 2 queued or running per user")),
        "{v}"
    );
    // Deleting one through another process frees a slot everywhere.
    let (_, v) = servers[0].json("DELETE", "/kylin/api/async_query", None);
    assert_eq!(v["code"], "000", "{v}");
    assert_eq!(submit(&servers[2]).0, 200);
}

#[test]
fn a_backend_that_cannot_be_reached_stops_the_start_with_a_clear_message() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, needle) in [
        (
            format!("job_store = \"postgres://spool@127.0.0.1:{port}/spool\"\nsample_sf = 0\n"),
            format!("cannot connect to PostgreSQL at postgres://spool@127.0.0.1:{port}/spool"),
        ),
        (
            format!(
                "result_store = \"s3://nowhere/x\"\ns3_endpoint = \"http://127.0.0.1:{port}\"\n\
                 s3_allow_http = true\nsample_sf = 0\n"
            ),
            format!("cannot reach the result store s3://nowhere/x at http://127.0.0.1:{port}"),
        ),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).expect("config");
        let out = std::process::Command::new(crate::harness::server_binary())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&config)
            .arg("--bind")
            .arg("127.0.0.1:0")
            .output()
            .expect("run");
        assert!(!out.status.success(), "the server must not start");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&needle), "{stderr}");
    }
}

#[test]
fn progress_and_long_polls_work_across_processes() {
    let b = fresh_backends();
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = start_all(
        dir.path(),
        &[config(&b, "workers = 1\n"), config(&b, "workers = 0\n")],
    );
    let (runner, front) = (&servers[0], &servers[1]);
    // Streams until stopped: its progress is recorded by the runner, read through the front.
    let id = front.submit("select * from p_lineorder cross join dates", "ssb");
    let mut seen: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 2 {
        let v = front.status(&id);
        assert_eq!(v["data"]["status"], "RUNNING", "{v}");
        let rows = v["data"]["rows"].as_u64().expect("rows");
        if rows > 0 && seen.last().is_none_or(|&last| rows > last) {
            seen.push(rows);
        }
        assert!(
            Instant::now() < deadline,
            "no progress seen through the front: {seen:?}; runner's log:\n{}",
            runner.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A long-poll through the front is woken by the end the runner records (a stop here),
    // through the job store's notification.
    let stopper = {
        let id = id.clone();
        let url = front.url(&format!("/kylin/api/async_query/stop/{id}"));
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            reqwest::blocking::Client::new()
                .delete(url)
                .header("Authorization", crate::harness::ADMIN)
                .send()
                .expect("stop")
                .status()
                .as_u16()
        })
    };
    let (status, v) = front.json(
        "GET",
        &format!("/kylin/api/async_query/{id}/status?wait=30"),
        None,
    );
    let answered = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["data"]["state"], &v["data"]["info"]),
        (
            &serde_json::json!("CANCELLED"),
            &serde_json::json!("stopped by user")
        ),
        "{v}"
    );
    let finished = v["data"]["finished_at"].as_i64().expect("finished_at");
    assert!(
        answered - finished < 1000,
        "the long-poll answered {} ms after the end in another process",
        answered - finished
    );
    assert_eq!(stopper.join().expect("stopper"), 200);
}

#[test]
fn one_idempotency_key_is_one_query_across_processes() {
    let b = fresh_backends();
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = start_all(
        dir.path(),
        &[config(&b, "workers = 1\n"), config(&b, "workers = 1\n")],
    );
    let body = serde_json::json!({"sql": "select count(*) from p_lineorder", "project": "ssb"})
        .to_string();
    // The same key through both processes at once, as a client retrying through a load
    // balancer does.
    let ids: Vec<String> = std::thread::scope(|scope| {
        let calls: Vec<_> = servers
            .iter()
            .flat_map(|server| [server, server])
            .map(|server| {
                let body = body.clone();
                scope.spawn(move || {
                    let res = server.http_send(
                        "POST",
                        "/kylin/api/async_query",
                        &[("Idempotency-Key", "retry-me")],
                        Some(&body),
                    );
                    assert_eq!(res.status().as_u16(), 200);
                    let v: serde_json::Value = res.json().expect("json");
                    v["data"]["queryID"].as_str().expect("id").to_owned()
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().expect("call")).collect()
    });
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one query for one key: {ids:?}"
    );
}
