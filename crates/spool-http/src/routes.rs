//! The routes of Kylin's async query API, their request parsing and their response shapes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};
use spool_core::{QueryStatus, Spool};
use spool_domain::{
    OutputFormat, OutputSpec, Principal, ProjectName, PublicStatus, QueryId, QueryRequest,
    TextEncoding, Timestamp,
};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use tracing::Instrument;

use crate::download;
use crate::error::envelope;
use crate::{ApiError, Authenticator};

/// Request-size limits of the HTTP layer.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// The largest request body accepted, in bytes (the SQL text travels in it).
    pub max_body_bytes: usize,
}

impl HttpLimits {
    /// The limits Spool ships with: bodies up to 1 MiB.
    pub fn standard() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The application service.
    pub spool: Spool,
    /// Checks credentials.
    pub auth: Arc<Authenticator>,
    /// Request limits.
    pub limits: HttpLimits,
    /// The zone wall-clock times in requests are read in (`older_than`), as Kylin does.
    pub time_zone: TimeZone,
    /// Which webhook URLs submissions may give.
    pub callbacks: CallbackPolicy,
    /// Peers whose `X-Forwarded-For` names the client (`trusted_proxies`).
    pub proxies: crate::TrustedProxies,
    /// The row cap and the wait of Kylin's synchronous query call.
    pub sync: crate::SyncQueryLimits,
    /// What the HTTP layer counts for `/metrics`.
    pub http_metrics: Arc<crate::HttpMetrics>,
    /// Whether `GET /` serves the web console (`console`).
    pub console: bool,
}

/// Where completion webhooks may go: only to the hosts listed (`callback_allow`), so the
/// service is no relay into the network it runs in. Empty (the default): no webhooks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackPolicy {
    /// Allowed hosts, as `host` (any port) or `host:port`, compared without regard to case.
    pub allow: Vec<String>,
}

impl CallbackPolicy {
    /// Checks a submitted `callback_url`: http or https, to an allowed host.
    fn check(&self, url: &str) -> Result<String, ApiError> {
        let refuse = |why: String| ApiError::BadRequest(format!("field 'callback_url': {why}"));
        if self.allow.is_empty() {
            return Err(refuse(
                "webhooks are off on this server: its callback_allow lists no hosts".into(),
            ));
        }
        let parsed = url::Url::parse(url).map_err(|e| refuse(format!("not a URL ({e})")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(refuse(format!(
                "the scheme must be http or https, got {}",
                parsed.scheme()
            )));
        }
        let host = parsed.host_str().unwrap_or("").to_ascii_lowercase();
        let port = parsed.port_or_known_default().unwrap_or(0);
        let allowed = self.allow.iter().any(|entry| {
            let entry = entry.to_ascii_lowercase();
            entry == host || entry == format!("{host}:{port}")
        });
        if !allowed {
            return Err(refuse(format!(
                "host {host}:{port} is not in this server's callback_allow"
            )));
        }
        Ok(parsed.to_string())
    }
}

/// A time zone for reading wall-clock times: the machine's, or one by IANA name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeZone {
    /// The machine's zone (`TZ`, else `/etc/localtime`).
    #[default]
    Local,
    /// A zone by name, such as `Asia/Shanghai` or `UTC`.
    Named(chrono_tz::Tz),
}

impl TimeZone {
    /// Reads an IANA zone name; the error says what is accepted.
    pub fn parse(name: &str) -> Result<Self, String> {
        name.trim()
            .parse::<chrono_tz::Tz>()
            .map(Self::Named)
            .map_err(|_| {
                format!(
                    "time_zone {name:?} is not a time zone name; use an IANA name such as \
                 \"UTC\", \"Asia/Shanghai\" or \"America/New_York\", or leave it out for the \
                 machine's zone"
                )
            })
    }

    /// The instant a wall-clock time names in this zone: the earlier of two in a repeated
    /// hour, `None` in a skipped one.
    fn instant(self, local: chrono::NaiveDateTime) -> Option<i64> {
        use chrono::TimeZone as _;
        match self {
            Self::Local => chrono::Local
                .from_local_datetime(&local)
                .earliest()
                .map(|t| t.timestamp_millis()),
            Self::Named(tz) => tz
                .from_local_datetime(&local)
                .earliest()
                .map(|t| t.timestamp_millis()),
        }
    }

    fn describe(self) -> String {
        match self {
            Self::Local => "the server's time zone".to_owned(),
            Self::Named(tz) => format!("time zone {}", tz.name()),
        }
    }
}

/// Builds the service: Kylin's async query API under `/kylin/api`, plus `/healthz`.
pub fn router(state: AppState) -> Router {
    let max_body = state.limits.max_body_bytes;
    let api = Router::new()
        .route(
            "/kylin/api/async_query",
            post(submit).delete(delete_many).get(list),
        )
        .route("/kylin/api/async_query/{id}", delete(delete_one))
        .route("/kylin/api/async_query/stop/{id}", delete(stop))
        .route("/kylin/api/async_query/{id}/status", get(status))
        .route("/kylin/api/async_query/{id}/events", get(events))
        .route("/kylin/api/async_query/{id}/file_status", get(file_status))
        // Kylin 4's spelling.
        .route("/kylin/api/async_query/{id}/filestatus", get(file_status))
        .route("/kylin/api/async_query/{id}/metadata", get(metadata))
        .route("/kylin/api/async_query/{id}/result", get(download))
        .route("/kylin/api/async_query/{id}/result_download", get(download))
        .route("/kylin/api/async_query/{id}/result_path", get(result_path))
        .route("/kylin/api/query", post(crate::kylin::query))
        .route(
            "/kylin/api/query/tables_and_columns",
            get(crate::kylin::query_tables_and_columns),
        )
        .route(
            "/kylin/api/tables_and_columns",
            get(crate::kylin::tables_and_columns),
        )
        .route("/kylin/api/projects", get(crate::kylin::projects))
        .route("/metrics", get(crate::metrics::metrics))
        .route(
            "/kylin/api/user/authentication",
            get(crate::kylin::authentication).post(crate::kylin::authentication),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(max_body));
    let console = if state.console {
        crate::console::routes()
    } else {
        Router::new()
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/kylin/api/openapi.json", get(crate::openapi::openapi_json))
        .merge(console)
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .with_state(state)
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(middleware::from_fn(request_id))
        .layer(CatchPanicLayer::custom(|_| {
            envelope(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SPOOL-INTERNAL",
                "internal error",
            )
        }))
}

/// The header a request's id travels in, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// A request's id: the client's `X-Request-Id` when it is a plain token (letters, digits,
/// `-`, `_`, `.`, at most 128), else a fresh UUID. Logged with everything the request does
/// and sent back in the response's `X-Request-Id`, so a user's report and the server's log
/// meet.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = header::HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// The span every request's logs carry: method, path and request id.
fn request_span(request: &Request) -> tracing::Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .map_or("", |r| r.0.as_str());
    tracing::info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %id,
    )
}

