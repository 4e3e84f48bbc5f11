//! The two body encodings of the Mesos v1 HTTP APIs and their content types.

use super::{json, validate};

/// How a request or response body (or a RecordIO record) is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Binary protobuf, `application/x-protobuf`.
    Protobuf,
    /// Mesos' JSON mapping (see [`super::json`]), `application/json`.
    Json,
}

/// Why a body could not be decoded. The messages are short; the cause is in
/// [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The protobuf bytes are malformed.
    #[error("failed to decode protobuf body")]
    Protobuf(#[source] prost::DecodeError),
    /// The JSON is malformed, does not fit the message, or lacks required
    /// fields.
    #[error("failed to convert JSON body")]
    Json(#[source] json::JsonError),
    /// The protobuf bytes lack `required` fields (Mesos answers 400).
    #[error("missing required fields: {}", .0.join(", "))]
    MissingRequired(Vec<String>),
}

impl Encoding {
    /// The `Content-Type` (and `Accept`) value for this encoding.
    pub const fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }

    /// The encoding named by a `Content-Type` value, compared byte for byte
    /// like Mesos does: parameters such as `; charset=utf-8` are not accepted.
    pub fn from_content_type(value: &str) -> Option<Self> {
        [Encoding::Protobuf, Encoding::Json]
            .into_iter()
            .find(|e| e.content_type() == value)
    }

    /// Encodes `m`: protobuf bytes, or compact Mesos JSON.
    ///
    /// # Panics
    ///
    /// For JSON, if `M` is not a message of the Mesos descriptor set.
    pub fn encode<M: prost::Message + prost::Name>(self, m: &M) -> Vec<u8> {
        match self {
            Encoding::Protobuf => m.encode_to_vec(),
            Encoding::Json => json::to_string(m).into_bytes(),
        }
    }

    /// Decodes a body, rejecting missing `required` fields as Mesos does.
    ///
    /// # Panics
    ///
    /// If `M` is not a message of the Mesos descriptor set.
    pub fn decode<M: prost::Message + prost::Name + Default>(
        self,
        bytes: &[u8],
    ) -> Result<M, DecodeError> {
        match self {
            Encoding::Protobuf => {
                let missing =
                    validate::missing_required_in::<M>(bytes).map_err(DecodeError::Protobuf)?;
                if !missing.is_empty() {
                    return Err(DecodeError::MissingRequired(missing));
                }
                M::decode(bytes).map_err(DecodeError::Protobuf)
            }
            Encoding::Json => json::from_slice(bytes).map_err(DecodeError::Json),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::mesos::proto::v1::{self, executor, scheduler};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
            .collect()
    }

    /// Encodes `m` byte for byte as the vector and decodes the vector back.
    fn check_vector<M>(m: &M, vector: &str)
    where
        M: prost::Message + prost::Name + Default + PartialEq + std::fmt::Debug,
    {
        assert_eq!(hex(&Encoding::Protobuf.encode(m)), vector);
        assert_eq!(
            &Encoding::Protobuf
                .decode::<M>(&unhex(vector))
                .expect("decodes"),
            m
        );
    }

    fn framework_id(value: &str) -> v1::FrameworkId {
        v1::FrameworkId {
            value: value.into(),
        }
    }

    #[test]
    fn content_types_compare_byte_for_byte() {
        for e in [Encoding::Protobuf, Encoding::Json] {
            assert_eq!(Encoding::from_content_type(e.content_type()), Some(e));
        }
        assert_eq!(Encoding::Protobuf.content_type(), "application/x-protobuf");
        assert_eq!(Encoding::Json.content_type(), "application/json");
        for rejected in [
            "application/json; charset=utf-8",
            "Application/JSON",
            " application/json",
            "application/recordio",
            "",
        ] {
            assert_eq!(Encoding::from_content_type(rejected), None, "{rejected:?}");
        }
    }

    #[test]
    fn vector_scheduler_heartbeat_event() {
        let event = scheduler::Event {
            r#type: Some(scheduler::event::Type::Heartbeat as i32),
            ..Default::default()
        };
        check_vector(&event, "0808");
    }

    #[test]
    fn vector_scheduler_subscribe_call() {
        let call = scheduler::Call {
            r#type: Some(scheduler::call::Type::Subscribe as i32),
            subscribe: Some(scheduler::call::Subscribe {
                framework_info: v1::FrameworkInfo {
                    user: "root".into(),
                    name: "test".into(),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        check_vector(&call, "10011a0e0a0c0a04726f6f74120474657374");
    }

    #[test]
    fn vector_scheduler_subscribed_event() {
        let event = scheduler::Event {
            r#type: Some(scheduler::event::Type::Subscribed as i32),
            subscribed: Some(scheduler::event::Subscribed {
                framework_id: framework_id("M-0000"),
                heartbeat_interval_seconds: Some(15.0),
                master_info: None,
            }),
            ..Default::default()
        };
        check_vector(&event, "080112130a080a064d2d30303030110000000000002e40");
    }

    #[test]
    fn vector_scheduler_acknowledge_call() {
        let call = scheduler::Call {
            framework_id: Some(framework_id("M-0000")),
            r#type: Some(scheduler::call::Type::Acknowledge as i32),
            acknowledge: Some(scheduler::call::Acknowledge {
                agent_id: v1::AgentId {
                    value: "M-S0".into(),
                },
                task_id: v1::TaskId { value: "t1".into() },
                uuid: (0u8..16).collect(),
            }),
            ..Default::default()
        };
        check_vector(
            &call,
            "0a080a064d2d30303030100842200a060a044d2d533012040a0274311a10000102030405060708090a0b0c0d0e0f",
        );
    }

    #[test]
    fn vector_scheduler_revive_call() {
        let call = scheduler::Call {
            framework_id: Some(framework_id("M-0000")),
            r#type: Some(scheduler::call::Type::Revive as i32),
            revive: Some(scheduler::call::Revive {
                roles: vec!["k8s".into()],
            }),
            ..Default::default()
        };
        check_vector(&call, "0a080a064d2d3030303010057a050a036b3873");
    }

    #[test]
    fn vector_executor_subscribe_call() {
        let call = executor::Call {
            executor_id: v1::ExecutorId { value: "e1".into() },
            framework_id: framework_id("M-0000"),
            r#type: Some(executor::call::Type::Subscribe as i32),
            subscribe: Some(executor::call::Subscribe::default()),
            ..Default::default()
        };
        check_vector(&call, "0a040a02653112080a064d2d3030303018012200");
    }

    #[test]
    fn vector_executor_heartbeat_event() {
        let event = executor::Event {
            r#type: Some(executor::event::Type::Heartbeat as i32),
            ..Default::default()
        };
        check_vector(&event, "0809");
    }

    #[test]
    fn json_encoding_is_compact_mesos_json() {
        let event = scheduler::Event {
            r#type: Some(scheduler::event::Type::Heartbeat as i32),
            ..Default::default()
        };
        let body = Encoding::Json.encode(&event);
        assert_eq!(body, br#"{"type":"HEARTBEAT"}"#);
        assert_eq!(
            Encoding::Json
                .decode::<scheduler::Event>(&body)
                .expect("decodes"),
            event
        );
    }

    #[test]
    fn missing_required_fields_are_rejected_in_both_encodings() {
        // SUBSCRIBE with an empty framework_info: user and name are missing.
        let err = Encoding::Protobuf
            .decode::<scheduler::Call>(&unhex("10011a020a00"))
            .expect_err("incomplete");
        assert_eq!(
            err.to_string(),
            "missing required fields: subscribe.framework_info.user, subscribe.framework_info.name"
        );
        let err = Encoding::Json
            .decode::<scheduler::Call>(
                br#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"name":"n"}}}"#,
            )
            .expect_err("incomplete");
        assert!(matches!(
            err,
            DecodeError::Json(json::JsonError::MissingRequired(_))
        ));
        let cause = err.source().map(ToString::to_string);
        assert_eq!(
            cause.as_deref(),
            Some("missing required fields: subscribe.framework_info.user")
        );
    }

    #[test]
    fn malformed_bodies_keep_their_cause() {
        let err = Encoding::Protobuf
            .decode::<scheduler::Event>(&[0x08])
            .expect_err("truncated");
        assert!(matches!(err, DecodeError::Protobuf(_)));
        assert!(err.source().is_some());
        let err = Encoding::Json
            .decode::<scheduler::Event>(b"{")
            .expect_err("not JSON");
        assert!(matches!(err, DecodeError::Json(json::JsonError::Syntax(_))));
    }

    mod never_panics {
        use super::*;
        use crate::mesos::proto::devcluster::AgentCall;
        use crate::mesos::proto::v1::executor;
        use proptest::prelude::*;

        fn all(bytes: &[u8]) {
            for enc in [Encoding::Protobuf, Encoding::Json] {
                let _ = enc.decode::<scheduler::Call>(bytes);
                let _ = enc.decode::<scheduler::Event>(bytes);
                let _ = enc.decode::<executor::Call>(bytes);
                let _ = enc.decode::<executor::Event>(bytes);
                let _ = enc.decode::<AgentCall>(bytes);
            }
        }

        proptest! {
            /// Arbitrary bytes are rejected or decoded, never a panic.
            #[test]
            fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                all(&bytes);
            }

            /// Valid calls with corrupted bytes, and JSON shaped like calls
            /// with wrong types, are rejected or decoded, never a panic.
            #[test]
            fn mutated_calls(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
                let call = crate::mesos::scheduler::calls::reconcile(vec![(crate::mesos::proto::v1::TaskId { value: "t".into() }, None)]);
                for enc in [Encoding::Protobuf, Encoding::Json] {
                    let mut b = enc.encode(&call);
                    let i = pos.index(b.len());
                    b[i] = byte;
                    all(&b);
                    b.truncate(cut.index(b.len() + 1));
                    all(&b);
                }
            }

            #[test]
            fn json_with_wrong_types(v in prop_oneof![Just("1"), Just("\"x\""), Just("[]"), Just("{}"), Just("null"), Just("true"), Just("1e400")],
                                      key in prop_oneof![Just("type"), Just("subscribe"), Just("framework_id"), Just("accept"), Just("acknowledge")]) {
                let doc = format!("{{\"{key}\":{v},\"subscribe\":{{\"framework_info\":{{\"user\":{v},\"name\":\"n\"}}}}}}");
                all(doc.as_bytes());
            }
        }
    }
}
