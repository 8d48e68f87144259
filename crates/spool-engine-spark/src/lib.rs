//! The query engine on an Apache Spark cluster, over Spark Connect (Spark 4.x).
//!
//! One query, one Spark session: the query is bound by Spool's planner against the project's
//! catalog snapshot (`spool-catalog`, the same as on Polars) and the plan is printed as Spark
//! SQL ([`lower`]); the tables it scans are registered as temp views over their files (Spool
//! resolves the paths, never user SQL), then the printed query runs as a reattachable execution
//! whose Arrow batches are decoded by Polars' IPC reader and written by the shared encoders
//! (`spool-formats`), so a result is the same file whichever engine ran it.
//!
//! Invariants:
//! - SQL reaches Spark only as a plan printed by [`lower`], after binding accepted the query
//!   ([`sandbox`]).
//! - The result streams: at most [`BATCHES_IN_FLIGHT`] decoded batches wait for the encoder;
//!   memory does not grow with the number of result rows.
//! - A stop interrupts the Spark operation (by its id) within [`CANCEL_POLL`]; a cancelled run
//!   is never reported as a success.
//! - A cluster that cannot be reached fails the query in seconds as
//!   [`EngineError::Unavailable`].

mod client;
mod lower;
#[cfg(feature = "oracle")]
pub mod oracle;
mod proto;
mod sandbox;

use std::io::Cursor;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use polars::prelude::{DataFrame, IpcStreamReader, SerReader};
use spool_domain::{QueryRequest, ResultColumn};
use spool_formats::Output;
use spool_ports::{CancelToken, EngineError, Execution, QueryEngine, ResultSink};
use tracing::debug;

use crate::client::Client;
pub use crate::client::{Remote, SparkError, reattaches};
use crate::proto::spark::connect as pb;

