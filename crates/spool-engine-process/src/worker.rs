//! The worker process's side: reads requests from stdin, runs them on an engine, and streams
//! each result back as frames on stdout.

use std::io::{self, BufReader, BufWriter, Write};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use spool_domain::{ProjectName, QueryRequest};
use spool_ports::{CancelToken, QueryEngine, ResultSink, ResultStoreError};
use tracing::{debug, error, warn};

use crate::confine::{Confinement, Enforced, confine, project_folder};
use crate::protocol::{DATA, DONE, Done, FAILED, Failure, REQUEST, ROWS, read_frame, write_frame};

/// Bytes a data frame carries at most: large enough that framing costs nothing, small enough
/// that the server's sink sees the result as it is made.
const CHUNK: usize = 256 << 10;

type Out = Arc<Mutex<BufWriter<std::fs::File>>>;

/// How the worker process limits itself before it runs anything.
#[derive(Debug, Clone, Default)]
pub struct WorkerLimits {
    /// The memory budget of each query: the process's data segment limit (`RLIMIT_DATA`, which
    /// on Linux counts every private writable mapping, so every heap allocation); an
    /// allocation past it fails and the process aborts. `None`: no limit.
    pub memory: Option<u64>,
    /// The server's process id: the worker is killed when its parent dies (and exits at once
    /// when the parent is already gone), so no query outlives the server that ran it.
    pub parent: Option<u32>,
    /// Where the worker may reach once it knows its project ([`crate::confine`]): it confines
    /// itself to its first query's project and serves only that project from then on. `None`:
    /// unconfined.
    pub confine: Option<Confinement>,
}

/// Serves queries on `engine` until stdin ends. Call it as the whole of a worker process's
/// `main`: it takes stdin and stdout for the protocol (stray prints must go to stderr).
pub fn serve(engine: Arc<dyn QueryEngine>, limits: WorkerLimits) -> io::Result<()> {
    if let Some(parent) = limits.parent {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        let now = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
        if u32::try_from(now).ok() != Some(parent) {
            return Err(io::Error::other(
                "the server that started this worker is gone",
            ));
        }
    }
    // Should the machine itself run out, the kernel's out-of-memory killer takes a worker (one
    // query) before the server (every query). Raising one's own score needs no privilege.
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "500") {
        eprintln!("could not mark this worker as the first out-of-memory victim: {e}");
    }
    if let Some(bytes) = limits.memory {
        rustix::process::setrlimit(
            rustix::process::Resource::Data,
            rustix::process::Rlimit {
                current: Some(bytes),
                maximum: Some(bytes),
            },
        )?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut input = BufReader::new(io::stdin().lock());
    let stdout = std::fs::File::from(io::stdout().as_fd().try_clone_to_owned()?);
    let out: Out = Arc::new(Mutex::new(BufWriter::with_capacity(CHUNK, stdout)));
    let mut payload = Vec::new();
    // The project this worker confined itself to, once it has.
    let mut bound: Option<ProjectName> = None;
    loop {
        match read_frame(&mut input, &mut payload)? {
            None => return Ok(()),
            Some(REQUEST) => {}
            Some(other) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("expected a request frame, got tag {other}"),
                ));
            }
        }
        let mut request: QueryRequest = serde_json::from_slice(&payload)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let Some(confinement) = &limits.confine
            && let Err(failure) = bind(confinement, &mut bound, &mut request)
        {
            let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
            write_frame(&mut *out, FAILED, &to_json(&failure)?)?;
            out.flush()?;
            if bound.is_none() {
                // Unconfined after a failed attempt: this process runs nothing.
                return Err(io::Error::other("the worker could not confine itself"));
            }
            continue;
        }
        let sink = FrameSink {
            out: out.clone(),
            pending: Vec::with_capacity(CHUNK),
            written: 0,
        };
        // The server stops a query by killing this process: no token is ever set here.
        let outcome = runtime.block_on(async {
            match engine
                .execute(&request, Box::new(sink), CancelToken::new())
                .await
            {
                Ok(execution) => {
                    let (rows, columns) = (execution.rows, execution.columns);
                    execution
                        .sink
                        .commit()
                        .await
                        .map(|_| Done { rows, columns })
                        .map_err(|e| Failure::Internal(format!("writing the result: {e}")))
                }
                Err(e) => Err(Failure::from(&e)),
            }
        });
        let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(done) => write_frame(&mut *out, DONE, &to_json(&done)?)?,
            Err(failure) => write_frame(&mut *out, FAILED, &to_json(&failure)?)?,
        }
        out.flush()?;
    }
}

/// Confines the worker to `request`'s project on its first query (and points the request at
/// the project's folder by the folder's own spelling, which the engine then finds without
/// listing the projects folder); refuses any later query of another project.
fn bind(
    confinement: &Confinement,
    bound: &mut Option<ProjectName>,
    request: &mut QueryRequest,
) -> Result<(), Failure> {
    if let Some(project) = bound {
        if *project == request.project {
            request.project = project.clone();
            return Ok(());
        }
        return Err(Failure::Internal(format!(
            "this worker process serves project '{project}' only"
        )));
    }
    let folder = project_folder(&confinement.projects, request.project.as_str());
    let enforced = confine(
        folder.as_ref().map(|(_, path)| path.as_path()),
        &confinement.scratch,
    )
    .map_err(|e| {
        error!(error = %e, "the worker process could not confine itself; it runs nothing");
        Failure::Internal(format!("the worker process could not confine itself: {e}"))
    })?;
    match enforced {
        Enforced::Fully => {
            debug!(project = %request.project, "worker process confined to its project (Landlock)");
        }
        Enforced::Partly => warn!(
            project = %request.project,
            "worker process partly confined: this kernel's Landlock lacks some restrictions"
        ),
        Enforced::Not => warn!(
            project = %request.project,
            "worker process NOT confined to its project: this kernel has no Landlock (or it is \
             turned off); only the SQL sandbox keeps queries inside their project"
        ),
    }
    if let Some(spelled) = folder.and_then(|(name, _)| ProjectName::parse(&name).ok()) {
        request.project = spelled;
    }
    *bound = Some(request.project.clone());
    Ok(())
}

fn to_json(value: &impl serde::Serialize) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

/// The sink the engine writes into inside the worker: result bytes become data frames.
struct FrameSink {
    out: Out,
    pending: Vec<u8>,
    written: u64,
}

impl FrameSink {
    fn send_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        write_frame(&mut *out, DATA, &self.pending)?;
        self.pending.clear();
        Ok(())
    }
}

impl Write for FrameSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pending.len() + buf.len() > CHUNK {
            self.send_pending()?;
        }
        if buf.len() >= CHUNK {
            let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
            write_frame(&mut *out, DATA, buf)?;
        } else {
            self.pending.extend_from_slice(buf);
        }
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl ResultSink for FrameSink {
    async fn commit(mut self: Box<Self>) -> Result<u64, ResultStoreError> {
        self.send_pending()?;
        Ok(self.written)
    }

    async fn abort(self: Box<Self>) -> Result<(), ResultStoreError> {
        Ok(())
    }

    fn add_rows(&mut self, rows: u64) -> io::Result<()> {
        // The bytes before the count, so the server's caps see them in order; and a flush, so
        // the server's progress and caps follow the query as it runs.
        self.send_pending()?;
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        write_frame(&mut *out, ROWS, &rows.to_le_bytes())?;
        out.flush()
    }
}
