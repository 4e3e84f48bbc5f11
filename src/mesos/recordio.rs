//! RecordIO, the framing of Mesos event streams: each record is its length in
//! decimal ASCII, a line feed, then exactly that many bytes.
//!
//! [`RecordIo`] is a tokio-util codec for both directions. The decoder refuses
//! a record longer than its cap before buffering it, a header that is not a
//! decimal number, and a stream that ends inside a record, so a broken or
//! hostile peer is told apart from a healthy stream and the connection can be
//! closed.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Default cap on one record: 64 MiB, far above any real Mesos event.
pub const DEFAULT_MAX_RECORD: usize = 64 << 20;

/// Digits in the largest length a u64 can hold.
const MAX_HEADER_DIGITS: usize = 20;

/// A RecordIO stream is broken.
#[derive(Debug, thiserror::Error)]
pub enum RecordIoError {
    /// The length header holds something other than decimal digits.
    #[error("RecordIO header is not a decimal length: {0:?}")]
    BadHeader(String),
    /// A record is longer than the cap.
    #[error("RecordIO record of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The cap.
        max: usize,
    },
    /// The stream ended inside a header or a record.
    #[error("RecordIO stream ended inside a record ({0} bytes left over)")]
    Truncated(usize),
    /// Reading or writing failed.
    #[error("RecordIO I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The RecordIO codec. Encodes `Bytes`/`&[u8]`, decodes to `Bytes`.
#[derive(Debug, Clone)]
pub struct RecordIo {
    max: usize,
    /// Length of the record being read, once its header was parsed.
    pending: Option<usize>,
}

impl Default for RecordIo {
    fn default() -> Self {
        RecordIo::with_max(DEFAULT_MAX_RECORD)
    }
}

impl RecordIo {
    /// A codec refusing records longer than `max` bytes.
    pub fn with_max(max: usize) -> Self {
        RecordIo { max, pending: None }
    }

    fn header(&mut self, src: &mut BytesMut) -> Result<Option<usize>, RecordIoError> {
        let scan = src.len().min(MAX_HEADER_DIGITS + 1);
        let Some(nl) = src[..scan].iter().position(|b| *b == b'\n') else {
            if src.len() > MAX_HEADER_DIGITS || src[..scan].iter().any(|b| !b.is_ascii_digit()) {
                return Err(bad_header(&src[..scan]));
            }
            return Ok(None);
        };
        let digits = &src[..nl];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad_header(digits));
        }
        let len: u64 = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad_header(digits))?;
        if len > self.max as u64 {
            return Err(RecordIoError::TooLarge { len, max: self.max });
        }
        src.advance(nl + 1);
        Ok(Some(len as usize))
    }
}

fn bad_header(b: &[u8]) -> RecordIoError {
    RecordIoError::BadHeader(String::from_utf8_lossy(b).into_owned())
}

impl Decoder for RecordIo {
    type Item = Bytes;
    type Error = RecordIoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, RecordIoError> {
        let len = match self.pending {
            Some(len) => len,
            None => match self.header(src)? {
                Some(len) => len,
                None => return Ok(None),
            },
        };
        if src.len() < len {
            self.pending = Some(len);
            src.reserve(len - src.len());
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(src.split_to(len).freeze()))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, RecordIoError> {
        match self.decode(src)? {
            Some(record) => Ok(Some(record)),
            None if src.is_empty() && self.pending.is_none() => Ok(None),
            None => Err(RecordIoError::Truncated(src.len())),
        }
    }
}

impl Encoder<&[u8]> for RecordIo {
    type Error = RecordIoError;

    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), RecordIoError> {
        let header = item.len().to_string();
        dst.reserve(header.len() + 1 + item.len());
        dst.put_slice(header.as_bytes());
        dst.put_u8(b'\n');
        dst.put_slice(item);
        Ok(())
    }
}

impl Encoder<Bytes> for RecordIo {
    type Error = RecordIoError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), RecordIoError> {
        self.encode(item.as_ref(), dst)
    }
}

/// One record as bytes on the wire.
pub fn frame(record: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    let _ = RecordIo::default().encode(record, &mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(codec: &mut RecordIo, chunks: &[&[u8]]) -> Result<Vec<Bytes>, RecordIoError> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(r) = codec.decode(&mut buf)? {
                out.push(r);
            }
        }
        while let Some(r) = codec.decode_eof(&mut buf)? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn mesos_vectors() {
        // Binary HEARTBEAT event (08 08) and the JSON one from the Mesos docs.
        assert_eq!(&frame(&[0x08, 0x08])[..], b"2\n\x08\x08");
        assert_eq!(
            &frame(br#"{"type":"HEARTBEAT"}"#)[..],
            b"20\n{\"type\":\"HEARTBEAT\"}"
        );
        let got = decode_all(
            &mut RecordIo::default(),
            &[b"2\n\x08\x0820\n{\"type\":\"HEARTBEAT\"}"],
        )
        .unwrap();
        assert_eq!(
            got,
            [
                Bytes::from_static(b"\x08\x08"),
                Bytes::from_static(br#"{"type":"HEARTBEAT"}"#)
            ]
        );
    }

    #[test]
    fn zero_length_records_are_accepted() {
        let got = decode_all(&mut RecordIo::default(), &[b"0\n0\n"]).unwrap();
        assert_eq!(got, [Bytes::new(), Bytes::new()]);
    }

    #[test]
    fn oversized_records_are_refused_before_buffering() {
        let e = decode_all(&mut RecordIo::with_max(10), &[b"11\nhello world"]).unwrap_err();
        assert!(
            matches!(e, RecordIoError::TooLarge { len: 11, max: 10 }),
            "{e}"
        );
        let e = decode_all(&mut RecordIo::default(), &[b"99999999999999999999999\n"]).unwrap_err();
        assert!(matches!(e, RecordIoError::BadHeader(_)), "{e}");
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            &b"+2\nab"[..],
            b"2 \nab",
            b"\nab",
            b"x",
            b"2\r\nab",
            b"-1\n",
        ] {
            let e = decode_all(&mut RecordIo::default(), &[bad]);
            assert!(
                matches!(e, Err(RecordIoError::BadHeader(_))),
                "{:?} -> {e:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_stream_ending_inside_a_record_is_truncated() {
        let e = decode_all(&mut RecordIo::default(), &[b"5\nabc"]).unwrap_err();
        assert!(matches!(e, RecordIoError::Truncated(3)), "{e}");
        let e = decode_all(&mut RecordIo::default(), &[b"12"]).unwrap_err();
        assert!(matches!(e, RecordIoError::Truncated(2)), "{e}");
    }

    proptest! {
        /// Records survive any split of the stream into chunks.
        #[test]
        fn round_trip_across_chunk_boundaries(records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
                                               cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10)) {
            let mut wire = BytesMut::new();
            for r in &records {
                RecordIo::default().encode(r.as_slice(), &mut wire).unwrap();
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.sort();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&wire[last..p]);
                last = p;
            }
            chunks.push(&wire[last..]);
            let got = decode_all(&mut RecordIo::default(), &chunks).unwrap();
            prop_assert_eq!(got.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), records);
        }

        /// Arbitrary bytes never panic: they decode or give an error.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), max in 0usize..64) {
            let _ = decode_all(&mut RecordIo::with_max(max), &[&bytes]);
        }
    }
}
