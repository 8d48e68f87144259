//! The use cases beyond the seed's four calls: downloads with ranges, delete by id and by age,
//! stop, and the retention sweep.
//!
//! Invariants: a query is removed record first, result second. Once the record is gone the id
//! answers MISSING, so a crash between the two steps leaves at most an orphaned result (which
//! the next sweep removes), never a query that answers SUCCESSFUL without its result. Listing
//! and sweeping ask the job store for the jobs they concern (filters, ids), never for all of
//! them, and every step is safe when several processes sweep the same stores at once.

use std::ops::Range;
use std::time::Duration;

use futures::StreamExt;
use spool_domain::{Job, JobState, Principal, ProjectName, QueryId, ResultKey, Role, Timestamp};
use spool_ports::{
    CancelReason, CancelToken, JobEvent, JobFilter, JobStoreError, Stopped, StoredResult,
};
use tracing::{info, warn};

use crate::{ServiceError, Spool};

/// Result keys whose queries are looked up in one call to the job store by the orphan sweep.
const ORPHAN_BATCH: usize = 500;

/// A successful query's result as a download: what the headers need.
#[derive(Debug, Clone)]
pub struct DownloadInfo {
    /// The job, in state `Succeeded`.
    pub job: Job,
    /// The result's size in bytes.
    pub bytes: u64,
    /// When the result was committed.
    pub finished_at: Timestamp,
    /// The result's SHA-256, lowercase hex (absent for results stored before digests).
    pub sha256: Option<String>,
    /// The size before compression, for a result stored compressed.
    pub uncompressed_bytes: Option<u64>,
    /// Where the result is stored.
    key: ResultKey,
}

/// What a retention sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Finished queries past the retention period, deleted with their results.
    pub expired: usize,
    /// Result files whose query record was gone (left by a crash mid-delete).
    pub orphans: usize,
    /// Tombstones of expired queries forgotten (kept one more retention period).
    pub tombstones: usize,
}

fn check_project(job: &Job, project: Option<&ProjectName>) -> Result<(), ServiceError> {
    match project {
        Some(p) if *p != job.request.project => Err(ServiceError::WrongProject {
            id: job.id,
            project: p.to_string(),
        }),
        _ => Ok(()),
    }
}

fn require_admin(who: &Principal, what: &str) -> Result<(), ServiceError> {
    if who.role == Role::Admin {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(format!("only an admin may {what}")))
    }
}

impl Spool {
    /// Returns the job of a query `who` may see, in `project` when one is named.
    async fn own_job(
        &self,
        who: &Principal,
        id: QueryId,
        project: Option<&ProjectName>,
    ) -> Result<Job, ServiceError> {
        let job = self.job(who, id).await?;
        check_project(&job, project)?;
        Ok(job)
    }

    /// Returns the download facts of a successful query: `NotReady` while it runs,
    /// `QueryFailed` if it failed.
    pub async fn download_info(
        &self,
        who: &Principal,
        id: QueryId,
        project: Option<&ProjectName>,
    ) -> Result<DownloadInfo, ServiceError> {
        let job = self.own_job(who, id, project).await?;
        match &job.state {
            JobState::Queued | JobState::Running { .. } => Err(ServiceError::NotReady(id)),
            JobState::Failed { reason, .. } => Err(ServiceError::QueryFailed {
                id,
                reason: reason.clone(),
            }),
            JobState::Succeeded {
                bytes,
                finished_at,
                attempt,
                sha256,
                uncompressed_bytes,
                ..
            } => Ok(DownloadInfo {
                sha256: sha256.clone(),
                uncompressed_bytes: *uncompressed_bytes,
                bytes: *bytes,
                finished_at: *finished_at,
                key: ResultKey::new(id, *attempt),
                job: job.clone(),
            }),
        }
    }

    /// Opens `range` of a successful query's result (checked by [`Spool::download_info`]).
    pub async fn open_result_range(
        &self,
        info: &DownloadInfo,
        range: Range<u64>,
    ) -> Result<StoredResult, ServiceError> {
        let id = info.job.id;
        self.inner
            .ports
            .results
            .open_range(info.key, range)
            .await?
            .ok_or_else(|| {
                ServiceError::Internal(
                    format!("result of successful query {id} is missing from the result store")
                        .into(),
                )
            })
    }

