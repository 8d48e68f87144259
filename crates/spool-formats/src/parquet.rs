//! Parquet: one row group buffered at a time ([`PARQUET_ROW_GROUP`](crate::PARQUET_ROW_GROUP)
//! rows), its columns encoded and compressed on several threads.
//!
//! Polars' `BatchedWriter::write_batch` encodes and compresses a row group's pages lazily, as
//! its file writer pulls them, so all of that runs on the one thread that writes. Here each
//! column's pages are encoded and Snappy-compressed eagerly, the columns shared among
//! `threads` threads (the calling one and helpers at the engine's priority), and the finished
//! pages handed to `write_row_group`: the same pages, statistics and footer, in the same order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use polars::prelude::{ArrayRef, CompatLevel};
use polars_parquet::write::{
    CompressedPage, CompressionOptions, ParquetType, StatisticsOptions, Version, WriteOptions,
    array_to_columns, compress, get_dtype_encoding,
};

#[allow(clippy::wildcard_imports)]
use crate::*;

/// What Polars' `ParquetWriter` writes with Snappy and its defaults (the options its file
/// writer is made with), so the pages encoded here are the ones it would have encoded.
fn options() -> WriteOptions {
    WriteOptions {
        statistics: StatisticsOptions::default(),
        compression: CompressionOptions::Snappy,
        version: Version::V1,
        data_page_size: None,
    }
}

/// A `Write` into a buffer shared with the encoder, which drains it into the sink after each
/// row group: Polars' batched writer wants to own its writer.
#[derive(Clone, Default)]
pub(crate) struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    pub(crate) fn drain_into(&self, out: &mut dyn ResultSink) -> io::Result<()> {
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
pub(crate) struct Parquet {
    schema: Schema,
    threads: usize,
    buf: SharedBuf,
    writer: Option<polars::io::parquet::write::BatchedWriter<SharedBuf>>,
    /// The file's Parquet schema, one field per column (from the writer, once).
    fields: Vec<ParquetType>,
    pending: Vec<DataFrame>,
    pending_rows: usize,
}

impl Parquet {
    pub(crate) fn new(schema: Schema, threads: usize) -> Self {
        Self {
            schema,
            threads: threads.max(1),
            buf: SharedBuf::default(),
            writer: None,
            fields: Vec::new(),
            pending: Vec::new(),
            pending_rows: 0,
        }
    }

    pub(crate) fn writer(
        &mut self,
    ) -> io::Result<&mut polars::io::parquet::write::BatchedWriter<SharedBuf>> {
        if self.writer.is_none() {
            let mut writer = ParquetWriter::new(self.buf.clone())
                .with_compression(ParquetCompression::Snappy)
                .batched(&self.schema)
                .map_err(polars_io)?;
            self.fields = writer.parquet_schema().fields().to_vec();
            self.writer = Some(writer);
        }
        self.writer
            .as_mut()
            .ok_or_else(|| io::Error::other("parquet writer vanished"))
    }

    /// Writes the pending batches as one row group.
    pub(crate) fn flush_group(&mut self, out: &mut dyn ResultSink) -> io::Result<()> {
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
        self.writer()?;
        for chunk in group.iter_chunks(CompatLevel::newest(), false) {
            if chunk.is_empty() {
                continue;
            }
            let pages = encode_columns(chunk.columns(), &self.fields, self.threads)?;
            self.writer()?
                .write_row_group(chunk.len() as u64, &pages)
                .map_err(polars_io)?;
        }
        self.buf.drain_into(out)
    }
}

/// Each column's pages, encoded and compressed, in column order (a column of nested type
/// gives one entry per leaf). `threads` threads take the columns one at a time.
fn encode_columns(
    columns: &[ArrayRef],
    fields: &[ParquetType],
    threads: usize,
) -> io::Result<Vec<Vec<CompressedPage>>> {
    if columns.len() != fields.len() {
        return Err(io::Error::other(format!(
            "a row group of {} columns for a Parquet schema of {}",
            columns.len(),
            fields.len()
        )));
    }
    let options = options();
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let (Some(array), Some(field)) = (columns.get(i), fields.get(i)) else {
                return done;
            };
            done.push((i, encode_column(array, field, options)));
        }
    };
    let mut done = thread::scope(|scope| {
        let helpers = (1..threads.min(columns.len()))
            .map(|i| {
                thread::Builder::new()
                    .name(format!("spool-parquet-{i}"))
                    .spawn_scoped(scope, || {
                        crate::priority::lower_current_thread();
                        work()
                    })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut done = work();
        for helper in helpers {
            done.extend(
                helper
                    .join()
                    .map_err(|_| io::Error::other("a Parquet encoding thread panicked"))?,
            );
        }
        Ok::<_, io::Error>(done)
    })?;
    done.sort_unstable_by_key(|(i, _)| *i);
    let mut pages = Vec::with_capacity(columns.len());
    for (_, leaves) in done {
        pages.extend(leaves?);
    }
    Ok(pages)
}

/// One column's pages, per leaf, as Polars' writer encodes and compresses them.
fn encode_column(
    array: &ArrayRef,
    field: &ParquetType,
    options: WriteOptions,
) -> io::Result<Vec<Vec<CompressedPage>>> {
    let encodings = get_dtype_encoding(array.dtype());
    array_to_columns(array, field.clone(), options, &encodings)
        .map_err(polars_io)?
        .into_iter()
        .map(|pages| {
            pages
                .map(|page| {
                    let page = page.map_err(polars_io)?;
                    compress(page, Vec::new(), options.compression)
                        .map_err(|e| polars_io(PolarsError::from(e)))
                })
                .collect()
        })
        .collect()
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
