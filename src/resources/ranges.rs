//! Sets of `u64` values (port numbers, mostly) kept as sorted interval lists.
//!
//! [`Ranges`] is the in-memory form of a Mesos `Value.Ranges`. It is always
//! normalised: intervals are inclusive, sorted by their start, never overlap
//! and never touch (`[1-2]` and `[3-4]` are stored as `[1-4]`). Because of
//! that, two `Ranges` holding the same values compare equal, and every
//! operation can walk both operands once instead of testing value by value.
//!
//! The offer matcher calls these operations in its inner loop, so the single
//! value updates ([`Ranges::insert`], [`Ranges::remove`]) work in place and
//! the binary operations allocate only their result.

use std::fmt;

use crate::mesos::proto::v1;

use super::ResourceError;

/// A set of `u64` values stored as sorted, non-overlapping, non-adjacent
/// inclusive ranges.
///
/// Build one with [`Ranges::from_pairs`] (pairs may come in either order),
/// [`Ranges::try_from_pairs`] (reversed pairs are an error), from the wire
/// with [`Ranges::from_proto`], or value by value with [`Ranges::insert`] /
/// `collect()`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ranges {
    /// Invariant: for consecutive `(b0, e0)`, `(b1, e1)`: `b0 <= e0`,
    /// `e0 + 1 < b1` (no overlap, no adjacency).
    spans: Vec<(u64, u64)>,
}

impl Ranges {
    /// The empty set.
    pub fn new() -> Self {
        Self { spans: Vec::new() }
    }

    /// The values `begin..=end` (endpoints taken in either order).
    pub fn span(begin: u64, end: u64) -> Self {
        let (b, e) = ordered(begin, end);
        Self {
            spans: vec![(b, e)],
        }
    }

    /// Builds a normalised set from inclusive `(begin, end)` pairs.
    ///
    /// Pairs may overlap, touch or come in any order. A pair whose `begin`
    /// is greater than its `end` is read as the interval between its two
    /// endpoints (it is swapped, never dropped). Use
    /// [`Ranges::try_from_pairs`] to treat such a pair as an error instead.
    pub fn from_pairs(it: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let spans: Vec<(u64, u64)> = it.into_iter().map(|(b, e)| ordered(b, e)).collect();
        Self::from_unsorted(spans)
    }

    /// Like [`Ranges::from_pairs`], but a pair with `begin > end` is
    /// rejected with [`ResourceError::ReversedRange`].
    pub fn try_from_pairs(it: impl IntoIterator<Item = (u64, u64)>) -> Result<Self, ResourceError> {
        let mut spans = Vec::new();
        for (begin, end) in it {
            if begin > end {
                return Err(ResourceError::ReversedRange { begin, end });
            }
            spans.push((begin, end));
        }
        Ok(Self::from_unsorted(spans))
    }

    /// Reads a Mesos `Value.Ranges`, with the same rules as
    /// [`Ranges::from_pairs`] (a range with `begin > end` is swapped).
    /// [`super::validate`] rejects such resources, and
    /// [`super::Resources`] never admits them.
    pub fn from_proto(r: &v1::value::Ranges) -> Self {
        Self::from_pairs(r.range.iter().map(|x| (x.begin, x.end)))
    }

    /// The Mesos wire form: one `Value.Range` per interval, in order.
    pub fn to_proto(&self) -> v1::value::Ranges {
        v1::value::Ranges {
            range: self
                .spans
                .iter()
                .map(|&(begin, end)| v1::value::Range { begin, end })
                .collect(),
        }
    }

    /// The normalised intervals, sorted, as inclusive `(begin, end)` pairs.
    pub fn pairs(&self) -> &[(u64, u64)] {
        &self.spans
    }

    /// The number of values held (saturating at `u64::MAX`, which only the
    /// full range `0..=u64::MAX` would exceed).
    pub fn len(&self) -> u64 {
        self.spans.iter().fold(0u64, |acc, &(b, e)| {
            acc.saturating_add((e - b).saturating_add(1))
        })
    }

    /// True when no value is held.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// True when `v` is one of the values.
    pub fn contains(&self, v: u64) -> bool {
        let i = self.spans.partition_point(|&(_, e)| e < v);
        self.spans.get(i).is_some_and(|&(b, _)| b <= v)
    }

