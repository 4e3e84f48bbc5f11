//! Mesos's text syntax for resources and attributes, as agents' `--resources`
//! and `--attributes` flags take them.
//!
//! * resources: `cpus:4;mem:8192;disk:10000;ports:[31000-32000,33000-33010];gpus(role):1;zones:{a,b}`
//!   — a scalar, ranges in `[..]`, or a set in `{..}`; an optional `(role)`
//!   reserves it statically for that role.
//! * attributes: `rack:a;zone:1;cores:8.5` — a number is a SCALAR, anything
//!   else TEXT; `[..]` ranges and `{..}` sets as above.

use crate::mesos::proto::v1;
use v1::value::Type;

use super::Ranges;

/// A resource or attribute string that does not parse. Says which entry and
/// what the syntax is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?}: {problem}; expected e.g. 'cpus:4;mem:8192;ports:[31000-32000]'")]
pub struct TextError {
    /// The offending `name:value` entry.
    pub entry: String,
    /// What is wrong with it.
    pub problem: String,
}

enum Parsed {
    Scalar(f64),
    Ranges(Ranges),
    Set(Vec<String>),
    Text(String),
}

fn value(entry: &str, v: &str, allow_text: bool) -> Result<Parsed, TextError> {
    let err = |p: &str| TextError {
        entry: entry.to_string(),
        problem: p.to_string(),
    };
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        let mut pairs = Vec::new();
        for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (b, e) = part.split_once('-').unwrap_or((part, part));
            let b: u64 = b
                .trim()
                .parse()
                .map_err(|_| err("a range bound is not a whole number"))?;
            let e: u64 = e
                .trim()
                .parse()
                .map_err(|_| err("a range bound is not a whole number"))?;
            if b > e {
                return Err(err("a range begins after it ends"));
            }
            pairs.push((b, e));
        }
        return Ok(Parsed::Ranges(Ranges::from_pairs(pairs)));
    }
    if let Some(inner) = v.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
        return Ok(Parsed::Set(
            inner
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        ));
    }
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(Parsed::Scalar(x)),
        Ok(_) => Err(err("a scalar must be a finite number >= 0")),
        Err(_) if allow_text && !v.is_empty() => Ok(Parsed::Text(v.to_string())),
        Err(_) => Err(err("the value is not a number, [ranges] or {set}")),
    }
}

fn entries(s: &str) -> impl Iterator<Item = &str> {
    s.split(';').map(str::trim).filter(|e| !e.is_empty())
}

/// Parses `--resources`.
pub fn parse_resources(s: &str) -> Result<Vec<v1::Resource>, TextError> {
    let mut out = Vec::new();
    for entry in entries(s) {
        let err = |p: &str| TextError {
            entry: entry.to_string(),
            problem: p.to_string(),
        };
        let (name, v) = entry
            .split_once(':')
            .ok_or_else(|| err("missing ':' between name and value"))?;
        let name = name.trim();
        let (name, role) = match name.split_once('(') {
            Some((n, r)) => (
                n.trim(),
                Some(
                    r.strip_suffix(')')
                        .ok_or_else(|| err("unclosed '(' in role"))?
                        .trim(),
                ),
            ),
            None => (name, None),
        };
        if name.is_empty() {
            return Err(err("empty resource name"));
        }
        let mut r = match value(entry, v, false)? {
            Parsed::Scalar(x) => super::scalar(name, x),
            Parsed::Ranges(rs) => super::ranges(name, &rs),
            Parsed::Set(items) => super::set(name, items),
            Parsed::Text(_) => unreachable!("text is not allowed for resources"),
        };
        if let Some(role) = role.filter(|r| *r != "*" && !r.is_empty()) {
            r.reservations.push(v1::resource::ReservationInfo {
                r#type: Some(v1::resource::reservation_info::Type::Static as i32),
                role: Some(role.to_string()),
                ..Default::default()
            });
        }
        out.push(r);
    }
    Ok(out)
}

/// Parses `--attributes`.
pub fn parse_attributes(s: &str) -> Result<Vec<v1::Attribute>, TextError> {
    let mut out = Vec::new();
    for entry in entries(s) {
        let (name, v) = entry.split_once(':').ok_or_else(|| TextError {
            entry: entry.to_string(),
            problem: "missing ':' between name and value".into(),
        })?;
        let mut a = v1::Attribute {
            name: name.trim().to_string(),
            ..Default::default()
        };
        match value(entry, v, true)? {
            Parsed::Scalar(x) => {
                a.r#type = Type::Scalar as i32;
                a.scalar = Some(v1::value::Scalar { value: x });
            }
            Parsed::Ranges(rs) => {
                a.r#type = Type::Ranges as i32;
                a.ranges = Some(rs.to_proto());
            }
            Parsed::Set(items) => {
                a.r#type = Type::Set as i32;
                a.set = Some(v1::value::Set { item: items });
            }
            Parsed::Text(t) => {
                a.r#type = Type::Text as i32;
                a.text = Some(v1::value::Text { value: t });
            }
        }
        out.push(a);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Resources, reservation_role};

    #[test]
    fn resources_in_mesos_syntax() {
        let rs = parse_resources(
            "cpus:4; mem:8192;ports:[31000-32000, 33000-33001];disk(k8s):100;zones:{a,b}",
        )
        .unwrap();
        let bag: Resources = rs.iter().cloned().collect();
        assert_eq!(bag.scalar("cpus"), 4.0);
        assert_eq!(bag.scalar("mem"), 8192.0);
        assert_eq!(bag.ranges("ports").len(), 1003);
        assert_eq!(reservation_role(&rs[3]), "k8s");
        assert_eq!(bag.set_items("zones").len(), 2);
        assert!(parse_resources("").unwrap().is_empty());
    }

    #[test]
    fn bad_resources_name_the_entry() {
        let e = parse_resources("cpus:4;mem=8192").unwrap_err();
        assert_eq!(e.entry, "mem=8192");
        assert!(e.to_string().contains("expected e.g."), "{e}");
        assert!(parse_resources("cpus:four").is_err());
        assert!(parse_resources("ports:[32000-31000]").is_err());
        assert!(parse_resources("cpus:-1").is_err());
        assert!(parse_resources("cpus(k8s:1").is_err());
    }

    #[test]
    fn attributes_are_text_or_scalar() {
        let a = parse_attributes("rack:a;zone:1;cores:8.5").unwrap();
        assert_eq!(a[0].r#type, Type::Text as i32);
        assert_eq!(a[0].text.as_ref().unwrap().value, "a");
        assert_eq!(a[1].r#type, Type::Scalar as i32);
        assert_eq!(a[2].scalar.as_ref().unwrap().value, 8.5);
        assert!(parse_attributes("rack").is_err());
    }
}
