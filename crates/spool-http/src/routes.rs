//! The routes of Kylin's async query API, their request parsing and their response shapes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};
use spool_core::Spool;
use spool_domain::{Principal, PublicStatus, QueryId, QueryRequest};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use tracing::Instrument;

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
}

/// Builds the service: Kylin's async query API under `/kylin/api`, plus `/healthz`.
pub fn router(state: AppState) -> Router {
    let max_body = state.limits.max_body_bytes;
    let api = Router::new()
        .route("/kylin/api/async_query", post(submit).delete(clean_all))
        .route("/kylin/api/async_query/{id}/status", get(status))
        .route("/kylin/api/async_query/{id}/result", get(result))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(max_body));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(|_| {
            envelope(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }))
}

async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let principal = state
        .auth
        .authenticate(request.headers().get(header::AUTHORIZATION), client)
        .await?;
    let span = tracing::info_span!("request", user = %principal.name);
    request.extensions_mut().insert(principal);
    Ok(next.run(request).instrument(span).await)
}

async fn healthz() -> Json<Value> {
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
struct Envelope<T> {
    code: &'static str,
    data: T,
    msg: &'static str,
}

fn ok<T: Serialize>(data: T) -> Json<Envelope<T>> {
    Json(Envelope {
        code: "000",
        data,
        msg: "",
    })
}

#[derive(Serialize)]
struct StatusData {
    #[serde(rename = "queryID")]
    query_id: String,
    status: PublicStatus,
    info: String,
}

/// Reads an optional non-negative integer field.
fn non_negative(body: &Map<String, Value>, field: &str) -> Result<Option<u64>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "field '{field}' must be a non-negative integer, got {n}"
            ))
        }),
        Some(other) => Err(ApiError::BadRequest(format!(
            "field '{field}' must be a non-negative integer, got {}",
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

/// Parses the submit body: `sql` (required), `project`, `offset`, `limit`; `acceptPartial` and
/// unknown fields are ignored.
fn parse_submit(body: &[u8]) -> Result<QueryRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(body) = value else {
        return Err(ApiError::BadRequest(
            "request body must be a JSON object with at least the field 'sql'".to_owned(),
        ));
    };
    let sql = match body.get("sql") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => {
            return Err(ApiError::BadRequest("field 'sql' is required".to_owned()));
        }
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "field 'sql' must be a string, got {}",
                type_name(other)
            )));
        }
    };
    let project = match body.get("project") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "field 'project' must be a string, got {}",
                type_name(other)
            )));
        }
    };
    let offset = non_negative(&body, "offset")?;
    let limit = non_negative(&body, "limit")?;
    QueryRequest::new(sql, project, offset, limit).map_err(|e| ApiError::BadRequest(e.to_string()))
}

async fn submit(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
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
    let request = parse_submit(&body)?;
    let id = state.spool.submit(&who, request).await?;
    Ok(ok(StatusData {
        query_id: id.to_string(),
        status: PublicStatus::Running,
        info: "still running".to_owned(),
    }))
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

async fn status(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_id_length(&id)?;
    // An id Spool could not have issued is simply missing; it never reaches a store.
    let data = match id.parse::<QueryId>() {
        Ok(id) => {
            let s = state.spool.status(&who, id).await?;
            StatusData {
                query_id: s.id.to_string(),
                status: s.status,
                info: s.info,
            }
        }
        Err(_) => StatusData {
            query_id: id.chars().take(64).collect(),
            status: PublicStatus::Missing,
            info: "query not found".to_owned(),
        },
    };
    Ok(ok(data))
}

async fn result(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id_length(&id)?;
    let id: QueryId = id
        .parse()
        .map_err(|_| ApiError::NotFound("query not found".to_owned()))?;
    let stored = state.spool.result(&who, id).await?;
    let mut response = Response::new(Body::from_stream(stored.body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"result.csv\""),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(stored.len));
    Ok(response)
}

async fn clean_all(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<impl IntoResponse, ApiError> {
    state.spool.clean_all(&who).await?;
    Ok(ok(true))
}
