//! QUIC transport over real sockets on 127.0.0.1: certificates, typed frames on
//! bidirectional and unidirectional streams, large messages, an untrusted server, an
//! oversized frame, and connection migration. Every test runs under a timeout so a hang
//! fails instead of blocking.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, ensure, Context};
use quinn::Endpoint;
use serde::{Deserialize, Serialize};
use sluice::{
    transport::{
        client_endpoint, connect, rebind, server_endpoint, FrameReader, FrameWriter,
        TransportError, TransportLimits,
    },
    wire::{FrameError, MAX_FRAME_BYTES},
};
use tempfile::TempDir;

/// Generous: nothing here should take more than a fraction of a second.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

const LOCALHOST: &str = "localhost";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Hello(String),
    Number(u64),
    Blob(Vec<u8>),
    /// The server's view of the client's address, sent back to the client.
    SeenFrom(SocketAddr),
}

async fn with_timeout(test: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .context("test timed out")?
}

/// A server endpoint on 127.0.0.1:0 with a generated self-signed certificate.
struct Server {
    endpoint: Endpoint,
    addr: SocketAddr,
    ca: PathBuf,
    _dir: TempDir,
}

fn start_server() -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("app.db.cert.pem");
    let listen = "127.0.0.1:0".parse()?;
    let endpoint = server_endpoint(listen, None, Some(&ca), &TransportLimits::default())?;
    let addr = endpoint.local_addr()?;
    Ok(Server {
        endpoint,
        addr,
        ca,
        _dir: dir,
    })
}

async fn client_for(ca: &Path, addr: SocketAddr) -> anyhow::Result<(Endpoint, quinn::Connection)> {
    let endpoint = client_endpoint(ca)?;
    let connection = connect(&endpoint, addr, LOCALHOST).await?;
    Ok((endpoint, connection))
}

/// Accepts the next incoming connection and completes its handshake.
async fn accept(endpoint: &Endpoint) -> anyhow::Result<quinn::Connection> {
    let incoming = endpoint.accept().await.context("endpoint closed")?;
    Ok(incoming.await?)
}

/// Server side of an echo: answers every message on the next bidi stream with the same
/// message, until the client finishes the stream, then waits for the client to close.
async fn echo_one_stream(connection: &quinn::Connection) -> anyhow::Result<usize> {
    let (send, recv) = connection.accept_bi().await?;
    let (mut writer, mut reader) = (FrameWriter::new(send), FrameReader::new(recv));
    let mut count = 0;
    while let Some(msg) = reader.recv::<Msg>().await? {
        writer.send(&msg).await?;
        count += 1;
    }
    writer.finish()?;
    // Dropping the last connection handle closes it at once, discarding data not yet
    // delivered: wait for the client, which closes once it has read everything.
    connection.closed().await;
    Ok(count)
}

