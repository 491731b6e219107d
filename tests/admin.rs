//! The admin listener as an operator uses it: Prometheus metrics that count what the
//! server did, the inspector's JSON (sessions, shapes, `sluice check`), and its
//! protection (a token, required off loopback).

mod common;

use std::net::SocketAddr;

use common::http::{encode, get};
use common::*;
use sluice::server::{AdminConfig, AdminError, Server, ServerError, ServerHandle};

async fn start_admin(dir: &std::path::Path, token: Option<&str>) -> ServerHandle {
    Server::builder(schema_dir(), dir.join("app.db"))
        .listen("127.0.0.1:0".parse().unwrap())
        .no_auth()
        .admin(AdminConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: token.map(str::to_string),
        })
        .start()
        .await
        .unwrap()
}

/// A GET off the async workers.
async fn fetch(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (path, headers): (String, Vec<(String, String)>) = (
        path.to_string(),
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    tokio::task::spawn_blocking(move || {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        get(addr, &path, &headers)
    })
    .await
    .unwrap()
}

/// The value of an unlabelled (or exactly labelled) sample in Prometheus text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test]
async fn metrics_count_what_the_server_did() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_admin(dir.path(), None).await;
    let admin = handle.admin_addr().unwrap();
    assert_ne!(admin.port(), handle.local_addr().port());
    let ca = handle.cert_path().unwrap().to_path_buf();
    let mut client = Client::connect(&handle, &ca, "watcher").await;
    client
        .subscribe(1, "SELECT * FROM issues WHERE team_id = 'T1'", None)
        .await;
    client
        .subscribe(2, "SELECT * FROM issues WHERE status != 'done'", None)
        .await;
    client
        .subscribe(
            3,
            "SELECT * FROM issues WHERE team_id = 'T2' ORDER BY number DESC LIMIT 2",
            None,
        )
        .await;
    client
        .until("snapshots", |c| {
            c.sub(1).end.is_some() && c.sub(2).end.is_some() && c.sub(3).end.is_some()
        })
        .await;
    for i in 0..5 {
        write_committed(
            &handle,
            vec![
                insert_issue(&format!("a{i}"), "T1", "todo", 1),
                insert_issue(&format!("b{i}"), "T2", "done", 1),
            ],
        )
        .await;
    }
    client
        .until("the live changes", |c| c.sub(1).rows.len() == 5)
        .await;

    // A send is timed right after its frame is handed to QUIC, which may be just after
    // the client has read it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let metrics = loop {
        let (status, metrics) = fetch(admin, "/metrics", &[]).await;
        assert_eq!(status, 200);
        if sample(&metrics, "sluice_commit_to_send_seconds_count") == Some(5.0) {
            break metrics;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let value = |name: &str| sample(&metrics, name).unwrap_or_else(|| panic!("{name}: {metrics}"));
    assert_eq!(value("sluice_commits_total"), 5.0);
    assert_eq!(value("sluice_rows_changed_total"), 10.0);
    assert_eq!(value("sluice_fanout_deliveries_total"), 5.0);
    assert_eq!(value("sluice_sessions"), 1.0);
    assert_eq!(value("sluice_subscriptions"), 3.0);
    assert_eq!(value("sluice_shapes{kind=\"indexed\"}"), 1.0);
    assert_eq!(value("sluice_shapes{kind=\"residual\"}"), 1.0);
    assert_eq!(value("sluice_shapes{kind=\"window\"}"), 1.0);
    assert_eq!(value("sluice_log_head"), 5.0);
    assert_eq!(value("sluice_log_horizon"), 0.0);
    assert_eq!(value("sluice_commit_to_send_seconds_count"), 5.0);
    assert_eq!(
        value("sluice_quota_refusals_total{quota=\"subscriptions_per_user\"}"),
        0.0
    );
    assert_eq!(
        value("sluice_session_cutoffs_total{reason=\"lagging\"}"),
        0.0
    );
    for name in [
        "sluice_pins",
        "sluice_session_queue_depth",
        "sluice_session_queue_depth_max",
        "sluice_bootstraps_running",
        "sluice_fetches_running",
        "sluice_bootstrap_rows_total",
    ] {
        value(name);
    }
    assert!(metrics.contains("# TYPE sluice_commit_to_send_seconds histogram"));
    handle.shutdown().await;
}

#[tokio::test]
async fn the_inspector_state_lists_sessions_and_shapes_and_checks_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_admin(dir.path(), None).await;
    let admin = handle.admin_addr().unwrap();
    let ca = handle.cert_path().unwrap().to_path_buf();
    let mut client = Client::connect(&handle, &ca, "phone-1").await;
    client
        .subscribe(1, "SELECT * FROM users WHERE name != 'x'", None)
        .await;
    client.until("snapshot", |c| c.sub(1).end.is_some()).await;

    let (status, page) = fetch(admin, "/", &[]).await;
    assert_eq!(status, 200);
    assert!(page.contains("sluice inspector") && !page.contains("src=\"http"));
    let (status, body) = fetch(admin, "/api/state", &[]).await;
    assert_eq!(status, 200);
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["session_count"], 1);
    let session = &state["sessions"][0];
    assert_eq!(session["client"], "phone-1");
    assert_eq!(session["subscriptions"], 1);
    assert!(session["bytes_sent"].as_u64().unwrap() > 0);
    assert_eq!(state["top_shapes"][0]["kind"], "residual");
    assert_eq!(state["top_shapes"][0]["subscribers"], 1);

    let good = encode("SELECT * FROM issues WHERE 'T1' = team_id");
    let (_, body) = fetch(admin, &format!("/api/check?sql={good}"), &[]).await;
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(
        answer["normalized"],
        "SELECT * FROM issues WHERE team_id = 'T1'"
    );
    let bad = encode("SELECT * FROM issues\nWHERE nope = 1");
    let (_, body) = fetch(admin, &format!("/api/check?sql={bad}"), &[]).await;
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(
        (answer["line"].as_u64(), answer["column"].as_u64()),
        (Some(2), Some(7))
    );
    assert!(
        answer["message"].as_str().unwrap().contains("nope"),
        "{answer}"
    );

    let (status, _) = fetch(admin, "/nothing", &[]).await;
    assert_eq!(status, 404);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_token_protects_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_admin(dir.path(), Some("s3cret")).await;
    let admin = handle.admin_addr().unwrap();
    for path in ["/", "/metrics", "/api/state", "/api/check?sql=x"] {
        assert_eq!(fetch(admin, path, &[]).await.0, 401, "{path}");
        let wrong = [("Authorization", "Bearer s3creT")];
        assert_eq!(fetch(admin, path, &wrong).await.0, 401, "{path}");
    }
    let bearer = [("Authorization", "Bearer s3cret")];
    assert_eq!(fetch(admin, "/metrics", &bearer).await.0, 200);
    assert_eq!(fetch(admin, "/?token=s3cret", &[]).await.0, 200);
    handle.shutdown().await;

    // Off loopback, no token is refused before anything is bound.
    let refused = Server::builder(schema_dir(), dir.path().join("other.db"))
        .listen("127.0.0.1:0".parse().unwrap())
        .no_auth()
        .admin(AdminConfig {
            addr: "0.0.0.0:0".parse().unwrap(),
            token: None,
        })
        .start()
        .await;
    assert!(matches!(
        refused,
        Err(ServerError::Admin(AdminError::TokenRequired(_)))
    ));
}

