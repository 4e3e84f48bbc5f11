//! Server-side strategic merge patch (`application/strategic-merge-patch+json`).
//!
//! This mirrors what kube-apiserver does for built-in types (apimachinery's `strategicpatch`
//! package, applied with "merge parallel lists" and "ignore unmatched nulls"): objects are merged
//! key by key, `null` deletes a key, and list fields are merged according to the `patchStrategy` /
//! `patchMergeKey` struct tags of the Go API types. Those tags are reproduced here as a static
//! schema table (taken from kubernetes/api v0.35 and apimachinery's `ObjectMeta`).
//!
//! Supported directives:
//! * `$patch: replace` / `$patch: delete` inside an object (replace it / empty it);
//! * `{"$patch": "delete", <mergeKey>: v}` and `{"$patch": "replace"}` elements of merge lists;
//! * `$retainKeys: [..]` (drop keys of the live object that are not listed);
//! * `$setElementOrder/<field>: [..]` (final order of a merge list);
//! * `$deleteFromPrimitiveList/<field>: [..]` (remove values from a list of scalars).
//!
//! Directives never appear in the result.
//!
//! Deliberate differences from upstream, all on malformed or unusual input: values that are new
//! (nothing to merge into) are cleaned of every directive and null instead of being passed through
//! to the typed decoder; a `$patch: replace` object with nothing to replace keeps its content; a
//! patch value of the wrong JSON type for a known list/object field is rejected here (upstream
//! rejects it while decoding, also with 422); `$setElementOrder` on a list without a merge
//! strategy is ignored.

use serde_json::{Map, Value};

/// Key marking an object (or a list element) as a directive.
const DIRECTIVE: &str = "$patch";
/// Key listing the fields an object keeps.
const RETAIN_KEYS: &str = "$retainKeys";
/// Prefix of the parallel list giving the final order of a merge list.
const SET_ORDER_PREFIX: &str = "$setElementOrder";
/// Prefix of the parallel list naming scalars to remove from a primitive list.
const DELETE_PRIMITIVE_PREFIX: &str = "$deleteFromPrimitiveList";

/// Why a strategic merge patch could not be applied. Each message names the offending field path
/// (dot separated, list positions in brackets, `<root>` for the whole object).
#[derive(Debug, thiserror::Error)]
pub enum StrategicError {
    /// The patch (or the live object) is not a JSON object.
    #[error("{path}: invalid JSON document")]
    InvalidDocument {
        /// Offending field path.
        path: String,
    },
    /// A merge-list element lacks the list's merge key.
    #[error("{path}: map: {element} does not contain declared merge key: {key}")]
    MissingMergeKey {
        /// Offending field path.
        path: String,
        /// The element, as compact JSON.
        element: String,
        /// The merge key the list declares.
        key: &'static str,
    },
    /// `$patch` has a value other than `replace` / `delete` (or `merge` where allowed).
    #[error("{path}: unknown patch type: {directive} in map: {element}")]
    UnknownPatchType {
        /// Offending field path.
        path: String,
        /// The `$patch` value, as JSON.
        directive: String,
        /// The object holding it, as compact JSON.
        element: String,
    },
    /// A `{"$patch": "merge"}` element inside a list.
    #[error("{path}: merging lists cannot yet be specified in the patch")]
    ListMergeDirective {
        /// Offending field path.
        path: String,
    },
    /// A malformed `$deleteFromPrimitiveList` directive.
    #[error("{path}: invalid patch format of primitive list")]
    PrimitiveListFormat {
        /// Offending field path.
        path: String,
    },
    /// A malformed `$retainKeys` directive, or a patched key missing from it.
    #[error("{path}: invalid patch format of retainKeys")]
    RetainKeysFormat {
        /// Offending field path.
        path: String,
    },
    /// A malformed `$setElementOrder` directive.
    #[error("{path}: invalid patch format of setElementOrder list")]
    SetElementOrderFormat {
        /// Offending field path.
        path: String,
    },
    /// The patch list orders its elements differently from its `$setElementOrder` list.
    #[error("{path}: the order in patch list {patch} doesn't match $setElementOrder list {order}")]
    SetElementOrderMismatch {
        /// Offending field path.
        path: String,
        /// The patch list, as compact JSON.
        patch: String,
        /// The `$setElementOrder` list, as compact JSON.
        order: String,
    },
    /// A merged list holds lists.
    #[error("{path}: lists of lists are not supported")]
    ListOfLists {
        /// Offending field path.
        path: String,
    },
    /// A merged list mixes element types.
    #[error("{path}: list element types are not identical")]
    MixedElementTypes {
        /// Offending field path.
        path: String,
    },
    /// A list of objects has merge strategy but no merge key.
    #[error("{path}: cannot merge lists without merge key")]
    NoMergeKeyDeclared {
        /// Offending field path.
        path: String,
    },
    /// A value of the wrong JSON type for a field whose shape is known.
    #[error("invalid type for {path}: got {actual:?}, expected {expected:?}")]
    InvalidType {
        /// Offending field path.
        path: String,
        /// Expected kind (`map`, `slice`).
        expected: &'static str,
        /// Kind found (`map`, `slice`, `string`, `number`, `bool`, `null`).
        actual: &'static str,
    },
}

impl StrategicError {
    /// HTTP status kube-apiserver answers with for the same failure: 400 for malformed
    /// directives, 422 for values the typed object cannot hold, and 500 (reason `Unknown`) for
    /// the remaining strategicpatch errors, which upstream passes through unconverted.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::InvalidDocument { .. }
            | Self::PrimitiveListFormat { .. }
            | Self::RetainKeysFormat { .. }
            | Self::SetElementOrderFormat { .. } => 400,
            Self::ListOfLists { .. } | Self::InvalidType { .. } => 422,
            Self::MissingMergeKey { .. }
            | Self::UnknownPatchType { .. }
            | Self::ListMergeDirective { .. }
            | Self::SetElementOrderMismatch { .. }
            | Self::MixedElementTypes { .. }
            | Self::NoMergeKeyDeclared { .. } => 500,
        }
    }
}

type Result<T> = std::result::Result<T, StrategicError>;

/// Applies a strategic merge patch to `original` for an object of `kind` (e.g. "Pod", "Service",
/// "Deployment", "ConfigMap", "Lease"). Unknown kinds merge like JSON merge patch plus directives.
pub fn apply(kind: &str, original: &Value, patch: &Value) -> Result<Value> {
    let root = Path::ROOT;
    let Value::Object(patch) = patch else {
        return Err(StrategicError::InvalidDocument {
            path: root.render(),
        });
    };
    let original = match original {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => {
            return Err(StrategicError::InvalidDocument {
                path: root.render(),
            });
        }
    };
    let ty = root_type(kind).and_then(lookup_type);
    merge_map(original, patch.clone(), ty, &root).map(Value::Object)
}

/// Every field with a patch strategy, for the OpenAPI generator: (schema type name such as
/// "io.k8s.api.core.v1.PodSpec", field name, strategy "merge" / "retainKeys" / "merge,retainKeys"
/// / "replace", merge key if any). Besides lists this includes the two object fields that carry a
/// strategy (`DeploymentSpec.strategy`, `PodDisruptionBudgetSpec.selector`).
pub fn list_strategies() -> impl Iterator<
    Item = (
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
    ),
