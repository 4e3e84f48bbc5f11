//! The agent's side of km's private dev-master protocol
//! (`proto/devcluster.proto`): REGISTER answered by a RecordIO stream of
//! [`AgentEvent`]s, and every other call a separate POST carrying
//! `Km-Agent-Id`, answered 202. Both directions use protobuf.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use http::StatusCode;

use crate::mesos::encoding::Encoding;
use crate::mesos::proto::devcluster::{AgentCall, AgentEvent};
use crate::mesos::recordio::DEFAULT_MAX_RECORD;
use crate::mesos::stream::{self, StreamError};

/// Path of the agent endpoint on the master.
pub const AGENT_PATH: &str = "/api/v1/km/agent";
/// Header naming the calling agent on every call but REGISTER.
pub const AGENT_ID_HEADER: &str = "Km-Agent-Id";

/// The master's events, as decoded from the REGISTER response.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<AgentEvent, StreamError>> + Send>>;

/// Talking to the master failed.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// `--master` is not a usable address.
    #[error("--master {given:?}: {problem}; expected host:port or http(s)://host:port")]
    Address {
        /// As given.
        given: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// The request failed.
    #[error("cannot reach the master at {url}")]
    Http {
        /// The endpoint.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The master answered with an unexpected status.
    #[error("the master at {url} answered {status}: {body}")]
    Status {
        /// The endpoint.
        url: String,
        /// The status.
        status: StatusCode,
        /// The body, for its reason.
        body: String,
    },
    /// The event stream broke.
    #[error("the master's event stream broke")]
    Stream(#[from] StreamError),
}

/// The master's agent endpoint for a `--master` value.
pub fn endpoint(master: &str) -> Result<String, MasterError> {
    let bad = |problem| MasterError::Address {
        given: master.to_owned(),
        problem,
    };
    let m = master.trim();
    let (scheme, hostport) = match m.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        Some(_) => {
            return Err(bad(
                "only http and https masters are supported (no zk:// detection in the dev agent)",
            ));
        }
        None => ("http", m),
    };
    let hostport = hostport.trim_end_matches('/');
    if hostport.is_empty() || hostport.contains('/') {
        return Err(bad("no host, or a path after host:port"));
    }
    let base = format!("{scheme}://{hostport}");
    Ok(format!("{base}{AGENT_PATH}"))
}

/// A client of the master's agent endpoint.
#[derive(Debug, Clone)]
pub struct MasterClient {
    url: String,
    http: reqwest::Client,
}

const PROTOBUF: &str = "application/x-protobuf";

impl MasterClient {
    /// A client for `--master`.
    pub fn new(master: &str) -> Result<MasterClient, MasterError> {
        let url = endpoint(master)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| MasterError::Http {
                url: url.clone(),
                source,
            })?;
        Ok(MasterClient { url, http })
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends REGISTER; on 200 returns the event stream.
    pub async fn register(&self, call: &AgentCall) -> Result<EventStream, MasterError> {
        let resp = self
            .http
            .post(&self.url)
            .header(http::header::CONTENT_TYPE, PROTOBUF)
            .header(http::header::ACCEPT, PROTOBUF)
            .body(Encoding::Protobuf.encode(call))
            .send()
            .await
            .map_err(|source| MasterError::Http {
                url: self.url.clone(),
                source,
            })?;
        if resp.status() != StatusCode::OK {
            return Err(self.status_error(resp).await);
        }
        let encoding = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(Encoding::from_content_type)
            .unwrap_or(Encoding::Protobuf);
        Ok(Box::pin(stream::events::<AgentEvent, _, _, _>(
            Box::pin(resp.bytes_stream()),
            encoding,
            DEFAULT_MAX_RECORD,
        )))
    }

    /// Sends any other call; the master answers 202 (200 is taken too).
    pub async fn call(&self, agent_id: &str, call: &AgentCall) -> Result<(), MasterError> {
        let resp = self
            .http
            .post(&self.url)
            .header(http::header::CONTENT_TYPE, PROTOBUF)
            .header(AGENT_ID_HEADER, agent_id)
            .timeout(Duration::from_secs(30))
            .body(Encoding::Protobuf.encode(call))
            .send()
            .await
            .map_err(|source| MasterError::Http {
                url: self.url.clone(),
                source,
            })?;
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::OK => Ok(()),
            _ => Err(self.status_error(resp).await),
        }
    }

    async fn status_error(&self, resp: reqwest::Response) -> MasterError {
        let status = resp.status();
        let mut body = resp.text().await.unwrap_or_default();
        body.truncate(500);
        MasterError::Status {
            url: self.url.clone(),
            status,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_addresses() {
        assert_eq!(endpoint("m:5050").unwrap(), "http://m:5050/api/v1/km/agent");
        assert_eq!(
            endpoint("http://10.0.0.1:5050/").unwrap(),
            "http://10.0.0.1:5050/api/v1/km/agent"
        );
        assert_eq!(
            endpoint("https://m:5050").unwrap(),
            "https://m:5050/api/v1/km/agent"
        );
        for bad in ["zk://z:2181/mesos", "", "http://", "m:5050/x"] {
            let e = endpoint(bad).unwrap_err().to_string();
            assert!(e.contains("--master"), "{bad}: {e}");
        }
    }
}
