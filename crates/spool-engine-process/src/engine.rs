//! The server's side: a [`QueryEngine`] that runs each query in a worker process.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use spool_domain::{ProjectName, QueryRequest};
use spool_ports::{CancelToken, EngineError, Execution, QueryEngine, ResultSink, ResultStoreError};
use tracing::{debug, info, warn};

use crate::protocol::{DATA, DONE, Done, FAILED, Failure, REQUEST, ROWS, read_frame, write_frame};
use crate::size::show_size;

/// How often a running query's cancel token is looked at.
const CANCEL_POLL: Duration = Duration::from_millis(20);
/// The size asked for the pipe a worker's results come through.
const PIPE_BYTES: usize = 1 << 20;
/// What Rust's default allocation error handler prints before it aborts the process.
const ALLOCATION_FAILED: &str = "memory allocation of";

/// The program and arguments that start a worker process: one that calls
/// [`crate::serve`] with the same engine configuration as the server's.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

/// Runs every query's [`QueryEngine::execute`] in a worker process of its own (one query at a
/// time per process; idle processes are kept for the next query), so that a query that needs
/// more memory than its budget, or that crashes its engine, ends alone: FAILED with a reason,
/// the server and the queries beside it untouched. It is only a [`QueryEngine`]: the catalog
/// and conversions of stored results are other ports, served in the server's process.
pub struct ProcessEngine {
    budget: Option<u64>,
    idle: Mutex<Vec<Worker>>,
    keep_idle: usize,
    spawner: Arc<Spawner>,
}

/// Starts worker processes from one thread that lives as long as the engine. A worker dies
/// with the thread that started it (`PR_SET_PDEATHSIG` follows the thread, not the process),
/// so neither a pool thread (Tokio ends idle ones) nor a passing one may start it.
struct Spawner {
    requests: Option<std::sync::mpsc::Sender<std::sync::mpsc::Sender<std::io::Result<Worker>>>>,
    /// The workers' executable, for messages.
    program: PathBuf,
}

impl Spawner {
    fn start(command: WorkerCommand) -> Self {
        let program = command.program.clone();
        let (requests, incoming) =
            std::sync::mpsc::channel::<std::sync::mpsc::Sender<std::io::Result<Worker>>>();
        let started = std::thread::Builder::new()
            .name("spool-workers".to_owned())
            .spawn(move || {
                for reply in incoming {
                    let _ = reply.send(Worker::spawn(&command));
                }
            });
        if let Err(e) = &started {
            warn!(error = %e, "the thread that starts worker processes did not start");
        }
        Self {
            requests: started.ok().map(|_| requests),
            program,
        }
    }

    /// A new worker. Blocking.
    fn spawn(&self) -> Result<Worker, EngineError> {
        let gone = || std::io::Error::other("the thread that starts worker processes is gone");
        let started = (|| {
            let (reply, answer) = std::sync::mpsc::channel();
            self.requests
                .as_ref()
                .ok_or_else(gone)?
                .send(reply)
                .map_err(|_| gone())?;
            answer.recv().map_err(|_| gone())?
        })();
        started.map_err(|e| {
            EngineError::Internal(format!(
                "starting a worker process ({}): {e}",
                self.program.display()
            ))
        })
    }
}

