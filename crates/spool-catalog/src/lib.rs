//! Spool's project catalog: what a project is, read once per version of its files, and the same
//! for every engine and the server.
//!
//! Projects are folders under the data root. A project folder holds, per table, one
//! `NAME.parquet` or `NAME.csv` file (CSV with a header row) or a folder `NAME/` of Parquet
//! files; per view, one `NAME.sql` file holding a query; and optionally a [`PROJECT_FILE`]:
//!
//! ```toml
//! engine = "spark"          # or "polars", the default
//! default_schema = "EDW"    # the schema of the folder's own tables [default: the name upper-cased]
//! ```
//!
//! Schemas (Kylin's databases): the folder's own tables and views are in the project's default
//! schema. A folder `<SCHEMA>.schema/` holds the tables and views of schema `<SCHEMA>`, laid
//! out the same way (`EDW.schema/TEST_CAL_DT.parquet` is `EDW.TEST_CAL_DT`). The file stem is
//! the table or view name, spelled as the catalog reports it. Anything else is ignored.
//!
//! A [`Snapshot`] is one version of a project: its settings, tables (with their files and
//! columns, read from Parquet footers and CSV headers), views, the planner's
//! [`spool_planner::Catalog`] and the [`version`] of the files it was read from. A query binds
//! against one snapshot and the engine executes that snapshot; [`Cache`] keeps a snapshot while
//! the project's files are as they were.
//!
//! Invariant: only paths found by listing the data root and the project folder are ever
//! opened; no name from a request is joined onto a path except the project name, which the
//! domain restricts to `[A-Za-z0-9_-]`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use polars::prelude::{
    DataType, LazyCsvReader, LazyFileListReader, LazyFrame, PlRefPath, PolarsResult,
    ScanArgsParquet,
};
use spool_domain::{ProjectName, ResultColumn};
use spool_planner::{Column, SqlType};
use spool_ports::{EngineError, TableInfo};

/// The file in a project's folder holding its settings.
pub const PROJECT_FILE: &str = "project.toml";

/// The suffix of a project's folders holding another schema's tables: `<SCHEMA>.schema/`.
pub const SCHEMA_SUFFIX: &str = ".schema";

/// Where a table's rows live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One Parquet file.
    Parquet(PathBuf),
    /// A folder of Parquet files (`*.parquet`, read in name order).
    ParquetDir(PathBuf),
    /// A CSV file with a header row.
    Csv(PathBuf),
}

impl Source {
    /// The table as a lazy Polars scan.
    pub fn scan(&self) -> PolarsResult<LazyFrame> {
        match self {
            Self::Parquet(path) => {
                LazyFrame::scan_parquet(PlRefPath::try_from_path(path)?, ScanArgsParquet::default())
            }
            Self::ParquetDir(dir) => LazyFrame::scan_parquet(
                PlRefPath::try_from_path(&dir.join("*.parquet"))?,
                ScanArgsParquet::default(),
            ),
            Self::Csv(path) => LazyCsvReader::new(PlRefPath::try_from_path(path)?)
                .with_has_header(true)
                .finish(),
        }
    }

    /// The Parquet files of the table, in the order a scan reads them; `None` for CSV.
    pub fn parquet_files(&self) -> std::io::Result<Option<Vec<PathBuf>>> {
        Ok(Some(match self {
            Self::Csv(_) => return Ok(None),
            Self::Parquet(path) => vec![path.clone()],
            Self::ParquetDir(dir) => {
                let mut files: Vec<PathBuf> = fs::read_dir(dir)?
                    .map(|entry| entry.map(|e| e.path()))
                    .collect::<std::io::Result<_>>()?;
                files.retain(|p| p.extension().is_some_and(|x| x == "parquet"));
                files.sort();
                files
            }
        }))
    }
}

/// The engines a project can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// The embedded Polars engine (the default).
    #[default]
    Polars,
    /// The server's Spark cluster (`spark_remote`).
    Spark,
}

/// A project's settings, from its [`PROJECT_FILE`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The engine its queries run on.
    pub engine: EngineKind,
    /// The schema of the folder's own tables, where unqualified names resolve (Kylin's
    /// project `default_database`); `None`: the project's name in upper case.
    pub default_schema: Option<String>,
}

/// The file as written.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectFile {
    engine: Option<String>,
    default_schema: Option<String>,
}

/// Why a project could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogError {
    /// There is no such project.
    NotFound,
    /// The project is broken (a table cannot be read, a view does not bind, its
    /// [`PROJECT_FILE`] is invalid); the message names what and is meant for the user.
    Broken(String),
}

