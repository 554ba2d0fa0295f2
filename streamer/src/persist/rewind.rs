//! Dumping and restoring a stream's rewind buffer with the [`dump`](super::dump) format.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::dump::{DumpChunk, DumpError, DumpHeader, DumpStats, Limits};
use crate::buffer::{Chunk, ChunkDraft, Title};
use crate::stream::{now_micros, Stream};

/// Where a stream's dump lives.
pub fn dump_path(dir: &Path, stream: &str) -> PathBuf {
    dir.join(format!("{stream}.dump"))
}

/// A chunk as a dump record (the link sends the same encoding).
pub fn record_of(c: &Chunk) -> DumpChunk {
    DumpChunk {
        seq: c.seq,
        ts_micros: c.ts_micros,
        audio_start_micros: c.audio_start_micros,
        byte_start: c.byte_start,
        discontinuity: c.discontinuity,
        hls_segment: c.hls_segment,
        hls_disc_seq: c.hls_disc_seq,
        hls_segment_start: c.hls_segment_start,
        samples_per_frame: c.draft.samples_per_frame,
        sample_rate: c.draft.sample_rate,
        frames: c.draft.frames.to_vec(),
        title: c.title.text().to_string(),
        data: c.data().clone(),
    }
}

/// Turns records back into chunks; equal titles share one `Title`.
pub fn from_records(records: Vec<DumpChunk>) -> Vec<Chunk> {
    let mut titles: HashMap<String, Arc<Title>> = HashMap::new();
    let mut last: Option<Arc<Title>> = None;
    records
        .into_iter()
        .map(|r| {
            let title = match &last {
                Some(t) if t.text() == r.title => Arc::clone(t),
                _ => {
                    let t = match titles.get(&r.title) {
                        Some(t) => Arc::clone(t),
                        None => {
                            let t = Title::new(r.title.clone());
                            titles.insert(r.title, Arc::clone(&t));
                            t
                        }
                    };
                    last = Some(Arc::clone(&t));
                    t
                }
            };
            Chunk {
                seq: r.seq,
                ts_micros: r.ts_micros,
                audio_start_micros: r.audio_start_micros,
                byte_start: r.byte_start,
                discontinuity: r.discontinuity,
                hls_segment: r.hls_segment,
                hls_disc_seq: r.hls_disc_seq,
                hls_segment_start: r.hls_segment_start,
                title,
                draft: ChunkDraft {
                    data: r.data,
                    frames: r.frames.into_boxed_slice(),
                    samples_per_frame: r.samples_per_frame,
                    sample_rate: r.sample_rate,
                },
            }
        })
        .collect()
}

/// A stream's chunks and the header describing them (a consistent snapshot:
/// taken under the buffer lock, written without it).
pub fn snapshot(stream: &Stream) -> (DumpHeader, Vec<Arc<Chunk>>) {
    let b = stream.read_buffer();
    let chunks: Vec<Arc<Chunk>> = b.iter().cloned().collect();
    let header = DumpHeader {
        stream: stream.key().to_string(),
        format: stream.format().to_string(),
        format_key: stream.format_key(),
        rewind_seconds: stream.config().rewind_seconds,
        created_micros: now_micros(),
        chunks: chunks.len() as u64,
        first_seq: b.first_seq(),
        next_seq: b.next_seq(),
    };
    (header, chunks)
}

/// Writes a stream's dump atomically (temp file, fsync, rename). Blocking.
pub fn save_stream(stream: &Stream, dir: &Path) -> Result<DumpStats, DumpError> {
    let (header, chunks) = snapshot(stream);
    super::save(
        &dump_path(dir, stream.key()),
        &header,
        chunks.iter().map(|c| record_of(c)),
    )
}

/// Writes a stream's dump into memory (a handoff's buffer message). Blocking.
pub fn export_stream(stream: &Stream) -> Result<Vec<u8>, DumpError> {
    let mut out = Vec::new();
    write_stream(stream, &mut out)?;
    Ok(out)
}

/// Writes a stream's dump to `w` chunk by chunk. Blocking.
pub fn write_stream(stream: &Stream, w: impl std::io::Write) -> Result<DumpStats, DumpError> {
    let (header, chunks) = snapshot(stream);
    write_snapshot(&header, &chunks, w)
}

/// Writes a [`snapshot`] to `w` chunk by chunk (the admin API's export):
/// the chunks are shared, not copied, so this holds one record at a time.
/// Blocking.
pub fn write_snapshot(
    header: &DumpHeader,
    chunks: &[Arc<Chunk>],
    w: impl std::io::Write,
) -> Result<DumpStats, DumpError> {
    super::write_dump(w, header, chunks.iter().map(|c| record_of(c)))
}

/// The exact length [`write_snapshot`] writes.
pub fn snapshot_len(header: &DumpHeader, chunks: &[Arc<Chunk>]) -> Result<u64, DumpError> {
    super::dump::dump_len(
        header,
        chunks
            .iter()
            .map(|c| (c.title.text().len(), c.frame_count(), c.data().len())),
    )
}

/// Why a dump was not restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Unreadable, truncated, corrupt.
    #[error(transparent)]
    Dump(#[from] DumpError),
    /// A dump of something else.
    #[error("the dump is of stream {found_stream:?} ({found_format}), not {stream:?} ({format})")]
    Mismatch {
        /// This stream.
        stream: String,
        /// Its format.
        format: String,
        /// The dump's stream.
        found_stream: String,
        /// The dump's format.
        found_format: String,
    },
}

/// Checks a loaded dump belongs to `stream` and puts its chunks in the
/// (empty) buffer. Returns the number of chunks restored.
pub fn restore_into(
    stream: &Stream,
    header: DumpHeader,
    records: Vec<DumpChunk>,
    check_name: bool,
) -> Result<usize, RestoreError> {
    if (check_name && header.stream != stream.key()) || header.format != stream.format().to_string()
    {
        return Err(RestoreError::Mismatch {
            stream: stream.key().to_string(),
            format: stream.format().to_string(),
            found_stream: header.stream,
            found_format: header.format,
        });
    }
    let n = records.len();
    stream.restore(from_records(records), header.format_key.as_deref());
    Ok(n)
}

/// Shifts imported records so their numbers come after `next_seq` and the
/// last segment `(number, discontinuity sequence)` used.
pub fn renumber_after(records: &mut [DumpChunk], next_seq: u64, last_segment: Option<(u64, u64)>) {
    let Some(first) = records.first() else {
        return;
    };
    let seq_shift = next_seq.saturating_sub(first.seq);
    let (seg_shift, disc_shift) = match last_segment {
        Some((seg, disc)) if first.hls_segment <= seg => (
            seg + 1 - first.hls_segment,
            (disc + 1).saturating_sub(first.hls_disc_seq),
        ),
        _ => (0, 0),
    };
    if seq_shift == 0 && seg_shift == 0 {
        return;
    }
    for r in records.iter_mut() {
        r.seq += seq_shift;
        r.hls_segment += seg_shift;
        r.hls_disc_seq += disc_shift;
    }
    if let Some(first) = records.first_mut() {
        first.discontinuity = true;
    }
}

/// Loads a stream's dump file, if there is one, into its buffer. Blocking.
pub fn restore_stream(stream: &Stream, dir: &Path) -> Result<Option<usize>, RestoreError> {
    let mut keep = stream.audio_keeper();
    match super::load_with(&dump_path(dir, stream.key()), &Limits::default(), &mut keep)? {
        None => Ok(None),
        Some((header, records)) => restore_into(stream, header, records, true).map(Some),
    }
}
