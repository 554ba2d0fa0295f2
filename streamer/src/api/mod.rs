//! The admin REST API (`/api/…` on the admin port), authenticated with a
//! bearer token.
//!
//! Routes are one table ([`ROUTES`]); the OpenAPI document at
//! `/api/openapi.json` is generated from the same table, so it cannot drift
//! from what the server answers (a test calls every documented route).

mod mounts;
pub mod openapi;
mod rewind;
mod streams;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use streammachine_config::ConfigError;
use streammachine_config::{SourceMountConfig, StreamConfig};

use crate::error::ServerError;
use crate::http::Response;
use crate::source::MountError;
use crate::status::StatusHost;
use crate::store::{Applied, Change};
use crate::stream::Stream;

use mounts::*;
use rewind::*;
pub(crate) use streams::Metadata;
use streams::*;

/// Largest JSON request body.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// Largest rewind dump accepted by an import (8 h at 320 kbit/s is 1.2 GB).
pub const MAX_IMPORT_BODY: usize = 2 * 1024 * 1024 * 1024;

/// A failed API call: a status, the field at fault (if one is), a message.
#[derive(Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// The request field the error is about, e.g. `rewindSeconds`.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            field: None,
            message: message.into(),
        }
    }

    fn field(status: u16, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    fn not_found(what: &str, key: &str) -> Self {
        ApiError::new(404, format!("no {what} named {key:?}"))
    }

    /// The JSON error response.
    pub fn response(&self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(f) = &self.field {
            body["field"] = json!(f);
        }
        Response::new(self.status, crate::http::reason(self.status))
            .header("Content-Type", "application/json")
            .body(body.to_string().into_bytes())
    }
}

/// A successful API call.
#[derive(Debug)]
pub enum Reply {
    /// JSON with a status.
    Json(u16, Value),
    /// No content.
    Empty,
    /// Binary content.
    Bytes(&'static str, Vec<u8>),
}

impl Reply {
    /// The HTTP response.
    pub fn into_response(self) -> Response {
        match self {
            Reply::Json(status, v) => Response::new(status, crate::http::reason(status))
                .header("Content-Type", "application/json")
                .body(v.to_string().into_bytes()),
            Reply::Empty => Response::new(204, "No Content"),
            Reply::Bytes(content_type, body) => Response::new(200, "OK")
                .header("Content-Type", content_type)
                .body(body),
        }
    }
}

/// A route's function: the server, the path parameters, the body.
type HandlerFn<T> = fn(&dyn ApiHost, &[&str], &[u8]) -> Result<T, ApiError>;

/// What a route does with a request.
#[derive(Clone, Copy)]
enum Handler {
    /// Answers at once (reads, titles, sources, rewind buffers).
    Read(HandlerFn<Reply>),
    /// Plans a change to the streams and mounts, which [`Route::call`]
    /// stores and then puts in force (see [`crate::journal`]).
    Change(HandlerFn<Plan>),
    /// Moves a whole rewind buffer: the HTTP side streams it (see
    /// [`Transfer`]).
    Transfer(Transfer),
}

/// A route that moves a whole rewind buffer (hundreds of megabytes) as a
/// stream of bytes, chunk by chunk, on a blocking thread: the admin port
/// pipes the HTTP body to or from it ([`crate::http::pipe`]).
#[derive(Clone, Copy)]
pub enum Transfer {
    /// The stream to export (or a 404); its dump is then written out.
    Export(StreamFn),
    /// The stream to import into (or a 404/409, before any body is read),
    /// then the import itself, reading the body as it arrives (its length
    /// limit given).
    Import(StreamFn, ImportFn),
}

impl std::fmt::Debug for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transfer::Export(_) => "Transfer::Export",
            Transfer::Import(..) => "Transfer::Import",
        })
    }
}

/// Finds a route's stream from its path parameters (or the error to answer).
pub type StreamFn = fn(&dyn ApiHost, &[&str]) -> Result<Arc<Stream>, ApiError>;

/// An import: the stream, the body as it arrives, its length limit.
pub type ImportFn =
    fn(&dyn ApiHost, &Stream, &mut dyn std::io::Read, u64) -> Result<Reply, ApiError>;

