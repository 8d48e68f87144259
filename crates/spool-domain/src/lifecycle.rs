//! What a client sees of a query's life beyond Kylin's four status words: the finer state,
//! progress, and why a query failed as a stable code with a retry hint.

use serde::{Deserialize, Serialize};

/// The reason text of a query a user stopped (Kylin's wording).
pub const STOPPED_BY_USER: &str = "stopped by user";

/// A query's state, finer than Kylin's `status` (which says RUNNING for the first two and
/// FAILED for the last two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Lifecycle {
    /// Waiting for a worker.
    Queued,
    /// A worker runs it.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished without a result.
    Failed,
    /// Stopped by a user.
    Cancelled,
    /// Removed by retention; Kylin's `status` is MISSING.
    Expired,
}

/// Rows and bytes a running query has written so far (the final figures once it succeeded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Rows written.
    pub rows: u64,
    /// Bytes written to the result.
    pub bytes: u64,
}

/// Why a query failed, as a stable code clients can branch on. Kylin 5's `KE-` codes where
/// Kylin has one for the case, Spool's own otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// The project does not exist.
    ProjectNotFound,
    /// The SQL is not valid or not allowed (syntax, unknown table or column, the sandbox).
    InvalidQuery,
    /// The engine failed while running valid SQL (a cast, a division, ...).
    Execution,
    /// The result has more rows than the configured limit.
    TooManyRows,
    /// The result is larger than the configured limit.
    TooLarge,
    /// The query ran longer than the configured limit.
    TimedOut,
    /// The result store ran out of space while the result was written; submitting again once
    /// space is freed may succeed.
    DiskFull,
    /// The query needed more memory than its budget (`max_query_memory`).
    OutOfMemory,
    /// The engine's process crashed while it ran the query; other queries went on.
    EngineCrashed,
    /// A user stopped it.
    Cancelled,
    /// Its workers stopped while it ran, too many times.
    Interrupted,
    /// The engine could not be reached.
    EngineUnavailable,
    /// Spool itself failed (storing the result, an engine fault).
    Internal,
    /// Recorded before failures carried codes, and not recognisable from the reason.
    Unknown,
}

impl FailureCode {
    /// The code as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProjectNotFound => "KE-010001201",
            Self::TooManyRows => "KE-010031201",
            Self::InvalidQuery => "SPOOL-QUERY-INVALID",
            Self::Execution => "SPOOL-QUERY-EXECUTION",
            Self::TooLarge => "SPOOL-RESULT-TOO-LARGE",
            Self::TimedOut => "SPOOL-QUERY-TIMEOUT",
            Self::DiskFull => "SPOOL-DISK-FULL",
            Self::OutOfMemory => "SPOOL-OUT-OF-MEMORY",
            Self::EngineCrashed => "SPOOL-ENGINE-CRASHED",
            Self::Cancelled => "SPOOL-QUERY-CANCELLED",
            Self::Interrupted => "SPOOL-QUERY-INTERRUPTED",
            Self::EngineUnavailable => "SPOOL-ENGINE-UNAVAILABLE",
            Self::Internal => "SPOOL-INTERNAL",
            Self::Unknown => "SPOOL-UNKNOWN",
        }
    }

    /// Whether submitting the same query again may succeed: true when the failure came from
    /// the service's circumstances rather than from the query.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Self::Interrupted
                | Self::EngineUnavailable
                | Self::Internal
                | Self::DiskFull
                | Self::EngineCrashed
        )
    }

    /// The code of a failure recorded without one, from its reason text.
    pub fn infer(reason: &str) -> Self {
        if reason == STOPPED_BY_USER {
            Self::Cancelled
        } else if reason.starts_with("query timed out") {
            Self::TimedOut
        } else if reason.starts_with("result has more than the limit") {
            Self::TooManyRows
        } else if reason.starts_with("result is larger than the limit") {
            Self::TooLarge
        } else if reason.starts_with("query was interrupted") {
            Self::Interrupted
        } else if reason.starts_with("internal error") {
            Self::Internal
        } else {
            Self::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_kylins_where_kylin_has_one() {
        assert_eq!(FailureCode::ProjectNotFound.as_str(), "KE-010001201");
        assert_eq!(FailureCode::TooManyRows.as_str(), "KE-010031201");
    }

    #[test]
    fn only_circumstances_are_retryable() {
        assert!(FailureCode::Interrupted.retryable());
        assert!(FailureCode::EngineUnavailable.retryable());
        assert!(!FailureCode::InvalidQuery.retryable());
        assert!(!FailureCode::Cancelled.retryable());
    }

    #[test]
    fn legacy_reasons_map_to_codes() {
        assert_eq!(
            FailureCode::infer("stopped by user"),
            FailureCode::Cancelled
        );
        assert_eq!(
            FailureCode::infer("query timed out after 5 s"),
            FailureCode::TimedOut
        );
        assert_eq!(FailureCode::infer("SQL error: x"), FailureCode::Unknown);
    }
}
