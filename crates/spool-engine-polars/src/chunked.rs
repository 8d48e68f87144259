//! Row-local queries over one Parquet table run a few row groups at a time.
//!
//! Polars' streaming engine keeps several hundred MiB of buffers in flight for a plain scan
//! (`select * from p_lineorder` peaked at 666 MiB at SF 1 and 920 MiB at SF 10), so an export's
//! memory followed Polars rather than the result. A query whose every output row depends on one
//! input row only (projection and filter over one table, or over views that are themselves such
//! queries) gives the same rows, in the same order, when it runs on consecutive slices of the
//! table one after the other. That is what this module does: the same plan, lowered once per
//! run of row groups with the table read as just those rows; memory is bounded by two runs (the
//! one being encoded and the next, read ahead) plus the encoders' batches in flight.
//!
//! Invariant: [`row_local_plan`] says yes only for plans of projections and filters over one
//! scan. A plan's expressions are row-local by construction (aggregates, windows, sorts,
//! limits, joins, set operations and DISTINCT are nodes of their own, and a subquery is a
//! join), so the shape is the proof. Anything else runs on the streaming engine: a "no" costs
//! memory, never a wrong result.

use polars::prelude::{DataFrame, PolarsResult, Schema, polars_bail};

use crate::catalog::RowGroups;

/// Rows per run: row groups are joined until a run holds at least this many. A run is planned
/// and read on its own, so this trades planning overhead against memory.
pub(crate) const MIN_RUN_ROWS: usize = 100_000;

/// A table with a row group larger than this is left to the streaming engine, which reads a
/// row group in morsels; a run holds its row groups whole.
pub(crate) const MAX_RUN_ROWS: usize = 2_000_000;

/// The key ([`crate::lower::table_key`]) of the table a planned query reads when the query is
/// row-local (see the module docs).
pub(crate) fn row_local_plan(plan: &spool_planner::Plan) -> Option<String> {
    use spool_planner::Plan;
    match plan {
        Plan::Project { input, .. } | Plan::Filter { input, .. } => row_local_plan(input),
        Plan::Scan { schema, table, .. } => Some(crate::lower::table_key(schema, table)),
        _ => None,
    }
}

/// Runs the query on each run of its table in turn and hands every result to `deliver`, which
/// returns `true` to stop early. `query` makes the query's frame over one run's rows (given as
/// a scan of just those rows).
///
/// The runs are read on a thread of their own, one run ahead of `deliver`: Parquet encoding
/// (on the calling thread) and decoding the next run overlap, and at most two runs' rows are
/// held at once.
///
/// Every run's result must have the column types of `schema` (the whole table's plan): the
/// files of a folder table that disagree on a column's type fail as on the streaming engine.
pub(crate) fn run(
    query: &(dyn Fn(polars::prelude::LazyFrame) -> PolarsResult<polars::prelude::LazyFrame> + Sync),
    schema: &Schema,
    runs: &[RowGroups],
    mut deliver: impl FnMut(DataFrame) -> bool,
) -> PolarsResult<()> {
    let (send, receive) = std::sync::mpsc::sync_channel::<PolarsResult<DataFrame>>(1);
    std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("spool-scan".to_owned())
            .spawn_scoped(scope, move || {
                spool_formats::priority::lower_current_thread();
                for run in runs {
                    let frame = (|| {
                        let frame = query(run.scan()?)?.collect()?;
                        check_types(&frame, schema, run)?;
                        Ok(frame)
                    })();
                    let failed = frame.is_err();
                    // The receiver is gone once `deliver` asked to stop.
                    if send.send(frame).is_err() || failed {
                        break;
                    }
                }
            })
            .map_err(
                |e| polars::prelude::polars_err!(ComputeError: "starting a scan thread: {e}"),
            )?;
        let mut outcome = Ok(());
        for frame in &receive {
            match frame {
                Ok(frame) => {
                    if deliver(frame) {
                        break;
                    }
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        drop(receive);
        if reader.join().is_err() {
            return Err(polars::prelude::polars_err!(ComputeError: "the scan thread panicked"));
        }
        outcome
    })
}

/// Fails if a column of `frame` does not have the type `schema` gives it.
fn check_types(frame: &DataFrame, schema: &Schema, run: &RowGroups) -> PolarsResult<()> {
    for (column, (name, expected)) in frame.columns().iter().zip(schema.iter()) {
        if column.dtype() != expected {
            polars_bail!(SchemaMismatch:
                "data type mismatch for column {name}: {} has {}, the table has {expected}",
                run.path.file_name().map_or_else(|| run.path.display().to_string(), |f| f.to_string_lossy().into_owned()),
                column.dtype()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_planner::{Catalog, Column, SqlType, Table, View};

    fn local(sql: &str) -> Option<String> {
        let mut catalog = Catalog::new("SSB");
        for table in ["LINEORDER", "DATES"] {
            catalog.add(Table {
                schema: "SSB".into(),
                name: table.into(),
                columns: ["A", "B", "D"]
                    .iter()
                    .map(|c| Column::new(c, SqlType::Integer))
                    .collect(),
                rows: None,
            });
        }
        catalog.add_view(View {
            schema: "SSB".into(),
            name: "P_LINEORDER".into(),
            sql: "select *, a * b as v from lineorder".into(),
        });
        catalog.add_view(View {
            schema: "SSB".into(),
            name: "COUNTED".into(),
            sql: "select count(*) as n from lineorder".into(),
        });
        let plan = spool_planner::plan_query(sql, &catalog).expect(sql);
        row_local_plan(&plan)
    }

    #[test]
    fn projections_and_filters_over_one_table_are_row_local() {
        for sql in [
            "select * from lineorder",
            "select a, b * 2 as r from lineorder where d between 1 and 5",
            "select upper(cast(a as varchar)), case when b is null then 0 else b end \
             from lineorder l where d in (1, 2)",
            "select * from p_lineorder where v > 10",
            "select * from (select * from lineorder) s",
            "with t as (select * from lineorder) select a from t",
        ] {
            assert_eq!(local(sql).as_deref(), Some("SSB.LINEORDER"), "{sql}");
        }
    }

    #[test]
    fn anything_reading_more_than_one_row_at_a_time_is_not() {
        for sql in [
            "select count(*) from lineorder",
            "select sum(a) as s from lineorder",
            "select a from lineorder group by a",
            "select distinct a from lineorder",
            "select * from lineorder order by a",
            "select * from lineorder limit 10",
            "select * from lineorder limit 10 offset 5",
            "select row_number() over (order by a) from lineorder",
            "select a - avg(a) over () from lineorder",
            "select * from lineorder where a > (select avg(a) from lineorder)",
            "select * from lineorder where a in (select a from dates)",
            "select * from lineorder join dates on lineorder.a = dates.b",
            "select * from lineorder, dates",
            "select * from lineorder union all select * from lineorder",
            "with v as (select a from lineorder order by a limit 3) select * from v",
            "select * from counted",
            "select 1",
        ] {
            assert_eq!(local(sql), None, "{sql}");
        }
    }
}
