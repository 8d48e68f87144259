//! Lowers Spool's logical plan ([`spool_planner::Plan`]) to Polars' LazyFrame API: no SQL text
//! between Spool and Polars, so what runs is what was bound, with Kylin's semantics spelled out
//! where Polars' own differ.
//!
//! Every lowered node's columns are named `#0`, `#1`, ... by position (a join renames its right
//! side's to follow the left's), so expressions, which refer to columns by position, lower to
//! `col("#i")`; the final projection gives the result its labels. Where Polars' kernels differ
//! from Kylin's answers, the lowering says so:
//! - decimal `*` and `/` are computed at the plan's result scale (Polars keeps the operands'
//!   larger scale: `0.0344` came back `0.03`);
//! - `SUM` is NULL over no rows (Polars' is 0), `COUNT(DISTINCT x)` ignores NULLs, `AVG` of a
//!   decimal is exact (sum and count as decimals);
//! - integer `/` truncates towards zero, and any division by zero is NULL;
//! - `||` and `CONCAT` are NULL when an argument is;
//! - a string literal converted to a number, date, timestamp or boolean is converted here
//!   (NULL when it is not one, as Spark answers).

use polars::prelude::*;
use std::sync::Arc;

use crate::keyset::Lookup;
use spool_planner::SqlType;
use spool_planner::plan::{
    Aggregate, AggregateFunction, Binary, Expr as PlanExpr, ExprKind, Frame, JoinKind,
    JoinStrategy, Literal, Plan, Scalar as Func, SortKey, Unary, Window, WindowFunction,
};
use spool_planner::types::Arithmetic;

/// The Polars type a SQL type is computed in.
pub(crate) fn dtype(ty: SqlType) -> DataType {
    match ty {
        SqlType::Null => DataType::Null,
        SqlType::Boolean => DataType::Boolean,
        SqlType::TinyInt => DataType::Int8,
        SqlType::SmallInt => DataType::Int16,
        SqlType::Integer => DataType::Int32,
        SqlType::BigInt => DataType::Int64,
        SqlType::Decimal { precision, scale } => {
            DataType::Decimal(usize::from(precision), usize::from(scale))
        }
        SqlType::Float => DataType::Float32,
        SqlType::Double => DataType::Float64,
        SqlType::Varchar => DataType::String,
        SqlType::Date => DataType::Date,
        SqlType::Timestamp => DataType::Datetime(TimeUnit::Microseconds, None),
    }
}

/// The key a table's frame is kept under in an opened project: its schema and name.
pub(crate) fn table_key(schema: &str, table: &str) -> String {
    format!("{schema}.{table}")
}

/// Where lowering reads the project's tables, and the rows of dimensions by key.
pub(crate) trait Source {
    /// The frame of the project's table `name`.
    fn table(&self, name: &str) -> Option<LazyFrame>;

    /// The rows of `dimension` (lowered with positional names) by its integer column `key`,
    /// for a join marked [`JoinStrategy::Lookup`]; `None`: join by hashing.
    fn lookup(&self, _dimension: &Plan, _key: usize) -> Option<Arc<Lookup>> {
        None
    }
}

impl<F: Fn(&str) -> Option<LazyFrame>> Source for F {
    fn table(&self, name: &str) -> Option<LazyFrame> {
        self(name)
    }
}

fn name(i: usize) -> PlSmallStr {
    format!("#{i}").into()
}

fn column(i: usize) -> Expr {
    col(name(i))
}

/// Lowers `plan`, reading each scanned table through `table`; the result's columns carry the
/// plan's labels (a label used twice gets `_1`, `_2`, ... after it: a frame's names are unique).
pub(crate) fn lower(plan: &Plan, table: &dyn Source) -> PolarsResult<LazyFrame> {
    let frame = node(plan, table)?;
    let labels: Vec<Expr> = plan
        .labels()
        .into_iter()
        .enumerate()
        .map(|(i, label)| column(i).alias(label))
        .collect();
    Ok(frame.select(labels))
}

/// Lowers `plan` with its columns named by position (`#0`, `#1`, ...), as the engine's own
/// small queries read them (see `stats`).
pub(crate) fn frame(plan: &Plan, table: &dyn Source) -> PolarsResult<LazyFrame> {
    node(plan, table)
}

