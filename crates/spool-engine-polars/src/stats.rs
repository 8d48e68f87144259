//! The facts the planner's star-join levers ask for (see `spool_planner::passes`), found by
//! running small queries on the project's own frames: a table's row count (Parquet answers it
//! from its footers) and the keys a filtered dimension keeps.
//!
//! Answers are cached with the opened project (a changed file opens a new one, so a cached
//! fact never outlives the data it describes), by the plan as `explain` prints it.

use std::sync::{Arc, PoisonError};

use polars::prelude::{ChunkUnique, DataFrame, DataType, LazyFrame, col, len};
use spool_planner::Plan;
use spool_planner::passes::{KeyFacts, MAX_KEY_SET, Statistics};

use crate::catalog::OpenProject;
use crate::keyset::Lookup;
use crate::lower;

/// Key facts kept per opened project; beyond this many, or this many keys in all (8 MiB), the
/// map starts again.
const MAX_CACHED: usize = 256;
const MAX_CACHED_VALUES: usize = 1 << 20;

/// [`Statistics`] over one opened project.
pub(crate) struct ProjectStatistics<'a> {
    pub project: &'a OpenProject,
}

impl ProjectStatistics<'_> {
    fn frame(&self, plan: &Plan) -> Option<LazyFrame> {
        lower::frame(
            plan,
            &ProjectSource {
                project: self.project,
            },
        )
        .ok()
    }

    fn cached(&self, key: &str, find: impl FnOnce() -> Option<KeyFacts>) -> Option<KeyFacts> {
        let cache = || {
            self.project
                .keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some(known) = cache().get(key) {
            return known.clone();
        }
        let found = find();
        let mut cached = cache();
        let values = |facts: &Option<KeyFacts>| {
            facts
                .as_ref()
                .and_then(|f| f.values.as_ref())
                .map_or(0, Vec::len)
        };
        let held: usize = cached.values().map(values).sum();
        if cached.len() >= MAX_CACHED || held + values(&found) > MAX_CACHED_VALUES {
            cached.clear();
        }
        cached.insert(key.to_owned(), found.clone());
        found
    }
}

fn first_i64(frame: &DataFrame, column: usize) -> Option<i64> {
    frame
        .columns()
        .get(column)?
        .as_materialized_series()
        .cast(&DataType::Int64)
        .ok()?
        .i64()
        .ok()?
        .get(0)
}

impl Statistics for ProjectStatistics<'_> {
    fn rows(&self, plan: &Plan) -> Option<u64> {
        let key = format!("rows\u{0}{}", plan.explain());
        self.cached(&key, || {
            let counted = self.frame(plan)?.select([len()]).collect().ok()?;
            let rows = u64::try_from(first_i64(&counted, 0)?).ok()?;
            Some(KeyFacts {
                kept: rows,
                rows,
                range: None,
                full: None,
                values: None,
            })
        })
        .map(|facts| facts.rows)
    }

    fn keys(&self, kept: &Plan, whole: &Plan, key: usize) -> Option<KeyFacts> {
        let cache_key = format!("keys\u{0}{key}\u{0}{}", kept.explain());
        self.cached(&cache_key, || {
            let name = format!("#{key}");
            let kept_keys = self
                .frame(kept)?
                .select([col(name.as_str())])
                .collect()
                .ok()?;
            let column = kept_keys.columns().first()?;
            if !column.dtype().is_integer() {
                return None;
            }
            let keys = column
                .as_materialized_series()
                .cast(&DataType::Int64)
                .ok()?;
            let keys = keys.i64().ok()?;
            let bounds = self
                .frame(whole)?
                .select([
                    col(name.as_str()).min().cast(DataType::Int64).alias("low"),
                    col(name.as_str()).max().cast(DataType::Int64).alias("high"),
                    len().cast(DataType::Int64).alias("rows"),
                ])
                .collect()
                .ok()?;
            let present = keys.drop_nulls();
            let values = present
                .unique()
                .ok()
                .filter(|unique| unique.len() <= MAX_KEY_SET)
                .map(|unique| {
                    let mut values: Vec<i64> = unique.into_no_null_iter().collect();
                    values.sort_unstable();
                    values
                });
            Some(KeyFacts {
                kept: kept_keys.height() as u64,
                rows: u64::try_from(first_i64(&bounds, 2)?).ok()?,
                range: present
                    .into_no_null_iter()
                    .min()
                    .zip(present.into_no_null_iter().max()),
                full: first_i64(&bounds, 0).zip(first_i64(&bounds, 1)),
                values,
            })
        })
    }
}

/// Dimension rows kept by key for lookups per opened project, at most this many in all; beyond
/// it the map starts again. A dimension keeping more rows than this is joined by hashing.
const MAX_LOOKUP_ROWS: usize = 1 << 21;

/// The project's tables for lowering, and its dimensions' rows by key for joins the planner
/// marked [`spool_planner::plan::JoinStrategy::Lookup`] (cached with the opened project).
pub(crate) struct ProjectSource<'a> {
    pub project: &'a OpenProject,
}

impl lower::Source for ProjectSource<'_> {
    fn table(&self, name: &str) -> Option<LazyFrame> {
        self.project.table(name)
    }

    fn lookup(&self, dimension: &Plan, key: usize) -> Option<Arc<Lookup>> {
        let cache_key = format!("plan\u{0}{key}\u{0}{}", dimension.explain());
        let cached = || {
            self.project
                .lookups
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some(known) = cached().get(&cache_key) {
            return known.clone();
        }
        let found = lower::frame(dimension, self)
            .ok()
            .and_then(|frame| frame.collect().ok())
            .filter(|rows| rows.height() <= MAX_LOOKUP_ROWS)
            .and_then(|rows| Lookup::new(rows, &format!("#{key}")))
            .map(Arc::new);
        let mut cached = cached();
        let held: usize = cached.values().flatten().map(|l| l.height()).sum();
        let adding = found.as_ref().map_or(0, |l| l.height());
        if cached.len() >= MAX_CACHED || held + adding > MAX_LOOKUP_ROWS {
            cached.clear();
        }
        cached.insert(cache_key, found.clone());
        found
    }
}