/// A change to the streams and mounts, as a handler planned it.
pub(crate) struct Plan {
    /// The mounts afterwards (the file's and the API's).
    mounts: Vec<SourceMountConfig>,
    /// The streams afterwards.
    streams: Vec<StreamConfig>,
    /// What to keep in the config store.
    change: Change,
    /// Where in the config an invalid setting is (`streams[2]`).
    prefix: String,
    /// The answer once it is in force.
    answer: Answer,
}

/// The answer to a change once it is in force.
enum Answer {
    /// The stream, with this status.
    Stream(u16, String),
    /// The mount, with this status.
    Mount(u16, String),
    /// 204.
    Empty,
}

/// One API route.
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path with `{name}` parameters.
    pub path: &'static str,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    /// Request body schema, if it takes one.
    pub body: Option<openapi::Body>,
    /// Status codes it answers, with what they mean.
    pub responses: &'static [(u16, &'static str)],
    /// Whether it needs the bearer token.
    pub auth: bool,
    handler: Handler,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

const E401: (u16, &str) = (401, "no or wrong bearer token");
const E404: (u16, &str) = (404, "no such stream, mount or source");

/// Every route of the API.
pub static ROUTES: &[Route] = &[
    Route { method: "GET", path: "/api/openapi.json", summary: "This document", body: None, responses: &[(200, "OpenAPI 3.0 document")], auth: false, handler: Handler::Read(get_openapi) },
    Route { method: "GET", path: "/api/status", summary: "Server status: streams, mounts, sources, listeners", body: None, responses: &[(200, "status"), E401], auth: true, handler: Handler::Read(get_status) },
    Route { method: "GET", path: "/api/config", summary: "The configuration in force (passwords left out)", body: None, responses: &[(200, "configuration"), E401], auth: true, handler: Handler::Read(get_config) },
    Route { method: "GET", path: "/api/slaves", summary: "Master: the connected slaves, their listeners and how far behind they are", body: None, responses: &[(200, "slaves"), E401], auth: true, handler: Handler::Read(list_slaves) },
    Route { method: "GET", path: "/api/streams", summary: "All streams with their status", body: None, responses: &[(200, "streams"), E401], auth: true, handler: Handler::Read(list_streams) },
    Route { method: "POST", path: "/api/streams", summary: "Create a stream (live)", body: Some(openapi::Body::Stream), responses: &[(201, "created"), (400, "malformed body"), E401, (409, "exists already"), (422, "invalid setting")], auth: true, handler: Handler::Change(create_stream) },
    Route { method: "GET", path: "/api/streams/{key}", summary: "One stream's status and settings", body: None, responses: &[(200, "stream"), E401, E404], auth: true, handler: Handler::Read(get_stream) },
    Route { method: "PUT", path: "/api/streams/{key}", summary: "Replace a stream's settings (live; listeners stay). A missing password keeps the current one", body: Some(openapi::Body::Stream), responses: &[(200, "updated"), (400, "malformed body"), E401, E404, (422, "invalid setting")], auth: true, handler: Handler::Change(update_stream) },
    Route { method: "DELETE", path: "/api/streams/{key}", summary: "Remove a stream (its listeners are disconnected)", body: None, responses: &[(204, "removed"), E401, E404], auth: true, handler: Handler::Change(delete_stream) },
    Route { method: "POST", path: "/api/streams/{key}/metadata", summary: "Set the title (of the stream's mount, so every stream of that audio)", body: Some(openapi::Body::Metadata), responses: &[(200, "title set"), (400, "malformed body"), E401, E404], auth: true, handler: Handler::Read(stream_metadata) },
    Route { method: "GET", path: "/api/streams/{key}/listeners", summary: "The stream's connected listeners (raw, ICY, pump): id, address, User-Agent, output, connected since", body: None, responses: &[(200, "listeners"), E401, E404], auth: true, handler: Handler::Read(list_listeners) },
    Route { method: "DELETE", path: "/api/streams/{key}/listeners/{id}", summary: "Disconnect a listener", body: None, responses: &[(204, "disconnected"), E401, E404], auth: true, handler: Handler::Read(kick_listener) },
    Route { method: "GET", path: "/api/streams/{key}/rewind", summary: "Export the rewind buffer as a dump (application/octet-stream, the format of persist::dump)", body: None, responses: &[(200, "the dump"), E401, E404], auth: true, handler: Handler::Transfer(Transfer::Export(export_rewind)) },
    Route { method: "PUT", path: "/api/streams/{key}/rewind", summary: "Import a dump into the rewind buffer (the stream must have no source and no listeners); it is numbered after what the stream served, so no HLS segment name is re-used", body: Some(openapi::Body::Dump), responses: &[(204, "imported"), (400, "not a valid dump"), E401, E404, (409, "stream in use"), (413, "too large")], auth: true, handler: Handler::Transfer(Transfer::Import(import_target, import_rewind)) },
    Route { method: "DELETE", path: "/api/streams/{key}/rewind", summary: "Empty the stream's rewind buffer (numbering continues)", body: None, responses: &[(204, "cleared"), E401, E404], auth: true, handler: Handler::Read(clear_rewind) },
    Route { method: "GET", path: "/api/source-mounts", summary: "All source mounts with their sources", body: None, responses: &[(200, "mounts"), E401], auth: true, handler: Handler::Read(list_mounts) },
    Route { method: "POST", path: "/api/source-mounts", summary: "Create a source mount (live)", body: Some(openapi::Body::SourceMount), responses: &[(201, "created"), (400, "malformed body"), E401, (409, "exists already"), (422, "invalid setting")], auth: true, handler: Handler::Change(create_mount) },
    Route { method: "GET", path: "/api/source-mounts/{key}", summary: "One source mount", body: None, responses: &[(200, "mount"), E401, E404], auth: true, handler: Handler::Read(get_mount) },
    Route { method: "PUT", path: "/api/source-mounts/{key}", summary: "Replace a mount's settings (live). A missing password keeps the current one", body: Some(openapi::Body::SourceMount), responses: &[(200, "updated"), (400, "malformed body"), E401, E404, (422, "invalid setting")], auth: true, handler: Handler::Change(update_mount) },
    Route { method: "DELETE", path: "/api/source-mounts/{key}", summary: "Remove a mount (its sources are disconnected)", body: None, responses: &[(204, "removed"), E401, E404, (409, "streams still use it")], auth: true, handler: Handler::Change(delete_mount) },
    Route { method: "POST", path: "/api/source-mounts/{key}/metadata", summary: "Set the mount's title", body: Some(openapi::Body::Metadata), responses: &[(200, "title set"), (400, "malformed body"), E401, E404], auth: true, handler: Handler::Read(mount_metadata) },
    Route { method: "GET", path: "/api/source-mounts/{key}/sources", summary: "The sources connected to a mount, the one on air first", body: None, responses: &[(200, "sources"), E401, E404], auth: true, handler: Handler::Read(list_sources) },
    Route { method: "POST", path: "/api/source-mounts/{key}/sources/{id}/promote", summary: "Put a waiting source on air", body: None, responses: &[(200, "promoted"), E401, E404, (409, "already on air")], auth: true, handler: Handler::Read(promote_source) },
    Route { method: "DELETE", path: "/api/source-mounts/{key}/sources/{id}", summary: "Disconnect a source (the next in line takes over)", body: None, responses: &[(204, "disconnected"), E401, E404], auth: true, handler: Handler::Read(drop_source) },
];

