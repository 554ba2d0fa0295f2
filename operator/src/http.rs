//! The operator's own HTTP port: `/metrics`, `/healthz`, `/readyz`, on
//! hyper with axum's router. `/readyz` is 503 with the reason until the
//! operator can work (its CRDs are served).

use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Whether the operator is ready, and why not: shared by the lifecycle that
/// sets it and `/readyz` that reports it.
#[derive(Debug, Clone)]
pub struct Health(Arc<RwLock<Option<String>>>);

impl Default for Health {
    fn default() -> Self {
        Health(Arc::new(RwLock::new(Some("starting".into()))))
    }
}

impl Health {
    /// Not ready, for this reason.
    pub fn set_not_ready(&self, why: String) {
        if let Ok(mut w) = self.0.write() {
            *w = Some(why);
        }
    }

    /// Ready.
    pub fn set_ready(&self) {
        if let Ok(mut w) = self.0.write() {
            *w = None;
        }
    }

    /// Why it is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<String> {
        self.0
            .read()
            .map_or_else(|_| Some("poisoned".into()), |r| r.clone())
    }
}

/// Serves until the task is dropped (hyper's HTTP/1 server, axum's router).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Health) {
    let router = Router::new()
        .route(
            "/metrics",
            get(|State((metrics, _)): State<Shared>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics.render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State((_, health)): State<Shared>| async move {
                match health.not_ready() {
                    None => (StatusCode::OK, "ok\n".to_string()),
                    Some(why) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {why}\n"),
                    ),
                }
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state((metrics, health));
    if let Err(e) = axum::serve(listener, router).await {
        tracing::error!(error = %e, "the metrics port stopped");
    }
}

type Shared = (Arc<Metrics>, Health);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn metrics_and_health() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let m = Arc::new(Metrics::new().unwrap());
        m.observe("stream", Duration::from_millis(1), None);
        m.observe("stream", Duration::from_millis(1), Some("transient"));
        let health = Health::default();
        let task = tokio::spawn(serve(l, m, health.clone()));
        let r = get(addr, "/readyz").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.ends_with("not ready: starting\n"), "{r}");
        health.set_ready();
        assert!(get(addr, "/readyz").await.ends_with("ok\n"));
        let r = get(addr, "/metrics").await;
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(r.contains("streammachine_operator_reconciles_total"), "{r}");
        assert!(
            r.contains(r#"streammachine_operator_reconcile_errors_total{controller="stream",error="transient"} 1"#),
            "{r}"
        );
        assert!(get(addr, "/healthz").await.ends_with("ok\n"));
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        task.abort();
    }
}