> {
    TYPES.iter().flat_map(|t| {
        t.fields.iter().filter_map(move |f| {
            let (strategy, key) = match f.shape {
                Shape::Keyed {
                    key, retain_keys, ..
                } => (
                    if retain_keys {
                        "merge,retainKeys"
                    } else {
                        "merge"
                    },
                    Some(key),
                ),
                Shape::Set => ("merge", None),
                Shape::Object {
                    retain_keys: true, ..
                } => ("retainKeys", None),
                Shape::Replace => ("replace", None),
                Shape::Object { .. } | Shape::Atomic | Shape::Open => return None,
            };
            Some((t.name, f.name, strategy, key))
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Field paths (built lazily, rendered only for errors)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Seg<'a> {
    Root,
    Field(&'a str),
    Index(usize),
}

/// A field path as a chain of borrowed segments.
#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    seg: Seg<'a>,
}

impl<'a> Path<'a> {
    const ROOT: Path<'static> = Path {
        parent: None,
        seg: Seg::Root,
    };

    fn field<'b>(&'b self, name: &'b str) -> Path<'b> {
        Path {
            parent: Some(self),
            seg: Seg::Field(name),
        }
    }

    fn index<'b>(&'b self, i: usize) -> Path<'b> {
        Path {
            parent: Some(self),
            seg: Seg::Index(i),
        }
    }

    fn render(&self) -> String {
        let mut segs = Vec::new();
        let mut cur = Some(self);
        while let Some(p) = cur {
            segs.push(p.seg);
            cur = p.parent;
        }
        let mut out = String::new();
        for seg in segs.iter().rev() {
            match seg {
                Seg::Root => {}
                Seg::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Seg::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
        if out.is_empty() {
            out.push_str("<root>");
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Schema table
// ---------------------------------------------------------------------------------------------

/// How a field is patched.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Nested object merged key by key (following the named type if it is in the table).
    /// `retain_keys` records `patchStrategy:"retainKeys"`.
    Object {
        ty: Option<&'static str>,
        retain_keys: bool,
    },
    /// Object with `patchStrategy:"replace"`: the patch value replaces it.
    Replace,
    /// List of objects with `patchStrategy:"merge"` and a merge key.
    Keyed {
        key: &'static str,
        elem: Option<&'static str>,
        retain_keys: bool,
    },
    /// List of scalars with `patchStrategy:"merge"`: set union.
    Set,
    /// List without a strategy: replaced as a whole.
    Atomic,
    /// Not described: objects merge recursively, everything else is replaced.
    Open,
}

impl Shape {
    fn is_list(self) -> bool {
        matches!(self, Shape::Keyed { .. } | Shape::Set | Shape::Atomic)
    }

    fn is_object(self) -> bool {
        matches!(self, Shape::Object { .. } | Shape::Replace)
    }

    fn object_type(self) -> Option<&'static TypeDef> {
        match self {
            Shape::Object { ty, .. } => ty.and_then(lookup_type),
            _ => None,
        }
    }

    fn elem_type(self) -> Option<&'static TypeDef> {
        match self {
            Shape::Keyed { elem, .. } => elem.and_then(lookup_type),
            _ => None,
        }
    }

    fn expected(self) -> &'static str {
        if self.is_list() { "slice" } else { "map" }
    }
}

struct FieldDef {
    name: &'static str,
    shape: Shape,
}

struct TypeDef {
    name: &'static str,
    fields: &'static [FieldDef],
}

const fn obj(name: &'static str, ty: &'static str) -> FieldDef {
    FieldDef {
        name,
        shape: Shape::Object {
            ty: Some(ty),
            retain_keys: false,
        },
    }
}

const fn retain_obj(name: &'static str) -> FieldDef {
    FieldDef {
        name,
        shape: Shape::Object {
            ty: None,
            retain_keys: true,
        },
    }
}

const fn replace(name: &'static str) -> FieldDef {
    FieldDef {
        name,
        shape: Shape::Replace,
    }
}

const fn keyed(name: &'static str, key: &'static str, elem: Option<&'static str>) -> FieldDef {
    FieldDef {
        name,
        shape: Shape::Keyed {
            key,
            elem,
            retain_keys: false,
        },
    }
}

const fn keyed_retain(name: &'static str, key: &'static str) -> FieldDef {
    FieldDef {
        name,
        shape: Shape::Keyed {
            key,
            elem: None,
            retain_keys: true,
        },
    }
}

const fn set(name: &'static str) -> FieldDef {
    FieldDef {
        name,
        shape: Shape::Set,
    }
}

const fn atomic(name: &'static str) -> FieldDef {
    FieldDef {
        name,
        shape: Shape::Atomic,
    }
}

const fn meta() -> FieldDef {
    obj("metadata", OBJECT_META)
}

/// `conditions` merged by `type`, the most common tagged list.
const fn conditions() -> FieldDef {
    keyed("conditions", "type", None)
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
/// Internal entry for kinds whose only strategic field is `metadata`.
const METADATA_ONLY: &str = "km.strategic.MetadataOnly";

const POD: &str = "io.k8s.api.core.v1.Pod";
const POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";
const POD_STATUS: &str = "io.k8s.api.core.v1.PodStatus";
const CONTAINER: &str = "io.k8s.api.core.v1.Container";
const EPHEMERAL_CONTAINER: &str = "io.k8s.api.core.v1.EphemeralContainer";
const CONTAINER_STATUS: &str = "io.k8s.api.core.v1.ContainerStatus";
const POD_TEMPLATE: &str = "io.k8s.api.core.v1.PodTemplate";
const POD_TEMPLATE_SPEC: &str = "io.k8s.api.core.v1.PodTemplateSpec";
const RC: &str = "io.k8s.api.core.v1.ReplicationController";
const RC_SPEC: &str = "io.k8s.api.core.v1.ReplicationControllerSpec";
const RC_STATUS: &str = "io.k8s.api.core.v1.ReplicationControllerStatus";
const SERVICE: &str = "io.k8s.api.core.v1.Service";
const SERVICE_SPEC: &str = "io.k8s.api.core.v1.ServiceSpec";
const SERVICE_STATUS: &str = "io.k8s.api.core.v1.ServiceStatus";
const NODE: &str = "io.k8s.api.core.v1.Node";
const NODE_SPEC: &str = "io.k8s.api.core.v1.NodeSpec";
const NODE_STATUS: &str = "io.k8s.api.core.v1.NodeStatus";
const NAMESPACE: &str = "io.k8s.api.core.v1.Namespace";
const NAMESPACE_SPEC: &str = "io.k8s.api.core.v1.NamespaceSpec";
const NAMESPACE_STATUS: &str = "io.k8s.api.core.v1.NamespaceStatus";
const SERVICE_ACCOUNT: &str = "io.k8s.api.core.v1.ServiceAccount";
const ENDPOINTS: &str = "io.k8s.api.core.v1.Endpoints";
const PVC: &str = "io.k8s.api.core.v1.PersistentVolumeClaim";
const PVC_STATUS: &str = "io.k8s.api.core.v1.PersistentVolumeClaimStatus";
const COMPONENT_STATUS: &str = "io.k8s.api.core.v1.ComponentStatus";

const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
const DEPLOYMENT_SPEC: &str = "io.k8s.api.apps.v1.DeploymentSpec";
const DEPLOYMENT_STATUS: &str = "io.k8s.api.apps.v1.DeploymentStatus";
const REPLICA_SET: &str = "io.k8s.api.apps.v1.ReplicaSet";
const REPLICA_SET_SPEC: &str = "io.k8s.api.apps.v1.ReplicaSetSpec";
const REPLICA_SET_STATUS: &str = "io.k8s.api.apps.v1.ReplicaSetStatus";
const DAEMON_SET: &str = "io.k8s.api.apps.v1.DaemonSet";
const DAEMON_SET_SPEC: &str = "io.k8s.api.apps.v1.DaemonSetSpec";
const DAEMON_SET_STATUS: &str = "io.k8s.api.apps.v1.DaemonSetStatus";
const STATEFUL_SET: &str = "io.k8s.api.apps.v1.StatefulSet";
const STATEFUL_SET_SPEC: &str = "io.k8s.api.apps.v1.StatefulSetSpec";
const STATEFUL_SET_STATUS: &str = "io.k8s.api.apps.v1.StatefulSetStatus";

const JOB: &str = "io.k8s.api.batch.v1.Job";
const JOB_SPEC: &str = "io.k8s.api.batch.v1.JobSpec";
const JOB_STATUS: &str = "io.k8s.api.batch.v1.JobStatus";
const CRON_JOB: &str = "io.k8s.api.batch.v1.CronJob";
const CRON_JOB_SPEC: &str = "io.k8s.api.batch.v1.CronJobSpec";
const JOB_TEMPLATE_SPEC: &str = "io.k8s.api.batch.v1.JobTemplateSpec";

const ENDPOINT_SLICE: &str = "io.k8s.api.discovery.v1.EndpointSlice";

const HPA: &str = "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler";
const HPA_STATUS: &str = "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus";

const PDB: &str = "io.k8s.api.policy.v1.PodDisruptionBudget";
const PDB_SPEC: &str = "io.k8s.api.policy.v1.PodDisruptionBudgetSpec";
const PDB_STATUS: &str = "io.k8s.api.policy.v1.PodDisruptionBudgetStatus";

const VWC: &str = "io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration";
const MWC: &str = "io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration";
const VALIDATING_WEBHOOK: &str = "io.k8s.api.admissionregistration.v1.ValidatingWebhook";
const MUTATING_WEBHOOK: &str = "io.k8s.api.admissionregistration.v1.MutatingWebhook";
const VAP: &str = "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicy";
const VAP_SPEC: &str = "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec";

const FLOW_SCHEMA: &str = "io.k8s.api.flowcontrol.v1.FlowSchema";
const FLOW_SCHEMA_STATUS: &str = "io.k8s.api.flowcontrol.v1.FlowSchemaStatus";
const PLC: &str = "io.k8s.api.flowcontrol.v1.PriorityLevelConfiguration";
const PLC_STATUS: &str = "io.k8s.api.flowcontrol.v1.PriorityLevelConfigurationStatus";

const SERVICE_CIDR: &str = "io.k8s.api.networking.v1.ServiceCIDR";
const SERVICE_CIDR_STATUS: &str = "io.k8s.api.networking.v1.ServiceCIDRStatus";

const CSI_NODE: &str = "io.k8s.api.storage.v1.CSINode";
const CSI_NODE_SPEC: &str = "io.k8s.api.storage.v1.CSINodeSpec";

const RESOURCE_CLAIM: &str = "io.k8s.api.resource.v1.ResourceClaim";
const RESOURCE_CLAIM_STATUS: &str = "io.k8s.api.resource.v1.ResourceClaimStatus";

/// Fields shared by `Container` and `EphemeralContainer` (`EphemeralContainerCommon`).
const CONTAINER_FIELDS: &[FieldDef] = &[
    keyed("ports", "containerPort", None),
    keyed("env", "name", None),
    keyed("volumeMounts", "mountPath", None),
    keyed("volumeDevices", "devicePath", None),
    atomic("envFrom"),
    atomic("resizePolicy"),
    atomic("command"),
    atomic("args"),
];

/// The schema table: type name → fields needing more than plain recursive merging.
/// Tags from kubernetes/api v0.35 (`patchStrategy` / `patchMergeKey` struct tags); fields not
/// listed merge like JSON merge patch.
static TYPES: &[TypeDef] = &[
    TypeDef {
        name: OBJECT_META,
        fields: &[
            keyed("ownerReferences", "uid", None),
            set("finalizers"),
            atomic("managedFields"),
        ],
    },
    TypeDef {
        name: METADATA_ONLY,
        fields: &[meta()],
    },
    // core/v1
    TypeDef {
        name: POD,
        fields: &[meta(), obj("spec", POD_SPEC), obj("status", POD_STATUS)],
    },
    TypeDef {
        name: POD_SPEC,
        fields: &[
            keyed_retain("volumes", "name"),
            keyed("initContainers", "name", Some(CONTAINER)),
            keyed("containers", "name", Some(CONTAINER)),
            keyed("ephemeralContainers", "name", Some(EPHEMERAL_CONTAINER)),
            keyed("imagePullSecrets", "name", None),
            keyed("hostAliases", "ip", None),
            keyed("topologySpreadConstraints", "topologyKey", None),
            keyed("schedulingGates", "name", None),
            keyed_retain("resourceClaims", "name"),
            atomic("tolerations"),
            atomic("readinessGates"),
        ],
    },
    TypeDef {
        name: CONTAINER,
        fields: CONTAINER_FIELDS,
    },
    TypeDef {
        name: EPHEMERAL_CONTAINER,
        fields: CONTAINER_FIELDS,
    },
    TypeDef {
        name: POD_STATUS,
        fields: &[
            conditions(),
            keyed("hostIPs", "ip", None),
            keyed("podIPs", "ip", None),
            keyed_retain("resourceClaimStatuses", "name"),
            atomic("initContainerStatuses"),
            atomic("containerStatuses"),
            atomic("ephemeralContainerStatuses"),
        ],
    },
    // Reached only through the atomic *ContainerStatuses lists; listed for the OpenAPI generator.
    TypeDef {
        name: CONTAINER_STATUS,
        fields: &[
            keyed("volumeMounts", "mountPath", None),
            keyed("allocatedResourcesStatus", "name", None),
        ],
    },
    TypeDef {
        name: POD_TEMPLATE,
        fields: &[meta(), obj("template", POD_TEMPLATE_SPEC)],
    },
    TypeDef {
        name: POD_TEMPLATE_SPEC,
        fields: &[meta(), obj("spec", POD_SPEC)],
    },
    TypeDef {
        name: RC,
        fields: &[meta(), obj("spec", RC_SPEC), obj("status", RC_STATUS)],
    },
    TypeDef {
        name: RC_SPEC,
        fields: &[obj("template", POD_TEMPLATE_SPEC)],
    },
    TypeDef {
        name: RC_STATUS,
        fields: &[conditions()],
    },
    TypeDef {
        name: SERVICE,
        fields: &[
            meta(),
            obj("spec", SERVICE_SPEC),
            obj("status", SERVICE_STATUS),
        ],
    },
    TypeDef {
        name: SERVICE_SPEC,
        fields: &[
            keyed("ports", "port", None),
            atomic("clusterIPs"),
            atomic("externalIPs"),
            atomic("ipFamilies"),
        ],
    },
    TypeDef {
        name: SERVICE_STATUS,
        fields: &[conditions()],
    },
    TypeDef {
        name: NODE,
        fields: &[meta(), obj("spec", NODE_SPEC), obj("status", NODE_STATUS)],
    },
    TypeDef {
        name: NODE_SPEC,
        fields: &[set("podCIDRs"), atomic("taints")],
    },
    TypeDef {
        name: NODE_STATUS,
        fields: &[
            conditions(),
            keyed("addresses", "type", None),
            atomic("images"),
            atomic("volumesInUse"),
            atomic("volumesAttached"),
        ],
    },
    TypeDef {
        name: NAMESPACE,
        fields: &[
            meta(),
            obj("spec", NAMESPACE_SPEC),
            obj("status", NAMESPACE_STATUS),
        ],
    },
    TypeDef {
        name: NAMESPACE_SPEC,
        fields: &[atomic("finalizers")],
    },
    TypeDef {
        name: NAMESPACE_STATUS,
        fields: &[conditions()],
    },
    TypeDef {
        name: SERVICE_ACCOUNT,
        fields: &[
            meta(),
            keyed("secrets", "name", None),
            atomic("imagePullSecrets"),
        ],
    },
    TypeDef {
        name: ENDPOINTS,
        fields: &[meta(), atomic("subsets")],
    },
    TypeDef {
        name: PVC,
        fields: &[meta(), obj("status", PVC_STATUS)],
    },
    TypeDef {
        name: PVC_STATUS,
        fields: &[conditions()],
    },
    TypeDef {
        name: COMPONENT_STATUS,
        fields: &[meta(), conditions()],
    },
    // apps/v1
    TypeDef {
        name: DEPLOYMENT,
        fields: &[
            meta(),
            obj("spec", DEPLOYMENT_SPEC),
            obj("status", DEPLOYMENT_STATUS),
        ],
    },
    TypeDef {
        name: DEPLOYMENT_SPEC,
        fields: &[obj("template", POD_TEMPLATE_SPEC), retain_obj("strategy")],
    },
    TypeDef {
        name: DEPLOYMENT_STATUS,
        fields: &[conditions()],
    },
    TypeDef {
        name: REPLICA_SET,
        fields: &[
            meta(),
            obj("spec", REPLICA_SET_SPEC),
            obj("status", REPLICA_SET_STATUS),
        ],
    },
    TypeDef {
        name: REPLICA_SET_SPEC,
        fields: &[obj("template", POD_TEMPLATE_SPEC)],
    },
    TypeDef {
        name: REPLICA_SET_STATUS,
        fields: &[conditions()],
    },
    TypeDef {
        name: DAEMON_SET,
        fields: &[
            meta(),
            obj("spec", DAEMON_SET_SPEC),
            obj("status", DAEMON_SET_STATUS),
        ],
    },
    TypeDef {
        name: DAEMON_SET_SPEC,
        fields: &[obj("template", POD_TEMPLATE_SPEC)],
    },
    TypeDef {
        name: DAEMON_SET_STATUS,
        fields: &[conditions()],
    },
    TypeDef {
        name: STATEFUL_SET,
        fields: &[
            meta(),
            obj("spec", STATEFUL_SET_SPEC),
            obj("status", STATEFUL_SET_STATUS),
        ],
    },
    TypeDef {
        name: STATEFUL_SET_SPEC,
        fields: &[
            obj("template", POD_TEMPLATE_SPEC),
            atomic("volumeClaimTemplates"),
        ],
    },
    TypeDef {
        name: STATEFUL_SET_STATUS,
        fields: &[conditions()],
    },
    // batch/v1
    TypeDef {
        name: JOB,
        fields: &[meta(), obj("spec", JOB_SPEC), obj("status", JOB_STATUS)],
    },
    TypeDef {
        name: JOB_SPEC,
        fields: &[obj("template", POD_TEMPLATE_SPEC)],
    },
    TypeDef {
        name: JOB_STATUS,
        fields: &[conditions()],
    },
    TypeDef {
        name: CRON_JOB,
        fields: &[meta(), obj("spec", CRON_JOB_SPEC)],
    },
    TypeDef {
        name: CRON_JOB_SPEC,
        fields: &[obj("jobTemplate", JOB_TEMPLATE_SPEC)],
    },
    TypeDef {
        name: JOB_TEMPLATE_SPEC,
        fields: &[meta(), obj("spec", JOB_SPEC)],
    },
    // discovery/v1
    TypeDef {
        name: ENDPOINT_SLICE,
        fields: &[meta(), atomic("endpoints"), atomic("ports")],
    },
    // autoscaling/v2
    TypeDef {
        name: HPA,
        fields: &[meta(), obj("status", HPA_STATUS)],
    },
    TypeDef {
        name: HPA_STATUS,
        fields: &[conditions()],
    },
    // policy/v1
    TypeDef {
        name: PDB,
        fields: &[meta(), obj("spec", PDB_SPEC), obj("status", PDB_STATUS)],
    },
    TypeDef {
        name: PDB_SPEC,
        fields: &[replace("selector")],
    },
    TypeDef {
        name: PDB_STATUS,
        fields: &[conditions()],
    },
    // admissionregistration/v1
    TypeDef {
        name: VWC,
        fields: &[meta(), keyed("webhooks", "name", Some(VALIDATING_WEBHOOK))],
    },
    TypeDef {
        name: MWC,
        fields: &[meta(), keyed("webhooks", "name", Some(MUTATING_WEBHOOK))],
    },
    TypeDef {
        name: VALIDATING_WEBHOOK,
        fields: &[keyed("matchConditions", "name", None)],
    },
    TypeDef {
        name: MUTATING_WEBHOOK,
        fields: &[keyed("matchConditions", "name", None)],
    },
    TypeDef {
        name: VAP,
        fields: &[meta(), obj("spec", VAP_SPEC)],
    },
    TypeDef {
        name: VAP_SPEC,
        fields: &[
            keyed("matchConditions", "name", None),
            keyed("variables", "name", None),
        ],
    },
    // flowcontrol/v1
    TypeDef {
        name: FLOW_SCHEMA,
        fields: &[meta(), obj("status", FLOW_SCHEMA_STATUS)],
    },
    TypeDef {
        name: FLOW_SCHEMA_STATUS,
        fields: &[conditions()],
    },
    TypeDef {
        name: PLC,
        fields: &[meta(), obj("status", PLC_STATUS)],
    },
    TypeDef {
        name: PLC_STATUS,
        fields: &[conditions()],
    },
    // networking/v1
    TypeDef {
        name: SERVICE_CIDR,
        fields: &[meta(), obj("status", SERVICE_CIDR_STATUS)],
    },
    TypeDef {
        name: SERVICE_CIDR_STATUS,
        fields: &[conditions()],
    },
    // storage/v1
    TypeDef {
        name: CSI_NODE,
        fields: &[meta(), obj("spec", CSI_NODE_SPEC)],
    },
    TypeDef {
        name: CSI_NODE_SPEC,
        fields: &[keyed("drivers", "name", None)],
    },
    // resource/v1
    TypeDef {
        name: RESOURCE_CLAIM,
        fields: &[meta(), obj("status", RESOURCE_CLAIM_STATUS)],
    },
    TypeDef {
        name: RESOURCE_CLAIM_STATUS,
        fields: &[keyed("reservedFor", "uid", None)],
    },
];

/// Schema type of a top-level object kind.
fn root_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Pod" => POD,
        "PodTemplate" => POD_TEMPLATE,
        "ReplicationController" => RC,
        "Service" => SERVICE,
        "Node" => NODE,
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Endpoints" => ENDPOINTS,
        "PersistentVolumeClaim" => PVC,
        "ComponentStatus" => COMPONENT_STATUS,
        "Deployment" => DEPLOYMENT,
        "ReplicaSet" => REPLICA_SET,
        "DaemonSet" => DAEMON_SET,
        "StatefulSet" => STATEFUL_SET,
        "Job" => JOB,
        "CronJob" => CRON_JOB,
        "EndpointSlice" => ENDPOINT_SLICE,
        "HorizontalPodAutoscaler" => HPA,
        "PodDisruptionBudget" => PDB,
        "ValidatingWebhookConfiguration" => VWC,
        "MutatingWebhookConfiguration" => MWC,
        "ValidatingAdmissionPolicy" => VAP,
        "FlowSchema" => FLOW_SCHEMA,
        "PriorityLevelConfiguration" => PLC,
        "ServiceCIDR" => SERVICE_CIDR,
        "CSINode" => CSI_NODE,
        "ResourceClaim" => RESOURCE_CLAIM,
        "ConfigMap"
        | "Secret"
        | "Event"
        | "Lease"
        | "LimitRange"
        | "ResourceQuota"
        | "PersistentVolume"
        | "ControllerRevision"
        | "Role"
        | "ClusterRole"
        | "RoleBinding"
        | "ClusterRoleBinding"
        | "StorageClass"
        | "PriorityClass"
        | "Ingress"
        | "IngressClass"
        | "NetworkPolicy"
        | "RuntimeClass"
        | "CSIDriver"
        | "VolumeAttachment"
        | "CertificateSigningRequest"
        | "ValidatingAdmissionPolicyBinding" => METADATA_ONLY,
        _ => return None,
    })
}

