//! UDP forwarding: one session per client address.
//!
//! The first datagram from a client address picks an endpoint and opens a
//! session: a socket connected to that endpoint, whose answers go back to
//! the client from the service port's socket. The session ends when it has
//! carried nothing either way for `--udp-timeout`, when its endpoint is
//! removed, or when the endpoint refuses (ICMP port unreachable); the
//! client's next datagram opens a new one. Datagrams that arrive while the
//! service port has no ready endpoint are dropped and counted as
//! `no_endpoint` errors.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::balancer::Pick;
use super::dataplane::ServicePort;

/// The largest datagram.
const DATAGRAM: usize = 65536;
/// Sessions kept before ended ones are swept from the table.
const SWEEP_MIN: usize = 1024;

struct Session {
    backend: Arc<UdpSocket>,
    done: CancellationToken,
    activity: Arc<Activity>,
}

/// When a session last carried a datagram, in milliseconds since it began.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }
}

/// Forwards datagrams arriving on `sock` for `port` until `stop` (this
/// socket) or `shutdown` (the proxy).
pub async fn serve(
    sock: UdpSocket,
    port: Arc<ServicePort>,
    stop: CancellationToken,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let sock = Arc::new(sock);
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut sweep_at = SWEEP_MIN;
    let mut buf = vec![0u8; DATAGRAM];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => break,
            _ = shutdown.cancelled() => break,
            r = sock.recv_from(&mut buf) => r,
        };
        let (n, client) = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(port = %port.key, error = %e, "receive failed");
                continue;
            }
        };
        let live = sessions
            .get(&client)
            .is_some_and(|s| !s.done.is_cancelled());
        if !live {
            let Some(s) = open(&sock, client, &port, &shutdown, &tasks).await else {
                continue;
            };
            sessions.insert(client, s);
        }
        let Some(s) = sessions.get(&client) else {
            continue;
        };
        match s.backend.send(&buf[..n]).await {
            Ok(sent) => {
                port.metrics.bytes_in.inc_by(sent as u64);
                s.activity.touch();
            }
            Err(e) => {
                tracing::debug!(port = %port.key, %client, error = %e, "cannot forward a datagram");
                s.done.cancel();
            }
        }
        if sessions.len() >= sweep_at {
            sessions.retain(|_, s| !s.done.is_cancelled());
            sweep_at = (sessions.len() * 2).max(SWEEP_MIN);
        }
    }
    for s in sessions.values() {
        s.done.cancel();
    }
}

/// Opens a session for `client`, or counts why not.
async fn open(
    sock: &Arc<UdpSocket>,
    client: SocketAddr,
    port: &Arc<ServicePort>,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> Option<Session> {
    let Some(pick) = port.pick(client.ip()) else {
        port.metrics.no_endpoint.inc();
        tracing::debug!(port = %port.key, %client, "no ready endpoint; datagram dropped");
        return None;
    };
    let local: SocketAddr = if pick.addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let backend = match UdpSocket::bind(local).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(port = %port.key, error = %e, "cannot open a UDP socket");
            return None;
        }
    };
    if let Err(e) = backend.connect(pick.addr).await {
        port.metrics.dial_errors.inc();
        port.forget(client.ip());
        tracing::debug!(port = %port.key, endpoint = %pick.addr, error = %e, "cannot reach the endpoint");
        return None;
    }
    port.metrics.connections.inc();
    port.metrics.active.inc();
    let s = Session {
        backend: Arc::new(backend),
        done: shutdown.child_token(),
        activity: Arc::new(Activity::new()),
    };
    tasks.spawn(answers(
        sock.clone(),
        client,
        s.backend.clone(),
        pick,
        s.done.clone(),
        s.activity.clone(),
        port.clone(),
    ));
    Some(s)
}

/// Sends the endpoint's answers back to the client until the session ends.
async fn answers(
    sock: Arc<UdpSocket>,
    client: SocketAddr,
    backend: Arc<UdpSocket>,
    pick: Pick,
    done: CancellationToken,
    activity: Arc<Activity>,
    port: Arc<ServicePort>,
) {
    let mut buf = vec![0u8; DATAGRAM];
    loop {
        let deadline = activity.idle_deadline(port.udp_timeout);
        tokio::select! {
            r = backend.recv(&mut buf) => match r {
                Ok(n) => {
                    activity.touch();
                    match sock.send_to(&buf[..n], client).await {
                        Ok(sent) => {
                            port.metrics.bytes_out.inc_by(sent as u64);
                        }
                        Err(e) => tracing::debug!(port = %port.key, %client, error = %e, "cannot answer the client"),
                    }
                }
                Err(e) => {
                    port.metrics.dial_errors.inc();
                    port.forget(client.ip());
                    tracing::debug!(port = %port.key, endpoint = %pick.addr, error = %e, "endpoint refused; session ended");
                    break;
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                if activity.idle_deadline(port.udp_timeout) <= Instant::now() {
                    break;
                }
            }
            _ = pick.removed.cancelled() => break,
            _ = done.cancelled() => break,
        }
    }
    done.cancel();
    port.metrics.active.dec();
}
