//! End-to-end: the real `spool-server` binary, driven over loopback HTTP as a user would.

mod cli;
mod conformance;
mod console;
mod faults;
mod harness;
mod isolation;
mod kylin5;
mod kylin_query;
mod lifecycle;
mod limits;
mod metrics;
mod openapi;
mod planner;
mod sandbox;
mod scaled;
mod spark;
mod ssb;
mod tpc;
mod upgrade;

use std::process::Command;
use std::time::Instant;

use harness::{ADMIN, Server, basic, peak_rss_kib};
use serde_json::{Value, json};

/// A small sample: fast to generate, still several chunks of output.
const SMALL: &str = "workers = 2\nsample_sf = 0.002\n";

/// Runs one of the seed document's curl lines, with `http://master:7070` pointed at `server`.
fn seed_curl(server: &Server, line: &str) -> Vec<u8> {
    let line = line.replace("http://master:7070", &server.base);
    // The seed's lines use plain shell quoting; run them through sh exactly as written.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{line} --silent --show-error"))
        .output()
        .expect("running curl");
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

#[test]
fn the_seeds_four_curl_flows_work_verbatim() {
    let server = Server::start(SMALL);
    let submitted = parse(&seed_curl(
        &server,
        r#"curl -X POST -H "Authorization: Basic QURNSU46S1lMSU4=" -H "Content-Type: application/json" -d '{ "sql":"select * from p_lineorder limit 100", "project":"ssb" }' http://master:7070/kylin/api/async_query"#,
    ));
    assert_eq!(submitted["code"], "000");
    assert_eq!(submitted["msg"], "");
    assert_eq!(submitted["data"]["status"], "RUNNING");
    assert_eq!(submitted["data"]["info"], "still running");
    let id = submitted["data"]["queryID"]
        .as_str()
        .expect("id")
        .to_owned();

    server.wait(&id);
    let status = parse(&seed_curl(
        &server,
        &format!(
            r#"curl -X GET -H "Authorization: Basic QURNSU46S1lMSU4=" -H "Content-Type: application/json"  http://master:7070/kylin/api/async_query/{id}/status "#
        ),
    ));
    // Kylin's envelope and fields exactly as the seed shows them; Spool's additions beside them
    // (a Kylin client reads the fields it knows).
    assert_eq!(
        (&status["code"], &status["msg"]),
        (&json!("000"), &json!(""))
    );
    let data = status["data"].as_object().expect("data");
    for (field, want) in [
        ("queryID", json!(id)),
        ("status", json!("SUCCESSFUL")),
        ("info", json!("await fetching results")),
    ] {
        assert_eq!(data[field], want, "{field}");
    }
    let additions = [
        "state",
        "rows",
        "bytes",
        "submitted_at",
        "started_at",
        "finished_at",
        "elapsed_ms",
        "expires_at",
        "attempt",
        "sha256",
    ];
    for field in data.keys() {
        assert!(
            ["queryID", "status", "info"].contains(&field.as_str())
                || additions.contains(&field.as_str()),
            "undocumented field {field}"
        );
    }

    let csv = seed_curl(
        &server,
        &format!(
            r#"curl -X GET -H "Authorization: Basic QURNSU46S1lMSU4=" -H "Content-Type: application/json"  http://master:7070/kylin/api/async_query/{id}/result "#
        ),
    );
    let text = String::from_utf8(csv).expect("utf-8");
    assert_eq!(text.lines().count(), 100, "100 rows, no header");
    // P_LINEORDER: the 17 LINEORDER columns plus V_REVENUE = LO_EXTENDEDPRICE * LO_DISCOUNT.
    for line in text.lines() {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 18, "{line}");
        let (price, discount, v): (i64, i64, i64) = (
            f[9].parse().expect("price"),
            f[11].parse().expect("discount"),
            f[17].parse().expect("v_revenue"),
        );
        assert_eq!(v, price * discount, "{line}");
    }

    let cleaned = parse(&seed_curl(
        &server,
        r#"curl -X DELETE -H "Authorization: Basic QURNSU46S1lMSU4=" -H "Content-Type: application/json"  http://master:7070/kylin/api/async_query"#,
    ));
    assert_eq!(cleaned, json!({"code":"000","data":true,"msg":""}));
    assert_eq!(server.status(&id)["data"]["status"], "MISSING");
}

