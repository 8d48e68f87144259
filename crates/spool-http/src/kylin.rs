//! Kylin's synchronous query API and the metadata calls around it, so Kylin's JDBC/ODBC
//! drivers, its Python client and BI tools connect unchanged: `POST /kylin/api/query`,
//! `GET /kylin/api/projects`, `GET /kylin/api/tables_and_columns` (Kylin 5 also at
//! `/kylin/api/query/tables_and_columns`) and `/kylin/api/user/authentication`.
//!
//! Shapes: Kylin 4's answers are bare objects (`SQLResponse`, lists); with Kylin 5's `Accept:
//! application/vnd.apache.kylin-v4-public+json` they come in the `{code, data, msg}` envelope,
//! as Kylin 5 sends them. Field names are Kylin's, spelled as Jackson writes Kylin's getters
//! (`table_NAME`, `column_NAME`, `isNullable`, ...).

use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Map, Value, json};
use spool_core::SubmitOptions;
use spool_domain::{
    FailureCode, JobState, Principal, ProjectName, PublicStatus, QueryId, QueryRequest,
    ResultColumn, Role,
};
use spool_ports::TableInfo;

use crate::ApiError;
use crate::routes::{AppState, Shape, ok};

/// How the synchronous query call behaves (`sync_query_max_rows`, `sync_query_timeout_secs`).
#[derive(Debug, Clone, Copy)]
pub struct SyncQueryLimits {
    /// Rows a synchronous answer holds at most; a larger result is cut there with
    /// `partial: true` (Kylin's default limit, 50,000).
    pub max_rows: u64,
    /// How long the call waits for the query before stopping it and answering with an error.
    pub timeout: Duration,
}

impl Default for SyncQueryLimits {
    fn default() -> Self {
        Self {
            max_rows: 50_000,
            timeout: Duration::from_secs(300),
        }
    }
}

/// The catalog Kylin reports every table in.
const CATALOG: &str = "defaultCatalog";

/// The schema Kylin shows a project's tables in: its name in upper case (`SSB`).
fn schema_of(project: &str) -> String {
    project.to_ascii_uppercase()
}

/// A SQL type as JDBC describes it: type code, bare name, precision, scale, display size.
struct JdbcType {
    code: i32,
    name: String,
    precision: i64,
    scale: i64,
    display: i64,
}

/// Maps Spool's SQL type names (`BIGINT`, `DECIMAL(15,2)`, ...) to JDBC's `java.sql.Types`.
fn jdbc_type(sql_type: &str) -> JdbcType {
    let t = |code, name: &str, precision, scale, display| JdbcType {
        code,
        name: name.to_owned(),
        precision,
        scale,
        display,
    };
    if let Some(args) = sql_type
        .strip_prefix("DECIMAL(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let mut parts = args
            .split(',')
            .map(|p| p.trim().parse::<i64>().unwrap_or(0));
        let precision = parts.next().unwrap_or(38);
        let scale = parts.next().unwrap_or(0);
        return t(3, "DECIMAL", precision, scale, precision + 2);
    }
    match sql_type {
        "BOOLEAN" => t(16, "BOOLEAN", 1, 0, 5),
        "TINYINT" => t(-6, "TINYINT", 3, 0, 4),
        "SMALLINT" => t(5, "SMALLINT", 5, 0, 6),
        "INTEGER" => t(4, "INTEGER", 10, 0, 11),
        "BIGINT" => t(-5, "BIGINT", 19, 0, 20),
        "FLOAT" => t(6, "FLOAT", 7, 0, 14),
        "DOUBLE" => t(8, "DOUBLE", 15, 0, 24),
        "DATE" => t(91, "DATE", 10, 0, 10),
        "TIME" => t(92, "TIME", 8, 0, 8),
        "TIMESTAMP" => t(93, "TIMESTAMP", 26, 6, 26),
        "NULL" => t(0, "NULL", 0, 0, 4),
        // Strings (and types SQL has no name for, which export as text): Kylin's VARCHAR(256).
        _ => t(12, "VARCHAR", 256, 0, 256),
    }
}

