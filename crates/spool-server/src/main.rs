//! `spool-server`: reads the settings, prepares the data directory, wires the sled job store,
//! the filesystem result store and the Polars engine into the core, and serves the HTTP API
//! until SIGTERM or Ctrl-C.
//!
//! This is the only crate that names concrete adapters.

mod config;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use spool_core::{Ports, Spool, SpoolConfig};
use spool_engine_polars::PolarsEngine;
use spool_http::{AppState, Authenticator, HttpLimits};
use spool_ports::{RandomIds, SystemClock};
use spool_results_fs::FsResultStore;
use spool_store_sled::SledJobStore;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::{Cli, Command, Settings};

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    let settings = Settings::resolve(&cli)?;
    if let Some(Command::User(command)) = cli.command.take() {
        let message = users::run(command, &settings.data_dir, settings.default_admin)?;
        println!("{message}");
        return Ok(());
    }
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .context("invalid log filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("spool")
        .build()?;
    runtime.block_on(serve(settings))
}

/// Creates the data layout on first start: the `DEFAULT` project and the `ssb` sample.
fn prepare_data_dir(settings: &Settings) -> anyhow::Result<()> {
    let projects = settings.data_dir.join("projects");
    if !projects.exists() {
        std::fs::create_dir_all(projects.join("DEFAULT"))?;
        if settings.sample_orders > 0 {
            info!(
                orders = settings.sample_orders,
                "creating the ssb sample project"
            );
            spool_engine_polars::sample::write_sample_project(
                &projects.join("ssb"),
                settings.sample_orders,
            )
            .context("creating the ssb sample project")?;
        }
    }
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
    prepare_data_dir(&settings)?;
    let users_file = users::path_in(&settings.data_dir);
    let users = users::load_or_init(&users_file, settings.default_admin)?;

    let (jobs, recovered) = SledJobStore::open(&settings.data_dir.join("jobs"))
        .context("opening the job store (is another spool-server using this data dir?)")?;
    if !recovered.is_empty() {
        info!(
            count = recovered.len(),
            "queries interrupted by the last stop will run again"
        );
    }
    let results = FsResultStore::open(&settings.data_dir.join("results"))
        .context("opening the result store")?;
    let engine = PolarsEngine::new(settings.data_dir.join("projects"));
    let ports = Ports {
        jobs: Arc::new(jobs),
        results: Arc::new(results),
        engine: Arc::new(engine),
        clock: Arc::new(SystemClock),
        ids: Arc::new(RandomIds),
    };
    let mut config = SpoolConfig::with_workers(settings.workers);
    config.query_timeout = settings.query_timeout;
    config.max_result_rows = settings.max_result_rows;
    config.max_result_bytes = settings.max_result_bytes;
    config.max_in_flight_per_user = settings.max_in_flight_per_user;
    let spool = Spool::new(ports, config);
    let workers = spool.start();

    let auth = Arc::new(Authenticator::new(users));
    tokio::spawn(users::watch(users_file, Arc::clone(&auth)));
    let state = AppState {
        spool,
        auth,
        limits: HttpLimits {
            max_body_bytes: settings.max_body_bytes,
        },
    };
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
