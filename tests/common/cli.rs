//! The `sluice` binary as a subprocess: `serve` over the example schema, and `exec` /
//! `sub` against it, optionally with a token.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::schema_dir;

pub fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// The certificate `serve` writes beside its database.
pub fn ca_of(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}.cert.pem", db.display()))
}

/// Spawns `sluice serve` over the example schema on `db`, listening on `listen`, with
/// `auth` arguments (`--no-auth`, or `--auth-secret` and a secret); returns the child and
/// the address of its first line.
pub fn spawn_serve(db: &Path, listen: &str, auth: &[&str]) -> (Child, String) {
    let (child, addr) = spawn_listening(
        sluice()
            .args(["serve", "--schema"])
            .arg(schema_dir())
            .arg("--db")
            .arg(db)
            .args(["--listen", listen])
            .args(auth),
    );
    assert!(!addr.ends_with(":0"), "the real port is printed: {addr}");
    (child, addr)
}

/// Spawns a `sluice serve` command (stdout piped, stderr dropped unless
/// `SLUICE_TEST_SERVER_LOG` is set, then kept with the test's) and reads its first line,
/// `listening on ADDR`; returns the child and ADDR.
pub fn spawn_listening(serve: &mut Command) -> (Child, String) {
    let stderr = if std::env::var_os("SLUICE_TEST_SERVER_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    let mut child = serve
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn sluice serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, addr)
}

/// A `sluice serve` process, killed when dropped.
pub struct Served {
    pub child: Child,
    pub addr: String,
    pub ca: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sluice serve --no-auth` on 127.0.0.1:0.
pub fn serve(db: &Path) -> Served {
    serve_with(db, &["--no-auth"])
}

/// `sluice serve` on 127.0.0.1:0 with the given `auth` arguments.
pub fn serve_with(db: &Path, auth: &[&str]) -> Served {
    let (child, addr) = spawn_serve(db, "127.0.0.1:0", auth);
    Served {
        child,
        addr,
        ca: ca_of(db),
    }
}

fn client_command(s: &Served, verb: &str, token: Option<&str>, sql: &str) -> Command {
    let mut cmd = sluice();
    cmd.args([verb, "--connect", &s.addr, "--ca"]).arg(&s.ca);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    cmd.arg(sql);
    cmd
}

/// `sluice exec`: exit code, stdout, stderr.
pub fn exec(s: &Served, sql: &str) -> (i32, String, String) {
    exec_as(s, None, sql)
}

/// `sluice exec --token`: exit code, stdout, stderr.
pub fn exec_as(s: &Served, token: Option<&str>, sql: &str) -> (i32, String, String) {
    let out = client_command(s, "exec", token, sql).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `sluice sub`: exit code, the JSON lines of stdout, stderr.
pub fn sub(s: &Served, sql: &str) -> (i32, Vec<serde_json::Value>, String) {
    sub_as(s, None, sql)
}

/// `sluice sub --token`: exit code, the JSON lines of stdout, stderr.
pub fn sub_as(s: &Served, token: Option<&str>, sql: &str) -> (i32, Vec<serde_json::Value>, String) {
    let out = client_command(s, "sub", token, sql).output().unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8(out.stderr).unwrap(),
    )
}
