//! GBK: a sink wrapper that transcodes UTF-8 text on its way to the result.

#[allow(clippy::wildcard_imports)]
use crate::*;

/// A sink that turns the UTF-8 written into it into GBK. A character GBK cannot hold fails the
/// write with a message naming it; a multi-byte character split across writes is carried over.
pub(crate) struct GbkSink {
    pub(crate) inner: Box<dyn ResultSink>,
    pub(crate) encoder: encoding_rs::Encoder,
    /// The start of a UTF-8 character cut off at the end of the last write.
    pub(crate) pending: Vec<u8>,
    pub(crate) out: Vec<u8>,
}

impl GbkSink {
    pub(crate) fn encode(&mut self, text: &str) -> io::Result<()> {
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
    pub(crate) fn encode_utf8(&mut self, bytes: &[u8]) -> io::Result<()> {
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
