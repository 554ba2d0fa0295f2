//! `/api/streams`: list, read, create, replace and remove streams, and set
//! a stream's title.

use super::*;

pub(super) fn redact_stream(mut c: StreamConfig) -> StreamConfig {
    c.password = None;
    if let Some(a) = &mut c.listener_auth {
        a.redact();
    }
    c
}

pub(super) fn stream_json(server: &dyn ApiHost, s: &Stream) -> Value {
    let cfg = s.config();
    let m = server.metrics();
    let mut by_output: serde_json::Map<String, Value> = ["raw", "icy", "pump"]
        .iter()
        .map(|o| {
            (
                o.to_string(),
                json!(m.listeners.with_label_values(&[s.key(), o]).get()),
            )
        })
        .collect();
    let hls = server.analytics().hls_active(s.key());
    by_output.insert("hls".into(), json!(hls));
    let (seconds, bytes, chunks, first_seq, next_seq, oldest, newest) = {
        let b = s.read_buffer();
        (
            b.duration_micros() as f64 / 1e6,
            b.bytes(),
            b.len(),
            b.first_seq(),
            b.next_seq(),
            b.first().map(|c| crate::stream::format_time(c.ts_micros)),
            // The newest audio's end on its own timeline (a bursting
            // source's last chunk may end past its arrival); the same after
            // a restore from a dump.
            b.last().map(|c| {
                crate::stream::format_time(
                    c.ts_micros + i64::try_from(c.duration_micros()).unwrap_or(0),
                )
            }),
        )
    };
    let mount = server.mount(cfg.mount_key());
    json!({
        "key": s.key(),
        "format": s.format().to_string(),
        "formatKey": s.format_key(),
        "sourceMount": cfg.mount_key(),
        "sourceConnected": mount.as_ref().is_some_and(|m| m.active_source().is_some()),
        "title": server.current_title(s),
        "listeners": s.listener_count() + hls,
        "listenersByOutput": by_output,
        "listenerPeak": s.listener_peak(),
        "buffer": {
            "seconds": seconds,
            "bytes": bytes,
            "chunks": chunks,
            "firstSeq": first_seq,
            "nextSeq": next_seq,
            "oldest": oldest,
            "newest": newest,
        },
        "transcoder": s.transcoder_status().map(|t| to_json(&t)),
        "config": to_json(&redact_stream((*cfg).clone())),
    })
}

pub(super) fn list_streams(server: &dyn ApiHost, _: &[&str], _: &[u8]) -> Result<Reply, ApiError> {
    Ok(Reply::Json(
        200,
        Value::Array(
            server
                .streams()
                .iter()
                .map(|s| stream_json(server, s))
                .collect(),
        ),
    ))
}

pub(super) fn get_stream(server: &dyn ApiHost, p: &[&str], _: &[u8]) -> Result<Reply, ApiError> {
    let s = stream_of(server, p)?;
    Ok(Reply::Json(200, stream_json(server, &s)))
}

pub(super) fn create_stream(
    server: &dyn ApiHost,
    _: &[&str],
    body: &[u8],
) -> Result<Plan, ApiError> {
    let new: StreamConfig = parse(body)?;
    let c = server.effective_config();
    if c.streams.iter().any(|s| s.key == new.key) {
        return Err(ApiError::field(
            409,
            "key",
            format!("a stream named {:?} exists already", new.key),
        ));
    }
    let key = new.key.clone();
    let mut streams = c.streams;
    streams.push(new.clone());
    Ok(Plan {
        prefix: format!("streams[{}]", streams.len() - 1),
        mounts: c.source_mounts,
        streams,
        change: Change::UpsertStream(new),
        answer: Answer::Stream(201, key),
    })
}

pub(super) fn update_stream(
    server: &dyn ApiHost,
    p: &[&str],
    body: &[u8],
) -> Result<Plan, ApiError> {
    let mut new: StreamConfig = parse(body)?;
    if new.key != p[0] {
        return Err(ApiError::field(422, "key", format!("the key cannot change ({:?} in the body, {:?} in the path): create the new stream and delete this one", new.key, p[0])));
    }
    let c = server.effective_config();
    let Some(i) = c.streams.iter().position(|s| s.key == p[0]) else {
        return Err(ApiError::not_found("stream", p[0]));
    };
    if new.password.is_none() && new.password_file.is_none() && new.source_mount.is_none() {
        new.password = c.streams[i].password.clone();
        new.password_file = c.streams[i].password_file.clone();
    }
    let mut streams = c.streams;
    streams[i] = new.clone();
    Ok(Plan {
        prefix: format!("streams[{i}]"),
        mounts: c.source_mounts,
        streams,
        answer: Answer::Stream(200, new.key.clone()),
        change: Change::UpsertStream(new),
    })
}

pub(super) fn delete_stream(server: &dyn ApiHost, p: &[&str], _: &[u8]) -> Result<Plan, ApiError> {
    let c = server.effective_config();
    if !c.streams.iter().any(|s| s.key == p[0]) {
        return Err(ApiError::not_found("stream", p[0]));
    }
    Ok(Plan {
        prefix: String::new(),
        mounts: c.source_mounts,
        streams: c.streams.into_iter().filter(|s| s.key != p[0]).collect(),
        change: Change::DeleteStream(p[0].to_string()),
        answer: Answer::Empty,
    })
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Metadata {
    /// The new title ("Artist - Title").
    title: String,
}

pub(super) fn set_title(
    server: &dyn ApiHost,
    mount_key: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let m: Metadata = parse(body)?;
    let mount = server
        .mount(mount_key)
        .ok_or_else(|| ApiError::not_found("source mount", mount_key))?;
    mount.set_title(m.title.trim());
    server
        .metrics()
        .title_updates
        .with_label_values(&[mount.key()])
        .inc();
    tracing::info!(mount = %mount.key(), title = %m.title.trim(), "title set through the API");
    Ok(Reply::Json(
        200,
        json!({ "mount": mount.key(), "title": mount.title() }),
    ))
}

pub(super) fn stream_metadata(
    server: &dyn ApiHost,
    p: &[&str],
    body: &[u8],
) -> Result<Reply, ApiError> {
    let s = stream_of(server, p)?;
    set_title(server, s.config().mount_key(), body)
}

pub(super) fn list_listeners(
    server: &dyn ApiHost,
    p: &[&str],
    _: &[u8],
) -> Result<Reply, ApiError> {
    let s = stream_of(server, p)?;
    let now = std::time::SystemTime::now();
    let list: Vec<Value> = s
        .listener_list()
        .iter()
        .map(|l| {
            let since = l
                .connected_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
            json!({
                "id": l.id,
                "ip": l.ip.to_string(),
                "userAgent": l.user_agent,
                "output": l.output,
                "connectedAt": crate::stream::format_time(since),
                "connectedSeconds": now.duration_since(l.connected_at).map_or(0, |d| d.as_secs()),
            })
        })
        .collect();
    Ok(Reply::Json(200, json!({ "listeners": list })))
}

pub(super) fn kick_listener(server: &dyn ApiHost, p: &[&str], _: &[u8]) -> Result<Reply, ApiError> {
    let s = stream_of(server, p)?;
    let id: u64 = p[1]
        .parse()
        .map_err(|_| ApiError::field(404, "id", format!("{:?} is not a listener id", p[1])))?;
    if !s.kick_listener(id) {
        return Err(ApiError::new(
            404,
            format!("no listener {id} on stream {:?}", s.key()),
        ));
    }
    tracing::info!(stream = %s.key(), id, "listener disconnected through the API");
    Ok(Reply::Empty)
}
