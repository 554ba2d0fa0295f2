//! `/api/source-mounts`: the mounts, their sources, promoting and dropping one.

use super::*;

pub(super) fn redact_mount(mut c: SourceMountConfig) -> SourceMountConfig {
    c.password = None;
    for i in &mut c.inputs {
        i.password = None;
    }
    c
}

pub(super) fn mount_json(server: &dyn ApiHost, key: &str) -> Option<Value> {
    let mount = server.mount(key)?;
    let config = server
        .effective_config()
        .effective_mounts()
        .into_iter()
        .find(|m| m.key == key)
        .map(redact_mount);
    Some(json!({
        "key": key,
        "format": mount.format().to_string(),
        "monitored": mount.monitored(),
        "title": mount.title(),
        "streams": mount.streams().iter().map(|s| s.key().to_string()).collect::<Vec<_>>(),
        "sources": sources_json(&mount),
        "config": config.map(|c| to_json(&c)),
    }))
}

pub(super) fn sources_json(mount: &crate::source::Mount) -> Value {
    let sources = mount.sources();
    Value::Array(
        sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let connected = s
                    .connected_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| crate::stream::format_time(i64::try_from(d.as_micros()).unwrap_or(0)))
                    .unwrap_or_default();
                json!({
                    "id": s.id,
                    "active": i == 0,
                    "priority": s.priority,
                    "fallback": s.fallback,
                    "remote": s.info.remote.map(|r| r.to_string()),
                    "userAgent": s.info.user_agent,
                    "contentType": s.info.content_type,
                    "name": s.info.name,
                    "description": s.info.description,
                    "genre": s.info.genre,
                    "url": s.info.url,
                    "audioInfo": s.info.audio_info,
                    "formatKey": s.format_key.lock().ok().and_then(|k| k.clone()),
                    "bytes": s.bytes.load(std::sync::atomic::Ordering::Relaxed),
                    "connectedAt": connected,
                })
            })
            .collect(),
    )
}

pub(super) fn list_mounts(server: &dyn ApiHost, _: &[&str], _: &[u8]) -> Result<Reply, ApiError> {
    Ok(Reply::Json(
        200,
        Value::Array(
            server
                .mounts()
                .iter()
                .filter_map(|m| mount_json(server, m.key()))
                .collect(),
        ),
    ))
}

pub(super) fn get_mount(server: &dyn ApiHost, p: &[&str], _: &[u8]) -> Result<Reply, ApiError> {
    mount_json(server, p[0])
        .map(|v| Reply::Json(200, v))
        .ok_or_else(|| ApiError::not_found("source mount", p[0]))
}

pub(super) fn create_mount(
    server: &dyn ApiHost,
    _: &[&str],
    body: &[u8],
) -> Result<Plan, ApiError> {
    let new: SourceMountConfig = parse(body)?;
    let c = server.effective_config();
    if server.mount(&new.key).is_some() {
        return Err(ApiError::field(
            409,
            "key",
            format!("a source mount named {:?} exists already", new.key),
        ));
    }
    let key = new.key.clone();
    let mut mounts = c.source_mounts;
    mounts.push(new.clone());
    Ok(Plan {
        prefix: format!("sourceMounts[{}]", mounts.len() - 1),
        mounts,
        streams: c.streams,
        change: Change::UpsertMount(new),
        answer: Answer::Mount(201, key),
    })
}

