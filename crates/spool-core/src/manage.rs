//! The use cases beyond the seed's four calls: downloads with ranges, delete by id and by age,
//! stop, and the retention sweep.
//!
//! Invariant: a query is removed record first, result second. Once the record is gone the id
//! answers MISSING, so a crash between the two steps leaves at most an orphaned result file
//! (which the next sweep removes), never a query that answers SUCCESSFUL without its result.

use std::collections::HashSet;
use std::ops::Range;
use std::time::Duration;

use spool_domain::{Job, JobState, Principal, ProjectName, QueryId, Role, Timestamp};
use spool_ports::{CancelReason, JobStoreError, StoredResult};
use tracing::{info, warn};

use crate::{ServiceError, Spool};

/// The reason a stopped query reports.
pub const STOPPED_BY_USER: &str = "stopped by user";

/// How long [`Spool::stop`] keeps trying to catch a query that is being claimed right then.
const STOP_RETRY: Duration = Duration::from_millis(20);
const STOP_ATTEMPTS: usize = 100;

/// A successful query's result as a download: what the headers need.
#[derive(Debug, Clone)]
pub struct DownloadInfo {
    /// The job, in state `Succeeded`.
    pub job: Job,
    /// The result's size in bytes.
    pub bytes: u64,
    /// When the result was committed.
    pub finished_at: Timestamp,
}

