//! `spool`: Spool's command line client. It speaks the HTTP API only, as any user's script would.
//!
//! Exit codes scripts can branch on: 0 done, 1 the query failed (or is not there), 2 usage (a
//! bad flag, or a request the server refused as malformed), 3 the server or the credentials
//! (unreachable, 401/403, 429, 5xx, a download whose digest does not match).

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Why a command did not succeed, and the exit code it ends with.
#[derive(Debug)]
enum Failure {
    /// The query failed, was stopped, or is not there (1).
    Query(String),
    /// A bad invocation or a request the server refused as malformed (2).
    Usage(String),
    /// The server, the network or the credentials (3).
    Server(String),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Self::Query(_) => 1,
            Self::Usage(_) => 2,
            Self::Server(_) => 3,
        }
    }

    fn message(&self) -> &str {
        match self {
            Self::Query(m) | Self::Usage(m) | Self::Server(m) => m,
        }
    }
}

type Outcome<T = ()> = Result<T, Failure>;

#[derive(Parser, Debug)]
#[command(name = "spool", version, about = "Spool's command line client")]
struct Cli {
    /// The server [default: the profile's, else http://127.0.0.1:7070]
    #[arg(long, env = "SPOOL_URL", global = true)]
    url: Option<String>,
    /// The user [default: the profile's]
    #[arg(long, env = "SPOOL_USER", global = true)]
    user: Option<String>,
    /// The password [default: the profile's]
    #[arg(long, env = "SPOOL_PASSWORD", hide_env_values = true, global = true)]
    password: Option<String>,
    /// The profile to read from the profiles file [default: default]
    #[arg(long, env = "SPOOL_PROFILE", global = true)]
    profile: Option<String>,
    /// The profiles file [default: $XDG_CONFIG_HOME/spool/profiles.toml, else
    /// ~/.config/spool/profiles.toml]
    #[arg(long, env = "SPOOL_PROFILES", global = true)]
    profiles: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Submit a query; prints its id (with --wait, once it has finished)
    Submit {
        /// The SQL
        sql: String,
        #[command(flatten)]
        spec: QuerySpec,
        /// Wait until the query has finished; exit 1 if it failed
        #[arg(long)]
        wait: bool,
    },
    /// Show a query's status
    Status {
        /// The query id
        id: String,
        /// Wait until the query has finished
        #[arg(long)]
        wait: bool,
    },
    /// Download a query's result (resuming a partial file, checking the digest)
    Get {
        /// The query id
        id: String,
        /// Where to write it [default: standard output]
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Submit, wait and download in one go
    Query {
        /// The SQL
        sql: String,
        #[command(flatten)]
        spec: QuerySpec,
        /// Where to write the result [default: standard output]
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// List your queries (everyone's for an admin), newest first
    Ls {
        /// Only this project's
        #[arg(long)]
        project: Option<String>,
        /// Only QUEUED, RUNNING, SUCCEEDED or FAILED ones
        #[arg(long)]
        state: Option<String>,
        /// At most this many [default: 50]
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Stop a queued or running query
    Stop {
        /// The query id
        id: String,
    },
    /// Delete a query and its result, or (admins) every query older than a time
    Rm {
        /// The query id
        #[arg(required_unless_present = "older_than", conflicts_with = "older_than")]
        id: Option<String>,
        /// Delete every query submitted before this time (`yyyy-MM-dd HH:mm:ss`, the server's
        /// time zone)
        #[arg(long)]
        older_than: Option<String>,
        /// With --older-than: only this project's
        #[arg(long, requires = "older_than")]
        project: Option<String>,
    },
}

#[derive(Args, Debug)]
struct QuerySpec {
    /// The project
    #[arg(long, default_value = "DEFAULT")]
    project: String,
    /// The result's format: csv, json, parquet, xlsx [default: the server's, csv]
    #[arg(long)]
    format: Option<String>,
}

/// A profile in the profiles file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    url: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

fn profiles_path(cli: &Cli) -> Option<PathBuf> {
    if let Some(p) = &cli.profiles {
        return Some(p.clone());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("spool").join("profiles.toml"))
}

/// Reads the profile: `cli.profile` must exist when named; the default one may be absent.
fn profile(cli: &Cli) -> Outcome<Profile> {
    let Some(path) = profiles_path(cli) else {
        return Ok(Profile::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound && cli.profiles.is_none() => {
            return match &cli.profile {
                Some(name) => Err(Failure::Usage(format!(
                    "profile {name:?} asked for, but {} does not exist",
                    path.display()
                ))),
                None => Ok(Profile::default()),
            };
        }
        Err(e) => {
            return Err(Failure::Usage(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let mut all: std::collections::BTreeMap<String, Profile> = toml::from_str(&text)
        .map_err(|e| Failure::Usage(format!("{} is not a profiles file: {e}", path.display())))?;
    let name = cli.profile.clone().unwrap_or_else(|| "default".to_owned());
    match all.remove(&name) {
        Some(p) => Ok(p),
        None if cli.profile.is_none() => Ok(Profile::default()),
        None => Err(Failure::Usage(format!(
            "{} has no profile [{name}]",
            path.display()
        ))),
    }
}

/// The server and the credentials every call uses.
struct Api {
    base: String,
    user: String,
    password: String,
    http: Client,
    /// Progress bars and lines go to standard error only when standard output is a terminal.
    interactive: bool,
}

fn server_error(e: &reqwest::Error, url: &str) -> Failure {
    Failure::Server(format!("cannot reach {url}: {e}"))
}

impl Api {
    fn new(cli: &Cli) -> Outcome<Self> {
        // The profiles file is read only when the flags and the environment leave something
        // out (or a profile is named).
        let complete = cli.url.is_some() && cli.user.is_some() && cli.password.is_some();
        let profile = if complete && cli.profile.is_none() {
            Profile::default()
        } else {
            profile(cli)?
        };
        let base = cli
            .url
            .clone()
            .or(profile.url)
            .unwrap_or_else(|| "http://127.0.0.1:7070".to_owned())
            .trim_end_matches('/')
            .to_owned();
        let user = cli.user.clone().or(profile.user).ok_or_else(|| {
            Failure::Usage(
                "no user: give --user, set SPOOL_USER, or put one in a profile".to_owned(),
            )
        })?;
        let password = cli.password.clone().or(profile.password).ok_or_else(|| {
            Failure::Usage(
                "no password: give --password, set SPOOL_PASSWORD, or put one in a profile"
                    .to_owned(),
            )
        })?;
        let http = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Long polls wait up to 50 s; downloads may take as long as they take.
            .timeout(None)
            .build()
            .map_err(|e| Failure::Server(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            base,
            user,
            password,
            http,
            interactive: io::stdout().is_terminal(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.password))
    }

    /// Sends a request; a transport error or an error status becomes a [`Failure`] with the
    /// server's message.
    fn send(&self, request: RequestBuilder) -> Outcome<Response> {
        let response = request.send().map_err(|e| server_error(&e, &self.base))?;
        let status = response.status();
        if status.is_success() || status == StatusCode::PARTIAL_CONTENT {
            return Ok(response);
        }
        let text = response.text().unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["msg"].as_str().map(str::to_owned))
            .unwrap_or(text);
        let message = format!("{} {status}: {message}", self.base);
        Err(match status.as_u16() {
            400 | 413 | 416 => Failure::Usage(message),
            404 | 409 => Failure::Query(message),
            _ => Failure::Server(message),
        })
    }

    fn json(&self, request: RequestBuilder) -> Outcome<Value> {
        let response = self.send(request)?;
        let value: Value = response
            .json()
            .map_err(|e| Failure::Server(format!("{}: not a JSON answer: {e}", self.base)))?;
        Ok(value["data"].clone())
    }

    fn status(&self, id: &str, wait_secs: u64) -> Outcome<Value> {
        let path = format!("/kylin/api/async_query/{id}/status?wait={wait_secs}");
        self.json(self.request(reqwest::Method::GET, &path))
    }

    /// Waits until the query has left RUNNING (long polls; a progress line on a terminal).
    fn wait(&self, id: &str) -> Outcome<Value> {
        let started = Instant::now();
        let line = self.interactive.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        loop {
            // With a progress line, a poll a second; without, the longest the server allows.
            let status = self.status(id, if line.is_some() { 1 } else { 50 })?;
            if let Some(bar) = &line {
                bar.set_message(format!(
                    "{} {} rows, {} written, {:.1} s",
                    status["state"].as_str().unwrap_or("RUNNING"),
                    status["rows"].as_u64().unwrap_or(0),
                    human_bytes(status["bytes"].as_u64().unwrap_or(0)),
                    started.elapsed().as_secs_f64()
                ));
            }
            if status["status"] != "RUNNING" {
                if let Some(bar) = line {
                    bar.finish_and_clear();
                }
                return Ok(status);
            }
        }
    }

    fn submit(&self, sql: &str, spec: &QuerySpec) -> Outcome<String> {
        let mut body = json!({ "sql": sql, "project": spec.project });
        if let Some(format) = &spec.format {
            body["format"] = Value::from(format.as_str());
        }
        let data = self.json(
            self.request(reqwest::Method::POST, "/kylin/api/async_query")
                .json(&body),
        )?;
        data["queryID"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Failure::Server(format!("{}: the answer has no queryID", self.base)))
    }

    /// Downloads the result of `id` into `output` (standard output when `None`), resuming a
    /// partial file and checking the SHA-256 the status gives.
    fn get(&self, id: &str, output: Option<&Path>) -> Outcome {
        let status = self.status(id, 0)?;
        ended_well(id, &status)?;
        let digest = status["sha256"].as_str().map(str::to_owned);
        let path = format!("/kylin/api/async_query/{id}/result");
        let Some(file_path) = output else {
            let mut response = self.send(self.request(reqwest::Method::GET, &path))?;
            let mut out = io::stdout().lock();
            let mut hasher = Sha256::new();
            copy(&mut response, &mut out, &mut hasher, None)?;
            out.flush()
                .map_err(|e| Failure::Server(format!("writing the result: {e}")))?;
            return check_digest(digest.as_deref(), hasher, None);
        };
        let head = self.send(self.request(reqwest::Method::HEAD, &path))?;
        let total = head
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let etag = head
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let have = std::fs::metadata(file_path).map_or(0, |m| m.len());
        let mut hasher = Sha256::new();
        let resume = match (total, &etag) {
            (Some(total), Some(_)) if have > 0 && have <= total => {
                // The bytes already there count towards the digest.
                let mut existing = File::open(file_path).map_err(|e| local(file_path, &e))?;
                io::copy(&mut existing, &mut HashWriter(&mut hasher))
                    .map_err(|e| local(file_path, &e))?;
                have
            }
            _ => 0,
        };
        if total.is_some_and(|t| resume == t) {
            return check_digest(digest.as_deref(), hasher, Some(file_path));
        }
        let mut request = self.request(reqwest::Method::GET, &path);
        if resume > 0
            && let Some(tag) = &etag
        {
            request = request
                .header(reqwest::header::RANGE, format!("bytes={resume}-"))
                .header(reqwest::header::IF_RANGE, tag);
        }
        let mut response = self.send(request)?;
        let mut file = if response.status() == StatusCode::PARTIAL_CONTENT {
            OpenOptions::new()
                .append(true)
                .open(file_path)
                .map_err(|e| local(file_path, &e))?
        } else {
            // The result changed (or there was nothing to resume): start again.
            hasher = Sha256::new();
            File::create(file_path).map_err(|e| local(file_path, &e))?
        };
        let already = if response.status() == StatusCode::PARTIAL_CONTENT {
            resume
        } else {
            0
        };
        let bar = self.interactive.then(|| {
            let bar = ProgressBar::new(total.unwrap_or(0));
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(already);
            bar
        });
        copy(&mut response, &mut file, &mut hasher, bar.as_ref())?;
        file.sync_all().map_err(|e| local(file_path, &e))?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        check_digest(digest.as_deref(), hasher, Some(file_path))
    }
}

fn local(path: &Path, e: &io::Error) -> Failure {
    Failure::Usage(format!("{}: {e}", path.display()))
}

/// Feeds what is written to a hasher.
struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn copy(
    from: &mut Response,
    to: &mut impl Write,
    hasher: &mut Sha256,
    bar: Option<&ProgressBar>,
) -> Outcome {
    let mut buffer = vec![0; 256 * 1024];
    loop {
        let n = from.read(&mut buffer).map_err(|e| {
            Failure::Server(format!("the download broke off: {e}; run again to resume"))
        })?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buffer[..n]);
        to.write_all(&buffer[..n])
            .map_err(|e| Failure::Usage(format!("writing the result: {e}")))?;
        if let Some(bar) = bar {
            bar.inc(n as u64);
        }
    }
}

fn check_digest(expected: Option<&str>, hasher: Sha256, file: Option<&Path>) -> Outcome {
    let Some(expected) = expected else {
        return Ok(());
    };
    let got: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if got.eq_ignore_ascii_case(expected) {
        return Ok(());
    }
    if let Some(path) = file {
        let _ = std::fs::remove_file(path);
    }
    Err(Failure::Server(format!(
        "the downloaded bytes have SHA-256 {got}, the server's result {expected}; the file was \
         removed, run again"
    )))
}

/// A finished query's status: fine when SUCCESSFUL, a query failure otherwise.
fn ended_well(id: &str, status: &Value) -> Outcome {
    match status["status"].as_str() {
        Some("SUCCESSFUL") => Ok(()),
        Some("RUNNING") => Err(Failure::Query(format!(
            "query {id} has not finished; `spool status {id} --wait` waits for it"
        ))),
        _ => Err(Failure::Query(format!(
            "query {id} {}: {}",
            status["state"]
                .as_str()
                .or(status["status"].as_str())
                .unwrap_or("FAILED"),
            status["info"].as_str().unwrap_or("")
        ))),
    }
}

fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

fn status_line(id: &str, s: &Value) -> String {
    format!(
        "{id}\t{}\t{} rows\t{} bytes\t{}",
        s["state"].as_str().or(s["status"].as_str()).unwrap_or("?"),
        s["rows"].as_u64().unwrap_or(0),
        s["bytes"].as_u64().unwrap_or(0),
        s["info"].as_str().unwrap_or("")
    )
}

fn run(cli: &Cli) -> Outcome {
    let api = Api::new(cli)?;
    match &cli.command {
        Command::Submit { sql, spec, wait } => {
            let id = api.submit(sql, spec)?;
            if *wait {
                let status = api.wait(&id)?;
                println!("{}", status_line(&id, &status));
                ended_well(&id, &status)
            } else {
                println!("{id}");
                Ok(())
            }
        }
        Command::Status { id, wait } => {
            let status = if *wait {
                api.wait(id)?
            } else {
                api.status(id, 0)?
            };
            println!("{}", status_line(id, &status));
            match status["status"].as_str() {
                Some("FAILED" | "MISSING") => ended_well(id, &status),
                _ => Ok(()),
            }
        }
        Command::Get { id, output } => api.get(id, output.as_deref()),
        Command::Query { sql, spec, output } => {
            let id = api.submit(sql, spec)?;
            let status = api.wait(&id)?;
            ended_well(&id, &status)?;
            api.get(&id, output.as_deref())
        }
        Command::Ls {
            project,
            state,
            limit,
        } => {
            let mut path = format!("/kylin/api/async_query?limit={limit}");
            for (name, value) in [("project", project), ("state", state)] {
                if let Some(v) = value {
                    path.push_str(&format!("&{name}={}", encode(v)));
                }
            }
            let data = api.json(api.request(reqwest::Method::GET, &path))?;
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "QUERY ID\tSTATE\tPROJECT\tOWNER\tROWS\tBYTES\tSQL");
            for q in data["queries"].as_array().into_iter().flatten() {
                let sql: String = q["sql"]
                    .as_str()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                let sql = if sql.chars().count() > 60 {
                    format!("{}…", sql.chars().take(59).collect::<String>())
                } else {
                    sql
                };
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{sql}",
                    q["queryID"].as_str().unwrap_or(""),
                    q["state"].as_str().unwrap_or(""),
                    q["project"].as_str().unwrap_or(""),
                    q["owner"].as_str().unwrap_or(""),
                    q["rows"].as_u64().unwrap_or(0),
                    q["bytes"].as_u64().unwrap_or(0),
                );
            }
            Ok(())
        }
        Command::Stop { id } => {
            let path = format!("/kylin/api/async_query/stop/{id}");
            api.json(api.request(reqwest::Method::DELETE, &path))?;
            println!("{id}\tstopped");
            Ok(())
        }
        Command::Rm {
            id,
            older_than,
            project,
        } => {
            let path = match (id, older_than) {
                (Some(id), _) => format!("/kylin/api/async_query/{id}"),
                (None, Some(when)) => {
                    let mut p = format!("/kylin/api/async_query?older_than={}", encode(when));
                    if let Some(project) = project {
                        p.push_str(&format!("&project={}", encode(project)));
                    }
                    p
                }
                (None, None) => unreachable!("clap requires one"),
            };
            api.json(api.request(reqwest::Method::DELETE, &path))?;
            println!("deleted");
            Ok(())
        }
    }
}

/// Percent-encodes a query-string value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("spool: {}", failure.message());
            ExitCode::from(failure.code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_string_values_are_percent_encoded() {
        assert_eq!(encode("2024-01-31 00:00:00"), "2024-01-31%2000%3A00%3A00");
        assert_eq!(encode("ssb"), "ssb");
    }

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn a_named_profile_is_read_and_flags_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("profiles.toml");
        std::fs::write(
            &file,
            "[default]\nurl = \"http://a:1\"\nuser = \"u\"\npassword = \"p\"\n\n[prod]\nurl = \"http://b:2/\"\nuser = \"v\"\npassword = \"q\"\n",
        )
        .expect("write");
        let parse = |args: &[&str]| {
            let mut all = vec!["spool", "--profiles", file.to_str().expect("utf-8")];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).expect("parses")
        };
        let api = Api::new(&parse(&["--profile", "prod", "ls"])).expect("api");
        assert_eq!((api.base.as_str(), api.user.as_str()), ("http://b:2", "v"));
        let api = Api::new(&parse(&["--user", "w", "ls"])).expect("api");
        assert_eq!((api.base.as_str(), api.user.as_str()), ("http://a:1", "w"));
        let err = Api::new(&parse(&["--profile", "nope", "ls"]))
            .err()
            .expect("refused");
        assert_eq!(err.code(), 2, "{}", err.message());
    }
}
