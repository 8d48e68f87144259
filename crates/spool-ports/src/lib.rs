//! The ports of Spool's hexagon: one trait per I/O edge (jobs, results, users, the engine) and
//! one per thing a test must control (time, ids).
//!
//! Invariant: no adapter technology appears in a signature here (no sled, Polars, axum or local
//! paths), so a PostgreSQL job store, an S3 result store or a remote engine can be plugged in.
//! Each trait's docs are its contract; `spool-core` relies on nothing more.

mod cancel;
mod clock;
mod engine;
mod events;
mod jobs;
mod results;
#[cfg(feature = "testing")]
pub mod testing;
mod users;
mod webhooks;

pub use cancel::{CancelReason, CancelToken};
pub use clock::{Clock, IdGenerator, RandomIds, SystemClock};
pub use engine::{EngineError, Execution, ProjectCatalog, QueryEngine, TableInfo, Transcoder};
pub use events::EventHub;
pub use jobs::{JobEvent, JobFilter, JobPosition, JobStore, JobStoreError, Renewal, Stopped};
pub use results::{ResultSink, ResultStore, ResultStoreError, StoredResult};
pub use users::{UserStore, UserStoreError};
pub use webhooks::WebhookSender;

#[cfg(feature = "mock")]
pub use engine::{MockProjectCatalog, MockQueryEngine, MockTranscoder};
#[cfg(feature = "mock")]
pub use jobs::MockJobStore;
#[cfg(feature = "mock")]
pub use results::MockResultStore;
