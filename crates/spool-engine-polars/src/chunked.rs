//! Row-local queries over one Parquet table run a few row groups at a time.
//!
//! Polars' streaming engine keeps several hundred MiB of buffers in flight for a plain scan
//! (`select * from p_lineorder` peaked at 666 MiB at SF 1 and 920 MiB at SF 10), so an export's
//! memory followed Polars rather than the result. A query whose every output row depends on one
//! input row only (projection and filter over one table, or over views that are themselves such
//! queries) gives the same rows, in the same order, when it runs on consecutive slices of the
//! table one after the other. That is what this module does: the same SQL, planned once per run
//! of row groups with the table registered as just those rows; memory is bounded by two runs
//! (the one being encoded and the next, read ahead) plus the encoders' batches in flight.
//!
//! Invariant: [`row_local_table`] says yes only for queries it can prove row-local from the AST:
//! a single `SELECT` (no set operations, `DISTINCT`, `GROUP BY`, `HAVING`, `QUALIFY`, window,
//! `ORDER BY`, `LIMIT`/`OFFSET`/`FETCH`, subquery or join), whose expressions are built only from
//! columns, literals, operators and the scalar functions listed in [`SCALAR_FUNCTIONS`], reading
//! one table directly or through CTEs (the project's views) of the same kind. Anything else runs
//! on the streaming engine as before: a "no" costs memory, never a wrong result.

use std::collections::HashSet;
use std::ops::ControlFlow;

use polars::prelude::{DataFrame, PolarsResult, Schema, polars_bail};
use sqlparser::ast::{
    Cte, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, ObjectNamePart, Query,
    SelectItem, SetExpr, Statement, TableFactor, visit_expressions,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::catalog::RowGroups;

/// Rows per run: row groups are joined until a run holds at least this many. A run is planned
/// and read on its own, so this trades planning overhead against memory.
pub(crate) const MIN_RUN_ROWS: usize = 100_000;

/// A table with a row group larger than this is left to the streaming engine, which reads a
/// row group in morsels; a run holds its row groups whole.
pub(crate) const MAX_RUN_ROWS: usize = 2_000_000;

/// Scalar functions (lowercase) whose value for a row depends on that row only. Polars decides
/// whether it knows them; the list only says that a query using nothing else is row-local.
const SCALAR_FUNCTIONS: &[&str] = &[
    // numbers
    "abs",
    "cbrt",
    "ceil",
    "ceiling",
    "div",
    "exp",
    "floor",
    "ln",
    "log",
    "log10",
    "log1p",
    "log2",
    "mod",
    "pi",
    "pow",
    "power",
    "round",
    "sign",
    "sqrt",
    "trunc",
    "truncate",
    "degrees",
    "radians",
    "sin",
    "cos",
    "tan",
    "cot",
    "asin",
    "acos",
    "atan",
    "atan2",
    "sinh",
    "cosh",
    "tanh",
    // text
    "bit_length",
    "btrim",
    "char_length",
    "character_length",
    "concat",
    "concat_ws",
    "ends_with",
    "initcap",
    "left",
    "length",
    "lower",
    "lpad",
    "ltrim",
    "octet_length",
    "regexp_like",
    "regexp_replace",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "split_part",
    "starts_with",
    "strpos",
    "strptime",
    "substr",
    "substring",
    "upper",
    "timestamp",
    // dates and times
    "date",
    "date_part",
    "strftime",
    // nulls and choices
    "coalesce",
    "greatest",
    "ifnull",
    "least",
    "nullif",
    "nvl",
    "if",
    "iif",
];

/// Returns the table a query reads if the query is row-local (see the module docs) over exactly
/// one table of `tables`, the project's tables by their catalog spelling.
pub(crate) fn row_local_table(prepared: &str, tables: &HashSet<String>) -> Option<String> {
    let statements = Parser::parse_sql(&GenericDialect {}, prepared).ok()?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return None;
    };
    let ctes: Vec<&Cte> = match &query.with {
        Some(with) if with.recursive => return None,
        Some(with) => with.cte_tables.iter().collect(),
        None => Vec::new(),
    };
    // A CTE named like a table would leave it unclear which one Polars reads.
    if ctes.iter().any(|cte| {
        tables
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&cte.alias.name.value))
    }) {
        return None;
    }
    source_of(query, &ctes, tables, 0)
}

