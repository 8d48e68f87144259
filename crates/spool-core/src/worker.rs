//! The worker pool: a fixed number of tasks that claim jobs from the job store and run them.
//!
//! Invariant: at most `workers` queries run at once in this process. The engine does its
//! blocking work off the async reactor; a worker only awaits it, renewing the job's lease
//! meanwhile, and records the outcome under that lease. Each attempt writes under its own
//! result key; an attempt whose outcome is not recorded deletes what it wrote, and only that.
//!
//! Idle workers wake when the job store announces a queued job (in this process or another
//! sharing the store) and otherwise look for lapsed leases every `poll_interval`. A stop
//! announced by the store reaches the query's worker through the same events.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use spool_domain::{FailureCode, Job, JobState, Lease, LeaseToken, Progress, QueryId, ResultKey};
use spool_ports::{
    CancelReason, CancelToken, EngineError, Execution, JobEvent, JobStoreError, ResultSink,
    ResultStoreError,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::Spool;
use crate::error::is_storage_full;
use crate::metrics::Outcome;
use crate::service::Inner;

/// How often a running query's deadline and cancellation are checked.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// The running worker pool. Dropping it leaves the workers running; call [`Workers::shutdown`].
#[derive(Debug)]
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    spool: Spool,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Starts the worker pool, and the retention sweep, on the current Tokio runtime.
    pub fn start(&self) -> Workers {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for worker in 0..self.inner.config.workers {
            let inner = Arc::clone(&self.inner);
            let stopped = stopped.clone();
            tasks.spawn(async move { worker_loop(worker, inner, stopped).await });
        }
        tasks.spawn(events_loop(Arc::clone(&self.inner), stopped.clone()));
        tasks.spawn(self.clone().sweep_loop(stopped));
        Workers {
            stop,
            tasks,
            spool: self.clone(),
        }
    }
}

impl Workers {
    /// Stops claiming, interrupts running queries and waits for the workers to exit. Interrupted
    /// queries go back to the queue and run again on the next start.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for token in self.spool.inner.running().values() {
            token.cancel(CancelReason::Shutdown);
        }
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Turns the job store's announcements into wake-ups of idle workers and stops of the queries
/// this process runs.
async fn events_loop(inner: Arc<Inner>, mut stopped: watch::Receiver<bool>) {
    let mut events = inner.ports.jobs.events();
    loop {
        let event = tokio::select! {
            _ = stopped.changed() => return,
            event = events.next() => event,
        };
        match event {
            Some(JobEvent::Queued) => inner.wake.notify_one(),
            Some(JobEvent::StopRequested(id)) => {
                if let Some(token) = inner.running().get(&id) {
                    token.cancel(CancelReason::Stopped);
                }
            }
            Some(JobEvent::Finished(id)) => {
                inner.waiters.wake(id);
                inner.callbacks_due.notify_one();
            }
            None => {
                warn!("the job store's event stream ended; workers fall back to polling");
                return;
            }
        }
    }
}

