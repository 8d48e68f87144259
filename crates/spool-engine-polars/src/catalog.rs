//! The catalog: projects are folders under the data root; each holds tables and views.
//!
//! A project folder contains, per table, one `NAME.parquet` or `NAME.csv` file (CSV with a header
//! row) or a folder `NAME/` of Parquet files; and, per view, one `NAME.sql` file holding a
//! `SELECT`. The file stem is the table or view name, spelled as the catalog reports it.
//! Anything else in the folder is ignored.
//!
//! Schemas (Kylin's databases): the folder's own tables and views are in the project's default
//! schema, named by `default_schema` in the folder's `project.toml` or else the project's name
//! in upper case (`ssb` → `SSB`). A folder `<SCHEMA>.schema/` holds the tables and views of
//! schema `<SCHEMA>`, laid out the same way (`EDW.schema/TEST_CAL_DT.parquet` is
//! `EDW.TEST_CAL_DT`).
//!
//! Invariant: only paths found by listing the project folder are ever opened; no name from a
//! request is joined onto a path except the project name, which the domain restricts to
//! `[A-Za-z0-9_-]`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use spool_domain::ResultColumn;
use spool_ports::TableInfo;

/// Where a table's rows live.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Parquet(PathBuf),
    ParquetDir(PathBuf),
    Csv(PathBuf),
}

/// Opened projects, kept while their files are as they were: a query reuses the tables' scans
/// and schemas, the row estimates and the planned views instead of reading every footer and
/// planning every view again. Whether the files changed is the project's [`version`] (names,
/// sizes and modification times of every file), read for each query: a handful of `stat`s.
#[derive(Default)]
pub(crate) struct Cache {
    open: std::sync::Mutex<HashMap<String, (String, OpenProject)>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").finish_non_exhaustive()
    }
}

impl Cache {
    /// `project` under `root`, from the cache when its files have not changed since it was
    /// opened, else opened now (and kept).
    pub(crate) fn open(&self, root: &Path, project: &str) -> Result<OpenProject, CatalogError> {
        // Read before opening: a change while it opens makes the next query open it again.
        let version = version(root, project)
            .map_err(|e| {
                CatalogError::Broken(format!("project '{project}' cannot be listed: {e}"))
            })?
            .ok_or(CatalogError::NotFound)?;
        let key = project.to_ascii_lowercase();
        {
            let cached = self.lock();
            if let Some((seen, open)) = cached.get(&key)
                && *seen == version
            {
                return Ok(open.clone());
            }
        }
        let opened = open(root, project)?;
        self.lock().insert(key, (version, opened.clone()));
        Ok(opened)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, OpenProject)>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A project opened for queries: its tables' scans (lazy frames, cheap to copy) and the
/// planner's catalog of its tables and views.
#[derive(Clone)]
pub(crate) struct OpenProject {
    /// The project's tables and views as Spool's planner binds against them.
    pub planner: spool_planner::Catalog,
    tables: PlHashMap<String, LazyFrame>,
    /// Each table's source, by its key ([`crate::lower::table_key`]).
    pub sources: HashMap<String, Source>,
    /// Every table and view with its columns, sorted by name.
    pub described: Vec<TableInfo>,
    /// What dimensions' filters keep of their keys and tables' row counts, found for the
    /// planner's star-join levers (see `stats`): by the plan as `explain` prints it. Kept with the opened project, so a changed file (a new
    /// version, a new `OpenProject`) starts it empty.
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
}

/// The projects under `root`: its folders whose names are project names, sorted.
pub(crate) fn projects(root: &Path) -> std::io::Result<Vec<String>> {
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

fn describe_schema(schema_name: &str, name: &str, view: bool, schema: &Schema) -> TableInfo {
    TableInfo {
        schema: Some(schema_name.to_owned()),
        name: name.to_owned(),
        view,
        columns: schema
            .iter()
            .map(|(column, dtype)| ResultColumn {
                name: column.to_string(),
                sql_type: spool_formats::types::sql_type(dtype),
            })
            .collect(),
    }
}

/// Why a project could not be opened.
#[derive(Debug)]
pub(crate) enum CatalogError {
    NotFound,
    /// A table or view is broken; the message names it.
    Broken(String),
}

/// The version of `project`'s files under `root`: each file's path, size and modification time
/// (nanoseconds), sorted, one per line; `None` if there is no such project.
pub(crate) fn version(root: &Path, project: &str) -> std::io::Result<Option<String>> {
    let Some((_, dir)) = project_dir(root, project) else {
        return Ok(None);
    };
    let mut lines = Vec::new();
    let mut pending = vec![dir.clone()];
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
            let relative = path.strip_prefix(&dir).unwrap_or(&path);
            lines.push(format!(
                "{}\t{}\t{modified}",
                relative.display(),
                meta.len()
            ));
        }
    }
    lines.sort();
    Ok(Some(lines.join("\n")))
}

/// Finds the folder of `project` under `root`: exact name first, then ignoring ASCII case.
fn project_dir(root: &Path, project: &str) -> Option<(String, PathBuf)> {
    let exact = root.join(project);
    if exact.is_dir() {
        return Some((project.to_owned(), exact));
    }
    let entries = fs::read_dir(root).ok()?;
    entries.flatten().find_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        (name.eq_ignore_ascii_case(project) && entry.path().is_dir()).then(|| (name, entry.path()))
    })
}

