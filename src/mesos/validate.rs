//! Finding absent proto2 `required` fields, which Mesos rejects with 400 and
//! prost does not check.
//!
//! prost always encodes a `required` field (a prost struct cannot leave one
//! unset), so presence can only be judged on what came off the wire: use
//! [`missing_required_in`] on protobuf bytes; [`super::json::from_value`] and
//! [`super::encoding::Encoding::decode`] already check.

use std::collections::BTreeMap;

use prost_reflect::{DynamicMessage, ReflectMessage as _, Value};

use super::json;

/// The dotted paths of every missing `required` field of `m`, recursively
/// (`subscribe.framework_info.user`, `offers[0].resources[1].name`).
///
/// On a prost value this only finds fields of messages whose schema differs
/// from km's descriptor set, because prost writes every required field (with
/// its default value when never assigned); check received bytes with
/// [`missing_required_in`] instead.
///
/// # Panics
///
/// If `M` is not a message of the Mesos descriptor set (a programming error).
pub fn missing_required<M: prost::Message + prost::Name>(m: &M) -> Vec<String> {
    missing_in(&json::to_dynamic(m))
}

/// The dotted paths of every missing `required` field in `bytes`, an encoded
/// `M`, as Mesos would list them before answering 400.
///
/// # Panics
///
/// If `M` is not a message of the Mesos descriptor set (a programming error).
pub fn missing_required_in<M: prost::Name>(
    bytes: &[u8],
) -> Result<Vec<String>, prost::DecodeError> {
    let desc = json::message_descriptor::<M>()
        .unwrap_or_else(|| panic!("{} is not in the Mesos descriptor set", M::full_name()));
    Ok(missing_in(&DynamicMessage::decode(desc, bytes)?))
}

/// The missing `required` fields of a dynamic message, in declaration order.
pub(crate) fn missing_in(msg: &DynamicMessage) -> Vec<String> {
    let mut out = Vec::new();
    collect(msg, "", &mut out);
    out
}

fn collect(msg: &DynamicMessage, prefix: &str, out: &mut Vec<String>) {
    for field in json::fields_in_order(&msg.descriptor()) {
        let path = if prefix.is_empty() {
            field.name().to_owned()
        } else {
            format!("{prefix}.{}", field.name())
        };
        let repeated = field.is_list() || field.is_map();
        if !repeated && !msg.has_field(&field) {
            if field.is_required() {
                out.push(path);
            }
            continue;
        }
        match &*msg.get_field(&field) {
            Value::Message(m) => collect(m, &path, out),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Message(m) = item {
                        collect(m, &format!("{path}[{i}]"), out);
                    }
                }
            }
            Value::Map(map) => {
                let sorted: BTreeMap<String, &Value> = map
                    .iter()
                    .map(|(k, v)| (json::map_key_string(k), v))
                    .collect();
                for (key, value) in sorted {
                    if let Value::Message(m) = value {
                        let key = serde_json::Value::String(key);
                        collect(m, &format!("{path}[{key}]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use serde_json::json;

    use super::*;
    use crate::mesos::proto::v1::{self, scheduler};

    /// Protobuf bytes of `M` built from JSON without the required-field
    /// check, i.e. what a careless client could send.
    fn bytes_of<M: prost::Name>(v: serde_json::Value) -> Vec<u8> {
        let desc = json::message_descriptor::<M>().expect("known type");
        json::parse_message(&desc, &v, "")
            .expect("well-typed JSON")
            .encode_to_vec()
    }

    #[test]
    fn resource_without_name() {
        // type = SCALAR (field 2), scalar { value: 1.0 } (field 3); no field 1.
        let bytes = [0x10, 0x00, 0x1a, 0x09, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f];
        assert_eq!(
            missing_required_in::<v1::Resource>(&bytes).expect("decodes"),
            ["name"]
        );
        assert_eq!(
            missing_required_in::<v1::Resource>(&[]).expect("decodes"),
            ["name", "type"]
        );
        let full = v1::Resource {
            name: "cpus".into(),
            ..Default::default()
        }
        .encode_to_vec();
        assert!(
            missing_required_in::<v1::Resource>(&full)
                .expect("decodes")
                .is_empty()
        );
    }

    #[test]
    fn nested_paths_in_lists_and_maps() {
        let offer = bytes_of::<v1::Offer>(json!({
            "id": {"value": "O1"}, "framework_id": {"value": "F"}, "agent_id": {},
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {}},
                {"type": "SCALAR", "scalar": {"value": 1}},
            ],
        }));
        assert_eq!(
            missing_required_in::<v1::Offer>(&offer).expect("decodes"),
            [
                "agent_id.value",
                "hostname",
                "resources[0].scalar.value",
                "resources[1].name"
            ]
        );

        let task = bytes_of::<v1::TaskInfo>(json!({
            "name": "t", "task_id": {"value": "t"}, "agent_id": {"value": "a"},
            "limits": {"mem": {"value": 1}, "cpus": {}},
        }));
        assert_eq!(
            missing_required_in::<v1::TaskInfo>(&task).expect("decodes"),
            [r#"limits["cpus"].value"#]
        );
    }

    #[test]
    fn the_path_mesos_reported_for_a_subscribe_without_user() {
        let call = bytes_of::<scheduler::Call>(json!({
            "type": "SUBSCRIBE", "subscribe": {"framework_info": {"name": "n"}},
        }));
        assert_eq!(
            missing_required_in::<scheduler::Call>(&call).expect("decodes"),
            ["subscribe.framework_info.user"]
        );
    }

    #[test]
    fn prost_values_always_carry_their_required_fields() {
        // prost encodes required fields even when never assigned, so a prost
        // value looks complete; only received bytes or JSON tell.
        assert!(missing_required(&v1::Resource::default()).is_empty());
        assert!(missing_required(&scheduler::Call::default()).is_empty());
    }

    #[test]
    fn malformed_bytes_are_a_decode_error() {
        assert!(missing_required_in::<v1::Resource>(&[0x0a, 0x05, b'c']).is_err());
    }
}
