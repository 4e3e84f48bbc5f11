//! Mesos `SET` values: unordered collections of distinct strings.
//!
//! Inside [`super::Resources`] set items are kept sorted and without
//! duplicates, so merging, subtracting and containment are single linear
//! walks over two sorted lists. The public helpers accept sets in any order.

use std::cmp::Ordering;

use crate::mesos::proto::v1;

/// The items of `s` sorted, with duplicates removed.
pub fn set_normalised(s: &v1::value::Set) -> v1::value::Set {
    v1::value::Set {
        item: sorted_items(s.item.iter().cloned()),
    }
}

/// Every item in `a` or `b`, sorted.
pub fn set_union(a: &v1::value::Set, b: &v1::value::Set) -> v1::value::Set {
    let mut out = set_normalised(a);
    merge_into(&mut out.item, &set_normalised(b).item);
    out
}

/// Every item in `a` that is not in `b`, sorted.
pub fn set_difference(a: &v1::value::Set, b: &v1::value::Set) -> v1::value::Set {
    let mut out = set_normalised(a);
    remove_from(&mut out.item, &set_normalised(b).item);
    out
}

/// True when every item of `want` is in `have`.
pub fn set_contains_all(have: &v1::value::Set, want: &v1::value::Set) -> bool {
    is_subset(&set_normalised(have).item, &set_normalised(want).item)
}

/// Sorts and de-duplicates.
pub(crate) fn sorted_items(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = items.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Whether a list is sorted and free of duplicates.
pub(crate) fn is_sorted_unique(v: &[String]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

/// Adds the sorted, unique `add` into the sorted, unique `into`.
pub(crate) fn merge_into(into: &mut Vec<String>, add: &[String]) {
    if add.is_empty() {
        return;
    }
    let mut out = Vec::with_capacity(into.len() + add.len());
    let mut rest = add.iter().peekable();
    for cur in into.drain(..) {
        while let Some(a) = rest.next_if(|a| **a < cur) {
            out.push(a.clone());
        }
        if rest.peek().is_some_and(|a| **a == cur) {
            rest.next();
        }
        out.push(cur);
    }
    out.extend(rest.cloned());
    *into = out;
}

/// Removes the sorted, unique `take` from the sorted, unique `from`.
pub(crate) fn remove_from(from: &mut Vec<String>, take: &[String]) {
    if take.is_empty() {
        return;
    }
    let mut j = 0;
    from.retain(|item| {
        while j < take.len() && take[j] < *item {
            j += 1;
        }
        !(j < take.len() && take[j] == *item)
    });
}

/// Whether sorted, unique `want` is a subset of sorted, unique `have`.
pub(crate) fn is_subset(have: &[String], want: &[String]) -> bool {
    let mut h = have.iter();
    'outer: for w in want {
        for x in h.by_ref() {
            match x.cmp(w) {
                Ordering::Less => continue,
                Ordering::Equal => continue 'outer,
                Ordering::Greater => return false,
            }
        }
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn set(items: &[&str]) -> v1::value::Set {
        v1::value::Set {
            item: items.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn helpers_ignore_order_and_duplicates() {
        let a = set(&["b", "a", "b"]);
        let b = set(&["c", "a"]);
        assert_eq!(set_normalised(&a), set(&["a", "b"]));
        assert_eq!(set_union(&a, &b), set(&["a", "b", "c"]));
        assert_eq!(set_difference(&a, &b), set(&["b"]));
        assert!(set_contains_all(&a, &set(&["b"])));
        assert!(!set_contains_all(&a, &b));
    }

    proptest! {
        #[test]
        fn sorted_ops_agree_with_btreeset(
            a in prop::collection::btree_set("[a-e]", 0..5),
            b in prop::collection::btree_set("[a-e]", 0..5),
        ) {
            let va: Vec<String> = a.iter().cloned().collect();
            let vb: Vec<String> = b.iter().cloned().collect();
            let mut u = va.clone();
            merge_into(&mut u, &vb);
            prop_assert!(is_sorted_unique(&u));
            prop_assert_eq!(u.into_iter().collect::<BTreeSet<_>>(), &a | &b);
            let mut d = va.clone();
            remove_from(&mut d, &vb);
            prop_assert_eq!(d.into_iter().collect::<BTreeSet<_>>(), &a - &b);
            prop_assert_eq!(is_subset(&va, &vb), b.is_subset(&a));
        }
    }
}
