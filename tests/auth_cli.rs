//! The `sluice token` / `serve --auth-secret` / `--token` contract: tokens signed on
//! the command line are verified by the server, and the example rules in
//! `schema/access.rules` (loaded by default with `--auth-secret`) decide what each user
//! reads and writes.

mod common;

use common::auth::SECRET;
use common::cli::{exec_as, serve_with, sluice, sub_as};
use serde_json::json;
use sluice::auth::JwtAuthenticator;

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
    let server = serve_with(&db, &["--auth-secret", SECRET]);

    let bob = token(&["--sub", "bob", "--claim", r#"teams=["T2"]"#]);
    let exec = |t: &str, sql: &str| {
        let (code, stdout, _) = exec_as(&server, Some(t), sql);
        (code, stdout)
    };
    let (code, out) = exec(&alice, "INSERT INTO issues (id, team_id, number, title, creator_id) VALUES ('a1', 'T1', 1, 'a', 'alice')");
    assert_eq!(code, 0, "{out}");
    let (code, out) = exec(&bob, "INSERT INTO issues (id, team_id, number, title, creator_id) VALUES ('b1', 'T2', 1, 'b', 'bob')");
    assert_eq!(code, 0, "{out}");
    let (code, out) = exec(&alice, "INSERT INTO issues (id, team_id, number, title, creator_id) VALUES ('a2', 'T2', 1, 'x', 'alice')");
    assert_eq!(code, 1);
    assert!(out.contains("forbidden"), "{out}");

    let (code, lines, _) = sub_as(&server, Some(&alice), "SELECT id, team_id FROM issues");
    assert_eq!(code, 0);
    let keys: Vec<&str> = lines.iter().filter_map(|l| l["key"].as_str()).collect();
    assert_eq!(keys, vec!["a1"]);
    assert_eq!(lines.last().unwrap()["op"], "snapshot_end");

    let (code, lines, stderr) = sub_as(&server, None, "SELECT * FROM issues");
    assert_ne!(code, 0);
    assert!(lines.is_empty());
    assert!(stderr.contains("token is required"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let (code, _, stderr) = sub_as(&server, Some(&alice), "SELECT password_hash FROM users");
    assert_eq!(code, 2);
    assert!(stderr.contains("password_hash"), "{stderr}");
}
