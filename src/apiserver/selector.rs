//! Label and field selectors as clients send them in `?labelSelector=` and
//! `?fieldSelector=`, with Kubernetes's grammar and matching rules.
//!
//! Label selectors: comma-separated requirements, each one of
//! `key=value`, `key==value`, `key!=value`, `key in (a,b)`,
//! `key notin (a,b)`, `key`, `!key`, `key>N`, `key<N`. A `!=` or `notin`
//! requirement also matches objects without the label, as in Kubernetes.
//! Field selectors: `field=value`, `field==value`, `field!=value`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// A selector that does not parse; the message names the part and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {input:?}: {message}")]
pub struct SelectorError {
    /// The whole selector.
    pub input: String,
    /// What is wrong.
    pub message: String,
}

impl SelectorError {
    fn new(input: &str, message: String) -> Self {
        SelectorError {
            input: input.to_string(),
            message,
        }
    }
}

/// What a label requirement asks of one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `key=v` or `key==v`.
    Equals(String),
    /// `key!=v` (true when the label is absent).
    NotEquals(String),
    /// `key in (a,b)`.
    In(BTreeSet<String>),
    /// `key notin (a,b)` (true when the label is absent).
    NotIn(BTreeSet<String>),
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>N`: the label is an integer greater than N.
    GreaterThan(i64),
    /// `key<N`: the label is an integer less than N.
    LessThan(i64),
}

/// One requirement on one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// What it asks.
    pub op: Op,
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match &self.op {
            Op::Equals(want) => v == Some(want),
            Op::NotEquals(no) => v != Some(no),
            Op::In(set) => v.is_some_and(|v| set.contains(v)),
            Op::NotIn(set) => v.is_none_or(|v| !set.contains(v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::GreaterThan(n) => v
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            Op::LessThan(n) => v
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
        match &self.op {
            Op::Equals(v) => write!(f, "{}={v}", self.key),
            Op::NotEquals(v) => write!(f, "{}!={v}", self.key),
            Op::In(s) => write!(f, "{} in ({})", self.key, set(s)),
            Op::NotIn(s) => write!(f, "{} notin ({})", self.key, set(s)),
            Op::Exists => write!(f, "{}", self.key),
            Op::DoesNotExist => write!(f, "!{}", self.key),
            Op::GreaterThan(n) => write!(f, "{}>{n}", self.key),
            Op::LessThan(n) => write!(f, "{}<{n}", self.key),
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    /// All must hold.
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// Splits at top-level commas (not inside parentheses).
fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unmatched ')'".into());
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unclosed '('".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn name_part_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 characters.
pub fn valid_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => {
            prefix.len() <= 253
                && !prefix.is_empty()
                && prefix.split('.').all(|l| {
                    !l.is_empty()
                        && l.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
                && name_part_ok(name, 63)
        }
        None => name_part_ok(key, 63),
    }
}

/// A label value: empty, or at most 63 characters of `[A-Za-z0-9._-]`
/// starting and ending alphanumeric.
pub fn valid_value(v: &str) -> bool {
    v.is_empty() || name_part_ok(v, 63)
}

fn requirement(part: &str) -> Result<Requirement, String> {
    let p = part.trim();
    if p.is_empty() {
        return Err("empty requirement".into());
    }
    let key_ok = |k: &str| -> Result<String, String> {
        let k = k.trim();
        if valid_key(k) {
            Ok(k.to_string())
        } else {
            Err(format!("{k:?} is not a valid label key"))
        }
    };
    let value_ok = |v: &str| -> Result<String, String> {
        let v = v.trim();
        if valid_value(v) {
            Ok(v.to_string())
        } else {
            Err(format!("{v:?} is not a valid label value"))
        }
    };
    if let Some(k) = p.strip_prefix('!') {
        return Ok(Requirement {
            key: key_ok(k)?,
            op: Op::DoesNotExist,
        });
    }
    for (word, negate) in [(" notin ", true), (" in ", false)] {
        if let Some(i) = p.find(word) {
            let key = key_ok(&p[..i])?;
            let rest = p[i + word.len()..].trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("{rest:?}: expected a parenthesised list of values"))?;
            let mut set = BTreeSet::new();
            for v in inner.split(',') {
                set.insert(value_ok(v)?);
            }
            return Ok(Requirement {
                key,
                op: if negate { Op::NotIn(set) } else { Op::In(set) },
            });
        }
    }
    for (tok, which) in [("!=", 0), ("==", 1), ("=", 1), (">", 2), ("<", 3)] {
        if let Some(i) = p.find(tok) {
            let key = key_ok(&p[..i])?;
            let raw = &p[i + tok.len()..];
            return Ok(Requirement {
                key,
                op: match which {
                    0 => Op::NotEquals(value_ok(raw)?),
                    1 => Op::Equals(value_ok(raw)?),
                    n => {
                        let num: i64 = raw
                            .trim()
                            .parse()
                            .map_err(|_| format!("{raw:?}: expected an integer after '{tok}'"))?;
                        if n == 2 {
                            Op::GreaterThan(num)
                        } else {
                            Op::LessThan(num)
                        }
                    }
                },
            });
        }
    }
    Ok(Requirement {
        key: key_ok(p)?,
        op: Op::Exists,
    })
}

impl FromStr for LabelSelector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |message: String| SelectorError::new(s, message);
        if s.trim().is_empty() {
            return Ok(LabelSelector::default());
        }
        let requirements = split_top(s)
            .map_err(err)?
            .into_iter()
            .map(requirement)
            .collect::<Result<_, _>>()
            .map_err(err)?;
        Ok(LabelSelector { requirements })
    }
}

/// One field requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field path, e.g. `spec.nodeName`.
    pub field: String,
    /// The value compared with.
    pub value: String,
    /// `!=` rather than `=`.
    pub negated: bool,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    /// All must hold.
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Whether an object satisfies every requirement; `field` reads a field
    /// path off it (an absent field reads as the empty string, as in Kubernetes).
    pub fn matches(&self, field: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let v = field(&r.field).unwrap_or_default();
            (v == r.value) != r.negated
        })
    }

    /// The field paths used, for checking them against what a resource supports.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.requirements.iter().map(|r| r.field.as_str())
    }
}

impl FromStr for FieldSelector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |message: String| SelectorError::new(s, message);
        if s.trim().is_empty() {
            return Ok(FieldSelector::default());
        }
        let mut requirements = Vec::new();
        for part in s.split(',') {
            let (field, value, negated) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, false)
            } else {
                return Err(err(format!(
                    "{part:?}: expected field=value, field==value or field!=value"
                )));
            };
            let field = field.trim();
            if field.is_empty() {
                return Err(err(format!("{part:?}: missing field name")));
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(FieldSelector { requirements })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_operator_matches_as_kubernetes_does() {
        let l = labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("rank", "7"),
            ("k8s.mesosphere.io/attribute-rack", "b"),
        ]);
        for (s, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web, api)", true),
            ("app notin (web)", false),
            ("missing notin (web)", true),
            ("missing in (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("rank>5", true),
            ("rank<5", false),
            ("app>5", false),
            ("app=web,tier=front", true),
            ("app=web, tier=back", false),
            ("k8s.mesosphere.io/attribute-rack=b", true),
            ("app=", false),
        ] {
            assert_eq!(sel(s).matches(&l), want, "{s}");
        }
        assert!(sel("app=").matches(&labels(&[("app", "")])));
    }

    #[test]
    fn bad_selectors_say_what_is_wrong() {
        for (s, part) in [
            ("app in web", "parenthesised"),
            ("app in (web", "unclosed"),
            ("-bad=x", "not a valid label key"),
            ("app=has space", "not a valid label value"),
            ("rank>x", "integer"),
            ("a=b,,c=d", "empty requirement"),
        ] {
            let e = s.parse::<LabelSelector>().unwrap_err();
            assert!(e.to_string().contains(part), "{s}: {e}");
        }
    }

    #[test]
    fn field_selectors() {
        let f: FieldSelector = "spec.nodeName=,status.phase!=Failed".parse().unwrap();
        let pod = |node: Option<&str>, phase: &str| {
            let (node, phase) = (node.map(String::from), phase.to_string());
            move |field: &str| match field {
                "spec.nodeName" => node.clone(),
                "status.phase" => Some(phase.clone()),
                _ => None,
            }
        };
        assert!(f.matches(pod(None, "Pending")));
        assert!(!f.matches(pod(Some("n1"), "Pending")));
        assert!(!f.matches(pod(None, "Failed")));
        assert_eq!(
            f.fields().collect::<Vec<_>>(),
            ["spec.nodeName", "status.phase"]
        );
        assert!("nonsense".parse::<FieldSelector>().is_err());
    }

    fn arb_key() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z][a-z0-9]{0,6}",
            "[a-z]{1,4}\\.io/[a-z][a-z0-9-]{0,5}[a-z0-9]"
        ]
    }

    fn arb_value() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9.-]{0,5}[a-z0-9])?"
    }

    fn arb_req() -> impl Strategy<Value = Requirement> {
        let set = || prop::collection::btree_set(arb_value(), 1..4);
        (
            arb_key(),
            prop_oneof![
                arb_value().prop_map(Op::Equals),
                arb_value().prop_map(Op::NotEquals),
                set().prop_map(Op::In),
                set().prop_map(Op::NotIn),
                Just(Op::Exists),
                Just(Op::DoesNotExist),
                (-100i64..100).prop_map(Op::GreaterThan),
                (-100i64..100).prop_map(Op::LessThan),
            ],
        )
            .prop_map(|(key, op)| Requirement { key, op })
    }

    proptest! {
        /// Printing a selector and parsing it back gives the same selector.
        #[test]
        fn display_parse_round_trip(reqs in prop::collection::vec(arb_req(), 0..5)) {
            let s = LabelSelector { requirements: reqs };
            prop_assert_eq!(s.to_string().parse::<LabelSelector>().unwrap(), s);
        }

        /// Arbitrary text parses or is rejected, never a panic.
        #[test]
        fn arbitrary_text_never_panics(s in ".{0,40}") {
            let _ = s.parse::<LabelSelector>();
            let _ = s.parse::<FieldSelector>();
        }
    }
}
