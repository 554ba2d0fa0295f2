//! The reading side of the dump format: chunk by chunk from any reader,
//! every length checked before it is trusted.

use super::*;

/// An input over one record's bytes, past its chunk tag.
fn chunk_record(bytes: &[u8]) -> Result<Input<&[u8]>, DumpError> {
    let mut input = Input {
        inner: bytes,
        pos: 0,
        crc: crc32fast::Hasher::new(),
        end: Some(bytes.len() as u64),
    };
    match input.u8()? {
        TAG_CHUNK => Ok(input),
        t => Err(DumpError::Inconsistent(format!(
            "record tag {t:#04x} is not a chunk"
        ))),
    }
}

/// Decodes one complete chunk record (as written by [`encode_record_head`]
/// plus the data), checking every length against `limits` and the record's
/// own consistency; trailing bytes are an error.
pub fn decode_record(record: &[u8], limits: &Limits) -> Result<DumpChunk, DumpError> {
    let mut input = chunk_record(record)?;
    let chunk = read_chunk(&mut input, limits, 0, &mut Bytes::from)?;
    if input.pos != record.len() as u64 {
        return Err(DumpError::Inconsistent(format!(
            "{} bytes after the chunk record",
            record.len() as u64 - input.pos
        )));
    }
    Ok(chunk)
}

/// The reading side: a buffered reader that counts bytes, feeds the CRC and
/// turns a short read into [`DumpError::Truncated`].
struct Input<R: BufRead> {
    inner: R,
    pos: u64,
    crc: crc32fast::Hasher,
    end: Option<u64>,
}

