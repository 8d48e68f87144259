//! The result store on a local directory.
//!
//! Layout: a committed result is the file `<root>/<key>` (`<query id>.<attempt>`, or the bare
//! query id for results stored before attempts had keys); results being written live in
//! `<root>/.tmp/<key>.<random>.part` until commit renames them into place.
//!
//! Results are written and read with direct I/O (`O_DIRECT`, Linux) where the file system
//! allows it: a result is written once and read once or twice, so passing it through the page
//! cache only costs CPU (on the 2-core bench machine a buffered 640 MB write took 1.2 s of
//! kernel time; direct, 0.04 s) and evicts pages worth keeping, such as the tables' Parquet
//! files. Where the file system refuses direct I/O (tmpfs, some network file systems) the store
//! falls back to buffered I/O on its own; [`FsResultStore::with_direct_io`] turns it off.
//!
//! Invariants:
//! - Only a [`ResultKey`] (a parsed UUID and a number) ever becomes a file name, so no request
//!   can name a path.
//! - A committed file is complete: it is written, `fsync`ed, renamed, and the directory is
//!   `fsync`ed before commit returns. A crash leaves at most stray `.part` files, which
//!   [`FsResultStore::open`] removes (and [`FsResultStore::open_shared`], for a directory that
//!   several processes write, once they are a day old).
//! - Direct writes go out in whole blocks from a block-aligned buffer; the last partial block is
//!   written through the page cache at commit, before the `fsync`.
//! - With buffered writes, a helper thread flushes the file every [`SYNC_EVERY`] bytes
//!   (`fdatasync` on a second handle), so dirty pages never pile up and the final `fsync` at
//!   commit has at most that much left to write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aligned_vec::{AVec, ConstAlign};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use spool_domain::ResultKey;
use spool_ports::{ResultSink, ResultStore, ResultStoreError, StoredResult};
use tokio_util::io::ReaderStream;

/// The alignment direct I/O needs for buffer addresses, file offsets and lengths: the logical
/// block size of the device, 4 KiB or less on every common one.
const BLOCK: usize = 4096;
/// Chunk size for reading results back; large enough for fast downloads, small enough that
/// many concurrent downloads stay cheap.
const READ_CHUNK: usize = 1024 * 1024;
/// Direct reads in flight per download: the disk reads ahead while the network sends.
const READS_AHEAD: usize = 4;
/// Write buffer in front of the file (a multiple of [`BLOCK`]).
const WRITE_BUFFER: usize = 8 * 1024 * 1024;
/// How old a half-written result in a shared directory must be before a starting process
/// removes it.
const STALE_PART: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Bytes written between two background flushes of a result written through the page cache.
const SYNC_EVERY: u64 = 64 * 1024 * 1024;

/// A block-aligned byte buffer.
type Aligned = AVec<u8, ConstAlign<BLOCK>>;

/// Opens `path` with `options`, bypassing the page cache if `direct` and the platform and file
/// system allow it; returns the file and whether it is direct.
fn open_file(options: &OpenOptions, path: &Path, direct: bool) -> io::Result<(File, bool)> {
    #[cfg(target_os = "linux")]
    if direct {
        use std::os::unix::fs::OpenOptionsExt;
        let mut direct_options = options.clone();
        direct_options.custom_flags(libc::O_DIRECT);
        match direct_options.open(path) {
            Ok(file) => return Ok((file, true)),
            // The file system does not do direct I/O.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let _ = direct;
    Ok((options.open(path)?, false))
}

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
    direct_io: bool,
}

impl FsResultStore {
    /// Opens (or creates) the store at `root` and removes results left half-written by a crash.
    /// Direct I/O is on (see the module docs).
    pub fn open(root: &Path) -> io::Result<Self> {
        Self::open_removing_parts(root, std::time::Duration::ZERO)
    }

    /// Opens (or creates) a store at `root` that other processes may be writing to at the same
    /// time (a shared file system): only half-written results untouched for a day are removed,
    /// since a younger one may belong to a query another process is running.
    pub fn open_shared(root: &Path) -> io::Result<Self> {
        Self::open_removing_parts(root, STALE_PART)
    }

    fn open_removing_parts(root: &Path, older_than: std::time::Duration) -> io::Result<Self> {
        let tmp = root.join(".tmp");
        fs::create_dir_all(&tmp)?;
        let now = std::time::SystemTime::now();
        for entry in fs::read_dir(&tmp)? {
            let entry = entry?;
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default())
                .unwrap_or(std::time::Duration::MAX);
            if age >= older_than {
                not_found_is_none(fs::remove_file(entry.path()))?;
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            direct_io: true,
        })
    }

    /// Reads and writes results through the page cache when `direct_io` is false.
    pub fn with_direct_io(mut self, direct_io: bool) -> Self {
        self.direct_io = direct_io;
        self
    }

    /// Returns the path of the committed result under `key` (whether or not it exists).
    pub fn path_of(&self, key: ResultKey) -> PathBuf {
        self.root.join(key.to_string())
    }
}