/// Is this an API path (so the admin port answers in JSON)?
pub fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// What the admin API needs from the server, and no more: the streams and
/// mounts, applying and recording a change, the configuration in force, the
/// admin token; and (as [`StatusHost`]) the status it reports. The server
/// implements it; nothing here names the server.
pub trait ApiHost: StatusHost {
    /// The stream in service under `key`.
    fn stream(&self, key: &str) -> Option<Arc<Stream>>;
    /// Every mount in service.
    fn mounts(&self) -> Vec<Arc<crate::source::Mount>>;
    /// Makes `mounts` and `streams` the ones in service (live).
    fn apply(
        &self,
        mounts: Vec<SourceMountConfig>,
        streams: Vec<StreamConfig>,
    ) -> Result<Applied, ServerError>;
    /// Whether [`ApiHost::apply`] would take these (nothing changes).
    fn check(
        &self,
        mounts: Vec<SourceMountConfig>,
        streams: Vec<StreamConfig>,
    ) -> Result<(), ServerError>;
    /// The API's changes, kept in the config store, one at a time.
    fn journal(&self) -> &crate::journal::Journal;
    /// The configuration in force (static and live changes together).
    fn effective_config(&self) -> streammachine_config::Config;
    /// The bearer token the API requires.
    fn admin_token(&self) -> Option<&streammachine_config::Secret>;
    /// Standalone, master or slave.
    fn mode(&self) -> streammachine_config::Mode;
    /// Failed admin logins (API token, link secret), per address.
    fn admin_lockout(&self) -> &crate::lockout::Lockout;
}