async fn worker_loop(worker: usize, inner: Arc<Inner>, mut stopped: watch::Receiver<bool>) {
    debug!(worker, "worker started");
    loop {
        if *stopped.borrow() {
            break;
        }
        match claim(&inner).await {
            Ok(Some((job, lease))) => {
                run_job(&inner, job, lease).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => error!(worker, error = %e, "claiming a job failed"),
        }
        tokio::select! {
            _ = stopped.changed() => {}
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(inner.config.poll_interval) => {}
        }
    }
    debug!(worker, "worker stopped");
}

fn new_lease(inner: &Inner) -> Lease {
    Lease {
        token: LeaseToken(rand::random()),
        expires_at: inner
            .ports
            .clock
            .now()
            .plus_millis(millis(inner.config.lease)),
    }
}

/// Formats a duration in seconds: whole when it is whole, else with one decimal.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.1}", d.as_secs_f64())
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Claims the next runnable job, failing those that have used up their attempts.
async fn claim(inner: &Inner) -> Result<Option<(Job, Lease)>, JobStoreError> {
    loop {
        let lease = new_lease(inner);
        let Some(job) = inner
            .ports
            .jobs
            .claim_next(inner.ports.clock.now(), lease)
            .await?
        else {
            return Ok(None);
        };
        // Claims given back at a graceful shutdown do not count: the query did nothing wrong.
        if job.counted_attempts() > inner.config.max_attempts {
            let reason = format!(
                "query was interrupted {} times before it could finish (the server stopped while it ran); it will not be retried",
                job.counted_attempts() - 1
            );
            warn!(query_id = %job.id, attempts = job.attempts, "giving up on a query");
            let failed =
                JobState::failed(inner.ports.clock.now(), FailureCode::Interrupted, reason);
            finish(inner, job.id, lease.token, failed).await;
            continue;
        }
        if job.stop_requested() {
            // Stopped while its last holder ran it, and that holder died before ending it.
            let stopped = JobState::stopped_by_user(inner.ports.clock.now());
            finish(inner, job.id, lease.token, stopped).await;
            continue;
        }
        if job.attempts == 1 {
            let waited = inner.ports.clock.now().millis_since(job.submitted_at);
            inner
                .metrics
                .queue_wait
                .observe(Duration::from_millis(waited));
        }
        return Ok(Some((job, lease)));
    }
}

/// Removes the job from the running map when the run ends, however it ends.
struct RunningGuard<'a> {
    inner: &'a Inner,
    id: QueryId,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.inner.running().remove(&self.id);
        self.inner.ended.notify_waiters();
    }
}

