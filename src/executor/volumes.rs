//! A pod's volumes on the host, and the ConfigMaps and Secrets its
//! environment reads.
//!
//! [`prepare`] materialises every volume of a pod under
//! `<pod_dir>/volumes/<name>` the way a kubelet's volume plugins do, and
//! returns where each one is ([`VolumePaths`]) for the containers' bind
//! mounts. Supported kinds:
//!
//! * `emptyDir`: a directory (mode 0777, as the kubelet makes it). `medium:
//!   Memory` is also a plain directory on the host's disk (km does not mount a
//!   tmpfs) and `sizeLimit` is not enforced.
//! * `hostPath`: the host path itself, after the checks of its `type`
//!   (`""`, `DirectoryOrCreate`, `Directory`, `FileOrCreate`, `File`,
//!   `Socket`, `CharDevice`, `BlockDevice`); nothing is created under the pod
//!   directory.
//! * `configMap`, `secret`: one file per key (or per `items` entry), mode
//!   `items[].mode`, else `defaultMode`, else 0644; `data` and `binaryData`
//!   (ConfigMap), `data` and `stringData` (Secret). A missing object or key is
//!   an error unless the volume is `optional`.
//! * `downwardAPI`: `metadata.name`, `metadata.namespace`, `metadata.uid`,
//!   `metadata.labels`, `metadata.annotations` (whole maps as `key="value"`
//!   lines, or one key with `metadata.labels['key']`), and `resourceFieldRef`.
//! * `projected`: `configMap`, `secret` and `downwardAPI` sources merged into
//!   one directory.
//!
//! ConfigMap, Secret, downward API and projected volumes are read-only in
//! the containers, as in Kubernetes. Files are written atomically (a
//! temporary file renamed over the old one) and files no longer in the
//! payload are removed, so calling [`prepare`] again refreshes a running
//! pod's volumes. When the pod sets `securityContext.fsGroup`, the volumes
//! km creates are given that group (group-readable, and group-writable for
//! `emptyDir`; directories get the set-group-ID bit), as the kubelet does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};
use kube::Api;

/// Mode of ConfigMap, Secret, downward API and projected files without one.
const DEFAULT_FILE_MODE: u32 = 0o644;
/// Volume kinds [`prepare`] understands, for error messages.
const SUPPORTED_KINDS: &str = "emptyDir, hostPath, configMap, secret, downwardAPI, projected (with configMap, secret and downwardAPI sources)";
/// Prefix of the temporary files of atomic writes. Keys of ConfigMaps and
/// Secrets may not start with `..`, so these never collide with content.
const TMP_PREFIX: &str = "..km-tmp-";

/// Where each volume of a pod is on the host.
#[derive(Debug, Clone, Default)]
pub struct VolumePaths {
    by_name: HashMap<String, (PathBuf, bool)>,
}

impl VolumePaths {
    /// The host path of volume `name` and whether it must be mounted
    /// read-only whatever the volumeMount says.
    pub fn get(&self, name: &str) -> Option<(&Path, bool)> {
        self.by_name.get(name).map(|(p, ro)| (p.as_path(), *ro))
    }

    /// Records volume `name` at `path`.
    pub fn insert(&mut self, name: impl Into<String>, path: PathBuf, read_only: bool) {
        self.by_name.insert(name.into(), (path, read_only));
    }

    /// Number of volumes.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when the pod has no volumes.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The ConfigMaps and Secrets a pod's environment reads, by name.
#[derive(Debug, Clone, Default)]
pub struct EnvSources {
    config_maps: HashMap<String, BTreeMap<String, String>>,
    secrets: HashMap<String, BTreeMap<String, String>>,
}

impl EnvSources {
    /// The `data` of ConfigMap `name`, if it was read.
    pub fn config_map(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.config_maps.get(name)
    }

    /// The data of Secret `name` (decoded to text), if it was read.
    pub fn secret(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.secrets.get(name)
    }

    /// Records ConfigMap `name` (tests and static pods).
    pub fn insert_config_map(&mut self, name: impl Into<String>, data: BTreeMap<String, String>) {
        self.config_maps.insert(name.into(), data);
    }

    /// Records Secret `name` (tests and static pods).
    pub fn insert_secret(&mut self, name: impl Into<String>, data: BTreeMap<String, String>) {
        self.secrets.insert(name.into(), data);
    }
}

/// A pod's volumes or env sources could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The volume is of a kind km's executor does not run.
    #[error(
        "volume {volume:?}: {kind} volumes are not supported by km's executor; supported kinds: {SUPPORTED_KINDS}"
    )]
    Unsupported {
        /// The volume's name.
        volume: String,
        /// Its kind (the field name in the pod spec).
        kind: String,
    },
    /// A referenced ConfigMap or Secret does not exist and is not optional.
    #[error(
        "{what}: {kind} {namespace}/{name} does not exist; create it or mark the reference optional"
    )]
    MissingObject {
        /// What refers to it (`volume "x"` or `container "c" env`).
        what: String,
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A key named in `items` is not in the ConfigMap or Secret.
    #[error(
        "{what}: key {key:?} is not in {kind} {namespace}/{name}; add it or mark the volume optional"
    )]
    MissingKey {
        /// What refers to it.
        what: String,
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The missing key.
        key: String,
    },
    /// A Secret value the environment needs is not UTF-8 text.
    #[error(
        "Secret {namespace}/{name}: the value of key {key:?} is not UTF-8 text and cannot be an environment variable; mount it as a volume instead"
    )]
    NotUtf8 {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The offending key.
        key: String,
    },
    /// A hostPath volume's `type` check failed.
    #[error("volume {volume:?}: hostPath type check failed: {path} {problem}")]
    HostPathType {
        /// The volume's name.
        volume: String,
        /// The host path.
        path: PathBuf,
        /// What is wrong, e.g. `is not a directory`.
        problem: String,
    },
    /// The volume's definition cannot be carried out.
    #[error("volume {volume:?}: {message}")]
    Invalid {
        /// The volume's name.
        volume: String,
        /// What is wrong.
        message: String,
    },
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The API server could not be asked.
    #[error("reading {kind} {namespace}/{name} from the API server: {source}")]
    Api {
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> VolumeError + 'a {
    move |source| VolumeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The directory holding a pod's volumes.
fn volumes_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("volumes")
}

