//! The handshake: the client's `Hello` (protocol, schema version, token) answered by
//! `Welcome`, or by `Refused` with a reason before the connection closes.
//!
//! Each wait is bounded by [`HANDSHAKE_TIMEOUT`]; the token is checked only through the
//! server's [`crate::server::Authenticator`], never by a token format of its own.

use super::*;

/// Answers the client's `Hello`. With `full` the answer is that refusal, whatever the
/// hello says (the server has no place for the connection). A verified user's connection
/// takes a place in the ledger ([`super::super::Quotas::connections_per_user`]), which the
/// session gives back when it ends.
pub(super) async fn handshake(
    shared: &Shared,
    connection: &quinn::Connection,
    full: Option<QuotaExceeded>,
) -> Result<Handshaken, String> {
    let (send, recv) = tokio::time::timeout(HANDSHAKE_TIMEOUT, connection.accept_bi())
        .await
        .map_err(|_| "no control stream in time".to_string())?
        .map_err(|e| e.to_string())?;
    let mut writer = FrameWriter::new(send);
    // Small until the token is verified: an unauthenticated peer cannot make the server
    // buffer more than this.
    let mut reader = FrameReader::with_max(recv, MAX_HELLO_BYTES);
    let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.recv::<ClientFrame>())
        .await
        .map_err(|_| "no hello in time".to_string())?;
    let refuse = |code: RefuseCode, message: String| {
        ServerFrame::V1(ServerMessage::Refused { code, message })
    };
    let (protocol, schema_version, client_id, token) = match hello {
        Ok(Some(ClientFrame::V1(ClientMessage::Hello {
            protocol,
            schema_version,
            client_id,
            token,
        }))) => (protocol, schema_version, client_id, token),
        other => {
            let message = match other {
                Err(e) => format!("malformed hello: {e}"),
                _ => "the first frame must be Hello".to_string(),
            };
            let _ = writer
                .send(&refuse(RefuseCode::Malformed, message.clone()))
                .await;
            connection.close(close::PROTOCOL_ERROR, message.as_bytes());
            return Err(message);
        }
    };
    let mut claims = Claims::default();
    let quota_refusal = |exceeded: QuotaExceeded| {
        shared.metrics.refused(exceeded.quota);
        (
            RefuseCode::QuotaExceeded(exceeded.quota),
            exceeded.to_string(),
        )
    };
    let refusal = if let Some(full) = full {
        Some(quota_refusal(full))
    } else if protocol < PROTOCOL_VERSION {
        Some((
            RefuseCode::ClientTooOld,
            format!(
                "client speaks protocol {protocol}, server speaks {PROTOCOL_VERSION}: the client \
                 must upgrade"
            ),
        ))
    } else if protocol > PROTOCOL_VERSION {
        Some((
            RefuseCode::ClientTooNew,
            format!(
                "client speaks protocol {protocol}, server speaks {PROTOCOL_VERSION}: the server \
                 must upgrade"
            ),
        ))
    } else if schema_version.is_some_and(|v| v != shared.schema.version().0) {
        Some((
            RefuseCode::SchemaMismatch,
            format!(
                "client schema {:016x} differs from server schema {}",
                schema_version.unwrap_or_default(),
                shared.schema.version()
            ),
        ))
    } else {
        match shared.authenticator.authenticate(token.as_deref()) {
            Ok(verified) => {
                claims = verified;
                let taken = match claims.sub.as_deref() {
                    Some(user) => shared.ledger.take_connection(&shared.quotas, user),
                    None => Ok(()),
                };
                taken.err().map(quota_refusal)
            }
            Err(message) => Some((RefuseCode::Unauthenticated, message)),
        }
    };
    if let Some((code, message)) = refusal {
        let _ = writer.send(&refuse(code, message.clone())).await;
        let _ = writer.finish();
        // Give the refusal time to arrive: the client closes once it has read it.
        let _ = tokio::time::timeout(REFUSAL_GRACE, connection.closed()).await;
        connection.close(close::REFUSED, message.as_bytes());
        return Err(message);
    }
    if let Some(upstream) = &shared.upstream {
        // Another server may have shown this client a later cut than this replica has.
        upstream.caught_up().await;
    }
    let (mut head, horizon) = (shared.store.head(), shared.store.horizon());
    if let Some(upstream) = &shared.upstream {
        // The replica's state at the WAL position it has applied everything up to is its
        // state at its head: a client whose cut is another server's copy or
        // resynchronisation point, below that position, is not ahead of this server.
        head = head.max(SyncId(upstream.applied().borrow().0));
    }
    let policy = Arc::new(match &shared.rules {
        Some(rules) => Policy::bind(rules, &claims),
        None => Policy::open(&claims),
    });
    let welcome = ServerMessage::Welcome {
        protocol: PROTOCOL_VERSION,
        schema_version: shared.schema.version().0,
        // Only what this caller may read or write: no closed table, no hidden column.
        schema_sql: policy.visible_schema(&shared.schema),
        head,
        horizon,
        server_id: shared.store.server_id().to_string(),
    };
    if let Err(e) = writer.send(&ServerFrame::V1(welcome)).await {
        if let Some(user) = claims.sub.as_deref() {
            shared.ledger.release_connection(user);
        }
        return Err(e.to_string());
    }
    reader.set_max(MAX_FRAME_BYTES);
    let scoped = scoped_client_id(claims.sub.as_deref(), &client_id);
    Ok(Handshaken {
        client_id: scoped,
        chosen_id: client_id,
        claims,
        policy,
        writer,
        reader,
    })
}

/// What a successful handshake yields.
pub(super) struct Handshaken {
    /// The client id scoped by the verified user ([`scoped_client_id`]).
    pub client_id: ClientId,
    /// The client id as the client chose it.
    pub chosen_id: ClientId,
    /// The verified token's claims.
    pub claims: Claims,
    /// The rules bound with those claims.
    pub policy: Arc<Policy>,
    /// The control stream's writer.
    pub writer: FrameWriter,
    /// The control stream's reader.
    pub reader: FrameReader,
}

/// The server's name for a client: client ids are chosen by clients, so they are scoped
/// by the verified user, and one user cannot claim another's transaction sequence
/// numbers (idempotency keys) or confirmations. The pair is unambiguous whatever the
/// names: the user's length comes first (`5:alice/phone`), and a connection without a
/// user is `-/phone`, which no user's name can spell.
pub fn scoped_client_id(user: Option<&str>, client: &ClientId) -> ClientId {
    match user {
        Some(user) => ClientId(format!("{}:{user}/{}", user.len(), client.0)),
        None => ClientId(format!("-/{}", client.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_client_ids_are_unambiguous() {
        let id = |user: Option<&str>, client: &str| {
            scoped_client_id(user, &ClientId(client.to_string()))
        };
        assert_ne!(id(Some("a/b"), "c"), id(Some("a"), "b/c"));
        assert_ne!(id(Some("a"), "b"), id(None, "1:a/b"));
        assert_ne!(id(Some(""), "x"), id(None, "x"));
        assert_ne!(id(Some("ab"), "c"), id(Some("a"), "bc"));
        assert_eq!(id(Some("alice"), "phone").0, "5:alice/phone");
    }
}
