//! The query engine port: runs one query and writes its encoded result into a sink.

use async_trait::async_trait;
use spool_domain::{ProjectName, QueryRequest, ResultColumn};

use crate::{CancelToken, ResultSink, ResultStoreError};

/// Why a query produced no result.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request names a project the catalog does not have.
    #[error("Project '{0}' does not exist;")]
    ProjectNotFound(ProjectName),
    /// The SQL is malformed, unsupported, or refers to something that does not exist. The
    /// message is meant for the user who wrote the SQL.
    #[error("{0}")]
    InvalidQuery(String),
    /// The query failed while running, for a reason the user can act on (bad cast, overflow).
    #[error("{0}")]
    Execution(String),
    /// The cancel token was set; the sink holds an incomplete result and must be discarded.
    #[error("query was cancelled")]
    Cancelled,
    /// Writing the result failed.
    #[error("writing the result failed")]
    Sink(#[from] ResultStoreError),
    /// The engine could not be reached (a cluster down, a connection refused); submitting
    /// again later may succeed. The message says which engine and why.
    #[error("{0}")]
    Unavailable(String),
    /// The query needed more memory than its budget (or than the machine had) and was
    /// stopped. The message names the budget and is meant for the user.
    #[error("{0}")]
    OutOfMemory(String),
    /// The engine's process ended while it ran the query (a crash, a signal). The message
    /// says how and is meant for the user; no other query was affected.
    #[error("{0}")]
    Crashed(String),
    /// The engine broke (a panic, a bug); details are for the log, not the user.
    #[error("internal engine error: {0}")]
    Internal(String),
}

impl EngineError {
    /// The same error with each of `folders`' paths in its message replaced by its name
    /// (`/srv/spool/data/projects` by `<projects>`), in the form given and as an absolute path:
    /// a user reads engine messages, and learns no folder of the server from them.
    #[must_use]
    pub fn without_paths(self, folders: &[(&std::path::Path, &str)]) -> Self {
        let redact = |mut message: String| {
            for (folder, name) in folders {
                let absolute = std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf());
                for form in [absolute.as_path(), folder] {
                    let text = form.display().to_string();
                    // A bare "." or "/" would redact every dot or slash.
                    if text.len() > 1 {
                        message = message.replace(&text, name);
                    }
                }
            }
            message
        };
        match self {
            Self::InvalidQuery(m) => Self::InvalidQuery(redact(m)),
            Self::Execution(m) => Self::Execution(redact(m)),
            Self::Unavailable(m) => Self::Unavailable(redact(m)),
            Self::OutOfMemory(m) => Self::OutOfMemory(redact(m)),
            Self::Crashed(m) => Self::Crashed(redact(m)),
            Self::Internal(m) => Self::Internal(redact(m)),
            other => other,
        }
    }
}

/// A finished execution: the sink holding the complete encoded result, ready to commit.
pub struct Execution {
    /// The sink the engine wrote into, not yet committed.
    pub sink: Box<dyn ResultSink>,
    /// Rows written.
    pub rows: u64,
    /// The result's columns and their SQL types.
    pub columns: Vec<ResultColumn>,
}

impl std::fmt::Debug for Execution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Execution")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

/// A table or view of a project, as SQL sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// The schema (Kylin's database) it is in, spelled as the catalog reports it; `None`: the
    /// project's default schema, named as the project in upper case.
    pub schema: Option<String>,
    /// The name queries use, spelled as the catalog reports it.
    pub name: String,
    /// A view (defined by SQL over the project's tables) rather than a table of data files.
    pub view: bool,
    /// Its columns in order, with their SQL types.
    pub columns: Vec<ResultColumn>,
}

