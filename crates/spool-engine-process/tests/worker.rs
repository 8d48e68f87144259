//! The process engine against real worker processes: this test binary, re-run with
//! `--spool-test-worker`, is the worker (it serves the scripted engine, plus `hog:<bytes>`,
//! which allocates and touches that much memory, `abort`, which crashes the process, and
//! `read:<path>` / `write:<path>`, which open a file as a sandbox bug would let SQL do).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use spool_domain::{QueryId, QueryRequest, ResultKey};
use spool_engine_process::{Confinement, ProcessEngine, WorkerCommand, WorkerLimits, serve};
use spool_ports::testing::{MemoryResultStore, ScriptedEngine, check_query_engine};
use spool_ports::{
    CancelReason, CancelToken, EngineError, Execution, QueryEngine, ResultSink, ResultStore,
};

/// The argument that makes this binary the worker.
const WORKER: &str = "--spool-test-worker";
/// The arguments that confine it, followed by the projects folder and its scratch folder.
const CONFINE: &str = "--confine";
const BUDGET: u64 = 96 << 20;

/// The scripted engine, and two ways to die.
struct Hostile;

#[async_trait]
impl QueryEngine for Hostile {
    async fn execute(
        &self,
        request: &QueryRequest,
        sink: Box<dyn ResultSink>,
        cancel: CancelToken,
    ) -> Result<Execution, EngineError> {
        if let Some(bytes) = request.sql.strip_prefix("hog:") {
            let bytes: usize = bytes.parse().expect("bytes");
            let mut hog = vec![0u8; bytes];
            for page in hog.chunks_mut(4096) {
                page[0] = 1;
            }
            let sum: u64 = hog.iter().step_by(4096).map(|&b| u64::from(b)).sum();
            let request =
                QueryRequest::new(format!("ok:{sum}\n"), Some("ssb"), None, None).expect("request");
            return ScriptedEngine.execute(&request, sink, cancel).await;
        }
        if request.sql == "abort" {
            std::process::abort();
        }
        let opened = match (
            request.sql.strip_prefix("read:"),
            request.sql.strip_prefix("write:"),
        ) {
            (Some(path), _) => Some(std::fs::read_to_string(path)),
            (_, Some(path)) => {
                Some(std::fs::write(path, "written\n").map(|()| "written\n".to_owned()))
            }
            (None, None) => None,
        };
        if let Some(opened) = opened {
            let text = opened.map_err(|e| EngineError::Execution(format!("open failed: {e}")))?;
            let request = QueryRequest::new(
                format!("ok:{text}"),
                Some(request.project.as_str()),
                None,
                None,
            )
            .expect("request");
            return ScriptedEngine.execute(&request, sink, cancel).await;
        }
        ScriptedEngine.execute(request, sink, cancel).await
    }
}

/// A test's body, run against the shared rig.
type Test = fn(&Rig) -> futures::future::BoxFuture<'_, ()>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == WORKER) {
        // As the server's workers: killed with the thread of this process that started them.
        let parent = args.get(at + 1).and_then(|p| p.parse().ok());
        // `--confine <projects> <scratch>`: confined as the server's workers are.
        let confine = args
            .iter()
            .position(|arg| arg == CONFINE)
            .map(|at| Confinement {
                projects: args[at + 1].clone().into(),
                scratch: args[at + 2].clone().into(),
            });
        let limits = WorkerLimits {
            memory: Some(BUDGET),
            parent,
            confine,
        };
        serve(Arc::new(Hostile), limits).expect("serving");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tests: [(&str, Test); 9] = [
        ("the_process_engine_keeps_the_engine_contract", |rig| {
            Box::pin(keeps_the_contract(rig))
        }),
        ("workers_outlive_the_threads_that_asked_for_them", |rig| {
            Box::pin(workers_outlive_their_askers(rig))
        }),
        ("results_stream_whole_and_workers_are_reused", |rig| {
            Box::pin(results_stream_whole(rig))
        }),
        ("errors_cross_the_pipe_as_they_were", |rig| {
            Box::pin(errors_cross_the_pipe(rig))
        }),
        ("a_query_over_the_budget_ends_out_of_memory", |rig| {
            Box::pin(over_the_budget(rig))
        }),
        ("a_crash_fails_the_query_and_the_next_runs", |rig| {
            Box::pin(a_crash(rig))
        }),
        ("cancelling_kills_the_process_at_once", |rig| {
            Box::pin(cancelling(rig))
        }),
        ("a_sink_that_refuses_stops_the_query", |rig| {
            Box::pin(a_refusing_sink(rig))
        }),
        (
            "a_confined_worker_opens_only_its_project_and_scratch",
            |_| Box::pin(confined()),
        ),
    ];
    let rig = Rig::new();
    for (name, test) in tests {
        let started = Instant::now();
        runtime.block_on(test(&rig));
        println!("test {name} ... ok ({} ms)", started.elapsed().as_millis());
    }
    println!("test result: ok. {} passed", tests.len());
}

struct Rig {
    engine: ProcessEngine,
    store: MemoryResultStore,
}

