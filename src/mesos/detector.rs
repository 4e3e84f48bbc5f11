//! Finding the leading Mesos master.
//!
//! A [`MasterSpec`] says where masters are: one HTTP address, or a ZooKeeper
//! ensemble and path in which Mesos masters elect a leader. [`detect`] turns
//! it into a [`watch::Receiver`] that always holds the current leader, and
//! [`redirect_base`] follows the `307` a non-leading master answers with.
//!
//! # ZooKeeper layout and leader choice
//!
//! Every Mesos master joins the election by creating an ephemeral, sequential
//! znode `<path>/json.info_<10-digit sequence>` holding its `MasterInfo` as
//! Mesos JSON. The children of `<path>` are read as Mesos' own detector does:
//! a child name splits at its last `_` into a label and a sequence number;
//! names whose sequence part is not a number (such as `log_replicas`, where
//! the replicated log lives) are not members. **The leader is the member with
//! the lowest sequence number.** Its data is decoded by label: `json.info` is
//! a JSON `MasterInfo`, `info` a binary (pre-0.24) `MasterInfo`, and a member
//! without a label holds a bare `master@ip:port` process id.
//!
//! # Which address the base uses
//!
//! The base is built from the leader's IP address when it has one, as the
//! C++ scheduler library (which connects to the IP of the master's process
//! id) and pymesos (which uses `address.ip`) do; this needs no DNS and works
//! when hostnames do not resolve on the client. See [`master_base`] for the
//! exact order of the fields tried. Masters found through ZooKeeper are
//! reached over `http://`.

use std::fmt;
use std::hash::{BuildHasher as _, Hasher as _};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use prost::Message as _;
use tokio::sync::watch;
use zookeeper_client as zk;

use super::json::{self, JsonError};
use super::proto::v1;

/// The forms [`MasterSpec`] accepts, quoted in parse errors.
const ACCEPTED_FORMS: &str = "host:port, http://host:port, https://host:port or \
     zk://host:port[,host:port...]/path (for example zk://zk1:2181,zk2:2181/mesos)";

/// The ZooKeeper session timeout asked for; Mesos' default (`--zk_session_timeout`).
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The label of the znodes in which masters publish their JSON `MasterInfo`.
const JSON_INFO_LABEL: &str = "json.info";

/// The label of the znodes in which pre-0.24 masters published a binary `MasterInfo`.
const BINARY_INFO_LABEL: &str = "info";

/// Where Mesos masters are.
///
/// Parsed from one of these forms (surrounding whitespace is ignored, the
/// scheme is case-insensitive):
///
/// * `host:port` — shorthand for `http://host:port`;
/// * `http://host:port` or `https://host:port`, optionally with a trailing
///   `/` but no other path; IPv6 hosts go in brackets (`http://[::1]:5050`);
/// * `zk://host:port,host:port/path` — a ZooKeeper ensemble and the path
///   under which masters elect their leader (conventionally `/mesos`); a
///   server without `:port` uses ZooKeeper's 2181. The path is required and
///   may not be `/`, as in Mesos.
/// * `zk://user:password@host:port/path` is accepted and the credentials are
///   **dropped**: when Mesos masters are given ZooKeeper credentials they
///   create their nodes readable by everyone (`EVERYONE_READ_CREATOR_ALL`), so
///   detection reads anonymously and the password is never kept in memory.
///
/// `file://` specs (a file holding the URL), which Mesos' own flags accept,
/// are not: pass the URL itself.
///
/// ```
/// use km::mesos::detector::MasterSpec;
///
/// let spec: MasterSpec = "zk://zk1:2181,zk2:2181/mesos".parse().unwrap();
/// assert_eq!(
///     spec,
///     MasterSpec::ZooKeeper { servers: "zk1:2181,zk2:2181".into(), path: "/mesos".into() }
/// );
/// let spec: MasterSpec = "10.0.0.1:5050".parse().unwrap();
/// assert_eq!(spec, MasterSpec::Http { base: "http://10.0.0.1:5050".into() });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterSpec {
    /// One master (or a load balancer in front of the masters) at a fixed address.
    Http {
        /// `http://host:port` or `https://host:port`, lowercase scheme, no
        /// trailing slash.
        base: String,
    },
    /// Masters electing a leader in ZooKeeper.
    ZooKeeper {
        /// The ensemble, `host:port` entries joined by `,` (every entry has a port).
        servers: String,
        /// The absolute election path, without a trailing slash, e.g. `/mesos`.
        path: String,
    },
}

impl fmt::Display for MasterSpec {
    /// Writes the spec back in its URL form (`http://h:p`, `zk://h:p/path`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterSpec::Http { base } => f.write_str(base),
            MasterSpec::ZooKeeper { servers, path } => write!(f, "zk://{servers}{path}"),
        }
    }
}

impl FromStr for MasterSpec {
    type Err = DetectError;

    fn from_str(input: &str) -> Result<Self, DetectError> {
        parse_spec(input.trim()).map_err(|reason| DetectError::InvalidSpec {
            input: input.to_string(),
            reason,
        })
    }
}