fn is_numeric(code: i32) -> bool {
    matches!(code, -6 | 5 | 4 | -5 | 6 | 8 | 3)
}

/// One `columnMetas` entry (Kylin's `SelectedColumnMeta`).
fn column_meta(column: &ResultColumn, schema: &str) -> Value {
    let jdbc = jdbc_type(&column.sql_type);
    json!({
        "autoIncrement": false,
        "caseSensitive": jdbc.code == 12,
        "searchable": true,
        "currency": false,
        "isNullable": 1,
        "signed": is_numeric(jdbc.code),
        "displaySize": jdbc.display,
        "label": column.name,
        "name": column.name,
        "schemaName": schema,
        "catelogName": null,
        "tableName": null,
        "precision": jdbc.precision,
        "scale": jdbc.scale,
        "columnType": jdbc.code,
        "columnTypeName": jdbc.name,
        "readOnly": true,
        "writable": false,
        "definitelyWritable": false,
    })
}

/// Reads a CSV result as Spool writes it (RFC 4180, comma, `\n`): an unquoted empty field is
/// NULL, a quoted one an empty string.
fn parse_csv(bytes: &[u8]) -> Result<Vec<Vec<Option<String>>>, std::str::Utf8Error> {
    let text = std::str::from_utf8(bytes)?;
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let (mut quoted, mut in_quotes) = (false, false);
    let finish = |field: &mut String, quoted: &mut bool| {
        let value = (!field.is_empty() || *quoted).then(|| std::mem::take(field));
        *quoted = false;
        value
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                quoted = true;
            }
            ',' => row.push(finish(&mut field, &mut quoted)),
            '\n' => {
                row.push(finish(&mut field, &mut quoted));
                rows.push(std::mem::take(&mut row));
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            _ => field.push(c),
        }
    }
    if !row.is_empty() || !field.is_empty() || quoted {
        row.push(finish(&mut field, &mut quoted));
        rows.push(row);
    }
    Ok(rows)
}

/// The body of `POST /kylin/api/query`.
struct SyncCall {
    sql: String,
    project: Option<String>,
    offset: Option<u64>,
    limit: Option<u64>,
}

fn parse_call(body: &[u8]) -> Result<SyncCall, ApiError> {
    let map = crate::routes::json_object(body).map_err(|e| match e {
        ApiError::BadRequest(m) if m.ends_with("JSON object") => ApiError::BadRequest(
            "request body must be a JSON object with at least the field 'sql'".to_owned(),
        ),
        other => other,
    })?;
    let sql = crate::routes::string(&map, "sql")?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest("field 'sql' is required".to_owned()))?
        .to_owned();
    let project = crate::routes::string(&map, "project")?.map(str::to_owned);
    let offset = crate::routes::count(&map, "offset")?;
    let limit = crate::routes::count(&map, "limit")?;
    // acceptPartial: a result over the cap is always cut there and marked partial.
    crate::routes::boolean(&map, "acceptPartial")?;
    Ok(SyncCall {
        sql,
        project,
        offset,
        limit,
    })
}

/// Kylin's error shape (`ErrorResponse`): the envelope plus `exception`, `url` and
/// `stacktrace` (always empty: stacks stay in the log), with Spool's `error_code`.
fn kylin_error(status: StatusCode, code: &str, message: &str, uri: &Uri) -> Response {
    let body = json!({
        "code": "999",
        "data": null,
        "msg": message,
        "exception": message,
        "url": uri.path(),
        "stacktrace": "",
        "error_code": code,
    });
    (status, axum::Json(body)).into_response()
}

/// A query error: Kylin 5 answers it inside a successful envelope (`isException`); Kylin 4
/// with an error status and its error shape.
fn query_error(
    shape: Shape,
    code: FailureCode,
    message: &str,
    id: Option<QueryId>,
    started: Instant,
    uri: &Uri,
) -> Response {
    if shape == Shape::V4 {
        let mut data = sql_response(Vec::new(), Vec::new(), false, started, id);
        data.insert("isException".into(), Value::Bool(true));
        data.insert("exceptionMessage".into(), Value::from(message));
        data.insert("error_code".into(), Value::from(code.as_str()));
        return ok(Value::Object(data)).into_response();
    }
    let status = match code {
        FailureCode::EngineUnavailable | FailureCode::DiskFull => StatusCode::SERVICE_UNAVAILABLE,
        FailureCode::Internal | FailureCode::Interrupted | FailureCode::Unknown => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    };
    kylin_error(status, code.as_str(), message, uri)
}

