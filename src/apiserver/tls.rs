//! TLS material and the HTTPS serving loop of `km apiserver`.
//!
//! [`ensure_certificates`] keeps a small self-signed CA and a serving certificate in a state directory,
//! [`load_server_config`] accepts operator-provided files instead, and [`serve_tls`] runs an axum router
//! over TLS (HTTP/2 and HTTP/1.1) with graceful shutdown.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// File name of the CA certificate inside the certificate directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the CA private key inside the certificate directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the serving certificate inside the certificate directory.
pub const SERVING_CERT_FILE: &str = "apiserver.crt";
/// File name of the serving private key inside the certificate directory.
pub const SERVING_KEY_FILE: &str = "apiserver.key";

/// Subject common name of the generated CA. Issuing relies on it staying fixed: the issuer name of a
/// serving certificate is rebuilt from it when the CA is loaded from disk.
const CA_COMMON_NAME: &str = "km-ca";
const SERVING_COMMON_NAME: &str = "km-apiserver";
/// DNS names every generated serving certificate carries (the in-cluster names of the `kubernetes` Service
/// and `localhost`).
const DEFAULT_DNS_SANS: [&str; 5] = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];
const DAY: u64 = 24 * 60 * 60;
const CA_LIFETIME: u64 = 10 * 365 * DAY;
const SERVING_LIFETIME: u64 = 365 * DAY;
/// A serving certificate expiring sooner than this is re-issued at start.
const RENEW_BEFORE: u64 = 30 * DAY;
/// Certificates are back-dated by this much to tolerate small clock differences between machines.
const BACKDATE: u64 = 60 * 60;
/// A client that has not finished its TLS handshake after this long is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors from preparing TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file does not hold the PEM content expected of it.
    #[error("{path}: {reason}")]
    Pem {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A requested subject alternative name is neither an IP address nor a valid DNS name.
    #[error("invalid subject alternative name {0:?}: not an IP address nor a valid DNS name")]
    InvalidSan(String),
    /// `ca.crt` exists but `ca.key` does not, so no serving certificate can be issued.
    #[error("{cert} exists but its private key {key} is missing")]
    MissingCaKey {
        /// The CA certificate.
        cert: PathBuf,
        /// The missing key file.
        key: PathBuf,
    },
    /// The CA on disk cannot issue a serving certificate that verifies (expired, foreign, or not matching
    /// its key).
    #[error(
        "the CA in {dir} cannot issue a usable serving certificate: {reason} (remove {CA_CERT_FILE} and {CA_KEY_FILE} to generate a new CA)"
    )]
    CaUnusable {
        /// The certificate directory.
        dir: PathBuf,
        /// Why verification failed.
        reason: String,
    },
    /// Key or certificate generation failed.
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the certificate/key pair.
    #[error("building TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The system random number generator failed.
    #[error("no secure random numbers available")]
    Random,
}

/// The certificates km apiserver serves with.
pub struct TlsMaterial {
    /// PEM of the CA that signed the serving certificate (for kubeconfig `certificate-authority-data`).
    pub ca_pem: String,
    /// Ready-to-use rustls configuration (ALPN `h2`, `http/1.1`).
    pub server_config: Arc<ServerConfig>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

/// A subject alternative name the serving certificate must cover.
#[derive(Debug, Clone, PartialEq, Eq)]
enum San {
    Dns(String),
    Ip(IpAddr),
}

impl San {
    fn server_name(&self) -> Result<ServerName<'static>, String> {
        match self {
            San::Dns(name) => {
                ServerName::try_from(name.clone()).map_err(|err| format!("{self}: {err}"))
            }
            San::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
        }
    }

    fn to_rcgen(&self) -> Result<SanType, TlsError> {
        Ok(match self {
            San::Dns(name) => SanType::DnsName(name.clone().try_into()?),
            San::Ip(ip) => SanType::IpAddress(*ip),
        })
    }
}