/// The leading master as a client reaches it.
#[derive(Clone, Debug, PartialEq)]
pub struct MasterAddress {
    /// `http://host:port` (or `https://` for an HTTPS [`MasterSpec::Http`]),
    /// no trailing slash; API paths such as `/api/v1/scheduler` go after it.
    pub base: String,
    /// What the leader published about itself in ZooKeeper; `None` for
    /// [`MasterSpec::Http`] and for legacy members that publish only a
    /// process id.
    pub info: Option<v1::MasterInfo>,
}

/// Why masters cannot be found.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The master spec is not one of the accepted forms.
    #[error(
        "invalid Mesos master {input:?}: {reason}; expected {ACCEPTED_FORMS}",
        ACCEPTED_FORMS = ACCEPTED_FORMS
    )]
    InvalidSpec {
        /// The spec as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// [`detect`] was polled outside a tokio runtime, where it cannot start
    /// the task that follows the leader.
    #[error("cannot follow the Mesos master {spec}: no tokio runtime; call detect from within one")]
    NoRuntime {
        /// The spec being followed.
        spec: String,
    },
}

/// Starts following the leading master of `spec`.
///
/// For [`MasterSpec::Http`] the receiver holds that address from the start
/// and forever (its sender stays alive while the receiver does, so
/// `changed()` simply never fires).
///
/// For [`MasterSpec::ZooKeeper`] the receiver starts at `None` and a
/// background task fills it in: it watches the election path, picks the
/// member with the lowest sequence number (see the [module docs](self)),
/// reads its `MasterInfo` and publishes the leader's [`MasterAddress`],
/// notifying receivers only when the leader actually changes. It holds
/// `None` while there is no leader, while the election path does not exist,
/// while the leader's data cannot be decoded, and while there is no
/// ZooKeeper session. A connection loss within the session timeout keeps the
/// last leader (ZooKeeper restores the session and its watches, as Mesos'
/// detector assumes); an expired or closed session yields `None` and a new
/// session, retried with capped exponential backoff. The task ends only
/// when every receiver is dropped. Wait for a leader with
/// `rx.wait_for(Option::is_some)`.
///
/// # Errors
///
/// [`DetectError::InvalidSpec`] for a hand-built spec that [`MasterSpec`]'s
/// parser would reject, [`DetectError::NoRuntime`] outside tokio.
pub async fn detect(
    spec: &MasterSpec,
) -> Result<watch::Receiver<Option<MasterAddress>>, DetectError> {
    // The variants can be built by hand: check and normalize them.
    let spec = check_spec(spec).map_err(|reason| DetectError::InvalidSpec {
        input: spec.to_string(),
        reason,
    })?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| DetectError::NoRuntime {
        spec: spec.to_string(),
    })?;
    match spec {
        MasterSpec::Http { base } => {
            let (tx, rx) = watch::channel(Some(MasterAddress { base, info: None }));
            runtime.spawn(async move { tx.closed().await });
            Ok(rx)
        }
        MasterSpec::ZooKeeper { servers, path } => {
            let (tx, rx) = watch::channel(None);
            runtime.spawn(follow_zookeeper(servers, path, tx));
            Ok(rx)
        }
    }
}

