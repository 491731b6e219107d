//! Length-prefixed frame codec: a frame is a 4-byte big-endian payload length followed by
//! the payload, a value serialized with postcard.
//!
//! Pure, no IO. [`encode`] appends frames to a buffer; [`FrameDecoder`] accepts bytes in
//! whatever pieces the network delivers them and yields whole messages, telling "need more
//! bytes" (`Ok(None)`) apart from "invalid" (`Err`). A length prefix above the decoder's
//! maximum is rejected as soon as its four bytes arrive, before any payload is buffered,
//! so a peer cannot make us allocate memory by announcing a huge frame.
//!
//! Depends on serde and postcard only: nothing else in the crate, no sockets, no async.

use serde::{de::DeserializeOwned, Serialize};

/// Largest payload a frame may carry by default: 16 MiB. Bulk data (bootstrap rows) is
/// sent as many frames, so no single message needs to come near this.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Size of the length prefix in front of every frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Once this many consumed bytes sit at the front of the decoder's buffer (and they are
/// at least half of it), they are dropped by shifting the rest down. Amortizes the copy.
const COMPACT_THRESHOLD: usize = 64 * 1024;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The payload is longer than the allowed maximum (announced by a length prefix when
    /// decoding, or produced by serialization when encoding).
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The payload's length in bytes.
        len: usize,
        /// The maximum allowed.
        max: usize,
    },
    /// The payload is not a valid postcard encoding of the expected type, or the value
    /// could not be serialized.
    #[error("invalid frame: {0}")]
    Invalid(String),
    /// The byte stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes of an unfinished frame)")]
    Truncated {
        /// Bytes still buffered: the unfinished frame, prefix included, plus any whole
        /// frames not yet taken.
        buffered: usize,
    },
}

/// Appends one frame carrying `msg` to `out`, with the default maximum
/// [`MAX_FRAME_BYTES`]. On error `out` is left as it was.
pub fn encode<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    encode_with_max(msg, MAX_FRAME_BYTES, out)
}

/// Appends one frame carrying `msg` to `out`, refusing payloads longer than `max` bytes.
/// On error `out` is left as it was.
pub fn encode_with_max<T: Serialize>(
    msg: &T,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let max = effective_max(max);
    let start = out.len();
    // Serialize straight into `out` behind a placeholder prefix, then patch the prefix.
    out.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    if let Err(err) = postcard::to_io(msg, &mut *out) {
        out.truncate(start);
        return Err(FrameError::Invalid(err.to_string()));
    }
    let len = out.len() - start - LENGTH_PREFIX_BYTES;
    let prefix = match u32::try_from(len) {
        Ok(prefix) if len <= max => prefix,
        _ => {
            out.truncate(start);
            return Err(FrameError::TooLarge { len, max });
        }
    };
    out[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&prefix.to_be_bytes());
    Ok(())
}

/// A frame maximum can never exceed what the 4-byte prefix can express.
fn effective_max(max: usize) -> usize {
    max.min(u32::MAX as usize)
}

/// Incremental frame decoder: [`push`](Self::push) bytes as they arrive, then call
/// [`next`](Self::next) until it returns `Ok(None)`.
///
/// After `Err(FrameError::TooLarge)` the stream can no longer be trusted and the decoder
/// should be dropped (it keeps returning the same error). After `Err(FrameError::Invalid)`
/// the bad frame has been consumed, since its boundaries were known, so decoding may go on
/// if the caller chooses to.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    buf: Vec<u8>,
    /// Index in `buf` of the first byte not yet consumed.
    start: usize,
}