impl std::fmt::Display for San {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            San::Dns(name) => write!(f, "DNS:{name}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

/// Generates (first start) or reuses the CA and serving certificate under `dir` and returns the serving
/// configuration.
///
/// Files: `ca.crt`, `ca.key`, `apiserver.crt`, `apiserver.key` (keys mode 0600, directory created 0700).
/// The serving certificate is re-issued by the same CA when it does not cover every wanted name, no longer
/// chains to the CA, does not match its key, or expires within 30 days. Wanted names: DNS `localhost`,
/// `kubernetes`, `kubernetes.default`, `kubernetes.default.svc`, `kubernetes.default.svc.cluster.local`,
/// the machine hostname (when it is a valid DNS name), IPs `127.0.0.1` and `::1`, plus each `extra_sans`
/// entry (an IP address or a DNS name).
pub fn ensure_certificates(dir: &Path, extra_sans: &[String]) -> Result<TlsMaterial, TlsError> {
    let hostname = machine_hostname();
    let wanted = wanted_sans(hostname.as_deref(), extra_sans)?;
    create_private_dir(dir)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = load_or_create_ca(dir, &provider)?;

    let cert_path = dir.join(SERVING_CERT_FILE);
    let key_path = dir.join(SERVING_KEY_FILE);
    let now = unix_now();
    if let Some(config) = reuse_serving_cert(&cert_path, &key_path, &ca, &wanted, now, &provider) {
        return Ok(TlsMaterial {
            ca_pem: ca.pem,
            server_config: config,
        });
    }

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, SERVING_COMMON_NAME);
    params.subject_alt_names = wanted.iter().map(San::to_rcgen).collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    let not_before = now.saturating_sub(BACKDATE);
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_before);
    params.not_after =
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_before + SERVING_LIFETIME);
    let issuer = Issuer::new(ca_params(), &ca.key);
    let cert = params.signed_by(&key, &issuer)?;

    // Refuse to write a certificate that clients trusting ca.crt would reject.
    verify_covers(&ca.der, cert.der(), &wanted, &[now], &provider).map_err(|reason| {
        TlsError::CaUnusable {
            dir: dir.to_path_buf(),
            reason,
        }
    })?;
    write_file_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(path = %cert_path.display(), sans = %join_sans(&wanted), "issued apiserver serving certificate");

    let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|reason| TlsError::Pem {
        path: key_path.clone(),
        reason: reason.to_string(),
    })?;
    let config = build_server_config(vec![cert.der().clone()], key_der)?;
    Ok(TlsMaterial {
        ca_pem: ca.pem,
        server_config: config,
    })
}

/// Builds a serving configuration from operator-provided PEM files (`--tls-cert-file`,
/// `--tls-private-key-file`): the certificate file holds the chain, leaf first; the key file holds one
/// PKCS#8, PKCS#1 or SEC1 private key.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = parse_certs(cert, &read_file(cert)?)?;
    let key_der = parse_key(key, &read_file(key)?)?;
    build_server_config(chain, key_der)
}

/// A self-signed serving configuration (no CA), for endpoints whose clients do not verify the server,
/// as kube-apiserver does not verify a kubelet unless given `--kubelet-certificate-authority`.
///
/// The certificate is named `common_name` and covers every entry of `names` (an IP address or a DNS
/// name, as text) and every address of `ips`; it is valid for a year, back-dated an hour. The key lives
/// only in memory.
pub fn self_signed_config(
    common_name: &str,
    names: &[String],
    ips: &[IpAddr],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut sans: Vec<San> = Vec::new();
    for raw in names {
        let value = raw.trim();
        let san = if let Ok(ip) = value.parse::<IpAddr>() {
            San::Ip(ip)
        } else if is_dns_name(value) {
            San::Dns(value.to_ascii_lowercase())
        } else {
            return Err(TlsError::InvalidSan(raw.clone()));
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    for ip in ips {
        if !sans.contains(&San::Ip(*ip)) {
            sans.push(San::Ip(*ip));
        }
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = sans.iter().map(San::to_rcgen).collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(random_serial()?);
    let not_before = unix_now().saturating_sub(BACKDATE);
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_before);
    params.not_after =
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_before + SERVING_LIFETIME);
    let cert = params.self_signed(&key)?;
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|reason| TlsError::Pem {
        path: PathBuf::from("<generated key>"),
        reason: reason.to_string(),
    })?;
    build_server_config(vec![cert.der().clone()], key_der)
}