fn node(plan: &Plan, table: &dyn Source) -> PolarsResult<LazyFrame> {
    Ok(match plan {
        Plan::Scan {
            schema,
            table: name_,
            fields,
        } => {
            let frame = table.table(&table_key(schema, name_)).ok_or_else(
                || polars_err!(ComputeError: "table {name_} is not in the project's snapshot"),
            )?;
            frame.select(
                fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| col(f.name.as_str()).alias(name(i)))
                    .collect::<Vec<_>>(),
            )
        }
        Plan::Single => DataFrame::empty_with_height(1).lazy(),
        Plan::Filter { input, predicate } => node(input, table)?.filter(expr(predicate)?),
        Plan::Project { input, exprs, .. } => {
            let frame = node(input, table)?;
            let exprs = positional(exprs)?;
            if exprs.is_empty() {
                frame
            } else {
                frame.select(exprs)
            }
        }
        Plan::Aggregate {
            input,
            groups,
            aggregates,
            ..
        } => {
            if let [single] = aggregates.as_slice()
                && single.function == AggregateFunction::Single
            {
                return scalar_subquery(node(input, table)?, single);
            }
            let frame = node(input, table)?;
            let keys = positional(groups)?;
            let aggs = aggregates
                .iter()
                .enumerate()
                .map(|(i, a)| Ok(aggregate(a)?.alias(name(groups.len() + i))))
                .collect::<PolarsResult<Vec<_>>>()?;
            if keys.is_empty() {
                frame.select(aggs)
            } else {
                frame.group_by(keys).agg(aggs)
            }
        }
        Plan::Join {
            left,
            right,
            kind: JoinKind::Inner,
            strategy:
                JoinStrategy::Lookup {
                    left: key,
                    right: dimension_key,
                },
            ..
        } if let Some(lookup) = table.lookup(right, *dimension_key) => {
            // The dimension's row of each left row by its key; left rows without one dropped,
            // as the inner join drops them. The join's one condition is that key equality.
            let width = left.fields().len();
            let rows: PlSmallStr = format!("spool rows {width}").into();
            let mut frame = node(left, table)?
                .with_column(lookup.rows(&name(*key)).alias(rows.clone()))
                .filter(col(rows.clone()).neq(lit(crate::keyset::NO_ROW)));
            let columns = (0..right.fields().len())
                .map(|j| {
                    lookup
                        .column(&rows, &name(j))
                        .map(|c| c.alias(name(width + j)))
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| polars_err!(ComputeError: "a dimension's lookup lacks a column"))?;
            if !columns.is_empty() {
                frame = frame.with_columns(columns);
            }
            frame.drop(by_name([rows.as_str()], true, false))
        }
        Plan::Join {
            left,
            right,
            kind,
            on,
            ..
        } => join(left, right, *kind, on.as_ref(), table)?,
        Plan::Sort { input, keys } => sort(node(input, table)?, keys)?,
        Plan::Limit {
            input,
            offset,
            fetch,
        } => {
            let frame = node(input, table)?;
            let offset = i64::try_from(*offset).unwrap_or(i64::MAX);
            let len = fetch.map_or(IdxSize::MAX, |f| {
                IdxSize::try_from(f).unwrap_or(IdxSize::MAX)
            });
            frame.slice(offset, len)
        }
        Plan::Window { input, windows, .. } => {
            let mut frame = node(input, table)?;
            let width = input.fields().len();
            for (k, window) in windows.iter().enumerate() {
                frame = lower_window(frame, window, name(width + k))?;
            }
            frame
        }
        Plan::Union { inputs, .. } => concat(
            inputs
                .iter()
                .map(|input| node(input, table))
                .collect::<PolarsResult<Vec<_>>>()?,
            UnionArgs::default(),
        )?,
        Plan::Distinct { input } => {
            node(input, table)?.unique_stable(None, UniqueKeepStrategy::First)
        }
    })
}

/// A scalar subquery's one value, as a one-row frame: the subquery runs here, once, for at
/// most two rows (a second one is an error, as in Calcite's SINGLE_VALUE).
fn scalar_subquery(input: LazyFrame, single: &Aggregate) -> PolarsResult<LazyFrame> {
    let argument = single
        .argument
        .as_ref()
        .ok_or_else(|| polars_err!(ComputeError: "a scalar subquery without a value"))?;
    let rows = input
        .select([expr(argument)?.alias(name(0))])
        .limit(2)
        .collect()?;
    let value = match rows.height() {
        0 => Series::full_null(name(0), 1, &dtype(single.ty)).into_column(),
        1 => rows.columns()[0].clone(),
        _ => polars_bail!(ComputeError: "a subquery used as a value returned more than one row"),
    };
    Ok(DataFrame::new(1, vec![value])?.lazy())
}

/// `exprs` lowered, each named by its position (`#0`, `#1`, ...).
fn positional(exprs: &[PlanExpr]) -> PolarsResult<Vec<Expr>> {
    exprs
        .iter()
        .enumerate()
        .map(|(i, e)| Ok(expr(e)?.alias(name(i))))
        .collect()
}

fn sort(frame: LazyFrame, keys: &[SortKey]) -> PolarsResult<LazyFrame> {
    let exprs = keys
        .iter()
        .map(|k| {
            let e = expr(&k.expr)?;
            // Polars' top-k over 128-bit decimals panics (a sort followed by a slice becomes
            // one): a decimal key is sorted as a double, which orders decimals exactly up to
            // 15 significant digits.
            Ok(match k.expr.ty {
                SqlType::Decimal { .. } => e.cast(DataType::Float64),
                _ => e,
            })
        })
        .collect::<PolarsResult<Vec<_>>>()?;
    let options = SortMultipleOptions::new()
        .with_order_descending_multi(keys.iter().map(|k| k.descending))
        .with_nulls_last_multi(keys.iter().map(|k| !k.nulls_first))
        .with_maintain_order(true);
    Ok(frame.sort_by_exprs(exprs, options))
}

/// The conjuncts of a condition.
fn conjuncts<'e>(e: &'e PlanExpr, out: &mut Vec<&'e PlanExpr>) {
    match &e.kind {
        ExprKind::Binary(Binary::And, l, r) => {
            conjuncts(l, out);
            conjuncts(r, out);
        }
        _ => out.push(e),
    }
}

