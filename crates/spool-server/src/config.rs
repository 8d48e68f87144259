//! Server settings from flags, `SPOOL_*` environment variables and a TOML file, in that order
//! of precedence, over built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;

/// Default listen address: Kylin's port, loopback only.
pub const DEFAULT_BIND: &str = "127.0.0.1:7070";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./spool-data";
/// Default limit on a query's running time: one hour.
pub const DEFAULT_QUERY_TIMEOUT_SECS: u64 = 3600;
/// Default cap on a result file: 100 GiB, so one query cannot fill the disk unnoticed.
pub const DEFAULT_MAX_RESULT_BYTES: u64 = 100 * 1024 * 1024 * 1024;
/// Default cap on one user's queued or running queries.
pub const DEFAULT_MAX_IN_FLIGHT_PER_USER: usize = 64;
/// Days finished queries and their results are kept, as in Kylin.
pub const DEFAULT_RESULT_RETAIN_DAYS: u64 = 7;
/// Default SSB scale factor of the `ssb` sample made on first start: 60,000 LINEORDER rows,
/// generated in well under a second.
pub const DEFAULT_SAMPLE_SF: f64 = 0.01;
/// Default lease on a running query: a worker renews it every third of it, and a query whose
/// process died is taken over by another process once it lapses.
pub const DEFAULT_LEASE_SECS: u64 = 30;
/// How often a running query's progress is recorded, by default.
pub const DEFAULT_PROGRESS_SECS: u64 = 1;
/// The smallest memory budget accepted: a worker process with the engine loaded maps about
/// 100 MiB before it reads a row.
pub const MIN_QUERY_MEMORY: u64 = 192 << 20;

/// The default memory budget of a query: half the machine's memory (`MemTotal`), so that a
/// runaway query fails before the kernel's out-of-memory killer picks a victim; `None` where
/// the machine's memory cannot be read.
fn default_query_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024 / 2)
}

/// Where jobs (and, with PostgreSQL, users) are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStoreSetting {
    /// The embedded sled store in `<data dir>/jobs`, owned by one process.
    Sled,
    /// A PostgreSQL database shared by every process of the service (the URL).
    Postgres(String),
}

/// Where results are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultStoreSetting {
    /// Files in `<data dir>/results`.
    DataDir,
    /// An S3 bucket.
    S3(spool_results_s3::S3Config),
}

fn parse_job_store(text: &str) -> anyhow::Result<JobStoreSetting> {
    if text == "sled" {
        Ok(JobStoreSetting::Sled)
    } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Ok(JobStoreSetting::Postgres(text.to_owned()))
    } else {
        anyhow::bail!(
            "job_store must be \"sled\" or a postgres://user@host:port/db URL, not {text:?}"
        )
    }
}