#[test]
fn an_unknown_project_and_bad_sql_fail_with_reasons() {
    let server = Server::start(SMALL);
    let id = server.submit("select 1", "XXX");
    let v = server.wait(&id);
    assert_eq!(v["data"]["status"], "FAILED");
    assert_eq!(v["data"]["info"], "Project 'XXX' does not exist;");

    let id = server.submit("select no_such_column from lineorder", "ssb");
    let v = server.wait(&id);
    assert_eq!(v["data"]["status"], "FAILED");
    assert!(
        v["data"]["info"]
            .as_str()
            .expect("info")
            .contains("no_such_column"),
        "{v}"
    );
    let res = server.send(
        "GET",
        &format!("/kylin/api/async_query/{id}/result"),
        Some(ADMIN),
        None,
    );
    assert_eq!(res.status().as_u16(), 409);
    let body: Value = res.json().expect("envelope");
    assert_ne!(body["code"], "000");
    assert!(
        body["msg"].as_str().expect("msg").contains("failed"),
        "{body}"
    );

    let id = server.submit("select * from read_csv('/etc/passwd')", "ssb");
    let v = server.wait(&id);
    assert_eq!(v["data"]["status"], "FAILED");
    assert!(
        v["data"]["info"]
            .as_str()
            .expect("info")
            .contains("table functions are not allowed"),
        "{v}"
    );
}