fn lookup_type(name: &str) -> Option<&'static TypeDef> {
    TYPES.iter().find(|t| t.name == name)
}

fn field_shape(ty: Option<&'static TypeDef>, field: &str) -> Shape {
    ty.and_then(|t| t.fields.iter().find(|f| f.name == field))
        .map_or(Shape::Open, |f| f.shape)
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn compact_map(m: &Map<String, Value>) -> String {
    serde_json::to_string(m).unwrap_or_default()
}

fn compact_list(l: &[Value]) -> String {
    serde_json::to_string(l).unwrap_or_default()
}

fn is_directive_key(k: &str) -> bool {
    k == DIRECTIVE
        || k == RETAIN_KEYS
        || k.starts_with(SET_ORDER_PREFIX)
        || k.starts_with(DELETE_PRIMITIVE_PREFIX)
}

/// Splits `<prefix>/<field>` and returns the field.
fn extract_key<'k>(key: &'k str, prefix: &str) -> Option<&'k str> {
    let (head, rest) = key.split_once('/')?;
    (head == prefix).then_some(rest)
}

fn unknown_patch_type(
    path: &Path<'_>,
    directive: &Value,
    m: &Map<String, Value>,
) -> StrategicError {
    StrategicError::UnknownPatchType {
        path: path.render(),
        directive: compact(directive),
        element: compact_map(m),
    }
}

