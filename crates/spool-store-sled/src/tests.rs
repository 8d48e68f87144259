//! The job store contract and crash recovery, against a real sled database in a temp dir.

use spool_domain::{JobState, Lease, LeaseToken, ProjectName, QueryId, QueryRequest, Timestamp};
use spool_ports::JobStore;

use super::*;

#[tokio::test]
async fn keeps_the_job_store_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, recovered) = SledJobStore::open(dir.path()).expect("open");
    assert!(recovered.is_empty());
    spool_ports::testing::job_store_contract(&store, &store.clone()).await;
}

fn job(at: i64) -> Job {
    let request = QueryRequest {
        sql: "select 1".into(),
        project: ProjectName::default_project(),
        offset: None,
        limit: None,
        output: Default::default(),
    };
    Job::new(
        QueryId::new_random(),
        "ADMIN".into(),
        request,
        Timestamp::from_millis(at),
    )
}

#[tokio::test]
async fn jobs_survive_reopening_and_running_ones_are_requeued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, queued, done) = (job(1), job(2), job(3));
    {
        let (store, _) = SledJobStore::open(dir.path()).expect("open");
        for j in [&running, &queued, &done] {
            store.insert(j, None).await.expect("insert");
        }
        let lease = |t| Lease {
            token: LeaseToken(t),
            expires_at: Timestamp::from_millis(i64::MAX),
        };
        let now = Timestamp::from_millis(10);
        assert_eq!(
            store
                .claim_next(now, lease(1))
                .await
                .expect("claim")
                .map(|j| j.id),
            Some(running.id)
        );
        assert_eq!(
            store
                .claim_next(now, lease(2))
                .await
                .expect("claim")
                .map(|j| j.id),
            Some(queued.id)
        );
        assert_eq!(
            store
                .claim_next(now, lease(3))
                .await
                .expect("claim")
                .map(|j| j.id),
            Some(done.id)
        );
        store
            .release(queued.id, LeaseToken(2))
            .await
            .expect("release");
        let outcome = JobState::failed(now, spool_domain::FailureCode::Execution, "x");
        store
            .finish(done.id, LeaseToken(3), outcome)
            .await
            .expect("finish");
        // Dropped without shutdown: the lease on `running` is still live in the records.
    }
    let (store, recovered) = SledJobStore::open(dir.path()).expect("reopen");
    assert_eq!(recovered, vec![running.id]);
    let lease = Lease {
        token: LeaseToken(9),
        expires_at: Timestamp::from_millis(100),
    };
    let now = Timestamp::from_millis(20);
    let first = store
        .claim_next(now, lease)
        .await
        .expect("claim")
        .expect("job");
    let second = store
        .claim_next(now, lease)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!(
        (first.id, second.id),
        (running.id, queued.id),
        "oldest first"
    );
    assert_eq!(first.attempts, 2);
    assert!(store.claim_next(now, lease).await.expect("claim").is_none());
    assert!(
        store
            .get(done.id)
            .await
            .expect("get")
            .expect("kept")
            .is_finished()
    );
}

#[tokio::test]
async fn the_per_user_cap_counts_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (job(1), job(2));
    {
        let (store, _) = SledJobStore::open(dir.path()).expect("open");
        store.insert(&a, Some(2)).await.expect("insert");
        store.insert(&b, Some(2)).await.expect("insert");
        let lease = Lease {
            token: LeaseToken(1),
            expires_at: Timestamp::from_millis(i64::MAX),
        };
        store
            .claim_next(Timestamp::from_millis(5), lease)
            .await
            .expect("claim")
            .expect("a job");
    }
    let (store, recovered) = SledJobStore::open(dir.path()).expect("reopen");
    assert_eq!(recovered, vec![a.id]);
    assert!(matches!(
        store.insert(&job(3), Some(2)).await,
        Err(JobStoreError::TooManyInFlight { limit: 2 })
    ));
    store.delete(a.id).await.expect("delete");
    store
        .insert(&job(3), Some(2))
        .await
        .expect("a slot is free");
}

#[test]
fn a_record_from_a_newer_release_is_refused_by_name_and_an_old_one_is_read() {
    let mut record = serde_json::to_value(job(1_000)).expect("json");
    assert_eq!(record["format"], spool_domain::JOB_FORMAT);
    record["format"] = serde_json::json!(spool_domain::JOB_FORMAT + 1);
    let id = record["id"].as_str().expect("id").to_owned();
    let err = decode(&serde_json::to_vec(&record).expect("bytes")).expect_err("newer");
    assert!(
        err.to_string()
            .starts_with(&format!("job record {id} was written by a newer Spool")),
        "{err}"
    );
    // A record from before formats were kept reads as format 1.
    record.as_object_mut().expect("object").remove("format");
    let old = decode(&serde_json::to_vec(&record).expect("bytes")).expect("an old record");
    assert_eq!(old.format, 1);
}
