//! A real Spark cluster on loopback for the Spark engine's suites: a standalone master, two
//! workers (one core and 2 GiB each) and a Spark Connect server, all from the `pyspark` wheel on
//! PyPI (it ships Spark's jars and scripts; Java 17 is on the machine), installed into a virtual
//! environment under the tools' cache directory when missing.
//!
//! Everything binds 127.0.0.1 on free ports and lives in a temporary directory; each JVM is
//! stopped by its pid. Tests find the cluster through `SPOOL_TEST_SPARK_REMOTE` (`sc://...`),
//! `SPOOL_TEST_SPARK_UI` (the Connect server's driver UI, for the jobs it runs) and
//! `SPOOL_TEST_SPARK_WORKERS` (the workers' directories; executors run below them).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::services::tools_dir;

/// The Spark release the tests run against (the pyspark wheel ships it whole).
pub const PYSPARK: &str = "pyspark==4.3.0";
/// How long the cluster may take to come up (the Connect server: 10-30 s here).
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// Each worker's share of the machine.
const WORKER_CORES: &str = "1";
const WORKER_MEMORY: &str = "2g";

/// The Connect server ends a reattachable stream after this long (Spark's default: 2 minutes),
/// so the suites see the client resume a result; see the engine's streaming test.
pub const SENDER_MAX_STREAM: &str = "3s";

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Installs pyspark into its own virtual environment if it is not there; returns the
/// environment's directory.
pub fn install() -> anyhow::Result<PathBuf> {
    let venv = tools_dir().join("spark-venv");
    let marker = venv.join(".pyspark-version");
    if std::fs::read_to_string(&marker).is_ok_and(|v| v == PYSPARK) && spark_home(&venv).is_ok() {
        return Ok(venv);
    }
    eprintln!(
        "services: installing {PYSPARK} into {} (about 500 MB)",
        venv.display()
    );
    std::fs::create_dir_all(tools_dir())?;
    if !venv.join("bin/pip").exists() {
        crate::services::run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv (the Spark cluster needs Python 3 with venv)",
        )?;
    }
    crate::services::run(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            PYSPARK,
        ]),
        &format!("pip install {PYSPARK}"),
    )?;
    std::fs::write(&marker, PYSPARK)?;
    Ok(venv)
}

/// pyspark's directory inside `venv`: Spark's home (`bin/`, `jars/`).
fn spark_home(venv: &Path) -> anyhow::Result<PathBuf> {
    let lib = venv.join("lib");
    for entry in std::fs::read_dir(&lib).with_context(|| format!("listing {}", lib.display()))? {
        let home = entry?.path().join("site-packages/pyspark");
        if home.join("bin/spark-class").exists() {
            return Ok(home);
        }
    }
    bail!("no pyspark with bin/spark-class under {}", lib.display())
}

/// A running cluster; [`Cluster::stop`] ends it (dropping does too).
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    pids: Vec<u32>,
    remote: String,
    ui: String,
}

fn java() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("JAVA_HOME") {
        return Ok(PathBuf::from(home));
    }
    let out = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v java)\""])
        .output()
        .context("looking for java")?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let home = Path::new(&path)
        .parent()
        .and_then(Path::parent)
        .filter(|_| !path.is_empty())
        .context("Spark needs Java 17 (java on PATH or JAVA_HOME); none found")?;
    Ok(home.to_path_buf())
}