async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| state.proxies.client(c.0.ip(), request.headers()));
    // A page's script (the console) says so, and gets no `WWW-Authenticate` challenge on a
    // 401: browsers answer a challenge with their own login dialog, which would hold its call.
    let from_script = request
        .headers()
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"));
    let principal = match state
        .auth
        .authenticate(request.headers().get(header::AUTHORIZATION), client)
        .await
    {
        Ok(principal) => principal,
        Err(e) => {
            let mut response = e.into_response();
            if from_script {
                response.headers_mut().remove(header::WWW_AUTHENTICATE);
            }
            return Ok(response);
        }
    };
    let span = tracing::info_span!("request", user = %principal.name);
    request.extensions_mut().insert(principal);
    Ok(next.run(request).instrument(span).await)
}

#[utoipa::path(
    get,
    path = "/healthz",
    security(()),
    responses((status = 200, description = "The server is up", body = crate::openapi::Health))
)]
pub(crate) async fn healthz() -> Json<Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Kylin's success envelope.
#[derive(Serialize)]
pub(crate) struct Envelope<T> {
    code: &'static str,
    data: T,
    msg: &'static str,
}

pub(crate) fn ok<T: Serialize>(data: T) -> Json<Envelope<T>> {
    Json(Envelope {
        code: "000",
        data,
        msg: "",
    })
}

/// The response shapes a client asked for with `Accept`: Kylin 4's (`queryID`, the seed's) or
/// Kylin 5's (`query_id`). Anything but a Kylin v4 media type gets the seed's shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    V2,
    V4,
}

impl Shape {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let v4 = headers.get_all(header::ACCEPT).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.to_ascii_lowercase()
                    .contains("application/vnd.apache.kylin-v4")
            })
        });
        if v4 { Self::V4 } else { Self::V2 }
    }

    /// The status object of `s` in this shape: Kylin's fields, then Spool's (`state`,
    /// progress, times in milliseconds since the epoch, attempt, and for a failure its
    /// `error_code` and `retryable`).
    pub(crate) fn status_of(self, s: &QueryStatus) -> Value {
        let mut data = self.status(&s.id.to_string(), s.status, &s.info);
        if let (Value::Object(map), Some(at)) = (&mut data, s.expired_at) {
            map.insert("state".into(), Value::from("EXPIRED"));
            map.insert("expired_at".into(), Value::from(at.as_millis()));
        }
        let (Value::Object(map), Some(d)) = (&mut data, &s.detail) else {
            return data;
        };
        let millis = |t: Option<Timestamp>| t.map_or(Value::Null, |t| Value::from(t.as_millis()));
        map.insert(
            "state".into(),
            serde_json::to_value(d.state).unwrap_or(Value::Null),
        );
        if let Some(position) = d.queue_position {
            map.insert("queue_position".into(), Value::from(position));
        }
        map.insert("rows".into(), Value::from(d.progress.rows));
        map.insert("bytes".into(), Value::from(d.progress.bytes));
        map.insert(
            "submitted_at".into(),
            Value::from(d.submitted_at.as_millis()),
        );
        map.insert("started_at".into(), millis(d.started_at));
        map.insert("finished_at".into(), millis(d.finished_at));
        map.insert("elapsed_ms".into(), Value::from(d.elapsed_ms));
        map.insert("expires_at".into(), millis(d.expires_at));
        map.insert("attempt".into(), Value::from(d.attempt));
        if let Some(n) = d.uncompressed_bytes {
            map.insert("uncompressed_bytes".into(), Value::from(n));
        }
        if let Some(earlier) = d.reused_from {
            map.insert("cache_hit".into(), Value::Bool(true));
            map.insert("reused_from".into(), Value::from(earlier.to_string()));
        }
        if let Some(sha256) = &d.sha256 {
            map.insert("sha256".into(), Value::from(sha256.as_str()));
        }
        if let Some(failure) = d.failure {
            map.insert("error_code".into(), Value::from(failure.as_str()));
            map.insert("retryable".into(), Value::from(failure.retryable()));
        }
        data
    }

    /// The status object of a query in this shape.
    fn status(self, id: &str, status: PublicStatus, info: &str) -> Value {
        let key = match self {
            Self::V2 => "queryID",
            Self::V4 => "query_id",
        };
        let mut data = Map::new();
        data.insert(key.to_owned(), Value::String(id.to_owned()));
        data.insert(
            "status".to_owned(),
            serde_json::to_value(status).unwrap_or(Value::Null),
        );
        data.insert("info".to_owned(), Value::String(info.to_owned()));
        Value::Object(data)
    }
}