impl std::fmt::Display for CatalogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound => f.write_str("no such project"),
            Self::Broken(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for CatalogError {}

/// The projects under `root`: its folders whose names are project names, sorted.
pub fn projects(root: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if entry.file_type()?.is_dir() && spool_domain::ProjectName::parse(&name).is_ok() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The folder of `project` under `root` and its spelling on disk: the exact name first, then
/// ignoring ASCII case.
pub fn project_dir(root: &Path, project: &str) -> Option<(String, PathBuf)> {
    let exact = root.join(project);
    if exact.is_dir() {
        return Some((project.to_owned(), exact));
    }
    fs::read_dir(root).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        (name.eq_ignore_ascii_case(project) && entry.path().is_dir()).then(|| (name, entry.path()))
    })
}

/// The settings of `project` under `root` (the defaults when it has no [`PROJECT_FILE`]).
pub fn settings(root: &Path, project: &str) -> Result<Settings, CatalogError> {
    let (name, dir) = project_dir(root, project).ok_or(CatalogError::NotFound)?;
    read_settings(&dir, &name)
}

fn read_settings(dir: &Path, project: &str) -> Result<Settings, CatalogError> {
    let text = match fs::read_to_string(dir.join(PROJECT_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
        Err(e) => {
            return Err(CatalogError::Broken(format!(
                "{PROJECT_FILE} of project '{project}' cannot be read: {e}"
            )));
        }
    };
    let file: ProjectFile = toml::from_str(&text).map_err(|e| {
        CatalogError::Broken(format!(
            "{PROJECT_FILE} of project '{project}' is invalid: {}",
            e.message()
        ))
    })?;
    let engine = match file
        .engine
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("polars") => EngineKind::Polars,
        Some("spark") => EngineKind::Spark,
        Some(other) => {
            return Err(CatalogError::Broken(format!(
                "{PROJECT_FILE} of project '{project}' names engine {other:?}; \
                 the engines are \"polars\" and \"spark\""
            )));
        }
    };
    if file
        .default_schema
        .as_deref()
        .is_some_and(|s| s.trim().is_empty())
    {
        return Err(CatalogError::Broken(format!(
            "{PROJECT_FILE} of project '{project}': default_schema is empty"
        )));
    }
    Ok(Settings {
        engine,
        default_schema: file.default_schema,
    })
}

/// The version of `project`'s files under `root`: each file's path, size and modification time
/// (nanoseconds), sorted, one per line; `None` if there is no such project. It changes whenever
/// data a query could read changes.
pub fn version(root: &Path, project: &str) -> std::io::Result<Option<String>> {
    let Some((_, dir)) = project_dir(root, project) else {
        return Ok(None);
    };
    folder_version(&dir).map(Some)
}

fn folder_version(dir: &Path) -> std::io::Result<String> {
    let mut lines = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in fs::read_dir(&folder)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
                continue;
            }
            let modified = meta
                .modified()?
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let path = entry.path();
            let relative = path.strip_prefix(dir).unwrap_or(&path);
            lines.push(format!(
                "{}\t{}\t{modified}",
                relative.display(),
                meta.len()
            ));
        }
    }
    lines.sort();
    Ok(lines.join("\n"))
}

/// A table of a snapshot: where it is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFile {
    /// Its schema, as the catalog spells it.
    pub schema: String,
    /// Its name, as the catalog spells it.
    pub name: String,
    /// Its files.
    pub source: Source,
    /// The columns SQL can read, in the file's order, with their types.
    pub columns: Vec<Column>,
}

/// One version of a project, read once: every engine executes against it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The project's name as its folder spells it.
    pub project: String,
    /// The [`version`] of the files it was read from.
    pub version: String,
    /// Its settings.
    pub settings: Settings,
    /// The schema unqualified names resolve in.
    pub default_schema: String,
    /// Its tables and views as Spool's planner binds against them.
    pub catalog: spool_planner::Catalog,
    /// Every table and view with its columns, sorted by schema and name (the metadata calls).
    pub described: Vec<TableInfo>,
    /// Its tables by schema and name, as spelled.
    tables: BTreeMap<(String, String), TableFile>,
}

impl Snapshot {
    /// The table `schema.name` as the catalog spells them (a plan's `Scan`).
    pub fn table(&self, schema: &str, name: &str) -> Option<&TableFile> {
        self.tables.get(&(schema.to_owned(), name.to_owned()))
    }

    /// Every table, sorted by schema and name.
    pub fn tables(&self) -> impl Iterator<Item = &TableFile> {
        self.tables.values()
    }
}

