//! Rewind buffers in a handoff: passed by reference, not copied.
//!
//! The audio of every buffer lives in memory files ([`crate::buffer::arena`]).
//! The predecessor freezes them, sends their descriptors (`M` messages, up to
//! [`fd::MAX_FDS`] files each, with their blocks), and then each stream's
//! chunks as records without audio, each naming the file and offset of its
//! bytes (`R`): O(chunks) bytes, whatever the hours of audio. The successor
//! maps the same pages. A stream with audio outside the memory files (no
//! `memfd` on this system) goes the old way, copied in a dump (`B`).
//!
//! `R` payload: stream key (`u16` length + UTF-8), the dump header (`u32`
//! length + JSON, as in [`crate::persist::dump`]), then per chunk: `u32`
//! length + the record head ([`crate::persist::encode_record_head`]), the
//! file id (`u64`) and the offset of its audio (`u64`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use super::{fd, HandoffError};
use crate::buffer::arena::{self, Frozen, Imported, PassedFile};
use crate::persist::{DumpChunk, DumpHeader, Limits};
use crate::stream::Stream;

/// Sends the frozen memory files and every stream's buffer. Returns the
/// number of buffers sent and how many of them were copied.
pub(super) fn send(
    sock: &mut UnixStream,
    streams: &[Arc<Stream>],
    frozen: &Frozen,
) -> Result<(usize, usize), HandoffError> {
    let described = frozen.describe();
    let ids: Vec<u64> = described.iter().map(|(p, _)| p.id).collect();
    for group in described.chunks(fd::MAX_FDS) {
        let files: Vec<&PassedFile> = group.iter().map(|(p, _)| p).collect();
        let fds: Vec<_> = group.iter().map(|(_, f)| f.as_raw_fd()).collect();
        fd::send(sock, b'M', &fds, &serde_json::to_vec(&files)?)?;
    }
    // Encoded side by side (O(chunks) each), then sent in order.
    let encoded = on_threads(streams, |s| by_reference(s, &ids));
    let (mut sent, mut copied) = (0, 0);
    for (s, payload) in streams.iter().zip(encoded) {
        match payload? {
            Some(payload) => fd::send(sock, b'R', &[], &payload)?,
            None => {
                let dump = crate::persist::rewind::export_stream(s)
                    .map_err(|e| HandoffError::Buffer(e.to_string()))?;
                let mut payload = key_prefix(s.key());
                payload.extend_from_slice(&dump);
                fd::send(sock, b'B', &[], &payload)?;
                copied += 1;
            }
        }
        sent += 1;
    }
    Ok((sent, copied))
}

/// `f` over `items`, one thread each (a buffer apiece: O(chunks) work that
/// should not wait for the other streams'), results in order.
pub(super) fn on_threads<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, HandoffError> + Sync,
) -> Vec<Result<R, HandoffError>> {
    std::thread::scope(|scope| {
        let jobs: Vec<_> = items.iter().map(|x| scope.spawn(|| f(x))).collect();
        jobs.into_iter()
            .map(|j| {
                j.join().unwrap_or_else(|_| {
                    Err(HandoffError::Buffer("a buffer's thread panicked".into()))
                })
            })
            .collect()
    })
}

fn key_prefix(key: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + key.len());
    v.extend_from_slice(&(key.len() as u16).to_le_bytes());
    v.extend_from_slice(key.as_bytes());
    v
}

/// A stream's `R` payload, or `None` when some of its audio is not in a
/// passed file.
fn by_reference(s: &Stream, files: &[u64]) -> Result<Option<Vec<u8>>, HandoffError> {
    let (header, chunks) = crate::persist::rewind::snapshot(s);
    let mut out = key_prefix(s.key());
    let json = serde_json::to_vec(&header)?;
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    let mut head = Vec::new();
    let limits = Limits::default();
    for c in &chunks {
        let Some(place) = arena::place_of(c.data()).filter(|p| files.contains(&p.file)) else {
            return Ok(None);
        };
        let record = crate::persist::rewind::record_of(c);
        crate::persist::encode_record_head(&record, &limits, &mut head)
            .map_err(|e| HandoffError::Buffer(e.to_string()))?;
        out.extend_from_slice(&(head.len() as u32).to_le_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(&place.file.to_le_bytes());
        out.extend_from_slice(&place.offset.to_le_bytes());
    }
    Ok(Some(out))
}

/// Takes an `M` message: passed files and their descriptors.
pub(super) fn receive_files(
    imported: &mut Imported,
    payload: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<(), HandoffError> {
    let files: Vec<PassedFile> = serde_json::from_slice(payload)?;
    if files.len() != fds.len() {
        return Err(HandoffError::Protocol(
            "memory files without their descriptors".into(),
        ));
    }
    for (f, fd) in files.into_iter().zip(fds) {
        imported
            .add_file(f, fd)
            .map_err(|e| HandoffError::Buffer(e.to_string()))?;
    }
    Ok(())
}

/// Splits a `B` or `R` payload into the stream key and the rest.
pub(super) fn split_key(payload: &[u8]) -> Result<(String, &[u8]), HandoffError> {
    if payload.len() < 2 {
        return Err(HandoffError::Protocol("short buffer message".into()));
    }
    let klen = u16::from_le_bytes([payload[0], payload[1]]) as usize;
    let key = payload
        .get(2..2 + klen)
        .and_then(|k| std::str::from_utf8(k).ok())
        .ok_or_else(|| HandoffError::Protocol("bad stream name".into()))?;
    Ok((key.to_string(), &payload[2 + klen..]))
}

/// Decodes an `R` payload (after its key) into the dump header and chunks
/// whose audio is the passed files' memory.
pub(super) fn decode(
    imported: &Imported,
    payload: &[u8],
) -> Result<(DumpHeader, Vec<DumpChunk>), HandoffError> {
    let bad = |why: &str| HandoffError::Buffer(format!("buffer by reference: {why}"));
    let mut rest = Cursor(payload);
    let hlen = rest.u32()? as usize;
    let header: DumpHeader = serde_json::from_slice(rest.take(hlen)?)?;
    let limits = Limits::default();
    let mut chunks = Vec::with_capacity(usize::try_from(header.chunks.min(1 << 20)).unwrap_or(0));
    let mut expected = header.first_seq;
    for _ in 0..header.chunks {
        let len = rest.u32()? as usize;
        let head = rest.take(len)?;
        let file = rest.u64()?;
        let offset = rest.u64()?;
        let (mut chunk, data_len) = crate::persist::dump::decode_record_head(head, &limits)
            .map_err(|e| bad(&e.to_string()))?;
        if chunk.seq != expected {
            return Err(bad(&format!(
                "chunk {} where {expected} was expected",
                chunk.seq
            )));
        }
        expected += 1;
        chunk.data = imported
            .bytes(file, offset, u64::from(data_len))
            .map_err(|e| bad(&e.to_string()))?;
        crate::persist::dump::check_record(&chunk, &limits).map_err(|e| bad(&e.to_string()))?;
        chunks.push(chunk);
    }
    let rest = rest.0;
    if !rest.is_empty() || expected != header.next_seq {
        return Err(bad("records and header disagree"));
    }
    Ok((header, chunks))
}

/// Reads an `R` payload front to back.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HandoffError> {
        if self.0.len() < n {
            return Err(HandoffError::Buffer(
                "buffer by reference: cut short".into(),
            ));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, HandoffError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, HandoffError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}