impl Rig {
    fn new_engine() -> ProcessEngine {
        let command = WorkerCommand {
            program: std::env::current_exe().expect("exe"),
            args: vec![WORKER.into(), std::process::id().to_string().into()],
        };
        ProcessEngine::new(command, Some(BUDGET), 2)
    }

    fn new() -> Self {
        let engine = Self::new_engine();
        engine.warm().expect("warm");
        Self {
            engine,
            store: MemoryResultStore::default(),
        }
    }

    async fn run(&self, sql: &str, cancel: CancelToken) -> Result<(Vec<u8>, u64), EngineError> {
        self.run_in("ssb", sql, cancel).await
    }

    async fn run_in(
        &self,
        project: &str,
        sql: &str,
        cancel: CancelToken,
    ) -> Result<(Vec<u8>, u64), EngineError> {
        let request =
            QueryRequest::new(sql.to_owned(), Some(project), None, None).expect("request");
        let key = ResultKey::new(QueryId::new_random(), 1);
        let sink = self.store.create(key).await.expect("sink");
        let execution = self.engine.execute(&request, sink, cancel).await?;
        let rows = execution.rows;
        execution.sink.commit().await.expect("commit");
        let mut stored = self.store.open(key).await.expect("open").expect("stored");
        let mut bytes = Vec::new();
        while let Some(chunk) = stored.body.next().await {
            bytes.extend_from_slice(&chunk.expect("chunk"));
        }
        Ok((bytes, rows))
    }
}

async fn keeps_the_contract(rig: &Rig) {
    check_query_engine(&rig.engine, &ScriptedEngine::contract()).await;
}

/// Whether `pid` is a live process (not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

async fn workers_outlive_their_askers(_: &Rig) {
    // A fresh engine warmed from a thread that ends at once, as a pool thread does.
    let engine = Rig::new_engine();
    std::thread::scope(|s| {
        s.spawn(|| engine.warm().expect("warm"));
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = engine.idle_workers();
    assert_eq!(idle.len(), 2, "idle workers");
    for pid in idle {
        assert!(
            alive(pid),
            "worker {pid} died with the thread that asked for it"
        );
        // And the kernel's out-of-memory killer would take it before the server.
        let score = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).expect("score");
        assert_eq!(score.trim(), "500", "worker {pid}'s oom_score_adj");
    }
}

async fn results_stream_whole(rig: &Rig) {
    // Large enough for many data frames.
    let csv: String = (0..200_000).map(|i| format!("{i},row {i}\n")).collect();
    for _ in 0..4 {
        let (bytes, rows) = rig
            .run(&format!("ok:{csv}"), CancelToken::new())
            .await
            .expect("ok");
        assert_eq!(bytes, csv.as_bytes());
        assert_eq!(rows, 200_000);
    }
}

async fn errors_cross_the_pipe(rig: &Rig) {
    let err = rig.run("fail:no such table", CancelToken::new()).await;
    assert!(
        matches!(&err, Err(EngineError::InvalidQuery(m)) if m == "no such table"),
        "{err:?}"
    );
    let err = rig.run("down:cluster gone", CancelToken::new()).await;
    assert!(
        matches!(&err, Err(EngineError::Unavailable(m)) if m == "cluster gone"),
        "{err:?}"
    );
    // The worker that answered them serves the next query.
    assert_eq!(
        rig.run("ok:1\n", CancelToken::new()).await.expect("ok").0,
        b"1\n"
    );
}

async fn over_the_budget(rig: &Rig) {
    // Within the budget: fine.
    let (bytes, _) = rig
        .run(&format!("hog:{}", 32 << 20), CancelToken::new())
        .await
        .expect("within the budget");
    assert_eq!(bytes, format!("{}\n", (32 << 20) / 4096).as_bytes());
    let err = rig
        .run(&format!("hog:{}", 512 << 20), CancelToken::new())
        .await;
    match err {
        Err(EngineError::OutOfMemory(m)) => {
            assert!(
                m.contains("96 MiB") && m.contains("max_query_memory"),
                "{m}"
            );
        }
        other => panic!("expected out of memory, got {other:?}"),
    }
    assert_eq!(
        rig.run("ok:2\n", CancelToken::new()).await.expect("ok").0,
        b"2\n"
    );
}

async fn a_crash(rig: &Rig) {
    match rig.run("abort", CancelToken::new()).await {
        Err(EngineError::Crashed(m)) => assert!(m.contains("signal 6"), "{m}"),
        other => panic!("expected a crash, got {other:?}"),
    }
    assert_eq!(
        rig.run("ok:3\n", CancelToken::new()).await.expect("ok").0,
        b"3\n"
    );
}

async fn cancelling(rig: &Rig) {
    let cancel = CancelToken::new();
    let later = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        later.cancel(CancelReason::Stopped);
    });
    let started = Instant::now();
    // Writes a row, then waits for a token the worker never sees set: only the kill ends it.
    let err = rig.run("wait", cancel).await;
    assert!(matches!(err, Err(EngineError::Cancelled)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        rig.run("ok:4\n", CancelToken::new()).await.expect("ok").0,
        b"4\n"
    );
}

