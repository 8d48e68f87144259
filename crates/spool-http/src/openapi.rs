//! The OpenAPI 3.1 document (`GET /kylin/api/openapi.json`), made by utoipa from the
//! annotations on the handlers and the shapes below. The shapes describe what the handlers
//! write: the fields every client may rely on are listed and typed; Spool adds fields over time
//! (as Kylin does), so objects are open to more.

#![allow(dead_code)] // The shapes exist for the document; handlers write JSON directly.

use axum::response::IntoResponse;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// A successful call: `code` "000", the answer in `data`.
#[derive(ToSchema)]
pub(crate) struct Envelope<T> {
    /// Always "000".
    code: String,
    data: T,
    /// Always empty.
    msg: String,
}

/// A failed call, in Kylin's envelope with Spool's stable `error_code`.
#[derive(ToSchema)]
pub(crate) struct ErrorEnvelope {
    /// Always "999".
    code: String,
    /// Always null.
    data: Option<Value>,
    /// What went wrong, for people.
    msg: String,
    /// What went wrong, for programs (`KE-010003208`, `SPOOL-BAD-REQUEST`, ...).
    error_code: String,
    /// Kylin 4's copy of `msg` (the synchronous query's errors).
    exception: Option<String>,
    /// The request's path (the synchronous query's errors).
    url: Option<String>,
    /// Always empty (the synchronous query's errors).
    stacktrace: Option<String>,
}

/// Kylin's four statuses.
#[derive(ToSchema)]
pub(crate) enum KylinStatus {
    #[schema(rename = "RUNNING")]
    Running,
    #[schema(rename = "SUCCESSFUL")]
    Successful,
    #[schema(rename = "FAILED")]
    Failed,
    #[schema(rename = "MISSING")]
    Missing,
}

/// A query's status: Kylin's `queryID` (Kylin 4's `Accept`) or `query_id` (Kylin 5's),
/// `status` and `info`, then Spool's detail (absent for a MISSING query).
#[derive(ToSchema)]
pub(crate) struct QueryStatus {
    #[schema(rename = "queryID")]
    query_id_v2: Option<String>,
    #[schema(rename = "query_id")]
    query_id_v4: Option<String>,
    status: KylinStatus,
    info: String,
    /// QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED or EXPIRED.
    state: Option<String>,
    queue_position: Option<u64>,
    rows: Option<u64>,
    bytes: Option<u64>,
    /// Milliseconds since the epoch.
    submitted_at: Option<i64>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    elapsed_ms: Option<u64>,
    expires_at: Option<i64>,
    attempt: Option<u32>,
    sha256: Option<String>,
    error_code: Option<String>,
    retryable: Option<bool>,
    /// In a listing: the query's project, owner and SQL.
    project: Option<String>,
    owner: Option<String>,
    sql: Option<String>,
}

/// The body of a submission.
#[derive(ToSchema)]
pub(crate) struct SubmitBody {
    /// One read-only SQL statement.
    sql: String,
    /// The project (default `DEFAULT`).
    project: Option<String>,
    /// Rows to skip (a number or a numeric string); applies unless the SQL has a LIMIT.
    #[schema(value_type = Option<Value>)]
    offset: Option<Value>,
    /// Rows to return at most.
    #[schema(value_type = Option<Value>)]
    limit: Option<Value>,
    /// `csv` (default), `json`, `parquet`, `xlsx`.
    format: Option<String>,
    /// A one-character CSV separator (default `,`).
    separator: Option<String>,
    /// `utf-8` (default) or `gbk`.
    encode: Option<String>,
    include_header: Option<bool>,
    /// The download's file name.
    file_name: Option<String>,
    /// `gzip` or `zstd`.
    compression: Option<String>,
    /// Seconds to wait for the query before answering (0 to 50).
    #[schema(value_type = Option<Value>)]
    wait_timeout: Option<Value>,
    /// An idempotency key (the `Idempotency-Key` header's twin).
    request_id: Option<String>,
    /// Seconds an identical query's result may be old to answer this one.
    #[schema(value_type = Option<Value>)]
    reuse_max_age: Option<Value>,
    /// Where to POST the final status (a host in `callback_allow`).
    callback_url: Option<String>,
    /// Accepted and ignored (Kylin's field).
    #[schema(rename = "acceptPartial")]
    accept_partial: Option<bool>,
    /// Accepted and ignored (Kylin 5's Spark pool).
    spark_queue: Option<String>,
}

/// A page of the listing.
#[derive(ToSchema)]
pub(crate) struct QueryPage {
    queries: Vec<QueryStatus>,
    /// Pass as `before` for the next page; null on the last.
    next_before: Option<String>,
}

/// The body of Kylin's synchronous query.
#[derive(ToSchema)]
pub(crate) struct SqlRequest {
    sql: String,
    project: Option<String>,
    #[schema(value_type = Option<Value>)]
    offset: Option<Value>,
    #[schema(value_type = Option<Value>)]
    limit: Option<Value>,
    #[schema(rename = "acceptPartial")]
    accept_partial: Option<bool>,
}

/// A result column, as Kylin's `SelectedColumnMeta`.
#[derive(ToSchema)]
pub(crate) struct ColumnMeta {
    label: String,
    name: String,
    #[schema(rename = "columnType")]
    column_type: i32,
    #[schema(rename = "columnTypeName")]
    column_type_name: String,
    precision: i64,
    scale: i64,
    #[schema(rename = "displaySize")]
    display_size: i64,
    #[schema(rename = "isNullable")]
    is_nullable: i32,
    #[schema(rename = "schemaName")]
    schema_name: String,
}