/// Kylin's `SQLResponse` (the Kylin 4 fields; Kylin 5 reads the same names).
fn sql_response(
    columns: Vec<Value>,
    rows: Vec<Vec<Option<String>>>,
    partial: bool,
    started: Instant,
    id: Option<QueryId>,
) -> Map<String, Value> {
    let scanned = rows.len();
    let data = json!({
        "columnMetas": columns,
        "results": rows,
        "cube": "",
        "cuboidIds": null,
        "realizationTypes": null,
        "affectedRowCount": 0,
        "isException": false,
        "exceptionMessage": null,
        "duration": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "partial": partial,
        "pushDown": false,
        // Spool does not count the rows its engines scan; the rows returned stand in.
        "totalScanCount": scanned,
        "totalScanBytes": 0,
        "totalScanFiles": 0,
        "metadataTime": 0,
        "totalSparkScanTime": 0,
        "hitExceptionCache": false,
        "storageCacheUsed": false,
        "sparkPool": null,
        "traceUrl": null,
        "traces": [],
        "queryId": id.map(|id| id.to_string()),
    });
    match data {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// `POST /kylin/api/query`: runs the query as a job like any other (same sandbox, grants,
/// limits; listed and downloadable afterwards), waits for it, and answers with its rows.
#[utoipa::path(
    post,
    path = "/kylin/api/query",
    request_body = crate::openapi::SqlRequest,
    responses(
        (status = 200, description = "Kylin's SQLResponse: bare with Kylin 4's Accept, in the envelope (isException on a query error) with Kylin 5's", body = crate::openapi::SqlResponse),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 403, description = "The caller may not do this", body = crate::openapi::ErrorEnvelope),
        (status = 429, description = "Too many failed logins, or too many queries in flight", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope),
        (status = 503, description = "The engine is unavailable", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn query(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let shape = Shape::of(&headers);
    let call = parse_call(&body)?;
    let limits = state.sync;
    // Within the cap, the client's limit; above it (or without one), one row past the cap,
    // which tells a cut result from one that fits.
    let (run_limit, cut_at) = match call.limit {
        Some(limit) if limit <= limits.max_rows => (limit, None),
        _ => (limits.max_rows + 1, Some(limits.max_rows)),
    };
    let request = QueryRequest::new(
        call.sql,
        call.project.as_deref(),
        call.offset,
        Some(run_limit),
    )
    .map_err(crate::routes::bad)?;
    let project = request.project.clone();
    let submitted = state
        .spool
        .submit_with(&who, request, SubmitOptions::default())
        .await?;
    let id = submitted.id;
    let deadline = started + limits.timeout;
    let status = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // Stopped, so the worker slot is not held by a query nobody waits for.
            let _ = state.spool.stop(&who, id, None).await;
            let message = format!(
                "query {id} did not finish within {} s (sync_query_timeout_secs) and was \
                 stopped; submit it to /kylin/api/async_query to run it longer",
                limits.timeout.as_secs()
            );
            return Ok(query_error(
                shape,
                FailureCode::TimedOut,
                &message,
                Some(id),
                started,
                &uri,
            ));
        }
        let status = state
            .spool
            .wait_status(&who, id, PublicStatus::Running, left)
            .await?;
        if status.status != PublicStatus::Running {
            break status;
        }
    };
    // One read of the job: the download facts carry its record, columns included.
    let info = match status.status {
        PublicStatus::Successful => state.spool.download_info(&who, id, None).await?,
        PublicStatus::Failed => {
            let code = status
                .detail
                .as_ref()
                .and_then(|d| d.failure)
                .unwrap_or(FailureCode::Unknown);
            return Ok(query_error(
                shape,
                code,
                &status.info,
                Some(id),
                started,
                &uri,
            ));
        }
        _ => {
            return Ok(query_error(
                shape,
                FailureCode::Unknown,
                &format!("query {id} was deleted before it finished"),
                Some(id),
                started,
                &uri,
            ));
        }
    };
    let JobState::Succeeded { columns, .. } = &info.job.state else {
        return Err(ApiError::Internal(
            format!("query {id} is SUCCESSFUL without a succeeded record").into(),
        ));
    };
    let mut stored = state.spool.open_result_range(&info, 0..info.bytes).await?;
    let mut bytes = Vec::with_capacity(usize::try_from(info.bytes).unwrap_or(0));
    while let Some(chunk) = stored.body.next().await {
        let chunk = chunk.map_err(|e| ApiError::Internal(Box::new(e)))?;
        bytes.extend_from_slice(&chunk);
    }
    // Up to the row cap of text to split: off the reactor.
    let mut rows = tokio::task::spawn_blocking(move || parse_csv(&bytes))
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    let partial = cut_at.is_some_and(|cap| rows.len() as u64 > cap);
    if let Some(cap) = cut_at {
        rows.truncate(usize::try_from(cap).unwrap_or(usize::MAX));
    }
    let schema = schema_of(project.as_str());
    let metas = columns.iter().map(|c| column_meta(c, &schema)).collect();
    let data = Value::Object(sql_response(metas, rows, partial, started, Some(id)));
    Ok(match shape {
        Shape::V4 => ok(data).into_response(),
        Shape::V2 => axum::Json(data).into_response(),
    })
}

/// The query string of `GET /kylin/api/projects`: Kylin 4's `offset`/`limit`, Kylin 5's
/// `page_offset`/`page_size` (a page number), and Kylin 5's `project` name filter.
#[derive(serde::Deserialize)]
pub(crate) struct ProjectParams {
    offset: Option<String>,
    limit: Option<String>,
    page_offset: Option<String>,
    page_size: Option<String>,
    project: Option<String>,
    exact: Option<String>,
}

fn number(name: &str, value: Option<&str>, default: usize) -> Result<usize, ApiError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse::<usize>().map_err(|_| {
            ApiError::BadRequest(format!(
                "'{name}' must be a whole number, got '{}'",
                v.chars().take(40).collect::<String>()
            ))
        }),
    }
}