async fn run_job(inner: &Inner, job: Job, lease: Lease) {
    let started = std::time::Instant::now();
    let id = job.id;
    let key = ResultKey::new(id, job.attempts);
    let cancel = CancelToken::new();
    inner.running().insert(id, cancel.clone());
    let _guard = RunningGuard { inner, id };
    info!(query_id = %id, user = %job.owner, attempt = job.attempts, "query started");

    // The tables' version as this run reads them: what a later identical query may reuse
    // this result under.
    let reuse_key = match inner
        .ports
        .catalog
        .source_version(&job.request.project)
        .await
    {
        Ok(version) => version.map(|v| crate::service::reuse_key(&job.request, &v)),
        Err(e) => {
            warn!(query_id = %id, error = %e, "cannot tell the tables' version; the result will not be reused");
            None
        }
    };
    let oversize = Arc::new(Oversize::default());
    let progress = Arc::new(Counters::default());
    let outcome =
        execute_holding_lease(inner, &job, key, lease.token, &cancel, &oversize, &progress).await;
    let now = inner.ports.clock.now();
    // The sink stops the engine at a cap; an engine that does not report rows is checked here.
    let too_many_rows = oversize.rows.load(Ordering::Acquire)
        || match (&outcome, inner.config.max_result_rows) {
            (Ok(execution), Some(limit)) => execution.rows > limit,
            _ => false,
        };
    let too_many_bytes = oversize.bytes.load(Ordering::Acquire);
    let disk_full = || oversize.full.load(Ordering::Acquire);
    let full_reason = || {
        let so_far = progress.read();
        format!(
            "the result store is out of space (disk full): the result stopped after {} rows and \
             {} bytes, and the partial result was removed; free space and submit the query again",
            so_far.rows, so_far.bytes
        )
    };
    let state = if disk_full() {
        warn!(query_id = %id, "the result store is out of space");
        if let Ok(execution) = outcome
            && let Err(e) = execution.sink.abort().await
        {
            warn!(query_id = %id, error = %e, "discarding a partial result failed");
        }
        JobState::failed(now, FailureCode::DiskFull, full_reason())
    } else if too_many_bytes || too_many_rows {
        if let Ok(execution) = outcome
            && let Err(e) = execution.sink.abort().await
        {
            warn!(query_id = %id, error = %e, "discarding an over-cap result failed");
        }
        if too_many_bytes {
            let limit = inner.config.max_result_bytes.unwrap_or_default();
            let reason = format!("result is larger than the limit of {limit} bytes");
            JobState::failed(now, FailureCode::TooLarge, reason)
        } else {
            let limit = inner.config.max_result_rows.unwrap_or_default();
            let reason = format!("result has more than the limit of {limit} rows");
            JobState::failed(now, FailureCode::TooManyRows, reason)
        }
    } else {
        match outcome {
            Ok(execution) => {
                let rows = execution.rows;
                let columns = execution.columns;
                match execution.sink.commit().await {
                    Ok(bytes) => JobState::Succeeded {
                        finished_at: inner.ports.clock.now(),
                        rows,
                        bytes,
                        columns,
                        attempt: key.attempt,
                        sha256: progress
                            .sha256
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .take(),
                        reuse_key,
                        uncompressed_bytes: job
                            .request
                            .output
                            .compression
                            .map(|_| progress.uncompressed.load(Ordering::Relaxed)),
                    },
                    Err(_) if disk_full() => {
                        warn!(query_id = %id, "the result store is out of space at commit");
                        JobState::failed(now, FailureCode::DiskFull, full_reason())
                    }
                    Err(e) => {
                        error!(query_id = %id, error = %e, source = ?std::error::Error::source(&e), "committing the result failed");
                        let reason = "internal error: storing the result failed";
                        JobState::failed(now, FailureCode::Internal, reason)
                    }
                }
            }
            Err(EngineError::Cancelled) => match cancel.reason() {
                Some(CancelReason::Deleted) => {
                    info!(query_id = %id, "query deleted while running");
                    return;
                }
                Some(CancelReason::Shutdown) => {
                    info!(query_id = %id, "query interrupted by shutdown; it will run again");
                    if let Err(e) = inner.ports.jobs.release(id, lease.token).await {
                        warn!(query_id = %id, error = %e, "releasing the job failed");
                    }
                    return;
                }
                Some(CancelReason::Stopped) => JobState::stopped_by_user(now),
                Some(CancelReason::TimedOut) => {
                    let limit = inner.config.query_timeout.unwrap_or_default();
                    let reason = format!("query timed out after {} s", seconds(limit));
                    JobState::failed(now, FailureCode::TimedOut, reason)
                }
                None => JobState::failed(now, FailureCode::Internal, "query was cancelled"),
            },
            Err(e @ EngineError::ProjectNotFound(_)) => {
                JobState::failed(now, FailureCode::ProjectNotFound, e.to_string())
            }
            Err(e @ EngineError::InvalidQuery(_)) => {
                JobState::failed(now, FailureCode::InvalidQuery, e.to_string())
            }
            Err(e @ EngineError::Execution(_)) => {
                JobState::failed(now, FailureCode::Execution, e.to_string())
            }
            Err(e @ EngineError::OutOfMemory(_)) => {
                warn!(query_id = %id, error = %e, "the query ran out of memory");
                JobState::failed(now, FailureCode::OutOfMemory, e.to_string())
            }
            Err(e @ EngineError::Crashed(_)) => {
                error!(query_id = %id, error = %e, "the query's engine crashed");
                JobState::failed(now, FailureCode::EngineCrashed, e.to_string())
            }
            Err(e @ EngineError::Unavailable(_)) => {
                warn!(query_id = %id, error = %e, "the engine is unavailable");
                JobState::failed(now, FailureCode::EngineUnavailable, e.to_string())
            }
            Err(e @ (EngineError::Sink(_) | EngineError::Internal(_))) => {
                error!(query_id = %id, error = %e, source = ?std::error::Error::source(&e), "query failed inside the engine");
                let reason = "internal error while running the query";
                JobState::failed(now, FailureCode::Internal, reason)
            }
        }
    };
    let succeeded = matches!(state, JobState::Succeeded { .. });
    let (outcome, rows, bytes) = match &state {
        JobState::Succeeded { rows, bytes, .. } => (Outcome::Succeeded, *rows, *bytes),
        JobState::Failed {
            code: Some(FailureCode::Cancelled),
            ..
        } => (Outcome::Cancelled, 0, 0),
        _ => (Outcome::Failed, 0, 0),
    };
    let recorded = finish(inner, id, lease.token, state).await;
    if recorded {
        inner
            .metrics
            .finished(outcome, started.elapsed(), rows, bytes);
    }
    if succeeded && !recorded {
        // The job was deleted or taken over while it ran: this attempt's result must not
        // outlive it. Only this attempt's key: the winner's result is under another.
        if let Err(e) = inner.ports.results.delete(key).await {
            warn!(query_id = %id, attempt = key.attempt, error = %e, "removing the result of a lost attempt failed");
        }
    }
}

