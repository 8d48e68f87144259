//! Which engine runs a project's queries. A project's folder may hold a `project.toml`:
//!
//! ```toml
//! engine = "spark"   # or "polars", the default
//! ```
//!
//! Spark projects run on the server's `spark_remote`; everything else on the embedded Polars
//! engine. What the projects hold (the metadata calls, source versions for result reuse) is
//! `spool-catalog`'s for every project, and stored results are converted by Polars: those are
//! ports of their own (`ProjectCatalog`, `Transcoder`), not the engines'.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use spool_domain::{ProjectName, QueryRequest};
use spool_engine_spark::SparkEngine;
use spool_ports::{CancelToken, EngineError, Execution, QueryEngine, ResultSink};

/// The file in a project's folder that chooses its engine.
pub const PROJECT_FILE: &str = spool_catalog::PROJECT_FILE;

/// The engines a project can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Polars,
    Spark,
}

/// Routes each query to its project's engine.
#[derive(Clone)]
pub struct Engines {
    root: PathBuf,
    polars: Arc<dyn QueryEngine>,
    spark: Option<Arc<SparkEngine>>,
}

impl Engines {
    /// Projects under `root`; Spark projects run on `spark` when there is one.
    pub fn new(
        root: impl Into<PathBuf>,
        polars: Arc<dyn QueryEngine>,
        spark: Option<SparkEngine>,
    ) -> Self {
        Self {
            root: root.into(),
            polars,
            spark: spark.map(Arc::new),
        }
    }

    /// Reads the project's choice (a directory lookup and a small file; off the reactor).
    async fn kind_of(&self, project: &ProjectName) -> Result<Kind, EngineError> {
        let root = self.root.clone();
        let project = project.clone();
        tokio::task::spawn_blocking(move || kind(&root, &project))
            .await
            .map_err(|e| EngineError::Internal(format!("engine task failed: {e}")))?
    }

    async fn engine(&self, project: &ProjectName) -> Result<&dyn QueryEngine, EngineError> {
        Ok(match self.kind_of(project).await? {
            Kind::Polars => self.polars.as_ref(),
            Kind::Spark => match &self.spark {
                Some(spark) => spark.as_ref(),
                None => {
                    return Err(EngineError::Execution(format!(
                        "project '{project}' runs on Spark ({PROJECT_FILE}), but this server \
                         has no spark_remote configured"
                    )));
                }
            },
        })
    }
}

/// The engine `project.toml` in `project`'s folder under `root` names.
fn kind(root: &Path, project: &ProjectName) -> Result<Kind, EngineError> {
    match spool_catalog::settings(root, project.as_str()) {
        Ok(settings) => Ok(match settings.engine {
            spool_catalog::EngineKind::Polars => Kind::Polars,
            spool_catalog::EngineKind::Spark => Kind::Spark,
        }),
        // The engine reports the missing project in its own words.
        Err(spool_catalog::CatalogError::NotFound) => Ok(Kind::Polars),
        Err(spool_catalog::CatalogError::Broken(message)) => Err(EngineError::Execution(message)),
    }
}

#[async_trait]
impl QueryEngine for Engines {
    async fn execute(
        &self,
        request: &QueryRequest,
        sink: Box<dyn ResultSink>,
        cancel: CancelToken,
    ) -> Result<Execution, EngineError> {
        self.engine(&request.project)
            .await?
            .execute(request, sink, cancel)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_engine_polars::PolarsEngine;

    fn engines(root: &Path, spark: bool) -> Engines {
        let spark = spark.then(|| SparkEngine::new(root, "sc://127.0.0.1:9").expect("remote"));
        Engines::new(root, Arc::new(PolarsEngine::new(root)), spark)
    }

    // The Spark client's channel is made inside a runtime, as the server makes it.
    #[tokio::test]
    async fn project_toml_chooses_the_engine_and_bad_files_say_what_is_wrong() {
        let root = tempfile::tempdir().expect("tempdir");
        for p in ["plain", "Spark1", "bad", "odd"] {
            std::fs::create_dir_all(root.path().join(p)).expect("mkdir");
        }
        std::fs::write(
            root.path().join("Spark1/project.toml"),
            "engine = \"spark\"\n",
        )
        .expect("w");
        std::fs::write(root.path().join("bad/project.toml"), "engin = 1\n").expect("w");
        std::fs::write(root.path().join("odd/project.toml"), "engine = \"duck\"\n").expect("w");
        let name = |p: &str| ProjectName::parse(p).expect("name");
        let kind_of = |p: &str| kind(root.path(), &name(p));
        assert_eq!(kind_of("plain").expect("ok"), Kind::Polars);
        assert_eq!(kind_of("spark1").expect("ok"), Kind::Spark);
        assert_eq!(kind_of("missing").expect("ok"), Kind::Polars);
        let bad = kind_of("bad").expect_err("bad").to_string();
        assert!(
            bad.contains("project.toml of project 'bad' is invalid"),
            "{bad}"
        );
        let odd = kind_of("odd").expect_err("odd").to_string();
        assert!(odd.contains("names engine \"duck\""), "{odd}");
        let without = engines(root.path(), false);
        let e = without
            .engine(&name("Spark1"))
            .await
            .err()
            .expect("no spark")
            .to_string();
        assert!(e.contains("no spark_remote configured"), "{e}");
        let with = engines(root.path(), true);
        assert!(with.engine(&name("Spark1")).await.is_ok());
    }
}