/// `GET /kylin/api/projects`: the projects the caller may query.
#[utoipa::path(
    get,
    path = "/kylin/api/projects",
    params(
        ("offset" = Option<u32>, Query, description = "Kylin 4: projects to skip"),
        ("limit" = Option<u32>, Query, description = "Kylin 4: projects to return"),
        ("page_offset" = Option<u32>, Query, description = "Kylin 5: the page"),
        ("page_size" = Option<u32>, Query, description = "Kylin 5: the page size (default 10)"),
        ("project" = Option<String>, Query, description = "Kylin 5: a name filter"),
        ("exact" = Option<bool>, Query, description = "Kylin 5: match the whole name")
    ),
    responses(
        (status = 200, description = "The projects the caller may query (Kylin 5: in the envelope, paged)", body = Vec<crate::openapi::Project>),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn projects(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    params: Result<Query<ProjectParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(crate::routes::bad)?;
    let mut names = state.spool.projects(&who).await?;
    if let Some(filter) = params.project.as_deref().filter(|p| !p.is_empty()) {
        let exact = params
            .exact
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case("true"));
        let filter = filter.to_ascii_lowercase();
        names.retain(|n| {
            let n = n.to_ascii_lowercase();
            if exact {
                n == filter
            } else {
                n.contains(&filter)
            }
        });
    }
    let project = |name: &str| {
        json!({
            "name": name,
            "owner": null,
            "status": "ENABLED",
            "description": "",
            "realizations": [],
            "models": [],
            "ext_filters": [],
            "override_kylin_properties": {},
            "permission": if who.role == Role::Admin { "ADMIN" } else { "READ" },
        })
    };
    if Shape::of(&headers) == Shape::V4 {
        let size = number("page_size", params.page_size.as_deref(), 10)?.max(1);
        let page = number("page_offset", params.page_offset.as_deref(), 0)?;
        let total = names.len();
        let value: Vec<Value> = names
            .iter()
            .skip(page.saturating_mul(size))
            .take(size)
            .map(|n| project(n))
            .collect();
        return Ok(ok(json!({
            "value": value,
            "offset": page,
            "limit": size,
            "total_size": total,
        }))
        .into_response());
    }
    let offset = number("offset", params.offset.as_deref(), 0)?;
    let limit = number("limit", params.limit.as_deref(), usize::MAX)?;
    let list: Vec<Value> = names
        .iter()
        .skip(offset)
        .take(limit)
        .map(|n| project(n))
        .collect();
    Ok(axum::Json(list).into_response())
}

