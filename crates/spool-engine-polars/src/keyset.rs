//! Integer key sets tested by a bitmap: the filters of one query's fact table.
//!
//! The planner's star-join pass filters the fact table by the keys a dimension's filters keep
//! (`ExprKind::InKeys`). Tested as `is_in`, Polars checks each fact row against a hash set of
//! the keys: about 4-5 ns a row on SSB, and slower the more keys there are. Keys of a dimension
//! are dense integers, so a bitmap over their range answers the same question with one bit
//! read per row ([`KeySet::test_expr`], which the lowering uses).
//!
//! Invariants:
//! - A set's test is true exactly for the integers in it, false for any other integer, NULL
//!   for NULL (as `IN` would be), whatever the column's integer type.
//! - The test is elementwise, so Polars pushes the filter into the Parquet scan like the `IN`
//!   list it replaces.
//! - A set is made only where its bitmap stays small ([`MAX_SPAN`]); the lowering tests an `IN`
//!   list otherwise.

use std::sync::Arc;

use polars::prelude::arity::unary_elementwise_values;
use polars::prelude::{
    BooleanChunked, BooleanType, ChunkedArray, Column, DataFrame, DataType, Expr, Field, IDX_DTYPE,
    IdxCa, IdxSize, Int32Type, Int64Type, IntoColumn, PolarsNumericType, PolarsResult, Schema, col,
    polars_bail,
};

/// The widest key range a set covers: a bitmap of 8 MiB. Dimension keys are dense (SSB's
/// largest, `p_partkey` at SF 100, spans 1.4 million).
pub(crate) const MAX_SPAN: u64 = 1 << 26;

/// A set of integers as a bitmap over their range.
#[derive(Debug)]
pub(crate) struct KeySet {
    low: i64,
    span: u64,
    bits: Vec<u64>,
}

impl KeySet {
    /// The set of `values`; `None` when there are none or they span more than [`MAX_SPAN`].
    pub(crate) fn new(values: &[i64]) -> Option<Self> {
        let (low, span) = span_of(values)?;
        if span > MAX_SPAN {
            return None;
        }
        let mut bits = vec![0u64; span.div_ceil(64) as usize];
        for &v in values {
            let at = v.wrapping_sub(low) as u64;
            bits[(at >> 6) as usize] |= 1 << (at & 63);
        }
        Some(Self { low, span, bits })
    }

    /// Whether `v` is in the set.
    #[inline]
    pub(crate) fn contains(&self, v: i64) -> bool {
        let at = v.wrapping_sub(self.low) as u64;
        at < self.span && self.bits[(at >> 6) as usize] >> (at & 63) & 1 == 1
    }

    /// The expression true where `column` holds a key of the set.
    #[cfg(test)]
    pub(crate) fn filter(self, column: &str) -> Expr {
        self.test_expr(col(column))
    }

    /// The expression true where the integer `value` is a key of the set.
    pub(crate) fn test_expr(self, value: Expr) -> Expr {
        let set = Arc::new(self);
        value.map(
            move |values| set.test(&values),
            |_: &Schema, field: &Field| Ok(Field::new(field.name().clone(), DataType::Boolean)),
        )
    }

    /// The membership of each value of an integer column.
    fn test(&self, column: &Column) -> PolarsResult<Column> {
        let series = column.as_materialized_series();
        let name = series.name().clone();
        let test64 = |values: &polars::prelude::Int64Chunked| -> BooleanChunked {
            unary_elementwise_values::<Int64Type, BooleanType, _>(values, |v| self.contains(v))
        };
        let mask: BooleanChunked = match series.dtype() {
            DataType::Int32 => {
                unary_elementwise_values::<Int32Type, BooleanType, _>(series.i32()?, |v| {
                    self.contains(i64::from(v))
                })
            }
            DataType::Int64 => test64(series.i64()?),
            dtype if dtype.is_integer() => test64(series.strict_cast(&DataType::Int64)?.i64()?),
            dtype => polars_bail!(InvalidOperation: "a key set is tested on integers, not {dtype}"),
        };
        Ok(mask.with_name(name).into_column())
    }
}

/// The smallest of `values` and how many integers lie from it to the largest; `None` for no
/// values.
fn span_of(values: &[i64]) -> Option<(i64, u64)> {
    let low = *values.iter().min()?;
    let high = *values.iter().max()?;
    let span = u64::try_from(i128::from(high) - i128::from(low) + 1).ok()?;
    Some((low, span))
}

/// The row [`Lookup::rows`] gives a key that is no key of the dimension.
pub(crate) const NO_ROW: IdxSize = IdxSize::MAX;

/// The widest key range a [`Lookup`] covers: a slot array of 16 MiB.
pub(crate) const MAX_LOOKUP_SPAN: u64 = 1 << 22;

