//! Flags, start-up and shutdown of `km apiserver`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::allocator::Allocator;
use super::auth::{self, TokenFile};
use super::resources::{self, Resource};
use super::rest::Api;
use super::server::{AppState, router};
use super::store::embedded::{Embedded, Options};
use super::store::{Op, Precondition, Storage, Write};
use super::{kubeconfig, objects, tls};

/// Flags of `km apiserver`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Directory of the store (`store.redb`), the generated certificates and the admin token.
    #[arg(
        long,
        env = "KM_APISERVER_DATA_DIR",
        default_value = "/var/lib/km/apiserver",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Address the HTTPS port listens on.
    #[arg(long, env = "KM_APISERVER_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// HTTPS port (0 picks a free one; 0 with --insecure-port and no TLS flags is not allowed, see below).
    #[arg(long, env = "KM_APISERVER_SECURE_PORT", default_value_t = 6443)]
    pub secure_port: u16,
    /// Serve no HTTPS at all (only with --insecure-port).
    #[arg(long, env = "KM_APISERVER_NO_TLS")]
    pub no_tls: bool,
    /// Plain-HTTP port without authentication, on --insecure-bind-address only (loopback). Off unless given.
    #[arg(long, env = "KM_APISERVER_INSECURE_PORT", value_name = "PORT")]
    pub insecure_port: Option<u16>,
    /// Loopback address of the plain-HTTP port.
    #[arg(
        long,
        env = "KM_APISERVER_INSECURE_BIND_ADDRESS",
        default_value = "127.0.0.1"
    )]
    pub insecure_bind_address: IpAddr,
    /// Serving certificate (PEM) instead of the generated one.
    #[arg(
        long,
        env = "KM_APISERVER_TLS_CERT_FILE",
        requires = "tls_private_key_file",
        value_name = "FILE"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert-file.
    #[arg(
        long,
        env = "KM_APISERVER_TLS_PRIVATE_KEY_FILE",
        requires = "tls_cert_file",
        value_name = "FILE"
    )]
    pub tls_private_key_file: Option<PathBuf>,
    /// Extra names and IPs in the generated serving certificate (comma-separated).
    #[arg(
        long,
        env = "KM_APISERVER_TLS_SAN",
        value_delimiter = ',',
        value_name = "NAME|IP"
    )]
    pub tls_san: Vec<String>,
    /// Bearer tokens, in kube-apiserver's CSV format: token,user,uid,"group1,group2".
    /// The generated admin token (DATA_DIR/admin-token) is always accepted too.
    #[arg(long, env = "KM_APISERVER_TOKEN_AUTH_FILE", value_name = "FILE")]
    pub token_auth_file: Option<PathBuf>,
    /// Write an admin kubeconfig here once serving.
    #[arg(long, env = "KM_APISERVER_WRITE_KUBECONFIG", value_name = "PATH")]
    pub write_kubeconfig: Option<PathBuf>,
    /// ClusterIP range of Services.
    #[arg(
        long,
        env = "KM_SERVICE_CLUSTER_IP_RANGE",
        default_value = "10.0.0.0/24",
        value_name = "CIDR"
    )]
    pub service_cluster_ip_range: String,
    /// NodePorts of Services come from this range, FROM-TO. Keep it apart from the Mesos agents' `ports` resource where both are on one machine.
    #[arg(
        long,
        env = "KM_SERVICE_NODE_PORT_RANGE",
        default_value = "30000-32767",
        value_name = "FROM-TO",
        value_parser = super::allocator::parse_port_range
    )]
    pub service_node_port_range: std::ops::RangeInclusive<u16>,
    /// Recent changes kept for watches that resume from an older resourceVersion.
    #[arg(
        long,
        env = "KM_APISERVER_WATCH_CACHE_SIZE",
        default_value_t = 10_000,
        value_name = "EVENTS"
    )]
    pub watch_cache_size: usize,
    /// How often watches that allow bookmarks get one.
    #[arg(long, env = "KM_APISERVER_BOOKMARK_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub bookmark_interval: Duration,
    /// How long open requests may take to finish at shutdown.
    #[arg(long, env = "KM_APISERVER_SHUTDOWN_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

