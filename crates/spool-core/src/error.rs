//! The errors of Spool's use cases, one variant per answer a client can get.

use spool_domain::{InvalidRequest, QueryId};

/// Why a use case did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The request asks for something this service cannot do with this query (the message
    /// says what and why).
    #[error("{0}")]
    Unsupported(String),
    /// No query with this id is visible to the caller.
    #[error("query {0} not found")]
    NotFound(QueryId),
    /// The query has not finished yet.
    #[error("query {0} has not finished yet; poll its status until it is SUCCESSFUL")]
    NotReady(QueryId),
    /// The query failed, so there is no result.
    #[error("query {id} failed, so it has no result: {reason}")]
    QueryFailed {
        /// The query.
        id: QueryId,
        /// Why it failed.
        reason: String,
    },
    /// The caller already has as many queries queued or running as allowed.
    #[error(
        "too many queries in flight: at most {limit} queued or running per user; retry when one has finished"
    )]
    TooManyQueries {
        /// The per-user cap.
        limit: usize,
    },
    /// The idempotency key was first used with another request.
    #[error(
        "this Idempotency-Key was first used for query {id} with a different request; use a new key for a new request"
    )]
    IdempotencyConflict {
        /// The query the key belongs to.
        id: QueryId,
    },
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No project has this name.
    #[error("project '{0}' does not exist")]
    ProjectNotFound(String),
    /// The request names a project that is not the query's.
    #[error("query {id} does not belong to project '{project}'")]
    WrongProject {
        /// The query.
        id: QueryId,
        /// The project the request named.
        project: String,
    },
    /// The query has already finished, so it cannot be stopped.
    #[error("query {id} has already finished ({status}); only a running query can be stopped")]
    AlreadyFinished {
        /// The query.
        id: QueryId,
        /// Its status, `SUCCESSFUL` or `FAILED`.
        status: &'static str,
    },
    /// A backend failed; the details are for the log.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<spool_ports::JobStoreError> for ServiceError {
    fn from(e: spool_ports::JobStoreError) -> Self {
        Self::Internal(Box::new(e))
    }
}

impl From<spool_ports::ResultStoreError> for ServiceError {
    fn from(e: spool_ports::ResultStoreError) -> Self {
        Self::Internal(Box::new(e))
    }
}