fn join(
    left: &Plan,
    right: &Plan,
    kind: JoinKind,
    on: Option<&PlanExpr>,
    table: &dyn Source,
) -> PolarsResult<LazyFrame> {
    let width = left.fields().len();
    let left_frame = node(left, table)?;
    // The right side's columns follow the left's.
    let right_frame = node(right, table)?.select(
        (0..right.fields().len())
            .map(|j| column(j).alias(name(width + j)))
            .collect::<Vec<_>>(),
    );
    let mut keys_left = Vec::new();
    let mut keys_right = Vec::new();
    let mut residual = Vec::new();
    let mut left_frame_filters: Vec<Expr> = Vec::new();
    let mut nulls_equal = false;
    if let Some(on) = on {
        let mut parts = Vec::new();
        conjuncts(on, &mut parts);
        // A join's keys compare as `=` (NULL matches nothing) or, when every key pair is an
        // `IS NOT DISTINCT FROM`, with NULL matching NULL; null-safe pairs among `=` keys are
        // tested after the join (inner joins only).
        let all_null_safe = parts
            .iter()
            .all(|p| matches!(p.kind, ExprKind::Binary(Binary::NotDistinct, _, _)));
        nulls_equal = all_null_safe;
        for part in parts {
            let key_op = if all_null_safe {
                Binary::NotDistinct
            } else {
                Binary::Eq
            };
            if let ExprKind::Binary(op, l, r) = &part.kind
                && *op == key_op
            {
                let (lc, rc) = (l.columns(), r.columns());
                let left_only = |c: &[usize]| !c.is_empty() && c.iter().all(|&i| i < width);
                let right_only = |c: &[usize]| !c.is_empty() && c.iter().all(|&i| i >= width);
                if left_only(&lc) && right_only(&rc) {
                    keys_left.push(expr(l)?);
                    keys_right.push(expr(r)?);
                    continue;
                }
                if right_only(&lc) && left_only(&rc) {
                    keys_left.push(expr(r)?);
                    keys_right.push(expr(l)?);
                    continue;
                }
            }
            residual.push(part);
        }
    }
    let how = match kind {
        JoinKind::Inner | JoinKind::Cross => JoinType::Inner,
        JoinKind::Left => JoinType::Left,
        JoinKind::Right => JoinType::Right,
        JoinKind::Full => JoinType::Full,
        JoinKind::Semi => JoinType::Semi,
        JoinKind::Anti => JoinType::Anti,
    };
    let mut right_frame = right_frame;
    let mut residual_after = Vec::new();
    if matches!(kind, JoinKind::Inner | JoinKind::Cross) {
        residual_after = residual;
    } else if matches!(kind, JoinKind::Semi | JoinKind::Anti)
        && !keys_left.is_empty()
        && residual.iter().any(|part| {
            let columns = part.columns();
            columns.iter().any(|&i| i < width) && columns.iter().any(|&i| i >= width)
        })
    {
        // A condition over both sides (`l2.k <> l1.k`): the pairs on the keys that meet every
        // condition, by the left row's number; a semi join keeps the left rows among them,
        // an anti join the others.
        const ROW: &str = "#row";
        // Cached: both uses read one numbering (a join's output order is not deterministic,
        // so numbering it twice could number other rows).
        let numbered = left_frame.with_row_index(ROW, None).cache();
        let mut args = JoinArgs::new(JoinType::Inner).with_coalesce(JoinCoalesce::KeepColumns);
        args.nulls_equal = nulls_equal;
        let mut pairs = numbered
            .clone()
            .join(right_frame, keys_left, keys_right, args);
        for part in residual {
            pairs = pairs.filter(expr(part)?);
        }
        let how = if kind == JoinKind::Semi {
            JoinType::Semi
        } else {
            JoinType::Anti
        };
        return Ok(numbered
            .join(
                pairs.select([col(ROW)]),
                [col(ROW)],
                [col(ROW)],
                JoinArgs::new(how),
            )
            .select((0..width).map(column).collect::<Vec<_>>()));
    } else if matches!(kind, JoinKind::Semi | JoinKind::Anti) {
        // Semi and anti joins keep only the left side's columns: a condition on the right
        // side filters it first. One on the left side decides whether a left row can match:
        // a semi join drops the rows where it fails, an anti join keeps them (their keys
        // are made NULL, which match nothing).
        let mut left_when: Vec<Expr> = Vec::new();
        for part in residual {
            let columns = part.columns();
            if !columns.is_empty() && columns.iter().all(|&i| i >= width) {
                right_frame = right_frame.filter(expr(part)?);
            } else if columns.iter().all(|&i| i < width) {
                if kind == JoinKind::Semi {
                    left_frame_filters.push(expr(part)?);
                } else {
                    left_when.push(expr(part)?);
                }
            } else {
                polars_bail!(
                    InvalidOperation: "a subquery's condition comparing it with the outer query must be equalities; other comparisons are not supported yet"
                );
            }
        }
        if let Some(all) = left_when.into_iter().reduce(|a, b| a.and(b)) {
            keys_left = keys_left
                .into_iter()
                .map(|k| when(all.clone()).then(k).otherwise(lit(NULL)))
                .collect();
        }
    } else {
        // An outer join's extra conditions decide which pairs match, not which rows stay. One
        // on the side whose unmatched rows are dropped filters that side first; one on the
        // side whose rows all stay makes its keys NULL where it does not hold (a NULL key
        // matches nothing). A condition over both sides has no such form yet.
        let keeps_left = matches!(kind, JoinKind::Left | JoinKind::Full);
        let keeps_right = matches!(kind, JoinKind::Right | JoinKind::Full);
        let mut left_when: Vec<Expr> = Vec::new();
        let mut right_when: Vec<Expr> = Vec::new();
        for part in residual {
            let columns = part.columns();
            let on_left = columns.iter().all(|&i| i < width);
            let on_right = columns.iter().all(|&i| i >= width);
            if on_right && !columns.is_empty() {
                if keeps_right {
                    right_when.push(expr(part)?);
                } else {
                    right_frame = right_frame.filter(expr(part)?);
                }
            } else if on_left {
                if keeps_left {
                    left_when.push(expr(part)?);
                } else {
                    left_frame_filters.push(expr(part)?);
                }
                if columns.is_empty() && keeps_right {
                    right_when.push(expr(part)?);
                }
            } else {
                polars_bail!(
                    InvalidOperation: "an outer join's condition comparing its two sides must be equalities; other comparisons between them are not supported yet"
                );
            }
        }
        let guard = |keys: Vec<Expr>, conditions: &[Expr]| -> Vec<Expr> {
            let Some(all) = conditions.iter().cloned().reduce(|a, b| a.and(b)) else {
                return keys;
            };
            keys.into_iter()
                .map(|k| when(all.clone()).then(k).otherwise(lit(NULL)))
                .collect()
        };
        keys_left = guard(keys_left, &left_when);
        keys_right = guard(keys_right, &right_when);
    }
    let mut left_frame = left_frame;
    for f in left_frame_filters {
        left_frame = left_frame.filter(f);
    }
    let joined = if keys_left.is_empty() {
        if !matches!(kind, JoinKind::Inner | JoinKind::Cross) {
            polars_bail!(InvalidOperation: "an outer join needs an equality between its two sides");
        }
        // With the order kept, Polars does not turn the cross join and a filter after it into
        // an inequality join, which its streaming engine cannot run (it panics).
        let mut args = JoinArgs::new(JoinType::Cross);
        args.maintain_order = MaintainOrderJoin::LeftRight;
        left_frame.join(right_frame, Vec::<Expr>::new(), Vec::<Expr>::new(), args)
    } else {
        left_frame.join(right_frame, keys_left, keys_right, {
            let mut args = JoinArgs::new(how).with_coalesce(JoinCoalesce::KeepColumns);
            args.nulls_equal = nulls_equal;
            args
        })
    };
    let mut joined = joined;
    for part in residual_after {
        joined = joined.filter(expr(part)?);
    }
    Ok(joined)
}