/// Command line of `spool-server`.
#[derive(Debug, Parser)]
#[command(
    name = "spool-server",
    version,
    about = "Asynchronous SQL query and export service speaking Apache Kylin's async query API"
)]
pub struct Cli {
    /// Address to listen on (ADDR:PORT) [default: 127.0.0.1:7070]
    #[arg(long, env = "SPOOL_BIND")]
    pub bind: Option<SocketAddr>,
    /// Directory for projects, jobs and results [default: ./spool-data] (before or after a
    /// subcommand)
    #[arg(long, env = "SPOOL_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file (before or after a subcommand)
    #[arg(long, env = "SPOOL_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Queries that run at once [default: number of cores]
    #[arg(long, env = "SPOOL_WORKERS")]
    pub workers: Option<usize>,
    /// Log filter, as RUST_LOG (which wins if set) [default: info]
    #[arg(long, env = "SPOOL_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log lines as `text` (for people) or `json` (one object a line, for log pipelines)
    /// [default: text]
    #[arg(long, env = "SPOOL_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// SSB scale factor of the `ssb` sample project made on first start; 0: no sample
    /// [default: 0.01]
    #[arg(long, env = "SPOOL_SAMPLE_SF")]
    pub sample_sf: Option<f64>,
    /// Job store: `sled` (embedded, one process) or postgres://user@host:port/db (shared by
    /// several processes) [default: sled]
    #[arg(long, env = "SPOOL_JOB_STORE")]
    pub job_store: Option<String>,
    /// Result store: s3://bucket/prefix [default: <data dir>/results]
    #[arg(long, env = "SPOOL_RESULT_STORE")]
    pub result_store: Option<String>,
    /// S3 endpoint URL for stores other than AWS (MinIO, SeaweedFS, ...)
    #[arg(long, env = "SPOOL_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: the AWS environment's, else us-east-1]
    #[arg(long, env = "SPOOL_S3_REGION")]
    pub s3_region: Option<String>,
    /// Allow a plain http:// S3 endpoint [default: false]
    #[arg(long, env = "SPOOL_S3_ALLOW_HTTP")]
    pub s3_allow_http: Option<bool>,
    /// Seconds a running query's lease lasts; another process takes the query over once it
    /// lapses [default: 30]
    #[arg(long, env = "SPOOL_LEASE_SECS")]
    pub lease_secs: Option<u64>,
    /// Seconds between two records of a running query's rows and bytes so far (each is one
    /// job-store write per running query) [default: 1]
    #[arg(long, env = "SPOOL_PROGRESS_SECS")]
    pub progress_secs: Option<u64>,
    /// The IANA time zone wall-clock times in requests (`older_than`) are read in, such as
    /// `Asia/Shanghai` [default: the machine's]
    #[arg(long, env = "SPOOL_TIME_ZONE")]
    pub time_zone: Option<String>,
    /// The secret completion webhooks are signed with (HMAC-SHA256) [default: none]
    #[arg(long, env = "SPOOL_CALLBACK_SECRET", hide_env_values = true)]
    pub callback_secret: Option<String>,
    /// Hosts completion webhooks may go to, comma-separated (`host` or `host:port`)
    /// [default: none, so no webhooks]
    #[arg(long, env = "SPOOL_CALLBACK_ALLOW", value_delimiter = ',')]
    pub callback_allow: Option<Vec<String>>,
    /// Reverse proxies (addresses or networks, comma-separated) whose `X-Forwarded-For` names
    /// the client, for login throttling [default: none]
    #[arg(long, env = "SPOOL_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// The Spark Connect server that projects with `engine = "spark"` in their `project.toml`
    /// run on, as `sc://host:port` [default: none, so such projects' queries fail]
    #[arg(long, env = "SPOOL_SPARK_REMOTE")]
    pub spark_remote: Option<String>,
    /// Serve the web console at `/` [default: true]
    #[arg(long, env = "SPOOL_CONSOLE")]
    pub console: Option<bool>,
    /// A second address serving only `GET /metrics`, without credentials, for a Prometheus
    /// scraper on a trusted network [default: none; /metrics on the API address, admins only]
    #[arg(long, env = "SPOOL_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
    /// Rows Kylin's synchronous query call (`POST /kylin/api/query`) answers with at most; a
    /// larger result is cut there and marked partial [default: 50000]
    #[arg(long, env = "SPOOL_SYNC_QUERY_MAX_ROWS")]
    pub sync_query_max_rows: Option<u64>,
    /// Seconds the synchronous query call waits before it stops the query and answers with
    /// an error [default: 300]
    #[arg(long, env = "SPOOL_SYNC_QUERY_TIMEOUT_SECS")]
    pub sync_query_timeout_secs: Option<u64>,
    /// Memory each Polars query may use, in bytes or with a unit ("256MiB", "4GiB"); a query
    /// that needs more ends FAILED alone; 0: no budget [default: half the machine's memory]
    #[arg(long, env = "SPOOL_MAX_QUERY_MEMORY")]
    pub max_query_memory: Option<String>,
    /// Run each Polars query in a worker process of its own (what enforces max_query_memory
    /// and keeps a crashing query from taking the server down) [default: true]
    #[arg(long, env = "SPOOL_QUERY_PROCESSES")]
    pub query_processes: Option<bool>,
    /// The SQL front end of Polars projects: "spool" (Spool's planner lowered to Polars'
    /// LazyFrame API, see docs/SQL.md), the only one [default: spool]
    #[arg(long, env = "SPOOL_SQL_FRONT_END")]
    pub sql_front_end: Option<String>,
    /// Manage users instead of serving
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands of `spool-server`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Manage the users in <data dir>/users.toml (a running server picks changes up by itself)
    #[command(subcommand)]
    User(crate::users::UserCommand),
    /// Generate Star Schema Benchmark data as a project folder of Parquet files
    GenSsb(GenSsb),
    /// Run one query in this process on the data dir's projects (no HTTP, no job store) and
    /// report its time: for scripts, debugging and measuring the service's own overhead
    Query(QueryArgs),
    /// A worker process of the server's: runs queries sent on stdin (started by the server)
    #[command(hide = true)]
    EngineWorker(EngineWorkerArgs),
}

