//! Server-side printing: turns stored objects into a `meta.k8s.io/v1` `Table`.
//!
//! kubectl asks for `application/json;as=Table;v=v1;g=meta.k8s.io` on `get` (and on `get -w`,
//! where every watch event carries a one-row Table) and prints whatever columns the server
//! returns. The columns and cell values here follow upstream's built-in printers
//! (`pkg/printers/internalversion`), working directly on the stored JSON so that an object
//! with unexpected content still prints instead of failing the request.
//!
//! Column descriptions are taken from the field documentation that k8s-openapi carries in its
//! schemars schemas, the same source upstream uses (`SwaggerDoc()`).

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::coordination::v1 as coordination;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde_json::{Map, Value, json};

/// What each row's `object` field carries (the `includeObject` query parameter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object at all.
    None,
    /// A `PartialObjectMetadata` holding the object's metadata (the default).
    #[default]
    Metadata,
    /// The full stored object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` parameter; absent or empty means `Metadata`.
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        match s.unwrap_or("") {
            "" | "Metadata" => Ok(Self::Metadata),
            "None" => Ok(Self::None),
            "Object" => Ok(Self::Object),
            other => Err(format!(
                "includeObject: Unsupported value: \"{other}\": supported values: \"Metadata\", \"None\", \"Object\""
            )),
        }
    }
}

/// Builds a Table for objects of one resource (plural name + group, e.g. `("", "pods")`).
///
/// `objects` are the stored JSON objects, `include_object` decides what each row's `object`
/// holds, `list_meta` becomes the Table's `metadata` (resourceVersion, continue, ...), and `now`
/// is the server time that AGE-like columns are measured against.
pub fn table(
    group: &str,
    plural: &str,
    objects: &[&Value],
    include_object: IncludeObject,
    list_meta: Value,
    now: SystemTime,
) -> Value {
    let printer = Printer::for_resource(group, plural);
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let printed = printer.print(obj, now);
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(printed.cells));
            if let Some(conditions) = printed.conditions {
                row.insert("conditions".into(), conditions);
            }
            match include_object {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row.insert(
                        "object".into(),
                        json!({
                            "kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
                        }),
                    );
                }
                IncludeObject::Object => {
                    row.insert("object".into(), (*obj).clone());
                }
            }
            Value::Object(row)
        })
        .collect();
    let metadata = match list_meta {
        Value::Object(m) => Value::Object(m),
        _ => json!({}),
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": printer.columns().to_vec(),
        "rows": rows,
    })
}

/// Drops a Table's column definitions, as upstream does for every watch event after the
/// first (`columnDefinitions` is then `null`; kubectl reuses the columns it already has).
pub fn omit_column_definitions(table: &mut Value) {
    if let Some(t) = table.as_object_mut() {
        t.insert("columnDefinitions".into(), Value::Null);
    }
}

/// Formats an elapsed time the way upstream's `duration.HumanDuration` does ("45s", "5m2s",
/// "3h4m", "2d3h", "15d", "2y3d"...).
///
/// `seconds` is the elapsed time truncated toward zero; a value below -1 (a clock more than a
/// second ahead) prints as `<invalid>`, small negative skews as `0s`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

// ---------------------------------------------------------------------------------------------
// Printers and their columns
// ---------------------------------------------------------------------------------------------

/// The built-in printers, keyed by resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Printer {
    Pod,
    Node,
    Service,
    Deployment,
    ReplicaSet,
    DaemonSet,
    StatefulSet,
    Event,
    EventsV1,
    Namespace,
    Endpoints,
    ConfigMap,
    Secret,
    ServiceAccount,
    Lease,
    EndpointSlice,
    Default,
}

/// One printed row: its cells and, for finished pods, row conditions.
struct Printed {
    cells: Vec<Value>,
    conditions: Option<Value>,
}

impl Printed {
    fn cells(cells: Vec<Value>) -> Self {
        Self {
            cells,
            conditions: None,
        }
    }
}

const ALL_PRINTERS: [Printer; 17] = [
    Printer::Pod,
    Printer::Node,
    Printer::Service,
    Printer::Deployment,
    Printer::ReplicaSet,
    Printer::DaemonSet,
    Printer::StatefulSet,
    Printer::Event,
    Printer::EventsV1,
    Printer::Namespace,
    Printer::Endpoints,
    Printer::ConfigMap,
    Printer::Secret,
    Printer::ServiceAccount,
    Printer::Lease,
    Printer::EndpointSlice,
    Printer::Default,
];

impl Printer {
    fn for_resource(group: &str, plural: &str) -> Self {
        match (group, plural) {
            ("", "pods") => Self::Pod,
            ("", "nodes") => Self::Node,
            ("", "services") => Self::Service,
            ("apps", "deployments") => Self::Deployment,
            ("apps", "replicasets") => Self::ReplicaSet,
            ("apps", "daemonsets") => Self::DaemonSet,
            ("apps", "statefulsets") => Self::StatefulSet,
            ("", "events") => Self::Event,
            ("events.k8s.io", "events") => Self::EventsV1,
            ("", "namespaces") => Self::Namespace,
            ("", "endpoints") => Self::Endpoints,
            ("", "configmaps") => Self::ConfigMap,
            ("", "secrets") => Self::Secret,
            ("", "serviceaccounts") => Self::ServiceAccount,
            ("coordination.k8s.io", "leases") => Self::Lease,
            ("discovery.k8s.io", "endpointslices") => Self::EndpointSlice,
            _ => Self::Default,
        }
    }

