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
use futures::stream::BoxStream;
use spool_domain::{
    Job, JobState, Lease, LeaseToken, Progress, ProjectName, QueryId, QueryRequest, ResultKey,
    StateKind, StopEffect, Timestamp, Tombstone,
};

use crate::{
    CancelToken, Clock, EngineError, EventHub, Execution, JobEvent, JobFilter, JobPosition,
    JobStore, JobStoreError, QueryEngine, Renewal, ResultSink, ResultStore, ResultStoreError,
    Stopped, StoredResult,
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
/// - `slow:<ms>:<csv>`: waits `<ms>` milliseconds (cancellably), then acts as `ok:<csv>`;
/// - `down:<reason>`: fails as an unavailable engine;
/// - anything else: writes a little (one row, `partial`), then waits to be cancelled.
///
/// Every project exists but [`ScriptedEngine::MISSING`]. As a [`ProjectCatalog`] and a
/// [`Transcoder`] it has the ports' defaults: no projects, nothing to convert.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScriptedEngine;

impl ScriptedEngine {
    /// The one project the scripted engine does not have.
    pub const MISSING: &'static str = "nowhere";

    /// The engine contract's script for this engine (see [`check_query_engine`]).
    pub fn contract() -> EngineScript {
        EngineScript {
            project: ProjectName::parse("scripted").expect("a project name"),
            answer: ("ok:1,a\n2,\n".to_owned(), "1,a\n2,\n".to_owned()),
            invalid: "fail:no such column".to_owned(),
            long: "wait".to_owned(),
            missing: ProjectName::parse(Self::MISSING).expect("a project name"),
        }
    }
}

impl crate::ProjectCatalog for ScriptedEngine {}

impl crate::Transcoder for ScriptedEngine {}

#[async_trait]
impl QueryEngine for ScriptedEngine {
    async fn execute(
        &self,
        request: &QueryRequest,
        mut sink: Box<dyn ResultSink>,
        cancel: CancelToken,
    ) -> Result<Execution, EngineError> {
        if request.project.as_str() == Self::MISSING {
            return Err(EngineError::ProjectNotFound(request.project.clone()));
        }
        let sql = request.sql.as_str();
        let mut ok = sql.strip_prefix("ok:");
        if let Some((ms, csv)) = sql.strip_prefix("slow:").and_then(|s| s.split_once(':')) {
            let until = tokio::time::Instant::now()
                + std::time::Duration::from_millis(ms.parse().unwrap_or(0));
            while tokio::time::Instant::now() < until {
                if cancel.is_cancelled() {
                    return Err(EngineError::Cancelled);
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            ok = Some(csv);
        }
        if let Some(reason) = sql.strip_prefix("down:") {
            return Err(EngineError::Unavailable(reason.to_owned()));
        }
        if let Some(csv) = ok {
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
        sink.add_rows(1)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        while !cancel.is_cancelled() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Err(EngineError::Cancelled)
    }
}

/// What [`check_query_engine`] sends an engine, in the engine's own language, over a project
/// it serves.
#[derive(Debug, Clone)]
pub struct EngineScript {
    /// A project the engine serves.
    pub project: ProjectName,
    /// SQL and the CSV it answers (rows in the order the SQL asks for).
    pub answer: (String, String),
    /// SQL the engine must refuse as an invalid query.
    pub invalid: String,
    /// SQL that writes rows for several seconds at least (to be cancelled while it runs).
    pub long: String,
    /// A project the engine does not have.
    pub missing: ProjectName,
}

/// The [`QueryEngine`] contract, checked on `engine` with `script`: an answer written whole
/// into the sink with its rows and columns counted; an invalid query refused as the user's;
/// a missing project reported as such; a run stopped while it runs, or before it starts,
/// reported as cancelled (never as a success) within seconds.
pub async fn check_query_engine(engine: &dyn QueryEngine, script: &EngineScript) {
    let store = MemoryResultStore::default();
    let request = |sql: &str, project: &ProjectName| {
        QueryRequest::new(sql.to_owned(), Some(project.as_str()), None, None).expect("a request")
    };
    let sink = |n: u32| {
        let store = store.clone();
        async move {
            let key = ResultKey::new(QueryId::new_random(), n);
            (key, store.create(key).await.expect("a sink"))
        }
    };

    // The answer, whole, with its rows and columns.
    let (sql, csv) = &script.answer;
    let (key, out) = sink(1).await;
    let done = engine
        .execute(&request(sql, &script.project), out, CancelToken::new())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(done.rows, csv.lines().count() as u64, "{sql}: rows");
    assert!(
        !done.columns.is_empty(),
        "{sql}: the result names its columns"
    );
    done.sink.commit().await.expect("commit");
    let mut body = store.open(key).await.expect("open").expect("stored").body;
    let mut written = Vec::new();
    while let Some(chunk) = body.next().await {
        written.extend_from_slice(&chunk.expect("a chunk"));
    }
    assert_eq!(String::from_utf8_lossy(&written), csv.as_str(), "{sql}");

    // An invalid query is the user's, with a message; a missing project is named.
    let (_, out) = sink(1).await;
    match engine
        .execute(
            &request(&script.invalid, &script.project),
            out,
            CancelToken::new(),
        )
        .await
    {
        Err(EngineError::InvalidQuery(message)) => {
            assert!(
                !message.trim().is_empty(),
                "{}: an empty message",
                script.invalid
            );
        }
        other => panic!("{}: {:?}", script.invalid, other.map(|e| e.rows)),
    }
    let (_, out) = sink(1).await;
    match engine
        .execute(&request(sql, &script.missing), out, CancelToken::new())
        .await
    {
        Err(EngineError::ProjectNotFound(project)) => assert_eq!(project, script.missing),
        other => panic!("project {}: {:?}", script.missing, other.map(|e| e.rows)),
    }

    // Stopped while it runs, and before it starts: cancelled, never a success.
    for stop_after in [Some(std::time::Duration::from_millis(300)), None] {
        let cancel = CancelToken::new();
        match stop_after {
            Some(after) => {
                let stop = cancel.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    stop.cancel(crate::CancelReason::Stopped);
                });
            }
            None => cancel.cancel(crate::CancelReason::Stopped),
        }
        let (_, out) = sink(1).await;
        let started = std::time::Instant::now();
        let ended = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            engine.execute(&request(&script.long, &script.project), out, cancel),
        )
        .await
        .unwrap_or_else(|_| panic!("{}: still running a minute after a stop", script.long));
        assert!(
            matches!(ended, Err(EngineError::Cancelled)),
            "{} stopped {stop_after:?} after its start: {:?}",
            script.long,
            ended.map(|e| e.rows)
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{}: ended {:?} after its start",
            script.long,
            started.elapsed()
        );
    }
}

/// A [`JobStore`] in memory. Not durable; for tests.
#[derive(Debug, Default, Clone)]
pub struct MemoryJobStore {
    jobs: Arc<Mutex<BTreeMap<QueryId, Job>>>,
    tombstones: Arc<Mutex<HashMap<QueryId, Tombstone>>>,
    events: EventHub,
}

impl MemoryJobStore {
    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<QueryId, Job>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn insert(&self, job: &Job, max_in_flight: Option<usize>) -> Result<(), JobStoreError> {
        {
            let mut jobs = self.jobs();
            if jobs.contains_key(&job.id) {
                return Err(JobStoreError::AlreadyExists(job.id));
            }
            if let Some(key) = job.idempotency.as_ref().map(|i| i.key.as_str())
                && let Some(held) = jobs
                    .values()
                    .find(|j| j.owner == job.owner && j.holds_key(key, job.submitted_at))
            {
                return Err(JobStoreError::Duplicate(Box::new(held.clone())));
            }
            if let Some(limit) = max_in_flight {
                let mine = jobs
                    .values()
                    .filter(|j| j.owner == job.owner && !j.is_finished())
                    .count();
                if mine >= limit {
                    return Err(JobStoreError::TooManyInFlight { limit });
                }
            }
            jobs.insert(job.id, job.clone());
        }
        self.events.publish(JobEvent::Queued);
        Ok(())
    }

    async fn get(&self, id: QueryId) -> Result<Option<Job>, JobStoreError> {
        Ok(self.jobs().get(&id).cloned())
    }

    async fn get_many(&self, ids: &[QueryId]) -> Result<HashMap<QueryId, Job>, JobStoreError> {
        let jobs = self.jobs();
        Ok(ids
            .iter()
            .filter_map(|id| jobs.get(id).map(|j| (*id, j.clone())))
            .collect())
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
        progress: Progress,
    ) -> Result<Renewal, JobStoreError> {
        let mut jobs = self.jobs();
        let job = jobs.get_mut(&id).ok_or(JobStoreError::NotFound(id))?;
        job.renew(token, expires_at, progress)
            .map_err(|_| JobStoreError::LeaseLost(id))?;
        Ok(Renewal {
            stop_requested: job.stop_requested(),
        })
    }

    async fn finish(
        &self,
        id: QueryId,
        token: LeaseToken,
        outcome: JobState,
    ) -> Result<Job, JobStoreError> {
        let job = {
            let mut jobs = self.jobs();
            let job = jobs.get_mut(&id).ok_or(JobStoreError::NotFound(id))?;
            job.finish(token, outcome)
                .map_err(|_| JobStoreError::LeaseLost(id))?;
            job.clone()
        };
        self.events.publish(JobEvent::Finished(id));
        Ok(job)
    }

    async fn release(&self, id: QueryId, token: LeaseToken) -> Result<(), JobStoreError> {
        let released = match self.jobs().get_mut(&id) {
            Some(job) if matches!(&job.state, JobState::Running { lease, .. } if lease.token == token) =>
            {
                job.requeue();
                true
            }
            _ => false,
        };
        if released {
            self.events.publish(JobEvent::Queued);
        }
        Ok(())
    }

    async fn stop(
        &self,
        id: QueryId,
        now: Timestamp,
        outcome: JobState,
    ) -> Result<Stopped, JobStoreError> {
        let (effect, job) = {
            let mut jobs = self.jobs();
            let job = jobs.get_mut(&id).ok_or(JobStoreError::NotFound(id))?;
            let effect = job
                .request_stop(now, outcome)
                .map_err(|_| JobStoreError::Finished(Box::new(job.clone())))?;
            (effect, job.clone())
        };
        Ok(match effect {
            StopEffect::Ended => {
                self.events.publish(JobEvent::Finished(id));
                Stopped::Ended(job)
            }
            StopEffect::Requested => {
                self.events.publish(JobEvent::StopRequested(id));
                Stopped::Requested(job)
            }
        })
    }

    async fn expire(
        &self,
        id: QueryId,
        at: Timestamp,
        keep_until: Timestamp,
    ) -> Result<Option<Job>, JobStoreError> {
        let mut jobs = self.jobs();
        let mut tombstones = self
            .tombstones
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let gone = jobs.remove(&id);
        if let Some(job) = &gone {
            tombstones.insert(
                id,
                Tombstone {
                    id,
                    owner: job.owner.clone(),
                    expired_at: at,
                    keep_until,
                },
            );
        }
        Ok(gone)
    }

    async fn update_callback(
        &self,
        id: QueryId,
        expected: &spool_domain::CallbackState,
        next: spool_domain::CallbackState,
    ) -> Result<bool, JobStoreError> {
        let mut jobs = self.jobs();
        let job = jobs.get_mut(&id).ok_or(JobStoreError::NotFound(id))?;
        Ok(job.advance_callback(expected, next))
    }

    async fn tombstone(&self, id: QueryId) -> Result<Option<Tombstone>, JobStoreError> {
        let tombstones = self
            .tombstones
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(tombstones.get(&id).cloned())
    }

    async fn forget_tombstones(&self, now: Timestamp) -> Result<usize, JobStoreError> {
        let mut tombstones = self
            .tombstones
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = tombstones.len();
        tombstones.retain(|_, t| t.keep_until >= now);
        Ok(before - tombstones.len())
    }

    async fn delete(&self, id: QueryId) -> Result<Option<Job>, JobStoreError> {
        Ok(self.jobs().remove(&id))
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, JobStoreError> {
        let mut jobs: Vec<Job> = self
            .jobs()
            .values()
            .filter(|j| filter.matches(j))
            .cloned()
            .collect();
        jobs.sort_by_key(|j| (j.submitted_at, j.id));
        Ok(jobs)
    }

    fn events(&self) -> BoxStream<'static, JobEvent> {
        self.events.subscribe()
    }
}

/// A [`ResultStore`] in memory. Not durable; for tests.
#[derive(Debug, Default, Clone)]
pub struct MemoryResultStore {
    files: Arc<Mutex<HashMap<ResultKey, Bytes>>>,
}

impl MemoryResultStore {
    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<ResultKey, Bytes>> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct MemorySink {
    key: ResultKey,
    buf: Vec<u8>,
    files: Arc<Mutex<HashMap<ResultKey, Bytes>>>,
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

#[async_trait]
impl ResultSink for MemorySink {
    async fn commit(self: Box<Self>) -> Result<u64, ResultStoreError> {
        let len = self.buf.len() as u64;
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.key, Bytes::from(self.buf));
        Ok(len)
    }

    async fn abort(self: Box<Self>) -> Result<(), ResultStoreError> {
        Ok(())
    }
}

#[async_trait]
impl ResultStore for MemoryResultStore {
    async fn create(&self, key: ResultKey) -> Result<Box<dyn ResultSink>, ResultStoreError> {
        Ok(Box::new(MemorySink {
            key,
            buf: Vec::new(),
            files: Arc::clone(&self.files),
        }))
    }

    async fn open(&self, key: ResultKey) -> Result<Option<StoredResult>, ResultStoreError> {
        Ok(self.files().get(&key).cloned().map(|bytes| StoredResult {
            len: bytes.len() as u64,
            body: futures::stream::iter([Ok(bytes)]).boxed(),
        }))
    }

    async fn delete(&self, key: ResultKey) -> Result<(), ResultStoreError> {
        self.files().remove(&key);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ResultKey>, ResultStoreError> {
        Ok(self.files().keys().copied().collect())
    }
}

/// A seeded source of injected failures for the flaky adapters: each guarded call fails with
/// probability `per_mille` / 1000. Clones share the sequence and the count.
#[derive(Debug, Clone)]
pub struct Faults {
    state: Arc<Mutex<u64>>,
    per_mille: u64,
    injected: Arc<std::sync::atomic::AtomicU64>,
}

impl Faults {
    /// Failures at `per_mille` / 1000 of the guarded calls, in the order `seed` gives.
    pub fn new(seed: u64, per_mille: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(seed | 1)),
            per_mille,
            injected: Arc::default(),
        }
    }

    /// Whether this call fails.
    fn strike(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        let hit = *s % 1000 < self.per_mille;
        if hit {
            self.injected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        hit
    }

    /// How many failures were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn io(&self, at: &str) -> io::Result<()> {
        if self.strike() {
            Err(io::Error::other(format!("injected failure: {at}")))
        } else {
            Ok(())
        }
    }

    fn job(&self, at: &str) -> Result<(), JobStoreError> {
        self.io(at).map_err(JobStoreError::backend)
    }

    fn result(&self, at: &str) -> Result<(), ResultStoreError> {
        self.io(at).map_err(ResultStoreError::Io)
    }
}

/// A [`ResultStore`] that fails at random points: creating a sink, writing, committing,
/// opening, deleting. A failed commit leaves nothing stored.
#[derive(Debug, Clone)]
pub struct FlakyResultStore<S> {
    inner: S,
    faults: Faults,
}

impl<S> FlakyResultStore<S> {
    /// `inner`, failing as `faults` says.
    pub fn new(inner: S, faults: Faults) -> Self {
        Self { inner, faults }
    }
}

struct FlakySink {
    inner: Box<dyn ResultSink>,
    faults: Faults,
}

impl io::Write for FlakySink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.faults.io("result write")?;
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[async_trait]
impl ResultSink for FlakySink {
    async fn commit(self: Box<Self>) -> Result<u64, ResultStoreError> {
        if let Err(e) = self.faults.result("result commit") {
            self.inner.abort().await?;
            return Err(e);
        }
        self.inner.commit().await
    }

    async fn abort(self: Box<Self>) -> Result<(), ResultStoreError> {
        self.inner.abort().await
    }

    fn add_rows(&mut self, rows: u64) -> io::Result<()> {
        self.inner.add_rows(rows)
    }
}

#[async_trait]
impl<S: ResultStore> ResultStore for FlakyResultStore<S> {
    async fn create(&self, key: ResultKey) -> Result<Box<dyn ResultSink>, ResultStoreError> {
        self.faults.result("result create")?;
        Ok(Box::new(FlakySink {
            inner: self.inner.create(key).await?,
            faults: self.faults.clone(),
        }))
    }

    async fn open(&self, key: ResultKey) -> Result<Option<StoredResult>, ResultStoreError> {
        self.faults.result("result open")?;
        self.inner.open(key).await
    }

    async fn delete(&self, key: ResultKey) -> Result<(), ResultStoreError> {
        self.faults.result("result delete")?;
        self.inner.delete(key).await
    }

    async fn list(&self) -> Result<Vec<ResultKey>, ResultStoreError> {
        self.inner.list().await
    }
}

/// A [`JobStore`] whose worker-side calls fail at random points (claims, renewals, finishes,
/// releases), each before it takes effect, as a store that lost its connection fails.
#[derive(Debug, Clone)]
pub struct FlakyJobStore<S> {
    inner: S,
    faults: Faults,
}

impl<S> FlakyJobStore<S> {
    /// `inner`, failing as `faults` says.
    pub fn new(inner: S, faults: Faults) -> Self {
        Self { inner, faults }
    }
}

#[async_trait]
impl<S: JobStore> JobStore for FlakyJobStore<S> {
    async fn insert(&self, job: &Job, max_in_flight: Option<usize>) -> Result<(), JobStoreError> {
        self.inner.insert(job, max_in_flight).await
    }
    async fn get(&self, id: QueryId) -> Result<Option<Job>, JobStoreError> {
        self.inner.get(id).await
    }
    async fn get_many(&self, ids: &[QueryId]) -> Result<HashMap<QueryId, Job>, JobStoreError> {
        self.inner.get_many(ids).await
    }
    async fn claim_next(&self, now: Timestamp, lease: Lease) -> Result<Option<Job>, JobStoreError> {
        self.faults.job("claim")?;
        self.inner.claim_next(now, lease).await
    }
    async fn renew(
        &self,
        id: QueryId,
        token: LeaseToken,
        expires_at: Timestamp,
        progress: Progress,
    ) -> Result<Renewal, JobStoreError> {
        self.faults.job("renew")?;
        self.inner.renew(id, token, expires_at, progress).await
    }
    async fn finish(
        &self,
        id: QueryId,
        token: LeaseToken,
        outcome: JobState,
    ) -> Result<Job, JobStoreError> {
        self.faults.job("finish")?;
        self.inner.finish(id, token, outcome).await
    }
    async fn release(&self, id: QueryId, token: LeaseToken) -> Result<(), JobStoreError> {
        self.faults.job("release")?;
        self.inner.release(id, token).await
    }
    async fn stop(
        &self,
        id: QueryId,
        now: Timestamp,
        outcome: JobState,
    ) -> Result<Stopped, JobStoreError> {
        self.inner.stop(id, now, outcome).await
    }
    async fn delete(&self, id: QueryId) -> Result<Option<Job>, JobStoreError> {
        self.inner.delete(id).await
    }
    async fn expire(
        &self,
        id: QueryId,
        at: Timestamp,
        keep_until: Timestamp,
    ) -> Result<Option<Job>, JobStoreError> {
        self.inner.expire(id, at, keep_until).await
    }
    async fn tombstone(&self, id: QueryId) -> Result<Option<Tombstone>, JobStoreError> {
        self.inner.tombstone(id).await
    }
    async fn forget_tombstones(&self, now: Timestamp) -> Result<usize, JobStoreError> {
        self.inner.forget_tombstones(now).await
    }
    async fn update_callback(
        &self,
        id: QueryId,
        expected: &spool_domain::CallbackState,
        next: spool_domain::CallbackState,
    ) -> Result<bool, JobStoreError> {
        self.inner.update_callback(id, expected, next).await
    }
    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, JobStoreError> {
        self.inner.list(filter).await
    }
    fn events(&self) -> BoxStream<'static, JobEvent> {
        self.inner.events()
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

fn succeeded(now: Timestamp, attempt: u32) -> JobState {
    JobState::Succeeded {
        finished_at: now,
        rows: 3,
        bytes: 12,
        columns: vec![spool_domain::ResultColumn {
            name: "N".into(),
            sql_type: "BIGINT".into(),
        }],
        attempt,
        sha256: Some("ab".repeat(32)),
        reuse_key: None,
        uncompressed_bytes: None,
    }
}

fn stopped_by_user(now: Timestamp) -> JobState {
    JobState::stopped_by_user(now)
}

/// Waits a few seconds at most for the next event that is not `Queued` noise, or for `want`.
async fn expect_event(events: &mut BoxStream<'static, JobEvent>, want: JobEvent) {
    let deadline = std::time::Duration::from_secs(5);
    let seen = tokio::time::timeout(deadline, async {
        while let Some(event) = events.next().await {
            if event == want {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        seen,
        Ok(true),
        "event {want:?} announced within {deadline:?}"
    );
}

/// Checks the [`JobStore`] contract on an empty store. Panics on the first violation.
///
/// `other` is a second handle on the same store (another process's view, where the adapter
/// can have one; the same handle otherwise): claims, stops and events must work across them.
pub async fn job_store_contract(store: &dyn JobStore, other: &dyn JobStore) {
    let now = Timestamp::from_millis(10_000);
    let mut events = other.events();
    assert!(
        store
            .claim_next(now, lease(1, 20_000))
            .await
            .expect("claim")
            .is_none()
    );

    let older = sample_job(1_000);
    let newer = sample_job(2_000);
    store.insert(&newer, None).await.expect("insert");
    expect_event(&mut events, JobEvent::Queued).await;
    store.insert(&older, None).await.expect("insert");
    assert!(matches!(
        store.insert(&older, None).await,
        Err(JobStoreError::AlreadyExists(id)) if id == older.id
    ));
    assert_eq!(other.get(older.id).await.expect("get"), Some(older.clone()));
    assert_eq!(store.get(QueryId::new_random()).await.expect("get"), None);
    let ids = |jobs: Vec<Job>| jobs.iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list(&JobFilter::default()).await.expect("list")),
        vec![older.id, newer.id],
        "list is oldest first"
    );
    assert_eq!(other.queued_ahead(&older).await.expect("position"), 0);
    assert_eq!(store.queued_ahead(&newer).await.expect("position"), 1);
    let many = store
        .get_many(&[older.id, QueryId::new_random(), newer.id])
        .await
        .expect("get_many");
    assert_eq!(many.len(), 2);
    assert_eq!(many.get(&newer.id), Some(&newer));

    // Claims go oldest first, each job to one claimant, whichever handle asks.
    let first = store
        .claim_next(now, lease(1, 20_000))
        .await
        .expect("claim")
        .expect("a job");
    assert_eq!((first.id, first.attempts), (older.id, 1));
    assert_eq!(first.result_key(), Some(ResultKey::new(older.id, 1)));
    let second = other
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
    let progress = Progress { rows: 7, bytes: 70 };
    assert_eq!(
        store
            .renew(
                older.id,
                LeaseToken(1),
                Timestamp::from_millis(30_000),
                progress
            )
            .await
            .expect("renew"),
        Renewal {
            stop_requested: false
        }
    );
    let seen = other.get(older.id).await.expect("get").expect("the job");
    assert_eq!(
        (seen.progress, seen.started_at),
        (progress, Some(now)),
        "progress and the start are visible to every process"
    );
    assert!(matches!(
        store
            .renew(
                older.id,
                LeaseToken(9),
                Timestamp::from_millis(30_000),
                Progress::default()
            )
            .await,
        Err(JobStoreError::LeaseLost(_))
    ));
    let done = succeeded(now, 1);
    assert!(matches!(
        store.finish(older.id, LeaseToken(2), done.clone()).await,
        Err(JobStoreError::LeaseLost(_))
    ));
    let finished = store
        .finish(older.id, LeaseToken(1), done.clone())
        .await
        .expect("finish");
    assert_eq!(finished.state, done);
    expect_event(&mut events, JobEvent::Finished(older.id)).await;
    assert_eq!(
        other.get(older.id).await.expect("get").expect("job").state,
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

    // A lapsed lease is claimable again, by any handle; the old holder has lost it.
    let later = Timestamp::from_millis(20_000);
    let taken = other
        .claim_next(later, lease(5, 40_000))
        .await
        .expect("claim")
        .expect("a lapsed lease is claimable");
    assert_eq!((taken.id, taken.attempts), (newer.id, 3));
    assert_eq!(taken.result_key(), Some(ResultKey::new(newer.id, 3)));
    assert!(matches!(
        store
            .renew(
                newer.id,
                LeaseToken(4),
                Timestamp::from_millis(50_000),
                Progress::default()
            )
            .await,
        Err(JobStoreError::LeaseLost(_))
    ));
    assert!(matches!(
        store
            .finish(newer.id, LeaseToken(4), succeeded(later, 2))
            .await,
        Err(JobStoreError::LeaseLost(_))
    ));
    // A renewed lease is not claimable before its new expiry.
    store
        .renew(
            newer.id,
            LeaseToken(5),
            Timestamp::from_millis(60_000),
            Progress::default(),
        )
        .await
        .expect("renew");
    assert!(
        store
            .claim_next(Timestamp::from_millis(50_000), lease(6, 70_000))
            .await
            .expect("claim")
            .is_none()
    );

    // A stop of a held job is recorded and announced; renewal tells the holder.
    match other.stop(newer.id, later, stopped_by_user(later)).await {
        Ok(Stopped::Requested(job)) => assert!(job.stop_requested()),
        other => panic!("stop of a held job: {other:?}"),
    }
    expect_event(&mut events, JobEvent::StopRequested(newer.id)).await;
    assert_eq!(
        store
            .renew(
                newer.id,
                LeaseToken(5),
                Timestamp::from_millis(60_000),
                Progress::default()
            )
            .await
            .expect("renew"),
        Renewal {
            stop_requested: true
        }
    );
    store
        .finish(newer.id, LeaseToken(5), stopped_by_user(later))
        .await
        .expect("the holder ends it");

    // A job no worker holds is ended by a stop and never claimed; a finished one cannot be.
    let waiting = sample_job(2_500);
    store.insert(&waiting, None).await.expect("insert");
    match store.stop(waiting.id, now, stopped_by_user(now)).await {
        Ok(Stopped::Ended(job)) => assert_eq!(job.state, stopped_by_user(now)),
        other => panic!("stop of a queued job: {other:?}"),
    }
    expect_event(&mut events, JobEvent::Finished(waiting.id)).await;
    assert!(
        store
            .claim_next(now, lease(7, 20_000))
            .await
            .expect("claim")
            .is_none(),
        "an ended job is not claimed"
    );
    assert!(matches!(
        store.stop(older.id, now, stopped_by_user(now)).await,
        Err(JobStoreError::Finished(job)) if job.id == older.id
    ));
    assert!(matches!(
        store
            .stop(QueryId::new_random(), now, stopped_by_user(now))
            .await,
        Err(JobStoreError::NotFound(_))
    ));

    // Filters are the store's: project, owner, submission and finish times.
    let mut theirs = sample_job(2_600);
    theirs.owner = "bob".into();
    theirs.request.project = ProjectName::parse("ssb").expect("project");
    store.insert(&theirs, None).await.expect("insert");
    let by = |filter: JobFilter| async move { ids(store.list(&filter).await.expect("list")) };
    assert_eq!(
        by(JobFilter {
            owner: Some("bob".into()),
            ..JobFilter::default()
        })
        .await,
        vec![theirs.id]
    );
    assert_eq!(
        by(JobFilter {
            project: Some(ProjectName::default_project()),
            ..JobFilter::default()
        })
        .await,
        vec![older.id, newer.id, waiting.id]
    );
    assert_eq!(
        by(JobFilter {
            project: Some(ProjectName::parse("default").expect("valid")),
            ..JobFilter::default()
        })
        .await,
        vec![older.id, newer.id, waiting.id],
        "project names match without regard to case"
    );
    assert_eq!(
        by(JobFilter {
            submitted_before: Some(Timestamp::from_millis(2_000)),
            ..JobFilter::default()
        })
        .await,
        vec![older.id]
    );
    assert_eq!(
        by(JobFilter {
            finished_before: Some(Timestamp::from_millis(10_001)),
            ..JobFilter::default()
        })
        .await,
        vec![older.id, waiting.id],
        "finished_before selects only finished jobs"
    );

    // The per-owner cap counts unfinished jobs, atomically with the insert.
    let cap = Some(2);
    let mut bobs = sample_job(2_700);
    bobs.owner = "bob".into();
    store.insert(&bobs, cap).await.expect("second of two");
    let mut third = sample_job(2_800);
    third.owner = "bob".into();
    assert!(matches!(
        other.insert(&third, cap).await,
        Err(JobStoreError::TooManyInFlight { limit: 2 })
    ));
    assert_eq!(
        store.get(third.id).await.expect("get"),
        None,
        "nothing stored"
    );
    store
        .insert(&sample_job(2_800), cap)
        .await
        .expect("others are not capped by bob");
    store.delete(bobs.id).await.expect("delete");
    other
        .insert(&third, cap)
        .await
        .expect("a slot freed by a delete");
    store
        .stop(third.id, now, stopped_by_user(now))
        .await
        .expect("stop");
    let mut fourth = sample_job(2_900);
    fourth.owner = "bob".into();
    store
        .insert(&fourth, cap)
        .await
        .expect("a slot freed by an end");
    for job in [&theirs, &fourth] {
        store.delete(job.id).await.expect("delete");
    }
    store.delete(third.id).await.expect("delete");

    // A finished job read through both views (an adapter may keep finished jobs in memory:
    // they change only by being deleted) is gone from the deleting view at once and from the
    // other within seconds.
    for view in [store, other, other] {
        let read = view.get(newer.id).await.expect("get").expect("the job");
        assert!(read.is_finished(), "{read:?}");
    }
    // Deleting is idempotent, and a deleted job can be neither renewed nor finished.
    assert_eq!(
        store.delete(newer.id).await.expect("delete").map(|j| j.id),
        Some(newer.id)
    );
    assert_eq!(
        store.get(newer.id).await.expect("get"),
        None,
        "gone at once"
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while other.get(newer.id).await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a job deleted through one view still read through the other after 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(store.delete(newer.id).await.expect("delete"), None);
    assert!(matches!(
        store
            .renew(
                newer.id,
                LeaseToken(5),
                Timestamp::from_millis(30_000),
                Progress::default()
            )
            .await,
        Err(JobStoreError::NotFound(_))
    ));
    assert!(matches!(
        store.finish(newer.id, LeaseToken(5), done).await,
        Err(JobStoreError::NotFound(_))
    ));
    // A deleted queued job is never claimed.
    let queued = sample_job(3_000);
    store.insert(&queued, None).await.expect("insert");
    store.delete(queued.id).await.expect("delete");
    let claimed = store
        .claim_next(Timestamp::from_millis(100_000), lease(8, 200_000))
        .await
        .expect("claim");
    assert!(
        claimed.as_ref().is_none_or(|j| j.id != queued.id),
        "a deleted job is never claimed"
    );

    // A reusable result is found by its key, newest first, and not once too old.
    let mut reusable = Vec::new();
    for (at, token) in [(4_100, 61), (4_200, 62)] {
        let job = sample_job(at);
        store.insert(&job, None).await.expect("insert");
        let claimed = store
            .claim_next(Timestamp::from_millis(at), lease(token, i64::MAX))
            .await
            .expect("claim")
            .expect("a job");
        assert_eq!(claimed.id, job.id, "the only queued job");
        let JobState::Succeeded {
            rows,
            bytes,
            columns,
            ..
        } = succeeded(Timestamp::from_millis(at), 1)
        else {
            unreachable!()
        };
        let outcome = JobState::Succeeded {
            finished_at: Timestamp::from_millis(at + 100),
            rows,
            bytes,
            columns,
            attempt: 1,
            sha256: None,
            reuse_key: Some("rk-1".into()),
            uncompressed_bytes: None,
        };
        store
            .finish(job.id, LeaseToken(token), outcome)
            .await
            .expect("finish");
        reusable.push(job.id);
    }
    let found = other
        .find_reusable("rk-1", Timestamp::from_millis(4_000))
        .await
        .expect("find");
    assert_eq!(found.map(|j| j.id), Some(reusable[1]), "the newest");
    assert_eq!(
        other
            .find_reusable("rk-1", Timestamp::from_millis(4_301))
            .await
            .expect("find"),
        None,
        "finished too long ago"
    );
    assert_eq!(
        store
            .find_reusable("rk-2", Timestamp::EPOCH)
            .await
            .expect("find"),
        None
    );
    for id in reusable {
        store.delete(id).await.expect("delete");
    }

    // Webhooks: due once the job has finished and its time has come; one claimant per attempt.
    let mut hooked = sample_job(4_300);
    let pending = spool_domain::CallbackState::Pending {
        attempts: 0,
        next_at: Timestamp::from_millis(4_300),
    };
    hooked.callback = Some(spool_domain::Callback {
        url: "http://127.0.0.1:9/hook".into(),
        state: pending.clone(),
    });
    store.insert(&hooked, None).await.expect("insert");
    let due = |at: i64| async move {
        other
            .callbacks_due(Timestamp::from_millis(at), 10)
            .await
            .expect("due")
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>()
    };
    assert!(due(9_000).await.is_empty(), "not before the job ends");
    store
        .stop(
            hooked.id,
            Timestamp::from_millis(4_400),
            stopped_by_user(Timestamp::from_millis(4_400)),
        )
        .await
        .expect("stop");
    assert_eq!(due(9_000).await, vec![hooked.id]);
    let retry = spool_domain::CallbackState::Pending {
        attempts: 1,
        next_at: Timestamp::from_millis(10_000),
    };
    assert!(
        store
            .update_callback(hooked.id, &pending, retry.clone())
            .await
            .expect("claim")
    );
    assert!(
        !other
            .update_callback(hooked.id, &pending, retry.clone())
            .await
            .expect("claim"),
        "an attempt is claimed once"
    );
    assert!(
        due(9_000).await.is_empty(),
        "the next attempt is not due yet"
    );
    assert_eq!(due(10_000).await, vec![hooked.id]);
    // Read (and perhaps cached) through the view that will not make the change.
    for _ in 0..2 {
        assert!(store.get(hooked.id).await.expect("get").is_some());
    }
    let delivered = spool_domain::CallbackState::Delivered {
        at: Timestamp::from_millis(10_001),
        attempts: 2,
    };
    assert!(
        other
            .update_callback(hooked.id, &retry, delivered.clone())
            .await
            .expect("done")
    );
    assert!(due(99_000).await.is_empty(), "delivered is done");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let stored = store.get(hooked.id).await.expect("get").expect("job");
        if stored.callback.map(|c| c.state) == Some(delivered.clone()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other view still reads the old webhook state after 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    store.delete(hooked.id).await.expect("delete");

    // Expiry leaves a tombstone, seen by every view, until it is forgotten.
    let aged = sample_job(4_000);
    store.insert(&aged, None).await.expect("insert");
    let (at, until) = (
        Timestamp::from_millis(50_000),
        Timestamp::from_millis(90_000),
    );
    assert_eq!(
        store
            .expire(aged.id, at, until)
            .await
            .expect("expire")
            .map(|j| j.id),
        Some(aged.id)
    );
    assert_eq!(other.get(aged.id).await.expect("get"), None);
    assert_eq!(
        other.tombstone(aged.id).await.expect("tombstone"),
        Some(Tombstone {
            id: aged.id,
            owner: aged.owner.clone(),
            expired_at: at,
            keep_until: until,
        })
    );
    let never = QueryId::new_random();
    assert_eq!(store.expire(never, at, until).await.expect("expire"), None);
    assert_eq!(
        store.tombstone(never).await.expect("tombstone"),
        None,
        "no job, no tombstone"
    );
    assert_eq!(
        other
            .forget_tombstones(Timestamp::from_millis(89_999))
            .await
            .expect("forget"),
        0
    );
    assert_eq!(
        other
            .forget_tombstones(Timestamp::from_millis(90_001))
            .await
            .expect("forget"),
        1
    );
    assert_eq!(store.tombstone(aged.id).await.expect("tombstone"), None);

    // Idempotency keys: one job per owner and key within the window, whichever view asks;
    // checked before the cap.
    let keyed = |at: i64, owner: &str, key: &str| {
        let mut job = sample_job(at);
        job.owner = owner.into();
        job.idempotency = Some(spool_domain::Idempotency {
            key: key.into(),
            fingerprint: format!("fp-{at}"),
        });
        job
    };
    let first = keyed(5_000, "kim", "k-1");
    store.insert(&first, Some(1)).await.expect("insert");
    let repeat = keyed(6_000, "kim", "k-1");
    match other.insert(&repeat, Some(1)).await {
        Err(JobStoreError::Duplicate(held)) => assert_eq!(held.id, first.id),
        other => panic!("a repeated key must name the first job: {other:?}"),
    }
    assert_eq!(
        store.get(repeat.id).await.expect("get"),
        None,
        "nothing stored"
    );
    other
        .insert(&keyed(6_000, "lee", "k-1"), None)
        .await
        .expect("another owner's key is another key");
    store
        .insert(&keyed(6_500, "kim", "k-2"), None)
        .await
        .expect("another key");
    // Past the window the key is free again.
    let window = spool_domain::IDEMPOTENCY_WINDOW_MILLIS;
    let later = keyed(5_000 + window, "kim", "k-1");
    other
        .insert(&later, None)
        .await
        .expect("a key past its window");
    match store
        .insert(&keyed(6_000 + window, "kim", "k-1"), None)
        .await
    {
        Err(JobStoreError::Duplicate(held)) => assert_eq!(held.id, later.id),
        other => panic!("the key now names the later job: {other:?}"),
    }
    // A deleted job frees its key.
    store.delete(later.id).await.expect("delete");
    store
        .insert(&keyed(7_000 + window, "kim", "k-1"), None)
        .await
        .expect("a deleted job's key is free");

    // Pages of a listing: newest first, ties broken by id, a cursor, a state, on both handles.
    let of_pat = |at: i64| {
        let mut job = sample_job(at);
        job.owner = "pat".into();
        job
    };
    let (first, second, third) = (of_pat(90_000), of_pat(90_100), of_pat(90_100));
    for job in [&first, &second, &third] {
        store.insert(job, None).await.expect("insert");
    }
    let (low, high) = if second.id < third.id {
        (second.id, third.id)
    } else {
        (third.id, second.id)
    };
    let pats = |state, before| JobFilter {
        owner: Some("pat".into()),
        state,
        before,
        ..JobFilter::default()
    };
    let page = |filter: JobFilter, limit: usize| async move {
        let jobs = other
            .list_newest(&filter, limit)
            .await
            .expect("list_newest");
        jobs.iter().map(|j| j.id).collect::<Vec<_>>()
    };
    assert_eq!(page(pats(None, None), 10).await, vec![high, low, first.id]);
    assert_eq!(
        page(pats(None, None), 1).await,
        vec![high],
        "at most the limit"
    );
    let cursor = other.get(high).await.expect("get").expect("stored");
    assert_eq!(
        page(pats(None, Some(JobPosition::of(&cursor))), 10).await,
        vec![low, first.id],
        "the next page starts strictly after the cursor, even on a tie"
    );
    store
        .stop(
            first.id,
            Timestamp::from_millis(90_200),
            stopped_by_user(Timestamp::from_millis(90_200)),
        )
        .await
        .expect("stop");
    assert_eq!(
        page(pats(Some(StateKind::Failed), None), 10).await,
        vec![first.id]
    );
    assert_eq!(
        page(pats(Some(StateKind::Queued), None), 10).await,
        vec![high, low]
    );
    let counts = other.count_by_state().await.expect("count_by_state");
    let all = store.list(&JobFilter::default()).await.expect("list");
    for kind in [
        StateKind::Queued,
        StateKind::Running,
        StateKind::Succeeded,
        StateKind::Failed,
    ] {
        let expected = all.iter().filter(|j| j.state.kind() == kind).count() as u64;
        assert_eq!(
            counts.get(&kind).copied().unwrap_or(0),
            expected,
            "jobs counted as {kind:?}"
        );
    }
    assert!(counts.get(&StateKind::Queued).copied().unwrap_or(0) >= 2);
    assert_eq!(
        ids(store
            .list(&pats(Some(StateKind::Queued), None))
            .await
            .expect("list")),
        vec![low, high],
        "list filters by state too, oldest first"
    );
}

/// Reads a whole stored result.
async fn read_all(result: StoredResult) -> Vec<u8> {
    let mut out = Vec::new();
    let mut body = result.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(out.len() as u64, result.len, "len matches the bytes");
    out
}

/// Writes `bytes` into a new sink for `key` from a blocking thread, as engines do.
async fn write(store: &dyn ResultStore, key: ResultKey, bytes: Vec<u8>) -> Box<dyn ResultSink> {
    let mut sink = store.create(key).await.expect("create");
    tokio::task::spawn_blocking(move || {
        for piece in bytes.chunks(777_777) {
            sink.write_all(piece).expect("write");
        }
        sink
    })
    .await
    .expect("writer thread")
}

/// Checks the [`ResultStore`] contract on an empty store. Panics on the first violation.
pub async fn result_store_contract(store: &dyn ResultStore) {
    async fn read(store: &dyn ResultStore, key: ResultKey) -> Option<Vec<u8>> {
        Some(read_all(store.open(key).await.expect("open")?).await)
    }
    let id = QueryId::new_random();
    let key = ResultKey::new(id, 1);
    assert!(read(store, key).await.is_none());

    let mut sink = store.create(key).await.expect("create");
    sink.write_all(b"a,b\n").expect("write");
    assert!(
        read(store, key).await.is_none(),
        "nothing is visible before commit"
    );
    sink.write_all(b"1,2\n").expect("write");
    assert_eq!(sink.commit().await.expect("commit"), 8);
    assert_eq!(read(store, key).await.as_deref(), Some(&b"a,b\n1,2\n"[..]));
    assert_eq!(store.list().await.expect("list"), vec![key]);

    // Another attempt of the same query writes beside the first, never over it; aborted or
    // dropped sinks leave nothing.
    let second = ResultKey::new(id, 2);
    let aborted = write(store, second, b"partial".to_vec()).await;
    aborted.abort().await.expect("abort");
    assert!(
        read(store, second).await.is_none(),
        "an aborted sink leaves nothing"
    );
    let dropped = write(store, second, b"partial".to_vec()).await;
    drop(dropped);
    assert!(
        read(store, second).await.is_none(),
        "a dropped sink leaves nothing"
    );
    assert_eq!(read(store, key).await.as_deref(), Some(&b"a,b\n1,2\n"[..]));

    // A large result, written from a blocking thread in odd pieces.
    // A pattern, so that a range at the wrong offset shows.
    let big: Vec<u8> = (0..13 * 1024 * 1024 + 17)
        .map(|i| (i % 251) as u8)
        .collect();
    let sink = write(store, second, big.clone()).await;
    assert_eq!(sink.commit().await.expect("commit"), big.len() as u64);
    assert_eq!(read(store, second).await, Some(big.clone()));
    assert_eq!(read(store, key).await.as_deref(), Some(&b"a,b\n1,2\n"[..]));
    let mut keys = store.list().await.expect("list");
    keys.sort();
    assert_eq!(keys, vec![key, second]);

    // Ranges: any slice, across chunk boundaries, and an empty one.
    for (start, end) in [
        (0, 5),
        (1_000_000, 9_500_000),
        (big.len() as u64 - 3, big.len() as u64),
        (7, 7),
    ] {
        let part = store
            .open_range(second, start..end)
            .await
            .expect("open_range")
            .expect("result");
        assert_eq!(part.len, end - start);
        assert_eq!(
            read_all(part).await,
            big[start as usize..end as usize],
            "range {start}..{end}"
        );
    }
    assert!(
        store
            .open_range(ResultKey::new(QueryId::new_random(), 1), 0..1)
            .await
            .expect("open_range")
            .is_none()
    );

    // A copy is a result of its own: the same bytes, and either deletes alone.
    let copied = ResultKey::new(QueryId::new_random(), 0);
    assert_eq!(
        store.copy(second, copied).await.expect("copy"),
        big.len() as u64
    );
    assert_eq!(read(store, copied).await, Some(big.clone()));
    store.delete(copied).await.expect("delete");
    assert_eq!(
        read(store, second).await,
        Some(big.clone()),
        "the original stays"
    );
    let gone = ResultKey::new(QueryId::new_random(), 1);
    match store.copy(gone, copied).await {
        Err(ResultStoreError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
        other => panic!("copying a missing result: {other:?}"),
    }

    // Deleting one attempt leaves the other.
    store.delete(key).await.expect("delete");
    store.delete(key).await.expect("delete is idempotent");
    assert!(read(store, key).await.is_none());
    assert_eq!(store.list().await.expect("list"), vec![second]);
    store.delete(second).await.expect("delete");
    assert!(store.list().await.expect("list").is_empty());
}

fn user_record(
    name: &str,
    role: spool_domain::Role,
    projects: &[&str],
) -> spool_domain::UserRecord {
    spool_domain::UserRecord {
        name: name.to_owned(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${name}"),
        role,
        projects: projects.iter().map(|p| (*p).to_owned()).collect(),
        format: spool_domain::USER_FORMAT,
    }
}

/// Waits a few seconds at most for a change to be announced.
async fn expect_change(changes: &mut BoxStream<'static, ()>, what: &str) {
    let deadline = std::time::Duration::from_secs(5);
    assert_eq!(
        tokio::time::timeout(deadline, changes.next()).await,
        Ok(Some(())),
        "{what}: a change announced within {deadline:?}"
    );
}

/// Checks the [`crate::UserStore`] contract on a new store. `other` is a second handle on
/// the same store (another process's, where the adapter can have one). Panics on the first
/// violation.
pub async fn user_store_contract(store: &dyn crate::UserStore, other: &dyn crate::UserStore) {
    use crate::UserStoreError;
    use spool_domain::Role;
    let mut changes = other.changes();
    assert!(store.list().await.expect("list").is_empty());
    let admin = user_record("ADMIN", Role::Admin, &[]);
    assert!(
        store
            .initialize(vec![admin.clone()])
            .await
            .expect("initialize")
    );
    assert!(
        !other
            .initialize(vec![user_record("X", Role::Admin, &[])])
            .await
            .expect("initialize"),
        "initialized once"
    );
    assert_eq!(other.list().await.expect("list"), vec![admin.clone()]);
    expect_change(&mut changes, "initialize").await;

    let bob = user_record("bob", Role::User, &["ssb"]);
    store.add(bob.clone()).await.expect("add");
    assert!(matches!(
        other.add(bob.clone()).await,
        Err(UserStoreError::Exists(name)) if name == "bob"
    ));
    expect_change(&mut changes, "add").await;
    let mut moved = bob.clone();
    moved.projects = vec!["*".into()];
    other.replace(moved.clone()).await.expect("replace");
    assert_eq!(
        store.list().await.expect("list"),
        vec![admin.clone(), moved]
    );
    assert!(matches!(
        store.replace(user_record("nobody", Role::User, &[])).await,
        Err(UserStoreError::NotFound(_))
    ));
    store.remove("bob").await.expect("remove");
    assert!(matches!(
        store.remove("bob").await,
        Err(UserStoreError::NotFound(_))
    ));
    store.remove("ADMIN").await.expect("remove");
    assert!(store.list().await.expect("list").is_empty());
    assert!(
        !store.initialize(vec![admin]).await.expect("initialize"),
        "a store emptied on purpose is not filled again"
    );
    assert!(other.list().await.expect("list").is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_job_store_keeps_the_contract() {
        let store = MemoryJobStore::default();
        job_store_contract(&store, &store.clone()).await;
    }

    #[tokio::test]
    async fn memory_result_store_keeps_the_contract() {
        result_store_contract(&MemoryResultStore::default()).await;
    }

    #[tokio::test]
    async fn the_scripted_engine_keeps_the_engine_contract() {
        check_query_engine(&ScriptedEngine, &ScriptedEngine::contract()).await;
    }
}
