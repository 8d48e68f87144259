//! The query engine on Polars: opens the project's catalog, plans the SQL with Spool's planner
//! (`spool-planner`: bound against the catalog, the star-join levers with facts from
//! [`stats`]), lowers the plan to Polars' LazyFrame API (`lower`), runs it on Polars'
//! streaming engine (or, for a row-local query over one Parquet table, a run of row
//! groups at a time, see `chunked`) and writes the result format batch by batch into the result
//! sink (CSV and JSON are encoded on several threads, see `parallel`).
//!
//! Invariants:
//! - All Polars work runs on Tokio's blocking pool, never on the reactor, and a panic inside it
//!   becomes [`EngineError::Internal`].
//! - The result is written as the query produces batches; memory does not grow with the number
//!   of result rows (beyond what Polars itself holds for the plan; for row-local queries, at
//!   most two runs of row groups).
//! - No SQL text reaches Polars: a query is a plan bound against the project's catalog, so it
//!   reads the project's tables and nothing else.

mod catalog;
mod chunked;
mod keyset;
mod lower;
mod priority;
pub mod sample;
mod stats;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use polars::prelude::{DataFrame, Engine, LazyFrame, PlanCallback, PolarsError};
use spool_domain::{QueryRequest, ResultColumn};
use spool_ports::{CancelToken, EngineError, Execution, QueryEngine, ResultSink, Transcoder};
use tracing::debug;

use spool_formats::{Output, types};

use crate::catalog::CatalogError;

/// Rows per batch handed to the result encoders. Polars' morsels (about 100,000 rows, or a whole
/// row group) are cut to this size so that the encoder threads share the work evenly and a few
/// batches in flight stay small: 50,000 rows exported `select * from p_lineorder` 10 % faster
/// than whole morsels (docs/PERFORMANCE.md).
const BATCH_ROWS: usize = 50_000;

/// The longest engine message passed on to a user; Polars can print whole plans.
const MAX_MESSAGE: usize = 1_000;

pub use spool_planner::passes::PlannerOptions;

/// A [`QueryEngine`] running SQL with Polars over project folders under one root directory.
#[derive(Debug, Clone)]
pub struct PolarsEngine {
    root: PathBuf,
    scratch: PathBuf,
    lower_polars_threads: bool,
    planner: PlannerOptions,
    catalogs: Arc<catalog::Cache>,
}

impl PolarsEngine {
    /// Serves the projects found under `root` (one folder per project). Temporary files (XLSX
    /// sheets being written) go to the system's temporary directory until
    /// [`PolarsEngine::with_scratch`] says otherwise.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            scratch: std::env::temp_dir().join("spool-scratch"),
            lower_polars_threads: false,
            planner: PlannerOptions::default(),
            catalogs: Arc::default(),
        }
    }

    /// Plans with `options`' levers (all on by default).
    pub fn with_planner_options(mut self, options: PlannerOptions) -> Self {
        self.planner = options;
        self
    }

    /// Puts temporary files under `dir`.
    pub fn with_scratch(mut self, dir: impl Into<PathBuf>) -> Self {
        self.scratch = dir.into();
        self
    }

    /// Runs Polars' own threads at a lower priority than the rest of the process (Linux), so
    /// that a process serving requests stays responsive while queries use every core. Threads
    /// are found by name: only for a process whose own threads do not carry Tokio's default
    /// name (the Spool server names them `spool`).
    pub fn with_polars_threads_lowered(mut self) -> Self {
        self.lower_polars_threads = true;
        self
    }

    /// Returns the folder projects live in.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[async_trait]
impl QueryEngine for PolarsEngine {
    async fn execute(
        &self,
        request: &QueryRequest,
        sink: Box<dyn ResultSink>,
        cancel: CancelToken,
    ) -> Result<Execution, EngineError> {
        let root = self.root.clone();
        let scratch = self.scratch.clone();
        let catalogs = Arc::clone(&self.catalogs);
        let request = request.clone();
        let lower = self.lower_polars_threads;
        let planner = self.planner;
        let joined = tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(
                    &catalogs,
                    &root,
                    &scratch,
                    &request,
                    sink,
                    &cancel,
                    How {
                        lower_polars_threads: lower,
                        planner,
                    },
                )
            }))
        })
        .await;
        let outcome = match joined {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(panic)) => Err(EngineError::Internal(format!(
                "polars panicked: {}",
                panic_message(&panic)
            ))),
            Err(e) => Err(EngineError::Internal(format!("engine task failed: {e}"))),
        };
        outcome.map_err(|e| {
            e.without_paths(&[(&self.root, "<projects>"), (&self.scratch, "<scratch>")])
        })
    }
}

