//! The operator's own HTTP port: `/metrics`, `/healthz`, `/readyz`. A few
//! requests a minute from Prometheus and the kubelet: one small task per
//! connection, one request per connection. `/readyz` is 503 with the reason
//! until the operator can work (its CRDs are served).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Health) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(conn, &metrics, &health))
                .await;
        });
    }
}

async fn answer(mut conn: TcpStream, metrics: &Metrics, health: &Health) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".into()),
        ("GET", "/readyz") => match health.not_ready() {
            None => ("200 OK", "text/plain", "ok\n".into()),
            Some(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
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