    /// True when every value of `other` is also in `self`.
    pub fn contains_all(&self, other: &Ranges) -> bool {
        spans_contain_all(&self.spans, other.spans.iter().copied())
    }

    /// Adds one value, in place.
    pub fn insert(&mut self, v: u64) {
        let i = self.spans.partition_point(|&(_, e)| e < v);
        // Every span before `i` ends below `v`; span `i` (if any) ends at or
        // above it.
        if let Some(&(b, _)) = self.spans.get(i)
            && b <= v
        {
            return;
        }
        // `e < v` so `e + 1` cannot overflow; `v < b` so `v + 1` cannot either.
        let joins_left = i > 0 && self.spans[i - 1].1 + 1 == v;
        let joins_right = self.spans.get(i).is_some_and(|&(b, _)| b == v + 1);
        match (joins_left, joins_right) {
            (true, true) => {
                self.spans[i - 1].1 = self.spans[i].1;
                self.spans.remove(i);
            }
            (true, false) => self.spans[i - 1].1 = v,
            (false, true) => self.spans[i].0 = v,
            (false, false) => self.spans.insert(i, (v, v)),
        }
    }

    /// Removes one value, in place; returns whether it was present.
    pub fn remove(&mut self, v: u64) -> bool {
        let i = self.spans.partition_point(|&(_, e)| e < v);
        let Some(&(b, e)) = self.spans.get(i) else {
            return false;
        };
        if v < b {
            return false;
        }
        if b == e {
            self.spans.remove(i);
        } else if v == b {
            self.spans[i].0 = v + 1;
        } else if v == e {
            self.spans[i].1 = v - 1;
        } else {
            self.spans[i].1 = v - 1;
            self.spans.insert(i + 1, (v + 1, e));
        }
        true
    }

    /// Adds every value of `begin..=end` (endpoints in either order), in place.
    pub fn insert_span(&mut self, begin: u64, end: u64) {
        let (b, e) = ordered(begin, end);
        // First span that ends at or after `b - 1` (could merge with us) ...
        let lo = self
            .spans
            .partition_point(|&(_, se)| se.saturating_add(1) < b);
        // ... up to the last span that starts at or before `e + 1`.
        let hi = self
            .spans
            .partition_point(|&(sb, _)| sb <= e.saturating_add(1));
        if lo >= hi {
            self.spans.insert(lo, (b, e));
            return;
        }
        let nb = b.min(self.spans[lo].0);
        let ne = e.max(self.spans[hi - 1].1);
        self.spans[lo] = (nb, ne);
        self.spans.drain(lo + 1..hi);
    }

    /// Removes every value of `begin..=end` (endpoints in either order), in
    /// place; returns how many values were removed (saturating).
    pub fn remove_span(&mut self, begin: u64, end: u64) -> u64 {
        let (b, e) = ordered(begin, end);
        let lo = self.spans.partition_point(|&(_, se)| se < b);
        let hi = self.spans.partition_point(|&(sb, _)| sb <= e);
        if lo >= hi {
            return 0;
        }
        let removed = self.spans[lo..hi].iter().fold(0u64, |acc, &(sb, se)| {
            acc.saturating_add((se.min(e) - sb.max(b)).saturating_add(1))
        });
        let (first_b, _) = self.spans[lo];
        let (_, last_e) = self.spans[hi - 1];
        let keep_left = (first_b < b).then(|| (first_b, b - 1));
        let keep_right = (last_e > e).then(|| (e + 1, last_e));
        self.spans
            .splice(lo..hi, keep_left.into_iter().chain(keep_right));
        removed
    }

    /// Every value in `self` or `o`.
    pub fn union(&self, o: &Ranges) -> Ranges {
        let (a, b) = (&self.spans, &o.spans);
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        loop {
            let next = match (a.get(i), b.get(j)) {
                (Some(&x), Some(&y)) => {
                    if x.0 <= y.0 {
                        i += 1;
                        x
                    } else {
                        j += 1;
                        y
                    }
                }
                (Some(&x), None) => {
                    i += 1;
                    x
                }
                (None, Some(&y)) => {
                    j += 1;
                    y
                }
                (None, None) => break,
            };
            push_coalescing(&mut out, next);
        }
        Ranges { spans: out }
    }

