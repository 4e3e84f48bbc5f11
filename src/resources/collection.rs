//! [`Resources`]: a normalised bag of Mesos resources with `+`, checked `-`
//! and containment.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::{Add, AddAssign};

use crate::mesos::proto::v1;
use v1::value::Type;

use super::ranges::proto_contains_all;
use super::{
    ANY_ROLE, Described, Ranges, ResourceError, from_millis, is_indivisible, reservation_role,
    same_kind, set, to_millis, validate,
};

/// A normalised bag of Mesos resources: resources of the same kind are
/// merged, empty ones dropped.
///
/// Invariants, kept by every operation:
///
/// * every entry passes [`validate`] and is non-empty (scalar > 0 after
///   rounding, at least one range value or set item);
/// * scalars are whole thousandths, ranges are normalised (sorted,
///   coalesced), set items are sorted and distinct;
/// * at most one entry per [kind](super::same_kind), except for
///   [indivisible](super::is_indivisible) resources, which are kept as whole
///   items (adding two equal persistent volumes keeps two entries).
///
/// Entries keep the order in which their kind first appeared, and the
/// metadata of the first resource of that kind. Equality ignores entry order.
///
/// Adding a resource that is not well formed ([`validate`] fails) or is
/// empty does nothing, as in Mesos; use [`Resources::try_from_vec`] to be
/// told about malformed input instead.
#[derive(Clone, Debug, Default)]
pub struct Resources(Vec<v1::Resource>);

impl Resources {
    /// The empty bag.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Normalises a list of resources: merges those of the same kind and
    /// drops empty and malformed ones.
    pub fn from_vec(v: Vec<v1::Resource>) -> Self {
        let mut out = Self(Vec::with_capacity(v.len()));
        for r in v {
            if let Some(c) = canonical(r) {
                out.add_canonical(c);
            }
        }
        out
    }

    /// Like [`Resources::from_vec`], but fails on the first resource that is
    /// not well formed instead of skipping it.
    pub fn try_from_vec(v: Vec<v1::Resource>) -> Result<Self, ResourceError> {
        for r in &v {
            validate(r)?;
        }
        Ok(Self::from_vec(v))
    }

