//! Result encoders: CSV, JSON, XLSX and Parquet, each written batch by batch as the query
//! streams, and a GBK transcoder for text formats. Every engine encodes through this crate (its
//! batches as Polars `DataFrame`s), so one result gives the same file whichever engine ran it.
//!
//! - [`Output`] drives one result: [`Output::start`], [`Output::write`] per batch,
//!   [`Output::finish`] into the engine port's [`Execution`].
//! - [`encoder`] picks the encoder for an [`OutputSpec`]; [`transcode`] wraps a sink for GBK.
//! - [`types`] names Polars types as the SQL types Kylin reports.
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
use spool_domain::ResultColumn;
use spool_domain::{OutputFormat, OutputSpec, TextEncoding};
use spool_ports::{CancelToken, EngineError, Execution, ResultSink, ResultStoreError};

mod csv;
mod gbk;
mod json;
mod parallel;
mod parquet;
pub mod priority;
mod timestamp;
pub mod types;
mod xlsx;

#[allow(clippy::wildcard_imports)]
use crate::{csv::*, gbk::*, json::*, parallel::Parallel, parquet::*, xlsx::*};

/// Rows per Parquet row group: large enough for good compression and fast scans, small enough
/// that buffering one stays cheap.
pub const PARQUET_ROW_GROUP: usize = 128 * 1024;

/// The most rows an XLSX sheet holds, header included.
pub const XLSX_MAX_ROWS: u64 = 1_048_576;

/// Encodes one result, batch by batch, into a sink.
pub trait Encoder: Send {
    /// Writes what comes before the first row (a header row, an opening bracket).
    fn begin(&mut self, out: &mut dyn ResultSink) -> io::Result<()>;
    /// Appends one batch of rows.
    fn write(&mut self, batch: &mut DataFrame, out: &mut dyn ResultSink) -> io::Result<()>;
    /// Writes what comes after the last row; the result is then complete.
    fn finish(&mut self, out: &mut dyn ResultSink) -> io::Result<()>;
}

/// Encodes one batch with nothing carried over from earlier batches, so that batches can be
/// encoded on several threads at once and written in order ([`Parallel`]).
pub trait BatchEncoder: Send + Sync + 'static {
    /// Appends the encoding of `batch` to `out`.
    fn encode(&self, batch: &DataFrame, out: &mut Vec<u8>) -> io::Result<()>;
}

/// Returns the encoder for `spec` and a result with `schema`; `scratch` holds temporary files.
/// CSV and JSON are encoded on `threads` threads.
pub fn encoder(
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
        OutputFormat::Parquet => Box::new(Parquet::new(schema.clone(), threads)),
        OutputFormat::Xlsx => Box::new(Xlsx::new(
            names,
            spec.include_header,
            scratch,
            XLSX_MAX_ROWS,
        )),
    })
}

/// Wraps `sink` so that text reaches it in `encoding` (a no-op for UTF-8 and binary formats).
pub fn transcode(spec: &OutputSpec, sink: Box<dyn ResultSink>) -> Box<dyn ResultSink> {
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
pub struct ResultError(pub String);

fn result_error(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, ResultError(message))
}

/// Returns the user-facing reason inside `e`, if it carries one.
pub fn user_reason(e: &io::Error) -> Option<String> {
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

/// A write into the result failed: for a reason the user can act on (the format or encoding
/// cannot hold the result), or because the store broke.
pub fn sink_error(e: io::Error) -> EngineError {
    match user_reason(&e) {
        Some(reason) => EngineError::Execution(reason),
        None => EngineError::Sink(e.into()),
    }
}

/// One result being encoded into its sink, batch by batch.
pub struct Output {
    sink: Option<Box<dyn ResultSink>>,
    encoder: Box<dyn Encoder>,
    rows: u64,
    error: Option<io::Error>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl Output {
    /// Starts encoding a result with `schema` as `spec` into `sink` (wrapped for the text
    /// encoding); `scratch` holds temporary files. CSV and JSON use a thread per core.
    pub fn start(
        spec: &OutputSpec,
        schema: &Schema,
        sink: Box<dyn ResultSink>,
        scratch: &std::path::Path,
    ) -> Result<Self, EngineError> {
        let mut sink = transcode(spec, sink);
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut encoder =
            encoder(spec, schema, scratch.to_path_buf(), threads).map_err(sink_error)?;
        encoder.begin(sink.as_mut()).map_err(sink_error)?;
        Ok(Self {
            sink: Some(sink),
            encoder,
            rows: 0,
            error: None,
        })
    }

    /// Encodes one batch into the sink; returns `true` when the query should stop (the sink is
    /// gone or a write failed, the error kept for [`Output::finish`]).
    pub fn write(&mut self, batch: &mut DataFrame) -> bool {
        let Some(sink) = self.sink.as_mut() else {
            return true;
        };
        // Counted before writing: an encoder may take the batch (Parquet buffers it).
        let rows = batch.height() as u64;
        let written = self
            .encoder
            .write(batch, sink.as_mut())
            .and_then(|()| sink.add_rows(rows));
        match written {
            Ok(()) => {
                self.rows += rows;
                false
            }
            Err(e) => {
                self.error = Some(e);
                true
            }
        }
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Ends the encoding: the error a batch met, a cancellation, or the finished sink, not yet
    /// committed.
    pub fn finish(
        &mut self,
        cancel: &CancelToken,
        columns: Vec<ResultColumn>,
    ) -> Result<Execution, EngineError> {
        if let Some(e) = self.error.take() {
            return Err(sink_error(e));
        }
        if cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        let mut sink = self
            .sink
            .take()
            .ok_or_else(|| EngineError::Internal("result sink vanished".to_owned()))?;
        self.encoder.finish(sink.as_mut()).map_err(sink_error)?;
        sink.flush().map_err(sink_error)?;
        Ok(Execution {
            sink,
            rows: self.rows,
            columns,
        })
    }
}

#[cfg(test)]
mod tests;