/// Adds `window`'s column, named `out`, to `frame`.
///
/// Without an ORDER BY, the window is its whole partition: the aggregate `.over()` it. With
/// one, rows are sorted by partition and order, the running value is a cumulative one over the
/// partition, and every row of a run of ties takes the run's last value (SQL's default RANGE
/// frame: tied rows are one step). Ranks come from the running row number the same way.
fn lower_window(frame: LazyFrame, window: &Window, out: PlSmallStr) -> PolarsResult<LazyFrame> {
    let partition = window
        .partition
        .iter()
        .map(expr)
        .collect::<PolarsResult<Vec<_>>>()?;
    let argument = window.argument.as_ref().map(expr).transpose()?;
    let whole =
        window.frame == Frame::Whole && matches!(window.function, WindowFunction::Aggregate(_));
    if window.order.is_empty() || whole {
        let WindowFunction::Aggregate(function) = window.function else {
            polars_bail!(InvalidOperation: "{:?} needs an ORDER BY", window.function);
        };
        let aggregated = aggregate(&Aggregate {
            function,
            argument: window.argument.clone(),
            distinct: false,
            ty: window.ty,
        })?;
        return Ok(frame.with_column(within(aggregated, &partition)?.alias(out)));
    }
    // Sorted by partition, then order; ties are the runs equal on partition and order.
    let mut by = partition.clone();
    let mut descending = vec![false; partition.len()];
    let mut nulls_last = vec![false; partition.len()];
    let mut tie = partition.clone();
    for key in &window.order {
        let e = expr(&key.expr)?;
        let e = match key.expr.ty {
            SqlType::Decimal { .. } => e.cast(DataType::Float64),
            _ => e,
        };
        by.push(e.clone());
        tie.push(e);
        descending.push(key.descending);
        nulls_last.push(!key.nulls_first);
    }
    let frame = frame.sort_by_exprs(
        by,
        SortMultipleOptions::new()
            .with_order_descending_multi(descending)
            .with_nulls_last_multi(nulls_last)
            .with_maintain_order(true),
    );
    let running = format!("{out}$running");
    let row = format!("{out}$row");
    // The running row number within the partition, from 1.
    let numbers = int_range(lit(1i64), len() + lit(1i64), 1, DataType::Int64);
    let frame = frame.with_column(within(numbers, &partition)?.alias(&row));
    let value = match (window.function, argument) {
        (WindowFunction::RowNumber, _) => col(&row),
        (WindowFunction::Shift { offset }, Some(x)) => {
            // Shifted within the partition, in the window's order; where the row at the
            // offset is outside the partition, the default.
            let shifted = within(x.shift(lit(offset)), &partition)?;
            let value = match &window.default {
                None => shifted,
                Some(default) => {
                    let outside = within(col(&row).shift(lit(offset)), &partition)?.is_null();
                    when(outside).then(expr(default)?).otherwise(shifted)
                }
            };
            return Ok(frame
                .with_column(value.alias(out))
                .drop(by_name([row], true, false)));
        }
        (WindowFunction::Rank, _) => col(&row).min().over(tie.clone())?,
        (WindowFunction::DenseRank, _) => {
            // A run of ties starts where the row number is the run's first.
            let starts = format!("{out}$starts");
            let frame = frame.with_column(
                col(&row)
                    .eq(col(&row).min().over(tie.clone())?)
                    .cast(DataType::Int64)
                    .alias(&starts),
            );
            return Ok(frame
                .with_column(within(col(&starts).cum_sum(false), &partition)?.alias(&running))
                .with_column(col(&running).max().over(tie)?.alias(out))
                .drop(by_name([running, row, starts], true, false)));
        }
        (WindowFunction::Aggregate(AggregateFunction::CountRows), _) => col(&row),
        (WindowFunction::Aggregate(AggregateFunction::Count), Some(x)) => within(
            x.is_not_null().cast(DataType::Int64).cum_sum(false),
            &partition,
        )?,
        (
            WindowFunction::Aggregate(function @ (AggregateFunction::Sum | AggregateFunction::Avg)),
            Some(x),
        ) => {
            let count = within(
                x.clone().is_not_null().cast(DataType::Int64).cum_sum(false),
                &partition,
            )?;
            let sum_type = match (function, window.ty) {
                (AggregateFunction::Avg, SqlType::Decimal { scale, .. }) => {
                    DataType::Decimal(38, usize::from(scale))
                }
                (AggregateFunction::Avg, _) => DataType::Float64,
                _ => dtype(window.ty),
            };
            let sum = within(
                x.cast(sum_type.clone())
                    .fill_null(lit(0).cast(sum_type))
                    .cum_sum(false),
                &partition,
            )?;
            let value = match function {
                AggregateFunction::Avg => match window.ty {
                    SqlType::Decimal { .. } => {
                        (sum / count.clone().cast(DataType::Decimal(38, 0))).cast(dtype(window.ty))
                    }
                    _ => sum / count.clone().cast(DataType::Float64),
                },
                _ => sum,
            };
            // NULL until the first value that is not NULL, as SUM and AVG over no values.
            when(count.eq(lit(0i64)))
                .then(lit(NULL).cast(dtype(window.ty)))
                .otherwise(value)
        }
        (
            WindowFunction::Aggregate(f @ (AggregateFunction::Min | AggregateFunction::Max)),
            Some(x),
        ) => {
            // The extreme so far; a NULL row takes the one before it (NULL until the first
            // value), as MIN and MAX skip NULLs.
            let extreme = if f == AggregateFunction::Min {
                x.cum_min(false)
            } else {
                x.cum_max(false)
            };
            within(
                within(extreme, &partition)?
                    .fill_null_with_strategy(FillNullStrategy::Forward(None)),
                &partition,
            )?
        }
        (function, _) => {
            polars_bail!(InvalidOperation: "the window function {function:?} with an ORDER BY")
        }
    };
    let frame = frame.with_column(value.alias(&running));
    // RANGE (the default): tied rows are one step and share the run's last value; ROWS: each
    // row its own.
    let frame = match window.frame {
        Frame::RowsToCurrent => frame.with_column(col(&running).alias(out)),
        _ => frame.with_column(col(&running).last().over(tie)?.alias(out)),
    };
    Ok(frame.drop(by_name([running, row], true, false)))
}

