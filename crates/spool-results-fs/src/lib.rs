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
//! - While a result is written, a helper thread flushes it to disk every [`SYNC_EVERY`] bytes
//!   (`fdatasync` on a second handle), so dirty pages never pile up and the final `fsync` at
//!   commit has at most that much left to write.

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
/// Bytes written between two background flushes of a result being written.
const SYNC_EVERY: u64 = 64 * 1024 * 1024;

/// Flushes a file to disk on its own thread whenever asked, while the writer goes on.
struct Syncer {
    ask: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Syncer {
    fn start(file: &File) -> io::Result<Self> {
        let handle = file.try_clone()?;
        let (ask, asked) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("spool-result-sync".to_owned())
            .spawn(move || {
                for () in asked {
                    handle.sync_data()?;
                }
                Ok(())
            })?;
        Ok(Self {
            ask: Some(ask),
            thread: Some(thread),
        })
    }

    /// Asks for a flush unless one is already pending.
    fn request(&self) {
        if let Some(ask) = &self.ask {
            let _ = ask.try_send(());
        }
    }

    /// Waits for the thread; returns the first error it met.
    fn stop(&mut self) -> io::Result<()> {
        self.ask = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the result sync thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

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
    syncer: Syncer,
    written: u64,
    synced_at: u64,
    temp: PathBuf,
    target: PathBuf,
    root: PathBuf,
}

impl FsSink {
    fn wrote(&mut self, n: usize) {
        self.written += n as u64;
        if self.written - self.synced_at >= SYNC_EVERY {
            self.synced_at = self.written;
            self.syncer.request();
        }
    }
}

impl Write for FsSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.file {
            Some(f) => f.write(buf)?,
            None => return Err(io::Error::other("result sink already committed")),
        };
        self.wrote(n);
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(buf)?,
            None => return Err(io::Error::other("result sink already committed")),
        }
        self.wrote(buf.len());
        Ok(())
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
        self.syncer.stop()?;
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
            syncer: Syncer::start(&file)?,
            written: 0,
            synced_at: 0,
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
    async fn a_result_past_several_background_syncs_commits_whole_and_an_abandoned_one_vanishes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsResultStore::open(dir.path()).expect("open");
        // Each MiB starts with its own number, so a lost or reordered block shows.
        let blocks = (2 * SYNC_EVERY / (1 << 20) + 3) as u32;
        let block = |i: u32| {
            let mut b = vec![b'x'; 1 << 20];
            b[..4].copy_from_slice(&i.to_be_bytes());
            b
        };
        let id = QueryId::new_random();
        let mut sink = store.create(id).await.expect("create");
        for i in 0..blocks {
            sink.write_all(&block(i)).expect("write");
        }
        let len = tokio::task::spawn_blocking(move || sink.commit())
            .await
            .expect("join")
            .expect("commit");
        assert_eq!(len, u64::from(blocks) << 20);
        let file = fs::read(store.path_of(id)).expect("read");
        assert_eq!(file.len() as u64, len);
        for (i, chunk) in file.chunks(1 << 20).enumerate() {
            assert_eq!(chunk, &block(i as u32)[..], "block {i}");
        }
        // Dropped before commit, after a background sync ran: nothing is left behind.
        let mut sink = store.create(QueryId::new_random()).await.expect("create");
        for i in 0..(SYNC_EVERY / (1 << 20) + 1) as u32 {
            sink.write_all(&block(i)).expect("write");
        }
        drop(sink);
        assert_eq!(
            fs::read_dir(dir.path().join(".tmp")).expect("tmp").count(),
            0
        );
        assert_eq!(store.list().await.expect("list"), vec![id]);
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
