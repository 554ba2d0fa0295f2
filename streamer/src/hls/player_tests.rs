//! Real-player checks: playlists and segments exactly as the server serves
//! them, read by FFmpeg's HLS demuxer (from files, and over HTTP on the
//! loopback interface for a live playlist).
//!
//! FFmpeg (`ffmpeg`, `ffprobe`) is required: without it these tests fail
//! with a message, they never skip.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::testutil::{chunks, fixture, frames, TestChunk};
use super::{
    bandwidth, codecs, head_len, pts_90khz, render_media, render_multivariant, segment_head,
    segments, AacExtension, Codec, MediaOptions, SegmentInfo, Segmenter, Variant, PTS_OWNER,
};

/// 2025-11-21T07:00:03Z: the stream starts 3 s into a 10 s window.
const START_TS: i64 = 1_763_708_403_000_000;

/// Titles by chunk: two changes, the second in the middle of a window.
fn title(i: usize) -> String {
    match i {
        0..=6 => "Alt-J - Intro".to_owned(),
        7..=17 => "Second title".to_owned(),
        _ => "Third, with a comma".to_owned(),
    }
}

/// A directory under the system temp dir, removed when dropped (kept with
/// `HLS_KEEP=1`, to look at).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hls-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("HLS_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs `tool args…` (at most 2 minutes), failing the test with a clear
/// message if the tool is missing.
fn run(tool: &str, args: &[&str]) -> Output {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{tool} is needed for the real-player test (apt-get install ffmpeg): {e}")
        });
    // Drain both pipes on threads so a chatty tool never blocks.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{tool} {args:?} did not finish in 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// Runs a tool that must succeed and print nothing on stderr; returns stdout.
fn run_clean(tool: &str, args: &[&str]) -> Vec<u8> {
    let out = run(tool, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "{tool} {args:?}: {}\n{stderr}",
        out.status
    );
    out.stdout
}

/// The bytes the server sends for segment `s`: its ID3 head, then its chunks.
fn segment_bytes(s: &SegmentInfo, chunks: &[TestChunk]) -> Vec<u8> {
    let mut bytes = segment_head(s.audio_start_micros, &s.title).to_vec();
    for c in chunks.iter().filter(|c| s.seq_range().contains(&c.seq)) {
        bytes.extend_from_slice(&c.data);
    }
    bytes
}

/// Writes `<dir>/<stream>.m3u8` and its segment files. The source has ended,
/// so the last segment is closed and the playlist ends with `EXT-X-ENDLIST`
/// (FFmpeg would otherwise wait for the live playlist to grow).
fn write_vod(dir: &Path, stream: &str, codec: Codec, chunks: &[TestChunk]) -> Vec<SegmentInfo> {
    let mut segs = segments(chunks.iter().map(TestChunk::view));
    if let Some(last) = segs.last_mut() {
        last.complete = true;
    }
    let opts = MediaOptions {
        end_list: true,
        ..MediaOptions::new(stream, codec, 10)
    };
    std::fs::write(
        dir.join(format!("{stream}.m3u8")),
        render_media(&segs, &opts),
    )
    .unwrap();
    let seg_dir = dir.join(stream).join("seg");
    std::fs::create_dir_all(&seg_dir).unwrap();
    for s in &segs {
        let path = seg_dir.join(format!("{}.{}", s.number, codec.ext()));
        std::fs::write(path, segment_bytes(s, chunks)).unwrap();
    }
    segs
}

