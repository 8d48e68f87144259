//! The job store port: durable records of every query and the queue workers claim from.

use std::collections::HashMap;

use async_trait::async_trait;
use futures::stream::BoxStream;
use spool_domain::{
    CallbackState, Job, JobState, Lease, LeaseToken, Progress, ProjectName, QueryId, StateKind,
    Timestamp, Tombstone,
};

/// What can go wrong in a job store.
#[derive(Debug, thiserror::Error)]
pub enum JobStoreError {
    /// No job has this id (never inserted, or deleted).
    #[error("job {0} not found")]
    NotFound(QueryId),
    /// A job with this id already exists.
    #[error("job {0} already exists")]
    AlreadyExists(QueryId),
    /// The caller no longer holds the job's lease: it was finished, requeued or taken over.
    #[error("lease on job {0} was lost")]
    LeaseLost(QueryId),
    /// The job has already finished, so it cannot be stopped.
    #[error("job {} has already finished", .0.id)]
    Finished(Box<Job>),
    /// The owner already submitted a job with the new job's idempotency key within the key's
    /// window; nothing was stored. Carries that job.
    #[error("job {} already holds this idempotency key", .0.id)]
    Duplicate(Box<Job>),
    /// The owner already has `limit` jobs queued or running; nothing was stored.
    #[error("the owner already has {limit} jobs queued or running")]
    TooManyInFlight {
        /// The cap that was reached.
        limit: usize,
    },
    /// The backend failed; the operation may or may not have taken effect.
    #[error("job store failure")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl JobStoreError {
    /// Wraps a backend's own error, keeping it as the source.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// Which jobs [`JobStore::list`] returns; every condition given must hold. The default
/// selects every job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs of this project (compared exactly, as stored).
    pub project: Option<ProjectName>,
    /// Only jobs submitted by this user.
    pub owner: Option<String>,
    /// Only jobs submitted strictly before this instant.
    pub submitted_before: Option<Timestamp>,
    /// Only finished jobs that finished strictly before this instant.
    pub finished_before: Option<Timestamp>,
    /// Only jobs in this kind of state.
    pub state: Option<StateKind>,
    /// Only jobs that come strictly before this one in submission order (submission time,
    /// then id): the cursor of a paged listing.
    pub before: Option<JobPosition>,
}

/// A job's place in submission order: its submission time, then its id (which breaks ties).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobPosition {
    /// When the job was submitted.
    pub submitted_at: Timestamp,
    /// The job's id.
    pub id: QueryId,
}

impl JobPosition {
    /// The position of `job`.
    pub fn of(job: &Job) -> Self {
        Self {
            submitted_at: job.submitted_at,
            id: job.id,
        }
    }
}

impl JobFilter {
    /// Returns whether `job` passes the filter (what a store's query computes).
    pub fn matches(&self, job: &Job) -> bool {
        self.project
            .as_ref()
            .is_none_or(|p| *p == job.request.project)
            && self.owner.as_ref().is_none_or(|o| *o == job.owner)
            && self.submitted_before.is_none_or(|t| job.submitted_at < t)
            && self
                .finished_before
                .is_none_or(|t| job.finished_at().is_some_and(|f| f < t))
            && self.state.is_none_or(|k| job.state.kind() == k)
            && self.before.is_none_or(|b| JobPosition::of(job) < b)
    }
}

/// What a renewal tells the lease holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    /// A user asked for the job to stop: the holder should end it as stopped.
    pub stop_requested: bool,
}

/// What [`JobStore::stop`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// No worker held the job; it has ended with the given outcome (the stored job).
    Ended(Job),
    /// A worker holds the job; the request is recorded and announced, and that worker ends it.
    Requested(Job),
}

/// A change that processes sharing a store are told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    /// A job was queued (submitted, or given back by a worker): an idle worker should claim.
    Queued,
    /// A stop was requested for a running job: its lease holder should stop it.
    StopRequested(QueryId),
    /// A job reached an end state.
    Finished(QueryId),
}

