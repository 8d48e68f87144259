//! The result store on a local directory.
//!
//! Layout: a committed result is the file `<root>/<query id>`; results being written live in
//! `<root>/.tmp/<query id>.<random>.part` until commit renames them into place.
//!
//! Invariants:
//! - Only a [`QueryId`] (a parsed UUID) ever becomes a file name, so no request can name a path.
//! - A committed file is complete: it is written, `fsync`ed, renamed, and the directory is
//!   `fsync`ed before commit returns. A crash leaves at most stray `.part` files, which
//!   [`FsResultStore::open`] removes.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::StreamExt;
use spool_domain::QueryId;
use spool_ports::{ResultSink, ResultStore, ResultStoreError, StoredResult};
use tokio_util::io::ReaderStream;

/// Chunk size for reading results back; large enough for fast downloads, small enough that
/// many concurrent downloads stay cheap.
const READ_CHUNK: usize = 256 * 1024;
/// Write buffer in front of the file.
const WRITE_BUFFER: usize = 1024 * 1024;

/// A [`ResultStore`] in a local directory.
#[derive(Debug, Clone)]
pub struct FsResultStore {
    root: PathBuf,
}

impl FsResultStore {
    /// Opens (or creates) the store at `root` and removes results left half-written by a crash.
    pub fn open(root: &Path) -> io::Result<Self> {
        let tmp = root.join(".tmp");
        fs::create_dir_all(&tmp)?;
        for entry in fs::read_dir(&tmp)? {
            let entry = entry?;
            fs::remove_file(entry.path())?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Returns the path of the committed result of `id` (whether or not it exists).
    pub fn path_of(&self, id: QueryId) -> PathBuf {
        self.root.join(id.to_string())
    }
}

/// A result being written to a temporary file.
struct FsSink {
    file: Option<BufWriter<File>>,
    temp: PathBuf,
    target: PathBuf,
    root: PathBuf,
}

impl Write for FsSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("result sink already committed")),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(buf),
            None => Err(io::Error::other("result sink already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl ResultSink for FsSink {
    fn commit(mut self: Box<Self>) -> Result<u64, ResultStoreError> {
        let writer = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("result sink already committed"))?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let len = file.metadata()?.len();
        drop(file);
        fs::rename(&self.temp, &self.target)?;
        File::open(&self.root)?.sync_all()?;
        Ok(len)
    }
}

impl Drop for FsSink {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Not committed: the bytes are discarded.
            if let Err(e) = fs::remove_file(&self.temp) {
                tracing::warn!(path = %self.temp.display(), error = %e, "removing an uncommitted result failed");
            }
        }
    }
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl ResultStore for FsResultStore {
    async fn create(&self, id: QueryId) -> Result<Box<dyn ResultSink>, ResultStoreError> {
        let nonce: u64 = rand::random();
        let temp = self
            .root
            .join(".tmp")
            .join(format!("{id}.{nonce:016x}.part"));
        let file = tokio::fs::File::create(&temp).await?.into_std().await;
        Ok(Box::new(FsSink {
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            temp,
            target: self.path_of(id),
            root: self.root.clone(),
        }))
    }

    async fn open(&self, id: QueryId) -> Result<Option<StoredResult>, ResultStoreError> {
        let Some(file) = not_found_is_none(tokio::fs::File::open(self.path_of(id)).await)? else {
            return Ok(None);
        };
        let len = file.metadata().await?.len();
        let body = ReaderStream::with_capacity(file, READ_CHUNK).boxed();
        Ok(Some(StoredResult { len, body }))
    }

    async fn open_range(
        &self,
        id: QueryId,
        range: std::ops::Range<u64>,
    ) -> Result<Option<StoredResult>, ResultStoreError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let Some(mut file) = not_found_is_none(tokio::fs::File::open(self.path_of(id)).await)?
        else {
            return Ok(None);
        };
        let len = range.end.saturating_sub(range.start);
        file.seek(io::SeekFrom::Start(range.start)).await?;
        let body = ReaderStream::with_capacity(file.take(len), READ_CHUNK).boxed();
        Ok(Some(StoredResult { len, body }))
    }

    fn location(&self, id: QueryId) -> Option<String> {
        let path = self.path_of(id);
        let path = std::path::absolute(&path).unwrap_or(path);
        Some(path.display().to_string())
    }

    async fn delete(&self, id: QueryId) -> Result<(), ResultStoreError> {
        not_found_is_none(tokio::fs::remove_file(self.path_of(id)).await)?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<QueryId>, ResultStoreError> {
        let mut ids = Vec::new();
        let mut entries = tokio::fs::read_dir(&self.root).await?;
        while let Some(entry) = entries.next_entry().await? {
            if let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_result_store_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsResultStore::open(dir.path()).expect("open");
        spool_ports::testing::result_store_contract(&store).await;
    }

    #[tokio::test]
    async fn reopening_removes_half_written_results() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsResultStore::open(dir.path()).expect("open");
        let id = QueryId::new_random();
        let mut sink = store.create(id).await.expect("create");
        sink.write_all(b"half").expect("write");
        sink.flush().expect("flush");
        // A crash: the sink is never dropped or committed.
        std::mem::forget(sink);
        assert_eq!(
            fs::read_dir(dir.path().join(".tmp")).expect("tmp").count(),
            1
        );
        let store = FsResultStore::open(dir.path()).expect("reopen");
        assert_eq!(
            fs::read_dir(dir.path().join(".tmp")).expect("tmp").count(),
            0
        );
        assert!(store.open(id).await.expect("open").is_none());
    }
}
