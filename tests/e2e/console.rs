//! The web console in a real browser: headless Chromium driven through chromedriver's
//! WebDriver API (plain HTTP, spoken here with reqwest), against the real server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::Server;

/// WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the console test needs Chromium and chromedriver (Debian's \
             chromium and chromium-driver). `cargo xtask ci` installs them and sets it; for a \
             shell, `eval \"$(cargo xtask services start)\"` does the same"
        )
    })
}

/// A chromedriver process and one browser session, both ended on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
}

impl Browser {
    fn start(downloads: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let driver = Command::new(required("SPOOL_TEST_CHROMEDRIVER"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": required("SPOOL_TEST_CHROMIUM"),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000"],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            },
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .expect("new session")
            .json()
            .expect("json");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        let browser = Self {
            driver,
            base,
            session,
            http,
        };
        // Headless Chromium saves downloads only where it is told to.
        browser.call(
            "POST",
            "chromium/send_command",
            json!({"cmd": "Page.setDownloadBehavior",
                   "params": {"behavior": "allow", "downloadPath": downloads.display().to_string()}}),
        );
        browser
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let request = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url).json(&body),
        };
        let answer: Value = request.send().expect("webdriver").json().expect("json");
        if answer["value"]["error"].is_string() {
            panic!("webdriver {path}: {answer}");
        }
        answer["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("POST", "url", json!({ "url": url }));
    }

    /// The element matching `css`, waiting for it to appear.
    fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let url = format!("{}/session/{}/element", self.base, self.session);
            let answer: Value = self
                .http
                .post(url)
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .expect("webdriver")
                .json()
                .expect("json");
            if let Some(id) = answer["value"][ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "no element {css}: {answer}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.call("POST", &format!("element/{id}/click"), json!({}));
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call("POST", &format!("element/{id}/clear"), json!({}));
        self.call(
            "POST",
            &format!("element/{id}/value"),
            json!({ "text": text }),
        );
    }

    fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.call("GET", &format!("element/{id}/text"), Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` in the page and returns what it returns.
    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    /// Waits until `script` returns true.
    fn wait_for(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.eval(script) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, to: &Path) {
        use base64::Engine as _;
        let png = self.call("GET", "screenshot", Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("png");
        std::fs::create_dir_all(to.parent().expect("dir")).expect("mkdir");
        std::fs::write(to, bytes).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The workspace's `target/`, where the screenshot is kept.
fn target_dir() -> PathBuf {
    crate::harness::tests_dir()
        .parent()
        .expect("workspace")
        .join("target")
}

/// Waits for a finished download in `dir` (Chromium writes `*.crdownload` until it is done).
fn downloaded(dir: &Path) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("downloads")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        if let [file] = files.as_slice()
            && file.extension().is_none_or(|x| x != "crdownload")
        {
            return file.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no download in {}: {files:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_console_logs_in_runs_a_query_and_downloads_its_result() {
    let server = Server::start("workers = 2\nsample_sf = 0.002\n");
    let downloads = tempfile::tempdir().expect("tempdir");
    let browser = Browser::start(downloads.path());
    browser.open(&server.url("/"));

    // A wrong password is refused and says so.
    browser.type_into("#user", "ADMIN");
    browser.type_into("#password", "wrong");
    browser.click("#login-button");
    browser.wait_for(
        "the refusal",
        "return document.getElementById('message').textContent.startsWith('Login failed');",
    );

    browser.type_into("#password", "KYLIN");
    browser.click("#login-button");
    browser.wait_for(
        "the tables of ssb",
        "return document.getElementById('tables').dataset.project === 'ssb' \
         && document.querySelectorAll('#tables details').length >= 6;",
    );
    assert_eq!(browser.text("#who-name"), "ADMIN");
    let tables = browser
        .eval("return [...document.querySelectorAll('#tables summary')].map(s => s.textContent);");
    let tables: Vec<&str> = tables
        .as_array()
        .expect("list")
        .iter()
        .map(|t| t.as_str().expect("text"))
        .collect();
    assert!(
        tables.iter().any(|t| t.eq_ignore_ascii_case("lineorder")),
        "{tables:?}"
    );
    assert!(
        tables
            .iter()
            .any(|t| t.eq_ignore_ascii_case("p_lineorder (view)")),
        "{tables:?}"
    );

    browser.type_into("#sql", "select * from p_lineorder limit 100");
    browser.click("#submit");
    browser.wait_for(
        "SUCCEEDED in the list",
        "const row = document.querySelector('#queries tbody tr'); \
         return !!row && row.dataset.state === 'SUCCEEDED';",
    );
    let id = browser
        .eval("return document.querySelector('#queries tbody tr').dataset.id;")
        .as_str()
        .expect("id")
        .to_owned();
    browser.screenshot(&target_dir().join("console.png"));

    // The file the browser saves is the API's result, byte for byte.
    browser.click("#queries tbody tr button.download");
    let file = downloaded(downloads.path());
    let api = server.result(&id);
    assert_eq!(std::fs::read(&file).expect("downloaded file"), api);
    assert_eq!(String::from_utf8(api).expect("utf-8").lines().count(), 100);

    // Delete from the page: the query is gone for the API too.
    browser.click("#queries tbody tr button.delete");
    browser.wait_for(
        "the row to go",
        &format!("return !document.querySelector('#queries tbody tr[data-id=\"{id}\"]');"),
    );
    assert_eq!(server.status(&id)["data"]["status"], "MISSING");
}

#[test]
fn the_console_is_embedded_strict_and_can_be_turned_off() {
    let server = Server::start("workers = 1\nsample_sf = 0.002\n");
    for (path, kind) in [
        ("/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let res = server.send("GET", path, None, None);
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let headers = res.headers();
        assert!(
            headers["content-type"]
                .to_str()
                .expect("type")
                .starts_with(kind)
        );
        let policy = headers["content-security-policy"].to_str().expect("csp");
        assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let body = res.text().expect("body");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} fetches nothing from elsewhere"
        );
    }
    let off = Server::start("workers = 1\nsample_sf = 0.002\nconsole = false\n");
    assert_eq!(off.send("GET", "/", None, None).status().as_u16(), 404);
}