impl Route {
    /// The largest request body it takes: a dump import may be large,
    /// anything else is JSON.
    pub fn body_limit(&self) -> usize {
        if matches!(self.body, Some(openapi::Body::Dump)) {
            MAX_IMPORT_BODY
        } else {
            MAX_JSON_BODY
        }
    }

    /// How it moves a whole rewind buffer, if it does.
    pub fn transfer(&self) -> Option<Transfer> {
        match self.handler {
            Handler::Transfer(t) => Some(t),
            _ => None,
        }
    }

    /// Checks the bearer token when the route needs one (before its body is
    /// read, so nobody unauthenticated can make the server hold a body);
    /// `Err` is the failure's metric label and the refusal to send.
    pub fn authorize(
        &self,
        server: &dyn ApiHost,
        authorization: Option<&str>,
    ) -> Result<(), (&'static str, Response)> {
        if !self.auth {
            return Ok(());
        }
        check_token(server, authorization).map_err(|(reason, e)| {
            let refusal = e
                .response()
                .header("WWW-Authenticate", "Bearer realm=\"StreamMachine admin\"");
            (reason, refusal)
        })
    }

    /// Answers an authorized request with its path parameters and body (a
    /// [`Transfer`] route is the HTTP side's to stream: a 500 here).
    pub async fn call(&self, server: &dyn ApiHost, params: &[&str], body: &[u8]) -> Response {
        let reply = match self.handler {
            Handler::Read(handler) => handler(server, params, body),
            Handler::Transfer(_) => Err(ApiError::new(
                500,
                "a streamed route called with a whole body",
            )),
            Handler::Change(handler) => {
                // One change at a time, from reading the config in force to
                // putting the new one in force.
                let mut guard = server.journal().begin().await;
                match handler(server, params, body) {
                    Ok(plan) => make(server, &mut guard, plan).await,
                    Err(e) => Err(e),
                }
            }
        };
        match reply {
            Ok(reply) => reply.into_response(),
            Err(e) => e.response(),
        }
    }
}

/// Checks a planned change, stores it, and only then puts it in force: a
/// change is acknowledged once it would survive a restart, and refused
/// (503, nothing changed) when the config store cannot keep it.
async fn make(
    server: &dyn ApiHost,
    guard: &mut crate::journal::ChangeGuard<'_>,
    plan: Plan,
) -> Result<Reply, ApiError> {
    let Plan {
        mounts,
        streams,
        change,
        prefix,
        answer,
    } = plan;
    server
        .check(mounts.clone(), streams.clone())
        .map_err(|e| apply_error(e, &prefix))?;
    let before = guard.overlay().clone();
    guard
        .store(change)
        .await
        .map_err(|e| ApiError::new(503, e.to_string()))?;
    if let Err(e) = server.apply(mounts, streams) {
        // Checked above, so only a password file that changed meanwhile
        // gets here: take the stored change back.
        if let Err(undo) = guard.store_overlay(before).await {
            tracing::error!(error = %undo, "a change that could not be applied stays in the config store");
        }
        return Err(apply_error(e, &prefix));
    }
    match answer {
        Answer::Stream(status, key) => {
            let s = server
                .stream(&key)
                .ok_or_else(|| ApiError::new(500, "stream vanished"))?;
            Ok(Reply::Json(status, stream_json(server, &s)))
        }
        Answer::Mount(status, key) => mount_json(server, &key)
            .map(|v| Reply::Json(status, v))
            .ok_or_else(|| ApiError::new(500, "mount vanished")),
        Answer::Empty => Ok(Reply::Empty),
    }
}

/// The answer to an API path no route has.
pub fn no_route(path: &str) -> Response {
    ApiError::new(404, format!("no API route {path}; see /api/openapi.json")).response()
}

/// The answer to a method an API path does not take.
pub fn method_not_allowed(method: &str, path: &str) -> Response {
    ApiError::new(405, format!("{method} is not allowed on {path}")).response()
}

/// The answer to a request body that could not be read.
pub fn bad_body(status: u16, message: impl Into<String>) -> Response {
    ApiError::new(status, message).response()
}

/// The stream named in a route's first parameter, or a 404.
fn stream_of(server: &dyn ApiHost, p: &[&str]) -> Result<Arc<Stream>, ApiError> {
    let key = p.first().copied().unwrap_or_default();
    server
        .stream(key)
        .ok_or_else(|| ApiError::not_found("stream", key))
}