impl FrameDecoder {
    /// A decoder that rejects frames whose payload is longer than `max` bytes (capped at
    /// what a 4-byte prefix can express).
    pub fn new(max: usize) -> Self {
        Self {
            max: effective_max(max),
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The largest payload this decoder accepts.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Changes the largest payload accepted from the next frame on (a server raises it
    /// once the peer has authenticated).
    pub fn set_max(&mut self, max: usize) {
        self.max = effective_max(max);
    }

    /// Bytes received but not yet returned as a message (a partial frame, or whole frames
    /// not yet taken with [`next`](Self::next)).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start >= COMPACT_THRESHOLD && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` if more bytes are needed, or an error if the
    /// next frame is oversized or its payload does not decode as `T`.
    // Not `Iterator::next`: the message type is chosen per call and errors are not the end.
    #[allow(clippy::should_implement_trait)]
    pub fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let pending = &self.buf[self.start..];
        let Some(prefix) = pending.first_chunk::<LENGTH_PREFIX_BYTES>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        let Some(payload) = pending[LENGTH_PREFIX_BYTES..].get(..len) else {
            return Ok(None);
        };
        let decoded = match postcard::take_from_bytes::<T>(payload) {
            Ok((msg, [])) => Ok(Some(msg)),
            Ok((_, rest)) => Err(FrameError::Invalid(format!(
                "{} unexpected trailing bytes after the message",
                rest.len()
            ))),
            Err(err) => Err(FrameError::Invalid(err.to_string())),
        };
        self.start += LENGTH_PREFIX_BYTES + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.buf.shrink_to(COMPACT_THRESHOLD); // don't keep a large frame's memory
            self.start = 0;
        }
        decoded
    }

    /// Checks that the byte stream may end here: `Err(FrameError::Truncated)` if part of a
    /// frame is still buffered. Whole frames not yet taken with [`next`](Self::next) count
    /// as unfinished too, so call this once `next` has returned `Ok(None)`.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(FrameError::Truncated { buffered }),
        }
    }
}