    /// Adds every value of `o` to `self`, in place.
    pub fn union_with(&mut self, o: &Ranges) {
        if o.spans.is_empty() {
            return;
        }
        if self.spans.is_empty() {
            self.spans.clone_from(&o.spans);
            return;
        }
        if o.spans.len() == 1 {
            let (b, e) = o.spans[0];
            self.insert_span(b, e);
            return;
        }
        *self = self.union(o);
    }

    /// Every value in `self` but not in `o`.
    pub fn subtract(&self, o: &Ranges) -> Ranges {
        let mut out = Vec::with_capacity(self.spans.len() + o.spans.len());
        let mut j = 0;
        for &(b, e) in &self.spans {
            while j < o.spans.len() && o.spans[j].1 < b {
                j += 1;
            }
            let mut cur = Some(b);
            while let Some(start) = cur {
                let Some(&(ob, oe)) = o.spans.get(j) else {
                    break;
                };
                if ob > e {
                    break;
                }
                if ob > start {
                    out.push((start, ob - 1));
                }
                if oe >= e {
                    // This hole reaches past our span; it may still cut the
                    // next one, so `j` stays.
                    cur = None;
                } else {
                    cur = Some(oe + 1);
                    j += 1;
                }
            }
            if let Some(start) = cur {
                out.push((start, e));
            }
        }
        Ranges { spans: out }
    }

    /// Removes every value of `o` from `self`, in place.
    pub fn subtract_with(&mut self, o: &Ranges) {
        if self.spans.is_empty() || o.spans.is_empty() {
            return;
        }
        if o.spans.len() == 1 {
            let (b, e) = o.spans[0];
            self.remove_span(b, e);
            return;
        }
        *self = self.subtract(o);
    }

    /// Every value in both `self` and `o`.
    pub fn intersect(&self, o: &Ranges) -> Ranges {
        let (a, b) = (&self.spans, &o.spans);
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            let lo = a[i].0.max(b[j].0);
            let hi = a[i].1.min(b[j].1);
            if lo <= hi {
                out.push((lo, hi));
            }
            if a[i].1 < b[j].1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        Ranges { spans: out }
    }

    /// The smallest value, if any.
    pub fn first(&self) -> Option<u64> {
        self.spans.first().map(|&(b, _)| b)
    }

    /// The largest value, if any.
    pub fn last(&self) -> Option<u64> {
        self.spans.last().map(|&(_, e)| e)
    }

    /// Every value, in increasing order.
    pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.spans.iter().flat_map(|&(b, e)| b..=e)
    }

    /// Sorts and coalesces arbitrary well-ordered (`b <= e`) spans.
    fn from_unsorted(mut spans: Vec<(u64, u64)>) -> Self {
        spans.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
        for s in spans {
            push_coalescing(&mut out, s);
        }
        Ranges { spans: out }
    }
}

impl FromIterator<u64> for Ranges {
    fn from_iter<T: IntoIterator<Item = u64>>(iter: T) -> Self {
        Self::from_unsorted(iter.into_iter().map(|v| (v, v)).collect())
    }
}

impl fmt::Display for Ranges {
    /// Mesos's text form: `[31000-31005, 31010-31010]`; `[]` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (b, e)) in self.spans.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{b}-{e}")?;
        }
        f.write_str("]")
    }
}

fn ordered(a: u64, b: u64) -> (u64, u64) {
    if a <= b { (a, b) } else { (b, a) }
}

/// Appends `s` to a sorted-by-start, normalised list, merging it into the
/// last span when they overlap or touch. `s.0` must be >= the last start.
fn push_coalescing(out: &mut Vec<(u64, u64)>, s: (u64, u64)) {
    if let Some(last) = out.last_mut()
        && last.1.saturating_add(1) >= s.0
    {
        last.1 = last.1.max(s.1);
        return;
    }
    out.push(s);
}

/// Whether normalised `have` covers every span of `want` (sorted by start).
fn spans_contain_all(have: &[(u64, u64)], want: impl Iterator<Item = (u64, u64)>) -> bool {
    let mut rest = have;
    for (b, e) in want {
        let i = rest.partition_point(|&(_, he)| he < b);
        rest = &rest[i..];
        match rest.first() {
            // A normalised set holds a contiguous interval only inside one span.
            Some(&(hb, he)) if hb <= b && e <= he => {}
            _ => return false,
        }
    }
    true
}