fn missing_key(path: &Path<'_>, element: &Value, key: &'static str) -> StrategicError {
    StrategicError::MissingMergeKey {
        path: path.render(),
        element: compact(element),
        key,
    }
}

/// Checks the elements of the given lists share one JSON kind (nulls ignored) and are not lists;
/// returns that kind's name, or `None` when there is no element.
fn element_kind(lists: &[&[Value]], path: &Path<'_>) -> Result<Option<&'static str>> {
    let mut kind = None;
    for v in lists.iter().flat_map(|l| l.iter()) {
        if v.is_null() {
            continue;
        }
        let k = kind_name(v);
        match kind {
            None if k == "slice" => {
                return Err(StrategicError::ListOfLists {
                    path: path.render(),
                });
            }
            None => kind = Some(k),
            Some(prev) if prev != k => {
                return Err(StrategicError::MixedElementTypes {
                    path: path.render(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(kind)
}

// ---------------------------------------------------------------------------------------------
// Merging
// ---------------------------------------------------------------------------------------------

/// Merges `patch` into `original`, both objects of type `ty` (`None`: undescribed).
fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    ty: Option<&'static TypeDef>,
    path: &Path<'_>,
) -> Result<Map<String, Value>> {
    if let Some(directive) = patch.shift_remove(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => fresh_map(patch, ty, path),
            Some("delete") => Ok(Map::new()),
            _ => Err(unknown_patch_type(path, &directive, &patch)),
        };
    }
    apply_retain_keys(&mut original, &mut patch, path)?;
    apply_set_element_order(&mut original, &mut patch, ty, path)?;

    for (key, pv) in patch {
        let (field, delete_list) = if key.starts_with(DELETE_PRIMITIVE_PREFIX) {
            match extract_key(&key, DELETE_PRIMITIVE_PREFIX) {
                Some(f) => (f.to_owned(), true),
                None => {
                    return Err(StrategicError::PrimitiveListFormat {
                        path: path.field(&key).render(),
                    });
                }
            }
        } else {
            (key, false)
        };
        let fpath = path.field(&field);
        if pv.is_null() {
            original.shift_remove(&field);
            continue;
        }
        if delete_list {
            let Value::Array(values) = pv else {
                return Err(StrategicError::PrimitiveListFormat {
                    path: fpath.render(),
                });
            };
            if let Some(Value::Array(list)) = original.get_mut(&field) {
                delete_from_list(list, &values, &fpath)?;
            }
            continue;
        }
        let shape = field_shape(ty, &field);
        let merged = match original.get_mut(&field) {
            Some(ov) => merge_value(std::mem::take(ov), pv, shape, &fpath)?,
            None => fresh(pv, shape, &fpath)?,
        };
        match merged {
            Some(v) => {
                original.insert(field, v);
            }
            None => {
                original.shift_remove(&field);
            }
        }
    }
    Ok(original)
}

/// Merges one patch value into the live value of a field. `None` removes the field.
fn merge_value(ov: Value, pv: Value, shape: Shape, path: &Path<'_>) -> Result<Option<Value>> {
    match (ov, pv) {
        (Value::Object(o), Value::Object(p)) => match shape {
            Shape::Object { .. } | Shape::Open => Ok(Some(Value::Object(merge_map(
                o,
                p,
                shape.object_type(),
                path,
            )?))),
            _ => fresh(Value::Object(p), shape, path),
        },
        (Value::Array(o), Value::Array(p)) => match shape {
            Shape::Keyed { key, .. } => Ok(Some(Value::Array(merge_keyed_list(
                o,
                p,
                key,
                shape.elem_type(),
                path,
            )?))),
            Shape::Set => Ok(Some(Value::Array(merge_set(o, p, path)?))),
            _ => fresh(Value::Array(p), shape, path),
        },
        (_, pv) => fresh(pv, shape, path),
    }
}

/// A patch value with nothing to merge into: checked against the field's shape and cleaned of
/// directives and nulls. `None` means the field ends up absent.
fn fresh(pv: Value, shape: Shape, path: &Path<'_>) -> Result<Option<Value>> {
    match pv {
        Value::Object(mut m) => {
            if shape.is_list() {
                // `{"$patch": ...}` in place of a list removes it, like upstream.
                return if m.contains_key(DIRECTIVE) {
                    Ok(None)
                } else {
                    Err(StrategicError::InvalidType {
                        path: path.render(),
                        expected: "slice",
                        actual: "map",
                    })
                };
            }
            if let Some(directive) = m.shift_remove(DIRECTIVE) {
                match directive.as_str() {
                    Some("replace") => {}
                    Some("delete") => return Ok(None),
                    _ => return Err(unknown_patch_type(path, &directive, &m)),
                }
            }
            Ok(Some(Value::Object(fresh_map(
                m,
                shape.object_type(),
                path,
            )?)))
        }
        Value::Array(items) => {
            if shape.is_object() {
                return Err(StrategicError::InvalidType {
                    path: path.render(),
                    expected: "map",
                    actual: "slice",
                });
            }
            let elem = shape.elem_type();
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let ipath = path.index(i);
                match item {
                    Value::Object(_) if matches!(shape, Shape::Set) => {
                        return Err(StrategicError::NoMergeKeyDeclared {
                            path: ipath.render(),
                        });
                    }
                    Value::Object(m) => {
                        if let Some(directive) = m.get(DIRECTIVE) {
                            match directive.as_str() {
                                Some("delete" | "replace") => continue,
                                Some("merge") => {
                                    return Err(StrategicError::ListMergeDirective {
                                        path: ipath.render(),
                                    });
                                }
                                _ => return Err(unknown_patch_type(&ipath, directive, &m)),
                            }
                        }
                        out.push(Value::Object(fresh_map(m, elem, &ipath)?));
                    }
                    Value::Array(_) if matches!(shape, Shape::Open | Shape::Atomic) => {
                        if let Some(v) = fresh(item, Shape::Open, &ipath)? {
                            out.push(v);
                        }
                    }
                    other if matches!(shape, Shape::Keyed { .. }) => {
                        return Err(StrategicError::InvalidType {
                            path: ipath.render(),
                            expected: "map",
                            actual: kind_name(&other),
                        });
                    }
                    Value::Array(_) => {
                        return Err(StrategicError::ListOfLists {
                            path: path.render(),
                        });
                    }
                    scalar => out.push(scalar),
                }
            }
            Ok(Some(Value::Array(out)))
        }
        scalar => {
            if shape.is_list() || shape.is_object() {
                Err(StrategicError::InvalidType {
                    path: path.render(),
                    expected: shape.expected(),
                    actual: kind_name(&scalar),
                })
            } else {
                Ok(Some(scalar))
            }
        }
    }
}

/// Cleans a new object: drops directive keys and nulls, recursing per schema.
fn fresh_map(
    m: Map<String, Value>,
    ty: Option<&'static TypeDef>,
    path: &Path<'_>,
) -> Result<Map<String, Value>> {
    let mut out = Map::with_capacity(m.len());
    for (k, v) in m {
        if is_directive_key(&k) || v.is_null() {
            continue;
        }
        let shape = field_shape(ty, &k);
        if let Some(v) = fresh(v, shape, &path.field(&k))? {
            out.insert(k, v);
        }
    }
    Ok(out)
}

/// Handles `$retainKeys`: checks every patched key is listed, then drops unlisted live keys.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    path: &Path<'_>,
) -> Result<()> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let format_err = || StrategicError::RetainKeysFormat {
        path: path.render(),
    };
    let Value::Array(retain) = retain else {
        return Err(format_err());
    };
    let listed = |k: &str| retain.iter().any(|r| r.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null() || k.starts_with(DELETE_PRIMITIVE_PREFIX) || k.starts_with(SET_ORDER_PREFIX)
        {
            continue;
        }
        if !listed(k) {
            return Err(format_err());
        }
    }
    original.retain(|k, _| listed(k));
    Ok(())
}

/// Handles every `$setElementOrder/<field>` of `patch`: merges that field's patch list (if any)
/// into the live list and orders the result as the directive says.
fn apply_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    ty: Option<&'static TypeDef>,
    path: &Path<'_>,
) -> Result<()> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ORDER_PREFIX))
        .cloned()
        .collect();
    for dkey in directives {
        let order = patch.shift_remove(&dkey).unwrap_or_default();
        let Some(field) = extract_key(&dkey, SET_ORDER_PREFIX) else {
            return Err(StrategicError::SetElementOrderFormat {
                path: path.field(&dkey).render(),
            });
        };
        let fpath = path.field(field);
        let Value::Array(order) = order else {
            return Err(StrategicError::SetElementOrderFormat {
                path: fpath.render(),
            });
        };
        let shape = field_shape(ty, field);
        let key = match shape {
            Shape::Keyed { key, .. } => Some(key),
            Shape::Set => None,
            // Lists without a merge strategy are replaced by the patch list as sent.
            _ => continue,
        };
        let live = match original.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => {
                return Err(StrategicError::InvalidType {
                    path: fpath.render(),
                    expected: "slice",
                    actual: kind_name(other),
                });
            }
        };
        let patched = match patch.get(field) {
            // `null` (delete) is handled by the main loop.
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => {
                return Err(StrategicError::InvalidType {
                    path: fpath.render(),
                    expected: "slice",
                    actual: kind_name(other),
                });
            }
        };
        if let Some(p) = &patched {
            validate_order(p, &order, key, &fpath)?;
        }
        let live_order: Vec<Value> = live
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|v| ident(v, key).cloned())
            .collect();
        let merged = match (live, patched) {
            (Some(l), None) => l,
            (None, Some(p)) => {
                patch.shift_remove(field);
                match fresh(Value::Array(p), shape, &fpath)? {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                }
            }
            (Some(l), Some(p)) => {
                patch.shift_remove(field);
                match key {
                    Some(k) => merge_keyed_list(l, p, k, shape.elem_type(), &fpath)?,
                    None => merge_set(l, p, &fpath)?,
                }
            }
            (None, None) => continue,
        };
        let order_ids = order
            .iter()
            .enumerate()
            .map(|(i, o)| match key {
                Some(k) => o
                    .get(k)
                    .cloned()
                    .ok_or_else(|| missing_key(&path.field(&dkey).index(i), o, k)),
                None => Ok(o.clone()),
            })
            .collect::<Result<Vec<Value>>>()?;
        let ordered = order_list(merged, &order_ids, &live_order, key, &fpath)?;
        original.insert(field.to_owned(), Value::Array(ordered));
    }
    Ok(())
}

