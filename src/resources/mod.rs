//! Resource arithmetic on Mesos `Resource` messages, and Kubernetes quantities.
//!
//! # The model
//!
//! A Mesos resource is a named value (`cpus`, `mem`, `disk`, `ports`, ...) of
//! one of three types:
//!
//! * `SCALAR`: a non-negative number. Mesos treats scalars as fixed point
//!   with three decimal digits, so km does all scalar arithmetic in whole
//!   thousandths (`i64`) and rounds results with [`round_scalar`]; `0.1 + 0.2`
//!   is exactly `0.3` here.
//! * `RANGES`: a set of `u64` values written as intervals ([`Ranges`]).
//! * `SET`: a set of strings.
//!
//! Besides its value a resource carries metadata saying *whose* it is and
//! *what kind* it is: the reservation (legacy `role` + `reservation`, or the
//! refined `reservations` stack), `allocation_info` (the role it was offered
//! to), `disk` information, and the `revocable`, `shared` and `provider_id`
//! markers. Two resources whose metadata is identical are of the
//! [same kind](same_kind): their values may be added and subtracted. Resources
//! of different kinds never merge; in particular `cpus` reserved for `web` and
//! unreserved `cpus` stay apart.
//!
//! The role of a resource ([`reservation_role`]) is the role it is reserved
//! for, [`ANY_ROLE`] (`"*"`) when it is unreserved. This is what pod and
//! framework roles are matched against when resources are procured.
//!
//! Some resources cannot be split even though they have a size: persistent
//! volumes, exclusive `MOUNT`/`BLOCK` disks, `RAW` disks with an identity,
//! and shared resources ([`is_indivisible`]). [`Resources`] holds those as
//! whole items: adding two equal ones keeps two entries and subtraction
//! removes an equal entry or fails.
//!
//! [`Resources`] is a normalised bag of resources with `+`, checked `-` and
//! containment; [`Quantity`] parses Kubernetes quantities (`250m`, `64Mi`) and
//! converts them into Mesos `cpus` and megabytes.

mod collection;
pub mod node;
pub mod quantity;
mod ranges;
mod set;
pub mod text;

use std::fmt;

use crate::mesos::proto::v1;
use v1::value::Type;

pub use collection::Resources;
pub use quantity::{Quantity, QuantityError};
pub use ranges::Ranges;
pub use set::{set_contains_all, set_difference, set_normalised, set_union};

/// The role of unreserved resources.
pub const ANY_ROLE: &str = "*";

/// Mesos scalars are fixed point with three decimal digits; rounds `v` to
/// that, halves away from zero, like Mesos's conversion to `i64` thousandths.
/// Non-finite values are returned unchanged.
pub fn round_scalar(v: f64) -> f64 {
    if !v.is_finite() {
        return v;
    }
    (v * 1000.0).round() / 1000.0
}

/// A scalar as whole thousandths (saturating at the `i64` limits; NaN is 0).
pub(crate) fn to_millis(v: f64) -> i64 {
    // `as` from f64 saturates and maps NaN to 0, which is what we want here.
    (v * 1000.0).round() as i64
}

/// Thousandths back to a scalar.
pub(crate) fn from_millis(m: i64) -> f64 {
    m as f64 / 1000.0
}

/// The role a resource is reserved for: the role of the last entry of
/// `reservations` (refined format), else the legacy `role` field if set,
/// else [`ANY_ROLE`]. An empty role counts as [`ANY_ROLE`].
pub fn reservation_role(r: &v1::Resource) -> &str {
    let role = match r.reservations.last() {
        Some(last) => last.role.as_deref().or_else(|| legacy_role(r)),
        None => legacy_role(r),
    };
    match role {
        None | Some("") => ANY_ROLE,
        Some(role) => role,
    }
}

/// The deprecated pre-refinement `role` field.
#[allow(deprecated)]
fn legacy_role(r: &v1::Resource) -> Option<&str> {
    r.role.as_deref()
}

/// The legacy role with its defaults applied (unset and empty mean `"*"`).
fn effective_legacy_role(r: &v1::Resource) -> &str {
    match legacy_role(r) {
        None | Some("") => ANY_ROLE,
        Some(role) => role,
    }
}