/// `e` over `partition`, or over all rows when there is no partition.
fn within(e: Expr, partition: &[Expr]) -> PolarsResult<Expr> {
    if partition.is_empty() {
        Ok(e)
    } else {
        e.over(partition)
    }
}

fn aggregate(a: &Aggregate) -> PolarsResult<Expr> {
    let argument = a.argument.as_ref().map(expr).transpose()?;
    let typed_null = || lit(NULL).cast(dtype(a.ty));
    Ok(match (a.function, argument) {
        (AggregateFunction::CountRows, _) => len().cast(DataType::Int64),
        (AggregateFunction::Count, Some(x)) if a.distinct => {
            x.drop_nulls().n_unique().cast(DataType::Int64)
        }
        (AggregateFunction::Count, Some(x)) => x.count().cast(DataType::Int64),
        (AggregateFunction::Sum, Some(x)) => {
            let x = if a.distinct { x.unique() } else { x };
            let x = x.cast(dtype(a.ty));
            // SQL's SUM over no values is NULL; Polars' is 0.
            when(x.clone().count().eq(lit(0)))
                .then(typed_null())
                .otherwise(x.sum())
        }
        (AggregateFunction::Avg, Some(x)) => {
            let x = if a.distinct { x.unique() } else { x };
            match a.ty {
                SqlType::Decimal { scale, .. } => {
                    // Exact: the sum at the result's scale, divided by the count.
                    let sum = x
                        .clone()
                        .cast(DataType::Decimal(38, usize::from(scale)))
                        .sum();
                    let count = x.count().cast(DataType::Decimal(38, 0));
                    let none = count.clone().eq(lit(0).cast(DataType::Decimal(38, 0)));
                    // Both branches are computed: the divisor is never zero (Polars' decimal
                    // division fails on a zero), and no values give NULL.
                    let divisor = when(none.clone())
                        .then(lit(1).cast(DataType::Decimal(38, 0)))
                        .otherwise(count);
                    when(none)
                        .then(typed_null())
                        .otherwise((sum / divisor).cast(dtype(a.ty)))
                }
                _ => x.cast(DataType::Float64).mean(),
            }
        }
        (
            f @ (AggregateFunction::StddevSamp
            | AggregateFunction::StddevPop
            | AggregateFunction::VarSamp
            | AggregateFunction::VarPop),
            Some(x),
        ) => {
            let x = if a.distinct { x.unique() } else { x }.cast(DataType::Float64);
            let sample = matches!(
                f,
                AggregateFunction::StddevSamp | AggregateFunction::VarSamp
            );
            let ddof = u8::from(sample);
            let spread = if matches!(
                f,
                AggregateFunction::StddevSamp | AggregateFunction::StddevPop
            ) {
                x.clone().std(ddof)
            } else {
                x.clone().var(ddof)
            };
            // NULL over too few values (Spark's answer), never NaN.
            when(x.count().cast(DataType::Int64).lt_eq(lit(i64::from(ddof))))
                .then(typed_null())
                .otherwise(spread)
        }
        (AggregateFunction::Min, Some(x)) => x.min(),
        (AggregateFunction::Max, Some(x)) => x.max(),
        // Only ever alone, lowered by `scalar_subquery` with its one-row check; `first()` here
        // would answer a subquery of several rows with one of them.
        (AggregateFunction::Single, _) => {
            polars_bail!(ComputeError: "a scalar subquery's value among other aggregates")
        }
        (f, None) => polars_bail!(ComputeError: "aggregate {f:?} without an argument"),
    })
}