/// Serves `router` over TLS on `listener` until `shutdown` is cancelled.
///
/// ALPN offers `h2` and `http/1.1`; both protocols (and HTTP/1.1 upgrades) are served by hyper-util's
/// auto builder. Handlers can extract `ConnectInfo<SocketAddr>` with the client address. A failed or
/// timed-out TLS handshake is logged at debug level and only drops that connection. On cancellation
/// the listener is closed, every open connection is shut down gracefully with hyper-util's
/// `Connection::graceful_shutdown` (in-flight requests complete, idle keep-alive connections close,
/// HTTP/2 sends GOAWAY), and after `drain` any connection still open is aborted. Long-lived streams
/// (watches) should end themselves on the same token so they do not hold the drain to its bound.
/// Accept errors are logged and retried, so the result is currently always `Ok`.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: axum::Router,
    shutdown: CancellationToken,
    drain: Duration,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(config);
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut connections = JoinSet::new();

    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                log_task_end(finished);
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(
                        stream,
                        peer,
                        acceptor.clone(),
                        builder.clone(),
                        router.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(err) if is_per_connection_error(&err) => {
                    tracing::debug!(error = %err, "accept failed for one connection");
                }
                Err(err) => {
                    // Typically EMFILE/ENFILE: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed; retrying shortly");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            },
        }
    }

    drop(listener);
    tracing::debug!(
        open = connections.len(),
        "stopped accepting; draining connections"
    );
    let drained = tokio::time::timeout(drain, async {
        while let Some(finished) = connections.join_next().await {
            log_task_end(finished);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            drain_secs = drain.as_secs_f64(),
            "connections still open after the drain period; closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

fn log_task_end(finished: Result<(), tokio::task::JoinError>) {
    if let Err(err) = finished
        && err.is_panic()
    {
        tracing::error!(error = %err, "connection task panicked");
    }
}

/// Runs one connection: TLS handshake, then HTTP/1.1 or HTTP/2 until the client is done or, after
/// `shutdown` fires, until hyper's graceful shutdown of the connection completes.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    builder: auto::Builder<TokioExecutor>,
    router: axum::Router,
    shutdown: CancellationToken,
) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
    }
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let tls = tokio::select! {
        // No request is in flight yet, so a connection still shaking hands is simply dropped.
        () = shutdown.cancelled() => return,
        result = handshake => match result {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => {
                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            // Finish in-flight requests (HTTP/2: GOAWAY), refuse new ones, then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// Errors of `accept` that concern only the connection being accepted.
fn is_per_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

fn build_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The CA loaded from (or just written to) the certificate directory.
struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    key: KeyPair,
}

/// CA parameters that determine how issued certificates name and identify their issuer.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params
}

fn load_or_create_ca(dir: &Path, provider: &Arc<CryptoProvider>) -> Result<Ca, TlsError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    let cert_pem = match fs::read(&cert_path) {
        Ok(bytes) => Some(bytes),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(TlsError::Io {
                path: cert_path,
                source,
            });
        }
    };

    if let Some(bytes) = cert_pem {
        let der = parse_certs(&cert_path, &bytes)?.swap_remove(0);
        let pem = String::from_utf8(bytes).map_err(|_| TlsError::Pem {
            path: cert_path.clone(),
            reason: "not valid UTF-8".to_string(),
        })?;
        let key_pem = match fs::read_to_string(&key_path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(TlsError::MissingCaKey {
                    cert: cert_path,
                    key: key_path,
                });
            }
            Err(source) => {
                return Err(TlsError::Io {
                    path: key_path,
                    source,
                });
            }
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|err| TlsError::Pem {
            path: key_path.clone(),
            reason: err.to_string(),
        })?;
        // Make sure the key file pairs with the certificate before anything is signed with it.
        let key_der =
            PrivateKeyDer::try_from(key.serialize_der()).map_err(|reason| TlsError::Pem {
                path: key_path.clone(),
                reason: reason.to_string(),
            })?;
        let signer = provider.key_provider.load_private_key(key_der)?;
        rustls::sign::CertifiedKey::new(vec![der.clone()], signer)
            .keys_match()
            .or_else(|err| match err {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown) => Ok(()),
                other => Err(other),
            })
            .map_err(|err| TlsError::CaUnusable {
                dir: dir.to_path_buf(),
                reason: format!("{}: {err}", key_path.display()),
            })?;
        return Ok(Ca { pem, der, key });
    }

    if key_path.exists() {
        tracing::warn!(path = %key_path.display(), "CA key without certificate (interrupted first start?); generating a new CA");
    }
    let key = KeyPair::generate()?;
    let mut params = ca_params();
    params.serial_number = Some(random_serial()?);
    let not_before = unix_now().saturating_sub(BACKDATE);
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_before);
    params.not_after =
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_before + CA_LIFETIME);
    let cert = params.self_signed(&key)?;
    // Key first: a crash in between leaves a key without a certificate, which is regenerated next time.
    write_file_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(path = %cert_path.display(), "generated km apiserver CA");
    Ok(Ca {
        pem: cert.pem(),
        der: cert.der().clone(),
        key,
    })
}

