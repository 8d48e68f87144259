//! Starts the real `spool-server` binary on a free loopback port with a temp data dir, and
//! talks to it over HTTP like a user.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use serde_json::Value;

/// Kylin's documented credentials, as the seed's curl lines send them.
pub const ADMIN: &str = "Basic QURNSU46S1lMSU4=";

/// This package's folder (`tests/`) in the checkout being tested: cargo says it when it runs
/// the tests; the path compiled in is only a fallback, since a test binary built in another
/// checkout of the same commit (the shared target directory) is reused as it is.
pub fn tests_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Returns the path of the server binary that `cargo test --workspace` (or `cargo xtask ci`)
/// built beside this test binary. The e2e tests do not build it themselves: a nested cargo
/// would see a different environment and rebuild Polars.
pub fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // This test binary is <target>/debug/deps/e2e-<hash>; the server is <target>/debug/.
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe.parent().and_then(Path::parent).expect("target dir");
        let binary = dir.join(format!("spool-server{}", std::env::consts::EXE_SUFFIX));
        assert!(
            binary.exists(),
            "{} is missing: run `cargo test --workspace` or `cargo xtask ci`, which build it",
            binary.display()
        );
        binary
    })
}

/// A running server process and its data directory.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    config: PathBuf,
    http: Client,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on a fresh data dir with `config` (TOML) as its config file.
    pub fn start(config: &str) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let config_path = tmp.path().join("spool.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut server = Self::spawn(data_dir, config_path);
        server._tmp = Some(tmp);
        server
    }

    /// Starts a server on an existing data dir (shared with other processes) with the config
    /// file at `config`; its log goes beside the config file.
    pub fn start_on(data_dir: &Path, config: &Path) -> Self {
        Self::spawn(data_dir.to_path_buf(), config.to_path_buf())
    }

    /// Kills the process with SIGKILL (no shutdown) and reaps it.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("reap");
    }

    fn spawn(data_dir: PathBuf, config: PathBuf) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.with_extension("log"))
            .expect("log file");
        let mut child = Command::new(server_binary())
            .arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env_remove("SPOOL_BIND")
            .env_remove("SPOOL_DATA_DIR")
            .env_remove("SPOOL_JOB_STORE")
            .env_remove("SPOOL_RESULT_STORE")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning spool-server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next()
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(config.with_extension("log")).unwrap_or_default();
                panic!("server printed nothing; its log:\n{log}")
            })
            .expect("reading stdout");
        let base = first
            .strip_prefix("spool listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_owned();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child: Some(child),
            base,
            data_dir,
            config,
            http: Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
            _tmp: None,
        }
    }

    /// Returns the server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default()
    }

    /// Kills the process with SIGKILL (no shutdown), then starts a new one on the same data.
    pub fn kill_and_restart(mut self) -> Self {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        let mut next = Self::spawn(self.data_dir.clone(), self.config.clone());
        next._tmp = self._tmp.take();
        next
    }

    /// Sends SIGTERM, waits for the process to stop, then starts a new one on the same data.
    #[cfg(unix)]
    pub fn terminate_and_restart(mut self) -> Self {
        self.sigterm();
        let mut next = Self::spawn(self.data_dir.clone(), self.config.clone());
        next._tmp = self._tmp.take();
        next
    }

    /// Sends SIGTERM and returns the exit status once the process has stopped.
    #[cfg(unix)]
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.sigterm()
    }

    /// Sends SIGTERM and waits for the process to stop.
    #[cfg(unix)]
    fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        child.wait().expect("wait")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with the given Authorization header (if any).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, self.url(path));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_owned());
        }
        req.send().expect("request")
    }

    /// Sends a request as ADMIN with extra headers.
    pub fn http_send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, self.url(path))
            .header("Authorization", ADMIN);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_owned());
        }
        req.send().expect("request")
    }

    /// GETs `path` as ADMIN with extra headers.
    pub fn http_get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.http_send("GET", path, headers, None)
    }

    pub fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let res = self.send(method, path, Some(ADMIN), body);
        let status = res.status().as_u16();
        let text = res.text().expect("body");
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (status, v)
    }

    /// Submits SQL to a project and returns the query id.
    pub fn submit(&self, sql: &str, project: &str) -> String {
        let body = serde_json::json!({ "sql": sql, "project": project }).to_string();
        let (status, v) = self.json("POST", "/kylin/api/async_query", Some(&body));
        assert_eq!(status, 200, "{v}");
        v["data"]["queryID"].as_str().expect("queryID").to_owned()
    }

    pub fn status(&self, id: &str) -> Value {
        let (status, v) = self.json("GET", &format!("/kylin/api/async_query/{id}/status"), None);
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Polls until the query leaves RUNNING (with a deadline, never a fixed sleep).
    pub fn wait(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let v = self.status(id);
            if v["data"]["status"] != "RUNNING" {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "query {id} still running; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Downloads a result as bytes, asserting a 200.
    pub fn result(&self, id: &str) -> Vec<u8> {
        let res = self.send(
            "GET",
            &format!("/kylin/api/async_query/{id}/result"),
            Some(ADMIN),
            None,
        );
        assert_eq!(res.status().as_u16(), 200);
        res.bytes().expect("body").to_vec()
    }

    /// Runs SQL to completion and returns the CSV.
    pub fn run(&self, sql: &str, project: &str) -> String {
        let id = self.submit(sql, project);
        let v = self.wait(&id);
        assert_eq!(v["data"]["status"], "SUCCESSFUL", "{sql}: {v}");
        String::from_utf8(self.result(&id)).expect("utf-8")
    }

    /// Adds a user with `spool-server user add ARGS...` (the password from `SPOOL_PASSWORD`),
    /// as an operator would on the running server.
    pub fn add_user(&self, args: &[&str], password: &str) {
        let status = std::process::Command::new(self.binary())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--config")
            .arg(&self.config)
            .arg("user")
            .arg("add")
            .args(args)
            .env("SPOOL_PASSWORD", password)
            .status()
            .expect("user add");
        assert!(status.success(), "user add {args:?}");
    }

    /// Returns the path of the server binary, to run its subcommands.
    pub fn binary(&self) -> &'static Path {
        server_binary()
    }

    /// Returns the server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Returns the peak resident set size (VmHWM) of a server in KiB, on Linux: its own and its
/// worker processes' (the queries run there), summed, so at least the peak of the whole.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let own = vm_hwm_kib(pid)?;
    Some(
        own + children(pid)
            .into_iter()
            .filter_map(vm_hwm_kib)
            .sum::<u64>(),
    )
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The live child processes of `pid` (a server's are its query worker processes).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                // pid (comm) state ppid ...: comm may hold spaces, so read after its `)`.
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map_or("", |(_, rest)| rest)
                    .split_whitespace()
                    .collect();
                fields.first() != Some(&"Z") && fields.get(1) == Some(&pid.to_string().as_str())
            })
        })
        .collect()
}

/// Returns the Basic Authorization header value for a user.
pub fn basic(user: &str, password: &str) -> String {
    // Tiny base64 encoder, to keep this crate free of product dependencies.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

/// The cells of an XLSX result's first sheet, as text.
pub fn xlsx_cells(bytes: &[u8]) -> Vec<Vec<String>> {
    use calamine::{Reader, Xlsx};
    let mut book: Xlsx<_> =
        Xlsx::new(std::io::Cursor::new(bytes.to_vec())).expect("valid workbook");
    let sheet = book
        .worksheet_range_at(0)
        .expect("a sheet")
        .expect("readable");
    sheet
        .rows()
        .map(|r| r.iter().map(ToString::to_string).collect())
        .collect()
}