/// A result being written to a temporary file.
struct FsSink {
    /// `None` once committed.
    file: Option<File>,
    /// Whether `file` bypasses the page cache.
    direct: bool,
    /// Bytes not yet written; always less than [`WRITE_BUFFER`] between calls.
    buffer: Aligned,
    /// Bytes in the file so far.
    written: u64,
    /// Flushes a buffered file in the background; `None` for a direct one.
    syncer: Option<Syncer>,
    synced_at: u64,
    temp: PathBuf,
    target: PathBuf,
    root: PathBuf,
}

impl FsSink {
    /// Writes `bytes` at the end of the file (whole blocks if direct).
    fn write_out(&mut self, bytes: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("result sink already committed"))?;
        match file.write_all_at(bytes, self.written) {
            Ok(()) => {}
            // Opened direct, yet this file system refuses the write: go on through the cache.
            Err(e) if self.direct && e.kind() == io::ErrorKind::InvalidInput => {
                self.buffered()?;
                self.file
                    .as_ref()
                    .ok_or_else(|| io::Error::other("result sink already committed"))?
                    .write_all_at(bytes, self.written)?;
            }
            Err(e) => return Err(e),
        }
        self.written += bytes.len() as u64;
        if let Some(syncer) = &self.syncer
            && self.written - self.synced_at >= SYNC_EVERY
        {
            self.synced_at = self.written;
            syncer.request();
        }
        Ok(())
    }

    /// Switches to a buffered handle on the same file.
    fn buffered(&mut self) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(&self.temp)?;
        self.syncer = Some(Syncer::start(&file)?);
        self.file = Some(file);
        self.direct = false;
        Ok(())
    }

    /// Writes out the buffer if it is full.
    fn drain_full(&mut self) -> io::Result<()> {
        if self.buffer.len() == WRITE_BUFFER {
            let buffer = std::mem::replace(&mut self.buffer, Aligned::new(BLOCK));
            let result = self.write_out(&buffer);
            self.buffer = buffer;
            self.buffer.clear();
            result?;
        }
        Ok(())
    }
}

impl Write for FsSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() {
            return Err(io::Error::other("result sink already committed"));
        }
        let n = buf.len().min(WRITE_BUFFER - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..n]);
        self.drain_full()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Bytes wait in the buffer until it fills or the result is committed; a direct file
        // takes only whole blocks.
        Ok(())
    }
}

#[async_trait]
impl ResultSink for FsSink {
    async fn commit(self: Box<Self>) -> Result<u64, ResultStoreError> {
        tokio::task::spawn_blocking(move || (*self).commit_blocking())
            .await
            .map_err(io::Error::other)?
    }

    async fn abort(self: Box<Self>) -> Result<(), ResultStoreError> {
        // Dropping removes the file; keep the unlink off the reactor.
        tokio::task::spawn_blocking(move || drop(self))
            .await
            .map_err(io::Error::other)?;
        Ok(())
    }
}