/// Returns a serving configuration built from the existing files when they are still good enough.
fn reuse_serving_cert(
    cert_path: &Path,
    key_path: &Path,
    ca: &Ca,
    wanted: &[San],
    now: u64,
    provider: &Arc<CryptoProvider>,
) -> Option<Arc<ServerConfig>> {
    if !cert_path.exists() || !key_path.exists() {
        return None;
    }
    let loaded = read_file(cert_path)
        .and_then(|bytes| parse_certs(cert_path, &bytes))
        .and_then(|chain| Ok((chain, parse_key(key_path, &read_file(key_path)?)?)));
    let (chain, key) = match loaded {
        Ok(loaded) => loaded,
        Err(err) => {
            tracing::warn!(error = %err, "existing serving certificate unreadable; re-issuing");
            return None;
        }
    };
    if let Err(reason) = verify_covers(
        &ca.der,
        &chain[0],
        wanted,
        &[now, now + RENEW_BEFORE],
        provider,
    ) {
        tracing::info!(path = %cert_path.display(), %reason, "re-issuing serving certificate");
        return None;
    }
    match build_server_config(chain, key) {
        Ok(config) => Some(config),
        Err(err) => {
            tracing::warn!(error = %err, "existing serving certificate unusable; re-issuing");
            None
        }
    }
}

/// Checks that `leaf` chains to `ca` and is valid for every name in `wanted` at each of the instants `at`.
fn verify_covers(
    ca: &CertificateDer<'static>,
    leaf: &CertificateDer<'_>,
    wanted: &[San],
    at: &[u64],
    provider: &Arc<CryptoProvider>,
) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|err| format!("CA certificate rejected: {err}"))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|err| format!("CA certificate rejected: {err}"))?;
    for san in wanted {
        let name = san.server_name()?;
        for &instant in at {
            let time = UnixTime::since_unix_epoch(Duration::from_secs(instant));
            verifier
                .verify_server_cert(leaf, &[], &name, &[], time)
                .map_err(|err| {
                    let ahead = instant.saturating_sub(unix_now());
                    if ahead > 60 {
                        format!("{san}: not valid in {} days: {err}", ahead / DAY)
                    } else {
                        format!("{san}: {err}")
                    }
                })?;
        }
    }
    Ok(())
}