/// A running apiserver.
pub struct Running {
    /// The HTTPS address, when serving TLS.
    pub secure_addr: Option<SocketAddr>,
    /// The plain-HTTP loopback address, when asked for.
    pub insecure_addr: Option<SocketAddr>,
    /// The CA that signed the serving certificate (PEM), when generated.
    pub ca_pem: Option<String>,
    /// The admin bearer token.
    pub admin_token: String,
    /// The REST layer (in-process tests and benchmarks).
    pub api: Arc<Api>,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
}

impl Running {
    /// Waits until every listener has stopped.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        while let Some(r) = self.tasks.join_next().await {
            r.context("apiserver task panicked")??;
        }
        Ok(())
    }
}

const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Opens the store, makes sure the system objects exist, and starts serving.
pub async fn start(args: Args, shutdown: CancellationToken) -> anyhow::Result<Running> {
    crate::mesos::scheduler::install_crypto_provider();
    if args.no_tls && args.insecure_port.is_none() {
        bail!(
            "--no-tls leaves nothing to serve: also give --insecure-port PORT (plain HTTP on loopback)"
        );
    }
    if args.insecure_port.is_some() && !args.insecure_bind_address.is_loopback() {
        bail!(
            "--insecure-bind-address {}: plain HTTP without authentication is only served on loopback; use 127.0.0.1 or ::1, or use the HTTPS port",
            args.insecure_bind_address
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("--data-dir {}: cannot create it", args.data_dir.display()))?;
    let path = args.data_dir.join("store.redb");
    let store = Embedded::open(
        &path,
        resources::indexer(),
        Options {
            window: args.watch_cache_size,
            ..Options::default()
        },
    )
    .with_context(|| {
        format!(
            "--data-dir {}: cannot open the store",
            args.data_dir.display()
        )
    })?;
    let store: Arc<dyn Storage> = Arc::new(store);
    let allocator = rebuild_allocator(
        &*store,
        &args.service_cluster_ip_range,
        args.service_node_port_range.clone(),
    )?;
    let api = Arc::new(Api {
        store,
        allocator: Mutex::new(allocator),
        shutdown: shutdown.clone(),
        bookmark_every: args.bookmark_interval,
    });
    bootstrap(&api, args.secure_port).await?;

    let admin_token = auth::ensure_admin_token(&args.data_dir).with_context(|| {
        format!(
            "--data-dir {}: cannot keep the admin token",
            args.data_dir.display()
        )
    })?;
    let mut tasks = tokio::task::JoinSet::new();
    let mut secure_addr = None;
    let mut insecure_addr = None;
    let mut ca_pem = None;

    if let Some(port) = args.insecure_port {
        let listener = TcpListener::bind((args.insecure_bind_address, port))
            .await
            .with_context(|| {
                format!(
                    "--insecure-port {port}: cannot listen on {}:{port}",
                    args.insecure_bind_address
                )
            })?;
        let addr = listener.local_addr()?;
        insecure_addr = Some(addr);
        let app = router(AppState {
            api: api.clone(),
            advertise: addr.to_string(),
        });
        let stop = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
                .context("plain-HTTP listener failed")
        });
        tracing::info!(address = %addr, "serving plain HTTP on loopback, without authentication");
    }

    if !args.no_tls {
        let (config, ca) = match (&args.tls_cert_file, &args.tls_private_key_file) {
            (Some(cert), Some(key)) => (
                tls::load_server_config(cert, key).with_context(|| {
                    format!(
                        "--tls-cert-file {} / --tls-private-key-file {}",
                        cert.display(),
                        key.display()
                    )
                })?,
                None,
            ),
            _ => {
                let mut sans = args.tls_san.clone();
                if !args.bind_address.is_unspecified() {
                    sans.push(args.bind_address.to_string());
                }
                let m = tls::ensure_certificates(&args.data_dir, &sans).with_context(|| {
                    format!(
                        "--data-dir {}: cannot create the serving certificate",
                        args.data_dir.display()
                    )
                })?;
                (m.server_config, Some(m.ca_pem))
            }
        };
        ca_pem = ca;
        let listener = TcpListener::bind((args.bind_address, args.secure_port))
            .await
            .with_context(|| {
                format!(
                    "--secure-port {}: cannot listen on {}:{} (in use? pick another with --secure-port)",
                    args.secure_port, args.bind_address, args.secure_port
                )
            })?;
        let addr = listener.local_addr()?;
        secure_addr = Some(addr);
        let mut tokens = match &args.token_auth_file {
            Some(f) => {
                TokenFile::load(f).with_context(|| format!("--token-auth-file {}", f.display()))?
            }
            None => TokenFile::default(),
        };
        tokens.insert(admin_token.clone(), auth::UserInfo::admin());
        let app = router(AppState {
            api: api.clone(),
            advertise: addr.to_string(),
        })
        .layer(auth::layer(Arc::new(tokens)));
        let stop = shutdown.clone();
        let grace = args.shutdown_grace;
        tasks.spawn(async move {
            tls::serve_tls(listener, config, app, stop, grace)
                .await
                .context("HTTPS listener failed")
        });
        tracing::info!(address = %addr, "serving HTTPS");
    }

    if let Some(path) = &args.write_kubeconfig {
        let server = match (secure_addr, insecure_addr) {
            (Some(a), _) => format!("https://{}", client_addr(a)),
            (None, Some(a)) => format!("http://{a}"),
            (None, None) => unreachable!("checked above: something is served"),
        };
        let token = secure_addr.map(|_| admin_token.as_str());
        kubeconfig::write_kubeconfig(path, &server, ca_pem.as_deref(), token)
            .with_context(|| format!("--write-kubeconfig {}", path.display()))?;
        tracing::info!(path = %path.display(), server, "wrote kubeconfig");
    }

    Ok(Running {
        secure_addr,
        insecure_addr,
        ca_pem,
        admin_token,
        api,
        tasks,
    })
}