    /// The column definitions, built once (descriptions come from generated schemas).
    fn columns(self) -> &'static [Value] {
        static COLUMNS: OnceLock<HashMap<Printer, Vec<Value>>> = OnceLock::new();
        COLUMNS
            .get_or_init(|| {
                let mut docs = Docs::default();
                ALL_PRINTERS
                    .iter()
                    .map(|p| (*p, p.build_columns(&mut docs)))
                    .collect()
            })
            .get(&self)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    fn build_columns(self, d: &mut Docs) -> Vec<Value> {
        let name = col(
            "Name",
            "string",
            "name",
            d.of::<meta::ObjectMeta>("name"),
            0,
        );
        let age_doc = d.of::<meta::ObjectMeta>("creationTimestamp");
        let age = || col("Age", "string", "", age_doc.clone(), 0);
        let containers = || {
            col(
                "Containers",
                "string",
                "",
                "Names of each container in the template.".into(),
                1,
            )
        };
        let images = || {
            col(
                "Images",
                "string",
                "",
                "Images referenced by each container in the template.".into(),
                1,
            )
        };
        match self {
            Self::Pod => vec![
                name,
                col("Ready", "string", "", "The aggregate readiness state of this pod for accepting traffic.".into(), 0),
                col("Status", "string", "", "The aggregate status of the containers in this pod.".into(), 0),
                col("Restarts", "string", "", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.".into(), 0),
                age(),
                col("IP", "string", "", d.of::<core::PodStatus>("podIP"), 1),
                col("Node", "string", "", d.of::<core::PodSpec>("nodeName"), 1),
                col("Nominated Node", "string", "", d.of::<core::PodStatus>("nominatedNodeName"), 1),
                col("Readiness Gates", "string", "", d.of::<core::PodSpec>("readinessGates"), 1),
            ],
            Self::Node => vec![
                name,
                col("Status", "string", "", "The status of the node".into(), 0),
                col("Roles", "string", "", "The roles of the node".into(), 0),
                age(),
                col("Version", "string", "", d.of::<core::NodeSystemInfo>("kubeletVersion"), 0),
                col("Internal-IP", "string", "", d.of::<core::NodeStatus>("addresses"), 1),
                col("External-IP", "string", "", d.of::<core::NodeStatus>("addresses"), 1),
                col("OS-Image", "string", "", d.of::<core::NodeSystemInfo>("osImage"), 1),
                col("Kernel-Version", "string", "", d.of::<core::NodeSystemInfo>("kernelVersion"), 1),
                col("Container-Runtime", "string", "", d.of::<core::NodeSystemInfo>("containerRuntimeVersion"), 1),
            ],
            Self::Service => vec![
                name,
                col("Type", "string", "", d.of::<core::ServiceSpec>("type"), 0),
                col("Cluster-IP", "string", "", d.of::<core::ServiceSpec>("clusterIP"), 0),
                col("External-IP", "string", "", d.of::<core::ServiceSpec>("externalIPs"), 0),
                col("Port(s)", "string", "", d.of::<core::ServiceSpec>("ports"), 0),
                age(),
                col("Selector", "string", "", d.of::<core::ServiceSpec>("selector"), 1),
            ],
            Self::Deployment => vec![
                name,
                col("Ready", "string", "", "Number of the pod with ready state".into(), 0),
                col("Up-to-date", "string", "", d.of::<apps::DeploymentStatus>("updatedReplicas"), 0),
                col("Available", "string", "", d.of::<apps::DeploymentStatus>("availableReplicas"), 0),
                age(),
                containers(),
                images(),
                col("Selector", "string", "", d.of::<apps::DeploymentSpec>("selector"), 1),
            ],
            Self::ReplicaSet => vec![
                name,
                col("Desired", "integer", "", d.of::<apps::ReplicaSetSpec>("replicas"), 0),
                col("Current", "integer", "", d.of::<apps::ReplicaSetStatus>("replicas"), 0),
                col("Ready", "integer", "", d.of::<apps::ReplicaSetStatus>("readyReplicas"), 0),
                age(),
                containers(),
                images(),
                col("Selector", "string", "", d.of::<apps::ReplicaSetSpec>("selector"), 1),
            ],
            Self::DaemonSet => vec![
                name,
                col("Desired", "integer", "", d.of::<apps::DaemonSetStatus>("desiredNumberScheduled"), 0),
                col("Current", "integer", "", d.of::<apps::DaemonSetStatus>("currentNumberScheduled"), 0),
                col("Ready", "integer", "", d.of::<apps::DaemonSetStatus>("numberReady"), 0),
                col("Up-to-date", "integer", "", d.of::<apps::DaemonSetStatus>("updatedNumberScheduled"), 0),
                col("Available", "integer", "", d.of::<apps::DaemonSetStatus>("numberAvailable"), 0),
                col("Node Selector", "string", "", d.of::<core::PodSpec>("nodeSelector"), 0),
                age(),
                containers(),
                images(),
                col("Selector", "string", "", d.of::<apps::DaemonSetSpec>("selector"), 1),
            ],
            Self::StatefulSet => vec![
                name,
                col("Ready", "string", "", "Number of the pod with ready state".into(), 0),
                age(),
                containers(),
                images(),
            ],
            Self::Event | Self::EventsV1 => vec![
                col("Last Seen", "string", "", d.of::<core::Event>("lastTimestamp"), 0),
                col("Type", "string", "", d.of::<core::Event>("type"), 0),
                col("Reason", "string", "", d.of::<core::Event>("reason"), 0),
                col("Object", "string", "", d.of::<core::Event>("involvedObject"), 0),
                col("Subobject", "string", "", d.of::<core::ObjectReference>("fieldPath"), 1),
                col("Source", "string", "", d.of::<core::Event>("source"), 1),
                col("Message", "string", "", d.of::<core::Event>("message"), 0),
                col("First Seen", "string", "", d.of::<core::Event>("firstTimestamp"), 1),
                col("Count", "string", "", d.of::<core::Event>("count"), 1),
                col("Name", "string", "name", d.of::<meta::ObjectMeta>("name"), 1),
            ],
            Self::Namespace => vec![
                name,
                col("Status", "string", "", "The status of the namespace".into(), 0),
                age(),
            ],
            Self::Endpoints => vec![
                name,
                col("Endpoints", "string", "", d.of::<core::Endpoints>("subsets"), 0),
                age(),
            ],
            Self::ConfigMap => vec![
                name,
                col("Data", "string", "", d.of::<core::ConfigMap>("data"), 0),
                age(),
            ],
            Self::Secret => vec![
                name,
                col("Type", "string", "", d.of::<core::Secret>("type"), 0),
                col("Data", "string", "", d.of::<core::Secret>("data"), 0),
                age(),
            ],
            Self::ServiceAccount => vec![
                name,
                col("Secrets", "string", "", d.of::<core::ServiceAccount>("secrets"), 0),
                age(),
            ],
            Self::Lease => vec![
                name,
                col("Holder", "string", "", d.of::<coordination::LeaseSpec>("holderIdentity"), 0),
                age(),
            ],
            Self::EndpointSlice => vec![
                name,
                col("AddressType", "string", "", d.of::<discovery::EndpointSlice>("addressType"), 0),
                col("Ports", "string", "", d.of::<discovery::EndpointSlice>("ports"), 0),
                col("Endpoints", "string", "", d.of::<discovery::EndpointSlice>("endpoints"), 0),
                age(),
            ],
            Self::Default => vec![name, age()],
        }
    }

    fn print(self, obj: &Value, now: SystemTime) -> Printed {
        let name = Value::from(text(obj, &["metadata", "name"]));
        let age = Value::from(since(obj.pointer("/metadata/creationTimestamp"), now));
        match self {
            Self::Pod => print_pod(obj, now),
            Self::Node => print_node(obj, name, age),
            Self::Service => print_service(obj, name, age),
            Self::Deployment => {
                let desired = replicas(obj);
                let (names, imgs) = container_cells(obj.pointer("/spec/template/spec/containers"));
                let selector = match selector_string(obj.pointer("/spec/selector")) {
                    Ok(s) => s,
                    Err(()) => "<invalid>".to_owned(),
                };
                Printed::cells(vec![
                    name,
                    format!("{}/{desired}", int(obj, &["status", "readyReplicas"])).into(),
                    int(obj, &["status", "updatedReplicas"]).into(),
                    int(obj, &["status", "availableReplicas"]).into(),
                    age,
                    names.into(),
                    imgs.into(),
                    selector.into(),
                ])
            }
            Self::ReplicaSet => {
                let (names, imgs) = container_cells(obj.pointer("/spec/template/spec/containers"));
                Printed::cells(vec![
                    name,
                    replicas(obj).into(),
                    int(obj, &["status", "replicas"]).into(),
                    int(obj, &["status", "readyReplicas"]).into(),
                    age,
                    names.into(),
                    imgs.into(),
                    format_label_selector(obj.pointer("/spec/selector")).into(),
                ])
            }
            Self::DaemonSet => {
                let (names, imgs) = container_cells(obj.pointer("/spec/template/spec/containers"));
                Printed::cells(vec![
                    name,
                    int(obj, &["status", "desiredNumberScheduled"]).into(),
                    int(obj, &["status", "currentNumberScheduled"]).into(),
                    int(obj, &["status", "numberReady"]).into(),
                    int(obj, &["status", "updatedNumberScheduled"]).into(),
                    int(obj, &["status", "numberAvailable"]).into(),
                    format_labels(obj.pointer("/spec/template/spec/nodeSelector")).into(),
                    age,
                    names.into(),
                    imgs.into(),
                    format_label_selector(obj.pointer("/spec/selector")).into(),
                ])
            }
            Self::StatefulSet => {
                let (names, imgs) = container_cells(obj.pointer("/spec/template/spec/containers"));
                Printed::cells(vec![
                    name,
                    format!(
                        "{}/{}",
                        int(obj, &["status", "readyReplicas"]),
                        replicas(obj)
                    )
                    .into(),
                    age,
                    names.into(),
                    imgs.into(),
                ])
            }
            Self::Event => print_event(obj, now),
            Self::EventsV1 => print_event(&events_v1_as_core(obj), now),
            Self::Namespace => {
                Printed::cells(vec![name, text(obj, &["status", "phase"]).into(), age])
            }
            Self::Endpoints => Printed::cells(vec![name, format_endpoints(obj).into(), age]),
            Self::ConfigMap => Printed::cells(vec![
                name,
                (len_of(obj, "data") + len_of(obj, "binaryData")).into(),
                age,
            ]),
            Self::Secret => {
                let ty = match text(obj, &["type"]) {
                    "" => "Opaque",
                    t => t,
                };
                Printed::cells(vec![name, ty.into(), len_of(obj, "data").into(), age])
            }
            Self::ServiceAccount => Printed::cells(vec![name, len_of(obj, "secrets").into(), age]),
            Self::Lease => Printed::cells(vec![
                name,
                text(obj, &["spec", "holderIdentity"]).into(),
                age,
            ]),
            Self::EndpointSlice => Printed::cells(vec![
                name,
                text(obj, &["addressType"]).into(),
                format_slice_ports(items(obj.get("ports"))).into(),
                format_slice_endpoints(items(obj.get("endpoints"))).into(),
                age,
            ]),
            Self::Default => Printed::cells(vec![name, age]),
        }
    }
}

/// One column definition; every field is always present, as upstream serializes them.
fn col(name: &str, ty: &str, format: &str, description: String, priority: i32) -> Value {
    json!({
        "name": name,
        "type": ty,
        "format": format,
        "description": description,
        "priority": priority,
    })
}

/// Field documentation looked up in the schemars schemas of k8s-openapi types.
#[derive(Default)]
struct Docs {
    by_type: HashMap<String, Value>,
}

impl Docs {
    fn of<T: JsonSchema>(&mut self, field: &str) -> String {
        let schema = self
            .by_type
            .entry(T::schema_name().into_owned())
            .or_insert_with(|| {
                let mut generator = schemars::SchemaGenerator::default();
                T::json_schema(&mut generator).to_value()
            });
        schema
            .get("properties")
            .and_then(|p| p.get(field))
            .and_then(|f| f.get("description"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Individual printers
// ---------------------------------------------------------------------------------------------

/// Reason string used by the node lifecycle controller for pods on an unreachable node.
const NODE_UNREACHABLE_POD_REASON: &str = "NodeLost";

fn print_pod(pod: &Value, now: SystemTime) -> Printed {
    let init_specs = items(pod.pointer("/spec/initContainers"));
    let restartable: BTreeSet<&str> = init_specs
        .iter()
        .filter(|c| text(c, &["restartPolicy"]) == "Always")
        .map(|c| text(c, &["name"]))
        .collect();

    let mut restarts: i64 = 0;
    let mut restartable_restarts: i64 = 0;
    let total = items(pod.pointer("/spec/containers")).len() + restartable.len();
    let mut ready: usize = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_restart: Option<Timestamp> = None;

    let phase = text(pod, &["status", "phase"]);
    let mut reason = match text(pod, &["status", "reason"]) {
        "" => phase.to_owned(),
        r => r.to_owned(),
    };
    let pod_conditions = items(pod.pointer("/status/conditions"));
    for c in pod_conditions {
        if text(c, &["type"]) == "PodScheduled" && text(c, &["reason"]) == "SchedulingGated" {
            reason = "SchedulingGated".to_owned();
        }
    }

    let conditions = match phase {
        "Succeeded" => Some(json!([{
            "type": "Completed", "status": "True", "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }])),
        "Failed" => Some(json!([{
            "type": "Completed", "status": "True", "reason": "Failed",
            "message": "The pod failed.",
        }])),
        _ => None,
    };

    let mut initializing = false;
    for (i, status) in items(pod.pointer("/status/initContainerStatuses"))
        .iter()
        .enumerate()
    {
        let count = int(status, &["restartCount"]);
        let finished = status
            .pointer("/lastState/terminated/finishedAt")
            .and_then(parse_time);
        restarts += count;
        later(&mut last_restart, finished);
        let is_restartable = restartable.contains(text(status, &["name"]));
        if is_restartable {
            restartable_restarts += count;
            later(&mut last_restartable_restart, finished);
        }
        let terminated = status.pointer("/state/terminated");
        let waiting_reason = text(status, &["state", "waiting", "reason"]);
        if let Some(t) = terminated
            && int(t, &["exitCode"]) == 0
        {
            continue;
        }
        if is_restartable && status.get("started").and_then(Value::as_bool) == Some(true) {
            if flag(status, "ready") {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            reason = match text(t, &["reason"]) {
                "" if int(t, &["signal"]) != 0 => format!("Init:Signal:{}", int(t, &["signal"])),
                "" => format!("Init:ExitCode:{}", int(t, &["exitCode"])),
                r => format!("Init:{r}"),
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    let initialized = pod_conditions
        .iter()
        .any(|c| text(c, &["type"]) == "Initialized" && text(c, &["status"]) == "True");
    if !initializing || initialized {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for status in items(pod.pointer("/status/containerStatuses")).iter().rev() {
            restarts += int(status, &["restartCount"]);
            later(
                &mut last_restart,
                status
                    .pointer("/lastState/terminated/finishedAt")
                    .and_then(parse_time),
            );
            let waiting_reason = text(status, &["state", "waiting", "reason"]);
            let terminated = status.pointer("/state/terminated");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_owned();
            } else if let Some(t) = terminated {
                reason = match text(t, &["reason"]) {
                    "" if int(t, &["signal"]) != 0 => format!("Signal:{}", int(t, &["signal"])),
                    "" => format!("ExitCode:{}", int(t, &["exitCode"])),
                    r => r.to_owned(),
                };
            } else if flag(status, "ready") && status.pointer("/state/running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = pod_conditions
                .iter()
                .any(|c| text(c, &["type"]) == "Ready" && text(c, &["status"]) == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_owned();
        }
    }

    let deleting = is_set(pod.pointer("/metadata/deletionTimestamp"));
    if deleting && text(pod, &["status", "reason"]) == NODE_UNREACHABLE_POD_REASON {
        reason = "Unknown".to_owned();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_owned();
    }

    let restarts_cell = match last_restart {
        Some(at) if restarts != 0 => format!("{restarts} ({} ago)", since_ts(at, now)),
        _ => restarts.to_string(),
    };

    let pod_ip = items(pod.pointer("/status/podIPs"))
        .first()
        .map(|p| text(p, &["ip"]))
        .unwrap_or_default();
    let readiness_gates = items(pod.pointer("/spec/readinessGates"));
    let gates = if readiness_gates.is_empty() {
        "<none>".to_owned()
    } else {
        let satisfied = readiness_gates
            .iter()
            .filter(|gate| {
                let wanted = text(gate, &["conditionType"]);
                pod_conditions
                    .iter()
                    .find(|c| text(c, &["type"]) == wanted)
                    .is_some_and(|c| text(c, &["status"]) == "True")
            })
            .count();
        format!("{satisfied}/{}", readiness_gates.len())
    };

    Printed {
        cells: vec![
            text(pod, &["metadata", "name"]).into(),
            format!("{ready}/{total}").into(),
            reason.into(),
            restarts_cell.into(),
            since(pod.pointer("/metadata/creationTimestamp"), now).into(),
            or_none(pod_ip).into(),
            or_none(text(pod, &["spec", "nodeName"])).into(),
            or_none(text(pod, &["status", "nominatedNodeName"])).into(),
            gates.into(),
        ],
        conditions,
    }
}

fn print_node(node: &Value, name: Value, age: Value) -> Printed {
    let mut status: Vec<String> = Vec::new();
    // Upstream only reports the Ready condition; the last entry of a type wins.
    if let Some(cond) = items(node.pointer("/status/conditions"))
        .iter()
        .rev()
        .find(|c| text(c, &["type"]) == "Ready")
    {
        if text(cond, &["status"]) == "True" {
            status.push("Ready".to_owned());
        } else {
            status.push("NotReady".to_owned());
        }
    }
    if status.is_empty() {
        status.push("Unknown".to_owned());
    }
    if flag_at(node, "/spec/unschedulable") {
        status.push("SchedulingDisabled".to_owned());
    }

    let mut roles = BTreeSet::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_owned());
                }
            } else if key == "kubernetes.io/role"
                && let Some(v) = value.as_str()
                && !v.is_empty()
            {
                roles.insert(v.to_owned());
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_owned()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };

    let address = |kind: &str| -> String {
        items(node.pointer("/status/addresses"))
            .iter()
            .find(|a| text(a, &["type"]) == kind)
            .map(|a| text(a, &["address"]).to_owned())
            .unwrap_or_else(|| "<none>".to_owned())
    };
    let info = |field: &str| -> String {
        match text(node, &["status", "nodeInfo", field]) {
            "" => "<unknown>".to_owned(),
            v => v.to_owned(),
        }
    };
    Printed::cells(vec![
        name,
        status.join(",").into(),
        roles.into(),
        age,
        text(node, &["status", "nodeInfo", "kubeletVersion"]).into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        info("osImage").into(),
        info("kernelVersion").into(),
        info("containerRuntimeVersion").into(),
    ])
}

fn print_service(svc: &Value, name: Value, age: Value) -> Printed {
    let svc_type = match text(svc, &["spec", "type"]) {
        "" => "ClusterIP",
        t => t,
    };
    let cluster_ip = items(svc.pointer("/spec/clusterIPs"))
        .first()
        .and_then(Value::as_str)
        .or_else(|| svc.pointer("/spec/clusterIP").and_then(Value::as_str))
        .filter(|ip| !ip.is_empty())
        .unwrap_or("<none>");
    let external_ips: Vec<&str> = strings(svc.pointer("/spec/externalIPs"));
    let external = match svc_type {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_owned()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let mut lb: Vec<&str> = Vec::new();
            for ingress in items(svc.pointer("/status/loadBalancer/ingress")) {
                let entry = match (text(ingress, &["ip"]), text(ingress, &["hostname"])) {
                    ("", "") => continue,
                    ("", host) => host,
                    (ip, _) => ip,
                };
                if !lb.contains(&entry) {
                    lb.push(entry);
                }
            }
            if !external_ips.is_empty() {
                lb.extend(external_ips.iter().copied());
                lb.join(",")
            } else if !lb.is_empty() {
                lb.join(",")
            } else {
                "<pending>".to_owned()
            }
        }
        "ExternalName" => text(svc, &["spec", "externalName"]).to_owned(),
        _ => "<unknown>".to_owned(),
    };
    let ports: Vec<String> = items(svc.pointer("/spec/ports"))
        .iter()
        .map(|p| {
            let protocol = match text(p, &["protocol"]) {
                "" => "TCP",
                proto => proto,
            };
            let node_port = int(p, &["nodePort"]);
            if node_port > 0 {
                format!("{}:{node_port}/{protocol}", int(p, &["port"]))
            } else {
                format!("{}/{protocol}", int(p, &["port"]))
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_owned()
    } else {
        ports.join(",")
    };
    Printed::cells(vec![
        name,
        svc_type.into(),
        cluster_ip.into(),
        external.into(),
        ports.into(),
        age,
        format_labels(svc.pointer("/spec/selector")).into(),
    ])
}

fn print_event(ev: &Value, now: SystemTime) -> Printed {
    let first = if is_set(ev.get("firstTimestamp")) {
        since(ev.get("firstTimestamp"), now)
    } else {
        since(ev.get("eventTime"), now)
    };
    let mut last = if is_set(ev.get("lastTimestamp")) {
        since(ev.get("lastTimestamp"), now)
    } else {
        first.clone()
    };
    let mut count = int(ev, &["count"]);
    if let Some(series) = ev.get("series").filter(|s| s.is_object()) {
        last = since(series.get("lastObservedTime"), now);
        count = int(series, &["count"]);
    } else if count == 0 {
        count = 1;
    }
    let kind = text(ev, &["involvedObject", "kind"]).to_lowercase();
    let target = match text(ev, &["involvedObject", "name"]) {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let component = first_non_empty(
        text(ev, &["source", "component"]),
        text(ev, &["reportingComponent"]),
    );
    let instance = first_non_empty(
        text(ev, &["source", "host"]),
        text(ev, &["reportingInstance"]),
    );
    let source = if instance.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {instance}")
    };
    Printed::cells(vec![
        last.into(),
        text(ev, &["type"]).into(),
        text(ev, &["reason"]).into(),
        target.into(),
        text(ev, &["involvedObject", "fieldPath"]).into(),
        source.into(),
        text(ev, &["message"]).trim().into(),
        first.into(),
        count.into(),
        text(ev, &["metadata", "name"]).into(),
    ])
}

/// Maps an `events.k8s.io/v1` Event onto the core/v1 field names the printer reads (both are
/// the same internal type upstream).
fn events_v1_as_core(ev: &Value) -> Value {
    let pick = |k: &str| ev.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "metadata": pick("metadata"),
        "involvedObject": pick("regarding"),
        "reason": pick("reason"),
        "message": pick("note"),
        "type": pick("type"),
        "source": pick("deprecatedSource"),
        "firstTimestamp": pick("deprecatedFirstTimestamp"),
        "lastTimestamp": pick("deprecatedLastTimestamp"),
        "count": pick("deprecatedCount"),
        "eventTime": pick("eventTime"),
        "series": pick("series"),
        "reportingComponent": pick("reportingController"),
        "reportingInstance": pick("reportingInstance"),
    })
}

/// `Endpoints` summary: up to three `ip:port` entries, then "+ N more...".
fn format_endpoints(ep: &Value) -> String {
    let subsets = items(ep.get("subsets"));
    if subsets.is_empty() {
        return "<none>".to_owned();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = items(ss.get("addresses"));
        let ports = items(ss.get("ports"));
        if ports.is_empty() {
            // Headless services may have no ports at all.
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(text(a, &["ip"]).to_owned());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(text(a, &["ip"]), int(port, &["port"])));
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count.saturating_sub(MAX))
    } else {
        joined
    }
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn format_slice_ports(ports: &[Value]) -> String {
    const MAX: usize = 3;
    let mut list = Vec::new();
    let mut more = false;
    for port in ports {
        if list.len() < MAX {
            let shown = match (port.get("port").and_then(Value::as_i64), port.get("name")) {
                (Some(n), _) => n.to_string(),
                (None, Some(Value::String(name))) => name.clone(),
                _ => "*".to_owned(),
            };
            list.push(shown);
        } else if list.len() == MAX {
            more = true;
        }
    }
    list_with_more(&list, more, ports.len(), MAX)
}

fn format_slice_endpoints(endpoints: &[Value]) -> String {
    const MAX: usize = 3;
    let mut list = Vec::new();
    let mut more = false;
    let mut count = 0;
    for ep in endpoints {
        for address in strings(ep.get("addresses")) {
            if list.len() < MAX {
                list.push(address.to_owned());
            } else if list.len() == MAX {
                more = true;
            }
            count += 1;
        }
    }
    list_with_more(&list, more, count, MAX)
}

fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count.saturating_sub(max))
    } else if joined.is_empty() {
        "<unset>".to_owned()
    } else {
        joined
    }
}

/// Container names and images of a pod template, each comma-joined.
fn container_cells(containers: Option<&Value>) -> (String, String) {
    let list = items(containers);
    let names: Vec<&str> = list.iter().map(|c| text(c, &["name"])).collect();
    let images: Vec<&str> = list.iter().map(|c| text(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// A label map as a selector string (`a=b,c=d`, keys sorted), or `<none>`.
fn format_labels(labels: Option<&Value>) -> String {
    let mut pairs: Vec<(&str, &str)> = labels
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        return "<none>".to_owned();
    }
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A `LabelSelector` rendered as upstream's `FormatLabelSelector`: `<none>` when it selects
/// everything (or nothing), `<error>` when it is malformed.
fn format_label_selector(selector: Option<&Value>) -> String {
    match selector_string(selector) {
        Ok(s) if s.is_empty() => "<none>".to_owned(),
        Ok(s) => s,
        Err(()) => "<error>".to_owned(),
    }
}

/// Converts a `LabelSelector` into selector syntax (requirements sorted by key, set values
/// sorted), failing on operators or value lists that upstream rejects.
fn selector_string(selector: Option<&Value>) -> Result<String, ()> {
    let Some(sel) = selector.filter(|s| s.is_object()) else {
        return Ok(String::new());
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
        }
    }
    for expr in items(sel.get("matchExpressions")) {
        let key = text(expr, &["key"]);
        let mut values = strings(expr.get("values"));
        let rendered = match text(expr, &["operator"]) {
            op @ ("In" | "NotIn") => {
                if values.is_empty() {
                    return Err(());
                }
                values.sort_unstable();
                let word = if op == "In" { "in" } else { "notin" };
                format!("{key} {word} ({})", values.join(","))
            }
            "Exists" if values.is_empty() => key.to_owned(),
            "DoesNotExist" if values.is_empty() => format!("!{key}"),
            _ => return Err(()),
        };
        reqs.push((key.to_owned(), rendered));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(","))
}

// ---------------------------------------------------------------------------------------------
// JSON and time helpers
// ---------------------------------------------------------------------------------------------

/// The string at `path`, or "" when absent or not a string.
fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for key in path {
        match cur.get(key) {
            Some(next) => cur = next,
            None => return "",
        }
    }
    cur.as_str().unwrap_or_default()
}

/// The integer at `path`, or 0.
fn int(v: &Value, path: &[&str]) -> i64 {
    let mut cur = v;
    for key in path {
        match cur.get(key) {
            Some(next) => cur = next,
            None => return 0,
        }
    }
    cur.as_i64().unwrap_or_default()
}

fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn flag_at(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer).and_then(Value::as_bool).unwrap_or(false)
}

/// The array at a value, or an empty slice.
fn items(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    items(v).iter().filter_map(Value::as_str).collect()
}

/// Number of entries of an object- or array-valued top-level field.
fn len_of(v: &Value, key: &str) -> usize {
    match v.get(key) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

/// `.spec.replicas`, defaulting to 1 as the API server's defaulting does.
fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn is_set(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::String(s)) if !s.is_empty())
}

fn or_none(s: &str) -> &str {
    if s.is_empty() { "<none>" } else { s }
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

fn parse_time(v: &Value) -> Option<Timestamp> {
    v.as_str().and_then(|s| s.parse::<Timestamp>().ok())
}

/// Keeps the later of two optional timestamps in `acc`.
fn later(acc: &mut Option<Timestamp>, candidate: Option<Timestamp>) {
    if let Some(c) = candidate
        && acc.is_none_or(|a| a < c)
    {
        *acc = Some(c);
    }
}

/// Age of a timestamp field; `<unknown>` when absent or unparsable.
fn since(v: Option<&Value>, now: SystemTime) -> String {
    match v.and_then(parse_time) {
        Some(t) => since_ts(t, now),
        None => "<unknown>".to_owned(),
    }
}

fn since_ts(t: Timestamp, now: SystemTime) -> String {
    human_duration(elapsed_seconds(t, now))
}

/// Whole seconds from `t` to `now`, truncated toward zero.
fn elapsed_seconds(t: Timestamp, now: SystemTime) -> i64 {
    let now_nanos: i128 = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    };
    let diff = now_nanos - t.as_nanosecond();
    i64::try_from(diff / 1_000_000_000).unwrap_or(if diff < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 2024-03-01T12:00:00Z
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_709_294_400)
    }

    fn cells(t: &Value, row: usize) -> Vec<Value> {
        t["rows"][row]["cells"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn column_names(t: &Value) -> Vec<(String, i64)> {
        t["columnDefinitions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().to_owned(),
                    c["priority"].as_i64().unwrap_or(-1),
                )
            })
            .collect()
    }

    fn one(group: &str, plural: &str, obj: Value) -> Value {
        table(
            group,
            plural,
            &[&obj],
            IncludeObject::Metadata,
            json!({}),
            now(),
        )
    }

    #[test]
    fn human_duration_matches_upstream_cases() {
        let cases: &[(i64, &str)] = &[
            (-5, "<invalid>"),
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (1, "1s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (302, "5m2s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 4 * 60, "3h4m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 59 * 60, "47h"),
            (48 * 3600, "2d"),
            (51 * 3600, "2d3h"),
            (8 * 86400 - 1, "7d23h"),
            (15 * 86400, "15d"),
            (2 * 365 * 86400 - 1, "729d"),
            (2 * 365 * 86400, "2y"),
            ((2 * 365 + 3) * 86400, "2y3d"),
            (8 * 365 * 86400, "8y"),
            (20 * 365 * 86400 + 50 * 86400, "20y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(*secs), *want, "seconds={secs}");
        }
    }

    #[test]
    fn elapsed_truncates_toward_zero() {
        let t: Timestamp = "2024-03-01T11:59:58.5Z".parse().expect("timestamp");
        assert_eq!(elapsed_seconds(t, now()), 1);
        let ahead: Timestamp = "2024-03-01T12:00:01.5Z".parse().expect("timestamp");
        assert_eq!(elapsed_seconds(ahead, now()), -1);
        assert_eq!(since_ts(ahead, now()), "0s");
    }

    #[test]
    fn include_object_parsing() {
        assert_eq!(IncludeObject::parse(None), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("")), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("None")), Ok(IncludeObject::None));
        assert_eq!(
            IncludeObject::parse(Some("Object")),
            Ok(IncludeObject::Object)
        );
        let err = IncludeObject::parse(Some("all")).expect_err("invalid");
        assert!(err.contains("Unsupported value: \"all\""), "{err}");
    }

    fn running_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": "2024-03-01T11:55:00Z",
                         "resourceVersion": "7"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "nginx"}, {"name": "side", "image": "busybox"}]},
            "status": {
                "phase": "Running",
                "podIP": "10.1.0.5",
                "podIPs": [{"ip": "10.1.0.5"}],
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2024-03-01T11:55:02Z"}}},
                    {"name": "side", "ready": false, "restartCount": 0, "state": {"running": {"startedAt": "2024-03-01T11:55:02Z"}}}
                ]
            }
        })
    }

    #[test]
    fn pod_running_row_and_table_shape() {
        let t = one("", "pods", running_pod());
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            column_names(&t),
            vec![
                ("Name".to_owned(), 0),
                ("Ready".to_owned(), 0),
                ("Status".to_owned(), 0),
                ("Restarts".to_owned(), 0),
                ("Age".to_owned(), 0),
                ("IP".to_owned(), 1),
                ("Node".to_owned(), 1),
                ("Nominated Node".to_owned(), 1),
                ("Readiness Gates".to_owned(), 1),
            ]
        );
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        let name_doc = t["columnDefinitions"][0]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(name_doc.contains("unique within a namespace"), "{name_doc}");
        assert_eq!(
            cells(&t, 0),
            vec![
                json!("web-1"),
                json!("1/2"),
                json!("Running"),
                json!("0"),
                json!("5m"),
                json!("10.1.0.5"),
                json!("node-a"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
        let obj = &t["rows"][0]["object"];
        assert_eq!(obj["kind"], "PartialObjectMetadata");
        assert_eq!(obj["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(obj["metadata"]["resourceVersion"], "7");
        assert!(t["rows"][0].get("conditions").is_none());
    }

    #[test]
    fn pod_crashloop_shows_waiting_reason_and_restart_age() {
        let pod = json!({
            "metadata": {"name": "crash", "creationTimestamp": "2024-03-01T10:00:00Z"},
            "spec": {"containers": [{"name": "app", "image": "x"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [{
                    "name": "app", "ready": false, "restartCount": 5,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2024-03-01T11:55:00Z"}}
                }]
            }
        });
        let t = one("", "pods", pod);
        let c = cells(&t, 0);
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "5 (5m ago)");
        assert_eq!(c[4], "120m");
        assert_eq!(c[5], "<none>");
    }

    #[test]
    fn pod_terminating_and_node_lost() {
        let mut pod = running_pod();
        pod["metadata"]["deletionTimestamp"] = json!("2024-03-01T11:59:00Z");
        assert_eq!(cells(&one("", "pods", pod.clone()), 0)[2], "Terminating");
        pod["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells(&one("", "pods", pod), 0)[2], "Unknown");
    }

    #[test]
    fn pod_completed_has_row_condition() {
        let pod = json!({
            "metadata": {"name": "job-x", "creationTimestamp": "2024-02-29T12:00:00Z"},
            "spec": {"containers": [{"name": "main", "image": "x"}]},
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [{
                    "name": "main", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}
                }]
            }
        });
        let t = one("", "pods", pod);
        let c = cells(&t, 0);
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "Completed");
        assert_eq!(c[4], "24h");
        assert_eq!(t["rows"][0]["conditions"][0]["type"], "Completed");
        assert_eq!(t["rows"][0]["conditions"][0]["reason"], "Succeeded");
    }

    #[test]
    fn pod_init_states() {
        let base = |init_status: Value| {
            json!({
                "metadata": {"name": "p", "creationTimestamp": "2024-03-01T12:00:00Z"},
                "spec": {"initContainers": [{"name": "init", "image": "x"}],
                         "containers": [{"name": "app", "image": "y"}]},
                "status": {"phase": "Pending", "initContainerStatuses": [init_status],
                           "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                                                  "state": {"waiting": {"reason": "PodInitializing"}}}]}
            })
        };
        let running = base(
            json!({"name": "init", "ready": false, "restartCount": 0, "state": {"running": {}}}),
        );
        assert_eq!(cells(&one("", "pods", running), 0)[2], "Init:0/1");
        let failed = base(json!({"name": "init", "restartCount": 2,
            "state": {"terminated": {"exitCode": 3}}}));
        let c = cells(&one("", "pods", failed), 0);
        assert_eq!(c[2], "Init:ExitCode:3");
        assert_eq!(c[3], "2");
        let backoff = base(json!({"name": "init", "restartCount": 1,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}));
        assert_eq!(
            cells(&one("", "pods", backoff), 0)[2],
            "Init:CrashLoopBackOff"
        );
    }

    #[test]
    fn pod_sidecar_counts_toward_ready() {
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": "2024-03-01T12:00:00Z"},
            "spec": {"initContainers": [{"name": "proxy", "image": "x", "restartPolicy": "Always"}],
                     "containers": [{"name": "app", "image": "y"}],
                     "readinessGates": [{"conditionType": "example.com/gate"}]},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Initialized", "status": "True"},
                                      {"type": "example.com/gate", "status": "True"}],
                       "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true, "restartCount": 1,
                                                  "state": {"running": {}}}],
                       "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                                              "state": {"running": {}}}]}
        });
        let c = cells(&one("", "pods", pod), 0);
        assert_eq!(c[1], "2/2");
        assert_eq!(c[2], "Running");
        assert_eq!(c[3], "1");
        assert_eq!(c[8], "1/1");
    }

    #[test]
    fn node_row() {
        let node = json!({
            "metadata": {"name": "node-a", "creationTimestamp": "2024-02-28T09:00:00Z",
                         "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/": "",
                                    "kubernetes.io/role": "worker"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "node-a"}, {"type": "InternalIP", "address": "192.0.2.10"}],
                "nodeInfo": {"kubeletVersion": "v1.35.0", "osImage": "Debian GNU/Linux 12", "kernelVersion": "6.1.0",
                             "containerRuntimeVersion": ""}
            }
        });
        let t = one("", "nodes", node);
        assert_eq!(
            cells(&t, 0),
            vec![
                json!("node-a"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,worker"),
                // 2024 is a leap year: Feb 28 09:00 -> Mar 1 12:00.
                json!("2d3h"),
                json!("v1.35.0"),
                json!("192.0.2.10"),
                json!("<none>"),
                json!("Debian GNU/Linux 12"),
                json!("6.1.0"),
                json!("<unknown>"),
            ]
        );
        let not_ready = json!({"metadata": {"name": "b"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        let c = cells(&one("", "nodes", not_ready), 0);
        assert_eq!(c[1], "NotReady");
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "<unknown>");
        let no_conditions = json!({"metadata": {"name": "c"}});
        assert_eq!(cells(&one("", "nodes", no_conditions), 0)[1], "Unknown");
    }

    #[test]
    fn nodeport_service_row() {
        let svc = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-03-01T11:00:00Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.12", "clusterIPs": ["10.96.0.12"],
                     "selector": {"tier": "front", "app": "web"},
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}
        });
        let t = one("", "services", svc);
        assert_eq!(
            cells(&t, 0),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.12"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP"),
                json!("60m"),
                json!("app=web,tier=front"),
            ]
        );
        let lb = json!({"metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.13"], "ports": []}});
        let c = cells(&one("", "services", lb), 0);
        assert_eq!(c[3], "<pending>");
        assert_eq!(c[4], "<none>");
        assert_eq!(c[6], "<none>");
    }

    #[test]
    fn deployment_row_with_wide_columns() {
        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-03-01T11:58:00Z"},
            "spec": {"replicas": 3,
                     "selector": {"matchLabels": {"app": "web"},
                                  "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]},
                                                       {"key": "canary", "operator": "DoesNotExist"}]},
                     "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"},
                                                          {"name": "log", "image": "fluent-bit"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        let t = one("apps", "deployments", d);
        assert_eq!(
            column_names(&t)
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            vec![
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(
            cells(&t, 0),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("2m"),
                json!("nginx,log"),
                json!("nginx:1.27,fluent-bit"),
                json!("app=web,!canary,env in (dev,prod)"),
            ]
        );
    }

    #[test]
    fn replicaset_and_daemonset_rows() {
        let rs = json!({"metadata": {"name": "web-abc"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1}});
        let c = cells(&one("apps", "replicasets", rs), 0);
        assert_eq!(
            c,
            vec![
                json!("web-abc"),
                json!(2),
                json!(2),
                json!(1),
                json!("<unknown>"),
                json!("c"),
                json!("i"),
                json!("app=web")
            ]
        );
        let ds = json!({"metadata": {"name": "agent"},
            "spec": {"selector": {"matchExpressions": [{"key": "x", "operator": "In", "values": []}]},
                     "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": []}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                       "updatedNumberScheduled": 3, "numberAvailable": 2}});
        let c = cells(&one("apps", "daemonsets", ds), 0);
        assert_eq!(c[1..6], [json!(3), json!(3), json!(2), json!(3), json!(2)]);
        assert_eq!(c[6], "kubernetes.io/os=linux");
        assert_eq!(c[10], "<error>");
    }

    #[test]
    fn event_row() {
        let ev = json!({
            "metadata": {"name": "web-1.17b", "creationTimestamp": "2024-03-01T11:00:00Z"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "type": "Normal", "message": "  Successfully pulled image\n",
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": "2024-03-01T11:00:00Z", "lastTimestamp": "2024-03-01T11:59:30Z", "count": 4
        });
        let t = one("", "events", ev);
        assert_eq!(
            column_names(&t),
            vec![
                ("Last Seen".to_owned(), 0),
                ("Type".to_owned(), 0),
                ("Reason".to_owned(), 0),
                ("Object".to_owned(), 0),
                ("Subobject".to_owned(), 1),
                ("Source".to_owned(), 1),
                ("Message".to_owned(), 0),
                ("First Seen".to_owned(), 1),
                ("Count".to_owned(), 1),
                ("Name".to_owned(), 1),
            ]
        );
        assert_eq!(
            cells(&t, 0),
            vec![
                json!("30s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web-1"),
                json!("spec.containers{app}"),
                json!("kubelet, node-a"),
                json!("Successfully pulled image"),
                json!("60m"),
                json!(4),
                json!("web-1.17b"),
            ]
        );
        // New-style events: eventTime only, singleton count, reporting controller as source.
        let ev = json!({
            "metadata": {"name": "e2"}, "involvedObject": {"kind": "Node"},
            "eventTime": "2024-03-01T11:59:00.123456Z", "reportingComponent": "scheduler",
            "reason": "R", "type": "Warning", "message": "m"
        });
        let c = cells(&one("", "events", ev), 0);
        // 59.88s truncates to 59s.
        assert_eq!(c[0], "59s");
        assert_eq!(c[3], "node");
        assert_eq!(c[5], "scheduler");
        assert_eq!(c[7], "59s");
        assert_eq!(c[8], 1);
    }

    #[test]
    fn events_v1_are_printed_like_core_events() {
        let ev = json!({
            "metadata": {"name": "e3"},
            "regarding": {"kind": "Deployment", "name": "web"},
            "note": "Scaled up", "reason": "ScalingReplicaSet", "type": "Normal",
            "eventTime": "2024-03-01T11:58:00.000000Z",
            "series": {"count": 3, "lastObservedTime": "2024-03-01T11:59:50.000000Z"},
            "reportingController": "deployment-controller", "reportingInstance": "cm-1"
        });
        let c = cells(&one("events.k8s.io", "events", ev), 0);
        assert_eq!(c[0], "10s");
        assert_eq!(c[3], "deployment/web");
        assert_eq!(c[5], "deployment-controller, cm-1");
        assert_eq!(c[6], "Scaled up");
        assert_eq!(c[8], 3);
    }

    #[test]
    fn small_resources() {
        let ns = json!({"metadata": {"name": "kube-system", "creationTimestamp": "2024-03-01T11:59:15Z"},
            "status": {"phase": "Active"}});
        assert_eq!(
            cells(&one("", "namespaces", ns), 0),
            vec![json!("kube-system"), json!("Active"), json!("45s")]
        );
        let cm = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cells(&one("", "configmaps", cm), 0)[1], 3);
        let secret = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
        assert_eq!(
            cells(&one("", "secrets", secret), 0)[1..3],
            [json!("kubernetes.io/tls"), json!(2)]
        );
        let sa = json!({"metadata": {"name": "default"}});
        assert_eq!(cells(&one("", "serviceaccounts", sa), 0)[1], 0);
        let lease = json!({"metadata": {"name": "kube-scheduler"}, "spec": {"holderIdentity": "host_1234"}});
        assert_eq!(
            cells(&one("coordination.k8s.io", "leases", lease), 0)[1],
            "host_1234"
        );
    }

    #[test]
    fn endpoints_formatting() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}],
             "ports": [{"port": 80}, {"port": 443}]}
        ]});
        assert_eq!(
            cells(&one("", "endpoints", ep), 0)[1],
            "10.0.0.1:80,10.0.0.2:80,[fd00::3]:80 + 3 more..."
        );
        let headless =
            json!({"metadata": {"name": "h"}, "subsets": [{"addresses": [{"ip": "10.0.0.9"}]}]});
        assert_eq!(cells(&one("", "endpoints", headless), 0)[1], "10.0.0.9");
        let empty = json!({"metadata": {"name": "e"}});
        assert_eq!(cells(&one("", "endpoints", empty), 0)[1], "<none>");
    }

    #[test]
    fn endpointslice_formatting() {
        let slice = json!({"metadata": {"name": "web-x"}, "addressType": "IPv4",
            "ports": [{"port": 80}, {"name": "metrics"}, {}, {"port": 9000}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]}]});
        let c = cells(&one("discovery.k8s.io", "endpointslices", slice), 0);
        assert_eq!(c[1], "IPv4");
        assert_eq!(c[2], "80,metrics,* + 1 more...");
        assert_eq!(c[3], "10.0.0.1,10.0.0.2,10.0.0.3");
        let bare = json!({"metadata": {"name": "b"}, "addressType": "IPv6"});
        let c = cells(&one("discovery.k8s.io", "endpointslices", bare), 0);
        assert_eq!(c[2], "<unset>");
        assert_eq!(c[3], "<unset>");
    }

    #[test]
    fn default_table_and_include_object_modes() {
        let obj = json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "creationTimestamp": "2024-03-01T11:59:00Z"}, "spec": {"size": 2}});
        let t = table(
            "example.com",
            "widgets",
            &[&obj],
            IncludeObject::Object,
            json!({"resourceVersion": "42", "continue": "abc"}),
            now(),
        );
        assert_eq!(
            column_names(&t),
            vec![("Name".to_owned(), 0), ("Age".to_owned(), 0)]
        );
        assert_eq!(cells(&t, 0), vec![json!("w"), json!("60s")]);
        assert_eq!(t["rows"][0]["object"], obj);
        assert_eq!(t["metadata"]["resourceVersion"], "42");
        assert_eq!(t["metadata"]["continue"], "abc");

        let t = table(
            "example.com",
            "widgets",
            &[&obj],
            IncludeObject::None,
            Value::Null,
            now(),
        );
        assert!(t["rows"][0].get("object").is_none());
        assert_eq!(t["metadata"], json!({}));

        let empty = table("", "pods", &[], IncludeObject::Metadata, json!({}), now());
        assert_eq!(empty["rows"], json!([]));
        assert_eq!(empty["columnDefinitions"].as_array().map(Vec::len), Some(9));
    }

    #[test]
    fn watch_events_after_the_first_omit_columns() {
        let mut t = one("", "pods", running_pod());
        omit_column_definitions(&mut t);
        assert_eq!(t["columnDefinitions"], Value::Null);
        assert_eq!(cells(&t, 0)[0], "web-1");
    }

    #[test]
    fn every_column_definition_has_all_fields() {
        for printer in ALL_PRINTERS {
            for c in printer.columns() {
                for key in ["name", "type", "format", "description", "priority"] {
                    assert!(c.get(key).is_some(), "{printer:?} column lacks {key}: {c}");
                }
            }
        }
        let pods = Printer::Pod.columns();
        assert!(
            pods[5]["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        );
    }
}