fn namespace_of(pod: &Pod) -> String {
    pod.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned())
}

/// Materialises every volume of `pod` under `pod_dir/volumes/<name>`; see
/// the [module docs](self). Safe to call again to refresh the content.
pub async fn prepare(
    client: &kube::Client,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<VolumePaths, VolumeError> {
    let ns = namespace_of(pod);
    let mut fetcher = Fetcher::new(client, &ns);
    let spec_volumes: &[Volume] = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or(&[]);
    let fs_group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|sc| sc.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    let root = volumes_dir(pod_dir);
    let mut paths = VolumePaths::default();
    for v in spec_volumes {
        check_volume_name(&v.name)?;
        let dir = root.join(&v.name);
        if v.empty_dir.is_some() {
            ensure_dir(&dir, 0o777)?;
            if let Some(g) = fs_group {
                apply_fs_group(&dir, g, false)?;
            }
            paths.insert(&v.name, dir, false);
        } else if let Some(hp) = &v.host_path {
            let p = PathBuf::from(&hp.path);
            check_host_path(&v.name, &p, hp.type_.as_deref().unwrap_or(""))?;
            paths.insert(&v.name, p, false);
        } else if v.config_map.is_some()
            || v.secret.is_some()
            || v.downward_api.is_some()
            || v.projected.is_some()
        {
            let payload = payload_of(v, pod, &mut fetcher).await?;
            ensure_dir(&dir, 0o755)?;
            write_payload(&v.name, &dir, &payload)?;
            if let Some(g) = fs_group {
                apply_fs_group(&dir, g, true)?;
            }
            paths.insert(&v.name, dir, true);
        } else {
            return Err(VolumeError::Unsupported {
                volume: v.name.clone(),
                kind: volume_kind(v),
            });
        }
    }
    Ok(paths)
}

/// Reads the ConfigMaps and Secrets the env and envFrom of `pod`'s
/// containers refer to. A missing object is an error unless every reference
/// to it is optional. Secret values the environment uses must be UTF-8.
pub async fn env_sources(client: &kube::Client, pod: &Pod) -> Result<EnvSources, VolumeError> {
    let ns = namespace_of(pod);
    // Per name: whether some reference is not optional, whether all keys or
    // only some are needed, and who refers to it (for errors).
    #[derive(Default)]
    struct Need {
        required: bool,
        all: bool,
        keys: BTreeSet<String>,
        what: String,
    }
    let mut cms: BTreeMap<String, Need> = BTreeMap::new();
    let mut secrets: BTreeMap<String, Need> = BTreeMap::new();
    let spec = pod.spec.as_ref();
    let containers = spec
        .map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .chain(s.containers.iter())
        })
        .into_iter()
        .flatten();
    for c in containers {
        let what = format!("container {:?} env", c.name);
        let note = |map: &mut BTreeMap<String, Need>,
                    name: &str,
                    optional: Option<bool>,
                    key: Option<&str>| {
            let n = map.entry(name.to_owned()).or_insert_with(|| Need {
                what: what.clone(),
                ..Need::default()
            });
            if !optional.unwrap_or(false) && !n.required {
                n.required = true;
                n.what = what.clone();
            }
            match key {
                Some(k) => {
                    n.keys.insert(k.to_owned());
                }
                None => n.all = true,
            }
        };
        for ef in c.env_from.iter().flatten() {
            if let Some(r) = &ef.config_map_ref {
                note(&mut cms, &r.name, r.optional, None);
            }
            if let Some(r) = &ef.secret_ref {
                note(&mut secrets, &r.name, r.optional, None);
            }
        }
        for e in c.env.iter().flatten() {
            let Some(vf) = &e.value_from else { continue };
            if let Some(r) = &vf.config_map_key_ref {
                note(&mut cms, &r.name, r.optional, Some(&r.key));
            }
            if let Some(r) = &vf.secret_key_ref {
                note(&mut secrets, &r.name, r.optional, Some(&r.key));
            }
        }
    }
    let mut fetcher = Fetcher::new(client, &ns);
    let mut out = EnvSources::default();
    for (name, need) in cms {
        match fetcher.config_map(&name).await? {
            Some(cm) => {
                out.config_maps
                    .insert(name, cm.data.clone().unwrap_or_default());
            }
            None if need.required => {
                return Err(VolumeError::MissingObject {
                    what: need.what,
                    kind: "ConfigMap",
                    namespace: ns.clone(),
                    name,
                });
            }
            None => {}
        }
    }
    for (name, need) in secrets {
        match fetcher.secret(&name).await? {
            Some(s) => {
                let mut data = BTreeMap::new();
                for (k, v) in secret_data(s) {
                    if !need.all && !need.keys.contains(&k) {
                        continue;
                    }
                    let text = String::from_utf8(v).map_err(|_| VolumeError::NotUtf8 {
                        namespace: ns.clone(),
                        name: name.clone(),
                        key: k.clone(),
                    })?;
                    data.insert(k, text);
                }
                out.secrets.insert(name, data);
            }
            None if need.required => {
                return Err(VolumeError::MissingObject {
                    what: need.what,
                    kind: "Secret",
                    namespace: ns.clone(),
                    name,
                });
            }
            None => {}
        }
    }
    Ok(out)
}

