//! TCP forwarding: accept on a service port's listener, connect to an
//! endpoint, and copy both ways.
//!
//! * No ready endpoint: the client's connection is reset at once (closed
//!   with SO_LINGER 0) and counted as a `no_endpoint` error.
//! * A failed connect is counted as a `dial` error and the next endpoint is
//!   tried (at most three attempts); the client's sticky endpoint, if any,
//!   is forgotten.
//! * Half-close is forwarded: EOF from one side becomes a FIN to the other,
//!   and the connection ends when both directions are done.
//! * When its endpoint is removed from the service port, a connection winds
//!   down: the proxy stops reading from the client and sends the endpoint a
//!   FIN, keeps forwarding the endpoint's remaining answer to the client,
//!   and closes both sides when the endpoint closes or after the drain
//!   timeout (`--connection-drain-timeout`), whichever comes first.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::balancer::Pick;
use super::dataplane::ServicePort;

/// Bytes read at once in each direction.
pub const BUFFER: usize = 64 * 1024;
/// How long a connect to an endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connect attempts per client connection (each on the next endpoint).
const ATTEMPTS: usize = 3;

/// Accepts connections on `listener` for `port` until `stop` (this
/// listener) or `shutdown` (the proxy); connections end with `shutdown`.
pub async fn serve(
    listener: TcpListener,
    port: Arc<ServicePort>,
    stop: CancellationToken,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((client, peer)) => {
                tasks.spawn(handle(client, peer, port.clone(), shutdown.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(port = %port.key, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(
    client: TcpStream,
    peer: SocketAddr,
    port: Arc<ServicePort>,
    shutdown: CancellationToken,
) {
    let m = &port.metrics;
    m.connections.inc();
    let Some((backend, pick)) = dial(&port, peer).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    m.active.inc();
    splice(client, backend, &pick, &shutdown, &port).await;
    m.active.dec();
}

async fn dial(port: &ServicePort, peer: SocketAddr) -> Option<(TcpStream, Pick)> {
    let attempts = port.endpoints().clamp(1, ATTEMPTS);
    for _ in 0..attempts {
        let Some(pick) = port.pick(peer.ip()) else {
            port.metrics.no_endpoint.inc();
            tracing::debug!(port = %port.key, client = %peer, "no ready endpoint; connection reset");
            return None;
        };
        let error = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(pick.addr)).await
        {
            Ok(Ok(s)) => return Some((s, pick)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CONNECT_TIMEOUT:?}"),
        };
        port.metrics.dial_errors.inc();
        port.forget(peer.ip());
        tracing::debug!(port = %port.key, endpoint = %pick.addr, %error, "cannot connect to the endpoint");
    }
    None
}

/// Copies both ways until both directions are done, the endpoint has been
/// removed for the drain timeout, or the proxy stops.
async fn splice(
    client: TcpStream,
    backend: TcpStream,
    pick: &Pick,
    shutdown: &CancellationToken,
    port: &ServicePort,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut br, mut bw) = backend.into_split();
    let m = &port.metrics;
    let both = async {
        tokio::try_join!(
            pump(&mut cr, &mut bw, &m.bytes_in, Some(&pick.removed)),
            pump(&mut br, &mut cw, &m.bytes_out, None),
        )
    };
    let drained = async {
        pick.removed.cancelled().await;
        tokio::time::sleep(port.drain_timeout).await;
    };
    tokio::select! {
        r = both => if let Err(e) = r {
            tracing::debug!(port = %port.key, endpoint = %pick.addr, error = %e, "connection ended with an error");
        },
        _ = drained => tracing::debug!(port = %port.key, endpoint = %pick.addr, "endpoint removed; connection closed after the drain timeout"),
        _ = shutdown.cancelled() => {}
    }
}

/// Copies `r` to `w` until EOF (or `stop`), then shuts `w` down (FIN).
async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    bytes: &Counter,
    stop: Option<&CancellationToken>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Not zero-filled: read_buf only exposes what was read.
    let mut buf = bytes::BytesMut::with_capacity(BUFFER);
    loop {
        buf.clear();
        let n = match stop {
            Some(stop) => tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                n = r.read_buf(&mut buf) => n?,
            },
            None => r.read_buf(&mut buf).await?,
        };
        if n == 0 {
            break;
        }
        w.write_all(&buf).await?;
        bytes.inc_by(n as u64);
    }
    w.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pump_copies_until_eof_and_forwards_the_half_close() {
        let (mut a, mut a_peer) = tokio::io::duplex(16);
        let (mut b, mut b_peer) = tokio::io::duplex(1 << 20);
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                a_peer.write_all(&data).await.unwrap();
                a_peer.shutdown().await.unwrap();
            })
        };
        let bytes = Counter::default();
        pump(&mut a, &mut b, &bytes, None).await.unwrap();
        writer.await.unwrap();
        let mut got = Vec::new();
        b_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
        assert_eq!(bytes.get(), 100_000);
    }

    #[tokio::test]
    async fn pump_stops_reading_when_told_and_still_sends_the_fin() {
        let (mut a, _a_peer) = tokio::io::duplex(16);
        let (mut b, mut b_peer) = tokio::io::duplex(16);
        let stop = CancellationToken::new();
        stop.cancel();
        pump(&mut a, &mut b, &Counter::default(), Some(&stop))
            .await
            .unwrap();
        let mut got = Vec::new();
        b_peer.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());
    }
}
