//! The Elasticsearch/OpenSearch sink of analytics events: `_bulk` requests
//! (NDJSON: an `index` action line naming the day's index, then the event)
//! of up to `batchSize` events, at the latest `flushSeconds` after a batch's
//! first event. Items the cluster refuses for good (a 4xx per item, e.g. a
//! mapping conflict) are dropped and counted; the rest (429, 5xx, no answer)
//! is retried with backoff. Meanwhile new events wait in the bounded queue,
//! and are dropped (counted) when it is full: never on the audio path.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;
use streammachine_config::ElasticsearchConfig;
use tokio::sync::mpsc;

use crate::http::client::HttpsClient;
use crate::metrics::Metrics;

/// Why a `_bulk` request failed as a whole.
#[derive(Debug, thiserror::Error)]
enum BulkError {
    /// No answer, or a connection error.
    #[error("{0}")]
    Http(String),
    /// Too many requests or a server error: worth retrying.
    #[error("answered {0}")]
    Retry(u16),
    /// Refused as a whole (bad request, unauthorized): not worth retrying.
    #[error("answered {status}: {body}")]
    Refused {
        /// The status.
        status: u16,
        /// The start of the answer.
        body: String,
    },
    /// The answer is not a `_bulk` response.
    #[error("unexpected answer: {0}")]
    Answer(String),
}

/// Largest `_bulk` answer read.
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// Tries of one batch before its events are given up.
const TRIES: u32 = 8;

/// Sends queued events until the queue closes.
pub async fn run(mut rx: mpsc::Receiver<String>, cfg: ElasticsearchConfig, metrics: Metrics) {
    let client = match crate::http::client::https_client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "analytics: cannot set up the Elasticsearch client; events are dropped");
            while rx.recv().await.is_some() {
                dropped(&metrics, "refused", 1);
            }
            return;
        }
    };
    let auth = basic_auth(&cfg);
    let url = format!("{}/_bulk", cfg.url.trim_end_matches('/'));
    let flush = Duration::from_secs_f64(cfg.flush_seconds);
    let mut failing = false;
    while let Some(batch) = next_batch(&mut rx, cfg.batch_size as usize, flush).await {
        let index = format!("{}-{}", cfg.index_prefix, utc_day());
        let mut pending = batch;
        let mut wait = crate::retry::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for attempt in 1..=TRIES {
            let body = ndjson(&index, &pending);
            match bulk(&client, &url, auth.as_deref(), body).await {
                Ok(answer) => {
                    let (retry, refused, first_error) = sort_items(&answer, pending);
                    if !refused.is_empty() {
                        dropped(&metrics, "refused", refused.len());
                        tracing::warn!(events = refused.len(), error = %first_error.unwrap_or_default(), "analytics: Elasticsearch refused events; they are dropped");
                    }
                    if failing {
                        failing = false;
                        tracing::info!("analytics: Elasticsearch takes events again");
                    }
                    pending = retry;
                }
                Err(BulkError::Refused { status, body }) => {
                    dropped(&metrics, "refused", pending.len());
                    tracing::error!(status, answer = %body, events = pending.len(), "analytics: Elasticsearch refused a bulk request; its events are dropped");
                    pending.clear();
                }
                Err(e) => {
                    if !failing {
                        failing = true;
                        tracing::warn!(error = %e, url = %url, "analytics: cannot send events to Elasticsearch; retrying with backoff (logged once until it works)");
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            if attempt == TRIES {
                dropped(&metrics, "given_up", pending.len());
                tracing::error!(
                    events = pending.len(),
                    "analytics: events given up after {TRIES} tries"
                );
                break;
            }
            tokio::time::sleep(wait.next_delay()).await;
        }
    }
}

fn dropped(metrics: &Metrics, reason: &str, n: usize) {
    metrics
        .analytics_dropped
        .with_label_values(&[reason])
        .inc_by(n as u64);
}

/// Up to `max` events: waits for the first, then takes more until `max` or
/// `flush` after the first. `None` once the queue is closed and empty.
async fn next_batch(
    rx: &mut mpsc::Receiver<String>,
    max: usize,
    flush: Duration,
) -> Option<Vec<String>> {
    let first = rx.recv().await?;
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + flush;
    while batch.len() < max {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => batch.push(e),
            Ok(None) | Err(_) => break,
        }
    }
    Some(batch)
}

/// The `_bulk` body: an action line and the event, each line ending in `\n`.
fn ndjson(index: &str, events: &[String]) -> String {
    let action = serde_json::json!({ "index": { "_index": index } }).to_string();
    let mut body = String::with_capacity(events.iter().map(|e| e.len() + action.len() + 2).sum());
    for e in events {
        body.push_str(&action);
        body.push('\n');
        body.push_str(e);
        body.push('\n');
    }
    body
}

/// Splits a batch by the answer's items: those to retry (429, 5xx, or no
/// item for them), those refused for good, and the first refusal's reason.
fn sort_items(answer: &Value, events: Vec<String>) -> (Vec<String>, Vec<String>, Option<String>) {
    let items = answer["items"].as_array();
    if answer["errors"] == false {
        return (Vec::new(), Vec::new(), None);
    }
    let (mut retry, mut refused, mut reason) = (Vec::new(), Vec::new(), None);
    for (i, e) in events.into_iter().enumerate() {
        let item = items.and_then(|a| a.get(i));
        let result = item.and_then(|it| it.as_object()?.values().next());
        let status = result.and_then(|r| r["status"].as_u64()).unwrap_or(0);
        match status {
            200..=299 => {}
            400..=499 if status != 429 => {
                if reason.is_none() {
                    reason = result.map(|r| r["error"].to_string());
                }
                refused.push(e);
            }
            _ => retry.push(e),
        }
    }
    (retry, refused, reason)
}

async fn bulk(
    client: &HttpsClient,
    url: &str,
    auth: Option<&str>,
    body: String,
) -> Result<Value, BulkError> {
    let mut req =
        http::Request::post(url).header(http::header::CONTENT_TYPE, "application/x-ndjson");
    if let Some(a) = auth {
        req = req.header(http::header::AUTHORIZATION, a);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| BulkError::Http(e.to_string()))?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| BulkError::Http(crate::error::error_chain(&e)))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| BulkError::Http(e.to_string()))?
            .to_bytes();
        Ok::<_, BulkError>((status, body))
    };
    let (status, body) = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .map_err(|_| BulkError::Http("no answer within 60 s".into()))??;
    match status {
        200..=299 => serde_json::from_slice(&body).map_err(|e| BulkError::Answer(e.to_string())),
        429 | 500..=599 => Err(BulkError::Retry(status)),
        _ => Err(BulkError::Refused {
            status,
            body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
        }),
    }
}

