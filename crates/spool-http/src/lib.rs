//! Spool's HTTP shell: Apache Kylin's async query REST API on axum.
//!
//! [`router`] builds the whole service from a [`spool_core::Spool`] and an [`Authenticator`].
//! Every route but `/healthz` requires HTTP Basic credentials.
//!
//! Invariants:
//! - Every error a client sees is the Kylin envelope `{"code":"999","data":null,"msg":...}`,
//!   produced in one place ([`ApiError`]'s `IntoResponse`); internal errors are answered with a
//!   fixed message and a reference id, their details go only to the log.
//! - This crate depends on the core and the ports, never on an adapter.

mod auth;
mod callbacks;
mod console;
mod download;
mod error;
mod kylin;
mod metrics;
mod openapi;
mod proxies;
mod routes;

pub use auth::{Authenticator, hash_password, verify_password};
pub use callbacks::{deliver as deliver_callbacks, hmac_sha256, signature};
pub use error::ApiError;
pub use kylin::SyncQueryLimits;
pub use metrics::{HttpMetrics, metrics_router};
pub use proxies::TrustedProxies;
pub use routes::{AppState, CallbackPolicy, HttpLimits, TimeZone, router};
pub use spool_domain::UserRecord;
