//! `cargo xtask bench`: the release server measured against what a user would pick instead, in
//! one run on one machine. Writes `target/bench/report.md`.
//!
//! Phases (all but `soak` by default; `--phases ssb,export,download,load,progress,shared,spark,soak`
//! picks some):
//! - `ssb`: the 13 SSB queries through the HTTP API (submit to SUCCESSFUL, then the download),
//!   next to the same SQL in-process (`spool-server query`: same engine and result store, no HTTP,
//!   no job store) with jemalloc and with the system allocator, and on DuckDB (the Python
//!   package, installed by the bench into `target/bench/venv`), each query on all of them before
//!   the next; the API's runs of a query alternate with DuckDB's, one of each in turn.
//! - `export`: `select * from p_lineorder` as CSV, Parquet and JSON through the API, one fresh
//!   server per format so its peak RSS (VmHWM) belongs to that export, next to DuckDB's COPY.
//! - `download`: the finished CSV export fetched over loopback.
//! - `load`: 64 clients polling status while an export runs, then 64 clients submitting.
//! - `progress`: the CSV export with progress recorded every second (the default) against every
//!   10 s, five interleaved runs each on fresh servers: what recording progress costs.
//! - `shared`: three servers on one PostgreSQL database and one S3 bucket (SeaweedFS, both
//!   started by the bench as `cargo xtask ci` starts them, PostgreSQL with `fsync` on):
//!   submissions, polls and the CSV export, next to one embedded server in the same run.
//! - `spark`: the 13 SSB queries and the CSV export through the API on a Spark project (a local
//!   standalone cluster: master, two one-core workers, a Connect server, started as `cargo xtask
//!   ci` starts it), next to the same on Polars in the same server and run.
//! - `soak`: `--soak-minutes` (20) of mixed load on one server: resident memory and open file
//!   descriptors after a warm-up and at the end, and every unexpected answer (`bench/soak.rs`).
//!
//! Every figure is a median of `--runs` runs after a warm-up, except the exports (a median of at
//! most three runs on one fresh server, without a warm-up: each takes seconds, and the peak RSS
//! is the fresh process's) and the load phase, which runs once.

mod charts;
mod load;
mod shared;
mod soak;
mod spark;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// `ADMIN:KYLIN`, the credentials of a fresh data dir.
const ADMIN: &str = "Basic QURNSU46S1lMSU4=";
/// The DuckDB release the bench installs (the one issue 6's first figures came from).
const DUCKDB: &str = "duckdb==2.0.1";
/// The export every export figure is about.
const EXPORT_SQL: &str = "select * from p_lineorder";
const CLIENTS: usize = 64;

struct Options {
    sf: String,
    runs: usize,
    phases: Vec<String>,
    formats: Vec<String>,
    load_seconds: u64,
    soak_minutes: f64,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        sf: "1".to_owned(),
        runs: 5,
        phases: [
            "ssb", "export", "download", "load", "progress", "shared", "spark",
        ]
        .map(str::to_owned)
        .to_vec(),
        formats: ["csv", "parquet", "json"].map(str::to_owned).to_vec(),
        load_seconds: 5,
        soak_minutes: 20.0,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--sf" => options.sf = value("--sf")?.clone(),
            "--runs" => options.runs = value("--runs")?.parse().context("--runs")?,
            "--load-seconds" => {
                options.load_seconds = value("--load-seconds")?.parse().context("--load-seconds")?
            }
            "--soak-minutes" => {
                options.soak_minutes =
                    value("--soak-minutes")?.parse().context("--soak-minutes")?;
                anyhow::ensure!(options.soak_minutes > 0.0, "--soak-minutes must be above 0");
            }
            "--formats" => {
                options.formats = value("--formats")?.split(',').map(str::to_owned).collect();
                if let Some(f) = options
                    .formats
                    .iter()
                    .find(|f| !["csv", "parquet", "json"].contains(&f.as_str()))
                {
                    bail!("unknown export format {f}; formats are csv, parquet, json");
                }
            }
            "--phases" => {
                options.phases = value("--phases")?.split(',').map(str::to_owned).collect();
                if let Some(p) = options.phases.iter().find(|p| {
                    ![
                        "ssb", "export", "download", "load", "progress", "shared", "spark", "soak",
                    ]
                    .contains(&p.as_str())
                }) {
                    bail!(
                        "unknown phase {p}; phases are ssb, export, download, load, progress, shared, spark, soak"
                    );
                }
            }
            other => bail!(
                "unknown bench argument {other}; expected --sf N, --runs N, --phases LIST, \
                 --formats LIST, --load-seconds N, --soak-minutes N"
            ),
        }
    }
    Ok(options)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| crate::workspace().join("target"), PathBuf::from)
}