/// Resolves the `Location` of a master's `307` against `current_base` and
/// returns the base to use next (`http://host:port`).
///
/// Mesos sends a protocol-relative `//host:port/path`; its scheme is taken
/// from `current_base` (`https` if that starts with `https://`, else `http`).
/// An absolute `http://` or `https://` location keeps its own scheme. Any
/// path, query, fragment or user info is dropped; a location without a port
/// gives a base without one (the scheme's default port).
///
/// Returns `None` when `location` names no master: empty, a relative
/// reference (same host, so not a leader change), another scheme, or an
/// unparsable host or port.
///
/// ```
/// use km::mesos::detector::redirect_base;
///
/// assert_eq!(
///     redirect_base("http://m1:5050", "//m2:5050/api/v1/scheduler").as_deref(),
///     Some("http://m2:5050")
/// );
/// ```
pub fn redirect_base(current_base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    let (scheme, rest) = if let Some(rest) = location.strip_prefix("//") {
        let current = current_base.trim();
        let https = current
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        (if https { "https" } else { "http" }, rest)
    } else {
        let (scheme, rest) = location.split_once("://")?;
        let scheme = if scheme.eq_ignore_ascii_case("http") {
            "http"
        } else if scheme.eq_ignore_ascii_case("https") {
            "https"
        } else {
            return None;
        };
        (scheme, rest)
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port);
    let (host, port) = parse_host_port(host_port).ok()?;
    Some(match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

/// The `http://host:port` at which a master is reached, from its `MasterInfo`.
///
/// Tried in order, the first usable one wins:
///
/// 1. `address.ip` and `address.port`;
/// 2. the `ip:port` of `pid` (`master@10.0.0.1:5050`);
/// 3. `address.hostname` and `address.port`;
/// 4. the legacy `ip` field (IPv4 in network byte order) and `port`;
/// 5. the legacy `hostname` field and `port`.
///
/// IPv6 addresses are bracketed. `None` if no field names a host and a port
/// in `1..=65535`.
pub fn master_base(info: &v1::MasterInfo) -> Option<String> {
    let address = info.address.as_ref();
    let address_port = address
        .and_then(|a| u16::try_from(a.port).ok())
        .filter(|p| *p != 0);
    let legacy_port = u16::try_from(info.port).ok().filter(|p| *p != 0);
    let legacy_ip = (info.ip != 0).then(|| Ipv4Addr::from(info.ip.to_le_bytes()).to_string());

    let with_port = |host: Option<&str>, port: Option<u16>| http_base(host?, port?);
    with_port(address.and_then(|a| a.ip.as_deref()), address_port)
        .or_else(|| info.pid.as_deref().and_then(base_from_pid))
        .or_else(|| with_port(address.and_then(|a| a.hostname.as_deref()), address_port))
        .or_else(|| with_port(legacy_ip.as_deref(), legacy_port))
        .or_else(|| with_port(info.hostname.as_deref(), legacy_port))
}

// ---------------------------------------------------------------------------
// Parsing

/// Parses a trimmed spec; the error is the reason, without the input.
fn parse_spec(input: &str) -> Result<MasterSpec, String> {
    if input.is_empty() {
        return Err("it is empty".into());
    }
    let (scheme, rest) = match input.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => (String::new(), input),
    };
    match scheme.as_str() {
        "" => parse_http("http", rest),
        "http" | "https" => parse_http(&scheme, rest),
        "zk" => parse_zookeeper(rest),
        "file" => Err("file:// specs are not supported; pass the zk:// URL itself".into()),
        _ => Err(format!("unsupported scheme {scheme:?}")),
    }
}

fn parse_http(scheme: &str, rest: &str) -> Result<MasterSpec, String> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if let Some(i) = rest.find(['/', '?', '#']) {
        return Err(format!(
            "{:?} after host:port is not allowed; give only {scheme}://host:port",
            &rest[i..]
        ));
    }
    if rest.contains('@') {
        return Err("credentials are not supported in HTTP master addresses".into());
    }
    let (host, port) = parse_host_port(rest)?;
    let port = port
        .ok_or_else(|| format!("{host:?} has no port; add the master's port, e.g. {host}:5050"))?;
    Ok(MasterSpec::Http {
        base: format!("{scheme}://{host}:{port}"),
    })
}

fn parse_zookeeper(rest: &str) -> Result<MasterSpec, String> {
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    // Credentials end at the last '@' (as in Mesos); they are not kept.
    let servers = authority
        .rsplit_once('@')
        .map_or(authority, |(_credentials, servers)| servers);
    Ok(MasterSpec::ZooKeeper {
        servers: parse_zk_servers(servers)?,
        path: parse_zk_path(path)?,
    })
}

/// Validates a ZooKeeper server list and gives every entry a port.
fn parse_zk_servers(servers: &str) -> Result<String, String> {
    if servers.trim().is_empty() {
        return Err("no ZooKeeper servers; list them as zk://host:port,host:port/path".into());
    }
    let mut normalized = Vec::new();
    for server in servers.split(',') {
        let server = server.trim();
        if server.is_empty() {
            return Err(format!(
                "empty entry in the ZooKeeper server list {servers:?}; separate servers with single commas"
            ));
        }
        let (host, port) = parse_host_port(server)
            .map_err(|reason| format!("ZooKeeper server {server:?}: {reason}"))?;
        normalized.push(format!("{host}:{}", port.unwrap_or(2181)));
    }
    Ok(normalized.join(","))
}

/// Checks a spec that may have been built by hand, normalizing it as the
/// parser would.
fn check_spec(spec: &MasterSpec) -> Result<MasterSpec, String> {
    match spec {
        MasterSpec::Http { base } => match parse_spec(base.trim())? {
            http @ MasterSpec::Http { .. } => Ok(http),
            MasterSpec::ZooKeeper { .. } => {
                Err("an Http spec holds a zk:// URL; use MasterSpec::ZooKeeper".into())
            }
        },
        MasterSpec::ZooKeeper { servers, path } => Ok(MasterSpec::ZooKeeper {
            servers: parse_zk_servers(servers)?,
            path: parse_zk_path(path)?,
        }),
    }
}

/// Validates a ZooKeeper path and drops one trailing `/`.
fn parse_zk_path(path: &str) -> Result<String, String> {
    const HINT: &str = "give the election path, e.g. zk://host:2181/mesos";
    if path.is_empty() {
        return Err(format!("no ZooKeeper path; {HINT}"));
    }
    if !path.starts_with('/') {
        return Err(format!(
            "ZooKeeper path {path:?} must start with '/'; {HINT}"
        ));
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Err(format!("the ZooKeeper path cannot be \"/\"; {HINT}"));
    }
    for segment in trimmed[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!(
                "ZooKeeper path {path:?} has an empty, \".\" or \"..\" segment; {HINT}"
            ));
        }
        if segment.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "ZooKeeper path {path:?} contains whitespace or control characters"
            ));
        }
    }
    Ok(trimmed.to_string())
}