/// Decodes an ffprobe/ffmpeg metadata value: printable bytes as they are,
/// others as `\xHH`.
fn unescape(v: &str) -> Vec<u8> {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 4 <= b.len() {
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Everything that can be checked on files: FFmpeg plays the playlist,
/// decodes exactly the audio, takes every segment's timestamp from its ID3
/// tag, and reads each segment's tag (title, PRIV) by itself.
///
/// `timestamp_artefact`: FFmpeg's MP3 demuxer reads 1024-byte blocks, so the
/// HLS demuxer meets the next segment's ID3 tag before the last frame or two
/// of the previous segment have been parsed; those frames get the next
/// segment's timestamp and the muxer complains about non-monotonic dts. That
/// is FFmpeg's approximation (players that demux segment by segment, like
/// hls.js and Apple's, do not have it), so for MP3 those lines are allowed on
/// the plain run, and a second run retimes the decoded audio by sample count
/// and must print nothing at all.
fn check_with_ffmpeg(
    dir: &Path,
    codec: Codec,
    segs: &[SegmentInfo],
    chunks: &[TestChunk],
    timestamp_artefact: bool,
) {
    let playlist = dir.join("x.m3u8");
    let playlist = playlist.to_str().unwrap();
    let audio_micros: u64 = chunks.iter().map(|c| c.duration_micros).sum();
    let audio_s = audio_micros as f64 / 1e6;
    assert!(audio_s > 29.0, "the fixture is ~30 s: {audio_s}");
    assert!(segs.len() >= 4, "{segs:#?}");

    // 1. Plays without an error.
    let out = run(
        "ffmpeg",
        &["-nostdin", "-v", "error", "-i", playlist, "-f", "null", "-"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg: {}\n{stderr}", out.status);
    for line in stderr.lines() {
        assert!(
            timestamp_artefact && line.contains("non monotonically increasing dts"),
            "ffmpeg printed: {stderr}"
        );
    }
    if timestamp_artefact {
        run_clean(
            "ffmpeg",
            &[
                "-nostdin",
                "-v",
                "error",
                "-i",
                playlist,
                "-af",
                "asetpts=N/SR/TB",
                "-f",
                "null",
                "-",
            ],
        );
    }

    // 2. Decodes exactly the audio: every frame of every segment.
    let pcm = run_clean(
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "error",
            "-i",
            playlist,
            "-af",
            "asetpts=N/SR/TB",
            "-f",
            "s16le",
            "-ac",
            "2",
            "-ar",
            "44100",
            "-",
        ],
    );
    let decoded_s = pcm.len() as f64 / 4.0 / 44100.0;
    assert!(
        (decoded_s - audio_s).abs() < 0.1,
        "decoded {decoded_s} s of {audio_s} s"
    );

    // 3. ffprobe: duration (from EXTINF), start time (from the first ID3 PRIV).
    let probe = run_clean(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "format=duration,start_time",
            "-of",
            "default=nw=1",
            playlist,
        ],
    );
    let probe = String::from_utf8(probe).unwrap();
    let field = |name: &str| -> f64 {
        probe
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {probe}"))
            .parse()
            .unwrap()
    };
    let duration = field("duration");
    assert!((duration - audio_s).abs() < 0.1, "{duration} vs {audio_s}");
    let first_pts = pts_90khz(segs[0].audio_start_micros) as f64 / 90_000.0;
    let start = field("start_time");
    let start_mod = start.rem_euclid((1u64 << 33) as f64 / 90_000.0);
    assert!(
        (start_mod - first_pts).abs() < 0.001,
        "{start} vs {first_pts}"
    );

    // 4. Every segment's ID3 tag is found, stripped whole, and its timestamp used.
    let out = run(
        "ffmpeg",
        &["-nostdin", "-v", "debug", "-i", playlist, "-f", "null", "-"],
    );
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    let stripped: Vec<usize> = log
        .lines()
        .filter_map(|l| l.split("Stripped ").nth(1))
        .filter_map(|l| l.strip_suffix(" HLS ID3 bytes"))
        .map(|n| n.parse().unwrap())
        .collect();
    let heads: Vec<usize> = segs.iter().map(|s| head_len(&s.title)).collect();
    assert_eq!(stripped, heads);
    let stamps: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split("HLS ID3 audio timestamp ").nth(1))
        .map(|n| n.trim().parse().unwrap())
        .collect();
    let pts: Vec<u64> = segs
        .iter()
        .map(|s| pts_90khz(s.audio_start_micros))
        .collect();
    assert_eq!(stamps, pts);
    // A title change is noticed (FFmpeg only warns that it cannot update it).
    assert!(log.contains("Changing ID3 metadata"), "{log}");

    // 5. Packet timestamps follow the audio clock across segments: each
    // segment's PRIV value is a packet's dts, and (without the MP3 artefact)
    // consecutive packets are one frame apart everywhere, boundaries included.
    let packets = run_clean(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "packet=dts,duration",
            "-of",
            "csv=p=0",
            playlist,
        ],
    );
    let packets: Vec<(i64, i64)> = String::from_utf8(packets)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (d, dur) = l.split_once(',').unwrap();
            (d.parse().unwrap(), dur.parse().unwrap())
        })
        .collect();
    let wrap = 1i64 << 33;
    for p in &pts {
        assert!(
            packets.iter().any(|(d, _)| d.rem_euclid(wrap) == *p as i64),
            "no packet at PTS {p}"
        );
    }
    if !timestamp_artefact {
        for w in packets.windows(2) {
            let step = w[1].0 - w[0].0;
            assert!(
                (step - w[0].1).abs() <= 2,
                "packets not contiguous: {:?} → {:?}",
                w[0],
                w[1]
            );
        }
    }

    // 6. Each segment file alone: FFmpeg's ID3 reader sees its title and PRIV.
    for s in segs {
        let file = dir
            .join("x/seg")
            .join(format!("{}.{}", s.number, codec.ext()));
        let tags = run_clean(
            "ffprobe",
            &[
                "-v",
                "error",
                "-show_entries",
                "format_tags",
                "-of",
                "default=nw=1",
                file.to_str().unwrap(),
            ],
        );
        let tags = String::from_utf8(tags).unwrap();
        assert!(
            tags.lines().any(|l| l == format!("TAG:title={}", s.title)),
            "{tags}"
        );
        let priv_tag = format!("TAG:id3v2_priv.{PTS_OWNER}=");
        let value = tags
            .lines()
            .find_map(|l| l.strip_prefix(&priv_tag))
            .unwrap_or_else(|| panic!("no PRIV in {tags}"));
        assert_eq!(
            unescape(value),
            pts_90khz(s.audio_start_micros).to_be_bytes()
        );
    }
}

