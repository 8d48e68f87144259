//! The job and user store contracts, migrations and failure messages against a real
//! PostgreSQL server (started by `cargo xtask ci`, which sets `SPOOL_TEST_POSTGRES`).

use futures::StreamExt;

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
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
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

/// A finished job, stored through `store`.
async fn finished_job(store: &PgJobStore) -> Job {
    use spool_domain::{ProjectName, QueryRequest};
    let request = QueryRequest {
        sql: "select 1".into(),
        project: ProjectName::default_project(),
        offset: None,
        limit: None,
        output: Default::default(),
    };
    let now = Timestamp::from_millis(1_000);
    let job = Job::new(QueryId::new_random(), "ADMIN".into(), request, now);
    store.insert(&job, None).await.expect("insert");
    let lease = Lease {
        token: LeaseToken(7),
        expires_at: Timestamp::from_millis(60_000),
    };
    let claimed = store.claim_next(now, lease).await.expect("claim");
    assert_eq!(claimed.map(|j| j.id), Some(job.id));
    let failed = JobState::failed(now, spool_domain::FailureCode::Execution, "done");
    store
        .finish(job.id, lease.token, failed)
        .await
        .expect("finish")
}

/// Polls `view` until job `id` is gone, failing after `seconds`.
async fn gone_within(view: &PgJobStore, id: QueryId, within: Duration, why: &str) {
    let deadline = tokio::time::Instant::now() + within;
    while view.get(id).await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_lost_listen_connection_empties_the_cache_and_events_resume() {
    let url = fresh_database().await;
    let (a, b) = (
        connect(&url).await.expect("a"),
        connect(&url).await.expect("b"),
    );
    let (a_jobs, b_jobs) = (a.job_store(), b.job_store());
    let job = finished_job(&a_jobs).await;
    // B serves the finished job from its cache from now on.
    for _ in 0..2 {
        assert!(b_jobs.get(job.id).await.expect("get").is_some());
    }
    // Cut both processes' LISTEN connections, then delete while they may be down: the
    // announcement can be lost, so B must not keep answering from its cache.
    let cut: Vec<i32> = sqlx::query(
        "SELECT pg_terminate_backend(pid)::int FROM pg_stat_activity
          WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&a.pool)
    .await
    .expect("terminate")
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(cut.len(), 2, "two listening connections");
    a_jobs.delete(job.id).await.expect("delete");
    // Within half a second: before B could have listened again (it waits a second first).
    gone_within(
        &b_jobs,
        job.id,
        Duration::from_millis(500),
        "B still served a deleted job after losing LISTEN",
    )
    .await;

    // Once B listens again (within a few seconds) events flow again, and its cache works and
    // hears deletes again. Events sent before it listened again are lost: send until one
    // arrives.
    let mut events = b_jobs.events();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let heard = loop {
        let job = finished_job(&a_jobs).await;
        let next = tokio::time::timeout(Duration::from_millis(500), async {
            while let Some(event) = events.next().await {
                if event == JobEvent::Finished(job.id) {
                    return true;
                }
            }
            false
        });
        if next.await == Ok(true) {
            break job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B heard no event within 10 s of its LISTEN connection being cut"
        );
    };
    for _ in 0..2 {
        assert!(b_jobs.get(heard.id).await.expect("get").is_some());
    }
    a_jobs.delete(heard.id).await.expect("delete");
    gone_within(
        &b_jobs,
        heard.id,
        Duration::from_secs(5),
        "B's cache missed a delete after reconnecting",
    )
    .await;
}

#[tokio::test]
async fn a_job_record_from_a_newer_release_is_refused_by_name() {
    let db = connect(&fresh_database().await).await.expect("connect");
    let store = db.job_store();
    let job = finished_job(&store).await;
    sqlx::query(
        "UPDATE spool_jobs SET job = jsonb_set(job::jsonb, '{format}', '2')::json WHERE id = $1",
    )
    .bind(job.id.to_string())
    .execute(&db.pool)
    .await
    .expect("a newer record");
    let err = store
        .list(&JobFilter::default())
        .await
        .expect_err("a newer record is not misread");
    let text = format!("{}", std::error::Error::source(&err).expect("source"));
    assert!(
        text.starts_with(&format!(
            "job record {} was written by a newer Spool (format 2",
            job.id
        )),
        "{text}"
    );
}