/// Records the outcome; returns whether it was recorded.
async fn finish(inner: &Inner, id: QueryId, token: LeaseToken, state: JobState) -> bool {
    let outcome = match &state {
        JobState::Succeeded { rows, bytes, .. } => {
            format!("succeeded ({rows} rows, {bytes} bytes)")
        }
        JobState::Failed { reason, .. } => format!("failed: {reason}"),
        _ => String::new(),
    };
    match inner.ports.jobs.finish(id, token, state).await {
        Ok(_) => {
            info!(query_id = %id, outcome = %outcome, "query finished");
            true
        }
        Err(JobStoreError::NotFound(_)) | Err(JobStoreError::LeaseLost(_)) => {
            info!(query_id = %id, "query was deleted or taken over; outcome discarded");
            false
        }
        Err(e) => {
            error!(query_id = %id, error = %e, "recording the outcome failed; the query will run again");
            false
        }
    }
}

/// Runs the engine while renewing the lease; a lost lease cancels the run.
async fn execute_holding_lease(
    inner: &Inner,
    job: &Job,
    key: ResultKey,
    token: LeaseToken,
    cancel: &CancelToken,
    oversize: &Arc<Oversize>,
    progress: &Arc<Counters>,
) -> Result<Execution, EngineError> {
    let mut sink = inner
        .ports
        .results
        .create(key)
        .await
        .map_err(EngineError::Sink)?;
    sink = Box::new(CappedSink {
        inner: sink,
        written: 0,
        rows: 0,
        max_bytes: inner.config.max_result_bytes,
        max_rows: inner.config.max_result_rows,
        oversize: Arc::clone(oversize),
        progress: Arc::clone(progress),
        digest: BackgroundDigest::start(),
    });
    // Compressed before the caps and the digest: they are about the file as stored.
    if let Some(compression) = job.request.output.compression {
        sink = CompressingSink::around(sink, compression, Arc::clone(progress))
            .map_err(|e| EngineError::Sink(ResultStoreError::Io(e)))?;
    }
    // A separate task, so that a panic in the engine becomes an error rather than a dead worker.
    let engine = Arc::clone(&inner.ports.engine);
    let request = job.request.clone();
    let engine_cancel = cancel.clone();
    let mut run = tokio::spawn(async move { engine.execute(&request, sink, engine_cancel).await });

    // Each renewal also reports progress, so it comes at least every `progress_interval`.
    let renew_every = (inner.config.lease / 3).min(inner.config.progress_interval);
    let mut renew =
        tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
    let deadline = inner
        .config
        .query_timeout
        .map(|limit| tokio::time::Instant::now() + limit);
    let mut watch = tokio::time::interval(CANCEL_POLL);
    let mut cancelled_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            joined = &mut run => {
                return joined.unwrap_or_else(|e| Err(EngineError::Internal(format!("engine task failed: {e}"))));
            }
            _ = renew.tick() => {
                let until = inner.ports.clock.now().plus_millis(millis(inner.config.lease));
                match inner.ports.jobs.renew(job.id, token, until, progress.read()).await {
                    Ok(renewal) => {
                        if renewal.stop_requested {
                            cancel.cancel(CancelReason::Stopped);
                        }
                    }
                    Err(JobStoreError::NotFound(_)) => cancel.cancel(CancelReason::Deleted),
                    Err(JobStoreError::LeaseLost(_)) => cancel.cancel(CancelReason::Deleted),
                    Err(e) => warn!(query_id = %job.id, error = %e, "renewing the lease failed"),
                }
            }
            _ = watch.tick() => {
                let now = tokio::time::Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    cancel.cancel(CancelReason::TimedOut);
                }
                if cancel.is_cancelled() {
                    let since = *cancelled_at.get_or_insert(now);
                    if now.duration_since(since) >= inner.config.cancel_grace {
                        // The engine does not react: abandon it. Its output is discarded when
                        // it ends (the sink is dropped uncommitted), and the slot is free now.
                        warn!(query_id = %job.id, "engine did not stop when cancelled; abandoning the run");
                        run.abort();
                        return Err(EngineError::Cancelled);
                    }
                }
            }
        }
    }
}