/// What a retention sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Finished queries past the retention period, deleted with their results.
    pub expired: usize,
    /// Result files whose query record was gone (left by a crash mid-delete).
    pub orphans: usize,
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
                bytes, finished_at, ..
            } => Ok(DownloadInfo {
                bytes: *bytes,
                finished_at: *finished_at,
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
            .open_range(id, range)
            .await?
            .ok_or_else(|| {
                ServiceError::Internal(
                    format!("result of successful query {id} is missing from the result store")
                        .into(),
                )
            })
    }

    /// Where the result store keeps a successful query's result, if it can say.
    pub fn result_location(&self, info: &DownloadInfo) -> Option<String> {
        self.inner.ports.results.location(info.job.id)
    }

    /// Removes a job record, stops it if it runs here, then removes its result. Returns whether
    /// the record existed.
    async fn remove(&self, id: QueryId) -> Result<bool, ServiceError> {
        let ports = &self.inner.ports;
        let gone = ports.jobs.delete(id).await?;
        if let Some(job) = &gone
            && !job.is_finished()
        {
            self.inner.job_ended(&job.owner);
        }
        if let Some(token) = self.inner.running().get(&id) {
            token.cancel(CancelReason::Deleted);
        }
        ports.results.delete(id).await?;
        Ok(gone.is_some())
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
        let deleted = self.remove_where(|_| true).await?;
        self.remove_orphans().await?;
        warn!(user = %who.name, deleted, "all queries cleaned");
        Ok(deleted)
    }

    /// Removes every query `matches` selects, with its result; returns how many were removed.
    async fn remove_where(&self, matches: impl Fn(&Job) -> bool) -> Result<usize, ServiceError> {
        let mut removed = 0;
        for job in self.inner.ports.jobs.list().await? {
            if matches(&job) && self.remove(job.id).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Deletes result files whose query record is gone (a crash between the two steps of a
    /// delete). `known` holds ids with a record; others are checked one by one, since a query
    /// submitted after `known` was read may have committed its result meanwhile.
    async fn remove_orphans_besides(
        &self,
        known: &HashSet<QueryId>,
    ) -> Result<usize, ServiceError> {
        let ports = &self.inner.ports;
        let mut removed = 0;
        for id in ports.results.list().await? {
            if !known.contains(&id) && ports.jobs.get(id).await?.is_none() {
                ports.results.delete(id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn remove_orphans(&self) -> Result<usize, ServiceError> {
        self.remove_orphans_besides(&HashSet::new()).await
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
        let deleted = self
            .remove_where(|job| {
                project.is_none_or(|p| *p == job.request.project)
                    && older_than.is_none_or(|t| job.submitted_at < t)
            })
            .await?;
        info!(user = %who.name, deleted, project = ?project.map(ProjectName::as_str), "queries deleted by project or age");
        Ok(deleted)
    }

    /// Stops a queued or running query (its owner or an admin): it becomes FAILED with
    /// `stopped by user` and its worker slot is freed. Returns once the query has ended, or
    /// after the engine's grace period if it is being abandoned.
    pub async fn stop(
        &self,
        who: &Principal,
        id: QueryId,
        project: Option<&ProjectName>,
    ) -> Result<(), ServiceError> {
        self.own_job(who, id, project).await?;
        let ports = &self.inner.ports;
        for _ in 0..STOP_ATTEMPTS {
            let running_here = self.inner.running().get(&id).cloned();
            if let Some(token) = running_here {
                token.cancel(CancelReason::Stopped);
                self.wait_until_ended(id).await;
                info!(query_id = %id, user = %who.name, "query stopped");
                return Ok(());
            }
            let outcome = JobState::Failed {
                finished_at: ports.clock.now(),
                reason: STOPPED_BY_USER.to_owned(),
            };
            match ports
                .jobs
                .end_unclaimed(id, ports.clock.now(), outcome)
                .await
            {
                Ok(job) => {
                    self.inner.job_ended(&job.owner);
                    info!(query_id = %id, user = %who.name, "queued query stopped");
                    return Ok(());
                }
                Err(JobStoreError::NotFound(_)) => return Err(ServiceError::NotFound(id)),
                Err(JobStoreError::LeaseLost(_)) => {
                    // Finished, or a worker is claiming it right now: look again.
                    match ports.jobs.get(id).await?.map(|j| j.state) {
                        None => return Err(ServiceError::NotFound(id)),
                        Some(JobState::Succeeded { .. }) => {
                            return Err(ServiceError::AlreadyFinished {
                                id,
                                status: "SUCCESSFUL",
                            });
                        }
                        Some(JobState::Failed { .. }) => {
                            return Err(ServiceError::AlreadyFinished {
                                id,
                                status: "FAILED",
                            });
                        }
                        Some(_) => tokio::time::sleep(STOP_RETRY).await,
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Internal(
            format!("query {id} is held by a worker outside this process; it could not be stopped")
                .into(),
        ))
    }

    /// Waits until the query is no longer running in this process, at most the engine's grace
    /// period and a little more (the worker abandons an engine that ignores cancellation).
    async fn wait_until_ended(&self, id: QueryId) {
        let deadline =
            tokio::time::Instant::now() + self.inner.config.cancel_grace + Duration::from_secs(1);
        while self.inner.running().contains_key(&id) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(STOP_RETRY).await;
        }
    }

    /// Deletes finished queries older than the retention period, with their results, and result
    /// files whose query record is gone. Runs when the workers start and every
    /// `retention_sweep_every`; callable directly (tests, operators).
    pub async fn sweep_expired(&self) -> Result<Sweep, ServiceError> {
        let ports = &self.inner.ports;
        let mut sweep = Sweep::default();
        let jobs = ports.jobs.list().await?;
        let mut kept = HashSet::with_capacity(jobs.len());
        let cutoff = self.inner.config.result_retention.map(|keep| {
            let keep = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
            ports.clock.now().plus_millis(-keep)
        });
        for job in jobs {
            let expired = cutoff.is_some_and(|c| job.finished_at().is_some_and(|t| t < c));
            if !expired {
                kept.insert(job.id);
            } else if self.remove(job.id).await? {
                sweep.expired += 1;
            }
        }
        sweep.orphans = self.remove_orphans_besides(&kept).await?;
        if sweep != Sweep::default() {
            info!(
                expired = sweep.expired,
                orphans = sweep.orphans,
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
