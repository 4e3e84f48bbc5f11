//! Pods and pod templates: defaulting, validation and update rules.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler,
    Pod, PodSpec, PodStatus, PodTemplateSpec, Probe, ResourceRequirements, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::quantity::{self, Quantity};
use super::{
    FieldError, NameRule, Path, format, is_empty, json, meta, non_negative, or_empty, raw,
};

/// Container image pull policies.
const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];
/// Pod restart policies, in upstream's order.
const RESTART_POLICIES: [&str; 3] = ["Always", "OnFailure", "Never"];
/// DNS policies, in upstream's order.
const DNS_POLICIES: [&str; 4] = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
/// Supported port protocols (sorted, as upstream lists them).
pub(super) const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];
/// The fields a pod update may change.
const UPDATABLE_POD_FIELDS: [&str; 5] = [
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
];
/// Downward API field paths usable in env vars (sorted).
const ENV_FIELD_PATHS: [&str; 9] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
/// Field paths the v1 downward API conversion knows at all.
const CONVERTIBLE_FIELD_PATHS: [&str; 14] = [
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.serviceAccountName",
    "spec.schedulerName",
    "status.phase",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
/// Downward API container resource selectors (sorted).
const RESOURCE_FIELD_PATHS: [&str; 6] = [
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];
/// Resource names that need no domain prefix.
const STANDARD_RESOURCES: [&str; 20] = [
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "persistentvolumeclaims",
    "configmaps",
    "storage",
    "requests.storage",
    "services.nodeports",
    "services.loadbalancers",
];
/// The largest value a 32-bit `activeDeadlineSeconds` may take.
const MAX_INT32: i64 = i32::MAX as i64;
/// UIDs and GIDs are unsigned 32-bit numbers.
const MAX_ID: i64 = u32::MAX as i64;
/// The octal 0777 file-mode bound.
const MAX_FILE_MODE: i32 = 0o777;
const FILE_MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";

// ---------------------------------------------------------------------------
// Defaulting
// ---------------------------------------------------------------------------

/// Applies the defaults upstream gives a new pod: the `v1` defaulting
/// functions (restart and DNS policy, scheduler name, grace period, security
/// context, container pull policy and termination message settings, port
/// protocols, probe and volume defaults, service links, requests from
/// limits), the priority admission default (`priority: 0`,
/// `preemptionPolicy: PreemptLowerPriority` when no class is named), the
/// `serviceAccount`/`serviceAccountName` synchronisation, `status.phase:
/// Pending` and the computed `status.qosClass`.
///
/// The service account itself (`default`) and the not-ready/unreachable
/// tolerations are added by upstream admission plugins, not defaulting, and
/// are left to the caller.
pub fn default_pod(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        requests_from_limits(c.resources.as_mut());
    }
    if spec.enable_service_links.is_none() {
        spec.enable_service_links = Some(true);
    }
    if spec.host_network == Some(true) {
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            for p in c.ports.iter_mut().flatten() {
                if p.host_port.unwrap_or(0) == 0 {
                    p.host_port = Some(p.container_port);
                }
            }
        }
    }
    if is_empty(&spec.service_account_name) && !is_empty(&spec.service_account) {
        spec.service_account_name = spec.service_account.clone();
    }
    if !is_empty(&spec.service_account_name) {
        spec.service_account = spec.service_account_name.clone();
    }
    if is_empty(&spec.priority_class_name) {
        spec.priority.get_or_insert(0);
        spec.preemption_policy
            .get_or_insert_with(|| "PreemptLowerPriority".to_string());
    }
    default_pod_spec(spec);
    let qos = compute_qos(spec);
    let status = pod.status.get_or_insert_with(PodStatus::default);
    status.phase.get_or_insert_with(|| "Pending".to_string());
    status.qos_class.get_or_insert_with(|| qos.to_string());
}

/// Applies the pod-spec defaults to a pod template (what workloads get).
pub(super) fn default_pod_template(template: &mut PodTemplateSpec) {
    default_pod_spec(template.spec.get_or_insert_with(PodSpec::default));
}

/// `SetDefaults_PodSpec` plus the nested container, probe and volume defaults.
fn default_pod_spec(spec: &mut PodSpec) {
    set_if_empty(&mut spec.dns_policy, "ClusterFirst");
    set_if_empty(&mut spec.restart_policy, "Always");
    spec.security_context.get_or_insert_with(Default::default);
    spec.termination_grace_period_seconds.get_or_insert(30);
    set_if_empty(&mut spec.scheduler_name, "default-scheduler");
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(c);
    }
    for ec in spec.ephemeral_containers.iter_mut().flatten() {
        set_if_empty(&mut ec.termination_message_path, "/dev/termination-log");
        set_if_empty(&mut ec.termination_message_policy, "File");
        if is_empty(&ec.image_pull_policy) {
            ec.image_pull_policy = Some(default_pull_policy(or_empty(&ec.image)).to_string());
        }
        for e in ec.env.iter_mut().flatten() {
            default_env(e);
        }
    }
    for v in spec.volumes.iter_mut().flatten() {
        default_volume(v);
    }
}

fn set_if_empty(field: &mut Option<String>, value: &str) {
    if is_empty(field) {
        *field = Some(value.to_string());
    }
}

/// `Always` for `:latest` or untagged images, `IfNotPresent` otherwise.
fn default_pull_policy(image: &str) -> &'static str {
    let (name, has_digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = match last.split_once(':') {
        Some((_, t)) => t,
        None if has_digest || image.is_empty() => "",
        None => "latest",
    };
    if tag == "latest" {
        "Always"
    } else {
        "IfNotPresent"
    }
}

fn default_container(c: &mut Container) {
    if is_empty(&c.image_pull_policy) {
        c.image_pull_policy = Some(default_pull_policy(or_empty(&c.image)).to_string());
    }
    set_if_empty(&mut c.termination_message_path, "/dev/termination-log");
    set_if_empty(&mut c.termination_message_policy, "File");
    for p in c.ports.iter_mut().flatten() {
        default_port(p);
    }
    for e in c.env.iter_mut().flatten() {
        default_env(e);
    }
    for p in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(p);
    }
    if let Some(l) = &mut c.lifecycle {
        for h in [&mut l.post_start, &mut l.pre_stop].into_iter().flatten() {
            if let Some(g) = &mut h.http_get {
                default_http_get(g);
            }
        }
    }
}

fn default_port(p: &mut ContainerPort) {
    set_if_empty(&mut p.protocol, "TCP");
}

fn default_env(e: &mut EnvVar) {
    if let Some(EnvVarSource {
        field_ref: Some(f), ..
    }) = &mut e.value_from
    {
        set_if_empty(&mut f.api_version, "v1");
    }
}

fn default_probe(p: &mut Probe) {
    for (field, value) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if field.unwrap_or(0) == 0 {
            *field = Some(value);
        }
    }
    if let Some(g) = &mut p.http_get {
        default_http_get(g);
    }
}

fn default_http_get(g: &mut HTTPGetAction) {
    set_if_empty(&mut g.path, "/");
    set_if_empty(&mut g.scheme, "HTTP");
}

/// Whether a volume names no source at all.
fn volume_has_no_source(v: &Volume) -> bool {
    volume_sources(v).iter().all(|(_, set)| !set)
}

fn default_volume(v: &mut Volume) {
    if volume_has_no_source(v) {
        v.empty_dir = Some(Default::default());
    }
    if let Some(s) = &mut v.secret {
        s.default_mode.get_or_insert(0o644);
    }
    if let Some(s) = &mut v.config_map {
        s.default_mode.get_or_insert(0o644);
    }
    if let Some(s) = &mut v.downward_api {
        s.default_mode.get_or_insert(0o644);
        for item in s.items.iter_mut().flatten() {
            if let Some(f) = &mut item.field_ref {
                set_if_empty(&mut f.api_version, "v1");
            }
        }
    }
    if let Some(s) = &mut v.projected {
        s.default_mode.get_or_insert(0o644);
        for src in s.sources.iter_mut().flatten() {
            if let Some(t) = &mut src.service_account_token {
                t.expiration_seconds.get_or_insert(3600);
            }
            if let Some(d) = &mut src.downward_api {
                for item in d.items.iter_mut().flatten() {
                    if let Some(f) = &mut item.field_ref {
                        set_if_empty(&mut f.api_version, "v1");
                    }
                }
            }
        }
    }
    if let Some(h) = &mut v.host_path {
        h.type_.get_or_insert_with(String::new);
    }
}

