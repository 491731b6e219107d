//! TLS to PostgreSQL: a cluster that takes TCP connections over TLS only (its certificate
//! issued for `localhost` by a CA of the test's own), and a sluice server whose URL says
//! `sslmode=verify-full&sslrootcert=CA`. The initial copy, the replication stream and a
//! client's write all go through; a certificate from another CA, a host name the
//! certificate does not name, and plain TCP are each refused with a clear error. Each
//! test starts its own PostgreSQL (see `tests/pg/mod.rs`); without PostgreSQL installed
//! they print `skipped`.

mod common;
mod pg;

use common::{insert_issue, start_pg_server, Client};
use pg::PgCluster;
use sluice::server::ServerError;
use sluice::wire::WriteOutcome;

const TEAM: &str = "INSERT INTO teams (id, key, name) VALUES ('T1', 'ENG', 'Engineering');";

/// The test database's URL with `host` in place of 127.0.0.1 and `params` appended.
fn url_with(pg: &PgCluster, host: &str, params: &str) -> String {
    format!("{}?{params}", pg.url.replace("127.0.0.1", host))
}

/// Writes issue `id` as the client's transaction 1; it must commit.
async fn commit_issue(client: &mut Client, id: &str) {
    client
        .write(1, vec![insert_issue(id, "T1", "open", 3)])
        .await;
    client.until("ack", |c| c.writes.contains_key(&1)).await;
    assert!(
        matches!(client.writes[&1], WriteOutcome::Committed { .. }),
        "{:?}",
        client.writes[&1]
    );
}

async fn start_err(replica: &std::path::Path, url: &str) -> String {
    let err = common::pg_server(replica, url)
        .start()
        .await
        .err()
        .expect("the server must refuse to start");
    assert!(matches!(err, ServerError::Postgres(_)), "{err}");
    err.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_stream_and_writes_run_over_verified_tls() {
    let Some((pg, ca)) = PgCluster::start_tls("tls") else {
        return;
    };
    let url = url_with(
        &pg,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca.pem.display()),
    );
    let dir = tempfile::tempdir().unwrap();
    // The first start creates the schema (over TLS: plain TCP is rejected by pg_hba).
    let server = start_pg_server(&dir.path().join("a.db"), &url).await;
    server.shutdown().await;
    pg.psql(&format!(
        "{TEAM} INSERT INTO issues (id, team_id, number, title, status, priority) \
         VALUES ('I1', 'T1', 1, 'first', 'open', 2)"
    ));
    let server = start_pg_server(&dir.path().join("b.db"), &url).await;
    let cert = server.cert_path().unwrap().to_path_buf();
    let mut client = Client::connect(&server, &cert, "c1").await;
    client.subscribe(1, "SELECT * FROM issues", None).await;
    client.until("snapshot", |c| c.sub(1).end.is_some()).await;
    assert_eq!(client.sub(1).rows.keys().collect::<Vec<_>>(), ["I1"]);
    pg.psql(
        "INSERT INTO issues (id, team_id, number, title, status, priority) \
         VALUES ('I2', 'T1', 2, 'second', 'open', 1)",
    );
    client
        .until("a psql write through the replication stream", |c| {
            c.sub(1).rows.contains_key("I2")
        })
        .await;
    commit_issue(&mut client, "W1").await;
    client
        .until("the write's data", |c| c.sub(1).rows.contains_key("W1"))
        .await;
    // Every connection of the server is encrypted, the replication one included.
    let seen = pg.psql(
        "SELECT count(*) FILTER (WHERE s.ssl) || '/' || count(*) || '/' || \
         count(*) FILTER (WHERE a.backend_type = 'walsender') \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() \
         AND a.client_addr IS NOT NULL",
    );
    let counts: Vec<u32> = seen.split('/').map(|n| n.parse().unwrap()).collect();
    assert_eq!(counts[0], counts[1], "every connection over TLS: {seen}");
    assert!(
        counts[2] >= 1,
        "the replication connection is among them: {seen}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_wrong_host_and_plain_tcp_are_refused() {
    let Some((pg, ca)) = PgCluster::start_tls("tlsbad") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A CA that did not issue the server's certificate.
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, pg::tls::new_ca().0).unwrap();
    let text = start_err(
        &dir.path().join("a.db"),
        &url_with(
            &pg,
            "localhost",
            &format!("sslrootcert={}", other.display()),
        ),
    )
    .await;
    assert!(text.contains("certificate"), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    // The right CA, but the certificate names localhost, not 127.0.0.1.
    let text = start_err(
        &dir.path().join("b.db"),
        &url_with(
            &pg,
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={}", ca.pem.display()),
        ),
    )
    .await;
    assert!(text.contains("not valid for name \"127.0.0.1\""), "{text}");
    // Plain TCP: PostgreSQL's own refusal, named.
    let text = start_err(
        &dir.path().join("c.db"),
        &url_with(&pg, "localhost", "sslmode=disable"),
    )
    .await;
    assert!(
        text.contains("pg_hba.conf") && text.contains("no encryption"),
        "{text}"
    );
    // A mode that wants TLS but no CA to verify with: refused before connecting.
    let text = start_err(
        &dir.path().join("d.db"),
        &url_with(&pg, "localhost", "sslmode=require"),
    )
    .await;
    assert!(text.contains("needs sslrootcert"), "{text}");
}

/// A cluster that asks the role `certified` for a client certificate: the server's URL
/// names one (`sslcert`, `sslkey`) and the copy, the stream and a write go through;
/// without one, or with one from another CA, PostgreSQL refuses the server at its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_when_postgresql_asks_for_one() {
    let Some((pg, ca)) = PgCluster::start_tls("clientcert") else {
        return;
    };
    pg.psql("CREATE ROLE certified LOGIN SUPERUSER REPLICATION");
    assert!(pg.require_client_certs("certified", &ca.pem));
    let dir = tempfile::tempdir().unwrap();
    let base = url_with(
        &pg,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca.pem.display()),
    )
    .replacen("://postgres@", "://certified@", 1);
    let with_cert = |(cert, key): (std::path::PathBuf, std::path::PathBuf)| {
        format!("{base}&sslcert={}&sslkey={}", cert.display(), key.display())
    };

    let err = start_err(&dir.path().join("none.db"), &base).await;
    assert!(err.contains("certificate"), "{err}");
    let (_, stranger) = pg::tls::new_ca();
    let foreign = pg::tls::issue_client(&stranger, "certified", dir.path(), "foreign");
    let err = start_err(&dir.path().join("foreign.db"), &with_cert(foreign)).await;
    assert!(!err.is_empty());

    let own = pg::tls::issue_client(&ca.issuer, "certified", dir.path(), "own");
    let server = start_pg_server(&dir.path().join("own.db"), &with_cert(own)).await;
    pg.psql(TEAM);
    let cert = server.cert_path().unwrap().to_path_buf();
    let mut client = Client::connect(&server, &cert, "c1").await;
    client.subscribe(1, "SELECT * FROM teams", None).await;
    client
        .until("the team, streamed", |c| c.sub(1).rows.contains_key("T1"))
        .await;
    commit_issue(&mut client, "I9").await;
    assert_eq!(pg.psql("SELECT count(*) FROM issues WHERE id = 'I9'"), "1");
    server.shutdown().await;
}