/// Runs SQL against a project's tables: the one thing every engine does (Polars in this
/// process or in worker processes, Spark, the fakes). What a project holds is the
/// [`ProjectCatalog`]'s to say, and converting a stored result the [`Transcoder`]'s.
///
/// Contract (checked for every engine by `testing::check_query_engine`):
/// - `execute` encodes the result as CSV (RFC 4180 quoting, NULL as an empty field, no header
///   row) and writes it into `sink` as it is produced: memory must not grow with the number of
///   result rows. The returned `Execution` counts the rows written and names the columns.
/// - SQL the engine cannot accept is `InvalidQuery`, with a message for the user; a project
///   it does not have is `ProjectNotFound`.
/// - The engine checks `cancel` at least between batches and returns `Cancelled` soon after it
///   is set. An engine that cannot interrupt its work must still return promptly once its
///   work ends and must never report a cancelled run as a success.
/// - A panic inside the engine is reported as `Internal`, never propagated.
/// - The SQL can read only the tables and views of `request.project`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait QueryEngine: Send + Sync {
    /// Runs `request` and writes its result into `sink`.
    async fn execute(
        &self,
        request: &QueryRequest,
        sink: Box<dyn ResultSink>,
        cancel: CancelToken,
    ) -> Result<Execution, EngineError>;
}

/// What the projects hold: the metadata calls and result reuse read it, whichever engine runs
/// a project's queries.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ProjectCatalog: Send + Sync {
    /// The names of the projects, as the catalog spells them, sorted. The default: none.
    async fn projects(&self) -> Result<Vec<String>, EngineError> {
        Ok(Vec::new())
    }

    /// The tables and views of `project`, sorted by schema and name, with their columns;
    /// `ProjectNotFound` when there is no such project. The default: it cannot tell.
    async fn describe(&self, project: &ProjectName) -> Result<Vec<TableInfo>, EngineError> {
        let _ = project;
        Err(EngineError::InvalidQuery(
            "this catalog cannot describe its projects".to_owned(),
        ))
    }

    /// A version of `project`'s tables: it changes whenever data a query could read changes
    /// (for files: their names, sizes and modification times). Result reuse compares it;
    /// `None` (the default) means the catalog cannot tell, and nothing is reused.
    async fn source_version(&self, project: &ProjectName) -> Result<Option<String>, EngineError> {
        let _ = project;
        Ok(None)
    }
}

/// Converts stored results to another format, for a download in a format other than the one
/// submitted.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Transcoder: Send + Sync {
    /// Re-encodes a stored result (written as `from`, with `columns`) as `to` into `sink`, in
    /// bounded memory. The default: it cannot (an invalid request).
    async fn transcode(
        &self,
        stored: crate::StoredResult,
        from: &spool_domain::OutputSpec,
        columns: &[ResultColumn],
        to: &spool_domain::OutputSpec,
        sink: Box<dyn ResultSink>,
        cancel: CancelToken,
    ) -> Result<Execution, EngineError> {
        let _ = (stored, from, columns, to, sink, cancel);
        Err(EngineError::InvalidQuery(
            "stored results cannot be converted here".to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_no_folder_of_the_server() {
        let projects = std::path::Path::new("/srv/spool/data/projects");
        let error = EngineError::Execution(
            "table 'T' of project 'ssb' cannot be read: /srv/spool/data/projects/ssb/T.parquet: \
             no such file"
                .to_owned(),
        );
        assert_eq!(
            error.without_paths(&[(projects, "<projects>")]).to_string(),
            "table 'T' of project 'ssb' cannot be read: <projects>/ssb/T.parquet: no such file"
        );
        // A relative folder is redacted as given and as the absolute path it stands for.
        let relative = std::path::Path::new("data/scratch");
        let absolute = std::path::absolute(relative).expect("absolute");
        let error = EngineError::Internal(format!("{}/x and data/scratch/y", absolute.display()));
        assert_eq!(
            error.without_paths(&[(relative, "<scratch>")]).to_string(),
            "internal engine error: <scratch>/x and <scratch>/y"
        );
        assert!(matches!(
            EngineError::Cancelled.without_paths(&[(projects, "<projects>")]),
            EngineError::Cancelled
        ));
    }
}
