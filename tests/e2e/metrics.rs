//! `GET /metrics` through the real server: Prometheus' text format, what a scraper sees after
//! queries, downloads and failed logins, who may read it, and the separate `metrics_bind`.

use std::collections::HashMap;

use serde_json::json;

use crate::harness::{ADMIN, Server, basic};

/// Parses the text format into `name{labels}` → value, checking that every sample belongs
/// to a family declared by `# TYPE` before it.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut declared: Vec<String> = Vec::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().expect("name").to_owned();
            let kind = parts.next().expect("kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counters end in _total: {line}");
            }
            declared.push(name);
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample");
        let name = series.split('{').next().expect("name");
        assert!(
            declared.iter().any(|d| name == d
                || [
                    d.clone() + "_bucket",
                    d.clone() + "_sum",
                    d.clone() + "_count"
                ]
                .contains(&name.to_owned())),
            "sample before its # TYPE: {line}"
        );
        assert!(name.starts_with("spool_"), "{line}");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "twice: {line}"
        );
    }
    samples
}

fn scrape(server: &Server, auth: &str) -> HashMap<String, f64> {
    let res = server.send("GET", "/metrics", Some(auth), None);
    assert_eq!(res.status().as_u16(), 200);
    let kind = res.headers()["content-type"]
        .to_str()
        .expect("type")
        .to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    parse(&res.text().expect("body"))
}

#[test]
fn metrics_count_queries_downloads_requests_and_failed_logins() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let server = Server::start(&format!(
        "workers = 2\nsample_sf = 0.002\nmetrics_bind = \"127.0.0.1:{port}\"\n"
    ));
    let before = scrape(&server, ADMIN);
    assert_eq!(before["spool_workers"], 2.0);
    assert_eq!(
        before["spool_queries_finished_total{outcome=\"succeeded\"}"],
        0.0
    );

    let id = server.submit("select lo_orderkey from lineorder limit 40", "ssb");
    server.wait(&id);
    let bytes = server.result(&id);
    let bad = server.submit("select nope from lineorder", "ssb");
    server.wait(&bad);
    let res = server.send(
        "GET",
        "/kylin/api/async_query",
        Some(&basic("ADMIN", "wrong")),
        None,
    );
    assert_eq!(res.status().as_u16(), 401);

    let m = scrape(&server, ADMIN);
    assert_eq!(m["spool_queries{state=\"succeeded\"}"], 1.0);
    assert_eq!(m["spool_queries{state=\"failed\"}"], 1.0);
    assert_eq!(m["spool_queue_depth"], 0.0);
    assert_eq!(
        m["spool_queries_finished_total{outcome=\"succeeded\"}"],
        1.0
    );
    assert_eq!(m["spool_queries_finished_total{outcome=\"failed\"}"], 1.0);
    assert_eq!(m["spool_result_rows_total"], 40.0);
    assert_eq!(m["spool_result_bytes_total"], bytes.len() as f64);
    assert_eq!(m["spool_query_duration_seconds_count"], 2.0);
    assert_eq!(m["spool_query_duration_seconds_bucket{le=\"+Inf\"}"], 2.0);
    assert_eq!(m["spool_queue_wait_seconds_count"], 2.0);
    assert_eq!(m["spool_downloads_total"], 1.0);
    assert_eq!(m["spool_download_bytes_total"], bytes.len() as f64);
    assert!(m["spool_login_failures_total"] >= 1.0);
    let polls = "spool_http_requests_total{route=\"/kylin/api/async_query/{id}/status\",method=\"GET\",status=\"200\"}";
    assert!(m[polls] >= 2.0, "{m:?}");
    assert!(
        m["spool_http_request_duration_seconds_count{route=\"/kylin/api/async_query/{id}/status\"}"]
            >= m[polls]
    );
    // Paths are never labels: an unknown path counts under one series.
    server.send("GET", "/no/such/path/123", Some(ADMIN), None);
    let m = scrape(&server, ADMIN);
    assert!(
        m.keys().all(|k| !k.contains("/no/such")),
        "a raw path became a label"
    );

    // Admins only on the API address; anyone on metrics_bind, which serves nothing else.
    server.add_user(&["alice", "--project", "ssb"], "wonderland");
    let alice = basic("alice", "wonderland");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = server
            .send("GET", "/metrics", Some(&alice), None)
            .status()
            .as_u16();
        if status == 403 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "alice: {status}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        server.send("GET", "/metrics", None, None).status().as_u16(),
        401
    );
    let http = reqwest::blocking::Client::new();
    let res = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .expect("metrics_bind");
    assert_eq!(res.status().as_u16(), 200);
    let apart = parse(&res.text().expect("body"));
    assert_eq!(apart["spool_queries{state=\"succeeded\"}"], 1.0);
    let res = http
        .post(format!("http://127.0.0.1:{port}/kylin/api/async_query"))
        .body(json!({"sql": "select 1"}).to_string())
        .send()
        .expect("metrics_bind");
    assert_eq!(res.status().as_u16(), 404, "only /metrics is served there");
}
