//! Fault injection at the ports: job and result stores that fail at random points (claims,
//! renewals, finishes, sink creation, writes, commits, opens), under the core's workers. Every
//! query must end (SUCCESSFUL or FAILED with a reason, never stuck), and whatever a SUCCESSFUL
//! query serves must be exactly its result.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use spool_core::{Ports, Spool, SpoolConfig};
use spool_domain::{Principal, PublicStatus, QueryId, QueryRequest};
use spool_ports::testing::{
    Faults, FlakyJobStore, FlakyResultStore, MemoryJobStore, MemoryResultStore, ScriptedEngine,
};
use spool_ports::{RandomIds, ResultStore, SystemClock};

const QUERIES: usize = 16;

/// Downloads `id`'s result, retrying the result store's injected failures.
async fn download(spool: &Spool, who: &Principal, id: QueryId) -> Vec<u8> {
    for _ in 0..50 {
        if let Ok(mut result) = spool.result(who, id).await {
            let mut out = Vec::new();
            let mut whole = true;
            while let Some(chunk) = result.body.next().await {
                match chunk {
                    Ok(bytes) => out.extend_from_slice(&bytes),
                    Err(_) => whole = false,
                }
            }
            if whole {
                return out;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{id}: no download in 50 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_ends_and_every_served_result_is_whole_when_the_stores_fail_at_random() {
    let admin = Principal::admin("ADMIN");
    let (mut succeeded, mut failed, mut injected) = (0, 0, 0);
    for seed in 1..=6u64 {
        // About one guarded call in twelve fails.
        let faults = Faults::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), 80);
        let jobs = MemoryJobStore::default();
        let results = MemoryResultStore::default();
        let ports = Ports {
            jobs: Arc::new(FlakyJobStore::new(jobs.clone(), faults.clone())),
            results: Arc::new(FlakyResultStore::new(results.clone(), faults.clone())),
            engine: Arc::new(ScriptedEngine),
            catalog: Arc::new(ScriptedEngine),
            transcoder: Arc::new(ScriptedEngine),
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
        };
        let mut config = SpoolConfig::with_workers(2);
        config.poll_interval = Duration::from_millis(10);
        // A failed finish leaves the job to its lease: keep the wait short.
        config.lease = Duration::from_millis(400);
        let spool = Spool::new(ports, config);
        let workers = spool.start();

        let mut submitted = Vec::new();
        for i in 0..QUERIES {
            let csv = format!("{seed},{i},a\n{seed},{i},b\n{seed},{i},c\n");
            let request =
                QueryRequest::new(format!("ok:{csv}"), Some("ssb"), None, None).expect("request");
            let id = spool.submit(&admin, request).await.expect("submit");
            submitted.push((id, csv));
        }
        for (id, csv) in &submitted {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let status = spool.status(&admin, *id).await.expect("status");
                match status.status {
                    PublicStatus::Successful => {
                        assert_eq!(
                            download(&spool, &admin, *id).await,
                            csv.as_bytes(),
                            "seed {seed}: {id} served other bytes than its result"
                        );
                        succeeded += 1;
                        break;
                    }
                    PublicStatus::Failed => {
                        assert!(!status.info.is_empty(), "seed {seed}: {id} failed silently");
                        failed += 1;
                        break;
                    }
                    PublicStatus::Missing => panic!("seed {seed}: {id} was lost"),
                    PublicStatus::Running => {
                        assert!(
                            tokio::time::Instant::now() < deadline,
                            "seed {seed}: {id} never ended: {status:?}"
                        );
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
        workers.shutdown().await;
        // An attempt that lost its lease and then failed to remove its result leaves an orphan
        // (the result store's delete fails too); the sweep is what removes those. Its deletes
        // fail at random as well: run it until one pass goes through.
        let mut swept = false;
        for _ in 0..50 {
            if spool.sweep_expired().await.is_ok() {
                swept = true;
                break;
            }
        }
        assert!(swept, "seed {seed}: no sweep went through in 50 passes");
        // No result is left behind but the ones the jobs point to.
        let keys = results.list().await.expect("keys");
        for key in &keys {
            let job = spool
                .job(&admin, key.query)
                .await
                .expect("a stored key's job");
            match job.state {
                spool_domain::JobState::Succeeded { attempt, .. } => assert_eq!(
                    attempt, key.attempt,
                    "seed {seed}: a lost attempt's result of {} was kept",
                    key.query
                ),
                other => panic!("seed {seed}: {} has a result but is {other:?}", key.query),
            }
        }
        injected += faults.injected();
    }
    assert!(injected > 20, "only {injected} failures were injected");
    assert!(succeeded > failed, "{succeeded} succeeded, {failed} failed");
    eprintln!(
        "figures: fault injection: {} queries over 6 seeds, {injected} injected failures, \
         {succeeded} SUCCESSFUL with whole results, {failed} FAILED with a reason, 0 stuck or lost",
        6 * QUERIES
    );
}