/// Splits `host[:port]` or `[v6]:port`; the host keeps its brackets.
fn parse_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    if s.is_empty() {
        return Err("no host; write host:port".into());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?} opens '[' without closing it"))?;
        inner
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("{inner:?} in brackets is not an IPv6 address"))?;
        let port =
            match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| {
                    format!("{s:?}: expected ':port' after the bracketed address")
                })?),
            };
        (format!("[{inner}]"), port)
    } else {
        let (host, port) = match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        };
        if host.contains(':') {
            return Err(format!(
                "{s:?}: put IPv6 addresses in brackets, e.g. [::1]:5050"
            ));
        }
        if host.is_empty() {
            return Err(format!("{s:?} has no host; write host:port"));
        }
        if let Some(c) = host
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
        {
            return Err(format!("host {host:?} contains {c:?}"));
        }
        (host.to_string(), port)
    };
    let port = port
        .map(|p| match p.parse::<u16>() {
            Ok(port) if port != 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
            _ => Err(format!("port {p:?} is not a number from 1 to 65535")),
        })
        .transpose()?;
    Ok((host, port))
}

// ---------------------------------------------------------------------------
// Leader choice and MasterInfo decoding

/// A member of the election: a child of the election path with a numeric
/// sequence suffix.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Member {
    /// The child's name, e.g. `json.info_0000000003`.
    name: String,
    /// The part before the last `_` (`json.info`), `None` for a bare number.
    label: Option<String>,
    sequence: u64,
}

impl Member {
    /// Reads a child name; `None` for non-members such as `log_replicas`.
    fn parse(name: &str) -> Option<Member> {
        let (label, sequence) = match name.rsplit_once('_') {
            Some((label, sequence)) => (Some(label.to_string()), sequence),
            None => (None, name),
        };
        if sequence.is_empty() || !sequence.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Member {
            name: name.to_string(),
            label,
            sequence: sequence.parse().ok()?,
        })
    }
}

/// The leading member among the children of the election path: the lowest
/// sequence number, whatever the label (ties, which ZooKeeper never creates,
/// go to the smaller name).
fn leader_of<S: AsRef<str>>(children: &[S]) -> Option<Member> {
    children
        .iter()
        .filter_map(|name| Member::parse(name.as_ref()))
        .min_by(|a, b| (a.sequence, &a.name).cmp(&(b.sequence, &b.name)))
}

/// Why a leader's znode data gave no address.
#[derive(Debug, thiserror::Error)]
enum LeaderDataError {
    #[error("its JSON MasterInfo does not parse: {0}")]
    Json(#[source] JsonError),
    #[error("its binary MasterInfo does not decode: {0}")]
    Binary(#[source] prost::DecodeError),
    #[error("its process id {0:?} is not master@host:port")]
    Pid(String),
    #[error("its MasterInfo names no usable host and port")]
    NoAddress,
    #[error("label {0:?} is unknown (expected json.info)")]
    UnknownLabel(String),
}

/// Decodes the data of the leading member according to its label.
fn decode_leader(member: &Member, data: &[u8]) -> Result<MasterAddress, LeaderDataError> {
    let info = match member.label.as_deref() {
        Some(JSON_INFO_LABEL) => master_info_from_json(data)?,
        Some(BINARY_INFO_LABEL) => v1::MasterInfo::decode(data).map_err(LeaderDataError::Binary)?,
        None => {
            let pid = String::from_utf8_lossy(data).trim().to_string();
            let base = base_from_pid(&pid).ok_or(LeaderDataError::Pid(pid))?;
            return Ok(MasterAddress { base, info: None });
        }
        Some(other) => return Err(LeaderDataError::UnknownLabel(other.to_string())),
    };
    let base = master_base(&info).ok_or(LeaderDataError::NoAddress)?;
    Ok(MasterAddress {
        base,
        info: Some(info),
    })
}

/// Parses a JSON `MasterInfo`. Mesos always writes `id`, `ip` and `port`; a
/// writer that leaves any of them out is tolerated by filling in `""`, `0`
/// and `address.port` (or 5050), so that `address` alone suffices.
fn master_info_from_json(data: &[u8]) -> Result<v1::MasterInfo, LeaderDataError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(data).map_err(|e| LeaderDataError::Json(JsonError::Syntax(e)))?;
    if let Some(object) = value.as_object_mut() {
        let address_port = object
            .get("address")
            .and_then(|a| a.get("port"))
            .cloned()
            .unwrap_or_else(|| serde_json::Value::from(5050));
        object.entry("id").or_insert_with(|| "".into());
        object.entry("ip").or_insert_with(|| 0.into());
        object.entry("port").or_insert(address_port);
    }
    json::from_value(&value).map_err(LeaderDataError::Json)
}

/// `http://host:port` from a libprocess id `name@host:port`.
fn base_from_pid(pid: &str) -> Option<String> {
    let (_, host_port) = pid.rsplit_once('@')?;
    match parse_host_port(host_port).ok()? {
        (host, Some(port)) => Some(format!("http://{host}:{port}")),
        (_, None) => None,
    }
}

/// `http://host:port` for a bare host or IP (bracketing IPv6).
fn http_base(host: &str, port: u16) -> Option<String> {
    let host = host.trim();
    if host.is_empty() {
        return None;
    }
    if host.contains(':') && !host.starts_with('[') {
        Some(format!("http://[{host}]:{port}"))
    } else {
        Some(format!("http://{host}:{port}"))
    }
}

// ---------------------------------------------------------------------------
// Following the leader in ZooKeeper

/// Capped exponential backoff with ±20 % jitter.
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        // A per-call random value, without a dependency on an RNG crate.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let factor = 0.8 + 0.4 * (random % 1000) as f64 / 1000.0;
        delay.mul_f64(factor)
    }
}

