//! Result encoders: CSV, JSON, XLSX and Parquet, each written batch by batch as the query
//! streams, and a GBK transcoder for text formats.
//!
//! Invariant: no encoder holds more than a bounded amount of the result in memory. CSV and JSON
//! write each batch straight through; Parquet buffers at most one row group
//! ([`PARQUET_ROW_GROUP`] rows); XLSX uses the writer's constant-memory mode, which keeps rows in
//! a temporary file until the workbook is zipped into the sink at the end.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use polars::prelude::{
    AnyValue, Column, CsvWriter, DataFrame, DataType, ParquetCompression, ParquetWriter,
    PolarsError, PolarsResult, QuoteStyle, Schema, SerWriter,
};
use rust_xlsxwriter::{ExcelDateTime, Format, Workbook, XlsxError};
use spool_domain::{OutputFormat, OutputSpec, TextEncoding};
use spool_ports::{ResultSink, ResultStoreError};

use crate::parallel::Parallel;

/// Rows per Parquet row group: large enough for good compression and fast scans, small enough
/// that buffering one stays cheap.
pub(crate) const PARQUET_ROW_GROUP: usize = 128 * 1024;

/// The most rows an XLSX sheet holds, header included.
pub(crate) const XLSX_MAX_ROWS: u64 = 1_048_576;

/// Encodes one result, batch by batch, into a sink.
pub(crate) trait Encoder: Send {
    /// Writes what comes before the first row (a header row, an opening bracket).
    fn begin(&mut self, out: &mut dyn ResultSink) -> io::Result<()>;
    /// Appends one batch of rows.
    fn write(&mut self, batch: &mut DataFrame, out: &mut dyn ResultSink) -> io::Result<()>;
    /// Writes what comes after the last row; the result is then complete.
    fn finish(&mut self, out: &mut dyn ResultSink) -> io::Result<()>;
}

/// Encodes one batch with nothing carried over from earlier batches, so that batches can be
/// encoded on several threads at once and written in order ([`Parallel`]).
pub(crate) trait BatchEncoder: Send + Sync + 'static {
    /// Appends the encoding of `batch` to `out`.
    fn encode(&self, batch: &DataFrame, out: &mut Vec<u8>) -> io::Result<()>;
}

/// Returns the encoder for `spec` and a result with `schema`; `scratch` holds temporary files.
/// CSV and JSON are encoded on `threads` threads.
pub(crate) fn encoder(
    spec: &OutputSpec,
    schema: &Schema,
    scratch: PathBuf,
    threads: usize,
) -> io::Result<Box<dyn Encoder>> {
    let names: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
    Ok(match spec.format {
        OutputFormat::Csv => {
            let header = if spec.include_header {
                csv_header(&names, &spec.separator)
            } else {
                Vec::new()
            };
            let rows = Arc::new(Csv {
                separator: spec.separator.clone(),
            });
            Box::new(Parallel::new(rows, threads, header, Vec::new(), false)?)
        }
        OutputFormat::Json => Box::new(Parallel::new(
            Arc::new(Json::new(&names)),
            threads,
            b"[".to_vec(),
            b"]\n".to_vec(),
            true,
        )?),
        OutputFormat::Parquet => Box::new(Parquet::new(schema.clone())),
        OutputFormat::Xlsx => Box::new(Xlsx::new(
            names,
            spec.include_header,
            scratch,
            XLSX_MAX_ROWS,
        )),
    })
}

/// Wraps `sink` so that text reaches it in `encoding` (a no-op for UTF-8 and binary formats).
pub(crate) fn transcode(spec: &OutputSpec, sink: Box<dyn ResultSink>) -> Box<dyn ResultSink> {
    match (spec.format.is_text(), spec.encoding) {
        (true, TextEncoding::Gbk) => Box::new(GbkSink {
            inner: sink,
            encoder: encoding_rs::GBK.new_encoder(),
            pending: Vec::new(),
            out: Vec::new(),
        }),
        _ => sink,
    }
}

