//! The security limits through the real server: query timeout, result caps, per-user queries in
//! flight, and log hygiene, while other users keep being served.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{ADMIN, Server, basic};

/// An explicit cross join (300,000 x 100 rows at SF 0.05) streams rows for far longer than the
/// timeout allows, and stops within milliseconds when cancelled.
const ENDLESS: &str = "select * from lineorder cross join supplier";

fn submit_as(server: &Server, auth: &str, sql: &str) -> (u16, Option<String>, Value) {
    let body = json!({"sql": sql, "project": "ssb"}).to_string();
    let res = server.send("POST", "/kylin/api/async_query", Some(auth), Some(&body));
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let v: Value = res.json().expect("json");
    (status, retry_after, v)
}

fn status_as(server: &Server, auth: &str, id: &str) -> Value {
    let path = format!("/kylin/api/async_query/{id}/status");
    server
        .send("GET", &path, Some(auth), None)
        .json()
        .expect("json")
}

/// Waits until `f` holds, polling; panics with `what` at the deadline.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn timeout_and_in_flight_cap_trigger_while_others_are_served_and_logs_hold_no_secrets() {
    let server = Server::start(
        "workers = 3\nsample_sf = 0.05\nquery_timeout_secs = 2\nmax_in_flight_per_user = 2\n",
    );
    server.add_user(&["bob", "--project", "ssb"], "b0b-secret-pw");
    let bob = basic("bob", "b0b-secret-pw");
    // The server reloads users within a second; poll gently, as failed logins are counted.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server
        .send("GET", "/kylin/api/async_query/x/status", Some(&bob), None)
        .status()
        .as_u16()
        == 401
    {
        assert!(Instant::now() < deadline, "bob never got in");
        std::thread::sleep(Duration::from_millis(400));
    }

    // ADMIN fills its two slots with queries that would run for ever.
    let (s1, _, v1) = submit_as(&server, ADMIN, ENDLESS);
    let (s2, _, v2) = submit_as(&server, ADMIN, ENDLESS);
    assert_eq!((s1, s2), (200, 200), "{v1} {v2}");
    // The third is refused at once, with Retry-After, and nothing is queued for it.
    let (s3, retry_after, v3) = submit_as(&server, ADMIN, "select 1");
    assert_eq!(s3, 429, "{v3}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert!(v3["msg"].as_str().unwrap_or_default().contains("2"), "{v3}");
    assert!(
        v3["data"].is_null() || v3["data"]["queryID"].is_null(),
        "{v3}"
    );

    // Meanwhile bob is served: his query runs on the third worker and succeeds.
    let (s, _, v) = submit_as(&server, &bob, "select count(*) from dates");
    assert_eq!(s, 200, "{v}");
    let bob_id = v["data"]["queryID"].as_str().expect("id").to_owned();
    eventually("bob's query finishes", || {
        status_as(&server, &bob, &bob_id)["data"]["status"] == "SUCCESSFUL"
    });

    // The endless queries are stopped by the timeout and say so.
    for v in [&v1, &v2] {
        let id = v["data"]["queryID"].as_str().expect("id");
        let done = server.wait(id);
        assert_eq!(done["data"]["status"], "FAILED", "{done}");
        assert_eq!(done["data"]["info"], "query timed out after 2 s", "{done}");
    }
    // Slots are free again.
    let (s, _, v) = submit_as(&server, ADMIN, "select count(*) from dates");
    assert_eq!(s, 200, "{v}");

    // A failed login, then the log is searched for secrets.
    let wrong = basic("bob", "not-his-password");
    let res = server.send("GET", "/kylin/api/async_query/x/status", Some(&wrong), None);
    assert_eq!(res.status().as_u16(), 401);
    let log = server.log();
    for secret in [
        "KYLIN",
        "QURNSU46S1lMSU4=",
        "b0b-secret-pw",
        "not-his-password",
        bob.trim_start_matches("Basic "),
        "$argon2",
    ] {
        assert!(!log.contains(secret), "the log holds {secret:?}:\n{log}");
    }
}