/// Kylin's `SQLResponse`.
#[derive(ToSchema)]
pub(crate) struct SqlResponse {
    #[schema(rename = "columnMetas")]
    column_metas: Vec<ColumnMeta>,
    /// Rows of strings; SQL NULL is null.
    results: Vec<Vec<Option<String>>>,
    #[schema(rename = "affectedRowCount")]
    affected_row_count: i64,
    #[schema(rename = "isException")]
    is_exception: bool,
    #[schema(rename = "exceptionMessage")]
    exception_message: Option<String>,
    duration: u64,
    partial: bool,
    #[schema(rename = "totalScanCount")]
    total_scan_count: u64,
    #[schema(rename = "hitExceptionCache")]
    hit_exception_cache: bool,
    #[schema(rename = "storageCacheUsed")]
    storage_cache_used: bool,
    #[schema(rename = "queryId")]
    query_id: Option<String>,
}

/// A project, as Kylin lists it.
#[derive(ToSchema)]
pub(crate) struct Project {
    name: String,
    status: String,
    permission: String,
}

/// A column of a table, as JDBC's `getColumns` row in Kylin's spelling.
#[derive(ToSchema)]
pub(crate) struct TableColumn {
    #[schema(rename = "table_NAME")]
    table_name: String,
    #[schema(rename = "column_NAME")]
    column_name: String,
    #[schema(rename = "data_TYPE")]
    data_type: i32,
    #[schema(rename = "type_NAME")]
    type_name: String,
    #[schema(rename = "ordinal_POSITION")]
    ordinal_position: u32,
}

/// A table or view, as JDBC's `getTables` row in Kylin's spelling.
#[derive(ToSchema)]
pub(crate) struct Table {
    #[schema(rename = "table_SCHEM")]
    table_schem: String,
    #[schema(rename = "table_NAME")]
    table_name: String,
    /// TABLE or VIEW.
    #[schema(rename = "table_TYPE")]
    table_type: String,
    columns: Vec<TableColumn>,
}

/// A granted authority.
#[derive(ToSchema)]
pub(crate) struct Authority {
    authority: String,
}

/// Whose credentials these are.
#[derive(ToSchema)]
pub(crate) struct UserDetails {
    username: String,
    authorities: Vec<Authority>,
    projects: Vec<String>,
}

/// Kylin 4's answer to the login check.
#[derive(ToSchema)]
pub(crate) struct Authentication {
    #[schema(rename = "userDetails")]
    user_details: UserDetails,
}

/// The health check's answer.
#[derive(ToSchema)]
pub(crate) struct Health {
    status: String,
}

struct BasicAuth;

impl Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Spool",
        description = "Apache Kylin's async query API, Kylin 5's additions, Kylin's synchronous query and metadata calls, and Spool's own. See docs/API.md."
    ),
    paths(
        crate::routes::submit,
        crate::routes::list,
        crate::routes::delete_many,
        crate::routes::delete_one,
        crate::routes::stop,
        crate::routes::status,
        crate::routes::events,
        crate::routes::file_status,
        crate::routes::file_status_kylin4,
        crate::routes::metadata,
        crate::routes::download,
        crate::routes::download_kylin5,
        crate::routes::result_path,
        crate::routes::healthz,
        crate::kylin::query,
        crate::kylin::projects,
        crate::kylin::tables_and_columns,
        crate::kylin::query_tables_and_columns,
        crate::kylin::authentication,
        crate::metrics::metrics,
        crate::console::index,
        crate::console::script,
        crate::console::style,
        openapi_json,
    ),
    modifiers(&BasicAuth),
    security(("basic" = []))
)]
pub(crate) struct ApiDoc;

/// `GET /kylin/api/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/kylin/api/openapi.json",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub(crate) async fn openapi_json() -> axum::response::Response {
    axum::Json(ApiDoc::openapi()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `.route("...")` of the routers, read from their source, so that a route added
    /// without an annotation fails here.
    fn routed_paths() -> Vec<String> {
        let mut paths = Vec::new();
        for source in [include_str!("routes.rs"), include_str!("console.rs")] {
            let mut rest = source;
            while let Some(at) = rest.find(".route(") {
                rest = &rest[at + ".route(".len()..];
                let literal = rest.trim_start();
                if let Some(body) = literal.strip_prefix('"')
                    && let Some(end) = body.find('"')
                {
                    paths.push(body[..end].to_owned());
                }
            }
        }
        paths.retain(|p| p.starts_with('/'));
        paths.sort();
        paths.dedup();
        paths
    }

    #[test]
    fn every_route_is_in_the_document() {
        let doc = ApiDoc::openapi();
        let documented: Vec<String> = doc.paths.paths.keys().cloned().collect();
        let routed = routed_paths();
        assert!(routed.len() >= 20, "{routed:?}");
        for path in &routed {
            assert!(
                documented.contains(path),
                "{path} is routed but not in the OpenAPI document"
            );
        }
        for path in &documented {
            assert!(routed.contains(path), "{path} is documented but not routed");
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_basic_auth() {
        let json = serde_json::to_value(ApiDoc::openapi()).expect("json");
        assert!(
            json["openapi"]
                .as_str()
                .expect("version")
                .starts_with("3.1")
        );
        assert_eq!(
            json["components"]["securitySchemes"]["basic"]["scheme"],
            "basic"
        );
    }
}