/// Removes the pod's volume directories. hostPath volumes live outside and
/// are never touched; symbolic links inside are removed, not followed.
pub fn remove(pod_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(volumes_dir(pod_dir)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// The field name of the volume's source, for error messages.
fn volume_kind(v: &Volume) -> String {
    let value = serde_json::to_value(v).unwrap_or_default();
    value
        .as_object()
        .and_then(|o| o.keys().find(|k| k.as_str() != "name").cloned())
        .unwrap_or_else(|| "sourceless".to_owned())
}

/// Volume names become directory names: refuse anything that is not one
/// plain path component (the API server validates them as DNS labels).
fn check_volume_name(name: &str) -> Result<(), VolumeError> {
    let mut comps = Path::new(name).components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(_)), None) if !name.starts_with("..") => Ok(()),
        _ => Err(VolumeError::Invalid {
            volume: name.to_owned(),
            message: "the volume name must be a DNS label (it names a directory)".to_owned(),
        }),
    }
}

/// Reads ConfigMaps and Secrets once per name.
struct Fetcher {
    cms: Api<ConfigMap>,
    secrets: Api<Secret>,
    ns: String,
    cm_cache: HashMap<String, Option<ConfigMap>>,
    secret_cache: HashMap<String, Option<Secret>>,
}

impl Fetcher {
    fn new(client: &kube::Client, ns: &str) -> Self {
        Fetcher {
            cms: Api::namespaced(client.clone(), ns),
            secrets: Api::namespaced(client.clone(), ns),
            ns: ns.to_owned(),
            cm_cache: HashMap::new(),
            secret_cache: HashMap::new(),
        }
    }

    async fn config_map(&mut self, name: &str) -> Result<Option<&ConfigMap>, VolumeError> {
        if !self.cm_cache.contains_key(name) {
            let got = self
                .cms
                .get_opt(name)
                .await
                .map_err(|source| VolumeError::Api {
                    kind: "ConfigMap",
                    namespace: self.ns.clone(),
                    name: name.to_owned(),
                    source: Box::new(source),
                })?;
            self.cm_cache.insert(name.to_owned(), got);
        }
        Ok(self.cm_cache.get(name).and_then(Option::as_ref))
    }

    async fn secret(&mut self, name: &str) -> Result<Option<&Secret>, VolumeError> {
        if !self.secret_cache.contains_key(name) {
            let got = self
                .secrets
                .get_opt(name)
                .await
                .map_err(|source| VolumeError::Api {
                    kind: "Secret",
                    namespace: self.ns.clone(),
                    name: name.to_owned(),
                    source: Box::new(source),
                })?;
            self.secret_cache.insert(name.to_owned(), got);
        }
        Ok(self.secret_cache.get(name).and_then(Option::as_ref))
    }
}

/// A Secret's values: `data`, with `stringData` over it (an API server
/// folds `stringData` into `data` on write; km honours either).
fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

/// A ConfigMap's values: `data` and `binaryData`.
fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in cm.data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

/// One file of a volume: relative path -> (content, mode).
type Payload = BTreeMap<String, (Vec<u8>, u32)>;

fn mode_of(volume: &str, mode: Option<i32>, default: u32) -> Result<u32, VolumeError> {
    match mode {
        None => Ok(default),
        Some(m) if (0..=0o777).contains(&m) => Ok(m as u32),
        Some(m) => Err(VolumeError::Invalid {
            volume: volume.to_owned(),
            message: format!("file mode {m} ({m:#o}) is outside 0..=0777"),
        }),
    }
}