/// A literal of `ty`.
fn literal(value: &Literal, ty: SqlType) -> PolarsResult<Expr> {
    Ok(match value {
        Literal::Null => lit(NULL).cast(dtype(ty)),
        Literal::Boolean(b) => lit(*b),
        Literal::Integer(n) => lit(*n).cast(dtype(ty)),
        Literal::Decimal(unscaled) => match ty {
            SqlType::Decimal { precision, scale } => Expr::Literal(LiteralValue::from(
                Scalar::new_decimal(*unscaled, usize::from(precision), usize::from(scale)),
            )),
            _ => polars_bail!(ComputeError: "a decimal literal typed {ty}"),
        },
        Literal::Double(f) => lit(*f),
        Literal::String(s) => lit(s.as_str()),
        Literal::Date(days) => lit(*days).cast(DataType::Date),
        Literal::Timestamp(micros) => {
            lit(*micros).cast(DataType::Datetime(TimeUnit::Microseconds, None))
        }
    })
}

/// `l / r` as Kylin answers it, in `ty`.
fn divide(l: Expr, r: Expr, r_ty: SqlType, ty: SqlType) -> Expr {
    let zero = r.clone().eq(lit(0).cast(dtype(r_ty)));
    // Polars computes both branches of the `when` below: a zero divisor is made one there
    // (Polars' decimal division fails on a zero), and its rows are NULL.
    let r = when(zero.clone())
        .then(lit(1).cast(dtype(r_ty)))
        .otherwise(r);
    let quotient = match ty {
        // Integer division truncates towards zero, in integers (a double would round 64-bit
        // values): Polars' floor division, one up where it rounded a negative quotient down.
        t if t.is_integer() => {
            let (a, b) = (l.cast(dtype(ty)), r.cast(dtype(ty)));
            let zero = || lit(0).cast(dtype(ty));
            let floored = a.clone().floor_div(b.clone());
            let inexact = (a.clone() % b.clone()).neq(zero());
            let negative = a.lt(zero()).neq(b.lt(zero()));
            when(inexact.and(negative))
                .then(floored.clone() + lit(1).cast(dtype(ty)))
                .otherwise(floored)
        }
        // Polars divides decimals at the larger scale of the two: the dividend is brought to
        // the result's scale first.
        SqlType::Decimal { scale, .. } => {
            let l = l.cast(DataType::Decimal(38, usize::from(scale)));
            let r = match r_ty {
                SqlType::Decimal { .. } => r,
                _ => r.cast(DataType::Decimal(38, 0)),
            };
            (l / r).cast(dtype(ty))
        }
        _ => (l.cast(DataType::Float64) / r.cast(DataType::Float64)).cast(dtype(ty)),
    };
    when(zero)
        .then(lit(NULL).cast(dtype(ty)))
        .otherwise(quotient)
}

fn arithmetic(op: Arithmetic, l: &PlanExpr, r: &PlanExpr, ty: SqlType) -> PolarsResult<Expr> {
    let (le, re) = (expr(l)?, expr(r)?);
    Ok(match op {
        Arithmetic::Divide => divide(le, re, r.ty, ty),
        Arithmetic::Multiply => match ty {
            // Polars multiplies decimals at the larger scale of the two; at the product's
            // scale nothing is lost.
            SqlType::Decimal { scale, .. } => (le.cast(DataType::Decimal(38, usize::from(scale)))
                * re.cast(dtype(r.ty)))
            .cast(dtype(ty)),
            _ => le.cast(dtype(ty)) * re.cast(dtype(ty)),
        },
        Arithmetic::Add => le.cast(dtype(ty)) + re.cast(dtype(ty)),
        Arithmetic::Subtract => le.cast(dtype(ty)) - re.cast(dtype(ty)),
        Arithmetic::Modulo if matches!(ty, SqlType::Decimal { .. }) => {
            polars_bail!(InvalidOperation: "% of DECIMAL values is not supported on Polars projects yet")
        }
        Arithmetic::Modulo => {
            let zero = re.clone().eq(lit(0).cast(dtype(r.ty)));
            let re = when(zero.clone())
                .then(lit(1).cast(dtype(r.ty)))
                .otherwise(re);
            // Truncated remainder (the dividend's sign), as Spark answers.
            let (a, b) = (le.cast(dtype(ty)), re.cast(dtype(ty)));
            let floored = a.clone() % b.clone();
            let truncated = when(
                floored.clone().neq(lit(0).cast(dtype(ty))).and(
                    a.lt(lit(0).cast(dtype(ty)))
                        .neq(b.clone().lt(lit(0).cast(dtype(ty)))),
                ),
            )
            .then(floored.clone() - b)
            .otherwise(floored);
            when(zero)
                .then(lit(NULL).cast(dtype(ty)))
                .otherwise(truncated)
        }
    })
}