/// Reads an optional count (`offset`, `limit`): a whole number, or one written as a string
/// (Kylin's JSON reader accepts both); zero or less means none, as in Kylin.
pub(crate) fn count(body: &Map<String, Value>, field: &str) -> Result<Option<u64>, ApiError> {
    let wrong = |got: &str| {
        ApiError::BadRequest(format!("field '{field}' must be a whole number, got {got}"))
    };
    let n: i64 = match body.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(n), _) => n,
            (None, Some(_)) => i64::MAX,
            (None, None) => return Err(wrong(&n.to_string())),
        },
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| wrong(&format!("'{}'", s.chars().take(40).collect::<String>())))?,
        Some(other) => return Err(wrong(type_name(other))),
    };
    Ok(u64::try_from(n).ok().filter(|&n| n > 0))
}

/// Reads `wait_timeout`: whole seconds from 0 to 50 (a number or a numeric string).
fn wait_timeout(body: &Map<String, Value>) -> Result<Duration, ApiError> {
    let text = match body.get("wait_timeout") {
        None | Some(Value::Null) => return Ok(Duration::ZERO),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "field 'wait_timeout' must be a whole number of seconds from 0 to 50, got {}",
                type_name(other)
            )));
        }
    };
    seconds_param("wait_timeout", &text, MAX_SUBMIT_WAIT)
}

/// The longest `wait_timeout` a submission may ask for.
const MAX_SUBMIT_WAIT: Duration = Duration::from_secs(50);

/// Reads an optional string field.
pub(crate) fn string<'a>(
    body: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(ApiError::BadRequest(format!(
            "field '{field}' must be a string, got {}",
            type_name(other)
        ))),
    }
}

/// Reads an optional boolean field (`true`/`false`, or those words as strings).
pub(crate) fn boolean(body: &Map<String, Value>, field: &str) -> Result<Option<bool>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(other) => Err(ApiError::BadRequest(format!(
            "field '{field}' must be true or false, got {}",
            type_name(other)
        ))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::BadRequest(
            "request body must be a JSON object".to_owned(),
        )),
    }
}

pub(crate) fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

/// Parses the submit body: `sql` (required), `project`, `offset`, `limit`, and Kylin 5's
/// `format`, `separator`, `encode`, `include_header`, `file_name`; `acceptPartial` and unknown
/// fields are ignored.
#[cfg(test)]
fn parse_submit(body: &[u8]) -> Result<(QueryRequest, Duration), ApiError> {
    parse_submit_call(body).map(|c| (c.request, c.wait))
}

/// A submission as the call gives it: the request and what is about the call, not the query.
struct SubmitCall {
    request: QueryRequest,
    /// `wait_timeout`.
    wait: Duration,
    /// `request_id`, Spool's idempotency key field (the `Idempotency-Key` header's twin).
    request_id: Option<String>,
    /// `reuse_max_age`: how old an identical query's result may be to answer this one.
    reuse_max_age: Option<Duration>,
    /// `callback_url`: where to POST the final status.
    callback_url: Option<String>,
}

/// The oldest result `reuse_max_age` may ask for: a year.
const MAX_REUSE_AGE: Duration = Duration::from_secs(365 * 24 * 3600);

/// The longest idempotency key accepted.
const MAX_KEY_LEN: usize = 255;

/// Checks an idempotency key: 1 to 255 visible ASCII characters.
fn idempotency_key(key: &str, from: &str) -> Result<String, ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::BadRequest(format!(
            "{from} must be 1 to {MAX_KEY_LEN} visible ASCII characters (a UUID is a good key)"
        )));
    }
    Ok(key.to_owned())
}

fn parse_submit_call(body: &[u8]) -> Result<SubmitCall, ApiError> {
    let body = json_object(body).map_err(|e| match e {
        ApiError::BadRequest(m) if m.ends_with("JSON object") => ApiError::BadRequest(
            "request body must be a JSON object with at least the field 'sql'".to_owned(),
        ),
        other => other,
    })?;
    let sql = string(&body, "sql")?
        .ok_or_else(|| ApiError::BadRequest("field 'sql' is required".to_owned()))?
        .to_owned();
    let project = string(&body, "project")?;
    let offset = count(&body, "offset")?;
    let limit = count(&body, "limit")?;
    let wait = wait_timeout(&body)?;
    let mut output = OutputSpec::default();
    if let Some(format) = string(&body, "format")? {
        output.format = OutputFormat::parse(format).map_err(bad)?;
    }
    // An empty separator is Kylin's default, a comma.
    if let Some(separator) = string(&body, "separator")?.filter(|s| !s.is_empty()) {
        output = output.with_separator(separator).map_err(bad)?;
    }
    if let Some(encode) = string(&body, "encode")? {
        output.encoding = TextEncoding::parse(encode).map_err(bad)?;
    }
    if let Some(header) = boolean(&body, "include_header")? {
        output.include_header = header;
    }
    if let Some(name) = string(&body, "compression")? {
        output.compression = spool_domain::Compression::parse(name).map_err(bad)?;
    }
    if let Some(name) = string(&body, "file_name")? {
        output = output.with_file_name(name);
    }
    let request_id = string(&body, "request_id")?
        .map(|k| idempotency_key(k, "field 'request_id'"))
        .transpose()?;
    let request = QueryRequest::new(sql, project, offset, limit)
        .map_err(bad)?
        .with_output(output);
    let reuse_max_age = match count(&body, "reuse_max_age") {
        Ok(None) => None,
        Ok(Some(secs)) if secs <= MAX_REUSE_AGE.as_secs() => Some(Duration::from_secs(secs)),
        _ => {
            return Err(ApiError::BadRequest(format!(
                "field 'reuse_max_age' must be a whole number of seconds up to {}",
                MAX_REUSE_AGE.as_secs()
            )));
        }
    };
    let callback_url = string(&body, "callback_url")?.map(str::to_owned);
    Ok(SubmitCall {
        request,
        wait,
        request_id,
        reuse_max_age,
        callback_url,
    })
}

