//! The HTTP API without a socket: the router over in-memory stores and a scripted engine.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use spool_core::{Ports, Spool, SpoolConfig};
use spool_domain::Role;
use spool_http::{
    AppState, Authenticator, CallbackPolicy, HttpLimits, TimeZone, UserRecord, hash_password,
    router,
};
use spool_ports::testing::{MemoryJobStore, MemoryResultStore, ScriptedEngine};
use spool_ports::{RandomIds, SystemClock};
use tower::ServiceExt;

const ADMIN: &str = "Basic QURNSU46S1lMSU4="; // ADMIN:KYLIN, as in Kylin's docs

/// Answers `ok:<csv>` with the CSV and `fail:<reason>` with an invalid-query error.
fn app() -> (axum::Router, spool_core::Workers) {
    let (router, workers, _) = app_with(|_| {});
    (router, workers)
}

/// [`app`] with the service's configuration tuned, and the service itself.
fn app_with(tune: impl FnOnce(&mut SpoolConfig)) -> (axum::Router, spool_core::Workers, Spool) {
    let ports = Ports {
        jobs: Arc::new(MemoryJobStore::default()),
        results: Arc::new(MemoryResultStore::default()),
        engine: Arc::new(ScriptedEngine),
        catalog: Arc::new(ScriptedEngine),
        transcoder: Arc::new(ScriptedEngine),
        clock: Arc::new(SystemClock),
        ids: Arc::new(RandomIds),
    };
    let mut config = SpoolConfig::with_workers(1);
    tune(&mut config);
    let spool = Spool::new(ports, config);
    let workers = spool.start();
    let user = |name: &str, password: &str, role, projects: &[&str]| UserRecord {
        name: name.into(),
        password_hash: hash_password(password).expect("hash"),
        role,
        projects: projects.iter().map(|p| (*p).to_owned()).collect(),
        format: spool_domain::USER_FORMAT,
    };
    let users = vec![
        user("ADMIN", "KYLIN", Role::Admin, &[]),
        user("bob", "pw-bob", Role::User, &["ssb"]),
        user("carol", "pw-carol", Role::User, &["other"]),
    ];
    let state = AppState {
        spool: spool.clone(),
        auth: Arc::new(Authenticator::new(users)),
        limits: HttpLimits {
            max_body_bytes: 4096,
        },
        time_zone: TimeZone::default(),
        callbacks: CallbackPolicy::default(),
        proxies: spool_http::TrustedProxies::default(),
        sync: spool_http::SyncQueryLimits::default(),
        http_metrics: Default::default(),
        console: true,
    };
    (router(state), workers, spool)
}

/// A GET as ADMIN.
async fn get(app: &axum::Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    call(app, "GET", uri, Some(ADMIN), None).await
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    req = req.header(header::CONTENT_TYPE, "application/json");
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .expect("request");
    let res = app.clone().oneshot(req).await.expect("response");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, headers, bytes)
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

