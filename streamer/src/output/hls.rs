//! HLS routes: `/<stream>.m3u8`, `/<stream>/seg/<n>.<ext>` and `/sg/<group>.m3u8`,
//! served straight from the rewind buffer (see [`crate::hls`]).

use std::sync::Arc;

use bytes::Bytes;
use streammachine_config::{AacProfile, AudioFormat};

use super::start::StartRequest;
use super::OutputHost;
use crate::buffer::{Chunk, RewindBuffer};
use crate::hls::{self, Codec, HlsError, MediaOptions, StartAt, Variant};
use crate::http::{reason, Request, Response};
use crate::stream::Stream;

/// A segment ready to send: the response head and the parts of its body
/// (the ID3 head, then the chunks' bytes, shared, not copied).
#[derive(Debug)]
pub struct SegmentReply {
    /// Status line and headers.
    pub head: String,
    /// Body pieces.
    pub parts: Vec<Bytes>,
}

fn codec(stream: &Stream) -> Codec {
    match stream.format() {
        AudioFormat::Mp3 => Codec::Mp3,
        AudioFormat::Aac => Codec::Aac,
    }
}

/// Segment container of a playlist request: `?container=ts` (the default:
/// every player takes MPEG-TS, Chromium's native player no packed MP3) or
/// `?container=packed` (packed audio, RFC 8216 §3.4: smaller, for hls.js and
/// Apple's players).
fn wants_ts(req: &Request) -> Result<bool, Response> {
    match req.query_param("container").as_deref() {
        None | Some("ts") => Ok(true),
        Some("packed") => Ok(false),
        Some(other) => Err(Response::text(
            400,
            reason(400),
            format!("container={other}: expected ts or packed"),
        )),
    }
}

/// `?window=N`, checked.
fn window(req: &Request) -> Result<Option<usize>, Response> {
    match req.query_param("window").map(|w| w.parse::<usize>()) {
        None => Ok(None),
        Some(Ok(n)) if n > 0 => Ok(Some(n)),
        Some(_) => Err(Response::text(
            400,
            reason(400),
            "window=N: expected a number of segments >= 1",
        )),
    }
}

/// What every playlist request may ask: a start (`?offset=`/`?at=`), the
/// container and a window; or the 400 saying what is wrong.
fn playlist_params(req: &Request) -> Result<(StartRequest, bool, Option<usize>), Response> {
    let start = StartRequest::from_request(req)
        .map_err(|e| Response::text(400, reason(400), e.to_string()))?;
    Ok((start, wants_ts(req)?, window(req)?))
}

fn playlist_reply(body: String) -> Response {
    Response::new(200, "OK")
        .header("Content-Type", hls::PLAYLIST_CONTENT_TYPE)
        .header("Cache-Control", "no-cache")
        .body(body.into_bytes())
}

/// The stream whose `listenerAuth` guards an HLS path: `/<key>.m3u8`,
/// `/<key>/seg/…`, or `/sg/<group>.m3u8` (the group's first stream with one).
pub fn auth_stream(server: &dyn OutputHost, path: &str) -> Option<Arc<Stream>> {
    let name = path.strip_prefix('/')?;
    if let Some(group) = name
        .strip_prefix("sg/")
        .and_then(|g| g.strip_suffix(".m3u8"))
    {
        return server.streams().into_iter().find(|s| {
            s.config().listener_auth.is_some()
                && s.config().hls.as_ref().and_then(|h| h.group.as_deref()) == Some(group)
        });
    }
    let key = name
        .strip_suffix(".m3u8")
        .or_else(|| name.split_once("/seg/").map(|(k, _)| k))?;
    server
        .stream(key)
        .filter(|s| s.config().listener_auth.is_some())
}

