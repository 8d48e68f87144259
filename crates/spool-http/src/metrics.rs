//! `GET /metrics`: Prometheus' text format (0.0.4). The query service's figures come from
//! the core ([`spool_core::MetricsSnapshot`]); this module counts what the HTTP layer sees:
//! requests by route, method and status, their durations, downloads and failed logins.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use spool_core::{Histogram, HistogramReading, MetricsSnapshot};
use spool_domain::StateKind;

use crate::ApiError;
use crate::routes::AppState;

/// Upper bounds (seconds) of the HTTP request-duration histogram: 1 ms to 60 s.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// The label a request's route gets: its template (`/kylin/api/async_query/{id}/status`),
/// never the path itself, so the number of series stays bounded.
const UNMATCHED: &str = "unmatched";

/// What the HTTP layer counts. Shared by every handler through [`AppState`].
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// Per route template: requests by method and status, and their durations. One lock a
    /// request, and no allocation once a route has been seen.
    routes: Mutex<HashMap<String, RouteStats>>,
    downloads: AtomicU64,
    download_bytes: Arc<AtomicU64>,
    login_failures: AtomicU64,
}

/// What one route has seen.
#[derive(Debug)]
struct RouteStats {
    requests: HashMap<(&'static str, u16), u64>,
    durations: Histogram,
}

/// A method as a label: the standard ones by name, anything else as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

impl HttpMetrics {
    fn record(&self, route: &str, method: &'static str, status: StatusCode, started: Instant) {
        let elapsed = started.elapsed();
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if !routes.contains_key(route) {
            routes.insert(
                route.to_owned(),
                RouteStats {
                    requests: HashMap::new(),
                    durations: Histogram::new(HTTP_BUCKETS),
                },
            );
        }
        if let Some(stats) = routes.get_mut(route) {
            *stats.requests.entry((method, status.as_u16())).or_insert(0) += 1;
            stats.durations.observe(elapsed);
        }
    }

    /// Counts a login refused for wrong or missing credentials.
    pub(crate) fn login_failed(&self) {
        self.login_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether `route` serves result files.
fn is_download(route: &str) -> bool {
    route.ends_with("/result") || route.ends_with("/result_download")
}

/// The middleware that counts every request (by the route it matched) and the bytes of every
/// download as they are sent.
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // A clone of the matched path shares its text; nothing is copied per request.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    let method = method_label(request.method());
    let response = next.run(request).await;
    let metrics = &state.http_metrics;
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        metrics.login_failed();
    }
    metrics.record(route, method, status, started);
    if !(is_download(route) && status.is_success() && method == "GET") {
        return response;
    }
    metrics.downloads.fetch_add(1, Ordering::Relaxed);
    let served = Arc::clone(&metrics.download_bytes);
    let (parts, body) = response.into_parts();
    let counted = body.into_data_stream().map(move |chunk| {
        if let Ok(bytes) = &chunk {
            served.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        chunk
    });
    Response::from_parts(parts, Body::from_stream(counted))
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A family of one unlabelled sample.
fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Escapes a label value (backslash, quote, newline), as the text format requires.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histogram(out: &mut String, name: &str, labels: &str, reading: &HistogramReading) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (le, count) in &reading.buckets {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {count}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
        reading.count
    );
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", reading.sum_seconds);
    let _ = writeln!(out, "{name}_count{braces} {}", reading.count);
}

/// Renders everything in Prometheus' text format.
pub(crate) fn render(core: &MetricsSnapshot, http: &HttpMetrics) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "spool_queries",
        "gauge",
        "Queries in the job store by state (every process's when the store is shared).",
    );
    for kind in [
        StateKind::Queued,
        StateKind::Running,
        StateKind::Succeeded,
        StateKind::Failed,
    ] {
        let n = core.jobs.get(&kind).copied().unwrap_or(0);
        let _ = writeln!(out, "spool_queries{{state=\"{}\"}} {n}", kind.as_str());
    }
    scalar(
        &mut out,
        "spool_queue_depth",
        "gauge",
        "Queries waiting for a worker.",
        core.jobs.get(&StateKind::Queued).copied().unwrap_or(0),
    );
    family(
        &mut out,
        "spool_queries_finished_total",
        "counter",
        "Query runs this process finished, by outcome.",
    );
    for (outcome, n) in &core.finished {
        let _ = writeln!(
            out,
            "spool_queries_finished_total{{outcome=\"{}\"}} {n}",
            outcome.as_str()
        );
    }
    family(
        &mut out,
        "spool_query_duration_seconds",
        "histogram",
        "How long this process's query runs took, from a worker's claim to the recorded outcome.",
    );
    histogram(&mut out, "spool_query_duration_seconds", "", &core.run_time);
    family(
        &mut out,
        "spool_queue_wait_seconds",
        "histogram",
        "How long queries waited from submission to a worker of this process.",
    );
    histogram(&mut out, "spool_queue_wait_seconds", "", &core.queue_wait);
    scalar(
        &mut out,
        "spool_result_rows_total",
        "counter",
        "Rows of the results this process stored.",
        core.rows,
    );
    scalar(
        &mut out,
        "spool_result_bytes_total",
        "counter",
        "Bytes of the results this process stored.",
        core.bytes,
    );
    scalar(
        &mut out,
        "spool_workers_busy",
        "gauge",
        "Queries this process runs now.",
        core.workers_busy,
    );
    scalar(
        &mut out,
        "spool_workers",
        "gauge",
        "This process's workers.",
        core.workers,
    );
    scalar(
        &mut out,
        "spool_downloads_total",
        "counter",
        "Result downloads this process answered with a success status.",
        http.downloads.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "spool_download_bytes_total",
        "counter",
        "Bytes of results this process sent.",
        http.download_bytes.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "spool_login_failures_total",
        "counter",
        "Requests refused for missing or wrong credentials.",
        http.login_failures.load(Ordering::Relaxed),
    );
    family(
        &mut out,
        "spool_http_requests_total",
        "counter",
        "HTTP requests by route template, method and status.",
    );
    let routes = http.routes.lock().unwrap_or_else(PoisonError::into_inner);
    let mut names: Vec<&String> = routes.keys().collect();
    names.sort();
    for route in &names {
        let mut requests: Vec<_> = routes[*route].requests.iter().collect();
        requests.sort();
        for ((method, status), n) in requests {
            let _ = writeln!(
                out,
                "spool_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                label(route)
            );
        }
    }
    family(
        &mut out,
        "spool_http_request_duration_seconds",
        "histogram",
        "HTTP request durations by route template, to the response's first byte.",
    );
    for route in &names {
        histogram(
            &mut out,
            "spool_http_request_duration_seconds",
            &format!("route=\"{}\"", label(route)),
            &routes[*route].durations.read(),
        );
    }
    out
}