#[test]
fn mp3_fixture_plays_in_ffmpeg() {
    let file = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames(&file);
    let mut seg = Segmenter::new(10);
    // The stream has run for an hour; a source change (with a 5 s gap) at chunk 12.
    let chunks = chunks(&frames, START_TS, 3_600_000_000, title, &[12], &mut seg);
    let dir = TempDir::new("mp3");
    let segs = write_vod(&dir.0, "x", Codec::Mp3, &chunks);
    // Boundaries: the 10 s window (chunk 7 starts at 07:00:10.13), the title
    // change at 18, the discontinuity at 12, and the window after the gap.
    let firsts: Vec<u64> = segs.iter().map(|s| s.first_seq - 1000).collect();
    assert_eq!(firsts, vec![0, 7, 12, 18, 22]);
    let text = std::fs::read_to_string(dir.0.join("x.m3u8")).unwrap();
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    check_with_ffmpeg(&dir.0, Codec::Mp3, &segs, &chunks, true);
}

#[test]
fn aac_fixture_plays_in_ffmpeg_across_the_pts_wrap() {
    let file = fixture("aac-256.aac");
    let frames = frames(&file);
    let mut seg = Segmenter::new(10);
    // 10 s before the 33-bit 90 kHz clock wraps (after 26.5 h of audio).
    let wrap_micros = (1u64 << 33) * 1000 / 90;
    let chunks = chunks(
        &frames,
        START_TS,
        wrap_micros - 10_000_000,
        title,
        &[12],
        &mut seg,
    );
    let dir = TempDir::new("aac");
    let segs = write_vod(&dir.0, "x", Codec::Aac, &chunks);
    assert!(segs
        .windows(2)
        .any(|w| pts_90khz(w[1].audio_start_micros) < pts_90khz(w[0].audio_start_micros)));
    check_with_ffmpeg(&dir.0, Codec::Aac, &segs, &chunks, false);
}

