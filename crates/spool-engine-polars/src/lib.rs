//! The query engine on Polars: opens the project's catalog, checks and rewrites the SQL, runs it
//! on Polars' streaming engine (or, for a row-local query over one Parquet table, a run of row
//! groups at a time, see `chunked`) and writes the result format batch by batch into the result
//! sink (CSV and JSON are encoded on several threads, see `parallel`).
//!
//! Invariants:
//! - All Polars work runs on Tokio's blocking pool, never on the reactor, and a panic inside it
//!   becomes [`EngineError::Internal`].
//! - The result is written as the query produces batches; memory does not grow with the number
//!   of result rows (beyond what Polars itself holds for the plan; for row-local queries, at
//!   most two runs of row groups).
//! - SQL reaches Polars only after [`sql::prepare`] accepted it (see that module's rules).

mod catalog;
mod chunked;
mod gate;
mod joins;
mod keyset;
mod lower;
mod priority;
mod rewrite;
pub mod sample;
mod sql;
mod stats;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use polars::prelude::{DataFrame, Engine, LazyFrame, PlanCallback, PolarsError};
use spool_domain::{ProjectName, QueryRequest, ResultColumn};
use spool_ports::{CancelToken, EngineError, Execution, QueryEngine, ResultSink, TableInfo};
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

/// Which SQL front end reads a query's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrontEnd {
    /// Polars' SQL context, behind Spool's sandbox and rewrites (the default for now).
    PolarsSql,
    /// Spool's planner (`spool-planner`), lowered to Polars' LazyFrame API: Kylin's names,
    /// types and semantics; being built (see docs/SQL.md for what it covers so far).
    #[default]
    Spool,
}

impl std::str::FromStr for FrontEnd {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "polars" => Ok(Self::PolarsSql),
            "spool" => Ok(Self::Spool),
            other => Err(format!(
                "sql_front_end must be \"polars\" or \"spool\", not {other:?}"
            )),
        }
    }
}

impl std::fmt::Display for FrontEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::PolarsSql => "polars",
            Self::Spool => "spool",
        })
    }
}

