//! Spool's application service, embeddable in any Rust program.
//!
//! [`Spool`] takes the ports (job store, result store, query engine, clock, ids) as trait
//! objects and offers the use cases: submit, status, result, clean-up. [`Spool::start`] runs the
//! bounded worker pool that claims queued jobs and executes them.
//!
//! Invariants:
//! - A job is durable in the job store before its id is returned to the client.
//! - A result is committed before its job is marked successful; a job deleted while it ran never
//!   leaves a result behind.
//! - A query that fails, panics or is cancelled never takes a worker down with it.
//!
//! # Embedding
//!
//! ```no_run
//! # async fn demo(ports: spool_core::Ports) -> Result<(), spool_core::ServiceError> {
//! use spool_core::{Spool, SpoolConfig};
//! use spool_domain::{Principal, QueryRequest};
//!
//! let spool = Spool::new(ports, SpoolConfig::with_workers(2));
//! let workers = spool.start();
//! let me = Principal::admin("ADMIN");
//! let request = QueryRequest::new("select 1".into(), Some("ssb"), None, None)?;
//! let id = spool.submit(&me, request).await?;
//! println!("{:?}", spool.status(&me, id).await?);
//! workers.shutdown().await;
//! # Ok(()) }
//! ```

mod callbacks;
mod catalog;
mod error;
mod lifecycle;
mod listing;
mod manage;
mod metrics;
mod service;
mod worker;

pub use callbacks::{CALLBACK_WINDOW, ClaimedCallback};
pub use error::ServiceError;
pub use lifecycle::{MAX_WAIT, StatusDetail};
pub use listing::{DEFAULT_PAGE, ListRequest, ListedQuery, MAX_PAGE, QueryPage};
pub use manage::{DownloadInfo, Sweep};
pub use metrics::{DURATION_BUCKETS, Histogram, HistogramReading, MetricsSnapshot, Outcome};
pub use service::{Ports, QueryStatus, Spool, SpoolConfig, SubmitOptions, Submitted};
pub use worker::Workers;