async fn submit(app: &axum::Router, sql: &str) -> String {
    let body = json!({ "sql": sql, "project": "ssb" }).to_string();
    let (status, _, bytes) = call(
        app,
        "POST",
        "/kylin/api/async_query",
        Some(ADMIN),
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v = json_of(&bytes);
    assert_eq!(v["code"], "000");
    assert_eq!(v["data"]["status"], "RUNNING");
    assert_eq!(v["data"]["info"], "still running");
    assert_eq!(v["msg"], "");
    v["data"]["queryID"].as_str().expect("id").to_owned()
}

async fn wait_status(app: &axum::Router, id: &str, want: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, bytes) = call(
            app,
            "GET",
            &format!("/kylin/api/async_query/{id}/status"),
            Some(ADMIN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let v = json_of(&bytes);
        if v["data"]["status"] == want {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "stuck: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_error(status: StatusCode, bytes: &[u8], want: StatusCode, fragment: &str) {
    assert_eq!(status, want, "{}", String::from_utf8_lossy(bytes));
    let v = json_of(bytes);
    assert_ne!(v["code"], "000");
    assert_eq!(v["data"], Value::Null);
    let msg = v["msg"].as_str().expect("msg");
    assert!(msg.contains(fragment), "{msg:?} lacks {fragment:?}");
}

#[tokio::test]
async fn submit_poll_download_and_clean() {
    let (app, workers) = app();
    let id = submit(&app, "ok:1,\"a,b\"\n2,\n").await;
    let v = wait_status(&app, &id, "SUCCESSFUL").await;
    // Kylin's fields as Kylin has them; Spool's beside them.
    for (field, want) in [
        ("queryID", json!(id)),
        ("status", json!("SUCCESSFUL")),
        ("info", json!("await fetching results")),
        ("state", json!("SUCCEEDED")),
        ("rows", json!(2)),
        ("bytes", json!(11)),
        ("attempt", json!(1)),
    ] {
        assert_eq!(v["data"][field], want, "{field} in {v}");
    }
    assert_eq!((&v["code"], &v["msg"]), (&json!("000"), &json!("")));
    let data = &v["data"];
    let (submitted, started, finished) = (
        data["submitted_at"].as_i64().expect("submitted_at"),
        data["started_at"].as_i64().expect("started_at"),
        data["finished_at"].as_i64().expect("finished_at"),
    );
    assert!(submitted <= started && started <= finished, "{v}");
    assert_eq!(data["elapsed_ms"].as_i64(), Some(finished - submitted));
    assert!(data["expires_at"].as_i64().expect("expires_at") > finished);
    assert!(data.get("error_code").is_none() && data.get("queue_position").is_none());

    let (status, headers, bytes) = get(&app, &format!("/kylin/api/async_query/{id}/result")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, b"1,\"a,b\"\n2,\n");
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"result.csv\""
    );
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/csv")
    );
    assert_eq!(headers[header::CONTENT_LENGTH], "11");

    let (status, _, bytes) =
        call(&app, "DELETE", "/kylin/api/async_query", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&bytes), json!({"code":"000","data":true,"msg":""}));
    wait_status(&app, &id, "MISSING").await;
    workers.shutdown().await;
}

#[tokio::test]
async fn a_failed_query_reports_why_and_has_no_result() {
    let (app, workers) = app();
    let id = submit(&app, "fail:Project 'XXX' does not exist;").await;
    let v = wait_status(&app, &id, "FAILED").await;
    assert_eq!(v["data"]["info"], "Project 'XXX' does not exist;");
    assert_eq!(
        (
            &v["data"]["state"],
            &v["data"]["error_code"],
            &v["data"]["retryable"]
        ),
        (
            &json!("FAILED"),
            &json!("SPOOL-QUERY-INVALID"),
            &json!(false)
        ),
        "{v}"
    );
    let (status, _, bytes) = get(&app, &format!("/kylin/api/async_query/{id}/result")).await;
    assert_error(
        status,
        &bytes,
        StatusCode::CONFLICT,
        "Project 'XXX' does not exist;",
    );
    assert_eq!(json_of(&bytes)["error_code"], "SPOOL-QUERY-FAILED");
    workers.shutdown().await;
}

