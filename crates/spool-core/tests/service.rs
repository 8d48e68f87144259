//! The core's use cases on in-memory fakes of the stores and a scripted engine.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use spool_core::{Ports, ServiceError, Spool, SpoolConfig};
use spool_domain::{Lease, LeaseToken, Principal, PublicStatus, QueryId, QueryRequest, ResultKey};
use spool_ports::testing::{MemoryJobStore, MemoryResultStore, ScriptedEngine};
use spool_ports::{Clock, JobFilter, JobStore, RandomIds, ResultStore, SystemClock};

struct Harness {
    spool: Spool,
    jobs: MemoryJobStore,
    results: MemoryResultStore,
}

impl Harness {
    /// The status of `id` as an admin sees it.
    async fn status(&self, id: QueryId) -> PublicStatus {
        self.spool
            .status(&admin(), id)
            .await
            .expect("status")
            .status
    }

    /// Submits `sql` (a script for the scripted engine) to project `ssb` as `who`.
    async fn submit(&self, who: &Principal, sql: &str) -> QueryId {
        self.spool.submit(who, request(sql)).await.expect("submit")
    }
}

fn harness(workers: usize) -> Harness {
    harness_with(workers, |_| {})
}

fn harness_with(workers: usize, tune: impl FnOnce(&mut SpoolConfig)) -> Harness {
    harness_on(Arc::new(SystemClock), workers, tune)
}

fn harness_on(
    clock: Arc<dyn spool_ports::Clock>,
    workers: usize,
    tune: impl FnOnce(&mut SpoolConfig),
) -> Harness {
    sharing(
        MemoryJobStore::default(),
        MemoryResultStore::default(),
        clock,
        workers,
        tune,
    )
}

/// A service on existing stores: another process sharing them.
fn sharing(
    jobs: MemoryJobStore,
    results: MemoryResultStore,
    clock: Arc<dyn spool_ports::Clock>,
    workers: usize,
    tune: impl FnOnce(&mut SpoolConfig),
) -> Harness {
    let ports = Ports {
        jobs: Arc::new(jobs.clone()),
        results: Arc::new(results.clone()),
        engine: Arc::new(ScriptedEngine),
        catalog: Arc::new(ScriptedEngine),
        transcoder: Arc::new(ScriptedEngine),
        clock,
        ids: Arc::new(RandomIds),
    };
    let mut config = SpoolConfig::with_workers(workers);
    config.poll_interval = Duration::from_millis(20);
    tune(&mut config);
    Harness {
        spool: Spool::new(ports, config),
        jobs,
        results,
    }
}

fn admin() -> Principal {
    Principal::admin("ADMIN")
}

fn user(name: &str) -> Principal {
    Principal::user(name, &["ssb"])
}

fn request(sql: &str) -> QueryRequest {
    QueryRequest::new(sql.into(), Some("ssb"), None, None).expect("valid request")
}