/// Containment on wire ranges already in normal form (as stored by
/// [`super::Resources`]), without building a [`Ranges`].
pub(crate) fn proto_contains_all(have: &[v1::value::Range], want: &[v1::value::Range]) -> bool {
    let mut rest = have;
    for w in want {
        let i = rest.partition_point(|h| h.end < w.begin);
        rest = &rest[i..];
        match rest.first() {
            Some(h) if h.begin <= w.begin && w.end <= h.end => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn r(p: &[(u64, u64)]) -> Ranges {
        Ranges::from_pairs(p.iter().copied())
    }

    #[test]
    fn normalises_overlapping_adjacent_and_reversed_pairs() {
        let x = r(&[(10, 12), (1, 3), (4, 5), (11, 20), (30, 25)]);
        assert_eq!(x.pairs(), &[(1, 5), (10, 20), (25, 30)]);
        assert_eq!(x.len(), 5 + 11 + 6);
        assert_eq!(x.first(), Some(1));
        assert_eq!(x.last(), Some(30));
    }

    #[test]
    fn try_from_pairs_rejects_reversed() {
        let err = Ranges::try_from_pairs([(1, 2), (9, 3)]).unwrap_err();
        assert!(err.to_string().contains("9-3"), "{err}");
        assert_eq!(
            Ranges::try_from_pairs([(1, 2), (3, 3)]).ok(),
            Some(r(&[(1, 3)]))
        );
    }

    #[test]
    fn display_matches_mesos_text() {
        assert_eq!(
            r(&[(31000, 31005), (31010, 31010)]).to_string(),
            "[31000-31005, 31010-31010]"
        );
        assert_eq!(Ranges::new().to_string(), "[]");
    }

    #[test]
    fn proto_round_trip() {
        let p = v1::value::Ranges {
            range: vec![
                v1::value::Range { begin: 5, end: 9 },
                v1::value::Range { begin: 1, end: 4 },
            ],
        };
        let x = Ranges::from_proto(&p);
        assert_eq!(x.pairs(), &[(1, 9)]);
        assert_eq!(Ranges::from_proto(&x.to_proto()), x);
    }

    #[test]
    fn insert_and_remove_in_place() {
        let mut x = r(&[(1, 3), (7, 9)]);
        assert!(x.remove(8));
        assert_eq!(x.pairs(), &[(1, 3), (7, 7), (9, 9)]);
        assert!(!x.remove(8));
        assert!(x.remove(7));
        assert!(x.remove(1));
        assert_eq!(x.pairs(), &[(2, 3), (9, 9)]);
        x.insert(5);
        x.insert(4);
        assert_eq!(x.pairs(), &[(2, 5), (9, 9)]);
        x.insert(8);
        x.insert(6);
        x.insert(7);
        assert_eq!(x.pairs(), &[(2, 9)]);
        x.insert(3);
        assert_eq!(x.pairs(), &[(2, 9)]);
    }

    #[test]
    fn extremes_do_not_overflow() {
        let mut x = r(&[(0, u64::MAX)]);
        assert_eq!(x.len(), u64::MAX);
        assert!(x.remove(0));
        assert!(x.remove(u64::MAX));
        assert_eq!(x.pairs(), &[(1, u64::MAX - 1)]);
        x.insert(u64::MAX);
        x.insert(0);
        assert_eq!(x.pairs(), &[(0, u64::MAX)]);
        let y = r(&[(u64::MAX, u64::MAX)]).union(&r(&[(0, 0), (u64::MAX - 1, u64::MAX - 1)]));
        assert_eq!(y.pairs(), &[(0, 0), (u64::MAX - 1, u64::MAX)]);
        assert_eq!(x.subtract(&y).pairs(), &[(1, u64::MAX - 2)]);
    }

    #[test]
    fn set_operations() {
        let a = r(&[(1, 10), (20, 30)]);
        let b = r(&[(5, 22), (28, 28)]);
        assert_eq!(a.union(&b).pairs(), &[(1, 30)]);
        assert_eq!(a.subtract(&b).pairs(), &[(1, 4), (23, 27), (29, 30)]);
        assert_eq!(a.intersect(&b).pairs(), &[(5, 10), (20, 22), (28, 28)]);
        assert!(a.contains_all(&r(&[(2, 3), (21, 30)])));
        assert!(!a.contains_all(&r(&[(9, 11)])));
        assert!(a.contains_all(&Ranges::new()));
        assert!(!Ranges::new().contains_all(&r(&[(1, 1)])));
    }

    /// Strategy: a few small spans inside a domain of 64 values.
    fn small_pairs() -> impl Strategy<Value = Vec<(u64, u64)>> {
        prop::collection::vec((0u64..64, 0u64..8), 0..6)
            .prop_map(|v| v.into_iter().map(|(b, w)| (b, (b + w).min(63))).collect())
    }

    fn model(p: &[(u64, u64)]) -> BTreeSet<u64> {
        p.iter().flat_map(|&(b, e)| b..=e).collect()
    }

    fn is_normal(x: &Ranges) -> bool {
        x.pairs().iter().all(|&(b, e)| b <= e) && x.pairs().windows(2).all(|w| w[0].1 + 1 < w[1].0)
    }

    proptest! {
        #[test]
        fn ops_agree_with_btreeset(pa in small_pairs(), pb in small_pairs(), v in 0u64..66) {
            let (a, b) = (Ranges::from_pairs(pa.clone()), Ranges::from_pairs(pb.clone()));
            let (ma, mb) = (model(&pa), model(&pb));
            prop_assert!(is_normal(&a));
            prop_assert_eq!(a.values().collect::<BTreeSet<_>>(), ma.clone());
            prop_assert_eq!(a.len(), ma.len() as u64);
            prop_assert_eq!(a.is_empty(), ma.is_empty());
            prop_assert_eq!(a.first(), ma.first().copied());
            prop_assert_eq!(a.contains(v), ma.contains(&v));
            prop_assert_eq!(a.contains_all(&b), mb.is_subset(&ma));

            let u = a.union(&b);
            prop_assert!(is_normal(&u));
            prop_assert_eq!(u.values().collect::<BTreeSet<_>>(), &ma | &mb);
            let s = a.subtract(&b);
            prop_assert!(is_normal(&s));
            prop_assert_eq!(s.values().collect::<BTreeSet<_>>(), &ma - &mb);
            let i = a.intersect(&b);
            prop_assert!(is_normal(&i));
            prop_assert_eq!(i.values().collect::<BTreeSet<_>>(), &ma & &mb);

            let mut uw = a.clone();
            uw.union_with(&b);
            prop_assert_eq!(&uw, &u);
            let mut sw = a.clone();
            sw.subtract_with(&b);
            prop_assert_eq!(&sw, &s);

            let mut ins = a.clone();
            ins.insert(v);
            prop_assert!(is_normal(&ins));
            let mut mi = ma.clone();
            mi.insert(v);
            prop_assert_eq!(ins.values().collect::<BTreeSet<_>>(), mi);

            let mut rem = a.clone();
            let mut mr = ma.clone();
            prop_assert_eq!(rem.remove(v), mr.remove(&v));
            prop_assert!(is_normal(&rem));
            prop_assert_eq!(rem.values().collect::<BTreeSet<_>>(), mr);

            prop_assert_eq!(ma.iter().copied().collect::<Ranges>(), a.clone());
            prop_assert_eq!(Ranges::from_proto(&a.to_proto()), a);
        }

        #[test]
        fn span_ops_agree_with_btreeset(pa in small_pairs(), x in 0u64..66, y in 0u64..66) {
            let a = Ranges::from_pairs(pa.clone());
            let ma = model(&pa);
            let span: BTreeSet<u64> = (x.min(y)..=x.max(y)).collect();

            let mut ins = a.clone();
            ins.insert_span(x, y);
            prop_assert!(is_normal(&ins));
            prop_assert_eq!(ins.values().collect::<BTreeSet<_>>(), &ma | &span);

            let mut rem = a.clone();
            let n = rem.remove_span(x, y);
            prop_assert!(is_normal(&rem));
            prop_assert_eq!(rem.values().collect::<BTreeSet<_>>(), &ma - &span);
            prop_assert_eq!(n, (&ma & &span).len() as u64);
        }
    }
}
