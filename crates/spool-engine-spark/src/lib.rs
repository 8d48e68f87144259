//! The query engine on an Apache Spark cluster, over Spark Connect (Spark 4.x).
//!
//! One query, one Spark session: the project's tables the query reads are registered as temp
//! views over their files (Spool resolves the paths, never user SQL), its views as SQL views,
//! then the checked query runs as a reattachable execution whose Arrow batches are decoded by
//! Polars' IPC reader and written by the shared encoders (`spool-formats`), so a result is the
//! same file whichever engine ran it.
//!
//! Invariants:
//! - SQL reaches Spark only after [`sandbox::check`] accepted it, printed from the checked AST.
//! - The result streams: at most [`BATCHES_IN_FLIGHT`] decoded batches wait for the encoder;
//!   memory does not grow with the number of result rows.
//! - A stop interrupts the Spark operation (by its id) within [`CANCEL_POLL`]; a cancelled run
//!   is never reported as a success.
//! - A cluster that cannot be reached fails the query in seconds as
//!   [`EngineError::Unavailable`].

mod catalog;
mod client;
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
use spool_formats::{Output, types};
use spool_ports::{CancelToken, EngineError, Execution, QueryEngine, ResultSink};
use tracing::debug;

use crate::client::Client;
pub use crate::client::{Remote, SparkError, reattaches};
use crate::proto::spark::connect as pb;

/// Decoded batches waiting for the encoder, at most.
pub const BATCHES_IN_FLIGHT: usize = 2;
/// How often a running query looks at its cancel token.
pub const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Session settings every query runs with: Kylin's SQL means `"X"` as an identifier, and the
/// text is never subject to variable substitution.
const SESSION_CONFIG: &[(&str, &str)] = &[
    ("spark.sql.ansi.enabled", "true"),
    ("spark.sql.ansi.doubleQuotedIdentifiers", "true"),
    ("spark.sql.variable.substitute", "false"),
];