/// The media playlist of a stream. `?offset=N` is a delayed live playlist
/// (its edge N s of audio behind live, advancing in real time, with
/// `EXT-X-START`); `?window=N` lists only the newest N segments; the session
/// (see [`session_for`]) is carried into the segment URIs. `?at=T` answers
/// with a one-variant multivariant playlist naming this playlist at the
/// `offset=` that starts at T now ([`at_as_offset`]).
pub fn media_playlist(
    stream: &Arc<Stream>,
    req: &Request,
    peer: Option<std::net::SocketAddr>,
    secret: Option<&streammachine_config::Secret>,
) -> Response {
    let (start, ts, window) = match playlist_params(req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Some(at) = start.at {
        let group = [Arc::clone(stream)];
        let query = VariantQuery {
            ts,
            window,
            at: Some(at),
            offset: None,
            session: session_for(req, peer),
            signed: signed_expiry(req, secret),
        };
        return playlist_reply(render_variants(&group, &query, ""));
    }
    // The session id travels in the segment URIs, so segment requests can be
    // stitched into a session; so does a signed URL's signature.
    let token = super::signed::carried(req).filter(|_| stream.config().signed_urls);
    let query = match (session_for(req, peer), token) {
        (Some(s), Some(t)) => Some(format!("session={s}&{t}")),
        (Some(s), None) => Some(format!("session={s}")),
        (None, t) => t,
    };
    let (list, seconds) = {
        let b = stream.read_buffer();
        let mut list = hls::segments(b.iter().map(|c| c.hls_view()));
        // The source is gone: its last segment is published, not held back.
        if b.edge_closed(crate::stream::now_micros()) {
            hls::close_last(&mut list);
        }
        (list, b.segment_seconds())
    };
    let mut opts = MediaOptions::new(stream.key(), codec(stream), seconds);
    opts.ts = ts;
    opts.window = window;
    opts.start = start.offset.map(|off| StartAt::BehindLive {
        micros: (off * 1e6) as u64,
    });
    opts.query = query.as_deref();
    playlist_reply(hls::render_media(&list, &opts))
}

/// A (checked) signed request's expiry, with the key to sign variants.
fn signed_expiry(
    req: &Request,
    secret: Option<&streammachine_config::Secret>,
) -> Option<(u64, Vec<u8>)> {
    let expires = req.query_param("expires")?.trim().parse().ok()?;
    Some((expires, secret?.0.as_bytes().to_vec()))
}

/// `?at=T` as the `?offset=` (s, to the millisecond) that starts at T now.
///
/// A playlist URL with `?at=` cannot advance by itself (a player reloads the
/// same URL, and T stays T), and a redirect does not help (ffmpeg reloads the
/// URL it was given): so `?at=` answers with a multivariant playlist, fetched
/// once, whose variant is the delayed live playlist `?offset=`, which every
/// player reloads and which advances in real time.
fn at_as_offset(stream: &Stream, at: i64) -> f64 {
    let micros = stream.read_buffer().behind_live_at_time(at);
    (micros / 1000) as f64 / 1000.0
}

/// The HLS session of a playlist request: the player's own
/// (`X-Playback-Session-Id`, sent by Apple's players) or the one our URIs
/// carry (`?session=`); else one derived from the client's address and
/// User-Agent, so a player that reloads the playlist by its original URL
/// (hls.js, ExoPlayer, VLC, ffmpeg) stays one session across reloads.
/// Two players behind one address with the same User-Agent count as one.
pub fn session_for(req: &Request, peer: Option<std::net::SocketAddr>) -> Option<String> {
    session_id(req).or_else(|| {
        let ip = peer?.ip().to_string();
        let ua = req.header("user-agent").unwrap_or("");
        Some(derived_session(&ip, ua))
    })
}

/// A stable 128-bit id (32 hex digits) for an address and User-Agent: FNV-1a
/// 64 with two offsets, the same in every process (master, slaves, successors).
fn derived_session(ip: &str, ua: &str) -> String {
    let fnv = |offset: u64| {
        let mut h = offset;
        for b in ip.bytes().chain([0]).chain(ua.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

/// The HLS session id a request names: `X-Playback-Session-Id`, else `?session=`.
fn session_id(req: &Request) -> Option<String> {
    req.header("x-playback-session-id")
        .map(str::to_string)
        .or_else(|| req.query_param("session"))
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Finds segment `number` in the buffer by binary search (segment numbers
/// grow with sequence numbers); it must be complete: its first chunk starts
/// it and a later chunk belongs to a later segment.
fn find_segment(b: &RewindBuffer, number: u64) -> Result<Vec<Arc<Chunk>>, HlsError> {
    let oldest = b.first().map_or(0, |c| c.hls_segment);
    let i = b.first_of_segment(number);
    let Some(first) = b.at(i).filter(|c| c.hls_segment == number) else {
        return Err(if number < oldest {
            HlsError::SegmentGone { number, oldest }
        } else {
            HlsError::SegmentNotReady { number }
        });
    };
    if !first.hls_segment_start {
        return Err(HlsError::SegmentGone { number, oldest });
    }
    let run: Vec<Arc<Chunk>> = (i..)
        .map_while(|j| b.at(j))
        .take_while(|c| c.hls_segment == number)
        .map(Arc::clone)
        .collect();
    if i + run.len() >= b.len() && !b.edge_closed(crate::stream::now_micros()) {
        return Err(HlsError::SegmentNotReady { number });
    }
    Ok(run)
}

/// A segment of a stream, or a response saying why not.
pub fn segment(
    server: &dyn OutputHost,
    stream: &Arc<Stream>,
    name: &str,
    req: &Request,
    peer: Option<std::net::SocketAddr>,
) -> Result<SegmentReply, Response> {
    let not_found = |msg: String| Response::text(404, reason(404), msg);
    let ts_number = name
        .strip_suffix(".ts")
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u64>().ok());
    let (number, ext) = match ts_number {
        Some(n) => (n, codec(stream)),
        None => hls::parse_segment_name(name).map_err(|e| not_found(e.to_string()))?,
    };
    if ext != codec(stream) {
        return Err(not_found(format!(
            "stream {:?} has .{} segments",
            stream.key(),
            codec(stream).ext()
        )));
    }
    let run = {
        let b = stream.read_buffer();
        find_segment(&b, number).map_err(|e| not_found(e.to_string()))?
    };
    let (Some(first), title) = (
        run.first(),
        run.first()
            .map(|c| c.title.text().to_string())
            .unwrap_or_default(),
    ) else {
        return Err(not_found(format!("segment {number} is empty")));
    };
    let mut parts = Vec::with_capacity(run.len() + 1);
    let content_type = if ts_number.is_some() {
        let pieces: Vec<hls::ts::Piece<'_>> = run
            .iter()
            .map(|c| hls::ts::Piece {
                audio_start_micros: c.audio_start_micros,
                data: c.data(),
                frames: &c.draft.frames,
                frame_micros: c.frames_micros(1) as f64,
            })
            .collect();
        parts.push(hls::ts::segment(number, codec(stream), &title, &pieces));
        "video/mp2t"
    } else {
        parts.push(hls::segment_head(first.audio_start_micros, &title));
        parts.extend(run.iter().map(|c| c.data().clone()));
        codec(stream).content_type()
    };
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nCache-Control: public, max-age=86400, immutable\r\nAccess-Control-Allow-Origin: {}\r\nAccept-Ranges: none\r\n",
        server.listeners_config().cors_origin,
    );
    let audio_micros: u64 = run.iter().map(|c| c.duration_micros()).sum();
    server
        .metrics()
        .listener_sent_bytes
        .with_label_values(&[stream.key(), "hls"])
        .inc_by(len as u64);
    let behind = stream.audio_end().saturating_sub(first.audio_start_micros) as f64 / 1e6;
    match session_for(req, peer) {
        Some(id) => {
            let client = crate::analytics::Client {
                ip: peer.map(|p| p.ip().to_string()).unwrap_or_default(),
                ua: req.header("user-agent").map(str::to_string),
            };
            server.analytics().hls_segment(
                &id,
                stream.key(),
                client,
                crate::analytics::SegmentServed {
                    bytes: len as u64,
                    audio_micros,
                    behind_live: behind,
                    content_ts: first.ts_micros,
                },
            );
        }
        None => server
            .metrics()
            .listening_seconds
            .with_label_values(&[stream.key(), "hls"])
            .inc_by(audio_micros as f64 / 1e6),
    }
    Ok(SegmentReply { head, parts })
}

/// The nominal bit rate of a stream, for `BANDWIDTH` before it has segments.
fn nominal_bps(stream: &Stream) -> u64 {
    if let Some(key) = stream.format_key() {
        let parts: Vec<&str> = key.split('-').collect();
        if parts.first() == Some(&"mp3") {
            if let Some(k) = parts.get(2).and_then(|b| b.parse::<u64>().ok()) {
                return k * 1000;
            }
        }
    }
    let b = stream.read_buffer();
    if b.duration_micros() > 0 {
        return (b.bytes() as u64 * 8 * 1_000_000 / b.duration_micros()).max(1);
    }
    128_000
}

/// The ADTS profile field from an AAC format key (`aac-44100-2-2`: object type 2 → profile 1).
fn adts_profile(stream: &Stream) -> u8 {
    stream
        .format_key()
        .and_then(|k| k.split('-').nth(2).and_then(|p| p.parse::<u8>().ok()))
        .map_or(1, |object_type| object_type.saturating_sub(1))
}

/// What the variant URIs of a multivariant playlist carry on to the media
/// playlists.
struct VariantQuery {
    ts: bool,
    window: Option<usize>,
    at: Option<i64>,
    offset: Option<f64>,
    session: Option<String>,
    /// A signed request's expiry and the key: each signed variant gets a
    /// signature of its own, valid as long.
    signed: Option<(u64, Vec<u8>)>,
}

/// The multivariant playlist of `streams`, variant URIs `<base><stream>.m3u8`
/// with the container, window, session and start (`?at=` turned into each
/// stream's own `offset=`) in their query.
fn render_variants(streams: &[Arc<Stream>], q: &VariantQuery, base: &str) -> String {
    let mut rows = Vec::new();
    for s in streams {
        let list = {
            let b = s.read_buffer();
            hls::segments(b.iter().map(|c| c.hls_view()))
        };
        let (peak, avg) = hls::bandwidth(&list, nominal_bps(s), q.ts);
        // HE-AAC signals SBR/PS implicitly (ADTS shows the AAC-LC core), so
        // the transcode settings tell what the stream really is.
        let extension = match s.config().transcode.as_ref().and_then(|t| t.profile) {
            Some(AacProfile::He) => hls::AacExtension::He,
            Some(AacProfile::HeV2) => hls::AacExtension::HeV2,
            _ => hls::AacExtension::Plain,
        };
        let codecs = hls::codecs(codec(s), adts_profile(s), extension);
        let mut query = vec![format!("container={}", if q.ts { "ts" } else { "packed" })];
        if let Some(n) = q.window {
            query.push(format!("window={n}"));
        }
        match (q.at, q.offset) {
            (Some(at), _) => query.push(format!("offset={}", at_as_offset(s, at))),
            (None, Some(off)) => query.push(format!("offset={off}")),
            (None, None) => {}
        }
        if let Some(id) = &q.session {
            query.push(format!("session={id}"));
        }
        if let Some((expires, secret)) = q.signed.as_ref().filter(|_| s.config().signed_urls) {
            query.push(super::signed::query(secret, s.key(), *expires));
        }
        rows.push((s.key().to_string(), peak, avg, codecs, query.join("&")));
    }
    let variants: Vec<Variant<'_>> = rows
        .iter()
        .map(|(key, peak, avg, codecs, query)| Variant {
            stream: key,
            bandwidth: *peak,
            average_bandwidth: *avg,
            codecs,
            query: Some(query),
        })
        .collect();
    hls::render_multivariant(&variants, base)
}

/// The multivariant playlist of a stream group; `?container=`, `?window=`,
/// `?offset=` and `?at=` go on to every variant.
pub fn multivariant(
    server: &dyn OutputHost,
    group: &str,
    req: &Request,
    peer: Option<std::net::SocketAddr>,
) -> Response {
    let members: Vec<Arc<Stream>> = server
        .streams()
        .into_iter()
        .filter(|s| s.config().hls.as_ref().and_then(|h| h.group.as_deref()) == Some(group))
        .collect();
    if members.is_empty() {
        return Response::text(404, reason(404), format!("no stream group {group:?}"));
    }
    let (start, ts, window) = match playlist_params(req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let query = VariantQuery {
        ts,
        window,
        at: start.at,
        offset: start.offset,
        session: session_for(req, peer),
        signed: signed_expiry(req, server.url_secret()),
    };
    playlist_reply(render_variants(&members, &query, "../"))
}
