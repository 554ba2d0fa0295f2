//! The admin port: `/metrics`, `/healthz`, `/readyz` and `/status-json.xsl`.
//! (The admin REST API and the slave link will live here too.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http::{self, reason, RequestError, Response};
use crate::server::Server;

/// Serves one admin connection (keep-alive allowed).
pub async fn handle_connection(server: Arc<Server>, mut sock: TcpStream, peer: SocketAddr) {
    let mut buf = BytesMut::new();
    loop {
        let read = tokio::time::timeout(
            Duration::from_secs(30),
            http::read_request(&mut sock, &mut buf, http::MAX_HEAD_BYTES),
        )
        .await;
        let (resp, keep_alive, head_only) = match read {
            Err(_) | Ok(Ok(None)) | Ok(Err(RequestError::Closed | RequestError::Io(_))) => return,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "admin port: bad request");
                (
                    Response::text(400, reason(400), e.to_string()),
                    false,
                    false,
                )
            }
            Ok(Ok(Some(req))) => {
                let resp = if req.method != "GET" && req.method != "HEAD" {
                    Response::text(
                        405,
                        reason(405),
                        format!("{} is not allowed here", req.method),
                    )
                } else {
                    crate::status::common_route(&server, &req, &req.path).unwrap_or_else(|| {
                        Response::new(404, reason(404))
                            .header("Content-Type", "application/json")
                            .body(
                                serde_json::json!({
                                    "error": format!("no admin route {}", req.path),
                                    "routes": ["/metrics", "/healthz", "/readyz", "/status-json.xsl"],
                                })
                                .to_string()
                                .into_bytes(),
                            )
                    })
                };
                (resp, req.keep_alive(), req.method == "HEAD")
            }
        };
        if sock
            .write_all(&resp.to_bytes(keep_alive, head_only))
            .await
            .is_err()
            || !keep_alive
        {
            return;
        }
    }
}
