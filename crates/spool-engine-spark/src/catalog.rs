//! A project's tables and views as Spark sees them: the same folder layout as the Polars engine
//! (`NAME.parquet`, `NAME.csv` with a header row, a folder `NAME/` of Parquet files, `NAME.sql`
//! for a view), read by path by the cluster. Only the default schema's: `<SCHEMA>.schema/`
//! folders are not read on Spark yet.
//!
//! Invariant: only paths found by listing the project folder are handed to Spark; no name from a
//! request becomes a path except the project name, which the domain restricts to
//! `[A-Za-z0-9_-]`. The cluster must see the data directory at the same absolute path.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// How Spark reads a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A Parquet file or a folder of Parquet files.
    Parquet(PathBuf),
    /// A CSV file with a header row.
    Csv(PathBuf),
}

/// A project's relations, keyed by lowercase name.
#[derive(Debug, Default)]
pub(crate) struct Project {
    /// The project's folder name (its spelling on disk).
    pub name: String,
    /// Tables: (name as spelled, source).
    pub tables: HashMap<String, (String, Source)>,
    /// Views: (name as spelled, SQL text as stored).
    pub views: HashMap<String, (String, String)>,
}

impl Project {
    /// The catalog spelling of relation `name` (any case), if the project has it.
    pub fn relation(&self, name: &str) -> Option<&str> {
        let key = name.to_lowercase();
        self.tables
            .get(&key)
            .map(|(n, _)| n.as_str())
            .or_else(|| self.views.get(&key).map(|(n, _)| n.as_str()))
    }
}

/// Opens `project` under `root`: `Ok(None)` when there is no such project.
pub(crate) fn open(root: &Path, project: &str) -> std::io::Result<Option<Project>> {
    let Some((name, dir)) = project_dir(root, project) else {
        return Ok(None);
    };
    let mut out = Project {
        name,
        ..Project::default()
    };
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let path = entry.path();
        let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            // A `<SCHEMA>.schema/` folder holds another schema's tables, which Spark projects
            // do not read yet (docs/SQL.md); it is no table of its own.
            if !file_name.ends_with(".schema") {
                out.tables
                    .insert(file_name.to_lowercase(), (file_name, Source::Parquet(path)));
            }
            continue;
        }
        let Some((stem, ext)) = file_name.rsplit_once('.') else {
            continue;
        };
        let key = stem.to_lowercase();
        match ext.to_ascii_lowercase().as_str() {
            "parquet" => {
                out.tables
                    .insert(key, (stem.to_owned(), Source::Parquet(path)));
            }
            "csv" => {
                out.tables.insert(key, (stem.to_owned(), Source::Csv(path)));
            }
            "sql" => {
                let text = fs::read_to_string(&path)?;
                out.views.insert(key, (stem.to_owned(), text));
            }
            _ => {}
        }
    }
    Ok(Some(out))
}

/// Finds the folder of `project` under `root`: exact name first, then ignoring ASCII case.
fn project_dir(root: &Path, project: &str) -> Option<(String, PathBuf)> {
    let exact = root.join(project);
    if exact.is_dir() {
        return Some((project.to_owned(), exact));
    }
    fs::read_dir(root).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        (name.eq_ignore_ascii_case(project) && entry.path().is_dir()).then(|| (name, entry.path()))
    })
}
