//! The flaky adapters with no faults are the stores they wrap: they keep the port contracts,
//! so a failure the fault suite finds is the injected one, not the wrapper's.
#![cfg(feature = "testing")]

use spool_ports::testing::{
    Faults, FlakyJobStore, FlakyResultStore, MemoryJobStore, MemoryResultStore, job_store_contract,
    result_store_contract,
};

#[tokio::test]
async fn without_faults_the_flaky_adapters_keep_the_contracts() {
    let jobs = MemoryJobStore::default();
    let (a, b) = (
        FlakyJobStore::new(jobs.clone(), Faults::new(1, 0)),
        FlakyJobStore::new(jobs, Faults::new(2, 0)),
    );
    job_store_contract(&a, &b).await;
    let results = FlakyResultStore::new(MemoryResultStore::default(), Faults::new(3, 0));
    result_store_contract(&results).await;
}

#[tokio::test]
async fn faults_strike_at_the_rate_asked_for() {
    let faults = Faults::new(42, 100);
    let probe = FlakyResultStore::new(MemoryResultStore::default(), faults.clone());
    let mut failures = 0;
    for _ in 0..2_000 {
        let key = spool_domain::ResultKey::new(spool_domain::QueryId::new_random(), 1);
        if spool_ports::ResultStore::delete(&probe, key).await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(failures, faults.injected());
    assert!(
        (120..=280).contains(&failures),
        "{failures} of 2000 at 10 %"
    );
}