/// The query string of the tables call.
#[derive(serde::Deserialize)]
pub(crate) struct TablesParams {
    project: Option<String>,
}

/// One table as Kylin's `TableMeta` (with Kylin 5's `type`), its columns as `ColumnMeta`.
fn table_meta(table: &TableInfo, default_schema: &str, kylin5: bool) -> Value {
    let schema = table.schema.as_deref().unwrap_or(default_schema);
    let columns: Vec<Value> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let jdbc = jdbc_type(&column.sql_type);
            let mut meta = json!({
                "table_CAT": CATALOG,
                "table_SCHEM": schema,
                "table_NAME": table.name,
                "column_NAME": column.name,
                "data_TYPE": jdbc.code,
                "type_NAME": jdbc.name,
                "column_SIZE": jdbc.precision,
                "buffer_LENGTH": -1,
                "decimal_DIGITS": jdbc.scale,
                "num_PREC_RADIX": 10,
                "nullable": 1,
                "remarks": null,
                "column_DEF": null,
                "sql_DATA_TYPE": -1,
                "sql_DATETIME_SUB": -1,
                "char_OCTET_LENGTH": -1,
                "ordinal_POSITION": i + 1,
                "is_NULLABLE": "YES",
                "scope_CATLOG": null,
                "scope_SCHEMA": null,
                "scope_TABLE": null,
                "source_DATA_TYPE": -1,
                "is_AUTOINCREMENT": null,
            });
            if kylin5 && let Value::Object(map) = &mut meta {
                map.insert("type".into(), json!([]));
            }
            meta
        })
        .collect();
    let mut meta = json!({
        "table_CAT": CATALOG,
        "table_SCHEM": schema,
        "table_NAME": table.name,
        "table_TYPE": if table.view { "VIEW" } else { "TABLE" },
        "remarks": null,
        "type_CAT": null,
        "type_SCHEM": null,
        "type_NAME": null,
        "self_REFERENCING_COL_NAME": null,
        "ref_GENERATION": null,
        "columns": columns,
    });
    if kylin5 && let Value::Object(map) = &mut meta {
        map.insert("type".into(), json!([]));
    }
    meta
}

async fn tables(
    state: &AppState,
    who: &Principal,
    params: Result<Query<TablesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<(Vec<TableInfo>, String), ApiError> {
    let Query(params) = params.map_err(crate::routes::bad)?;
    let name = params
        .project
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::BadRequest("the parameter 'project' is required".to_owned()))?;
    let project = ProjectName::parse(&name).map_err(crate::routes::bad)?;
    let tables = state.spool.describe(who, &project).await?;
    Ok((tables, schema_of(project.as_str())))
}

