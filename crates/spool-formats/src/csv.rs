//! CSV: RFC 4180 quoting, NULL as an empty field; a typed fast path for one-byte separators.

#[allow(clippy::wildcard_imports)]
use crate::*;

/// RFC 4180 CSV: fields quoted only where needed, quotes doubled, NULL as an empty field, `\n`
/// line ends. A one-byte separator goes through Polars' writer; a longer one through our own.
pub(crate) struct Csv {
    pub(crate) separator: String,
}

/// Writes `field` quoted if it holds the separator, a quote or a line break.
pub(crate) fn csv_field(out: &mut Vec<u8>, field: &str, separator: &str) {
    if field.contains(separator) || field.contains(['"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

/// The header line: column names as CSV fields.
pub(crate) fn csv_header(names: &[String], separator: &str) -> Vec<u8> {
    let mut line = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            line.extend_from_slice(separator.as_bytes());
        }
        csv_field(&mut line, name, separator);
    }
    line.push(b'\n');
    line
}

/// One column of a batch, walked row by row. Integers, floats, booleans and strings are read
/// from their typed arrays (the bulk of any export); everything else (dates, times, decimals,
/// nested values) as [`AnyValue`]s. Built from [`widened`] columns, so each kind has one path.
pub(crate) enum Values<'a> {
    /// Integers without NULLs in one chunk, read by row number.
    Ints(&'a [i64]),
    /// 32-bit integers without NULLs in one chunk (most key and measure columns), read by row
    /// number without widening the column first.
    Ints32(&'a [i32]),
    Int(Box<dyn Iterator<Item = Option<i64>> + 'a>),
    UInt(Box<dyn Iterator<Item = Option<u64>> + 'a>),
    Float(Box<dyn Iterator<Item = Option<f64>> + 'a>),
    Bool(Box<dyn Iterator<Item = Option<bool>> + 'a>),
    Text(Box<dyn Iterator<Item = Option<&'a str>> + 'a>),
    Any(Box<dyn Iterator<Item = AnyValue<'a>> + 'a>),
}

/// Casts narrow integers and floats to their 64-bit kinds; 32-bit integers are read as they
/// are (see [`Values::new`]).
pub(crate) fn widened(column: &Column) -> PolarsResult<Column> {
    use DataType as D;
    match column.dtype() {
        D::Int8 | D::Int16 | D::UInt8 | D::UInt16 | D::UInt32 => column.cast(&D::Int64),
        D::Float32 => column.cast(&D::Float64),
        _ => Ok(column.clone()),
    }
}

impl<'a> Values<'a> {
    /// The reader of a [`widened`] column.
    pub(crate) fn new(column: &'a Column) -> PolarsResult<Self> {
        let series = column.as_materialized_series();
        Ok(match series.dtype() {
            DataType::Int64 => match series.i64()?.cont_slice() {
                Ok(values) => Self::Ints(values),
                Err(_) => Self::Int(Box::new(series.i64()?.iter())),
            },
            DataType::Int32 => match series.i32()?.cont_slice() {
                Ok(values) => Self::Ints32(values),
                Err(_) => Self::Int(Box::new(series.i32()?.iter().map(|v| v.map(i64::from)))),
            },
            DataType::UInt64 => Self::UInt(Box::new(series.u64()?.iter())),
            DataType::Float64 => Self::Float(Box::new(series.f64()?.iter())),
            DataType::Boolean => Self::Bool(Box::new(series.bool()?.iter())),
            DataType::String => Self::Text(Box::new(series.str()?.iter())),
            _ => Self::Any(Box::new(series.iter())),
        })
    }

    /// Reads the value `row` of a column held as a slice (nothing for the others, or past the
    /// end), so that its cache line is on its way before the row loop needs it.
    #[inline]
    pub(crate) fn touch(&self, row: usize) -> i64 {
        match self {
            Self::Ints(values) => values.get(row).copied().unwrap_or(0),
            Self::Ints32(values) => values.get(row).copied().map_or(0, i64::from),
            _ => 0,
        }
    }

    /// Whether [`Values::write_csv`] writes this column (floats and other types are left to
    /// Polars' writer, whose text for them the CSV keeps).
    pub(crate) fn csv_typed(&self) -> bool {
        !matches!(self, Self::Float(_) | Self::Any(_))
    }

    /// Writes row `row` (rows are visited in order) as Polars' CSV writer does with
    /// `QuoteStyle::Necessary`: NULL as nothing, an empty string as `""`, a string quoted if it
    /// holds the separator, a quote or a line break. Only for [`Values::csv_typed`] columns.
    pub(crate) fn write_csv(&mut self, row: usize, out: &mut Vec<u8>, separator: u8) {
        match self {
            Self::Ints(values) => write_i64(out, values[row]),
            Self::Ints32(values) => write_i64(out, i64::from(values[row])),
            Self::Int(it) => {
                if let Some(v) = it.next().flatten() {
                    write_i64(out, v);
                }
            }
            Self::UInt(it) => {
                if let Some(v) = it.next().flatten() {
                    write_u64(out, v);
                }
            }
            Self::Bool(it) => match it.next().flatten() {
                Some(true) => out.extend_from_slice(b"true"),
                Some(false) => out.extend_from_slice(b"false"),
                None => {}
            },
            Self::Text(it) => {
                let Some(v) = it.next().flatten() else {
                    return;
                };
                let bytes = v.as_bytes();
                let special = |b: &u8| *b == separator || matches!(b, b'"' | b'\n' | b'\r');
                if bytes.is_empty() {
                    out.extend_from_slice(b"\"\"");
                } else if !bytes.iter().any(special) {
                    out.extend_from_slice(bytes);
                } else {
                    out.push(b'"');
                    for part in bytes.split_inclusive(|b| *b == b'"') {
                        out.extend_from_slice(part);
                        if part.ends_with(b"\"") {
                            out.push(b'"');
                        }
                    }
                    out.push(b'"');
                }
            }
            // Never reached: `typed_csv` leaves batches with these to Polars' writer.
            Self::Float(_) | Self::Any(_) => {}
        }
    }

    /// Writes row `row` (rows are visited in order) as a JSON value.
    pub(crate) fn write_json(&mut self, row: usize, out: &mut Vec<u8>) {
        match self {
            Self::Ints(values) => write_i64(out, values[row]),
            Self::Ints32(values) => write_i64(out, i64::from(values[row])),
            Self::Int(it) => match it.next().flatten() {
                Some(v) => write_i64(out, v),
                None => out.extend_from_slice(b"null"),
            },
            Self::UInt(it) => match it.next().flatten() {
                Some(v) => write_u64(out, v),
                None => out.extend_from_slice(b"null"),
            },
            Self::Float(it) => match it.next().flatten() {
                Some(v) => float(out, v),
                None => out.extend_from_slice(b"null"),
            },
            Self::Bool(it) => match it.next().flatten() {
                Some(true) => out.extend_from_slice(b"true"),
                Some(false) => out.extend_from_slice(b"false"),
                None => out.extend_from_slice(b"null"),
            },
            Self::Text(it) => match it.next().flatten() {
                // Writing a &str into a Vec cannot fail.
                Some(v) => drop(serde_json::to_writer(&mut *out, v)),
                None => out.extend_from_slice(b"null"),
            },
            Self::Any(it) => json_value(out, &it.next().unwrap_or(AnyValue::Null)),
        }
    }
}

/// The columns of `batch`, [`widened`].
pub(crate) fn widened_columns(batch: &DataFrame) -> PolarsResult<Vec<Column>> {
    batch.columns().iter().map(widened).collect()
}

/// Encodes `batch` as CSV rows if every column is [`Values::csv_typed`]; returns `false` (having
/// written nothing) otherwise. Faster than Polars' writer on integer columns: no per-batch
/// writer set-up, no copy of the text through a second buffer.
pub(crate) fn typed_csv(batch: &DataFrame, separator: u8, out: &mut Vec<u8>) -> PolarsResult<bool> {
    let widened = widened_columns(batch)?;
    let mut columns = widened
        .iter()
        .map(Values::new)
        .collect::<PolarsResult<Vec<_>>>()?;
    if !columns.iter().all(Values::csv_typed) {
        return Ok(false);
    }
    let touch = touch_ahead();
    let mut touched = 0;
    for row in 0..batch.height() {
        if touch && row % TOUCH_EVERY == 0 {
            touched ^= columns
                .iter()
                .fold(0, |acc, c| acc ^ c.touch(row + TOUCH_AHEAD));
        }
        for (i, column) in columns.iter_mut().enumerate() {
            if i > 0 {
                out.push(separator);
            }
            column.write_csv(row, out, separator);
        }
        out.push(b'\n');
    }
    std::hint::black_box(touched);
    Ok(true)
}

/// Rows between two reads ahead: 8 values of a 64-bit column fill one cache line.
///
/// An export's batches are slices of a decoded run of row groups, mostly out of cache when the
/// encoder gets to them, and the row loop walks every column in step: without the reads, each
/// column's next line missed on its own, one miss after another (60 % of the encoder's samples
/// sat on those loads). Read together, the misses overlap. A prefetch instruction measured the
/// same and would need `unsafe` (docs/PERFORMANCE.md, "The CSV row loop and the worker pipe").
pub(crate) const TOUCH_EVERY: usize = 8;
/// How far ahead those reads are, in rows.
pub(crate) const TOUCH_AHEAD: usize = 256;

/// Whether the CSV row loop reads ahead (`SPOOL_TOUCH_AHEAD=off` turns it off, for measuring).
pub(crate) fn touch_ahead() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SPOOL_TOUCH_AHEAD").map_or(true, |v| v != "off"))
}

/// Eight ASCII digits of `v` (below 10^8, zero-padded), the most significant in the lowest byte:
/// the digits are split in the lanes of one 64-bit word (two 4-digit halves, then four pairs,
/// then eight digits), with multiplications standing in for the divisions.
#[inline(always)]
fn eight_digits(v: u32) -> u64 {
    debug_assert!(v < 100_000_000);
    let v = u64::from(v);
    // 32-bit lanes: the high four digits, then the low four.
    let quads = (v / 10_000) | ((v % 10_000) << 32);
    // x / 100 for x < 10^4 is (x * 5243) >> 19; 16-bit lanes hold the pairs.
    let hundreds = ((quads * 5243) >> 19) & 0x0000_007F_0000_007F;
    let pairs = hundreds | ((quads - hundreds * 100) << 16);
    // x / 10 for x < 100 is (x * 103) >> 10; bytes hold the digits.
    let tens = ((pairs * 103) >> 10) & 0x000F_000F_000F_000F;
    let digits = tens | ((pairs - tens * 10) << 8);
    digits + 0x3030_3030_3030_3030
}

/// The two ASCII digits of every number below 100, `00` to `99`.
const PAIRS: [u8; 200] = {
    let mut table = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        table[2 * i] = b'0' + (i / 10) as u8;
        table[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    table
};

const E8: u64 = 100_000_000;

/// Appends `v` in decimal. The digits go straight into `out` as whole words: a value below 100
/// (flags, counts, line numbers: a third of an SSB row's integers) is one 2-byte store from a
/// table, one below 10^8 (nearly every other integer in an export) one 8-byte store cut to
/// length, a larger one two or three. Laying the digits out pair by pair in a stack buffer and
/// copying the buffer made every copy wait for the small stores before it (a store-forwarding
/// stall: 29 % of a CSV export's samples sat on that one copy), and `itoa`'s `&str` of varying
/// length cost a `memcpy` call per value. Inlined: a call per value, with the registers it
/// saved and restored, cost more than the digits of a small number.
#[inline]
pub(crate) fn write_u64(out: &mut Vec<u8>, v: u64) {
    if v < E8 {
        write_below_e8(out, v as u32);
    } else {
        write_large(out, v);
    }
}

#[inline(always)]
fn write_below_e8(out: &mut Vec<u8>, v: u32) {
    debug_assert!(u64::from(v) < E8);
    let start = out.len();
    if v < 100 {
        let i = v as usize * 2;
        let len = 1 + usize::from(v >= 10);
        // A leading zero sits in the low byte; shifting it out leaves one digit.
        let pair = u16::from_le_bytes([PAIRS[i], PAIRS[i + 1]]) >> ((2 - len) * 8);
        out.extend_from_slice(&pair.to_le_bytes());
        out.truncate(start + len);
    } else {
        // Leading zeros sit in the low bytes; shifting them out leaves `len` digits.
        let len = v.ilog10() as usize + 1;
        let word = eight_digits(v) >> ((8 - len) * 8);
        out.extend_from_slice(&word.to_le_bytes());
        out.truncate(start + len);
    }
}

/// [`write_u64`] of a value of 10^8 or more: rare, so kept out of the callers' loops.
#[inline(never)]
fn write_large(out: &mut Vec<u8>, v: u64) {
    let high = v / E8;
    if high < E8 {
        write_below_e8(out, high as u32);
    } else {
        write_below_e8(out, (high / E8) as u32);
        out.extend_from_slice(&eight_digits((high % E8) as u32).to_le_bytes());
    }
    out.extend_from_slice(&eight_digits((v % E8) as u32).to_le_bytes());
}

#[inline]
pub(crate) fn write_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    write_u64(out, v.unsigned_abs());
}

impl BatchEncoder for Csv {
    fn encode(&self, batch: &DataFrame, out: &mut Vec<u8>) -> io::Result<()> {
        // Timestamps as Kylin prints them, as text.
        let texts = crate::timestamp::as_kylin_text(batch).map_err(polars_io)?;
        let batch = texts.as_ref().unwrap_or(batch);
        if let [byte] = self.separator.as_bytes() {
            if typed_csv(batch, *byte, out).map_err(polars_io)? {
                return Ok(());
            }
            // One thread per batch: batches already run in parallel (see `Parallel`).
            return CsvWriter::new(out)
                .include_header(false)
                .with_separator(*byte)
                .with_quote_style(QuoteStyle::Necessary)
                .n_threads(1)
                .finish(&mut batch.clone())
                .map_err(polars_io);
        }
        // A multi-character separator: each column as text, then rows joined by hand.
        let columns = batch
            .columns()
            .iter()
            .map(|c| c.cast(&DataType::String))
            .collect::<Result<Vec<_>, _>>()
            .map_err(polars_io)?;
        let mut iters = columns
            .iter()
            .map(|c| c.str().map(|s| s.iter()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(polars_io)?;
        for _ in 0..batch.height() {
            for (i, it) in iters.iter_mut().enumerate() {
                if i > 0 {
                    out.extend_from_slice(self.separator.as_bytes());
                }
                if let Some(Some(field)) = it.next() {
                    csv_field(out, field, &self.separator);
                }
            }
            out.push(b'\n');
        }
        Ok(())
    }
}