/// Adds `data`'s keys (all of them, or those in `items`) to `payload`.
#[allow(clippy::too_many_arguments)]
fn add_keys(
    payload: &mut Payload,
    volume: &str,
    kind: &'static str,
    namespace: &str,
    name: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<(), VolumeError> {
    match items {
        None | Some([]) => {
            for (k, v) in data {
                payload.insert(k.clone(), (v.clone(), default_mode));
            }
        }
        Some(items) => {
            for it in items {
                let Some(v) = data.get(&it.key) else {
                    if optional {
                        continue;
                    }
                    return Err(VolumeError::MissingKey {
                        what: format!("volume {volume:?}"),
                        kind,
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                        key: it.key.clone(),
                    });
                };
                let mode = mode_of(volume, it.mode, default_mode)?;
                payload.insert(it.path.clone(), (v.clone(), mode));
            }
        }
    }
    Ok(())
}

/// Adds downward API files to `payload`.
fn add_downward(
    payload: &mut Payload,
    volume: &str,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
) -> Result<(), VolumeError> {
    let invalid = |message: String| VolumeError::Invalid {
        volume: volume.to_owned(),
        message,
    };
    for it in items {
        let value = match (&it.field_ref, &it.resource_field_ref) {
            (Some(f), _) => super::spec::field_ref_value(pod, None, f, true)
                .map_err(|e| invalid(format!("items {:?}: fieldRef: {e}", it.path)))?,
            (None, Some(r)) => {
                let Some(cname) = r.container_name.as_deref().filter(|n| !n.is_empty()) else {
                    return Err(invalid(format!(
                        "items {:?}: resourceFieldRef needs containerName in a volume",
                        it.path
                    )));
                };
                super::spec::resource_field_value(pod, cname, r)
                    .map_err(|e| invalid(format!("items {:?}: resourceFieldRef: {e}", it.path)))?
            }
            (None, None) => {
                return Err(invalid(format!(
                    "items {:?}: neither fieldRef nor resourceFieldRef is set",
                    it.path
                )));
            }
        };
        let mode = mode_of(volume, it.mode, default_mode)?;
        payload.insert(it.path.clone(), (value.into_bytes(), mode));
    }
    Ok(())
}

/// The files of a configMap, secret, downwardAPI or projected volume.
async fn payload_of(v: &Volume, pod: &Pod, f: &mut Fetcher) -> Result<Payload, VolumeError> {
    let ns = f.ns.clone();
    let mut payload = Payload::new();
    if let Some(src) = &v.config_map {
        let mode = mode_of(&v.name, src.default_mode, DEFAULT_FILE_MODE)?;
        let optional = src.optional.unwrap_or(false);
        match f.config_map(&src.name).await? {
            Some(cm) => add_keys(
                &mut payload,
                &v.name,
                "ConfigMap",
                &ns,
                &src.name,
                &config_map_data(cm),
                src.items.as_deref(),
                mode,
                optional,
            )?,
            None if optional => {}
            None => return Err(missing(&v.name, "ConfigMap", &ns, &src.name)),
        }
    } else if let Some(src) = &v.secret {
        let Some(name) = src.secret_name.as_deref().filter(|n| !n.is_empty()) else {
            return Err(VolumeError::Invalid {
                volume: v.name.clone(),
                message: "secret.secretName is not set".to_owned(),
            });
        };
        let mode = mode_of(&v.name, src.default_mode, DEFAULT_FILE_MODE)?;
        let optional = src.optional.unwrap_or(false);
        match f.secret(name).await? {
            Some(s) => add_keys(
                &mut payload,
                &v.name,
                "Secret",
                &ns,
                name,
                &secret_data(s),
                src.items.as_deref(),
                mode,
                optional,
            )?,
            None if optional => {}
            None => return Err(missing(&v.name, "Secret", &ns, name)),
        }
    } else if let Some(src) = &v.downward_api {
        let mode = mode_of(&v.name, src.default_mode, DEFAULT_FILE_MODE)?;
        add_downward(
            &mut payload,
            &v.name,
            pod,
            src.items.as_deref().unwrap_or(&[]),
            mode,
        )?;
    } else if let Some(src) = &v.projected {
        let mode = mode_of(&v.name, src.default_mode, DEFAULT_FILE_MODE)?;
        for (i, p) in src.sources.iter().flatten().enumerate() {
            if let Some(cm_src) = &p.config_map {
                let optional = cm_src.optional.unwrap_or(false);
                match f.config_map(&cm_src.name).await? {
                    Some(cm) => add_keys(
                        &mut payload,
                        &v.name,
                        "ConfigMap",
                        &ns,
                        &cm_src.name,
                        &config_map_data(cm),
                        cm_src.items.as_deref(),
                        mode,
                        optional,
                    )?,
                    None if optional => {}
                    None => return Err(missing(&v.name, "ConfigMap", &ns, &cm_src.name)),
                }
            } else if let Some(s_src) = &p.secret {
                let optional = s_src.optional.unwrap_or(false);
                match f.secret(&s_src.name).await? {
                    Some(s) => add_keys(
                        &mut payload,
                        &v.name,
                        "Secret",
                        &ns,
                        &s_src.name,
                        &secret_data(s),
                        s_src.items.as_deref(),
                        mode,
                        optional,
                    )?,
                    None if optional => {}
                    None => return Err(missing(&v.name, "Secret", &ns, &s_src.name)),
                }
            } else if let Some(d) = &p.downward_api {
                add_downward(
                    &mut payload,
                    &v.name,
                    pod,
                    d.items.as_deref().unwrap_or(&[]),
                    mode,
                )?;
            } else {
                let kind = serde_json::to_value(p)
                    .ok()
                    .and_then(|j| j.as_object().and_then(|o| o.keys().next().cloned()))
                    .unwrap_or_else(|| "empty".to_owned());
                return Err(VolumeError::Unsupported {
                    volume: v.name.clone(),
                    kind: format!("projected.sources[{i}].{kind}"),
                });
            }
        }
    }
    Ok(payload)
}

fn missing(volume: &str, kind: &'static str, ns: &str, name: &str) -> VolumeError {
    VolumeError::MissingObject {
        what: format!("volume {volume:?}"),
        kind,
        namespace: ns.to_owned(),
        name: name.to_owned(),
    }
}

/// Creates `dir` (and parents) if missing and sets its mode.
fn ensure_dir(dir: &Path, mode: u32) -> Result<(), VolumeError> {
    std::fs::create_dir_all(dir).map_err(io_err("creating directory", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("setting the mode of", dir))
}

/// A relative path inside a volume, refusing absolute paths and `..`.
fn relative_inside(volume: &str, rel: &str) -> Result<PathBuf, VolumeError> {
    let p = Path::new(rel);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => {
                return Err(VolumeError::Invalid {
                    volume: volume.to_owned(),
                    message: format!(
                        "file path {rel:?} must be relative and must not contain '..'"
                    ),
                });
            }
        }
    }
    if out.as_os_str().is_empty() || rel.starts_with("..") {
        return Err(VolumeError::Invalid {
            volume: volume.to_owned(),
            message: format!("file path {rel:?} is empty or starts with '..'"),
        });
    }
    Ok(out)
}