/// Checks the patch list lists its (non-deleted) elements in the relative order of the
/// `$setElementOrder` list.
fn validate_order(
    patch: &[Value],
    order: &[Value],
    key: Option<&'static str>,
    path: &Path<'_>,
) -> Result<()> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let items: Vec<(usize, &Value)> = patch
        .iter()
        .enumerate()
        .filter(|(_, v)| v.get(DIRECTIVE).is_none())
        .collect();
    let (mut p, mut o) = (0, 0);
    while p < items.len() && o < order.len() {
        let (pi, item) = items[p];
        let equal = match key {
            Some(k) => {
                let left = item
                    .get(k)
                    .ok_or_else(|| missing_key(&path.index(pi), item, k))?;
                let right = order[o]
                    .get(k)
                    .ok_or_else(|| missing_key(path, &order[o], k))?;
                left == right
            }
            None => item == &order[o],
        };
        if equal {
            p += 1;
        }
        o += 1;
    }
    if p < items.len() {
        return Err(StrategicError::SetElementOrderMismatch {
            path: path.render(),
            patch: compact_list(patch),
            order: compact_list(order),
        });
    }
    Ok(())
}

/// Identity of a list element for ordering: its merge-key value, or the scalar itself.
fn ident<'v>(item: &'v Value, key: Option<&str>) -> Option<&'v Value> {
    match key {
        Some(k) => item.get(k),
        None => Some(item),
    }
}

fn position(order: &[Value], id: &Value) -> Option<usize> {
    order.iter().position(|o| o == id)
}

/// Stable sort of `items` by the position of their identity in `order` (unknown ones last).
fn sort_by_order(items: Vec<Value>, order: &[Value], key: Option<&str>) -> Vec<Value> {
    let mut ranked: Vec<(usize, Value)> = items
        .into_iter()
        .map(|it| {
            let rank = ident(&it, key)
                .and_then(|id| position(order, id))
                .unwrap_or(usize::MAX);
            (rank, it)
        })
        .collect();
    ranked.sort_by_key(|(rank, _)| *rank);
    ranked.into_iter().map(|(_, it)| it).collect()
}

/// Orders a merged list like upstream: elements named by `wanted` follow its order, the others
/// keep their live order, and the two runs are interleaved using the live positions: a live-only
/// element goes first only while it precedes the next wanted element in the live list.
fn order_list(
    merged: Vec<Value>,
    wanted: &[Value],
    live_order: &[Value],
    key: Option<&'static str>,
    path: &Path<'_>,
) -> Result<Vec<Value>> {
    let mut in_wanted = Vec::new();
    let mut live_only = Vec::new();
    for (i, item) in merged.into_iter().enumerate() {
        let Some(id) = ident(&item, key) else {
            let k = key.unwrap_or_default();
            return Err(missing_key(&path.index(i), &item, k));
        };
        if position(wanted, id).is_some() {
            in_wanted.push(item);
        } else {
            live_only.push(item);
        }
    }
    let right = sort_by_order(in_wanted, wanted, key);
    let left = sort_by_order(live_only, live_order, key);

    let rank = |v: &Value| ident(v, key).and_then(|id| position(live_order, id));
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!((rank(l), rank(r)), (Some(a), Some(b)) if a < b),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    Ok(out)
}

/// Merges a list of objects by merge key: `$patch` elements first (delete / replace), then each
/// element is merged into the live element with the same key or added.
fn merge_keyed_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    key: &'static str,
    elem: Option<&'static TypeDef>,
    path: &Path<'_>,
) -> Result<Vec<Value>> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    if let Some(kind) = element_kind(&[&original, &patch], path)?
        && kind != "map"
    {
        return Err(StrategicError::InvalidType {
            path: path.render(),
            expected: "map",
            actual: kind,
        });
    }

    let mut live = original;
    let mut regular: Vec<(usize, Map<String, Value>)> = Vec::new();
    let mut replace = false;
    for (i, item) in patch.into_iter().enumerate() {
        let ipath = path.index(i);
        let Value::Object(m) = item else {
            return Err(StrategicError::InvalidType {
                path: ipath.render(),
                expected: "map",
                actual: kind_name(&item),
            });
        };
        let Some(directive) = m.get(DIRECTIVE) else {
            regular.push((i, m));
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(value) = m.get(key) else {
                    return Err(missing_key(&ipath, &Value::Object(m), key));
                };
                live.retain(|e| e.get(key) != Some(value));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(StrategicError::ListMergeDirective {
                    path: ipath.render(),
                });
            }
            _ => return Err(unknown_patch_type(&ipath, directive, &m)),
        }
    }

    if replace {
        let mut out = Vec::with_capacity(regular.len());
        for (i, m) in regular {
            let ipath = path.index(i);
            let cleaned = Value::Object(fresh_map(m, elem, &ipath)?);
            if cleaned.get(key).is_none() {
                return Err(missing_key(&ipath, &cleaned, key));
            }
            out.push(cleaned);
        }
        return Ok(out);
    }

    let live_order: Vec<Value> = live.iter().filter_map(|e| e.get(key).cloned()).collect();
    let mut wanted = Vec::with_capacity(regular.len());
    for (i, m) in regular {
        let ipath = path.index(i);
        let Some(value) = m.get(key).cloned() else {
            return Err(missing_key(&ipath, &Value::Object(m), key));
        };
        match live.iter().position(|e| e.get(key) == Some(&value)) {
            Some(pos) => {
                let target = std::mem::take(&mut live[pos]);
                let Value::Object(target) = target else {
                    return Err(StrategicError::InvalidType {
                        path: path.index(pos).render(),
                        expected: "map",
                        actual: kind_name(&target),
                    });
                };
                live[pos] = Value::Object(merge_map(target, m, elem, &ipath)?);
            }
            None => live.push(Value::Object(fresh_map(m, elem, &ipath)?)),
        }
        wanted.push(value);
    }
    order_list(live, &wanted, &live_order, Some(key), path)
}