#[tokio::test]
async fn frames_flow_both_ways_on_bidi_and_uni_streams() -> anyhow::Result<()> {
    with_timeout(async {
        let server = start_server()?;
        let pem = std::fs::read_to_string(&server.ca)?;
        ensure!(
            pem.starts_with("-----BEGIN CERTIFICATE-----"),
            "generated cert is PEM"
        );

        let server_task = tokio::spawn({
            let endpoint = server.endpoint.clone();
            async move {
                let connection = accept(&endpoint).await?;
                ensure!(connection.handshake_data().is_some());
                // Bidirectional: answer each number with its double.
                let (send, recv) = connection.accept_bi().await?;
                let (mut writer, mut reader) = (FrameWriter::new(send), FrameReader::new(recv));
                while let Some(msg) = reader.recv::<Msg>().await? {
                    let Msg::Number(n) = msg else {
                        bail!("unexpected {msg:?}")
                    };
                    writer.send(&Msg::Number(n * 2)).await?;
                }
                writer.finish()?;
                // Unidirectional, client to server: collect the greetings.
                let mut reader = FrameReader::new(connection.accept_uni().await?);
                let mut greetings = Vec::new();
                while let Some(msg) = reader.recv::<Msg>().await? {
                    greetings.push(msg);
                }
                // Unidirectional, server to client: send them back in reverse order.
                let mut writer = FrameWriter::new(connection.open_uni().await?);
                for msg in greetings.iter().rev() {
                    writer.send(msg).await?;
                }
                writer.finish()?;
                connection.closed().await;
                Ok(greetings.len())
            }
        });

        let (_client, connection) = client_for(&server.ca, server.addr).await?;
        let (send, recv) = connection.open_bi().await?;
        let (mut writer, mut reader) = (FrameWriter::new(send), FrameReader::new(recv));
        for n in 1..=5u64 {
            writer.send(&Msg::Number(n)).await?;
            assert_eq!(reader.recv::<Msg>().await?, Some(Msg::Number(n * 2)));
        }
        writer.finish()?;
        assert_eq!(reader.recv::<Msg>().await?, None, "clean end of stream");

        let greetings: Vec<Msg> = ["a", "b", "c"].map(|s| Msg::Hello(s.into())).into();
        let mut writer = FrameWriter::new(connection.open_uni().await?);
        for msg in &greetings {
            writer.send(msg).await?;
        }
        writer.finish()?;
        let mut reader = FrameReader::new(connection.accept_uni().await?);
        let mut back = Vec::new();
        while let Some(msg) = reader.recv::<Msg>().await? {
            back.push(msg);
        }
        assert_eq!(back, greetings.iter().rev().cloned().collect::<Vec<_>>());

        connection.close(0u32.into(), b"done");
        assert_eq!(server_task.await??, 3);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn several_megabyte_message_round_trips() -> anyhow::Result<()> {
    with_timeout(async {
        let server = start_server()?;
        let server_task = tokio::spawn({
            let endpoint = server.endpoint.clone();
            async move { echo_one_stream(&accept(&endpoint).await?).await }
        });

        let (_client, connection) = client_for(&server.ca, server.addr).await?;
        let (send, recv) = connection.open_bi().await?;
        let (mut writer, mut reader) = (FrameWriter::new(send), FrameReader::new(recv));
        // 6 MB of varied bytes, larger than any single flow-control window.
        let blob: Vec<u8> = (0..6 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let big = Msg::Blob(blob);
        writer.send(&big).await?;
        writer.send(&Msg::Number(7)).await?;
        writer.finish()?;
        assert_eq!(reader.recv::<Msg>().await?, Some(big));
        assert_eq!(reader.recv::<Msg>().await?, Some(Msg::Number(7)));
        assert_eq!(reader.recv::<Msg>().await?, None);
        connection.close(0u32.into(), b"done");
        assert_eq!(server_task.await??, 2);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn client_trusting_another_ca_gets_a_clear_error() -> anyhow::Result<()> {
    with_timeout(async {
        let server = start_server()?;
        let other = start_server()?; // only used for its (different) certificate
        tokio::spawn({
            let endpoint = server.endpoint.clone();
            async move {
                while let Some(incoming) = endpoint.accept().await {
                    let _ = incoming.await; // the handshake fails on the client's side
                }
            }
        });

        let client = client_endpoint(&other.ca)?;
        let err = connect(&client, server.addr, LOCALHOST)
            .await
            .err()
            .context("must fail")?;
        assert!(
            matches!(err, TransportError::UntrustedCertificate { .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("not trusted by the given CA file"),
            "{message}"
        );
        assert!(message.contains(LOCALHOST), "{message}");
        assert!(message.contains("UnknownIssuer"), "{message}");

        // The right CA but the wrong name is refused too, and says which name.
        let client = client_endpoint(&server.ca)?;
        let err = connect(&client, server.addr, "sluice.example")
            .await
            .err()
            .context("fail")?;
        assert!(
            matches!(err, TransportError::UntrustedCertificate { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("sluice.example"), "{err}");

        // And with the right CA and name the same server is fine.
        connect(&client, server.addr, LOCALHOST).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn missing_ca_file_is_named_in_the_error() -> anyhow::Result<()> {
    with_timeout(async {
        let err = client_endpoint(Path::new("no-such-dir/ca.pem"))
            .err()
            .context("must fail")?;
        assert!(err.to_string().contains("no-such-dir/ca.pem"), "{err}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn oversized_frame_fails_the_reader_but_not_the_endpoint() -> anyhow::Result<()> {
    with_timeout(async {
        let server = start_server()?;
        let server_task = tokio::spawn({
            let endpoint = server.endpoint.clone();
            async move {
                // First connection: a frame announcing more than the maximum.
                let connection = accept(&endpoint).await?;
                let (_send, recv) = connection.accept_bi().await?;
                let outcome = FrameReader::new(recv).recv::<Msg>().await;
                connection.close(1u32.into(), b"oversized frame");
                // Second connection: business as usual.
                let echoed = echo_one_stream(&accept(&endpoint).await?).await?;
                anyhow::Ok((outcome, echoed))
            }
        });

        let (_bad, connection) = client_for(&server.ca, server.addr).await?;
        let (mut send, _recv) = connection.open_bi().await?;
        let announced = MAX_FRAME_BYTES + 1;
        // Just the length prefix: the reader must fail without waiting for the payload.
        send.write_all(&u32::try_from(announced)?.to_be_bytes())
            .await?;

        let (_good, connection) = client_for(&server.ca, server.addr).await?;
        let (send, recv) = connection.open_bi().await?;
        let (mut writer, mut reader) = (FrameWriter::new(send), FrameReader::new(recv));
        writer.send(&Msg::Hello("still here".into())).await?;
        writer.finish()?;
        assert_eq!(
            reader.recv::<Msg>().await?,
            Some(Msg::Hello("still here".into()))
        );

        // A well-behaved writer refuses to produce an oversized frame in the first place.
        let (send, _recv) = connection.open_bi().await?;
        let refused = FrameWriter::with_max(send, 10)
            .send(&Msg::Blob(vec![0; 11]))
            .await;
        assert!(
            matches!(
                refused,
                Err(TransportError::Frame(FrameError::TooLarge { max: 10, .. }))
            ),
            "{refused:?}"
        );
        connection.close(0u32.into(), b"done");

        let (outcome, echoed) = server_task.await??;
        match outcome {
            Err(TransportError::Frame(FrameError::TooLarge { len, max })) => {
                assert_eq!((len, max), (announced, MAX_FRAME_BYTES));
            }
            other => bail!("expected an oversized-frame error, got {other:?}"),
        }
        assert_eq!(echoed, 1);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn stream_cut_inside_a_frame_is_an_error() -> anyhow::Result<()> {
    with_timeout(async {
        let server = start_server()?;
        let server_task = tokio::spawn({
            let endpoint = server.endpoint.clone();
            async move {
                let connection = accept(&endpoint).await?;
                let mut reader = FrameReader::new(connection.accept_uni().await?);
                let first = reader.recv::<Msg>().await?;
                let second = reader.recv::<Msg>().await;
                anyhow::Ok((first, second))
            }
        });

        let (_client, connection) = client_for(&server.ca, server.addr).await?;
        let mut send = connection.open_uni().await?;
        let mut bytes = Vec::new();
        sluice::wire::encode(&Msg::Number(1), &mut bytes)?;
        sluice::wire::encode(&Msg::Hello("cut".into()), &mut bytes)?;
        send.write_all(&bytes[..bytes.len() - 1]).await?;
        send.finish()?;

        let (first, second) = server_task.await??;
        assert_eq!(first, Some(Msg::Number(1)));
        assert!(
            matches!(
                second,
                Err(TransportError::Frame(FrameError::Truncated { .. }))
            ),
            "{second:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn client_rebinding_to_a_new_socket_keeps_the_connection() -> anyhow::Result<()> {
    with_timeout(async {
        let server = start_server()?;
        // Answers every message with the address the client's packets now come from.
        let server_task = tokio::spawn({
            let endpoint = server.endpoint.clone();
            async move {
                let connection = accept(&endpoint).await?;
                let mut streams = 0;
                while let Ok((send, recv)) = connection.accept_bi().await {
                    let (mut writer, mut reader) = (FrameWriter::new(send), FrameReader::new(recv));
                    while reader.recv::<Msg>().await?.is_some() {
                        writer
                            .send(&Msg::SeenFrom(connection.remote_address()))
                            .await?;
                    }
                    writer.finish()?;
                    streams += 1;
                }
                anyhow::Ok(streams)
            }
        });

        let (client, connection) = client_for(&server.ca, server.addr).await?;
        let old_port = client.local_addr()?.port();
        let (send, recv) = connection.open_bi().await?;
        let (mut writer, mut reader) = (FrameWriter::new(send), FrameReader::new(recv));
        writer.send(&Msg::Number(1)).await?;
        let Some(Msg::SeenFrom(seen)) = reader.recv::<Msg>().await? else {
            bail!("no reply")
        };
        assert_eq!(seen.port(), old_port);

        let new_addr = rebind(&client, "127.0.0.1:0".parse()?)?;
        assert_ne!(new_addr.port(), old_port);

        // The stream opened before the move carries on...
        writer.send(&Msg::Number(2)).await?;
        let Some(Msg::SeenFrom(seen)) = reader.recv::<Msg>().await? else {
            bail!("no reply")
        };
        assert_eq!(
            seen, new_addr,
            "server follows the client to its new address"
        );
        writer.finish()?;
        assert_eq!(reader.recv::<Msg>().await?, None);

        // ...and new streams work on the migrated connection.
        let (send, recv) = connection.open_bi().await?;
        let (mut writer, mut reader) = (FrameWriter::new(send), FrameReader::new(recv));
        writer.send(&Msg::Number(3)).await?;
        assert_eq!(reader.recv::<Msg>().await?, Some(Msg::SeenFrom(new_addr)));
        writer.finish()?;
        assert_eq!(reader.recv::<Msg>().await?, None);
        assert!(connection.close_reason().is_none(), "connection still open");

        connection.close(0u32.into(), b"done");
        assert_eq!(server_task.await??, 2);
        Ok(())
    })
    .await
}