/// Writes every file of `payload` under `dir` atomically and removes files
/// that are no longer part of it.
fn write_payload(volume: &str, dir: &Path, payload: &Payload) -> Result<(), VolumeError> {
    let mut wanted: BTreeSet<PathBuf> = BTreeSet::new();
    for (rel, (data, mode)) in payload {
        let rel = relative_inside(volume, rel)?;
        let target = dir.join(&rel);
        // Directories for nested item paths (`a/b/key`); anything else in
        // their place (a file of an older payload, a link) is replaced.
        let mut cur = dir.to_path_buf();
        for c in rel.parent().into_iter().flat_map(Path::components) {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    std::fs::remove_file(&cur).map_err(io_err("removing", &cur))?;
                    ensure_dir(&cur, 0o755)?;
                }
                Err(_) => ensure_dir(&cur, 0o755)?,
            }
        }
        write_atomic(&target, data, *mode)?;
        let mut p = rel.clone();
        wanted.insert(p.clone());
        while p.pop() && !p.as_os_str().is_empty() {
            wanted.insert(p.clone());
        }
    }
    prune(dir, dir, &wanted)
}

/// Writes `data` to `path` through a temporary file in the same directory.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), VolumeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("writing", &tmp)(e));
    }
    if let Ok(m) = std::fs::symlink_metadata(path)
        && m.is_dir()
    {
        std::fs::remove_dir_all(path).map_err(io_err("replacing directory", path))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err("renaming into place", path)(e)
    })
}

/// Removes everything under `dir` whose path relative to `root` is not in
/// `wanted` (left-over temporary files included). Links are not followed.
fn prune(root: &Path, dir: &Path, wanted: &BTreeSet<PathBuf>) -> Result<(), VolumeError> {
    let entries = std::fs::read_dir(dir).map_err(io_err("listing", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err("listing", dir))?;
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        let ft = entry.file_type().map_err(io_err("inspecting", &path))?;
        if !wanted.contains(&rel) {
            if ft.is_dir() {
                std::fs::remove_dir_all(&path).map_err(io_err("removing", &path))?;
            } else {
                std::fs::remove_file(&path).map_err(io_err("removing", &path))?;
            }
        } else if ft.is_dir() {
            prune(root, &path, wanted)?;
        }
    }
    Ok(())
}

/// Gives everything under `dir` the group `gid` and the group permissions a
/// kubelet gives for an fsGroup: read (read-only volumes) or read-write, and
/// set-group-ID plus search on directories. Links are not followed.
fn apply_fs_group(dir: &Path, gid: u32, read_only: bool) -> Result<(), VolumeError> {
    let mask = if read_only { 0o440 } else { 0o660 };
    let meta = std::fs::symlink_metadata(dir).map_err(io_err("inspecting", dir))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    std::os::unix::fs::lchown(dir, None, Some(gid))
        .map_err(io_err("changing the group of", dir))?;
    let mut mode = meta.mode() & 0o7777 | mask;
    if meta.is_dir() {
        mode |= 0o2000 | 0o110;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("setting the mode of", dir))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).map_err(io_err("listing", dir))? {
            let entry = entry.map_err(io_err("listing", dir))?;
            apply_fs_group(&entry.path(), gid, read_only)?;
        }
    }
    Ok(())
}