/// The full list of names the serving certificate must cover, deduplicated, defaults first.
fn wanted_sans(hostname: Option<&str>, extra: &[String]) -> Result<Vec<San>, TlsError> {
    let mut sans: Vec<San> = Vec::new();
    let mut push = |san: San| {
        let duplicate = sans.iter().any(|existing| match (existing, &san) {
            (San::Dns(a), San::Dns(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        });
        if !duplicate {
            sans.push(san);
        }
    };
    for name in DEFAULT_DNS_SANS {
        push(San::Dns(name.to_string()));
    }
    if let Some(host) = hostname {
        if is_dns_name(host) {
            push(San::Dns(host.to_ascii_lowercase()));
        } else {
            tracing::debug!(
                hostname = host,
                "machine hostname is not a valid DNS name; not adding it as a SAN"
            );
        }
    }
    push(San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    push(San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    for raw in extra {
        let value = raw.trim();
        if let Ok(ip) = value.parse::<IpAddr>() {
            push(San::Ip(ip));
        } else if is_dns_name(value) {
            push(San::Dns(value.to_ascii_lowercase()));
        } else {
            return Err(TlsError::InvalidSan(raw.clone()));
        }
    }
    Ok(sans)
}

fn is_dns_name(value: &str) -> bool {
    !value.is_empty()
        && value.parse::<IpAddr>().is_err()
        && matches!(ServerName::try_from(value), Ok(ServerName::DnsName(_)))
}

fn join_sans(sans: &[San]) -> String {
    sans.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The kernel's hostname (Linux), falling back to `/etc/hostname`.
fn machine_hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .map(|text| text.trim().to_string())
        .find(|name| !name.is_empty())
}

fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| TlsError::Random)?;
    // Positive and with a non-zero leading byte, so the DER INTEGER keeps all 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Pem {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE PEM block found".to_string(),
        });
    }
    Ok(certs)
}

fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    match rustls_pemfile::private_key(&mut &pem[..]) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: "no private key PEM block found".to_string(),
        }),
        Err(err) => Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: err.to_string(),
        }),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes `data` to `path` atomically with `mode`.
