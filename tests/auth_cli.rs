//! The `sluice token` / `serve --auth-secret` / `--token` contract: tokens signed on
//! the command line are verified by the server, and the example rules in
//! `schema/access.rules` (loaded by default with `--auth-secret`) decide what each user
//! reads and writes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;
use sluice::auth::JwtAuthenticator;

const SECRET: &str = "cli-auth-test-secret";

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema")
}

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

fn token(args: &[&str]) -> String {
    let out = sluice()
        .args(["token", "--secret", SECRET])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn sub(
    addr: &str,
    ca: &Path,
    token: Option<&str>,
    sql: &str,
) -> (i32, Vec<serde_json::Value>, String) {
    let mut cmd = sluice();
    cmd.args(["sub", "--connect", addr, "--ca"]).arg(ca);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    let out = cmd.arg(sql).output().unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn token_serve_auth_secret_and_sub_token() {
    let alice = token(&["--sub", "alice", "--claim", r#"teams=["T1"]"#]);
    let verified = JwtAuthenticator::new(SECRET).verify(&alice).unwrap();
    assert_eq!(verified.sub.as_deref(), Some("alice"));
    assert_eq!(verified.extra["teams"], json!(["T1"]));
    let bad = sluice()
        .args([
            "token",
            "--secret",
            SECRET,
            "--sub",
            "x",
            "--claim",
            "teams=[T1]",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert_eq!(String::from_utf8_lossy(&bad.stderr).lines().count(), 1);

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let mut child = sluice()
        .args(["serve", "--schema"])
        .arg(schema_dir())
        .arg("--db")
        .arg(&db)
        .args(["--listen", "127.0.0.1:0", "--auth-secret", SECRET])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let ca = PathBuf::from(format!("{}.cert.pem", db.display()));

    let bob = token(&["--sub", "bob", "--claim", r#"teams=["T2"]"#]);
    let exec = |t: &str, sql: &str| {
        let out = sluice()
            .args(["exec", "--connect", &addr, "--ca"])
            .arg(&ca)
            .args(["--token", t, sql])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
        )
    };
    let (code, out) = exec(&alice, "INSERT INTO issues (id, team_id, number, title, creator_id) VALUES ('a1', 'T1', 1, 'a', 'alice')");
    assert_eq!(code, 0, "{out}");
    let (code, out) = exec(&bob, "INSERT INTO issues (id, team_id, number, title, creator_id) VALUES ('b1', 'T2', 1, 'b', 'bob')");
    assert_eq!(code, 0, "{out}");
    let (code, out) = exec(&alice, "INSERT INTO issues (id, team_id, number, title, creator_id) VALUES ('a2', 'T2', 1, 'x', 'alice')");
    assert_eq!(code, 1);
    assert!(out.contains("forbidden"), "{out}");

    let (code, lines, _) = sub(&addr, &ca, Some(&alice), "SELECT id, team_id FROM issues");
    assert_eq!(code, 0);
    let keys: Vec<&str> = lines.iter().filter_map(|l| l["key"].as_str()).collect();
    assert_eq!(keys, vec!["a1"]);
    assert_eq!(lines.last().unwrap()["op"], "snapshot_end");

    let (code, lines, stderr) = sub(&addr, &ca, None, "SELECT * FROM issues");
    assert_ne!(code, 0);
    assert!(lines.is_empty());
    assert!(stderr.contains("token is required"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let (code, _, stderr) = sub(&addr, &ca, Some(&alice), "SELECT password_hash FROM users");
    assert_eq!(code, 2);
    assert!(stderr.contains("password_hash"), "{stderr}");

    let _ = child.kill();
    let _ = child.wait();
}
