//! The JSON mapping Mesos itself speaks (stout's `protobuf.hpp`), which is not
//! the proto3 canonical JSON mapping.
//!
//! * keys are the proto field names (`framework_id`); camelCase keys are
//!   unknown keys, and unknown keys are ignored;
//! * enums are written and read by name; an unknown name leaves an optional
//!   field unset, drops a list element, and is an error in a required field;
//! * `bytes` are standard base64, 64-bit integers are JSON numbers; on input
//!   numbers and booleans may also come as strings, doubles as `"Infinity"` /
//!   `"-Infinity"`, a repeated field may be given a single element, and
//!   `null` means unset;
//! * unset optional fields with an explicit `[default = …]` that are not
//!   deprecated are written with that default, as Mesos does;
//! * keys are written in `.proto` declaration order, maps as JSON objects,
//!   doubles as their shortest round-trip form with a `.0` for whole numbers
//!   (`15.0`), laid out like the rapidjson writer Mesos 1.12 uses.
//!
//! Messages go through [`prost_reflect::DynamicMessage`], using the descriptor
//! set compiled from `proto/*.proto`: a prost value is encoded to protobuf
//! bytes and decoded as a dynamic message, and back.

use std::sync::OnceLock;

use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage as _, Value,
};
use serde_json::Value as Json;

use super::proto::DESCRIPTOR_SET;

/// Why a JSON document could not be turned into a Mesos message.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The input is not JSON at all.
    #[error("invalid JSON: {0}")]
    Syntax(serde_json::Error),
    /// A value does not fit its field, e.g.
    /// `offers[0].resources[1].type: expected one of SCALAR, RANGES, SET, TEXT, got "FOO"`.
    #[error("{path}: expected {expected}, got {got}")]
    Mismatch {
        /// Where the value is: field names joined by `.`, `[i]` for list
        /// elements, `["key"]` for map entries.
        path: String,
        /// What the field accepts.
        expected: String,
        /// A short rendering of the offending JSON value.
        got: String,
    },
    /// Required fields are absent (Mesos answers 400 for these).
    #[error("missing required fields: {}", .0.join(", "))]
    MissingRequired(Vec<String>),
    /// The Rust type is not one of the Mesos messages in the descriptor set.
    #[error("{0} is not a message of km's Mesos descriptor set")]
    UnknownMessage(String),
    /// The decoded message could not be converted to the prost type (a bug).
    #[error("cannot convert the parsed message to {0}: {1}")]
    Transcode(String, prost::DecodeError),
}

/// The descriptors of every Mesos message km knows, built on first use.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(DESCRIPTOR_SET).expect("the built-in Mesos descriptor set is valid")
    })
}

/// Writes `m` in Mesos' JSON mapping. Keys keep declaration order (km builds
/// serde_json with `preserve_order`); [`to_string`] also lays out numbers
/// exactly as Mesos does.
///
/// # Panics
///
/// If `M` is not a message of the Mesos descriptor set (a programming error).
pub fn to_value<M: prost::Message + prost::Name>(m: &M) -> Json {
    message_node(&to_dynamic(m)).into_value()
}

/// Writes `m` as compact Mesos JSON, keys in `.proto` declaration order.
///
/// # Panics
///
/// If `M` is not a message of the Mesos descriptor set (a programming error).
pub fn to_string<M: prost::Message + prost::Name>(m: &M) -> String {
    let mut out = String::new();
    message_node(&to_dynamic(m)).write(&mut out);
    out
}

/// Reads a message from a JSON value in Mesos' mapping, failing like Mesos on
/// values of the wrong type and on missing `required` fields.
pub fn from_value<M: prost::Message + prost::Name + Default>(v: &Json) -> Result<M, JsonError> {
    let desc =
        message_descriptor::<M>().ok_or_else(|| JsonError::UnknownMessage(M::full_name()))?;
    if !v.is_object() {
        return Err(mismatch(&M::full_name(), "a JSON object", v));
    }
    let msg = parse_message(&desc, v, "")?;
    let missing = super::validate::missing_in(&msg);
    if !missing.is_empty() {
        return Err(JsonError::MissingRequired(missing));
    }
    M::decode(msg.encode_to_vec().as_slice()).map_err(|e| JsonError::Transcode(M::full_name(), e))
}

/// Parses JSON text and reads a message from it, see [`from_value`].
pub fn from_slice<M: prost::Message + prost::Name + Default>(bytes: &[u8]) -> Result<M, JsonError> {
    let v: Json = serde_json::from_slice(bytes).map_err(JsonError::Syntax)?;
    from_value(&v)
}

pub(crate) fn message_descriptor<M: prost::Name>() -> Option<MessageDescriptor> {
    descriptor_pool().get_message_by_name(&M::full_name())
}

/// Converts a prost value to a dynamic message through its protobuf bytes.
pub(crate) fn to_dynamic<M: prost::Message + prost::Name>(m: &M) -> DynamicMessage {
    let desc = message_descriptor::<M>()
        .unwrap_or_else(|| panic!("{} is not in the Mesos descriptor set", M::full_name()));
    DynamicMessage::decode(desc, m.encode_to_vec().as_slice())
        .expect("prost types and the descriptor set come from the same .proto files")
}

/// The fields of `desc` in `.proto` declaration order.
pub(crate) fn fields_in_order(desc: &MessageDescriptor) -> Vec<FieldDescriptor> {
    desc.descriptor_proto()
        .field
        .iter()
        .filter_map(|f| u32::try_from(f.number()).ok())
        .filter_map(|n| desc.get_field(n))
        .collect()
}