/// How a ZooKeeper session stopped being useful.
enum SessionEnd {
    /// Every receiver is gone: stop for good.
    ReceiverGone,
    /// The session expired, was closed or failed authentication.
    Lost(String),
}

/// Publishes `value` if it differs from what receivers hold.
fn publish(tx: &watch::Sender<Option<MasterAddress>>, value: Option<MasterAddress>) {
    tx.send_if_modified(|current| {
        if *current == value {
            return false;
        }
        match &value {
            Some(leader) => {
                tracing::info!(master = %leader.base, "detected the leading Mesos master")
            }
            None => tracing::info!("no leading Mesos master is known"),
        }
        *current = value;
        true
    });
}

/// The background task of [`detect`] for ZooKeeper: one session after
/// another until every receiver is dropped.
async fn follow_zookeeper(servers: String, path: String, tx: watch::Sender<Option<MasterAddress>>) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    loop {
        let connect = zk::Client::connector()
            .with_session_timeout(SESSION_TIMEOUT)
            .with_fail_eagerly()
            .connect(&servers);
        let connected = tokio::select! {
            result = tokio::time::timeout(SESSION_TIMEOUT * 2, connect) => result,
            () = tx.closed() => return,
        };
        let reason = match connected {
            Ok(Ok(client)) => {
                backoff.reset();
                tracing::debug!(%servers, %path, "connected to ZooKeeper");
                let end = follow_session(&client, &path, &tx).await;
                publish(&tx, None);
                match end {
                    SessionEnd::ReceiverGone => return,
                    SessionEnd::Lost(reason) => reason,
                }
            }
            Ok(Err(error)) => format!("cannot connect: {error}"),
            Err(_) => format!("no session within {:?}", SESSION_TIMEOUT * 2),
        };
        publish(&tx, None);
        let delay = backoff.next_delay();
        tracing::warn!(%servers, %path, %reason, ?delay, "ZooKeeper session unavailable; retrying");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = tx.closed() => return,
        }
    }
}

/// Follows the leader within one session.
async fn follow_session(
    client: &zk::Client,
    path: &str,
    tx: &watch::Sender<Option<MasterAddress>>,
) -> SessionEnd {
    let mut states = client.state_watcher();
    let mut retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut known: Option<(String, MasterAddress)> = None;
    loop {
        let state = client.state();
        if state.is_terminated() {
            return SessionEnd::Lost(format!("session {state:?}"));
        }
        let looked = tokio::select! {
            result = look(client, path, tx, &mut known) => result,
            () = tx.closed() => return SessionEnd::ReceiverGone,
            end = session_ended(&mut states) => return end,
        };
        match looked {
            Ok(Some(watcher)) => {
                retry.reset();
                tokio::select! {
                    event = watcher.changed() => {
                        if event.session_state.is_terminated() {
                            return SessionEnd::Lost(format!("session {:?}", event.session_state));
                        }
                        tracing::debug!(event = ?event.event_type, path = %event.path, "election path changed");
                    }
                    () = tx.closed() => return SessionEnd::ReceiverGone,
                    end = session_ended(&mut states) => return end,
                }
            }
            Ok(None) => {}
            Err(error) if is_session_error(&error) => {
                return SessionEnd::Lost(error.to_string());
            }
            Err(error) => {
                let delay = retry.next_delay();
                tracing::warn!(%path, %error, ?delay, "cannot read the Mesos election path; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = tx.closed() => return SessionEnd::ReceiverGone,
                    end = session_ended(&mut states) => return end,
                }
            }
        }
    }
}

/// Waits for the session to reach a terminal state.
async fn session_ended(states: &mut zk::StateWatcher) -> SessionEnd {
    loop {
        let state = states.changed().await;
        if state.is_terminated() {
            return SessionEnd::Lost(format!("session {state:?}"));
        }
        tracing::debug!(?state, "ZooKeeper session state changed");
    }
}

fn is_session_error(error: &zk::Error) -> bool {
    matches!(
        error,
        zk::Error::SessionExpired
            | zk::Error::AuthFailed
            | zk::Error::ClientClosed
            | zk::Error::NoHosts
    )
}

