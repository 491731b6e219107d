//! The `sluice` command contract (DESIGN.md): the serve line, the JSON lines of `sub`
//! and `exec`, exit codes, one-line errors, and durability of acked writes across
//! `kill -9` of the server process.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::cli::{exec, serve, sluice, sub};
use common::schema_dir;

const INSERT_A: &str = "INSERT INTO issues (id, team_id, number, title, status, priority) \
                        VALUES ('a', 'T1', 1, 'first', 'todo', 2)";

#[test]
fn serve_exec_sub_follow_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("app.db"));

    let (code, stdout, _) = exec(&server, INSERT_A);
    assert_eq!(code, 0);
    let ack: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let first_sync = ack["sync_id"].as_u64().expect("{\"sync_id\":N}");

    let (code, stdout, _) = exec(&server, INSERT_A);
    assert_eq!(code, 1, "a rejected transaction exits 1");
    let err: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(err["error"].as_str().unwrap().contains("already"), "{err}");

    let (code, lines, _) = sub(&server, "SELECT id, title FROM issues WHERE team_id = 'T1'");
    assert_eq!(code, 0);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        lines[0],
        serde_json::json!({"op": "insert", "table": "issues", "key": "a",
                           "row": {"id": "a", "title": "first"}})
    );
    assert_eq!(
        lines[1],
        serde_json::json!({"op": "snapshot_end", "sync_id": first_sync})
    );
}

#[test]
fn sub_follow_prints_live_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("app.db"));
    exec(&server, INSERT_A);
    let mut follower = sluice()
        .args(["sub", "--follow", "--connect", &server.addr, "--ca"])
        .arg(&server.ca)
        .arg("SELECT * FROM issues WHERE status != 'done'")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let mut next = || -> serde_json::Value {
        serde_json::from_str(&lines.next().expect("a line").unwrap()).unwrap()
    };
    assert_eq!(next()["op"], "insert");
    assert_eq!(next()["op"], "snapshot_end");
    let (_, out, _) = exec(&server, "UPDATE issues SET title = 'second' WHERE id = 'a'");
    let update_sync: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let update = next();
    assert_eq!(update["op"], "update");
    assert_eq!(update["row"]["title"], "second");
    assert_eq!(update["sync_id"], update_sync["sync_id"]);
    exec(&server, "UPDATE issues SET status = 'done' WHERE id = 'a'");
    let gone = next();
    assert_eq!(
        (
            gone["op"].as_str(),
            gone["key"].as_str(),
            gone["reason"].as_str()
        ),
        (Some("delete"), Some("a"), Some("moved_out"))
    );
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn sub_follow_prints_a_window_with_reason_window() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("app.db"));
    for i in 1..=3 {
        exec(
            &server,
            &format!(
                "INSERT INTO messages (id, room_id, author_id, body, sent_at) \
                 VALUES ({i}, 'r', 'u', 'm{i}', {i})"
            ),
        );
    }
    let mut follower = sluice()
        .args(["sub", "--follow", "--connect", &server.addr, "--ca"])
        .arg(&server.ca)
        .arg("SELECT id FROM messages WHERE room_id = 'r' ORDER BY sent_at DESC LIMIT 2")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let mut next = || -> serde_json::Value {
        serde_json::from_str(&lines.next().expect("a line").unwrap()).unwrap()
    };
    let mut keys = vec![next()["key"].clone(), next()["key"].clone()];
    keys.sort_by_key(|k| k.as_i64());
    assert_eq!(keys, vec![serde_json::json!(2), serde_json::json!(3)]);
    assert_eq!(next()["op"], "snapshot_end");
    exec(
        &server,
        "INSERT INTO messages (id, room_id, author_id, body, sent_at) VALUES (4, 'r', 'u', 'm4', 4)",
    );
    let mut events = [next(), next()];
    events.sort_by_key(|e| e["op"].as_str().map(str::to_string));
    assert_eq!(
        (
            events[0]["op"].as_str(),
            events[0]["key"].as_i64(),
            events[0]["reason"].as_str()
        ),
        (Some("delete"), Some(2), Some("window"))
    );
    assert_eq!(
        (
            events[1]["op"].as_str(),
            events[1]["key"].as_i64(),
            events[1]["row"]["sent_at"].as_i64()
        ),
        (Some("insert"), Some(4), Some(4))
    );
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn user_errors_are_one_line_and_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("app.db"));
    let (code, lines, stderr) = sub(&server, "SELECT * FROM issues WHERE nope = 1");
    assert_ne!(code, 0);
    assert!(lines.is_empty());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unknown column `nope`"), "{stderr}");

    let (code, _, stderr) = exec(&server, "UPDATE issues SET title = 'x'");
    assert_ne!(code, 0);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // Unreachable server / wrong certificate: a clear line, no panic.
    let other = tempfile::tempdir().unwrap();
    let other_server = serve(&other.path().join("other.db"));
    let out = sluice()
        .args(["sub", "--connect", &server.addr, "--ca"])
        .arg(&other_server.ca)
        .arg("SELECT * FROM issues")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn check_prints_normalized_form_or_positioned_error() {
    let ok = sluice()
        .args(["check", "--schema"])
        .arg(schema_dir())
        .arg("SELECT * FROM issues WHERE status != 'done' AND 'T1' = team_id")
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(ok.stdout).unwrap().trim(),
        "SELECT * FROM issues WHERE status != 'done' AND team_id = 'T1'"
    );
    let bad = sluice()
        .args(["check", "--schema"])
        .arg(schema_dir())
        .arg("SELECT * FROM issues ORDER BY priority")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8(bad.stderr).unwrap();
    assert!(stderr.contains("line 1, column 31"), "{stderr}");
    assert!(stderr.contains("ORDER BY needs LIMIT"), "{stderr}");
    let window = sluice()
        .args(["check", "--schema"])
        .arg(schema_dir())
        .arg("SELECT id, title FROM issues WHERE team_id = :t ORDER BY created_at DESC LIMIT :n")
        .output()
        .unwrap();
    assert_eq!(window.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(window.stdout).unwrap().trim(),
        "SELECT id, team_id, title, created_at FROM issues WHERE team_id = :t \
         ORDER BY created_at DESC, id ASC LIMIT :n"
    );
}

#[test]
fn acked_writes_survive_kill_9_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let mut acked = Vec::new();
    {
        let mut server = serve(&db);
        for i in 0..15 {
            let sql = format!(
                "INSERT INTO issues (id, team_id, number, title) VALUES ('k{i}', 'T9', {i}, 't')"
            );
            let (code, out, _) = exec(&server, &sql);
            assert_eq!(code, 0, "{out}");
            acked.push(format!("k{i}"));
        }
        // SIGKILL: no shutdown path runs.
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let server = serve(&db);
    let (code, lines, _) = sub(&server, "SELECT id FROM issues WHERE team_id = 'T9'");
    assert_eq!(code, 0);
    let mut keys: Vec<String> = lines
        .iter()
        .filter(|l| l["op"] == "insert")
        .map(|l| l["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    acked.sort();
    assert_eq!(keys, acked);
}

#[test]
fn an_unreachable_server_is_one_line_and_non_zero() {
    // A valid CA file, but nothing listens on the port.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let ca = {
        let server = serve(&db);
        server.ca.clone()
    };
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = socket.local_addr().unwrap().to_string();
    let out = sluice()
        .args(["sub", "--connect", &silent, "--ca"])
        .arg(&ca)
        .arg("SELECT * FROM issues")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    assert!(out.stdout.is_empty());
}
