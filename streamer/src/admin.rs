//! The admin port: the admin REST API under `/api/` (bearer token), and the
//! open operational routes `/metrics`, `/healthz`, `/readyz`, `/status-json.xsl`.
//! (The slave link will live here too.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::{self, reason, Request, RequestError, Response};

/// How long a client may take to send a request (head and body; a dump
/// import can be a gigabyte).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// How much more buffer one read of a request body may reserve.
const READ_STEP: usize = 256 * 1024;

/// What the admin port needs from the server: the API, the status pages and
/// the master's side of the link, which it serves. Any host of all three is
/// one; nothing here names the server.
pub trait AdminHost: crate::api::ApiHost + crate::link::master::MasterHost {}

impl<T: crate::api::ApiHost + crate::link::master::MasterHost> AdminHost for T {}

/// Serves one admin connection (keep-alive allowed).
#[tracing::instrument(name = "admin", skip_all, fields(%peer))]
pub async fn handle_connection(server: Arc<dyn AdminHost>, mut sock: TcpStream, peer: SocketAddr) {
    let mut buf = BytesMut::new();
    loop {
        let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let req = http::read_request(&mut sock, &mut buf, http::MAX_HEAD_BYTES).await?;
            let Some(req) = req else { return Ok(None) };
            if crate::api::is_api(&req.path) {
                let auth = req.header("authorization");
                if let Some(refusal) =
                    crate::api::refuse_before_body(server.as_ref(), &req.method, &req.path, auth)
                {
                    return Err(BodyError::Refused(refusal));
                }
            }
            let body = read_body(&mut sock, &mut buf, &req).await?;
            Ok::<_, BodyError>(Some((req, body)))
        })
        .await;
        let (resp, keep_alive, head_only) = match read {
            Err(_) => return,
            Ok(Ok(None))
            | Ok(Err(BodyError::Request(RequestError::Closed | RequestError::Io(_)))) => return,
            // The body was not read: answer and close.
            Ok(Err(BodyError::Refused(resp))) => (resp, false, false),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "admin port: bad request");
                (e.response(), false, false)
            }
            Ok(Ok(Some((req, _)))) if req.path == "/link" && req.method == "GET" => {
                crate::link::master::serve(server, sock, peer, req, buf).await;
                return;
            }
            Ok(Ok(Some((req, body)))) => {
                // A dump export or import handles hundreds of megabytes: let
                // the runtime move other tasks off this worker meanwhile.
                let resp = if req.path.ends_with("/rewind") {
                    tokio::task::block_in_place(|| route(&server, &req, &body))
                } else {
                    route(&server, &req, &body)
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

fn route(server: &Arc<dyn AdminHost>, req: &Request, body: &[u8]) -> Response {
    if crate::api::is_api(&req.path) {
        return crate::api::handle(
            server.as_ref(),
            &req.method,
            &req.path,
            req.header("authorization"),
            body,
        );
    }
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(
            405,
            reason(405),
            format!("{} is not allowed here", req.method),
        );
    }
    crate::status::common_route(server.as_ref(), req, &req.path).unwrap_or_else(|| {
        Response::new(404, reason(404))
            .header("Content-Type", "application/json")
            .body(
                serde_json::json!({
                    "error": format!("no admin route {}", req.path),
                    "routes": ["/api/openapi.json", "/metrics", "/healthz", "/readyz", "/status-json.xsl"],
                })
                .to_string()
                .into_bytes(),
            )
    })
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("chunked request bodies are not supported: send Content-Length")]
    Chunked,
    #[error("bad Content-Length")]
    BadLength,
    /// Refused before its body was read (no or wrong admin token).
    #[error("refused before reading the body")]
    Refused(Response),
}

impl BodyError {
    fn response(&self) -> Response {
        let status = match self {
            BodyError::TooLarge(_) => 413,
            BodyError::Chunked => 411,
            BodyError::Request(RequestError::TooLarge(_)) => 431,
            _ => 400,
        };
        Response::new(status, reason(status))
            .header("Content-Type", "application/json")
            .body(
                serde_json::json!({ "error": self.to_string() })
                    .to_string()
                    .into_bytes(),
            )
    }
}

async fn read_body(
    sock: &mut TcpStream,
    buf: &mut BytesMut,
    req: &Request,
) -> Result<Vec<u8>, BodyError> {
    if req
        .header("transfer-encoding")
        .is_some_and(|t| !t.eq_ignore_ascii_case("identity"))
    {
        return Err(BodyError::Chunked);
    }
    let len = match req.header("content-length") {
        None => return Ok(Vec::new()),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| BodyError::BadLength)?,
    };
    let limit = crate::api::body_limit(&req.method, &req.path);
    if len > limit {
        return Err(BodyError::TooLarge(limit));
    }
    while buf.len() < len {
        // Grow as bytes arrive: a Content-Length alone reserves nothing.
        buf.reserve((len - buf.len()).min(READ_STEP));
        if sock.read_buf(buf).await.map_err(RequestError::Io)? == 0 {
            return Err(BodyError::Request(RequestError::Closed));
        }
    }
    let body = buf[..len].to_vec();
    buf.advance(len);
    Ok(body)
}