/// True when two resources differ at most in their value (same name, same
/// type, same role/reservations/allocation_info/disk/revocable/shared/
/// provider_id), so they can be merged or subtracted.
///
/// An unset legacy `role` equals `"*"` (its protobuf default). The
/// pre-refinement format (`role` + `reservation`) and the refined format
/// (`reservations`) are compared field by field, not translated into each
/// other; Mesos sends a framework one format only.
pub fn same_kind(a: &v1::Resource, b: &v1::Resource) -> bool {
    a.name == b.name
        && a.r#type == b.r#type
        && effective_legacy_role(a) == effective_legacy_role(b)
        && a.reservations == b.reservations
        && a.reservation == b.reservation
        && a.allocation_info == b.allocation_info
        && a.disk == b.disk
        && a.revocable == b.revocable
        && a.shared == b.shared
        && a.provider_id == b.provider_id
}

/// True for resources that must be used whole: shared resources, persistent
/// volumes, exclusive `MOUNT` and `BLOCK` disks, and `RAW` disks with an id.
pub fn is_indivisible(r: &v1::Resource) -> bool {
    use v1::resource::disk_info::source::Type as Source;
    if r.shared.is_some() {
        return true;
    }
    let Some(disk) = &r.disk else {
        return false;
    };
    if disk.persistence.is_some() {
        return true;
    }
    disk.source
        .as_ref()
        .is_some_and(|s| match Source::try_from(s.r#type) {
            Ok(Source::Mount | Source::Block) => true,
            Ok(Source::Raw) => s.id.is_some(),
            Ok(Source::Path | Source::Unknown) | Err(_) => false,
        })
}

/// An unreserved `SCALAR` resource (the value is rounded with
/// [`round_scalar`]).
pub fn scalar(name: &str, value: f64) -> v1::Resource {
    with_scalar(&unreserved(name), value)
}

/// An unreserved `RANGES` resource.
pub fn ranges(name: &str, r: &Ranges) -> v1::Resource {
    with_ranges(&unreserved(name), r)
}

/// An unreserved `SET` resource (items sorted, duplicates dropped).
pub fn set(name: &str, items: impl IntoIterator<Item = String>) -> v1::Resource {
    with_set(&unreserved(name), items)
}

fn unreserved(name: &str) -> v1::Resource {
    v1::Resource {
        name: name.to_owned(),
        ..Default::default()
    }
}

/// A copy of `template`'s metadata (name, role, reservations,
/// allocation_info, ...) with a new `SCALAR` value (rounded with
/// [`round_scalar`]); any ranges or set value is dropped.
pub fn with_scalar(template: &v1::Resource, value: f64) -> v1::Resource {
    v1::Resource {
        r#type: Type::Scalar as i32,
        scalar: Some(v1::value::Scalar {
            value: round_scalar(value),
        }),
        ranges: None,
        set: None,
        ..template.clone()
    }
}

/// A copy of `template`'s metadata with a new `RANGES` value; any scalar or
/// set value is dropped.
pub fn with_ranges(template: &v1::Resource, r: &Ranges) -> v1::Resource {
    v1::Resource {
        r#type: Type::Ranges as i32,
        scalar: None,
        ranges: Some(r.to_proto()),
        set: None,
        ..template.clone()
    }
}

/// A copy of `template`'s metadata with a new `SET` value (items sorted,
/// duplicates dropped); any scalar or ranges value is dropped.
pub fn with_set(template: &v1::Resource, items: impl IntoIterator<Item = String>) -> v1::Resource {
    v1::Resource {
        r#type: Type::Set as i32,
        scalar: None,
        ranges: None,
        set: Some(v1::value::Set {
            item: set::sorted_items(items),
        }),
        ..template.clone()
    }
}

