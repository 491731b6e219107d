//! The `sluice` command: thin argument parsing over the library. DESIGN.md holds the
//! exact contract of each subcommand; scripts depend on it.
//!
//! Uses only the library's public API; nothing in the library may depend on it. (The
//! clap structs' doc comments are the command's help text: change them only on purpose.)

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};

mod cli_sub;

use sluice::auth::{Claims, JwtAuthenticator};
use sluice::client::{ConnectOptions, Connection, Event};
use sluice::ids::ClientId;
use sluice::server::{AdminConfig, Server, ServerConfig};
use sluice::transport::TlsFiles;
use sluice::wire::{ClientMessage, ServerMessage, WriteOutcome};
use sluice::Schema;

#[derive(Parser)]
#[command(name = "sluice", version, about = "Query-based partial sync engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the largest variant (serve's options) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a sync server.
    Serve {
        /// Folder of CREATE TABLE files.
        #[arg(long)]
        schema: PathBuf,
        /// SQLite database file (created if missing).
        #[arg(
            long,
            required_unless_present = "postgres",
            conflicts_with = "postgres"
        )]
        db: Option<PathBuf>,
        /// PostgreSQL URL (postgres://USER[:PASSWORD]@HOST[:PORT]/DB): PostgreSQL is the
        /// source of truth, several servers may share it. Needs wal_level = logical and a
        /// role with REPLICATION. TLS: add ?sslmode=verify-full&sslrootcert=CA.pem (the
        /// server's certificate is verified against that CA and the host name).
        #[arg(long)]
        postgres: Option<String>,
        /// With --postgres: this server's local SQLite replica (kept and resynchronised
        /// at the next start, so clients resume without a new bootstrap; default: a file
        /// in the temporary folder, removed at exit).
        #[arg(long, requires = "postgres")]
        replica: Option<PathBuf>,
        /// HOST:PORT to listen on; port 0 picks a free port.
        #[arg(long)]
        listen: String,
        /// Certificate PEM (with --key); without it a self-signed one is generated.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Secret that signs client tokens (HS256): every client must present a valid,
        /// unexpired token. Loads SCHEMA/access.rules, if present, unless --rules is given.
        #[arg(long, conflicts_with = "no_auth")]
        auth_secret: Option<String>,
        /// Accept every client without a token.
        #[arg(long)]
        no_auth: bool,
        /// Permission rules file; tables without a rule are then closed.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Operator configuration as JSON, e.g. {"quotas": {"subscriptions_per_user": 500}}.
        #[arg(long)]
        config: Option<PathBuf>,
        /// One quota, NAME=VALUE (e.g. subscriptions_per_user=500); repeatable, applied
        /// after --config.
        #[arg(long = "quota", value_name = "NAME=VALUE")]
        quotas: Vec<String>,
        /// HOST:PORT serving metrics (/metrics) and the inspector page (/) over HTTP; off
        /// by default. Not on loopback, it needs --admin-token.
        #[arg(long)]
        admin: Option<String>,
        /// Token every admin request must carry (`Authorization: Bearer TOKEN` or
        /// `?token=TOKEN`).
        #[arg(long, requires = "admin")]
        admin_token: Option<String>,
    },
    /// List sluice's replication slots in a PostgreSQL database, or drop the inactive
    /// ones (left by servers that are gone).
    Slots {
        /// PostgreSQL URL (TLS as for `serve --postgres`).
        #[arg(long)]
        postgres: String,
        /// Drop every sluice slot no server is reading.
        #[arg(long)]
        drop_inactive: bool,
    },
    /// Print a signed token for development.
    Token {
        /// The secret the server was given with --auth-secret.
        #[arg(long)]
        secret: String,
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// An extra claim, KEY=JSON (e.g. `teams=["T1","T2"]`); repeatable.
        #[arg(long = "claim", value_name = "KEY=JSON")]
        claims: Vec<String>,
        /// Lifetime in seconds (default 86400: 24 hours).
        #[arg(long, default_value_t = sluice::auth::DEFAULT_TOKEN_TTL.as_secs())]
        ttl: u64,
    },
    /// Run one client transaction.
    Exec {
        #[arg(long)]
        connect: String,
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        token: Option<String>,
        /// INSERT / UPDATE / DELETE statements separated by `;`.
        sql: String,
    },
    /// Subscribe and print rows as JSON lines.
    Sub {
        #[arg(long)]
        connect: String,
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        token: Option<String>,
        /// Keep printing live changes after the snapshot.
        #[arg(long)]
        follow: bool,
        /// The subscription, e.g. "SELECT * FROM issues WHERE team_id = 'T1'".
        sql: String,
    },
    /// Validate a subscription and print its normalized form.
    Check {
        #[arg(long)]
        schema: PathBuf,
        sql: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Check { schema, sql } => return check(&schema, &sql),
        Command::Token {
            secret,
            sub,
            claims,
            ttl,
        } => token(&secret, &sub, &claims, ttl),
        Command::Slots {
            postgres,
            drop_inactive,
        } => runtime().and_then(|rt| rt.block_on(slots(&postgres, drop_inactive))),
        Command::Serve {
            schema,
            db,
            postgres,
            replica,
            listen,
            cert,
            key,
            auth_secret,
            no_auth,
            rules,
            config,
            quotas,
            admin,
            admin_token,
        } => runtime().and_then(|rt| {
            rt.block_on(serve(
                schema,
                (db, postgres, replica),
                listen,
                cert.zip(key),
                (auth_secret, no_auth, rules),
                (config, quotas),
                (admin, admin_token),
            ))
        }),
        Command::Exec {
            connect,
            ca,
            token,
            sql,
        } => runtime().and_then(|rt| rt.block_on(exec(&connect, &ca, token, &sql))),
        Command::Sub {
            connect,
            ca,
            token,
            follow,
            sql,
        } => runtime().and_then(|rt| rt.block_on(sub(&connect, &ca, token, follow, &sql))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `warn`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The multi-threaded tokio runtime the networked subcommands run on.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting runtime")
}

/// `sluice check`: prints the normalized subscription, or the error with exit code 2.
fn check(schema_dir: &Path, sql: &str) -> ExitCode {
    let schema = match Schema::load_dir(schema_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match sluice::query::check(&schema, sql) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `sluice slots`: lists sluice's replication slots, or drops the inactive ones.
async fn slots(url: &str, drop_inactive: bool) -> Result<ExitCode> {
    let config = sluice::postgres::parse_url(url)?;
    if drop_inactive {
        for name in sluice::postgres::drop_slots(&config, &[]).await? {
            println!("dropped {name}");
        }
    } else {
        for slot in sluice::postgres::list_slots(&config).await? {
            let state = if slot.active { "active" } else { "inactive" };
            let kind = if slot.temporary { " temporary" } else { "" };
            println!("{} {state}{kind}", slot.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Rules file `serve --auth-secret` loads from the schema folder when --rules is absent.
const DEFAULT_RULES_FILE: &str = "access.rules";

/// `sluice token`: prints an HS256 token for `sub` with the extra claims, valid `ttl`
/// seconds. Fails when a claim is not `KEY=JSON`, has a bad name or JSON, or is reserved.
fn token(secret: &str, sub: &str, claims: &[String], ttl: u64) -> Result<ExitCode> {
    let mut c = Claims::for_user(sub);
    for assignment in claims {
        c = c.with_assignment(assignment)?;
    }
    c.exp = Some(sluice::auth::token::unix_now().saturating_add(ttl));
    println!("{}", JwtAuthenticator::new(secret).sign(&c));
    Ok(ExitCode::SUCCESS)
}

/// The first address `HOST:PORT` resolves to; fails when it does not resolve.
fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("cannot resolve `{addr}` (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| anyhow!("`{addr}` resolves to no address"))
}

/// The configuration `--config` and `--quota` describe; fails when the file cannot be
/// read or parsed, or a quota is unknown or not a whole number.
fn server_config(file: Option<PathBuf>, quotas: &[String]) -> Result<ServerConfig> {
    let mut config = match file {
        Some(file) => ServerConfig::load(&file).map_err(|e| anyhow!(e))?,
        None => ServerConfig::default(),
    };
    for assignment in quotas {
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| anyhow!("--quota `{assignment}`: expected NAME=VALUE"))?;
        config
            .quotas
            .set(name.trim(), value)
            .map_err(|e| anyhow!(e))?;
    }
    Ok(config)
}

/// `sluice serve`: runs a server until Ctrl-C. Fails when `--auth-secret` is empty, the
/// configuration is invalid, or the server cannot start.
async fn serve(
    schema: PathBuf,
    (db, postgres, replica): (Option<PathBuf>, Option<String>, Option<PathBuf>),
    listen: String,
    tls: Option<(PathBuf, PathBuf)>,
    (auth_secret, no_auth, rules): (Option<String>, bool, Option<PathBuf>),
    (config, quotas): (Option<PathBuf>, Vec<String>),
    (admin, admin_token): (Option<String>, Option<String>),
) -> Result<ExitCode> {
    let default_rules = schema.join(DEFAULT_RULES_FILE);
    let config = server_config(config, &quotas)?;
    let temporary_replica = postgres.is_some() && replica.is_none();
    let db = match (db, replica) {
        (Some(db), _) | (None, Some(db)) => db,
        (None, None) => std::env::temp_dir().join(format!(
            "sluice-replica-{}-{}.db",
            std::process::id(),
            sluice::auth::token::unix_now()
        )),
    };
    let mut builder = Server::builder(&schema, &db)
        .listen(resolve(&listen)?)
        .config(config);
    if let Some(url) = postgres {
        builder = builder.postgres(url);
    }
    if let Some((cert_pem, key_pem)) = tls {
        builder = builder.tls(TlsFiles { cert_pem, key_pem });
    }
    let rules = match (&auth_secret, rules) {
        (_, Some(file)) => Some(file),
        (Some(_), None) if default_rules.is_file() => Some(default_rules),
        _ => None,
    };
    match (auth_secret, no_auth) {
        (Some(secret), _) => {
            if secret.is_empty() {
                bail!("--auth-secret must not be empty");
            }
            builder = builder.authenticator(Arc::new(JwtAuthenticator::new(secret)));
            if rules.is_none() {
                tracing::warn!(
                    "no rules file: every authenticated client may read and write everything"
                );
            }
        }
        (None, true) => builder = builder.no_auth(),
        (None, false) => {
            tracing::warn!("no --auth-secret given: every client is accepted (as with --no-auth)")
        }
    }
    if let Some(file) = rules {
        builder = builder.rules_file(file);
    }
    if let Some(admin) = admin {
        builder = builder.admin(AdminConfig {
            addr: resolve(&admin)?,
            token: admin_token,
        });
    }
    let server = builder.start().await?;
    if let Some(addr) = server.admin_addr() {
        eprintln!("admin listening on http://{addr}/");
    }
    // HOST as the user wrote it, with the real port (the one bound when 0 was asked).
    let host = listen
        .rsplit_once(':')
        .map_or(listen.as_str(), |(host, _)| host);
    println!("listening on {host}:{}", server.local_addr().port());
    if let Some(cert) = server.cert_path() {
        eprintln!("self-signed certificate written to {}", cert.display());
    }
    server
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    if temporary_replica {
        for suffix in ["", "-wal", "-shm", ".cert.pem"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Connects as a fresh command-line client id; fails when the server refuses, the CA file
/// is unusable, or nothing answers within [`CONNECT_TIMEOUT`].
async fn connect(addr: &str, ca: &Path, token: Option<String>) -> Result<Connection> {
    let addr = resolve(addr)?;
    let client_id = ClientId(format!("cli-{}-{}", std::process::id(), now_nanos()));
    let connecting = Connection::connect(ConnectOptions {
        addr,
        ca,
        server_name: "localhost",
        client_id,
        token,
        schema_version: None,
    });
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(connected) => connected.map_err(|e| anyhow!("{e}")),
        Err(_) => bail!(
            "cannot reach a sluice server at {addr}: no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ),
    }
}

/// How long `exec` and `sub` wait for the server to answer the handshake.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// `sluice exec`: sends the statements as one transaction and prints its sync id, or its
/// rejection with exit code 1.
async fn exec(addr: &str, ca: &Path, token: Option<String>, sql: &str) -> Result<ExitCode> {
    let mut conn = connect(addr, ca, token).await?;
    let schema = Schema::parse("server schema", &conn.welcome().schema_sql)
        .context("reading the server's schema")?;
    let mutations = sluice::query::parse_writes(&schema, sql).map_err(|e| anyhow!("{e}"))?;
    conn.send(ClientMessage::Write {
        seq: 1,
        mutations,
        preconditions: Vec::new(),
    })
    .await?;
    loop {
        match conn.next_event().await {
            Some(Event::Control(ServerMessage::WriteResult { outcome, .. })) => {
                let code = match outcome {
                    WriteOutcome::Committed { sync_id } => {
                        println!("{}", serde_json::json!({ "sync_id": sync_id.0 }));
                        ExitCode::SUCCESS
                    }
                    WriteOutcome::Rejected { code, message } => {
                        let error = format!("{}: {message}", code.as_str());
                        println!("{}", serde_json::json!({ "error": error }));
                        ExitCode::FAILURE
                    }
                };
                conn.close().await;
                return Ok(code);
            }
            Some(Event::Closed(reason)) => bail!("connection closed: {reason}"),
            None => bail!("connection closed before the transaction was answered"),
            Some(_) => {}
        }
    }
}

/// `sluice sub`: prints the snapshot as JSON lines, then `snapshot_end`, then (with
/// `--follow`) live changes after it; exit code 2 when the subscription is refused.
async fn sub(
    addr: &str,
    ca: &Path,
    token: Option<String>,
    follow: bool,
    sql: &str,
) -> Result<ExitCode> {
    let conn = connect(addr, ca, token).await?;
    cli_sub::run(conn, sql, follow).await
}
