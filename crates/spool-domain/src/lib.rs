//! Spool's domain model: what a query is, who asked for it, and which states it moves through.
//!
//! Invariant: this crate does no I/O and knows no async runtime. Everything here is plain data
//! and pure functions, so it is tested without fixtures and shared by every other crate.

mod format;
mod id;
mod job;
mod lifecycle;
mod output;
mod request;
mod time;
mod user;

pub use format::{DATA_FORMAT, FormatPeek, JOB_FORMAT, NewerFormat, USER_FORMAT, check_format};
pub use id::{InvalidQueryId, QueryId, ResultKey};
pub use job::{
    Callback, CallbackState, IDEMPOTENCY_WINDOW_MILLIS, Idempotency, Job, JobState, Lease,
    LeaseToken, PublicStatus, ResultColumn, StateKind, StopEffect, Tombstone, TransitionError,
};
pub use lifecycle::{FailureCode, Lifecycle, Progress, STOPPED_BY_USER};
pub use output::{Compression, InvalidOutput, OutputFormat, OutputSpec, TextEncoding};
pub use request::{InvalidRequest, ProjectName, QueryRequest};
pub use time::Timestamp;
pub use user::{Principal, Role, UserRecord};