#[utoipa::path(
    post,
    path = "/kylin/api/async_query",
    request_body = crate::openapi::SubmitBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried submission return the first one's id")),
    responses(
        (status = 200, description = "Submitted (or replayed): the query's status", body = crate::openapi::Envelope<crate::openapi::QueryStatus>),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 403, description = "The caller may not do this", body = crate::openapi::ErrorEnvelope),
        (status = 409, description = "Not in a state that allows this", body = crate::openapi::ErrorEnvelope),
        (status = 413, description = "The body is too large", body = crate::openapi::ErrorEnvelope),
        (status = 429, description = "Too many failed logins, or too many queries in flight", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope),
        (status = 503, description = "The job store cannot store the query now (SPOOL-DISK-FULL: its disk is full; SPOOL-STORE-UNAVAILABLE); nothing was stored; Retry-After says when to try again", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn submit(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body.map_err(|e| match e {
        axum::extract::rejection::BytesRejection::FailedToBufferBody(_)
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
        {
            ApiError::PayloadTooLarge(state.limits.max_body_bytes)
        }
        other => ApiError::BadRequest(format!("request body could not be read: {other}")),
    })?;
    let call = parse_submit_call(&body)?;
    let header_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(idempotency_key(
            v.to_str().unwrap_or("\u{0}"),
            "the Idempotency-Key header",
        )?),
    };
    let key = match (header_key, call.request_id) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::BadRequest(
                "the Idempotency-Key header and the field 'request_id' differ; send one".into(),
            ));
        }
        (a, b) => a.or(b),
    };
    let callback_url = call
        .callback_url
        .as_deref()
        .map(|url| state.callbacks.check(url))
        .transpose()?;
    let options = spool_core::SubmitOptions {
        idempotency_key: key,
        reuse_max_age: call.reuse_max_age,
        callback_url,
    };
    let submitted = state.spool.submit_with(&who, call.request, options).await?;
    let id = submitted.id;
    let shape = Shape::of(&headers);
    let mut data = if call.wait.is_zero() && !submitted.replayed && !submitted.cache_hit {
        shape.status(&id.to_string(), PublicStatus::Running, "still running")
    } else if call.wait.is_zero() {
        // A repeat answers with the first submission's status as it is now.
        shape.status_of(&state.spool.status(&who, id).await?)
    } else {
        let status = state
            .spool
            .wait_status(&who, id, PublicStatus::Running, call.wait)
            .await?;
        shape.status_of(&status)
    };
    if call.reuse_max_age.is_some()
        && let Value::Object(map) = &mut data
    {
        map.insert("cache_hit".into(), Value::Bool(submitted.cache_hit));
    }
    let mut response = ok(data).into_response();
    if submitted.replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// The `{id}` of a path, as text; a path that is not valid UTF-8 gets the error envelope
/// (axum's own rejection would be plain text).
pub(crate) struct IdPath(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Self(id)),
            Err(e) if e.body_text().contains("UTF-8") => Err(ApiError::BadRequest(
                "the path is not valid UTF-8 (a query id is ASCII)".to_owned(),
            )),
            Err(_) => Err(ApiError::NotFound("query not found".to_owned())),
        }
    }
}

/// The longest query id accepted in a path; Spool's ids have 36 characters.
const MAX_ID_LEN: usize = 64;

fn check_id_length(id: &str) -> Result<(), ApiError> {
    if id.len() > MAX_ID_LEN {
        return Err(ApiError::BadRequest(format!(
            "query id is longer than {MAX_ID_LEN} characters"
        )));
    }
    Ok(())
}

/// Parses a query id from a path; an id Spool could not have issued is simply not found.
fn query_id(id: &str) -> Result<QueryId, ApiError> {
    check_id_length(id)?;
    id.parse()
        .map_err(|_| ApiError::NotFound("query not found".to_owned()))
}

/// The parameters of a call that Kylin lets come either in the query string or as fields of a
/// JSON body (`project`, `older_than`); the query string wins. The body is parsed once.
pub(crate) struct CallParams {
    query: std::collections::HashMap<String, String>,
    body: Map<String, Value>,
}

impl CallParams {
    fn get(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.query.get(name) {
            Some(v) => Ok(Some(v.clone())),
            None => Ok(string(&self.body, name)?.map(str::to_owned)),
        }
    }

    /// The `project`; when given on a call about one query, it must be that query's project.
    fn project(&self) -> Result<Option<ProjectName>, ApiError> {
        self.get("project")?
            .map(|p| ProjectName::parse(&p).map_err(bad))
            .transpose()
    }
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for CallParams {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        use axum::extract::FromRequestParts;
        let (mut parts, body) = request.into_parts();
        let Query(query) = Query::from_request_parts(&mut parts, state)
            .await
            .map_err(bad)?;
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(bad)?;
        let body = if body.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            json_object(&body)?
        };
        Ok(Self { query, body })
    }
}

/// The query string of the status call: `wait` (seconds, up to 60) long-polls.
#[derive(serde::Deserialize)]
pub(crate) struct StatusParams {
    wait: Option<String>,
}