    /// The entries, in first-seen order.
    pub fn iter(&self) -> std::slice::Iter<'_, v1::Resource> {
        self.0.iter()
    }

    /// The entries, in first-seen order.
    pub fn into_vec(self) -> Vec<v1::Resource> {
        self.0
    }

    /// The entries, in first-seen order.
    pub fn as_slice(&self) -> &[v1::Resource] {
        &self.0
    }

    /// True when the bag holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of entries (kinds, plus one per indivisible item).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds one resource (ignored if malformed or empty).
    ///
    /// Because `Resources` also implements [`Add`], method-call syntax on an
    /// owned value (`res.add(&r)`) resolves to `Add::add`; write `res += &r`
    /// or `Resources::add(&mut res, &r)` instead.
    pub fn add(&mut self, r: &v1::Resource) {
        if let Some(c) = canonical(r.clone()) {
            self.add_canonical(c);
        }
    }

    /// Adds every resource of `o`.
    pub fn add_all(&mut self, o: &Resources) {
        for r in &o.0 {
            self.add_ref_canonical(r);
        }
    }

    /// Removes what `o` holds; `None` (and `self` unchanged) if `self` does
    /// not contain all of it.
    pub fn checked_sub(&self, o: &Resources) -> Option<Resources> {
        let mut out = self.clone();
        for r in &o.0 {
            if !out.sub_canonical(r) {
                return None;
            }
        }
        Some(out)
    }

    /// Removes one resource; `None` if `self` does not contain it. A
    /// malformed or empty `r` removes nothing and succeeds.
    pub fn checked_sub_one(&self, r: &v1::Resource) -> Option<Resources> {
        let mut out = self.clone();
        match canonical(r.clone()) {
            Some(c) if !out.sub_canonical(&c) => None,
            _ => Some(out),
        }
    }

    /// True when `self` holds everything `o` holds, kind by kind: for each
    /// kind, at least as much scalar, every range value, every set item; and
    /// for indivisible resources, at least as many equal items.
    pub fn contains(&self, o: &Resources) -> bool {
        o.0.iter().enumerate().all(|(i, want)| {
            if is_indivisible(want) {
                // Count each distinct item once, at its first occurrence.
                if o.0[..i].iter().any(|x| equal(x, want)) {
                    return true;
                }
                let need = o.0.iter().filter(|x| equal(x, want)).count();
                self.0.iter().filter(|x| equal(x, want)).count() >= need
            } else {
                self.0
                    .iter()
                    .find(|have| same_kind(have, want))
                    .is_some_and(|have| value_contains(have, want))
            }
        })
    }

    /// True when `self` holds `r` (a malformed or empty `r` is always held).
    pub fn contains_resource(&self, r: &v1::Resource) -> bool {
        match canonical(r.clone()) {
            Some(c) => self.contains(&Resources(vec![c])),
            None => true,
        }
    }

    /// Drops reservation and allocation metadata (legacy `role`,
    /// `reservation`, `reservations`, `allocation_info`) so resources of
    /// different roles merge; for totals.
    pub fn flatten(&self) -> Resources {
        let mut out = Resources(Vec::with_capacity(self.0.len()));
        for r in &self.0 {
            let mut r = r.clone();
            #[allow(deprecated)]
            {
                r.role = None;
            }
            r.reservation = None;
            r.reservations.clear();
            r.allocation_info = None;
            out.add_canonical(r);
        }
        out
    }

    /// The sum of every `SCALAR` resource called `name`, over all roles.
    pub fn scalar(&self, name: &str) -> f64 {
        let millis = self
            .named(name, Type::Scalar)
            .map(|r| r.scalar.map_or(0, |s| to_millis(s.value)))
            .fold(0i64, i64::saturating_add);
        from_millis(millis)
    }

    /// The union of every `RANGES` resource called `name`, over all roles.
    pub fn ranges(&self, name: &str) -> Ranges {
        let mut out = Ranges::new();
        for r in self.named(name, Type::Ranges) {
            if let Some(rs) = &r.ranges {
                out.union_with(&Ranges::from_proto(rs));
            }
        }
        out
    }

    /// The union of every `SET` resource called `name`, over all roles.
    pub fn set_items(&self, name: &str) -> BTreeSet<String> {
        self.named(name, Type::Set)
            .filter_map(|r| r.set.as_ref())
            .flat_map(|s| s.item.iter().cloned())
            .collect()
    }

    /// Only the resources whose [`reservation_role`] is `role` (an empty
    /// `role` means [`ANY_ROLE`]).
    pub fn for_role(&self, role: &str) -> Resources {
        let role = if role.is_empty() { ANY_ROLE } else { role };
        Resources(
            self.0
                .iter()
                .filter(|r| reservation_role(r) == role)
                .cloned()
                .collect(),
        )
    }

    fn named(&self, name: &str, ty: Type) -> impl Iterator<Item = &v1::Resource> {
        self.0
            .iter()
            .filter(move |r| r.name == name && r.r#type == ty as i32)
    }

    /// Adds an entry already in canonical form.
    fn add_canonical(&mut self, r: v1::Resource) {
        if let Some(have) = self.mergeable_mut(&r) {
            merge_value(have, &r);
        } else {
            self.0.push(r);
        }
    }

    /// Adds an entry already in canonical form, cloning only if it is new.
    fn add_ref_canonical(&mut self, r: &v1::Resource) {
        if let Some(have) = self.mergeable_mut(r) {
            merge_value(have, r);
        } else {
            self.0.push(r.clone());
        }
    }

    fn mergeable_mut(&mut self, r: &v1::Resource) -> Option<&mut v1::Resource> {
        if is_indivisible(r) {
            return None;
        }
        self.0.iter_mut().find(|have| same_kind(have, r))
    }

    /// Subtracts an entry in canonical form; false (and nothing changed) if
    /// it is not contained.
    fn sub_canonical(&mut self, want: &v1::Resource) -> bool {
        if is_indivisible(want) {
            return match self.0.iter().position(|have| equal(have, want)) {
                Some(i) => {
                    self.0.remove(i);
                    true
                }
                None => false,
            };
        }
        let Some(i) = self.0.iter().position(|have| same_kind(have, want)) else {
            return false;
        };
        let have = &mut self.0[i];
        let now_empty = match Type::try_from(want.r#type) {
            Ok(Type::Scalar) => {
                let left = scalar_millis(have) - scalar_millis(want);
                if left < 0 {
                    return false;
                }
                have.scalar = Some(v1::value::Scalar {
                    value: from_millis(left),
                });
                left == 0
            }
            Ok(Type::Ranges) => {
                let (Some(h), Some(w)) = (&have.ranges, &want.ranges) else {
                    return false;
                };
                if !proto_contains_all(&h.range, &w.range) {
                    return false;
                }
                let left = Ranges::from_proto(h).subtract(&Ranges::from_proto(w));
                have.ranges = Some(left.to_proto());
                left.is_empty()
            }
            Ok(Type::Set) => {
                let (Some(h), Some(w)) = (&mut have.set, &want.set) else {
                    return false;
                };
                if !set::is_subset(&h.item, &w.item) {
                    return false;
                }
                set::remove_from(&mut h.item, &w.item);
                h.item.is_empty()
            }
            // Canonical entries are never of another type.
            Ok(Type::Text) | Err(_) => return false,
        };
        if now_empty {
            self.0.remove(i);
        }
        true
    }
}