fn queries_dir() -> PathBuf {
    crate::workspace().join("crates/spool-ssb/queries")
}

/// The SSB queries, read from the generator crate that also holds their answers.
fn queries() -> anyhow::Result<Vec<(String, String)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(queries_dir())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((name, std::fs::read_to_string(&p)?))
        })
        .collect()
}

/// The size of query `id`'s result, from `file_status`.
fn result_size(agent: &ureq::Agent, base: &str, id: &str) -> anyhow::Result<u64> {
    json(
        agent
            .get(&format!("{base}/kylin/api/async_query/{id}/file_status"))
            .set("Authorization", ADMIN)
            .call()?,
    )?["data"]
        .as_u64()
        .context("file_status without a size")
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() { 0.0 } else { xs[xs.len() / 2] }
}

struct RunningServer {
    child: Child,
    base: String,
}

impl RunningServer {
    fn peak_rss_mib(&self) -> f64 {
        peak_rss_mib(self.child.id()).unwrap_or(0.0)
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bench's own settings: no sample generation (the data is there), no per-user cap (the
/// load phase submits from one user), results kept.
const BENCH_CONFIG: &str = "sample_sf = 0\nmax_in_flight_per_user = 0\nresult_retain_days = 0\n";

/// Makes a fresh data directory `<bench>/runs/<name>` whose `projects/ssb` links to the
/// generated data, so results and job records of earlier runs never pile up, with the bench's
/// config and `extra` in `bench.toml`; returns the directory.
fn fresh_data_dir(data: &Data, name: &str, extra: &str) -> anyhow::Result<PathBuf> {
    let data_dir = data.bench_dir.join("runs").join(name);
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)?;
    }
    std::fs::create_dir_all(data_dir.join("projects"))?;
    std::os::unix::fs::symlink(&data.project, data_dir.join("projects/ssb"))?;
    std::fs::write(
        data_dir.join("bench.toml"),
        format!("{BENCH_CONFIG}{extra}"),
    )?;
    Ok(data_dir)
}

/// Starts the server on a fresh data directory (see [`fresh_data_dir`]).
fn start_server(
    binary: &Path,
    data: &Data,
    name: &str,
    workers: usize,
) -> anyhow::Result<RunningServer> {
    let data_dir = fresh_data_dir(data, name, "")?;
    spawn_server(binary, &data_dir, workers, &[])
}