/// The response of a metrics call.
async fn answer(state: &AppState) -> Result<Response, ApiError> {
    let core = state.spool.metrics().await?;
    let text = render(&core, &state.http_metrics);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `GET /metrics` on the API's address: admins only.
#[utoipa::path(
    get,
    path = "/metrics",
    responses(
        (status = 200, description = "Prometheus' text format", content_type = "text/plain"),
        (status = 401, description = "No, malformed or wrong credentials", body = crate::openapi::ErrorEnvelope),
        (status = 403, description = "The caller may not do this", body = crate::openapi::ErrorEnvelope),
        (status = 429, description = "Too many failed logins, or too many queries in flight", body = crate::openapi::ErrorEnvelope),
        (status = 500, description = "Internal error", body = crate::openapi::ErrorEnvelope)
    )
)]
pub(crate) async fn metrics(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<spool_domain::Principal>,
) -> Result<Response, ApiError> {
    if who.role != spool_domain::Role::Admin {
        return Err(ApiError::Forbidden(
            "only an admin may read /metrics (or scrape the metrics_bind address)".to_owned(),
        ));
    }
    answer(&state).await
}

/// The router of the separate `metrics_bind` address: `GET /metrics` without credentials,
/// for a scraper on a network the operator trusts; nothing else is served there.
pub fn metrics_router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|State(state): State<AppState>| async move { answer(&state).await }),
        )
        .fallback(|| async { ApiError::NotFound("only /metrics is served here".to_owned()) })
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn histograms_render_cumulative_buckets_with_inf_sum_and_count() {
        let h = Histogram::new(&[0.5, 1.0]);
        h.observe(std::time::Duration::from_millis(250));
        h.observe(std::time::Duration::from_secs(3));
        let mut out = String::new();
        histogram(&mut out, "x_seconds", "route=\"/r\"", &h.read());
        assert_eq!(
            out,
            "x_seconds_bucket{route=\"/r\",le=\"0.5\"} 1\n\
             x_seconds_bucket{route=\"/r\",le=\"1\"} 1\n\
             x_seconds_bucket{route=\"/r\",le=\"+Inf\"} 2\n\
             x_seconds_sum{route=\"/r\"} 3.25\n\
             x_seconds_count{route=\"/r\"} 2\n"
        );
    }
}
