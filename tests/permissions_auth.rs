//! Authentication over real QUIC: HS256 tokens checked at the handshake (missing,
//! expired, forged, malformed, tampered), sessions ended when a token expires or a user is
//! disconnected, and a rules file with an error refused at startup with its position.

mod common;

use common::auth::{AuthServer, SECRET};
use common::permissions::users;
use common::*;
use serde_json::json;
use sluice::auth::{Claims, JwtAuthenticator};
use sluice::client::{ConnectionError, Event};
use sluice::server::Server;
use sluice::wire::RefuseCode;

async fn refusal(server: &AuthServer, token: Option<String>) -> String {
    match server.connect("probe", token).await {
        Err(ConnectionError::Refused { code, message }) => {
            assert_eq!(code, RefuseCode::Unauthenticated);
            message
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("connection accepted"),
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_at_the_handshake() {
    let server = AuthServer::start().await;
    assert!(refusal(&server, None).await.contains("token is required"));
    let expired = Claims {
        exp: Some(sluice::auth::token::unix_now() - 3600),
        ..Claims::for_user("alice")
    };
    let m = refusal(&server, Some(JwtAuthenticator::new(SECRET).sign(&expired))).await;
    assert!(m.contains("expired"), "{m}");
    let forged = JwtAuthenticator::new("not-the-secret").sign(&Claims::for_user("alice"));
    assert!(refusal(&server, Some(forged)).await.contains("signature"));
    assert!(refusal(&server, Some("garbage".into()))
        .await
        .contains("malformed"));
    // A valid token's payload swapped for one with more teams.
    let good = users()[1].token();
    let parts: Vec<&str> = good.split('.').collect();
    use base64::Engine;
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        json!({"sub": "bob", "exp": sluice::auth::token::unix_now() + 999, "teams": ["T1","T2","T3","T4"]})
            .to_string(),
    );
    let tampered = format!("{}.{body}.{}", parts[0], parts[2]);
    assert!(refusal(&server, Some(tampered)).await.contains("signature"));
    assert!(server.connect("ok", Some(good)).await.is_ok());
}

#[tokio::test]
async fn sessions_end_when_the_token_expires_or_the_user_is_disconnected() {
    let server = AuthServer::start().await;
    let short = Claims {
        exp: Some(sluice::auth::token::unix_now() + 2),
        ..Claims::for_user("eve")
    };
    let mut eve = server
        .connect("eve", Some(JwtAuthenticator::new(SECRET).sign(&short)))
        .await
        .unwrap();
    let mut bob = server.user(&users()[1]).await;
    let mut bob2 = server
        .connect("bob-2", Some(users()[1].token()))
        .await
        .unwrap();
    bob.subscribe(1, "SELECT * FROM issues", None).await;
    bob.until("snapshot", |c| c.sub(1).end.is_some()).await;
    assert_eq!(server.handle.disconnect_user("bob"), 2);
    for client in [&mut bob, &mut bob2] {
        let reasons = close_reasons(client).await;
        assert!(
            reasons.iter().any(|r| r.contains("access revoked")),
            "{reasons:?}"
        );
    }
    let reasons = close_reasons(&mut eve).await;
    assert!(
        reasons.iter().any(|r| r.contains("token expired")),
        "{reasons:?}"
    );
}

/// Every reason the client reports for its connection closing, until the connection
/// has reported everything it will.
async fn close_reasons(client: &mut Client) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut reasons = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, client.conn.next_event()).await {
            Ok(Some(Event::Closed(reason))) => reasons.push(reason),
            Ok(Some(_)) => {}
            Ok(None) => return reasons,
            Err(_) if !reasons.is_empty() => return reasons,
            Err(_) => panic!("connection not closed"),
        }
    }
}

#[test]
fn invalid_rules_fail_startup_with_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("bad.rules");
    std::fs::write(
        &rules,
        "ALLOW READ ON issues\n  WHERE team_id IN :auth.teams AND bogus = 1;",
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(
            Server::builder(schema_dir(), dir.path().join("app.db"))
                .no_auth()
                .rules_file(&rules)
                .start(),
        )
        .err()
        .expect("refused");
    let m = err.to_string();
    assert!(m.contains("bad.rules:2:36") && m.contains("bogus"), "{m}");
}
