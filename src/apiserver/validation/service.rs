//! Services: defaulting, validation and update rules.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, Service, ServicePort, ServiceSpec, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pod::{PROTOCOLS, port_num_or_name};
use super::{FieldError, NameRule, Path, format, is_empty, json, meta, or_empty, raw};

/// The kubelet port, which load balancers may not expose.
const KUBELET_PORT: i32 = 10250;
/// The default service node port range.
const NODE_PORT_RANGE: std::ops::RangeInclusive<i32> = 30000..=32767;
/// The longest ClientIP session affinity timeout.
const MAX_AFFINITY_SECONDS: i32 = 86400;
/// The default ClientIP session affinity timeout (3 hours).
const DEFAULT_AFFINITY_SECONDS: i32 = 10800;
const SERVICE_TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

fn type_of(spec: &ServiceSpec) -> &str {
    or_empty(&spec.type_)
}

/// `ExternallyAccessible`: NodePort, LoadBalancer, or ClusterIP with external IPs.
fn externally_accessible(spec: &ServiceSpec) -> bool {
    match type_of(spec) {
        "LoadBalancer" | "NodePort" => true,
        "ClusterIP" => spec
            .external_ips
            .as_ref()
            .is_some_and(|ips| !ips.is_empty()),
        _ => false,
    }
}

/// `NeedsHealthCheck`: a LoadBalancer with `externalTrafficPolicy: Local`.
fn needs_health_check(spec: &ServiceSpec) -> bool {
    type_of(spec) == "LoadBalancer" && spec.external_traffic_policy.as_deref() == Some("Local")
}

/// The cluster IPs, falling back to `clusterIP` when the list is not filled in yet.
fn cluster_ips(spec: &ServiceSpec) -> Vec<String> {
    match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.clone(),
        _ if !is_empty(&spec.cluster_ip) => vec![or_empty(&spec.cluster_ip).to_string()],
        _ => Vec::new(),
    }
}

fn is_headless(spec: &ServiceSpec) -> bool {
    cluster_ips(spec) == ["None"]
}