/// A tiny HTTP server on the loopback interface serving fixed bodies, and
/// recording each request's path and query.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<(String, String)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(files: HashMap<String, (Vec<u8>, &'static str)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop2, log2) = (Arc::clone(&stop), Arc::clone(&log));
        let thread = std::thread::spawn(move || {
            // Bounded: a few hundred requests at most, then it stops by itself.
            for conn in listener.incoming().take(500) {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                log2.lock()
                    .unwrap()
                    .push((path.to_owned(), query.to_owned()));
                let response = match files.get(path) {
                    Some((body, ctype)) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(body);
                        r
                    }
                    None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\
                              Connection: close\r\n\r\n"
                        .to_vec(),
                };
                let _ = conn.write_all(&response);
            }
        });
        Server {
            port,
            stop,
            log,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn live_playlist_over_http_through_the_multivariant_playlist() {
    let file = fixture("aac-256.aac");
    let frames = frames(&file);
    let mut seg = Segmenter::new(6);
    let chunks = chunks(&frames, START_TS, 7_200_000_000, title, &[], &mut seg);
    // Live: the newest segment is still growing and is not listed.
    let segs = segments(chunks.iter().map(TestChunk::view));
    let opts = MediaOptions {
        window: Some(3),
        query: Some("sid=s3ss10n"),
        ..MediaOptions::new("x", Codec::Aac, 6)
    };
    let media = render_media(&segs, &opts);
    assert!(!media.contains("#EXT-X-ENDLIST"));
    let (peak, avg) = bandwidth(&segs, 256_000, false);
    let variant = Variant {
        stream: "x",
        bandwidth: peak,
        average_bandwidth: avg,
        codecs: codecs(Codec::Aac, 1, AacExtension::Plain),
        query: Some("sid=s3ss10n"),
    };
    let multivariant = render_multivariant(&[variant], "../");
    // ~257 kbit/s of audio plus the ID3 heads.
    assert!((250_000..300_000).contains(&avg), "{avg}");
    assert!(peak >= avg);

    let mut files = HashMap::new();
    files.insert(
        "/sg/g.m3u8".to_owned(),
        (multivariant.into_bytes(), super::PLAYLIST_CONTENT_TYPE),
    );
    files.insert(
        "/x.m3u8".to_owned(),
        (media.into_bytes(), super::PLAYLIST_CONTENT_TYPE),
    );
    for s in &segs {
        files.insert(
            format!("/x/seg/{}.aac", s.number),
            (segment_bytes(s, &chunks), Codec::Aac.content_type()),
        );
    }
    let server = Server::start(files);
    let url = format!("http://127.0.0.1:{}/sg/g.m3u8", server.port);
    // A live player starts 3 segments before the end; 5 s of audio is enough.
    run_clean(
        "ffmpeg",
        &[
            "-nostdin", "-v", "error", "-i", &url, "-t", "5", "-f", "null", "-",
        ],
    );
    let log = server.log.lock().unwrap().clone();
    drop(server);
    let paths: Vec<&str> = log.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths[..2], ["/sg/g.m3u8", "/x.m3u8"], "{log:?}");
    let listed: Vec<&SegmentInfo> = segs.iter().filter(|s| s.complete).collect();
    let first_listed = listed[listed.len() - 3].number;
    let seg_requests: Vec<&(String, String)> = log
        .iter()
        .filter(|(p, _)| p.starts_with("/x/seg/"))
        .collect();
    assert!(!seg_requests.is_empty(), "{log:?}");
    assert_eq!(seg_requests[0].0, format!("/x/seg/{first_listed}.aac"));
    for (path, query) in &log[1..] {
        assert_eq!(query, "sid=s3ss10n", "{path}");
    }
}
