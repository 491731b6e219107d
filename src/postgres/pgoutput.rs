//! Decoding of the replication stream: the `CopyData` payloads of a logical replication
//! connection (`XLogData`, keepalives) and the `pgoutput` messages inside them (protocol
//! version 1, text format).
//!
//! Pure: bytes in, typed messages out, no IO. A malformed message is a
//! [`DecodeError`], never a panic.

use std::fmt;

/// A WAL position: PostgreSQL's `pg_lsn`, shown as `X/Y` (two hex halves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses `X/Y` as PostgreSQL prints it.
    pub fn parse(text: &str) -> Option<Lsn> {
        let (hi, lo) = text.trim().split_once('/')?;
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some(Lsn((hi << 32) | lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

/// A message that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed replication message: {0}")]
pub struct DecodeError(pub String);

/// One `CopyData` payload from the server on a replication connection.
#[derive(Debug, PartialEq)]
pub enum StreamMessage<'a> {
    /// WAL data: a `pgoutput` message starting at `start`; the server has WAL to `end`.
    XLogData {
        start: Lsn,
        end: Lsn,
        data: &'a [u8],
    },
    /// The server's WAL end; `reply` asks for a status update now.
    Keepalive { end: Lsn, reply: bool },
}

/// One column of a relation as `pgoutput` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RelColumn {
    pub name: String,
    pub type_oid: u32,
}

/// A column value in a tuple.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Null,
    /// A TOASTed value that did not change (updates): take it from the old row.
    Unchanged,
    /// The value in PostgreSQL's text output format.
    Text(String),
}

/// A `pgoutput` message (the ones sluice uses; others decode as [`Message::Other`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Begin {
        final_lsn: Lsn,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
    },
    Relation {
        id: u32,
        namespace: String,
        name: String,
        columns: Vec<RelColumn>,
    },
    Insert {
        rel: u32,
        new: Vec<Datum>,
    },
    Update {
        rel: u32,
        old: Option<Vec<Datum>>,
        new: Vec<Datum>,
    },
    Delete {
        rel: u32,
        old: Vec<Datum>,
    },
    Truncate {
        rels: Vec<u32>,
    },
    Other(u8),
}

/// Decodes one server `CopyData` payload of a replication stream.
pub fn decode_stream(buf: &[u8]) -> Result<StreamMessage<'_>, DecodeError> {
    let mut r = Reader(buf);
    match r.u8()? {
        b'w' => {
            let start = Lsn(r.u64()?);
            let end = Lsn(r.u64()?);
            let _time = r.u64()?;
            Ok(StreamMessage::XLogData {
                start,
                end,
                data: r.0,
            })
        }
        b'k' => {
            let end = Lsn(r.u64()?);
            let _time = r.u64()?;
            let reply = r.u8()? == 1;
            Ok(StreamMessage::Keepalive { end, reply })
        }
        other => Err(DecodeError(format!("unknown stream message {other:#x}"))),
    }
}

/// The standby status update telling the server what is written, flushed and applied.
pub fn status_update(applied: Lsn, now_micros_since_2000: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(34);
    out.push(b'r');
    for _ in 0..3 {
        out.extend_from_slice(&applied.0.to_be_bytes());
    }
    out.extend_from_slice(&now_micros_since_2000.to_be_bytes());
    out.push(0);
    out
}

/// Decodes one `pgoutput` message.
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader(buf);
    let tag = r.u8()?;
    Ok(match tag {
        b'B' => {
            let final_lsn = Lsn(r.u64()?);
            let _time = r.u64()?;
            let xid = r.u32()?;
            Message::Begin { final_lsn, xid }
        }
        b'C' => {
            let _flags = r.u8()?;
            let commit_lsn = Lsn(r.u64()?);
            let end_lsn = Lsn(r.u64()?);
            Message::Commit {
                commit_lsn,
                end_lsn,
            }
        }
        b'R' => {
            let id = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            let _identity = r.u8()?;
            let n = r.u16()?;
            let mut columns = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let _flags = r.u8()?;
                let name = r.string()?;
                let type_oid = r.u32()?;
                let _typmod = r.u32()?;
                columns.push(RelColumn { name, type_oid });
            }
            Message::Relation {
                id,
                namespace,
                name,
                columns,
            }
        }
        b'I' => {
            let rel = r.u32()?;
            r.expect(b'N')?;
            Message::Insert {
                rel,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let rel = r.u32()?;
            let mut old = None;
            let mut kind = r.u8()?;
            if kind == b'K' || kind == b'O' {
                old = Some(r.tuple()?);
                kind = r.u8()?;
            }
            if kind != b'N' {
                return Err(DecodeError(format!(
                    "update: unexpected tuple kind {kind:#x}"
                )));
            }
            Message::Update {
                rel,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let rel = r.u32()?;
            let kind = r.u8()?;
            if kind != b'K' && kind != b'O' {
                return Err(DecodeError(format!(
                    "delete: unexpected tuple kind {kind:#x}"
                )));
            }
            Message::Delete {
                rel,
                old: r.tuple()?,
            }
        }
        b'T' => {
            let n = r.u32()?;
            let _options = r.u8()?;
            let rels = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate { rels }
        }
        other => Message::Other(other),
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError(format!(
                "needed {n} bytes, {} left",
                self.0.len()
            )));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn expect(&mut self, tag: u8) -> Result<(), DecodeError> {
        let got = self.u8()?;
        if got == tag {
            Ok(())
        } else {
            Err(DecodeError(format!(
                "expected {:?}, got {got:#x}",
                tag as char
            )))
        }
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| DecodeError("unterminated string".into()))?;
        let s = String::from_utf8(self.0[..end].to_vec())
            .map_err(|_| DecodeError("string is not UTF-8".into()))?;
        self.0 = &self.0[end + 1..];
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let n = self.u16()?;
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            out.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    let bytes = self.take(len)?;
                    Datum::Text(
                        String::from_utf8(bytes.to_vec())
                            .map_err(|_| DecodeError("value is not UTF-8".into()))?,
                    )
                }
                other => return Err(DecodeError(format!("unknown datum kind {other:#x}"))),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_through_text() {
        let lsn = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        assert_eq!(Lsn::parse("nope"), None);
    }

    #[test]
    fn decodes_an_insert() {
        let mut m = vec![b'I'];
        m.extend_from_slice(&7u32.to_be_bytes());
        m.push(b'N');
        m.extend_from_slice(&3u16.to_be_bytes());
        m.push(b't');
        m.extend_from_slice(&2u32.to_be_bytes());
        m.extend_from_slice(b"42");
        m.push(b'n');
        m.push(b'u');
        assert_eq!(
            decode(&m).unwrap(),
            Message::Insert {
                rel: 7,
                new: vec![Datum::Text("42".into()), Datum::Null, Datum::Unchanged],
            }
        );
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        for cut in 0..8 {
            let m = [b'B', 0, 0, 0, 0, 0, 0, 1];
            assert!(decode(&m[..cut]).is_err());
        }
        assert!(decode_stream(&[b'w', 1, 2]).is_err());
        assert!(decode_stream(&[]).is_err());
    }
}