/// Starts the server on `data_dir` with its `bench.toml` and `env` added to its environment.
fn spawn_server(
    binary: &Path,
    data_dir: &Path,
    workers: usize,
    env: &[(&str, String)],
) -> anyhow::Result<RunningServer> {
    let mut child = Command::new(binary)
        .args(["--bind", "127.0.0.1:0", "--log-level", "error", "--workers"])
        .arg(workers.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(data_dir.join("bench.toml"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting spool-server")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines.next().context("server exited before listening")??;
        if let Some(addr) = line.strip_prefix("spool listening on ") {
            break addr.trim().to_owned();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(RunningServer { child, base })
}

/// The peak RSS (VmHWM) of a server and its live worker processes (where its queries run),
/// summed: at least the peak of the whole.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let own = status_kib(pid, "VmHWM:")?;
    let workers: f64 = children(pid)
        .into_iter()
        .filter_map(|child| status_kib(child, "VmHWM:"))
        .sum();
    Some((own + workers) / 1024.0)
}

/// A `/proc/PID/status` figure in KiB.
fn status_kib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The live child processes of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let parent = pid.to_string();
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|child| {
                    std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
                        let mut fields = rest.split_whitespace();
                        fields.next() != Some("Z") && fields.next() == Some(parent.as_str())
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn json(response: ureq::Response) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&response.into_string()?)?)
}

fn submit(agent: &ureq::Agent, base: &str, sql: &str, format: &str) -> anyhow::Result<String> {
    submit_to(agent, base, "ssb", sql, format)
}

/// Submits `sql` to `project` with the result in `format`; returns the query id.
fn submit_to(
    agent: &ureq::Agent,
    base: &str,
    project: &str,
    sql: &str,
    format: &str,
) -> anyhow::Result<String> {
    let body = serde_json::json!({ "sql": sql, "project": project, "format": format }).to_string();
    let submitted = json(
        agent
            .post(&format!("{base}/kylin/api/async_query"))
            .set("Authorization", ADMIN)
            .set("Content-Type", "application/json")
            .send_string(&body)?,
    )?;
    Ok(submitted["data"]["queryID"]
        .as_str()
        .with_context(|| format!("no query id in {submitted}"))?
        .to_owned())
}

/// Waits until the query ends, as a Spool client should: long polls (`status?wait=30`, answered
/// the moment the status changes), not a timer. A client polling every few milliseconds costs
/// the server and the machine CPU that the query then lacks: on these 2 cores, 2 ms polls made
/// each SSB query about 9 % slower than the same query with long polls (docs/PERFORMANCE.md).
/// Fails unless the query ended SUCCESSFUL.
fn wait(agent: &ureq::Agent, base: &str, id: &str) -> anyhow::Result<()> {
    loop {
        let status = json(
            agent
                .get(&format!("{base}/kylin/api/async_query/{id}/status?wait=30"))
                .set("Authorization", ADMIN)
                .call()?,
        )?;
        match status["data"]["status"].as_str() {
            Some("SUCCESSFUL") => return Ok(()),
            Some("RUNNING") => {}
            _ => bail!("query failed: {status}"),
        }
    }
}

/// Deletes query `id` and its result.
fn delete(agent: &ureq::Agent, base: &str, id: &str) -> anyhow::Result<()> {
    let res = agent
        .delete(&format!("{base}/kylin/api/async_query/{id}"))
        .set("Authorization", ADMIN)
        .call()?;
    anyhow::ensure!(res.status() == 200, "delete answered {}", res.status());
    Ok(())
}

/// Every run's figure, with `places` decimals, comma-separated.
fn listed(runs: &[f64], places: usize) -> String {
    runs.iter()
        .map(|s| format!("{s:.places$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Downloads the result into nothing; returns the byte count.
fn download(agent: &ureq::Agent, base: &str, id: &str) -> anyhow::Result<u64> {
    let mut reader = agent
        .get(&format!("{base}/kylin/api/async_query/{id}/result"))
        .set("Authorization", ADMIN)
        .call()?
        .into_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match reader.read(&mut buf)? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

/// Submits, polls to SUCCESSFUL and downloads; returns (seconds, bytes downloaded).
fn through_api(agent: &ureq::Agent, base: &str, sql: &str) -> anyhow::Result<(f64, u64)> {
    through_api_on(agent, base, "ssb", sql)
}

/// [`through_api`] on `project`.
fn through_api_on(
    agent: &ureq::Agent,
    base: &str,
    project: &str,
    sql: &str,
) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let id = submit_to(agent, base, project, sql, "csv")?;
    wait(agent, base, &id)?;
    let bytes = download(agent, base, &id)?;
    Ok((started.elapsed().as_secs_f64(), bytes))
}

/// Runs `spool-server query --repeat N` and returns the median of its reported run times.
fn in_process(binary: &Path, data_dir: &Path, sql: &str, runs: usize) -> anyhow::Result<f64> {
    let out = Command::new(binary)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--sample-sf", "0", "query", "--project", "ssb", "--repeat"])
        .arg((runs + 1).to_string())
        .arg(sql)
        .output()?;
    if !out.status.success() {
        bail!(
            "in-process run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let times: Vec<f64> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.rsplit(", ").next()?.strip_suffix(" ms")?.parse().ok())
        .skip(1) // the warm-up
        .collect();
    Ok(median(times) / 1000.0)
}

/// The Python interpreter of the bench's virtual environment, with DuckDB installed.
fn duckdb_python(bench_dir: &Path) -> anyhow::Result<PathBuf> {
    let venv = bench_dir.join("venv");
    let python = venv.join("bin/python");
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", "import duckdb"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        eprintln!("bench: installing {DUCKDB} into {}", venv.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("python3 -m venv (the bench needs Python 3 with venv)")?;
        if !status.success() {
            bail!("python3 -m venv failed");
        }
        let status = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", DUCKDB])
            .status()?;
        if !status.success() {
            bail!("pip install {DUCKDB} failed");
        }
    }
    Ok(python)
}

/// Runs the DuckDB script; returns its JSON lines.
fn duckdb(python: &Path, args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let out = Command::new(python)
        .arg(crate::workspace().join("xtask/scripts/duckdb_bench.py"))
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

/// A DuckDB process over the project's files that runs one query at a time when asked
/// (`duckdb_bench.py serve`).
struct DuckSession {
    child: Child,
    /// Closed at the end, which tells the script to report its peak RSS and stop.
    input: Option<std::process::ChildStdin>,
    output: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl DuckSession {
    fn start(python: &Path, project: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(python)
            .arg(crate::workspace().join("xtask/scripts/duckdb_bench.py"))
            .arg("serve")
            .arg(project)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting DuckDB")?;
        let input = child.stdin.take().context("DuckDB's stdin")?;
        let output = BufReader::new(child.stdout.take().context("DuckDB's stdout")?).lines();
        Ok(Self {
            child,
            input: Some(input),
            output,
        })
    }

    fn answer(&mut self) -> anyhow::Result<Value> {
        match self.output.next() {
            Some(line) => Ok(serde_json::from_str(&line?)?),
            None => bail!("DuckDB stopped: {}", self.child.wait()?),
        }
    }

    /// Runs `sql` once; returns its seconds, results fetched.
    fn run(&mut self, sql: &str) -> anyhow::Result<f64> {
        use std::io::Write;
        let input = self.input.as_mut().context("DuckDB's stdin is closed")?;
        writeln!(input, "{}", Value::from(sql))?;
        input.flush()?;
        let answer = self.answer()?;
        answer["seconds"]
            .as_f64()
            .with_context(|| format!("DuckDB answered {answer}"))
    }

    /// Ends the process; returns its peak RSS in MiB.
    fn finish(mut self) -> anyhow::Result<f64> {
        drop(self.input.take());
        let answer = self.answer()?;
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "DuckDB ended with {status}");
        answer["peak_rss_mib"]
            .as_f64()
            .with_context(|| format!("DuckDB answered {answer}"))
    }
}

/// Where the bench keeps its files.
struct Data {
    /// `target/bench` under the cargo target directory.
    bench_dir: PathBuf,
    /// The generated data as a data directory (`projects/ssb` only), for in-process runs.
    generated: PathBuf,
    /// The generated SSB project folder.
    project: PathBuf,
}

struct Binaries {
    jemalloc: PathBuf,
    system: PathBuf,
}

/// Builds the release server twice: with jemalloc (the default) and with the system allocator
/// (kept as `target/bench/spool-server-system-alloc`). Only the server crate differs between
/// the two, so the second build is a relink.
fn build(bench_dir: &Path) -> anyhow::Result<Binaries> {
    let built = target_dir().join("release/spool-server");
    crate::cargo(&[
        "build",
        "--release",
        "-p",
        "spool-server",
        "--no-default-features",
    ])?;
    let system = bench_dir.join("spool-server-system-alloc");
    std::fs::copy(&built, &system).context("keeping the system-allocator build")?;
    crate::cargo(&["build", "--release", "-p", "spool-server"])?;
    Ok(Binaries {
        jemalloc: built,
        system,
    })
}

fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}

/// Runs the bench.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let options = parse(args)?;
    let has = |phase: &str| options.phases.iter().any(|p| p == phase);
    let bench_dir = target_dir().join("bench");
    std::fs::create_dir_all(&bench_dir)?;
    let binaries = build(&bench_dir)?;
    let generated = bench_dir.join(format!("data-sf{}", options.sf));
    let project = generated.join("projects/ssb");
    if !project.exists() {
        std::fs::create_dir_all(generated.join("projects"))?;
        let status = Command::new(&binaries.jemalloc)
            .args(["gen-ssb", "--sf", &options.sf, "--out"])
            .arg(&project)
            .status()?;
        if !status.success() {
            bail!("gen-ssb failed");
        }
    }
    let python = duckdb_python(&bench_dir)?;
    let data = Data {
        bench_dir: bench_dir.clone(),
        generated,
        project,
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut report = format!(
        "# Spool bench: SSB SF {}, {cores} cores\n\n\
         Command: `{}`. Release build (profile in Cargo.toml), \
         jemalloc unless marked; DuckDB {} from PyPI.\n\n",
        options.sf,
        std::iter::once("cargo xtask bench")
            .chain(args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        DUCKDB.trim_start_matches("duckdb=="),
    );
    let mut charts: Vec<charts::BarChart> = Vec::new();
    let mut emit = |text: String| {
        eprint!("{text}");
        report.push_str(&text);
    };

    if has("ssb") {
        ssb_phase(&options, &binaries, &data, &python, &mut emit, &mut charts)?;
    }
    let mut csv_export = None;
    if has("export") || has("download") {
        csv_export = export_phase(&options, &binaries, &data, &python, &mut emit, &mut charts)?;
    }
    if has("download")
        && let Some((server, id, bytes)) = &csv_export
    {
        download_phase(&options, server, id, *bytes, &mut emit)?;
    }
    drop(csv_export);
    if has("load") {
        load_phase(&options, &binaries, &data, &mut emit)?;
    }
    if has("progress") {
        progress_phase(&options, &binaries, &data, &mut emit)?;
    }
    if has("shared") {
        shared::phase(&options, &binaries, &data, &mut emit, &mut charts)?;
    }
    if has("spark") {
        spark::phase(&options, &binaries, &data, &mut emit, &mut charts)?;
    }
    if has("soak") {
        soak::phase(&options, &binaries, &data, &mut emit)?;
    }

    // The report also lands in the checkout's `target/bench`, where the docs point; the
    // charts beside it, linked from it.
    let mut written = vec![bench_dir.join("report.md")];
    let local = crate::workspace().join("target/bench/report.md");
    if !written.contains(&local) {
        written.push(local);
    }
    if !charts.is_empty() {
        report.push_str("## Charts\n\n");
        for chart in &charts {
            report.push_str(&format!("![{}]({}.svg)\n\n", chart.title, chart.name));
        }
    }
    for path in &written {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
            for chart in &charts {
                chart.write(dir)?;
            }
        }
        std::fs::write(path, &report)?;
    }
    println!("{report}");
    println!("written to {}", written[written.len() - 1].display());
    Ok(())
}

fn ssb_phase(
    options: &Options,
    binaries: &Binaries,
    data: &Data,
    python: &Path,
    emit: &mut impl FnMut(String),
    charts: &mut Vec<charts::BarChart>,
) -> anyhow::Result<()> {
    let mut duck_rss = 0.0_f64;
    let server = start_server(&binaries.jemalloc, data, "ssb", cores_or_one())?;
    // The same server with every query in its own process, not in a worker process: what the
    // memory budget and crash isolation cost.
    let shared_dir = fresh_data_dir(data, "ssb-no-processes", "query_processes = false\n")?;
    let unisolated = spawn_server(&binaries.jemalloc, &shared_dir, cores_or_one(), &[])?;
    let agent = ureq::AgentBuilder::new().build();
    emit(format!(
        "## The 13 SSB queries (medians of {} runs after a warm-up, seconds)\n\n\
         | query | API: submit to SUCCESSFUL + download | API, queries in the server's process | in-process, jemalloc | in-process, system malloc | DuckDB | API / DuckDB |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        options.runs
    ));
    let mut sums = [0.0f64; 5];
    let mut chart = charts::BarChart {
        name: "ssb".into(),
        title: format!(
            "The 13 SSB queries, SF {} (seconds, lower is better)",
            options.sf
        ),
        y_label: "seconds".into(),
        groups: Vec::new(),
        series: vec![
            ("Spool API".into(), Vec::new()),
            ("in-process Polars".into(), Vec::new()),
            ("DuckDB".into(), Vec::new()),
        ],
    };
    for (name, sql) in queries()? {
        // Interleaved, so both servers and DuckDB see the same machine: this VM's speed drifts
        // by tens of percent within minutes, and a query's runs on one system take seconds.
        // One DuckDB process a query, so its peak RSS is that query's.
        let mut duck = DuckSession::start(python, &data.project)?;
        let (mut times, mut times_unisolated, mut times_duck) =
            (Vec::new(), Vec::new(), Vec::new());
        for run in 0..=options.runs {
            let (t, _bytes) = through_api(&agent, &server.base, &sql)?;
            let (u, _bytes) = through_api(&agent, &unisolated.base, &sql)?;
            let d = duck
                .run(&sql)
                .with_context(|| format!("DuckDB on {name}"))?;
            if run > 0 {
                times.push(t);
                times_unisolated.push(u);
                times_duck.push(d);
            }
        }
        duck_rss = duck_rss.max(duck.finish()?);
        let row = [
            median(times),
            median(times_unisolated),
            in_process(&binaries.jemalloc, &data.generated, &sql, options.runs)?,
            in_process(&binaries.system, &data.generated, &sql, options.runs)?,
            median(times_duck),
        ];
        for (sum, x) in sums.iter_mut().zip(row) {
            *sum += x;
        }
        chart.groups.push(name.clone());
        for (series, x) in chart.series.iter_mut().zip([row[0], row[2], row[4]]) {
            series.1.push(x);
        }
        emit(format!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} |\n",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[0] / row[4]
        ));
    }
    emit(format!(
        "| **sum** | **{:.3}** | **{:.3}** | **{:.3}** | **{:.3}** | **{:.3}** | **{:.2}** |\n\n\
         Worker processes (`query_processes`, what enforces `max_query_memory`) cost \
         {:+.1} ms a query on average against the queries in the server's own process.\n\n\
         Peak RSS: server and its worker processes {:.0} MiB over all API runs (in-process \
         server: {:.0} MiB); DuckDB process (one a query, the largest) {duck_rss:.0} MiB.\n\n",
        sums[0],
        sums[1],
        sums[2],
        sums[3],
        sums[4],
        sums[0] / sums[4],
        (sums[0] - sums[1]) * 1000.0 / 13.0,
        server.peak_rss_mib(),
        unisolated.peak_rss_mib(),
    ));
    charts.push(chart);
    Ok(())
}

fn cores_or_one() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs the three exports, each on a fresh one-worker server; returns the CSV one's server
/// (still running), query id and size for the download phase.
fn export_phase(
    options: &Options,
    binaries: &Binaries,
    data: &Data,
    python: &Path,
    emit: &mut impl FnMut(String),
    charts: &mut Vec<charts::BarChart>,
) -> anyhow::Result<Option<(RunningServer, String, u64)>> {
    let mut chart = charts::BarChart {
        name: "export".into(),
        title: format!("Export of {EXPORT_SQL} (MB/s, higher is better)"),
        y_label: "MB/s".into(),
        groups: Vec::new(),
        series: vec![
            ("Spool".into(), Vec::new()),
            ("DuckDB COPY".into(), Vec::new()),
        ],
    };
    let project = &*data.project.to_string_lossy();
    let runs = options.runs.clamp(1, EXPORT_RUNS);
    emit(format!(
        "## Export of `{EXPORT_SQL}` (medians of {runs} runs, one fresh server per format)\n\n\
         | format | Spool: submit to SUCCESSFUL (s) | bytes | MB/s | server peak RSS (MiB) | DuckDB COPY (s) | DuckDB MB/s | DuckDB peak RSS (MiB) | Spool runs (s) | DuckDB runs (s) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|---|\n"
    ));
    let agent = ureq::AgentBuilder::new().build();
    let mut kept = None;
    for format in options.formats.iter().map(String::as_str) {
        let server = start_server(&binaries.jemalloc, data, &format!("export-{format}"), 1)?;
        let out = data.bench_dir.join(format!("duckdb-export.{format}"));
        let (mut spool, mut duck_runs) = (Vec::new(), Vec::new());
        let (mut size, mut duck_bytes, mut duck_rss) = (0, 0, 0.0_f64);
        let mut last = None;
        // Spool and DuckDB in turn, so both see the same machine.
        for run in 0..runs {
            let started = Instant::now();
            let id = submit(&agent, &server.base, EXPORT_SQL, format)?;
            wait(&agent, &server.base, &id)?;
            spool.push(started.elapsed().as_secs_f64());
            size = result_size(&agent, &server.base, &id)?;
            if run + 1 < runs {
                delete(&agent, &server.base, &id)?;
            } else {
                last = Some(id);
            }
            let duck = duckdb(python, &["export", project, format, &out.to_string_lossy()])?;
            let duck = duck.first().context("no DuckDB export figure")?;
            duck_runs.push(duck["seconds"].as_f64().unwrap_or(f64::NAN));
            duck_bytes = duck["bytes"].as_u64().unwrap_or(0);
            duck_rss = duck_rss.max(duck["peak_rss_mib"].as_f64().unwrap_or(0.0));
        }
        let rss = server.peak_rss_mib();
        let (seconds, duck_seconds) = (median(spool.clone()), median(duck_runs.clone()));
        emit(format!(
            "| {format} | {seconds:.2} | {size} | {:.0} | {rss:.0} | {duck_seconds:.2} | {:.0} | {duck_rss:.0} | {} | {} |\n",
            mb_per_s(size, seconds),
            mb_per_s(duck_bytes, duck_seconds),
            listed(&spool, 2),
            listed(&duck_runs, 2),
        ));
        chart.groups.push(format.to_owned());
        chart.series[0].1.push(mb_per_s(size, seconds));
        chart.series[1].1.push(mb_per_s(duck_bytes, duck_seconds));
        if format == "csv" {
            kept = last.map(|id| (server, id, size));
        }
    }
    emit("\n".to_owned());
    charts.push(chart);
    Ok(kept)
}

/// Runs of each export at most (`--runs` fewer): a JSON export takes seconds.
const EXPORT_RUNS: usize = 3;

/// Runs of each setting in the progress phase, interleaved.
const PROGRESS_RUNS: usize = 5;

/// The cost of recording progress: the CSV export with progress recorded every second (the
/// default) against every 10 s (the lease renewals alone, as before progress was kept),
/// interleaved runs on fresh servers, medians.
fn progress_phase(
    options: &Options,
    binaries: &Binaries,
    data: &Data,
    emit: &mut impl FnMut(String),
) -> anyhow::Result<()> {
    let agent = ureq::AgentBuilder::new().build();
    let settings = [1_u64, 10];
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); settings.len()];
    let mut size = 0;
    for _ in 0..PROGRESS_RUNS {
        for (i, every) in settings.iter().enumerate() {
            let dir = fresh_data_dir(data, "progress", &format!("progress_secs = {every}\n"))?;
            let server = spawn_server(&binaries.jemalloc, &dir, 1, &[])?;
            let started = Instant::now();
            let id = submit(&agent, &server.base, EXPORT_SQL, "csv")?;
            wait(&agent, &server.base, &id)?;
            seconds[i].push(started.elapsed().as_secs_f64());
            size = result_size(&agent, &server.base, &id)?;
        }
    }
    let medians: Vec<f64> = seconds.iter().map(|s| median(s.clone())).collect();
    let cost = (medians[0] / medians[1] - 1.0) * 100.0;
    emit(format!(
        "## The cost of progress updates on the CSV export (SF {}, {PROGRESS_RUNS} interleaved runs each, medians)\n\n\
         | progress recorded | seconds | MB/s | runs (s) |\n|---|---:|---:|---|\n\
         | every 1 s (default) | {:.3} | {:.0} | {} |\n\
         | every 10 s (lease renewals only) | {:.3} | {:.0} | {} |\n\n\
         Cost of progress every second: {cost:+.1} % of the export's time (target: under 2 %).\n\n",
        options.sf,
        medians[0],
        mb_per_s(size, medians[0]),
        listed(&seconds[0], 3),
        medians[1],
        mb_per_s(size, medians[1]),
        listed(&seconds[1], 3),
    ));
    Ok(())
}

fn download_phase(
    options: &Options,
    server: &RunningServer,
    id: &str,
    bytes: u64,
    emit: &mut impl FnMut(String),
) -> anyhow::Result<()> {
    let agent = ureq::AgentBuilder::new().build();
    let mut times = Vec::new();
    for run in 0..=options.runs {
        let started = Instant::now();
        let got = download(&agent, &server.base, id)?;
        if got != bytes {
            bail!("downloaded {got} bytes of {bytes}");
        }
        if run > 0 {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    let t = median(times);
    emit(format!(
        "## Download of the CSV export over loopback\n\n\
         {bytes} bytes in {t:.3} s (median of {}): {:.2} GB/s.\n\n",
        options.runs,
        bytes as f64 / 1e9 / t
    ));
    Ok(())
}

fn load_phase(
    options: &Options,
    binaries: &Binaries,
    data: &Data,
    emit: &mut impl FnMut(String),
) -> anyhow::Result<()> {
    let server = start_server(&binaries.jemalloc, data, "load", cores_or_one())?;
    let base = server.base.clone();
    let agent = ureq::AgentBuilder::new().build();
    let finished = submit(&agent, &base, "select d_year from dates limit 1", "csv")?;
    wait(&agent, &base, &finished)?;
    // The export that runs while the clients poll: JSON, the slowest encoder.
    let export = submit(&agent, &base, EXPORT_SQL, "json")?;
    let duration = Duration::from_secs(options.load_seconds);
    let status_url = format!("{base}/kylin/api/async_query/{finished}/status");
    let polls = load::run(CLIENTS, duration, &|agent: &ureq::Agent| {
        agent
            .get(&status_url)
            .set("Authorization", ADMIN)
            .call()
            .is_ok_and(|r| r.status() == 200 && r.into_string().is_ok())
    })?;
    let export_state = json(
        agent
            .get(&format!("{base}/kylin/api/async_query/{export}/status"))
            .set("Authorization", ADMIN)
            .call()?,
    )?["data"]["status"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    // Stop the export so the submissions measure the API, not a busy engine.
    let _ = agent
        .delete(&format!("{base}/kylin/api/async_query/stop/{export}"))
        .set("Authorization", ADMIN)
        .call();
    let submit_url = format!("{base}/kylin/api/async_query");
    let body = serde_json::json!({ "sql": "select d_year from dates limit 1", "project": "ssb" })
        .to_string();
    let submissions = load::run(CLIENTS, duration, &|agent: &ureq::Agent| {
        agent
            .post(&submit_url)
            .set("Authorization", ADMIN)
            .set("Content-Type", "application/json")
            .send_string(&body)
            .is_ok_and(|r| r.status() == 200 && r.into_string().is_ok())
    })?;
    emit(format!(
        "## HTTP load: {CLIENTS} clients on keep-alive connections, {} s each\n\n\
         | calls | requests/s | p50 (ms) | p99 (ms) | max (ms) | errors |\n\
         |---|---:|---:|---:|---:|---:|\n\
         | status polls while a JSON export of `{EXPORT_SQL}` runs (export state at the end: {export_state}) | {:.0} | {:.2} | {:.2} | {:.1} | {} |\n\
         | submissions (each flushed to sled before the answer) | {:.0} | {:.2} | {:.2} | {:.1} | {} |\n\n\
         Server peak RSS during the load phase: {:.0} MiB. Clients and server share the {} cores.\n\n",
        options.load_seconds,
        polls.per_second(),
        polls.p50_ms,
        polls.p99_ms,
        polls.max_ms,
        polls.errors,
        submissions.per_second(),
        submissions.p50_ms,
        submissions.p99_ms,
        submissions.max_ms,
        submissions.errors,
        server.peak_rss_mib(),
        cores_or_one(),
    ));
    Ok(())
}