/// The sink every run writes through: it counts rows and bytes for the progress the lease task
/// reports, and refuses to grow past the caps, saying so through `oversize`.
struct CappedSink {
    inner: Box<dyn ResultSink>,
    written: u64,
    rows: u64,
    max_bytes: Option<u64>,
    max_rows: Option<u64>,
    oversize: Arc<Oversize>,
    progress: Arc<Counters>,
    /// The SHA-256 of every byte written, in order: the stored result's digest.
    digest: BackgroundDigest,
}

/// Compresses what the engine writes on its way to the store (`compression` on submit).
struct CompressingSink {
    encoder: Encoder,
    progress: Arc<Counters>,
    written: u64,
}

enum Encoder {
    Gzip(flate2::write::GzEncoder<Box<dyn ResultSink>>),
    Zstd(zstd::stream::write::Encoder<'static, Box<dyn ResultSink>>),
}

impl CompressingSink {
    fn around(
        inner: Box<dyn ResultSink>,
        compression: spool_domain::Compression,
        progress: Arc<Counters>,
    ) -> io::Result<Box<dyn ResultSink>> {
        let encoder = match compression {
            spool_domain::Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::fast(),
            )),
            spool_domain::Compression::Zstd => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(inner, 3)?)
            }
        };
        Ok(Box::new(Self {
            encoder,
            progress,
            written: 0,
        }))
    }
}