/// Validates `r` and brings its value into canonical form; `None` when it is
/// malformed or empty.
fn canonical(mut r: v1::Resource) -> Option<v1::Resource> {
    validate(&r).ok()?;
    match Type::try_from(r.r#type).ok()? {
        Type::Scalar => {
            let m = scalar_millis(&r);
            if m <= 0 {
                return None;
            }
            r.scalar = Some(v1::value::Scalar {
                value: from_millis(m),
            });
        }
        Type::Ranges => {
            let rs = Ranges::from_proto(r.ranges.as_ref()?);
            if rs.is_empty() {
                return None;
            }
            r.ranges = Some(rs.to_proto());
        }
        Type::Set => {
            let s = r.set.as_mut()?;
            if !set::is_sorted_unique(&s.item) {
                s.item = set::sorted_items(std::mem::take(&mut s.item));
            }
            if s.item.is_empty() {
                return None;
            }
        }
        Type::Text => return None,
    }
    Some(r)
}

fn scalar_millis(r: &v1::Resource) -> i64 {
    r.scalar.map_or(0, |s| to_millis(s.value))
}

/// Adds the value of `add` into `have` (same kind, both canonical).
fn merge_value(have: &mut v1::Resource, add: &v1::Resource) {
    match Type::try_from(have.r#type) {
        Ok(Type::Scalar) => {
            let m = scalar_millis(have).saturating_add(scalar_millis(add));
            have.scalar = Some(v1::value::Scalar {
                value: from_millis(m),
            });
        }
        Ok(Type::Ranges) => {
            if let (Some(h), Some(a)) = (&mut have.ranges, &add.ranges) {
                let mut merged = Ranges::from_proto(h);
                merged.union_with(&Ranges::from_proto(a));
                *h = merged.to_proto();
            }
        }
        Ok(Type::Set) => {
            if let (Some(h), Some(a)) = (&mut have.set, &add.set) {
                set::merge_into(&mut h.item, &a.item);
            }
        }
        Ok(Type::Text) | Err(_) => {}
    }
}

/// Whether canonical `have` holds canonical `want` of the same kind.
fn value_contains(have: &v1::Resource, want: &v1::Resource) -> bool {
    match Type::try_from(want.r#type) {
        Ok(Type::Scalar) => scalar_millis(have) >= scalar_millis(want),
        Ok(Type::Ranges) => match (&have.ranges, &want.ranges) {
            (Some(h), Some(w)) => proto_contains_all(&h.range, &w.range),
            (_, None) => true,
            (None, Some(_)) => false,
        },
        Ok(Type::Set) => match (&have.set, &want.set) {
            (Some(h), Some(w)) => set::is_subset(&h.item, &w.item),
            (_, None) => true,
            (None, Some(_)) => false,
        },
        Ok(Type::Text) | Err(_) => false,
    }
}

/// Same kind and same value (both canonical).
fn equal(a: &v1::Resource, b: &v1::Resource) -> bool {
    same_kind(a, b) && value_contains(a, b) && value_contains(b, a)
}

impl PartialEq for Resources {
    /// Equal when both hold the same resources, whatever the entry order.
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.contains(other) && other.contains(self)
    }
}

impl fmt::Display for Resources {
    /// Mesos's text form, e.g. `cpus(*):2.5; mem(*):1024; ports(*):[31000-32000]`,
    /// with the role as given by [`reservation_role`]. Empty bags print as
    /// nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}", Described(r))?;
        }
        Ok(())
    }
}