/// A [`QueryEngine`] running SQL with Polars over project folders under one root directory.
#[derive(Debug, Clone)]
pub struct PolarsEngine {
    root: PathBuf,
    scratch: PathBuf,
    lower_polars_threads: bool,
    front_end: FrontEnd,
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
            front_end: FrontEnd::default(),
            planner: PlannerOptions::default(),
            catalogs: Arc::default(),
        }
    }

    /// Reads SQL with `front_end`.
    pub fn with_front_end(mut self, front_end: FrontEnd) -> Self {
        self.front_end = front_end;
        self
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
        let front_end = self.front_end;
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
                        front_end,
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

    /// Every file of the project's folder with its size and modification time: a new, grown
    /// or rewritten table file (or view) is a new version.
    async fn source_version(&self, project: &ProjectName) -> Result<Option<String>, EngineError> {
        let root = self.root.clone();
        let project = project.as_str().to_owned();
        tokio::task::spawn_blocking(move || catalog::version(&root, &project))
            .await
            .map_err(|e| EngineError::Internal(format!("engine task failed: {e}")))?
            .map_err(|e| EngineError::Internal(format!("reading the project's files: {e}")))
    }

    async fn projects(&self) -> Result<Vec<String>, EngineError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || catalog::projects(&root))
            .await
            .map_err(|e| EngineError::Internal(format!("engine task failed: {e}")))?
            .map_err(|e| EngineError::Internal(format!("listing the projects folder: {e}")))
    }

    async fn describe(&self, project: &ProjectName) -> Result<Vec<TableInfo>, EngineError> {
        let (root, catalogs) = (self.root.clone(), Arc::clone(&self.catalogs));
        let name = project.clone();
        tokio::task::spawn_blocking(move || match catalogs.open(&root, name.as_str()) {
            Ok(open) => Ok(open.described),
            Err(CatalogError::NotFound) => Err(EngineError::ProjectNotFound(name)),
            Err(CatalogError::Broken(message)) => Err(EngineError::Execution(message)),
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

/// The runs of row groups to read one after the other, if `prepared` is row-local over one
/// Parquet table (see `chunked`).
fn chunked_plan(
    sources: &std::collections::HashMap<String, catalog::Source>,
    prepared: &str,
) -> Option<(String, Vec<catalog::RowGroups>)> {
    let tables = sources.keys().cloned().collect();
    let table = chunked::row_local_table(prepared, &tables)?;
    chunked_runs(sources, table)
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

/// The query's frame through Polars' SQL context, with the SQL text it ran.
fn through_polars_sql(
    project: &catalog::OpenProject,
    request: &QueryRequest,
) -> Result<(LazyFrame, String), EngineError> {
    let counts = Counts::new(project);
    let prepared = sql::prepare_estimated(
        &request.sql,
        &project.names,
        &project.name,
        request.offset,
        request.limit,
        &counts,
    )
    .map_err(|refusal| match refusal {
        spool_sql::Refusal::Query(message) => EngineError::InvalidQuery(message),
        spool_sql::Refusal::Internal(message) => EngineError::Internal(message),
    })?;
    debug!(sql = %prepared, "running on polars");
    let mut context = project.context();
    for (name, frame) in counts.keyed.into_inner() {
        context.register(&name, frame);
    }
    gate::check(&context, &prepared).map_err(EngineError::Internal)?;
    let frame = context.execute(&prepared).map_err(planning_error)?;
    Ok((frame, prepared))
}

/// The query's frame through Spool's planner, and its plan: bound against the project's
/// catalog, paged by the request where the SQL has no LIMIT or OFFSET of its own, lowered to
/// the LazyFrame API.
fn planned(
    project: &catalog::OpenProject,
    request: &QueryRequest,
    options: PlannerOptions,
) -> Result<(LazyFrame, spool_planner::Plan), EngineError> {
    use spool_planner::{Plan, PlanError};
    // Text whose meaning differs between dialects (a backslash or quote inside a quoted name,
    // escaped string literals) is refused as on every engine, so one query has one answer.
    spool_sql::faithful::check_tokens(&request.sql).map_err(EngineError::InvalidQuery)?;
    let statistics = stats::ProjectStatistics { project };
    let plan = spool_planner::plan_query_with(&request.sql, &project.planner, options, &statistics)
        .map_err(|e| match e {
            PlanError::User { .. } => EngineError::InvalidQuery(e.to_string()),
            PlanError::Internal { .. } => EngineError::Internal(e.to_string()),
        })?;
    let plan = match plan {
        Plan::Limit { .. } => plan,
        _ if request.offset.is_none() && request.limit.is_none() => plan,
        _ => Plan::Limit {
            input: Box::new(plan),
            offset: request.offset.unwrap_or(0),
            fetch: request.limit,
        },
    };
    debug!(plan = %plan.explain(), "running on polars through spool's planner");
    let frame = lower::lower(&plan, &stats::ProjectSource { project }).map_err(planning_error)?;
    Ok((frame, plan))
}

/// What a query runs as: SQL text for Polars' SQL context, or a plan.
enum Query {
    Text(String),
    Plan(spool_planner::Plan),
}

/// How [`run`] treats a query, as the engine is configured.
#[derive(Debug, Clone, Copy)]
struct How {
    /// Lower Polars' threads' priority once they exist.
    lower_polars_threads: bool,
    /// What reads the SQL.
    front_end: FrontEnd,
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
        front_end,
        planner,
    } = how;
    let project = catalogs
        .open(root, request.project.as_str())
        .map_err(|e| match e {
            CatalogError::NotFound => EngineError::ProjectNotFound(request.project.clone()),
            CatalogError::Broken(message) => EngineError::Execution(message),
        })?;
    let (mut frame, query) = match front_end {
        FrontEnd::PolarsSql => {
            let (frame, prepared) = through_polars_sql(&project, request)?;
            (frame, Query::Text(prepared))
        }
        FrontEnd::Spool => {
            let (frame, plan) = planned(&project, request, planner)?;
            (frame, Query::Plan(plan))
        }
    };
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

    let chunked = match &query {
        Query::Text(text) => chunked_plan(&project.sources, text),
        Query::Plan(plan) => chunked::row_local_plan(plan)
            .and_then(|table| chunked_runs(&project.sources, table.to_owned())),
    };
    match chunked {
        Some((table, runs)) => {
            debug!(
                table,
                runs = runs.len(),
                "row-local scan: one run of row groups at a time"
            );
            let over_run = |scan: LazyFrame| -> polars::prelude::PolarsResult<LazyFrame> {
                match &query {
                    Query::Text(prepared) => {
                        // A context of its own: registering the run in a clone would change
                        // the table for every query of the project (clones share tables).
                        let mut scoped = project.context();
                        scoped.register(&table, scan);
                        gate::execute(&mut scoped, prepared)
                    }
                    Query::Plan(plan) => lower::lower(plan, &|name: &str| {
                        if name == table {
                            Some(scan.clone())
                        } else {
                            project.table(name)
                        }
                    }),
                }
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

/// Counts a dimension's filtered rows and finds the keys they hold on the project's tables, for
/// join planning (see `joins`), and makes the key sets the planned query tests (see `keyset`).
/// The relation, key and filter come from the checked query, printed back.
struct Counts<'a> {
    project: &'a catalog::OpenProject,
    /// The fact tables filtered by key sets for one query (see `keyset`), by the name its SQL
    /// reads each by.
    keyed: std::cell::RefCell<Vec<(String, polars::prelude::LazyFrame)>>,
}

/// Key facts kept per opened project; beyond this many, or this many keys in all (8 MiB), the
/// map starts again.
const MAX_CACHED_KEYS: usize = 256;
const MAX_CACHED_KEY_VALUES: usize = 1 << 20;

impl<'a> Counts<'a> {
    fn new(project: &'a catalog::OpenProject) -> Self {
        Self {
            project,
            keyed: std::cell::RefCell::default(),
        }
    }

    /// The key facts found so far for this opened project.
    fn cached(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Option<joins::KeyFacts>>> {
        self.project
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn frame(&self, sql: &str) -> Option<DataFrame> {
        gate::execute(&mut self.project.context(), sql)
            .ok()?
            .collect()
            .ok()
    }

    fn find_keys(&self, relation: &str, key: &str, filter: &str) -> Option<joins::KeyFacts> {
        use polars::prelude::{ChunkUnique, DataType};
        let kept = self.frame(&format!("SELECT {key} FROM {relation} WHERE {filter}"))?;
        let column = kept.columns().first()?;
        if !column.dtype().is_integer() {
            return None;
        }
        let keys = column
            .as_materialized_series()
            .cast(&DataType::Int64)
            .ok()?;
        let keys = keys.i64().ok()?;
        let whole = self.frame(&format!(
            "SELECT min({key}) AS low, max({key}) AS high, count(*) AS rows FROM {relation}"
        ))?;
        let bound = |i: usize| {
            whole
                .columns()
                .get(i)?
                .as_materialized_series()
                .cast(&DataType::Int64)
                .ok()?
                .i64()
                .ok()?
                .get(0)
        };
        let present = keys.drop_nulls();
        let values = present
            .unique()
            .ok()
            .filter(|unique| unique.len() <= joins::MAX_KEY_SET)
            .map(|unique| {
                let mut values: Vec<i64> = unique.into_no_null_iter().collect();
                values.sort_unstable();
                values
            });
        Some(joins::KeyFacts {
            kept: kept.height() as u64,
            rows: u64::try_from(bound(2)?).ok()?,
            range: present
                .into_no_null_iter()
                .min()
                .zip(present.into_no_null_iter().max()),
            full: bound(0).zip(bound(1)),
            values,
        })
    }
}

/// Dimension rows kept by key for folds per opened project, at most this many in all; beyond
/// it the map starts again. A dimension keeping more rows than this is joined, not folded.
const MAX_LOOKUP_ROWS: usize = 1 << 21;

impl Counts<'_> {
    /// The frame of `table`: one of this query's keyed tables in `keyed`, else the project's.
    fn base(
        &self,
        keyed: &[(String, polars::prelude::LazyFrame)],
        table: &str,
    ) -> Option<polars::prelude::LazyFrame> {
        match keyed.iter().find(|(name, _)| name == table) {
            Some((_, frame)) => Some(frame.clone()),
            None => self.project.table(table),
        }
    }

    /// The kept rows of `fold`'s dimension by key, found once per opened project.
    fn lookup(&self, fold: &joins::Fold) -> Option<Arc<keyset::Lookup>> {
        let mut wanted = vec![fold.key.as_str()];
        wanted.extend(
            fold.columns
                .iter()
                .map(String::as_str)
                .filter(|c| *c != fold.key),
        );
        let cache_key = format!(
            "{}\u{0}{}\u{0}{}",
            fold.relation,
            fold.filter.as_deref().unwrap_or_default(),
            wanted.join("\u{0}")
        );
        let cached = || {
            self.project
                .lookups
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some(known) = cached().get(&cache_key) {
            return known.clone();
        }
        let list: Vec<String> = wanted
            .iter()
            .map(|c| sqlparser::ast::Ident::with_quote('"', *c).to_string())
            .collect();
        let mut sql = format!("SELECT {} FROM {}", list.join(", "), fold.relation);
        if let Some(filter) = &fold.filter {
            sql.push_str(&format!(" WHERE {filter}"));
        }
        let found = self
            .frame(&sql)
            .filter(|rows| rows.height() <= MAX_LOOKUP_ROWS)
            .and_then(|rows| keyset::Lookup::new(rows, &fold.key))
            .map(Arc::new);
        let mut cached = cached();
        let held: usize = cached.values().flatten().map(|l| l.height()).sum();
        let adding = found.as_ref().map_or(0, |l| l.height());
        if cached.len() >= MAX_CACHED_KEYS || held + adding > MAX_LOOKUP_ROWS {
            cached.clear();
        }
        cached.insert(cache_key, found.clone());
        found
    }
}

impl joins::Estimates for Counts<'_> {
    fn count(&self, relation: &str, filter: &str) -> Option<u64> {
        if !counts_enabled() {
            return None;
        }
        let frame = self.frame(&format!("SELECT count(*) FROM {relation} WHERE {filter}"))?;
        let value = frame.columns().first()?.get(0).ok()?;
        value.extract::<u64>()
    }

    fn keys(&self, relation: &str, key: &str, filter: &str) -> Option<joins::KeyFacts> {
        if !counts_enabled() {
            return None;
        }
        let cache_key = format!("{relation}\u{0}{key}\u{0}{filter}");
        if let Some(known) = self.cached().get(&cache_key) {
            return known.clone();
        }
        let found = self.find_keys(relation, key, filter);
        let mut cached = self.cached();
        let values = |facts: &Option<joins::KeyFacts>| {
            facts
                .as_ref()
                .and_then(|f| f.values.as_ref())
                .map_or(0, Vec::len)
        };
        let held: usize = cached.values().map(values).sum();
        if cached.len() >= MAX_CACHED_KEYS || held + values(&found) > MAX_CACHED_KEY_VALUES {
            cached.clear();
        }
        cached.insert(cache_key, found.clone());
        found
    }

    fn filters_fact(&self) -> bool {
        star_filters_enabled()
    }

    fn keyed_table(&self, table: &str, column: &str, keys: &[i64]) -> Option<String> {
        if !key_sets_enabled() {
            return None;
        }
        let set = keyset::KeySet::new(keys)?;
        let mut keyed = self.keyed.borrow_mut();
        let base = self.base(&keyed, table)?;
        // Not a name a query can spell: planning makes these, never the user.
        let name = format!("spool keyed {}", keyed.len());
        keyed.push((name.clone(), base.filter(set.filter(column))));
        Some(name)
    }

    fn folded_table(&self, table: &str, fold: &joins::Fold) -> Option<String> {
        if !folds_enabled() {
            return None;
        }
        use polars::prelude::{by_name, col, lit};
        let lookup = self.lookup(fold)?;
        let mut keyed = self.keyed.borrow_mut();
        // A column name no query can spell, dropped again below.
        let rows = format!("spool rows {}", keyed.len());
        let columns = fold
            .columns
            .iter()
            .map(|column| lookup.column(&rows, column))
            .collect::<Option<Vec<_>>>()?;
        let base = self.base(&keyed, table)?;
        // The filter reads a column computed here, so Polars keeps it above the scan: the
        // rows are looked up after the scan's own filters (the WHERE's, the key ranges and
        // lists) have dropped what they drop, rather than tested one more time in the scan.
        let mut frame = base
            .with_column(lookup.rows(&fold.fact_column).alias(rows.as_str()))
            .filter(col(rows.as_str()).neq(lit(keyset::NO_ROW)));
        if !columns.is_empty() {
            frame = frame.with_columns(columns);
        }
        let frame = frame.drop(by_name([rows.as_str()], true, false));
        let name = format!("spool keyed {}", keyed.len());
        keyed.push((name.clone(), frame));
        Some(name)
    }

    fn max_listed_keys(&self) -> usize {
        if key_sets_enabled() {
            joins::MAX_KEY_SET
        } else {
            joins::MAX_KEY_LIST
        }
    }
}

/// Whether the keys a dimension's filters keep are written into the fact table's filter: they
/// are, unless the environment says `SPOOL_STAR_FILTERS=off` (for measuring; read once).
fn star_filters_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    switched_on(&ON, "SPOOL_STAR_FILTERS")
}

/// Whether star-join key lists are tested as bitmaps (see `keyset`) rather than written as
/// `IN` lists: they are, unless the environment says `SPOOL_KEY_SETS=off` (for measuring what
/// they buy; read once).
fn key_sets_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    switched_on(&ON, "SPOOL_KEY_SETS")
}

/// Whether the measuring switch `var` is on: it is unless the environment says `var=off`;
/// read once into `flag`.
pub(crate) fn switched_on(flag: &'static std::sync::OnceLock<bool>, var: &str) -> bool {
    *flag.get_or_init(|| std::env::var(var).map_or(true, |v| v != "off"))
}

/// Whether dimensions read only for their columns are folded into the fact table as lookups
/// (see `joins::Fold`): they are, unless the environment says `SPOOL_FOLDS=off` (for
/// measuring what they buy; read once).
fn folds_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    switched_on(&ON, "SPOOL_FOLDS")
}

/// Whether join order counts the dimensions' filtered rows: it does, unless the environment
/// says `SPOOL_JOIN_COUNTS=off` (for measuring what it buys; read once).
fn counts_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    switched_on(&ON, "SPOOL_JOIN_COUNTS")
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
