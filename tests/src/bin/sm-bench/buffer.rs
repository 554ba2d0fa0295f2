//! The rewind buffer in this process: its memory for 8 h of audio, HLS
//! playlists and segments over it, dumps written and read.

use crate::*;

/// The rewind buffer holding 8 h of 128 kbit/s audio, built in this process
/// exactly as the server builds it (framer → chunker → buffer).
pub(crate) fn bench_buffer() -> Vec<(String, String)> {
    let frames = music_frames();
    let hours = 8u32;
    let seconds = hours * 3600;
    let pid = std::process::id();
    let before = rss(pid);
    let started = Instant::now();
    let mut buffer = RewindBuffer::new(seconds, 0);
    let mut chunker = Chunker::new();
    let title = Title::new("Benchmark");
    let mut now = 1_700_000_000_000_000i64;
    let mut appended_audio: u64 = 0;
    let mut audio_micros: u64 = 0;
    'fill: loop {
        for f in &frames {
            if let Some(draft) = chunker.push(f) {
                let d = draft.duration_micros();
                now += d as i64;
                appended_audio += draft.data.len() as u64;
                buffer.append(draft, Arc::clone(&title), now, true);
                audio_micros += d;
                if audio_micros >= u64::from(seconds) * 1_000_000 {
                    break 'fill;
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let after = rss(pid);
    let raw = buffer.bytes() as u64;
    let nominal = u64::from(seconds) * 16_000;
    let grown = after.saturating_sub(before);
    vec![
        (
            "buffer: audio held".into(),
            format!(
                "{:.1} h, {} chunks",
                buffer.duration_micros() as f64 / 3.6e9,
                buffer.len()
            ),
        ),
        (
            "buffer: raw audio bytes (128 kbit/s × 8 h = 460.8 MB)".into(),
            format!("{:.1} MB", raw as f64 / 1e6),
        ),
        (
            "buffer: bookkeeping bytes (chunk structs, frame tables)".into(),
            format!(
                "{:.2} MB ({:.2} %)",
                buffer.overhead_bytes() as f64 / 1e6,
                buffer.overhead_bytes() as f64 * 100.0 / raw as f64
            ),
        ),
        (
            "buffer: process RSS growth while filling".into(),
            format!("{:.1} MB", grown as f64 / 1e6),
        ),
        (
            "buffer: RSS growth / raw audio bytes (target <= 1.03)".into(),
            format!("{:.4}", grown as f64 / raw as f64),
        ),
        (
            "buffer: RSS growth / nominal 460.8 MB".into(),
            format!("{:.4}", grown as f64 / nominal as f64),
        ),
        (
            "buffer: fill speed (chunker + buffer append)".into(),
            format!(
                "{:.0} MB/s",
                appended_audio as f64 / 1e6 / elapsed.as_secs_f64()
            ),
        ),
    ]
}

/// The frames of the 128 kbit/s stereo music fixture.
pub(crate) fn music_frames() -> Vec<streamer::format::Frame> {
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let mut framer = Framer::new(Codec::Mp3);
    framer.push(&data);
    let mut frames = Vec::new();
    while let Some(f) = framer.next_frame().unwrap() {
        frames.push(f);
    }
    while let Some(f) = framer.finish().unwrap() {
        frames.push(f);
    }
    frames
}

/// An 8 h, 128 kbit/s stream with real-time timestamps (so 10 s HLS
/// segments: 2880 of them) and a title change every 4 minutes.
pub(crate) fn eight_hours() -> Vec<streamer::buffer::Chunk> {
    hours_of_audio(8)
}

/// `hours` of 128 kbit/s audio as chunks (see [`eight_hours`]).
pub(crate) fn hours_of_audio(hours: u64) -> Vec<streamer::buffer::Chunk> {
    audio_with_titles(hours, Some(4))
}

/// `hours` of 128 kbit/s audio as chunks, the title changing every
/// `title_minutes` (each change cuts an HLS segment short) or never.
pub(crate) fn audio_with_titles(
    hours: u64,
    title_minutes: Option<u64>,
) -> Vec<streamer::buffer::Chunk> {
    let every = title_minutes.map_or(u64::MAX, |m| m * 60_000_000);
    let frames = music_frames();
    let seconds = hours * 3600;
    let mut rb = RewindBuffer::new(u32::try_from(seconds).unwrap() + 60, 1_000_000);
    let mut chunker = Chunker::new();
    let mut now = 1_795_000_000_000_000i64;
    let mut micros = 0u64;
    let mut title = Title::new("Show 0");
    'fill: loop {
        for f in &frames {
            if let Some(draft) = chunker.push(f) {
                let d = draft.duration_micros();
                now += i64::try_from(d).unwrap();
                if micros / every != (micros + d) / every {
                    title = Title::new(format!("Show {}", (micros + d) / every));
                }
                rb.append(draft, Arc::clone(&title), now, true);
                micros += d;
                if micros >= seconds * 1_000_000 {
                    break 'fill;
                }
            }
        }
    }
    let arcs: Vec<Arc<streamer::buffer::Chunk>> = rb.iter().cloned().collect();
    drop(rb);
    arcs.into_iter()
        .filter_map(|a| Arc::try_unwrap(a).ok())
        .collect()
}

pub(crate) fn bench_hls_and_dumps() -> Vec<(String, String)> {
    use streamer::stream::Stream;
    use streammachine_config::{AudioFormat, StreamConfig};
    let mut rows = Vec::new();
    let metrics = streamer::metrics::Metrics::new().unwrap();
    let mut cfg = StreamConfig::new("bench");
    cfg.rewind_seconds = 8 * 3600 + 60;
    cfg.password = Some(streammachine_config::Secret("bench".into()));
    let stream = Stream::new(cfg.clone(), AudioFormat::Mp3, &metrics);
    stream.restore(eight_hours(), Some("mp3-44100-128-s"));
    let raw = stream.read_buffer().bytes() as f64;
    // Playlist generation in-process: group the 28,800 chunks into segments
    // and render; with no title change (exactly 2880 segments of 10 s) and
    // with one every 4 minutes (each cuts a segment short).
    let plain = Stream::new(cfg.clone(), AudioFormat::Mp3, &metrics);
    plain.restore(audio_with_titles(8, None), Some("mp3-44100-128-s"));
    for (what, s) in [
        ("no title change", &plain),
        ("a title change every 4 min", &stream),
    ] {
        let mut times = Vec::new();
        let mut body = String::new();
        let mut segs = 0;
        for _ in 0..31 {
            let t = Instant::now();
            let list = {
                let b = s.read_buffer();
                streamer::hls::segments(b.iter().map(|c| c.hls_view()))
            };
            let opts = streamer::hls::MediaOptions::new("bench", streamer::hls::Codec::Mp3, 11);
            body = streamer::hls::render_media(&list, &opts);
            times.push(t.elapsed());
            segs = list.iter().filter(|s| s.complete).count();
        }
        rows.push((
            format!("HLS: 8 h media playlist, {what}, in-process (segment + render), median of 31"),
            format!(
                "{} for {segs} segments, {} bytes",
                ms(median(times)),
                body.len()
            ),
        ));
    }
    drop(plain);
    // Dump and restore.
    let dir = streammachine_tests::scratch_dir("bench-dumps");
    let t = Instant::now();
    let stats = streamer::persist::rewind::save_stream(&stream, &dir).unwrap();
    let save = t.elapsed();
    rows.push((
        "dump: 8 h at 128 kbit/s, save (write, fsync, rename)".into(),
        format!(
            "{:.2} s, {:.0} MB/s of audio",
            save.as_secs_f64(),
            raw / 1e6 / save.as_secs_f64()
        ),
    ));
    rows.push((
        "dump: size / raw audio bytes".into(),
        format!(
            "{:.1} MB / {:.1} MB = {:.4}",
            stats.dump_bytes as f64 / 1e6,
            raw / 1e6,
            stats.dump_bytes as f64 / raw
        ),
    ));
    let fresh = Stream::new(cfg, AudioFormat::Mp3, &metrics);
    let t = Instant::now();
    let n = streamer::persist::rewind::restore_stream(&fresh, &dir)
        .unwrap()
        .unwrap_or(0);
    let load = t.elapsed();
    rows.push((
        "dump: restore (read, verify, rebuild chunks)".into(),
        format!(
            "{:.2} s, {:.0} MB/s of audio ({n} chunks)",
            load.as_secs_f64(),
            raw / 1e6 / load.as_secs_f64()
        ),
    ));
    drop(fresh);
    drop(stream);
    // Over HTTP: a real server restores the dump and serves the playlist and segments.
    let exe = std::env::current_exe()
        .unwrap()
        .with_file_name("streammachine");
    if !exe.exists() {
        rows.push((
            "HLS over HTTP".into(),
            "skipped: build the streammachine binary (./bench.sh)".into(),
        ));
        return rows;
    }
    let server = ServerProcess::try_start(
        exe.to_str().unwrap(),
        &format!("dumps: {{ dir: {} }}\nstreams:\n  - key: bench\n    password: bench\n    rewindSeconds: {}\n", dir.display(), 8 * 3600 + 60),
        &[],
    )
    .unwrap_or_else(|log| panic!("server did not start:\n{log}"));
    let restored = server.log_lines("restored from its dump");
    if let Some(l) = restored.first() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        rows.push((
            "server start: 8 h dump restored in".into(),
            format!("{} ms", v["took_ms"]),
        ));
    }
    let mut times = Vec::new();
    let mut uris = Vec::new();
    for _ in 0..31 {
        let t = Instant::now();
        let r = streammachine_tests::http_get(server.listen, "/bench.m3u8", &[]);
        times.push(t.elapsed());
        assert_eq!(r.status, 200);
        uris = r
            .text()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| format!("/{l}"))
            .collect();
    }
    rows.push((
        "HLS: 8 h media playlist over HTTP, one request (median of 31)".into(),
        format!("{} ({} entries)", ms(median(times)), uris.len()),
    ));
    rows.extend(crate::hls::segment_throughput(server.listen, "bench"));
    rows
}
