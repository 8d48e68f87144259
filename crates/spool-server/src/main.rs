//! `spool-server`: reads the settings, prepares the data directory, wires the job store (sled,
//! or PostgreSQL shared by several processes), the result store (local files, or an S3
//! bucket), the user store and the Polars engine into the core, and serves the HTTP API until
//! SIGTERM or Ctrl-C.
//!
//! This is the only crate that names concrete adapters.

mod config;
mod engines;
mod users;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use clap::Parser;
use spool_core::{Ports, Spool, SpoolConfig};
use spool_engine_polars::PolarsEngine;
use spool_http::{AppState, Authenticator, HttpLimits};
use spool_ports::{JobStore, RandomIds, ResultStore, SystemClock, UserStore};
use spool_results_fs::FsResultStore;
use spool_results_s3::S3ResultStore;
use spool_store_sled::SledJobStore;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::{Cli, Command, JobStoreSetting, ResultStoreSetting, Settings};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if let Some(Command::EngineWorker(args)) = &cli.command {
        return engine_worker(args);
    }
    let settings = Settings::resolve(&cli)?;
    // Before anything reads or writes the data dir: a newer release's is left alone.
    check_data_format(&settings.data_dir)?;
    match cli.command.take() {
        Some(Command::User(command)) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let message = runtime.block_on(async {
                let store = open_users(&settings).await?;
                users::run(command, store.as_ref(), settings.default_admin).await
            })?;
            println!("{message}");
            return Ok(());
        }
        Some(Command::GenSsb(args)) => return gen_ssb(&args),
        Some(Command::EngineWorker(_)) => unreachable!("served above"),
        Some(Command::Query(args)) => {
            // Warnings by default; `RUST_LOG=spool_engine_polars=debug` shows the SQL Polars runs.
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            return runtime.block_on(query(&args, &settings));
        }
        None => {}
    }
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .context("invalid log filter")?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if settings.log_json {
        // Every enclosing span, so a line inside a request carries its `request_id`.
        logs.json()
            .with_current_span(false)
            .with_span_list(true)
            .init();
    } else {
        logs.init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("spool")
        .build()?;
    runtime.block_on(serve(settings))
}

