//! The inspector page in a real browser, as an operator sees it: headless Chromium,
//! driven through chromedriver's WebDriver API, opens the page of a server under a small
//! load. The page loads, lists the sessions, shows a commit count that rises, and its
//! check box shows the error of a bad subscription with its position.
//!
//! Needs Debian's `chromium` and `chromium-driver` packages (`.ci/run` installs them).
//! Without them the test says it is skipped, unless `SLUICE_REQUIRE_BROWSER=1`, which
//! makes their absence a failure.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::http::request;
use common::*;
use serde_json::{json, Value as Json};
use sluice::server::{AdminConfig, Server};

const TOKEN: &str = "inspector-test-token";
const BAD_SQL: &str = "SELECT * FROM issues WHERE nope = 1";

/// The first of `names` that exists.
fn find(names: &[&str]) -> Option<PathBuf> {
    names.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// chromedriver on a free port of loopback, stopped when dropped.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start(binary: &PathBuf) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = std::time::Instant::now() + WAIT;
        while !matches!(
            request(driver.addr, "GET", "/status", &[], None),
            Ok((200, _))
        ) {
            assert!(
                std::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    /// One WebDriver command; returns its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Json>) -> Json {
        let body = body.map(|b| b.to_string());
        let (status, text) = request(self.addr, method, path, &[], body.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let answer: Json =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }
}

/// A browser session of a [`Driver`].
struct Browser<'a> {
    driver: &'a Driver,
    id: String,
}

impl Browser<'_> {
    fn open<'a>(driver: &'a Driver, chromium: &PathBuf) -> Browser<'a> {
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"],
            },
        }}});
        let value = driver.call("POST", "/session", Some(capabilities));
        let id = value["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        Browser { driver, id }
    }

    fn call(&self, method: &str, path: &str, body: Option<Json>) -> Json {
        let path = format!("/session/{}{path}", self.id);
        self.driver.call(method, &path, body)
    }

    fn element(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        // The W3C key of an element reference.
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element `{css}`: {found}"))
            .to_string()
    }

    fn text(&self, css: &str) -> String {
        let element = self.element(css);
        self.call("GET", &format!("/element/{element}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the text of `css` satisfies `done`; returns it.
    fn wait_text(&self, what: &str, css: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let text = self.text(css);
            if done(&text) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; `{css}` shows {text:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.id);
        let _ = request(self.driver.addr, "DELETE", &path, &[], None);
    }
}

fn number(text: &str) -> u64 {
    text.chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_page_shows_the_server_live() {
    let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
    let chromedriver = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        if std::env::var("SLUICE_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("chromium/chromedriver not installed and SLUICE_REQUIRE_BROWSER=1");
        }
        eprintln!(
            "skipped: chromium/chromedriver not installed \
             (set SLUICE_REQUIRE_BROWSER=1 to fail instead)"
        );
        return;
    };

    let dir = tempfile::tempdir().unwrap();
    let handle = Server::builder(schema_dir(), dir.path().join("app.db"))
        .listen("127.0.0.1:0".parse().unwrap())
        .no_auth()
        .admin(AdminConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: Some(TOKEN.into()),
        })
        .start()
        .await
        .unwrap();
    let admin = handle.admin_addr().unwrap();
    let ca = handle.cert_path().unwrap().to_path_buf();
    let mut watchers = Vec::new();
    for name in ["ops-watcher-1", "ops-watcher-2"] {
        let mut client = Client::connect(&handle, &ca, name).await;
        client
            .subscribe(1, "SELECT * FROM issues WHERE team_id = 'T1'", None)
            .await;
        client.until("snapshot", |c| c.sub(1).end.is_some()).await;
        watchers.push(client);
    }
    // A small, bounded load: a write every 20 ms until the test is done (at most 3,000).
    let handle = Arc::new(handle);
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (handle, stop) = (handle.clone(), stop.clone());
        tokio::spawn(async move {
            for i in 0..3_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let issue = insert_issue(&format!("load-{i}"), "T1", "todo", 1);
                write_committed(&handle, vec![issue]).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // The watchers keep reading their live streams meanwhile.
    let readers: Vec<_> = watchers
        .into_iter()
        .map(|mut client| tokio::spawn(async move { while client.step().await {} }))
        .collect();

    let expected = sluice::query::check(&sluice::Schema::load_dir(&schema_dir()).unwrap(), BAD_SQL)
        .unwrap_err();
    let url = format!("http://{admin}/?token={TOKEN}");
    tokio::task::spawn_blocking(move || {
        let driver = Driver::start(&chromedriver);
        let browser = Browser::open(&driver, &chromium);
        browser.call("POST", "/url", Some(json!({ "url": url })));
        assert_eq!(browser.text("h1"), "sluice inspector");
        let sessions = browser.wait_text("both sessions listed", "#sessions-body", |t| {
            t.contains("ops-watcher-1") && t.contains("ops-watcher-2")
        });
        assert!(sessions.contains("127.0.0.1"), "{sessions}");
        browser.wait_text("the page to be live", "#status", |t| t.starts_with("live"));
        let first = number(&browser.wait_text("a commit count", "#commits", |t| number(t) > 0));
        browser.wait_text("the commit count to rise", "#commits", |t| {
            number(t) > first
        });
        browser.wait_text("a commit rate", "#commit-rate", |t| {
            t.ends_with("/s") && t != "– /s"
        });

        let input = browser.element("#check-input");
        browser.call(
            "POST",
            &format!("/element/{input}/value"),
            Some(json!({ "text": BAD_SQL })),
        );
        let button = browser.element("#check-button");
        browser.call("POST", &format!("/element/{button}/click"), Some(json!({})));
        let position = format!("line {}, column {}", expected.pos.line, expected.pos.column);
        let shown = browser.wait_text("the check's error", "#check-result", |t| {
            t.contains("error")
        });
        assert!(shown.contains(&position), "{shown:?} lacks {position}");
        assert!(shown.contains(&expected.message), "{shown:?}");
        assert!(
            shown.contains(BAD_SQL),
            "the page repeats the text: {shown:?}"
        );
    })
    .await
    .unwrap();

    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    for reader in readers {
        reader.abort();
    }
    if let Ok(handle) = Arc::try_unwrap(handle) {
        handle.shutdown().await;
    }
}