#[tokio::test]
async fn a_result_asked_for_too_early_is_a_clear_error() {
    let (app, workers) = app();
    let id = submit(&app, "block").await;
    let (status, _, bytes) = get(&app, &format!("/kylin/api/async_query/{id}/result")).await;
    assert_error(status, &bytes, StatusCode::CONFLICT, "has not finished yet");
    workers.shutdown().await;
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_missing() {
    let (app, workers) = app();
    for id in [
        "43eeb967-e76a-4214-8932-70594d454013",
        "not-an-id",
        "..%2F..%2Fetc%2Fpasswd",
    ] {
        let (status, _, bytes) = get(&app, &format!("/kylin/api/async_query/{id}/status")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json_of(&bytes)["data"]["status"], "MISSING", "{id}");
        let (status, _, bytes) = get(&app, &format!("/kylin/api/async_query/{id}/result")).await;
        assert_error(status, &bytes, StatusCode::NOT_FOUND, "not found");
    }
    workers.shutdown().await;
}

#[tokio::test]
async fn overlong_ids_are_refused_fast() {
    let (app, workers) = app();
    let id = "a".repeat(65);
    for path in [
        format!("/kylin/api/async_query/{id}/status"),
        format!("/kylin/api/async_query/{id}/result"),
    ] {
        let (status, _, bytes) = get(&app, &path).await;
        assert_error(
            status,
            &bytes,
            StatusCode::BAD_REQUEST,
            "longer than 64 characters",
        );
    }
    workers.shutdown().await;
}

#[tokio::test]
async fn bad_submissions_say_which_field_is_wrong() {
    let (app, workers) = app();
    for (body, fragment) in [
        ("{not json", "not valid JSON"),
        ("[1]", "JSON object"),
        ("{}", "field 'sql' is required"),
        (r#"{"sql": 5}"#, "field 'sql' must be a string"),
        (r#"{"sql": "  "}"#, "field 'sql' must not be empty"),
        (
            r#"{"sql": "select 1", "limit": "ten"}"#,
            "field 'limit' must be a whole number",
        ),
        (
            r#"{"sql": "select 1", "offset": [3]}"#,
            "field 'offset' must be a whole number",
        ),
        (r#"{"sql": "select 1", "limit": 1.5}"#, "field 'limit'"),
        (
            r#"{"sql": "select 1", "wait_timeout": 90}"#,
            "'wait_timeout' must be a whole number of seconds from 0 to 50",
        ),
        (
            r#"{"sql": "select 1", "project": "../etc"}"#,
            "field 'project'",
        ),
    ] {
        let (status, _, bytes) = call(
            &app,
            "POST",
            "/kylin/api/async_query",
            Some(ADMIN),
            Some(body),
        )
        .await;
        assert_error(status, &bytes, StatusCode::BAD_REQUEST, fragment);
    }
    let huge = json!({ "sql": "x".repeat(5000) }).to_string();
    let (status, _, bytes) = call(
        &app,
        "POST",
        "/kylin/api/async_query",
        Some(ADMIN),
        Some(&huge),
    )
    .await;
    assert_error(
        status,
        &bytes,
        StatusCode::PAYLOAD_TOO_LARGE,
        "larger than 4096 bytes",
    );
    // Unknown fields and acceptPartial are accepted.
    let body = r#"{"sql":"ok:1\n","acceptPartial":true,"whatever":[1],"offset":0,"limit":50000}"#;
    let (status, _, _) = call(
        &app,
        "POST",
        "/kylin/api/async_query",
        Some(ADMIN),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    workers.shutdown().await;
}

#[tokio::test]
async fn every_endpoint_but_healthz_needs_credentials() {
    let (app, workers) = app();
    let id = "43eeb967-e76a-4214-8932-70594d454013";
    for (method, uri) in [
        ("POST", "/kylin/api/async_query".to_owned()),
        ("DELETE", "/kylin/api/async_query".to_owned()),
        ("GET", format!("/kylin/api/async_query/{id}/status")),
        ("GET", format!("/kylin/api/async_query/{id}/result")),
    ] {
        for auth in [None, Some("Basic QURNSU46d3Jvbmc=")] {
            let (status, headers, bytes) =
                call(&app, method, &uri, auth, Some(r#"{"sql":"ok:1"}"#)).await;
            assert_error(status, &bytes, StatusCode::UNAUTHORIZED, "");
            assert!(
                headers[header::WWW_AUTHENTICATE]
                    .to_str()
                    .expect("ascii")
                    .starts_with("Basic")
            );
        }
    }
    // The Kylin 5 endpoints too (without credentials only: wrong passwords are counted).
    for (method, uri) in [
        ("DELETE", format!("/kylin/api/async_query/{id}")),
        ("DELETE", format!("/kylin/api/async_query/stop/{id}")),
        ("GET", format!("/kylin/api/async_query/{id}/file_status")),
        ("GET", format!("/kylin/api/async_query/{id}/metadata")),
        (
            "GET",
            format!("/kylin/api/async_query/{id}/result_download"),
        ),
        ("GET", format!("/kylin/api/async_query/{id}/result_path")),
    ] {
        let (status, _, bytes) = call(&app, method, &uri, None, None).await;
        assert_error(status, &bytes, StatusCode::UNAUTHORIZED, "");
    }
    let (status, _, bytes) = call(&app, "GET", "/healthz", None, None).await;
    assert_eq!(
        (status, json_of(&bytes)),
        (StatusCode::OK, json!({"status":"ok"}))
    );
    workers.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_envelope() {
    let (app, workers) = app();
    let (status, _, bytes) = get(&app, "/kylin/api/nothing").await;
    assert_error(status, &bytes, StatusCode::NOT_FOUND, "no such endpoint");
    let (status, _, bytes) = call(&app, "PUT", "/kylin/api/async_query", Some(ADMIN), None).await;
    assert_error(
        status,
        &bytes,
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
    );
    workers.shutdown().await;
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn users_are_isolated_and_only_admins_clean_up() {
    let (app, workers) = app();
    let bob = basic("bob", "pw-bob");
    let carol = basic("carol", "pw-carol");
    let body = json!({ "sql": "ok:1\n", "project": "ssb" }).to_string();
    let (status, _, bytes) = call(
        &app,
        "POST",
        "/kylin/api/async_query",
        Some(&bob),
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let id = json_of(&bytes)["data"]["queryID"]
        .as_str()
        .expect("id")
        .to_owned();
    wait_status(&app, &id, "SUCCESSFUL").await; // as ADMIN, who sees all

    // Carol cannot see, download or probe Bob's query: it answers as an unknown id would.
    let (_, _, bytes) = call(
        &app,
        "GET",
        &format!("/kylin/api/async_query/{id}/status"),
        Some(&carol),
        None,
    )
    .await;
    assert_eq!(json_of(&bytes)["data"]["status"], "MISSING");
    let (status, _, bytes) = call(
        &app,
        "GET",
        &format!("/kylin/api/async_query/{id}/result"),
        Some(&carol),
        None,
    )
    .await;
    assert_error(status, &bytes, StatusCode::NOT_FOUND, "not found");
    let (status, _, _) = call(
        &app,
        "GET",
        &format!("/kylin/api/async_query/{id}/result"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Carol may not query ssb; nothing runs.
    let (status, _, bytes) = call(
        &app,
        "POST",
        "/kylin/api/async_query",
        Some(&carol),
        Some(&body),
    )
    .await;
    assert_error(
        status,
        &bytes,
        StatusCode::FORBIDDEN,
        "user 'carol' may not query project 'ssb'",
    );

    // Only an admin cleans everything.
    let (status, _, bytes) = call(&app, "DELETE", "/kylin/api/async_query", Some(&bob), None).await;
    assert_error(status, &bytes, StatusCode::FORBIDDEN, "only an admin");
    let (_, _, bytes) = call(
        &app,
        "GET",
        &format!("/kylin/api/async_query/{id}/status"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(
        json_of(&bytes)["data"]["status"],
        "SUCCESSFUL",
        "the refused clean-up deleted nothing"
    );
    workers.shutdown().await;
}

#[tokio::test]
async fn kylin5_calls_on_one_query() {
    let (app, workers) = app();
    let id = submit(&app, "ok:a\nb\n").await;
    wait_status(&app, &id, "SUCCESSFUL").await;
    let get = |path: String| {
        let app = app.clone();
        async move { get(&app, &path).await }
    };
    let (status, _, bytes) = get(format!("/kylin/api/async_query/{id}/file_status")).await;
    assert_eq!(
        (status, json_of(&bytes)["data"].clone()),
        (StatusCode::OK, json!(4))
    );
    let (_, _, bytes) = get(format!("/kylin/api/async_query/{id}/metadata")).await;
    assert_eq!(json_of(&bytes)["data"], json!([["C"], ["VARCHAR"]]));
    let (_, _, bytes) = get(format!("/kylin/api/async_query/{id}/result_path")).await;
    assert_eq!(
        json_of(&bytes)["data"],
        Value::Null,
        "the memory store has no path"
    );
    let (status, _, bytes) = get(format!(
        "/kylin/api/async_query/{id}/metadata?project=other"
    ))
    .await;
    assert_error(
        status,
        &bytes,
        StatusCode::BAD_REQUEST,
        "does not belong to project 'other'",
    );
    let (status, _, bytes) = call(
        &app,
        "GET",
        &format!("/kylin/api/async_query/{id}/file_status"),
        Some(ADMIN),
        Some(r#"{"project":"other"}"#),
    )
    .await;
    assert_error(status, &bytes, StatusCode::BAD_REQUEST, "does not belong");

    // Ranges come from the store's default (skip and take) implementation here.
    let req = Request::builder()
        .uri(format!("/kylin/api/async_query/{id}/result_download"))
        .header(header::AUTHORIZATION, ADMIN)
        .header(header::RANGE, "bytes=1-2")
        .body(Body::empty())
        .expect("request");
    let res = app.clone().oneshot(req).await.expect("response");
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes 1-2/4");
    let body = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"\nb");

    let (status, _, bytes) = call(
        &app,
        "DELETE",
        &format!("/kylin/api/async_query/stop/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_error(status, &bytes, StatusCode::CONFLICT, "already finished");
    let (status, _, _) = call(
        &app,
        "DELETE",
        &format!("/kylin/api/async_query/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    wait_status(&app, &id, "MISSING").await;
    let (status, _, bytes) = call(
        &app,
        "DELETE",
        "/kylin/api/async_query?older_than=2024-13-01%2000:00:00",
        Some(ADMIN),
        None,
    )
    .await;
    assert_error(
        status,
        &bytes,
        StatusCode::BAD_REQUEST,
        "yyyy-MM-dd HH:mm:ss",
    );
    workers.shutdown().await;
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

#[tokio::test]
async fn a_submit_with_wait_timeout_answers_the_end_in_one_call() {
    let (app, workers) = app();
    let body = json!({ "sql": "slow:200:a\nb", "project": "ssb", "wait_timeout": 10 }).to_string();
    let started = std::time::Instant::now();
    let (status, _, bytes) = call(
        &app,
        "POST",
        "/kylin/api/async_query",
        Some(ADMIN),
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v = json_of(&bytes);
    assert_eq!(v["data"]["status"], "SUCCESSFUL", "{v}");
    assert_eq!(v["data"]["rows"], 2, "{v}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A query that outlasts its wait answers RUNNING when the wait is up.
    let body = json!({ "sql": "block", "project": "ssb", "wait_timeout": "1" }).to_string();
    let started = std::time::Instant::now();
    let (_, _, bytes) = call(
        &app,
        "POST",
        "/kylin/api/async_query",
        Some(ADMIN),
        Some(&body),
    )
    .await;
    let v = json_of(&bytes);
    assert_eq!(v["data"]["status"], "RUNNING", "{v}");
    assert!(started.elapsed() >= Duration::from_millis(990));
    workers.shutdown().await;
}

#[tokio::test]
async fn a_long_poll_is_woken_by_the_end_within_50_ms() {
    let (app, workers) = app();
    let id = submit(&app, "slow:400:x").await;
    let (status, _, bytes) =
        get(&app, &format!("/kylin/api/async_query/{id}/status?wait=20")).await;
    let answered = now_ms();
    assert_eq!(status, StatusCode::OK);
    let v = json_of(&bytes);
    assert_eq!(v["data"]["status"], "SUCCESSFUL", "{v}");
    let finished = v["data"]["finished_at"].as_i64().expect("finished_at");
    assert!(
        answered - finished < 50,
        "answered {} ms after the end",
        answered - finished
    );
    // A status that does not change answers at the wait's end; a bad wait is a clear error.
    let started = std::time::Instant::now();
    let (_, _, bytes) = get(&app, &format!("/kylin/api/async_query/{id}/status?wait=1")).await;
    assert_eq!(json_of(&bytes)["data"]["status"], "SUCCESSFUL");
    assert!(started.elapsed() >= Duration::from_millis(990));
    for bad in ["61", "-1", "soon"] {
        let (status, _, bytes) = get(
            &app,
            &format!("/kylin/api/async_query/{id}/status?wait={bad}"),
        )
        .await;
        assert_error(
            status,
            &bytes,
            StatusCode::BAD_REQUEST,
            "'wait' must be a whole number",
        );
    }
    workers.shutdown().await;
}

#[tokio::test]
async fn events_stream_progress_then_the_final_status_and_close() {
    let (app, workers) = app();
    let id = submit(&app, "slow:1500:a\nb\nc").await;
    let (status, headers, bytes) = get(&app, &format!("/kylin/api/async_query/{id}/events")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let text = String::from_utf8(bytes).expect("utf-8");
    let events: Vec<(&str, Value)> = text
        .split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name, json_of(data.as_bytes())))
        })
        .collect();
    assert!(events.len() >= 2, "{text}");
    let (last_name, last) = events.last().expect("an event");
    assert_eq!(
        (*last_name, &last["status"], &last["rows"]),
        ("status", &json!("SUCCESSFUL"), &json!(3))
    );
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|(name, data)| *name == "progress" && data["status"] == "RUNNING"),
        "{text}"
    );
    // An id nobody issued: one final MISSING event.
    let (_, _, bytes) = get(
        &app,
        "/kylin/api/async_query/43eeb967-e76a-4214-8932-70594d454013/events",
    )
    .await;
    let text = String::from_utf8(bytes).expect("utf-8");
    assert!(
        text.starts_with("event: status") && text.contains("MISSING"),
        "{text}"
    );
    workers.shutdown().await;
}

#[tokio::test]
async fn kylin4_spellings_and_odd_paths_are_served() {
    let (app, workers) = app();
    let id = submit(&app, "ok:1\n").await;
    wait_status(&app, &id, "SUCCESSFUL").await;
    let (status, _, bytes) = get(&app, &format!("/kylin/api/async_query/{id}/filestatus")).await;
    assert_eq!(
        (status, json_of(&bytes)["data"].clone()),
        (StatusCode::OK, json!(2))
    );
    // A path that is not UTF-8 gets the envelope, like every other error.
    let (status, _, bytes) = get(&app, "/kylin/api/async_query/%FF%FE/status").await;
    assert_error(status, &bytes, StatusCode::BAD_REQUEST, "not valid UTF-8");
    assert_eq!(json_of(&bytes)["error_code"], "SPOOL-BAD-REQUEST");
    workers.shutdown().await;
}

async fn submit_with(
    app: &axum::Router,
    body: &Value,
    key: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder()
        .method("POST")
        .uri("/kylin/api/async_query")
        .header(header::AUTHORIZATION, ADMIN)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let req = req.body(Body::from(body.to_string())).expect("request");
    let res = app.clone().oneshot(req).await.expect("response");
    let (status, headers) = (res.status(), res.headers().clone());
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    (status, headers, json_of(&bytes))
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_query_and_a_changed_body_is_a_conflict() {
    let (app, workers) = app();
    let body = json!({ "sql": "ok:1", "project": "ssb" });
    let (status, headers, first) = submit_with(&app, &body, Some("key-1")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(headers.get("idempotent-replayed").is_none());
    let id = first["data"]["queryID"].as_str().expect("id").to_owned();
    // The same request in another spelling, by header or by field: the same query.
    let spelled = json!({ "project": "ssb", "sql": "ok:1", "request_id": "key-1" });
    for (body, key) in [
        (&body, Some("key-1")),
        (&spelled, None),
        (&spelled, Some("key-1")),
    ] {
        let (status, headers, again) = submit_with(&app, body, key).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["data"]["queryID"], id.as_str());
        assert_eq!(headers["idempotent-replayed"], "true");
    }
    let changed = json!({ "sql": "ok:2", "project": "ssb" });
    let (status, _, conflict) = submit_with(&app, &changed, Some("key-1")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(conflict["error_code"], "SPOOL-IDEMPOTENCY-CONFLICT");
    assert!(
        conflict["msg"].as_str().expect("msg").contains(&id),
        "{conflict}"
    );
    // Another key is another query; bad keys and disagreeing keys are clear errors.
    let (_, _, other) = submit_with(&app, &body, Some("key-2")).await;
    assert_ne!(other["data"]["queryID"], id.as_str());
    let (status, _, v) = submit_with(&app, &spelled, Some("key-3")).await;
    assert_eq!(
        (status, &v["error_code"]),
        (StatusCode::BAD_REQUEST, &json!("SPOOL-BAD-REQUEST")),
        "{v}"
    );
    let (status, _, v) = submit_with(&app, &body, Some("has space")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["msg"].as_str().expect("msg").contains("Idempotency-Key"),
        "{v}"
    );
    workers.shutdown().await;
}

#[tokio::test]
async fn an_expired_query_says_so_to_its_owner() {
    let (app, workers, spool) = app_with(|config| {
        config.result_retention = Some(Duration::from_millis(1));
        config.retention_sweep_every = Duration::from_secs(3600);
    });
    let id = submit(&app, "ok:1\n").await;
    wait_status(&app, &id, "SUCCESSFUL").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let swept = spool.sweep_expired().await.expect("sweep");
    assert_eq!(swept.expired, 1);
    let (_, _, bytes) = get(&app, &format!("/kylin/api/async_query/{id}/status")).await;
    let v = json_of(&bytes);
    assert_eq!(
        (&v["data"]["status"], &v["data"]["state"]),
        (&json!("MISSING"), &json!("EXPIRED")),
        "{v}"
    );
    assert!(
        v["data"]["info"]
            .as_str()
            .expect("info")
            .starts_with("query expired under the retention period at 20"),
        "{v}"
    );
    assert!(v["data"]["expired_at"].as_i64().is_some(), "{v}");
    workers.shutdown().await;
}