/// A sink that takes one row, then refuses (as the core's row cap does).
struct OneRow(Vec<u8>, u64);

impl std::io::Write for OneRow {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl ResultSink for OneRow {
    async fn commit(self: Box<Self>) -> Result<u64, spool_ports::ResultStoreError> {
        Ok(self.0.len() as u64)
    }
    async fn abort(self: Box<Self>) -> Result<(), spool_ports::ResultStoreError> {
        Ok(())
    }
    fn add_rows(&mut self, rows: u64) -> std::io::Result<()> {
        self.1 += rows;
        if self.1 > 1 {
            return Err(std::io::Error::other("too many rows"));
        }
        Ok(())
    }
}

async fn a_refusing_sink(rig: &Rig) {
    // `wait` writes and reports one row, then waits to be cancelled; this sink holds a row
    // already, so it refuses that one, and the query must end there, not wait forever.
    let request = QueryRequest::new("wait".into(), Some("ssb"), None, None).expect("request");
    let sink = Box::new(OneRow(Vec::new(), 1));
    let err = rig.engine.execute(&request, sink, CancelToken::new()).await;
    assert!(matches!(err, Err(EngineError::Sink(_))), "{err:?}");
    assert_eq!(
        rig.run("ok:5\n", CancelToken::new()).await.expect("ok").0,
        b"5\n"
    );
}

/// Workers confined as the server's are: the engine inside (standing in for a sandbox bug that
/// lets SQL name any path) reads its own project and writes its own scratch folder, and nothing
/// else: not another project, not the folder beside them, not a system secret. A worker of
/// another project is another process, confined to that project.
async fn confined() {
    let dir = tempfile::tempdir().expect("temp dir");
    let projects = dir.path().join("projects");
    for (project, file) in [("ssb", "mine.csv"), ("other", "theirs.csv")] {
        std::fs::create_dir_all(projects.join(project)).expect("project");
        std::fs::write(projects.join(project).join(file), format!("{project}\n")).expect("file");
    }
    let results = dir.path().join("results");
    std::fs::create_dir_all(&results).expect("results");
    std::fs::write(results.join("someone-elses.csv"), "secret\n").expect("result");
    let scratch = spool_engine_process::own_scratch(&dir.path().join("scratch")).expect("scratch");
    let command = WorkerCommand {
        program: std::env::current_exe().expect("exe"),
        args: vec![
            WORKER.into(),
            std::process::id().to_string().into(),
            CONFINE.into(),
            projects.clone().into(),
            scratch.clone().into(),
        ],
    };
    let rig = Rig {
        engine: ProcessEngine::new(command, Some(BUDGET), 2),
        store: MemoryResultStore::default(),
    };
    let path = |p: &std::path::Path| p.display().to_string();
    let mine = projects.join("ssb").join("mine.csv");
    let theirs = projects.join("other").join("theirs.csv");
    let ran = |project: &'static str, sql: String| {
        let rig = &rig;
        async move { rig.run_in(project, &sql, CancelToken::new()).await }
    };
    // The project's own file; the project named in another case finds the same folder.
    assert_eq!(
        ran("ssb", format!("read:{}", path(&mine)))
            .await
            .expect("own")
            .0,
        b"ssb\n"
    );
    assert_eq!(
        ran("SSB", format!("read:{}", path(&mine)))
            .await
            .expect("own")
            .0,
        b"ssb\n"
    );
    let own_scratch = scratch.join("spill.tmp");
    assert_eq!(
        ran("ssb", format!("write:{}", path(&own_scratch)))
            .await
            .expect("scratch")
            .0,
        b"written\n"
    );
    for refused in [
        format!("read:{}", path(&theirs)),
        format!("read:{}", path(&results.join("someone-elses.csv"))),
        "read:/etc/passwd".to_owned(),
        format!(
            "read:{}",
            path(
                &projects
                    .join("ssb")
                    .join("..")
                    .join("other")
                    .join("theirs.csv")
            )
        ),
        format!("write:{}", path(&projects.join("ssb").join("new.csv"))),
        format!(
            "write:{}",
            path(&dir.path().join("scratch").join("beside.tmp"))
        ),
        // The server's environment (secrets may live there) is not the worker's to read.
        "read:/proc/self/environ".to_owned(),
    ] {
        match ran("ssb", refused.clone()).await {
            Err(EngineError::Execution(m)) => {
                assert!(m.contains("Permission denied"), "{refused}: {m}");
            }
            other => panic!("{refused}: expected a refusal, got {other:?}"),
        }
    }
    // The other project's worker reads its own file, and not the first project's.
    assert_eq!(
        ran("other", format!("read:{}", path(&theirs)))
            .await
            .expect("theirs")
            .0,
        b"other\n"
    );
    assert!(
        matches!(
            ran("other", format!("read:{}", path(&mine))).await,
            Err(EngineError::Execution(_))
        ),
        "the other project's worker read the first project's file"
    );
    assert!(!projects.join("ssb").join("new.csv").exists());
}