/// A dimension's kept rows by key: what an inner join on a unique integer key takes from it,
/// without the join. A join by lookup (`spool_planner::plan::JoinStrategy::Lookup`) finds each
/// fact row's dimension row by its key, drops the fact rows without one, then takes each
/// column the query reads from that row: a read from an array where Polars' join hashes and
/// probes each fact row.
///
/// Invariants: every key of `rows` is present once (a repeated key would make an inner join
/// return the fact row twice, so [`Lookup::new`] refuses it); `slots[k - low]` is the row of key
/// `k`, or [`NO_ROW`] for an integer that is no key; a NULL fact key has no row.
#[derive(Debug)]
pub(crate) struct Lookup {
    low: i64,
    slots: Vec<IdxSize>,
    rows: DataFrame,
}

impl Lookup {
    /// The lookup of `rows` by their integer column `key`: `None` when the column is missing or
    /// not an integer, a key repeats, no row has a key, or the keys span more than
    /// [`MAX_LOOKUP_SPAN`]. Rows without a key are never joined and are left out.
    pub(crate) fn new(rows: DataFrame, key: &str) -> Option<Self> {
        let column = rows.column(key).ok()?;
        if !column.dtype().is_integer() || rows.height() >= NO_ROW as usize {
            return None;
        }
        let keys = column
            .as_materialized_series()
            .strict_cast(&DataType::Int64)
            .ok()?;
        let keys = keys.i64().ok()?;
        let present: Vec<i64> = keys.iter().flatten().collect();
        let (low, span) = span_of(&present)?;
        if span > MAX_LOOKUP_SPAN {
            return None;
        }
        let mut slots = vec![NO_ROW; span as usize];
        for (row, key) in keys.iter().enumerate() {
            let Some(key) = key else { continue };
            let slot = &mut slots[key.wrapping_sub(low) as u64 as usize];
            if *slot != NO_ROW {
                return None;
            }
            *slot = IdxSize::try_from(row).ok()?;
        }
        Some(Self { low, slots, rows })
    }

    /// The dimension's kept rows.
    pub(crate) fn height(&self) -> usize {
        self.rows.height()
    }

    /// The row of the dimension for each key in the fact table's `column`: [`NO_ROW`] for a
    /// NULL key and for an integer that is no key.
    pub(crate) fn rows(self: &Arc<Self>, column: &str) -> Expr {
        let lookup = Arc::clone(self);
        col(column).map(
            move |keys| lookup.rows_of(&keys),
            |_: &Schema, field: &Field| Ok(Field::new(field.name().clone(), IDX_DTYPE)),
        )
    }

    /// The dimension's column `name` at the rows in the column `rows` (made by
    /// [`Lookup::rows`], without [`NO_ROW`]); `None` when the dimension has no such column.
    pub(crate) fn column(self: &Arc<Self>, rows: &str, name: &str) -> Option<Expr> {
        let dtype = self.rows.column(name).ok()?.dtype().clone();
        let lookup = Arc::clone(self);
        let taken = name.to_owned();
        Some(
            col(rows)
                .map(
                    move |rows| lookup.rows.column(&taken)?.take(rows.idx()?),
                    move |_: &Schema, field: &Field| {
                        Ok(Field::new(field.name().clone(), dtype.clone()))
                    },
                )
                .alias(name),
        )
    }

    fn rows_of(&self, keys: &Column) -> PolarsResult<Column> {
        let series = keys.as_materialized_series();
        let rows = match series.dtype() {
            DataType::Int32 => self.rows_at(series.i32()?),
            DataType::Int64 => self.rows_at(series.i64()?),
            dtype if dtype.is_integer() => {
                self.rows_at(series.strict_cast(&DataType::Int64)?.i64()?)
            }
            dtype => {
                polars_bail!(InvalidOperation: "a dimension is looked up by integers, not {dtype}")
            }
        };
        Ok(IdxCa::from_vec(series.name().clone(), rows).into_column())
    }

    /// The rows of `keys`, one chunk's values at a time (a builder per value cost 18 % of
    /// SSB Q4.1's samples).
    fn rows_at<T>(&self, keys: &ChunkedArray<T>) -> Vec<IdxSize>
    where
        T: PolarsNumericType,
        T::Native: Into<i64>,
    {
        let mut rows = Vec::with_capacity(keys.len());
        for chunk in keys.downcast_iter() {
            let values = chunk.values().as_slice();
            match chunk.validity().filter(|valid| valid.unset_bits() > 0) {
                None => rows.extend(values.iter().map(|&key| self.row(key.into()))),
                Some(valid) => rows.extend(
                    values
                        .iter()
                        .zip(valid.iter())
                        .map(|(&key, valid)| if valid { self.row(key.into()) } else { NO_ROW }),
                ),
            }
        }
        rows
    }

