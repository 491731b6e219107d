//! A throwaway PostgreSQL for the PostgreSQL tests.
//!
//! [`PgCluster::start`] runs `initdb` and `pg_ctl` in a temporary folder (as the
//! `postgres` user when the tests run as root: PostgreSQL refuses to run as root), on a
//! port of its own, with `wal_level = logical`; dropping it stops the cluster (a Drop
//! guard, so a panicking test stops it too) and removes the folder. With
//! `SLUICE_TEST_POSTGRES_URL` set, the tests use that server instead (a superuser or a
//! role with REPLICATION and CREATEDB, `wal_level = logical`): each test gets a database
//! of its own, dropped at the end.
//!
//! Without the binaries the tests print `skipped: ...` and pass, unless
//! `SLUICE_REQUIRE_POSTGRES=1` is set: then they fail.

#![allow(dead_code)]

pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// The server tests connect to, and what to clean up afterwards.
pub struct PgCluster {
    /// `postgres://…/DB` of the test's own database.
    pub url: String,
    /// The maintenance URL (database `postgres`), to drop the test database.
    admin_url: String,
    dbname: String,
    /// The cluster we started, if we did (none when pointed at an existing server).
    owned: Option<Owned>,
}

struct Owned {
    dir: tempfile::TempDir,
    pg_ctl: PathBuf,
    as_postgres: bool,
}

static NEXT_DB: AtomicU64 = AtomicU64::new(0);

impl PgCluster {
    /// A fresh database on a fresh cluster (or on `SLUICE_TEST_POSTGRES_URL`); `None`
    /// (after printing why) when PostgreSQL is not installed and not required.
    pub fn start(test: &str) -> Option<PgCluster> {
        PgCluster::launch(test, false).map(|(cluster, _)| cluster)
    }

    /// A fresh database on a fresh cluster that takes TCP connections over TLS only, its
    /// certificate issued for `localhost` by a CA of its own (see [`tls`]); `None` when
    /// PostgreSQL is not installed (and not required) or the tests use a server of
    /// their own (`SLUICE_TEST_POSTGRES_URL`: its TLS is not ours to set up).
    pub fn start_tls(test: &str) -> Option<(PgCluster, tls::TestCa)> {
        if std::env::var("SLUICE_TEST_POSTGRES_URL").is_ok() {
            println!(
                "skipped: TLS tests start their own cluster (SLUICE_TEST_POSTGRES_URL is set)"
            );
            return None;
        }
        PgCluster::launch(test, true).map(|(cluster, ca)| (cluster, ca.expect("TLS files")))
    }

