//! `/api/streams/{key}/rewind`: export, import and clear a rewind buffer.

use super::*;

pub(super) fn clear_rewind(server: &dyn ApiHost, p: &[&str], _: &[u8]) -> Result<Reply, ApiError> {
    let s = stream_of(server, p)?;
    s.clear_buffer();
    tracing::warn!(stream = %p[0], "rewind buffer cleared through the API");
    Ok(Reply::Empty)
}

pub(super) fn export_rewind(server: &dyn ApiHost, p: &[&str]) -> Result<Arc<Stream>, ApiError> {
    stream_of(server, p)
}

/// The stream an import goes into: it must have no source and no listeners
/// (checked before the body is read, and again before the buffer changes).
pub(super) fn import_target(server: &dyn ApiHost, p: &[&str]) -> Result<Arc<Stream>, ApiError> {
    let s = stream_of(server, p)?;
    idle(server, &s)?;
    Ok(s)
}

fn idle(server: &dyn ApiHost, s: &Stream) -> Result<(), ApiError> {
    let mount = server.mount(s.config().mount_key());
    if mount.is_some_and(|m| m.active_source().is_some()) || s.listener_count() > 0 {
        return Err(ApiError::new(
            409,
            "import needs the stream without a source and without listeners",
        ));
    }
    Ok(())
}

/// Reads a dump from `body` (at most `limit` bytes) as it arrives, its audio
/// straight into the stream's arena; only a dump that checks out whole
/// replaces the buffer. Blocking.
pub(super) fn import_rewind(
    server: &dyn ApiHost,
    s: &Stream,
    body: &mut dyn std::io::Read,
    limit: u64,
) -> Result<Reply, ApiError> {
    let limits = crate::persist::Limits {
        max_total_bytes: Some(limit),
        ..Default::default()
    };
    let (header, mut records) =
        crate::persist::read_dump_with(body, &limits, &mut s.audio_keeper())
            .map_err(|e| ApiError::new(400, format!("not a valid dump: {e}")))?;
    idle(server, s)?;
    // Never re-use a sequence number or an HLS segment name this stream has
    // served (segments are cached as immutable): the import is renumbered
    // to follow, after a discontinuity.
    let (next_seq, last_segment) = s.read_buffer().numbering();
    crate::persist::rewind::renumber_after(&mut records, next_seq, last_segment);
    s.clear_buffer();
    let n = crate::persist::rewind::restore_into(s, header, records, false)
        .map_err(|e| ApiError::new(400, e.to_string()))?;
    tracing::warn!(stream = %s.key(), chunks = n, "rewind buffer imported through the API");
    Ok(Reply::Empty)
}