    /// The result of a successful query re-encoded as `to` (another format, separator, header
    /// row or text encoding than it was stored with), streamed as the engine converts it, in
    /// bounded memory. Results stored as CSV (UTF-8, a one-character separator) or Parquet,
    /// not compressed, can be converted; others are `Unsupported`. An error after the first
    /// bytes ends the stream with that error.
    pub async fn transcoded(
        &self,
        info: &DownloadInfo,
        to: spool_domain::OutputSpec,
    ) -> Result<futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>, ServiceError>
    {
        use spool_domain::{OutputFormat, TextEncoding};
        let from = info.job.request.output.clone();
        let convertible = from.compression.is_none()
            && match from.format {
                OutputFormat::Parquet => true,
                OutputFormat::Csv => {
                    from.encoding == TextEncoding::Utf8 && from.separator.len() == 1
                }
                _ => false,
            };
        if !convertible {
            return Err(ServiceError::Unsupported(format!(
                "this result was stored as {}{}; only results stored as Parquet, or as UTF-8 CSV with a \
                 one-character separator, not compressed, can be downloaded in another format; \
                 submit the query again with the format you need",
                from.format,
                if from.compression.is_some() {
                    " (compressed)"
                } else {
                    ""
                },
            )));
        }
        let JobState::Succeeded { columns, .. } = &info.job.state else {
            return Err(ServiceError::NotReady(info.job.id));
        };
        let columns = columns.clone();
        let stored = self.open_result_range(info, 0..info.bytes).await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let failed = tx.clone();
        let sink = Box::new(PipeSink {
            tx: Some(tx),
            buffer: Vec::new(),
            written: 0,
        });
        let transcoder = std::sync::Arc::clone(&self.inner.ports.transcoder);
        let id = info.job.id;
        tokio::spawn(async move {
            let converted = transcoder
                .transcode(stored, &from, &columns, &to, sink, CancelToken::new())
                .await;
            let outcome = match converted {
                Ok(execution) => execution
                    .sink
                    .commit()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = outcome {
                warn!(query_id = %id, error = %e, "converting a result for download failed");
                let _ = failed.send(Err(std::io::Error::other(e))).await;
            }
        });
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        })))
    }

    /// Where the result store keeps a successful query's result, if it can say: for an admin
    /// the store's own location (a path on the server, a URL); for anyone else only the
    /// result's name in the store, so that no user learns the server's folders.
    pub fn result_location(&self, info: &DownloadInfo, who: &Principal) -> Option<String> {
        if who.role == Role::Admin {
            self.inner.ports.results.location(info.key)
        } else {
            Some(info.key.to_string())
        }
    }

    /// Removes a job record, stops it if it runs here, then removes its result. Returns whether
    /// the record existed. A query running in another process sees the record gone at its
    /// next renewal, stops, and removes what its attempt wrote.
    async fn remove(&self, id: QueryId) -> Result<bool, ServiceError> {
        let ports = &self.inner.ports;
        let Some(job) = ports.jobs.delete(id).await? else {
            return Ok(false);
        };
        // A wait in this process answers MISSING now.
        self.inner.waiters.wake(id);
        if let Some(token) = self.inner.running().get(&id) {
            token.cancel(CancelReason::Deleted);
        }
        if let (JobState::Succeeded { .. }, Some(key)) = (&job.state, job.result_key()) {
            ports.results.delete(key).await?;
        }
        Ok(true)
    }

    /// Deletes one query and its result (its owner or an admin), stopping it if it runs.
    pub async fn delete(
        &self,
        who: &Principal,
        id: QueryId,
        project: Option<&ProjectName>,
    ) -> Result<(), ServiceError> {
        self.own_job(who, id, project).await?;
        self.remove(id).await?;
        info!(query_id = %id, user = %who.name, "query deleted");
        Ok(())
    }

    /// Deletes every query and result, stopping those still running (admins only). Returns how
    /// many queries were deleted.
    pub async fn clean_all(&self, who: &Principal) -> Result<usize, ServiceError> {
        require_admin(who, "clean up all queries")?;
        let deleted = self.remove_where(&JobFilter::default()).await?;
        self.remove_orphans().await?;
        warn!(user = %who.name, deleted, "all queries cleaned");
        Ok(deleted)
    }

    /// Removes every query `filter` selects, with its result; returns how many were removed.
    async fn remove_where(&self, filter: &JobFilter) -> Result<usize, ServiceError> {
        let mut removed = 0;
        for job in self.inner.ports.jobs.list(filter).await? {
            if self.remove(job.id).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Deletes results that no query points to: the query's record is gone (a crash between
    /// the two steps of a delete), or the query finished without this attempt's result (an
    /// attempt that lost its lease and died before removing what it wrote). Results of
    /// unfinished queries stay: their attempt may still record them.
    async fn remove_orphans(&self) -> Result<usize, ServiceError> {
        let ports = &self.inner.ports;
        let keys = ports.results.list().await?;
        let mut removed = 0;
        for batch in keys.chunks(ORPHAN_BATCH) {
            let ids: Vec<QueryId> = batch.iter().map(|k| k.query).collect();
            let jobs = ports.jobs.get_many(&ids).await?;
            for key in batch {
                let orphan = match jobs.get(&key.query) {
                    None => true,
                    Some(job) => job.is_finished() && job.result_key() != Some(*key),
                };
                if orphan {
                    ports.results.delete(*key).await?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Deletes the queries (of `project`, when named) submitted before `older_than` (when
    /// given), with their results; admins only. Returns how many were deleted.
    pub async fn delete_matching(
        &self,
        who: &Principal,
        project: Option<&ProjectName>,
        older_than: Option<Timestamp>,
    ) -> Result<usize, ServiceError> {
        require_admin(who, "delete queries by project or age")?;
        let filter = JobFilter {
            project: project.cloned(),
            submitted_before: older_than,
            ..JobFilter::default()
        };
        let deleted = self.remove_where(&filter).await?;
        info!(user = %who.name, deleted, project = ?project.map(ProjectName::as_str), "queries deleted by project or age");
        Ok(deleted)
    }

    /// Stops a queued or running query (its owner or an admin): it becomes FAILED with
    /// `stopped by user` and its worker slot is freed, whichever process runs it. Returns once
    /// the query has ended, or once the stop is recorded and its worker has had the time it
    /// needs to act on it (its lease and the engine's grace period).
    pub async fn stop(
        &self,
        who: &Principal,
        id: QueryId,
        project: Option<&ProjectName>,
    ) -> Result<(), ServiceError> {
        self.own_job(who, id, project).await?;
        let ports = &self.inner.ports;
        // Subscribed before the stop, so that the end cannot slip by unseen.
        let mut events = ports.jobs.events();
        let outcome = JobState::stopped_by_user(ports.clock.now());
        match ports.jobs.stop(id, ports.clock.now(), outcome).await {
            Ok(Stopped::Ended(_)) => {
                info!(query_id = %id, user = %who.name, "queued query stopped");
                Ok(())
            }
            Ok(Stopped::Requested(_)) => {
                // The store announces the request; a worker in this process is told at once.
                let running_here = self.inner.running().get(&id).cloned();
                if let Some(token) = running_here {
                    token.cancel(CancelReason::Stopped);
                    self.wait_until_ended_here(id).await;
                } else {
                    let config = &self.inner.config;
                    let patience = config.lease + config.cancel_grace + Duration::from_secs(1);
                    let ended = tokio::time::timeout(patience, async {
                        while let Some(event) = events.next().await {
                            if event == JobEvent::Finished(id) {
                                return;
                            }
                        }
                    })
                    .await;
                    if ended.is_err() {
                        info!(query_id = %id, "stop recorded; the query has not ended yet");
                    }
                }
                info!(query_id = %id, user = %who.name, "query stopped");
                Ok(())
            }
            Err(JobStoreError::NotFound(_)) => Err(ServiceError::NotFound(id)),
            Err(JobStoreError::Finished(job)) => Err(ServiceError::AlreadyFinished {
                id,
                status: match job.state {
                    JobState::Succeeded { .. } => "SUCCESSFUL",
                    _ => "FAILED",
                },
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until the query is no longer running in this process, at most the engine's grace
    /// period and a little more (the worker abandons an engine that ignores cancellation).
    async fn wait_until_ended_here(&self, id: QueryId) {
        let deadline = self.inner.config.cancel_grace + Duration::from_secs(1);
        let _ = tokio::time::timeout(deadline, async {
            loop {
                let ended = self.inner.ended.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                if !self.inner.running().contains_key(&id) {
                    return;
                }
                ended.await;
            }
        })
        .await;
    }

    /// Deletes finished queries older than the retention period, with their results, and result
    /// files whose query record is gone. Runs when the workers start and every
    /// `retention_sweep_every`; callable directly (tests, operators).
    pub async fn sweep_expired(&self) -> Result<Sweep, ServiceError> {
        let ports = &self.inner.ports;
        let mut sweep = Sweep::default();
        if let Some(keep) = self.inner.config.result_retention {
            let keep = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
            let now = ports.clock.now();
            let filter = JobFilter {
                finished_before: Some(now.plus_millis(-keep)),
                ..JobFilter::default()
            };
            // Each expired query leaves a tombstone for another retention period, so that its
            // owner hears "expired", not "not found".
            for job in ports.jobs.list(&filter).await? {
                if let Some(gone) = ports
                    .jobs
                    .expire(job.id, now, now.plus_millis(keep))
                    .await?
                {
                    self.inner.waiters.wake(gone.id);
                    if let (JobState::Succeeded { .. }, Some(key)) =
                        (&gone.state, gone.result_key())
                    {
                        ports.results.delete(key).await?;
                    }
                    sweep.expired += 1;
                }
            }
            sweep.tombstones = ports.jobs.forget_tombstones(now).await?;
        }
        sweep.orphans = self.remove_orphans().await?;
        if sweep != Sweep::default() {
            info!(
                expired = sweep.expired,
                orphans = sweep.orphans,
                tombstones = sweep.tombstones,
                "retention sweep"
            );
        }
        Ok(sweep)
    }

    /// Runs [`Spool::sweep_expired`] now and then every `retention_sweep_every` until `stopped`.
    pub(crate) async fn sweep_loop(self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.sweep_expired().await {
                warn!(error = %e, source = ?std::error::Error::source(&e), "retention sweep failed");
            }
            tokio::select! {
                _ = stopped.changed() => return,
                _ = tokio::time::sleep(self.inner.config.retention_sweep_every) => {}
            }
        }
    }
}

/// A sink that hands what is written to a channel (a download being converted): blocks while
/// the channel is full, so the engine goes at the client's pace; fails once the client is gone.
struct PipeSink {
    tx: Option<tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>>,
    buffer: Vec<u8>,
    /// Bytes written, for the commit's answer.
    written: u64,
}

/// Bytes gathered before they are handed on.
const PIPE_CHUNK: usize = 256 * 1024;

impl PipeSink {
    fn hand_on(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buffer));
        let gone = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away");
        self.tx
            .as_ref()
            .ok_or_else(gone)?
            .blocking_send(Ok(chunk))
            .map_err(|_| gone())
    }
}

impl std::io::Write for PipeSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        self.written += buf.len() as u64;
        if self.buffer.len() >= PIPE_CHUNK {
            self.hand_on()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl spool_ports::ResultSink for PipeSink {
    async fn commit(mut self: Box<Self>) -> Result<u64, spool_ports::ResultStoreError> {
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buffer));
        if let Some(tx) = self.tx.take()
            && !chunk.is_empty()
        {
            let _ = tx.send(Ok(chunk)).await;
        }
        Ok(self.written)
    }

    async fn abort(mut self: Box<Self>) -> Result<(), spool_ports::ResultStoreError> {
        self.tx = None;
        Ok(())
    }
}