/// Decoded batches waiting for the encoder, at most.
pub const BATCHES_IN_FLIGHT: usize = 2;
/// How often a running query looks at its cancel token.
pub const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Session settings every query runs with: names match as printed (a table may have columns
/// `a` and `A`), timestamps have no time zone to convert through (UTC), and the text is never
/// subject to variable substitution.
const SESSION_CONFIG: &[(&str, &str)] = &[
    ("spark.sql.ansi.enabled", "true"),
    ("spark.sql.caseSensitive", "true"),
    ("spark.sql.session.timeZone", "UTC"),
    ("spark.sql.variable.substitute", "false"),
];

/// A [`QueryEngine`] running queries on a Spark cluster, over project folders under `root`.
#[derive(Debug, Clone)]
pub struct SparkEngine {
    root: PathBuf,
    scratch: PathBuf,
    client: Client,
    catalogs: std::sync::Arc<spool_catalog::Cache<std::sync::Arc<spool_catalog::Snapshot>>>,
}

impl SparkEngine {
    /// Serves the projects under `root` on the Connect server at `remote` (`sc://host:port`).
    /// Nothing is sent until the first query. Must be called inside a Tokio runtime (the
    /// connection's background task starts there).
    pub fn new(root: impl Into<PathBuf>, remote: &str) -> Result<Self, String> {
        let remote = Remote::parse(remote)?;
        Ok(Self {
            root: root.into(),
            scratch: std::env::temp_dir().join("spool-scratch"),
            client: Client::new(remote)?,
            catalogs: std::sync::Arc::default(),
        })
    }

    /// Puts temporary files (XLSX sheets being written) under `dir`.
    pub fn with_scratch(mut self, dir: impl Into<PathBuf>) -> Self {
        self.scratch = dir.into();
        self
    }
}

fn engine_error(e: SparkError) -> EngineError {
    match e {
        SparkError::Unavailable(m) => EngineError::Unavailable(m),
        SparkError::Analysis(m) => EngineError::InvalidQuery(m),
        SparkError::Execution(m) => EngineError::Execution(m),
        SparkError::Interrupted => EngineError::Cancelled,
    }
}

#[async_trait]
impl QueryEngine for SparkEngine {
    async fn execute(
        &self,
        request: &QueryRequest,
        sink: Box<dyn ResultSink>,
        cancel: CancelToken,
    ) -> Result<Execution, EngineError> {
        // Spark's messages name the files it read; users learn no folder of the server.
        self.execute_unredacted(request, sink, cancel)
            .await
            .map_err(|e| {
                e.without_paths(&[(&self.root, "<projects>"), (&self.scratch, "<scratch>")])
            })
    }
}

impl SparkEngine {
    async fn execute_unredacted(
        &self,
        request: &QueryRequest,
        sink: Box<dyn ResultSink>,
        cancel: CancelToken,
    ) -> Result<Execution, EngineError> {
        let (root, catalogs) = (self.root.clone(), std::sync::Arc::clone(&self.catalogs));
        let name = request.project.as_str().to_owned();
        let snapshot = tokio::task::spawn_blocking(move || catalogs.open(&root, &name, Ok))
            .await
            .map_err(|e| EngineError::Internal(format!("engine task failed: {e}")))?
            .map_err(|e| match e {
                spool_catalog::CatalogError::NotFound => {
                    EngineError::ProjectNotFound(request.project.clone())
                }
                spool_catalog::CatalogError::Broken(message) => EngineError::Execution(message),
            })?;
        let (plan, printed) =
            sandbox::plan(&request.sql, &snapshot, request.offset, request.limit)?;
        let columns = plan
            .labels()
            .into_iter()
            .zip(plan.fields())
            .map(|(name, field)| ResultColumn {
                name,
                sql_type: field.ty.to_string(),
            })
            .collect();
        let checked = Checked {
            sql: printed.sql,
            scans: printed.scans,
            columns,
        };
        let session = self.client.session("spool");
        let outcome = self
            .run(&snapshot, &checked, request, sink, &cancel, &session)
            .await;
        // Drops the session's views and anything it still runs; never delays the answer.
        let client = self.client.clone();
        tokio::spawn(async move { client.release_session(&session).await });
        outcome
    }
}

impl SparkEngine {
    async fn run(
        &self,
        project: &spool_catalog::Snapshot,
        checked: &Checked,
        request: &QueryRequest,
        sink: Box<dyn ResultSink>,
        cancel: &CancelToken,
        session: &client::Session,
    ) -> Result<Execution, EngineError> {
        self.client
            .set_config(session, SESSION_CONFIG)
            .await
            .map_err(engine_error)?;
        register(&self.client, session, project, &checked.scans).await?;
        if cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        debug!(sql = %checked.sql, remote = %self.client.remote(), "running on spark");
        let plan = pb::Plan {
            op_type: Some(pb::plan::OpType::Root(pb::Relation {
                common: None,
                rel_type: Some(pb::relation::RelType::Sql(pb::Sql {
                    query: checked.sql.clone(),
                    ..pb::Sql::default()
                })),
            })),
        };
        let mut execution = self
            .client
            .execute(session, plan, None)
            .await
            .map_err(engine_error)?;
        let operation = execution.operation_id().to_owned();

        // Decoding and encoding run on a blocking thread; the gRPC stream stays here.
        let (batches, mut receive) = tokio::sync::mpsc::channel::<Bytes>(BATCHES_IN_FLIGHT);
        let spec = request.output.clone();
        let scratch = self.scratch.clone();
        let encoder_cancel = cancel.clone();
        let columns = checked.columns.clone();
        let encoder = tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                encode(
                    &mut receive,
                    &spec,
                    sink,
                    &scratch,
                    &encoder_cancel,
                    columns,
                )
            }))
            .unwrap_or_else(|_| Err(EngineError::Internal("a result encoder panicked".into())))
        });

        let streamed = stream(&mut execution, &batches, cancel).await;
        drop(batches);
        // Stopped, failed, or the encoder gave up (a result cap, a full store): the Spark
        // job must not run on for nothing.
        if !matches!(streamed, Ok(true)) {
            match self.client.interrupt(session, &operation).await {
                Ok(known) => debug!(
                    operation,
                    known, "interrupted an unfinished Spark operation"
                ),
                Err(e) => debug!(operation, error = %e, "interrupting a Spark operation failed"),
            }
        }
        let encoded = encoder
            .await
            .map_err(|e| EngineError::Internal(format!("engine task failed: {e}")))?;
        tokio::spawn(execution.release());
        streamed?;
        encoded
    }
}

/// A query as Spark runs it: the printed plan, the views it reads and its result's columns.
struct Checked {
    sql: String,
    /// (temp view, schema, table) for each table the plan scans.
    scans: Vec<(String, String, String)>,
    /// The result's labels and types, from the plan.
    columns: Vec<ResultColumn>,
}

/// Registers each table the plan scans as a temp view over its files, named as the printed
/// query reads it. CSV files are read with the columns and types the catalog found.
async fn register(
    client: &Client,
    session: &client::Session,
    project: &spool_catalog::Snapshot,
    scans: &[(String, String, String)],
) -> Result<(), EngineError> {
    for (view, schema, name) in scans {
        let table = project.table(schema, name).ok_or_else(|| {
            EngineError::Internal(format!(
                "the plan scans {schema}.{name}, which the snapshot lacks"
            ))
        })?;
        let ddl = matches!(table.source, spool_catalog::Source::Csv(_)).then(|| {
            let columns: Vec<String> = table
                .columns
                .iter()
                .map(|c| {
                    format!(
                        "`{}` {}",
                        c.name.replace('`', "``"),
                        lower::spark_type(c.ty)
                    )
                })
                .collect();
            columns.join(", ")
        });
        register_view(client, session, view, &table.source, ddl)
            .await
            .map_err(|e| match e {
                SparkError::Analysis(m) | SparkError::Execution(m) => {
                    EngineError::Execution(format!(
                        "table '{schema}.{name}' of project '{}' cannot be read on Spark: {m}",
                        project.project
                    ))
                }
                other => engine_error(other),
            })?;
    }
    Ok(())
}

