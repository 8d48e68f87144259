//! In-memory fakes of the storage ports and the contract suites every adapter must pass.
//!
//! The same suite runs against the fakes here and against each real adapter in its own crate,
//! so the fakes used by core tests cannot drift from the real behaviour.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use spool_domain::{
    Job, JobState, Lease, LeaseToken, ProjectName, QueryId, QueryRequest, Timestamp,
};

use crate::{
    CancelToken, Clock, EngineError, Execution, JobStore, JobStoreError, QueryEngine, ResultSink,
    ResultStore, ResultStoreError, StoredResult,
};

/// A clock that stands still until moved, for tests of time-based behaviour (retention).
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<std::sync::atomic::AtomicI64>);

impl ManualClock {
    /// A clock showing `millis` since the epoch.
    pub fn at(millis: i64) -> Self {
        Self(Arc::new(std::sync::atomic::AtomicI64::new(millis)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0
            .fetch_add(millis, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// An engine driven by the SQL text, for tests of everything around the engine:
/// - `ok:<csv>`: writes `<csv>` as the result, one row per line;
/// - `fail:<reason>`: fails with `<reason>` as an invalid query;
/// - `panic`: panics;
/// - `deaf`: ignores cancellation for 30 s (an engine stuck in work it cannot interrupt);
/// - anything else: writes a little, then waits to be cancelled.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScriptedEngine;

#[async_trait]
impl QueryEngine for ScriptedEngine {
    async fn execute(
        &self,
        request: &QueryRequest,
        mut sink: Box<dyn ResultSink>,
        cancel: CancelToken,
    ) -> Result<Execution, EngineError> {
        let sql = request.sql.as_str();
        if let Some(csv) = sql.strip_prefix("ok:") {
            sink.write_all(csv.as_bytes())
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            return Ok(Execution {
                sink,
                rows: csv.lines().count() as u64,
                columns: vec![spool_domain::ResultColumn {
                    name: "C".into(),
                    sql_type: "VARCHAR".into(),
                }],
            });
        }
        if let Some(reason) = sql.strip_prefix("fail:") {
            return Err(EngineError::InvalidQuery(reason.to_owned()));
        }
        if sql == "panic" {
            panic!("engine bug");
        }
        if sql == "deaf" {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            return Err(EngineError::Internal("woke up".into()));
        }
        sink.write_all(b"partial")
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        while !cancel.is_cancelled() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Err(EngineError::Cancelled)
    }
}

/// A [`JobStore`] in memory. Not durable; for tests.
#[derive(Debug, Default, Clone)]
pub struct MemoryJobStore {
    jobs: Arc<Mutex<BTreeMap<QueryId, Job>>>,
}

impl MemoryJobStore {
    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<QueryId, Job>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn insert(&self, job: &Job) -> Result<(), JobStoreError> {
        let mut jobs = self.jobs();
        if jobs.contains_key(&job.id) {
            return Err(JobStoreError::AlreadyExists(job.id));
        }
        jobs.insert(job.id, job.clone());
        Ok(())
    }

    async fn get(&self, id: QueryId) -> Result<Option<Job>, JobStoreError> {
        Ok(self.jobs().get(&id).cloned())
    }

    async fn claim_next(&self, now: Timestamp, lease: Lease) -> Result<Option<Job>, JobStoreError> {
        let mut jobs = self.jobs();
        let next = jobs
            .values()
            .filter(|j| j.is_claimable(now))
            .min_by_key(|j| (j.submitted_at, j.id))
            .map(|j| j.id);
        Ok(next.and_then(|id| {
            let job = jobs.get_mut(&id)?;
            job.claim(lease, now).ok()?;
            Some(job.clone())
        }))
    }

    async fn renew(
        &self,
        id: QueryId,
        token: LeaseToken,
        expires_at: Timestamp,
    ) -> Result<(), JobStoreError> {
        let mut jobs = self.jobs();
        let job = jobs.get_mut(&id).ok_or(JobStoreError::NotFound(id))?;
        job.renew(token, expires_at)
            .map_err(|_| JobStoreError::LeaseLost(id))
    }

    async fn finish(
        &self,
        id: QueryId,
        token: LeaseToken,
        outcome: JobState,
    ) -> Result<Job, JobStoreError> {
        let mut jobs = self.jobs();
        let job = jobs.get_mut(&id).ok_or(JobStoreError::NotFound(id))?;
        job.finish(token, outcome)
            .map_err(|_| JobStoreError::LeaseLost(id))?;
        Ok(job.clone())
    }

    async fn release(&self, id: QueryId, token: LeaseToken) -> Result<(), JobStoreError> {
        if let Some(job) = self.jobs().get_mut(&id)
            && matches!(&job.state, JobState::Running { lease, .. } if lease.token == token)
        {
            job.requeue();
        }
        Ok(())
    }

    async fn end_unclaimed(
        &self,
        id: QueryId,
        now: Timestamp,
        outcome: JobState,
    ) -> Result<Job, JobStoreError> {
        let mut jobs = self.jobs();
        let job = jobs.get_mut(&id).ok_or(JobStoreError::NotFound(id))?;
        job.end_unclaimed(now, outcome)
            .map_err(|_| JobStoreError::LeaseLost(id))?;
        Ok(job.clone())
    }

    async fn delete(&self, id: QueryId) -> Result<Option<Job>, JobStoreError> {
        Ok(self.jobs().remove(&id))
    }

    async fn list(&self) -> Result<Vec<Job>, JobStoreError> {
        let mut jobs: Vec<Job> = self.jobs().values().cloned().collect();
        jobs.sort_by_key(|j| (j.submitted_at, j.id));
        Ok(jobs)
    }
}

/// A [`ResultStore`] in memory. Not durable; for tests.
#[derive(Debug, Default, Clone)]
pub struct MemoryResultStore {
    files: Arc<Mutex<HashMap<QueryId, Bytes>>>,
}

impl MemoryResultStore {
    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<QueryId, Bytes>> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct MemorySink {
    id: QueryId,
    buf: Vec<u8>,
    files: Arc<Mutex<HashMap<QueryId, Bytes>>>,
}

impl io::Write for MemorySink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ResultSink for MemorySink {
    fn commit(self: Box<Self>) -> Result<u64, ResultStoreError> {
        let len = self.buf.len() as u64;
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.id, Bytes::from(self.buf));
        Ok(len)
    }
}

#[async_trait]
impl ResultStore for MemoryResultStore {
    async fn create(&self, id: QueryId) -> Result<Box<dyn ResultSink>, ResultStoreError> {
        Ok(Box::new(MemorySink {
            id,
            buf: Vec::new(),
            files: Arc::clone(&self.files),
        }))
    }

    async fn open(&self, id: QueryId) -> Result<Option<StoredResult>, ResultStoreError> {
        Ok(self.files().get(&id).cloned().map(|bytes| StoredResult {
            len: bytes.len() as u64,
            body: futures::stream::iter([Ok(bytes)]).boxed(),
        }))
    }

    async fn delete(&self, id: QueryId) -> Result<(), ResultStoreError> {
        self.files().remove(&id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<QueryId>, ResultStoreError> {
        Ok(self.files().keys().copied().collect())
    }
}

fn sample_job(submitted_at: i64) -> Job {
    let request = QueryRequest {
        sql: "select 1".into(),
        project: ProjectName::default_project(),
        offset: None,
        limit: Some(10),
        output: Default::default(),
    };
    Job::new(
        QueryId::new_random(),
        "ADMIN".into(),
        request,
        Timestamp::from_millis(submitted_at),
    )
}

fn lease(token: u64, until: i64) -> Lease {
    Lease {
        token: LeaseToken(token),
        expires_at: Timestamp::from_millis(until),
    }
}

/// Checks the [`JobStore`] contract on an empty store. Panics on the first violation.
pub async fn job_store_contract(store: &dyn JobStore) {
    let now = Timestamp::from_millis(10_000);
    assert!(
        store
            .claim_next(now, lease(1, 20_000))
            .await
            .expect("claim")
            .is_none()
    );

    let older = sample_job(1_000);
    let newer = sample_job(2_000);
    store.insert(&newer).await.expect("insert");
    store.insert(&older).await.expect("insert");
    assert!(matches!(
        store.insert(&older).await,
        Err(JobStoreError::AlreadyExists(id)) if id == older.id
    ));
    assert_eq!(store.get(older.id).await.expect("get"), Some(older.clone()));
    assert_eq!(store.get(QueryId::new_random()).await.expect("get"), None);
    let listed: Vec<QueryId> = store
        .list()
        .await
        .expect("list")
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, vec![older.id, newer.id], "list is oldest first");

    // Claims go oldest first, each job to one claimant.
    let first = store
        .claim_next(now, lease(1, 20_000))
        .await
        .expect("claim")
        .expect("a job");
    assert_eq!(first.id, older.id);
    assert_eq!(first.attempts, 1);
    let second = store
        .claim_next(now, lease(2, 20_000))
        .await
        .expect("claim")
        .expect("a job");
    assert_eq!(second.id, newer.id);
    assert!(
        store
            .claim_next(now, lease(3, 20_000))
            .await
            .expect("claim")
            .is_none()
    );

    // Only the lease holder renews or finishes.
    store
        .renew(older.id, LeaseToken(1), Timestamp::from_millis(30_000))
        .await
        .expect("renew");
    assert!(matches!(
        store
            .renew(older.id, LeaseToken(9), Timestamp::from_millis(30_000))
            .await,
        Err(JobStoreError::LeaseLost(_))
    ));
    let done = JobState::Succeeded {
        finished_at: now,
        rows: 3,
        bytes: 12,
        columns: vec![spool_domain::ResultColumn {
            name: "N".into(),
            sql_type: "BIGINT".into(),
        }],
    };
    assert!(matches!(
        store.finish(older.id, LeaseToken(2), done.clone()).await,
        Err(JobStoreError::LeaseLost(_))
    ));
    let finished = store
        .finish(older.id, LeaseToken(1), done.clone())
        .await
        .expect("finish");
    assert_eq!(finished.state, done);
    assert_eq!(
        store.get(older.id).await.expect("get").expect("job").state,
        done
    );
    assert!(matches!(
        store.finish(older.id, LeaseToken(1), done.clone()).await,
        Err(JobStoreError::LeaseLost(_))
    ));

    // Release puts a held job back in the queue; a wrong token changes nothing.
    store
        .release(newer.id, LeaseToken(7))
        .await
        .expect("release");
    assert!(
        store
            .claim_next(now, lease(3, 20_000))
            .await
            .expect("claim")
            .is_none()
    );
    store
        .release(newer.id, LeaseToken(2))
        .await
        .expect("release");
    let again = store
        .claim_next(now, lease(4, 20_000))
        .await
        .expect("claim")
        .expect("requeued");
    assert_eq!((again.id, again.attempts), (newer.id, 2));

    // A job no worker holds can be ended (a stop before it ran); it is then never claimed. A
    // held or finished job cannot.
    let waiting = sample_job(2_500);
    store.insert(&waiting).await.expect("insert");
    let stopped = JobState::Failed {
        finished_at: now,
        reason: "stopped by user".into(),
    };
    assert!(matches!(
        store.end_unclaimed(again.id, now, stopped.clone()).await,
        Err(JobStoreError::LeaseLost(_))
    ));
    assert!(matches!(
        store.end_unclaimed(older.id, now, stopped.clone()).await,
        Err(JobStoreError::LeaseLost(_))
    ));
    assert_eq!(
        store
            .end_unclaimed(waiting.id, now, stopped.clone())
            .await
            .expect("end a queued job")
            .state,
        stopped
    );
    assert!(
        store
            .claim_next(now, lease(5, 20_000))
            .await
            .expect("claim")
            .is_none(),
        "an ended job is not claimed"
    );
    assert!(matches!(
        store
            .end_unclaimed(QueryId::new_random(), now, stopped)
            .await,
        Err(JobStoreError::NotFound(_))
    ));
    store.delete(waiting.id).await.expect("delete");

    // Deleting is idempotent, and a deleted job can be neither renewed nor finished.
    assert_eq!(
        store.delete(newer.id).await.expect("delete").map(|j| j.id),
        Some(newer.id)
    );
    assert_eq!(store.delete(newer.id).await.expect("delete"), None);
    assert!(matches!(
        store
            .renew(newer.id, LeaseToken(4), Timestamp::from_millis(30_000))
            .await,
        Err(JobStoreError::NotFound(_))
    ));
    assert!(matches!(
        store.finish(newer.id, LeaseToken(4), done).await,
        Err(JobStoreError::NotFound(_))
    ));
    // A deleted queued job is never claimed.
    let queued = sample_job(3_000);
    store.insert(&queued).await.expect("insert");
    store.delete(queued.id).await.expect("delete");
    assert!(
        store
            .claim_next(now, lease(5, 20_000))
            .await
            .expect("claim")
            .is_none()
    );
    assert_eq!(store.list().await.expect("list").len(), 1);
}

/// Checks the [`ResultStore`] contract on an empty store. Panics on the first violation.
pub async fn result_store_contract(store: &dyn ResultStore) {
    async fn read(store: &dyn ResultStore, id: QueryId) -> Option<Vec<u8>> {
        let result = store.open(id).await.expect("open")?;
        let mut out = Vec::new();
        let mut body = result.body;
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        assert_eq!(out.len() as u64, result.len, "len matches the bytes");
        Some(out)
    }
    let id = QueryId::new_random();
    assert!(read(store, id).await.is_none());

    let mut sink = store.create(id).await.expect("create");
    sink.write_all(b"a,b\n").expect("write");
    assert!(
        read(store, id).await.is_none(),
        "nothing is visible before commit"
    );
    sink.write_all(b"1,2\n").expect("write");
    assert_eq!(sink.commit().expect("commit"), 8);
    assert_eq!(read(store, id).await.as_deref(), Some(&b"a,b\n1,2\n"[..]));
    assert_eq!(store.list().await.expect("list"), vec![id]);

    // A dropped sink leaves the committed result alone.
    let mut abandoned = store.create(id).await.expect("create");
    abandoned.write_all(b"partial").expect("write");
    drop(abandoned);
    assert_eq!(read(store, id).await.as_deref(), Some(&b"a,b\n1,2\n"[..]));

    // A new commit replaces the old result whole.
    let mut sink = store.create(id).await.expect("create");
    // A pattern, so that a range at the wrong offset shows.
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    sink.write_all(&big).expect("write");
    sink.commit().expect("commit");
    assert_eq!(read(store, id).await, Some(big.clone()));

    // Ranges: any slice, across chunk boundaries, and an empty one.
    for (start, end) in [
        (0, 5),
        (1_000_000, 2_500_000),
        (big.len() as u64 - 3, big.len() as u64),
        (7, 7),
    ] {
        let part = store
            .open_range(id, start..end)
            .await
            .expect("open_range")
            .expect("result");
        assert_eq!(part.len, end - start);
        let mut out = Vec::new();
        let mut body = part.body;
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        assert_eq!(
            out,
            big[start as usize..end as usize],
            "range {start}..{end}"
        );
    }
    assert!(
        store
            .open_range(QueryId::new_random(), 0..1)
            .await
            .expect("open_range")
            .is_none()
    );

    store.delete(id).await.expect("delete");
    store.delete(id).await.expect("delete is idempotent");
    assert!(read(store, id).await.is_none());
    assert!(store.list().await.expect("list").is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_job_store_keeps_the_contract() {
        job_store_contract(&MemoryJobStore::default()).await;
    }

    #[tokio::test]
    async fn memory_result_store_keeps_the_contract() {
        result_store_contract(&MemoryResultStore::default()).await;
    }
}
