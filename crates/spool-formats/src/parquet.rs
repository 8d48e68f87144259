//! Parquet: one row group buffered at a time ([`PARQUET_ROW_GROUP`](crate::PARQUET_ROW_GROUP) rows).

#[allow(clippy::wildcard_imports)]
use crate::*;

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
    buf: SharedBuf,
    writer: Option<polars::io::parquet::write::BatchedWriter<SharedBuf>>,
    pending: Vec<DataFrame>,
    pending_rows: usize,
}

impl Parquet {
    pub(crate) fn new(schema: Schema) -> Self {
        Self {
            schema,
            buf: SharedBuf::default(),
            writer: None,
            pending: Vec::new(),
            pending_rows: 0,
        }
    }

    pub(crate) fn writer(
        &mut self,
    ) -> io::Result<&mut polars::io::parquet::write::BatchedWriter<SharedBuf>> {
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