/// The SQL type of a Polars column, if Spool's SQL can read it.
pub fn sql_type(dtype: &DataType) -> Option<SqlType> {
    Some(match dtype {
        DataType::Boolean => SqlType::Boolean,
        DataType::Int8 => SqlType::TinyInt,
        DataType::Int16 | DataType::UInt8 => SqlType::SmallInt,
        DataType::Int32 | DataType::UInt16 => SqlType::Integer,
        DataType::Int64 | DataType::UInt32 => SqlType::BigInt,
        DataType::UInt64 => SqlType::decimal(20, 0)?,
        DataType::Decimal(p, s) => {
            SqlType::decimal(u8::try_from(*p).ok()?, u8::try_from(*s).ok()?)?
        }
        DataType::Float32 => SqlType::Float,
        DataType::Float64 => SqlType::Double,
        DataType::String => SqlType::Varchar,
        DataType::Date => SqlType::Date,
        DataType::Datetime(..) => SqlType::Timestamp,
        _ => return None,
    })
}

/// Reads `project` under `root`: its settings, every table's columns, its views (each bound,
/// so a broken view is reported here, naming it).
pub fn open(root: &Path, project: &str) -> Result<Snapshot, CatalogError> {
    let (name, dir) = project_dir(root, project).ok_or(CatalogError::NotFound)?;
    let broken = |what: String, e: &dyn std::fmt::Display| {
        CatalogError::Broken(format!("{what} of project '{name}' cannot be read: {e}"))
    };
    // Read before listing: a change while it opens makes the next query open it again.
    let version = folder_version(&dir).map_err(|e| broken("the folder".to_owned(), &e))?;
    let settings = read_settings(&dir, &name)?;
    let default_schema = settings
        .default_schema
        .clone()
        .unwrap_or_else(|| name.to_uppercase());
    let (listed_tables, listed_views) =
        list(&dir).map_err(|e| broken("the folder".to_owned(), &e))?;
    let schema_of =
        |owner: &Option<String>| owner.clone().unwrap_or_else(|| default_schema.clone());

    let mut catalog = spool_planner::Catalog::new(&default_schema);
    catalog.project = name.clone();
    let mut tables = BTreeMap::new();
    let mut described = Vec::new();
    for (owner, table, source) in listed_tables {
        let schema = schema_of(&owner);
        let what = || format!("table '{schema}.{table}'");
        let read = source
            .scan()
            .and_then(|mut lf| lf.collect_schema())
            .map_err(|e| broken(what(), &e))?;
        let columns: Vec<Column> = read
            .iter()
            .filter_map(|(column, dtype)| Some(Column::new(column.as_str(), sql_type(dtype)?)))
            .collect();
        described.push(describe(&schema, &table, false, &columns));
        catalog.add(spool_planner::Table {
            schema: schema.clone(),
            name: table.clone(),
            columns: columns.clone(),
            rows: None,
        });
        tables.insert(
            (schema.clone(), table.clone()),
            TableFile {
                schema,
                name: table,
                source,
                columns,
            },
        );
    }
    let mut views = Vec::new();
    for (owner, view, path) in listed_views {
        let schema = schema_of(&owner);
        let sql = fs::read_to_string(&path).map_err(|e| broken(format!("view '{view}'"), &e))?;
        catalog.add_view(spool_planner::View {
            schema: schema.clone(),
            name: view.clone(),
            sql: sql.clone(),
        });
        views.push((schema, view, sql));
    }
    // Each view is bound like a query (views may read views); its columns are its plan's.
    for (schema, view, sql) in views {
        let plan = spool_planner::bind_query(&sql, &catalog).map_err(|e| {
            CatalogError::Broken(format!("view '{view}' of project '{name}' is invalid: {e}"))
        })?;
        let columns: Vec<Column> = plan
            .fields()
            .iter()
            .map(|f| Column::new(&f.name, f.ty))
            .collect();
        described.push(describe(&schema, &view, true, &columns));
    }
    described.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    Ok(Snapshot {
        project: name,
        version,
        settings,
        default_schema,
        catalog,
        described,
        tables,
    })
}

fn describe(schema: &str, name: &str, view: bool, columns: &[Column]) -> TableInfo {
    TableInfo {
        schema: Some(schema.to_owned()),
        name: name.to_owned(),
        view,
        columns: columns
            .iter()
            .map(|c| ResultColumn {
                name: c.name.clone(),
                sql_type: c.ty.to_string(),
            })
            .collect(),
    }
}

/// The contents of a project folder: tables with their schema and sources, views with their
/// schema and files (`None`: the default schema, the project folder itself).
type Listing = (
    Vec<(Option<String>, String, Source)>,
    Vec<(Option<String>, String, PathBuf)>,
);