/// A [`QueryEngine`] running queries on a Spark cluster, over project folders under `root`.
#[derive(Debug, Clone)]
pub struct SparkEngine {
    root: PathBuf,
    scratch: PathBuf,
    client: Client,
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
        let root = self.root.clone();
        let name = request.project.as_str().to_owned();
        let project = tokio::task::spawn_blocking(move || catalog::open(&root, &name))
            .await
            .map_err(|e| EngineError::Internal(format!("engine task failed: {e}")))?
            .map_err(|e| {
                EngineError::Execution(format!(
                    "project '{}' cannot be listed: {e}",
                    request.project
                ))
            })?
            .ok_or_else(|| EngineError::ProjectNotFound(request.project.clone()))?;
        let checked = sandbox::check(&request.sql, &project, request.offset, request.limit)
            .map_err(|refusal| match refusal {
                spool_sql::Refusal::Query(message) => EngineError::InvalidQuery(message),
                spool_sql::Refusal::Internal(message) => EngineError::Internal(message),
            })?;
        let session = self.client.session("spool");
        let outcome = self
            .run(&project, &checked, request, sink, &cancel, &session)
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
        project: &catalog::Project,
        checked: &sandbox::Checked,
        request: &QueryRequest,
        sink: Box<dyn ResultSink>,
        cancel: &CancelToken,
        session: &client::Session,
    ) -> Result<Execution, EngineError> {
        self.client
            .set_config(session, SESSION_CONFIG)
            .await
            .map_err(engine_error)?;
        register(&self.client, session, project, &checked.relations).await?;
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
        let encoder = tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                encode(&mut receive, &spec, sink, &scratch, &encoder_cancel)
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

/// Registers the relations a query reads (and, for views, what they read) as temp views.
async fn register(
    client: &Client,
    session: &client::Session,
    project: &catalog::Project,
    relations: &[String],
) -> Result<(), EngineError> {
    use pb::read::{DataSource, ReadType};
    // Tables first, then views in an order where each follows what it reads.
    let (tables, views) = registration_order(project, relations)?;
    let tables = tables.into_iter().map(|(name, source)| {
        let (format, path, csv) = match source {
            catalog::Source::Parquet(path) => ("parquet", path, false),
            catalog::Source::Csv(path) => ("csv", path, true),
        };
        let mut options = std::collections::HashMap::new();
        if csv {
            options.insert("header".to_owned(), "true".to_owned());
            options.insert("inferSchema".to_owned(), "true".to_owned());
        }
        let input = pb::Relation {
            common: None,
            rel_type: Some(pb::relation::RelType::Read(pb::Read {
                is_streaming: false,
                read_type: Some(ReadType::DataSource(DataSource {
                    format: Some(format.to_owned()),
                    schema: None,
                    options,
                    paths: vec![path.to_string_lossy().into_owned()],
                    predicates: Vec::new(),
                    source_name: None,
                })),
            })),
        };
        (name, input)
    });
    let views = views.into_iter().map(|(name, sql)| {
        let input = pb::Relation {
            common: None,
            rel_type: Some(pb::relation::RelType::Sql(pb::Sql {
                query: sql,
                ..pb::Sql::default()
            })),
        };
        (name, input)
    });
    for (name, input) in tables.chain(views) {
        let command =
            pb::command::CommandType::CreateDataframeView(pb::CreateDataFrameViewCommand {
                input: Some(input),
                name: name.clone(),
                is_global: false,
                replace: true,
            });
        client
            .command(session, command)
            .await
            .map_err(|e| match e {
                SparkError::Analysis(m) | SparkError::Execution(m) => {
                    EngineError::Execution(format!(
                        "table '{name}' of project '{}' cannot be read on Spark: {m}",
                        project.name
                    ))
                }
                other => engine_error(other),
            })?;
    }
    Ok(())
}

/// The tables (with their sources) and views (with their checked SQL) that reading
/// `relations` needs, views after everything they read (a depth-first post-order), each once.
#[allow(clippy::type_complexity)]
fn registration_order(
    project: &catalog::Project,
    relations: &[String],
) -> Result<(Vec<(String, catalog::Source)>, Vec<(String, String)>), EngineError> {
    struct Walk<'a> {
        project: &'a catalog::Project,
        done: std::collections::HashSet<String>,
        open: Vec<String>,
        tables: Vec<(String, catalog::Source)>,
        views: Vec<(String, String)>,
    }
    impl Walk<'_> {
        fn visit(&mut self, name: &str) -> Result<(), EngineError> {
            let key = name.to_lowercase();
            if self.done.contains(&key) {
                return Ok(());
            }
            if let Some((spelled, source)) = self.project.tables.get(&key) {
                self.tables.push((spelled.clone(), source.clone()));
            } else if let Some((spelled, text)) = self.project.views.get(&key) {
                if self.open.contains(&key) {
                    return Err(EngineError::Execution(format!(
                        "view '{spelled}' of project '{}' reads itself (through {})",
                        self.project.name,
                        self.open.join(" -> ")
                    )));
                }
                let checked = sandbox::check_view(text, self.project).map_err(|e| {
                    EngineError::Execution(format!(
                        "view '{spelled}' of project '{}' is invalid: {e}",
                        self.project.name
                    ))
                })?;
                self.open.push(key.clone());
                for read in &checked.relations {
                    self.visit(read)?;
                }
                self.open.pop();
                self.views.push((spelled.clone(), checked.sql));
            }
            self.done.insert(key);
            Ok(())
        }
    }
    let mut walk = Walk {
        project,
        done: std::collections::HashSet::new(),
        open: Vec::new(),
        tables: Vec::new(),
        views: Vec::new(),
    };
    for relation in relations {
        walk.visit(relation)?;
    }
    Ok((walk.tables, walk.views))
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
) -> Result<Execution, EngineError> {
    let mut sink = Some(sink);
    let mut output: Option<(Output, Vec<ResultColumn>)> = None;
    while let Some(data) = batches.blocking_recv() {
        if cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        let mut frame = decode(data)?;
        if output.is_none() {
            let schema = frame.schema().as_ref().clone();
            let columns = schema
                .iter()
                .map(|(name, dtype)| ResultColumn {
                    name: name.to_string(),
                    sql_type: types::sql_type(dtype),
                })
                .collect();
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn views_are_registered_after_what_they_read_and_cycles_are_refused() {
        let mut p = catalog::Project {
            name: "p".to_owned(),
            ..catalog::Project::default()
        };
        p.tables.insert(
            "t".into(),
            (
                "T".into(),
                catalog::Source::Parquet(PathBuf::from("/d/T.parquet")),
            ),
        );
        for (name, sql) in [
            ("base", "select * from t"),
            ("a", "select * from base"),
            ("c", "select * from base join a on 1 = 1"),
        ] {
            p.views
                .insert(name.into(), (name.to_uppercase(), sql.to_owned()));
        }
        let (tables, views) =
            registration_order(&p, &["A".to_owned(), "C".to_owned()]).expect("an order");
        assert_eq!(tables.len(), 1);
        let order: Vec<&str> = views.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(order, ["BASE", "A", "C"]);

        p.views
            .insert("x".into(), ("X".into(), "select * from y".into()));
        p.views
            .insert("y".into(), ("Y".into(), "select * from x".into()));
        let e = registration_order(&p, &["X".to_owned()]).expect_err("a cycle");
        assert!(e.to_string().contains("reads itself"), "{e}");
    }
}
