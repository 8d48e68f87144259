//! The Polars engine's view of a project: the shared catalog's snapshot (`spool-catalog`:
//! folders, `project.toml`, schemas, tables, views, version) with each table's lazy scan, and
//! the facts the planner's star-join levers found, kept while the project's files are as they
//! were.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use polars::prelude::*;

use spool_catalog::Snapshot;
pub(crate) use spool_catalog::{CatalogError, Source};

/// Opened projects (see [`spool_catalog::Cache`]).
pub(crate) type Cache = spool_catalog::Cache<OpenProject>;

/// A project opened for queries: its snapshot and its tables' scans (lazy frames, cheap to
/// copy).
#[derive(Clone)]
pub(crate) struct OpenProject {
    /// The catalog's snapshot the query binds against.
    pub snapshot: Arc<Snapshot>,
    tables: PlHashMap<String, LazyFrame>,
    /// Each table's source, by its key ([`crate::lower::table_key`]).
    pub sources: HashMap<String, Source>,
    /// What dimensions' filters keep of their keys and tables' row counts, found for the
    /// planner's star-join levers (see `stats`): by the plan as `explain` prints it. Kept with
    /// the opened project, so a changed file (a new version, a new `OpenProject`) starts it
    /// empty.
    pub keys: Arc<std::sync::Mutex<HashMap<String, Option<spool_planner::passes::KeyFacts>>>>,
    /// Dimensions' kept rows by key, for joins by lookup (see `stats::ProjectSource`): by the
    /// dimension's plan and key. Kept and started again like `keys`.
    pub lookups: Arc<std::sync::Mutex<HashMap<String, Option<Arc<crate::keyset::Lookup>>>>>,
}

impl OpenProject {
    /// The frame of the project's table of key `name` ([`crate::lower::table_key`]).
    pub(crate) fn table(&self, name: &str) -> Option<LazyFrame> {
        self.tables.get(name).cloned()
    }

    /// The planner's catalog of the project.
    pub(crate) fn planner(&self) -> &spool_planner::Catalog {
        &self.snapshot.catalog
    }

    /// Scans the snapshot's tables.
    pub(crate) fn new(snapshot: Arc<Snapshot>) -> Result<Self, CatalogError> {
        let mut tables = PlHashMap::new();
        let mut sources = HashMap::new();
        for table in snapshot.tables() {
            let key = crate::lower::table_key(&table.schema, &table.name);
            let lf = table.source.scan().map_err(|e| {
                CatalogError::Broken(format!(
                    "table '{}.{}' of project '{}' cannot be read: {e}",
                    table.schema, table.name, snapshot.project
                ))
            })?;
            tables.insert(key.clone(), lf);
            sources.insert(key, table.source.clone());
        }
        Ok(Self {
            snapshot,
            tables,
            sources,
            keys: Arc::default(),
            lookups: Arc::default(),
        })
    }
}

/// Opens `project` under `root` without a cache.
#[cfg(test)]
pub(crate) fn open(root: &std::path::Path, project: &str) -> Result<OpenProject, CatalogError> {
    OpenProject::new(Arc::new(spool_catalog::open(root, project)?))
}

/// A run of consecutive whole row groups of one Parquet file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RowGroups {
    pub path: PathBuf,
    /// The first row, counted from the start of the file.
    pub offset: usize,
    pub rows: usize,
}

impl RowGroups {
    /// The rows of this run as a lazy scan: Polars reads only the row groups the slice covers.
    pub fn scan(&self) -> PolarsResult<LazyFrame> {
        let rows = IdxSize::try_from(self.rows)
            .map_err(|_| polars_err!(ComputeError: "a row group is too large"))?;
        Ok(Source::Parquet(self.path.clone())
            .scan()?
            .slice(self.offset as i64, rows))
    }
}

/// Splits a Parquet table into runs of whole row groups of at least `min_rows` rows each (the
/// last may be smaller), in the order a scan of the table reads them; `None` for a CSV table.
pub(crate) fn row_groups(source: &Source, min_rows: usize) -> PolarsResult<Option<Vec<RowGroups>>> {
    let Some(files) = source.parquet_files()? else {
        return Ok(None);
    };
    let mut runs = Vec::new();
    for path in files {
        let metadata = ParquetReader::new(fs::File::open(&path)?)
            .get_metadata()?
            .clone();
        let mut offset = 0;
        let mut run: Option<RowGroups> = None;
        for group in &metadata.row_groups {
            let rows = group.num_rows();
            let current = run.get_or_insert_with(|| RowGroups {
                path: path.clone(),
                offset,
                rows: 0,
            });
            current.rows += rows;
            offset += rows;
            if current.rows >= min_rows {
                runs.extend(run.take());
            }
        }
        runs.extend(run.filter(|r| r.rows > 0));
    }
    Ok(Some(runs))
}