/// Lists the tables and views of a project folder and of its schema folders, sorted by schema
/// and name.
fn list(dir: &Path) -> std::io::Result<Listing> {
    let mut listing: Listing = (Vec::new(), Vec::new());
    list_into(dir, None, &mut listing)?;
    listing.0.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    listing.1.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    Ok(listing)
}

fn list_into(dir: &Path, schema: Option<&str>, listing: &mut Listing) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        let owner = schema.map(str::to_owned);
        if path.is_dir() {
            match file_name.strip_suffix(SCHEMA_SUFFIX) {
                // Schema folders sit in the project folder only.
                Some(inner) if schema.is_none() && !inner.is_empty() => {
                    list_into(&path, Some(inner), listing)?;
                }
                _ => listing.0.push((owner, file_name, Source::ParquetDir(path))),
            }
            continue;
        }
        let Some((stem, ext)) = file_name.rsplit_once('.') else {
            continue;
        };
        match ext.to_ascii_lowercase().as_str() {
            "parquet" => listing
                .0
                .push((owner, stem.to_owned(), Source::Parquet(path))),
            "csv" => listing.0.push((owner, stem.to_owned(), Source::Csv(path))),
            "sql" => listing.1.push((owner, stem.to_owned(), path)),
            _ => {}
        }
    }
    Ok(())
}

/// Opened projects, kept while their files are as they were: a query reuses a project's
/// snapshot (and what an engine built on it, `T`) instead of reading every footer and binding
/// every view again. Whether the files changed is the project's [`version`], read for each
/// query: a handful of `stat`s.
pub struct Cache<T> {
    open: Mutex<HashMap<String, (String, T)>>,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> Cache<T> {
    /// What `build` made of `project`'s snapshot, from the cache when the project's files have
    /// not changed since, else opened and built now (and kept).
    pub fn open(
        &self,
        root: &Path,
        project: &str,
        build: impl FnOnce(Arc<Snapshot>) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        let current = version(root, project)
            .map_err(|e| {
                CatalogError::Broken(format!("project '{project}' cannot be listed: {e}"))
            })?
            .ok_or(CatalogError::NotFound)?;
        let key = project.to_ascii_lowercase();
        if let Some((seen, built)) = self.lock().get(&key)
            && *seen == current
        {
            return Ok(built.clone());
        }
        let snapshot = open(root, project)?;
        let version = snapshot.version.clone();
        let built = build(Arc::new(snapshot))?;
        self.lock().insert(key, (version, built.clone()));
        Ok(built)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (String, T)>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The projects under a data root as the [`spool_ports::ProjectCatalog`] port: what every
/// engine's projects hold, read once per version of their files.
#[derive(Debug, Clone)]
pub struct FolderCatalog {
    root: PathBuf,
    snapshots: Arc<Cache<Arc<Snapshot>>>,
}

impl FolderCatalog {
    /// The projects under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            snapshots: Arc::default(),
        }
    }

    /// The current snapshot of `project` (from the cache while its files are unchanged).
    pub fn snapshot(&self, project: &str) -> Result<Arc<Snapshot>, CatalogError> {
        self.snapshots.open(&self.root, project, Ok)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Self) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || work(&this))
            .await
            .map_err(|e| EngineError::Internal(format!("catalog task failed: {e}")))?
    }
}

impl<T> std::fmt::Debug for Cache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl spool_ports::ProjectCatalog for FolderCatalog {
    async fn projects(&self) -> Result<Vec<String>, EngineError> {
        self.blocking(|this| {
            projects(&this.root)
                .map_err(|e| EngineError::Internal(format!("listing the projects folder: {e}")))
        })
        .await
    }

    async fn describe(&self, project: &ProjectName) -> Result<Vec<TableInfo>, EngineError> {
        let name = project.clone();
        self.blocking(move |this| match this.snapshot(name.as_str()) {
            Ok(snapshot) => Ok(snapshot.described.clone()),
            Err(CatalogError::NotFound) => Err(EngineError::ProjectNotFound(name)),
            Err(CatalogError::Broken(message)) => Err(EngineError::Execution(message)),
        })
        .await
    }

    /// Every file of the project's folder with its size and modification time: a new, grown
    /// or rewritten table file (or view) is a new version.
    async fn source_version(&self, project: &ProjectName) -> Result<Option<String>, EngineError> {
        let name = project.as_str().to_owned();
        self.blocking(move |this| {
            version(&this.root, &name)
                .map_err(|e| EngineError::Internal(format!("reading the project's files: {e}")))
        })
        .await
    }
}

#[cfg(test)]
mod tests;