#[test]
fn result_caps_fail_the_query_and_leave_no_file() {
    let server = Server::start(
        "workers = 2\nsample_sf = 0.01\nmax_result_rows = 1000\nmax_result_bytes = 20000\n",
    );
    for (sql, reason) in [
        (
            "select lo_linenumber from lineorder limit 5000",
            "result has more than the limit of 1000 rows",
        ),
        (
            "select * from lineorder limit 500",
            "result is larger than the limit of 20000 bytes",
        ),
    ] {
        let id = server.submit(sql, "ssb");
        let done = server.wait(&id);
        assert_eq!(done["data"]["status"], "FAILED", "{sql}: {done}");
        assert_eq!(done["data"]["info"], reason, "{sql}: {done}");
        assert!(!server.data_dir.join("results").join(&id).exists());
    }
    let leftovers = std::fs::read_dir(server.data_dir.join("results").join(".tmp"))
        .expect("tmp")
        .count();
    assert_eq!(leftovers, 0);
    // Under both caps it is fine.
    let csv = server.run("select lo_linenumber from lineorder limit 1000", "ssb");
    assert_eq!(csv.lines().count(), 1000);
}

#[test]
fn behind_a_trusted_proxy_login_throttling_follows_the_forwarded_client() {
    let http = reqwest::blocking::Client::new();
    for (config, behind_proxy) in [("trusted_proxies = [\"127.0.0.1\"]\n", true), ("", false)] {
        let server = Server::start(&format!("sample_sf = 0.002\n{config}"));
        let url = server.url("/kylin/api/async_query/00000000-0000-4000-8000-000000000000/status");
        let call = |forwarded_for: &str, auth: &str| {
            http.get(&url)
                .header("Authorization", auth)
                .header("X-Forwarded-For", forwarded_for)
                .send()
                .expect("request")
                .status()
                .as_u16()
        };
        let wrong = basic("ADMIN", "not-the-password");
        for _ in 0..10 {
            assert_eq!(call("203.0.113.1", &wrong), 401);
        }
        assert_eq!(
            call("203.0.113.1", ADMIN),
            429,
            "ADMIN from the guessing client is refused for a while"
        );
        let elsewhere = call("203.0.113.2", ADMIN);
        if behind_proxy {
            assert!(
                elsewhere != 429 && elsewhere != 401,
                "behind the proxy, ADMIN from another client logs in: {elsewhere}"
            );
        } else {
            assert_eq!(
                elsewhere, 429,
                "without trusted_proxies the header is the client's to forge and is ignored"
            );
        }
    }
}

#[test]
fn request_ids_come_back_in_responses_and_reach_the_json_log() {
    let server = Server::start("sample_sf = 0.002\nlog_format = \"json\"\n");
    let path = "/kylin/api/async_query/00000000-0000-4000-8000-000000000000/status";
    let res = server.http_get(path, &[("X-Request-Id", "trace-abc-123")]);
    assert_eq!(
        res.headers()["x-request-id"],
        "trace-abc-123",
        "the client's id is kept"
    );
    let header = |res: reqwest::blocking::Response| {
        res.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned()
    };
    let fresh = header(server.http_get(path, &[]));
    assert_eq!(
        fresh.len(),
        36,
        "a UUID when the client sends none: {fresh}"
    );
    let odd = header(server.http_get(path, &[("X-Request-Id", "two words")]));
    assert!(
        odd != "two words" && odd.len() == 36,
        "a token, or a fresh id: {odd}"
    );
    let body = json!({"sql": "select 1", "project": "ssb"}).to_string();
    let submitted = server.http_send(
        "POST",
        "/kylin/api/async_query",
        &[
            ("X-Request-Id", "submit-42"),
            ("Content-Type", "application/json"),
        ],
        Some(&body),
    );
    assert_eq!(header(submitted), "submit-42");
    // Every log line is one JSON object; "query submitted" is logged inside the request and
    // carries its id.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = server.log();
        let lines: Vec<Value> = log
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        if lines.iter().any(|v| {
            v["fields"]["message"] == "query submitted"
                && v["spans"]
                    .as_array()
                    .is_some_and(|spans| spans.iter().any(|s| s["request_id"] == "submit-42"))
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with the request id:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