fn check_token(
    server: &dyn ApiHost,
    authorization: Option<&str>,
) -> Result<(), (&'static str, ApiError)> {
    let Some(expected) = server.admin_token() else {
        return Err(("disabled", ApiError::new(401, "the admin API is disabled: set admin.token, admin.tokenFile or STREAMMACHINE_ADMIN_TOKEN")));
    };
    let given = authorization
        .and_then(|a| a.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match given {
        None => Err((
            "no_credentials",
            ApiError::new(401, "bearer token required"),
        )),
        Some(t) if crate::source::mount::constant_time_eq(t.as_bytes(), expected.0.as_bytes()) => {
            Ok(())
        }
        Some(_) => Err(("wrong_token", ApiError::new(401, "wrong bearer token"))),
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        // serde reports a missing field at the object that lacks it.
        let missing = msg
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name.to_string());
        match (path.as_str(), missing) {
            (".", Some(name)) => ApiError::field(400, name, msg),
            (".", None) => ApiError::new(400, format!("malformed JSON body: {msg}")),
            (_, Some(name)) => ApiError::field(400, format!("{path}.{name}"), msg),
            (_, None) => ApiError::field(400, path, msg),
        }
    })
}

/// Maps an apply error to the field of the item being changed.
fn apply_error(e: ServerError, prefix: &str) -> ApiError {
    match e {
        ServerError::Config(
            ConfigError::Invalid { path, message } | ConfigError::Parse { path, message },
        )
        | ServerError::Unsupported { path, message } => {
            let field = path
                .strip_prefix(prefix)
                .and_then(|p| p.strip_prefix('.'))
                .map(str::to_string)
                .unwrap_or(path);
            ApiError::field(422, field, message)
        }
        ServerError::NoPassword { .. } => ApiError::field(
            422,
            "password",
            "a source password is required (password or passwordFile)",
        ),
        ServerError::PasswordFile { file, error, .. } => {
            ApiError::field(422, "passwordFile", format!("cannot read {file}: {error}"))
        }
        other => ApiError::new(500, other.to_string()),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn get_openapi(_: &dyn ApiHost, _: &[&str], _: &[u8]) -> Result<Reply, ApiError> {
    Ok(Reply::Json(200, openapi::document()))
}

fn get_status(server: &dyn ApiHost, _: &[&str], _: &[u8]) -> Result<Reply, ApiError> {
    let streams: Vec<Value> = server
        .streams()
        .iter()
        .map(|s| stream_json(server, s))
        .collect();
    let mounts: Vec<Value> = server
        .mounts()
        .iter()
        .filter_map(|m| mount_json(server, m.key()))
        .collect();
    let uptime = server
        .started_at()
        .elapsed()
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(Reply::Json(
        200,
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "mode": server.mode().to_string(),
            "uptimeSeconds": uptime,
            "streams": streams,
            "sourceMounts": mounts,
        }),
    ))
}

fn get_config(server: &dyn ApiHost, _: &[&str], _: &[u8]) -> Result<Reply, ApiError> {
    let mut c = server.effective_config();
    c.streams = c.streams.into_iter().map(redact_stream).collect();
    c.source_mounts = c.source_mounts.into_iter().map(redact_mount).collect();
    c.admin.token = None;
    Ok(Reply::Json(200, to_json(&c)))
}

fn list_slaves(server: &dyn ApiHost, _: &[&str], _: &[u8]) -> Result<Reply, ApiError> {
    let slaves: Vec<Value> = server
        .slaves()
        .into_iter()
        .map(|s| {
            let behind = server.chunks_behind(&s);
            json!({
                "id": s.id,
                "address": s.peer.to_string(),
                "connectedAt": s.connected_at.duration_since(std::time::UNIX_EPOCH).map(|d| crate::stream::format_time(i64::try_from(d.as_micros()).unwrap_or(0))).unwrap_or_default(),
                "lastSeenSecondsAgo": s.last_seen.elapsed().as_secs_f64(),
                "listeners": s.stats.listeners,
                "nextSeq": s.stats.next_seq,
                "chunksBehind": behind,
            })
        })
        .collect();
    Ok(Reply::Json(200, Value::Array(slaves)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(!(a.method == b.method && a.path == b.path), "{a:?} twice");
            }
        }
    }
}