fn write_file_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    super::files::write_atomic(path, data, mode).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use hyper::body::{Bytes, Frame};
    use std::os::unix::fs::PermissionsExt;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    fn install_provider() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    fn file_mode(path: &Path) -> u32 {
        fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    fn leaf_of(dir: &Path) -> CertificateDer<'static> {
        let bytes = fs::read(dir.join(SERVING_CERT_FILE)).expect("read serving cert");
        parse_certs(dir, &bytes)
            .expect("parse serving cert")
            .swap_remove(0)
    }

    fn ca_der(material: &TlsMaterial) -> CertificateDer<'static> {
        parse_certs(Path::new("ca"), material.ca_pem.as_bytes())
            .expect("ca pem")
            .swap_remove(0)
    }

    #[test]
    fn certificates_are_generated_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("pki");
        let first = ensure_certificates(&certs, &[]).expect("first start");
        for name in [
            CA_CERT_FILE,
            CA_KEY_FILE,
            SERVING_CERT_FILE,
            SERVING_KEY_FILE,
        ] {
            assert!(certs.join(name).is_file(), "{name} written");
        }
        assert_eq!(file_mode(&certs.join(CA_KEY_FILE)), 0o600);
        assert_eq!(file_mode(&certs.join(SERVING_KEY_FILE)), 0o600);
        assert_eq!(file_mode(&certs), 0o700);
        assert!(first.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(
            first.server_config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let leaf_before = leaf_of(&certs);

        let second = ensure_certificates(&certs, &[]).expect("second start");
        assert_eq!(first.ca_pem, second.ca_pem, "same CA");
        assert_eq!(leaf_before, leaf_of(&certs), "serving cert reused");

        // Every default name verifies against the CA.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let wanted = wanted_sans(machine_hostname().as_deref(), &[]).expect("sans");
        assert!(wanted.contains(&San::Dns("kubernetes.default.svc".into())));
        assert!(wanted.contains(&San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))));
        verify_covers(
            &ca_der(&second),
            &leaf_before,
            &wanted,
            &[unix_now()],
            &provider,
        )
        .expect("defaults covered");
    }

    #[test]
    fn serving_cert_is_reissued_for_new_san_with_same_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ensure_certificates(dir.path(), &[]).expect("first start");
        let leaf_before = leaf_of(dir.path());
        let extra = vec!["10.1.2.3".to_string(), "api.example.test".to_string()];
        let second = ensure_certificates(dir.path(), &extra).expect("with extra SANs");
        assert_eq!(first.ca_pem, second.ca_pem, "CA kept");
        let leaf_after = leaf_of(dir.path());
        assert_ne!(leaf_before, leaf_after, "serving cert re-issued");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let extra_sans = vec![
            San::Ip("10.1.2.3".parse().expect("ip")),
            San::Dns("api.example.test".into()),
        ];
        verify_covers(
            &ca_der(&second),
            &leaf_after,
            &extra_sans,
            &[unix_now()],
            &provider,
        )
        .expect("extra SANs covered");
        assert!(
            verify_covers(
                &ca_der(&second),
                &leaf_before,
                &extra_sans,
                &[unix_now()],
                &provider
            )
            .is_err(),
            "old cert did not cover them"
        );

        // A subset of the names already covered does not trigger another re-issue.
        ensure_certificates(dir.path(), &["10.1.2.3".to_string()]).expect("third start");
        assert_eq!(leaf_after, leaf_of(dir.path()));
    }

    #[test]
    fn serving_cert_is_reissued_when_expiring_or_foreign() {
        let dir = tempfile::tempdir().expect("tempdir");
        let material = ensure_certificates(dir.path(), &[]).expect("first start");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let wanted = wanted_sans(None, &[]).expect("sans");
        let leaf = leaf_of(dir.path());
        // Valid now, but not 400 days from now: such a certificate must be renewed.
        assert!(
            verify_covers(
                &ca_der(&material),
                &leaf,
                &wanted,
                &[unix_now() + 400 * DAY],
                &provider
            )
            .is_err()
        );

        // A certificate from our CA that expires in 10 days is renewed at the next start.
        let ca_key =
            KeyPair::from_pem(&fs::read_to_string(dir.path().join(CA_KEY_FILE)).expect("ca key"))
                .expect("parse ca key");
        let short_key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before =
            rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(unix_now() - DAY);
        params.not_after =
            rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(unix_now() + 10 * DAY);
        let short = params
            .signed_by(&short_key, &Issuer::new(ca_params(), &ca_key))
            .expect("sign");
        fs::write(dir.path().join(SERVING_CERT_FILE), short.pem()).expect("write cert");
        fs::write(dir.path().join(SERVING_KEY_FILE), short_key.serialize_pem()).expect("write key");
        verify_covers(
            &ca_der(&material),
            short.der(),
            &[San::Dns("localhost".into())],
            &[unix_now()],
            &provider,
        )
        .expect("short-lived cert is valid today");
        ensure_certificates(dir.path(), &[]).expect("restart");
        let renewed = leaf_of(dir.path());
        assert_ne!(&renewed, short.der(), "expiring cert replaced");
        verify_covers(
            &ca_der(&material),
            &renewed,
            &wanted,
            &[unix_now() + 300 * DAY],
            &provider,
        )
        .expect("renewed for a year");

        // Replace the serving cert with one from an unrelated CA: it must be replaced again.
        let other = tempfile::tempdir().expect("tempdir");
        ensure_certificates(other.path(), &[]).expect("other CA");
        fs::copy(
            other.path().join(SERVING_CERT_FILE),
            dir.path().join(SERVING_CERT_FILE),
        )
        .expect("copy cert");
        fs::copy(
            other.path().join(SERVING_KEY_FILE),
            dir.path().join(SERVING_KEY_FILE),
        )
        .expect("copy key");
        ensure_certificates(dir.path(), &[]).expect("restart");
        verify_covers(
            &ca_der(&material),
            &leaf_of(dir.path()),
            &wanted,
            &[unix_now()],
            &provider,
        )
        .expect("re-issued by our CA");
    }

    #[test]
    fn bad_inputs_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = ensure_certificates(dir.path(), &["not a name!".to_string()]).unwrap_err();
        assert!(
            matches!(err, TlsError::InvalidSan(ref s) if s == "not a name!"),
            "{err}"
        );

        ensure_certificates(dir.path(), &[]).expect("generate");
        fs::remove_file(dir.path().join(CA_KEY_FILE)).expect("remove key");
        let err = ensure_certificates(dir.path(), &[]).unwrap_err();
        assert!(matches!(err, TlsError::MissingCaKey { .. }), "{err}");

        let junk = dir.path().join("junk.pem");
        fs::write(&junk, "hello").expect("write");
        let err = load_server_config(&junk, &junk).unwrap_err();
        assert!(err.to_string().contains("junk.pem"), "{err}");
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
    }

    #[test]
    fn user_provided_files_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_certificates(dir.path(), &[]).expect("generate");
        let config = load_server_config(
            &dir.path().join(SERVING_CERT_FILE),
            &dir.path().join(SERVING_KEY_FILE),
        )
        .expect("load");
        assert!(config.alpn_protocols.contains(&b"h2".to_vec()));
        // Certificate and key that do not belong together are refused.
        let err = load_server_config(
            &dir.path().join(SERVING_CERT_FILE),
            &dir.path().join(CA_KEY_FILE),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::Rustls(_)), "{err}");
    }

    /// A body that yields whatever the test sends through the channel, one frame per message.
    struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

    impl hyper::body::Body for ChannelBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|item| item.map(|bytes| Ok(Frame::data(bytes))))
        }
    }

    struct Server {
        addr: SocketAddr,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<io::Result<()>>,
        ca_pem: String,
        _dir: tempfile::TempDir,
    }

    async fn start_server(router: axum::Router, drain: Duration) -> Server {
        install_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let material = ensure_certificates(dir.path(), &[]).expect("certs");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_tls(
            listener,
            material.server_config.clone(),
            router,
            shutdown.clone(),
            drain,
        ));
        Server {
            addr,
            shutdown,
            task,
            ca_pem: material.ca_pem,
            _dir: dir,
        }
    }

    fn client_trusting(ca_pem: &str) -> reqwest::Client {
        let mut roots = RootCertStore::empty();
        for cert in parse_certs(Path::new("ca"), ca_pem.as_bytes()).expect("ca") {
            roots.add(cert).expect("root");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .build()
            .expect("client")
    }

    fn test_router() -> axum::Router {
        axum::Router::new()
            .route("/hello", get(|| async { "hello over tls" }))
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
            )
            .route(
                "/stream",
                get(|| async {
                    let (tx, rx) = tokio::sync::mpsc::channel(1);
                    tokio::spawn(async move {
                        for i in 0..3 {
                            if tx.send(Bytes::from(format!("chunk-{i}\n"))).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(150)).await;
                        }
                    });
                    Body::new(ChannelBody(rx))
                }),
            )
    }

    #[tokio::test]
    async fn tls_get_succeeds_only_for_trusting_client() {
        let server = start_server(test_router(), Duration::from_secs(5)).await;
        let url = format!("https://localhost:{}/hello", server.addr.port());
        let body = client_trusting(&server.ca_pem)
            .get(&url)
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        assert_eq!(body, "hello over tls");

        // IP SAN 127.0.0.1 works too, and handlers see the peer address.
        let peer = client_trusting(&server.ca_pem)
            .get(format!("https://127.0.0.1:{}/peer", server.addr.port()))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        assert_eq!(peer, "127.0.0.1");

        // A client trusting some other CA fails the handshake; the server keeps serving.
        let other = tempfile::tempdir().expect("tempdir");
        let other_ca = ensure_certificates(other.path(), &[])
            .expect("other ca")
            .ca_pem;
        let err = client_trusting(&other_ca)
            .get(&url)
            .send()
            .await
            .unwrap_err();
        assert!(err.is_connect() || err.is_request(), "{err:?}");

        // Garbage instead of a ClientHello does not stop the accept loop either.
        {
            use tokio::io::AsyncWriteExt;
            let mut raw = TcpStream::connect(server.addr).await.expect("connect");
            raw.write_all(b"GET / HTTP/1.1\r\n\r\n")
                .await
                .expect("write");
        }
        let again = client_trusting(&server.ca_pem)
            .get(&url)
            .send()
            .await
            .expect("request after failures");
        assert_eq!(again.status(), 200);

        server.shutdown.cancel();
        server.task.await.expect("join").expect("serve_tls result");
    }

    #[tokio::test]
    async fn alpn_negotiates_h2() {
        let server = start_server(test_router(), Duration::from_secs(5)).await;
        let mut roots = RootCertStore::empty();
        for cert in parse_certs(Path::new("ca"), server.ca_pem.as_bytes()).expect("ca") {
            roots.add(cert).expect("root");
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        let tls = connector
            .connect(
                ServerName::try_from("kubernetes.default.svc").expect("name"),
                tcp,
            )
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        drop(tls);
        server.shutdown.cancel();
        server.task.await.expect("join").expect("serve_tls result");
    }

    #[tokio::test]
    async fn streaming_body_arrives_in_chunks() {
        let server = start_server(test_router(), Duration::from_secs(5)).await;
        let mut response = client_trusting(&server.ca_pem)
            .get(format!("https://localhost:{}/stream", server.addr.port()))
            .send()
            .await
            .expect("request");
        assert_eq!(
            response
                .headers()
                .get("transfer-encoding")
                .and_then(|v| v.to_str().ok()),
            Some("chunked")
        );
        let mut chunks = Vec::new();
        while let Some(chunk) = response.chunk().await.expect("chunk") {
            chunks.push(String::from_utf8_lossy(&chunk).into_owned());
        }
        assert_eq!(chunks, vec!["chunk-0\n", "chunk-1\n", "chunk-2\n"]);
        server.shutdown.cancel();
        server.task.await.expect("join").expect("serve_tls result");
    }

    #[tokio::test]
    async fn graceful_shutdown_finishes_in_flight_requests() {
        let router = axum::Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        );
        let server = start_server(router, Duration::from_secs(5)).await;
        let client = client_trusting(&server.ca_pem);
        let url = format!("https://localhost:{}/slow", server.addr.port());
        let in_flight = tokio::spawn(async move { client.get(&url).send().await?.text().await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.shutdown.cancel();
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(3), server.task)
            .await
            .expect("serve_tls ends")
            .expect("join")
            .expect("serve_tls result");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(
            in_flight.await.expect("join").expect("in-flight request"),
            "done"
        );
        // The listener is closed afterwards.
        assert!(TcpStream::connect(server.addr).await.is_err());
    }

    #[tokio::test]
    async fn drain_is_bounded_for_endless_streams() {
        let router = axum::Router::new().route(
            "/forever",
            get(|| async {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                tokio::spawn(async move {
                    while tx.send(Bytes::from_static(b"tick\n")).await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                });
                Body::new(ChannelBody(rx))
            }),
        );
        let server = start_server(router, Duration::from_millis(300)).await;
        let mut response = client_trusting(&server.ca_pem)
            .get(format!("https://localhost:{}/forever", server.addr.port()))
            .send()
            .await
            .expect("request");
        assert!(response.chunk().await.expect("chunk").is_some());
        server.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(3), server.task)
            .await
            .expect("serve_tls ends after the drain bound")
            .expect("join")
            .expect("serve_tls result");
        // The stream is cut once the drain period is over.
        let ended = tokio::time::timeout(Duration::from_secs(3), async {
            while let Ok(Some(_)) = response.chunk().await {}
        })
        .await;
        assert!(ended.is_ok(), "stream ended after shutdown");
    }
}