    fn launch(test: &str, tls: bool) -> Option<(PgCluster, Option<tls::TestCa>)> {
        let dbname = format!(
            "sluice_{}_{}_{}",
            test,
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        if let Ok(url) = std::env::var("SLUICE_TEST_POSTGRES_URL") {
            let admin_url = url.clone();
            psql(&admin_url, &format!("CREATE DATABASE {dbname}")).expect("create database");
            let url = with_db(&url, &dbname);
            let cluster = PgCluster {
                url,
                admin_url,
                dbname,
                owned: None,
            };
            return Some((cluster, None));
        }
        let Some(bin) = find_bin() else {
            let why = "PostgreSQL binaries (initdb, pg_ctl) not found";
            if std::env::var("SLUICE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("{why}, and SLUICE_REQUIRE_POSTGRES=1");
            }
            println!("skipped: {why} (install postgresql, or set SLUICE_TEST_POSTGRES_URL)");
            eprintln!("skipped: {why}");
            return None;
        };
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg")
            .tempdir()
            .expect("temp dir");
        if as_postgres {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres")
                .arg(dir.path()));
        }
        let data = dir.path().join("data");
        let mut initdb = pg_command(&bin.join("initdb"), as_postgres);
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .arg("--no-instructions");
        run(&mut initdb);
        let ca = tls.then(|| {
            std::fs::write(data.join("pg_hba.conf"), tls::HBA_TLS_ONLY).expect("write hba");
            let owner = as_postgres.then_some("postgres");
            tls::write_server_files(&data, dir.path(), owner)
        });
        let ssl_conf = if tls { tls::SSL_CONF } else { "" };
        let pg_ctl = bin.join("pg_ctl");
        let mut owned = Owned {
            dir,
            pg_ctl,
            as_postgres,
        };
        // A free port can be taken between our probe and the server's bind: try again.
        for _ in 0..5 {
            let port = free_port();
            let conf = format!(
                "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                 wal_level = logical\nmax_replication_slots = 32\nmax_wal_senders = 32\n\
                 fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
                 max_connections = 100\nshared_buffers = 16MB\n{ssl_conf}",
                owned.dir.path().display()
            );
            std::fs::write(data.join("postgresql.auto.conf"), conf).expect("write conf");
            let log = owned.dir.path().join("log");
            let mut start = pg_command(&owned.pg_ctl, as_postgres);
            start
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "start"]);
            let ok = start
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                let admin_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
                psql(&admin_url, &format!("CREATE DATABASE {dbname}")).expect("create db");
                let url = with_db(&admin_url, &dbname);
                let cluster = PgCluster {
                    url,
                    admin_url,
                    dbname,
                    owned: Some(owned),
                };
                return Some((cluster, ca));
            }
        }
        owned.stop();
        panic!("PostgreSQL did not start");
    }

    /// Restarts the cluster (fast shutdown: every connection is dropped, temporary
    /// replication slots are gone). False when the tests use a server they did not start.
    pub fn restart(&self) -> bool {
        let Some(owned) = &self.owned else {
            return false;
        };
        let mut restart = pg_command(&owned.pg_ctl, owned.as_postgres);
        restart
            .arg("-D")
            .arg(owned.dir.path().join("data"))
            .arg("-l")
            .arg(owned.dir.path().join("log"))
            .args(["-m", "fast", "-w", "-t", "60", "restart"])
            .stdout(Stdio::null());
        assert!(
            restart.status().is_ok_and(|s| s.success()),
            "PostgreSQL did not restart"
        );
        true
    }

    /// Ends every other connection to the test database (the servers' replication,
    /// write and monitor connections), as a network failure would.
    pub fn terminate_connections(&self) {
        self.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        );
    }

    /// Makes TCP connections as `role` present a client certificate issued by the CA in
    /// `ca_pem` for that role (`clientcert=verify-full`), for queries and replication
    /// alike; other roles stay as they were. Returns once the rules are in force. False
    /// when the tests use a server they did not start.
    pub fn require_client_certs(&self, role: &str, ca_pem: &Path) -> bool {
        let Some(owned) = &self.owned else {
            return false;
        };
        let data = owned.dir.path().join("data");
        std::fs::copy(ca_pem, data.join("client_ca.crt")).expect("copy the client CA");
        let hba = data.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        let first = format!(
            "hostssl all {role} 127.0.0.1/32 trust clientcert=verify-full\n\
             hostssl replication {role} 127.0.0.1/32 trust clientcert=verify-full\n"
        );
        std::fs::write(&hba, first + &rules).expect("write pg_hba.conf");
        if owned.as_postgres {
            run(Command::new("chown")
                .arg("postgres")
                .arg(data.join("client_ca.crt"))
                .arg(&hba));
        }
        self.psql("ALTER SYSTEM SET ssl_ca_file = 'client_ca.crt'");
        self.psql("SELECT pg_reload_conf()");
        // The postmaster reloads on its own time: wait until the role is refused without
        // a certificate.
        let plain = self.url.replacen("://postgres@", &format!("://{role}@"), 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while psql(&plain, "SELECT 1").is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "client certificates not required"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        true
    }

    /// Runs SQL with psql on the test database; panics with psql's words on failure.
    pub fn psql(&self, sql: &str) -> String {
        psql(&self.url, sql).unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }
}

impl Owned {
    fn stop(&mut self) {
        if self.pg_ctl.as_os_str().is_empty() {
            return;
        }
        let mut stop = pg_command(&self.pg_ctl, self.as_postgres);
        stop.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = stop.status();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        match &mut self.owned {
            Some(owned) => owned.stop(),
            None => {
                // Our servers' slots go with their connections; terminate what is left.
                let _ = psql(
                    &self.admin_url,
                    &format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = '{}'",
                        self.dbname
                    ),
                );
                let _ = psql(
                    &self.admin_url,
                    &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.dbname),
                );
            }
        }
    }
}

/// Runs `sql` through psql against `url`; its stdout, or stderr as the error.
pub fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn with_db(url: &str, db: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _)) if base.contains("//") && base.len() > "postgres://".len() => {
            format!("{base}/{db}")
        }
        _ => format!("{url}/{db}"),
    }
}

fn find_bin() -> Option<PathBuf> {
    let has = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| has(d)) {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| has(d))
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn pg_command(program: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) {
    let out = command.output().expect("run command");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}
