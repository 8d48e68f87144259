//! `cargo xtask bench`: builds the release server, makes SSB data if missing, and measures the
//! 13 SSB queries through the HTTP API (submit to SUCCESSFUL, then the download) next to the same
//! SQL run in-process (`spool-server query`: same engine and result store, no HTTP, no job
//! store), so the service's own overhead is visible. Writes `target/bench/report.md`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// `ADMIN:KYLIN`, the credentials of a fresh data dir.
const ADMIN: &str = "Basic QURNSU46S1lMSU4=";

struct Options {
    sf: String,
    runs: usize,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        sf: "1".to_owned(),
        runs: 5,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--sf" => options.sf = it.next().context("--sf needs a value")?.clone(),
            "--runs" => {
                options.runs = it
                    .next()
                    .context("--runs needs a value")?
                    .parse()
                    .context("--runs")?
            }
            other => bail!("unknown bench argument {other}; expected --sf N, --runs N"),
        }
    }
    Ok(options)
}

fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

/// The SSB queries, read from the generator crate that also holds their answers.
fn queries() -> anyhow::Result<Vec<(String, String)>> {
    let dir = workspace().join("crates/spool-ssb/queries");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
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

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() { 0.0 } else { xs[xs.len() / 2] }
}

struct RunningServer {
    child: Child,
    base: String,
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(binary: &Path, data_dir: &Path) -> anyhow::Result<RunningServer> {
    let mut child = Command::new(binary)
        .args(["--bind", "127.0.0.1:0", "--log-level", "warn", "--data-dir"])
        .arg(data_dir)
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

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Submits, polls to SUCCESSFUL and downloads; returns (seconds, bytes downloaded).
fn through_api(agent: &ureq::Agent, base: &str, sql: &str) -> anyhow::Result<(f64, usize)> {
    let body = serde_json::json!({ "sql": sql, "project": "ssb" }).to_string();
    let started = Instant::now();
    let submitted: Value = serde_json::from_str(
        &agent
            .post(&format!("{base}/kylin/api/async_query"))
            .set("Authorization", ADMIN)
            .set("Content-Type", "application/json")
            .send_string(&body)?
            .into_string()?,
    )?;
    let id = submitted["data"]["queryID"]
        .as_str()
        .with_context(|| format!("no query id in {submitted}"))?
        .to_owned();
    loop {
        let status: Value = serde_json::from_str(
            &agent
                .get(&format!("{base}/kylin/api/async_query/{id}/status"))
                .set("Authorization", ADMIN)
                .call()?
                .into_string()?,
        )?;
        match status["data"]["status"].as_str() {
            Some("SUCCESSFUL") => break,
            Some("RUNNING") => std::thread::sleep(Duration::from_millis(2)),
            _ => bail!("query failed: {status}"),
        }
    }
    let mut bytes = Vec::new();
    agent
        .get(&format!("{base}/kylin/api/async_query/{id}/result"))
        .set("Authorization", ADMIN)
        .call()?
        .into_reader()
        .read_to_end(&mut bytes)?;
    Ok((started.elapsed().as_secs_f64(), bytes.len()))
}

/// Runs `spool-server query --repeat N` and returns the median of its reported run times.
fn in_process(binary: &Path, data_dir: &Path, sql: &str, runs: usize) -> anyhow::Result<f64> {
    let out = Command::new(binary)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["query", "--project", "ssb", "--repeat"])
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

/// Runs the bench.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let options = parse(args)?;
    crate::cargo(&["build", "--release", "-p", "spool-server"])?;
    let binary = target_dir().join("release/spool-server");
    let bench_dir = workspace().join("target/bench");
    let data_dir = bench_dir.join(format!("data-sf{}", options.sf));
    let project = data_dir.join("projects/ssb");
    if !project.exists() {
        std::fs::create_dir_all(data_dir.join("projects"))?;
        let status = Command::new(&binary)
            .args(["gen-ssb", "--sf", &options.sf, "--out"])
            .arg(&project)
            .status()?;
        if !status.success() {
            bail!("gen-ssb failed");
        }
    }
    let server = start_server(&binary, &data_dir)?;
    let agent = ureq::AgentBuilder::new().build();
    let mut report = format!(
        "# Spool bench: SSB SF {} ({} runs after a warm-up, medians)\n\n\
         | query | API: submit to SUCCESSFUL + download (s) | in-process `spool-server query` (s) | overhead (s) | result bytes |\n\
         |---|---:|---:|---:|---:|\n",
        options.sf, options.runs
    );
    let (mut api_total, mut local_total) = (0.0, 0.0);
    for (name, sql) in queries()? {
        let mut times = Vec::new();
        let mut size = 0;
        for run in 0..=options.runs {
            let (t, bytes) = through_api(&agent, &server.base, &sql)?;
            size = bytes;
            if run > 0 {
                times.push(t);
            }
        }
        let api = median(times);
        let local = in_process(&binary, &data_dir, &sql, options.runs)?;
        api_total += api;
        local_total += local;
        let line = format!(
            "| {name} | {api:.3} | {local:.3} | {:.3} | {size} |\n",
            api - local
        );
        eprint!("{line}");
        report.push_str(&line);
    }
    report.push_str(&format!(
        "| **sum** | **{api_total:.3}** | **{local_total:.3}** | **{:.3}** | |\n\n\
         Server peak RSS (VmHWM): {:.0} MiB. Machine: {} cores.\n",
        api_total - local_total,
        peak_rss_mib(server.child.id()).unwrap_or(0.0),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    ));
    drop(server);
    std::fs::create_dir_all(&bench_dir)?;
    std::fs::write(bench_dir.join("report.md"), &report)?;
    println!("{report}");
    println!("written to {}", bench_dir.join("report.md").display());
    Ok(())
}
