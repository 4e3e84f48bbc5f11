//! Workloads of the `apps` group: Deployments, ReplicaSets and DaemonSets.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    DeploymentStrategy, ReplicaSet, ReplicaSetSpec, RollingUpdateDaemonSet,
    RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pod::{default_pod_template, pod_template};
use super::{FieldError, NameRule, Path, format, json, meta, non_negative, or_empty};

/// Applies the `apps/v1` Deployment defaults: `replicas: 1`, a RollingUpdate
/// strategy with 25%/25%, `revisionHistoryLimit: 10`,
/// `progressDeadlineSeconds: 600`, and the pod-spec defaults on the template.
pub fn default_deployment(d: &mut Deployment) {
    let spec = d.spec.get_or_insert_with(DeploymentSpec::default);
    spec.replicas.get_or_insert(1);
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    if strategy.type_.as_deref().is_none_or(str::is_empty) {
        strategy.type_ = Some("RollingUpdate".to_string());
    }
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let ru = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        ru.max_unavailable
            .get_or_insert_with(|| IntOrString::String("25%".to_string()));
        ru.max_surge
            .get_or_insert_with(|| IntOrString::String("25%".to_string()));
    }
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    default_pod_template(&mut spec.template);
}

/// Applies the `apps/v1` ReplicaSet defaults: `replicas: 1` and the pod-spec
/// defaults on the template.
pub fn default_replica_set(r: &mut ReplicaSet) {
    let spec = r.spec.get_or_insert_with(ReplicaSetSpec::default);
    spec.replicas.get_or_insert(1);
    default_pod_template(spec.template.get_or_insert_with(PodTemplateSpec::default));
}

/// Applies the `apps/v1` DaemonSet defaults: a RollingUpdate strategy with
/// `maxUnavailable: 1` and `maxSurge: 0`, `revisionHistoryLimit: 10`, and the
/// pod-spec defaults on the template.
pub fn default_daemon_set(d: &mut DaemonSet) {
    let spec = d.spec.get_or_insert_with(DaemonSetSpec::default);
    let strategy = spec
        .update_strategy
        .get_or_insert_with(DaemonSetUpdateStrategy::default);
    if strategy.type_.as_deref().is_none_or(str::is_empty) {
        strategy.type_ = Some("RollingUpdate".to_string());
    }
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let ru = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDaemonSet::default);
        ru.max_unavailable.get_or_insert(IntOrString::Int(1));
        ru.max_surge.get_or_insert(IntOrString::Int(0));
    }
    spec.revision_history_limit.get_or_insert(10);
    default_pod_template(&mut spec.template);
}

/// Whether a selector was left out entirely (k8s-openapi turns a missing
/// selector into an empty one, which upstream treats as "nil").
fn selector_missing(sel: &LabelSelector) -> bool {
    sel.match_labels.is_none() && sel.match_expressions.is_none()
}

fn template_labels(t: &PodTemplateSpec) -> Option<&BTreeMap<String, String>> {
    t.metadata.as_ref().and_then(|m| m.labels.as_ref())
}

/// The selector checks shared by Deployments and ReplicaSets, then
/// `ValidatePodTemplateSpecForReplicaSet`.
fn selector_and_template(
    sel: &LabelSelector,
    template: &PodTemplateSpec,
    kind: &str,
    sp: &Path,
    errs: &mut Vec<FieldError>,
) {
    let missing = selector_missing(sel);
    if missing {
        errs.push(FieldError::required(&sp.child("selector"), ""));
    } else {
        errs.extend(meta::label_selector(sel, &sp.child("selector")));
        if meta::selector_is_empty(sel) {
            errs.push(FieldError::invalid(
                &sp.child("selector"),
                json(sel),
                "empty selector is invalid for deployment",
            ));
        }
    }
    let tp = sp.child("template");
    let empty = BTreeMap::new();
    let labels = template_labels(template).unwrap_or(&empty);
    let matches = if missing {
        Some(false)
    } else {
        meta::selector_matches(sel, labels)
    };
    match matches {
        None => errs.push(FieldError::invalid(
            &sp.child("selector"),
            json(sel),
            "invalid label selector",
        )),
        Some(ok) => {
            if !ok && (missing || !meta::selector_is_empty(sel)) {
                errs.push(FieldError::invalid(
                    &tp.child("metadata").child("labels"),
                    meta::map_value(template_labels(template)),
                    "`selector` does not match template `labels`",
                ));
            }
            workload_template(template, kind, &tp, errs);
        }
    }
}