impl io::Write for CompressingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.encoder {
            Encoder::Gzip(e) => e.write(buf)?,
            Encoder::Zstd(e) => e.write(buf)?,
        };
        self.written += n as u64;
        self.progress
            .uncompressed
            .store(self.written, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.encoder {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

#[async_trait::async_trait]
impl ResultSink for CompressingSink {
    async fn commit(self: Box<Self>) -> Result<u64, ResultStoreError> {
        // The encoder's last block, then the store's commit.
        let inner = match self.encoder {
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Zstd(e) => e.finish()?,
        };
        inner.commit().await
    }

    async fn abort(self: Box<Self>) -> Result<(), ResultStoreError> {
        let inner = match self.encoder {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        };
        match inner {
            Ok(inner) => inner.abort().await,
            // The inner sink went with the encoder: dropped uncommitted, which discards it.
            Err(_) => Ok(()),
        }
    }

    fn add_rows(&mut self, rows: u64) -> io::Result<()> {
        match &mut self.encoder {
            Encoder::Gzip(e) => e.get_mut().add_rows(rows),
            Encoder::Zstd(e) => e.get_mut().add_rows(rows),
        }
    }
}

/// A SHA-256 computed on a thread of its own, so that hashing (about 1 GB/s a core) runs beside
/// the encoder instead of in its path. Writes are gathered into 1 MiB blocks (one copy) and
/// handed over through a channel of four: memory stays bounded, and a writer faster than the
/// hasher waits for it.
struct BackgroundDigest {
    pending: Vec<u8>,
    blocks: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    hasher: Option<std::thread::JoinHandle<[u8; 32]>>,
}

/// The block size handed to the hashing thread.
const DIGEST_BLOCK: usize = 1024 * 1024;
/// The hashing thread's nice value: the engine's (its encoder threads run at 10).
#[cfg(target_os = "linux")]
const DIGEST_NICE: i32 = 10;

impl BackgroundDigest {
    fn start() -> Self {
        let (blocks, received) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let hasher = std::thread::Builder::new()
            .name("spool-digest".into())
            .spawn(move || {
                // Query work, like the engine's threads: below the threads that answer HTTP.
                #[cfg(target_os = "linux")]
                if let Err(e) = rustix::process::setpriority_process(
                    Some(rustix::thread::gettid()),
                    DIGEST_NICE,
                ) {
                    debug!(error = %e, "lowering the digest thread's priority failed");
                }
                let mut digest = sha2::Sha256::default();
                for block in received {
                    sha2::Digest::update(&mut digest, &block);
                }
                sha2::Digest::finalize(digest).into()
            })
            .ok();
        Self {
            pending: Vec::with_capacity(DIGEST_BLOCK),
            blocks: Some(blocks),
            hasher,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= DIGEST_BLOCK {
            let block = std::mem::replace(&mut self.pending, Vec::with_capacity(DIGEST_BLOCK));
            if let Some(blocks) = &self.blocks
                && blocks.send(block).is_err()
            {
                self.blocks = None;
            }
        }
    }

    /// The digest as lowercase hex; `None` if the hashing thread could not run.
    fn finish(mut self) -> Option<String> {
        let blocks = self.blocks.take()?;
        let last = std::mem::take(&mut self.pending);
        if !last.is_empty() {
            blocks.send(last).ok()?;
        }
        drop(blocks);
        let digest = self.hasher.take()?.join().ok()?;
        Some(crate::service::hex(&digest))
    }
}

/// Rows and bytes written so far, shared between the sink and the lease task, and the
/// result's digest once the sink committed.
#[derive(Debug, Default)]
struct Counters {
    rows: AtomicU64,
    bytes: AtomicU64,
    /// Bytes the engine wrote before compression (for a result stored compressed).
    uncompressed: AtomicU64,
    sha256: std::sync::Mutex<Option<String>>,
}

impl Counters {
    fn read(&self) -> Progress {
        Progress {
            rows: self.rows.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

impl io::Write for CappedSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(limit) = self.max_bytes
            && self.written + buf.len() as u64 > limit
        {
            self.oversize.bytes.store(true, Ordering::Release);
            return Err(io::Error::other(format!(
                "result is larger than the limit of {limit} bytes"
            )));
        }
        let n = self.inner.write(buf).inspect_err(|e| {
            if is_storage_full(e) {
                self.oversize.full.store(true, Ordering::Release);
            }
        })?;
        self.digest.update(&buf[..n]);
        self.written += n as u64;
        self.progress.bytes.store(self.written, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|e| {
            if is_storage_full(e) {
                self.oversize.full.store(true, Ordering::Release);
            }
        })
    }
}

#[async_trait::async_trait]
impl ResultSink for CappedSink {
    async fn commit(self: Box<Self>) -> Result<u64, ResultStoreError> {
        let CappedSink {
            inner,
            digest,
            progress,
            oversize,
            ..
        } = *self;
        // The last block is hashed while the store commits.
        let digest = tokio::task::spawn_blocking(move || digest.finish());
        let bytes = inner.commit().await.inspect_err(|e| {
            if is_storage_full(e) {
                oversize.full.store(true, Ordering::Release);
            }
        })?;
        let hex = digest.await.ok().flatten();
        *progress
            .sha256
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = hex;
        Ok(bytes)
    }

    async fn abort(self: Box<Self>) -> Result<(), ResultStoreError> {
        self.inner.abort().await
    }

    fn add_rows(&mut self, rows: u64) -> io::Result<()> {
        self.rows += rows;
        self.progress.rows.store(self.rows, Ordering::Relaxed);
        if let Some(limit) = self.max_rows
            && self.rows > limit
        {
            self.oversize.rows.store(true, Ordering::Release);
            return Err(io::Error::other(format!(
                "result has more than the limit of {limit} rows"
            )));
        }
        self.inner.add_rows(rows)
    }
}

/// Which result cap a run went over, set by [`CappedSink`] as the engine writes.
#[derive(Debug, Default)]
struct Oversize {
    bytes: AtomicBool,
    rows: AtomicBool,
    /// The result store said its disk is full.
    full: AtomicBool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_space_is_seen_however_the_store_wrapped_it() {
        let enospc = io::Error::from_raw_os_error(28);
        assert!(is_storage_full(&enospc));
        assert!(is_storage_full(&io::Error::other(
            io::Error::from_raw_os_error(28)
        )));
        let store = ResultStoreError::Io(io::Error::other(enospc));
        assert!(is_storage_full(&store));
        assert!(
            !is_storage_full(&io::Error::from_raw_os_error(5)),
            "EIO is not a full disk"
        );
        assert!(!is_storage_full(&io::Error::other(
            "result is larger than the limit"
        )));
    }
}