/// The checks of a hostPath volume's `type`, creating what the `...OrCreate`
/// types ask for. Paths are followed through symbolic links, as `stat` does.
fn check_host_path(volume: &str, path: &Path, typ: &str) -> Result<(), VolumeError> {
    let fail = |problem: &str| VolumeError::HostPathType {
        volume: volume.to_owned(),
        path: path.to_path_buf(),
        problem: problem.to_owned(),
    };
    let meta = std::fs::metadata(path);
    let ft = meta.as_ref().ok().map(|m| m.file_type());
    let is_dir = ft.is_some_and(|t| t.is_dir());
    let is_socket = ft.is_some_and(|t| t.is_socket());
    let is_char = ft.is_some_and(|t| t.is_char_device());
    let is_block = ft.is_some_and(|t| t.is_block_device());
    // Anything that is not one of the special kinds counts as a file (named
    // pipes included), as for the kubelet.
    let is_file = ft.is_some() && !is_dir && !is_socket && !is_char && !is_block;
    match typ {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(path).map_err(io_err("creating directory", path))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                    .map_err(io_err("setting the mode of", path))?;
                Ok(())
            } else if is_dir {
                Ok(())
            } else {
                Err(fail("is not a directory"))
            }
        }
        "Directory" if is_dir => Ok(()),
        "Directory" if meta.is_err() => Err(fail("does not exist")),
        "Directory" => Err(fail("is not a directory")),
        "FileOrCreate" => {
            if meta.is_err() {
                // Like the kubelet, the parent directory is not created.
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .map_err(io_err("creating file", path))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
                    .map_err(io_err("setting the mode of", path))?;
                Ok(())
            } else if is_file {
                Ok(())
            } else {
                Err(fail("is not a file"))
            }
        }
        "File" if is_file => Ok(()),
        "File" if meta.is_err() => Err(fail("does not exist")),
        "File" => Err(fail("is not a file")),
        "Socket" if is_socket => Ok(()),
        "Socket" if meta.is_err() => Err(fail("does not exist")),
        "Socket" => Err(fail("is not a socket file")),
        "CharDevice" if is_char => Ok(()),
        "CharDevice" if meta.is_err() => Err(fail("does not exist")),
        "CharDevice" => Err(fail("is not a character device")),
        "BlockDevice" if is_block => Ok(()),
        "BlockDevice" if meta.is_err() => Err(fail("does not exist")),
        "BlockDevice" => Err(fail("is not a block device")),
        other => Err(VolumeError::Invalid {
            volume: volume.to_owned(),
            message: format!(
                "hostPath.type {other:?} is unknown; use \"\", DirectoryOrCreate, Directory, FileOrCreate, File, Socket, CharDevice or BlockDevice"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::PostParams;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;
    use tokio_util::sync::CancellationToken;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: crate::apiserver::Args,
    }

    /// An in-process km apiserver; stops when the token is dropped/cancelled.
    struct Server {
        client: kube::Client,
        stop: CancellationToken,
        _data: tempfile::TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    async fn server() -> Server {
        use clap::Parser;
        let data = tempfile::tempdir().expect("tempdir");
        let data_dir = data.path().to_str().expect("utf-8 path").to_owned();
        let cli = Cli::try_parse_from([
            "km",
            "--data-dir",
            &data_dir,
            "--no-tls",
            "--insecure-port",
            "0",
        ])
        .expect("args");
        let stop = CancellationToken::new();
        let running = crate::apiserver::start(cli.args, stop.clone())
            .await
            .expect("apiserver");
        let url = format!("http://{}", running.insecure_addr.expect("insecure addr"));
        tokio::spawn(running.wait());
        let client =
            kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
        Server {
            client,
            stop,
            _data: data,
        }
    }

    async fn create_cm(client: &kube::Client, v: serde_json::Value) {
        let cm: ConfigMap = serde_json::from_value(v).expect("configmap");
        Api::<ConfigMap>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &cm)
            .await
            .expect("create configmap");
    }

    async fn create_secret(client: &kube::Client, v: serde_json::Value) {
        let s: Secret = serde_json::from_value(v).expect("secret");
        Api::<Secret>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &s)
            .await
            .expect("create secret");
    }

    fn pod_with(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "vol-pod", "namespace": "default", "uid": "uid-9",
                "labels": {"app": "db"}, "annotations": {"x": "y"}},
            "spec": {"containers": [{"name": "main", "image": "busybox",
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}}],
                "volumes": volumes}
        }))
        .expect("pod")
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o7777
    }

    fn files_under(dir: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    out.push(p.strip_prefix(root).expect("prefix").display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    #[tokio::test]
    async fn prepares_every_supported_kind_and_refreshes() {
        let s = server().await;
        let c = &s.client;
        create_cm(
            c,
            json!({"metadata": {"name": "cfg"},
            "data": {"a.txt": "alpha", "b": "beta"}, "binaryData": {"bin": "AAEC"}}),
        )
        .await;
        create_secret(
            c,
            json!({"metadata": {"name": "sec"},
            "data": {"user": "YWRtaW4=", "pw": "czNjcjN0"}}),
        )
        .await;
        let host = tempfile::tempdir().expect("tempdir");
        let host_dir = host.path().join("made/by/hostpath");
        let host_file = host.path().join("file.sock");
        let pod = pod_with(json!([
            {"name": "scratch", "emptyDir": {}},
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            {"name": "cfg-all", "configMap": {"name": "cfg"}},
            {"name": "cfg-items", "configMap": {"name": "cfg", "defaultMode": 0o640,
                "items": [{"key": "a.txt", "path": "sub/dir/a", "mode": 0o600}, {"key": "b", "path": "b2"}]}},
            {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 0o400}},
            {"name": "sec-default", "secret": {"secretName": "sec", "items": [{"key": "pw", "path": "password"}]}},
            {"name": "opt", "configMap": {"name": "absent", "optional": true}},
            {"name": "opt-items", "secret": {"secretName": "sec", "optional": true,
                "items": [{"key": "nope", "path": "n"}, {"key": "user", "path": "u"}]}},
            {"name": "dapi", "downwardAPI": {"items": [
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}, "mode": 0o444},
                {"path": "meta/x", "fieldRef": {"fieldPath": "metadata.annotations['x']"}},
                {"path": "mem", "resourceFieldRef": {"containerName": "main", "resource": "limits.memory", "divisor": "1Mi"}}]}},
            {"name": "proj", "projected": {"defaultMode": 0o600, "sources": [
                {"configMap": {"name": "cfg", "items": [{"key": "a.txt", "path": "cfg/a"}]}},
                {"secret": {"name": "sec", "items": [{"key": "user", "path": "sec/user"}]}},
                {"secret": {"name": "absent", "optional": true}},
                {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
            {"name": "host-dir", "hostPath": {"path": host_dir, "type": "DirectoryOrCreate"}},
            {"name": "host-file", "hostPath": {"path": host_file, "type": "FileOrCreate"}},
            {"name": "host-any", "hostPath": {"path": "/nonexistent/km/any"}},
        ]));
        let pod_dir = tempfile::tempdir().expect("tempdir");
        let vols = prepare(c, &pod, pod_dir.path()).await.expect("prepare");
        let root = pod_dir.path().join("volumes");
        assert_eq!(vols.len(), 13);

        let (p, ro) = vols.get("scratch").expect("scratch");
        assert_eq!((p, ro), (root.join("scratch").as_path(), false));
        assert!(p.is_dir());
        assert_eq!(mode(p), 0o777);
        assert!(vols.get("mem").expect("mem").0.is_dir());

        let (p, ro) = vols.get("cfg-all").expect("cfg-all");
        assert!(ro);
        assert_eq!(files_under(p), ["a.txt", "b", "bin"]);
        assert_eq!(read(&p.join("a.txt")), "alpha");
        assert_eq!(std::fs::read(p.join("bin")).expect("bin"), [0, 1, 2]);
        assert_eq!(mode(&p.join("a.txt")), 0o644);

        let p = vols.get("cfg-items").expect("cfg-items").0;
        assert_eq!(files_under(p), ["b2", "sub/dir/a"]);
        assert_eq!(read(&p.join("sub/dir/a")), "alpha");
        assert_eq!(mode(&p.join("sub/dir/a")), 0o600);
        assert_eq!(mode(&p.join("b2")), 0o640);

        let p = vols.get("sec").expect("sec").0;
        assert_eq!(files_under(p), ["pw", "user"]);
        assert_eq!(read(&p.join("user")), "admin");
        assert_eq!(mode(&p.join("pw")), 0o400);
        let p = vols.get("sec-default").expect("sec-default").0;
        assert_eq!(files_under(p), ["password"]);
        assert_eq!(read(&p.join("password")), "s3cr3t");
        assert_eq!(mode(&p.join("password")), 0o644);

        assert!(files_under(vols.get("opt").expect("opt").0).is_empty());
        assert_eq!(
            files_under(vols.get("opt-items").expect("opt-items").0),
            ["u"]
        );

        let p = vols.get("dapi").expect("dapi").0;
        assert_eq!(read(&p.join("name")), "vol-pod");
        assert_eq!(read(&p.join("labels")), "app=\"db\"");
        assert_eq!(mode(&p.join("labels")), 0o444);
        assert_eq!(read(&p.join("meta/x")), "y");
        assert_eq!(read(&p.join("mem")), "64");

        let p = vols.get("proj").expect("proj").0;
        assert_eq!(files_under(p), ["cfg/a", "ns", "sec/user"]);
        assert_eq!(read(&p.join("cfg/a")), "alpha");
        assert_eq!(read(&p.join("sec/user")), "admin");
        assert_eq!(read(&p.join("ns")), "default");
        assert_eq!(mode(&p.join("ns")), 0o600);

        let (p, ro) = vols.get("host-dir").expect("host-dir");
        assert_eq!((p, ro), (host_dir.as_path(), false));
        assert!(host_dir.is_dir());
        assert!(host_file.is_file());
        assert_eq!(mode(&host_file), 0o644);
        assert_eq!(
            vols.get("host-any").expect("any").0,
            Path::new("/nonexistent/km/any")
        );
        assert!(
            !root.join("host-dir").exists(),
            "hostPath is not under the pod"
        );

        // Refresh: changed values are rewritten, removed keys disappear,
        // emptyDir content survives, no temporary files are left.
        std::fs::write(root.join("scratch/keep"), "kept").expect("write");
        let cms = Api::<ConfigMap>::namespaced(c.clone(), "default");
        let mut cm = cms.get("cfg").await.expect("get cfg");
        cm.data = Some(
            [
                ("a.txt".to_owned(), "ALPHA".to_owned()),
                ("b".to_owned(), "beta".to_owned()),
            ]
            .into(),
        );
        cm.binary_data = None;
        cms.replace("cfg", &PostParams::default(), &cm)
            .await
            .expect("replace cfg");
        let again = prepare(c, &pod, pod_dir.path())
            .await
            .expect("prepare again");
        let p = again.get("cfg-all").expect("cfg-all").0;
        assert_eq!(files_under(p), ["a.txt", "b"]);
        assert_eq!(read(&p.join("a.txt")), "ALPHA");
        assert_eq!(
            read(&again.get("proj").expect("proj").0.join("cfg/a")),
            "ALPHA"
        );
        assert_eq!(read(&root.join("scratch/keep")), "kept");
        let err = prepare(
            c,
            &pod_with(json!([{"name": "cfg-items", "configMap": {"name": "cfg",
            "items": [{"key": "bin", "path": "b2"}]}}])),
            pod_dir.path(),
        )
        .await
        .expect_err("bin is gone")
        .to_string();
        assert_eq!(
            err,
            "volume \"cfg-items\": key \"bin\" is not in ConfigMap default/cfg; add it or mark the volume optional"
        );

        // remove: the pod's volumes go, hostPath stays.
        remove(pod_dir.path()).expect("remove");
        assert!(!root.exists());
        assert!(host_dir.is_dir() && host_file.is_file());
        remove(pod_dir.path()).expect("remove twice");
    }

    #[tokio::test]
    async fn missing_objects_and_unsupported_kinds_are_errors() {
        let s = server().await;
        let c = &s.client;
        create_secret(
            c,
            json!({"metadata": {"name": "sec"}, "data": {"user": "YWRtaW4="}}),
        )
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            (
                json!({"name": "v", "configMap": {"name": "nope"}}),
                "volume \"v\": ConfigMap default/nope does not exist; create it or mark the reference optional",
            ),
            (
                json!({"name": "v", "secret": {"secretName": "nope", "optional": false}}),
                "volume \"v\": Secret default/nope does not exist; create it or mark the reference optional",
            ),
            (
                json!({"name": "v", "projected": {"sources": [{"configMap": {"name": "nope"}}]}}),
                "volume \"v\": ConfigMap default/nope does not exist; create it or mark the reference optional",
            ),
            (
                json!({"name": "v", "secret": {"secretName": "sec", "items": [{"key": "pw", "path": "p"}]}}),
                "volume \"v\": key \"pw\" is not in Secret default/sec; add it or mark the volume optional",
            ),
            (
                json!({"name": "v", "persistentVolumeClaim": {"claimName": "c"}}),
                "volume \"v\": persistentVolumeClaim volumes are not supported by km's executor; supported kinds: emptyDir, hostPath, configMap, secret, downwardAPI, projected (with configMap, secret and downwardAPI sources)",
            ),
            (
                json!({"name": "v", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}),
                "volume \"v\": projected.sources[0].serviceAccountToken volumes are not supported",
            ),
            (
                json!({"name": "v", "configMap": {"name": "x", "optional": true, "defaultMode": 4096}}),
                "volume \"v\": file mode 4096",
            ),
            (
                json!({"name": "v", "downwardAPI": {"items": [{"path": "../x", "fieldRef": {"fieldPath": "metadata.name"}}]}}),
                "volume \"v\": file path \"../x\" must be relative",
            ),
            (
                json!({"name": "v", "downwardAPI": {"items": [{"path": "x", "fieldRef": {"fieldPath": "spec.nodeName"}}]}}),
                "volume \"v\": items \"x\": fieldRef: not supported",
            ),
        ];
        for (vol, want) in cases {
            let err = prepare(c, &pod_with(json!([vol])), dir.path())
                .await
                .expect_err(want)
                .to_string();
            assert!(err.starts_with(want), "{err}\nwanted: {want}");
        }
    }

    #[test]
    fn host_path_type_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, "x").expect("write");
        let sock_path = dir.path().join("s.sock");
        let _sock = std::os::unix::net::UnixListener::bind(&sock_path).expect("socket");
        let d = dir.path();
        let ok: [(&Path, &str); 9] = [
            (d, ""),
            (d, "Directory"),
            (d, "DirectoryOrCreate"),
            (&file, "File"),
            (&file, "FileOrCreate"),
            (&sock_path, "Socket"),
            (Path::new("/dev/null"), "CharDevice"),
            (Path::new("/nonexistent/km"), ""),
            (&sock_path, ""),
        ];
        for (p, t) in ok {
            check_host_path("v", p, t).unwrap_or_else(|e| panic!("{} {t}: {e}", p.display()));
        }
        let missing = d.join("missing");
        let bad: [(&Path, &str, &str); 9] = [
            (&file, "Directory", "is not a directory"),
            (&missing, "Directory", "does not exist"),
            (&file, "DirectoryOrCreate", "is not a directory"),
            (d, "File", "is not a file"),
            (&missing, "File", "does not exist"),
            (d, "FileOrCreate", "is not a file"),
            (&file, "Socket", "is not a socket file"),
            (&file, "CharDevice", "is not a character device"),
            (
                Path::new("/dev/null"),
                "BlockDevice",
                "is not a block device",
            ),
        ];
        for (p, t, problem) in bad {
            let err = check_host_path("v", p, t).expect_err(t).to_string();
            assert_eq!(
                err,
                format!(
                    "volume \"v\": hostPath type check failed: {} {problem}",
                    p.display()
                )
            );
        }
        let err = check_host_path("v", d, "Fifo")
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("hostPath.type \"Fifo\" is unknown"), "{err}");
        // FileOrCreate does not create the parent directory.
        assert!(check_host_path("v", &d.join("no/parent"), "FileOrCreate").is_err());
    }

    #[tokio::test]
    async fn env_sources_read_what_the_env_needs() {
        let s = server().await;
        let c = &s.client;
        create_cm(
            c,
            json!({"metadata": {"name": "cfg"}, "data": {"k": "v", "other": "o"}}),
        )
        .await;
        // "bin" is not UTF-8; it only matters when the environment uses it.
        create_secret(
            c,
            json!({"metadata": {"name": "sec"},
            "data": {"pw": "czNjcjN0", "bin": "//4="}}),
        )
        .await;
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "initContainers": [{"name": "init", "envFrom": [{"configMapRef": {"name": "cfg"}}]}],
                "containers": [{"name": "main", "env": [
                    {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
                    {"name": "O", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k", "optional": true}}},
                ], "envFrom": [{"secretRef": {"name": "gone", "optional": true}}]}]}
        }))
        .expect("pod");
        let src = env_sources(c, &pod).await.expect("env sources");
        assert_eq!(
            src.config_map("cfg")
                .expect("cfg")
                .get("k")
                .map(String::as_str),
            Some("v")
        );
        let sec = src.secret("sec").expect("sec");
        assert_eq!(sec.get("pw").map(String::as_str), Some("s3cr3t"));
        assert!(!sec.contains_key("bin"));
        assert!(src.config_map("absent").is_none());
        assert!(src.secret("gone").is_none());

        let with = |env: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default"},
                "spec": {"containers": [{"name": "main", "env": env}]}}))
            .expect("pod")
        };
        let err = env_sources(c, &with(json!([{"name": "B", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "bin"}}}])))
            .await
            .expect_err("not utf-8")
            .to_string();
        assert!(
            err.starts_with("Secret default/sec: the value of key \"bin\" is not UTF-8"),
            "{err}"
        );
        let err = env_sources(c, &with(json!([{"name": "B", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}])))
            .await
            .expect_err("missing")
            .to_string();
        assert_eq!(
            err,
            "container \"main\" env: ConfigMap default/nope does not exist; create it or mark the reference optional"
        );
    }

    #[tokio::test]
    async fn fs_group_owns_the_volumes() {
        let s = server().await;
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "labels": {"a": "b"}},
            "spec": {"securityContext": {"fsGroup": 4321}, "containers": [],
                "volumes": [{"name": "e", "emptyDir": {}},
                    {"name": "d", "downwardAPI": {"defaultMode": 0o400,
                        "items": [{"path": "l", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}
        }))
        .expect("pod");
        let dir = tempfile::tempdir().expect("tempdir");
        let vols = prepare(&s.client, &pod, dir.path()).await.expect("prepare");
        let e = vols.get("e").expect("e").0;
        let meta = std::fs::metadata(e).expect("stat");
        assert_eq!(meta.gid(), 4321);
        assert_eq!(meta.mode() & 0o7777, 0o2777);
        let l = vols.get("d").expect("d").0.join("l");
        let meta = std::fs::metadata(&l).expect("stat");
        assert_eq!(meta.gid(), 4321);
        assert_eq!(meta.mode() & 0o7777, 0o440);
    }
}
