//! The errors of Spool's use cases, one variant per answer a client can get.

use std::io;

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
    /// The job store's disk is full: the query was not stored.
    #[error(
        "the job store is out of space (disk full), so the query was not stored; free space on \
         the server and submit it again"
    )]
    StoreFull,
    /// The job store failed (a lost database connection, an I/O error, a full disk).
    #[error("the job store is unavailable ({0}); try again shortly")]
    StoreUnavailable(String),
    /// A backend failed; the details are for the log.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<spool_ports::JobStoreError> for ServiceError {
    fn from(e: spool_ports::JobStoreError) -> Self {
        if is_storage_full(&e) {
            Self::StoreUnavailable("its disk is full".to_owned())
        } else {
            Self::Internal(Box::new(e))
        }
    }
}

impl From<spool_ports::ResultStoreError> for ServiceError {
    fn from(e: spool_ports::ResultStoreError) -> Self {
        Self::Internal(Box::new(e))
    }
}

/// Whether `e` (or an error it wraps) is a file system out of space (`ENOSPC`, or `EDQUOT`: a
/// quota), however the store wrapped it.
pub(crate) fn is_storage_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::StorageFull
                || io.kind() == io::ErrorKind::QuotaExceeded
                || matches!(io.raw_os_error(), Some(28 | 122))
            {
                return true;
            }
            if let Some(inner) = io.get_ref()
                && is_storage_full(inner)
            {
                return true;
            }
        }
        current = err.source();
    }
    false
}