impl FsSink {
    /// Writes what is buffered, syncs, renames into place and syncs the directory.
    fn commit_blocking(mut self) -> Result<u64, ResultStoreError> {
        let buffer = std::mem::replace(&mut self.buffer, Aligned::new(BLOCK));
        let whole = if self.direct {
            buffer.len() / BLOCK * BLOCK
        } else {
            buffer.len()
        };
        self.write_out(&buffer[..whole])?;
        let tail = &buffer[whole..];
        if !tail.is_empty() {
            // The last partial block goes through the page cache; the fsync below covers it.
            OpenOptions::new()
                .write(true)
                .open(&self.temp)?
                .write_all_at(tail, self.written)?;
            self.written += tail.len() as u64;
        }
        if let Some(mut syncer) = self.syncer.take() {
            syncer.stop()?;
        }
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("result sink already committed"))?;
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

/// Owns a chunk read into an aligned buffer and shows the part of it a reader asked for.
struct Chunk {
    buffer: Aligned,
    skip: usize,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[self.skip..]
    }
}

/// Reads `range` of a file opened for direct I/O, in aligned chunks with a few reads ahead.
fn direct_body(
    file: File,
    range: std::ops::Range<u64>,
) -> futures::stream::BoxStream<'static, io::Result<Bytes>> {
    let file = Arc::new(file);
    let block = BLOCK as u64;
    let first = range.start / block * block;
    let offsets = (first..range.end).step_by(READ_CHUNK);
    futures::stream::iter(offsets)
        .map(move |offset| {
            let file = Arc::clone(&file);
            let end = range.end;
            let start = range.start;
            async move {
                tokio::task::spawn_blocking(move || -> io::Result<Bytes> {
                    let mut buffer = Aligned::with_capacity(BLOCK, READ_CHUNK);
                    buffer.resize(READ_CHUNK, 0);
                    let mut filled = 0;
                    // Short reads happen at the end of the file (and may in principle happen
                    // anywhere); keep reading until the chunk is full or the file ends.
                    while filled < READ_CHUNK {
                        let n = file.read_at(&mut buffer[filled..], offset + filled as u64)?;
                        if n == 0 {
                            break;
                        }
                        filled += n;
                        if filled % BLOCK != 0 {
                            break;
                        }
                    }
                    let wanted_end = (end - offset).min(READ_CHUNK as u64) as usize;
                    if filled < wanted_end {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the result file is shorter than it was",
                        ));
                    }
                    buffer.truncate(wanted_end);
                    let skip = start.saturating_sub(offset) as usize;
                    Ok(Bytes::from_owner(Chunk { buffer, skip }))
                })
                .await
                .map_err(io::Error::other)?
            }
        })
        .buffered(READS_AHEAD)
        .boxed()
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl FsResultStore {
    /// Streams the whole result of `id`, or `range` of it.
    async fn read(
        &self,
        key: ResultKey,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Option<StoredResult>, ResultStoreError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let path = self.path_of(key);
        let direct_io = self.direct_io;
        let opened = tokio::task::spawn_blocking(move || {
            let (mut file, mut direct) =
                open_file(OpenOptions::new().read(true), &path, direct_io)?;
            if direct {
                // A device whose blocks are larger than `BLOCK` refuses our reads; find out on
                // the first block rather than halfway through a download.
                let mut probe = Aligned::with_capacity(BLOCK, BLOCK);
                probe.resize(BLOCK, 0);
                if let Err(e) = file.read_at(&mut probe, 0) {
                    if e.kind() != io::ErrorKind::InvalidInput {
                        return Err(e);
                    }
                    (file, direct) = open_file(OpenOptions::new().read(true), &path, false)?;
                }
            }
            let size = file.metadata()?.len();
            Ok::<_, io::Error>((file, direct, size))
        })
        .await
        .map_err(io::Error::other)?;
        let Some((file, direct, size)) = not_found_is_none(opened)? else {
            return Ok(None);
        };
        let range = range.unwrap_or(0..size);
        let len = range.end.saturating_sub(range.start);
        let body = if direct {
            direct_body(file, range)
        } else {
            let mut file = tokio::fs::File::from_std(file);
            file.seek(io::SeekFrom::Start(range.start)).await?;
            ReaderStream::with_capacity(file.take(len), READ_CHUNK).boxed()
        };
        Ok(Some(StoredResult { len, body }))
    }
}