#[utoipa::path(
    get,
    path = "/kylin/api/async_query/{id}/status",
    params(("id" = String, Path, description = "The query id"), ("wait" = Option<u32>, Query, description = "Seconds (up to 60) to wait for the status to change")),
    responses(
        (status = 200, description = "The status; MISSING for an unknown id", body = crate::openapi::Envelope<crate::openapi::QueryStatus>),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn status(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    IdPath(id): IdPath,
    params: Result<Query<StatusParams>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    check_id_length(&id)?;
    let Query(params) = params.map_err(bad)?;
    let wait = params
        .wait
        .as_deref()
        .map(|w| seconds_param("wait", w, spool_core::MAX_WAIT))
        .transpose()?
        .unwrap_or_default();
    let shape = Shape::of(&headers);
    let data = match id.parse::<QueryId>() {
        Ok(id) => {
            let mut s = state.spool.status(&who, id).await?;
            if !wait.is_zero() {
                s = state.spool.wait_status(&who, id, s.status, wait).await?;
            }
            shape.status_of(&s)
        }
        Err(_) => shape.status(
            &id.chars().take(64).collect::<String>(),
            PublicStatus::Missing,
            "query not found",
        ),
    };
    Ok(ok(data))
}

/// The query string of the listing: `project`, `state`, `limit`, `before`.
#[derive(serde::Deserialize)]
pub(crate) struct ListParams {
    project: Option<String>,
    state: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

/// Reads a listing's `state`: the `state` words of a status (`QUEUED`, `RUNNING`, `SUCCEEDED`,
/// `FAILED`) or Kylin's `SUCCESSFUL`, in any case. `FAILED` includes stopped queries.
fn state_param(value: &str) -> Result<spool_domain::StateKind, ApiError> {
    use spool_domain::StateKind;
    match value.trim().to_ascii_lowercase().as_str() {
        "successful" => Ok(StateKind::Succeeded),
        name => StateKind::from_name(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "'state' must be QUEUED, RUNNING, SUCCEEDED (or SUCCESSFUL) or FAILED, got '{}'",
                value.chars().take(40).collect::<String>()
            ))
        }),
    }
}

/// `GET /kylin/api/async_query`: the caller's queries (an admin's: everyone's), newest
/// first, `limit` (1 to 1000, default 50) at a time; `before` takes the previous page's
/// `next_before`.
#[utoipa::path(
    get,
    path = "/kylin/api/async_query",
    params(
        ("project" = Option<String>, Query, description = "Only this project's queries"),
        ("state" = Option<String>, Query, description = "QUEUED, RUNNING, SUCCEEDED (or SUCCESSFUL) or FAILED"),
        ("limit" = Option<u32>, Query, description = "1 to 1000 (default 50)"),
        ("before" = Option<String>, Query, description = "The previous page's next_before")
    ),
    responses(
        (status = 200, description = "A page of the caller's queries, newest first", body = crate::openapi::Envelope<crate::openapi::QueryPage>),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 403, description = "The caller may not do this", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(params) = params.map_err(bad)?;
    let mut request = spool_core::ListRequest::default();
    if let Some(project) = params.project.as_deref().filter(|p| !p.is_empty()) {
        request.project = Some(ProjectName::parse(project).map_err(bad)?);
    }
    if let Some(value) = params.state.as_deref().filter(|s| !s.is_empty()) {
        request.state = Some(state_param(value)?);
    }
    if let Some(limit) = params.limit.as_deref() {
        request.limit = match limit.trim().parse::<usize>() {
            Ok(n) if (1..=spool_core::MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "'limit' must be a whole number from 1 to {}, got '{}'",
                    spool_core::MAX_PAGE,
                    limit.chars().take(40).collect::<String>()
                )));
            }
        };
    }
    if let Some(before) = params.before.as_deref().filter(|b| !b.is_empty()) {
        let cursor = before.parse::<QueryId>().map_err(|_| {
            ApiError::BadRequest(
                "'before' must be the next_before of an earlier page (a query id)".to_owned(),
            )
        })?;
        request.before = Some(cursor);
    }
    let page = state
        .spool
        .list_queries(&who, &request)
        .await
        .map_err(|e| match e {
            spool_core::ServiceError::NotFound(id) => ApiError::BadRequest(format!(
                "'before' names query {id}, which is not one of your queries"
            )),
            other => other.into(),
        })?;
    let shape = Shape::of(&headers);
    let queries: Vec<Value> = page
        .queries
        .iter()
        .map(|q| {
            let mut item = shape.status_of(&q.status);
            if let Value::Object(map) = &mut item {
                map.insert(
                    "project".into(),
                    Value::from(q.job.request.project.as_str()),
                );
                map.insert("owner".into(), Value::from(q.job.owner.as_str()));
                map.insert("sql".into(), Value::from(q.job.request.sql.as_str()));
            }
            item
        })
        .collect();
    Ok(ok(serde_json::json!({
        "queries": queries,
        "next_before": page.next_before.map(|id| id.to_string()),
    })))
}

/// Reads a whole number of seconds from 0 to `max`.
fn seconds_param(name: &str, value: &str, max: Duration) -> Result<Duration, ApiError> {
    let max_secs = max.as_secs();
    match value.trim().parse::<u64>() {
        Ok(n) if n <= max_secs => Ok(Duration::from_secs(n)),
        _ => Err(ApiError::BadRequest(format!(
            "'{name}' must be a whole number of seconds from 0 to {max_secs}, got '{}'",
            value.chars().take(40).collect::<String>()
        ))),
    }
}

/// How often the events stream reports progress while the query runs.
const EVENTS_EVERY: Duration = Duration::from_secs(1);