/// A resource that is not well formed, or a malformed range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    /// The `name` field is empty.
    #[error("resource {resource} has an empty name: expected a name such as cpus, mem or ports")]
    EmptyName {
        /// The offending resource, in Mesos text form.
        resource: String,
    },
    /// The `type` is not SCALAR, RANGES or SET.
    #[error(
        "resource {resource} has value type {found}: expected SCALAR, RANGES or SET (TEXT is not a resource type)"
    )]
    UnsupportedType {
        /// The offending resource, in Mesos text form.
        resource: String,
        /// The type as found (a name, or the raw number if unknown).
        found: String,
    },
    /// The value field matching the type is absent.
    #[error("resource {resource} has type {ty} but no {field} value: expected a {field} value")]
    MissingValue {
        /// The offending resource, in Mesos text form.
        resource: String,
        /// The declared type.
        ty: &'static str,
        /// The field that should be set.
        field: &'static str,
    },
    /// A value field other than the one matching the type is set.
    #[error(
        "resource {resource} has type {ty} but also carries a {field} value: expected only the value matching the type"
    )]
    ExtraValue {
        /// The offending resource, in Mesos text form.
        resource: String,
        /// The declared type.
        ty: &'static str,
        /// The field that should not be set.
        field: &'static str,
    },
    /// The scalar is negative, NaN or infinite.
    #[error("resource {resource} has scalar value {value}: expected a finite number >= 0")]
    InvalidScalar {
        /// The offending resource, in Mesos text form.
        resource: String,
        /// The value found.
        value: f64,
    },
    /// A range of a `RANGES` resource has `begin > end`.
    #[error("resource {resource} has range [{begin}-{end}]: expected begin <= end")]
    InvalidRange {
        /// The offending resource, in Mesos text form.
        resource: String,
        /// Range start.
        begin: u64,
        /// Range end.
        end: u64,
    },
    /// A `SET` resource lists an item twice.
    #[error("resource {resource} lists set item {item:?} more than once: expected distinct items")]
    DuplicateSetItem {
        /// The offending resource, in Mesos text form.
        resource: String,
        /// The repeated item.
        item: String,
    },
    /// A `(begin, end)` pair given to [`Ranges::try_from_pairs`] is reversed.
    #[error("range {begin}-{end} is invalid: expected begin <= end")]
    ReversedRange {
        /// Range start.
        begin: u64,
        /// Range end.
        end: u64,
    },
}

/// Checks one resource is well formed: a non-empty name; a type of SCALAR,
/// RANGES or SET with exactly the matching value field set; a scalar that is
/// finite and `>= 0`; ranges with `begin <= end`; set items without
/// duplicates. The error names the resource and says what is wrong.
pub fn validate(r: &v1::Resource) -> Result<(), ResourceError> {
    let resource = || describe(r);
    if r.name.is_empty() {
        return Err(ResourceError::EmptyName {
            resource: resource(),
        });
    }
    let ty = Type::try_from(r.r#type).map_err(|_| ResourceError::UnsupportedType {
        resource: resource(),
        found: r.r#type.to_string(),
    })?;
    let (ty_name, present) = match ty {
        Type::Scalar => ("SCALAR", r.scalar.is_some()),
        Type::Ranges => ("RANGES", r.ranges.is_some()),
        Type::Set => ("SET", r.set.is_some()),
        Type::Text => {
            return Err(ResourceError::UnsupportedType {
                resource: resource(),
                found: "TEXT".to_owned(),
            });
        }
    };
    let field = ty_field(ty);
    if !present {
        return Err(ResourceError::MissingValue {
            resource: resource(),
            ty: ty_name,
            field,
        });
    }
    for (set, other) in [
        (r.scalar.is_some(), "scalar"),
        (r.ranges.is_some(), "ranges"),
        (r.set.is_some(), "set"),
    ] {
        if set && other != field {
            return Err(ResourceError::ExtraValue {
                resource: resource(),
                ty: ty_name,
                field: other,
            });
        }
    }
    if let Some(s) = &r.scalar
        && (!s.value.is_finite() || s.value < 0.0)
    {
        return Err(ResourceError::InvalidScalar {
            resource: resource(),
            value: s.value,
        });
    }
    if let Some(bad) = r
        .ranges
        .iter()
        .flat_map(|rs| &rs.range)
        .find(|x| x.begin > x.end)
    {
        return Err(ResourceError::InvalidRange {
            resource: resource(),
            begin: bad.begin,
            end: bad.end,
        });
    }
    if let Some(s) = &r.set {
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = s.item.iter().find(|i| !seen.insert(i.as_str())) {
            return Err(ResourceError::DuplicateSetItem {
                resource: resource(),
                item: dup.clone(),
            });
        }
    }
    Ok(())
}

fn ty_field(ty: Type) -> &'static str {
    match ty {
        Type::Scalar => "scalar",
        Type::Ranges => "ranges",
        Type::Set => "set",
        Type::Text => "text",
    }
}

/// One resource in Mesos text form, e.g. `cpus(*):2.5`,
/// `ports(web):[31000-31005]`, `disk(db)[vol1]:100`. Revocable resources
/// get `{REV}`, shared ones `<SHARED>`.
pub fn describe(r: &v1::Resource) -> String {
    Described(r).to_string()
}

