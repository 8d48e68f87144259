//! Text encoding spread over several threads, written in order.
//!
//! Polars hands the result to the sink one batch at a time, on one thread. Encoding CSV or JSON
//! there left a core idle while Polars waited for the sink. [`Parallel`] instead passes each
//! batch to one of a few encoder threads and writes the encoded bytes in batch order on the
//! calling thread, so decoding the next batches and encoding earlier ones overlap.
//!
//! Invariants:
//! - Bytes reach the sink in batch order, whatever order the threads finish in.
//! - At most two batches per thread are in flight (queued, being encoded, or encoded and waiting
//!   to be written): memory stays bounded by a few batches, and a slow sink slows the query
//!   rather than letting encoded bytes pile up.
//! - The threads end when the encoder is finished or dropped; a panic in one becomes an error.
//! - The threads run at a lower priority (see `priority`): an export is batch work and yields
//!   the CPU to the HTTP threads, so status polls stay fast while it runs.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use polars::prelude::DataFrame;
use spool_ports::ResultSink;

use crate::{BatchEncoder, Encoder};

/// Encoded bytes of one batch, or why it failed, by batch number.
type Encoded = (u64, io::Result<Vec<u8>>);

/// An [`Encoder`] running a [`BatchEncoder`] on several threads.
pub(crate) struct Parallel {
    senders: Vec<SyncSender<(u64, DataFrame)>>,
    threads: Vec<JoinHandle<()>>,
    results: Receiver<Encoded>,
    /// Encoded batches that finished before an earlier one.
    ready: BTreeMap<u64, Vec<u8>>,
    dispatched: u64,
    written: u64,
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    /// Drop the first byte of the first non-empty batch (the separator before JSON's first row).
    trim_first: bool,
    /// Buffers already written out, for the threads to encode into again.
    spare: Spare,
}

/// Output buffers handed back after writing. Reusing them saves growing a fresh buffer (and
/// faulting in its pages) per batch: 13 % of the CPU time of a CSV export went there. There are
/// never more than the batches in flight, so the pool stays bounded.
type Spare = Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

fn died() -> io::Error {
    io::Error::other("a result encoder thread stopped")
}

impl Parallel {
    /// Starts `threads` threads running `rows`. `prefix` is written before the first batch and
    /// `suffix` after the last; with `trim_first` the first byte of the first non-empty batch
    /// is dropped.
    pub(crate) fn new(
        rows: Arc<dyn BatchEncoder>,
        threads: usize,
        prefix: Vec<u8>,
        suffix: Vec<u8>,
        trim_first: bool,
    ) -> io::Result<Self> {
        let (done, results) = mpsc::channel::<Encoded>();
        let spare = Spare::default();
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let (send, receive) = mpsc::sync_channel::<(u64, DataFrame)>(1);
            let rows = Arc::clone(&rows);
            let done = done.clone();
            let spare = Arc::clone(&spare);
            let handle = std::thread::Builder::new()
                .name(format!("spool-encode-{i}"))
                .spawn(move || {
                    crate::priority::lower_current_thread();
                    for (seq, batch) in receive {
                        let encoded =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                let reused = spare
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .pop();
                                let mut out = reused.unwrap_or_else(|| Vec::with_capacity(1 << 20));
                                rows.encode(&batch, &mut out).map(|()| out)
                            }))
                            .unwrap_or_else(|_| Err(io::Error::other("a result encoder panicked")));
                        drop(batch);
                        if done.send((seq, encoded)).is_err() {
                            break;
                        }
                    }
                })?;
            senders.push(send);
            handles.push(handle);
        }
        Ok(Self {
            senders,
            threads: handles,
            results,
            ready: BTreeMap::new(),
            dispatched: 0,
            written: 0,
            prefix,
            suffix,
            trim_first,
            spare,
        })
    }

    fn in_flight_limit(&self) -> u64 {
        2 * self.senders.len() as u64
    }

    /// Collects finished batches; with `wait`, blocks for at least one.
    fn collect(&mut self, wait: bool) -> io::Result<()> {
        if wait {
            let (seq, encoded) = self.results.recv().map_err(|_| died())?;
            self.ready.insert(seq, encoded?);
        }
        while let Ok((seq, encoded)) = self.results.try_recv() {
            self.ready.insert(seq, encoded?);
        }
        Ok(())
    }

    /// Writes every batch that is next in order.
    fn write_ready(&mut self, out: &mut dyn ResultSink) -> io::Result<()> {
        while let Some(mut bytes) = self.ready.remove(&self.written) {
            let skip = usize::from(self.trim_first && !bytes.is_empty());
            self.trim_first &= skip == 0;
            out.write_all(&bytes[skip..])?;
            self.written += 1;
            bytes.clear();
            self.spare
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(bytes);
        }
        Ok(())
    }
}

impl Encoder for Parallel {
    fn begin(&mut self, out: &mut dyn ResultSink) -> io::Result<()> {
        out.write_all(&self.prefix)
    }

    fn write(&mut self, batch: &mut DataFrame, out: &mut dyn ResultSink) -> io::Result<()> {
        if batch.height() == 0 {
            return Ok(());
        }
        let seq = self.dispatched;
        let thread = (seq % self.senders.len() as u64) as usize;
        self.senders[thread]
            .send((seq, batch.clone()))
            .map_err(|_| died())?;
        self.dispatched += 1;
        self.collect(false)?;
        self.write_ready(out)?;
        while self.dispatched - self.written > self.in_flight_limit() {
            self.collect(true)?;
            self.write_ready(out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn ResultSink) -> io::Result<()> {
        while self.written < self.dispatched {
            self.collect(true)?;
            self.write_ready(out)?;
        }
        out.write_all(&self.suffix)
    }
}

impl Drop for Parallel {
    fn drop(&mut self) {
        // Closing the queues ends each thread after the batch it holds.
        self.senders.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