/// `sluice serve --admin` tells where the admin listener is on stderr (stdout keeps its
/// one line), and refuses a non-loopback address without `--admin-token` in one line.
#[test]
fn the_command_line_starts_the_admin_listener() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    use common::cli::sluice;
    let dir = tempfile::tempdir().unwrap();
    let serve = |db: &str, admin: &str| {
        let mut command = sluice();
        command
            .args(["serve", "--schema"])
            .arg(schema_dir())
            .arg("--db")
            .arg(dir.path().join(db))
            .args(["--listen", "127.0.0.1:0", "--no-auth", "--admin", admin]);
        command
    };
    let out = serve("refused.db", "0.0.0.0:0").output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(stderr.contains("give it an admin token"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(out.stdout.is_empty());

    let mut child = serve("app.db", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on 127.0.0.1:"), "{line}");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut admin = String::new();
    while !admin.contains("admin listening on") {
        admin.clear();
        if stderr.read_line(&mut admin).unwrap() == 0 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let addr: SocketAddr = admin
        .trim()
        .strip_prefix("admin listening on http://")
        .and_then(|a| a.strip_suffix('/'))
        .unwrap_or_else(|| panic!("{admin:?}"))
        .parse()
        .unwrap();
    assert_ne!(addr.port(), 0);
}
