//! The job store port: durable records of every query and the queue workers claim from.

use async_trait::async_trait;
use spool_domain::{Job, JobState, Lease, LeaseToken, QueryId, Timestamp};

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
    /// The backend failed; the operation may or may not have taken effect.
    #[error("job store failure")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Durable storage of jobs, shared by every worker that may run them.
///
/// Contract:
/// - Every method that changes a job is atomic: readers see the job before or after, never
///   in between, and a crash leaves one or the other.
/// - A change is durable when the call returns `Ok`: a job that `insert` accepted survives a
///   crash of the process that inserted it.
/// - Several processes may share one store. Workers coordinate only through leases: `claim_next`
///   hands each claimable job to exactly one caller, and `renew` / `finish` succeed only for the
///   holder of the current lease token.
/// - Methods may block briefly on I/O; adapters keep blocking calls off the async reactor.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Stores a new job. Fails with `AlreadyExists` if the id is taken.
    async fn insert(&self, job: &Job) -> Result<(), JobStoreError>;

    /// Returns the job with this id, or `None`.
    async fn get(&self, id: QueryId) -> Result<Option<Job>, JobStoreError>;

    /// Claims the oldest job that is claimable at `now` (queued, or running on a lapsed lease),
    /// puts it under `lease` and returns it as stored after the claim. `None` if there is none.
    async fn claim_next(&self, now: Timestamp, lease: Lease) -> Result<Option<Job>, JobStoreError>;

    /// Extends the lease held under `token`. `LeaseLost` if the caller no longer holds it,
    /// `NotFound` if the job was deleted.
    async fn renew(
        &self,
        id: QueryId,
        token: LeaseToken,
        expires_at: Timestamp,
    ) -> Result<(), JobStoreError>;

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

    /// Ends a job that no worker holds (queued, or running on a lease lapsed at `now`) with
    /// `outcome` and returns the stored job. `LeaseLost` if a worker holds it or it has
    /// finished, `NotFound` if there is no such job.
    async fn end_unclaimed(
        &self,
        id: QueryId,
        now: Timestamp,
        outcome: JobState,
    ) -> Result<Job, JobStoreError>;

    /// Removes a job; returns it, or `None` if it did not exist (deleting is idempotent).
    async fn delete(&self, id: QueryId) -> Result<Option<Job>, JobStoreError>;

    /// Returns every job, oldest submission first.
    async fn list(&self) -> Result<Vec<Job>, JobStoreError>;
}