    #[inline]
    fn row(&self, key: i64) -> IdxSize {
        let at = key.wrapping_sub(self.low) as u64;
        if at < self.slots.len() as u64 {
            self.slots[at as usize]
        } else {
            NO_ROW
        }
    }
}

#[cfg(test)]
mod tests {
    use polars::prelude::{IntoLazy, NamedFrom, Series, df};

    use super::*;

    #[test]
    fn a_key_set_holds_exactly_its_keys() {
        let set = KeySet::new(&[-3, 5, 64, 65, 1_000]).expect("small span");
        let members: Vec<i64> = (-70..1_100).filter(|&v| set.contains(v)).collect();
        assert_eq!(members, [-3, 5, 64, 65, 1_000]);
        assert!(!set.contains(i64::MIN) && !set.contains(i64::MAX));
        let single = KeySet::new(&[i64::MAX]).expect("one key");
        assert!(single.contains(i64::MAX) && !single.contains(i64::MAX - 1));
        assert!(KeySet::new(&[]).is_none());
        assert!(KeySet::new(&[0, MAX_SPAN as i64]).is_none());
        assert!(KeySet::new(&[i64::MIN, i64::MAX]).is_none());
    }

    #[test]
    fn a_key_set_filters_like_in_on_every_integer_type_and_keeps_null_out() {
        let keys = [Some(1), Some(2), None, Some(3), Some(7), Some(8), Some(-2)];
        let frame = df!(
            "I32" => keys.map(|k| k.map(|v: i64| v as i32)),
            "I64" => keys,
            "U32" => keys.map(|k| k.map(|v| v.rem_euclid(256) as u32)),
            "S" => ["a", "b", "c", "d", "e", "f", "g"],
        )
        .expect("frame");
        let set = || KeySet::new(&[2, 3, 7]).expect("set");
        for column in ["I32", "I64", "U32"] {
            let kept = frame
                .clone()
                .lazy()
                .filter(set().filter(column))
                .select([col("S")])
                .collect()
                .expect("filtered");
            assert_eq!(
                kept.column("S").expect("S").as_materialized_series(),
                &Series::new("S".into(), ["b", "d", "e"]),
                "{column}"
            );
            // The same as IN, NULL included: a NULL key is neither in nor out.
            let tested = frame
                .clone()
                .lazy()
                .select([set().filter(column).is_null().alias("m")])
                .collect()
                .expect("tested");
            let nulls: Vec<Option<bool>> = tested
                .column("m")
                .and_then(|c| c.bool().map(|b| b.iter().collect()))
                .expect("mask");
            let nulls: Vec<bool> = nulls.into_iter().flatten().collect();
            assert_eq!(nulls, [false, false, true, false, false, false, false]);
        }
        let failed = frame.lazy().filter(set().filter("S")).collect();
        assert!(failed.is_err(), "a key set on text is an error");
    }

    #[test]
    fn a_lookup_takes_each_fact_rows_dimension_row_and_drops_the_rows_without_one() {
        let dimension = df!(
            "K" => [Some(3i64), None, Some(7), Some(5)],
            "NAME" => ["three", "none", "seven", "five"],
        )
        .expect("dimension");
        let lookup = Arc::new(Lookup::new(dimension.clone(), "K").expect("unique keys"));
        assert_eq!(lookup.height(), 4);
        let facts = df!(
            "FK" => [Some(5i32), Some(1), None, Some(7), Some(3), Some(100), Some(5)],
            "V" => [1i64, 2, 3, 4, 5, 6, 7],
        )
        .expect("facts");
        let joined = facts
            .lazy()
            .with_column(lookup.rows("FK").alias("rows"))
            .filter(col("rows").neq(polars::prelude::lit(NO_ROW)))
            .with_columns([lookup.column("rows", "NAME").expect("NAME")])
            .select([col("V"), col("NAME")])
            .collect()
            .expect("joined");
        let expected = df!(
            "V" => [1i64, 4, 5, 7],
            "NAME" => ["five", "seven", "three", "five"],
        )
        .expect("expected");
        assert!(joined.equals(&expected), "{joined}");
        // A repeated key would return a fact row twice; a text key is no integer key.
        let repeated = df!("K" => [1i64, 2, 1], "NAME" => ["a", "b", "c"]).expect("frame");
        assert!(Lookup::new(repeated, "K").is_none());
        assert!(Lookup::new(dimension.clone(), "NAME").is_none());
        assert!(Lookup::new(dimension, "MISSING").is_none());
        let wide = df!("K" => [0i64, MAX_LOOKUP_SPAN as i64]).expect("frame");
        assert!(Lookup::new(wide, "K").is_none());
    }
}