/// Display adapter behind [`describe`] and the [`Resources`] text form.
pub(crate) struct Described<'a>(pub(crate) &'a v1::Resource);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(f, "{}({})", r.name, reservation_role(r))?;
        if let Some(p) = r.disk.as_ref().and_then(|d| d.persistence.as_ref()) {
            write!(f, "[{}]", p.id)?;
        }
        if r.revocable.is_some() {
            f.write_str("{REV}")?;
        }
        if r.shared.is_some() {
            f.write_str("<SHARED>")?;
        }
        f.write_str(":")?;
        match Type::try_from(r.r#type) {
            Ok(Type::Scalar) => write!(f, "{}", r.scalar.map_or(0.0, |s| s.value)),
            Ok(Type::Ranges) => {
                f.write_str("[")?;
                for (i, x) in r.ranges.iter().flat_map(|rs| rs.range.iter()).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}-{}", x.begin, x.end)?;
                }
                f.write_str("]")
            }
            Ok(Type::Set) => {
                write!(
                    f,
                    "{{{}}}",
                    r.set.as_ref().map_or(String::new(), |s| s.item.join(", "))
                )
            }
            Ok(Type::Text) => f.write_str("<text>"),
            Err(_) => write!(f, "<type {}>", r.r#type),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::resource::{AllocationInfo, DiskInfo, ReservationInfo, disk_info};

    fn reserved_legacy(name: &str, value: f64, role: &str) -> v1::Resource {
        #[allow(deprecated)]
        v1::Resource {
            role: Some(role.to_owned()),
            ..scalar(name, value)
        }
    }

    fn reserved_refined(name: &str, value: f64, roles: &[&str]) -> v1::Resource {
        v1::Resource {
            reservations: roles
                .iter()
                .map(|r| ReservationInfo {
                    r#type: Some(v1::resource::reservation_info::Type::Dynamic as i32),
                    role: Some((*r).to_owned()),
                    ..Default::default()
                })
                .collect(),
            ..scalar(name, value)
        }
    }

    #[test]
    fn rounding_is_fixed_point_half_away_from_zero() {
        assert_eq!(round_scalar(0.1 + 0.2), 0.3);
        assert_eq!(round_scalar(1.0005), 1.001);
        assert_eq!(round_scalar(2.5004), 2.5);
        assert_eq!(round_scalar(-0.0015), -0.002);
        assert_eq!(round_scalar(1024.0), 1024.0);
        assert!(round_scalar(f64::NAN).is_nan());
        assert_eq!(to_millis(0.1) + to_millis(0.2), to_millis(0.3));
        assert_eq!(from_millis(300), 0.3);
    }

    #[test]
    fn role_comes_from_refined_stack_then_legacy_field() {
        assert_eq!(reservation_role(&scalar("cpus", 1.0)), ANY_ROLE);
        assert_eq!(
            reservation_role(&reserved_legacy("cpus", 1.0, "web")),
            "web"
        );
        assert_eq!(
            reservation_role(&reserved_legacy("cpus", 1.0, "")),
            ANY_ROLE
        );
        assert_eq!(
            reservation_role(&reserved_refined("cpus", 1.0, &["eng", "eng/web"])),
            "eng/web"
        );
        // Pre-refinement format as sent to frameworks without
        // RESERVATION_REFINEMENT: role plus reservation.
        #[allow(deprecated)]
        let pre = v1::Resource {
            role: Some("db".into()),
            reservation: Some(ReservationInfo {
                principal: Some("ops".into()),
                ..Default::default()
            }),
            ..scalar("mem", 10.0)
        };
        assert_eq!(reservation_role(&pre), "db");
    }

    #[test]
    fn same_kind_compares_metadata_not_value() {
        let a = scalar("cpus", 1.0);
        assert!(same_kind(&a, &scalar("cpus", 7.0)));
        assert!(same_kind(&a, &reserved_legacy("cpus", 1.0, "*")));
        assert!(!same_kind(&a, &scalar("mem", 1.0)));
        assert!(!same_kind(&a, &ranges("cpus", &Ranges::span(1, 2))));
        assert!(!same_kind(&a, &reserved_legacy("cpus", 1.0, "web")));
        assert!(!same_kind(&a, &reserved_refined("cpus", 1.0, &["web"])));
        let alloc = v1::Resource {
            allocation_info: Some(AllocationInfo {
                role: Some("web".into()),
            }),
            ..a.clone()
        };
        assert!(!same_kind(&a, &alloc));
        let rev = v1::Resource {
            revocable: Some(Default::default()),
            ..a.clone()
        };
        assert!(!same_kind(&a, &rev));
    }

    #[test]
    fn builders_and_templates() {
        let c = scalar("cpus", 0.1 + 0.2);
        assert_eq!(c.scalar.map(|s| s.value), Some(0.3));
        assert_eq!(c.r#type, Type::Scalar as i32);
        let p = ranges("ports", &Ranges::from_pairs([(31000, 31005)]));
        assert_eq!(p.r#type, Type::Ranges as i32);
        let s = set("labels", ["b".to_string(), "a".into(), "b".into()]);
        assert_eq!(
            s.set.as_ref().map(|s| s.item.clone()),
            Some(vec!["a".into(), "b".into()])
        );

        let tmpl = reserved_refined("cpus", 4.0, &["web"]);
        let w = with_scalar(&tmpl, 1.25);
        assert!(same_kind(&w, &tmpl));
        assert_eq!(w.scalar.map(|s| s.value), Some(1.25));
        let wr = with_ranges(&tmpl, &Ranges::span(5, 6));
        assert_eq!(wr.r#type, Type::Ranges as i32);
        assert!(wr.scalar.is_none());
        assert_eq!(reservation_role(&wr), "web");
        for r in [c, p, s, w, wr] {
            assert_eq!(validate(&r), Ok(()));
        }
    }

    #[test]
    fn validate_says_what_is_wrong() {
        let msg = |r: &v1::Resource| validate(r).unwrap_err().to_string();

        let mut r = scalar("cpus", 1.0);
        r.scalar = Some(v1::value::Scalar { value: -1.0 });
        assert_eq!(
            msg(&r),
            "resource cpus(*):-1 has scalar value -1: expected a finite number >= 0"
        );
        r.scalar = Some(v1::value::Scalar { value: f64::NAN });
        assert!(msg(&r).contains("expected a finite number"));
        r.scalar = None;
        assert_eq!(
            msg(&r),
            "resource cpus(*):0 has type SCALAR but no scalar value: expected a scalar value"
        );

        let mut r = scalar("cpus", 1.0);
        r.ranges = Some(Ranges::span(1, 2).to_proto());
        assert!(
            msg(&r).contains("also carries a ranges value"),
            "{}",
            msg(&r)
        );

        let mut r = ranges("ports", &Ranges::new());
        r.ranges = Some(v1::value::Ranges {
            range: vec![v1::value::Range { begin: 9, end: 3 }],
        });
        assert_eq!(
            msg(&r),
            "resource ports(*):[9-3] has range [9-3]: expected begin <= end"
        );

        let mut r = set("zones", []);
        r.set = Some(v1::value::Set {
            item: vec!["a".into(), "a".into()],
        });
        assert!(msg(&r).contains("set item \"a\" more than once"));

        let mut r = scalar("", 1.0);
        assert!(msg(&r).contains("empty name"));
        r.name = "x".into();
        r.r#type = Type::Text as i32;
        assert!(msg(&r).contains("has value type TEXT"));
        r.r#type = 42;
        assert!(msg(&r).contains("has value type 42"));
    }

    #[test]
    fn indivisible_resources() {
        use disk_info::source::Type as Src;
        let disk = |d: DiskInfo| v1::Resource {
            disk: Some(d),
            ..scalar("disk", 100.0)
        };
        let src = |t: Src, id: Option<&str>| DiskInfo {
            source: Some(disk_info::Source {
                r#type: t as i32,
                id: id.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!is_indivisible(&scalar("disk", 1.0)));
        assert!(!is_indivisible(&disk(src(Src::Path, None))));
        assert!(is_indivisible(&disk(src(Src::Mount, None))));
        assert!(is_indivisible(&disk(src(Src::Block, None))));
        assert!(!is_indivisible(&disk(src(Src::Raw, None))));
        assert!(is_indivisible(&disk(src(Src::Raw, Some("x")))));
        assert!(is_indivisible(&disk(DiskInfo {
            persistence: Some(disk_info::Persistence {
                id: "v1".into(),
                principal: None,
            }),
            ..Default::default()
        })));
        let shared = v1::Resource {
            shared: Some(Default::default()),
            ..scalar("disk", 1.0)
        };
        assert!(is_indivisible(&shared));
    }

    #[test]
    fn describe_uses_mesos_text_form() {
        assert_eq!(describe(&scalar("cpus", 2.5)), "cpus(*):2.5");
        assert_eq!(
            describe(&reserved_legacy("mem", 1024.0, "web")),
            "mem(web):1024"
        );
        assert_eq!(
            describe(&ranges("ports", &Ranges::from_pairs([(1, 2), (5, 5)]))),
            "ports(*):[1-2, 5-5]"
        );
        assert_eq!(
            describe(&set("z", ["a".to_string(), "b".into()])),
            "z(*):{a, b}"
        );
        let rev = v1::Resource {
            revocable: Some(Default::default()),
            ..scalar("cpus", 1.0)
        };
        assert_eq!(describe(&rev), "cpus(*){REV}:1");
    }
}