/// Arguments of `spool-server engine-worker` (the server passes them; not for people).
#[derive(Debug, clap::Args)]
pub struct EngineWorkerArgs {
    /// The projects folder
    #[arg(long)]
    pub projects: PathBuf,
    /// The scratch folder
    #[arg(long)]
    pub scratch: PathBuf,
    /// The memory budget in bytes
    #[arg(long)]
    pub memory_limit: Option<u64>,
    /// The server's process id
    #[arg(long)]
    pub parent: Option<u32>,
}

/// Arguments of `spool-server query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// The project to query
    #[arg(long)]
    pub project: String,
    /// How many times to run it; each run's time goes to stderr
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Where to write the CSV of the last run (`-`: stdout) [default: nowhere]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Planner levers to switch off for these runs, to measure what they buy: `key-filters`,
    /// `join-order`, `folds` or `all` (comma-separated) [default: none]
    #[arg(long, value_delimiter = ',')]
    pub levers_off: Vec<String>,
    /// The SQL
    pub sql: String,
}

/// Arguments of `spool-server gen-ssb`.
#[derive(Debug, clap::Args)]
pub struct GenSsb {
    /// Scale factor (1: 6 million LINEORDER rows)
    #[arg(long)]
    pub sf: f64,
    /// The project folder to create; it must not exist yet
    #[arg(long)]
    pub out: PathBuf,
    /// Random seed; the same scale factor and seed give byte-identical files
    #[arg(long, default_value_t = spool_ssb::DEFAULT_SEED)]
    pub seed: u64,
    /// Generator threads [default: number of cores]
    #[arg(long)]
    pub threads: Option<usize>,
}