/// Lowers a scalar expression.
pub(crate) fn expr(e: &PlanExpr) -> PolarsResult<Expr> {
    Ok(match &e.kind {
        ExprKind::Column(i) => column(*i),
        ExprKind::Literal(value) => literal(value, e.ty)?,
        ExprKind::Unary(Unary::Not, x) => expr(x)?.not(),
        ExprKind::Unary(Unary::Negate, x) => lit(0).cast(dtype(e.ty)) - expr(x)?.cast(dtype(e.ty)),
        ExprKind::Binary(Binary::Arithmetic(op), l, r) => arithmetic(*op, l, r, e.ty)?,
        ExprKind::Binary(op, l, r) => {
            let (l, r) = (expr(l)?, expr(r)?);
            match op {
                Binary::Eq => l.eq(r),
                Binary::NotEq => l.neq(r),
                Binary::Lt => l.lt(r),
                Binary::LtEq => l.lt_eq(r),
                Binary::Gt => l.gt(r),
                Binary::GtEq => l.gt_eq(r),
                Binary::And => l.and(r),
                Binary::Or => l.or(r),
                Binary::Concat => concat_str([l, r], "", false),
                Binary::NotDistinct => l.eq_missing(r),
                Binary::Arithmetic(_) => unreachable!("matched above"),
            }
        }
        ExprKind::Cast(x) => match (&x.kind, x.ty) {
            // A string literal converted here, as Spark converts it.
            (ExprKind::Literal(Literal::String(s)), SqlType::Varchar)
                if e.ty != SqlType::Varchar =>
            {
                literal(&Literal::from_text(s, e.ty).unwrap_or(Literal::Null), e.ty)?
            }
            _ => expr(x)?.cast(dtype(e.ty)),
        },
        ExprKind::Case {
            branches,
            otherwise,
        } => {
            let mut chain: Option<ChainedThen> = None;
            let mut first: Option<Then> = None;
            for (condition, value) in branches {
                let (c, v) = (expr(condition)?, expr(value)?);
                match (first.take(), chain.take()) {
                    (None, None) => first = Some(when(c).then(v)),
                    (Some(t), None) => chain = Some(t.when(c).then(v)),
                    (None, Some(ch)) => chain = Some(ch.when(c).then(v)),
                    (Some(_), Some(_)) => unreachable!("one of the two"),
                }
            }
            let otherwise = expr(otherwise)?;
            match (first, chain) {
                (Some(t), None) => t.otherwise(otherwise),
                (None, Some(ch)) => ch.otherwise(otherwise),
                _ => otherwise,
            }
        }
        ExprKind::InList {
            expr: x,
            list,
            negated,
        } => {
            // An OR of equalities: SQL's three-valued answer with NULLs in the list.
            let x = expr(x)?;
            let mut any: Option<Expr> = None;
            for item in list {
                let eq = x.clone().eq(expr(item)?);
                any = Some(match any {
                    None => eq,
                    Some(a) => a.or(eq),
                });
            }
            let any = any.unwrap_or_else(|| lit(false));
            if *negated { any.not() } else { any }
        }
        ExprKind::InKeys { expr: x, keys } => {
            // A bitmap over the keys' range where it stays small; else Polars' hash set.
            let x = expr(x)?;
            match crate::keyset::KeySet::new(keys) {
                Some(set) => set.test_expr(x),
                None => x.cast(DataType::Int64).is_in(
                    lit(Series::new(PlSmallStr::EMPTY, keys.as_ref())).implode(false),
                    false,
                ),
            }
        }
        ExprKind::Like {
            expr: x,
            pattern,
            negated,
        } => {
            let ExprKind::Literal(Literal::String(p)) = &pattern.kind else {
                polars_bail!(InvalidOperation: "LIKE takes a literal pattern for now");
            };
            let matched = expr(x)?.str().contains(lit(like_regex(p)), true);
            if *negated { matched.not() } else { matched }
        }
        ExprKind::IsNull { expr: x, negated } => {
            if *negated {
                expr(x)?.is_not_null()
            } else {
                expr(x)?.is_null()
            }
        }
        ExprKind::Function(f, args) => function(*f, args, e.ty)?,
    })
}

/// A LIKE pattern as an anchored regular expression (`%`: any run, `_`: one character).
pub(crate) fn like_regex(pattern: &str) -> String {
    let mut regex = String::from("(?s)^");
    for c in pattern.chars() {
        match c {
            '%' => regex.push_str(".*"),
            '_' => regex.push('.'),
            c if "\\.+*?()|[]{}^$#&-~".contains(c) => {
                regex.push('\\');
                regex.push(c);
            }
            c => regex.push(c),
        }
    }
    regex.push('$');
    regex
}