#[async_trait]
impl ResultStore for FsResultStore {
    async fn create(&self, key: ResultKey) -> Result<Box<dyn ResultSink>, ResultStoreError> {
        let nonce: u64 = rand::random();
        let temp = self
            .root
            .join(".tmp")
            .join(format!("{key}.{nonce:016x}.part"));
        let direct_io = self.direct_io;
        let path = temp.clone();
        let (file, direct) = tokio::task::spawn_blocking(move || {
            open_file(
                OpenOptions::new().write(true).create_new(true),
                &path,
                direct_io,
            )
        })
        .await
        .map_err(io::Error::other)??;
        Ok(Box::new(FsSink {
            syncer: if direct {
                None
            } else {
                Some(Syncer::start(&file)?)
            },
            direct,
            buffer: Aligned::with_capacity(BLOCK, WRITE_BUFFER),
            written: 0,
            synced_at: 0,
            file: Some(file),
            temp,
            target: self.path_of(key),
            root: self.root.clone(),
        }))
    }

    async fn open(&self, key: ResultKey) -> Result<Option<StoredResult>, ResultStoreError> {
        self.read(key, None).await
    }

    async fn open_range(
        &self,
        key: ResultKey,
        range: std::ops::Range<u64>,
    ) -> Result<Option<StoredResult>, ResultStoreError> {
        self.read(key, Some(range)).await
    }

    fn location(&self, key: ResultKey) -> Option<String> {
        let path = self.path_of(key);
        let path = std::path::absolute(&path).unwrap_or(path);
        Some(path.display().to_string())
    }

    async fn delete(&self, key: ResultKey) -> Result<(), ResultStoreError> {
        not_found_is_none(tokio::fs::remove_file(self.path_of(key)).await)?;
        Ok(())
    }

    /// A hard link: instant, no second copy of the bytes on disk, and each name deletes on
    /// its own. The directory is synced so the new name survives a crash.
    async fn copy(&self, from: ResultKey, to: ResultKey) -> Result<u64, ResultStoreError> {
        let (source, target, root) = (self.path_of(from), self.path_of(to), self.root.clone());
        tokio::task::spawn_blocking(move || {
            std::fs::hard_link(&source, &target)?;
            File::open(&root)?.sync_all()?;
            Ok(std::fs::metadata(&target)?.len())
        })
        .await
        .map_err(|e| ResultStoreError::Io(std::io::Error::other(e)))?
    }