#[test]
fn bad_requests_get_the_envelope_and_leave_stored_queries_intact() {
    let server = Server::start(SMALL);
    let kept = server.submit(
        "select lo_orderkey from lineorder order by lo_orderkey limit 3",
        "ssb",
    );
    server.wait(&kept);
    let before = server.result(&kept);

    for (body, code, fragment) in [
        ("{oops", 400, "not valid JSON"),
        (r#"{"project":"ssb"}"#, 400, "field 'sql' is required"),
        (r#"{"sql":"select 1","limit":"five"}"#, 400, "field 'limit'"),
    ] {
        let (status, v) = server.json("POST", "/kylin/api/async_query", Some(body));
        assert_eq!(status, code, "{body}: {v}");
        assert_ne!(v["code"], "000");
        assert_eq!(v["data"], Value::Null);
        assert!(v["msg"].as_str().expect("msg").contains(fragment), "{v}");
    }
    let res = server.send("GET", "/kylin/api/async_query/x/status", None, None);
    assert_eq!(res.status().as_u16(), 401);
    assert!(res.headers().contains_key("www-authenticate"));
    let (status, v) = server.json(
        "GET",
        "/kylin/api/async_query/..%2F..%2Fusers.toml/result",
        None,
    );
    assert_eq!((status, v["data"].clone()), (404, Value::Null));
    assert_eq!(server.status("not-a-query-id")["data"]["status"], "MISSING");

    assert_eq!(server.result(&kept), before);
    assert_eq!(String::from_utf8(before).expect("utf-8"), "1\n1\n1\n");
    let health = server.send("GET", "/healthz", None, None);
    assert_eq!(health.status().as_u16(), 200);
}

#[test]
fn offset_and_limit_apply_unless_the_sql_has_its_own() {
    let server = Server::start(SMALL);
    let body = json!({"sql": "select lo_orderkey, lo_linenumber from lineorder order by 1, 2", "project": "ssb", "offset": 2, "limit": 3, "acceptPartial": false}).to_string();
    let (_, v) = server.json("POST", "/kylin/api/async_query", Some(&body));
    let id = v["data"]["queryID"].as_str().expect("id").to_owned();
    assert_eq!(server.wait(&id)["data"]["status"], "SUCCESSFUL");
    let all = server.run(
        "select lo_orderkey, lo_linenumber from lineorder order by 1, 2 limit 5",
        "ssb",
    );
    let expected: Vec<&str> = all.lines().skip(2).take(3).collect();
    let got = String::from_utf8(server.result(&id)).expect("utf-8");
    assert_eq!(got.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn queries_survive_kill_9_and_finish_after_restart() {
    // One worker and exports big enough to take a while, so some are running or queued at the kill.
    let server = Server::start("workers = 1\nsample_sf = 0.07\n");
    let sql = "select * from p_lineorder order by lo_orderkey, lo_linenumber";
    let ids: Vec<String> = (0..3).map(|_| server.submit(sql, "ssb")).collect();
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while !server.log().contains("query started") {
        assert!(Instant::now() < deadline, "no query started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let in_flight = ids
        .iter()
        .filter(|id| server.status(id)["data"]["status"] == "RUNNING")
        .count();
    assert!(in_flight >= 2, "the kill must interrupt work in flight");

    let server = server.kill_and_restart();
    assert!(server.log().contains("will run again"), "{}", server.log());
    let mut results = Vec::new();
    for id in &ids {
        let v = server.wait(id);
        assert_eq!(v["data"]["status"], "SUCCESSFUL", "{v}");
        results.push(server.result(id));
    }
    let rows = String::from_utf8(results[0].clone())
        .expect("utf-8")
        .lines()
        .count();
    assert!(rows > 100_000, "{rows} rows");
    assert!(
        results.iter().all(|r| *r == results[0]),
        "every recovered result is complete"
    );
    // No half-written result files are left behind.
    let tmp = server.data_dir.join("results").join(".tmp");
    assert_eq!(std::fs::read_dir(tmp).expect("tmp").count(), 0);
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_server_gracefully() {
    let server = Server::start(SMALL);
    let id = server.submit("select count(*) from lineorder", "ssb");
    server.wait(&id);
    let status = server.terminate();
    assert!(status.success(), "{status}");
}

/// Measures the seed's full export on the default sample; prints the figures for the docs.
#[test]
fn full_export_of_the_default_sample() {
    let server = Server::start("workers = 2\n");
    let started = Instant::now();
    let id = server.submit("select * from p_lineorder", "ssb");
    let v = server.wait(&id);
    let elapsed = started.elapsed();
    assert_eq!(v["data"]["status"], "SUCCESSFUL");
    let bytes = server.result(&id);
    let rows = bytes.iter().filter(|&&b| b == b'\n').count();
    assert!(rows > 10_000, "{rows}");
    eprintln!(
        "figures: select * from p_lineorder: {rows} rows, {} bytes, submit->SUCCESSFUL {:?}, server peak RSS {:?} KiB",
        bytes.len(),
        elapsed,
        peak_rss_kib(server.pid())
    );
}

#[test]
fn users_added_while_the_server_runs_can_log_in_and_are_isolated() {
    let server = Server::start(SMALL);
    assert_eq!(basic("ADMIN", "KYLIN"), ADMIN);
    server.add_user(&["alice", "--project", "ssb"], "wonderland");
    let alice = basic("alice", "wonderland");
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    let body = json!({"sql": "select count(*) from lineorder", "project": "ssb"}).to_string();
    let id = loop {
        let res = server.send("POST", "/kylin/api/async_query", Some(&alice), Some(&body));
        if res.status().as_u16() == 200 {
            let v: Value = res.json().expect("json");
            break v["data"]["queryID"].as_str().expect("id").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "alice never got in: {}",
            res.status()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // Alice may not query DEFAULT, nor clean up; ADMIN sees her query, nobody else does.
    let other = json!({"sql": "select 1", "project": "DEFAULT"}).to_string();
    let res = server.send("POST", "/kylin/api/async_query", Some(&alice), Some(&other));
    assert_eq!(res.status().as_u16(), 403);
    let res = server.send("DELETE", "/kylin/api/async_query", Some(&alice), None);
    assert_eq!(res.status().as_u16(), 403);
    assert_eq!(server.wait(&id)["data"]["status"], "SUCCESSFUL");
    let res = server.send(
        "GET",
        &format!("/kylin/api/async_query/{id}/result"),
        Some(&alice),
        None,
    );
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.text()
            .expect("body")
            .trim()
            .parse::<u64>()
            .map(|n| n > 0),
        Ok(true)
    );

    // Removing her takes effect on the running server.
    let status = Command::new(server.binary())
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(["user", "remove", "alice"])
        .status()
        .expect("user remove");
    assert!(status.success());
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let res = server.send(
            "GET",
            &format!("/kylin/api/async_query/{id}/status"),
            Some(&alice),
            None,
        );
        if res.status().as_u16() == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "alice still gets in");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn file_reading_sql_is_refused_and_nothing_is_read() {
    let server = Server::start(SMALL);
    let secret = server.data_dir.join("users.toml");
    let secret = secret.to_str().expect("utf-8");
    for sql in [
        format!("select * from read_csv('{secret}')"),
        format!("select * from READ_PARQUET('{secret}')"),
        format!("select * from \"read_json\"('{secret}')"),
        format!("select * from read_ipc('{secret}')"),
        format!("select * from '{secret}'"),
        format!("select * from \"{secret}\""),
        format!(
            "select * from lineorder where lo_orderkey in (select 1 from read_csv('{secret}'))"
        ),
        format!("with x as (select * from read_csv('{secret}')) select * from x"),
        "select * from ssb.lineorder, other.lineorder".to_owned(),
        "copy lineorder to '/tmp/x.csv'".to_owned(),
        "create table t as select 1".to_owned(),
        "set x = 1".to_owned(),
    ] {
        let id = server.submit(&sql, "ssb");
        let v = server.wait(&id);
        assert_eq!(v["data"]["status"], "FAILED", "{sql}: {v}");
        let info = v["data"]["info"].as_str().expect("info");
        assert!(!info.contains("argon2"), "{sql}: {info}");
    }
}