/// The configuration file's fields; all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub bind: Option<SocketAddr>,
    /// Data directory; relative paths are relative to the file.
    pub data_dir: Option<PathBuf>,
    /// Queries that run at once.
    pub workers: Option<usize>,
    /// Log filter.
    pub log_level: Option<String>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: Option<usize>,
    /// SSB scale factor of the sample project made on first start (0: no sample).
    pub sample_sf: Option<f64>,
    /// Seconds a query may run before it is stopped (0: no limit).
    pub query_timeout_secs: Option<u64>,
    /// Rows a result may have (0: no limit).
    pub max_result_rows: Option<u64>,
    /// Bytes a result file may have (0: no limit).
    pub max_result_bytes: Option<u64>,
    /// Queries one user may have queued or running at once (0: no limit).
    pub max_in_flight_per_user: Option<usize>,
    /// Whether the first start creates Kylin's default user ADMIN / KYLIN.
    pub default_admin: Option<bool>,
    /// Days a finished query and its result are kept (0: until deleted).
    pub result_retain_days: Option<u64>,
    /// Whether result files bypass the page cache where the file system allows it.
    pub direct_io: Option<bool>,
    /// `sled` or a postgres:// URL.
    pub job_store: Option<String>,
    /// An s3://bucket/prefix URL.
    pub result_store: Option<String>,
    /// The S3 endpoint URL.
    pub s3_endpoint: Option<String>,
    /// The S3 region.
    pub s3_region: Option<String>,
    /// Whether a plain http:// S3 endpoint is allowed.
    pub s3_allow_http: Option<bool>,
    /// The S3 access key id (else `AWS_ACCESS_KEY_ID`).
    pub aws_access_key_id: Option<String>,
    /// The S3 secret key (else `AWS_SECRET_ACCESS_KEY`).
    pub aws_secret_access_key: Option<String>,
    /// Seconds a running query's lease lasts.
    pub lease_secs: Option<u64>,
    /// Seconds between two records of a running query's progress.
    pub progress_secs: Option<u64>,
    /// The IANA time zone `older_than` is read in.
    pub time_zone: Option<String>,
    /// The secret webhooks are signed with.
    pub callback_secret: Option<String>,
    /// The hosts webhooks may go to.
    pub callback_allow: Option<Vec<String>>,
    /// The Spark Connect server for Spark projects (`sc://host:port`).
    pub spark_remote: Option<String>,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Option<Vec<String>>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// Whether `/` serves the web console.
    pub console: Option<bool>,
    /// The address that serves only `/metrics`, without credentials.
    pub metrics_bind: Option<SocketAddr>,
    /// Rows a synchronous query answers with at most.
    pub sync_query_max_rows: Option<u64>,
    /// Seconds a synchronous query is waited for.
    pub sync_query_timeout_secs: Option<u64>,
    /// Memory each query may use: bytes, or a string with a unit.
    pub max_query_memory: Option<ByteSize>,
    /// Whether each Polars query runs in a worker process.
    pub query_processes: Option<bool>,
    /// The SQL front end of Polars projects: "polars" or "spool".
    pub sql_front_end: Option<String>,
}

/// A size in the configuration file: a number of bytes, or a string with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    /// Bytes.
    Bytes(u64),
    /// `"256MiB"`, `"4GiB"`, ...
    Text(String),
}

/// The settings the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Queries that run at once.
    pub workers: usize,
    /// Log filter.
    pub log_level: String,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// SSB scale factor of the sample project made on first start; `None`: no sample.
    pub sample_sf: Option<f64>,
    /// How long a query may run; `None`: no limit.
    pub query_timeout: Option<std::time::Duration>,
    /// Rows a result may have; `None`: no limit.
    pub max_result_rows: Option<u64>,
    /// Bytes a result file may have; `None`: no limit.
    pub max_result_bytes: Option<u64>,
    /// Queries one user may have queued or running; `None`: no limit.
    pub max_in_flight_per_user: Option<usize>,
    /// Whether the first start creates ADMIN / KYLIN.
    pub default_admin: bool,
    /// How long finished queries and results are kept; `None`: until deleted.
    pub result_retention: Option<std::time::Duration>,
    /// Whether result files bypass the page cache where the file system allows it.
    pub direct_io: bool,
    /// Where jobs and users are kept.
    pub job_store: JobStoreSetting,
    /// Where results are kept.
    pub result_store: ResultStoreSetting,
    /// How long a running query's lease lasts.
    pub lease: std::time::Duration,
    /// How often a running query's progress is recorded.
    pub progress: std::time::Duration,
    /// The zone `older_than` is read in.
    pub time_zone: spool_http::TimeZone,
    /// The secret webhooks are signed with; `None`: webhooks are off.
    pub callback_secret: Option<String>,
    /// The hosts webhooks may go to.
    pub callback_allow: Vec<String>,
    /// The Spark Connect server for Spark projects; `None`: no Spark.
    pub spark_remote: Option<String>,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: spool_http::TrustedProxies,
    /// Whether log lines are JSON objects.
    pub log_json: bool,
    /// The row cap and the wait of Kylin's synchronous query call.
    pub sync: spool_http::SyncQueryLimits,
    /// The address that serves only `/metrics`, without credentials; `None`: not served apart.
    pub metrics_bind: Option<SocketAddr>,
    /// Whether `/` serves the web console.
    pub console: bool,
    /// Whether each Polars query runs in a worker process.
    pub query_processes: bool,
    /// The memory budget of each query in a worker process; `None`: no budget.
    pub max_query_memory: Option<u64>,
    /// The SQL front end of Polars projects.
    /// The planner's levers (all on; `spool-server query --levers-off` switches them off).
    pub planner: spool_engine_polars::PlannerOptions,
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let mut file: FileConfig =
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?;
    if let (Some(dir), Some(base)) = (&file.data_dir, path.parent())
        && dir.is_relative()
    {
        file.data_dir = Some(base.join(dir));
    }
    Ok(file)
}