fn function(f: Func, args: &[PlanExpr], ty: SqlType) -> PolarsResult<Expr> {
    let lowered = args.iter().map(expr).collect::<PolarsResult<Vec<_>>>()?;
    let one = || {
        lowered
            .first()
            .cloned()
            .ok_or_else(|| polars_err!(ComputeError: "{f:?} without an argument"))
    };
    Ok(match f {
        Func::Upper => one()?.str().to_uppercase(),
        Func::Lower => one()?.str().to_lowercase(),
        Func::Trim => one()?.str().strip_chars(lit(" ")),
        Func::CharLength => one()?.str().len_chars().cast(DataType::Int32),
        Func::Substring => {
            // 1-based; 0 counts as 1, a negative start counts from the end (Spark).
            let start = lowered
                .get(1)
                .cloned()
                .unwrap_or_else(|| lit(1))
                .cast(DataType::Int64);
            let offset = when(start.clone().gt(lit(0i64)))
                .then(start.clone() - lit(1i64))
                .otherwise(
                    when(start.clone().eq(lit(0i64)))
                        .then(lit(0i64))
                        .otherwise(start),
                );
            let length = match lowered.get(2) {
                Some(l) => l.clone().cast(DataType::UInt64),
                None => lit(NULL).cast(DataType::UInt64),
            };
            one()?.str().slice(offset, length)
        }
        Func::Coalesce => coalesce(&lowered),
        Func::Abs => one()?.abs(),
        Func::Round => {
            let decimals = match args.get(1).map(|a| &a.kind) {
                None => 0,
                Some(ExprKind::Literal(Literal::Integer(n))) => u32::try_from(*n).map_err(
                    |_| polars_err!(InvalidOperation: "ROUND takes a scale of 0 or more for now"),
                )?,
                Some(_) => polars_bail!(InvalidOperation: "ROUND takes a literal scale"),
            };
            match ty {
                SqlType::Float | SqlType::Double => {
                    one()?.round(decimals, RoundMode::HalfAwayFromZero)
                }
                t if t.is_integer() => one()?,
                _ => one()?
                    .cast(DataType::Float64)
                    .round(decimals, RoundMode::HalfAwayFromZero)
                    .cast(dtype(ty)),
            }
        }
        Func::Floor | Func::Ceil => match args.first().map(|a| a.ty) {
            Some(t) if t.is_integer() => one()?,
            _ => {
                let x = one()?.cast(DataType::Float64);
                let rounded = if f == Func::Floor {
                    x.floor()
                } else {
                    x.ceil()
                };
                rounded.cast(dtype(ty))
            }
        },
        Func::Year => one()?.dt().year().cast(DataType::Int32),
        Func::Quarter => one()?.dt().quarter().cast(DataType::Int32),
        Func::Month => one()?.dt().month().cast(DataType::Int32),
        Func::DayOfMonth => one()?.dt().day().cast(DataType::Int32),
        // Polars counts Monday as 1 and Sunday as 7; Spark Sunday as 1 and Saturday as 7.
        Func::DayOfWeek => (one()?.dt().weekday().cast(DataType::Int32) % lit(7i32)) + lit(1i32),
        Func::DayOfYear => one()?.dt().ordinal_day().cast(DataType::Int32),
        Func::Week => one()?.dt().week().cast(DataType::Int32),
        Func::Hour => one()?.dt().hour().cast(DataType::Int32),
        Func::Minute => one()?.dt().minute().cast(DataType::Int32),
        Func::Second => one()?.dt().second().cast(DataType::Int32),
        Func::DateDiff => {
            let day = |e: &Expr| e.clone().cast(DataType::Int32);
            match lowered.as_slice() {
                [end, start] => day(end) - day(start),
                _ => polars_bail!(ComputeError: "DATEDIFF takes two dates"),
            }
        }
        Func::Replace => match lowered.as_slice() {
            [text, search, replacement] => when(search.clone().eq(lit("")))
                .then(text.clone())
                .otherwise(text.clone().str().replace_all(
                    search.clone(),
                    replacement.clone(),
                    true,
                )),
            _ => polars_bail!(ComputeError: "REPLACE takes three strings"),
        },
        Func::Left | Func::Right => match lowered.as_slice() {
            [text, n] => {
                let n = n.clone().cast(DataType::Int64);
                let taken = if f == Func::Left {
                    text.clone().str().head(n.clone())
                } else {
                    text.clone().str().tail(n.clone())
                };
                when(n.clone().lt_eq(lit(0i64)))
                    .then(
                        when(text.clone().is_null())
                            .then(lit(NULL).cast(DataType::String))
                            .otherwise(lit("")),
                    )
                    .otherwise(taken)
            }
            _ => polars_bail!(ComputeError: "LEFT and RIGHT take a string and a length"),
        },
        Func::LTrim => one()?.str().strip_chars_start(lit(" ")),
        Func::RTrim => one()?.str().strip_chars_end(lit(" ")),
        Func::Power => match lowered.as_slice() {
            [x, y] => x.clone().pow(y.clone()),
            _ => polars_bail!(ComputeError: "POWER takes two numbers"),
        },
        Func::Sqrt => one()?.sqrt(),
        Func::DateAdd => match lowered.as_slice() {
            [d, n] => (d.clone().cast(DataType::Int32) + n.clone().cast(DataType::Int32))
                .cast(DataType::Date),
            _ => polars_bail!(ComputeError: "DATE_ADD takes a date and a number of days"),
        },
        Func::FloorTo(unit) => {
            use spool_planner::plan::TimeUnit as U;
            let every = match unit {
                U::Year => "1y",
                U::Quarter => "1q",
                U::Month => "1mo",
                U::Week => "1w",
                U::Day => "1d",
                U::Hour => "1h",
                U::Minute => "1m",
                U::Second => "1s",
            };
            one()?.dt().truncate(lit(every))
        }
    })
}