/// `GET /kylin/api/tables_and_columns?project=P` (Kylin 4's path): a bare list, or Kylin 5's
/// envelope when asked for with Kylin 5's `Accept`.
#[utoipa::path(
    get,
    path = "/kylin/api/tables_and_columns",
    params(("project" = String, Query, description = "The project")),
    responses(
        (status = 200, description = "The project's tables and views with their columns", body = Vec<crate::openapi::Table>),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 403, description = "The caller may not do this", body = crate::openapi::ErrorEnvelope),
        (status = 404, description = "Unknown, or not the caller's", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn tables_and_columns(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    params: Result<Query<TablesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let (tables, schema) = tables(&state, &who, params).await?;
    let kylin5 = Shape::of(&headers) == Shape::V4;
    let list: Vec<Value> = tables
        .iter()
        .map(|t| table_meta(t, &schema, kylin5))
        .collect();
    Ok(if kylin5 {
        ok(list).into_response()
    } else {
        axum::Json(list).into_response()
    })
}

/// `GET /kylin/api/query/tables_and_columns?project=P` (Kylin 5's path): always the envelope.
#[utoipa::path(
    get,
    path = "/kylin/api/query/tables_and_columns",
    params(("project" = String, Query, description = "The project")),
    responses(
        (status = 200, description = "The project's tables and views with their columns", body = crate::openapi::Envelope<Vec<crate::openapi::Table>>),
        (status = 400, description = "A malformed request; msg names the field", body = crate::openapi::ErrorEnvelope),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 403, description = "The caller may not do this", body = crate::openapi::ErrorEnvelope),
        (status = 404, description = "Unknown, or not the caller's", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn query_tables_and_columns(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    params: Result<Query<TablesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let (tables, schema) = tables(&state, &who, params).await?;
    let list: Vec<Value> = tables
        .iter()
        .map(|t| table_meta(t, &schema, true))
        .collect();
    Ok(ok(list).into_response())
}

/// `POST|GET /kylin/api/user/authentication`: who the credentials belong to. Kylin 4's shape
/// is `{"userDetails": {...}}`; Kylin 5's the envelope around the user details.
#[utoipa::path(
    method(get, post),
    path = "/kylin/api/user/authentication",
    responses(
        (status = 200, description = "Whose credentials these are (Kylin 5: in the envelope)", body = crate::openapi::Authentication),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 429, description = "Too many failed logins, or too many queries in flight", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn authentication(
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
) -> Response {
    let mut authorities = Vec::new();
    if who.role == Role::Admin {
        authorities.extend(["ROLE_ADMIN", "ROLE_ANALYST", "ROLE_MODELER"]);
    } else {
        authorities.push("ROLE_ANALYST");
    }
    authorities.push("ALL_USERS");
    let details = json!({
        "username": who.name,
        "password": null,
        "authorities": authorities
            .iter()
            .map(|a| json!({ "authority": a }))
            .collect::<Vec<_>>(),
        "accountNonExpired": true,
        "accountNonLocked": true,
        "credentialsNonExpired": true,
        "enabled": true,
        "disabled": false,
        "locked": false,
        "projects": if who.role == Role::Admin { vec!["*".to_owned()] } else { who.projects.clone() },
    });
    if Shape::of(&headers) == Shape::V4 {
        ok(details).into_response()
    } else {
        axum::Json(json!({ "userDetails": details })).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_results_keep_null_apart_from_empty_text() {
        let rows = parse_csv(b"1,,\"\"\n\"a,b\",\"say \"\"hi\"\"\",x\n,\"line\nbreak\",\n")
            .expect("utf-8");
        assert_eq!(
            rows,
            vec![
                vec![Some("1".into()), None, Some(String::new())],
                vec![
                    Some("a,b".into()),
                    Some("say \"hi\"".into()),
                    Some("x".into())
                ],
                vec![None, Some("line\nbreak".into()), None],
            ]
        );
        assert_eq!(
            parse_csv(b"\n\n").expect("utf-8"),
            vec![vec![None], vec![None]]
        );
        assert!(parse_csv(b"").expect("utf-8").is_empty());
    }

    #[test]
    fn sql_types_map_to_jdbc() {
        let d = jdbc_type("DECIMAL(15,2)");
        assert_eq!(
            (d.code, d.name.as_str(), d.precision, d.scale),
            (3, "DECIMAL", 15, 2)
        );
        assert_eq!(jdbc_type("BIGINT").code, -5);
        assert_eq!(jdbc_type("VARCHAR").code, 12);
        assert_eq!(jdbc_type("DATE").code, 91);
        assert_eq!(jdbc_type("TIMESTAMP").code, 93);
    }
}
