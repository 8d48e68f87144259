//! CSV encoding of result batches, as Kylin writes results: RFC 4180 quoting (only where a
//! field needs it), NULL as an empty field, no header row, `\n` line ends.

use std::io::{self, Write};

use polars::prelude::{CsvWriter, DataFrame, PolarsError, QuoteStyle, SerWriter};

/// Encodes batches one after another into the same stream.
pub(crate) struct Encoder;

impl Encoder {
    pub fn new() -> Self {
        Self
    }

    /// Appends `batch` to `out`.
    pub fn write(&mut self, batch: &mut DataFrame, out: &mut dyn Write) -> io::Result<()> {
        if batch.height() == 0 {
            return Ok(());
        }
        CsvWriter::new(out)
            .include_header(false)
            .with_quote_style(QuoteStyle::Necessary)
            .finish(batch)
            .map_err(|e| match e {
                PolarsError::IO { error, .. } => io::Error::new(error.kind(), error.to_string()),
                other => io::Error::other(other.to_string()),
            })
    }
}
