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
    /// Directory for projects, jobs and results [default: ./spool-data]
    #[arg(long, env = "SPOOL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file
    #[arg(long, env = "SPOOL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Queries that run at once [default: number of cores]
    #[arg(long, env = "SPOOL_WORKERS")]
    pub workers: Option<usize>,
    /// Log filter, as RUST_LOG (which wins if set) [default: info]
    #[arg(long, env = "SPOOL_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// SSB scale factor of the `ssb` sample project made on first start; 0: no sample
    /// [default: 0.01]
    #[arg(long, env = "SPOOL_SAMPLE_SF")]
    pub sample_sf: Option<f64>,
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
        anyhow::ensure!(workers >= 1, "workers must be at least 1");
        Ok(Self {
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
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.toml");
        std::fs::write(&path, "bnid = \"x\"\n").expect("write");
        let err = Settings::resolve(&cli(&["--config", path.to_str().expect("utf-8")]))
            .expect_err("typo");
        assert!(format!("{err:#}").contains("bnid"), "{err:#}");
    }
}