impl<R: BufRead> Input<R> {
    /// Fills `buf` completely.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), DumpError> {
        self.check_room(buf.len() as u64)?;
        let mut filled = 0;
        while filled < buf.len() {
            let avail = match self.inner.fill_buf() {
                Ok(avail) => avail,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if avail.is_empty() {
                return Err(DumpError::Truncated { at_byte: self.pos });
            }
            let n = avail.len().min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&avail[..n]);
            self.crc.update(&avail[..n]);
            self.inner.consume(n);
            filled += n;
            self.pos += n as u64;
        }
        Ok(())
    }

    /// `Truncated` when `len` more bytes would run past the known end.
    fn check_room(&self, len: u64) -> Result<(), DumpError> {
        match self.end {
            Some(end) if self.pos.saturating_add(len) > end => Err(DumpError::Truncated {
                at_byte: end.max(self.pos),
            }),
            _ => Ok(()),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DumpError> {
        let mut buf = [0u8; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn u8(&mut self) -> Result<u8, DumpError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DumpError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DumpError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DumpError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Reads `len` bytes into a vector of exactly that size, allocating in
    /// steps as the bytes arrive, so a lying length costs at most one step.
    fn vec(&mut self, len: usize) -> Result<Vec<u8>, DumpError> {
        self.check_room(len as u64)?;
        let mut v = Vec::new();
        while v.len() < len {
            let start = v.len();
            let step = (len - start).min(READ_STEP);
            v.reserve_exact(step);
            v.resize(start + step, 0);
            self.fill(&mut v[start..])?;
        }
        if v.capacity() != v.len() {
            v.shrink_to_fit();
        }
        Ok(v)
    }

    /// True when no byte is left.
    fn at_eof(&mut self) -> Result<bool, DumpError> {
        loop {
            match self.inner.fill_buf() {
                Ok(avail) => return Ok(avail.is_empty()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Reads a whole dump from `r`, chunk by chunk through a buffer. Each chunk
/// gets its own exactly-sized [`Bytes`]. Returns the header and the chunks
/// only when everything checks out (limits, record consistency, trailer, CRC,
/// nothing after the trailer); any damage yields an error and no data.
pub fn read_dump<R: Read>(
    r: R,
    limits: &Limits,
) -> Result<(DumpHeader, Vec<DumpChunk>), DumpError> {
    read_dump_with(r, limits, &mut Bytes::from)
}

/// [`read_dump`], with `keep` deciding where each chunk's audio goes (a
/// stream's arena, so a restore or an import puts audio where it will stay
/// instead of on the heap first).
pub fn read_dump_with<R: Read>(
    r: R,
    limits: &Limits,
    keep: &mut dyn FnMut(Vec<u8>) -> Bytes,
) -> Result<(DumpHeader, Vec<DumpChunk>), DumpError> {
    let mut input = Input {
        inner: BufReader::with_capacity(IO_BUFFER, r),
        pos: 0,
        crc: crc32fast::Hasher::new(),
        end: limits.max_total_bytes,
    };
    let header = read_header(&mut input, limits)?;

    // Reserve for the announced count, but never more than the bytes could hold.
    let mut reserve = header.chunks.min(1 << 16);
    if let Some(end) = limits.max_total_bytes {
        reserve = reserve.min(end.saturating_sub(input.pos) / RECORD_FIXED_LEN as u64);
    }
    let mut chunks = Vec::with_capacity(usize::try_from(reserve).unwrap_or(0));
    let mut expected_seq = header.first_seq;
    loop {
        let at = input.pos;
        match input.u8()? {
            TAG_CHUNK => {
                if chunks.len() as u64 >= header.chunks {
                    return Err(DumpError::Inconsistent(format!(
                        "chunk record at byte {at} beyond the {} the header announces",
                        header.chunks
                    )));
                }
                let chunk = read_chunk(&mut input, limits, at, keep)?;
                if chunk.seq != expected_seq {
                    return Err(DumpError::Inconsistent(format!(
                        "chunk at byte {at} has seq {} where {expected_seq} was expected",
                        chunk.seq
                    )));
                }
                expected_seq = expected_seq.saturating_add(1);
                chunks.push(chunk);
            }
            TAG_END => break,
            tag => {
                return Err(DumpError::Inconsistent(format!(
                    "unknown record tag {tag:#04x} at byte {at}"
                )));
            }
        }
    }
    let count = input.u64()?;
    let found = input.crc.clone().finalize();
    let expected = input.u32()?;
    if expected != found {
        return Err(DumpError::Checksum { expected, found });
    }
    if count != chunks.len() as u64 || count != header.chunks {
        return Err(DumpError::Inconsistent(format!(
            "trailer counts {count} chunks, {} read, header announces {}",
            chunks.len(),
            header.chunks
        )));
    }
    if !input.at_eof()? {
        return Err(DumpError::Inconsistent(format!(
            "data after the trailer at byte {}",
            input.pos
        )));
    }
    Ok((header, chunks))
}

/// Reads and checks magic, version and the JSON header.
fn read_header<R: BufRead>(input: &mut Input<R>, limits: &Limits) -> Result<DumpHeader, DumpError> {
    // Read the magic byte by byte so that garbage is `BadMagic` even when short.
    for expected in MAGIC {
        if input.u8()? != expected {
            return Err(DumpError::BadMagic);
        }
    }
    let version = input.u32()?;
    if version != FORMAT_VERSION {
        return Err(DumpError::UnsupportedVersion(version));
    }
    let len = input.u32()?;
    if len > limits.max_header_bytes {
        return Err(DumpError::TooLarge {
            what: "header",
            len: u64::from(len),
            limit: u64::from(limits.max_header_bytes),
        });
    }
    let json = input.vec(len as usize)?;
    let header: DumpHeader = serde_json::from_slice(&json)
        .map_err(|e| DumpError::Inconsistent(format!("header is not valid JSON: {e}")))?;
    validate_header(&header, limits)?;
    Ok(header)
}

/// Reads one chunk record after its tag (which sat at byte `at`).
fn read_chunk<R: BufRead>(
    input: &mut Input<R>,
    limits: &Limits,
    at: u64,
    keep: &mut dyn FnMut(Vec<u8>) -> Bytes,
) -> Result<DumpChunk, DumpError> {
    let (mut chunk, data_len) = read_chunk_head(input, limits, at)?;
    input.check_room(u64::from(data_len))?;
    chunk.data = keep(input.vec(data_len as usize)?);
    validate_chunk(&chunk, limits)?;
    Ok(chunk)
}

/// Reads a chunk record's head after its tag: the chunk without its audio
/// (`data` empty), and the audio's length.
fn read_chunk_head<R: BufRead>(
    input: &mut Input<R>,
    limits: &Limits,
    at: u64,
) -> Result<(DumpChunk, u32), DumpError> {
    let seq = input.u64()?;
    let ts_micros = input.i64()?;
    let audio_start_micros = input.u64()?;
    let byte_start = input.u64()?;
    let hls_segment = input.u64()?;
    let hls_disc_seq = input.u64()?;
    let samples_per_frame = input.u32()?;
    let sample_rate = input.u32()?;
    let flags = input.u8()?;
    let title_len = input.u32()?;
    let frame_count = input.u32()?;
    let data_len = input.u32()?;
    if flags & !(FLAG_DISCONTINUITY | FLAG_HLS_SEGMENT_START) != 0 {
        return Err(DumpError::Inconsistent(format!(
            "chunk at byte {at} has unknown flags {flags:#04x}"
        )));
    }
    check_len("title", title_len as usize, limits.max_title_bytes)?;
    check_len("frame count", frame_count as usize, limits.max_frames)?;
    check_len("chunk data", data_len as usize, limits.max_chunk_bytes)?;
    let frame_bytes = u64::from(frame_count) * 4;
    input.check_room(u64::from(title_len) + frame_bytes)?;

    let title = String::from_utf8(input.vec(title_len as usize)?).map_err(|_| {
        DumpError::Inconsistent(format!("chunk at byte {at} has a title that is not UTF-8"))
    })?;
    let raw_frames = input.vec(frame_count as usize * 4)?;
    let mut frames = Vec::with_capacity(frame_count as usize);
    for b in raw_frames.chunks_exact(4) {
        frames.push(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    }
    let chunk = DumpChunk {
        seq,
        ts_micros,
        audio_start_micros,
        byte_start,
        discontinuity: flags & FLAG_DISCONTINUITY != 0,
        hls_segment,
        hls_disc_seq,
        hls_segment_start: flags & FLAG_HLS_SEGMENT_START != 0,
        samples_per_frame,
        sample_rate,
        frames,
        title,
        data: Bytes::new(),
    };
    Ok((chunk, data_len))
}

/// Decodes a chunk record's head alone (as [`encode_record_head`] wrote it,
/// without the audio after it): the chunk with `data` empty, and the audio's
/// length. Whoever supplies the audio checks the whole with [`check_record`].
pub fn decode_record_head(head: &[u8], limits: &Limits) -> Result<(DumpChunk, u32), DumpError> {
    let mut input = chunk_record(head)?;
    let r = read_chunk_head(&mut input, limits, 0)?;
    if input.pos != head.len() as u64 {
        return Err(DumpError::Inconsistent(format!(
            "{} bytes after the chunk record's head",
            head.len() as u64 - input.pos
        )));
    }
    Ok(r)
}

/// Checks a chunk as a reader does (lengths, frame table against the audio).
pub fn check_record(chunk: &DumpChunk, limits: &Limits) -> Result<(), DumpError> {
    validate_chunk(chunk, limits)
}