/// Follows `query` down to the one table it reads, if it is row-local.
fn source_of(
    query: &Query,
    ctes: &[&Cte],
    tables: &HashSet<String>,
    depth: usize,
) -> Option<String> {
    // Views build on views; the chain is short. A cycle is impossible in a planned query, but
    // the bound keeps this function total.
    if depth > 32 {
        return None;
    }
    let plain_query = query.order_by.is_none()
        && query.limit_clause.is_none()
        && query.fetch.is_none()
        && query.locks.is_empty()
        && query.for_clause.is_none()
        && query.settings.is_none()
        && query.format_clause.is_none()
        && query.pipe_operators.is_empty();
    // CTEs inside CTEs are not followed.
    if !plain_query || (depth > 0 && query.with.is_some()) {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let no_grouping = match &select.group_by {
        GroupByExpr::Expressions(exprs, modifiers) => exprs.is_empty() && modifiers.is_empty(),
        GroupByExpr::All(_) => false,
    };
    let plain_select = select.distinct.is_none()
        && select.top.is_none()
        && select.into.is_none()
        && select.lateral_views.is_empty()
        && select.prewhere.is_none()
        && select.connect_by.is_empty()
        && no_grouping
        && select.cluster_by.is_empty()
        && select.distribute_by.is_empty()
        && select.sort_by.is_empty()
        && select.having.is_none()
        && select.named_window.is_empty()
        && select.qualify.is_none()
        && select.value_table_mode.is_none();
    if !plain_select || !select.projection.iter().all(row_local_item) {
        return None;
    }
    if visit_expressions(select, |e| {
        if row_local_expr(e) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    })
    .is_break()
    {
        return None;
    }
    let [from] = select.from.as_slice() else {
        return None;
    };
    if !from.joins.is_empty() {
        return None;
    }
    let TableFactor::Table {
        name,
        args: None,
        with_hints,
        version: None,
        with_ordinality: false,
        partitions,
        json_path: None,
        sample: None,
        index_hints,
        ..
    } = &from.relation
    else {
        return None;
    };
    if !with_hints.is_empty() || !partitions.is_empty() || !index_hints.is_empty() {
        return None;
    }
    let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
        return None;
    };
    let is_named = |cte: &&&Cte| {
        if ident.quote_style.is_some() {
            cte.alias.name.value == ident.value
        } else {
            cte.alias.name.value.eq_ignore_ascii_case(&ident.value)
        }
    };
    match ctes.iter().find(is_named) {
        Some(cte) => source_of(&cte.query, ctes, tables, depth + 1),
        None => tables.get(&ident.value).cloned(),
    }
}

fn row_local_item(item: &SelectItem) -> bool {
    match item {
        SelectItem::UnnamedExpr(_) | SelectItem::ExprWithAlias { .. } => true,
        SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => true,
        SelectItem::ExprWithAliases { .. } => false,
    }
}

/// Whether one expression node computes a row's value from that row alone; the visitor checks
/// the nested ones.
fn row_local_expr(expr: &Expr) -> bool {
    match expr {
        Expr::Identifier(_)
        | Expr::CompoundIdentifier(_)
        | Expr::Value(_)
        | Expr::TypedString(_)
        | Expr::BinaryOp { .. }
        | Expr::UnaryOp { .. }
        | Expr::Nested(_)
        | Expr::Cast { .. }
        | Expr::Case { .. }
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsTrue(_)
        | Expr::IsNotTrue(_)
        | Expr::IsFalse(_)
        | Expr::IsNotFalse(_)
        | Expr::IsDistinctFrom(..)
        | Expr::IsNotDistinctFrom(..)
        | Expr::Between { .. }
        | Expr::InList { .. }
        | Expr::Like { .. }
        | Expr::ILike { .. }
        | Expr::Extract { .. }
        | Expr::Ceil { .. }
        | Expr::Floor { .. }
        | Expr::Position { .. }
        | Expr::Substring { .. }
        | Expr::Trim { .. } => true,
        Expr::Function(function) => {
            let plain_args = match &function.args {
                FunctionArguments::None => true,
                FunctionArguments::List(list) => {
                    list.duplicate_treatment.is_none()
                        && list.clauses.is_empty()
                        && list.args.iter().all(|arg| {
                            matches!(
                                arg,
                                FunctionArg::Unnamed(FunctionArgExpr::Expr(_))
                                    | FunctionArg::Named {
                                        arg: FunctionArgExpr::Expr(_),
                                        ..
                                    }
                            )
                        })
                }
                FunctionArguments::Subquery(_) => false,
            };
            plain_args
                && function.over.is_none()
                && function.filter.is_none()
                && function.null_treatment.is_none()
                && function.within_group.is_empty()
                && matches!(function.parameters, FunctionArguments::None)
                && is_scalar(&function.name.to_string())
        }
        _ => false,
    }
}