/// A reason the result cannot be written that the user can act on (a character the encoding
/// lacks, too many rows for the format); the engine reports it as the query's failure reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ResultError(pub String);

fn result_error(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, ResultError(message))
}

/// Returns the user-facing reason inside `e`, if it carries one.
pub(crate) fn user_reason(e: &io::Error) -> Option<String> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<ResultError>())
        .map(|r| r.0.clone())
}

/// Unwraps Polars' I/O errors so that a [`ResultError`] raised by our sink survives the trip.
/// Iterators over each column's values, to walk a batch row by row.
fn column_values(batch: &DataFrame) -> Vec<impl Iterator<Item = AnyValue<'_>> + '_> {
    batch
        .columns()
        .iter()
        .map(|c| c.as_materialized_series().iter())
        .collect()
}

fn polars_io(e: PolarsError) -> io::Error {
    match e {
        PolarsError::IO { error, .. } => Arc::try_unwrap(error)
            .unwrap_or_else(|shared| io::Error::new(shared.kind(), shared.to_string())),
        other => io::Error::other(other.to_string()),
    }
}

fn xlsx_io(e: XlsxError) -> io::Error {
    match e {
        XlsxError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// CSV

/// RFC 4180 CSV: fields quoted only where needed, quotes doubled, NULL as an empty field, `\n`
/// line ends. A one-byte separator goes through Polars' writer; a longer one through our own.
struct Csv {
    separator: String,
}

/// Writes `field` quoted if it holds the separator, a quote or a line break.
fn csv_field(out: &mut Vec<u8>, field: &str, separator: &str) {
    if field.contains(separator) || field.contains(['"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

/// The header line: column names as CSV fields.
fn csv_header(names: &[String], separator: &str) -> Vec<u8> {
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
enum Values<'a> {
    /// Integers without NULLs in one chunk, read by row number.
    Ints(&'a [i64]),
    Int(Box<dyn Iterator<Item = Option<i64>> + 'a>),
    UInt(Box<dyn Iterator<Item = Option<u64>> + 'a>),
    Float(Box<dyn Iterator<Item = Option<f64>> + 'a>),
    Bool(Box<dyn Iterator<Item = Option<bool>> + 'a>),
    Text(Box<dyn Iterator<Item = Option<&'a str>> + 'a>),
    Any(Box<dyn Iterator<Item = AnyValue<'a>> + 'a>),
}

/// Casts narrow integers and floats to their 64-bit kinds.
fn widened(column: &Column) -> PolarsResult<Column> {
    use DataType as D;
    match column.dtype() {
        D::Int8 | D::Int16 | D::Int32 | D::UInt8 | D::UInt16 | D::UInt32 => column.cast(&D::Int64),
        D::Float32 => column.cast(&D::Float64),
        _ => Ok(column.clone()),
    }
}

impl<'a> Values<'a> {
    /// The reader of a [`widened`] column.
    fn new(column: &'a Column) -> PolarsResult<Self> {
        let series = column.as_materialized_series();
        Ok(match series.dtype() {
            DataType::Int64 => match series.i64()?.cont_slice() {
                Ok(values) => Self::Ints(values),
                Err(_) => Self::Int(Box::new(series.i64()?.iter())),
            },
            DataType::UInt64 => Self::UInt(Box::new(series.u64()?.iter())),
            DataType::Float64 => Self::Float(Box::new(series.f64()?.iter())),
            DataType::Boolean => Self::Bool(Box::new(series.bool()?.iter())),
            DataType::String => Self::Text(Box::new(series.str()?.iter())),
            _ => Self::Any(Box::new(series.iter())),
        })
    }

    /// Whether [`Values::write_csv`] writes this column (floats and other types are left to
    /// Polars' writer, whose text for them the CSV keeps).
    fn csv_typed(&self) -> bool {
        !matches!(self, Self::Float(_) | Self::Any(_))
    }

    /// Writes row `row` (rows are visited in order) as Polars' CSV writer does with
    /// `QuoteStyle::Necessary`: NULL as nothing, an empty string as `""`, a string quoted if it
    /// holds the separator, a quote or a line break. Only for [`Values::csv_typed`] columns.
    fn write_csv(&mut self, row: usize, out: &mut Vec<u8>, separator: u8) {
        match self {
            Self::Ints(values) => write_i64(out, values[row]),
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
    fn write_json(&mut self, row: usize, out: &mut Vec<u8>) {
        match self {
            Self::Ints(values) => write_i64(out, values[row]),
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
fn widened_columns(batch: &DataFrame) -> PolarsResult<Vec<Column>> {
    batch.columns().iter().map(widened).collect()
}

/// Encodes `batch` as CSV rows if every column is [`Values::csv_typed`]; returns `false` (having
/// written nothing) otherwise. Faster than Polars' writer on integer columns: no per-batch
/// writer set-up, no copy of the text through a second buffer.
fn typed_csv(batch: &DataFrame, separator: u8, out: &mut Vec<u8>) -> PolarsResult<bool> {
    let widened = widened_columns(batch)?;
    let mut columns = widened
        .iter()
        .map(Values::new)
        .collect::<PolarsResult<Vec<_>>>()?;
    if !columns.iter().all(Values::csv_typed) {
        return Ok(false);
    }
    for row in 0..batch.height() {
        for (i, column) in columns.iter_mut().enumerate() {
            if i > 0 {
                out.push(separator);
            }
            column.write_csv(row, out, separator);
        }
        out.push(b'\n');
    }
    Ok(true)
}

/// Two decimal digits for each number below 100.
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849\
    5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/// Appends `v` in decimal. Unlike `itoa`, which hands back a `&str` of varying length (copying
/// it cost a `memcpy` call per value, a fifth of a CSV export's CPU time), the digits are laid
/// out at the start of a fixed buffer that is copied whole and cut to length.
fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    let len = v.checked_ilog10().map_or(1, |d| d as usize + 1);
    let mut digits = [0u8; 20];
    let mut end = len;
    while v >= 100 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        end -= 2;
        digits[end..end + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if v >= 10 {
        let pair = v as usize * 2;
        digits[..2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        digits[0] = b'0' + v as u8;
    }
    let start = out.len();
    out.extend_from_slice(&digits);
    out.truncate(start + len);
}

fn write_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    write_u64(out, v.unsigned_abs());
}

impl BatchEncoder for Csv {
    fn encode(&self, batch: &DataFrame, out: &mut Vec<u8>) -> io::Result<()> {
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

// ---------------------------------------------------------------------------------------------
// JSON

/// One JSON array of objects, keys in column order: `[{"A":1,"B":"x"},...]`. Numbers stay
/// numbers (decimals keep their exact digits), dates and times are strings, NaN and infinities
/// are `null`.
struct Json {
    /// Each column name as a JSON string followed by `:`.
    keys: Vec<Vec<u8>>,
}

impl Json {
    fn new(names: &[String]) -> Self {
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

fn json_value(out: &mut Vec<u8>, value: &AnyValue<'_>) {
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
        other => text(&other.to_string()),
    }
}

fn float(out: &mut Vec<u8>, f: f64) {
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

// ---------------------------------------------------------------------------------------------
// Parquet

/// A `Write` into a buffer shared with the encoder, which drains it into the sink after each
/// row group: Polars' batched writer wants to own its writer.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn drain_into(&self, out: &mut dyn ResultSink) -> io::Result<()> {
        let mut buf = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        out.write_all(&buf)?;
        buf.clear();
        Ok(())
    }
}

impl Write for SharedBuf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One Parquet file (Snappy), a row group per [`PARQUET_ROW_GROUP`] rows.
struct Parquet {
    schema: Schema,
    buf: SharedBuf,
    writer: Option<polars::io::parquet::write::BatchedWriter<SharedBuf>>,
    pending: Vec<DataFrame>,
    pending_rows: usize,
}

impl Parquet {
    fn new(schema: Schema) -> Self {
        Self {
            schema,
            buf: SharedBuf::default(),
            writer: None,
            pending: Vec::new(),
            pending_rows: 0,
        }
    }

    fn writer(&mut self) -> io::Result<&mut polars::io::parquet::write::BatchedWriter<SharedBuf>> {
        if self.writer.is_none() {
            let writer = ParquetWriter::new(self.buf.clone())
                .with_compression(ParquetCompression::Snappy)
                .batched(&self.schema)
                .map_err(polars_io)?;
            self.writer = Some(writer);
        }
        self.writer
            .as_mut()
            .ok_or_else(|| io::Error::other("parquet writer vanished"))
    }

    /// Writes the pending batches as one row group.
    fn flush_group(&mut self, out: &mut dyn ResultSink) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut batches = std::mem::take(&mut self.pending).into_iter();
        let mut group = batches.next().unwrap_or_default();
        for batch in batches {
            group.vstack_mut_owned(batch).map_err(polars_io)?;
        }
        self.pending_rows = 0;
        group.rechunk_mut();
        self.writer()?.write_batch(&group).map_err(polars_io)?;
        self.buf.drain_into(out)
    }
}

impl Encoder for Parquet {
    fn begin(&mut self, _out: &mut dyn ResultSink) -> io::Result<()> {
        self.writer().map(|_| ())
    }

    fn write(&mut self, batch: &mut DataFrame, out: &mut dyn ResultSink) -> io::Result<()> {
        if batch.height() == 0 {
            return Ok(());
        }
        self.pending_rows += batch.height();
        self.pending.push(std::mem::take(batch));
        if self.pending_rows >= PARQUET_ROW_GROUP {
            self.flush_group(out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn ResultSink) -> io::Result<()> {
        self.flush_group(out)?;
        self.writer()?.finish().map_err(polars_io)?;
        self.writer = None;
        self.buf.drain_into(out)
    }
}

// ---------------------------------------------------------------------------------------------
// XLSX

/// One worksheet in constant-memory mode. Numbers are numbers (integers beyond 2^53, which a
/// spreadsheet cannot hold exactly, are text), dates and timestamps are dates.
struct Xlsx {
    workbook: Workbook,
    names: Vec<String>,
    header: bool,
    scratch: PathBuf,
    row: u32,
    max_rows: u64,
    date: Format,
    datetime: Format,
}

impl Xlsx {
    fn new(names: Vec<String>, header: bool, scratch: PathBuf, max_rows: u64) -> Self {
        Self {
            workbook: Workbook::new(),
            names,
            header,
            scratch,
            row: 0,
            max_rows,
            date: Format::new().set_num_format("yyyy-mm-dd"),
            datetime: Format::new().set_num_format("yyyy-mm-dd hh:mm:ss"),
        }
    }
}

/// The largest integer an IEEE double holds exactly.
const EXACT_IN_DOUBLE: i128 = 1 << 53;

fn too_many_rows(max: u64) -> io::Error {
    result_error(format!(
        "result has more rows than an XLSX sheet holds ({max} including the header); use csv or parquet"
    ))
}

/// Writes one value into a cell.
fn write_cell(
    sheet: &mut rust_xlsxwriter::Worksheet,
    row: u32,
    col: u16,
    value: AnyValue<'_>,
    date: &Format,
    datetime: &Format,
) -> Result<(), XlsxError> {
    let int = |sheet: &mut rust_xlsxwriter::Worksheet, v: i128| {
        if v.abs() <= EXACT_IN_DOUBLE {
            sheet.write_number(row, col, v as f64).map(|_| ())
        } else {
            sheet.write_string(row, col, v.to_string()).map(|_| ())
        }
    };
    match value {
        AnyValue::Null => Ok(()),
        AnyValue::Boolean(b) => sheet.write_boolean(row, col, b).map(|_| ()),
        AnyValue::String(s) => sheet.write_string(row, col, s).map(|_| ()),
        AnyValue::StringOwned(s) => sheet.write_string(row, col, s.as_str()).map(|_| ()),
        AnyValue::Int8(v) => int(sheet, v.into()),
        AnyValue::Int16(v) => int(sheet, v.into()),
        AnyValue::Int32(v) => int(sheet, v.into()),
        AnyValue::Int64(v) => int(sheet, v.into()),
        AnyValue::UInt8(v) => int(sheet, v.into()),
        AnyValue::UInt16(v) => int(sheet, v.into()),
        AnyValue::UInt32(v) => int(sheet, v.into()),
        AnyValue::UInt64(v) => int(sheet, v.into()),
        AnyValue::Float32(v) => sheet.write_number(row, col, v).map(|_| ()),
        AnyValue::Float64(v) => sheet.write_number(row, col, v).map(|_| ()),
        AnyValue::Date(days) => {
            let d = ExcelDateTime::from_timestamp(i64::from(days) * 86_400)?;
            sheet
                .write_datetime_with_format(row, col, d, date)
                .map(|_| ())
        }
        AnyValue::Decimal(..) => match value.to_string().parse::<f64>() {
            Ok(f) => sheet.write_number(row, col, f).map(|_| ()),
            Err(_) => sheet.write_string(row, col, value.to_string()).map(|_| ()),
        },
        AnyValue::Datetime(..) | AnyValue::DatetimeOwned(..) => {
            let text = value.to_string();
            match ExcelDateTime::parse_from_str(&text) {
                Ok(d) => sheet
                    .write_datetime_with_format(row, col, d, datetime)
                    .map(|_| ()),
                Err(_) => sheet.write_string(row, col, text).map(|_| ()),
            }
        }
        other => sheet.write_string(row, col, other.to_string()).map(|_| ()),
    }
}

impl Encoder for Xlsx {
    fn begin(&mut self, _out: &mut dyn ResultSink) -> io::Result<()> {
        std::fs::create_dir_all(&self.scratch)?;
        self.workbook.set_tempdir(&self.scratch).map_err(xlsx_io)?;
        let sheet = self
            .workbook
            .add_worksheet_with_constant_memory()
            .map_err(xlsx_io)?;
        if self.header {
            for (col, name) in self.names.iter().enumerate() {
                sheet
                    .write_string(0, col as u16, name.as_str())
                    .map_err(xlsx_io)?;
            }
            self.row = 1;
        }
        Ok(())
    }

    fn write(&mut self, batch: &mut DataFrame, _out: &mut dyn ResultSink) -> io::Result<()> {
        if u64::from(self.row) + batch.height() as u64 > self.max_rows {
            return Err(too_many_rows(self.max_rows));
        }
        let sheet = self.workbook.worksheet_from_index(0).map_err(xlsx_io)?;
        if batch.width() > usize::from(u16::MAX) {
            return Err(result_error(
                "result has more columns than an XLSX sheet holds".to_owned(),
            ));
        }
        // Row by row: in constant-memory mode a row is flushed once the next one starts.
        let mut columns = column_values(batch);
        for i in 0..batch.height() {
            let row = self.row + i as u32;
            for (col, values) in columns.iter_mut().enumerate() {
                let value = values.next().unwrap_or(AnyValue::Null);
                write_cell(sheet, row, col as u16, value, &self.date, &self.datetime)
                    .map_err(xlsx_io)?;
            }
        }
        self.row += batch.height() as u32;
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn ResultSink) -> io::Result<()> {
        self.workbook.save_to_writer(&mut *out).map_err(xlsx_io)
    }
}

// ---------------------------------------------------------------------------------------------
// GBK

/// A sink that turns the UTF-8 written into it into GBK. A character GBK cannot hold fails the
/// write with a message naming it; a multi-byte character split across writes is carried over.
struct GbkSink {
    inner: Box<dyn ResultSink>,
    encoder: encoding_rs::Encoder,
    /// The start of a UTF-8 character cut off at the end of the last write.
    pending: Vec<u8>,
    out: Vec<u8>,
}

impl GbkSink {
    fn encode(&mut self, text: &str) -> io::Result<()> {
        let needed = self
            .encoder
            .max_buffer_length_from_utf8_without_replacement(text.len())
            .unwrap_or(text.len() * 2 + 16);
        if self.out.len() < needed {
            self.out.resize(needed, 0);
        }
        let (result, _read, written) =
            self.encoder
                .encode_from_utf8_without_replacement(text, &mut self.out, false);
        match result {
            encoding_rs::EncoderResult::InputEmpty => self.inner.write_all(&self.out[..written]),
            encoding_rs::EncoderResult::Unmappable(c) => Err(result_error(format!(
                "the result holds the character {c:?} (U+{:04X}), which GBK cannot encode; ask for encode utf-8",
                u32::from(c)
            ))),
            encoding_rs::EncoderResult::OutputFull => {
                Err(io::Error::other("GBK output buffer too small"))
            }
        }
    }
}

impl GbkSink {
    /// Encodes the complete characters of `bytes` and keeps a cut-off last one for the next
    /// write.
    fn encode_utf8(&mut self, bytes: &[u8]) -> io::Result<()> {
        let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
        let (text, rest) = match std::str::from_utf8(bytes) {
            Ok(text) => (text, &[][..]),
            Err(e) if e.error_len().is_none() => {
                let (head, tail) = bytes.split_at(e.valid_up_to());
                (std::str::from_utf8(head).map_err(invalid)?, tail)
            }
            Err(e) => return Err(invalid(e)),
        };
        self.encode(text)?;
        self.pending.extend_from_slice(rest);
        Ok(())
    }
}

impl Write for GbkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            self.encode_utf8(data)?;
        } else {
            // Rare: the last write ended inside a character.
            let mut joined = std::mem::take(&mut self.pending);
            joined.extend_from_slice(data);
            self.encode_utf8(&joined)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[async_trait::async_trait]
impl ResultSink for GbkSink {
    async fn commit(self: Box<Self>) -> Result<u64, ResultStoreError> {
        if !self.pending.is_empty() {
            self.inner.abort().await?;
            return Err(ResultStoreError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "the result ends inside a UTF-8 character",
            )));
        }
        self.inner.commit().await
    }

    async fn abort(self: Box<Self>) -> Result<(), ResultStoreError> {
        self.inner.abort().await
    }

    fn add_rows(&mut self, rows: u64) -> io::Result<()> {
        self.inner.add_rows(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::df;

    /// A sink that keeps the bytes in memory.
    #[derive(Default)]
    struct VecSink(Vec<u8>);

    impl Write for VecSink {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl ResultSink for VecSink {
        async fn commit(self: Box<Self>) -> Result<u64, ResultStoreError> {
            Ok(self.0.len() as u64)
        }

        async fn abort(self: Box<Self>) -> Result<(), ResultStoreError> {
            Ok(())
        }
    }

    /// What Polars' own writer makes of `batch` with our settings.
    fn polars_csv(batch: &DataFrame, separator: u8) -> String {
        let mut out = Vec::new();
        CsvWriter::new(&mut out)
            .include_header(false)
            .with_separator(separator)
            .with_quote_style(QuoteStyle::Necessary)
            .finish(&mut batch.clone())
            .expect("polars csv");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn the_typed_csv_writer_writes_what_polars_writes() {
        let ints: Vec<i64> = vec![
            0,
            7,
            -7,
            9,
            10,
            99,
            100,
            -100,
            12_345_678,
            i64::MAX,
            i64::MIN,
        ];
        let n = ints.len();
        let text = [
            "plain",
            "",
            "a,b",
            "a;b",
            "say \"hi\"",
            "\"",
            "two\nlines",
            "cr\rhere",
            "中文",
            " x ",
            "tab\tin",
        ];
        let batch = df!(
            "I" => &ints,
            "NULLABLE" => (0..n as i64).map(|i| (i % 3 != 0).then_some(i * 1_000_003)).collect::<Vec<_>>(),
            "SMALL" => (0..n as i32).map(|i| i - 5).collect::<Vec<_>>(),
            "U" => (0..n as u64).map(|i| u64::MAX - i).collect::<Vec<_>>(),
            "B" => (0..n).map(|i| match i % 3 { 0 => None, 1 => Some(true), _ => Some(false) }).collect::<Vec<_>>(),
            "S" => text.iter().enumerate().map(|(i, t)| (i != 4).then_some(*t)).collect::<Vec<_>>(),
        )
        .expect("frame");
        for separator in [b',', b';', b'\t', b'|'] {
            let mut out = Vec::new();
            assert!(typed_csv(&batch, separator, &mut out).expect("typed"));
            assert_eq!(
                String::from_utf8(out).expect("utf-8"),
                polars_csv(&batch, separator),
                "separator {:?}",
                separator as char
            );
        }
        // A type the typed writer leaves to Polars: nothing written, the caller falls back.
        let floats = df!("F" => [1.5f64]).expect("frame");
        let mut out = Vec::new();
        assert!(!typed_csv(&floats, b',', &mut out).expect("typed"));
        assert!(out.is_empty());
    }

    #[test]
    fn decimal_digits_match_itoa_at_every_length() {
        let mut values = vec![0u64, u64::MAX];
        let mut p = 1u64;
        while let Some(next) = p.checked_mul(10) {
            values.extend([p - 1, p, p + 1, next - 1]);
            p = next;
        }
        values.extend((0..10_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (i % 64)));
        let mut out = Vec::new();
        let mut expected = String::new();
        for v in values {
            write_u64(&mut out, v);
            out.push(b' ');
            expected.push_str(itoa::Buffer::new().format(v));
            expected.push(' ');
            let signed = v as i64;
            write_i64(&mut out, signed);
            out.push(b' ');
            expected.push_str(itoa::Buffer::new().format(signed));
            expected.push(' ');
        }
        assert_eq!(String::from_utf8(out).expect("ascii"), expected);
    }

    #[test]
    fn an_xlsx_result_past_the_sheet_limit_fails_with_a_reason() {
        let dir = std::env::temp_dir().join("spool-xlsx-test");
        let mut xlsx = Xlsx::new(vec!["N".into()], true, dir, 10);
        let mut sink = VecSink::default();
        xlsx.begin(&mut sink).expect("begin");
        let mut batch = df!("N" => (0..9i64).collect::<Vec<_>>()).expect("frame");
        xlsx.write(&mut batch, &mut sink)
            .expect("9 rows and a header fit in 10");
        let mut one = df!("N" => [9i64]).expect("frame");
        let e = xlsx
            .write(&mut one, &mut sink)
            .expect_err("the 11th row does not fit");
        assert_eq!(
            user_reason(&e).as_deref(),
            Some(
                "result has more rows than an XLSX sheet holds (10 including the header); use csv or parquet"
            )
        );
    }

    #[test]
    fn gbk_survives_characters_split_across_writes_and_names_what_it_cannot_encode() {
        let spec = OutputSpec {
            encoding: TextEncoding::Gbk,
            ..OutputSpec::default()
        };
        let mut sink = transcode(&spec, Box::new(VecSink::default()));
        let text = "中文,x\n".as_bytes();
        // Split inside the first character.
        sink.write_all(&text[..1]).expect("write");
        sink.write_all(&text[1..]).expect("write");
        let committed = futures::executor::block_on(sink.commit()).expect("commit");
        assert_eq!(committed, 7, "D6D0 CEC4 , x \\n");
        let mut sink = transcode(&spec, Box::new(VecSink::default()));
        let e = sink.write_all("😀".as_bytes()).expect_err("not in GBK");
        assert!(
            user_reason(&e).is_some_and(|r| r.contains("U+1F600")),
            "{e}"
        );
    }

    fn spec(format: OutputFormat) -> OutputSpec {
        OutputSpec {
            format,
            ..OutputSpec::default()
        }
    }

    /// Runs `batches` through the encoder for `spec` on `threads` threads; returns the bytes.
    fn encode_all(spec: &OutputSpec, batches: &[DataFrame], threads: usize) -> Vec<u8> {
        let schema = batches[0].schema().as_ref().clone();
        let mut encoder = encoder(spec, &schema, std::env::temp_dir(), threads).expect("encoder");
        let mut sink = VecSink::default();
        encoder.begin(&mut sink).expect("begin");
        for batch in batches {
            encoder.write(&mut batch.clone(), &mut sink).expect("write");
        }
        encoder.finish(&mut sink).expect("finish");
        sink.0
    }

    #[test]
    fn json_keeps_types_escapes_strings_and_writes_nulls_over_batches() {
        let mut first = df!(
            "I" => [Some(-7i32), None],
            "U" => [u64::MAX, 0],
            "F" => [Some(0.5f32), Some(f32::NAN)],
            "B" => [Some(true), None],
            "S" => [Some("say \"hi\"\n"), None],
            "D" => [Some(1i32), None],
        )
        .expect("frame");
        let dates = first
            .column("D")
            .and_then(|c| c.cast(&DataType::Date))
            .expect("dates");
        first.replace("D", dates).expect("date column");
        let batches = [
            first.slice(0, 0),
            first.clone(),
            first.slice(0, 0),
            first.slice(0, 1),
        ];
        let text =
            String::from_utf8(encode_all(&spec(OutputFormat::Json), &batches, 3)).expect("utf-8");
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("one JSON document");
        assert_eq!(
            parsed,
            serde_json::json!([
                {"I": -7, "U": u64::MAX, "F": 0.5, "B": true, "S": "say \"hi\"\n", "D": "1970-01-02"},
                {"I": null, "U": 0, "F": null, "B": null, "S": null, "D": null},
                {"I": -7, "U": u64::MAX, "F": 0.5, "B": true, "S": "say \"hi\"\n", "D": "1970-01-02"},
            ])
        );
        assert!(
            text.starts_with("[{\"I\":-7,\"U\":18446744073709551615,"),
            "{text}"
        );
        let empty = encode_all(&spec(OutputFormat::Json), &[first.slice(0, 0)], 2);
        assert_eq!(empty, b"[]\n", "an empty result is an empty array");
    }

    #[test]
    fn batches_encoded_on_several_threads_are_written_in_order() {
        // Batches of very different sizes finish out of order on the threads.
        let batches: Vec<DataFrame> = (0..60i64)
            .map(|b| {
                let rows = if b % 7 == 0 { 20_000 } else { 1 + b % 3 };
                let start = b * 100_000;
                df!("N" => (start..start + rows).collect::<Vec<_>>()).expect("frame")
            })
            .collect();
        let expected: String = batches
            .iter()
            .flat_map(|df| {
                df.column("N")
                    .and_then(|c| c.i64().cloned())
                    .expect("ints")
                    .into_no_null_iter()
                    .collect::<Vec<_>>()
            })
            .map(|n| format!("{n}\n"))
            .collect();
        let mut csv = spec(OutputFormat::Csv);
        csv.include_header = true;
        let got = String::from_utf8(encode_all(&csv, &batches, 3)).expect("utf-8");
        assert_eq!(got, format!("N\n{expected}"));
        csv.separator = "||".to_owned();
        let got = String::from_utf8(encode_all(&csv, &batches, 2)).expect("utf-8");
        assert_eq!(
            got,
            format!("N\n{expected}"),
            "the multi-character writer too"
        );
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut out = Vec::new();
        for field in ["plain", "a||b", "say \"hi\"", "two\nlines", "a|b"] {
            csv_field(&mut out, field, "||");
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "plain \"a||b\" \"say \"\"hi\"\"\" \"two\nlines\" a|b "
        );
    }
}