/// Stored results are converted by Polars for every engine: each was written by the shared
/// encoders, so Polars reads any of them back.
#[async_trait]
impl Transcoder for PolarsEngine {
    async fn transcode(
        &self,
        mut stored: spool_ports::StoredResult,
        from: &spool_domain::OutputSpec,
        columns: &[ResultColumn],
        to: &spool_domain::OutputSpec,
        sink: Box<dyn ResultSink>,
        cancel: CancelToken,
    ) -> Result<Execution, EngineError> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        // The scans read files: the stored result is copied to a scratch file first.
        let io =
            |e: std::io::Error| EngineError::Internal(format!("staging the stored result: {e}"));
        tokio::fs::create_dir_all(&self.scratch).await.map_err(io)?;
        let staged = tempfile::Builder::new()
            .prefix("spool-transcode-")
            .tempfile_in(&self.scratch)
            .map_err(io)?;
        let mut file = tokio::fs::File::from_std(staged.reopen().map_err(io)?);
        while let Some(chunk) = stored.body.next().await {
            if cancel.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            let chunk = chunk.map_err(io)?;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        drop(file);
        let (from, columns, to) = (from.clone(), columns.to_vec(), to.clone());
        let scratch = self.scratch.clone();
        tokio::task::spawn_blocking(move || {
            run_transcode(staged.path(), &from, &columns, &to, sink, &scratch, &cancel)
        })
        .await
        .map_err(|e| EngineError::Internal(format!("engine task failed: {e}")))?
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Shortens a Polars message to what a user needs: no plan dumps, bounded length.
fn user_message(e: &PolarsError) -> String {
    let text = e.to_string();
    let head = text
        .split("\n\nResolved plan until failure")
        .next()
        .unwrap_or(&text)
        .trim();
    let mut message: String = head.chars().take(MAX_MESSAGE).collect();
    if message.len() < head.len() {
        message.push_str(" ...");
    }
    message
}

fn planning_error(e: PolarsError) -> EngineError {
    match e {
        PolarsError::IO { .. } => EngineError::Internal(e.to_string()),
        other => EngineError::InvalidQuery(user_message(&other)),
    }
}

fn execution_error(e: PolarsError) -> EngineError {
    match e {
        PolarsError::IO { .. } => EngineError::Internal(e.to_string()),
        PolarsError::ColumnNotFound(_)
        | PolarsError::SchemaFieldNotFound(_)
        | PolarsError::SchemaMismatch(_)
        | PolarsError::SQLInterface(_)
        | PolarsError::SQLSyntax(_) => EngineError::InvalidQuery(user_message(&e)),
        other => EngineError::Execution(user_message(&other)),
    }
}

/// The runs of row groups of `table` a row-local query reads one at a time, when it has them.
fn chunked_runs(
    sources: &std::collections::HashMap<String, catalog::Source>,
    table: String,
) -> Option<(String, Vec<catalog::RowGroups>)> {
    let runs = catalog::row_groups(&sources[&table], chunked::MIN_RUN_ROWS).ok()??;
    if runs.iter().any(|run| run.rows > chunked::MAX_RUN_ROWS) {
        return None;
    }
    Some((table, runs))
}

/// The query's frame through Spool's planner, and its plan: bound against the project's
/// catalog, paged by the request where the SQL has no LIMIT or OFFSET of its own, lowered to
/// the LazyFrame API.
fn planned(
    project: &catalog::OpenProject,
    request: &QueryRequest,
    options: PlannerOptions,
) -> Result<(LazyFrame, spool_planner::Plan), EngineError> {
    use spool_planner::PlanError;
    let statistics = stats::ProjectStatistics { project };
    let plan =
        spool_planner::plan_query_with(&request.sql, project.planner(), options, &statistics)
            .map_err(|e| match e {
                PlanError::User { .. } => EngineError::InvalidQuery(e.to_string()),
                PlanError::Internal { .. } => EngineError::Internal(e.to_string()),
            })?;
    let plan = plan.paged(request.offset, request.limit);
    debug!(plan = %plan.explain(), "running on polars through spool's planner");
    let frame = lower::lower(&plan, &stats::ProjectSource { project }).map_err(planning_error)?;
    Ok((frame, plan))
}

/// How [`run`] treats a query, as the engine is configured.
#[derive(Debug, Clone, Copy)]
struct How {
    /// Lower Polars' threads' priority once they exist.
    lower_polars_threads: bool,
    /// The planner's levers.
    planner: PlannerOptions,
}

/// Runs one query to completion on the calling (blocking) thread.
fn run(
    catalogs: &catalog::Cache,
    root: &Path,
    scratch: &Path,
    request: &QueryRequest,
    sink: Box<dyn ResultSink>,
    cancel: &CancelToken,
    how: How,
) -> Result<Execution, EngineError> {
    let How {
        lower_polars_threads,
        planner,
    } = how;
    let project = catalogs
        .open(root, request.project.as_str(), catalog::OpenProject::new)
        .map_err(|e| match e {
            CatalogError::NotFound => EngineError::ProjectNotFound(request.project.clone()),
            CatalogError::Broken(message) => EngineError::Execution(message),
        })?;
    let (mut frame, plan) = planned(&project, request, planner)?;
    let schema = frame.collect_schema().map_err(planning_error)?;
    let columns = schema
        .iter()
        .map(|(name, dtype)| ResultColumn {
            name: name.to_string(),
            sql_type: types::sql_type(dtype),
        })
        .collect();

    let output = start_output(&request.output, &schema, sink, scratch)?;
    // Polars starts its threads lazily: once the first batch arrives they all exist. Checked
    // once per query (a directory listing), which also catches threads started since.
    let lower_pending = std::sync::atomic::AtomicBool::new(lower_polars_threads);
    let cancel_seen = cancel.clone();
    let deliver = move |output: &Mutex<Output>, mut batch: DataFrame| -> bool {
        if cancel_seen.is_cancelled() {
            return true;
        }
        if lower_pending.swap(false, std::sync::atomic::Ordering::Relaxed) {
            priority::lower_polars_threads();
        }
        let mut out = output.lock().unwrap_or_else(PoisonError::into_inner);
        out.write(&mut batch)
    };

    let chunked =
        chunked::row_local_plan(&plan).and_then(|table| chunked_runs(&project.sources, table));
    match chunked {
        Some((table, runs)) => {
            debug!(
                table,
                runs = runs.len(),
                "row-local scan: one run of row groups at a time"
            );
            let over_run = |scan: LazyFrame| -> polars::prelude::PolarsResult<LazyFrame> {
                lower::lower(&plan, &|name: &str| {
                    if name == table {
                        Some(scan.clone())
                    } else {
                        project.table(name)
                    }
                })
            };
            chunked::run(&over_run, &schema, &runs, |frame| {
                // Cut like the streaming engine's batches, so the encoder threads share the work.
                let mut offset = 0;
                while offset < frame.height() {
                    let batch = frame.slice(offset as i64, BATCH_ROWS);
                    offset += BATCH_ROWS;
                    if deliver(&output, batch) {
                        return true;
                    }
                }
                false
            })
            .map_err(execution_error)?;
        }
        None => stream_out(frame, &output, deliver)?,
    }
    finish_output(&output, cancel, columns)
}

/// The encoder for `spec` started on `sink`, shared by the batches' callbacks.
fn start_output(
    spec: &spool_domain::OutputSpec,
    schema: &polars::prelude::Schema,
    sink: Box<dyn ResultSink>,
    scratch: &Path,
) -> Result<Arc<Mutex<Output>>, EngineError> {
    Ok(Arc::new(Mutex::new(Output::start(
        spec, schema, sink, scratch,
    )?)))
}

/// Runs `frame` on the streaming engine, handing each batch to `deliver`.
fn stream_out(
    frame: polars::prelude::LazyFrame,
    output: &Arc<Mutex<Output>>,
    deliver: impl Fn(&Mutex<Output>, DataFrame) -> bool + Send + Sync + 'static,
) -> Result<(), EngineError> {
    let callback_output = Arc::clone(output);
    let callback = PlanCallback::new(move |batch: DataFrame| Ok(deliver(&callback_output, batch)));
    frame
        .sink_batches(callback, true, NonZeroUsize::new(BATCH_ROWS))
        .map_err(planning_error)?
        .collect_with_engine(Engine::Streaming)
        .map_err(execution_error)?;
    Ok(())
}

/// Ends the encoding: the error a batch met, a cancellation, or the finished sink.
fn finish_output(
    output: &Mutex<Output>,
    cancel: &CancelToken,
    columns: Vec<ResultColumn>,
) -> Result<Execution, EngineError> {
    output
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .finish(cancel, columns)
}

/// Re-encodes the stored result in `file` (written as `from`, with `columns`) as `to`.
fn run_transcode(
    file: &Path,
    from: &spool_domain::OutputSpec,
    columns: &[ResultColumn],
    to: &spool_domain::OutputSpec,
    sink: Box<dyn ResultSink>,
    scratch: &Path,
    cancel: &CancelToken,
) -> Result<Execution, EngineError> {
    use polars::prelude::*;
    let path = PlRefPath::try_from_path(file).map_err(planning_error)?;
    let frame = match from.format {
        spool_domain::OutputFormat::Parquet => {
            LazyFrame::scan_parquet(path, ScanArgsParquet::default()).map_err(planning_error)?
        }
        spool_domain::OutputFormat::Csv => {
            let mut schema = Schema::with_capacity(columns.len());
            for column in columns {
                schema.insert(column.name.as_str().into(), types::dtype(&column.sql_type));
            }
            let separator = from.separator.as_bytes()[0];
            LazyCsvReader::new(path)
                .with_has_header(from.include_header)
                .with_separator(separator)
                .with_schema(Some(Arc::new(schema)))
                .finish()
                .map_err(planning_error)?
        }
        other => {
            return Err(EngineError::InvalidQuery(format!(
                "a {other} result cannot be converted at download"
            )));
        }
    };
    let mut frame = frame;
    let schema = frame.collect_schema().map_err(planning_error)?;
    let output = start_output(to, &schema, sink, scratch)?;
    let cancel_seen = cancel.clone();
    stream_out(frame, &output, move |output, mut batch| {
        if cancel_seen.is_cancelled() {
            return true;
        }
        let mut out = output.lock().unwrap_or_else(PoisonError::into_inner);
        out.write(&mut batch)
    })?;
    finish_output(&output, cancel, columns.to_vec())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod planned_tests;