    async fn list(&self) -> Result<Vec<ResultKey>, ResultStoreError> {
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
    use spool_domain::QueryId;

    /// The store at `dir` with direct I/O (where the file system allows) and without.
    fn both(dir: &Path) -> [FsResultStore; 2] {
        let store = FsResultStore::open(dir).expect("open");
        [store.clone(), store.with_direct_io(false)]
    }

    #[tokio::test]
    async fn keeps_the_result_store_contract() {
        for store in both(tempfile::tempdir().expect("tempdir").path()) {
            spool_ports::testing::result_store_contract(&store).await;
        }
    }

    async fn read_all(stored: StoredResult) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut body = stored.body;
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.expect("chunk"));
        }
        assert_eq!(bytes.len() as u64, stored.len, "length announced");
        bytes
    }

    #[tokio::test]
    async fn odd_sized_writes_and_unaligned_ranges_read_back_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Several write buffers and read chunks, ending mid-block.
        let expected: Vec<u8> = (0..(2 * WRITE_BUFFER + 3 * READ_CHUNK + 12_345) as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for store in both(dir.path()) {
            let id = ResultKey::new(QueryId::new_random(), 1);
            let mut sink = store.create(id).await.expect("create");
            for piece in expected.chunks(777_777) {
                sink.write_all(piece).expect("write");
            }
            let len = sink.commit().await.expect("commit");
            assert_eq!(len, expected.len() as u64);
            let whole = store.open(id).await.expect("open").expect("stored");
            assert!(read_all(whole).await == expected, "whole result");
            let end = expected.len() as u64;
            for range in [
                0..1,
                1..BLOCK as u64 + 1,
                4095..READ_CHUNK as u64 + 4097,
                12_345..3 * READ_CHUNK as u64 + 7,
                end - 5..end,
                end - 3 * READ_CHUNK as u64 - 1..end,
                17..17,
            ] {
                let stored = store
                    .open_range(id, range.clone())
                    .await
                    .expect("open")
                    .expect("stored");
                let got = read_all(stored).await;
                assert!(
                    got == expected[range.start as usize..range.end as usize],
                    "range {range:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_result_past_several_background_syncs_commits_whole_and_an_abandoned_one_vanishes() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Background syncs run for results written through the page cache.
        let store = FsResultStore::open(dir.path())
            .expect("open")
            .with_direct_io(false);
        // Each MiB starts with its own number, so a lost or reordered block shows.
        let blocks = (2 * SYNC_EVERY / (1 << 20) + 3) as u32;
        let block = |i: u32| {
            let mut b = vec![b'x'; 1 << 20];
            b[..4].copy_from_slice(&i.to_be_bytes());
            b
        };
        let id = ResultKey::new(QueryId::new_random(), 1);
        let mut sink = store.create(id).await.expect("create");
        for i in 0..blocks {
            sink.write_all(&block(i)).expect("write");
        }
        let len = sink.commit().await.expect("commit");
        assert_eq!(len, u64::from(blocks) << 20);
        let file = fs::read(store.path_of(id)).expect("read");
        assert_eq!(file.len() as u64, len);
        for (i, chunk) in file.chunks(1 << 20).enumerate() {
            assert_eq!(chunk, &block(i as u32)[..], "block {i}");
        }
        // Dropped before commit, after a background sync ran: nothing is left behind.
        let mut sink = store
            .create(ResultKey::new(QueryId::new_random(), 1))
            .await
            .expect("create");
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

    /// Whether the kernel holds `file` open with `O_DIRECT`.
    #[cfg(target_os = "linux")]
    fn is_direct(file: &File) -> bool {
        let fd = std::os::fd::AsRawFd::as_raw_fd(file);
        let info = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("fdinfo");
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| i64::from_str_radix(f.trim(), 8).expect("octal"))
            .expect("flags line");
        flags & i64::from(libc::O_DIRECT) != 0
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn direct_io_is_used_where_the_file_system_allows_it_and_only_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let (file, direct) =
            open_file(OpenOptions::new().write(true).create_new(true), &path, true).expect("open");
        // On tmpfs the answer is no, on ext4 and xfs yes; either way it is what the kernel holds.
        assert_eq!(is_direct(&file), direct);
        let (file, direct) = open_file(OpenOptions::new().read(true), &path, false).expect("open");
        assert!(!direct && !is_direct(&file));
    }

    #[tokio::test]
    async fn reopening_removes_half_written_results() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsResultStore::open(dir.path()).expect("open");
        let id = ResultKey::new(QueryId::new_random(), 1);
        let mut sink = store.create(id).await.expect("create");
        sink.write_all(b"half").expect("write");
        sink.flush().expect("flush");
        // A crash: the sink is never dropped or committed.
        std::mem::forget(sink);
        assert_eq!(
            fs::read_dir(dir.path().join(".tmp")).expect("tmp").count(),
            1
        );
        // Another process's half-written result in a shared directory is young: kept.
        FsResultStore::open_shared(dir.path()).expect("open shared");
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

    #[tokio::test]
    async fn results_stored_before_attempts_had_keys_are_read_under_attempt_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsResultStore::open(dir.path()).expect("open");
        let id = QueryId::new_random();
        fs::write(dir.path().join(id.to_string()), b"old").expect("write");
        let key = ResultKey::new(id, 0);
        assert_eq!(store.list().await.expect("list"), vec![key]);
        let stored = store.open(key).await.expect("open").expect("found");
        assert_eq!(read_all(stored).await, b"old");
    }
}
