//! The result store port: where finished results live until they are downloaded or cleaned.

use std::io;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use spool_domain::QueryId;

/// What can go wrong in a result store.
#[derive(Debug, thiserror::Error)]
pub enum ResultStoreError {
    /// Reading or writing the backing storage failed.
    #[error("result store i/o failure")]
    Io(#[from] io::Error),
}

/// A result being written. Bytes written are invisible to readers until [`ResultSink::commit`].
///
/// The sink is a blocking `std::io::Write`: engines write into it from a blocking thread, never
/// from the async reactor. Dropping a sink without committing discards everything written.
pub trait ResultSink: io::Write + Send {
    /// Makes the result durable and visible under its id, replacing any earlier result with
    /// that id, and returns its size in bytes. Atomic: readers see the old result or none, then
    /// the complete new one, never a prefix.
    fn commit(self: Box<Self>) -> Result<u64, ResultStoreError>;

    /// Tells the sink that `rows` more result rows were written; engines call it after each
    /// batch. A sink may refuse more rows with an error, which the engine treats like a failed
    /// write: it stops the query. The default accepts everything.
    fn add_rows(&mut self, rows: u64) -> io::Result<()> {
        let _ = rows;
        Ok(())
    }
}

/// A stored result opened for reading.
pub struct StoredResult {
    /// The size in bytes of the whole result.
    pub len: u64,
    /// The bytes, in order, in chunks of bounded size.
    pub body: BoxStream<'static, io::Result<Bytes>>,
}

impl std::fmt::Debug for StoredResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredResult")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Storage of result files, keyed by query id.
///
/// Contract:
/// - `create` never makes anything visible; only `commit` does, atomically.
/// - `open` streams the committed bytes without reading them whole into memory.
/// - `delete` is idempotent: deleting a missing result is `Ok`.
/// - Results are opaque bytes; the store knows nothing of their format.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ResultStore: Send + Sync {
    /// Starts writing the result of `id`.
    async fn create(&self, id: QueryId) -> Result<Box<dyn ResultSink>, ResultStoreError>;

    /// Opens the committed result of `id`, or returns `None` if there is none.
    async fn open(&self, id: QueryId) -> Result<Option<StoredResult>, ResultStoreError>;

    /// Deletes the committed result of `id`, if any.
    async fn delete(&self, id: QueryId) -> Result<(), ResultStoreError>;

    /// Returns the ids of every committed result, for sweeping orphans.
    async fn list(&self) -> Result<Vec<QueryId>, ResultStoreError>;

    /// Opens the bytes `range` (offsets, end exclusive; the caller keeps it within the result)
    /// of the committed result of `id`, or returns `None` if there is none. For resumed
    /// downloads. The default reads from the start and skips; stores that can seek do better.
    async fn open_range(
        &self,
        id: QueryId,
        range: Range<u64>,
    ) -> Result<Option<StoredResult>, ResultStoreError> {
        let Some(whole) = self.open(id).await? else {
            return Ok(None);
        };
        let len = range.end.saturating_sub(range.start);
        let body = whole
            .body
            .scan((range.start, len), |(skip, take), chunk| {
                let next = match chunk {
                    Err(e) => Some(Err(e)),
                    Ok(_) if *take == 0 => None,
                    Ok(mut bytes) => {
                        let n = bytes.len() as u64;
                        if *skip >= n {
                            *skip -= n;
                            Some(Ok(Bytes::new()))
                        } else {
                            let mut part = bytes.split_off(usize::try_from(*skip).unwrap_or(0));
                            *skip = 0;
                            part.truncate(usize::try_from(*take).unwrap_or(usize::MAX));
                            *take -= part.len() as u64;
                            Some(Ok(part))
                        }
                    }
                };
                futures::future::ready(next)
            })
            .boxed();
        Ok(Some(StoredResult { len, body }))
    }

    /// Where the store keeps the result of `id` (a path or URL), for operators; `None` if the
    /// store cannot say.
    fn location(&self, id: QueryId) -> Option<String> {
        let _ = id;
        None
    }
}
