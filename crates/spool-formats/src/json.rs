//! JSON: an array of row objects, typed values, NULL as `null`.

#[allow(clippy::wildcard_imports)]
use crate::*;

/// One JSON array of objects, keys in column order: `[{"A":1,"B":"x"},...]`. Numbers stay
/// numbers (decimals keep their exact digits), dates and times are strings, NaN and infinities
/// are `null`.
pub(crate) struct Json {
    /// Each column name as a JSON string followed by `:`.
    keys: Vec<Vec<u8>>,
}

impl Json {
    pub(crate) fn new(names: &[String]) -> Self {
        let keys = names
            .iter()
            .map(|n| {
                let mut key = serde_json::to_vec(n).unwrap_or_else(|_| b"\"\"".to_vec());
                key.push(b':');
                key
            })
            .collect();
        Self { keys }
    }
}

pub(crate) fn json_value(out: &mut Vec<u8>, value: &AnyValue<'_>) {
    let mut text = |s: &str| {
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    };
    match value {
        AnyValue::Null => out.extend_from_slice(b"null"),
        AnyValue::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        AnyValue::String(s) => text(s),
        AnyValue::StringOwned(s) => text(s),
        AnyValue::Int8(_)
        | AnyValue::Int16(_)
        | AnyValue::Int32(_)
        | AnyValue::Int64(_)
        | AnyValue::Int128(_)
        | AnyValue::UInt8(_)
        | AnyValue::UInt16(_)
        | AnyValue::UInt32(_)
        | AnyValue::UInt64(_)
        | AnyValue::UInt128(_)
        | AnyValue::Decimal(..) => {
            let _ = write!(out, "{value}");
        }
        AnyValue::Float32(f) => float(out, f64::from(*f)),
        AnyValue::Float64(f) => float(out, *f),
        // As the CSV prints them (Kylin's text).
        AnyValue::Datetime(v, unit, _) | AnyValue::DatetimeOwned(v, unit, _) => {
            let per_milli = match unit {
                polars::prelude::TimeUnit::Nanoseconds => 1_000_000,
                polars::prelude::TimeUnit::Microseconds => 1_000,
                polars::prelude::TimeUnit::Milliseconds => 1,
            };
            text(&crate::timestamp::kylin_timestamp(v.div_euclid(per_milli)));
        }
        other => text(&other.to_string()),
    }
}

pub(crate) fn float(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Each row is written as `,{...}`; [`Parallel`] drops the comma before the first row and adds
/// the brackets.
impl BatchEncoder for Json {
    fn encode(&self, batch: &DataFrame, out: &mut Vec<u8>) -> io::Result<()> {
        let widened = widened_columns(batch).map_err(polars_io)?;
        let mut columns = widened
            .iter()
            .map(Values::new)
            .collect::<PolarsResult<Vec<_>>>()
            .map_err(polars_io)?;
        for row in 0..batch.height() {
            out.extend_from_slice(b",{");
            for (i, column) in columns.iter_mut().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&self.keys[i]);
                column.write_json(row, out);
            }
            out.push(b'}');
        }
        Ok(())
    }
}