/// Applies the defaults upstream gives a service: `type: ClusterIP`,
/// `sessionAffinity: None` (or the 10800 s ClientIP timeout), port protocol
/// `TCP`, `targetPort` = `port`, `externalTrafficPolicy: Cluster` for
/// externally reachable services, `internalTrafficPolicy: Cluster`,
/// `allocateLoadBalancerNodePorts: true` for load balancers, the
/// `clusterIP`/`clusterIPs` synchronisation, and the single-stack IPv4 family
/// fields the registry fills in (`RequireDualStack` with both families for
/// headless services without a selector). Cluster IPs and node ports are
/// allocated by the caller.
pub fn default_service(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(ServiceSpec::default);
    if is_empty(&spec.session_affinity) {
        spec.session_affinity = Some("None".to_string());
    }
    match spec.session_affinity.as_deref() {
        Some("None") => spec.session_affinity_config = None,
        Some("ClientIP") => {
            let has_timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .is_some();
            if !has_timeout {
                spec.session_affinity_config = Some(SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(DEFAULT_AFFINITY_SECONDS),
                    }),
                });
            }
        }
        _ => {}
    }
    if is_empty(&spec.type_) {
        spec.type_ = Some("ClusterIP".to_string());
    }
    for p in spec.ports.iter_mut().flatten() {
        if is_empty(&p.protocol) {
            p.protocol = Some("TCP".to_string());
        }
        let unset = match &p.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) => s.is_empty(),
            Some(IntOrString::Int(_)) => false,
        };
        if unset {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    if externally_accessible(spec) && is_empty(&spec.external_traffic_policy) {
        spec.external_traffic_policy = Some("Cluster".to_string());
    }
    let ty = type_of(spec).to_string();
    if spec.internal_traffic_policy.is_none()
        && matches!(ty.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP")
    {
        spec.internal_traffic_policy = Some("Cluster".to_string());
    }
    if ty == "LoadBalancer" && spec.allocate_load_balancer_node_ports.is_none() {
        spec.allocate_load_balancer_node_ports = Some(true);
    }
    if ty == "ExternalName" {
        return;
    }
    let ips_empty = spec.cluster_ips.as_ref().is_none_or(Vec::is_empty);
    if !is_empty(&spec.cluster_ip) && ips_empty {
        spec.cluster_ips = Some(vec![or_empty(&spec.cluster_ip).to_string()]);
    } else if is_empty(&spec.cluster_ip) && !ips_empty {
        spec.cluster_ip = spec
            .cluster_ips
            .as_ref()
            .and_then(|ips| ips.first().cloned());
    }
    let selectorless_headless =
        is_headless(spec) && spec.selector.as_ref().is_none_or(|s| s.is_empty());
    if spec.ip_family_policy.is_none() {
        spec.ip_family_policy = Some(
            if selectorless_headless {
                "RequireDualStack"
            } else {
                "SingleStack"
            }
            .to_string(),
        );
    }
    if spec.ip_families.as_ref().is_none_or(Vec::is_empty) {
        let mut families = vec!["IPv4".to_string()];
        if spec.ip_family_policy.as_deref() == Some("RequireDualStack") && selectorless_headless {
            families.push("IPv6".to_string());
        }
        spec.ip_families = Some(families);
    }
}

/// Carries allocated values over from the stored service when an update
/// omits them (what upstream's service REST `patchAllocatedValues` does:
/// cluster IPs, node ports, the health check node port and the IP family
/// fields), then applies [`default_service`].
pub fn default_service_update(new: &mut Service, old: &Service) {
    let default_spec = ServiceSpec::default();
    let old_spec = old.spec.as_ref().unwrap_or(&default_spec);
    let spec = new.spec.get_or_insert_with(ServiceSpec::default);
    let new_type = if is_empty(&spec.type_) {
        "ClusterIP"
    } else {
        type_of(spec)
    }
    .to_string();
    let old_type = type_of(old_spec);
    if new_type != "ExternalName" && old_type != "ExternalName" {
        if is_empty(&spec.cluster_ip) && spec.cluster_ips.as_ref().is_none_or(Vec::is_empty) {
            spec.cluster_ip.clone_from(&old_spec.cluster_ip);
            spec.cluster_ips.clone_from(&old_spec.cluster_ips);
        }
        if spec.ip_family_policy.is_none() {
            spec.ip_family_policy.clone_from(&old_spec.ip_family_policy);
        }
        if spec.ip_families.as_ref().is_none_or(Vec::is_empty) {
            spec.ip_families.clone_from(&old_spec.ip_families);
        }
    }
    let needs_node_ports = |t: &str| t == "NodePort" || t == "LoadBalancer";
    if needs_node_ports(&new_type) && needs_node_ports(old_type) {
        let old_ports = old_spec.ports.as_deref().unwrap_or(&[]);
        for p in spec.ports.iter_mut().flatten() {
            if p.node_port.unwrap_or(0) != 0 {
                continue;
            }
            let proto = if is_empty(&p.protocol) {
                "TCP"
            } else {
                or_empty(&p.protocol)
            };
            let matching = old_ports.iter().find(|o| {
                o.port == p.port
                    && (if is_empty(&o.protocol) {
                        "TCP"
                    } else {
                        or_empty(&o.protocol)
                    }) == proto
            });
            if let Some(o) = matching {
                p.node_port = o.node_port;
            }
        }
    }
    if spec.health_check_node_port.unwrap_or(0) == 0 {
        let mut probe = spec.clone();
        probe.type_ = Some(new_type.clone());
        if needs_health_check(&probe) && needs_health_check(old_spec) {
            spec.health_check_node_port = old_spec.health_check_node_port;
        }
    }
    default_service(new);
}

/// Validates a service on create.
pub fn validate_service(svc: &Service) -> Vec<FieldError> {
    let mut errs = meta::object_meta(
        &svc.metadata,
        true,
        NameRule::Dns1035Label,
        &Path::new("metadata"),
    );
    let default_spec = ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&default_spec);
    let sp = Path::new("spec");
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    let ty = type_of(spec);
    let headless = is_headless(spec);
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(FieldError::required(&sp.child("ports"), ""));
    }
    match ty {
        "LoadBalancer" | "NodePort" => {
            if ty == "LoadBalancer" {
                for (i, p) in ports.iter().enumerate() {
                    if p.port == KUBELET_PORT {
                        errs.push(FieldError::invalid(
                            &sp.child("ports").index(i),
                            p.port,
                            format!("may not expose port {KUBELET_PORT} externally since it is used by kubelet"),
                        ));
                    }
                }
            }
            if headless {
                errs.push(FieldError::invalid(
                    &sp.child("clusterIPs").index(0),
                    "None",
                    format!("may not be set to 'None' for {ty} services"),
                ));
            }
        }
        "ExternalName" => {
            if !cluster_ips(spec).is_empty() {
                errs.push(FieldError::forbidden(
                    &sp.child("clusterIPs"),
                    "may not be set for ExternalName services",
                ));
            }
            if spec.ip_families.as_ref().is_some_and(|f| !f.is_empty()) {
                errs.push(FieldError::forbidden(
                    &sp.child("ipFamilies"),
                    "may not be set for ExternalName services",
                ));
            }
            if spec.ip_family_policy.is_some() {
                errs.push(FieldError::forbidden(
                    &sp.child("ipFamilyPolicy"),
                    "may not be set for ExternalName services",
                ));
            }
            let name = or_empty(&spec.external_name);
            let cname = name.strip_suffix('.').unwrap_or(name);
            if cname.is_empty() {
                errs.push(FieldError::required(&sp.child("externalName"), ""));
            } else {
                for msg in format::dns1123_subdomain(cname) {
                    errs.push(FieldError::invalid(&sp.child("externalName"), cname, msg));
                }
            }
        }
        _ => {}
    }

    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        service_port(
            p,
            ports.len() > 1,
            &mut names,
            &sp.child("ports").index(i),
            &mut errs,
        );
    }
    errs.extend(meta::labels(spec.selector.as_ref(), &sp.child("selector")));

    match or_empty(&spec.session_affinity) {
        "" => errs.push(FieldError::required(&sp.child("sessionAffinity"), "")),
        "ClientIP" => client_ip_config(spec, &sp.child("sessionAffinityConfig"), &mut errs),
        "None" => {
            if spec.session_affinity_config.is_some() {
                errs.push(FieldError::forbidden(
                    &sp.child("sessionAffinityConfig"),
                    "must not be set when session affinity is None",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            &sp.child("sessionAffinity"),
            other,
            &["ClientIP", "None"],
        )),
    }

    cluster_ips_related(spec, &sp, &mut errs);

    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        let p = sp.child("externalIPs").index(i);
        if format::parse_ip(ip).is_none() {
            errs.push(FieldError::invalid(&p, ip, format::INVALID_IP_MSG));
        } else {
            errs.extend(non_special_ip(ip, &p));
        }
    }

    if ty.is_empty() {
        errs.push(FieldError::required(&sp.child("type"), ""));
    } else if !SERVICE_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported(
            &sp.child("type"),
            ty,
            &SERVICE_TYPES,
        ));
    }

    if ty == "ClusterIP" {
        for (i, p) in ports.iter().enumerate() {
            if p.node_port.unwrap_or(0) != 0 {
                errs.push(FieldError::forbidden(
                    &sp.child("ports").index(i).child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        for (i, p) in ports.iter().enumerate() {
            let np = p.node_port.unwrap_or(0);
            if np != 0 && !NODE_PORT_RANGE.contains(&np) {
                errs.push(FieldError::invalid(
                    &sp.child("ports").index(i).child("nodePort"),
                    np,
                    format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        NODE_PORT_RANGE.start(),
                        NODE_PORT_RANGE.end()
                    ),
                ));
            }
        }
    }

    let mut node_ports = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let np = p.node_port.unwrap_or(0);
        if np != 0 && !node_ports.insert((or_empty(&p.protocol), np)) {
            errs.push(FieldError::duplicate(
                &sp.child("ports").index(i).child("nodePort"),
                np,
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let proto = or_empty(&p.protocol);
        if !seen.insert((proto, p.port)) {
            errs.push(FieldError::duplicate(
                &sp.child("ports").index(i),
                raw(format!(
                    "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                    crate::goquote::quote(proto),
                    p.port
                )),
            ));
        }
    }

    if let Some(ranges) = spec
        .load_balancer_source_ranges
        .as_ref()
        .filter(|r| !r.is_empty())
    {
        let p = sp.child("LoadBalancerSourceRanges");
        if ty != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                &p,
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for (i, r) in ranges.iter().enumerate() {
            let r = r.trim();
            if format::parse_cidr(r).is_none() {
                errs.push(FieldError::invalid(
                    &p.index(i),
                    r,
                    format::INVALID_CIDR_MSG,
                ));
            }
        }
    }
    if spec.allocate_load_balancer_node_ports.is_some() && ty != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            &sp.child("allocateLoadBalancerNodePorts"),
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if ty == "LoadBalancer" && spec.allocate_load_balancer_node_ports.is_none() {
        // Upstream reports this one without the `spec.` prefix.
        errs.push(FieldError::required(
            &Path::new("allocateLoadBalancerNodePorts"),
            "",
        ));
    }
    if let Some(class) = &spec.load_balancer_class {
        if ty == "LoadBalancer" {
            errs.extend(meta::label_name(class, &sp.child("loadBalancerClass")));
        } else {
            errs.push(FieldError::forbidden(
                &sp.child("loadBalancerClass"),
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
    }
    external_traffic_policy(spec, &sp, &mut errs);
    match spec.internal_traffic_policy.as_deref() {
        None if matches!(ty, "NodePort" | "LoadBalancer" | "ClusterIP") => {
            errs.push(FieldError::required(&sp.child("internalTrafficPolicy"), ""));
        }
        Some(p) if p != "Cluster" && p != "Local" => {
            errs.push(FieldError::not_supported(
                &sp.child("internalTrafficPolicy"),
                p,
                &["Cluster", "Local"],
            ));
        }
        _ => {}
    }
    if let Some(td) = &spec.traffic_distribution {
        const DISTRIBUTIONS: [&str; 3] = ["PreferClose", "PreferSameZone", "PreferSameNode"];
        if !DISTRIBUTIONS.contains(&td.as_str()) {
            errs.push(FieldError::not_supported(
                &sp.child("trafficDistribution"),
                td,
                &DISTRIBUTIONS,
            ));
        }
    }
    errs
}

fn service_port(
    p: &ServicePort,
    require_name: bool,
    names: &mut BTreeSet<String>,
    path: &Path,
    errs: &mut Vec<FieldError>,
) {
    let name = or_empty(&p.name);
    if require_name && name.is_empty() {
        errs.push(FieldError::required(&path.child("name"), ""));
    } else if !name.is_empty() {
        for msg in format::dns1123_label(name) {
            errs.push(FieldError::invalid(&path.child("name"), name, msg));
        }
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(&path.child("name"), name));
        }
    }
    for msg in format::port_num(p.port.into()) {
        errs.push(FieldError::invalid(&path.child("port"), p.port, msg));
    }
    let proto = or_empty(&p.protocol);
    if proto.is_empty() {
        errs.push(FieldError::required(&path.child("protocol"), ""));
    } else if !PROTOCOLS.contains(&proto) {
        errs.push(FieldError::not_supported(
            &path.child("protocol"),
            proto,
            &PROTOCOLS,
        ));
    }
    let target = p.target_port.clone().unwrap_or(IntOrString::Int(0));
    port_num_or_name(&target, &path.child("targetPort"), errs);
    if let Some(ap) = &p.app_protocol {
        errs.extend(meta::label_name(ap, &path.child("appProtocol")));
    }
}

fn client_ip_config(spec: &ServiceSpec, path: &Path, errs: &mut Vec<FieldError>) {
    const WHEN: &str = "when session affinity type is ClientIP";
    let Some(config) = &spec.session_affinity_config else {
        errs.push(FieldError::required(path, WHEN));
        return;
    };
    let Some(client) = &config.client_ip else {
        errs.push(FieldError::required(&path.child("clientIP"), WHEN));
        return;
    };
    let tp = path.child("clientIP").child("timeoutSeconds");
    match client.timeout_seconds {
        None => errs.push(FieldError::required(&tp, WHEN)),
        Some(t) if t <= 0 || t > MAX_AFFINITY_SECONDS => errs.push(FieldError::invalid(
            &tp,
            t,
            format!("must be greater than 0 and less than {MAX_AFFINITY_SECONDS}"),
        )),
        Some(_) => {}
    }
}

/// `ValidateNonSpecialIP`: no unspecified, loopback or link-local addresses.
pub(super) fn non_special_ip(ip: &str, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(addr) = format::parse_ip(ip) else {
        errs.push(FieldError::invalid(path, ip, "must be a valid IP address"));
        return errs;
    };
    let v4 = match addr {
        std::net::IpAddr::V4(a) => Some(a),
        std::net::IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    let (unspecified, loopback, link_local, link_local_mc) = match (v4, addr) {
        (Some(a), _) => (
            a.is_unspecified(),
            a.is_loopback(),
            a.is_link_local(),
            a.octets()[..3] == [224, 0, 0],
        ),
        (None, std::net::IpAddr::V6(a)) => {
            let seg = a.segments();
            (
                a.is_unspecified(),
                a.is_loopback(),
                seg[0] & 0xffc0 == 0xfe80,
                seg[0] & 0xff0f == 0xff02,
            )
        }
        (None, std::net::IpAddr::V4(_)) => (false, false, false, false),
    };
    if unspecified {
        errs.push(FieldError::invalid(
            path,
            ip,
            format!("may not be unspecified ({ip})"),
        ));
    }
    if loopback {
        errs.push(FieldError::invalid(
            path,
            ip,
            "may not be in the loopback range (127.0.0.0/8, ::1/128)",
        ));
    }
    if link_local {
        errs.push(FieldError::invalid(
            path,
            ip,
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        ));
    }
    if link_local_mc {
        errs.push(FieldError::invalid(
            path,
            ip,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ));
    }
    errs
}

fn external_traffic_policy(spec: &ServiceSpec, sp: &Path, errs: &mut Vec<FieldError>) {
    let etp = or_empty(&spec.external_traffic_policy);
    if !externally_accessible(spec) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                &sp.child("externalTrafficPolicy"),
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required(&sp.child("externalTrafficPolicy"), ""));
    } else if etp != "Cluster" && etp != "Local" {
        errs.push(FieldError::not_supported(
            &sp.child("externalTrafficPolicy"),
            etp,
            &["Cluster", "Local"],
        ));
    }
    let hcnp = spec.health_check_node_port.unwrap_or(0);
    let hp = sp.child("healthCheckNodePort");
    if !needs_health_check(spec) {
        if hcnp != 0 {
            errs.push(FieldError::invalid(
                &hp,
                hcnp,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    } else if hcnp == 0 {
        errs.push(FieldError::required(&hp, ""));
    } else {
        for msg in format::port_num(hcnp.into()) {
            errs.push(FieldError::invalid(&hp, hcnp, msg));
        }
    }
}

/// `ValidateServiceClusterIPsRelatedFields`.
fn cluster_ips_related(spec: &ServiceSpec, sp: &Path, errs: &mut Vec<FieldError>) {
    if type_of(spec) == "ExternalName" {
        return;
    }
    let ips_path = sp.child("clusterIPs");
    let ips = spec.cluster_ips.as_deref().unwrap_or(&[]);
    let cluster_ip = or_empty(&spec.cluster_ip);
    if !cluster_ip.is_empty() {
        match ips.first() {
            None => errs.push(FieldError::required(&ips_path, "")),
            Some(first) if first != cluster_ip => {
                errs.push(FieldError::invalid(
                    &ips_path,
                    json(ips),
                    "first value must match `clusterIP`",
                ));
            }
            Some(_) => {}
        }
    } else if !ips.is_empty() {
        errs.push(FieldError::invalid(
            &ips_path,
            json(ips),
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let families = spec.ip_families.as_deref().unwrap_or(&[]);
    let mut seen = BTreeSet::new();
    for (i, f) in families.iter().enumerate() {
        if f != "IPv4" && f != "IPv6" {
            errs.push(FieldError::not_supported(
                &sp.child("ipFamilies").index(i),
                f,
                &["IPv4", "IPv6"],
            ));
        }
        if !seen.insert(f.as_str()) {
            errs.push(FieldError::duplicate(&sp.child("ipFamilies").index(i), f));
        }
    }
    if let Some(p) = &spec.ip_family_policy {
        const POLICIES: [&str; 3] = ["PreferDualStack", "RequireDualStack", "SingleStack"];
        if !POLICIES.contains(&p.as_str()) {
            errs.push(FieldError::not_supported(
                &sp.child("ipFamilyPolicy"),
                p,
                &POLICIES,
            ));
        }
    }
    let mut invalid = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == "None" {
            if ips.len() > 1 {
                invalid = true;
                errs.push(FieldError::invalid(
                    &ips_path,
                    json(ips),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        if format::parse_ip(ip).is_none() {
            invalid = true;
            errs.push(FieldError::invalid(
                &ips_path.index(i),
                ip,
                format::INVALID_IP_MSG,
            ));
        }
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid(
            &ips_path,
            json(ips),
            "may only hold up to 2 values",
        ));
    }
    if invalid {
        return;
    }
    if ips.len() > 1 {
        let v4: Vec<bool> = ips
            .iter()
            .filter_map(|ip| format::parse_ip(ip))
            .map(|a| format::is_ipv4(&a))
            .collect();
        let dual = v4.len() == 2 && v4[0] != v4[1];
        if !dual {
            errs.push(FieldError::invalid(
                &ips_path,
                json(ips),
                "may specify no more than one IP for each IP family",
            ));
        }
    }
    if !is_headless(spec) {
        for (i, ip) in ips.iter().enumerate() {
            let Some(family) = families.get(i) else { break };
            let is_v4 = format::parse_ip(ip).is_some_and(|a| format::is_ipv4(&a));
            if family == "IPv4" && !is_v4 {
                errs.push(FieldError::invalid(
                    &ips_path.index(i),
                    ip,
                    format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if family == "IPv6" && is_v4 {
                errs.push(FieldError::invalid(
                    &ips_path.index(i),
                    ip,
                    format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
}

/// Validates a service update: metadata immutability, cluster IPs and IP
/// families that may not change once set, an immutable load balancer class
/// and health check node port, and the new service's validity.
pub fn validate_service_update(new: &Service, old: &Service) -> Vec<FieldError> {
    let mut errs = meta::object_meta_update(&new.metadata, &old.metadata, &Path::new("metadata"));
    let default_spec = ServiceSpec::default();
    let n = new.spec.as_ref().unwrap_or(&default_spec);
    let o = old.spec.as_ref().unwrap_or(&default_spec);
    let external_name = type_of(n) == "ExternalName" || type_of(o) == "ExternalName";
    let ips_path = Path::new("spec").child("clusterIPs");
    let families_path = Path::new("spec").child("ipFamilies");
    let policy_path = Path::new("spec").child("ipFamilyPolicy");
    let (new_ips, old_ips) = (cluster_ips(n), cluster_ips(o));
    let single_stack = n.ip_family_policy.as_deref() == Some("SingleStack");
    let both_headless = is_headless(n) && is_headless(o);
    if !external_name && !both_headless {
        if old_ips.len() == new_ips.len() {
            for (i, ip) in old_ips.iter().enumerate() {
                if *ip != new_ips[i] {
                    errs.push(FieldError::invalid(
                        &ips_path.index(i),
                        json(&new_ips),
                        "may not change once set",
                    ));
                }
            }
        } else if old_ips.len() > new_ips.len() {
            if new_ips.is_empty() {
                errs.push(FieldError::invalid(
                    &ips_path.index(0),
                    json(&new_ips),
                    "primary clusterIP can not be unset",
                ));
            } else if new_ips[0] != old_ips[0] {
                errs.push(FieldError::invalid(
                    &ips_path.index(0),
                    json(&new_ips),
                    "may not change once set",
                ));
            }
            if new_ips.len() == 1 && !single_stack {
                errs.push(FieldError::invalid(
                    &policy_path,
                    json(&n.ip_family_policy),
                    "must be set to 'SingleStack' when releasing the secondary clusterIP",
                ));
            }
        } else if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
            errs.push(FieldError::invalid(
                &ips_path.index(0),
                json(&new_ips),
                "may not change once set",
            ));
        }
    }
    if !external_name && is_headless(n) == is_headless(o) && !is_headless(n) {
        let nf = n.ip_families.as_deref().unwrap_or(&[]);
        let of = o.ip_families.as_deref().unwrap_or(&[]);
        if nf.len() == of.len() {
            if nf != of {
                errs.push(FieldError::invalid(
                    &families_path.index(0),
                    json(nf),
                    "may not change once set",
                ));
            }
        } else if of.len() > nf.len() {
            if new_ips.is_empty() {
                errs.push(FieldError::invalid(
                    &families_path.index(0),
                    json(nf),
                    "primary ipFamily can not be unset",
                ));
            }
            if nf.first().is_some_and(|f| Some(f) != of.first()) {
                errs.push(FieldError::invalid(
                    &families_path.index(0),
                    json(&new_ips),
                    "may not change once set",
                ));
            }
            if nf.len() == 1 && !single_stack {
                errs.push(FieldError::invalid(
                    &policy_path,
                    json(&n.ip_family_policy),
                    "must be set to 'SingleStack' when releasing the secondary ipFamily",
                ));
            }
        } else if nf.first().is_some_and(|f| Some(f) != of.first()) && !of.is_empty() {
            errs.push(FieldError::invalid(
                &families_path.index(0),
                json(&new_ips),
                "may not change once set",
            ));
        }
    }
    if type_of(n) == "LoadBalancer"
        && type_of(o) == "LoadBalancer"
        && n.load_balancer_class != o.load_balancer_class
    {
        errs.push(FieldError::invalid(
            &Path::new("spec").child("loadBalancerClass"),
            json(&n.load_balancer_class),
            "may not change once set",
        ));
    }
    if needs_health_check(n)
        && needs_health_check(o)
        && n.health_check_node_port != o.health_check_node_port
    {
        errs.push(FieldError::forbidden(
            &Path::new("spec").child("healthCheckNodePort"),
            "field is immutable",
        ));
    }
    errs.extend(validate_service(new));
    errs
}

#[cfg(test)]
mod tests {
    use super::super::ErrorKind::{self, *};
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn port(name: Option<&str>, port: i32) -> ServicePort {
        ServicePort {
            name: name.map(str::to_string),
            port,
            ..Default::default()
        }
    }

    fn base() -> Service {
        let mut svc = Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".into(), "web".into())])),
                ports: Some(vec![port(None, 80)]),
                ..Default::default()
            }),
            status: None,
        };
        default_service(&mut svc);
        svc
    }

    fn spec(s: &mut Service) -> &mut ServiceSpec {
        s.spec.get_or_insert_with(Default::default)
    }

    fn kinds(errs: &[FieldError]) -> Vec<(String, ErrorKind)> {
        errs.iter().map(|e| (e.field.clone(), e.kind)).collect()
    }

    #[test]
    fn defaults() {
        let svc = base();
        let s = svc.spec.as_ref().unwrap_or_else(|| unreachable!());
        assert_eq!(s.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(s.session_affinity.as_deref(), Some("None"));
        assert_eq!(s.internal_traffic_policy.as_deref(), Some("Cluster"));
        assert_eq!(s.external_traffic_policy, None);
        assert_eq!(s.ip_family_policy.as_deref(), Some("SingleStack"));
        assert_eq!(s.ip_families, Some(vec!["IPv4".to_string()]));
        let p = &s.ports.as_ref().unwrap_or_else(|| unreachable!())[0];
        assert_eq!(p.protocol.as_deref(), Some("TCP"));
        assert_eq!(p.target_port, Some(IntOrString::Int(80)));

        let mut lb = base();
        spec(&mut lb).type_ = Some("LoadBalancer".into());
        default_service(&mut lb);
        let s = lb.spec.as_ref().unwrap_or_else(|| unreachable!());
        assert_eq!(s.external_traffic_policy.as_deref(), Some("Cluster"));
        assert_eq!(s.allocate_load_balancer_node_ports, Some(true));

        let mut headless = Service {
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        default_service(&mut headless);
        let s = headless.spec.as_ref().unwrap_or_else(|| unreachable!());
        assert_eq!(s.cluster_ips, Some(vec!["None".to_string()]));
        assert_eq!(s.ip_family_policy.as_deref(), Some("RequireDualStack"));
    }

    #[test]
    fn valid_services_pass() {
        assert_eq!(validate_service(&base()), vec![]);
        let mut np = base();
        spec(&mut np).type_ = Some("NodePort".into());
        spec(&mut np).ports = Some(vec![ServicePort {
            node_port: Some(30080),
            ..port(None, 80)
        }]);
        default_service(&mut np);
        assert_eq!(validate_service(&np), vec![]);
        let mut ext = Service {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some("db.example.com.".into()),
                ..Default::default()
            }),
            status: None,
        };
        default_service(&mut ext);
        assert_eq!(validate_service(&ext), vec![]);
        let mut headless = base();
        spec(&mut headless).cluster_ip = Some("None".into());
        spec(&mut headless).ports = None;
        default_service(&mut headless);
        assert_eq!(validate_service(&headless), vec![]);
    }

    #[test]
    fn service_rules() {
        type Mutate = fn(&mut Service);
        let cases: Vec<(&str, Mutate, &str, ErrorKind)> = vec![
            ("no ports", |s| spec(s).ports = None, "spec.ports", Required),
            (
                "names needed",
                |s| spec(s).ports = Some(vec![port(Some("a"), 80), port(None, 81)]),
                "spec.ports[1].name",
                Required,
            ),
            (
                "dup name",
                |s| spec(s).ports = Some(vec![port(Some("a"), 80), port(Some("a"), 81)]),
                "spec.ports[1].name",
                Duplicate,
            ),
            (
                "port range",
                |s| {
                    spec(s).ports = Some(vec![ServicePort {
                        target_port: Some(IntOrString::Int(8080)),
                        ..port(None, 0)
                    }])
                },
                "spec.ports[0].port",
                Invalid,
            ),
            (
                "target name",
                |s| {
                    spec(s).ports = Some(vec![ServicePort {
                        target_port: Some(IntOrString::String("Bad_Name".into())),
                        ..port(None, 80)
                    }])
                },
                "spec.ports[0].targetPort",
                Invalid,
            ),
            (
                "type",
                |s| spec(s).type_ = Some("Magic".into()),
                "spec.type",
                NotSupported,
            ),
            (
                "selector",
                |s| spec(s).selector = Some(BTreeMap::from([("app".into(), "-x".into())])),
                "spec.selector",
                Invalid,
            ),
            (
                "node port on clusterip",
                |s| {
                    spec(s).ports = Some(vec![ServicePort {
                        node_port: Some(30001),
                        ..port(None, 80)
                    }])
                },
                "spec.ports[0].nodePort",
                Forbidden,
            ),
            (
                "node port range",
                |s| {
                    spec(s).type_ = Some("NodePort".into());
                    spec(s).external_traffic_policy = Some("Cluster".into());
                    spec(s).ports = Some(vec![ServicePort {
                        node_port: Some(80),
                        ..port(None, 80)
                    }]);
                    default_service(s);
                },
                "spec.ports[0].nodePort",
                Invalid,
            ),
            (
                "cluster ip",
                |s| {
                    spec(s).cluster_ip = Some("10.0.0.300".into());
                    spec(s).cluster_ips = Some(vec!["10.0.0.300".into()]);
                },
                "spec.clusterIPs[0]",
                Invalid,
            ),
            (
                "v6 ip for v4 family",
                |s| {
                    spec(s).cluster_ip = Some("fd00::1".into());
                    spec(s).cluster_ips = Some(vec!["fd00::1".into()]);
                },
                "spec.clusterIPs[0]",
                Invalid,
            ),
            (
                "dup port",
                |s| spec(s).ports = Some(vec![port(Some("a"), 80), port(Some("b"), 80)]),
                "spec.ports[1]",
                Duplicate,
            ),
            (
                "protocol",
                |s| {
                    spec(s).ports = Some(vec![ServicePort {
                        protocol: Some("ICMP".into()),
                        ..port(None, 80)
                    }])
                },
                "spec.ports[0].protocol",
                NotSupported,
            ),
            (
                "name format",
                |s| s.metadata.name = Some("1web".into()),
                "metadata.name",
                Invalid,
            ),
            (
                "affinity",
                |s| spec(s).session_affinity = Some("Sticky".into()),
                "spec.sessionAffinity",
                NotSupported,
            ),
        ];
        for (name, mutate, field, kind) in cases {
            let mut svc = base();
            mutate(&mut svc);
            default_service(&mut svc);
            let errs = validate_service(&svc);
            assert_eq!(
                kinds(&errs),
                vec![(field.to_string(), kind)],
                "{name}: {errs:?}"
            );
        }
    }

    #[test]
    fn messages() {
        let mut svc = base();
        spec(&mut svc).type_ = Some("NodePort".into());
        spec(&mut svc).ports = Some(vec![ServicePort {
            node_port: Some(80),
            ..port(None, 80)
        }]);
        default_service(&mut svc);
        assert_eq!(
            validate_service(&svc)[0].to_string(),
            "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"
        );
        let mut svc = base();
        spec(&mut svc).ports = Some(vec![port(Some("a"), 80), port(Some("b"), 80)]);
        default_service(&mut svc);
        assert_eq!(
            validate_service(&svc)[0].to_string(),
            "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}"
        );
    }

    #[test]
    fn update_keeps_cluster_ip() {
        let mut old = base();
        spec(&mut old).cluster_ip = Some("10.96.0.10".into());
        default_service(&mut old);
        let mut changed = old.clone();
        spec(&mut changed).cluster_ip = Some("10.96.0.11".into());
        spec(&mut changed).cluster_ips = Some(vec!["10.96.0.11".into()]);
        assert_eq!(
            kinds(&validate_service_update(&changed, &old)),
            vec![("spec.clusterIPs[0]".to_string(), Invalid)]
        );

        let mut omitted = old.clone();
        spec(&mut omitted).cluster_ip = None;
        spec(&mut omitted).cluster_ips = None;
        spec(&mut omitted).ip_families = None;
        spec(&mut omitted).ip_family_policy = None;
        default_service_update(&mut omitted, &old);
        assert_eq!(validate_service_update(&omitted, &old), vec![]);
        assert_eq!(
            omitted.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
            Some("10.96.0.10".into())
        );

        let mut ports = old.clone();
        spec(&mut ports).ports = Some(vec![port(None, 8080)]);
        default_service(&mut ports);
        assert_eq!(validate_service_update(&ports, &old), vec![]);
    }

    #[test]
    fn update_keeps_node_ports() {
        let mut old = base();
        spec(&mut old).type_ = Some("NodePort".into());
        spec(&mut old).ports = Some(vec![ServicePort {
            node_port: Some(30080),
            ..port(None, 80)
        }]);
        default_service(&mut old);
        let mut new = old.clone();
        spec(&mut new).ports = Some(vec![port(None, 80)]);
        default_service_update(&mut new, &old);
        assert_eq!(
            new.spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .map(|p| p[0].node_port),
            Some(Some(30080))
        );
    }

    #[test]
    fn special_ips() {
        let p = Path::new("x");
        assert_eq!(
            non_special_ip("127.0.0.1", &p)[0].detail,
            "may not be in the loopback range (127.0.0.0/8, ::1/128)"
        );
        assert_eq!(
            non_special_ip("0.0.0.0", &p)[0].detail,
            "may not be unspecified (0.0.0.0)"
        );
        assert_eq!(non_special_ip("169.254.1.1", &p).len(), 1);
        assert_eq!(non_special_ip("fe80::1", &p).len(), 1);
        assert!(non_special_ip("10.1.2.3", &p).is_empty());
    }
}
