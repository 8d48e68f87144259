//! The catalog: projects are folders under the data root; each holds tables and views.
//!
//! A project folder contains, per table, one `NAME.parquet` or `NAME.csv` file (CSV with a header
//! row) or a folder `NAME/` of Parquet files; and, per view, one `NAME.sql` file holding a
//! `SELECT`. The file stem is the table or view name, spelled as the catalog reports it.
//! Anything else in the folder is ignored.
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
    /// Each table's source, by the table's name as the catalog spells it.
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
    /// The frame of the project's table `name`, as the catalog spells it.
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

fn describe_schema(name: &str, view: bool, schema: &Schema) -> TableInfo {
    TableInfo {
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

/// The contents of a project folder: tables with their sources, views with their files.
type Listing = (Vec<(String, Source)>, Vec<(String, PathBuf)>);

/// Lists the tables and views of a project folder, sorted by name.
fn list(dir: &Path) -> std::io::Result<Listing> {
    let mut tables = Vec::new();
    let mut views = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            tables.push((file_name, Source::ParquetDir(path)));
            continue;
        }
        let Some((stem, ext)) = file_name.rsplit_once('.') else {
            continue;
        };
        match ext.to_ascii_lowercase().as_str() {
            "parquet" => tables.push((stem.to_owned(), Source::Parquet(path))),
            "csv" => tables.push((stem.to_owned(), Source::Csv(path))),
            "sql" => views.push((stem.to_owned(), path)),
            _ => {}
        }
    }
    tables.sort_by(|a, b| a.0.cmp(&b.0));
    views.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((tables, views))
}

/// Opens `project` under `root` and registers its tables and views.
pub(crate) fn open(root: &Path, project: &str) -> Result<OpenProject, CatalogError> {
    let (name, dir) = project_dir(root, project).ok_or(CatalogError::NotFound)?;
    let (tables, views) = list(&dir)
        .map_err(|e| CatalogError::Broken(format!("project '{name}' cannot be listed: {e}")))?;
    let mut frames = PlHashMap::new();
    let mut described = Vec::new();
    let mut schemas = Vec::new();
    for (table, source) in &tables {
        let lf = scan(source).map_err(|e| {
            CatalogError::Broken(format!(
                "table '{table}' of project '{name}' cannot be read: {e}"
            ))
        })?;
        // Schema resolution rewrites the plan in place; keep the registered frame pristine.
        let schema = lf.clone().collect_schema().map_err(|e| {
            CatalogError::Broken(format!(
                "table '{table}' of project '{name}' cannot be read: {e}"
            ))
        })?;
        described.push(describe_schema(table, false, &schema));
        schemas.push((table.clone(), Schema::clone(&schema)));
        frames.insert(table.clone(), lf);
    }
    let view_texts: Vec<(String, String)> = views
        .into_iter()
        .map(|(view, path)| {
            fs::read_to_string(&path)
                .map(|text| (view.clone(), text))
                .map_err(|e| CatalogError::Broken(format!("view '{view}' cannot be read: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let planner = crate::lower::catalog(&name, &schemas, &view_texts);
    // Each view is bound like a query (views may read views), and its columns are its plan's.
    for (view, text) in &view_texts {
        let plan = spool_planner::bind_query(text, &planner).map_err(|e| {
            CatalogError::Broken(format!("view '{view}' of project '{name}' is invalid: {e}"))
        })?;
        let mut schema = Schema::with_capacity(plan.fields().len());
        for field in plan.fields() {
            schema.insert(field.name.as_str().into(), crate::lower::dtype(field.ty));
        }
        described.push(describe_schema(view, true, &schema));
    }
    described.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(OpenProject {
        planner,
        tables: frames,
        sources: tables.into_iter().collect(),
        described,
        keys: Arc::default(),
        lookups: Arc::default(),
    })
}