fn scan(source: &Source) -> PolarsResult<LazyFrame> {
    match source {
        Source::Parquet(path) => {
            LazyFrame::scan_parquet(PlRefPath::try_from_path(path)?, ScanArgsParquet::default())
        }
        Source::ParquetDir(dir) => {
            let pattern = dir.join("*.parquet");
            LazyFrame::scan_parquet(
                PlRefPath::try_from_path(&pattern)?,
                ScanArgsParquet::default(),
            )
        }
        Source::Csv(path) => LazyCsvReader::new(PlRefPath::try_from_path(path)?)
            .with_has_header(true)
            .finish(),
    }
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
        Ok(scan(&Source::Parquet(self.path.clone()))?.slice(self.offset as i64, rows))
    }
}

/// Splits a Parquet table into runs of whole row groups of at least `min_rows` rows each (the
/// last may be smaller), in the order a scan of the table reads them; `None` for a CSV table.
pub(crate) fn row_groups(source: &Source, min_rows: usize) -> PolarsResult<Option<Vec<RowGroups>>> {
    let Some(files) = parquet_files(source)? else {
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

/// The Parquet files of a table, in the order a scan of it reads them; `None` for a CSV table.
fn parquet_files(source: &Source) -> std::io::Result<Option<Vec<PathBuf>>> {
    Ok(Some(match source {
        Source::Csv(_) => return Ok(None),
        Source::Parquet(path) => vec![path.clone()],
        Source::ParquetDir(dir) => {
            let mut files: Vec<PathBuf> = fs::read_dir(dir)?
                .map(|entry| entry.map(|e| e.path()))
                .collect::<std::io::Result<_>>()?;
            files.retain(|p| p.extension().is_some_and(|x| x == "parquet"));
            files.sort();
            files
        }
    }))
}

/// A folder of a project holding one schema's tables and views: `<SCHEMA>.schema/`.
const SCHEMA_SUFFIX: &str = ".schema";

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

/// The project's settings this engine reads from its `project.toml` (the server reads the
/// engine choice from the same file).
#[derive(Debug, Default, serde::Deserialize)]
struct ProjectSettings {
    /// The schema of the project folder's own tables, where unqualified names resolve
    /// (Kylin's project `default_database`) [default: the project's name in upper case].
    default_schema: Option<String>,
}

/// The default schema `project.toml` in `dir` names, if any.
fn default_schema(dir: &Path, project: &str) -> Result<Option<String>, CatalogError> {
    let path = dir.join("project.toml");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CatalogError::Broken(format!(
                "project.toml of project '{project}' cannot be read: {e}"
            )));
        }
    };
    let settings: ProjectSettings = toml::from_str(&text).map_err(|e| {
        CatalogError::Broken(format!(
            "project.toml of project '{project}' is invalid: {e}"
        ))
    })?;
    match settings.default_schema {
        Some(schema) if schema.trim().is_empty() => Err(CatalogError::Broken(format!(
            "project.toml of project '{project}': default_schema is empty"
        ))),
        other => Ok(other),
    }
}

/// Opens `project` under `root` and registers its tables and views.
pub(crate) fn open(root: &Path, project: &str) -> Result<OpenProject, CatalogError> {
    let (name, dir) = project_dir(root, project).ok_or(CatalogError::NotFound)?;
    let (tables, views) = list(&dir)
        .map_err(|e| CatalogError::Broken(format!("project '{name}' cannot be listed: {e}")))?;
    let default = default_schema(&dir, &name)?.unwrap_or_else(|| name.to_uppercase());
    let schema_of = |owner: &Option<String>| owner.clone().unwrap_or_else(|| default.clone());
    let mut frames = PlHashMap::new();
    let mut described = Vec::new();
    let mut schemas = Vec::new();
    let mut sources = HashMap::new();
    for (owner, table, source) in tables {
        let schema_name = schema_of(&owner);
        let lf = scan(&source).map_err(|e| {
            CatalogError::Broken(format!(
                "table '{schema_name}.{table}' of project '{name}' cannot be read: {e}"
            ))
        })?;
        // Schema resolution rewrites the plan in place; keep the registered frame pristine.
        let schema = lf.clone().collect_schema().map_err(|e| {
            CatalogError::Broken(format!(
                "table '{schema_name}.{table}' of project '{name}' cannot be read: {e}"
            ))
        })?;
        described.push(describe_schema(&schema_name, &table, false, &schema));
        let key = crate::lower::table_key(&schema_name, &table);
        schemas.push((schema_name, table, Schema::clone(&schema)));
        frames.insert(key.clone(), lf);
        sources.insert(key, source);
    }
    let view_texts: Vec<(String, String, String)> = views
        .into_iter()
        .map(|(owner, view, path)| {
            fs::read_to_string(&path)
                .map(|text| (schema_of(&owner), view.clone(), text))
                .map_err(|e| CatalogError::Broken(format!("view '{view}' cannot be read: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let mut planner = crate::lower::catalog(&default, &schemas, &view_texts);
    planner.project = name.clone();
    // Each view is bound like a query (views may read views), and its columns are its plan's.
    for (schema_name, view, text) in &view_texts {
        let plan = spool_planner::bind_query(text, &planner).map_err(|e| {
            CatalogError::Broken(format!("view '{view}' of project '{name}' is invalid: {e}"))
        })?;
        let mut schema = Schema::with_capacity(plan.fields().len());
        for field in plan.fields() {
            schema.insert(field.name.as_str().into(), crate::lower::dtype(field.ty));
        }
        described.push(describe_schema(schema_name, view, true, &schema));
    }
    described.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    Ok(OpenProject {
        planner,
        tables: frames,
        sources,
        described,
        keys: Arc::default(),
        lookups: Arc::default(),
    })
}
