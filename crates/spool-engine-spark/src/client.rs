//! A small async Spark Connect client: what the engine needs and nothing more.
//!
//! Why not the official client crates: the high-level one blocks and collects results whole;
//! the core one ends a reattachable stream at the server's first clean end (a silent
//! truncation), never releases executions and retries a dead server for about ten minutes.
//! Here:
//! - one session per query (temp views are session-scoped, so one query's catalog never leaks
//!   into another's); the session is released when the query ends;
//! - an execution is reattachable: a stream that ends without `ResultComplete`, or breaks on
//!   a transient error, is resumed with `ReattachExecute` from the last response id, and every
//!   response is delivered exactly once; only `ResultComplete` ends a result;
//! - a finished execution is released (`ReleaseExecute`), a stopped one interrupted by its
//!   operation id;
//! - a server that cannot be reached fails within [`CONNECT_TIMEOUT`] times
//!   [`MAX_RETRIES`] as [`SparkError::Unavailable`].

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use crate::proto::spark::connect as pb;
use crate::proto::spark::connect::spark_connect_service_client::SparkConnectServiceClient;
use crate::proto::{ErrorInfo, RpcStatus};

/// How long opening a connection to the Connect server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Transient failures retried (with a short backoff) before a query fails as unavailable.
pub const MAX_RETRIES: u32 = 3;
/// The largest message the client accepts: Spark's Arrow batches are about 4 MiB by default
/// (`spark.connect.grpc.arrow.maxBatchSize`), past tonic's default limit of 4 MiB.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// Reattachments made by this process (a stream the server ended, or a transient break).
static REATTACHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times this process resumed an execution's stream (for logs and tests).
pub fn reattaches() -> u64 {
    REATTACHES.load(std::sync::atomic::Ordering::Relaxed)
}

/// What this client calls itself in requests (Spark logs it).
const CLIENT_TYPE: &str = concat!("spool/", env!("CARGO_PKG_VERSION"));

/// Why a Spark Connect call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SparkError {
    /// The server could not be reached, or went away and did not come back in time.
    #[error("{0}")]
    Unavailable(String),
    /// Spark refused the query (a missing column, a type error, a parse error).
    #[error("{0}")]
    Analysis(String),
    /// The query failed while running (a bad cast, a division by zero in ANSI mode).
    #[error("{0}")]
    Execution(String),
    /// The operation was interrupted (by us: a stop).
    #[error("the Spark operation was interrupted")]
    Interrupted,
}