/// The pod template checks every controller applies.
fn workload_template(
    template: &PodTemplateSpec,
    kind: &str,
    tp: &Path,
    errs: &mut Vec<FieldError>,
) {
    errs.extend(pod_template(template, tp));
    let spec = template.spec.as_ref();
    let restart = spec.map_or("", |s| or_empty(&s.restart_policy));
    if restart != "Always" {
        errs.push(FieldError::not_supported(
            &tp.child("spec").child("restartPolicy"),
            restart,
            &["Always"],
        ));
    }
    if spec.is_some_and(|s| s.active_deadline_seconds.is_some()) {
        errs.push(FieldError::forbidden(
            &tp.child("spec").child("activeDeadlineSeconds"),
            format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
}

/// `ValidatePositiveIntOrPercent`.
fn int_or_percent(v: &IntOrString, path: &Path, errs: &mut Vec<FieldError>) {
    match v {
        IntOrString::String(s) => {
            for msg in format::percent(s) {
                errs.push(FieldError::invalid(path, json(v), msg));
            }
        }
        IntOrString::Int(i) => non_negative((*i).into(), path, errs),
    }
}

/// The numeric value of an int-or-percent (0 when malformed).
fn int_or_percent_value(v: Option<&IntOrString>) -> i64 {
    match v {
        Some(IntOrString::Int(i)) => (*i).into(),
        Some(IntOrString::String(s)) => match s.strip_suffix('%') {
            Some(d) if format::percent(s).is_empty() => d.parse().unwrap_or(0),
            _ => 0,
        },
        None => 0,
    }
}

/// `IsNotMoreThan100Percent`.
fn not_over_100(v: Option<&IntOrString>, path: &Path, errs: &mut Vec<FieldError>) {
    if let Some(pv @ IntOrString::String(s)) = v
        && format::percent(s).is_empty()
        && int_or_percent_value(v) > 100
    {
        errs.push(FieldError::invalid(
            path,
            json(pv),
            "must not be greater than 100%",
        ));
    }
}

/// Validates a Deployment (`ValidateDeployment`).
pub fn validate_deployment(d: &Deployment) -> Vec<FieldError> {
    let mut errs = meta::object_meta(
        &d.metadata,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    let default_spec = DeploymentSpec::default();
    let spec = d.spec.as_ref().unwrap_or(&default_spec);
    let sp = Path::new("spec");
    non_negative(
        spec.replicas.unwrap_or(1).into(),
        &sp.child("replicas"),
        &mut errs,
    );
    selector_and_template(&spec.selector, &spec.template, "ReplicaSet", &sp, &mut errs);
    let strategy_path = sp.child("strategy");
    let default_strategy = DeploymentStrategy::default();
    let strategy = spec.strategy.as_ref().unwrap_or(&default_strategy);
    match or_empty(&strategy.type_) {
        "Recreate" => {
            if strategy.rolling_update.is_some() {
                errs.push(FieldError::forbidden(
                    &strategy_path.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match &strategy.rolling_update {
            None => errs.push(FieldError::required(
                &strategy_path.child("rollingUpdate"),
                "this should be defaulted and never be nil",
            )),
            Some(ru) => {
                let rp = strategy_path.child("rollingUpdate");
                let zero = IntOrString::Int(0);
                let unavailable = ru.max_unavailable.as_ref().unwrap_or(&zero);
                let surge = ru.max_surge.as_ref().unwrap_or(&zero);
                int_or_percent(unavailable, &rp.child("maxUnavailable"), &mut errs);
                int_or_percent(surge, &rp.child("maxSurge"), &mut errs);
                if int_or_percent_value(Some(unavailable)) == 0
                    && int_or_percent_value(Some(surge)) == 0
                {
                    errs.push(FieldError::invalid(
                        &rp.child("maxUnavailable"),
                        json(unavailable),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                not_over_100(Some(unavailable), &rp.child("maxUnavailable"), &mut errs);
            }
        },
        _ => errs.push(FieldError::not_supported(
            &strategy_path,
            json(strategy),
            &["Recreate", "RollingUpdate"],
        )),
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    non_negative(min_ready.into(), &sp.child("minReadySeconds"), &mut errs);
    if let Some(r) = spec.revision_history_limit {
        non_negative(r.into(), &sp.child("revisionHistoryLimit"), &mut errs);
    }
    if let Some(p) = spec.progress_deadline_seconds {
        non_negative(p.into(), &sp.child("progressDeadlineSeconds"), &mut errs);
        if p <= min_ready {
            errs.push(FieldError::invalid(
                &sp.child("progressDeadlineSeconds"),
                p,
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs
}

/// Validates a ReplicaSet (`ValidateReplicaSet`).
pub fn validate_replica_set(r: &ReplicaSet) -> Vec<FieldError> {
    let mut errs = meta::object_meta(
        &r.metadata,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    let default_spec = ReplicaSetSpec::default();
    let spec = r.spec.as_ref().unwrap_or(&default_spec);
    let sp = Path::new("spec");
    non_negative(
        spec.replicas.unwrap_or(1).into(),
        &sp.child("replicas"),
        &mut errs,
    );
    non_negative(
        spec.min_ready_seconds.unwrap_or(0).into(),
        &sp.child("minReadySeconds"),
        &mut errs,
    );
    match &spec.template {
        Some(t) => selector_and_template(&spec.selector, t, "ReplicaSet", &sp, &mut errs),
        None => {
            if selector_missing(&spec.selector) {
                errs.push(FieldError::required(&sp.child("selector"), ""));
            }
            errs.push(FieldError::required(&sp.child("template"), ""));
        }
    }
    errs
}

/// Validates a DaemonSet (`ValidateDaemonSet`).
pub fn validate_daemon_set(d: &DaemonSet) -> Vec<FieldError> {
    let mut errs = meta::object_meta(
        &d.metadata,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    let default_spec = DaemonSetSpec::default();
    let spec = d.spec.as_ref().unwrap_or(&default_spec);
    let sp = Path::new("spec");
    let missing = selector_missing(&spec.selector);
    if !missing {
        errs.extend(meta::label_selector(&spec.selector, &sp.child("selector")));
    }
    let empty = BTreeMap::new();
    let labels = template_labels(&spec.template).unwrap_or(&empty);
    let matches = if missing {
        Some(false)
    } else {
        meta::selector_matches(&spec.selector, labels)
    };
    if matches == Some(false) {
        errs.push(FieldError::invalid(
            &sp.child("template").child("metadata").child("labels"),
            meta::map_value(template_labels(&spec.template)),
            "`selector` does not match template `labels`",
        ));
    }
    if !missing && meta::selector_is_empty(&spec.selector) {
        errs.push(FieldError::invalid(
            &sp.child("selector"),
            json(&spec.selector),
            "empty selector is invalid for daemonset",
        ));
    }
    workload_template(
        &spec.template,
        "DaemonSet",
        &sp.child("template"),
        &mut errs,
    );
    non_negative(
        spec.min_ready_seconds.unwrap_or(0).into(),
        &sp.child("minReadySeconds"),
        &mut errs,
    );
    let up = sp.child("updateStrategy");
    let default_strategy = DaemonSetUpdateStrategy::default();
    let strategy = spec.update_strategy.as_ref().unwrap_or(&default_strategy);
    match or_empty(&strategy.type_) {
        "OnDelete" => {}
        "RollingUpdate" => match &strategy.rolling_update {
            None => errs.push(FieldError::required(&up.child("rollingUpdate"), "")),
            Some(ru) => {
                let rp = up.child("rollingUpdate");
                let zero = IntOrString::Int(0);
                let unavailable = ru.max_unavailable.as_ref().unwrap_or(&zero);
                let surge = ru.max_surge.as_ref().unwrap_or(&zero);
                int_or_percent(unavailable, &rp.child("maxUnavailable"), &mut errs);
                int_or_percent(surge, &rp.child("maxSurge"), &mut errs);
                not_over_100(Some(unavailable), &rp.child("maxUnavailable"), &mut errs);
                not_over_100(Some(surge), &rp.child("maxSurge"), &mut errs);
                let has_unavailable = int_or_percent_value(Some(unavailable)) != 0;
                let has_surge = int_or_percent_value(Some(surge)) != 0;
                if has_unavailable && has_surge {
                    errs.push(FieldError::invalid(
                        &rp.child("maxSurge"),
                        json(surge),
                        "may not be set when maxUnavailable is non-zero",
                    ));
                } else if !has_unavailable && !has_surge {
                    errs.push(FieldError::required(
                        &rp.child("maxUnavailable"),
                        "cannot be 0 when maxSurge is 0",
                    ));
                }
            }
        },
        _ => errs.push(FieldError::not_supported(
            &up,
            json(strategy),
            &["RollingUpdate", "OnDelete"],
        )),
    }
    if let Some(r) = spec.revision_history_limit {
        non_negative(r.into(), &sp.child("revisionHistoryLimit"), &mut errs);
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::super::ErrorKind::{self, *};
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn labels() -> BTreeMap<String, String> {
        BTreeMap::from([("app".to_string(), "web".to_string())])
    }

    fn template() -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("nginx".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn meta() -> ObjectMeta {
        ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            ..Default::default()
        }
    }

    fn selector() -> LabelSelector {
        LabelSelector {
            match_labels: Some(labels()),
            match_expressions: None,
        }
    }

    fn deployment() -> Deployment {
        let mut d = Deployment {
            metadata: meta(),
            spec: Some(DeploymentSpec {
                selector: selector(),
                template: template(),
                ..Default::default()
            }),
            status: None,
        };
        default_deployment(&mut d);
        d
    }

    fn kinds(errs: &[FieldError]) -> Vec<(String, ErrorKind)> {
        errs.iter().map(|e| (e.field.clone(), e.kind)).collect()
    }

    fn dspec(d: &mut Deployment) -> &mut DeploymentSpec {
        d.spec.get_or_insert_with(Default::default)
    }

    #[test]
    fn deployment_defaults() {
        let d = deployment();
        let s = d.spec.as_ref().unwrap_or_else(|| unreachable!());
        assert_eq!(s.replicas, Some(1));
        assert_eq!(s.revision_history_limit, Some(10));
        assert_eq!(s.progress_deadline_seconds, Some(600));
        let st = s.strategy.as_ref().unwrap_or_else(|| unreachable!());
        assert_eq!(st.type_.as_deref(), Some("RollingUpdate"));
        let ru = st.rolling_update.as_ref().unwrap_or_else(|| unreachable!());
        assert_eq!(ru.max_surge, Some(IntOrString::String("25%".into())));
        assert_eq!(ru.max_unavailable, Some(IntOrString::String("25%".into())));
        let ps = s.template.spec.as_ref().unwrap_or_else(|| unreachable!());
        assert_eq!(ps.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            ps.containers[0].image_pull_policy.as_deref(),
            Some("Always")
        );
    }

    #[test]
    fn deployment_rules() {
        assert_eq!(validate_deployment(&deployment()), vec![]);
        type Mutate = fn(&mut Deployment);
        type Case = (&'static str, Mutate, Vec<(&'static str, ErrorKind)>);
        let cases: Vec<Case> = vec![
            (
                "replicas",
                |d| dspec(d).replicas = Some(-1),
                vec![("spec.replicas", Invalid)],
            ),
            (
                "selector mismatch",
                |d| {
                    dspec(d).selector.match_labels =
                        Some(BTreeMap::from([("app".into(), "db".into())]))
                },
                vec![("spec.template.metadata.labels", Invalid)],
            ),
            (
                "selector missing",
                |d| dspec(d).selector = LabelSelector::default(),
                vec![
                    ("spec.selector", Required),
                    ("spec.template.metadata.labels", Invalid),
                ],
            ),
            (
                "restart policy",
                |d| {
                    if let Some(s) = dspec(d).template.spec.as_mut() {
                        s.restart_policy = Some("Never".into());
                    }
                },
                vec![("spec.template.spec.restartPolicy", NotSupported)],
            ),
            (
                "zero surge and unavailable",
                |d| {
                    dspec(d).strategy = Some(DeploymentStrategy {
                        type_: Some("RollingUpdate".into()),
                        rolling_update: Some(RollingUpdateDeployment {
                            max_surge: Some(IntOrString::Int(0)),
                            max_unavailable: Some(IntOrString::Int(0)),
                        }),
                    })
                },
                vec![("spec.strategy.rollingUpdate.maxUnavailable", Invalid)],
            ),
            (
                "bad percent",
                |d| {
                    dspec(d).strategy = Some(DeploymentStrategy {
                        type_: Some("RollingUpdate".into()),
                        rolling_update: Some(RollingUpdateDeployment {
                            max_surge: Some(IntOrString::String("20Percent".into())),
                            max_unavailable: Some(IntOrString::Int(1)),
                        }),
                    })
                },
                vec![("spec.strategy.rollingUpdate.maxSurge", Invalid)],
            ),
            (
                "over 100",
                |d| {
                    dspec(d).strategy = Some(DeploymentStrategy {
                        type_: Some("RollingUpdate".into()),
                        rolling_update: Some(RollingUpdateDeployment {
                            max_surge: Some(IntOrString::Int(1)),
                            max_unavailable: Some(IntOrString::String("110%".into())),
                        }),
                    })
                },
                vec![("spec.strategy.rollingUpdate.maxUnavailable", Invalid)],
            ),
            (
                "recreate with rolling",
                |d| {
                    if let Some(s) = dspec(d).strategy.as_mut() {
                        s.type_ = Some("Recreate".into());
                    }
                },
                vec![("spec.strategy.rollingUpdate", Forbidden)],
            ),
            (
                "progress deadline",
                |d| dspec(d).min_ready_seconds = Some(700),
                vec![("spec.progressDeadlineSeconds", Invalid)],
            ),
            (
                "template container",
                |d| {
                    if let Some(s) = dspec(d).template.spec.as_mut() {
                        s.containers[0].image = None;
                    }
                },
                vec![("spec.template.spec.containers[0].image", Required)],
            ),
        ];
        for (name, mutate, want) in cases {
            let mut d = deployment();
            mutate(&mut d);
            let errs = validate_deployment(&d);
            let want: Vec<(String, ErrorKind)> =
                want.into_iter().map(|(f, k)| (f.to_string(), k)).collect();
            assert_eq!(kinds(&errs), want, "{name}: {errs:?}");
        }
    }

    #[test]
    fn deployment_messages() {
        let mut d = deployment();
        dspec(&mut d).selector.match_labels = Some(BTreeMap::from([("app".into(), "db".into())]));
        assert_eq!(
            validate_deployment(&d)[0].to_string(),
            "spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`"
        );
        let mut d = deployment();
        dspec(&mut d).strategy = Some(DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::Int(0)),
                max_unavailable: Some(IntOrString::Int(0)),
            }),
        });
        assert_eq!(
            validate_deployment(&d)[0].to_string(),
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"
        );
    }

    #[test]
    fn replica_sets() {
        let mut r = ReplicaSet {
            metadata: meta(),
            spec: Some(ReplicaSetSpec {
                selector: selector(),
                template: Some(template()),
                ..Default::default()
            }),
            status: None,
        };
        default_replica_set(&mut r);
        assert_eq!(r.spec.as_ref().and_then(|s| s.replicas), Some(1));
        assert_eq!(validate_replica_set(&r), vec![]);
        if let Some(s) = r.spec.as_mut() {
            s.replicas = Some(-2);
            s.selector.match_labels = Some(BTreeMap::from([("x".into(), "y".into())]));
        }
        assert_eq!(
            kinds(&validate_replica_set(&r)),
            vec![
                ("spec.replicas".to_string(), Invalid),
                ("spec.template.metadata.labels".to_string(), Invalid)
            ]
        );
        if let Some(t) = r
            .spec
            .as_mut()
            .and_then(|s| s.template.as_mut())
            .and_then(|t| t.spec.as_mut())
        {
            t.active_deadline_seconds = Some(5);
        }
        let errs = validate_replica_set(&r);
        assert!(errs.iter().any(|e| e.to_string() == "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported"));
    }

    #[test]
    fn daemon_sets() {
        let mut d = DaemonSet {
            metadata: meta(),
            spec: Some(DaemonSetSpec {
                selector: selector(),
                template: template(),
                ..Default::default()
            }),
            status: None,
        };
        default_daemon_set(&mut d);
        let s = d.spec.as_ref().unwrap_or_else(|| unreachable!());
        let ru = s
            .update_strategy
            .as_ref()
            .and_then(|u| u.rolling_update.as_ref())
            .unwrap_or_else(|| unreachable!());
        assert_eq!(ru.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(ru.max_surge, Some(IntOrString::Int(0)));
        assert_eq!(s.revision_history_limit, Some(10));
        assert_eq!(validate_daemon_set(&d), vec![]);

        let mut bad = d.clone();
        if let Some(ru) = bad
            .spec
            .as_mut()
            .and_then(|s| s.update_strategy.as_mut())
            .and_then(|u| u.rolling_update.as_mut())
        {
            ru.max_unavailable = Some(IntOrString::Int(0));
        }
        assert_eq!(
            kinds(&validate_daemon_set(&bad)),
            vec![(
                "spec.updateStrategy.rollingUpdate.maxUnavailable".to_string(),
                Required
            )]
        );

        let mut mismatch = d.clone();
        if let Some(s) = mismatch.spec.as_mut() {
            s.selector = LabelSelector::default();
        }
        assert_eq!(
            kinds(&validate_daemon_set(&mismatch)),
            vec![("spec.template.metadata.labels".to_string(), Invalid)]
        );
    }
}