/// Registers temp view `view` over `source`'s files (a CSV file with a header row, read with
/// the columns of `ddl`).
async fn register_view(
    client: &Client,
    session: &client::Session,
    view: &str,
    source: &spool_catalog::Source,
    ddl: Option<String>,
) -> Result<(), SparkError> {
    use pb::read::{DataSource, ReadType};
    let mut options = std::collections::HashMap::new();
    let (format, path) = match source {
        spool_catalog::Source::Parquet(path) | spool_catalog::Source::ParquetDir(path) => {
            ("parquet", path)
        }
        spool_catalog::Source::Csv(path) => {
            options.insert("header".to_owned(), "true".to_owned());
            if ddl.is_none() {
                options.insert("inferSchema".to_owned(), "true".to_owned());
            }
            ("csv", path)
        }
    };
    let input = pb::Relation {
        common: None,
        rel_type: Some(pb::relation::RelType::Read(pb::Read {
            is_streaming: false,
            read_type: Some(ReadType::DataSource(DataSource {
                format: Some(format.to_owned()),
                schema: ddl,
                options,
                paths: vec![path.to_string_lossy().into_owned()],
                predicates: Vec::new(),
                source_name: None,
            })),
        })),
    };
    let command = pb::command::CommandType::CreateDataframeView(pb::CreateDataFrameViewCommand {
        input: Some(input),
        name: view.to_owned(),
        is_global: false,
        replace: true,
    });
    client.command(session, command).await
}

/// Moves the execution's batches to the encoder until the result is complete (`true`), the
/// encoder stops taking them (`false`: it failed, and says why) or the query is cancelled.
async fn stream(
    execution: &mut client::Execution,
    batches: &tokio::sync::mpsc::Sender<Bytes>,
    cancel: &CancelToken,
) -> Result<bool, EngineError> {
    let cancelled = async {
        loop {
            if cancel.is_cancelled() {
                return;
            }
            tokio::time::sleep(CANCEL_POLL).await;
        }
    };
    tokio::pin!(cancelled);
    loop {
        let event = tokio::select! {
            () = &mut cancelled => return Err(EngineError::Cancelled),
            event = execution.next() => event.map_err(engine_error)?,
        };
        match event {
            Some(client::Event::Batch(data)) => {
                let sent = tokio::select! {
                    () = &mut cancelled => return Err(EngineError::Cancelled),
                    sent = batches.send(data) => sent,
                };
                if sent.is_err() {
                    // The encoder ended early; its own error says why.
                    return Ok(false);
                }
            }
            Some(client::Event::Complete) | None => return Ok(true),
        }
    }
}

/// Decodes each Arrow IPC batch and encodes it into the sink (a blocking thread).
fn encode(
    batches: &mut tokio::sync::mpsc::Receiver<Bytes>,
    spec: &spool_domain::OutputSpec,
    sink: Box<dyn ResultSink>,
    scratch: &std::path::Path,
    cancel: &CancelToken,
    columns: Vec<ResultColumn>,
) -> Result<Execution, EngineError> {
    let mut sink = Some(sink);
    let mut columns = Some(columns);
    let mut output: Option<(Output, Vec<ResultColumn>)> = None;
    while let Some(data) = batches.blocking_recv() {
        if cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        let mut frame = decode(data)?;
        if output.is_none() {
            let schema = frame.schema().as_ref().clone();
            let columns = columns.take().unwrap_or_default();
            let sink = sink
                .take()
                .ok_or_else(|| EngineError::Internal("result sink vanished".to_owned()))?;
            output = Some((Output::start(spec, &schema, sink, scratch)?, columns));
        }
        let Some((out, _)) = output.as_mut() else {
            unreachable!("started above");
        };
        if frame.height() > 0 && out.write(&mut frame) {
            // The write failed; finishing reports why.
            break;
        }
    }
    match output {
        Some((mut out, columns)) => out.finish(cancel, columns),
        None if cancel.is_cancelled() => Err(EngineError::Cancelled),
        None => Err(EngineError::Internal(
            "Spark sent no result batch (not even an empty one with the schema)".to_owned(),
        )),
    }
}

/// One Arrow IPC stream (schema and record batches) as a `DataFrame`.
fn decode(data: Bytes) -> Result<DataFrame, EngineError> {
    IpcStreamReader::new(Cursor::new(data))
        .finish()
        .map_err(|e| EngineError::Internal(format!("decoding a Spark Arrow batch: {e}")))
}