/// The address a local client uses for a listener (loopback for 0.0.0.0).
fn client_addr(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        SocketAddr::new(IpAddr::from([127, 0, 0, 1]), a.port())
    } else {
        a
    }
}

/// Serves until `shutdown` is cancelled.
pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(args, shutdown).await?.wait().await
}

fn rebuild_allocator(
    store: &dyn Storage,
    cidr: &str,
    node_ports: std::ops::RangeInclusive<u16>,
) -> anyhow::Result<Allocator> {
    let mut alloc = Allocator::new(cidr)
        .map_err(|e| anyhow::anyhow!("--service-cluster-ip-range: {e}"))?
        .with_node_ports(node_ports);
    let services = resources::find("", "v1", "services").expect("services are served");
    let listing = store.list(&services.prefix(), None, None, false)?;
    for o in listing.items {
        let v = o.value();
        if let Some(ip) = v["spec"]["clusterIP"].as_str().and_then(|s| s.parse().ok()) {
            let _ = alloc.take_ip(ip);
        }
        for p in v["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(n) = p["nodePort"].as_u64().and_then(|n| u16::try_from(n).ok()) {
                let _ = alloc.take_port(n);
            }
        }
    }
    Ok(alloc)
}

async fn ensure(
    api: &Api,
    r: &Resource,
    ns: Option<&str>,
    mut obj: serde_json::Value,
) -> anyhow::Result<()> {
    let name = objects::name_of(&obj).to_string();
    let key = r.key(ns, &name);
    if api.store.get(&key).is_some() {
        return Ok(());
    }
    objects::prepare_create(r, &mut obj, ns, std::time::SystemTime::now())?;
    let obj = super::kinds::prepare(
        r,
        obj,
        super::kinds::FieldValidation::Strict,
        super::kinds::Phase::Create,
    )?
    .value;
    match api
        .store
        .write(Write {
            key,
            precondition: Precondition::Absent,
            op: Op::Put(obj),
        })
        .await
    {
        Ok(_) | Err(super::store::StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The system namespaces and the `kubernetes` Service.
async fn bootstrap(api: &Api, secure_port: u16) -> anyhow::Result<()> {
    let namespaces = resources::find("", "v1", "namespaces").expect("namespaces are served");
    for ns in SYSTEM_NAMESPACES {
        ensure(
            api,
            namespaces,
            None,
            json!({"metadata": {"name": ns}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        )
        .await?;
    }
    let services = resources::find("", "v1", "services").expect("services are served");
    let ip = api
        .allocator
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .cidr()
        .first();
    if api
        .store
        .get(&services.key(Some("default"), "kubernetes"))
        .is_none()
    {
        let _ = api
            .allocator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_ip(ip);
    }
    ensure(
        api,
        services,
        Some("default"),
        json!({
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": ip.to_string(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": secure_port.max(1)}]}
        }),
    )
    .await
}
