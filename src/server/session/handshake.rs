//! The handshake: the client's `Hello` (protocol, schema version, token) answered by
//! `Welcome`, or by `Refused` with a reason before the connection closes.
//!
//! Each wait is bounded by [`HANDSHAKE_TIMEOUT`]; the token is checked only through the
//! server's [`crate::server::Authenticator`], never by a token format of its own.

use super::*;

pub(super) async fn handshake(
    shared: &Shared,
    connection: &quinn::Connection,
) -> Result<(ClientId, Claims, FrameWriter, FrameReader), String> {
    let (send, recv) = tokio::time::timeout(HANDSHAKE_TIMEOUT, connection.accept_bi())
        .await
        .map_err(|_| "no control stream in time".to_string())?
        .map_err(|e| e.to_string())?;
    let mut writer = FrameWriter::new(send);
    let mut reader = FrameReader::new(recv);
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
    let refusal = if protocol < PROTOCOL_VERSION {
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
                None
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
    let (head, horizon) = (shared.store.head(), shared.store.horizon());
    let schema_sql: Vec<String> = shared.schema.tables().map(|t| t.create_sql()).collect();
    let welcome = ServerMessage::Welcome {
        protocol: PROTOCOL_VERSION,
        schema_version: shared.schema.version().0,
        schema_sql: schema_sql.join(";\n"),
        head,
        horizon,
    };
    writer
        .send(&ServerFrame::V1(welcome))
        .await
        .map_err(|e| e.to_string())?;
    // Client ids are chosen by clients; scoped by the verified user, one user cannot claim
    // another's transaction sequence numbers (idempotency keys) or confirmations.
    let client_id = match &claims.sub {
        Some(user) => ClientId(format!("{user}/{}", client_id.0)),
        None => client_id,
    };
    Ok((client_id, claims, writer, reader))
}