/// Durable storage of jobs, shared by every worker that may run them.
///
/// Contract:
/// - Every method that changes a job is atomic: readers see the job before or after, never
///   in between, and a crash leaves one or the other.
/// - A change is durable when the call returns `Ok`: a job that `insert` accepted survives a
///   crash of the process that inserted it.
/// - Several processes may share one store. Workers coordinate only through leases: `claim_next`
///   hands each claimable job (queued, or running on a lapsed lease) to exactly one caller, and
///   `renew` / `finish` / `release` succeed only for the holder of the current lease token.
/// - [`JobStore::events`] announces queued jobs, stop requests and finished jobs to every
///   subscriber, in this process and in every other process sharing the store, soon after the
///   change is durable (at most once; a subscriber that falls behind may miss events, so
///   workers also look for work now and then).
/// - Methods may block briefly on I/O; adapters keep blocking calls off the async reactor.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Stores a new job. Fails with `AlreadyExists` if the id is taken; with `Duplicate` if the
    /// job carries an idempotency key that a job of the same owner submitted within the key's
    /// window holds (checked first: a repeat is never refused for the cap); and with
    /// `TooManyInFlight` if `max_in_flight` is given and the job's owner already has that many
    /// unfinished jobs. Checks and insert are one atomic step, across processes: two
    /// submissions with one key store one job.
    async fn insert(&self, job: &Job, max_in_flight: Option<usize>) -> Result<(), JobStoreError>;

    /// Returns the job with this id, or `None`.
    async fn get(&self, id: QueryId) -> Result<Option<Job>, JobStoreError>;

    /// Returns the jobs among `ids` that exist, keyed by id (for sweeping orphaned results).
    async fn get_many(&self, ids: &[QueryId]) -> Result<HashMap<QueryId, Job>, JobStoreError>;

    /// Claims the oldest job that is claimable at `now` (queued, or running on a lapsed lease),
    /// puts it under `lease` and returns it as stored after the claim. `None` if there is none.
    async fn claim_next(&self, now: Timestamp, lease: Lease) -> Result<Option<Job>, JobStoreError>;

    /// Extends the lease held under `token`, records the attempt's `progress` (what every
    /// process's status call then reports), and says whether a stop was requested.
    /// `LeaseLost` if the caller no longer holds it, `NotFound` if the job was deleted.
    async fn renew(
        &self,
        id: QueryId,
        token: LeaseToken,
        expires_at: Timestamp,
        progress: Progress,
    ) -> Result<Renewal, JobStoreError>;

    /// Records the end state of a job held under `token` and returns the stored job.
    /// `LeaseLost` if the caller no longer holds it, `NotFound` if the job was deleted; in
    /// both cases nothing changes and the caller must discard what it produced.
    async fn finish(
        &self,
        id: QueryId,
        token: LeaseToken,
        outcome: JobState,
    ) -> Result<Job, JobStoreError>;

    /// Returns a running job to the queue if it is still held under `token` (a worker giving a
    /// job back, for instance at shutdown). Ok and no change if the lease was lost.
    async fn release(&self, id: QueryId, token: LeaseToken) -> Result<(), JobStoreError>;

    /// Stops a job: one no worker holds at `now` (queued, or on a lapsed lease) ends with
    /// `outcome`; on one a worker holds, the request is recorded and announced. `Finished`
    /// if it had already ended, `NotFound` if there is no such job.
    async fn stop(
        &self,
        id: QueryId,
        now: Timestamp,
        outcome: JobState,
    ) -> Result<Stopped, JobStoreError>;

    /// Removes a job; returns it, or `None` if it did not exist (deleting is idempotent).
    async fn delete(&self, id: QueryId) -> Result<Option<Job>, JobStoreError>;

    /// Removes a job that retention expired and leaves its [`Tombstone`] (until `keep_until`)
    /// in the same step; returns the job, or `None` if it did not exist (then no tombstone).
    async fn expire(
        &self,
        id: QueryId,
        at: Timestamp,
        keep_until: Timestamp,
    ) -> Result<Option<Job>, JobStoreError>;

    /// The tombstone of an expired job, if it is still kept.
    async fn tombstone(&self, id: QueryId) -> Result<Option<Tombstone>, JobStoreError>;

    /// Forgets tombstones kept until before `now`; returns how many.
    async fn forget_tombstones(&self, now: Timestamp) -> Result<usize, JobStoreError>;

    /// The most recently finished succeeded job whose result is reusable under `reuse_key`
    /// (see `JobState::Succeeded`), finished at or after `since`. The default scans the
    /// store's list; stores with an index over the key use it.
    async fn find_reusable(
        &self,
        reuse_key: &str,
        since: Timestamp,
    ) -> Result<Option<Job>, JobStoreError> {
        let finished = self
            .list(&JobFilter {
                finished_before: Some(Timestamp::from_millis(i64::MAX)),
                ..JobFilter::default()
            })
            .await?;
        Ok(finished
            .into_iter()
            .filter(|job| {
                matches!(&job.state, JobState::Succeeded { reuse_key: Some(k), finished_at, .. }
                    if k == reuse_key && *finished_at >= since)
            })
            .max_by_key(Job::finished_at))
    }

    /// Finished jobs whose webhook is due at `now` ([`Job::callback_due`]), at most `limit`,
    /// longest due first. The default scans the store's finished jobs; stores with an index
    /// over the due time use it.
    async fn callbacks_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>, JobStoreError> {
        let finished = self
            .list(&JobFilter {
                finished_before: Some(Timestamp::from_millis(i64::MAX)),
                ..JobFilter::default()
            })
            .await?;
        let mut due: Vec<Job> = finished
            .into_iter()
            .filter(|j| j.callback_due(now))
            .collect();
        due.sort_by_key(|j| match &j.callback {
            Some(spool_domain::Callback {
                state: spool_domain::CallbackState::Pending { next_at, .. },
                ..
            }) => *next_at,
            _ => Timestamp::EPOCH,
        });
        due.truncate(limit);
        Ok(due)
    }

    /// Moves job `id`'s webhook from `expected` to `next`, if it is still `expected` (so that
    /// one process makes each attempt); returns whether it did. `NotFound` if the job is gone.
    async fn update_callback(
        &self,
        id: QueryId,
        expected: &CallbackState,
        next: CallbackState,
    ) -> Result<bool, JobStoreError>;

    /// Returns the jobs `filter` selects, oldest submission first. The store evaluates the
    /// filter itself; it does not hand every job to the caller.
    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, JobStoreError>;

    /// Returns at most `limit` of the jobs `filter` selects, newest first (descending
    /// [`JobPosition`]): one page of a listing, the next page starting `before` the last job
    /// returned. The default sorts the store's list; stores with an index over submission
    /// times read only the page.
    async fn list_newest(
        &self,
        filter: &JobFilter,
        limit: usize,
    ) -> Result<Vec<Job>, JobStoreError> {
        let mut jobs = self.list(filter).await?;
        jobs.sort_by_key(|j| std::cmp::Reverse(JobPosition::of(j)));
        jobs.truncate(limit);
        Ok(jobs)
    }

    /// How many jobs the store holds in each kind of state (kinds with none may be absent).
    /// The default counts the store's list; stores with an index over states count there.
    async fn count_by_state(&self) -> Result<HashMap<StateKind, u64>, JobStoreError> {
        let mut counts = HashMap::new();
        for job in self.list(&JobFilter::default()).await? {
            *counts.entry(job.state.kind()).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Returns how many queued jobs are ahead of `job` (queued jobs submitted before it, in
    /// claim order): its position in the queue, 0 when it is next. The default lists the
    /// queue; stores with an index over it count there.
    async fn queued_ahead(&self, job: &Job) -> Result<u64, JobStoreError> {
        let queued = self
            .list(&JobFilter {
                submitted_before: Some(job.submitted_at.plus_millis(1)),
                ..JobFilter::default()
            })
            .await?;
        let ahead = queued
            .iter()
            .filter(|j| {
                matches!(j.state, JobState::Queued)
                    && (j.submitted_at, j.id.to_string()) < (job.submitted_at, job.id.to_string())
            })
            .count();
        Ok(u64::try_from(ahead).unwrap_or(u64::MAX))
    }

    /// Subscribes to the store's [`JobEvent`]s from now on.
    fn events(&self) -> BoxStream<'static, JobEvent>;
}