impl std::fmt::Debug for ProcessEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessEngine")
            .field("program", &self.spawner.program)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl ProcessEngine {
    /// Queries run in processes started by `command`, each under `budget` bytes of memory
    /// (`None`: no limit; `command` must pass the budget on to [`crate::WorkerLimits`]). At
    /// most `keep_idle` idle processes are kept (the number of queries that run at once).
    pub fn new(command: WorkerCommand, budget: Option<u64>, keep_idle: usize) -> Self {
        Self {
            spawner: Arc::new(Spawner::start(command)),
            budget,
            idle: Mutex::new(Vec::new()),
            keep_idle: keep_idle.max(1),
        }
    }

    /// The process ids of the idle worker processes.
    pub fn idle_workers(&self) -> Vec<u32> {
        self.idle().iter().map(|w| w.pid).collect()
    }

    /// Starts idle worker processes up to the number kept, so the first queries do not wait
    /// for one. Blocking (it forks); call it off the reactor.
    pub fn warm(&self) -> Result<(), EngineError> {
        let missing = self.keep_idle.saturating_sub(self.idle().len());
        for _ in 0..missing {
            if let Some(surplus) = self.put_back(self.spawner.spawn()?) {
                surplus.retire();
            }
        }
        Ok(())
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Worker>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle worker for `project` (unless `fresh`), or a new one. A worker serves the project
    /// of its first query only ([`crate::confine`]): an idle one bound to that project is taken
    /// first, then one not bound yet.
    async fn checkout(&self, fresh: bool, project: &ProjectName) -> Result<Worker, EngineError> {
        let idle = if fresh {
            None
        } else {
            let mut idle = self.idle();
            let found = idle
                .iter()
                .rposition(|w| w.project.as_ref() == Some(project))
                .or_else(|| idle.iter().rposition(|w| w.project.is_none()));
            found.map(|at| idle.remove(at))
        };
        if let Some(mut worker) = idle {
            worker.project = Some(project.clone());
            return Ok(worker);
        }
        let spawner = Arc::clone(&self.spawner);
        let mut worker = tokio::task::spawn_blocking(move || spawner.spawn())
            .await
            .map_err(|e| EngineError::Internal(format!("engine task failed: {e}")))??;
        worker.project = Some(project.clone());
        Ok(worker)
    }

    /// Keeps `worker` for the next query. When as many are idle as are kept, the one idle the
    /// longest is given back instead (the caller retires it, off the reactor: that waits for
    /// the process), so a server with many projects keeps the recent ones' workers.
    fn put_back(&self, worker: Worker) -> Option<Worker> {
        let mut idle = self.idle();
        idle.push(worker);
        (idle.len() > self.keep_idle).then(|| idle.remove(0))
    }
}

#[async_trait]
impl QueryEngine for ProcessEngine {
    async fn execute(
        &self,
        request: &QueryRequest,
        sink: Box<dyn ResultSink>,
        cancel: CancelToken,
    ) -> Result<Execution, EngineError> {
        let request_json = serde_json::to_vec(request)
            .map_err(|e| EngineError::Internal(format!("encoding the request: {e}")))?;
        let mut sink = sink;
        // A worker that died while idle (the kernel's out-of-memory killer, an operator) takes
        // no request: the query goes to a fresh one instead.
        for fresh in [false, true] {
            let worker = self.checkout(fresh, &request.project).await?;
            let pid = worker.pid;
            debug!(worker_pid = pid, "query sent to a worker process");
            // Stopping a query is killing its process: the engine inside needs no token, and
            // whatever it holds is returned to the machine at once.
            let ended = Arc::new(AtomicBool::new(false));
            let watcher = {
                let (cancel, ended) = (cancel.clone(), ended.clone());
                tokio::spawn(async move {
                    while !ended.load(Ordering::Acquire) {
                        if cancel.is_cancelled() {
                            kill(pid);
                            return;
                        }
                        tokio::time::sleep(CANCEL_POLL).await;
                    }
                })
            };
            let (budget, cancel, request) = (self.budget, cancel.clone(), request_json.clone());
            let joined = tokio::task::spawn_blocking(move || {
                run_on(worker, &request, sink, &cancel, budget)
            })
            .await;
            ended.store(true, Ordering::Release);
            watcher.abort();
            match joined.map_err(|e| EngineError::Internal(format!("engine task failed: {e}")))? {
                Ran::Ended(outcome, worker) => {
                    if let Some(surplus) = worker.and_then(|w| self.put_back(w)) {
                        tokio::task::spawn_blocking(move || surplus.retire());
                    }
                    return outcome;
                }
                Ran::NotTaken(back) => sink = back,
            }
        }
        Err(EngineError::Crashed(
            "a new worker process ended before it took the query; the server's log says why"
                .to_owned(),
        ))
    }
}

impl Drop for ProcessEngine {
    fn drop(&mut self) {
        for worker in self.idle().drain(..) {
            worker.retire();
        }
    }
}

/// How a query's run on a worker went.
enum Ran {
    /// The query ended, with the worker when it is fit for the next query.
    Ended(Result<Execution, EngineError>, Option<Worker>),
    /// The worker was gone before it took the request; the sink is untouched.
    NotTaken(Box<dyn ResultSink>),
}

/// Runs one query on `worker`, copying its result into `sink`.
fn run_on(
    mut worker: Worker,
    request: &[u8],
    sink: Box<dyn ResultSink>,
    cancel: &CancelToken,
    budget: Option<u64>,
) -> Ran {
    if let Err(e) =
        write_frame(&mut worker.stdin, REQUEST, request).and_then(|()| worker.stdin.flush())
    {
        warn!(worker_pid = worker.pid, error = %e, "an idle worker process was gone; the query goes to another");
        worker.retire();
        return Ran::NotTaken(sink);
    }
    let (outcome, worker) = stream(worker, sink, cancel, budget);
    Ran::Ended(outcome, worker)
}

/// Copies the result the worker sends into `sink` until the query ends.
fn stream(
    mut worker: Worker,
    mut sink: Box<dyn ResultSink>,
    cancel: &CancelToken,
    budget: Option<u64>,
) -> (Result<Execution, EngineError>, Option<Worker>) {
    let mut payload = Vec::new();
    loop {
        match read_frame(&mut worker.stdout, &mut payload) {
            Ok(Some(DATA)) => {
                if let Err(e) = sink.write_all(&payload) {
                    worker.retire();
                    return (Err(EngineError::Sink(ResultStoreError::Io(e))), None);
                }
            }
            Ok(Some(ROWS)) => {
                let rows = <[u8; 8]>::try_from(payload.as_slice()).map(u64::from_le_bytes);
                let Ok(rows) = rows else {
                    return (Err(worker.broken("a malformed row count")), None);
                };
                if let Err(e) = sink.add_rows(rows) {
                    worker.retire();
                    return (Err(EngineError::Sink(ResultStoreError::Io(e))), None);
                }
            }
            Ok(Some(DONE)) => {
                return match serde_json::from_slice::<Done>(&payload) {
                    Ok(done) => (
                        Ok(Execution {
                            sink,
                            rows: done.rows,
                            columns: done.columns,
                        }),
                        Some(worker),
                    ),
                    Err(_) => (Err(worker.broken("a malformed end of result")), None),
                };
            }
            Ok(Some(FAILED)) => {
                return match serde_json::from_slice::<Failure>(&payload) {
                    Ok(failure) => (Err(failure.into()), Some(worker)),
                    Err(_) => (Err(worker.broken("a malformed failure")), None),
                };
            }
            Ok(Some(other)) => {
                return (
                    Err(worker.broken(&format!("an unknown frame (tag {other})"))),
                    None,
                );
            }
            // The stream ended inside a query: the process is gone (killed, crashed, out of
            // memory).
            Ok(None) | Err(_) => return (Err(worker.ended(cancel, budget)), None),
        }
    }
}

fn kill(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        // It may be gone already; nothing to do then.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// A worker process and its pipes.
struct Worker {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    /// Read unbuffered: a frame's header is one small read, its payload one read straight
    /// into the payload's buffer. Through a `BufReader`, every result byte was copied twice in
    /// this process (pipe to buffer, buffer to payload).
    stdout: ChildStdout,
    /// Whether its stderr said an allocation failed.
    allocation_failed: Arc<AtomicBool>,
    /// The project it serves, once it was sent a query (it serves no other).
    project: Option<ProjectName>,
    stderr: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn spawn(command: &WorkerCommand) -> std::io::Result<Self> {
        let mut child = Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let pid = child.id();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("the worker's pipes were not set up"));
        };
        let allocation_failed = Arc::new(AtomicBool::new(false));
        // Its stderr goes to the server's log, line by line, and is watched for the one line
        // that explains an end (it may be followed by a long backtrace).
        let stderr = {
            let failed = allocation_failed.clone();
            std::thread::Builder::new()
                .name(format!("worker-{pid}-stderr"))
                .spawn(move || {
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        info!(worker_pid = pid, "{line}");
                        if line.contains(ALLOCATION_FAILED) {
                            failed.store(true, Ordering::Release);
                        }
                    }
                })?
        };
        info!(worker_pid = pid, "worker process started");
        // Linux's pipes hold 64 KiB: a 256 KiB data frame would wake each side four times.
        // At 1 MiB (the default `pipe-max-size`) a frame crosses in one write; a CSV export of
        // 640 MB took 8 % longer through the worker than in the server at 64 KiB.
        if let Err(e) = rustix::pipe::fcntl_setpipe_size(&stdout, PIPE_BYTES) {
            debug!(worker_pid = pid, error = %e, "the result pipe keeps its size");
        }
        Ok(Self {
            child,
            pid,
            stdin,
            stdout,
            allocation_failed,
            project: None,
            stderr: Some(stderr),
        })
    }

    /// Waits for the process to end and its stderr to be read.
    fn reap(&mut self) -> Option<ExitStatus> {
        let status = self.child.wait().ok();
        if let Some(reader) = self.stderr.take() {
            let _ = reader.join();
        }
        status
    }

    /// Ends the process (it is not fit for another query, or not needed).
    fn retire(mut self) {
        kill(self.pid);
        self.reap();
    }

    /// The process spoke out of protocol: it is killed, and the query fails.
    fn broken(mut self, what: &str) -> EngineError {
        warn!(
            worker_pid = self.pid,
            "a worker process sent {what}; it was stopped"
        );
        kill(self.pid);
        self.reap();
        EngineError::Internal(format!("the query's worker process sent {what}"))
    }

    /// The process ended inside a query: why, in the words the user will read.
    fn ended(mut self, cancel: &CancelToken, budget: Option<u64>) -> EngineError {
        // A process that closed its pipes but lingers is ended here.
        kill(self.pid);
        let status = self.reap();
        if cancel.is_cancelled() {
            return EngineError::Cancelled;
        }
        let out_of_memory = self.allocation_failed.load(Ordering::Acquire);
        let how = status.map_or_else(|| "ended".to_owned(), describe_status);
        warn!(worker_pid = self.pid, status = %how, out_of_memory, "a worker process ended inside a query");
        match (out_of_memory, budget) {
            (true, Some(budget)) => EngineError::OutOfMemory(format!(
                "the query needed more memory than its budget of {} (max_query_memory) and \
                 was stopped; the server and the other queries were not affected. Ask for \
                 less (filter or aggregate more, select fewer columns) or raise \
                 max_query_memory",
                show_size(budget)
            )),
            (true, None) => EngineError::OutOfMemory(
                "the query needed more memory than the machine could give and was stopped; \
                 the server and the other queries were not affected"
                    .to_owned(),
            ),
            (false, _) if how.contains("signal 9") => EngineError::Crashed(format!(
                "the query's engine process was killed ({how}; the machine may be out of \
                 memory); the server and the other queries were not affected"
            )),
            (false, _) => EngineError::Crashed(format!(
                "the query's engine process crashed ({how}); the server and the other \
                 queries were not affected"
            )),
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended".to_owned(),
    }
}