/// `spool-server gen-ssb`: writes an SSB project folder and reports what it wrote.
fn gen_ssb(args: &config::GenSsb) -> anyhow::Result<()> {
    let ssb = spool_ssb::Ssb::with_seed(args.sf, args.seed)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let started = std::time::Instant::now();
    let written = spool_engine_polars::sample::write_ssb_project(&args.out, &ssb, threads)
        .with_context(|| format!("writing SSB data to {}", args.out.display()))?;
    for (table, rows, bytes) in &written.tables {
        println!("{table:<10} {rows:>12} rows {bytes:>14} bytes");
    }
    println!(
        "SF {} written to {} in {:.2} s",
        args.sf,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `spool-server query`: runs SQL in this process through the same engine and result store
/// as the server, without HTTP or the job store, and reports each run's time on stderr.
async fn query(args: &config::QueryArgs, settings: &Settings) -> anyhow::Result<()> {
    use spool_ports::{CancelToken, QueryEngine, ResultStore};
    let mut settings = settings.clone();
    for lever in &args.levers_off {
        match lever.as_str() {
            "key-filters" => settings.planner.key_filters = false,
            "join-order" => settings.planner.join_order = false,
            "folds" => settings.planner.folds = false,
            "all" => settings.planner = spool_engine_polars::PlannerOptions::none(),
            other => {
                anyhow::bail!(
                    "--levers-off takes key-filters, join-order, folds or all, not {other:?}"
                )
            }
        }
    }
    let settings = &settings;
    let (engine, _) = engines(settings, Isolation::InProcess)?;
    let scratch = std::env::temp_dir().join(format!("spool-query-{}", std::process::id()));
    let store = FsResultStore::open(&scratch)
        .context("opening a scratch result store")?
        .with_direct_io(settings.direct_io);
    let request =
        spool_domain::QueryRequest::new(args.sql.clone(), Some(&args.project), None, None)?;
    let mut last = None;
    for run in 1..=args.repeat.max(1) {
        let id = spool_domain::ResultKey::new(spool_domain::QueryId::new_random(), 1);
        let started = std::time::Instant::now();
        let sink = store.create(id).await?;
        let execution = engine
            .execute(&request, sink, CancelToken::new())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let rows = execution.rows;
        let bytes = execution.sink.commit().await?;
        eprintln!(
            "run {run}: {rows} rows, {bytes} bytes, {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        if let Some(previous) = last.replace(id) {
            store.delete(previous).await?;
        }
    }
    if let (Some(out), Some(id)) = (&args.out, last) {
        let from = store.path_of(id);
        if out.as_os_str() == "-" {
            std::io::copy(
                &mut std::fs::File::open(&from)?,
                &mut std::io::stdout().lock(),
            )?;
        } else {
            std::fs::copy(&from, out).with_context(|| format!("writing {}", out.display()))?;
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Creates the data layout on first start: the `DEFAULT` project and the `ssb` sample.
///
/// The layout is built in a hidden folder of this process's own and renamed into place, so a
/// start that crashes half-way leaves nothing that looks finished, and processes sharing the
/// data dir that start together each build one and the first rename wins (the others find
/// `projects/` there and drop theirs).
fn prepare_data_dir(settings: &Settings) -> anyhow::Result<()> {
    let projects = settings.data_dir.join("projects");
    if projects.exists() {
        return Ok(());
    }
    remove_stale_staging(&settings.data_dir);
    let staging = settings.data_dir.join(format!(
        ".projects.partial.{}.{:08x}",
        std::process::id(),
        rand_u32()
    ));
    std::fs::create_dir_all(staging.join("DEFAULT"))?;
    if let Some(sf) = settings.sample_sf {
        let ssb = spool_ssb::Ssb::new(sf).context("sample_sf")?;
        let threads = settings.workers.clamp(1, 4);
        info!(sf, "creating the ssb sample project");
        spool_engine_polars::sample::write_ssb_project(&staging.join("ssb"), &ssb, threads)
            .context("creating the ssb sample project")?;
    }
    match std::fs::rename(&staging, &projects) {
        Ok(()) => Ok(()),
        // Another process sharing the data dir finished first: its layout is as good.
        Err(_) if projects.exists() => {
            std::fs::remove_dir_all(&staging)?;
            info!("another process created the projects first");
            Ok(())
        }
        Err(e) => Err(e).context("moving the projects into place"),
    }
}

/// Removes staging folders a crashed first start left behind (older than an hour, so that a
/// process building one right now keeps it).
fn remove_stale_staging(data_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(3600)));
        if stale
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with(".projects.partial")
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// The user store the settings name: PostgreSQL's when the job store is there.
async fn open_users(settings: &Settings) -> anyhow::Result<Arc<dyn UserStore>> {
    Ok(match &settings.job_store {
        JobStoreSetting::Sled => {
            std::fs::create_dir_all(&settings.data_dir)
                .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
            Arc::new(users::FileUserStore::in_dir(&settings.data_dir))
        }
        JobStoreSetting::Postgres(url) => Arc::new(
            spool_store_postgres::connect(url)
                .await
                .context("opening the job store")?
                .user_store(),
        ),
    })
}

/// The stores the settings name, each checked to answer before the server starts.
struct Backends {
    jobs: Arc<dyn JobStore>,
    results: Arc<dyn ResultStore>,
    users: Arc<dyn UserStore>,
}

async fn open_backends(settings: &Settings) -> anyhow::Result<Backends> {
    let shared = settings.job_store != JobStoreSetting::Sled;
    let (jobs, users): (Arc<dyn JobStore>, Arc<dyn UserStore>) = match &settings.job_store {
        JobStoreSetting::Sled => {
            let (jobs, recovered) = SledJobStore::open(&settings.data_dir.join("jobs")).context(
                "opening the job store (is another spool-server using this data dir? several \
                 processes need a shared job store: job_store = \"postgres://...\")",
            )?;
            if !recovered.is_empty() {
                info!(
                    count = recovered.len(),
                    "queries interrupted by the last stop will run again"
                );
            }
            (
                Arc::new(jobs),
                Arc::new(users::FileUserStore::in_dir(&settings.data_dir)),
            )
        }
        JobStoreSetting::Postgres(url) => {
            let db = spool_store_postgres::connect(url)
                .await
                .context("opening the job store")?;
            info!(url = %spool_store_postgres::redact(url), "job store: PostgreSQL");
            (Arc::new(db.job_store()), Arc::new(db.user_store()))
        }
    };
    let results: Arc<dyn ResultStore> = match &settings.result_store {
        ResultStoreSetting::DataDir => {
            let root = settings.data_dir.join("results");
            let store = if shared {
                FsResultStore::open_shared(&root)
            } else {
                FsResultStore::open(&root)
            };
            Arc::new(
                store
                    .context("opening the result store")?
                    .with_direct_io(settings.direct_io),
            )
        }
        ResultStoreSetting::S3(config) => {
            let store = S3ResultStore::open(config)
                .await
                .context("opening the result store")?;
            info!(url = %config.url(), "result store: S3");
            Arc::new(store)
        }
    };
    Ok(Backends {
        jobs,
        results,
        users,
    })
}

/// Where Polars queries run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// In worker processes when `query_processes` says so (the server).
    AsConfigured,
    /// In this process (`spool-server query`, which is one query already).
    InProcess,
}

/// `spool-server engine-worker`: a worker process the server started; serves the queries the
/// server sends on stdin until stdin ends. Its log lines go to stderr, which the server reads
/// into its own log.
fn engine_worker(args: &config::EngineWorkerArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .init();
    // A folder of its own: the only one it may write once it confines itself to its project.
    let scratch = spool_engine_process::own_scratch(&args.scratch)
        .with_context(|| format!("making a scratch folder in {}", args.scratch.display()))?;
    let polars = PolarsEngine::new(&args.projects)
        .with_scratch(&scratch)
        .with_polars_threads_lowered();
    let limits = spool_engine_process::WorkerLimits {
        memory: args.memory_limit,
        parent: args.parent,
        confine: Some(spool_engine_process::Confinement {
            projects: args.projects.clone(),
            scratch: scratch.clone(),
        }),
    };
    let served = spool_engine_process::serve(Arc::new(polars), limits).context("serving queries");
    // Its contents; the (empty) folder itself goes when the next worker starts.
    let _ = std::fs::remove_dir_all(&scratch);
    served
}

/// The engines of the server's projects: Polars (in worker processes when configured), and
/// Spark when `spark_remote` is set (a Spark query's memory is the cluster's business).
/// The engines a query runs on, and the Polars engine on its own (it converts stored results).
fn engines(
    settings: &Settings,
    isolation: Isolation,
) -> anyhow::Result<(engines::Engines, Arc<PolarsEngine>)> {
    let projects = settings.data_dir.join("projects");
    let scratch = settings.data_dir.join("scratch");
    let local = Arc::new(
        PolarsEngine::new(&projects)
            .with_scratch(&scratch)
            .with_planner_options(settings.planner)
            .with_polars_threads_lowered(),
    );
    let polars: Arc<dyn spool_ports::QueryEngine> = if settings.query_processes
        && isolation == Isolation::AsConfigured
    {
        let program = std::env::current_exe().context("finding the server's executable")?;
        let mut args: Vec<std::ffi::OsString> = vec![
            "engine-worker".into(),
            "--projects".into(),
            projects.clone().into(),
            "--scratch".into(),
            scratch.clone().into(),
            "--parent".into(),
            std::process::id().to_string().into(),
        ];
        if let Some(bytes) = settings.max_query_memory {
            args.extend(["--memory-limit".into(), bytes.to_string().into()]);
        }
        let engine = Arc::new(spool_engine_process::ProcessEngine::new(
            spool_engine_process::WorkerCommand { program, args },
            settings.max_query_memory,
            settings.workers,
        ));
        info!(
            budget = settings
                .max_query_memory
                .map_or_else(|| "none".to_owned(), spool_engine_process::show_size),
            "Polars queries run in worker processes"
        );
        // The first queries need not wait for a process to start.
        let warm = Arc::clone(&engine);
        std::thread::spawn(move || {
            if let Err(e) = warm.warm() {
                warn!(error = %e, "starting worker processes failed; each query will try again");
            }
        });
        engine
    } else {
        local.clone()
    };
    let spark = match &settings.spark_remote {
        Some(remote) => {
            info!(remote, "Spark projects run on this Spark Connect server");
            Some(
                spool_engine_spark::SparkEngine::new(&projects, remote)
                    .map_err(anyhow::Error::msg)?
                    .with_scratch(&scratch),
            )
        }
        None => None,
    };
    Ok((engines::Engines::new(projects, polars, spark), local))
}

/// The file that says which layout format a data dir is in.
const FORMAT_FILE: &str = "FORMAT";

/// Refuses a data dir written by a newer release (its `FORMAT` says a newer format than
/// [`spool_domain::DATA_FORMAT`]); nothing is changed. A dir without the file is older than
/// formats (format 1) or new.
fn check_data_format(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let path = data_dir.join(FORMAT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let found = text
        .trim()
        .strip_prefix("spool data format ")
        .and_then(|n| n.trim().parse::<u32>().ok())
        .with_context(|| {
            format!(
                "{} does not say a format (expected \"spool data format <n>\", found {:?})",
                path.display(),
                text.chars().take(60).collect::<String>()
            )
        })?;
    spool_domain::check_format(
        || format!("data directory {}", data_dir.display()),
        found,
        spool_domain::DATA_FORMAT,
    )?;
    Ok(())
}

/// Marks the data dir with this release's layout format, if it has no mark yet (written to a
/// temporary file and renamed, so processes starting together agree).
fn mark_data_format(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let path = data_dir.join(FORMAT_FILE);
    if path.exists() {
        return Ok(());
    }
    let tmp = data_dir.join(format!(".{FORMAT_FILE}.{}", std::process::id()));
    std::fs::write(
        &tmp,
        format!("spool data format {}\n", spool_domain::DATA_FORMAT),
    )
    .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
    mark_data_format(&settings.data_dir)?;
    prepare_data_dir(&settings)?;
    let backends = open_backends(&settings).await?;
    let users = users::load_or_init(backends.users.as_ref(), settings.default_admin).await?;
    let (engine, polars) = engines(&settings, Isolation::AsConfigured)?;
    let ports = Ports {
        jobs: backends.jobs,
        results: backends.results,
        engine: Arc::new(engine),
        catalog: Arc::new(spool_catalog::FolderCatalog::new(
            settings.data_dir.join("projects"),
        )),
        transcoder: polars,
        clock: Arc::new(SystemClock),
        ids: Arc::new(RandomIds),
    };
    let mut config = SpoolConfig::with_workers(settings.workers);
    config.lease = settings.lease;
    config.progress_interval = settings.progress;
    config.query_timeout = settings.query_timeout;
    config.max_result_rows = settings.max_result_rows;
    config.max_result_bytes = settings.max_result_bytes;
    config.max_in_flight_per_user = settings.max_in_flight_per_user;
    config.result_retention = settings.result_retention;
    let spool = Spool::new(ports, config);
    let workers = spool.start();

    let auth = Arc::new(Authenticator::new(users));
    tokio::spawn(users::watch(backends.users, Arc::clone(&auth)));
    let state = AppState {
        spool,
        auth,
        limits: HttpLimits {
            max_body_bytes: settings.max_body_bytes,
        },
        time_zone: settings.time_zone,
        callbacks: spool_http::CallbackPolicy {
            allow: settings.callback_allow.clone(),
        },
        proxies: settings.trusted_proxies.clone(),
        sync: settings.sync,
        http_metrics: Default::default(),
        console: settings.console,
    };
    if let Some(secret) = settings.callback_secret.clone() {
        let sender = Arc::new(webhooks::HttpSender::new()?);
        tokio::spawn(spool_http::deliver_callbacks(
            state.spool.clone(),
            sender,
            secret,
        ));
    }
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .with_context(|| format!("binding {}", settings.bind))?;
    let addr = listener.local_addr()?;
    info!(%addr, workers = settings.workers, data_dir = %settings.data_dir.display(), "spool is ready");
    // One line on stdout that people and scripts (the e2e tests) can read.
    println!("spool listening on http://{addr}");
    println!(
        "try: curl -X POST -H \"Authorization: Basic QURNSU46S1lMSU4=\" -H \"Content-Type: application/json\" -d '{{ \"sql\":\"select * from p_lineorder limit 100\", \"project\":\"ssb\" }}' http://{addr}/kylin/api/async_query"
    );

    // No Nagle: a streamed response goes out as headers, then body chunks, and a small last
    // write would otherwise wait for the client's delayed ACK (40 ms on Linux) on every
    // download of a small result.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(error = %e, "setting TCP_NODELAY failed");
        }
    });
    if let Some(bind) = settings.metrics_bind {
        let metrics = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding metrics_bind {bind}"))?;
        let metrics_addr = metrics.local_addr()?;
        info!(addr = %metrics_addr, "metrics served without credentials");
        println!("spool metrics on http://{metrics_addr}/metrics");
        let app = spool_http::metrics_router(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, app).await {
                error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    let app = spool_http::router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    info!("http server stopped; stopping workers");
    if tokio::time::timeout(Duration::from_secs(30), workers.shutdown())
        .await
        .is_err()
    {
        warn!(
            "workers did not stop within 30 s; exiting anyway (their queries run again on restart)"
        );
    }
    info!("spool stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("Ctrl-C received; shutting down"),
        _ = terminate => info!("SIGTERM received; shutting down"),
    }
}