fn wait_for(what: &str, log: &Path, ready: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if ready(&text) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let tail: String = text.lines().rev().take(40).collect::<Vec<_>>().join("\n");
            bail!("{what} did not come up within {START_TIMEOUT:?}; the end of its log:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Cluster {
    /// Installs Spark if needed and starts the master, two workers and the Connect server.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let venv = install()?;
        let home = spark_home(&venv)?;
        let java_home = java()?;
        std::fs::create_dir_all(dir)?;
        let mut cluster = Self {
            dir: dir.to_path_buf(),
            pids: Vec::new(),
            remote: String::new(),
            ui: String::new(),
        };
        let spawn = |cluster: &mut Self, name: &str, args: &[String]| -> anyhow::Result<PathBuf> {
            let log = cluster.dir.join(format!("{name}.log"));
            let child = Command::new(home.join(args[0].as_str()))
                .args(&args[1..])
                .env("SPARK_HOME", &home)
                .env("JAVA_HOME", &java_home)
                .env("SPARK_LOCAL_IP", "127.0.0.1")
                .env("SPARK_LOCAL_DIRS", cluster.dir.join("local"))
                .env("SPARK_LOG_DIR", &cluster.dir)
                .env("SPARK_WORKER_DIR", cluster.dir.join(format!("{name}-work")))
                .env("SPARK_MASTER_OPTS", "-Dspark.master.rest.enabled=false")
                .current_dir(&cluster.dir)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log)?)
                .stderr(std::fs::File::create(
                    cluster.dir.join(format!("{name}.err")),
                )?)
                .spawn()
                .with_context(|| format!("starting Spark's {name}"))?;
            cluster.pids.push(child.id());
            Ok(cluster.dir.join(format!("{name}.err")))
        };
        let master_port = free_port()?;
        let master_ui = free_port()?;
        let master = format!("spark://127.0.0.1:{master_port}");
        let log = spawn(
            &mut cluster,
            "master",
            &[
                "bin/spark-class".into(),
                "org.apache.spark.deploy.master.Master".into(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                master_port.to_string(),
                "--webui-port".into(),
                master_ui.to_string(),
            ],
        )?;
        wait_for("Spark's master", &log, |l| {
            l.contains("I have been elected leader")
        })?;
        for worker in ["worker1", "worker2"] {
            let work_dir = cluster
                .dir
                .join(format!("{worker}-work"))
                .display()
                .to_string();
            let log = spawn(
                &mut cluster,
                worker,
                &[
                    "bin/spark-class".into(),
                    "org.apache.spark.deploy.worker.Worker".into(),
                    "--host".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    free_port()?.to_string(),
                    "--webui-port".into(),
                    free_port()?.to_string(),
                    "--cores".into(),
                    WORKER_CORES.into(),
                    "--memory".into(),
                    WORKER_MEMORY.into(),
                    "--work-dir".into(),
                    work_dir,
                    master.clone(),
                ],
            )?;
            wait_for("a Spark worker", &log, |l| {
                l.contains("Successfully registered with master")
            })?;
        }
        let connect_port = free_port()?;
        let ui_port = free_port()?;
        let conf = |k: &str, v: &str| ["--conf".to_owned(), format!("{k}={v}")];
        let mut args: Vec<String> = vec![
            "bin/spark-submit".into(),
            "--class".into(),
            "org.apache.spark.sql.connect.service.SparkConnectServer".into(),
            "--name".into(),
            "spool-test-connect".into(),
            "--master".into(),
            master.clone(),
            "--executor-memory".into(),
            "1536m".into(),
            "--driver-memory".into(),
            "1g".into(),
        ];
        for (k, v) in [
            ("spark.connect.grpc.binding.address", "127.0.0.1"),
            ("spark.connect.grpc.binding.port", &connect_port.to_string()),
            ("spark.driver.host", "127.0.0.1"),
            ("spark.driver.bindAddress", "127.0.0.1"),
            ("spark.ui.enabled", "true"),
            ("spark.ui.port", &ui_port.to_string()),
            ("spark.port.maxRetries", "0"),
            (
                "spark.connect.execute.reattachable.senderMaxStreamDuration",
                SENDER_MAX_STREAM,
            ),
            ("spark.sql.shuffle.partitions", "4"),
            // Spark Connect holds each task's whole result (as Arrow batches) in the executor
            // until the driver takes it: scan splits of 32 MiB keep an export's tasks small.
            ("spark.sql.files.maxPartitionBytes", "32m"),
            ("spark.ui.showConsoleProgress", "false"),
            // The suites count finished jobs through the UI; keep every one of a CI run.
            ("spark.ui.retainedJobs", "100000"),
        ] {
            args.extend(conf(k, v));
        }
        // spark-submit needs a primary resource; the Connect server's jar is in `jars/`.
        args.push("spark-internal".into());
        let log = spawn(&mut cluster, "connect", &args)?;
        wait_for("the Spark Connect server", &log, |l| {
            l.contains("Spark Connect server started")
        })?;
        cluster.remote = format!("sc://127.0.0.1:{connect_port}");
        cluster.ui = format!("http://127.0.0.1:{ui_port}");
        eprintln!(
            "services: Spark (pids {:?}) Connect on {}, master {master}",
            cluster.pids, cluster.remote
        );
        Ok(cluster)
    }

    /// The environment the suites read.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SPOOL_TEST_SPARK_REMOTE", self.remote.clone()),
            ("SPOOL_TEST_SPARK_UI", self.ui.clone()),
            (
                "SPOOL_TEST_SPARK_WORKERS",
                ["worker1", "worker2"]
                    .map(|w| self.dir.join(format!("{w}-work")).display().to_string())
                    .join(":"),
            ),
        ]
    }

    /// The JVMs' pids.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Leaves the cluster running after this value is gone (for `services start`).
    pub fn detach(mut self) {
        self.pids.clear();
    }

    /// Stops every JVM (the Connect server first), and the executors the workers started.
    pub fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        for pid in self.pids.drain(..).rev() {
            crate::services::stop_pid(pid);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