impl Add<&Resources> for &Resources {
    type Output = Resources;
    fn add(self, rhs: &Resources) -> Resources {
        let mut out = self.clone();
        out.add_all(rhs);
        out
    }
}

impl Add<&Resources> for Resources {
    type Output = Resources;
    fn add(mut self, rhs: &Resources) -> Resources {
        self.add_all(rhs);
        self
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(mut self, rhs: Resources) -> Resources {
        self.add_all(&rhs);
        self
    }
}

impl AddAssign<&Resources> for Resources {
    fn add_assign(&mut self, rhs: &Resources) {
        self.add_all(rhs);
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, rhs: Resources) {
        self.add_all(&rhs);
    }
}

impl AddAssign<&v1::Resource> for Resources {
    fn add_assign(&mut self, rhs: &v1::Resource) {
        self.add(rhs);
    }
}

impl FromIterator<v1::Resource> for Resources {
    fn from_iter<T: IntoIterator<Item = v1::Resource>>(iter: T) -> Self {
        let mut out = Resources::new();
        out.extend(iter);
        out
    }
}

impl Extend<v1::Resource> for Resources {
    fn extend<T: IntoIterator<Item = v1::Resource>>(&mut self, iter: T) {
        for r in iter {
            if let Some(c) = canonical(r) {
                self.add_canonical(c);
            }
        }
    }
}

impl From<Vec<v1::Resource>> for Resources {
    fn from(v: Vec<v1::Resource>) -> Self {
        Self::from_vec(v)
    }
}

impl<'a> IntoIterator for &'a Resources {
    type Item = &'a v1::Resource;
    type IntoIter = std::slice::Iter<'a, v1::Resource>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Resources {
    type Item = v1::Resource;
    type IntoIter = std::vec::IntoIter<v1::Resource>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ranges, scalar, with_scalar};
    use super::*;
    use proptest::prelude::*;
    use v1::resource::{AllocationInfo, DiskInfo, ReservationInfo, disk_info};

    fn role(r: v1::Resource, role: &str) -> v1::Resource {
        #[allow(deprecated)]
        v1::Resource {
            role: Some(role.to_owned()),
            ..r
        }
    }

    fn refined(r: v1::Resource, roles: &[&str]) -> v1::Resource {
        v1::Resource {
            reservations: roles
                .iter()
                .map(|x| ReservationInfo {
                    r#type: Some(v1::resource::reservation_info::Type::Static as i32),
                    role: Some((*x).to_owned()),
                    ..Default::default()
                })
                .collect(),
            ..r
        }
    }

    fn allocated(r: v1::Resource, role: &str) -> v1::Resource {
        v1::Resource {
            allocation_info: Some(AllocationInfo {
                role: Some(role.to_owned()),
            }),
            ..r
        }
    }