fn is_scalar(name: &str) -> bool {
    let name = name.trim_matches('"').to_ascii_lowercase();
    SCALAR_FUNCTIONS.contains(&name.as_str())
}

/// The table a planned query reads when the query is row-local (see the module docs).
pub(crate) fn row_local_plan(plan: &spool_planner::Plan) -> Option<&str> {
    use spool_planner::Plan;
    match plan {
        Plan::Project { input, .. } | Plan::Filter { input, .. } => row_local_plan(input),
        Plan::Scan { table, .. } => Some(table),
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

    fn tables() -> HashSet<String> {
        ["LINEORDER", "DATES", "t"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn local(sql: &str) -> Option<String> {
        row_local_table(sql, &tables())
    }

    #[test]
    fn projections_and_filters_over_one_table_are_row_local() {
        for sql in [
            r#"SELECT * FROM "LINEORDER""#,
            r#"SELECT "LO_ORDERKEY", "LO_REVENUE" * 2 AS r FROM "LINEORDER" WHERE "LO_QUANTITY" BETWEEN 1 AND 5"#,
            r#"SELECT upper("x"), CASE WHEN "y" IS NULL THEN 0 ELSE "y" END FROM "LINEORDER" l WHERE "z" IN (1, 2) AND "w" LIKE 'a%'"#,
            r#"SELECT CAST("d" AS DATE), EXTRACT(YEAR FROM "d"), coalesce("a", "b") FROM "LINEORDER""#,
            r#"WITH "P_LINEORDER" AS (SELECT *, "LO_EXTENDEDPRICE" * "LO_DISCOUNT" AS "V_REVENUE" FROM "LINEORDER"), "OTHER" AS (SELECT count(*) FROM "DATES") SELECT * FROM "P_LINEORDER" WHERE "V_REVENUE" > 10"#,
        ] {
            assert_eq!(local(sql).as_deref(), Some("LINEORDER"), "{sql}");
        }
    }

    #[test]
    fn anything_reading_more_than_one_row_at_a_time_is_not() {
        for sql in [
            r#"SELECT count(*) FROM "LINEORDER""#,
            r#"SELECT sum("a") AS s FROM "LINEORDER""#,
            r#"SELECT "a" FROM "LINEORDER" GROUP BY "a""#,
            r#"SELECT DISTINCT "a" FROM "LINEORDER""#,
            r#"SELECT * FROM "LINEORDER" ORDER BY "a""#,
            r#"SELECT * FROM "LINEORDER" LIMIT 10"#,
            r#"SELECT * FROM "LINEORDER" LIMIT 10 OFFSET 5"#,
            r#"SELECT row_number() OVER () FROM "LINEORDER""#,
            r#"SELECT "a" - avg("a") OVER () FROM "LINEORDER""#,
            r#"SELECT * FROM "LINEORDER" WHERE "a" > (SELECT avg("a") FROM "LINEORDER")"#,
            r#"SELECT * FROM "LINEORDER" WHERE "a" IN (SELECT "a" FROM "DATES")"#,
            r#"SELECT * FROM "LINEORDER" JOIN "DATES" ON "a" = "b""#,
            r#"SELECT * FROM "LINEORDER", "DATES""#,
            r#"SELECT * FROM "LINEORDER" UNION ALL SELECT * FROM "LINEORDER""#,
            r#"SELECT * FROM (SELECT * FROM "LINEORDER") s"#,
            r#"SELECT some_unknown_function("a") FROM "LINEORDER""#,
            r#"WITH v AS (SELECT "a" FROM "LINEORDER" ORDER BY "a" LIMIT 3) SELECT * FROM v"#,
            r#"WITH v AS (SELECT count(*) AS n FROM "LINEORDER") SELECT * FROM v"#,
            r#"WITH "t" AS (SELECT * FROM "LINEORDER") SELECT * FROM "t""#,
            r#"SELECT * FROM "MISSING""#,
            r#"SELECT 1"#,
            r#"VALUES (1)"#,
        ] {
            assert_eq!(local(sql), None, "{sql}");
        }
    }
}