/// `GET .../{id}/events`: Server-Sent Events. A `progress` event with the status object at
/// once and whenever it changed, at most every second, while the query is queued or running;
/// then one `status` event with its final status (or MISSING), and the stream ends. Woken by
/// the query's end, not by the clock.
#[utoipa::path(
    get,
    path = "/kylin/api/async_query/{id}/events",
    params(("id" = String, Path, description = "The query id")),
    responses(
        (status = 200, description = "Server-sent events: progress, then the final status", content_type = "text/event-stream"),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 404, description = "Unknown, or not the caller's", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::{SinkExt, StreamExt};
    let id = query_id(&id)?;
    let shape = Shape::of(&headers);
    let mut current = state.spool.status(&who, id).await?;
    let (mut tx, rx) = futures::channel::mpsc::channel::<Event>(4);
    // Ends when the query has ended, or at the first send after the client went away.
    tokio::spawn(async move {
        let mut last: Option<Value> = None;
        loop {
            let data = shape.status_of(&current);
            if current.status != PublicStatus::Running {
                let end = Event::default().event("status").data(data.to_string());
                let _ = tx.send(end).await;
                return;
            }
            if last.as_ref() != Some(&data) {
                let event = Event::default().event("progress").data(data.to_string());
                if tx.send(event).await.is_err() {
                    return;
                }
                last = Some(data);
            }
            match state
                .spool
                .wait_status(&who, id, PublicStatus::Running, EVENTS_EVERY)
                .await
            {
                Ok(next) => current = next,
                Err(e) => {
                    let message = ApiError::from(e).to_string();
                    let _ = tx.send(Event::default().event("error").data(message)).await;
                    return;
                }
            }
        }
    });
    Ok(Sse::new(rx.map(Ok::<_, std::convert::Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The query a call on one query is about, read from the path (`{id}`) and the optional
/// `project` (query parameter or JSON body).
pub(crate) struct OneQuery {
    id: QueryId,
    project: Option<ProjectName>,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for OneQuery {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        use axum::extract::FromRequestParts;
        let (mut parts, body) = request.into_parts();
        let IdPath(id) = IdPath::from_request_parts(&mut parts, state).await?;
        let params = CallParams::from_request(Request::from_parts(parts, body), state).await?;
        Ok(Self {
            id: query_id(&id)?,
            project: params.project()?,
        })
    }
}

impl OneQuery {
    /// The download facts of the query, if it succeeded and `who` may see it.
    async fn succeeded(
        &self,
        state: &AppState,
        who: &Principal,
    ) -> Result<spool_core::DownloadInfo, ApiError> {
        Ok(state
            .spool
            .download_info(who, self.id, self.project.as_ref())
            .await?)
    }
}

#[utoipa::path(
    get,
    path = "/kylin/api/async_query/{id}/file_status",
    params(("id" = String, Path, description = "The query id"), ("project" = Option<String>, Query, description = "When given, the query's project")),
    responses(
        (status = 200, description = "The result's size in bytes", body = crate::openapi::Envelope<u64>),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 404, description = "Unknown, or not the caller's", body = crate::openapi::ErrorEnvelope),
        (status = 409, description = "Not in a state that allows this", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn file_status(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    query: OneQuery,
) -> Result<impl IntoResponse, ApiError> {
    let info = query.succeeded(&state, &who).await?;
    // Kylin's answer is the size; a result stored compressed says both sizes.
    Ok(ok(match info.uncompressed_bytes {
        None => Value::from(info.bytes),
        Some(n) => serde_json::json!({ "bytes": info.bytes, "uncompressed_bytes": n }),
    }))
}

#[utoipa::path(
    get,
    path = "/kylin/api/async_query/{id}/metadata",
    params(("id" = String, Path, description = "The query id"), ("project" = Option<String>, Query, description = "When given, the query's project")),
    responses(
        (status = 200, description = "The result's column names, then their SQL types: two lists", body = crate::openapi::Envelope<Vec<Vec<String>>>),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 404, description = "Unknown, or not the caller's", body = crate::openapi::ErrorEnvelope),
        (status = 409, description = "Not in a state that allows this", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn metadata(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    query: OneQuery,
) -> Result<impl IntoResponse, ApiError> {
    let info = query.succeeded(&state, &who).await?;
    let sha256 = info.sha256.clone();
    let columns = match info.job.state {
        spool_domain::JobState::Succeeded { columns, .. } => columns,
        _ => Vec::new(),
    };
    let (names, types): (Vec<String>, Vec<String>) =
        columns.into_iter().map(|c| (c.name, c.sql_type)).unzip();
    // Kylin's `data` is the pair of lists; the file's digest rides beside it in the envelope.
    let mut body = serde_json::json!({ "code": "000", "data": (names, types), "msg": "" });
    if let (Value::Object(map), Some(sha256)) = (&mut body, sha256) {
        map.insert("sha256".into(), Value::from(sha256));
    }
    Ok(Json(body))
}

#[utoipa::path(
    get,
    path = "/kylin/api/async_query/{id}/result_path",
    params(("id" = String, Path, description = "The query id"), ("project" = Option<String>, Query, description = "When given, the query's project")),
    responses(
        (status = 200, description = "Where the result store keeps the result: its path or URL for an admin, its name in the store for other users", body = crate::openapi::Envelope<String>),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 404, description = "Unknown, or not the caller's", body = crate::openapi::ErrorEnvelope),
        (status = 409, description = "Not in a state that allows this", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn result_path(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    query: OneQuery,
) -> Result<impl IntoResponse, ApiError> {
    let info = query.succeeded(&state, &who).await?;
    Ok(ok(state.spool.result_location(&info, &who)))
}

#[utoipa::path(
    get,
    path = "/kylin/api/async_query/{id}/result",
    params(("id" = String, Path, description = "The query id"), ("project" = Option<String>, Query, description = "When given, the query's project"),
        ("format" = Option<String>, Query, description = "Convert to csv, json, parquet or xlsx"),
        ("separator" = Option<String>, Query, description = "The CSV separator"),
        ("include_header" = Option<bool>, Query, description = "A header row (CSV, XLSX)"),
        ("encode" = Option<String>, Query, description = "utf-8 or gbk"),
        ("Range" = Option<String>, Header, description = "One byte range"),
        ("If-Range" = Option<String>, Header, description = "Resume only if the ETag still matches")),
    responses(
        (status = 200, description = "The result file, typed by its format", content(
            (String = "text/csv"), (String = "application/json"),
            (Vec<u8> = "application/vnd.apache.parquet"),
            (Vec<u8> = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            (Vec<u8> = "application/gzip"), (Vec<u8> = "application/zstd"))),
        (status = 206, description = "The requested range", content(
            (String = "text/csv"), (String = "application/json"),
            (Vec<u8> = "application/vnd.apache.parquet"),
            (Vec<u8> = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            (Vec<u8> = "application/gzip"), (Vec<u8> = "application/zstd"))),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 404, description = "Unknown, or not the caller's", body = crate::openapi::ErrorEnvelope),
        (status = 409, description = "Not in a state that allows this", body = crate::openapi::ErrorEnvelope),
        (status = 416, description = "The range lies outside the result", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn download(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    method: axum::http::Method,
    headers: HeaderMap,
    params: Result<
        Query<std::collections::HashMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
    query: OneQuery,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(bad)?;
    let info = query.succeeded(&state, &who).await?;
    let stored = &info.job.request.output;
    let wanted = download_spec(stored, &params)?;
    let head = method == axum::http::Method::HEAD;
    if wanted == *stored {
        return download::respond(&state.spool, &info, &headers, head).await;
    }
    download::respond_converted(&state.spool, &info, wanted, head).await
}

/// The output a download asks for: the stored one, changed by `format`, `separator`,
/// `include_header` (or Kylin 4's `includeHeader`) and `encode` in the query string.
fn download_spec(
    stored: &OutputSpec,
    params: &std::collections::HashMap<String, String>,
) -> Result<OutputSpec, ApiError> {
    let mut spec = stored.clone();
    let mut changed = false;
    if let Some(format) = params.get("format") {
        let format = OutputFormat::parse(format).map_err(bad)?;
        changed |= format != spec.format;
        spec.format = format;
    }
    if let Some(separator) = params.get("separator").filter(|s| !s.is_empty()) {
        changed |= *separator != spec.separator;
        spec = spec.with_separator(separator).map_err(bad)?;
    }
    let header = params
        .get("include_header")
        .or_else(|| params.get("includeHeader"));
    if let Some(header) = header {
        let include = match header.to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "'include_header' must be true or false, got {header:?}"
                )));
            }
        };
        // Only CSV and XLSX have a header row to add or drop.
        let matters = matches!(spec.format, OutputFormat::Csv | OutputFormat::Xlsx);
        changed |= matters && include != spec.include_header;
        spec.include_header = include;
    }
    if let Some(encode) = params.get("encode") {
        let encoding = TextEncoding::parse(encode).map_err(bad)?;
        changed |= encoding != spec.encoding && spec.format.is_text();
        spec.encoding = encoding;
    }
    if !changed {
        return Ok(stored.clone());
    }
    spec.compression = None;
    Ok(spec)
}

#[utoipa::path(
    delete,
    path = "/kylin/api/async_query/{id}",
    params(("id" = String, Path, description = "The query id"), ("project" = Option<String>, Query, description = "When given, the query's project")),
    responses(
        (status = 200, description = "Deleted", body = crate::openapi::Envelope<bool>),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 404, description = "Unknown, or not the caller's", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn delete_one(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    query: OneQuery,
) -> Result<impl IntoResponse, ApiError> {
    state
        .spool
        .delete(&who, query.id, query.project.as_ref())
        .await?;
    Ok(ok(true))
}

#[utoipa::path(
    delete,
    path = "/kylin/api/async_query/stop/{id}",
    params(("id" = String, Path, description = "The query id"), ("project" = Option<String>, Query, description = "When given, the query's project")),
    responses(
        (status = 200, description = "Stopped", body = crate::openapi::Envelope<bool>),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 404, description = "Unknown, or not the caller's", body = crate::openapi::ErrorEnvelope),
        (status = 409, description = "Not in a state that allows this", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn stop(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    query: OneQuery,
) -> Result<impl IntoResponse, ApiError> {
    state
        .spool
        .stop(&who, query.id, query.project.as_ref())
        .await?;
    Ok(ok(true))
}

/// The format of `older_than`, as Kylin documents it.
const OLDER_THAN_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Parses `older_than` (`yyyy-MM-dd HH:mm:ss`) as a wall-clock time in `zone`, as Kylin reads
/// it in the server's zone.
fn parse_older_than(text: &str, zone: TimeZone) -> Result<Timestamp, ApiError> {
    let local = chrono::NaiveDateTime::parse_from_str(text.trim(), OLDER_THAN_FORMAT).map_err(|_| {
        ApiError::BadRequest(format!(
            "older_than must be a time as yyyy-MM-dd HH:mm:ss ({}), for example 2024-01-31 23:59:59; got {:?}",
            zone.describe(),
            text.chars().take(40).collect::<String>()
        ))
    })?;
    zone.instant(local)
        .map(Timestamp::from_millis)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "older_than {:?} does not exist in {} (the clocks skip it)",
                text.trim(),
                zone.describe()
            ))
        })
}

/// `DELETE /kylin/api/async_query`: with neither `project` nor `older_than`, every query (as
/// in the seed); with either, the matching ones. Admins only.
#[utoipa::path(
    delete,
    path = "/kylin/api/async_query",
    params(
        ("project" = Option<String>, Query, description = "Only this project's queries"),
        ("older_than" = Option<String>, Query, description = "Only queries submitted before this time, yyyy-MM-dd HH:mm:ss")
    ),
    responses(
        (status = 200, description = "Deleted", body = crate::openapi::Envelope<bool>),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 403, description = "The caller may not do this", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn delete_many(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    params: CallParams,
) -> Result<impl IntoResponse, ApiError> {
    let project = params.project()?;
    let older_than = params
        .get("older_than")?
        .map(|text| parse_older_than(&text, state.time_zone))
        .transpose()?;
    if project.is_none() && older_than.is_none() {
        state.spool.clean_all(&who).await?;
    } else {
        state
            .spool
            .delete_matching(&who, project.as_ref(), older_than)
            .await?;
    }
    Ok(ok(true))
}

/// Kylin 4's spelling of `file_status` (the same handler serves both).
#[utoipa::path(
    get,
    path = "/kylin/api/async_query/{id}/filestatus",
    params(("id" = String, Path, description = "The query id"), ("project" = Option<String>, Query, description = "When given, the query's project")),
    responses(
        (status = 200, description = "The result's size in bytes", body = crate::openapi::Envelope<u64>),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 404, description = "Unknown, or not the caller's", body = crate::openapi::ErrorEnvelope),
        (status = 409, description = "Not in a state that allows this", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
#[allow(dead_code)]
pub(crate) fn file_status_kylin4() {}

/// Kylin 5's name for the download (the same handler serves both).
#[utoipa::path(
    get,
    path = "/kylin/api/async_query/{id}/result_download",
    params(("id" = String, Path, description = "The query id"), ("project" = Option<String>, Query, description = "When given, the query's project")),
    responses(
        (status = 200, description = "The result file, typed by its format", content(
            (String = "text/csv"), (String = "application/json"),
            (Vec<u8> = "application/vnd.apache.parquet"),
            (Vec<u8> = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            (Vec<u8> = "application/gzip"), (Vec<u8> = "application/zstd"))),
        (status = 206, description = "The requested range", content(
            (String = "text/csv"), (String = "application/json"),
            (Vec<u8> = "application/vnd.apache.parquet"),
            (Vec<u8> = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            (Vec<u8> = "application/gzip"), (Vec<u8> = "application/zstd"))),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 404, description = "Unknown, or not the caller's", body = crate::openapi::ErrorEnvelope),
        (status = 409, description = "Not in a state that allows this", body = crate::openapi::ErrorEnvelope),
        (status = 416, description = "The range lies outside the result", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
#[allow(dead_code)]
pub(crate) fn download_kylin5() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_than_reads_kylins_format_and_explains_it_otherwise() {
        let utc = TimeZone::parse("UTC").expect("a zone");
        assert_eq!(
            parse_older_than("1970-01-01 00:00:01", utc).expect("valid"),
            Timestamp::from_millis(1000)
        );
        let e = parse_older_than("2024-01-31", utc).expect_err("no time");
        assert!(e.to_string().contains("yyyy-MM-dd HH:mm:ss"), "{e}");
        // In the configured zone, as Kylin reads it: 08:00 in Shanghai is midnight UTC.
        let shanghai = TimeZone::parse("Asia/Shanghai").expect("a zone");
        assert_eq!(
            parse_older_than("1970-01-01 08:00:00", shanghai).expect("valid"),
            Timestamp::EPOCH
        );
        // A time the clocks skip is refused; a repeated one is its first instance.
        let new_york = TimeZone::parse("America/New_York").expect("a zone");
        let e = parse_older_than("2024-03-10 02:30:00", new_york).expect_err("skipped");
        assert!(e.to_string().contains("does not exist"), "{e}");
        let repeated = parse_older_than("2024-11-03 01:30:00", new_york).expect("valid");
        assert_eq!(
            repeated.as_millis(),
            1_730_611_800_000,
            "01:30 EDT, the first"
        );
        assert!(TimeZone::parse("Mars/Olympus").is_err());
    }

    #[test]
    fn kylin5_fields_are_parsed_and_checked() {
        let (r, wait) = parse_submit(
            br#"{"sql":"select 1","format":"JSON","separator":"||","encode":"GBK","include_header":true,"file_name":"a/b"}"#,
        )
        .expect("valid");
        assert_eq!(wait, Duration::ZERO);
        assert_eq!(r.output.format, OutputFormat::Json);
        assert_eq!(r.output.separator, "||");
        assert_eq!(r.output.encoding, TextEncoding::Gbk);
        assert!(r.output.include_header);
        assert_eq!(r.output.file_name, "a_b");
        let e = parse_submit(br#"{"sql":"select 1","format":"xls"}"#).expect_err("unknown");
        assert!(e.to_string().contains("csv, json, xlsx, parquet"), "{e}");
        let e = parse_submit(br#"{"sql":"select 1","include_header":1}"#).expect_err("type");
        assert!(e.to_string().contains("include_header"), "{e}");
    }

    #[test]
    fn kylin_clients_numbers_and_empty_separators_read_as_kylin_reads_them() {
        let (r, wait) = parse_submit(
            br#"{"sql":"select 1","limit":"10","offset":-1,"separator":"","wait_timeout":"5"}"#,
        )
        .expect("valid");
        assert_eq!((r.limit, r.offset), (Some(10), None));
        assert_eq!(r.output.separator, ",");
        assert_eq!(wait, Duration::from_secs(5));
        let (r, _) = parse_submit(br#"{"sql":"select 1","limit":0,"offset":"0"}"#).expect("valid");
        assert_eq!((r.limit, r.offset), (None, None));
        for bad in [
            r#"{"sql":"select 1","limit":"ten"}"#,
            r#"{"sql":"select 1","limit":1.5}"#,
            r#"{"sql":"select 1","wait_timeout":51}"#,
            r#"{"sql":"select 1","wait_timeout":-1}"#,
            r#"{"sql":"select 1","wait_timeout":true}"#,
        ] {
            let e = parse_submit(bad.as_bytes()).expect_err(bad);
            assert!(
                e.to_string().contains("limit") || e.to_string().contains("wait_timeout"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn accept_chooses_the_shape() {
        let mut headers = HeaderMap::new();
        assert_eq!(Shape::of(&headers), Shape::V2);
        headers.insert(
            header::ACCEPT,
            "application/vnd.apache.kylin-v4-public+json"
                .parse()
                .expect("header"),
        );
        assert_eq!(Shape::of(&headers), Shape::V4);
        let v = Shape::V4.status("x", PublicStatus::Running, "still running");
        assert_eq!(v["query_id"], "x");
    }
}
