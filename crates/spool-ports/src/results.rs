//! The result store port: where finished results live until they are downloaded or cleaned.

use std::io;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use spool_domain::ResultKey;

/// What can go wrong in a result store.
#[derive(Debug, thiserror::Error)]
pub enum ResultStoreError {
    /// Reading or writing the backing storage failed.
    #[error("result store i/o failure")]
    Io(#[from] io::Error),
    /// The backend (an object store, a service) failed; the source says how.
    #[error("result store failure")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ResultStoreError {
    /// Wraps a backend's own error, keeping it as the source.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// A result being written. Bytes written are invisible to readers until [`ResultSink::commit`].
///
/// Writing is a blocking `std::io::Write`: engines write from a blocking thread, never from the
/// async reactor (a sink may wait inside `write` for storage to take earlier bytes, which keeps
/// its memory bounded). Ending is explicit and asynchronous: `commit` or `abort`. A sink
/// dropped without either discards what was written as well as it can without waiting (an
/// object store's upload is aborted in the background).
#[async_trait]
pub trait ResultSink: io::Write + Send {
    /// Makes the result durable and visible under its key, and returns its size in bytes.
    /// Atomic: readers see no result, then the complete one, never a prefix. On error nothing
    /// becomes visible.
    async fn commit(self: Box<Self>) -> Result<u64, ResultStoreError>;

    /// Discards everything written; nothing becomes visible.
    async fn abort(self: Box<Self>) -> Result<(), ResultStoreError>;

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
    /// The size in bytes of the whole result (of the range, for [`ResultStore::open_range`]).
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

/// Storage of result files, keyed by query id and attempt ([`ResultKey`]).
///
/// Contract:
/// - `create` never makes anything visible; only `commit` does, atomically.
/// - Keys are written once: a query's attempts write under distinct keys, so one attempt never
///   overwrites or deletes another's result.
/// - `open` streams the committed bytes without reading them whole into memory.
/// - `delete` is idempotent: deleting a missing result is `Ok`.
/// - Several processes may share one store; each only ever deletes keys it was told to.
/// - Results are opaque bytes; the store knows nothing of their format.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ResultStore: Send + Sync {
    /// Starts writing the result under `key`.
    async fn create(&self, key: ResultKey) -> Result<Box<dyn ResultSink>, ResultStoreError>;

    /// Opens the committed result under `key`, or returns `None` if there is none.
    async fn open(&self, key: ResultKey) -> Result<Option<StoredResult>, ResultStoreError>;

    /// Deletes the committed result under `key`, if any.
    async fn delete(&self, key: ResultKey) -> Result<(), ResultStoreError>;

    /// Returns the keys of every committed result, for sweeping orphans.
    async fn list(&self) -> Result<Vec<ResultKey>, ResultStoreError>;

    /// Copies the committed result `from` to `to` (result reuse: each query owns its copy, so
    /// deleting one keeps the other); returns the copy's size. An `Io` error of kind
    /// `NotFound` if `from` is gone. The default streams it through a new sink in bounded
    /// memory; stores with a cheaper copy override it.
    async fn copy(&self, from: ResultKey, to: ResultKey) -> Result<u64, ResultStoreError> {
        let Some(mut stored) = self.open(from).await? else {
            return Err(ResultStoreError::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!("result {from} is gone"),
            )));
        };
        let mut sink = self.create(to).await?;
        while let Some(chunk) = stored.body.next().await {
            let written = chunk.and_then(|chunk| sink.write_all(&chunk));
            if let Err(e) = written {
                let _ = sink.abort().await;
                return Err(ResultStoreError::Io(e));
            }
        }
        sink.commit().await
    }

    /// Opens the bytes `range` (offsets, end exclusive; the caller keeps it within the result)
    /// of the committed result under `key`, or returns `None` if there is none. For resumed
    /// downloads. The default reads from the start and skips; stores that can seek do better.
    async fn open_range(
        &self,
        key: ResultKey,
        range: Range<u64>,
    ) -> Result<Option<StoredResult>, ResultStoreError> {
        let Some(whole) = self.open(key).await? else {
            return Ok(None);
        };
        Ok(Some(skip_to(whole, range)))
    }

    /// Where the store keeps the result under `key` (a path or URL), for operators; `None` if
    /// the store cannot say.
    fn location(&self, key: ResultKey) -> Option<String> {
        let _ = key;
        None
    }
}

/// Cuts `range` out of a whole result's stream.
fn skip_to(whole: StoredResult, range: Range<u64>) -> StoredResult {
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
    StoredResult { len, body }
}
