//! Reading and writing Mesos event streams over HTTP: a RecordIO body whose
//! records are events in the negotiated encoding.

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use tokio_util::codec::FramedRead;
use tokio_util::io::StreamReader;

use super::encoding::{DecodeError, Encoding};
use super::recordio::{RecordIo, RecordIoError};

/// The header carrying a scheduler's stream id.
pub const STREAM_ID_HEADER: &str = "Mesos-Stream-Id";

/// An event stream broke.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The framing is broken (oversized, malformed or truncated record).
    #[error(transparent)]
    Framing(#[from] RecordIoError),
    /// A record is not a valid event.
    #[error("undecodable event: {0}")]
    Decode(#[from] DecodeError),
}

/// The events of a streaming response body, decoded with `encoding`.
/// The stream ends when the body ends; a body that ends inside a record
/// yields [`RecordIoError::Truncated`].
pub fn events<E, S, B, X>(
    body: S,
    encoding: Encoding,
    max_record: usize,
) -> impl Stream<Item = Result<E, StreamError>>
where
    E: prost::Message + prost::Name + Default,
    S: Stream<Item = Result<B, X>> + Unpin,
    B: bytes::Buf,
    X: std::error::Error + Send + Sync + 'static,
{
    let reader = StreamReader::new(body.map_err(std::io::Error::other));
    FramedRead::new(reader, RecordIo::with_max(max_record))
        .map_err(StreamError::from)
        .and_then(move |record: Bytes| async move {
            encoding.decode::<E>(&record).map_err(StreamError::from)
        })
}

/// One event as a RecordIO record (what a master or agent writes as one chunk).
pub fn record<E: prost::Message + prost::Name>(event: &E, encoding: Encoding) -> Bytes {
    super::recordio::frame(&encoding.encode(event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesos::proto::v1::scheduler::{Event, event};
    use futures::StreamExt;

    #[tokio::test]
    async fn records_round_trip_through_a_chunked_body() {
        for enc in [Encoding::Protobuf, Encoding::Json] {
            let hb = Event {
                r#type: Some(event::Type::Heartbeat as i32),
                ..Default::default()
            };
            let mut wire = record(&hb, enc).to_vec();
            wire.extend_from_slice(&record(&hb, enc));
            // Split the body into 3-byte chunks, as a proxy may re-chunk.
            let chunks: Vec<Result<Bytes, std::io::Error>> = wire
                .chunks(3)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let got: Vec<Event> = events(futures::stream::iter(chunks), enc, 1 << 20)
                .try_collect()
                .await
                .unwrap();
            assert_eq!(got, [hb.clone(), hb]);
        }
    }

    #[tokio::test]
    async fn a_truncated_body_is_an_error() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from_static(b"10\n\x08"))];
        let got: Vec<Result<Event, StreamError>> =
            events(futures::stream::iter(chunks), Encoding::Protobuf, 1 << 20)
                .collect()
                .await;
        assert!(
            matches!(
                got.last(),
                Some(Err(StreamError::Framing(RecordIoError::Truncated(_))))
            ),
            "{got:?}"
        );
    }
}