/// Merges a list of scalars with merge strategy: set union in upstream's order.
fn merge_set(original: Vec<Value>, patch: Vec<Value>, path: &Path<'_>) -> Result<Vec<Value>> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    if element_kind(&[&original, &patch], path)? == Some("map") {
        return Err(StrategicError::NoMergeKeyDeclared {
            path: path.render(),
        });
    }
    let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
    for v in original.iter().chain(patch.iter()) {
        if !merged.contains(v) {
            merged.push(v.clone());
        }
    }
    order_list(merged, &patch, &original, None, path)
}

/// Removes `values` (scalars) from `list` for `$deleteFromPrimitiveList`.
fn delete_from_list(list: &mut Vec<Value>, values: &[Value], path: &Path<'_>) -> Result<()> {
    if let Some("map") = element_kind(&[list, values], path)? {
        return Err(StrategicError::PrimitiveListFormat {
            path: path.render(),
        });
    }
    list.retain(|v| !values.contains(v));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ap(kind: &str, original: Value, patch: Value) -> Value {
        match apply(kind, &original, &patch) {
            Ok(v) => v,
            Err(e) => panic!("patch failed: {e}"),
        }
    }

    fn err(kind: &str, original: Value, patch: Value) -> StrategicError {
        match apply(kind, &original, &patch) {
            Ok(v) => panic!("expected an error, got {v}"),
            Err(e) => e,
        }
    }

    fn has_directive(v: &Value) -> bool {
        match v {
            Value::Object(m) => m
                .iter()
                .any(|(k, v)| is_directive_key(k) || has_directive(v)),
            Value::Array(a) => a.iter().any(has_directive),
            _ => false,
        }
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "p",
                "labels": {"app": "web", "tier": "fe"},
                "annotations": {"a": "1"},
                "finalizers": ["example.com/a"],
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1"}
                ]
            },
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "app:1",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                    },
                    {"name": "sidecar", "image": "side:1"}
                ],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "tolerations": [{"key": "k1", "operator": "Exists"}]
            },
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "False"}
                ],
                "containerStatuses": [{"name": "app", "ready": false}, {"name": "sidecar", "ready": true}]
            }
        })
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array()
            .map(|a| a.iter().filter_map(|e| e["name"].as_str()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn container_image_change_touches_only_that_container() {
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "sidecar", "image": "side:2"}]}}),
        );
        let mut expected = pod();
        expected["spec"]["containers"][1]["image"] = json!("side:2");
        assert_eq!(out, expected);
    }

    #[test]
    fn env_merges_by_name() {
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "app", "env": [
                {"name": "B", "value": "20"},
                {"name": "C", "value": "3"}
            ]}]}}),
        );
        let env = &out["spec"]["containers"][0]["env"];
        assert_eq!(env[0], json!({"name": "A", "value": "1"}));
        assert_eq!(env[1], json!({"name": "B", "value": "20"}));
        assert_eq!(env[2], json!({"name": "C", "value": "3"}));
        assert_eq!(out["spec"]["containers"][0]["image"], "app:1");
    }

    #[test]
    fn new_element_without_order_goes_first_like_upstream() {
        // Without $setElementOrder upstream places patch-only elements before live-only ones.
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "app", "env": [{"name": "Z", "value": "9"}]}]}}),
        );
        assert_eq!(names(&out["spec"]["containers"][0]["env"]), ["Z", "A", "B"]);
    }

    #[test]
    fn set_element_order_places_new_env_last() {
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{
                "name": "app",
                "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "Z"}],
                "env": [{"name": "Z", "value": "9"}]
            }]}}),
        );
        assert_eq!(names(&out["spec"]["containers"][0]["env"]), ["A", "B", "Z"]);
        assert!(!has_directive(&out));
    }

    #[test]
    fn set_element_order_reorders_without_content_change() {
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}}),
        );
        assert_eq!(names(&out["spec"]["containers"]), ["sidecar", "app"]);
        assert_eq!(out["spec"]["containers"][1]["image"], "app:1");
    }

    #[test]
    fn set_element_order_ignores_unknown_entries() {
        let original = json!({"spec": {"containers": [{"name": "1"}, {"name": "3"}]}});
        let out = ap(
            "Pod",
            original,
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "3"}, {"name": "2"}, {"name": "1"}],
                "containers": [{"name": "3", "image": "x"}, {"name": "1", "image": "y"}]
            }}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "3", "image": "x"}, {"name": "1", "image": "y"}])
        );
    }

    #[test]
    fn set_element_order_mismatch_is_an_error() {
        let original =
            json!({"spec": {"containers": [{"name": "1"}, {"name": "3"}, {"name": "2"}]}});
        let e = err(
            "Pod",
            original,
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "1"}, {"name": "2"}, {"name": "3"}],
                "containers": [{"name": "3", "image": "x"}, {"name": "1", "image": "y"}]
            }}),
        );
        assert!(matches!(e, StrategicError::SetElementOrderMismatch { .. }));
        assert!(e.to_string().starts_with("spec.containers: "), "{e}");
        assert!(e.to_string().contains("doesn't match"));
    }

    #[test]
    fn set_element_order_with_delete_like_kubectl_apply() {
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{
                "name": "app",
                "$setElementOrder/env": [{"name": "B"}, {"name": "A"}],
                "env": [{"$patch": "delete", "name": "X"}, {"name": "A", "value": "10"}]
            }]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "B", "value": "2"}, {"name": "A", "value": "10"}])
        );
    }

    #[test]
    fn set_element_order_on_primitive_list() {
        let original = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
        let out = ap(
            "ConfigMap",
            original,
            json!({"metadata": {"$setElementOrder/finalizers": ["c", "a", "b"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
    }

    #[test]
    fn delete_container_with_patch_delete() {
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"$patch": "delete", "name": "sidecar"}]}}),
        );
        assert_eq!(names(&out["spec"]["containers"]), ["app"]);
    }

    #[test]
    fn delete_env_var_inside_container() {
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "app", "env": [{"$patch": "delete", "name": "A"}]}]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "B", "value": "2"}])
        );
    }

    #[test]
    fn delete_removes_all_duplicates() {
        let original = json!({"spec": {"containers": [
            {"name": "1"}, {"name": "1"}, {"name": "2", "image": "a"}, {"name": "3"}, {"name": "3"}
        ]}});
        let out = ap(
            "Pod",
            original,
            json!({"spec": {"containers": [{"name": "1", "$patch": "delete"}, {"name": "3", "$patch": "delete"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "2", "image": "a"}])
        );
    }

    #[test]
    fn replace_marker_replaces_whole_list() {
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "only", "image": "o:1"}, {"$patch": "replace"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "only", "image": "o:1"}])
        );
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"$patch": "replace"}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([]));
    }

    #[test]
    fn label_null_deletes_and_add_merges() {
        let out = ap(
            "Pod",
            pod(),
            json!({"metadata": {"labels": {"tier": null, "new": "x"}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "new": "x"}));
        assert_eq!(out["metadata"]["annotations"], json!({"a": "1"}));
    }

    #[test]
    fn map_replace_and_delete_directives() {
        let out = ap(
            "Pod",
            pod(),
            json!({"metadata": {"labels": {"$patch": "replace", "only": "1"}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"only": "1"}));
        // Upstream leaves an empty object behind for `$patch: delete` on an existing map.
        let out = ap(
            "Pod",
            pod(),
            json!({"metadata": {"labels": {"$patch": "delete"}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({}));
        // Nothing to delete: the key stays absent.
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {"affinity": {"$patch": "delete"}}}),
        );
        assert!(out["spec"].get("affinity").is_none());
    }

    #[test]
    fn top_level_replace() {
        let out = ap(
            "ConfigMap",
            json!({"a": 1, "b": 2}),
            json!({"$patch": "replace", "c": 3}),
        );
        assert_eq!(out, json!({"c": 3}));
        let out = ap("ConfigMap", json!({"a": 1}), json!({"$patch": "delete"}));
        assert_eq!(out, json!({}));
    }

    #[test]
    fn finalizers_union() {
        let original = json!({"metadata": {"finalizers": ["a", "b"]}});
        let out = ap(
            "Secret",
            original,
            json!({"metadata": {"finalizers": ["b", "c"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        // A value only in the patch lands before the live ones, as upstream orders it.
        let original = json!({"metadata": {"finalizers": ["a"]}});
        let out = ap(
            "Secret",
            original,
            json!({"metadata": {"finalizers": ["z"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["z", "a"]));
    }

    #[test]
    fn finalizers_delete_from_primitive_list() {
        let original = json!({"metadata": {"finalizers": ["a", "b", "c", "b"]}});
        let out = ap(
            "Pod",
            original.clone(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "c"]));
        let out = ap(
            "Pod",
            original.clone(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["zz"]}}),
        );
        assert_eq!(out, original);
        let out = ap(
            "Pod",
            json!({"metadata": {"name": "x"}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out, json!({"metadata": {"name": "x"}}));
    }

    #[test]
    fn delete_and_add_finalizers_together() {
        let out = ap(
            "Pod",
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {
                "$setElementOrder/finalizers": ["b", "c"],
                "$deleteFromPrimitiveList/finalizers": ["a"],
                "finalizers": ["c"]
            }}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
    }

    #[test]
    fn bad_primitive_list_directive() {
        let e = err(
            "Pod",
            pod(),
            json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}}),
        );
        assert!(matches!(e, StrategicError::PrimitiveListFormat { .. }));
        assert_eq!(e.status_code(), 400);
        let e = err(
            "Pod",
            pod(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
        );
        assert_eq!(
            e.to_string(),
            "metadata.finalizers: invalid patch format of primitive list"
        );
    }

    #[test]
    fn bad_set_element_order_directive() {
        let e = err(
            "Pod",
            pod(),
            json!({"spec": {"$setElementOrderX/containers": []}}),
        );
        assert!(matches!(e, StrategicError::SetElementOrderFormat { .. }));
        let e = err(
            "Pod",
            pod(),
            json!({"spec": {"$setElementOrder/containers": {}}}),
        );
        assert_eq!(e.status_code(), 400);
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let out = ap(
            "Pod",
            pod(),
            json!({"metadata": {"ownerReferences": [
                {"uid": "u1", "controller": true},
                {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "u2"}
            ]}}),
        );
        let refs = &out["metadata"]["ownerReferences"];
        assert_eq!(refs.as_array().map(Vec::len), Some(2));
        assert_eq!(refs[0]["name"], "rs");
        assert_eq!(refs[0]["controller"], true);
        assert_eq!(refs[1]["uid"], "u2");
    }

    #[test]
    fn service_ports_merge_by_port() {
        let svc = json!({"spec": {"type": "ClusterIP", "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "https", "port": 443, "targetPort": 8443}
        ]}});
        let out = ap(
            "Service",
            svc,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([
                {"name": "http", "port": 80, "targetPort": 9090},
                {"name": "https", "port": 443, "targetPort": 8443}
            ])
        );
    }

    #[test]
    fn service_port_without_key_names_field() {
        let svc = json!({"spec": {"ports": [{"port": 80}]}});
        let e = err(
            "Service",
            svc,
            json!({"spec": {"ports": [{"targetPort": 441}]}}),
        );
        assert_eq!(
            e.to_string(),
            r#"spec.ports[0]: map: {"targetPort":441} does not contain declared merge key: port"#
        );
        assert_eq!(e.status_code(), 500);
    }

    #[test]
    fn deployment_strategy_retain_keys_switch_to_recreate() {
        let dep = json!({"spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
        }});
        let out = ap(
            "Deployment",
            dep,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(out["spec"]["replicas"], 2);
    }

    #[test]
    fn retain_keys_rejects_unlisted_patch_key() {
        let dep = json!({"spec": {"strategy": {"type": "RollingUpdate"}}});
        let e = err(
            "Deployment",
            dep.clone(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 1}}}}),
        );
        assert_eq!(
            e.to_string(),
            "spec.strategy: invalid patch format of retainKeys"
        );
        assert_eq!(e.status_code(), 400);
        let e = err(
            "Deployment",
            dep,
            json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
        );
        assert!(matches!(e, StrategicError::RetainKeysFormat { .. }));
    }

    #[test]
    fn volume_retain_keys_switches_source() {
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {"volumes": [
                {"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/srv"}}
            ]}}),
        );
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "data", "hostPath": {"path": "/srv"}}])
        );
    }

    #[test]
    fn deployment_template_containers_merge() {
        let dep = json!({"spec": {"template": {
            "metadata": {"labels": {"app": "d"}},
            "spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}
        }}});
        let out = ap(
            "Deployment",
            dep,
            json!({"spec": {"template": {
                "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}},
                "spec": {"containers": [{"name": "b", "image": "b:2"}]}
            }}}),
        );
        let tpl = &out["spec"]["template"];
        assert_eq!(tpl["metadata"]["labels"]["app"], "d");
        assert_eq!(
            tpl["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "now"
        );
        assert_eq!(
            tpl["spec"]["containers"],
            json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}])
        );
    }

    #[test]
    fn missing_merge_key_path_in_nested_template() {
        let ds =
            json!({"spec": {"template": {"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}}}});
        let e = err(
            "DaemonSet",
            ds,
            json!({"spec": {"template": {"spec": {"volumes": [{"hostPath": {"path": "/x"}}]}}}}),
        );
        assert!(
            e.to_string()
                .starts_with("spec.template.spec.volumes[0]: map: "),
            "{e}"
        );
        assert!(
            e.to_string()
                .ends_with("does not contain declared merge key: name")
        );
    }

    #[test]
    fn cron_job_template_is_described() {
        let cj = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "c:1", "args": ["x"]}
        ]}}}}}});
        let out = ap(
            "CronJob",
            cj,
            json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [
                {"name": "c", "image": "c:2"}
            ]}}}}}}),
        );
        assert_eq!(
            out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
            json!([{"name": "c", "image": "c:2", "args": ["x"]}])
        );
    }

    #[test]
    fn atomic_lists_are_replaced() {
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {"tolerations": [{"key": "k2", "operator": "Exists"}]}}),
        );
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": "k2", "operator": "Exists"}])
        );
        let out = ap(
            "Pod",
            pod(),
            json!({"status": {"containerStatuses": [{"name": "app", "ready": true}]}}),
        );
        assert_eq!(
            out["status"]["containerStatuses"],
            json!([{"name": "app", "ready": true}])
        );
        let ns = json!({"spec": {"finalizers": ["kubernetes"]}});
        let out = ap("Namespace", ns, json!({"spec": {"finalizers": ["other"]}}));
        assert_eq!(out["spec"]["finalizers"], json!(["other"]));
        let sts = json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "a"}}]}});
        let out = ap(
            "StatefulSet",
            sts,
            json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "b"}}]}}),
        );
        assert_eq!(
            out["spec"]["volumeClaimTemplates"],
            json!([{"metadata": {"name": "b"}}])
        );
    }

    #[test]
    fn atomic_list_replacement_drops_directive_elements() {
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {"tolerations": [{"key": "a"}, {"$patch": "delete", "key": "k1"}]}}),
        );
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "a"}]));
    }

    #[test]
    fn pod_status_conditions_by_type() {
        let out = ap(
            "Pod",
            pod(),
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True"}
            ])
        );
        assert_eq!(out["status"]["phase"], "Running");
    }

    #[test]
    fn node_status_and_spec() {
        let node = json!({
            "spec": {"podCIDRs": ["10.0.0.0/24"], "taints": [{"key": "a", "effect": "NoSchedule"}]},
            "status": {
                "conditions": [{"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "False"}],
                "addresses": [{"type": "InternalIP", "address": "10.1.1.1"}, {"type": "Hostname", "address": "n1"}]
            }
        });
        let out = ap(
            "Node",
            node,
            json!({
                "spec": {"podCIDRs": ["10.0.0.0/24", "fd00::/64"], "taints": []},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    "addresses": [{"type": "InternalIP", "address": "10.1.1.2"}]
                }
            }),
        );
        assert_eq!(out["spec"]["podCIDRs"], json!(["10.0.0.0/24", "fd00::/64"]));
        assert_eq!(out["spec"]["taints"], json!([]));
        assert_eq!(
            out["status"]["conditions"][0],
            json!({"type": "Ready", "status": "True", "reason": "KubeletReady"})
        );
        assert_eq!(out["status"]["conditions"][1]["type"], "MemoryPressure");
        assert_eq!(
            out["status"]["addresses"],
            json!([{"type": "InternalIP", "address": "10.1.1.2"}, {"type": "Hostname", "address": "n1"}])
        );
    }

    #[test]
    fn pod_spec_keyed_lists() {
        let p = json!({"spec": {
            "hostAliases": [{"ip": "1.1.1.1", "hostnames": ["a"]}],
            "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 1}],
            "imagePullSecrets": [{"name": "s1"}]
        }});
        let out = ap(
            "Pod",
            p,
            json!({"spec": {
                "hostAliases": [{"ip": "1.1.1.1", "hostnames": ["b"]}],
                "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 2}],
                "imagePullSecrets": [{"name": "s2"}]
            }}),
        );
        assert_eq!(
            out["spec"]["hostAliases"],
            json!([{"ip": "1.1.1.1", "hostnames": ["b"]}])
        );
        assert_eq!(out["spec"]["topologySpreadConstraints"][0]["maxSkew"], 2);
        assert_eq!(
            out["spec"]["imagePullSecrets"],
            json!([{"name": "s2"}, {"name": "s1"}])
        );
    }

    #[test]
    fn pdb_selector_is_replaced() {
        let pdb = json!({"spec": {"selector": {"matchLabels": {"a": "1", "b": "2"}}}});
        let out = ap(
            "PodDisruptionBudget",
            pdb,
            json!({"spec": {"selector": {"matchLabels": {"c": "3"}}}}),
        );
        assert_eq!(out["spec"]["selector"], json!({"matchLabels": {"c": "3"}}));
    }

    #[test]
    fn webhooks_merge_by_name() {
        let vwc = json!({"webhooks": [
            {"name": "a.example.com", "sideEffects": "None", "matchConditions": [{"name": "m1", "expression": "true"}]}
        ]});
        let out = ap(
            "ValidatingWebhookConfiguration",
            vwc,
            json!({"webhooks": [{"name": "a.example.com", "matchConditions": [{"name": "m2", "expression": "false"}]}]}),
        );
        assert_eq!(out["webhooks"][0]["sideEffects"], "None");
        assert_eq!(names(&out["webhooks"][0]["matchConditions"]), ["m2", "m1"]);
    }

    #[test]
    fn unknown_kind_merges_like_json_merge_patch() {
        let obj = json!({"metadata": {"finalizers": ["a"]}, "spec": {"items": [{"name": "x"}], "m": {"k": 1, "j": 2}}});
        let out = ap(
            "Widget",
            obj,
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"items": [{"name": "y"}], "m": {"j": null, "l": 3}}}),
        );
        assert_eq!(
            out,
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"items": [{"name": "y"}], "m": {"k": 1, "l": 3}}})
        );
    }

    #[test]
    fn unknown_fields_of_known_types_merge_like_json_merge_patch() {
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {"nodeSelector": {"disk": "ssd"}, "priority": 5}}),
        );
        assert_eq!(out["spec"]["nodeSelector"], json!({"disk": "ssd"}));
        assert_eq!(out["spec"]["priority"], 5);
        let out = ap(
            "ConfigMap",
            json!({"data": {"a": "1", "b": "2"}}),
            json!({"data": {"a": null, "c": "3"}}),
        );
        assert_eq!(out, json!({"data": {"b": "2", "c": "3"}}));
    }

    #[test]
    fn new_values_never_carry_directives() {
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {
                "containers": [{
                    "name": "new",
                    "image": "n:1",
                    "command": null,
                    "$setElementOrder/env": [{"name": "X"}],
                    "env": [{"name": "X", "value": "1"}, {"$patch": "delete", "name": "Y"}],
                    "resources": {"$retainKeys": ["limits"], "limits": {"cpu": "1"}}
                }],
                "imagePullSecrets": [{"name": "s"}, {"$patch": "replace"}],
                "securityContext": {"$patch": "replace", "runAsUser": 1000}
            }}),
        );
        assert!(!has_directive(&out), "{out}");
        let new = &out["spec"]["containers"][0];
        assert_eq!(
            new,
            &json!({
                "name": "new",
                "image": "n:1",
                "env": [{"name": "X", "value": "1"}],
                "resources": {"limits": {"cpu": "1"}}
            })
        );
        assert_eq!(out["spec"]["imagePullSecrets"], json!([{"name": "s"}]));
        assert_eq!(out["spec"]["securityContext"], json!({"runAsUser": 1000}));
    }

    #[test]
    fn unknown_patch_type_is_an_error() {
        let e = err(
            "Pod",
            pod(),
            json!({"metadata": {"labels": {"$patch": "bogus"}}}),
        );
        assert_eq!(
            e.to_string(),
            r#"metadata.labels: unknown patch type: "bogus" in map: {}"#
        );
        let e = err(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"$patch": "bogus", "name": "app"}]}}),
        );
        assert!(matches!(e, StrategicError::UnknownPatchType { .. }));
        assert!(e.to_string().starts_with("spec.containers[0]: "));
        let e = err(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"$patch": "merge", "name": "app"}]}}),
        );
        assert_eq!(
            e.to_string(),
            "spec.containers[0]: merging lists cannot yet be specified in the patch"
        );
    }

    #[test]
    fn delete_directive_needs_merge_key() {
        let e = err(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"$patch": "delete"}]}}),
        );
        assert!(matches!(
            e,
            StrategicError::MissingMergeKey { key: "name", .. }
        ));
    }

    #[test]
    fn type_mismatch_names_the_field() {
        let e = err(
            "Pod",
            pod(),
            json!({"spec": {"containers": {"name": "app"}}}),
        );
        assert_eq!(
            e.to_string(),
            r#"invalid type for spec.containers: got "map", expected "slice""#
        );
        assert_eq!(e.status_code(), 422);
        let e = err("Pod", pod(), json!({"spec": {"containers": ["app"]}}));
        assert!(matches!(e, StrategicError::MixedElementTypes { .. }));
        let e = err("Pod", json!({}), json!({"spec": {"containers": ["app"]}}));
        assert_eq!(
            e.to_string(),
            r#"invalid type for spec.containers[0]: got "string", expected "map""#
        );
        let e = err("Deployment", json!({}), json!({"spec": {"template": "x"}}));
        assert_eq!(
            e.to_string(),
            r#"invalid type for spec.template: got "string", expected "map""#
        );
    }

    #[test]
    fn list_element_kind_errors() {
        let e = err(
            "Pod",
            json!({"metadata": {"finalizers": []}}),
            json!({"metadata": {"finalizers": [["a"]]}}),
        );
        assert!(matches!(e, StrategicError::ListOfLists { .. }));
        assert_eq!(e.status_code(), 422);
        let e = err(
            "Pod",
            json!({}),
            json!({"metadata": {"finalizers": [["a"]]}}),
        );
        assert_eq!(
            e.to_string(),
            "metadata.finalizers: lists of lists are not supported"
        );
        let e = err("Pod", pod(), json!({"metadata": {"finalizers": [["a"]]}}));
        assert!(matches!(e, StrategicError::MixedElementTypes { .. }));
        let e = err("Pod", pod(), json!({"metadata": {"finalizers": ["a", 1]}}));
        assert_eq!(
            e.to_string(),
            "metadata.finalizers: list element types are not identical"
        );
    }

    #[test]
    fn non_object_patch_is_rejected() {
        let e = err("Pod", pod(), json!([1, 2]));
        assert_eq!(e.to_string(), "<root>: invalid JSON document");
        assert_eq!(e.status_code(), 400);
    }

    #[test]
    fn null_list_deletes_it() {
        let out = ap(
            "Pod",
            pod(),
            json!({"spec": {"tolerations": null, "volumes": null}}),
        );
        assert!(out["spec"].get("tolerations").is_none());
        assert!(out["spec"].get("volumes").is_none());
    }

    #[test]
    fn new_list_without_live_value() {
        let out = ap(
            "Pod",
            json!({"spec": {}}),
            json!({"spec": {"imagePullSecrets": [{"name": "x"}, {"$patch": "delete", "name": "y"}]}}),
        );
        assert_eq!(out, json!({"spec": {"imagePullSecrets": [{"name": "x"}]}}));
    }

    #[test]
    fn key_order_is_preserved() {
        let out = ap(
            "ConfigMap",
            json!({"a": 1, "b": 2, "c": 3}),
            json!({"d": 4, "a": 10, "b": null}),
        );
        let text = serde_json::to_string(&out).unwrap_or_default();
        assert_eq!(text, r#"{"a":10,"c":3,"d":4}"#);
    }

    #[test]
    fn empty_patch_is_identity() {
        assert_eq!(ap("Pod", pod(), json!({})), pod());
    }

    #[test]
    fn list_strategies_match_upstream_tags() {
        let all: Vec<_> = list_strategies().collect();
        for expected in [
            (
                "io.k8s.api.core.v1.PodSpec",
                "containers",
                "merge",
                Some("name"),
            ),
            (
                "io.k8s.api.core.v1.PodSpec",
                "volumes",
                "merge,retainKeys",
                Some("name"),
            ),
            (
                "io.k8s.api.core.v1.PodSpec",
                "hostAliases",
                "merge",
                Some("ip"),
            ),
            (
                "io.k8s.api.core.v1.Container",
                "ports",
                "merge",
                Some("containerPort"),
            ),
            (
                "io.k8s.api.core.v1.Container",
                "volumeDevices",
                "merge",
                Some("devicePath"),
            ),
            (
                "io.k8s.api.core.v1.ServiceSpec",
                "ports",
                "merge",
                Some("port"),
            ),
            ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", None),
            (
                "io.k8s.api.core.v1.NodeStatus",
                "addresses",
                "merge",
                Some("type"),
            ),
            (
                "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                "finalizers",
                "merge",
                None,
            ),
            (
                "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                "ownerReferences",
                "merge",
                Some("uid"),
            ),
            (
                "io.k8s.api.apps.v1.DeploymentSpec",
                "strategy",
                "retainKeys",
                None,
            ),
            (
                "io.k8s.api.policy.v1.PodDisruptionBudgetSpec",
                "selector",
                "replace",
                None,
            ),
        ] {
            assert!(all.contains(&expected), "missing {expected:?}");
        }
        assert!(
            !all.iter()
                .any(|(_, f, _, _)| *f == "tolerations" || *f == "metadata")
        );
        let mut seen = std::collections::HashSet::new();
        assert!(
            all.iter().all(|(t, f, _, _)| seen.insert((*t, *f))),
            "duplicates"
        );
        assert!(all.iter().all(|(t, _, _, _)| t.starts_with("io.k8s.")));
    }

    #[test]
    fn every_referenced_type_exists() {
        for t in TYPES {
            for f in t.fields {
                let nested = match f.shape {
                    Shape::Object { ty, .. } => ty,
                    Shape::Keyed { elem, .. } => elem,
                    _ => None,
                };
                if let Some(name) = nested {
                    assert!(lookup_type(name).is_some(), "{} -> {name}", t.name);
                }
            }
        }
        for kind in [
            "Pod",
            "Deployment",
            "Lease",
            "EndpointSlice",
            "Event",
            "ServiceAccount",
        ] {
            assert!(root_type(kind).and_then(lookup_type).is_some(), "{kind}");
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("spec".to_owned()),
                            Just("containers".to_owned()),
                            Just("name".to_owned()),
                            "[a-z]{1,5}"
                        ],
                        inner
                    ),
                    0..5
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn arb_object() -> impl Strategy<Value = Value> {
        prop::collection::vec(
            (
                prop_oneof![
                    Just("metadata".to_owned()),
                    Just("spec".to_owned()),
                    Just("status".to_owned()),
                    "[a-z]{1,5}"
                ],
                arb_json(),
            ),
            0..5,
        )
        .prop_map(|kv| Value::Object(kv.into_iter().collect()))
    }

    fn arb_patch() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("name".to_owned()),
            Just("containers".to_owned()),
            Just("finalizers".to_owned()),
            Just("spec".to_owned()),
            Just("metadata".to_owned()),
            Just("$patch".to_owned()),
            Just("$retainKeys".to_owned()),
            Just("$setElementOrder/containers".to_owned()),
            Just("$deleteFromPrimitiveList/finalizers".to_owned()),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            Just(json!("replace")),
            Just(json!("delete")),
            Just(json!("a")),
            Just(json!(1)),
        ];
        leaf.prop_recursive(4, 40, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn empty_patch_returns_original(
            original in arb_object(),
            kind in prop_oneof![Just("Pod"), Just("Deployment"), Just("Node"), Just("ConfigMap"), Just("Widget")]
        ) {
            let out = apply(kind, &original, &json!({}));
            prop_assert_eq!(out.ok(), Some(original));
        }

        #[test]
        fn results_never_contain_directives(
            original in arb_object(),
            patch in arb_patch(),
            kind in prop_oneof![Just("Pod"), Just("Widget")]
        ) {
            let patch = match patch {
                Value::Object(_) => patch,
                other => json!({"spec": other}),
            };
            if let Ok(out) = apply(kind, &original, &patch) {
                prop_assert!(!has_directive(&out), "{}", out);
            }
        }
    }
}