/// A map key as Mesos writes it in a JSON object.
pub(crate) fn map_key_string(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(i) => i.to_string(),
        MapKey::I64(i) => i.to_string(),
        MapKey::U32(u) => u.to_string(),
        MapKey::U64(u) => u.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

// ---------------------------------------------------------------------------
// Writing

/// A JSON tree whose objects keep their keys in insertion order.
enum Node {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    Str(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

fn message_node(msg: &DynamicMessage) -> Node {
    let mut fields = Vec::new();
    for field in fields_in_order(&msg.descriptor()) {
        let node = if field.is_map() {
            map_node(&field, &msg.get_field(&field))
        } else if field.is_list() {
            match &*msg.get_field(&field) {
                Value::List(items) if !items.is_empty() => Some(Node::Array(
                    items.iter().filter_map(|v| value_node(&field, v)).collect(),
                )),
                _ => None,
            }
        } else {
            let set = msg.has_field(&field).then(|| msg.get_field(&field));
            match set.and_then(|v| value_node(&field, &v)) {
                Some(node) => Some(node),
                None if has_written_default(&field) => value_node(&field, &field.default_value()),
                None => None,
            }
        };
        if let Some(node) = node {
            fields.push((field.name().to_owned(), node));
        }
    }
    Node::Object(fields)
}

/// A map as a JSON object, keys sorted (Mesos' own order is unspecified).
fn map_node(field: &FieldDescriptor, value: &Value) -> Option<Node> {
    let (Value::Map(map), Kind::Message(entry)) = (value, field.kind()) else {
        return None;
    };
    if map.is_empty() {
        return None;
    }
    let value_field = entry.map_entry_value_field();
    let mut entries: Vec<(String, Node)> = map
        .iter()
        .filter_map(|(k, v)| Some((map_key_string(k), value_node(&value_field, v)?)))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Some(Node::Object(entries))
}

/// A single value of `field`; `None` for an enum number the schema lacks,
/// which proto2 treats as unset.
fn value_node(field: &FieldDescriptor, value: &Value) -> Option<Node> {
    if let (Kind::Enum(e), Value::EnumNumber(n)) = (field.kind(), value) {
        return e.get_value(*n).map(|v| Node::Str(v.name().to_owned()));
    }
    plain_node(value)
}

fn plain_node(value: &Value) -> Option<Node> {
    Some(match value {
        Value::Bool(b) => Node::Bool(*b),
        Value::I32(i) => Node::Int(i64::from(*i)),
        Value::I64(i) => Node::Int(*i),
        Value::U32(u) => Node::Uint(u64::from(*u)),
        Value::U64(u) => Node::Uint(*u),
        Value::F32(f) => Node::Double(f64::from(*f)),
        Value::F64(f) => Node::Double(*f),
        Value::String(s) => Node::Str(s.clone()),
        Value::Bytes(b) => Node::Str(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::Message(m) => message_node(m),
        // Enums are named by `value_node`, lists and maps by their callers.
        Value::EnumNumber(_) | Value::List(_) | Value::Map(_) => return None,
    })
}

/// Mesos writes unset fields that have an explicit, non-deprecated default.
fn has_written_default(field: &FieldDescriptor) -> bool {
    let proto = field.field_descriptor_proto();
    let deprecated = proto
        .options
        .as_ref()
        .and_then(|o| o.deprecated)
        .unwrap_or(false);
    proto.default_value.is_some() && !deprecated
}

impl Node {
    fn into_value(self) -> Json {
        match self {
            Node::Bool(b) => Json::Bool(b),
            Node::Int(i) => Json::from(i),
            Node::Uint(u) => Json::from(u),
            Node::Double(d) => serde_json::Number::from_f64(d)
                .map_or_else(|| Json::String(non_finite_name(d).to_owned()), Json::Number),
            Node::Str(s) => Json::String(s),
            Node::Array(items) => Json::Array(items.into_iter().map(Node::into_value).collect()),
            Node::Object(fields) => Json::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| (k, v.into_value()))
                    .collect(),
            ),
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Node::Int(i) => out.push_str(&i.to_string()),
            Node::Uint(u) => out.push_str(&u.to_string()),
            Node::Double(d) if d.is_finite() => out.push_str(&format_double(*d)),
            Node::Double(d) => write_str(non_finite_name(*d), out),
            Node::Str(s) => write_str(s, out),
            Node::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Node::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(key, out);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// Mesos' parser reads infinities from these strings (NaN it cannot read).
fn non_finite_name(d: f64) -> &'static str {
    if d.is_nan() {
        "NaN"
    } else if d > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// A JSON string, escaped the way Mesos' writer escapes: quotes, backslashes
/// and control characters only.
fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A finite double the way Mesos 1.12 writes it: the shortest digits that
/// read back to the same value, plain notation from 1e-6 up to 1e21 (with
/// `.0` on whole numbers), exponent notation (`1e-7`, `1.5e300`) outside.
fn format_double(d: f64) -> String {
    if d == 0.0 {
        return if d.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    let sci = format!("{:e}", d.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    let len = digits.len() as i32;
    // The value is 0.<digits> * 10^point.
    let point = exp + 1;
    let mut out = String::from(if d < 0.0 { "-" } else { "" });
    if len <= point && point <= 21 {
        out.push_str(&digits);
        out.push_str(&"0".repeat((point - len) as usize));
        out.push_str(".0");
    } else if 0 < point && point <= 21 {
        let (int, frac) = digits.split_at(point as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < point && point <= 0 {
        out.push_str("0.");
        out.push_str(&"0".repeat((-point) as usize));
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push_str(&exp.to_string());
    }
    out
}

// ---------------------------------------------------------------------------
// Reading

fn mismatch(path: &str, expected: &str, got: &Json) -> JsonError {
    JsonError::Mismatch {
        path: path.to_owned(),
        expected: expected.to_owned(),
        got: describe(got),
    }
}

/// A short rendering of a JSON value for error messages.
fn describe(v: &Json) -> String {
    match v {
        Json::Array(_) => "an array".to_owned(),
        Json::Object(_) => "an object".to_owned(),
        Json::String(s) if s.chars().count() > 40 => {
            let head: String = s.chars().take(40).collect();
            format!("{}…", Json::String(head))
        }
        other => other.to_string(),
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// Builds a dynamic message from a JSON object without checking required
/// fields.
pub(crate) fn parse_message(
    desc: &MessageDescriptor,
    json: &Json,
    path: &str,
) -> Result<DynamicMessage, JsonError> {
    let Json::Object(object) = json else {
        return Err(mismatch(path, "a JSON object", json));
    };
    let mut msg = DynamicMessage::new(desc.clone());
    for (key, value) in object {
        // Only exact proto field names count; anything else is ignored.
        if let Some(field) = desc.get_field_by_name(key) {
            apply(&mut msg, &field, value, &join(path, key))?;
        }
    }
    Ok(msg)
}

/// Stores one JSON value into `field` of `msg`. Like Mesos, a repeated field
/// also takes a single element without the array around it.
fn apply(
    msg: &mut DynamicMessage,
    field: &FieldDescriptor,
    json: &Json,
    path: &str,
) -> Result<(), JsonError> {
    let repeated = field.is_list() || field.is_map();
    match json {
        Json::Null => Ok(()),
        Json::Array(items) if repeated => {
            for (i, item) in items.iter().enumerate() {
                apply(msg, field, item, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        Json::Array(_) => Err(mismatch(path, &expected(field), json)),
        _ if field.is_map() => apply_map(msg, field, json, path),
        _ => {
            let Some(value) = convert(field, json, path)? else {
                return Ok(());
            };
            if field.is_list() {
                if let Value::List(items) = msg.get_field_mut(field) {
                    items.push(value);
                }
                Ok(())
            } else {
                msg.try_set_field(field, value)
                    .map_err(|_| mismatch(path, &expected(field), json))
            }
        }
    }
}

fn apply_map(
    msg: &mut DynamicMessage,
    field: &FieldDescriptor,
    json: &Json,
    path: &str,
) -> Result<(), JsonError> {
    let Json::Object(object) = json else {
        return Err(mismatch(path, "a JSON object keyed by map key", json));
    };
    let Kind::Message(entry) = field.kind() else {
        return Ok(());
    };
    let (key_field, value_field) = (entry.map_entry_key_field(), entry.map_entry_value_field());
    for (key, value) in object {
        let entry_path = format!("{path}[{}]", Json::String(key.clone()));
        let key_json = Json::String(key.clone());
        let map_key = convert(&key_field, &key_json, &entry_path)?
            .and_then(Value::into_map_key)
            .ok_or_else(|| mismatch(&entry_path, &expected(&key_field), &key_json))?;
        // Like Mesos, an entry whose value is null or an unknown enum name
        // keeps its key with the default value.
        let value = match value {
            Json::Null => None,
            _ => convert(&value_field, value, &entry_path)?,
        }
        .unwrap_or_else(|| value_field.default_value());
        if let Value::Map(map) = msg.get_field_mut(field) {
            map.insert(map_key, value);
        }
    }
    Ok(())
}

/// What a field accepts, for error messages.
fn expected(field: &FieldDescriptor) -> String {
    match field.kind() {
        Kind::Double | Kind::Float => "a number".to_owned(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => "a 32-bit integer".to_owned(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => "a 64-bit integer".to_owned(),
        Kind::Uint32 | Kind::Fixed32 => "an unsigned 32-bit integer".to_owned(),
        Kind::Uint64 | Kind::Fixed64 => "an unsigned 64-bit integer".to_owned(),
        Kind::Bool => "true or false".to_owned(),
        Kind::String => "a string".to_owned(),
        Kind::Bytes => "a base64 string".to_owned(),
        Kind::Message(_) => "a JSON object".to_owned(),
        Kind::Enum(e) => {
            let names: Vec<&str> = e
                .enum_descriptor_proto()
                .value
                .iter()
                .map(|v| v.name())
                .collect();
            format!("one of {}", names.join(", "))
        }
    }
}

/// Converts one JSON scalar or object to a value of `field`'s type. `None`
/// means "leave it out": an unknown enum name outside a required field.
fn convert(field: &FieldDescriptor, json: &Json, path: &str) -> Result<Option<Value>, JsonError> {
    let bad = || mismatch(path, &expected(field), json);
    let int = || integer(json).ok_or_else(bad);
    let value = match field.kind() {
        Kind::Double => Value::F64(double(json).ok_or_else(bad)?),
        Kind::Float => Value::F32(double(json).ok_or_else(bad)? as f32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(i32::try_from(int()?).map_err(|_| bad())?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(i64::try_from(int()?).map_err(|_| bad())?)
        }
        Kind::Uint32 | Kind::Fixed32 => Value::U32(u32::try_from(int()?).map_err(|_| bad())?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(u64::try_from(int()?).map_err(|_| bad())?),
        Kind::Bool => match json {
            Json::Bool(b) => Value::Bool(*b),
            Json::String(s) if s == "true" => Value::Bool(true),
            Json::String(s) if s == "false" => Value::Bool(false),
            _ => return Err(bad()),
        },
        Kind::String => match json {
            Json::String(s) => Value::String(s.clone()),
            _ => return Err(bad()),
        },
        Kind::Bytes => match json {
            Json::String(s) => Value::Bytes(decode_base64(s).ok_or_else(bad)?.into()),
            _ => return Err(bad()),
        },
        Kind::Enum(e) => match json {
            Json::String(s) => match e.get_value_by_name(s) {
                Some(v) => Value::EnumNumber(v.number()),
                None if field.is_required() => return Err(bad()),
                None => return Ok(None),
            },
            _ => return Err(bad()),
        },
        Kind::Message(m) => Value::Message(parse_message(&m, json, path)?),
    };
    Ok(Some(value))
}

/// An integer from a JSON number (a whole float such as `2.0` included) or
/// from a string holding one.
fn integer(json: &Json) -> Option<i128> {
    match json {
        Json::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| {
                let f = n.as_f64()?;
                (f.fract() == 0.0 && f.abs() < 1.9e19).then_some(f as i128)
            }),
        Json::String(s) => integer(&Json::Number(serde_json::from_str(s).ok()?)),
        _ => None,
    }
}

/// A double from a JSON number, a string holding one, or `"Infinity"` /
/// `"-Infinity"`.
fn double(json: &Json) -> Option<f64> {
    match json {
        Json::Number(n) => n.as_f64(),
        Json::String(s) if s == "Infinity" => Some(f64::INFINITY),
        Json::String(s) if s == "-Infinity" => Some(f64::NEG_INFINITY),
        Json::String(s) => serde_json::from_str::<serde_json::Number>(s).ok()?.as_f64(),
        _ => None,
    }
}

/// Standard-alphabet base64, read as leniently as Mesos does: whitespace is
/// skipped and padding is optional.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    let compact: String = s
        .chars()
        .take_while(|c| *c != '=')
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    LENIENT.decode(compact).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::mesos::proto::v1::{self, executor, scheduler};

    /// Every number as f64, so `64` in a hand-written example equals the
    /// `64.0` Mesos writes for a double field.
    fn normalize(v: &Json) -> Json {
        match v {
            Json::Number(n) => json!(n.as_f64()),
            Json::Array(items) => Json::Array(items.iter().map(normalize).collect()),
            Json::Object(map) => {
                Json::Object(map.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
            }
            other => other.clone(),
        }
    }

    /// Parses `text` as an `M`, writes it back and checks that the result is
    /// the input plus `defaults` (JSON pointer of the parent object, key,
    /// value): the unset fields with defaults that Mesos adds.
    fn round_trip<M>(text: &str, defaults: &[(&str, &str, Json)]) -> M
    where
        M: prost::Message + prost::Name + Default,
    {
        let parsed: M = from_slice(text.as_bytes()).expect("example parses");
        let mut expected: Json = serde_json::from_str(text).expect("example is JSON");
        for (pointer, key, value) in defaults {
            expected
                .pointer_mut(pointer)
                .and_then(Json::as_object_mut)
                .expect("pointer names an object")
                .insert((*key).to_owned(), value.clone());
        }
        let written = to_value(&parsed);
        assert_eq!(normalize(&written), normalize(&expected));
        let text = to_string(&parsed);
        assert_compact(&text);
        assert_eq!(
            serde_json::from_str::<Json>(&text).expect("output is JSON"),
            written
        );
        parsed
    }

    /// No whitespace outside string literals.
    fn assert_compact(text: &str) {
        let (mut in_string, mut escaped) = (false, false);
        for c in text.chars() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_string => escaped = true,
                '"' => in_string = !in_string,
                c if c.is_whitespace() && !in_string => panic!("not compact: {text}"),
                _ => {}
            }
        }
    }

    fn mismatch_text<M>(v: Json) -> String
    where
        M: prost::Message + prost::Name + Default + std::fmt::Debug,
    {
        from_value::<M>(&v)
            .expect_err("must be rejected")
            .to_string()
    }

    #[test]
    fn heartbeat_event_is_the_recordio_example() {
        let event: scheduler::Event = from_slice(br#"{"type":"HEARTBEAT"}"#).expect("parses");
        assert_eq!(event.r#type, Some(scheduler::event::Type::Heartbeat as i32));
        let text = to_string(&event);
        assert_eq!(text, r#"{"type":"HEARTBEAT"}"#);
        // The record `20\n{"type":"HEARTBEAT"}` of section 1.3.
        assert_eq!(text.len(), 20);
    }

    #[test]
    fn example_subscribe_first_time() {
        let call: scheduler::Call = round_trip(
            r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root",
            "name":"k8s-on-mesos","roles":["k8s"],"failover_timeout":604800.0,
            "checkpoint":true,"hostname":"sched-host","principal":"k8s",
            "capabilities":[{"type":"MULTI_ROLE"},{"type":"PARTITION_AWARE"},
            {"type":"TASK_KILLING_STATE"}]}}}"#,
            &[],
        );
        assert_eq!(call.r#type, Some(scheduler::call::Type::Subscribe as i32));
        let info = call.subscribe.expect("subscribe").framework_info;
        assert_eq!(
            (info.user.as_str(), info.name.as_str()),
            ("root", "k8s-on-mesos")
        );
        assert_eq!(info.roles, ["k8s"]);
        assert_eq!(info.failover_timeout, Some(604800.0));
        assert_eq!(info.checkpoint, Some(true));
        assert_eq!(info.hostname.as_deref(), Some("sched-host"));
        assert_eq!(info.principal.as_deref(), Some("k8s"));
        use v1::framework_info::capability::Type as Cap;
        let caps: Vec<_> = info.capabilities.iter().map(|c| c.r#type).collect();
        assert_eq!(
            caps,
            [Cap::MultiRole, Cap::PartitionAware, Cap::TaskKillingState].map(|c| Some(c as i32))
        );
    }

    #[test]
    fn example_subscribe_again() {
        let call: scheduler::Call = round_trip(
            r#"{"type":"SUBSCRIBE","framework_id":{"value":"5b8c4f4e-0c5e-4f0e-9d1e-2a0f3c1b9e77-0000"},
            "subscribe":{"framework_info":{"id":{"value":"5b8c4f4e-0c5e-4f0e-9d1e-2a0f3c1b9e77-0000"},
            "user":"root","name":"k8s-on-mesos","roles":["k8s"],"failover_timeout":604800.0,
            "checkpoint":true,"capabilities":[{"type":"MULTI_ROLE"},{"type":"PARTITION_AWARE"}]}}}"#,
            &[],
        );
        let id = "5b8c4f4e-0c5e-4f0e-9d1e-2a0f3c1b9e77-0000";
        assert_eq!(call.framework_id.expect("framework_id").value, id);
        let info = call.subscribe.expect("subscribe").framework_info;
        assert_eq!(info.id.expect("id").value, id);
        assert_eq!(info.capabilities.len(), 2);
    }

    const ACCEPT: &str = r#"{"framework_id":{"value":"FW-0000"},"type":"ACCEPT","accept":{
        "offer_ids":[{"value":"M-O7"}],"operations":[{"type":"LAUNCH","launch":{"task_infos":[{
        "name":"kubelet","task_id":{"value":"kubelet-node1"},"agent_id":{"value":"M-S0"},
        "executor":{"type":"CUSTOM","executor_id":{"value":"k8s-executor"},"name":"k8s executor",
          "command":{"shell":false,"value":"/usr/local/bin/k8s-executor",
            "arguments":["k8s-executor","--verbose"],
            "environment":{"variables":[{"name":"RUST_LOG","value":"info"}]}},
          "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1}},
                       {"name":"mem","type":"SCALAR","scalar":{"value":64}}]},
        "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":1}},
                     {"name":"mem","type":"SCALAR","scalar":{"value":1024}},
                     {"name":"ports","type":"RANGES","ranges":{"range":[{"begin":31000,"end":31001}]}}],
        "data":"aGVsbG8="}]}}],"filters":{"refuse_seconds":5.0}}}"#;

    #[test]
    fn example_accept_launch() {
        let variable =
            "/accept/operations/0/launch/task_infos/0/executor/command/environment/variables/0";
        let call: scheduler::Call = round_trip(ACCEPT, &[(variable, "type", json!("VALUE"))]);
        let accept = call.accept.as_ref().expect("accept");
        assert_eq!(accept.offer_ids[0].value, "M-O7");
        assert_eq!(
            accept.filters.as_ref().expect("filters").refuse_seconds,
            Some(5.0)
        );
        let op = &accept.operations[0];
        assert_eq!(op.r#type, Some(v1::offer::operation::Type::Launch as i32));
        let task = &op.launch.as_ref().expect("launch").task_infos[0];
        assert_eq!(task.name, "kubelet");
        assert_eq!(task.task_id.value, "kubelet-node1");
        assert_eq!(task.agent_id.value, "M-S0");
        assert_eq!(task.data.as_deref(), Some(&b"hello"[..]));
        let ports = &task.resources[2];
        assert_eq!(ports.r#type, v1::value::Type::Ranges as i32);
        let range = &ports.ranges.as_ref().expect("ranges").range[0];
        assert_eq!((range.begin, range.end), (31000, 31001));
        assert_eq!(
            task.resources[1].scalar.as_ref().map(|s| s.value),
            Some(1024.0)
        );
        let executor = task.executor.as_ref().expect("executor");
        assert_eq!(
            executor.r#type,
            Some(v1::executor_info::Type::Custom as i32)
        );
        assert_eq!(
            executor.resources[0].scalar.as_ref().map(|s| s.value),
            Some(0.1)
        );
        let command = executor.command.as_ref().expect("command");
        assert_eq!(command.shell, Some(false));
        assert_eq!(command.arguments, ["k8s-executor", "--verbose"]);
        let env = &command.environment.as_ref().expect("environment").variables[0];
        assert_eq!(
            (env.name.as_str(), env.value.as_deref()),
            ("RUST_LOG", Some("info"))
        );
        assert_eq!(env.r#type, None);

        let text = to_string(&call);
        assert!(text.contains(r#""scalar":{"value":64.0}"#), "{text}");
        assert!(text.contains(r#""scalar":{"value":0.1}"#), "{text}");
        assert!(
            text.contains(r#""range":[{"begin":31000,"end":31001}]"#),
            "{text}"
        );
        assert!(
            text.contains(r#"{"name":"RUST_LOG","type":"VALUE","value":"info"}"#),
            "{text}"
        );
        assert!(
            text.ends_with(r#""filters":{"refuse_seconds":5.0}}}"#),
            "{text}"
        );
    }

    #[test]
    fn example_acknowledge() {
        let call: scheduler::Call = round_trip(
            r#"{"framework_id":{"value":"FW-0000"},"type":"ACKNOWLEDGE","acknowledge":{
            "agent_id":{"value":"M-S0"},"task_id":{"value":"kubelet-node1"},
            "uuid":"AAECAwQFBgcICQoLDA0ODw=="}}"#,
            &[],
        );
        let ack = call.acknowledge.expect("acknowledge");
        assert_eq!(ack.uuid, (0u8..16).collect::<Vec<_>>());
        assert_eq!(ack.agent_id.value, "M-S0");
        assert_eq!(ack.task_id.value, "kubelet-node1");
    }

    #[test]
    fn example_revive_and_reconcile() {
        let revive: scheduler::Call = round_trip(
            r#"{"framework_id":{"value":"FW-0000"},"type":"REVIVE","revive":{"roles":["k8s"]}}"#,
            &[],
        );
        assert_eq!(revive.revive.expect("revive").roles, ["k8s"]);
        let reconcile: scheduler::Call = round_trip(
            r#"{"framework_id":{"value":"FW-0000"},"type":"RECONCILE","reconcile":{}}"#,
            &[],
        );
        assert_eq!(
            reconcile.r#type,
            Some(scheduler::call::Type::Reconcile as i32)
        );
        assert!(
            reconcile
                .reconcile
                .expect("empty object is present")
                .tasks
                .is_empty()
        );
    }

    #[test]
    fn example_executor_calls() {
        let subscribe: executor::Call = round_trip(
            r#"{"type":"SUBSCRIBE","executor_id":{"value":"k8s-executor"},
            "framework_id":{"value":"FW-0000"},"subscribe":{}}"#,
            &[],
        );
        assert_eq!(subscribe.executor_id.value, "k8s-executor");
        assert_eq!(subscribe.framework_id.value, "FW-0000");
        assert!(subscribe.subscribe.is_some());

        let update: executor::Call = round_trip(
            r#"{"type":"UPDATE","executor_id":{"value":"k8s-executor"},
            "framework_id":{"value":"FW-0000"},"update":{"status":{
            "task_id":{"value":"kubelet-node1"},"state":"TASK_RUNNING","source":"SOURCE_EXECUTOR",
            "executor_id":{"value":"k8s-executor"},"uuid":"AAECAwQFBgcICQoLDA0ODw==",
            "timestamp":1700000000.5}}}"#,
            &[],
        );
        let status = &update.update.as_ref().expect("update").status;
        assert_eq!(status.state, v1::TaskState::TaskRunning as i32);
        assert_eq!(
            status.source,
            Some(v1::task_status::Source::Executor as i32)
        );
        assert_eq!(
            status.uuid.as_deref(),
            Some(&(0u8..16).collect::<Vec<_>>()[..])
        );
        assert_eq!(status.timestamp, Some(1_700_000_000.5));
        assert!(to_string(&update).contains(r#""timestamp":1700000000.5"#));

        let message: executor::Call = round_trip(
            r#"{"type":"MESSAGE","executor_id":{"value":"k8s-executor"},
            "framework_id":{"value":"FW-0000"},"message":{"data":"aGVsbG8="}}"#,
            &[],
        );
        assert_eq!(message.message.expect("message").data, b"hello");
    }

    #[test]
    fn example_error_event() {
        let event: scheduler::Event = round_trip(
            r#"{"type":"ERROR","error":{"message":"Framework has been removed"}}"#,
            &[],
        );
        assert_eq!(
            event.error.expect("error").message,
            "Framework has been removed"
        );
    }

    #[test]
    fn observed_events_parse_and_print_identically() {
        // Shapes captured from a real 1.12 master: SUBSCRIBED with a 15 s
        // heartbeat, and a reconciliation answer (no uuid, no agent_id).
        let subscribed = r#"{"type":"SUBSCRIBED","subscribed":{"framework_id":{"value":"3f1c2a9e-7d41-4c55-9b0e-2f6a8d1e4b20-0000"},"heartbeat_interval_seconds":15.0}}"#;
        let event: scheduler::Event = from_slice(subscribed.as_bytes()).expect("parses");
        let body = event.subscribed.as_ref().expect("subscribed");
        assert_eq!(body.heartbeat_interval_seconds, Some(15.0));
        assert_eq!(to_string(&event), subscribed);

        let lost = r#"{"type":"UPDATE","update":{"status":{"task_id":{"value":"t1"},"state":"TASK_LOST","message":"Reconciliation: Task is unknown","source":"SOURCE_MASTER","reason":"REASON_RECONCILIATION","timestamp":1700000123.456789}}}"#;
        let event: scheduler::Event = from_slice(lost.as_bytes()).expect("parses");
        let status = &event.update.as_ref().expect("update").status;
        assert_eq!(status.state, v1::TaskState::TaskLost as i32);
        assert_eq!(
            status.reason,
            Some(v1::task_status::Reason::Reconciliation as i32)
        );
        assert_eq!(status.uuid, None);
        assert_eq!(status.agent_id, None);
        assert_eq!(to_string(&event), lost);
    }

    #[test]
    fn only_snake_case_keys_count_and_unknown_keys_are_ignored() {
        let call: scheduler::Call = from_value(&json!({
            "type": "TEARDOWN",
            "frameworkId": {"value": "camel"},
            "bogus": {"deep": [1, 2, 3]},
        }))
        .expect("unknown keys are ignored");
        assert_eq!(call.framework_id, None);
        assert_eq!(call.r#type, Some(scheduler::call::Type::Teardown as i32));

        // A camelCase key is just unknown, so the required field is missing.
        let err = from_value::<scheduler::Call>(&json!({
            "type": "SUBSCRIBE",
            "subscribe": {"frameworkInfo": {"user": "u", "name": "n"}},
        }))
        .expect_err("framework_info missing");
        assert!(
            matches!(&err, JsonError::MissingRequired(p) if p == &["subscribe.framework_info"])
        );
    }

    #[test]
    fn enums_are_names_and_numbers_are_rejected() {
        let err = mismatch_text::<scheduler::Event>(json!({"type": 8}));
        assert!(
            err.starts_with("type: expected one of UNKNOWN, SUBSCRIBED, OFFERS,"),
            "{err}"
        );
        assert!(err.ends_with(", got 8"), "{err}");
    }

    #[test]
    fn unknown_enum_names_are_dropped_outside_required_fields() {
        let event: scheduler::Event =
            from_value(&json!({"type": "FROM_THE_FUTURE"})).expect("optional enum");
        assert_eq!(event.r#type, None);
        assert_eq!(to_string(&event), "{}");

        let caps: v1::CapabilityInfo =
            from_value(&json!({"capabilities": ["CHOWN", "NOPE", "KILL"]})).expect("list");
        use v1::capability_info::Capability;
        assert_eq!(
            caps.capabilities,
            [Capability::Chown as i32, Capability::Kill as i32]
        );
    }

    #[test]
    fn unknown_enum_name_in_required_field_names_the_path() {
        let resource =
            |name: &str, kind: &str| json!({"name": name, "type": kind, "scalar": {"value": 1}});
        let offers = json!({"offers": [{
            "id": {"value": "O1"}, "framework_id": {"value": "F"}, "agent_id": {"value": "S"},
            "hostname": "h", "resources": [resource("cpus", "SCALAR"), resource("gpus", "FOO")],
        }]});
        assert_eq!(
            mismatch_text::<scheduler::event::Offers>(offers),
            r#"offers[0].resources[1].type: expected one of SCALAR, RANGES, SET, TEXT, got "FOO""#
        );
    }

    #[test]
    fn wrong_json_types_name_path_and_expectation() {
        let t = mismatch_text::<v1::FrameworkInfo>;
        assert_eq!(
            t(json!({"user": 1, "name": "n"})),
            "user: expected a string, got 1"
        );
        assert_eq!(
            t(json!({"user": "u", "name": ["n"]})),
            "name: expected a string, got an array"
        );
        assert_eq!(
            t(json!({"user": "u", "name": "n", "checkpoint": "yes"})),
            r#"checkpoint: expected true or false, got "yes""#
        );
        assert_eq!(
            t(json!({"user": "u", "name": "n", "offer_filters": ["x"]})),
            r#"offer_filters[0]: expected a JSON object keyed by map key, got "x""#
        );
        assert_eq!(
            t(json!([])),
            "mesos.v1.FrameworkInfo: expected a JSON object, got an array"
        );
        let err = from_slice::<v1::FrameworkInfo>(b"{\"user\":").expect_err("syntax");
        assert!(err.to_string().starts_with("invalid JSON: "), "{err}");
        assert_eq!(
            mismatch_text::<v1::value::Range>(json!({"begin": -1, "end": 2})),
            "begin: expected an unsigned 64-bit integer, got -1"
        );
        assert_eq!(
            mismatch_text::<v1::AgentInfo>(json!({"hostname": "h", "port": 1.5})),
            "port: expected a 32-bit integer, got 1.5"
        );
        assert_eq!(
            mismatch_text::<v1::AgentInfo>(json!({"hostname": "h", "port": 4_294_967_296u64})),
            "port: expected a 32-bit integer, got 4294967296"
        );
    }

    #[test]
    fn int64_written_as_number_and_read_from_string() {
        let time = v1::TimeInfo {
            nanoseconds: 1_700_000_000_123_456_789,
        };
        assert_eq!(to_string(&time), r#"{"nanoseconds":1700000000123456789}"#);
        assert_eq!(
            to_value(&time),
            json!({"nanoseconds": 1_700_000_000_123_456_789i64})
        );
        for input in [
            json!({"nanoseconds": "1700000000123456789"}),
            to_value(&time),
        ] {
            assert_eq!(from_value::<v1::TimeInfo>(&input).expect("reads"), time);
        }
        let range: v1::value::Range =
            from_value(&json!({"begin": "31000", "end": 3.1e4})).expect("string and whole float");
        assert_eq!((range.begin, range.end), (31000, 31000));
        let max: v1::value::Range =
            from_value(&json!({"begin": u64::MAX, "end": "18446744073709551615"})).expect("u64");
        assert_eq!((max.begin, max.end), (u64::MAX, u64::MAX));
        assert_eq!(
            to_string(&max),
            r#"{"begin":18446744073709551615,"end":18446744073709551615}"#
        );
        let flag: v1::FrameworkInfo =
            from_value(&json!({"user": "u", "name": "n", "checkpoint": "true"})).expect("bool");
        assert_eq!(flag.checkpoint, Some(true));
    }

    #[test]
    fn doubles_survive_a_json_round_trip_exactly() {
        // Timestamps are seconds with microseconds: every bit must come back.
        for t in [
            1795246131.4772499_f64,
            0.1 + 0.2,
            1e-7,
            123_456_789.123_456_78,
            f64::MAX,
        ] {
            let s = v1::TaskStatus {
                timestamp: Some(t),
                ..Default::default()
            };
            let back: v1::TaskStatus = from_slice(to_string(&s).as_bytes()).unwrap();
            assert_eq!(back.timestamp.map(f64::to_bits), Some(t.to_bits()), "{t}");
        }
    }

    #[test]
    fn doubles_take_infinity_strings_and_print_like_mesos() {
        for (input, value) in [
            (json!("Infinity"), f64::INFINITY),
            (json!("-Infinity"), f64::NEG_INFINITY),
            (json!("2.5"), 2.5),
            (json!(7), 7.0),
        ] {
            let scalar: v1::value::Scalar = from_value(&json!({"value": input})).expect("double");
            assert_eq!(scalar.value, value);
        }
        let inf = v1::value::Scalar {
            value: f64::INFINITY,
        };
        assert_eq!(to_string(&inf), r#"{"value":"Infinity"}"#);
        assert_eq!(to_value(&inf), json!({"value": "Infinity"}));
        assert_eq!(
            from_value::<v1::value::Scalar>(&to_value(&inf)).expect("reads back"),
            inf
        );

        for (d, text) in [
            (15.0, "15.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1024.0, "1024.0"),
            (1e20, "100000000000000000000.0"),
            (1e21, "1e21"),
            (1.5e300, "1.5e300"),
            (123_456.789, "123456.789"),
            (1e-6, "0.000001"),
            (1.25e-6, "0.00000125"),
            (1e-7, "1e-7"),
            (-1.5e-7, "-1.5e-7"),
        ] {
            assert_eq!(format_double(d), text, "{d:e}");
            assert_eq!(text.parse::<f64>().ok(), Some(d));
        }
    }

    #[test]
    fn bytes_are_base64_both_ways() {
        let ack = scheduler::call::Acknowledge {
            agent_id: v1::AgentId { value: "S".into() },
            task_id: v1::TaskId { value: "T".into() },
            uuid: (0u8..16).collect(),
        };
        let value = to_value(&ack);
        assert_eq!(value["uuid"], "AAECAwQFBgcICQoLDA0ODw==");
        assert_eq!(
            from_value::<scheduler::call::Acknowledge>(&value).expect("reads"),
            ack
        );
        // Mesos' decoder also takes unpadded and wrapped base64.
        let lenient = json!({"agent_id": {"value": "S"}, "task_id": {"value": "T"},
                             "uuid": "AAECAwQFBgcI\nCQoLDA0ODw"});
        assert_eq!(
            from_value::<scheduler::call::Acknowledge>(&lenient).expect("lenient"),
            ack
        );
        let bad = json!({"agent_id": {"value": "S"}, "task_id": {"value": "T"}, "uuid": "*?"});
        assert_eq!(
            mismatch_text::<scheduler::call::Acknowledge>(bad),
            r#"uuid: expected a base64 string, got "*?""#
        );
    }

    #[test]
    fn unset_fields_with_explicit_defaults_are_written() {
        let info = v1::FrameworkInfo {
            user: "u".into(),
            name: "n".into(),
            ..Default::default()
        };
        // `role` has a default too, but it is deprecated.
        assert_eq!(
            to_string(&info),
            r#"{"user":"u","name":"n","failover_timeout":0.0,"checkpoint":false}"#
        );
        assert_eq!(to_string(&v1::CommandInfo::default()), r#"{"shell":true}"#);
        assert_eq!(
            to_string(&v1::Filters::default()),
            r#"{"refuse_seconds":5.0}"#
        );
        let agent = v1::AgentInfo {
            hostname: "h".into(),
            ..Default::default()
        };
        assert_eq!(to_string(&agent), r#"{"hostname":"h","port":5051}"#);
        let docker = v1::container_info::DockerInfo {
            image: "i".into(),
            ..Default::default()
        };
        assert_eq!(
            to_string(&docker),
            r#"{"image":"i","network":"HOST","privileged":false}"#
        );
        // A resource's deprecated `role` default stays out.
        let cpus = v1::Resource {
            name: "cpus".into(),
            scalar: Some(v1::value::Scalar { value: 2.0 }),
            ..Default::default()
        };
        assert_eq!(
            to_string(&cpus),
            r#"{"name":"cpus","type":"SCALAR","scalar":{"value":2.0}}"#
        );
    }

    #[test]
    fn null_means_unset() {
        let info: v1::FrameworkInfo = from_value(&json!({
            "user": "u", "name": "n", "hostname": null, "roles": null, "checkpoint": null,
        }))
        .expect("nulls");
        assert_eq!((info.hostname, info.checkpoint), (None, None));
        assert!(info.roles.is_empty());
        let roles: scheduler::call::Revive =
            from_value(&json!({"roles": ["a", null, "b"]})).expect("null element");
        assert_eq!(roles.roles, ["a", "b"]);
    }

    #[test]
    fn a_single_value_counts_as_a_one_element_list() {
        let revive: scheduler::call::Revive = from_value(&json!({"roles": "k8s"})).expect("reads");
        assert_eq!(revive.roles, ["k8s"]);
    }

    #[test]
    fn maps_are_objects_keyed_by_map_key() {
        let scalar = |value| v1::value::Scalar { value };
        let task = v1::TaskInfo {
            name: "t".into(),
            task_id: v1::TaskId { value: "t".into() },
            agent_id: v1::AgentId { value: "a".into() },
            limits: [
                ("mem".to_owned(), scalar(512.0)),
                ("cpus".to_owned(), scalar(2.0)),
            ]
            .into(),
            ..Default::default()
        };
        let text = to_string(&task);
        assert!(
            text.ends_with(r#""limits":{"cpus":{"value":2.0},"mem":{"value":512.0}}}"#),
            "{text}"
        );
        assert_eq!(
            from_slice::<v1::TaskInfo>(text.as_bytes()).expect("reads"),
            task
        );

        let quantities = v1::offer_filters::ResourceQuantities {
            quantities: [("cpus".to_owned(), scalar(1.0))].into(),
        };
        let info = v1::FrameworkInfo {
            user: "u".into(),
            name: "n".into(),
            offer_filters: [(
                "k8s".to_owned(),
                v1::OfferFilters {
                    min_allocatable_resources: Some(v1::offer_filters::MinAllocatableResources {
                        quantities: vec![quantities],
                    }),
                },
            )]
            .into(),
            ..Default::default()
        };
        let expected = json!({"user": "u", "name": "n", "failover_timeout": 0.0, "checkpoint": false,
            "offer_filters": {"k8s": {"min_allocatable_resources":
                {"quantities": [{"quantities": {"cpus": {"value": 1.0}}}]}}}});
        assert_eq!(to_value(&info), expected);
        let read: v1::FrameworkInfo = from_value(&expected).expect("reads");
        assert_eq!(read.offer_filters, info.offer_filters);
        assert_eq!(to_value(&read), expected);
    }

    #[test]
    fn keys_follow_declaration_order_not_field_numbers() {
        let executor = v1::ExecutorInfo {
            r#type: Some(v1::executor_info::Type::Custom as i32),
            executor_id: v1::ExecutorId { value: "e".into() },
            command: Some(v1::CommandInfo {
                value: Some("run".into()),
                user: Some("nobody".into()),
                ..Default::default()
            }),
            data: Some(b"hi".to_vec()),
            ..Default::default()
        };
        // `type` is field 15 but declared first; `shell` (6) precedes
        // `value` (3); `data` (4) comes after `name` (9).
        assert_eq!(
            to_string(&executor),
            r#"{"type":"CUSTOM","executor_id":{"value":"e"},"command":{"shell":true,"value":"run","user":"nobody"},"data":"aGk="}"#
        );
    }

    #[test]
    fn strings_are_escaped_like_mesos() {
        let id = v1::TaskId {
            value: "a\"b\\c\n\u{1}é/".into(),
        };
        assert_eq!(to_string(&id), "{\"value\":\"a\\\"b\\\\c\\n\\u0001é/\"}");
        assert_eq!(
            from_slice::<v1::TaskId>(to_string(&id).as_bytes()).expect("reads"),
            id
        );
    }

    #[test]
    fn missing_required_fields_are_an_error() {
        let err = from_value::<v1::Resource>(&json!({"type": "SCALAR", "scalar": {}}))
            .expect_err("name and scalar.value missing");
        assert_eq!(
            err.to_string(),
            "missing required fields: name, scalar.value"
        );
    }
}
