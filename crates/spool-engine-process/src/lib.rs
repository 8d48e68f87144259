//! Runs queries in worker processes, each under a memory budget.
//!
//! The server wraps its in-process engine in a [`ProcessEngine`]: every query's execution goes
//! to a worker process (a re-run of the server's own binary that calls [`serve`] with the same
//! engine), which streams the result back over a pipe ([`protocol`]). A query that allocates
//! past its budget, or that crashes its engine, ends that process only: the query fails with a
//! reason, the server and the queries beside it go on, and the next query gets a fresh
//! process. Stopping a query kills its process, so its memory is returned at once. A worker
//! confines itself to its first query's project ([`confine`]) and serves only that project.

pub mod confine;
mod engine;
pub mod protocol;
mod size;
mod worker;

pub use confine::{Confinement, own_scratch};
pub use engine::{ProcessEngine, WorkerCommand};
pub use size::{parse_size, show_size};
pub use worker::{WorkerLimits, serve};