pub(super) fn update_mount(
    server: &dyn ApiHost,
    p: &[&str],
    body: &[u8],
) -> Result<Plan, ApiError> {
    let mut new: SourceMountConfig = parse(body)?;
    if new.key != p[0] {
        return Err(ApiError::field(
            422,
            "key",
            "the key cannot change: create the new mount and delete this one",
        ));
    }
    let c = server.effective_config();
    let Some(i) = c.source_mounts.iter().position(|m| m.key == p[0]) else {
        return Err(if server.mount(p[0]).is_some() {
            ApiError::new(
                409,
                format!(
                    "{:?} is a stream's own mount: change it through /api/streams/{}",
                    p[0], p[0]
                ),
            )
        } else {
            ApiError::not_found("source mount", p[0])
        });
    };
    if new.password.is_none() && new.password_file.is_none() {
        new.password = c.source_mounts[i].password.clone();
        new.password_file = c.source_mounts[i].password_file.clone();
    }
    // Likewise each input that keeps its key.
    for input in &mut new.inputs {
        let old = c.source_mounts[i]
            .inputs
            .iter()
            .find(|o| o.key == input.key);
        if let (Some(old), None, None) = (old, &input.password, &input.password_file) {
            input.password = old.password.clone();
            input.password_file = old.password_file.clone();
        }
    }
    let mut mounts = c.source_mounts;
    mounts[i] = new.clone();
    Ok(Plan {
        prefix: format!("sourceMounts[{i}]"),
        mounts,
        streams: c.streams,
        answer: Answer::Mount(200, new.key.clone()),
        change: Change::UpsertMount(new),
    })
}

pub(super) fn delete_mount(server: &dyn ApiHost, p: &[&str], _: &[u8]) -> Result<Plan, ApiError> {
    let c = server.effective_config();
    if !c.source_mounts.iter().any(|m| m.key == p[0]) {
        return Err(if server.mount(p[0]).is_some() {
            ApiError::new(
                409,
                format!("{:?} is a stream's own mount: delete the stream", p[0]),
            )
        } else {
            ApiError::not_found("source mount", p[0])
        });
    }
    let users: Vec<&str> = c
        .streams
        .iter()
        .filter(|s| s.source_mount.as_deref() == Some(p[0]))
        .map(|s| s.key.as_str())
        .collect();
    if !users.is_empty() {
        return Err(ApiError::new(
            409,
            format!("streams still use this mount: {}", users.join(", ")),
        ));
    }
    Ok(Plan {
        prefix: String::new(),
        mounts: c
            .source_mounts
            .into_iter()
            .filter(|m| m.key != p[0])
            .collect(),
        streams: c.streams,
        change: Change::DeleteMount(p[0].to_string()),
        answer: Answer::Empty,
    })
}

pub(super) fn mount_metadata(
    server: &dyn ApiHost,
    p: &[&str],
    body: &[u8],
) -> Result<Reply, ApiError> {
    set_title(server, p[0], body)
}

pub(super) fn list_sources(server: &dyn ApiHost, p: &[&str], _: &[u8]) -> Result<Reply, ApiError> {
    let m = server
        .mount(p[0])
        .ok_or_else(|| ApiError::not_found("source mount", p[0]))?;
    Ok(Reply::Json(200, sources_json(&m)))
}

pub(super) fn source_op(
    server: &dyn ApiHost,
    p: &[&str],
    op: fn(&crate::source::Mount, u64) -> Result<(), MountError>,
) -> Result<(), ApiError> {
    let m = server
        .mount(p[0])
        .ok_or_else(|| ApiError::not_found("source mount", p[0]))?;
    let id: u64 = p[1]
        .parse()
        .map_err(|_| ApiError::field(404, "id", format!("{:?} is not a source id", p[1])))?;
    op(&m, id).map_err(|e| match e {
        MountError::NoSuchSource(_) => ApiError::new(404, e.to_string()),
        MountError::AlreadyActive(_) => ApiError::new(409, e.to_string()),
    })
}

pub(super) fn promote_source(
    server: &dyn ApiHost,
    p: &[&str],
    _: &[u8],
) -> Result<Reply, ApiError> {
    source_op(server, p, crate::source::Mount::promote)?;
    let m = server
        .mount(p[0])
        .ok_or_else(|| ApiError::not_found("source mount", p[0]))?;
    Ok(Reply::Json(200, sources_json(&m)))
}

pub(super) fn drop_source(server: &dyn ApiHost, p: &[&str], _: &[u8]) -> Result<Reply, ApiError> {
    source_op(server, p, crate::source::Mount::drop_source)?;
    Ok(Reply::Empty)
}