/// Copies limits into missing requests (done for pods, not templates).
fn requests_from_limits(resources: Option<&mut ResourceRequirements>) {
    let Some(r) = resources else { return };
    let Some(limits) = &r.limits else { return };
    let requests = r.requests.get_or_insert_with(BTreeMap::new);
    for (k, v) in limits {
        requests.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// Computes the pod's QoS class from container requests and limits.
pub(super) fn compute_qos(spec: &PodSpec) -> &'static str {
    let mut requests: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut guaranteed = true;
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        let res = c.resources.as_ref();
        for (name, q) in res.and_then(|r| r.requests.as_ref()).into_iter().flatten() {
            if let Some(key) = qos_resource(name)
                && let Ok(v) = quantity::parse(&q.0)
                && v > Quantity::default()
            {
                let e = requests.entry(key).or_default();
                *e = e.saturating_add(v);
            }
        }
        let mut found = BTreeSet::new();
        for (name, q) in res.and_then(|r| r.limits.as_ref()).into_iter().flatten() {
            if let Some(key) = qos_resource(name)
                && let Ok(v) = quantity::parse(&q.0)
                && v > Quantity::default()
            {
                found.insert(key);
                let e = limits.entry(key).or_default();
                *e = e.saturating_add(v);
            }
        }
        if found.len() != 2 {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed
        && requests.len() == limits.len()
        && requests.iter().all(|(k, v)| limits.get(k) == Some(v))
    {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn qos_resource(name: &str) -> Option<&'static str> {
    match name {
        "cpu" => Some("cpu"),
        "memory" => Some("memory"),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// Validates a pod on create (metadata, spec and the create-only rules).
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut errs = pod_metadata_and_spec(pod);
    let spec_path = Path::new("spec");
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        errs.push(FieldError::forbidden(
            &spec_path.child("ephemeralContainers"),
            "cannot be set on create",
        ));
    }
    if !is_empty(&spec.node_name)
        && spec
            .scheduling_gates
            .as_ref()
            .is_some_and(|g| !g.is_empty())
    {
        errs.push(FieldError::forbidden(
            &spec_path.child("nodeName"),
            "cannot be set until all schedulingGates have been cleared",
        ));
    }
    errs
}

/// `validatePodMetadataAndSpec`: shared by create and update.
fn pod_metadata_and_spec(pod: &Pod) -> Vec<FieldError> {
    let mut errs = meta::object_meta(
        &pod.metadata,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    let spec_path = Path::new("spec");
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    if let Some(a) = &pod.metadata.annotations
        && let Some(v) = a.get("kubernetes.io/config.mirror")
        && is_empty(&spec.node_name)
    {
        errs.push(FieldError::invalid(
            &Path::new("metadata")
                .child("annotations")
                .key("kubernetes.io/config.mirror"),
            v,
            "must set spec.nodeName if mirror pod annotation is set",
        ));
    }
    errs.extend(pod_spec(spec, &spec_path, true));
    for (name, list) in [
        ("containers", Some(&spec.containers)),
        ("initContainers", spec.init_containers.as_ref()),
    ] {
        for (i, c) in list.into_iter().flatten().enumerate() {
            let image = or_empty(&c.image);
            if image.trim() != image {
                errs.push(FieldError::invalid(
                    &spec_path.child(name).index(i).child("image"),
                    image,
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    errs
}

/// Validates a pod template as embedded in workloads (`ValidatePodTemplateSpec`).
pub(super) fn pod_template(template: &PodTemplateSpec, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let default_meta = Default::default();
    let m = template.metadata.as_ref().unwrap_or(&default_meta);
    errs.extend(meta::labels(m.labels.as_ref(), &path.child("labels")));
    errs.extend(meta::annotations(
        m.annotations.as_ref(),
        &path.child("annotations"),
    ));
    let default_spec = PodSpec::default();
    let spec = template.spec.as_ref().unwrap_or(&default_spec);
    errs.extend(pod_spec(spec, &path.child("spec"), false));
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        errs.push(FieldError::forbidden(
            &path.child("spec").child("ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
    errs
}

/// `ValidatePodSpec`.
fn pod_spec(spec: &PodSpec, path: &Path, is_pod: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let grace = spec.termination_grace_period_seconds;
    if grace.is_none() {
        errs.push(FieldError::required(
            &path.child("terminationGracePeriodSeconds"),
            "",
        ));
    }
    let vols = volumes(
        spec.volumes.as_deref().unwrap_or(&[]),
        &path.child("volumes"),
        &mut errs,
    );
    let restart_policy = or_empty(&spec.restart_policy);
    containers(spec, &vols, grace, &path.child("containers"), &mut errs);
    init_containers(spec, &vols, grace, &path.child("initContainers"), &mut errs);
    host_network_ports(spec, path, is_pod, &mut errs);
    enum_value(
        restart_policy,
        &RESTART_POLICIES,
        &path.child("restartPolicy"),
        &mut errs,
    );
    enum_value(
        or_empty(&spec.dns_policy),
        &DNS_POLICIES,
        &path.child("dnsPolicy"),
        &mut errs,
    );
    errs.extend(meta::labels(
        spec.node_selector.as_ref(),
        &path.child("nodeSelector"),
    ));
    pod_security_context(spec, &path.child("securityContext"), &mut errs);
    if let Some(a) = &spec.affinity {
        affinity(a, &path.child("affinity"), &mut errs);
    }
    dns_config(spec, &path.child("dnsConfig"), &mut errs);
    for (i, g) in spec.readiness_gates.iter().flatten().enumerate() {
        errs.extend(meta::label_name(
            &g.condition_type,
            &path.child("readinessGates").index(i).child("conditionType"),
        ));
    }
    let mut gates = BTreeSet::new();
    for (i, g) in spec.scheduling_gates.iter().flatten().enumerate() {
        let p = path.child("schedulingGates").index(i);
        errs.extend(meta::label_name(&g.name, &p));
        if !gates.insert(g.name.as_str()) {
            errs.push(FieldError::duplicate(&p, &g.name));
        }
    }
    topology_spread(spec, &path.child("topologySpreadConstraints"), &mut errs);
    name_field(
        &spec.service_account_name,
        NameRule::Dns1123Subdomain,
        &path.child("serviceAccountName"),
        &mut errs,
    );
    name_field(
        &spec.node_name,
        NameRule::Dns1123Subdomain,
        &path.child("nodeName"),
        &mut errs,
    );
    if let Some(v) = spec.active_deadline_seconds
        && !(1..=MAX_INT32).contains(&v)
    {
        errs.push(FieldError::invalid(
            &path.child("activeDeadlineSeconds"),
            v,
            format::inclusive_range(1, MAX_INT32),
        ));
    }
    name_field(
        &spec.hostname,
        NameRule::Dns1123Label,
        &path.child("hostname"),
        &mut errs,
    );
    name_field(
        &spec.subdomain,
        NameRule::Dns1123Label,
        &path.child("subdomain"),
        &mut errs,
    );
    errs.extend(tolerations(
        spec.tolerations.as_deref().unwrap_or(&[]),
        &path.child("tolerations"),
    ));
    for (i, alias) in spec.host_aliases.iter().flatten().enumerate() {
        let p = path.child("hostAliases").index(i);
        if format::parse_ip(&alias.ip).is_none() {
            errs.push(FieldError::invalid(
                &p.child("ip"),
                &alias.ip,
                format::INVALID_IP_MSG,
            ));
        }
        for (j, h) in alias.hostnames.iter().flatten().enumerate() {
            for msg in format::dns1123_subdomain(h) {
                errs.push(FieldError::invalid(&p.child("hostnames").index(j), h, msg));
            }
        }
    }
    name_field(
        &spec.priority_class_name,
        NameRule::Dns1123Subdomain,
        &path.child("priorityClassName"),
        &mut errs,
    );
    if let Some(rc) = &spec.runtime_class_name {
        for msg in format::dns1123_subdomain(rc) {
            errs.push(FieldError::invalid(
                &path.child("runtimeClassName"),
                rc,
                msg,
            ));
        }
    }
    if let Some(p) = &spec.preemption_policy {
        enum_value(
            p,
            &["PreemptLowerPriority", "Never"],
            &path.child("preemptionPolicy"),
            &mut errs,
        );
    }
    if let Some(os) = &spec.os {
        if os.name.is_empty() {
            errs.push(FieldError::required(
                &path.child("os").child("name"),
                "cannot be empty",
            ));
        } else if os.name != "linux" && os.name != "windows" {
            errs.push(FieldError::not_supported(
                &path.child("os"),
                &os.name,
                &["linux", "windows"],
            ));
        }
    }
    errs
}

/// Required when empty, NotSupported when not one of `allowed`.
fn enum_value(value: &str, allowed: &[&str], path: &Path, errs: &mut Vec<FieldError>) {
    if value.is_empty() {
        errs.push(FieldError::required(path, ""));
    } else if !allowed.contains(&value) {
        errs.push(FieldError::not_supported(path, value, allowed));
    }
}

/// Validates an optional name field when it is set.
fn name_field(value: &Option<String>, rule: NameRule, path: &Path, errs: &mut Vec<FieldError>) {
    if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
        for msg in rule.check(v, false) {
            errs.push(FieldError::invalid(path, v, msg));
        }
    }
}

/// The volumes that validated, by name, with whether they are claim-backed.
type Volumes = BTreeMap<String, bool>;

/// The source fields of a volume in upstream's checking order, with whether
/// each is set and the path segment upstream reports (including its typos).
fn volume_sources(v: &Volume) -> [(&'static str, bool); 30] {
    [
        ("emptyDir", v.empty_dir.is_some()),
        ("hostPath", v.host_path.is_some()),
        ("gitRepo", v.git_repo.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("secret", v.secret.is_some()),
        ("nfs", v.nfs.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("glusterfs", v.glusterfs.is_some()),
        ("flocker", v.flocker.is_some()),
        ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
        ("rbd", v.rbd.is_some()),
        ("cinder", v.cinder.is_some()),
        ("cephFS", v.cephfs.is_some()),
        ("quobyte", v.quobyte.is_some()),
        ("downwarAPI", v.downward_api.is_some()),
        ("fc", v.fc.is_some()),
        ("flexVolume", v.flex_volume.is_some()),
        ("configMap", v.config_map.is_some()),
        ("azureFile", v.azure_file.is_some()),
        ("vsphereVolume", v.vsphere_volume.is_some()),
        ("photonPersistentDisk", v.photon_persistent_disk.is_some()),
        ("portworxVolume", v.portworx_volume.is_some()),
        ("azureDisk", v.azure_disk.is_some()),
        ("storageos", v.storageos.is_some()),
        ("projected", v.projected.is_some()),
        ("scaleIO", v.scale_io.is_some()),
        ("csi", v.csi.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("image", v.image.is_some()),
    ]
}

/// `ValidateVolumes`: names, exactly one source each, and the basic checks of
/// the common sources.
fn volumes(vols: &[Volume], path: &Path, errs: &mut Vec<FieldError>) -> Volumes {
    let mut valid = Volumes::new();
    let mut seen = BTreeSet::new();
    for (i, v) in vols.iter().enumerate() {
        let p = path.index(i);
        let mut el = Vec::new();
        let mut count = 0;
        for (name, set) in volume_sources(v) {
            if set {
                if count > 0 {
                    el.push(FieldError::forbidden(
                        &p.child(name),
                        "may not specify more than 1 volume type",
                    ));
                } else {
                    count += 1;
                }
            }
        }
        if count == 0 {
            el.push(FieldError::required(&p, "must specify a volume type"));
        }
        volume_source_details(v, &p, &mut el);
        if v.name.is_empty() {
            el.push(FieldError::required(&p.child("name"), ""));
        } else {
            for msg in format::dns1123_label(&v.name) {
                el.push(FieldError::invalid(&p.child("name"), &v.name, msg));
            }
        }
        if seen.contains(&v.name) {
            el.push(FieldError::duplicate(&p.child("name"), &v.name));
        }
        if el.is_empty() {
            seen.insert(v.name.clone());
            valid.insert(
                v.name.clone(),
                v.persistent_volume_claim.is_some() || v.ephemeral.is_some(),
            );
        } else {
            errs.extend(el);
        }
    }
    valid
}

fn file_mode(mode: Option<i32>, path: &Path, errs: &mut Vec<FieldError>) {
    if let Some(m) = mode
        && !(0..=MAX_FILE_MODE).contains(&m)
    {
        errs.push(FieldError::invalid(path, m, FILE_MODE_MSG));
    }
}

/// `validateLocalDescendingPath` + `ValidateLocalNonReservedPath`.
fn local_path(target: &str, path: &Path, non_reserved: bool, errs: &mut Vec<FieldError>) {
    if target.starts_with('/') {
        errs.push(FieldError::invalid(path, target, "must be a relative path"));
    }
    no_backsteps(target, path, errs);
    if non_reserved && target.starts_with("..") && !target.starts_with("../") {
        errs.push(FieldError::invalid(
            path,
            target,
            "must not start with '..'",
        ));
    }
}

fn no_backsteps(target: &str, path: &Path, errs: &mut Vec<FieldError>) {
    if target.split('/').any(|part| part == "..") {
        errs.push(FieldError::invalid(path, target, "must not contain '..'"));
    }
}

fn key_to_paths(
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
    path: &Path,
    errs: &mut Vec<FieldError>,
) {
    for (i, kp) in items.into_iter().flatten().enumerate() {
        let p = path.index(i);
        if kp.key.is_empty() {
            errs.push(FieldError::required(&p.child("key"), ""));
        }
        if kp.path.is_empty() {
            errs.push(FieldError::required(&p.child("path"), ""));
        }
        local_path(&kp.path, &p.child("path"), true, errs);
        file_mode(kp.mode, &p.child("mode"), errs);
    }
}

fn volume_source_details(v: &Volume, p: &Path, errs: &mut Vec<FieldError>) {
    if let Some(e) = &v.empty_dir
        && let Some(limit) = &e.size_limit
        && quantity::parse(&limit.0).is_ok_and(|q| q.is_negative())
    {
        errs.push(FieldError::forbidden(
            &p.child("emptyDir").child("sizeLimit"),
            "SizeLimit field must be a valid resource quantity",
        ));
    }
    if let Some(h) = &v.host_path {
        let hp = p.child("hostPath");
        if h.path.is_empty() {
            errs.push(FieldError::required(&hp.child("path"), ""));
        } else {
            no_backsteps(&h.path, &hp.child("path"), errs);
            let t = or_empty(&h.type_);
            const TYPES: [&str; 8] = [
                "",
                "BlockDevice",
                "CharDevice",
                "Directory",
                "DirectoryOrCreate",
                "File",
                "FileOrCreate",
                "Socket",
            ];
            if !TYPES.contains(&t) {
                errs.push(FieldError::not_supported(&hp.child("type"), t, &TYPES));
            }
        }
    }
    if let Some(s) = &v.secret {
        let sp = p.child("secret");
        if is_empty(&s.secret_name) {
            errs.push(FieldError::required(&sp.child("secretName"), ""));
        }
        file_mode(s.default_mode, &sp.child("defaultMode"), errs);
        key_to_paths(s.items.as_ref(), &sp.child("items"), errs);
    }
    if let Some(c) = &v.config_map {
        let cp = p.child("configMap");
        if c.name.is_empty() {
            errs.push(FieldError::required(&cp.child("name"), ""));
        }
        file_mode(c.default_mode, &cp.child("defaultMode"), errs);
        key_to_paths(c.items.as_ref(), &cp.child("items"), errs);
    }
    if let Some(c) = &v.persistent_volume_claim
        && c.claim_name.is_empty()
    {
        errs.push(FieldError::required(
            &p.child("persistentVolumeClaim").child("claimName"),
            "",
        ));
    }
    if let Some(n) = &v.nfs {
        let np = p.child("nfs");
        if n.server.is_empty() {
            errs.push(FieldError::required(&np.child("server"), ""));
        }
        if n.path.is_empty() {
            errs.push(FieldError::required(&np.child("path"), ""));
        }
        if !n.path.starts_with('/') {
            errs.push(FieldError::invalid(
                &np.child("path"),
                &n.path,
                "must be an absolute path",
            ));
        }
    }
    if let Some(d) = &v.downward_api {
        file_mode(
            d.default_mode,
            &p.child("downwardAPI").child("defaultMode"),
            errs,
        );
    }
    if let Some(pr) = &v.projected {
        let pp = p.child("projected");
        file_mode(pr.default_mode, &pp.child("defaultMode"), errs);
        for (i, src) in pr.sources.iter().flatten().enumerate() {
            let sp = pp.child("sources").index(i);
            let mut n = 0;
            if let Some(s) = &src.secret {
                n += 1;
                if s.name.is_empty() {
                    errs.push(FieldError::required(&sp.child("secret").child("name"), ""));
                }
                key_to_paths(s.items.as_ref(), &sp.child("secret").child("items"), errs);
            }
            if let Some(c) = &src.config_map {
                n += 1;
                if c.name.is_empty() {
                    errs.push(FieldError::required(
                        &sp.child("configMap").child("name"),
                        "",
                    ));
                }
                key_to_paths(
                    c.items.as_ref(),
                    &sp.child("configMap").child("items"),
                    errs,
                );
            }
            n += usize::from(src.downward_api.is_some())
                + usize::from(src.service_account_token.is_some())
                + usize::from(src.cluster_trust_bundle.is_some())
                + usize::from(src.pod_certificate.is_some());
            if let Some(t) = &src.service_account_token {
                let tp = sp.child("serviceAccountToken");
                let exp = t.expiration_seconds.unwrap_or(3600);
                if exp < 600 {
                    errs.push(FieldError::invalid(
                        &tp.child("expirationSeconds"),
                        exp,
                        "may not specify a duration less than 10 minutes",
                    ));
                }
                if exp > 1 << 32 {
                    errs.push(FieldError::invalid(
                        &tp.child("expirationSeconds"),
                        exp,
                        "may not specify a duration larger than 2^32 seconds",
                    ));
                }
                if t.path.is_empty() {
                    errs.push(FieldError::required(&pp.child("path"), ""));
                } else {
                    local_path(&t.path, &pp.child("path"), true, errs);
                }
            }
            if n > 1 {
                errs.push(FieldError::forbidden(
                    &sp,
                    "may not specify more than 1 volume type",
                ));
            }
        }
    }
    if let Some(c) = &v.csi {
        let dp = p.child("csi").child("driver");
        if c.driver.is_empty() {
            errs.push(FieldError::required(&dp, ""));
        }
        if c.driver.len() > 63 {
            errs.push(FieldError::too_long(&dp, 63));
        }
        for msg in format::dns1123_subdomain(&c.driver.to_lowercase()) {
            errs.push(FieldError::invalid(&dp, &c.driver, msg));
        }
    }
    if let Some(e) = &v.ephemeral
        && e.volume_claim_template.is_none()
    {
        errs.push(FieldError::required(
            &p.child("ephemeral").child("volumeClaimTemplate"),
            "",
        ));
    }
}

/// Checks shared by regular and init containers (`validateContainerCommon`).
fn container_common(c: &Container, vols: &Volumes, path: &Path, errs: &mut Vec<FieldError>) {
    let name_path = path.child("name");
    if c.name.is_empty() {
        errs.push(FieldError::required(&name_path, ""));
    } else {
        for msg in format::dns1123_label(&c.name) {
            errs.push(FieldError::invalid(&name_path, &c.name, msg));
        }
    }
    if is_empty(&c.image) {
        errs.push(FieldError::required(&path.child("image"), ""));
    }
    enum_value(
        or_empty(&c.termination_message_policy),
        &["File", "FallbackToLogsOnError"],
        &path.child("terminationMessagePolicy"),
        errs,
    );
    container_ports(
        c.ports.as_deref().unwrap_or(&[]),
        &path.child("ports"),
        errs,
    );
    env(c.env.as_deref().unwrap_or(&[]), &path.child("env"), errs);
    env_from(c, &path.child("envFrom"), errs);
    volume_mounts(c, vols, &path.child("volumeMounts"), errs);
    volume_devices(c, vols, &path.child("volumeDevices"), errs);
    enum_value(
        or_empty(&c.image_pull_policy),
        &PULL_POLICIES,
        &path.child("imagePullPolicy"),
        errs,
    );
    if let Some(r) = &c.resources {
        resources(r, &path.child("resources"), errs);
    }
    container_security_context(c, &path.child("securityContext"), errs);
}

fn container_ports(ports: &[ContainerPort], path: &Path, errs: &mut Vec<FieldError>) {
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = format::port_name(name);
            if !msgs.is_empty() {
                for msg in msgs {
                    errs.push(FieldError::invalid(&p.child("name"), name, msg));
                }
            } else if !names.insert(name) {
                errs.push(FieldError::duplicate(&p.child("name"), name));
            }
        }
        if port.container_port == 0 {
            errs.push(FieldError::required(&p.child("containerPort"), ""));
        } else {
            for msg in format::port_num(port.container_port.into()) {
                errs.push(FieldError::invalid(
                    &p.child("containerPort"),
                    port.container_port,
                    msg,
                ));
            }
        }
        if let Some(hp) = port.host_port.filter(|hp| *hp != 0) {
            for msg in format::port_num(hp.into()) {
                errs.push(FieldError::invalid(&p.child("hostPort"), hp, msg));
            }
        }
        enum_value(
            or_empty(&port.protocol),
            &PROTOCOLS,
            &p.child("protocol"),
            errs,
        );
    }
}

fn env(vars: &[EnvVar], path: &Path, errs: &mut Vec<FieldError>) {
    for (i, ev) in vars.iter().enumerate() {
        let p = path.index(i);
        if ev.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        } else {
            for msg in format::env_var_name(&ev.name) {
                errs.push(FieldError::invalid(&p.child("name"), &ev.name, msg));
            }
        }
        let Some(from) = &ev.value_from else { continue };
        let fp = p.child("valueFrom");
        let mut sources = 0;
        if let Some(f) = &from.field_ref {
            sources += 1;
            field_selector(&f.api_version, &f.field_path, &fp.child("fieldRef"), errs);
        }
        if let Some(r) = &from.resource_field_ref {
            sources += 1;
            let rp = fp.child("resourceFieldRef");
            if r.resource.is_empty() {
                errs.push(FieldError::required(&rp.child("resource"), ""));
            } else if !RESOURCE_FIELD_PATHS.contains(&r.resource.as_str())
                && !r.resource.starts_with("requests.hugepages-")
                && !r.resource.starts_with("limits.hugepages-")
            {
                errs.push(FieldError::not_supported(
                    &rp.child("resource"),
                    &r.resource,
                    &RESOURCE_FIELD_PATHS,
                ));
            }
        }
        if let Some(s) = &from.config_map_key_ref {
            sources += 1;
            key_selector(&s.name, &s.key, &fp.child("configMapKeyRef"), errs);
        }
        if let Some(s) = &from.secret_key_ref {
            sources += 1;
            key_selector(&s.name, &s.key, &fp.child("secretKeyRef"), errs);
        }
        if from.file_key_ref.is_some() {
            sources += 1;
        }
        if sources == 0 {
            errs.push(FieldError::invalid(
                &fp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !is_empty(&ev.value) {
            errs.push(FieldError::invalid(
                &fp,
                "",
                "may not be specified when `value` is not empty",
            ));
        } else if sources > 1 {
            errs.push(FieldError::invalid(
                &fp,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
}

/// `validateObjectFieldSelector` for env vars.
fn field_selector(
    api_version: &Option<String>,
    field_path: &str,
    path: &Path,
    errs: &mut Vec<FieldError>,
) {
    if is_empty(api_version) {
        errs.push(FieldError::required(&path.child("apiVersion"), ""));
        return;
    }
    if field_path.is_empty() {
        errs.push(FieldError::required(&path.child("fieldPath"), ""));
        return;
    }
    if let Some((base, rest)) = field_path.split_once('[')
        && let Some(sub) = rest.strip_suffix(']')
    {
        let sub = sub.trim_matches('\'');
        match base {
            "metadata.annotations" => errs.extend(meta::label_name(&sub.to_lowercase(), path)),
            "metadata.labels" => errs.extend(meta::label_name(sub, path)),
            _ => errs.push(FieldError::invalid(
                &path.child("fieldPath"),
                field_path,
                format!("error converting fieldPath: field label not supported: {field_path}"),
            )),
        }
        return;
    }
    if !CONVERTIBLE_FIELD_PATHS.contains(&field_path) {
        errs.push(FieldError::invalid(
            &path.child("fieldPath"),
            field_path,
            format!("error converting fieldPath: field label not supported: {field_path}"),
        ));
    } else if !ENV_FIELD_PATHS.contains(&field_path) {
        errs.push(FieldError::not_supported(
            &path.child("fieldPath"),
            field_path,
            &ENV_FIELD_PATHS,
        ));
    }
}

fn key_selector(name: &str, key: &str, path: &Path, errs: &mut Vec<FieldError>) {
    for msg in format::dns1123_subdomain(name) {
        errs.push(FieldError::invalid(&path.child("name"), name, msg));
    }
    if key.is_empty() {
        errs.push(FieldError::required(&path.child("key"), ""));
    } else {
        for msg in format::config_map_key(key) {
            errs.push(FieldError::invalid(&path.child("key"), key, msg));
        }
    }
}

fn env_from(c: &Container, path: &Path, errs: &mut Vec<FieldError>) {
    for (i, ef) in c.env_from.iter().flatten().enumerate() {
        let p = path.index(i);
        if let Some(prefix) = ef.prefix.as_deref().filter(|s| !s.is_empty()) {
            for msg in format::env_var_name(prefix) {
                errs.push(FieldError::invalid(&p.child("prefix"), prefix, msg));
            }
        }
        let mut n = 0;
        for (field, name) in [
            (
                "configMapRef",
                ef.config_map_ref.as_ref().map(|r| r.name.as_str()),
            ),
            ("secretRef", ef.secret_ref.as_ref().map(|r| r.name.as_str())),
        ] {
            let Some(name) = name else { continue };
            n += 1;
            let np = p.child(field).child("name");
            if name.is_empty() {
                errs.push(FieldError::required(&np, ""));
            } else {
                for msg in NameRule::Dns1123Subdomain.check(name, true) {
                    errs.push(FieldError::invalid(&np, name, msg));
                }
            }
        }
        if n == 0 {
            errs.push(FieldError::invalid(
                path,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if n > 1 {
            errs.push(FieldError::invalid(
                path,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
}

fn volume_mounts(c: &Container, vols: &Volumes, path: &Path, errs: &mut Vec<FieldError>) {
    let devices: BTreeMap<&str, &str> = c
        .volume_devices
        .iter()
        .flatten()
        .map(|d| (d.name.as_str(), d.device_path.as_str()))
        .collect();
    let privileged = c.security_context.as_ref().and_then(|s| s.privileged) == Some(true);
    let mut mount_points = BTreeSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let p = path.index(i);
        if m.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        }
        if !vols.contains_key(&m.name) {
            errs.push(FieldError::not_found(&p.child("name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(&p.child("mountPath"), ""));
        }
        if !mount_points.insert(m.mount_path.as_str()) {
            errs.push(FieldError::invalid(
                &p.child("mountPath"),
                &m.mount_path,
                "must be unique",
            ));
        }
        if devices.contains_key(m.name.as_str()) {
            errs.push(FieldError::invalid(
                &p.child("name"),
                &m.name,
                "must not already exist in volumeDevices",
            ));
        }
        if devices.values().any(|d| *d == m.mount_path) {
            errs.push(FieldError::invalid(
                &p.child("mountPath"),
                &m.mount_path,
                "must not already exist as a path in volumeDevices",
            ));
        }
        let sub_path = or_empty(&m.sub_path);
        if !sub_path.is_empty() {
            local_path(sub_path, &path.child("subPath"), false, errs);
        }
        let expr = or_empty(&m.sub_path_expr);
        if !expr.is_empty() {
            if !sub_path.is_empty() {
                errs.push(FieldError::invalid(
                    &p.child("subPathExpr"),
                    expr,
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            local_path(expr, &path.child("subPathExpr"), false, errs);
        }
        if let Some(mp) = &m.mount_propagation {
            let pp = path.child("mountPropagation");
            const MODES: [&str; 3] = ["Bidirectional", "HostToContainer", "None"];
            if !MODES.contains(&mp.as_str()) {
                errs.push(FieldError::not_supported(&pp, mp, &MODES));
            }
            if mp == "Bidirectional" && !privileged {
                errs.push(FieldError::forbidden(
                    &pp,
                    "Bidirectional mount propagation is available only to privileged containers",
                ));
            }
        }
        if let Some(rro) = &m.recursive_read_only {
            let rp = path.child("recursiveReadOnly");
            match rro.as_str() {
                "Disabled" => {}
                "Enabled" | "IfPossible" => {
                    if m.read_only != Some(true) {
                        errs.push(FieldError::forbidden(
                            &rp,
                            "may only be specified when readOnly is true",
                        ));
                    }
                    if m.mount_propagation.as_deref().is_some_and(|p| p != "None") {
                        errs.push(FieldError::forbidden(
                            &rp,
                            "may only be specified when mountPropagation is None or not specified",
                        ));
                    }
                }
                other => errs.push(FieldError::not_supported(
                    &rp,
                    other,
                    &["Disabled", "Enabled", "IfPossible"],
                )),
            }
        }
    }
}

fn volume_devices(c: &Container, vols: &Volumes, path: &Path, errs: &mut Vec<FieldError>) {
    let mounts: BTreeMap<&str, &str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    let mut names = BTreeSet::new();
    let mut paths = BTreeSet::new();
    for (i, d) in c.volume_devices.iter().flatten().enumerate() {
        let p = path.index(i);
        if d.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        }
        if !names.insert(d.name.as_str()) {
            errs.push(FieldError::invalid(
                &p.child("name"),
                &d.name,
                "must be unique",
            ));
        }
        match vols.get(&d.name) {
            Some(false) => errs.push(FieldError::invalid(
                &p.child("name"),
                &d.name,
                "can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode",
            )),
            Some(true) => {}
            None => errs.push(FieldError::not_found(&p.child("name"), &d.name)),
        }
        if d.device_path.is_empty() {
            errs.push(FieldError::required(&p.child("devicePath"), ""));
        }
        if !paths.insert(d.device_path.as_str()) {
            errs.push(FieldError::invalid(
                &p.child("devicePath"),
                &d.device_path,
                "must be unique",
            ));
        }
        if mounts.contains_key(d.name.as_str()) {
            errs.push(FieldError::invalid(
                &p.child("name"),
                &d.name,
                "must not already exist in volumeMounts",
            ));
        }
        if mounts.values().any(|m| *m == d.device_path) {
            errs.push(FieldError::invalid(
                &p.child("devicePath"),
                &d.device_path,
                "must not already exist as a path in volumeMounts",
            ));
        }
    }
}

/// Whether a resource name is native (unprefixed or in a `kubernetes.io` domain).
fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}

fn is_extended_resource(name: &str) -> bool {
    !is_native_resource(name)
        && !name.starts_with("requests.")
        && format::qualified_name(&format!("requests.{name}")).is_empty()
}

fn overcommit_allowed(name: &str) -> bool {
    is_native_resource(name) && !is_hugepages(name)
}

/// `validateContainerResourceName`.
fn container_resource_name(name: &str, path: &Path, errs: &mut Vec<FieldError>) {
    let msgs = format::qualified_name(name);
    if !msgs.is_empty() {
        for msg in msgs {
            errs.push(FieldError::invalid(path, name, msg));
        }
    } else if !name.contains('/')
        && !STANDARD_RESOURCES.contains(&name)
        && !is_hugepages(name)
        && !name.starts_with("requests.hugepages-")
    {
        errs.push(FieldError::invalid(
            path,
            name,
            "must be a standard resource type or fully qualified",
        ));
    }
    if !name.contains('/') {
        if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !is_hugepages(name) {
            errs.push(FieldError::invalid(
                path,
                name,
                "must be a standard resource for containers",
            ));
        }
    } else if !is_native_resource(name) && !is_extended_resource(name) {
        errs.push(FieldError::invalid(
            path,
            name,
            "doesn't follow extended resource name standard",
        ));
    }
}

/// Parses a quantity, reporting it at `path` when it is malformed.
fn parse_quantity(q: &KubeQuantity, path: &Path, errs: &mut Vec<FieldError>) -> Option<Quantity> {
    match quantity::parse(&q.0) {
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(FieldError::invalid(path, &q.0, e.to_string()));
            None
        }
    }
}

/// `ValidateResourceQuantityValue`.
fn quantity_value(
    name: &str,
    q: &KubeQuantity,
    v: Quantity,
    path: &Path,
    errs: &mut Vec<FieldError>,
) {
    if v.is_negative() {
        errs.push(FieldError::invalid(
            path,
            &q.0,
            "must be greater than or equal to 0",
        ));
    }
    if is_extended_resource(name) && !v.is_integer() {
        errs.push(FieldError::invalid(path, raw(&q.0), "must be an integer"));
    }
}

/// `ValidateResourceRequirements`: names, quantities and requests <= limits.
fn resources(r: &ResourceRequirements, path: &Path, errs: &mut Vec<FieldError>) {
    let lim_path = path.child("limits");
    let req_path = path.child("requests");
    let mut limits = BTreeMap::new();
    let (mut lim_cpu_mem, mut req_cpu_mem, mut hugepages) = (false, false, false);
    for (name, q) in r.limits.iter().flatten() {
        let p = lim_path.key(name);
        container_resource_name(name, &p, errs);
        if let Some(v) = parse_quantity(q, &p, errs) {
            quantity_value(name, q, v, &p, errs);
            limits.insert(name.as_str(), v);
        }
        hugepages |= is_hugepages(name);
        lim_cpu_mem |= name == "cpu" || name == "memory";
    }
    for (name, q) in r.requests.iter().flatten() {
        let p = req_path.key(name);
        container_resource_name(name, &p, errs);
        let Some(v) = parse_quantity(q, &p, errs) else {
            continue;
        };
        quantity_value(name, q, v, &p, errs);
        match (
            limits.get(name.as_str()),
            r.limits.as_ref().and_then(|l| l.get(name)),
        ) {
            (Some(limit), Some(limit_str)) => {
                if v != *limit && !overcommit_allowed(name) {
                    errs.push(FieldError::invalid(
                        &req_path,
                        &q.0,
                        format!("must be equal to {name} limit of {}", limit_str.0),
                    ));
                } else if v > *limit {
                    errs.push(FieldError::invalid(
                        &req_path,
                        &q.0,
                        format!(
                            "must be less than or equal to {name} limit of {}",
                            limit_str.0
                        ),
                    ));
                }
            }
            _ if r.limits.as_ref().is_some_and(|l| l.contains_key(name)) => {}
            _ if !overcommit_allowed(name) => {
                errs.push(FieldError::required(
                    &lim_path,
                    "Limit must be set for non overcommitable resources",
                ));
            }
            _ => {}
        }
        hugepages |= is_hugepages(name);
        req_cpu_mem |= name == "cpu" || name == "memory";
    }
    if hugepages && !lim_cpu_mem && !req_cpu_mem {
        errs.push(FieldError::forbidden(
            path,
            "HugePages require cpu or memory",
        ));
    }
}

fn id_range(value: Option<i64>, path: &Path, errs: &mut Vec<FieldError>) {
    if let Some(v) = value
        && !(0..=MAX_ID).contains(&v)
    {
        errs.push(FieldError::invalid(
            path,
            v,
            format::inclusive_range(0, MAX_ID),
        ));
    }
}

fn seccomp_profile(
    sp: Option<&k8s_openapi::api::core::v1::SeccompProfile>,
    path: &Path,
    errs: &mut Vec<FieldError>,
) {
    let Some(sp) = sp else { return };
    const TYPES: [&str; 3] = ["Localhost", "RuntimeDefault", "Unconfined"];
    if sp.type_.is_empty() {
        errs.push(FieldError::required(
            &path.child("type"),
            "type is required when seccompProfile is set",
        ));
    } else if !TYPES.contains(&sp.type_.as_str()) {
        errs.push(FieldError::not_supported(
            &path.child("type"),
            &sp.type_,
            &TYPES,
        ));
    }
    if sp.type_ == "Localhost" {
        match &sp.localhost_profile {
            None => errs.push(FieldError::required(
                &path.child("localhostProfile"),
                "must be set when seccomp type is Localhost",
            )),
            Some(p) => local_path(p, &path.child("localhostProfile"), false, errs),
        }
    } else if sp.localhost_profile.is_some() {
        errs.push(FieldError::invalid(
            &path.child("localhostProfile"),
            json(sp),
            "can only be set when seccomp type is Localhost",
        ));
    }
}

fn container_security_context(c: &Container, path: &Path, errs: &mut Vec<FieldError>) {
    let Some(sc) = &c.security_context else {
        return;
    };
    id_range(sc.run_as_user, &path.child("runAsUser"), errs);
    id_range(sc.run_as_group, &path.child("runAsGroup"), errs);
    if let Some(pm) = &sc.proc_mount
        && pm != "Default"
        && pm != "Unmasked"
    {
        errs.push(FieldError::not_supported(
            &path.child("procMount"),
            pm,
            &["Default", "Unmasked"],
        ));
    }
    seccomp_profile(
        sc.seccomp_profile.as_ref(),
        &path.child("seccompProfile"),
        errs,
    );
    if sc.allow_privilege_escalation == Some(false) {
        if sc.privileged == Some(true) {
            errs.push(FieldError::invalid(
                path,
                json(sc),
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ));
        }
        let adds_sys_admin = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.add.as_ref())
            .is_some_and(|a| a.iter().any(|c| c == "CAP_SYS_ADMIN"));
        if adds_sys_admin {
            errs.push(FieldError::invalid(
                path,
                json(sc),
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            ));
        }
    }
}

fn pod_security_context(spec: &PodSpec, path: &Path, errs: &mut Vec<FieldError>) {
    let Some(sc) = &spec.security_context else {
        return;
    };
    id_range(sc.fs_group, &path.child("fsGroup"), errs);
    id_range(sc.run_as_user, &path.child("runAsUser"), errs);
    id_range(sc.run_as_group, &path.child("runAsGroup"), errs);
    for (i, g) in sc.supplemental_groups.iter().flatten().enumerate() {
        id_range(Some(*g), &path.child("supplementalGroups").index(i), errs);
    }
    if spec.share_process_namespace == Some(true) && spec.host_pid == Some(true) {
        errs.push(FieldError::invalid(
            &path.child("shareProcessNamespace"),
            true,
            "ShareProcessNamespace and HostPID cannot both be enabled",
        ));
    }
    if let Some(p) = &sc.fs_group_change_policy
        && p != "Always"
        && p != "OnRootMismatch"
    {
        errs.push(FieldError::not_supported(
            &path.child("fsGroupChangePolicy"),
            p,
            &["Always", "OnRootMismatch"],
        ));
    }
    seccomp_profile(
        sc.seccomp_profile.as_ref(),
        &path.child("seccompProfile"),
        errs,
    );
    let mut names = BTreeSet::new();
    for (i, s) in sc.sysctls.iter().flatten().enumerate() {
        let np = path.child("sysctls").index(i).child("name");
        if s.name.is_empty() {
            errs.push(FieldError::required(&np, ""));
        } else if !names.insert(s.name.as_str()) {
            errs.push(FieldError::duplicate(&np, &s.name));
        }
    }
}

/// The handler fields of a probe or lifecycle hook.
struct Handler<'a> {
    exec: Option<&'a k8s_openapi::api::core::v1::ExecAction>,
    http: Option<&'a HTTPGetAction>,
    tcp: Option<&'a IntOrString>,
    grpc: Option<i32>,
    sleep: Option<i64>,
}

/// `validateHandler`: exactly one handler, each valid.
fn handler(h: Handler<'_>, grace: Option<i64>, path: &Path, errs: &mut Vec<FieldError>) {
    let Handler {
        exec,
        http,
        tcp,
        grpc,
        sleep,
    } = h;
    let mut n = 0;
    let mut one = |name: &str, set: bool, errs: &mut Vec<FieldError>| -> bool {
        if !set {
            return false;
        }
        if n > 0 {
            errs.push(FieldError::forbidden(
                &path.child(name),
                "may not specify more than 1 handler type",
            ));
            return false;
        }
        n += 1;
        true
    };
    if one("exec", exec.is_some(), errs)
        && exec.is_some_and(|e| e.command.as_ref().is_none_or(Vec::is_empty))
    {
        errs.push(FieldError::required(
            &path.child("exec").child("command"),
            "",
        ));
    }
    if one("httpGet", http.is_some(), errs)
        && let Some(h) = http
    {
        let hp = path.child("httpGet");
        if is_empty(&h.path) {
            errs.push(FieldError::required(&hp.child("path"), ""));
        }
        port_num_or_name(&h.port, &hp.child("port"), errs);
        let scheme = or_empty(&h.scheme);
        if scheme != "HTTP" && scheme != "HTTPS" {
            errs.push(FieldError::not_supported(
                &hp.child("scheme"),
                scheme,
                &["HTTP", "HTTPS"],
            ));
        }
        for header in h.http_headers.iter().flatten() {
            for msg in format::http_header_name(&header.name) {
                errs.push(FieldError::invalid(
                    &hp.child("httpHeaders"),
                    &header.name,
                    msg,
                ));
            }
        }
    }
    if one("tcpSocket", tcp.is_some(), errs)
        && let Some(port) = tcp
    {
        port_num_or_name(port, &path.child("tcpSocket").child("port"), errs);
    }
    if one("grpc", grpc.is_some(), errs)
        && let Some(port) = grpc
    {
        for msg in format::port_num(port.into()) {
            errs.push(FieldError::invalid(
                &path.child("grpc").child("port"),
                port,
                msg,
            ));
        }
    }
    if one("sleep", sleep.is_some(), errs)
        && let Some(secs) = sleep
    {
        let g = grace.unwrap_or(30);
        if secs <= 0 || secs > g {
            errs.push(FieldError::invalid(
                &path.child("sleep"),
                secs,
                format!("must be greater than 0 and less than terminationGracePeriodSeconds ({g})"),
            ));
        }
    }
    if n == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
}

/// `ValidatePortNumOrName`.
pub(super) fn port_num_or_name(port: &IntOrString, path: &Path, errs: &mut Vec<FieldError>) {
    match port {
        IntOrString::Int(p) => {
            for msg in format::port_num((*p).into()) {
                errs.push(FieldError::invalid(path, *p, msg));
            }
        }
        IntOrString::String(s) => {
            for msg in format::port_name(s) {
                errs.push(FieldError::invalid(path, s, msg));
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

fn probe(
    p: Option<&Probe>,
    kind: ProbeKind,
    grace: Option<i64>,
    path: &Path,
    errs: &mut Vec<FieldError>,
) {
    let Some(p) = p else { return };
    let h = Handler {
        exec: p.exec.as_ref(),
        http: p.http_get.as_ref(),
        tcp: p.tcp_socket.as_ref().map(|t| &t.port),
        grpc: p.grpc.as_ref().map(|g| g.port),
        sleep: None,
    };
    handler(h, grace, path, errs);
    for (name, v) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        non_negative(v.unwrap_or(0).into(), &path.child(name), errs);
    }
    if let Some(t) = p.termination_grace_period_seconds
        && t <= 0
    {
        errs.push(FieldError::invalid(
            &path.child("terminationGracePeriodSeconds"),
            t,
            "must be greater than 0",
        ));
    }
    match kind {
        ProbeKind::Liveness | ProbeKind::Startup => {
            let s = p.success_threshold.unwrap_or(1);
            if s != 1 {
                errs.push(FieldError::invalid(
                    &path.child("successThreshold"),
                    s,
                    "must be 1",
                ));
            }
        }
        ProbeKind::Readiness => {
            if let Some(t) = p.termination_grace_period_seconds {
                errs.push(FieldError::invalid(
                    &path.child("terminationGracePeriodSeconds"),
                    t,
                    "must not be set for readinessProbes",
                ));
            }
        }
    }
}

fn lifecycle_handler(
    h: &LifecycleHandler,
    grace: Option<i64>,
    path: &Path,
    errs: &mut Vec<FieldError>,
) {
    let handlers = Handler {
        exec: h.exec.as_ref(),
        http: h.http_get.as_ref(),
        tcp: h.tcp_socket.as_ref().map(|t| &t.port),
        grpc: None,
        sleep: h.sleep.as_ref().map(|s| s.seconds),
    };
    handler(handlers, grace, path, errs);
}

fn lifecycle(l: &Lifecycle, grace: Option<i64>, path: &Path, errs: &mut Vec<FieldError>) {
    if let Some(h) = &l.post_start {
        lifecycle_handler(h, grace, &path.child("postStart"), errs);
    }
    if let Some(h) = &l.pre_stop {
        lifecycle_handler(h, grace, &path.child("preStop"), errs);
    }
}

fn probes_and_lifecycle(
    c: &Container,
    grace: Option<i64>,
    path: &Path,
    errs: &mut Vec<FieldError>,
) {
    if let Some(l) = &c.lifecycle {
        lifecycle(l, grace, &path.child("lifecycle"), errs);
    }
    probe(
        c.liveness_probe.as_ref(),
        ProbeKind::Liveness,
        grace,
        &path.child("livenessProbe"),
        errs,
    );
    probe(
        c.readiness_probe.as_ref(),
        ProbeKind::Readiness,
        grace,
        &path.child("readinessProbe"),
        errs,
    );
    probe(
        c.startup_probe.as_ref(),
        ProbeKind::Startup,
        grace,
        &path.child("startupProbe"),
        errs,
    );
}

/// `AccumulateUniqueHostPorts` over the given containers.
fn host_port_conflicts<'a>(
    list: impl Iterator<Item = (usize, &'a Container)>,
    path: &Path,
    errs: &mut Vec<FieldError>,
) {
    let mut seen = BTreeSet::new();
    for (ci, c) in list {
        for (pi, p) in c.ports.iter().flatten().enumerate() {
            let hp = p.host_port.unwrap_or(0);
            if hp == 0 {
                continue;
            }
            let key = format!("{}/{}/{}", or_empty(&p.protocol), or_empty(&p.host_ip), hp);
            if !seen.insert(key.clone()) {
                errs.push(FieldError::duplicate(
                    &path.index(ci).child("ports").index(pi).child("hostPort"),
                    &key,
                ));
            }
        }
    }
}

fn containers(
    spec: &PodSpec,
    vols: &Volumes,
    grace: Option<i64>,
    path: &Path,
    errs: &mut Vec<FieldError>,
) {
    if spec.containers.is_empty() {
        errs.push(FieldError::required(path, ""));
        return;
    }
    let mut names = BTreeSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let p = path.index(i);
        container_common(c, vols, &p, errs);
        if !names.insert(c.name.as_str()) {
            errs.push(FieldError::duplicate(&p.child("name"), &c.name));
        }
        probes_and_lifecycle(c, grace, &p, errs);
        if c.restart_policy.is_some() {
            errs.push(FieldError::forbidden(
                &p.child("restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    host_port_conflicts(spec.containers.iter().enumerate(), path, errs);
}

fn init_containers(
    spec: &PodSpec,
    vols: &Volumes,
    grace: Option<i64>,
    path: &Path,
    errs: &mut Vec<FieldError>,
) {
    let mut names: BTreeSet<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let p = path.index(i);
        container_common(c, vols, &p, errs);
        let mut restartable = false;
        if let Some(rp) = &c.restart_policy {
            if rp == "Always" {
                restartable = true;
            } else {
                errs.push(FieldError::not_supported(
                    &p.child("restartPolicy"),
                    rp,
                    &["Always"],
                ));
            }
        }
        if names.contains(c.name.as_str()) {
            errs.push(FieldError::duplicate(&p.child("name"), &c.name));
        } else if !c.name.is_empty() {
            names.insert(c.name.as_str());
        }
        host_port_conflicts(std::iter::once((i, c)), path, errs);
        if restartable {
            probes_and_lifecycle(c, grace, &p, errs);
        } else {
            const MSG: &str = "may not be set for init containers without restartPolicy=Always";
            for (name, set) in [
                ("lifecycle", c.lifecycle.is_some()),
                ("livenessProbe", c.liveness_probe.is_some()),
                ("readinessProbe", c.readiness_probe.is_some()),
                ("startupProbe", c.startup_probe.is_some()),
            ] {
                if set {
                    errs.push(FieldError::forbidden(&p.child(name), MSG));
                }
            }
        }
        if c.resize_policy.as_ref().is_some_and(|r| !r.is_empty()) {
            errs.push(FieldError::invalid(
                &p.child("resizePolicy"),
                json(&c.resize_policy),
                "must not be set for init containers",
            ));
        }
    }
}

fn host_network_ports(spec: &PodSpec, path: &Path, is_pod: bool, errs: &mut Vec<FieldError>) {
    if spec.host_network != Some(true) {
        return;
    }
    for (i, c) in spec.containers.iter().enumerate() {
        for (j, port) in c.ports.iter().flatten().enumerate() {
            let hp = port.host_port.unwrap_or(0);
            if (is_pod || hp != 0) && hp != port.container_port {
                errs.push(FieldError::invalid(
                    &path
                        .child("containers")
                        .index(i)
                        .child("ports")
                        .index(j)
                        .child("hostPort"),
                    hp,
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
    }
}

fn dns_config(spec: &PodSpec, path: &Path, errs: &mut Vec<FieldError>) {
    if spec.dns_policy.as_deref() == Some("None") {
        match &spec.dns_config {
            None => {
                errs.push(FieldError::required(
                    path,
                    "must provide `dnsConfig` when `dnsPolicy` is None",
                ));
                return;
            }
            Some(c) if c.nameservers.as_ref().is_none_or(Vec::is_empty) => {
                errs.push(FieldError::required(
                    &path.child("nameservers"),
                    "must provide at least one DNS nameserver when `dnsPolicy` is None",
                ));
                return;
            }
            Some(_) => {}
        }
    }
    let Some(c) = &spec.dns_config else { return };
    let nameservers = c.nameservers.as_deref().unwrap_or(&[]);
    if nameservers.len() > 3 {
        errs.push(FieldError::invalid(
            &path.child("nameservers"),
            json(nameservers),
            "must not have more than 3 nameservers",
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        if format::parse_ip(ns).is_none() {
            errs.push(FieldError::invalid(
                &path.child("nameservers").index(i),
                ns,
                format::INVALID_IP_MSG,
            ));
        }
    }
    let searches = c.searches.as_deref().unwrap_or(&[]);
    if searches.len() > 32 {
        errs.push(FieldError::invalid(
            &path.child("searches"),
            json(searches),
            "must not have more than 32 search paths",
        ));
    }
    if searches.join(" ").len() > 2048 {
        errs.push(FieldError::invalid(
            &path.child("searches"),
            json(searches),
            "must not have more than 2048 characters (including spaces) in the search list",
        ));
    }
    for (i, s) in searches.iter().enumerate() {
        let s = s.strip_suffix('.').unwrap_or(s);
        for msg in format::dns1123_subdomain(s) {
            errs.push(FieldError::invalid(
                &path.child("searches").index(i),
                s,
                msg,
            ));
        }
    }
    for (i, o) in c.options.iter().flatten().enumerate() {
        if is_empty(&o.name) {
            errs.push(FieldError::required(
                &path.child("options").index(i),
                "must not be empty",
            ));
        }
    }
}

/// `ValidateTolerations`.
pub(super) fn tolerations(list: &[Toleration], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let p = path.index(i);
        let key = or_empty(&t.key);
        let op = or_empty(&t.operator);
        let effect = or_empty(&t.effect);
        if !key.is_empty() {
            errs.extend(meta::label_name(key, &p.child("key")));
        }
        if key.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                &p.child("operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                &p.child("effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "Equal" | "" => {
                let msgs = format::label_value(or_empty(&t.value));
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(
                        &p.child("operator"),
                        or_empty(&t.value),
                        msgs.join(";"),
                    ));
                }
            }
            "Exists" => {
                if !is_empty(&t.value) {
                    errs.push(FieldError::invalid(
                        &p.child("operator"),
                        json(t),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                &p.child("operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() {
            taint_effect(effect, &p.child("effect"), &mut errs);
        }
    }
    errs
}

/// The taint effects upstream supports.
pub(super) fn taint_effect(effect: &str, path: &Path, errs: &mut Vec<FieldError>) {
    const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
    if !EFFECTS.contains(&effect) {
        errs.push(FieldError::not_supported(path, effect, &EFFECTS));
    }
}

fn node_selector_requirement(
    r: &k8s_openapi::api::core::v1::NodeSelectorRequirement,
    path: &Path,
    errs: &mut Vec<FieldError>,
) {
    let n = r.values.as_ref().map_or(0, Vec::len);
    match r.operator.as_str() {
        "In" | "NotIn" if n == 0 => errs.push(FieldError::required(
            &path.child("values"),
            "must be specified when `operator` is 'In' or 'NotIn'",
        )),
        "Exists" | "DoesNotExist" if n > 0 => errs.push(FieldError::forbidden(
            &path.child("values"),
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )),
        "Gt" | "Lt" if n != 1 => errs.push(FieldError::required(
            &path.child("values"),
            "must be specified single value when `operator` is 'Lt' or 'Gt'",
        )),
        "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {}
        other => errs.push(FieldError::invalid(
            &path.child("operator"),
            other,
            "not a valid selector operator",
        )),
    }
    errs.extend(meta::label_name(&r.key, &path.child("key")));
}

fn node_selector_term(
    t: &k8s_openapi::api::core::v1::NodeSelectorTerm,
    path: &Path,
    errs: &mut Vec<FieldError>,
) {
    for (j, r) in t.match_expressions.iter().flatten().enumerate() {
        node_selector_requirement(r, &path.child("matchExpressions").index(j), errs);
    }
    for (j, r) in t.match_fields.iter().flatten().enumerate() {
        let p = path.child("matchFields").index(j);
        let values = r.values.as_deref().unwrap_or(&[]);
        match r.operator.as_str() {
            "In" | "NotIn" => {
                if values.len() != 1 {
                    errs.push(FieldError::required(
                        &p.child("values"),
                        "must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
                    ));
                }
            }
            other => errs.push(FieldError::invalid(
                &p.child("operator"),
                other,
                "not a valid selector operator",
            )),
        }
        if r.key != "metadata.name" {
            errs.push(FieldError::invalid(
                &p.child("key"),
                &r.key,
                "not a valid field selector key",
            ));
        } else {
            for (k, v) in values.iter().enumerate() {
                for msg in format::dns1123_subdomain(v) {
                    errs.push(FieldError::invalid(&p.child("values").index(k), v, msg));
                }
            }
        }
    }
}

fn pod_affinity_term(
    t: &k8s_openapi::api::core::v1::PodAffinityTerm,
    path: &Path,
    errs: &mut Vec<FieldError>,
) {
    if let Some(s) = &t.label_selector {
        errs.extend(meta::label_selector(s, &path.child("labelSelector")));
    }
    if let Some(s) = &t.namespace_selector {
        errs.extend(meta::label_selector(s, &path.child("namespaceSelector")));
    }
    for ns in t.namespaces.iter().flatten() {
        for msg in format::dns1123_label(ns) {
            errs.push(FieldError::invalid(&path.child("namespace"), ns, msg));
        }
    }
    if t.topology_key.is_empty() {
        errs.push(FieldError::required(
            &path.child("topologyKey"),
            "can not be empty",
        ));
    }
    errs.extend(meta::label_name(
        &t.topology_key,
        &path.child("topologyKey"),
    ));
}

fn affinity(a: &k8s_openapi::api::core::v1::Affinity, path: &Path, errs: &mut Vec<FieldError>) {
    if let Some(na) = &a.node_affinity {
        let np = path.child("nodeAffinity");
        if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
            let tp = np
                .child("requiredDuringSchedulingIgnoredDuringExecution")
                .child("nodeSelectorTerms");
            if req.node_selector_terms.is_empty() {
                errs.push(FieldError::required(
                    &tp,
                    "must have at least one node selector term",
                ));
            }
            for (i, t) in req.node_selector_terms.iter().enumerate() {
                node_selector_term(t, &tp.index(i), errs);
            }
        }
        for (i, t) in na
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .enumerate()
        {
            let p = np
                .child("preferredDuringSchedulingIgnoredDuringExecution")
                .index(i);
            if !(1..=100).contains(&t.weight) {
                errs.push(FieldError::invalid(
                    &p.child("weight"),
                    t.weight,
                    "must be in the range 1-100",
                ));
            }
            node_selector_term(&t.preference, &p.child("preference"), errs);
        }
    }
    let pod_terms = [
        (
            "podAffinity",
            a.pod_affinity.as_ref().map(|p| {
                (
                    &p.required_during_scheduling_ignored_during_execution,
                    &p.preferred_during_scheduling_ignored_during_execution,
                )
            }),
        ),
        (
            "podAntiAffinity",
            a.pod_anti_affinity.as_ref().map(|p| {
                (
                    &p.required_during_scheduling_ignored_during_execution,
                    &p.preferred_during_scheduling_ignored_during_execution,
                )
            }),
        ),
    ];
    for (name, terms) in pod_terms {
        let Some((required, preferred)) = terms else {
            continue;
        };
        let p = path.child(name);
        for (i, t) in required.iter().flatten().enumerate() {
            pod_affinity_term(
                t,
                &p.child("requiredDuringSchedulingIgnoredDuringExecution")
                    .index(i),
                errs,
            );
        }
        for (i, w) in preferred.iter().flatten().enumerate() {
            let wp = p
                .child("preferredDuringSchedulingIgnoredDuringExecution")
                .index(i);
            if !(1..=100).contains(&w.weight) {
                errs.push(FieldError::invalid(
                    &wp.child("weight"),
                    w.weight,
                    "must be in the range 1-100",
                ));
            }
            pod_affinity_term(&w.pod_affinity_term, &wp.child("podAffinityTerm"), errs);
        }
    }
}

fn topology_spread(spec: &PodSpec, path: &Path, errs: &mut Vec<FieldError>) {
    let list = spec.topology_spread_constraints.as_deref().unwrap_or(&[]);
    for (i, c) in list.iter().enumerate() {
        let p = path.index(i);
        if c.max_skew <= 0 {
            errs.push(FieldError::invalid(
                &p.child("maxSkew"),
                c.max_skew,
                "must be greater than zero",
            ));
        }
        if c.topology_key.is_empty() {
            errs.push(FieldError::required(
                &p.child("topologyKey"),
                "can not be empty",
            ));
        }
        const ACTIONS: [&str; 2] = ["DoNotSchedule", "ScheduleAnyway"];
        if !ACTIONS.contains(&c.when_unsatisfiable.as_str()) {
            errs.push(FieldError::not_supported(
                &p.child("whenUnsatisfiable"),
                &c.when_unsatisfiable,
                &ACTIONS,
            ));
        }
        if list[i + 1..].iter().any(|o| {
            o.topology_key == c.topology_key && o.when_unsatisfiable == c.when_unsatisfiable
        }) {
            errs.push(FieldError::duplicate(
                &p.child("{topologyKey, whenUnsatisfiable}"),
                format!("{{{}, {}}}", c.topology_key, c.when_unsatisfiable).as_str(),
            ));
        }
        if let Some(m) = c.min_domains {
            if m <= 0 {
                errs.push(FieldError::invalid(
                    &p.child("minDomains"),
                    m,
                    "must be greater than zero",
                ));
            }
            if c.when_unsatisfiable != "DoNotSchedule" {
                errs.push(FieldError::invalid(
                    &p.child("minDomains"),
                    m,
                    format!(
                        "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {}",
                        c.when_unsatisfiable
                    ),
                ));
            }
        }
        if let Some(s) = &c.label_selector {
            errs.extend(meta::label_selector(s, &p.child("labelSelector")));
        }
    }
}

// ---------------------------------------------------------------------------
// Update
// ---------------------------------------------------------------------------

/// Validates an update of a pod: metadata immutability, the new pod's
/// validity, and that the spec only changes where upstream allows it
/// (container and init-container images, `activeDeadlineSeconds`, added
/// tolerations, removed scheduling gates, and a negative grace period set
/// to 1). Any other change yields upstream's `spec: Forbidden: pod updates
/// may not change fields other than ...` error followed by a list of the
/// changed fields.
pub fn validate_pod_update(new: &Pod, old: &Pod) -> Vec<FieldError> {
    let meta_path = Path::new("metadata");
    let mut errs = meta::object_meta_update(&new.metadata, &old.metadata, &meta_path);
    errs.extend(pod_metadata_and_spec(new));
    let annotations_path = meta_path.child("annotations");
    let empty = BTreeMap::new();
    let new_a = new.metadata.annotations.as_ref().unwrap_or(&empty);
    let old_a = old.metadata.annotations.as_ref().unwrap_or(&empty);
    const MIRROR: &str = "kubernetes.io/config.mirror";
    match (old_a.get(MIRROR), new_a.get(MIRROR)) {
        (Some(o), n) if n != Some(o) => errs.push(FieldError::forbidden(
            &annotations_path.key(MIRROR),
            "may not remove or update mirror pod annotation",
        )),
        (None, Some(_)) => errs.push(FieldError::forbidden(
            &annotations_path.key(MIRROR),
            "may not add mirror pod annotation",
        )),
        _ => {}
    }
    let spec_path = Path::new("spec");
    let default_spec = PodSpec::default();
    let new_spec = new.spec.as_ref().unwrap_or(&default_spec);
    let old_spec = old.spec.as_ref().unwrap_or(&default_spec);

    let empty_list = Vec::new();
    for (name, n, o) in [
        ("containers", &new_spec.containers, &old_spec.containers),
        (
            "initContainers",
            new_spec.init_containers.as_ref().unwrap_or(&empty_list),
            old_spec.init_containers.as_ref().unwrap_or(&empty_list),
        ),
    ] {
        let p = spec_path.child(name);
        if n.len() != o.len() {
            errs.push(FieldError::forbidden(
                &p,
                "pod updates may not add or remove containers",
            ));
            return errs;
        }
    }

    if let Some(v) = new_spec.active_deadline_seconds {
        if !(0..=MAX_INT32).contains(&v) {
            errs.push(FieldError::invalid(
                &spec_path.child("activeDeadlineSeconds"),
                v,
                format::inclusive_range(0, MAX_INT32),
            ));
            return errs;
        }
        if let Some(o) = old_spec.active_deadline_seconds
            && o < v
        {
            errs.push(FieldError::invalid(
                &spec_path.child("activeDeadlineSeconds"),
                v,
                "must be less than or equal to previous value",
            ));
            return errs;
        }
    } else if old_spec.active_deadline_seconds.is_some() {
        errs.push(FieldError::invalid(
            &spec_path.child("activeDeadlineSeconds"),
            raw("null"),
            "must not update from a positive integer to nil value",
        ));
    }

    errs.extend(only_added_tolerations(
        new_spec,
        old_spec,
        &spec_path.child("tolerations"),
    ));
    only_removed_gates(
        new_spec,
        old_spec,
        &spec_path.child("schedulingGates"),
        &mut errs,
    );

    if new_spec == old_spec {
        return errs;
    }
    let mut munged = new_spec.clone();
    for (c, o) in munged.containers.iter_mut().zip(&old_spec.containers) {
        c.image.clone_from(&o.image);
    }
    for (c, o) in munged
        .init_containers
        .iter_mut()
        .flatten()
        .zip(old_spec.init_containers.iter().flatten())
    {
        c.image.clone_from(&o.image);
    }
    munged.active_deadline_seconds = old_spec.active_deadline_seconds;
    munged
        .scheduling_gates
        .clone_from(&old_spec.scheduling_gates);
    munged.tolerations.clone_from(&old_spec.tolerations);
    if old_spec
        .termination_grace_period_seconds
        .is_some_and(|g| g < 0)
        && munged.termination_grace_period_seconds == Some(1)
    {
        munged.termination_grace_period_seconds = old_spec.termination_grace_period_seconds;
    }
    if munged != *old_spec {
        let mut detail = format!(
            "pod updates may not change fields other than {}\n",
            UPDATABLE_POD_FIELDS.join(",")
        );
        let old_json = serde_json::to_value(old_spec).unwrap_or_default();
        let new_json = serde_json::to_value(&munged).unwrap_or_default();
        let mut lines = Vec::new();
        json_diff("spec", &old_json, &new_json, &mut lines);
        detail.push_str(&lines.join("\n"));
        errs.push(FieldError::forbidden(&spec_path, detail));
    }
    errs
}

/// Lists the leaves that differ between two JSON values as `-`/`+` lines.
fn json_diff(path: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
            for k in keys {
                let null = Value::Null;
                json_diff(
                    &format!("{path}.{k}"),
                    o.get(k).unwrap_or(&null),
                    n.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(o), Value::Array(n)) if o.len() == n.len() => {
            for (i, (a, b)) in o.iter().zip(n).enumerate() {
                json_diff(&format!("{path}[{i}]"), a, b, out);
            }
        }
        _ => {
            out.push(format!("  - {path}: {old}"));
            out.push(format!("  + {path}: {new}"));
        }
    }
}

/// `validateOnlyAddedTolerations`.
fn only_added_tolerations(new: &PodSpec, old: &PodSpec, path: &Path) -> Vec<FieldError> {
    let new_t = new.tolerations.as_deref().unwrap_or(&[]);
    for o in old.tolerations.iter().flatten() {
        let found = new_t.iter().any(|n| {
            let mut clone = o.clone();
            clone.toleration_seconds = n.toleration_seconds;
            clone == *n
        });
        if !found {
            return vec![FieldError::forbidden(
                path,
                "existing toleration can not be modified except its tolerationSeconds",
            )];
        }
    }
    tolerations(new_t, path)
}

/// `validateOnlyDeletedSchedulingGates`.
fn only_removed_gates(new: &PodSpec, old: &PodSpec, path: &Path, errs: &mut Vec<FieldError>) {
    let old_names: BTreeSet<&str> = old
        .scheduling_gates
        .iter()
        .flatten()
        .map(|g| g.name.as_str())
        .collect();
    for (i, g) in new.scheduling_gates.iter().flatten().enumerate() {
        if !old_names.contains(g.name.as_str()) {
            errs.push(FieldError::forbidden(
                &path.index(i).child("name"),
                format!(
                    "only deletion is allowed, but found new scheduling gate '{}'",
                    g.name
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ErrorKind::{self, *};
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, VolumeMount};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn base_pod() -> Pod {
        let mut pod = Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("nginx:1.27".into()),
                    ports: Some(vec![ContainerPort {
                        container_port: 80,
                        name: Some("http".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        };
        default_pod(&mut pod);
        pod
    }

    fn spec(p: &mut Pod) -> &mut PodSpec {
        p.spec.get_or_insert_with(Default::default)
    }

    fn kinds(errs: &[FieldError]) -> Vec<(String, ErrorKind)> {
        errs.iter().map(|e| (e.field.clone(), e.kind)).collect()
    }

    #[test]
    fn defaulting_fills_upstream_defaults() {
        let pod = base_pod();
        let s = pod.spec.as_ref().unwrap_or_else(|| unreachable!());
        assert_eq!(s.restart_policy.as_deref(), Some("Always"));
        assert_eq!(s.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(s.scheduler_name.as_deref(), Some("default-scheduler"));
        assert_eq!(s.termination_grace_period_seconds, Some(30));
        assert_eq!(s.security_context, Some(Default::default()));
        assert_eq!(s.enable_service_links, Some(true));
        assert_eq!(s.priority, Some(0));
        assert_eq!(s.preemption_policy.as_deref(), Some("PreemptLowerPriority"));
        assert_eq!(s.service_account_name, None);
        let c = &s.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        assert_eq!(
            c.ports.as_ref().map(|p| p[0].protocol.clone()),
            Some(Some("TCP".into()))
        );
        let st = pod.status.as_ref().unwrap_or_else(|| unreachable!());
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        assert_eq!(st.qos_class.as_deref(), Some("BestEffort"));
    }

    #[test]
    fn pull_policy_follows_tag() {
        for (image, want) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("localhost:5000/nginx", "Always"),
            ("localhost:5000/nginx:v1", "IfNotPresent"),
            ("nginx@sha256:abcd", "IfNotPresent"),
        ] {
            assert_eq!(default_pull_policy(image), want, "{image}");
        }
    }

    #[test]
    fn qos_classes_and_requests_from_limits() {
        let mut pod = base_pod();
        pod.status = None;
        let lim = BTreeMap::from([
            ("cpu".to_string(), KubeQuantity("500m".into())),
            ("memory".to_string(), KubeQuantity("128Mi".into())),
        ]);
        spec(&mut pod).containers[0].resources = Some(ResourceRequirements {
            limits: Some(lim),
            ..Default::default()
        });
        default_pod(&mut pod);
        let s = pod.spec.as_ref().unwrap_or_else(|| unreachable!());
        assert_eq!(
            s.containers[0]
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .map(BTreeMap::len),
            Some(2)
        );
        assert_eq!(
            pod.status.as_ref().and_then(|s| s.qos_class.as_deref()),
            Some("Guaranteed")
        );

        let mut s2 = s.clone();
        s2.containers[0].resources = Some(ResourceRequirements {
            requests: Some(BTreeMap::from([(
                "cpu".to_string(),
                KubeQuantity("100m".into()),
            )])),
            ..Default::default()
        });
        assert_eq!(compute_qos(&s2), "Burstable");
    }

    #[test]
    fn valid_pod_passes() {
        let mut pod = base_pod();
        spec(&mut pod).volumes = Some(vec![Volume {
            name: "data".into(),
            ..Default::default()
        }]);
        default_pod(&mut pod);
        spec(&mut pod).containers[0].volume_mounts = Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: "/data".into(),
            ..Default::default()
        }]);
        assert_eq!(validate_pod(&pod), vec![]);
    }

    #[test]
    fn pod_rules() {
        type Mutate = fn(&mut Pod);
        let cases: Vec<(&str, Mutate, &str, ErrorKind)> = vec![
            (
                "no containers",
                |p| spec(p).containers.clear(),
                "spec.containers",
                Required,
            ),
            (
                "image",
                |p| spec(p).containers[0].image = None,
                "spec.containers[0].image",
                Required,
            ),
            (
                "container name",
                |p| spec(p).containers[0].name = "App".into(),
                "spec.containers[0].name",
                Invalid,
            ),
            (
                "dup container",
                |p| {
                    let c = spec(p).containers[0].clone();
                    spec(p).containers.push(Container { ports: None, ..c });
                },
                "spec.containers[1].name",
                Duplicate,
            ),
            (
                "port range",
                |p| {
                    spec(p).containers[0]
                        .ports
                        .as_mut()
                        .unwrap_or_else(|| unreachable!())[0]
                        .container_port = 70000
                },
                "spec.containers[0].ports[0].containerPort",
                Invalid,
            ),
            (
                "protocol",
                |p| {
                    spec(p).containers[0]
                        .ports
                        .as_mut()
                        .unwrap_or_else(|| unreachable!())[0]
                        .protocol = Some("ICMP".into())
                },
                "spec.containers[0].ports[0].protocol",
                NotSupported,
            ),
            (
                "host port",
                |p| {
                    spec(p).containers[0]
                        .ports
                        .as_mut()
                        .unwrap_or_else(|| unreachable!())[0]
                        .host_port = Some(-1)
                },
                "spec.containers[0].ports[0].hostPort",
                Invalid,
            ),
            (
                "dup port name",
                |p| {
                    let ports = spec(p).containers[0]
                        .ports
                        .as_mut()
                        .unwrap_or_else(|| unreachable!());
                    ports.push(ContainerPort {
                        container_port: 81,
                        name: Some("http".into()),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    });
                },
                "spec.containers[0].ports[1].name",
                Duplicate,
            ),
            (
                "env name",
                |p| {
                    spec(p).containers[0].env = Some(vec![EnvVar {
                        name: "A=B".into(),
                        ..Default::default()
                    }])
                },
                "spec.containers[0].env[0].name",
                Invalid,
            ),
            (
                "env empty name",
                |p| spec(p).containers[0].env = Some(vec![EnvVar::default()]),
                "spec.containers[0].env[0].name",
                Required,
            ),
            (
                "mount unknown",
                |p| {
                    spec(p).containers[0].volume_mounts = Some(vec![VolumeMount {
                        name: "nope".into(),
                        mount_path: "/x".into(),
                        ..Default::default()
                    }])
                },
                "spec.containers[0].volumeMounts[0].name",
                NotFound,
            ),
            (
                "dup volume",
                |p| {
                    let v = Volume {
                        name: "v".into(),
                        empty_dir: Some(Default::default()),
                        ..Default::default()
                    };
                    spec(p).volumes = Some(vec![v.clone(), v]);
                },
                "spec.volumes[1].name",
                Duplicate,
            ),
            (
                "two sources",
                |p| {
                    spec(p).volumes = Some(vec![Volume {
                        name: "v".into(),
                        empty_dir: Some(Default::default()),
                        host_path: Some(k8s_openapi::api::core::v1::HostPathVolumeSource {
                            path: "/x".into(),
                            type_: None,
                        }),
                        ..Default::default()
                    }])
                },
                "spec.volumes[0].hostPath",
                Forbidden,
            ),
            (
                "bad quantity",
                |p| {
                    spec(p).containers[0].resources = Some(ResourceRequirements {
                        limits: Some(BTreeMap::from([(
                            "cpu".into(),
                            KubeQuantity("lots".into()),
                        )])),
                        ..Default::default()
                    })
                },
                "spec.containers[0].resources.limits[cpu]",
                Invalid,
            ),
            (
                "requests > limits",
                |p| {
                    spec(p).containers[0].resources = Some(ResourceRequirements {
                        limits: Some(BTreeMap::from([(
                            "cpu".into(),
                            KubeQuantity("500m".into()),
                        )])),
                        requests: Some(BTreeMap::from([("cpu".into(), KubeQuantity("1".into()))])),
                        ..Default::default()
                    })
                },
                "spec.containers[0].resources.requests",
                Invalid,
            ),
            (
                "restart policy",
                |p| spec(p).restart_policy = Some("Sometimes".into()),
                "spec.restartPolicy",
                NotSupported,
            ),
            (
                "dns policy",
                |p| spec(p).dns_policy = Some("Google".into()),
                "spec.dnsPolicy",
                NotSupported,
            ),
            (
                "node name",
                |p| spec(p).node_name = Some("Node_1".into()),
                "spec.nodeName",
                Invalid,
            ),
            (
                "probe no handler",
                |p| spec(p).containers[0].liveness_probe = Some(Probe::default()),
                "spec.containers[0].livenessProbe",
                Required,
            ),
            (
                "probe two handlers",
                |p| {
                    spec(p).containers[0].readiness_probe = Some(Probe {
                        exec: Some(k8s_openapi::api::core::v1::ExecAction {
                            command: Some(vec!["true".into()]),
                        }),
                        tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                            port: IntOrString::Int(80),
                            host: None,
                        }),
                        ..Default::default()
                    })
                },
                "spec.containers[0].readinessProbe.tcpSocket",
                Forbidden,
            ),
            (
                "grace",
                |p| spec(p).termination_grace_period_seconds = None,
                "spec.terminationGracePeriodSeconds",
                Required,
            ),
            (
                "deadline",
                |p| spec(p).active_deadline_seconds = Some(0),
                "spec.activeDeadlineSeconds",
                Invalid,
            ),
            (
                "toleration",
                |p| {
                    spec(p).tolerations = Some(vec![Toleration {
                        operator: Some("Equal".into()),
                        ..Default::default()
                    }])
                },
                "spec.tolerations[0].operator",
                Invalid,
            ),
            (
                "pull policy",
                |p| spec(p).containers[0].image_pull_policy = Some("Sometimes".into()),
                "spec.containers[0].imagePullPolicy",
                NotSupported,
            ),
            (
                "image spaces",
                |p| spec(p).containers[0].image = Some(" nginx".into()),
                "spec.containers[0].image",
                Invalid,
            ),
            (
                "namespace",
                |p| p.metadata.namespace = None,
                "metadata.namespace",
                Required,
            ),
        ];
        for (name, mutate, field, kind) in cases {
            let mut pod = base_pod();
            mutate(&mut pod);
            let errs = validate_pod(&pod);
            assert_eq!(
                kinds(&errs),
                vec![(field.to_string(), kind)],
                "{name}: {errs:?}"
            );
        }
    }

    #[test]
    fn messages_match_upstream() {
        let mut pod = base_pod();
        spec(&mut pod).restart_policy = Some("Sometimes".into());
        assert_eq!(
            validate_pod(&pod)[0].to_string(),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        );
        let mut pod = base_pod();
        spec(&mut pod).containers[0].resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([(
                "cpu".into(),
                KubeQuantity("500m".into()),
            )])),
            requests: Some(BTreeMap::from([("cpu".into(), KubeQuantity("1".into()))])),
            ..Default::default()
        });
        assert_eq!(
            validate_pod(&pod)[0].to_string(),
            "spec.containers[0].resources.requests: Invalid value: \"1\": must be less than or equal to cpu limit of 500m"
        );
    }

    #[test]
    fn update_allows_image_change() {
        let old = base_pod();
        let mut new = old.clone();
        spec(&mut new).containers[0].image = Some("nginx:1.28".into());
        assert_eq!(validate_pod_update(&new, &old), vec![]);
    }

    #[test]
    fn update_forbids_command_change() {
        let old = base_pod();
        let mut new = old.clone();
        spec(&mut new).containers[0].command = Some(vec!["sleep".into(), "10".into()]);
        let errs = validate_pod_update(&new, &old);
        assert_eq!(kinds(&errs), vec![("spec".to_string(), Forbidden)]);
        let msg = errs[0].to_string();
        assert!(msg.starts_with("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"), "{msg}");
        assert!(msg.contains("spec.containers[0].command"), "{msg}");
    }

    #[test]
    fn update_tolerations_and_deadline() {
        let mut old = base_pod();
        spec(&mut old).tolerations = Some(vec![Toleration {
            key: Some("a".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        let mut added = old.clone();
        spec(&mut added)
            .tolerations
            .as_mut()
            .unwrap_or_else(|| unreachable!())
            .push(Toleration {
                key: Some("b".into()),
                operator: Some("Exists".into()),
                ..Default::default()
            });
        spec(&mut added).active_deadline_seconds = Some(60);
        assert_eq!(validate_pod_update(&added, &old), vec![]);

        let mut removed = old.clone();
        spec(&mut removed).tolerations = None;
        assert_eq!(
            kinds(&validate_pod_update(&removed, &old)),
            vec![("spec.tolerations".to_string(), Forbidden)]
        );

        let mut more = added.clone();
        spec(&mut more).active_deadline_seconds = Some(120);
        assert_eq!(
            kinds(&validate_pod_update(&more, &added)),
            vec![("spec.activeDeadlineSeconds".to_string(), Invalid)]
        );
    }

    #[test]
    fn update_forbids_adding_containers() {
        let old = base_pod();
        let mut new = old.clone();
        let mut c = spec(&mut new).containers[0].clone();
        c.name = "side".into();
        c.ports = None;
        spec(&mut new).containers.push(c);
        let errs = validate_pod_update(&new, &old);
        assert_eq!(
            errs[0].to_string(),
            "spec.containers: Forbidden: pod updates may not add or remove containers"
        );
    }

    #[test]
    fn template_validation_skips_pod_only_rules() {
        let mut t = PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(" x".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        default_pod_template(&mut t);
        assert_eq!(
            pod_template(&t, &Path::new("spec").child("template")),
            vec![]
        );
        assert_eq!(t.spec.as_ref().and_then(|s| s.enable_service_links), None);
    }
}