impl Settings {
    /// Resolves flags and environment (already merged by clap) over the file over defaults.
    pub fn resolve(cli: &Cli) -> anyhow::Result<Self> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = cli.workers.or(file.workers).unwrap_or(cores);
        let job_store = parse_job_store(
            cli.job_store
                .as_deref()
                .or(file.job_store.as_deref())
                .unwrap_or("sled"),
        )?;
        anyhow::ensure!(
            workers >= 1 || job_store != JobStoreSetting::Sled,
            "workers = 0 needs a shared job store (job_store = \"postgres://...\"): with sled \
             no other process can run this one's queries"
        );
        let result_store = match cli.result_store.clone().or(file.result_store) {
            None => ResultStoreSetting::DataDir,
            Some(url) => {
                let mut s3 = spool_results_s3::S3Config::from_url(&url)
                    .map_err(|e| anyhow::anyhow!("result_store: {e}"))?;
                s3.endpoint = cli.s3_endpoint.clone().or(file.s3_endpoint);
                s3.region = cli.s3_region.clone().or(file.s3_region);
                s3.allow_http = cli.s3_allow_http.or(file.s3_allow_http).unwrap_or(false);
                s3.access_key_id = file.aws_access_key_id;
                s3.secret_access_key = file.aws_secret_access_key;
                ResultStoreSetting::S3(s3)
            }
        };
        let lease_secs = cli
            .lease_secs
            .or(file.lease_secs)
            .unwrap_or(DEFAULT_LEASE_SECS);
        anyhow::ensure!(lease_secs >= 1, "lease_secs must be at least 1");
        let progress_secs = cli
            .progress_secs
            .or(file.progress_secs)
            .unwrap_or(DEFAULT_PROGRESS_SECS);
        anyhow::ensure!(progress_secs >= 1, "progress_secs must be at least 1");
        let callback_secret = cli
            .callback_secret
            .clone()
            .or(file.callback_secret.clone())
            .filter(|s| !s.is_empty());
        let callback_allow: Vec<String> = cli
            .callback_allow
            .clone()
            .or(file.callback_allow.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect();
        anyhow::ensure!(
            callback_allow.is_empty() || callback_secret.as_ref().is_some_and(|s| s.len() >= 16),
            "callback_allow lists hosts but callback_secret is not set (or shorter than 16 \
             characters): webhooks are signed with it, so set callback_secret to a long random \
             string, or empty callback_allow to keep webhooks off"
        );
        let spark_remote = cli
            .spark_remote
            .clone()
            .or(file.spark_remote.clone())
            .filter(|s| !s.trim().is_empty());
        if let Some(remote) = &spark_remote {
            spool_engine_spark::Remote::parse(remote).map_err(anyhow::Error::msg)?;
        }
        let trusted_proxies = spool_http::TrustedProxies::parse(
            &cli.trusted_proxies
                .clone()
                .or(file.trusted_proxies.clone())
                .unwrap_or_default(),
        )
        .map_err(anyhow::Error::msg)?;
        let log_json = match cli
            .log_format
            .as_deref()
            .or(file.log_format.as_deref())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => anyhow::bail!("log_format {other:?} is not one of \"text\", \"json\""),
        };
        let defaults = spool_http::SyncQueryLimits::default();
        let max_rows = cli
            .sync_query_max_rows
            .or(file.sync_query_max_rows)
            .unwrap_or(defaults.max_rows);
        anyhow::ensure!(
            (1..=10_000_000).contains(&max_rows),
            "sync_query_max_rows must be from 1 to 10000000 (larger results belong in \
             /kylin/api/async_query), got {max_rows}"
        );
        let timeout_secs = cli
            .sync_query_timeout_secs
            .or(file.sync_query_timeout_secs)
            .unwrap_or(defaults.timeout.as_secs());
        anyhow::ensure!(
            timeout_secs >= 1,
            "sync_query_timeout_secs must be at least 1"
        );
        let sync = spool_http::SyncQueryLimits {
            max_rows,
            timeout: std::time::Duration::from_secs(timeout_secs),
        };
        let query_processes = cli.query_processes.or(file.query_processes).unwrap_or(true);
        let budget = match (cli.max_query_memory.clone(), file.max_query_memory.clone()) {
            (Some(text), _) | (None, Some(ByteSize::Text(text))) => Some(
                spool_engine_process::parse_size(&text)
                    .map_err(|e| anyhow::anyhow!("max_query_memory: {e}"))?,
            ),
            (None, Some(ByteSize::Bytes(bytes))) => Some(bytes),
            (None, None) => None,
        };
        anyhow::ensure!(
            query_processes || budget.is_none_or(|b| b == 0),
            "max_query_memory is set but query_processes = false: the budget is enforced on \
             the worker processes, so set query_processes = true or remove max_query_memory"
        );
        if let Some(bytes) = budget.filter(|&b| b > 0) {
            anyhow::ensure!(
                bytes >= MIN_QUERY_MEMORY,
                "max_query_memory must be at least {} (the engine alone needs about that), got {}",
                spool_engine_process::show_size(MIN_QUERY_MEMORY),
                spool_engine_process::show_size(bytes)
            );
        }
        let max_query_memory = match budget {
            Some(0) => None,
            Some(bytes) => Some(bytes),
            None if query_processes => default_query_memory(),
            None => None,
        };
        // Spool's planner reads every query; the key stays so that configurations naming it
        // keep working, and says so when they ask for the front end that is gone.
        match cli
            .sql_front_end
            .as_deref()
            .or(file.sql_front_end.as_deref())
        {
            None | Some("spool") => {}
            Some(other) => anyhow::bail!(
                "sql_front_end {other:?} is not available: Spool's planner reads every query \
                 (Polars' SQL context was removed); set it to \"spool\" or leave it out"
            ),
        }
        Ok(Self {
            query_processes,
            max_query_memory,
            planner: spool_engine_polars::PlannerOptions::default(),
            metrics_bind: cli.metrics_bind.or(file.metrics_bind),
            console: cli.console.or(file.console).unwrap_or(true),
            sync,
            log_json,
            trusted_proxies,
            spark_remote,
            job_store,
            result_store,
            lease: std::time::Duration::from_secs(lease_secs),
            progress: std::time::Duration::from_secs(progress_secs),
            callback_secret: callback_secret.clone(),
            callback_allow: callback_allow.clone(),
            time_zone: match cli.time_zone.as_deref().or(file.time_zone.as_deref()) {
                None => spool_http::TimeZone::Local,
                Some(name) => spool_http::TimeZone::parse(name).map_err(anyhow::Error::msg)?,
            },
            bind: cli
                .bind
                .or(file.bind)
                .unwrap_or_else(|| DEFAULT_BIND.parse().expect("valid default address")),
            data_dir: cli
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            workers,
            log_level: cli
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_owned()),
            max_body_bytes: file.max_body_bytes.unwrap_or(1024 * 1024),
            sample_sf: Some(
                cli.sample_sf
                    .or(file.sample_sf)
                    .unwrap_or(DEFAULT_SAMPLE_SF),
            )
            .filter(|&sf| sf != 0.0),
            query_timeout: match file
                .query_timeout_secs
                .unwrap_or(DEFAULT_QUERY_TIMEOUT_SECS)
            {
                0 => None,
                secs => Some(std::time::Duration::from_secs(secs)),
            },
            max_result_rows: file.max_result_rows.filter(|&n| n > 0),
            max_result_bytes: Some(file.max_result_bytes.unwrap_or(DEFAULT_MAX_RESULT_BYTES))
                .filter(|&n| n > 0),
            max_in_flight_per_user: Some(
                file.max_in_flight_per_user
                    .unwrap_or(DEFAULT_MAX_IN_FLIGHT_PER_USER),
            )
            .filter(|&n| n > 0),
            default_admin: file.default_admin.unwrap_or(true),
            result_retention: match file
                .result_retain_days
                .unwrap_or(DEFAULT_RESULT_RETAIN_DAYS)
            {
                0 => None,
                days => Some(std::time::Duration::from_secs(
                    days.saturating_mul(24 * 3600),
                )),
            },
            direct_io: file.direct_io.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("spool-server").chain(args.iter().copied()))
            .expect("args")
    }

    #[test]
    fn the_data_dir_and_config_go_before_or_after_a_subcommand() {
        for args in [
            &["--data-dir", "/d", "--config", "/c.toml", "user", "list"][..],
            &["user", "list", "--data-dir", "/d", "--config", "/c.toml"][..],
            &[
                "user",
                "add",
                "alice",
                "--project",
                "ssb",
                "--data-dir",
                "/d",
                "--config",
                "/c.toml",
            ][..],
        ] {
            let parsed = cli(args);
            assert_eq!(
                (parsed.data_dir.as_deref(), parsed.config.as_deref()),
                (Some(Path::new("/d")), Some(Path::new("/c.toml"))),
                "{args:?}"
            );
        }
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.toml");
        std::fs::write(
            &path,
            "bind = \"127.0.0.1:9000\"\nworkers = 3\ndata_dir = \"data\"\n",
        )
        .expect("write");
        let s = Settings::resolve(&cli(&[
            "--config",
            path.to_str().expect("utf-8"),
            "--workers",
            "5",
        ]))
        .expect("settings");
        assert_eq!(s.workers, 5);
        assert_eq!(s.bind.to_string(), "127.0.0.1:9000");
        assert_eq!(s.data_dir, dir.path().join("data"));
        let d = Settings::resolve(&cli(&[])).expect("defaults");
        assert_eq!(d.bind.to_string(), DEFAULT_BIND);
        assert_eq!(d.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn shared_backends_are_chosen_by_url_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.toml");
        std::fs::write(
            &path,
            "job_store = \"postgres://spool@db:5432/spool\"\nresult_store = \"s3://results/spool\"\n\
             s3_endpoint = \"http://127.0.0.1:8333\"\ns3_allow_http = true\nlease_secs = 5\n",
        )
        .expect("write");
        let config = path.to_str().expect("utf-8");
        let s = Settings::resolve(&cli(&["--config", config, "--workers", "0"])).expect("settings");
        assert_eq!(
            s.job_store,
            JobStoreSetting::Postgres("postgres://spool@db:5432/spool".into())
        );
        let ResultStoreSetting::S3(s3) = &s.result_store else {
            panic!("an S3 result store: {:?}", s.result_store);
        };
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("results", "spool")
        );
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert!(s3.allow_http);
        assert_eq!((s.workers, s.lease.as_secs()), (0, 5));

        let d = Settings::resolve(&cli(&[])).expect("defaults");
        assert_eq!(d.job_store, JobStoreSetting::Sled);
        assert_eq!(d.result_store, ResultStoreSetting::DataDir);
        assert_eq!(d.lease.as_secs(), DEFAULT_LEASE_SECS);

        for (args, needle) in [
            (
                vec!["--workers", "0"],
                "workers = 0 needs a shared job store",
            ),
            (vec!["--job-store", "mysql://x"], "job_store must be"),
            (vec!["--result-store", "/tmp/results"], "result_store"),
        ] {
            let err = Settings::resolve(&cli(&args)).expect_err("refused");
            assert!(format!("{err:#}").contains(needle), "{err:#}");
        }
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.toml");
        std::fs::write(&path, "bnid = \"x\"\n").expect("write");
        let err = Settings::resolve(&cli(&["--config", path.to_str().expect("utf-8")]))
            .expect_err("typo");
        assert!(format!("{err:#}").contains("bnid"), "{err:#}");
    }
}