impl Default for FrameDecoder {
    /// A decoder with the default maximum, [`MAX_FRAME_BYTES`].
    fn default() -> Self {
        Self::new(MAX_FRAME_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Hello { client: String, version: u32 },
        Rows(Vec<Vec<i64>>),
        Bytes(Vec<u8>),
        Ping,
    }

    fn sample() -> Vec<Msg> {
        vec![
            Msg::Hello {
                client: "c1".into(),
                version: 7,
            },
            Msg::Rows(vec![vec![1, -2, 3], vec![], vec![i64::MAX]]),
            Msg::Bytes((0..=255).collect()),
            Msg::Ping,
        ]
    }

    fn encode_all(msgs: &[Msg]) -> Vec<u8> {
        let mut out = Vec::new();
        for msg in msgs {
            encode(msg, &mut out).expect("encode");
        }
        out
    }

    fn drain(decoder: &mut FrameDecoder) -> Vec<Msg> {
        let mut got = Vec::new();
        while let Some(msg) = decoder.next::<Msg>().expect("decode") {
            got.push(msg);
        }
        got
    }

    #[test]
    fn round_trip() {
        for msg in sample() {
            let mut bytes = Vec::new();
            encode(&msg, &mut bytes).unwrap();
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            assert_eq!(
                len,
                bytes.len() - 4,
                "prefix is the payload length, big-endian"
            );
            let mut decoder = FrameDecoder::default();
            decoder.push(&bytes);
            assert_eq!(decoder.next::<Msg>().unwrap(), Some(msg));
            assert_eq!(decoder.next::<Msg>().unwrap(), None);
            assert_eq!(decoder.buffered(), 0);
        }
    }

    #[test]
    fn encode_appends_after_existing_bytes() {
        let mut out = vec![0xAA, 0xBB];
        encode(&Msg::Ping, &mut out).unwrap();
        assert_eq!(&out[..2], &[0xAA, 0xBB]);
        let mut decoder = FrameDecoder::default();
        decoder.push(&out[2..]);
        assert_eq!(decoder.next::<Msg>().unwrap(), Some(Msg::Ping));
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let msgs = sample();
        let bytes = encode_all(&msgs);
        for cut in 0..=bytes.len() {
            let mut decoder = FrameDecoder::default();
            decoder.push(&bytes[..cut]);
            let mut got = drain(&mut decoder);
            decoder.push(&bytes[cut..]);
            got.extend(drain(&mut decoder));
            assert_eq!(got, msgs, "split at {cut}");
            assert_eq!(decoder.buffered(), 0);
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let msgs = sample();
        let bytes = encode_all(&msgs);
        let mut decoder = FrameDecoder::default();
        let mut got = Vec::new();
        for byte in &bytes {
            decoder.push(std::slice::from_ref(byte));
            got.extend(drain(&mut decoder));
        }
        assert_eq!(got, msgs);
    }

    #[test]
    fn multiple_frames_in_one_push() {
        let msgs = sample();
        let mut decoder = FrameDecoder::default();
        decoder.push(&encode_all(&msgs));
        assert_eq!(drain(&mut decoder), msgs);
    }

    #[test]
    fn oversized_prefix_is_rejected_before_the_payload_arrives() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&[0, 0]);
        assert_eq!(decoder.next::<Msg>().unwrap(), None, "prefix incomplete");
        decoder.push(&[0x04, 0x01]); // 1025
        assert_eq!(
            decoder.next::<Msg>(),
            Err(FrameError::TooLarge {
                len: 1025,
                max: 1024
            })
        );
        // Exactly the maximum is fine (the payload just has not arrived yet).
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&1024u32.to_be_bytes());
        assert_eq!(decoder.next::<Msg>().unwrap(), None);
    }

    #[test]
    fn huge_prefix_does_not_allocate() {
        let mut decoder = FrameDecoder::default();
        decoder.push(&u32::MAX.to_be_bytes());
        let err = decoder.next::<Msg>().unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: u32::MAX as usize,
                max: MAX_FRAME_BYTES
            }
        );
        assert!(
            decoder.buf.capacity() < 64,
            "buffer sized by bytes received, not announced"
        );
    }

    #[test]
    fn encode_refuses_oversized_payload() {
        let mut out = vec![1, 2, 3];
        let err = encode_with_max(&Msg::Bytes(vec![0; 100]), 50, &mut out).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { max: 50, len } if len > 100));
        assert_eq!(out, vec![1, 2, 3], "output untouched on error");
    }

    #[test]
    fn garbage_payload_is_invalid_and_consumed() {
        let mut bytes = vec![0, 0, 0, 3, 0xFF, 0xFF, 0xFF];
        encode(&Msg::Ping, &mut bytes).unwrap();
        let mut decoder = FrameDecoder::default();
        decoder.push(&bytes);
        assert!(matches!(decoder.next::<Msg>(), Err(FrameError::Invalid(_))));
        assert_eq!(
            decoder.next::<Msg>().unwrap(),
            Some(Msg::Ping),
            "framing survives"
        );
    }

    #[test]
    fn trailing_bytes_inside_a_frame_are_invalid() {
        let mut payload = postcard::to_stdvec(&Msg::Ping).unwrap();
        payload.push(0);
        let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&payload);
        let mut decoder = FrameDecoder::default();
        decoder.push(&bytes);
        let err = decoder.next::<Msg>().unwrap_err();
        assert!(
            matches!(&err, FrameError::Invalid(m) if m.contains("trailing")),
            "{err}"
        );
    }

    #[test]
    fn empty_frame_for_a_type_that_needs_bytes_is_invalid() {
        let mut decoder = FrameDecoder::default();
        decoder.push(&[0, 0, 0, 0]);
        assert!(matches!(decoder.next::<Msg>(), Err(FrameError::Invalid(_))));
        // ...but a zero-sized type is a legitimate empty frame.
        decoder.push(&[0, 0, 0, 0]);
        assert_eq!(decoder.next::<()>().unwrap(), Some(()));
    }

    #[test]
    fn trailing_partial_frame_waits_for_more() {
        let msgs = sample();
        let mut bytes = encode_all(&msgs);
        let mut last = Vec::new();
        encode(
            &Msg::Hello {
                client: "late".into(),
                version: 1,
            },
            &mut last,
        )
        .unwrap();
        bytes.extend_from_slice(&last[..last.len() - 1]);
        let mut decoder = FrameDecoder::default();
        decoder.push(&bytes);
        assert_eq!(drain(&mut decoder), msgs);
        assert_eq!(decoder.buffered(), last.len() - 1);
        decoder.push(&last[last.len() - 1..]);
        assert_eq!(
            decoder.next::<Msg>().unwrap(),
            Some(Msg::Hello {
                client: "late".into(),
                version: 1
            })
        );
    }

    #[test]
    fn finish_reports_a_truncated_stream() {
        let mut bytes = Vec::new();
        encode(&Msg::Ping, &mut bytes).unwrap();
        encode(&Msg::Bytes(vec![1, 2, 3]), &mut bytes).unwrap();
        let mut decoder = FrameDecoder::default();
        assert_eq!(decoder.finish(), Ok(()), "an empty stream may end");
        decoder.push(&bytes[..bytes.len() - 2]);
        assert_eq!(decoder.next::<Msg>().unwrap(), Some(Msg::Ping));
        assert_eq!(decoder.next::<Msg>().unwrap(), None);
        assert_eq!(decoder.finish(), Err(FrameError::Truncated { buffered: 7 }));
        decoder.push(&bytes[bytes.len() - 2..]);
        assert!(decoder.next::<Msg>().unwrap().is_some());
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn large_frame_memory_is_released_once_consumed() {
        let mut bytes = Vec::new();
        encode(&Msg::Bytes(vec![9; 1 << 20]), &mut bytes).unwrap();
        let mut decoder = FrameDecoder::default();
        decoder.push(&bytes);
        assert!(decoder.next::<Msg>().unwrap().is_some());
        assert!(decoder.buf.capacity() <= COMPACT_THRESHOLD);
    }

    #[test]
    fn buffer_is_compacted_over_a_long_stream() {
        let frame = {
            let mut out = Vec::new();
            encode(&Msg::Bytes(vec![7; 1000]), &mut out).unwrap();
            out
        };
        let stream: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(frame.len() * 1000)
            .collect();
        let mut decoder = FrameDecoder::default();
        let (mut decoded, mut largest) = (0, 0);
        // Chunks of a frame and a half plus one byte: chunk and frame boundaries never line
        // up again, so the buffer never fully empties and only compaction bounds it.
        for chunk in stream.chunks(frame.len() * 3 / 2 + 1) {
            decoder.push(chunk);
            while decoder.next::<Msg>().unwrap().is_some() {
                decoded += 1;
            }
            largest = largest.max(decoder.buf.len());
        }
        assert_eq!(decoded, 1000);
        assert!(
            largest < 4 * COMPACT_THRESHOLD,
            "buffer grew to {largest} bytes"
        );
    }

    proptest! {
        #[test]
        fn byte_soup_never_panics(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
            max in 0usize..256,
        ) {
            let mut decoder = FrameDecoder::new(max);
            for chunk in &chunks {
                decoder.push(chunk);
                // Keep going after Invalid (consumed); stop this chunk on TooLarge.
                for _ in 0..64 {
                    match decoder.next::<Msg>() {
                        Ok(Some(_)) | Err(FrameError::Invalid(_)) => continue,
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }

        #[test]
        fn any_split_of_encoded_messages_round_trips(
            blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
        ) {
            let msgs: Vec<Msg> = blobs.into_iter().map(Msg::Bytes).collect();
            let bytes = encode_all(&msgs);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.push(0);
            points.push(bytes.len());
            points.sort_unstable();
            let mut decoder = FrameDecoder::default();
            let mut got = Vec::new();
            for pair in points.windows(2) {
                decoder.push(&bytes[pair[0]..pair[1]]);
                got.extend(drain(&mut decoder));
            }
            prop_assert_eq!(got, msgs);
        }
    }
}