async fn wait_for(spool: &Spool, who: &Principal, id: QueryId, want: PublicStatus) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = spool.status(who, id).await.expect("status");
        if status.status == want {
            return status.info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} stuck at {status:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn download(spool: &Spool, who: &Principal, id: QueryId) -> Vec<u8> {
    let result = spool.result(who, id).await.expect("result");
    let mut out = Vec::new();
    let mut body = result.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

#[tokio::test]
async fn a_submitted_query_runs_and_its_result_downloads() {
    let h = harness(2);
    let workers = h.spool.start();
    let id = h.submit(&admin(), "ok:1,a\n2,b\n").await;
    let info = wait_for(&h.spool, &admin(), id, PublicStatus::Successful).await;
    assert_eq!(info, "await fetching results");
    assert_eq!(download(&h.spool, &admin(), id).await, b"1,a\n2,b\n");
    workers.shutdown().await;
}

#[tokio::test]
async fn bad_sql_fails_with_the_engines_reason_and_has_no_result() {
    let h = harness(1);
    let workers = h.spool.start();
    let id = h.submit(&admin(), "fail:no such table: NOPE").await;
    let info = wait_for(&h.spool, &admin(), id, PublicStatus::Failed).await;
    assert_eq!(info, "no such table: NOPE");
    assert!(matches!(
        h.spool.result(&admin(), id).await,
        Err(ServiceError::QueryFailed { reason, .. }) if reason == "no such table: NOPE"
    ));
    workers.shutdown().await;
}

#[tokio::test]
async fn a_panicking_query_fails_and_the_worker_keeps_serving() {
    let h = harness(1);
    let workers = h.spool.start();
    let bad = h.submit(&admin(), "panic").await;
    let info = wait_for(&h.spool, &admin(), bad, PublicStatus::Failed).await;
    assert_eq!(info, "internal error while running the query");
    let good = h.submit(&admin(), "ok:x\n").await;
    wait_for(&h.spool, &admin(), good, PublicStatus::Successful).await;
    workers.shutdown().await;
}

#[tokio::test]
async fn the_pool_is_bounded_and_a_waiting_query_says_it_is_queued() {
    let h = harness(1);
    let workers = h.spool.start();
    let blocking = h.submit(&admin(), "block").await;
    wait_for(&h.spool, &admin(), blocking, PublicStatus::Running).await;
    while h.spool.running_count() == 0 {
        tokio::task::yield_now().await;
    }
    let waiting = h.submit(&admin(), "ok:1\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = h.spool.status(&admin(), waiting).await.expect("status");
    assert_eq!(status.status, PublicStatus::Running);
    assert!(status.info.contains("queued"), "{}", status.info);
    assert!(matches!(
        h.spool.result(&admin(), waiting).await,
        Err(ServiceError::NotReady(_))
    ));
    // Cleaning stops the blocking query; the slot then serves new work.
    h.spool.clean_all(&admin()).await.expect("clean");
    let next = h.submit(&admin(), "ok:2\n").await;
    wait_for(&h.spool, &admin(), next, PublicStatus::Successful).await;
    workers.shutdown().await;
}

#[tokio::test]
async fn clean_all_removes_every_query_and_result_including_running_ones() {
    let h = harness(2);
    let workers = h.spool.start();
    let done = h.submit(&admin(), "ok:1\n").await;
    wait_for(&h.spool, &admin(), done, PublicStatus::Successful).await;
    let running = h.submit(&admin(), "block").await;
    while h.spool.running_count() == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(h.spool.clean_all(&admin()).await.expect("clean"), 2);
    for id in [done, running] {
        wait_for(&h.spool, &admin(), id, PublicStatus::Missing).await;
    }
    while h.spool.running_count() > 0 {
        tokio::task::yield_now().await;
    }
    assert!(
        h.jobs
            .list(&JobFilter::default())
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        h.results.list().await.expect("list").is_empty(),
        "no result outlives its query"
    );
    workers.shutdown().await;
}

#[tokio::test]
async fn users_see_only_their_own_queries_and_admins_see_all() {
    let h = harness(1);
    let workers = h.spool.start();
    let alice = user("alice");
    let id = h.submit(&alice, "ok:1\n").await;
    wait_for(&h.spool, &alice, id, PublicStatus::Successful).await;
    wait_for(&h.spool, &admin(), id, PublicStatus::Successful).await;
    let bob = user("bob");
    assert_eq!(
        h.spool.status(&bob, id).await.expect("status").status,
        PublicStatus::Missing
    );
    assert!(matches!(
        h.spool.result(&bob, id).await,
        Err(ServiceError::NotFound(_))
    ));
    assert!(matches!(
        h.spool.clean_all(&bob).await,
        Err(ServiceError::Forbidden(_))
    ));
    assert_eq!(
        h.spool.status(&alice, id).await.expect("status").status,
        PublicStatus::Successful
    );
    workers.shutdown().await;
}

#[tokio::test]
async fn shutdown_puts_running_queries_back_in_the_queue() {
    let h = harness(1);
    let workers = h.spool.start();
    let id = h.submit(&admin(), "block").await;
    while h.spool.running_count() == 0 {
        tokio::task::yield_now().await;
    }
    workers.shutdown().await;
    let job = h.jobs.get(id).await.expect("get").expect("kept");
    assert_eq!(job.state, spool_domain::JobState::Queued);
    assert!(
        h.results.list().await.expect("list").is_empty(),
        "the partial result was discarded"
    );
}

#[tokio::test]
async fn an_unknown_id_is_missing() {
    let h = harness(1);
    let id = QueryId::new_random();
    assert_eq!(h.status(id).await, PublicStatus::Missing);
    assert!(matches!(
        h.spool.result(&admin(), id).await,
        Err(ServiceError::NotFound(_))
    ));
}

mod interactions {
    use super::*;
    use spool_ports::{JobStoreError, MockJobStore, MockQueryEngine, MockResultStore};

    #[tokio::test]
    async fn a_submission_the_store_refuses_is_an_error_and_never_reaches_the_engine() {
        let mut jobs = MockJobStore::new();
        jobs.expect_insert()
            .times(1)
            .returning(|_, _| Err(JobStoreError::Backend("connection reset".into())));
        jobs.expect_insert().times(1).returning(|_, _| {
            let enospc = std::io::Error::from_raw_os_error(28);
            Err(JobStoreError::backend(std::io::Error::other(enospc)))
        });
        // No expectations: any call to the engine or the result store fails the test.
        let ports = Ports {
            jobs: Arc::new(jobs),
            results: Arc::new(MockResultStore::new()),
            engine: Arc::new(MockQueryEngine::new()),
            catalog: Arc::new(spool_ports::testing::ScriptedEngine),
            transcoder: Arc::new(spool_ports::testing::ScriptedEngine),
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
        };
        let spool = Spool::new(ports, SpoolConfig::with_workers(1));
        let err = spool
            .submit(&admin(), request("select 1"))
            .await
            .expect_err("refused");
        assert!(
            matches!(&err, ServiceError::StoreUnavailable(m) if m == "connection reset"),
            "{err:?}"
        );
        // A full disk, however the store wrapped it, says so.
        let err = spool
            .submit(&admin(), request("select 1"))
            .await
            .expect_err("refused");
        assert!(matches!(err, ServiceError::StoreFull), "{err:?}");
        assert!(err.to_string().contains("disk full") && err.to_string().contains("not stored"));
    }
}

#[tokio::test]
async fn a_query_past_its_time_limit_fails_and_frees_its_slot() {
    let h = harness_with(1, |c| c.query_timeout = Some(Duration::from_millis(300)));
    let workers = h.spool.start();
    let slow = h.submit(&admin(), "block").await;
    let info = wait_for(&h.spool, &admin(), slow, PublicStatus::Failed).await;
    assert_eq!(info, "query timed out after 0.3 s");
    assert!(
        h.results.list().await.expect("list").is_empty(),
        "the partial result was discarded"
    );
    let next = h.submit(&admin(), "ok:1\n").await;
    wait_for(&h.spool, &admin(), next, PublicStatus::Successful).await;
    workers.shutdown().await;
}

#[tokio::test]
async fn an_engine_that_ignores_cancellation_is_abandoned_after_the_grace_period() {
    let h = harness_with(1, |c| {
        c.query_timeout = Some(Duration::from_millis(100));
        c.cancel_grace = Duration::from_millis(200);
    });
    let workers = h.spool.start();
    let started = std::time::Instant::now();
    let deaf = h.submit(&admin(), "deaf").await;
    let info = wait_for(&h.spool, &admin(), deaf, PublicStatus::Failed).await;
    assert!(info.starts_with("query timed out"), "{info}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "abandoned long before the engine woke up"
    );
    let next = h.submit(&admin(), "ok:1\n").await;
    wait_for(&h.spool, &admin(), next, PublicStatus::Successful).await;
    workers.shutdown().await;
}

#[tokio::test]
async fn a_user_may_submit_only_to_granted_projects_and_nothing_runs_otherwise() {
    let h = harness(1);
    let outsider = Principal::user("carol", &["other"]);
    let err = h
        .spool
        .submit(&outsider, request("ok:1\n"))
        .await
        .expect_err("not granted");
    assert!(
        matches!(&err, ServiceError::Forbidden(m) if m == "user 'carol' may not query project 'ssb'"),
        "{err:?}"
    );
    assert!(
        h.jobs
            .list(&JobFilter::default())
            .await
            .expect("list")
            .is_empty(),
        "nothing was stored"
    );
}

#[tokio::test]
async fn a_result_past_the_byte_cap_fails_and_leaves_no_file() {
    let h = harness_with(1, |c| c.max_result_bytes = Some(5));
    let workers = h.spool.start();
    let big = h.submit(&admin(), "ok:1234567890\n").await;
    let info = wait_for(&h.spool, &admin(), big, PublicStatus::Failed).await;
    assert_eq!(info, "result is larger than the limit of 5 bytes");
    let small = h.submit(&admin(), "ok:123\n").await;
    wait_for(&h.spool, &admin(), small, PublicStatus::Successful).await;
    assert_eq!(
        h.results.list().await.expect("list"),
        vec![ResultKey::new(small, 1)]
    );
    workers.shutdown().await;
}

#[tokio::test]
async fn a_result_past_the_row_cap_fails_and_leaves_no_file() {
    let h = harness_with(1, |c| c.max_result_rows = Some(2));
    let workers = h.spool.start();
    let big = h.submit(&admin(), "ok:1\n2\n3\n").await;
    let info = wait_for(&h.spool, &admin(), big, PublicStatus::Failed).await;
    assert_eq!(info, "result has more than the limit of 2 rows");
    assert!(h.results.list().await.expect("list").is_empty());
    workers.shutdown().await;
}

#[tokio::test]
async fn a_user_past_the_in_flight_cap_is_refused_and_nothing_is_queued() {
    let h = harness_with(1, |c| c.max_in_flight_per_user = Some(1));
    let workers = h.spool.start();
    let alice = user("alice");
    let first = h.submit(&alice, "block").await;
    let err = h
        .spool
        .submit(&alice, request("ok:1\n"))
        .await
        .expect_err("over the cap");
    assert!(
        matches!(err, ServiceError::TooManyQueries { limit: 1 }),
        "{err:?}"
    );
    assert_eq!(
        h.jobs
            .list(&JobFilter::default())
            .await
            .expect("list")
            .len(),
        1,
        "nothing was queued"
    );
    // Other users are not affected.
    h.spool
        .submit(&user("bob"), request("ok:1\n"))
        .await
        .expect("bob may submit");
    // Once Alice's query is gone, she may submit again.
    h.spool.clean_all(&admin()).await.expect("clean");
    wait_for(&h.spool, &alice, first, PublicStatus::Missing).await;
    let again = h.submit(&alice, "ok:1\n").await;
    wait_for(&h.spool, &alice, again, PublicStatus::Successful).await;
    // A finished query frees the slot too.
    let next = h.submit(&alice, "ok:2\n").await;
    wait_for(&h.spool, &alice, next, PublicStatus::Successful).await;
    workers.shutdown().await;
}

#[tokio::test]
async fn stopping_a_running_query_fails_it_and_frees_its_slot() {
    let h = harness(1);
    let workers = h.spool.start();
    let bob = user("bob");
    let long = h.submit(&bob, "block").await;
    while h.spool.running_count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Queued behind it: stopped without ever running.
    let queued = h.submit(&bob, "ok:1\n").await;
    // Someone else cannot stop it: to them it does not exist.
    assert!(matches!(
        h.spool.stop(&user("eve"), long, None).await,
        Err(ServiceError::NotFound(_))
    ));
    let other = spool_domain::ProjectName::parse("other").expect("name");
    assert!(matches!(
        h.spool.stop(&bob, long, Some(&other)).await,
        Err(ServiceError::WrongProject { .. })
    ));
    h.spool.stop(&bob, queued, None).await.expect("stop queued");
    h.spool.stop(&bob, long, None).await.expect("stop running");
    // `stop` returns once the run has ended.
    assert_eq!(h.spool.running_count(), 0);
    for id in [long, queued] {
        let info = wait_for(&h.spool, &bob, id, PublicStatus::Failed).await;
        assert_eq!(info, "stopped by user");
        assert!(h.results.list().await.expect("list").is_empty());
    }
    assert!(matches!(
        h.spool.stop(&bob, long, None).await,
        Err(ServiceError::AlreadyFinished {
            status: "FAILED",
            ..
        })
    ));
    // The slot serves the next query.
    let next = h.submit(&bob, "ok:2\n").await;
    wait_for(&h.spool, &bob, next, PublicStatus::Successful).await;
    workers.shutdown().await;
}

#[tokio::test]
async fn deleting_one_query_removes_it_and_its_result_for_its_owner_only() {
    let h = harness(1);
    let workers = h.spool.start();
    let bob = user("bob");
    let id = h.submit(&bob, "ok:1\n").await;
    wait_for(&h.spool, &bob, id, PublicStatus::Successful).await;
    assert!(matches!(
        h.spool.delete(&user("eve"), id, None).await,
        Err(ServiceError::NotFound(_))
    ));
    h.spool.delete(&bob, id, None).await.expect("delete");
    assert_eq!(
        h.spool.status(&bob, id).await.expect("status").status,
        PublicStatus::Missing
    );
    assert!(h.results.list().await.expect("list").is_empty());
    assert!(
        h.jobs
            .list(&JobFilter::default())
            .await
            .expect("list")
            .is_empty()
    );
    workers.shutdown().await;
}

#[tokio::test]
async fn deleting_by_project_and_age_is_for_admins_and_spares_the_rest() {
    let clock = spool_ports::testing::ManualClock::at(1_000_000);
    let h = harness_on(Arc::new(clock.clone()), 1, |_| {});
    let workers = h.spool.start();
    let old = h.submit(&admin(), "ok:1\n").await;
    wait_for(&h.spool, &admin(), old, PublicStatus::Successful).await;
    clock.advance(Duration::from_secs(60));
    let cutoff = clock.now();
    let other_project =
        QueryRequest::new("ok:2\n".into(), Some("other"), None, None).expect("valid");
    let old_other = h
        .spool
        .submit(&admin(), other_project)
        .await
        .expect("submit");
    clock.advance(Duration::from_secs(60));
    let new = h.submit(&admin(), "ok:3\n").await;
    for id in [old_other, new] {
        wait_for(&h.spool, &admin(), id, PublicStatus::Successful).await;
    }
    let ssb = spool_domain::ProjectName::parse("ssb").expect("name");
    assert!(matches!(
        h.spool
            .delete_matching(&user("bob"), Some(&ssb), Some(cutoff))
            .await,
        Err(ServiceError::Forbidden(_))
    ));
    let deleted = h
        .spool
        .delete_matching(&admin(), Some(&ssb), Some(cutoff.plus_millis(1)))
        .await
        .expect("delete");
    assert_eq!(deleted, 1);
    assert_eq!(h.status(old).await, PublicStatus::Missing);
    assert_eq!(h.status(old_other).await, PublicStatus::Successful);
    assert_eq!(h.status(new).await, PublicStatus::Successful);
    workers.shutdown().await;
}

#[tokio::test]
async fn the_retention_sweep_removes_expired_queries_and_orphaned_results() {
    let clock = spool_ports::testing::ManualClock::at(1_000_000);
    let h = harness_on(Arc::new(clock.clone()), 1, |c| {
        c.result_retention = Some(Duration::from_secs(7 * 24 * 3600));
    });
    let workers = h.spool.start();
    let old = h.submit(&admin(), "ok:1\n").await;
    wait_for(&h.spool, &admin(), old, PublicStatus::Successful).await;
    clock.advance(Duration::from_secs(6 * 24 * 3600));
    let young = h.submit(&admin(), "ok:2\n").await;
    wait_for(&h.spool, &admin(), young, PublicStatus::Successful).await;
    // A crash in an earlier sweep, between deleting a record and its result, left an orphan.
    let orphan = h.submit(&admin(), "ok:3\n").await;
    wait_for(&h.spool, &admin(), orphan, PublicStatus::Successful).await;
    h.jobs.delete(orphan).await.expect("delete record only");

    assert_eq!(
        h.spool.sweep_expired().await.expect("sweep"),
        spool_core::Sweep {
            expired: 0,
            orphans: 1,
            tombstones: 0,
        }
    );
    clock.advance(Duration::from_secs(24 * 3600 + 1));
    assert_eq!(
        h.spool.sweep_expired().await.expect("sweep"),
        spool_core::Sweep {
            expired: 1,
            orphans: 0,
            tombstones: 0,
        }
    );
    assert_eq!(h.status(old).await, PublicStatus::Missing);
    // Its owner hears that it expired, and when; other users hear nothing of it.
    let expired = h.spool.status(&admin(), old).await.expect("status");
    assert_eq!(expired.expired_at, Some(clock.now()));
    assert!(
        expired
            .info
            .starts_with("query expired under the retention period at 19"),
        "{}",
        expired.info
    );
    let stranger = h.spool.status(&user("eve"), old).await.expect("status");
    assert_eq!(
        (stranger.info.as_str(), stranger.expired_at),
        ("query not found", None)
    );
    assert_eq!(h.status(young).await, PublicStatus::Successful);
    assert_eq!(
        h.results.list().await.expect("list"),
        vec![ResultKey::new(young, 1)]
    );
    // One more retention period and the tombstone is forgotten too (with the young query,
    // expired by now).
    clock.advance(Duration::from_secs(7 * 24 * 3600 + 1));
    let sweep = h.spool.sweep_expired().await.expect("sweep");
    assert_eq!((sweep.expired, sweep.tombstones), (1, 1));
    let forgotten = h.spool.status(&admin(), old).await.expect("status");
    assert_eq!(
        (forgotten.info.as_str(), forgotten.expired_at),
        ("query not found", None)
    );
    workers.shutdown().await;
}

#[tokio::test]
async fn an_attempt_that_lost_its_lease_never_harms_the_winners_result() {
    let clock = spool_ports::testing::ManualClock::at(1_000_000);
    let h = harness_on(Arc::new(clock.clone()), 1, |_| {});
    let id = h.submit(&admin(), "ok:winner\n").await;
    // Attempt 1 (a process that stalls) claims it and writes, then its lease lapses.
    let lease = Lease {
        token: LeaseToken(7),
        expires_at: clock.now().plus_millis(30_000),
    };
    let stalled = h
        .jobs
        .claim_next(clock.now(), lease)
        .await
        .expect("claim")
        .expect("the job");
    assert_eq!(stalled.attempts, 1);
    let mut late = h
        .results
        .create(ResultKey::new(id, 1))
        .await
        .expect("create");
    late.write_all(b"loser\n").expect("write");
    clock.advance(Duration::from_secs(31));
    // Attempt 2 runs here and wins.
    let workers = h.spool.start();
    wait_for(&h.spool, &admin(), id, PublicStatus::Successful).await;
    // The loser commits late; it cannot record its outcome, and what it wrote is its own.
    late.commit().await.expect("commit");
    let lost = h
        .jobs
        .finish(
            id,
            LeaseToken(7),
            spool_domain::JobState::failed(clock.now(), spool_domain::FailureCode::Execution, "x"),
        )
        .await;
    assert!(matches!(
        lost,
        Err(spool_ports::JobStoreError::LeaseLost(_))
    ));
    assert_eq!(download(&h.spool, &admin(), id).await, b"winner\n");
    // Had it died before removing it, the sweep removes the loser's result and only that.
    assert_eq!(
        h.spool.sweep_expired().await.expect("sweep"),
        spool_core::Sweep {
            expired: 0,
            orphans: 1,
            tombstones: 0,
        }
    );
    assert_eq!(
        h.results.list().await.expect("list"),
        vec![ResultKey::new(id, 2)]
    );
    assert_eq!(download(&h.spool, &admin(), id).await, b"winner\n");
    workers.shutdown().await;
}

#[tokio::test]
async fn a_stop_through_one_process_ends_the_query_another_runs() {
    let runner = harness(1);
    let api_only = sharing(
        runner.jobs.clone(),
        runner.results.clone(),
        Arc::new(SystemClock),
        0,
        |_| {},
    );
    let workers = runner.spool.start();
    let serving = api_only.spool.start();
    let bob = user("bob");
    let id = api_only.submit(&bob, "block").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while runner.spool.running_count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runner never claimed it"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = std::time::Instant::now();
    api_only.spool.stop(&bob, id, None).await.expect("stop");
    let info = wait_for(&api_only.spool, &bob, id, PublicStatus::Failed).await;
    assert_eq!(info, "stopped by user");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the stop reached the other process's worker by notification: {:?}",
        started.elapsed()
    );
    assert_eq!(runner.spool.running_count(), 0);
    assert_eq!(
        api_only.spool.running_count(),
        0,
        "a process without workers runs nothing"
    );
    serving.shutdown().await;
    workers.shutdown().await;
}

#[tokio::test]
async fn the_per_user_cap_holds_across_processes() {
    let a = harness_with(0, |c| c.max_in_flight_per_user = Some(2));
    let b = sharing(
        a.jobs.clone(),
        a.results.clone(),
        Arc::new(SystemClock),
        0,
        |c| c.max_in_flight_per_user = Some(2),
    );
    let alice = user("alice");
    a.submit(&alice, "block").await;
    b.submit(&alice, "block").await;
    for spool in [&a.spool, &b.spool] {
        assert!(matches!(
            spool.submit(&alice, request("ok:1\n")).await,
            Err(ServiceError::TooManyQueries { limit: 2 })
        ));
    }
}

#[tokio::test]
async fn a_wait_returns_when_the_query_ends_not_at_its_timeout() {
    let h = harness(1);
    let workers = h.spool.start();
    let id = h.submit(&admin(), "slow:300:a\nb").await;
    let started = tokio::time::Instant::now();
    let status = h
        .spool
        .wait_status(&admin(), id, PublicStatus::Running, Duration::from_secs(20))
        .await
        .expect("wait");
    let waited = started.elapsed();
    assert_eq!(status.status, PublicStatus::Successful, "{status:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
    let detail = status.detail.expect("detail");
    assert_eq!(detail.state, spool_domain::Lifecycle::Succeeded);
    assert_eq!((detail.progress.rows, detail.progress.bytes), (2, 3));
    assert_eq!(detail.attempt, 1);
    assert!(detail.started_at.is_some() && detail.finished_at.is_some());
    assert!(detail.expires_at > detail.finished_at, "{detail:?}");

    // A status that already differs answers at once; a wait on an unchanged one times out.
    let at_once = tokio::time::Instant::now();
    let again = h
        .spool
        .wait_status(&admin(), id, PublicStatus::Running, Duration::from_secs(20))
        .await
        .expect("wait");
    assert_eq!(again.status, PublicStatus::Successful);
    assert!(at_once.elapsed() < Duration::from_secs(1));
    let timed = tokio::time::Instant::now();
    let same = h
        .spool
        .wait_status(
            &admin(),
            id,
            PublicStatus::Successful,
            Duration::from_millis(200),
        )
        .await
        .expect("wait");
    assert_eq!(same.status, PublicStatus::Successful);
    assert!(timed.elapsed() >= Duration::from_millis(190));
    workers.shutdown().await;
}

#[tokio::test]
async fn a_delete_wakes_a_wait_with_missing() {
    let h = harness(1);
    let workers = h.spool.start();
    let id = h.submit(&admin(), "endless").await;
    let spool = h.spool.clone();
    let waiting = tokio::spawn(async move {
        spool
            .wait_status(&admin(), id, PublicStatus::Running, Duration::from_secs(30))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.spool.delete(&admin(), id, None).await.expect("delete");
    let status = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken, not timed out")
        .expect("join")
        .expect("wait");
    assert_eq!(status.status, PublicStatus::Missing);
    workers.shutdown().await;
}

#[tokio::test]
async fn a_running_query_reports_its_progress_and_its_place_in_the_queue() {
    let h = harness_with(1, |c| c.progress_interval = Duration::from_millis(20));
    let workers = h.spool.start();
    let running = h.submit(&admin(), "endless").await;
    wait_for(&h.spool, &admin(), running, PublicStatus::Running).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let detail = h
            .spool
            .status(&admin(), running)
            .await
            .expect("status")
            .detail
            .expect("detail");
        if detail.state == spool_domain::Lifecycle::Running && detail.progress.bytes == 7 {
            assert_eq!(detail.progress.rows, 1);
            assert_eq!(detail.queue_position, None);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{detail:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The only worker is busy: these two wait, in order.
    // (Apart in time: submissions in the same millisecond are ordered by id.)
    let first = h.submit(&admin(), "ok:x").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = h.submit(&admin(), "ok:y").await;
    for (id, place) in [(first, 0), (second, 1)] {
        let detail = h
            .spool
            .status(&admin(), id)
            .await
            .expect("status")
            .detail
            .expect("detail");
        assert_eq!(
            (detail.state, detail.queue_position, detail.attempt),
            (spool_domain::Lifecycle::Queued, Some(place), 0)
        );
    }
    h.spool.stop(&admin(), running, None).await.expect("stop");
    let stopped = h.spool.status(&admin(), running).await.expect("status");
    assert_eq!(
        (stopped.status, stopped.info.as_str()),
        (PublicStatus::Failed, "stopped by user")
    );
    let detail = stopped.detail.expect("detail");
    assert_eq!(detail.state, spool_domain::Lifecycle::Cancelled);
    assert_eq!(detail.failure, Some(spool_domain::FailureCode::Cancelled));
    workers.shutdown().await;
}

#[tokio::test]
async fn failures_carry_a_stable_code_and_whether_a_retry_may_help() {
    let h = harness(1);
    let workers = h.spool.start();
    let bad = h.submit(&admin(), "fail:no such table").await;
    let down = h
        .submit(&admin(), "down:the cluster is not answering")
        .await;
    for (id, code, retryable) in [
        (bad, "SPOOL-QUERY-INVALID", false),
        (down, "SPOOL-ENGINE-UNAVAILABLE", true),
    ] {
        wait_for(&h.spool, &admin(), id, PublicStatus::Failed).await;
        let failure = h
            .spool
            .status(&admin(), id)
            .await
            .expect("status")
            .detail
            .and_then(|d| d.failure)
            .expect("a failure code");
        assert_eq!((failure.as_str(), failure.retryable()), (code, retryable));
    }
    workers.shutdown().await;
}

#[tokio::test]
async fn a_revoked_grant_hides_the_users_earlier_queries_there() {
    let h = harness(1);
    let workers = h.spool.start();
    let bob = user("bob");
    let id = h.submit(&bob, "ok:1").await;
    wait_for(&h.spool, &bob, id, PublicStatus::Successful).await;
    let revoked = Principal::user("bob", &["other"]);
    let status = h.spool.status(&revoked, id).await.expect("status");
    assert_eq!(status.status, PublicStatus::Missing);
    assert!(matches!(
        h.spool.result(&revoked, id).await,
        Err(ServiceError::NotFound(_))
    ));
    // Granted again, or an admin: visible.
    assert_eq!(h.status(id).await, PublicStatus::Successful);
    let regranted = Principal::user("bob", &["SSB"]);
    assert_eq!(
        h.spool.status(&regranted, id).await.expect("status").status,
        PublicStatus::Successful
    );
    workers.shutdown().await;
}

/// Submissions within one millisecond (a clock that stands still) still get later submission
/// times in the order they were made, so listings are newest first.
#[tokio::test]
async fn submissions_in_one_millisecond_keep_their_order() {
    let clock = spool_ports::testing::ManualClock::at(1_000_000);
    let h = harness_on(Arc::new(clock), 0, |_| {});
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(h.submit(&admin(), &format!("ok:{i}\n")).await);
    }
    let mut jobs = h.jobs.list(&JobFilter::default()).await.expect("list");
    jobs.sort_by_key(|j| (j.submitted_at, j.id));
    let listed: Vec<QueryId> = jobs.iter().map(|j| j.id).collect();
    assert_eq!(listed, ids);
    assert_eq!(jobs[0].submitted_at.as_millis(), 1_000_000);
}
