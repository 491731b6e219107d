//! Typed messages over quinn streams: [`FrameWriter`] encodes with the wire codec and
//! writes, [`FrameReader`] reads chunks and decodes.

use serde::{de::DeserializeOwned, Serialize};

use super::error::TransportError;
use crate::wire::{encode_with_max, FrameDecoder, MAX_FRAME_BYTES};

/// Most bytes taken from a stream per read; the decoder buffers at most this much beyond
/// the frame being decoded.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Capacity the writer's encode buffer may keep between messages. A larger message
/// allocates for its own duration only, so an idle connection holds little memory.
const RETAINED_WRITE_BUFFER: usize = 64 * 1024;

/// Sends messages as frames on a QUIC send stream.
#[derive(Debug)]
pub struct FrameWriter {
    send: quinn::SendStream,
    max: usize,
    buf: Vec<u8>,
}

impl FrameWriter {
    /// A writer refusing messages larger than [`MAX_FRAME_BYTES`].
    pub fn new(send: quinn::SendStream) -> Self {
        Self::with_max(send, MAX_FRAME_BYTES)
    }

    /// A writer refusing messages larger than `max` bytes.
    pub fn with_max(send: quinn::SendStream, max: usize) -> Self {
        Self {
            send,
            max,
            buf: Vec::new(),
        }
    }

    /// Encodes `msg` and writes it as one frame. An oversized message is refused with
    /// [`FrameError::TooLarge`](crate::wire::FrameError::TooLarge) before anything is
    /// written. Not cancel-safe: dropping the future midway may leave half a frame on the
    /// stream.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), TransportError> {
        self.buf.clear();
        let encoded = encode_with_max(msg, self.max, &mut self.buf);
        let written = match encoded {
            Ok(()) => self
                .send
                .write_all(&self.buf)
                .await
                .map_err(TransportError::from),
            Err(err) => Err(err.into()),
        };
        if self.buf.capacity() > RETAINED_WRITE_BUFFER {
            self.buf = Vec::new();
        }
        written
    }

    /// Ends the stream cleanly after the frames already sent; the reader then sees
    /// `Ok(None)`. Delivery continues in the background, but only while the connection
    /// lives: dropping the last [`quinn::Connection`] handle closes it at once, so keep it
    /// until the peer has read everything (an application-level reply, the peer closing,
    /// or [`quinn::SendStream::stopped`]).
    pub fn finish(&mut self) -> Result<(), TransportError> {
        self.send
            .finish()
            .map_err(|_| quinn::WriteError::ClosedStream.into())
    }

    /// The underlying stream, e.g. to `reset` it or set its priority.
    pub fn stream(&mut self) -> &mut quinn::SendStream {
        &mut self.send
    }

    /// Gives back the underlying stream.
    pub fn into_inner(self) -> quinn::SendStream {
        self.send
    }
}

/// Receives messages as frames from a QUIC receive stream.
#[derive(Debug)]
pub struct FrameReader {
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
}

impl FrameReader {
    /// A reader rejecting frames larger than [`MAX_FRAME_BYTES`].
    pub fn new(recv: quinn::RecvStream) -> Self {
        Self::with_max(recv, MAX_FRAME_BYTES)
    }

    /// A reader rejecting frames larger than `max` bytes.
    pub fn with_max(recv: quinn::RecvStream, max: usize) -> Self {
        Self {
            recv,
            decoder: FrameDecoder::new(max),
        }
    }

    /// The next message; `Ok(None)` when the peer finished the stream cleanly between
    /// frames.
    ///
    /// Errors on an oversized frame (as soon as its length prefix arrives), a payload that
    /// does not decode as `T`, a stream that ends inside a frame, or a reset stream. After
    /// an error the stream should be abandoned: dropping the reader tells the peer to stop
    /// sending. Cancel-safe: bytes already read stay buffered, so this can be used in
    /// `tokio::select!`.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, TransportError> {
        loop {
            if let Some(msg) = self.decoder.next()? {
                return Ok(Some(msg));
            }
            match self.recv.read_chunk(READ_CHUNK_BYTES, true).await? {
                Some(chunk) => self.decoder.push(&chunk.bytes),
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }

    /// The underlying stream, e.g. to `stop` it with an application error code.
    pub fn stream(&mut self) -> &mut quinn::RecvStream {
        &mut self.recv
    }

    /// Changes the largest frame accepted from the next frame on.
    pub fn set_max(&mut self, max: usize) {
        self.decoder.set_max(max);
    }
}