    fn items(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn rs(v: Vec<v1::Resource>) -> Resources {
        Resources::from_vec(v)
    }

    fn mount(id: &str, size: f64) -> v1::Resource {
        v1::Resource {
            disk: Some(DiskInfo {
                source: Some(disk_info::Source {
                    r#type: disk_info::source::Type::Mount as i32,
                    id: Some(id.to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..scalar("disk", size)
        }
    }

    #[test]
    fn merges_same_kind_and_drops_empty() {
        let r = rs(vec![
            scalar("cpus", 1.0),
            scalar("mem", 0.0),
            scalar("cpus", 0.5),
            ranges("ports", &Ranges::from_pairs([(31000, 31005)])),
            ranges("ports", &Ranges::from_pairs([(31006, 31010)])),
            ranges("ports", &Ranges::new()),
            super::super::set("zones", items(&["b", "a"])),
            super::super::set("zones", items(&["c", "a"])),
            scalar("gpus", 0.0004),
        ]);
        assert_eq!(r.len(), 3);
        assert_eq!(
            r.to_string(),
            "cpus(*):1.5; ports(*):[31000-31010]; zones(*):{a, b, c}"
        );
        assert_eq!(r.scalar("cpus"), 1.5);
        assert_eq!(r.scalar("mem"), 0.0);
        assert_eq!(r.ranges("ports"), Ranges::from_pairs([(31000, 31010)]));
        assert_eq!(
            r.set_items("zones"),
            items(&["a", "b", "c"]).into_iter().collect()
        );
    }

    #[test]
    fn malformed_resources_are_skipped_or_reported() {
        let mut bad = scalar("cpus", 1.0);
        bad.scalar = Some(v1::value::Scalar { value: -3.0 });
        let r = rs(vec![bad.clone(), scalar("mem", 64.0)]);
        assert_eq!(r.to_string(), "mem(*):64");
        let err = Resources::try_from_vec(vec![scalar("mem", 1.0), bad]).unwrap_err();
        assert!(
            err.to_string().contains("expected a finite number >= 0"),
            "{err}"
        );
    }

    #[test]
    fn scalar_arithmetic_is_fixed_point() {
        let mut r = rs(vec![scalar("cpus", 0.1)]);
        r += &scalar("cpus", 0.2);
        assert_eq!(r.scalar("cpus"), 0.3);
        let left = r.checked_sub(&rs(vec![scalar("cpus", 0.3)])).unwrap();
        assert!(left.is_empty(), "subtracting to zero removes: {left}");
        let mut many = Resources::new();
        for _ in 0..10 {
            Resources::add(&mut many, &scalar("cpus", 0.1));
        }
        assert_eq!(many.scalar("cpus"), 1.0);
        assert_eq!(many, rs(vec![scalar("cpus", 1.0)]));
    }

    #[test]
    fn roles_never_merge() {
        let r = rs(vec![
            scalar("cpus", 1.0),
            role(scalar("cpus", 2.0), "web"),
            refined(scalar("cpus", 3.0), &["db"]),
            allocated(scalar("cpus", 4.0), "web"),
            role(scalar("cpus", 0.5), "*"),
        ]);
        assert_eq!(r.len(), 4);
        assert_eq!(
            r.to_string(),
            "cpus(*):1.5; cpus(web):2; cpus(db):3; cpus(*):4"
        );
        assert_eq!(r.scalar("cpus"), 10.5);
        assert_eq!(r.for_role("web").scalar("cpus"), 2.0);
        assert_eq!(r.for_role("*").scalar("cpus"), 5.5);
        assert_eq!(r.for_role("").scalar("cpus"), 5.5);
        assert_eq!(r.for_role("db").len(), 1);
        let flat = r.flatten();
        assert_eq!(flat.len(), 1);
        assert_eq!(flat.to_string(), "cpus(*):10.5");

        // Unreserved cpus cannot pay for reserved ones.
        assert!(!r.contains(&rs(vec![role(scalar("cpus", 2.5), "web")])));
        assert!(r.contains(&rs(vec![role(scalar("cpus", 2.0), "web")])));
        assert_eq!(
            r.checked_sub(&rs(vec![refined(scalar("cpus", 3.5), &["db"])])),
            None
        );
    }

    #[test]
    fn ranges_and_sets_subtract_by_difference() {
        let r = rs(vec![
            ranges("ports", &Ranges::from_pairs([(31000, 31010)])),
            super::super::set("zones", items(&["a", "b"])),
        ]);
        let take = rs(vec![
            ranges("ports", &Ranges::from_pairs([(31003, 31004)])),
            super::super::set("zones", items(&["a"])),
        ]);
        let left = r.checked_sub(&take).unwrap();
        assert_eq!(
            left.to_string(),
            "ports(*):[31000-31002, 31005-31010]; zones(*):{b}"
        );
        assert!(left.checked_sub(&take).is_none());
        assert_eq!(&left + &take, r);
        let all = r.checked_sub(&r).unwrap();
        assert!(all.is_empty());
    }

    #[test]
    fn overlapping_ranges_and_sets_add_by_union() {
        let a = rs(vec![
            ranges("ports", &Ranges::from_pairs([(1, 5)])),
            super::super::set("zones", items(&["a", "b"])),
        ]);
        let b = rs(vec![
            ranges("ports", &Ranges::from_pairs([(4, 8)])),
            super::super::set("zones", items(&["b", "c"])),
        ]);
        let s = &a + &b;
        assert_eq!(s.to_string(), "ports(*):[1-8]; zones(*):{a, b, c}");
        // Shared values were held once, so taking `b` back also takes them.
        assert_eq!(
            s.checked_sub(&b).unwrap().to_string(),
            "ports(*):[1-3]; zones(*):{a}"
        );
    }

    #[test]
    fn templates_keep_kind() {
        let offered = allocated(refined(scalar("mem", 1024.0), &["web"]), "web");
        let r = rs(vec![offered.clone()]);
        let want = rs(vec![with_scalar(&offered, 64.0)]);
        let left = r.checked_sub(&want).unwrap();
        assert_eq!(left.scalar("mem"), 960.0);
        assert_eq!(reservation_role(&left.as_slice()[0]), "web");
        assert!(r.checked_sub(&rs(vec![scalar("mem", 64.0)])).is_none());
    }

    #[test]
    fn indivisible_resources_stay_whole() {
        let a = mount("d1", 100.0);
        let r = rs(vec![a.clone(), a.clone(), mount("d2", 50.0)]);
        assert_eq!(r.len(), 3);
        assert_eq!(r.scalar("disk"), 250.0);
        assert!(r.contains(&rs(vec![a.clone(), a.clone()])));
        assert!(!r.contains(&rs(vec![a.clone(), a.clone(), a.clone()])));
        // A part of a mount disk cannot be taken.
        assert!(r.checked_sub(&rs(vec![mount("d1", 10.0)])).is_none());
        let left = r.checked_sub(&rs(vec![a.clone()])).unwrap();
        assert_eq!(left.scalar("disk"), 150.0);
        assert!(r.contains_resource(&a));
        assert!(!left.contains_resource(&mount("d3", 1.0)));
    }

    #[test]
    fn equality_ignores_order_and_operators_work() {
        let a = rs(vec![scalar("cpus", 1.0), scalar("mem", 2.0)]);
        let b = rs(vec![scalar("mem", 2.0), scalar("cpus", 1.0)]);
        assert_eq!(a, b);
        assert_ne!(a, rs(vec![scalar("cpus", 1.0)]));
        let mut c = a.clone() + b.clone();
        assert_eq!(c.scalar("cpus"), 2.0);
        c += &a;
        c += &scalar("gpus", 1.0);
        assert_eq!(c.scalar("mem"), 6.0);
        let collected: Resources = c.iter().cloned().collect();
        assert_eq!(collected, c);
        assert_eq!((&a + &b).into_vec().len(), 2);
        assert_eq!(Resources::from(vec![scalar("x", 1.0)]).as_slice().len(), 1);
        assert_eq!((&a).into_iter().count(), 2);
        assert!(a.checked_sub_one(&scalar("cpus", 1.5)).is_none());
        assert_eq!(
            a.checked_sub_one(&scalar("cpus", 1.0)),
            Some(rs(vec![scalar("mem", 2.0)]))
        );
        assert_eq!(Resources::new().to_string(), "");
    }

    // ---- property tests ----

    fn any_meta() -> impl Strategy<Value = fn(v1::Resource) -> v1::Resource> {
        prop_oneof![
            Just((|r| r) as fn(v1::Resource) -> v1::Resource),
            Just((|r| role(r, "*")) as fn(v1::Resource) -> v1::Resource),
            Just((|r| role(r, "web")) as fn(v1::Resource) -> v1::Resource),
            Just((|r| refined(r, &["eng", "eng/db"])) as fn(v1::Resource) -> v1::Resource),
            Just((|r| allocated(r, "web")) as fn(v1::Resource) -> v1::Resource),
        ]
    }

    fn any_resource() -> impl Strategy<Value = v1::Resource> {
        let value = prop_oneof![
            (prop_oneof![Just("cpus"), Just("mem")], 0i64..5000)
                .prop_map(|(n, m)| scalar(n, from_millis(m))),
            prop::collection::vec((0u64..40, 0u64..5), 0..4).prop_map(|v| ranges(
                "ports",
                &Ranges::from_pairs(v.into_iter().map(|(b, w)| (b, b + w)))
            )),
            prop::collection::vec("[a-d]", 0..3).prop_map(|v| super::super::set("zones", v)),
            (0usize..2, 1i64..4).prop_map(|(i, s)| mount(["d1", "d2"][i], s as f64)),
        ];
        (value, any_meta()).prop_map(|(r, meta)| meta(r))
    }

    fn any_resources() -> impl Strategy<Value = Resources> {
        prop::collection::vec(any_resource(), 0..8).prop_map(Resources::from_vec)
    }

    /// `b` without the range values and set items `a` has of the same kind.
    fn disjoint_values(b: &Resources, a: &Resources) -> Resources {
        b.iter()
            .map(|r| match a.iter().find(|x| same_kind(x, r)) {
                Some(x) if r.ranges.is_some() => {
                    let left = Ranges::from_proto(r.ranges.as_ref().unwrap())
                        .subtract(&Ranges::from_proto(x.ranges.as_ref().unwrap()));
                    super::super::with_ranges(r, &left)
                }
                Some(x) if r.set.is_some() => {
                    let have = &x.set.as_ref().unwrap().item;
                    let items = r
                        .set
                        .as_ref()
                        .unwrap()
                        .item
                        .iter()
                        .filter(|i| !have.contains(i));
                    super::super::with_set(r, items.cloned())
                }
                _ => r.clone(),
            })
            .collect()
    }

    fn names() -> [&'static str; 4] {
        ["cpus", "mem", "ports", "zones"]
    }

    proptest! {
        #[test]
        fn sum_contains_both(a in any_resources(), b in any_resources()) {
            let s = &a + &b;
            prop_assert!(s.contains(&a), "{} does not contain {}", s, a);
            prop_assert!(s.contains(&b), "{} does not contain {}", s, b);
            prop_assert!(s.contains(&Resources::new()));
            prop_assert_eq!(&b + &a, s);
        }

        #[test]
        fn add_then_sub_is_identity(a in any_resources(), b in any_resources()) {
            // Ranges and sets add by union, so values both sides hold would
            // be taken away twice; take them out of `b` first.
            let b = disjoint_values(&b, &a);
            let s = &a + &b;
            prop_assert_eq!(s.checked_sub(&b), Some(a.clone()));
            prop_assert_eq!(s.checked_sub(&a), Some(b.clone()));
            prop_assert_eq!(a.checked_sub(&a).map(|x| x.is_empty()), Some(true));
        }

        #[test]
        fn sub_of_more_than_held_is_none(a in any_resources(), extra in any_resources()) {
            // Range values and set items `a` already has would not add anything.
            let extra = disjoint_values(&extra, &a);
            if extra.is_empty() {
                return Ok(());
            }
            let more = &a + &extra;
            prop_assert_eq!(a.checked_sub(&more), None);
            prop_assert!(!a.contains(&more));
        }

        #[test]
        fn contains_agrees_with_checked_sub(a in any_resources(), b in any_resources()) {
            prop_assert_eq!(a.contains(&b), a.checked_sub(&b).is_some());
            if let Some(left) = a.checked_sub(&b) {
                prop_assert_eq!(&left + &b, a);
            }
        }

        #[test]
        fn normal_form_is_order_independent(v in prop::collection::vec(any_resource(), 0..8)) {
            let fwd = Resources::from_vec(v.clone());
            let mut rev = v.clone();
            rev.reverse();
            prop_assert_eq!(&fwd, &Resources::from_vec(rev));
            // Normalising again changes nothing.
            let again = Resources::from_vec(fwd.clone().into_vec());
            prop_assert_eq!(again.as_slice(), fwd.as_slice());
            for r in &fwd {
                prop_assert!(validate(r).is_ok());
            }
        }

        #[test]
        fn flatten_preserves_per_name_totals(a in any_resources()) {
            let f = a.flatten();
            for n in names() {
                prop_assert_eq!(f.scalar(n), a.scalar(n));
                prop_assert_eq!(f.ranges(n), a.ranges(n));
                prop_assert_eq!(f.set_items(n), a.set_items(n));
            }
            prop_assert_eq!(f.scalar("disk"), a.scalar("disk"));
            for r in &f {
                prop_assert_eq!(reservation_role(r), ANY_ROLE);
                prop_assert!(r.allocation_info.is_none());
            }
        }

        #[test]
        fn scalar_totals_are_exact(ms in prop::collection::vec(1i64..100_000, 0..20)) {
            let r: Resources = ms.iter().map(|&m| scalar("cpus", from_millis(m))).collect();
            prop_assert_eq!(r.scalar("cpus"), from_millis(ms.iter().sum()));
        }

        #[test]
        fn for_role_partitions(a in any_resources()) {
            let mut back = Resources::new();
            for role in ["*", "web", "eng/db"] {
                back += a.for_role(role);
            }
            prop_assert_eq!(back, a);
        }
    }
}
