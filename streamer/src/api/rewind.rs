//! `/api/streams/{key}/rewind`: export, import and clear a rewind buffer.

use super::*;

pub(super) fn clear_rewind(server: &dyn ApiHost, p: &[&str], _: &[u8]) -> Result<Reply, ApiError> {
    let s = stream_of(server, p)?;
    s.clear_buffer();
    tracing::warn!(stream = %p[0], "rewind buffer cleared through the API");
    Ok(Reply::Empty)
}

pub(super) fn export_rewind(server: &dyn ApiHost, p: &[&str], _: &[u8]) -> Result<Reply, ApiError> {
    let s = stream_of(server, p)?;
    let bytes =
        crate::persist::rewind::export_stream(&s).map_err(|e| ApiError::new(500, e.to_string()))?;
    Ok(Reply::Bytes("application/octet-stream", bytes))
}

pub(super) fn import_rewind(
    server: &dyn ApiHost,
    p: &[&str],
    body: &[u8],
) -> Result<Reply, ApiError> {
    let s = stream_of(server, p)?;
    let mount = server.mount(s.config().mount_key());
    if mount.is_some_and(|m| m.active_source().is_some()) || s.listener_count() > 0 {
        return Err(ApiError::new(
            409,
            "import needs the stream without a source and without listeners",
        ));
    }
    let limits = crate::persist::Limits {
        max_total_bytes: Some(body.len() as u64),
        ..Default::default()
    };
    let (header, mut records) = crate::persist::read_dump(body, &limits)
        .map_err(|e| ApiError::new(400, format!("not a valid dump: {e}")))?;
    // Never re-use a sequence number or an HLS segment name this stream has
    // served (segments are cached as immutable): the import is renumbered
    // to follow, after a discontinuity.
    let (next_seq, last_segment) = s.read_buffer().numbering();
    crate::persist::rewind::renumber_after(&mut records, next_seq, last_segment);
    s.clear_buffer();
    let n = crate::persist::rewind::restore_into(&s, header, records, false)
        .map_err(|e| ApiError::new(400, e.to_string()))?;
    tracing::warn!(stream = %p[0], chunks = n, "rewind buffer imported through the API");
    Ok(Reply::Empty)
}
