//! Integer key sets tested by a bitmap: the filters of one query's fact table.
//!
//! Star-join planning (see `joins`) filters the fact table by the keys a dimension's filters
//! keep. Written as `lo_partkey IN (...)`, Polars tests each fact row against a hash set of the
//! keys: about 4-5 ns a row on SSB, and slower the more keys there are. Keys of a dimension are
//! dense integers, so a bitmap over their range answers the same question with one bit read
//! per row. Polars SQL has no such test, and its user-defined functions are not seen inside a
//! derived table (Polars 0.55 plans `FROM (SELECT ...)` in a context without them), so the
//! engine registers the filtered fact table itself, for one query, as a frame of its own
//! ([`KeySet::filter`]) and the planned SQL reads that frame.
//!
//! Invariants:
//! - A set's test is true exactly for the integers in it, false for any other integer, NULL
//!   for NULL (as `IN` would be), whatever the column's integer type.
//! - The test is elementwise, so Polars pushes the filter into the Parquet scan like the `IN`
//!   list it replaces.
//! - A set is made only where its bitmap stays small ([`MAX_SPAN`]); planning writes an `IN`
//!   list otherwise.

use std::sync::Arc;

use polars::prelude::arity::unary_elementwise_values;
use polars::prelude::{
    BooleanChunked, BooleanType, Column, DataType, Expr, Field, Int32Type, Int64Type, IntoColumn,
    PolarsResult, Schema, col, polars_bail,
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
        let low = *values.iter().min()?;
        let high = *values.iter().max()?;
        let span = u64::try_from(i128::from(high) - i128::from(low) + 1).ok()?;
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
    pub(crate) fn filter(self, column: &str) -> Expr {
        let set = Arc::new(self);
        col(column).map(
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
}