fn basic_auth(cfg: &ElasticsearchConfig) -> Option<String> {
    use base64::Engine as _;
    let user = cfg.username.as_ref()?;
    let password = match (&cfg.password, &cfg.password_file) {
        (Some(p), _) => p.0.clone(),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(s) => s.trim().to_string(),
            Err(e) => {
                tracing::error!(file = %f.display(), error = %e, "analytics: cannot read the Elasticsearch password file");
                String::new()
            }
        },
        (None, None) => String::new(),
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Some(format!("Basic {b64}"))
}

/// Today in UTC as `YYYY.MM.DD`.
fn utc_day() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}.{:02}.{:02}", d.year(), u8::from(d.month()), d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_ndjson_and_items_are_sorted_by_status() {
        let events = vec![
            "{\"a\":1}".to_string(),
            "{\"b\":2}".into(),
            "{\"c\":3}".into(),
        ];
        let body = ndjson("sm-2026.12.06", &events);
        let lines: Vec<&str> = body.split_terminator('\n').collect();
        assert_eq!(lines.len(), 6);
        assert!(body.ends_with('\n'));
        assert_eq!(lines[0], r#"{"index":{"_index":"sm-2026.12.06"}}"#);
        assert_eq!(lines[3], r#"{"b":2}"#);
        let answer = serde_json::json!({"errors": true, "items": [
            {"index": {"status": 201}},
            {"index": {"status": 400, "error": {"type": "mapper_parsing_exception"}}},
            {"index": {"status": 429}},
        ]});
        let (retry, refused, why) = sort_items(&answer, events.clone());
        assert_eq!(retry, [events[2].clone()]);
        assert_eq!(refused, [events[1].clone()]);
        assert!(why.unwrap().contains("mapper_parsing_exception"));
        let ok = serde_json::json!({"errors": false, "items": []});
        assert_eq!(sort_items(&ok, events).0.len(), 0);
        assert_eq!(utc_day().len(), 10);
    }
}