/// Reads the election once and publishes its leader. Returns a watcher that
/// fires on the next change, or `None` to look again at once.
async fn look(
    client: &zk::Client,
    path: &str,
    tx: &watch::Sender<Option<MasterAddress>>,
    known: &mut Option<(String, MasterAddress)>,
) -> Result<Option<zk::OneshotWatcher>, zk::Error> {
    let (children, _, watcher) = match client.get_and_watch_children(path).await {
        Ok(found) => found,
        Err(zk::Error::NoNode) => {
            publish(tx, None);
            *known = None;
            // Wait for the path to be created; if it just was, look again.
            let (stat, watcher) = client.check_and_watch_stat(path).await?;
            return Ok(stat.is_none().then_some(watcher));
        }
        Err(error) => return Err(error),
    };
    let Some(leader) = leader_of(&children) else {
        *known = None;
        publish(tx, None);
        return Ok(Some(watcher));
    };
    if let Some((name, address)) = known.as_ref()
        && *name == leader.name
    {
        publish(tx, Some(address.clone()));
        return Ok(Some(watcher));
    }
    let node = format!("{path}/{}", leader.name);
    match client.get_data(&node).await {
        Ok((data, _)) => match decode_leader(&leader, &data) {
            Ok(address) => {
                *known = Some((leader.name.clone(), address.clone()));
                publish(tx, Some(address));
            }
            Err(error) => {
                tracing::warn!(%node, %error, "the leading Mesos master's znode is unusable");
                *known = None;
                publish(tx, None);
            }
        },
        // The leader left between the listing and the read; the children
        // watch fires for that.
        Err(zk::Error::NoNode) => {}
        Err(error) => return Err(error),
    }
    Ok(Some(watcher))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> MasterSpec {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn http(base: &str) -> MasterSpec {
        MasterSpec::Http { base: base.into() }
    }

    fn zk(servers: &str, path: &str) -> MasterSpec {
        MasterSpec::ZooKeeper {
            servers: servers.into(),
            path: path.into(),
        }
    }

    fn parse_error(s: &str) -> String {
        match s.parse::<MasterSpec>() {
            Ok(spec) => panic!("{s:?} should not parse, got {spec:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_http_forms() {
        assert_eq!(spec("10.0.0.1:5050"), http("http://10.0.0.1:5050"));
        assert_eq!(
            spec("master.example:5050"),
            http("http://master.example:5050")
        );
        assert_eq!(spec("http://m:5050"), http("http://m:5050"));
        assert_eq!(spec("https://m:5443"), http("https://m:5443"));
        assert_eq!(spec("HTTP://m:5050/"), http("http://m:5050"));
        assert_eq!(spec("  http://m:5050 \n"), http("http://m:5050"));
        assert_eq!(spec("[::1]:5050"), http("http://[::1]:5050"));
        assert_eq!(
            spec("https://[fe80::1]:5050"),
            http("https://[fe80::1]:5050")
        );
    }

    #[test]
    fn parses_zookeeper_forms() {
        assert_eq!(spec("zk://zk1:2181/mesos"), zk("zk1:2181", "/mesos"));
        assert_eq!(
            spec("zk://zk1:2181,zk2:2182,10.0.0.3:2183/mesos"),
            zk("zk1:2181,zk2:2182,10.0.0.3:2183", "/mesos")
        );
        assert_eq!(spec("ZK://zk1:2181/a/b/"), zk("zk1:2181", "/a/b"));
        assert_eq!(
            spec("zk://zk1,zk2:2182/mesos"),
            zk("zk1:2181,zk2:2182", "/mesos")
        );
        assert_eq!(spec("zk://[::1]:2181/mesos"), zk("[::1]:2181", "/mesos"));
        // Credentials are accepted and dropped; the last '@' ends them.
        assert_eq!(
            spec("zk://user:p@ss@zk1:2181,zk2:2181/mesos"),
            zk("zk1:2181,zk2:2181", "/mesos")
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "http://m:5050",
            "https://[::1]:5050",
            "zk://a:1,b:2/mesos/x",
        ] {
            assert_eq!(spec(s).to_string(), s);
            assert_eq!(spec(&spec(s).to_string()), spec(s));
        }
    }

    #[test]
    fn rejects_bad_specs_with_clear_errors() {
        let cases = [
            ("", "it is empty"),
            ("   ", "it is empty"),
            (
                "master",
                "has no port; add the master's port, e.g. master:5050",
            ),
            ("http://master", "has no port"),
            (
                "http://m:5050/api/v1",
                "\"/api/v1\" after host:port is not allowed",
            ),
            ("http://m:5050?x=1", "after host:port is not allowed"),
            ("http://u:p@m:5050", "credentials are not supported"),
            ("m:0", "port \"0\" is not a number from 1 to 65535"),
            ("m:70000", "port \"70000\" is not a number"),
            ("m:+80", "port \"+80\" is not a number"),
            ("m:http", "port \"http\" is not a number"),
            (":5050", "has no host"),
            ("::1:5050", "put IPv6 addresses in brackets"),
            ("[::1:5050", "opens '[' without closing it"),
            ("[nope]:5050", "is not an IPv6 address"),
            ("[::1]5050", "expected ':port' after the bracketed address"),
            ("ma ster:5050", "contains ' '"),
            ("ftp://m:21", "unsupported scheme \"ftp\""),
            ("file:///etc/mesos/zk", "file:// specs are not supported"),
            ("zk://zk1:2181", "no ZooKeeper path"),
            ("zk://zk1:2181/", "cannot be \"/\""),
            ("zk:///mesos", "no ZooKeeper servers"),
            (
                "zk://a:1,,b:2/mesos",
                "empty entry in the ZooKeeper server list",
            ),
            (
                "zk://a:x/mesos",
                "ZooKeeper server \"a:x\": port \"x\" is not a number",
            ),
            ("zk://a:1/mesos//x", "has an empty, \".\" or \"..\" segment"),
            ("zk://a:1/mesos/../x", "has an empty"),
        ];
        for (input, expected) in cases {
            let message = parse_error(input);
            assert!(
                message.contains(expected),
                "error for {input:?} should contain {expected:?}: {message}"
            );
            assert!(
                message.starts_with(&format!("invalid Mesos master {input:?}: ")),
                "error should name the input: {message}"
            );
            assert!(
                message.contains("zk://host:port"),
                "error should list the forms: {message}"
            );
        }
    }

    #[test]
    fn leader_is_the_lowest_sequence() {
        let children = [
            "log_replicas",
            "json.info_0000000010",
            "json.info_0000000003",
            "json.info_0000000007",
            "notes",
            "json.info_",
            "json.info_00x",
        ];
        let leader = leader_of(&children).unwrap();
        assert_eq!(leader.name, "json.info_0000000003");
        assert_eq!(leader.label.as_deref(), Some("json.info"));
        assert_eq!(leader.sequence, 3);
        // Numeric, not lexical, order; and no members at all.
        assert_eq!(
            leader_of(&["json.info_0000000010", "json.info_000000009"])
                .unwrap()
                .sequence,
            9
        );
        assert_eq!(leader_of(&["log_replicas", "other"]), None);
        assert_eq!(leader_of::<&str>(&[]), None);
    }

    #[test]
    fn leader_is_decoded_by_label() {
        let json =
            br#"{"id":"a","ip":16777226,"port":5050,"address":{"ip":"10.0.0.1","port":5050}}"#;
        let member = Member::parse("json.info_0000000001").unwrap();
        let address = decode_leader(&member, json).unwrap();
        assert_eq!(address.base, "http://10.0.0.1:5050");
        assert_eq!(address.info.unwrap().id, "a");

        let info = v1::MasterInfo {
            id: "b".into(),
            ip: u32::from_le_bytes([10, 0, 0, 2]),
            port: 5051,
            ..Default::default()
        };
        let member = Member::parse("info_0000000002").unwrap();
        let address = decode_leader(&member, &info.encode_to_vec()).unwrap();
        assert_eq!(address.base, "http://10.0.0.2:5051");

        let member = Member::parse("0000000003").unwrap();
        let address = decode_leader(&member, b"master@10.0.0.3:5052\n").unwrap();
        assert_eq!(
            address,
            MasterAddress {
                base: "http://10.0.0.3:5052".into(),
                info: None
            }
        );

        let member = Member::parse("weird_0000000004").unwrap();
        assert!(decode_leader(&member, b"{}").is_err());
        let member = Member::parse("json.info_0000000005").unwrap();
        let error = decode_leader(&member, b"not json").unwrap_err();
        assert!(error.to_string().contains("does not parse"), "{error}");
        let error = decode_leader(&member, br#"{"hostname":""}"#).unwrap_err();
        assert!(matches!(error, LeaderDataError::NoAddress), "{error}");
    }

    #[test]
    fn base_from_mesos_master_info_json() {
        // The shape Mesos 1.x writes into json.info_ nodes.
        let json = br#"{"address":{"hostname":"m1.example","ip":"10.0.0.1","port":5050},
            "capabilities":[{"type":"AGENT_UPDATE"},{"type":"AGENT_DRAINING"},{"type":"QUOTA_V2"}],
            "hostname":"m1.example","id":"5c0d7a9e-0000-4000-8000-000000000001",
            "ip":16777226,"pid":"master@10.0.0.1:5050","port":5050,"version":"1.12.0"}"#;
        let info = master_info_from_json(json).unwrap();
        assert_eq!(info.hostname.as_deref(), Some("m1.example"));
        assert_eq!(info.capabilities.len(), 3);
        assert_eq!(master_base(&info).as_deref(), Some("http://10.0.0.1:5050"));
    }

    #[test]
    fn master_base_falls_back_field_by_field() {
        let full = v1::MasterInfo {
            id: "m".into(),
            ip: u32::from_le_bytes([10, 0, 0, 9]),
            port: 6060,
            pid: Some("master@10.0.0.8:7070".into()),
            hostname: Some("legacy.example".into()),
            address: Some(v1::Address {
                hostname: Some("m.example".into()),
                ip: Some("10.0.0.1".into()),
                port: 5050,
            }),
            ..Default::default()
        };
        assert_eq!(master_base(&full).as_deref(), Some("http://10.0.0.1:5050"));

        let mut info = full.clone();
        info.address.as_mut().unwrap().ip = None;
        assert_eq!(master_base(&info).as_deref(), Some("http://10.0.0.8:7070"));

        info.pid = None;
        assert_eq!(master_base(&info).as_deref(), Some("http://m.example:5050"));

        info.address = None;
        assert_eq!(master_base(&info).as_deref(), Some("http://10.0.0.9:6060"));

        info.ip = 0;
        assert_eq!(
            master_base(&info).as_deref(),
            Some("http://legacy.example:6060")
        );

        info.hostname = None;
        assert_eq!(master_base(&info), None);

        let v6 = v1::MasterInfo {
            address: Some(v1::Address {
                hostname: None,
                ip: Some("fd00::1".into()),
                port: 5050,
            }),
            ..Default::default()
        };
        assert_eq!(master_base(&v6).as_deref(), Some("http://[fd00::1]:5050"));

        // An address with an unusable port falls through to the legacy fields.
        let bad_port = v1::MasterInfo {
            id: "m".into(),
            ip: u32::from_le_bytes([127, 0, 0, 1]),
            port: 5050,
            address: Some(v1::Address {
                hostname: None,
                ip: Some("10.0.0.1".into()),
                port: 0,
            }),
            ..Default::default()
        };
        assert_eq!(
            master_base(&bad_port).as_deref(),
            Some("http://127.0.0.1:5050")
        );
    }

    #[test]
    fn json_without_required_fields_is_tolerated() {
        let info = master_info_from_json(br#"{"address":{"ip":"10.1.1.1","port":5055}}"#).unwrap();
        assert_eq!(info.port, 5055);
        assert_eq!(master_base(&info).as_deref(), Some("http://10.1.1.1:5055"));
    }

    #[test]
    fn redirect_base_follows_mesos_locations() {
        let cases = [
            (
                "http://m1:5050",
                "//m2:5050/api/v1/scheduler",
                Some("http://m2:5050"),
            ),
            (
                "https://m1:5050",
                "//m2:5050/api/v1/scheduler",
                Some("https://m2:5050"),
            ),
            ("HTTPS://m1:5050", "//m2:5050", Some("https://m2:5050")),
            ("http://m1:5050", "//m2:5050", Some("http://m2:5050")),
            ("http://m1:5050", "//m2:5050?x#y", Some("http://m2:5050")),
            (
                "http://m1:5050",
                "https://m2:5443/master/redirect",
                Some("https://m2:5443"),
            ),
            ("https://m1:5050", "http://m2:5050/", Some("http://m2:5050")),
            (
                "http://m1:5050",
                " //[::1]:5050/api ",
                Some("http://[::1]:5050"),
            ),
            ("http://m1:5050", "//u:p@m2:5050/", Some("http://m2:5050")),
            ("http://m1:5050", "//m2/api", Some("http://m2")),
            ("http://m1:5050", "/api/v1/scheduler", None),
            ("http://m1:5050", "", None),
            ("http://m1:5050", "//", None),
            ("http://m1:5050", "//:5050/", None),
            ("http://m1:5050", "//m2:99999/", None),
            ("http://m1:5050", "ftp://m2:21/", None),
            ("http://m1:5050", "m2:5050", None),
        ];
        for (base, location, expected) in cases {
            assert_eq!(
                redirect_base(base, location).as_deref(),
                expected,
                "{base} + {location:?}"
            );
        }
    }

    #[tokio::test]
    async fn http_spec_holds_its_address_forever() {
        let mut rx = detect(&spec("m:5050")).await.unwrap();
        assert_eq!(
            *rx.borrow(),
            Some(MasterAddress {
                base: "http://m:5050".into(),
                info: None
            })
        );
        // The sender lives on: waiting for a change times out instead of failing.
        let waited = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
        assert!(
            waited.is_err(),
            "the HTTP receiver must not report a change or close"
        );
    }

    #[tokio::test]
    async fn detect_rejects_hand_built_invalid_specs() {
        let error = detect(&zk("", "/mesos")).await.unwrap_err();
        assert!(
            error.to_string().contains("no ZooKeeper servers"),
            "{error}"
        );
        let error = detect(&zk("a:1", "mesos")).await.unwrap_err();
        assert!(error.to_string().contains("must start with '/'"), "{error}");
        let error = detect(&http("zk://a:1/mesos")).await.unwrap_err();
        assert!(
            error.to_string().contains("use MasterSpec::ZooKeeper"),
            "{error}"
        );
        // A hand-built spec in a form the parser accepts is normalized.
        let rx = detect(&http("m:5050/")).await.unwrap();
        assert_eq!(
            rx.borrow().as_ref().map(|a| a.base.as_str()),
            Some("http://m:5050")
        );
    }

    #[tokio::test]
    async fn unreachable_zookeeper_yields_none_and_keeps_trying() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let mut rx = detect(&zk(&format!("127.0.0.1:{port}"), "/mesos"))
            .await
            .unwrap();
        assert_eq!(*rx.borrow(), None);
        let waited = tokio::time::timeout(Duration::from_millis(600), rx.changed()).await;
        assert!(
            waited.is_err(),
            "no leader may appear and the task must not exit"
        );
    }
}