/// Where the Connect server is: `sc://host:port` (port 15002 when left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Remote {
    /// Parses Spark's connection string. Parameters after `/;` (`user_id`, `token`, ...) are
    /// refused except `user_id`: a token needs TLS, which this client does not speak yet.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("sc://")
            .ok_or_else(|| format!("spark_remote {text:?} must look like sc://host:port"))?;
        let (authority, params) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        for param in params.split(';').filter(|p| !p.is_empty()) {
            let key = param.split_once('=').map_or(param, |(k, _)| k);
            if key != "user_id" {
                return Err(format!(
                    "spark_remote parameter {key:?} is not supported (TLS and tokens are not \
                     implemented; reach the Connect server over a trusted network)"
                ));
            }
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("spark_remote {text:?} has an invalid port {p:?}"))?,
            ),
            None => (authority, 15002),
        };
        if host.is_empty() {
            return Err(format!("spark_remote {text:?} names no host"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sc://{}:{}", self.host, self.port)
    }
}

/// A connection to one Connect server, shared by every query (cheap to clone). It connects
/// lazily and reconnects on its own after the server comes back.
#[derive(Debug, Clone)]
pub struct Client {
    remote: Remote,
    channel: Channel,
}

/// One query's session on the server.
#[derive(Debug, Clone)]
pub struct Session {
    /// The session id (a UUID, chosen by us).
    pub id: String,
    user: pb::UserContext,
}

/// What an execution streams back, in order.
#[derive(Debug)]
pub enum Event {
    /// Arrow IPC stream bytes of one batch (schema message and record batch).
    Batch(Bytes),
    /// The result is complete.
    Complete,
}

impl Client {
    /// A client for `remote`; nothing is sent until the first call.
    pub fn new(remote: Remote) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(format!("http://{}:{}", remote.host, remote.port))
            .map_err(|e| format!("spark_remote {remote}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(Self {
            remote,
            channel: endpoint.connect_lazy(),
        })
    }

    /// The server this client talks to.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    fn service(&self) -> SparkConnectServiceClient<Channel> {
        SparkConnectServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// A new session, named for the user the query runs for (Spark logs it).
    pub fn session(&self, user: &str) -> Session {
        Session {
            id: uuid::Uuid::new_v4().to_string(),
            user: pb::UserContext {
                user_id: user.to_owned(),
                user_name: user.to_owned(),
                extensions: Vec::new(),
            },
        }
    }

    /// Sets session configuration.
    pub async fn set_config(
        &self,
        session: &Session,
        pairs: &[(&str, &str)],
    ) -> Result<(), SparkError> {
        use pb::config_request::{Operation, Set, operation::OpType};
        let request = pb::ConfigRequest {
            session_id: session.id.clone(),
            client_observed_server_side_session_id: None,
            user_context: Some(session.user.clone()),
            operation: Some(Operation {
                op_type: Some(OpType::Set(Set {
                    pairs: pairs
                        .iter()
                        .map(|(k, v)| pb::KeyValue {
                            key: (*k).to_owned(),
                            value: Some((*v).to_owned()),
                        })
                        .collect(),
                    silent: None,
                })),
            }),
            client_type: Some(CLIENT_TYPE.to_owned()),
        };
        self.retrying(|| {
            let mut service = self.service();
            let request = request.clone();
            async move { service.config(request).await.map(|_| ()) }
        })
        .await
    }

    /// Runs a command (`CreateDataFrameViewCommand`, ...) to its end.
    pub async fn command(
        &self,
        session: &Session,
        command: pb::command::CommandType,
    ) -> Result<(), SparkError> {
        let plan = pb::Plan {
            op_type: Some(pb::plan::OpType::Command(pb::Command {
                command_type: Some(command),
            })),
        };
        let mut execution = self.execute(session, plan, None).await?;
        while let Some(event) = execution.next().await? {
            if matches!(event, Event::Complete) {
                break;
            }
        }
        execution.release().await;
        Ok(())
    }

    /// Starts a reattachable execution of `plan` as operation `operation_id` (a UUID; a new
    /// one when `None`).
    pub async fn execute(
        &self,
        session: &Session,
        plan: pb::Plan,
        operation_id: Option<String>,
    ) -> Result<Execution, SparkError> {
        let operation_id = operation_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let request = pb::ExecutePlanRequest {
            session_id: session.id.clone(),
            client_observed_server_side_session_id: None,
            user_context: Some(session.user.clone()),
            operation_id: Some(operation_id.clone()),
            plan: Some(plan),
            client_type: Some(CLIENT_TYPE.to_owned()),
            request_options: vec![pb::execute_plan_request::RequestOption {
                request_option: Some(
                    pb::execute_plan_request::request_option::RequestOption::ReattachOptions(
                        pb::ReattachOptions { reattachable: true },
                    ),
                ),
            }],
            tags: Vec::new(),
        };
        let stream = self
            .retrying(|| {
                let mut service = self.service();
                let request = request.clone();
                async move { service.execute_plan(request).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(Execution {
            client: self.clone(),
            session: session.clone(),
            operation_id,
            stream: Some(stream),
            last_response_id: None,
            complete: false,
            reattaches: 0,
        })
    }

    /// Interrupts operation `operation_id` of `session`; returns whether the server knew it.
    pub async fn interrupt(
        &self,
        session: &Session,
        operation_id: &str,
    ) -> Result<bool, SparkError> {
        use pb::interrupt_request::{Interrupt, InterruptType};
        let request = pb::InterruptRequest {
            session_id: session.id.clone(),
            client_observed_server_side_session_id: None,
            user_context: Some(session.user.clone()),
            client_type: Some(CLIENT_TYPE.to_owned()),
            interrupt_type: InterruptType::OperationId as i32,
            interrupt: Some(Interrupt::OperationId(operation_id.to_owned())),
        };
        let response = self
            .retrying(|| {
                let mut service = self.service();
                let request = request.clone();
                async move { service.interrupt(request).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(response.interrupted_ids.iter().any(|id| id == operation_id))
    }

    /// Ends `session` on the server, dropping its temp views and executions. Best effort.
    pub async fn release_session(&self, session: &Session) {
        let request = pb::ReleaseSessionRequest {
            session_id: session.id.clone(),
            user_context: Some(session.user.clone()),
            client_type: Some(CLIENT_TYPE.to_owned()),
            allow_reconnect: false,
        };
        if let Err(e) = self.service().release_session(request).await {
            tracing::debug!(session = %session.id, error = %e.message(), "releasing a Spark session failed");
        }
    }

    /// Runs `call` again on transient failures, at most [`MAX_RETRIES`] times.
    async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, SparkError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(status) if transient(&status) && attempt < MAX_RETRIES => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %status.message(), "Spark Connect call failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(status) => return Err(classify(&self.remote, &status)),
            }
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 * u64::from(attempt))
}

/// A running execution: its responses, resumed across stream ends until `ResultComplete`.
#[derive(Debug)]
pub struct Execution {
    client: Client,
    session: Session,
    operation_id: String,
    stream: Option<Streaming<pb::ExecutePlanResponse>>,
    last_response_id: Option<String>,
    complete: bool,
    reattaches: u32,
}

impl Execution {
    /// The operation id (for [`Client::interrupt`]).
    pub fn operation_id(&self) -> &str {
        &self.operation_id
    }

    /// The next batch or the end; `None` after [`Event::Complete`].
    pub async fn next(&mut self) -> Result<Option<Event>, SparkError> {
        use pb::execute_plan_response::ResponseType;
        loop {
            if self.complete {
                return Ok(None);
            }
            let message = match self.stream.as_mut() {
                Some(stream) => stream.message().await,
                None => Ok(None),
            };
            match message {
                Ok(Some(response)) => {
                    self.reattaches = 0;
                    self.last_response_id = Some(response.response_id);
                    match response.response_type {
                        Some(ResponseType::ArrowBatch(batch)) => {
                            return Ok(Some(Event::Batch(batch.data)));
                        }
                        Some(ResponseType::ResultComplete(_)) => {
                            self.complete = true;
                            return Ok(Some(Event::Complete));
                        }
                        // Schemas, metrics, progress and command results carry nothing the
                        // result needs (every Arrow batch holds its own schema).
                        _ => {}
                    }
                }
                // The server ended this stream without `ResultComplete` (its stream duration
                // or size cap): the result goes on in a new one.
                Ok(None) => self.reattach(None).await?,
                Err(status) if transient(&status) => self.reattach(Some(status)).await?,
                Err(status) => return Err(classify(&self.client.remote, &status)),
            }
        }
    }

    /// Resumes the execution after the last response received.
    async fn reattach(&mut self, cause: Option<Status>) -> Result<(), SparkError> {
        self.stream = None;
        if let Some(status) = &cause {
            self.reattaches += 1;
            if self.reattaches > MAX_RETRIES {
                return Err(classify(&self.client.remote, status));
            }
            tokio::time::sleep(backoff(self.reattaches)).await;
        }
        tracing::debug!(operation = %self.operation_id, "reattaching to a Spark execution");
        REATTACHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request = pb::ReattachExecuteRequest {
            session_id: self.session.id.clone(),
            client_observed_server_side_session_id: None,
            user_context: Some(self.session.user.clone()),
            operation_id: self.operation_id.clone(),
            client_type: Some(CLIENT_TYPE.to_owned()),
            last_response_id: self.last_response_id.clone(),
        };
        let stream = self
            .client
            .retrying(|| {
                let mut service = self.client.service();
                let request = request.clone();
                async move {
                    service
                        .reattach_execute(request)
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await?;
        self.stream = Some(stream);
        Ok(())
    }

    /// Tells the server it may drop this execution's buffered responses. Best effort.
    pub async fn release(self) {
        let request = pb::ReleaseExecuteRequest {
            session_id: self.session.id.clone(),
            client_observed_server_side_session_id: None,
            user_context: Some(self.session.user.clone()),
            operation_id: self.operation_id.clone(),
            client_type: Some(CLIENT_TYPE.to_owned()),
            release: Some(pb::release_execute_request::Release::ReleaseAll(
                pb::release_execute_request::ReleaseAll {},
            )),
        };
        if let Err(e) = self.client.service().release_execute(request).await {
            tracing::debug!(operation = %self.operation_id, error = %e.message(), "releasing a Spark execution failed");
        }
    }
}

/// Whether `status` may pass on its own (the server restarting, a connection cut).
fn transient(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable)
}

/// The error class Spark attached to `status` (`TABLE_OR_VIEW_NOT_FOUND`, ...), and the
/// exception's class name.
fn error_info(status: &Status) -> Option<ErrorInfo> {
    let details = RpcStatus::decode(status.details()).ok()?;
    details
        .details
        .iter()
        .find(|any| any.type_url.ends_with("google.rpc.ErrorInfo"))
        .and_then(|any| ErrorInfo::decode(any.value.as_slice()).ok())
}

/// Spark's message for a user: the server's text, bounded, without the JVM's stack.
fn message(status: &Status) -> String {
    const MAX: usize = 1_000;
    let text = status.message().trim();
    let head = text.split("\n\tat ").next().unwrap_or(text).trim();
    let mut out: String = head.chars().take(MAX).collect();
    if out.len() < head.len() {
        out.push_str(" ...");
    }
    out
}

/// Sorts a failed call into what it means for the query.
pub(crate) fn classify(remote: &Remote, status: &Status) -> SparkError {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded => SparkError::Unavailable(format!(
            "the Spark cluster at {remote} cannot be reached: {}",
            status.message()
        )),
        Code::Cancelled => SparkError::Interrupted,
        _ => {
            let info = error_info(status);
            let class = info
                .as_ref()
                .and_then(|i| i.metadata.get("errorClass").cloned())
                .unwrap_or_default();
            let reason = info.as_ref().map(|i| i.reason.as_str()).unwrap_or_default();
            let text = message(status);
            if class == "OPERATION_CANCELED" || text.contains("OPERATION_CANCELED") {
                SparkError::Interrupted
            } else if reason.ends_with("AnalysisException")
                || reason.ends_with("ParseException")
                || status.code() == Code::InvalidArgument
            {
                SparkError::Analysis(text)
            } else {
                SparkError::Execution(text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_parse_like_sparks_connection_strings() {
        assert_eq!(
            Remote::parse("sc://127.0.0.1:15010").expect("ok"),
            Remote {
                host: "127.0.0.1".into(),
                port: 15010
            }
        );
        assert_eq!(Remote::parse("sc://spark-host").expect("ok").port, 15002);
        assert_eq!(
            Remote::parse("sc://h:1/;user_id=alice").expect("ok").host,
            "h"
        );
        assert!(Remote::parse("http://h:1").is_err());
        assert!(Remote::parse("sc://h:port").is_err());
        assert!(Remote::parse("sc://:15002").is_err());
        let tls = Remote::parse("sc://h:1/;use_ssl=true;token=x").expect_err("tls");
        assert!(tls.contains("\"use_ssl\" is not supported"), "{tls}");
    }

    #[test]
    fn a_refused_connection_is_unavailable_and_an_analysis_error_is_the_users() {
        let remote = Remote::parse("sc://h:1").expect("ok");
        let e = classify(&remote, &Status::unavailable("connection refused"));
        assert!(
            matches!(e, SparkError::Unavailable(ref m) if m.contains("sc://h:1")),
            "{e:?}"
        );
        let e = classify(
            &remote,
            &Status::internal("[DIVIDE_BY_ZERO] Division by zero.\n\tat org.apache.Foo"),
        );
        assert!(
            matches!(e, SparkError::Execution(ref m) if m == "[DIVIDE_BY_ZERO] Division by zero."),
            "{e:?}"
        );
    }
}
