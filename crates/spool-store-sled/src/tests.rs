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

/// A small tmpfs, unmounted on drop (mounting needs root; CI runs as root).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path, megabytes: u64) -> Self {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(at)
            .output()
            .expect("mount is needed (util-linux)");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes into `path` until the file system has no byte left.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    for size in [1 << 20, 4096, 1] {
        let block = vec![7u8; size];
        while file
            .write_all(&block)
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
    }
}

#[tokio::test]
async fn after_sled_fails_on_a_full_disk_the_store_opens_itself_again_once_space_returns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let _disk = SmallDisk::mount(tmp.path(), 40);
    let dir = tmp.path().join("jobs");
    let (store, _) = SledJobStore::open(&dir).expect("open");
    let (first, second) = (job(1), job(2));
    store.insert(&first, None).await.expect("insert");
    store.insert(&second, None).await.expect("insert");
    let filler = tmp.path().join("filler");
    fill(&filler);

    // New queries are refused while the disk is full, before sled writes anything.
    let refused = store.insert(&job(3), None).await.expect_err("a full disk");
    assert!(
        refused.to_string().contains("job store failure"),
        "{refused}"
    );
    // A worker's write meets sled's own I/O error (written over and over until it does: sled
    // writes into blocks it holds already while they last).
    let lease = |t| Lease {
        token: LeaseToken(t),
        expires_at: Timestamp::from_millis(i64::MAX),
    };
    let now = Timestamp::from_millis(10);
    let mut broke = false;
    for token in 1..=5000u64 {
        match store.claim_next(now, lease(token)).await {
            Ok(Some(claimed)) => {
                let _ = store.release(claimed.id, LeaseToken(token)).await;
            }
            Ok(None) => {}
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    assert!(broke, "sled never failed on a full disk");

    // Space returns: the store opens itself again, with what reached the disk, no restart.
    std::fs::remove_file(&filler).expect("rm filler");
    let held = store.get(first.id).await.expect("get after space returned");
    assert!(held.is_some(), "a stored job was lost");
    assert!(store.get(second.id).await.expect("get").is_some());
    let third = job(4);
    store
        .insert(&third, None)
        .await
        .expect("insert after space returned");
    let claimed = store
        .claim_next(now, lease(9_999))
        .await
        .expect("claim after space returned");
    assert!(claimed.is_some(), "nothing claimable after recovery");
    assert!(store.get(third.id).await.expect("get").is_some());
}
