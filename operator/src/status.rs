//! What a master says about its streams: `GET /api/status` and `GET
//! /api/slaves` on its admin port, with the admin token. The reconciler asks
//! through the [`MasterStatus`] trait, so tests can answer for a master.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// One stream as the master reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamReport {
    /// An encoder is connected to the stream's mount.
    pub source_connected: bool,
    /// Listeners on the master and on every slave.
    pub listeners: i64,
    /// Seconds of audio in the rewind buffer.
    pub buffered_seconds: f64,
    /// The transcoder's last error while it fails (transcoded streams only).
    pub transcoder_failing: Option<String>,
}

/// What a master reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MasterReport {
    /// By stream key.
    pub streams: BTreeMap<String, StreamReport>,
    /// Connected sources by mount key.
    pub sources: BTreeMap<String, usize>,
    /// Slaves connected to the master.
    pub slaves: usize,
    /// Slaves more than [`OUT_OF_SYNC_CHUNKS`] behind the master on some
    /// stream: `(slave id, chunks behind)`.
    pub out_of_sync: Vec<(String, u64)>,
}

impl MasterReport {
    /// Is an encoder connected to `mount`?
    pub fn source_connected(&self, mount: &str) -> bool {
        self.sources.get(mount).is_some_and(|n| *n > 0)
    }

    /// Listeners of all streams.
    pub fn listeners(&self) -> i64 {
        self.streams.values().map(|s| s.listeners).sum()
    }
}

/// Why the master could not be asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct StatusError(pub String);

/// A boxed future, so the trait can be used as `dyn`.
pub type StatusFuture = Pin<Box<dyn Future<Output = Result<MasterReport, StatusError>> + Send>>;

/// Asks a master for its status.
pub trait MasterStatus: Send + Sync {
    /// `base_url` is the admin port's URL, e.g. `http://main-master.radio.svc:8002`.
    fn fetch(&self, base_url: String, token: String) -> StatusFuture;
}

/// Parses the bodies of `/api/status` and `/api/slaves`.
/// A slave this many chunks (~seconds) behind the master is out of sync (the
/// master's `slave_out_of_sync` alert uses the same figure).
pub const OUT_OF_SYNC_CHUNKS: u64 = 10;

pub fn parse_report(status: &Value, slaves: &Value) -> Result<MasterReport, StatusError> {
    let streams_json = status["streams"]
        .as_array()
        .ok_or_else(|| StatusError("/api/status: no \"streams\" array".into()))?;
    let mut report = MasterReport::default();
    for s in streams_json {
        let Some(key) = s["key"].as_str() else {
            continue;
        };
        report.streams.insert(
            key.to_string(),
            StreamReport {
                source_connected: s["sourceConnected"].as_bool().unwrap_or(false),
                listeners: s["listeners"].as_i64().unwrap_or(0),
                buffered_seconds: s["buffer"]["seconds"].as_f64().unwrap_or(0.0),
                transcoder_failing: (s["transcoder"]["state"] == "failing").then(|| {
                    s["transcoder"]["lastError"]
                        .as_str()
                        .unwrap_or("unknown error")
                        .to_string()
                }),
            },
        );
    }
    for m in status["sourceMounts"].as_array().into_iter().flatten() {
        if let Some(key) = m["key"].as_str() {
            let n = m["sources"].as_array().map_or(0, Vec::len);
            report.sources.insert(key.to_string(), n);
        }
    }
    // A master has no listeners of its own: they are on the slaves, which
    // report theirs per stream over the link.
    if let Some(list) = slaves.as_array() {
        report.slaves = list.len();
        for slave in list {
            let behind = slave["chunksBehind"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, n)| n.as_u64())
                .max()
                .unwrap_or(0);
            if behind > OUT_OF_SYNC_CHUNKS {
                let id = slave["id"].as_str().unwrap_or("?").to_string();
                report.out_of_sync.push((id, behind));
            }
            for (key, n) in slave["listeners"].as_object().into_iter().flatten() {
                if let Some(s) = report.streams.get_mut(key) {
                    s.listeners += n.as_i64().unwrap_or(0);
                }
            }
        }
    }
    Ok(report)
}

/// Asks masters over HTTP.
#[derive(Debug, Clone)]
pub struct HttpMasterStatus {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl HttpMasterStatus {
    /// A client whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        HttpMasterStatus {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    async fn get(&self, url: &str, token: &str) -> Result<Value, StatusError> {
        let req = http::Request::get(url)
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::new())
            .map_err(|e| StatusError(format!("{url}: {e}")))?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| StatusError(format!("{url}: {e}")))?;
            let code = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| StatusError(format!("{url}: {e}")))?
                .to_bytes();
            if !code.is_success() {
                return Err(StatusError(format!("{url}: HTTP {code}")));
            }
            serde_json::from_slice(&body).map_err(|e| StatusError(format!("{url}: {e}")))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| StatusError(format!("{url}: no answer in {:?}", self.timeout)))?
    }
}

impl MasterStatus for HttpMasterStatus {
    fn fetch(&self, base_url: String, token: String) -> StatusFuture {
        let this = self.clone();
        Box::pin(async move {
            let status = this.get(&format!("{base_url}/api/status"), &token).await?;
            let slaves = this.get(&format!("{base_url}/api/slaves"), &token).await?;
            parse_report(&status, &slaves)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn listeners_are_summed_over_the_slaves() {
        let status = json!({
            "mode": "master",
            "streams": [
                {"key": "hits", "sourceConnected": true, "listeners": 0, "buffer": {"seconds": 3600.5}},
                {"key": "talk", "sourceConnected": false, "listeners": 0, "buffer": {"seconds": 0.0},
                 "transcoder": {"state": "failing", "lastError": "encoder: no"}}
            ],
            "sourceMounts": [{"key": "main", "sources": [{"id": 1, "active": true}]}]
        });
        let slaves = json!([
            {"id": "a", "listeners": {"hits": 10, "talk": 1}, "chunksBehind": {"hits": 0, "talk": 10}},
            {"id": "b", "listeners": {"hits": 5, "gone": 7}, "chunksBehind": {"hits": 11}}
        ]);
        let r = parse_report(&status, &slaves).unwrap();
        assert_eq!(r.streams["hits"].listeners, 15);
        assert_eq!(r.streams["talk"].listeners, 1);
        assert!(r.streams["hits"].source_connected);
        assert_eq!(r.streams["hits"].buffered_seconds, 3600.5);
        assert!(r.source_connected("main"));
        assert!(!r.source_connected("other"));
        assert_eq!(r.listeners(), 16);
        assert_eq!(r.slaves, 2);
        assert_eq!(r.out_of_sync, [("b".to_string(), 11)]);
        assert_eq!(r.streams["hits"].transcoder_failing, None);
        assert_eq!(
            r.streams["talk"].transcoder_failing.as_deref(),
            Some("encoder: no")
        );
    }

    #[test]
    fn a_body_without_streams_is_an_error() {
        assert!(parse_report(&json!({"error": "no"}), &json!([])).is_err());
    }

    #[tokio::test]
    async fn an_unreachable_master_is_an_error_not_a_hang() {
        let client = HttpMasterStatus::new(Duration::from_millis(500));
        // A port nothing listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = client
            .fetch(format!("http://127.0.0.1:{port}"), "t".into())
            .await
            .unwrap_err();
        assert!(e.0.contains("/api/status"), "{e}");
    }
}
