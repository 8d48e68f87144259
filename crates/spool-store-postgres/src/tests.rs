//! The job and user store contracts, migrations and failure messages against a real
//! PostgreSQL server (started by `cargo xtask ci`, which sets `SPOOL_TEST_POSTGRES`).

use super::*;

/// A URL of an empty database of its own on the test server.
async fn fresh_database() -> String {
    let base = std::env::var("SPOOL_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "SPOOL_TEST_POSTGRES is not set: these tests need a PostgreSQL server. \
             `cargo xtask ci` installs and starts one; for a shell, \
             `eval \"$(cargo xtask services start)\"` does the same and prints the variables"
        )
    });
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {base}: {e}"));
    let name = format!("spool_test_{:016x}", rand_u64());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create database");
    let (prefix, _) = base.rsplit_once('/').expect("a URL with a database name");
    format!("{prefix}/{name}")
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[tokio::test]
async fn keeps_the_job_store_contract_across_two_processes_views() {
    let url = fresh_database().await;
    let (a, b) = (
        connect(&url).await.expect("a"),
        connect(&url).await.expect("b"),
    );
    spool_ports::testing::job_store_contract(&a.job_store(), &b.job_store()).await;
}

#[tokio::test]
async fn keeps_the_user_store_contract_across_two_processes_views() {
    let url = fresh_database().await;
    let (a, b) = (
        connect(&url).await.expect("a"),
        connect(&url).await.expect("b"),
    );
    spool_ports::testing::user_store_contract(&a.user_store(), &b.user_store()).await;
}

#[tokio::test]
async fn processes_starting_together_apply_the_schema_once() {
    let url = fresh_database().await;
    let opened = futures::future::join_all((0..4).map(|_| connect(&url))).await;
    for db in &opened {
        assert!(db.is_ok(), "{:?}", db.as_ref().err());
    }
    let db = connect(&url).await.expect("again");
    let versions: Vec<i32> = sqlx::query("SELECT version FROM spool_schema ORDER BY version")
        .fetch_all(&db.pool)
        .await
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2]);
}

#[tokio::test]
async fn a_schema_from_a_newer_release_is_refused_and_left_alone() {
    let url = fresh_database().await;
    let db = connect(&url).await.expect("connect");
    sqlx::query("INSERT INTO spool_schema (version, name) VALUES (99, 'future')")
        .execute(&db.pool)
        .await
        .expect("insert");
    let err = connect(&url).await.expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("schema version 99") && text.contains("upgrade spool-server"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_without_the_password() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("postgres://spool:secret@127.0.0.1:{port}/spool");
    let err = connect(&url).await.expect_err("nothing listens");
    let text = err.to_string();
    assert!(
        text.starts_with("cannot connect to PostgreSQL at postgres://spool:***@127.0.0.1"),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");
}

#[test]
fn passwords_are_hidden_in_urls() {
    assert_eq!(
        redact("postgres://u:p@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    assert_eq!(redact("postgres://h/db"), "postgres://h/db");
}

#[test]
fn event_payloads_round_trip() {
    let id = QueryId::new_random();
    for event in [
        JobEvent::Queued,
        JobEvent::StopRequested(id),
        JobEvent::Finished(id),
    ] {
        assert_eq!(parse_event(&event_payload(event)), Some(event));
    }
    assert_eq!(parse_event("stop:not-an-id"), None);
}
