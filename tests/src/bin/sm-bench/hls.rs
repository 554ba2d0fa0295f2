//! HLS under listeners (issue 16): segment throughput per container, the
//! server's CPU for 1000 HLS players polling a live stream of 10 s segments,
//! and how far behind the encoder an HLS player is.

use crate::*;

/// One keep-alive GET: the status and the body (read to its Content-Length).
async fn get(s: &mut TcpStream, uri: &str, buf: &mut [u8]) -> Result<(u16, Vec<u8>), String> {
    s.write_all(format!("GET {uri} HTTP/1.1\r\nHost: b\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut have = Vec::new();
    let (status, head_end, len) = loop {
        let n = s.read(buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed".into());
        }
        have.extend_from_slice(&buf[..n]);
        if let Some(e) = have.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&have[..e]).to_ascii_lowercase();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            break (status, e + 4, len);
        }
    };
    let mut body = have.split_off(head_end);
    while body.len() < len {
        let n = s.read(buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed mid-body".into());
        }
        body.extend_from_slice(&buf[..n]);
    }
    Ok((status, body))
}

/// The segment URIs of a media playlist, absolute paths.
fn uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| format!("/{l}"))
        .collect()
}

/// Segment serving per container over an 8 h buffer: `clients` keep-alive
/// connections fetching segments round-robin for 5 s each.
pub(crate) fn segment_throughput(
    listen: std::net::SocketAddr,
    stream: &str,
) -> Vec<(String, String)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for (name, query) in [
        ("packed audio", "?container=packed"),
        ("MPEG-TS (default)", ""),
    ] {
        let text =
            streammachine_tests::http_get(listen, &format!("/{stream}.m3u8{query}"), &[]).text();
        let list = Arc::new(uris(&text));
        let (reqs, bytes, secs) =
            rt.block_on(segment_load(listen, list, 8, Duration::from_secs(5)));
        rows.push((
            format!("HLS: segment serving, {name}, 8 keep-alive clients on loopback, 5 s"),
            format!(
                "{:.0} requests/s, {:.0} MB/s",
                reqs as f64 / secs,
                bytes as f64 / 1e6 / secs
            ),
        ));
    }
    rows
}

/// A live stream with 10 s segments: server CPU with 1000 HLS players (each
/// reloads the playlist every target duration and fetches the segments it
/// has not had) against the source alone; and the players' distance from
/// the encoder.
pub(crate) fn bench_hls_listeners(players: usize, seconds: u64) -> Vec<(String, String)> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let exe = crate::server_binary();
    let server = ServerProcess::try_start(
        exe.to_str().unwrap(),
        "streams:\n  - key: bench\n    password: bench\n    rewindSeconds: 3600\n    hls: { segmentSeconds: 10 }\n",
        &[],
    )
    .unwrap_or_else(|log| panic!("server did not start:\n{log}"));
    let pid = server.pid();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let listen = server.listen;
    let mut rows = Vec::new();
    rt.block_on(async {
        // Two minutes of audio at once, then real time.
        let src = tokio::spawn(source(server.source, 120));
        tokio::time::sleep(Duration::from_secs(3)).await;

        // The source alone.
        let (c0, t0) = (cpu_seconds(pid), Instant::now());
        tokio::time::sleep(Duration::from_secs(10)).await;
        let idle = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64();

        // Players, their first reloads spread over one target duration.
        let start = Instant::now();
        let run = Duration::from_secs(seconds + 10);
        let tasks: Vec<_> = (0..players)
            .map(|i| {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis((i as u64 * 10_000) / players as u64)).await;
                    let mut s = TcpStream::connect(listen).await.map_err(|e| e.to_string())?;
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut had: Option<String> = None;
                    let (mut segments, mut bytes) = (0u64, 0u64);
                    while start.elapsed() < run {
                        let (status, body) = get(&mut s, "/bench.m3u8", &mut buf).await?;
                        if status != 200 {
                            return Err(format!("playlist: {status}"));
                        }
                        let list = uris(&String::from_utf8_lossy(&body));
                        // A new player starts three segments from the end.
                        let from = match &had {
                            Some(u) => list.iter().position(|x| x == u).map_or(0, |p| p + 1),
                            None => list.len().saturating_sub(3),
                        };
                        for u in &list[from..] {
                            let (status, seg) = get(&mut s, u, &mut buf).await?;
                            if status != 200 {
                                return Err(format!("segment {u}: {status}"));
                            }
                            segments += 1;
                            bytes += seg.len() as u64;
                            had = Some(u.clone());
                        }
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                    Ok::<_, String>((segments, bytes))
                })
            })
            .collect();
        // Steady state: after every player's first round.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let (c1, t1) = (cpu_seconds(pid), Instant::now());
        tokio::time::sleep(Duration::from_secs(seconds.saturating_sub(2).max(5))).await;
        let busy = (cpu_seconds(pid) - c1) / t1.elapsed().as_secs_f64();
        let (mut ok, mut failed, mut segments, mut bytes) = (0, 0, 0u64, 0u64);
        for t in tasks {
            match t.await.unwrap() {
                Ok((n, b)) => {
                    ok += 1;
                    segments += n;
                    bytes += b;
                }
                Err(e) => {
                    failed += 1;
                    if failed == 1 {
                        eprintln!("sm-bench: an HLS player failed: {e}");
                    }
                }
            }
        }
        rows.push((
            format!("HLS: {players} players polling a live 10 s-segment playlist: server CPU, whole process"),
            format!(
                "{:.1} % of a core (source alone {:.1} %); {ok} players ok, {failed} failed, {segments} segments, {:.0} MB",
                busy * 100.0,
                idle * 100.0,
                bytes as f64 / 1e6
            ),
        ));
        rows.push((
            "HLS: server CPU per 1000 HLS players (minus source alone)".to_string(),
            format!(
                "{:.1} % of a core",
                (busy - idle).max(0.0) * 100.0 * 1000.0 / players as f64
            ),
        ));

        // Latency: how long after its last audio arrived a segment is
        // listed, and how far behind the encoder a player starting three
        // segments from the end (as players do) hears.
        let mut s = TcpStream::connect(listen).await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen: Option<String> = None;
        let mut delays = Vec::new();
        let mut behind = Vec::new();
        let end = Instant::now() + Duration::from_secs(35);
        while Instant::now() < end && delays.len() < 3 {
            let (_, body) = get(&mut s, "/bench.m3u8", &mut buf).await.unwrap();
            let text = String::from_utf8_lossy(&body).into_owned();
            // (Not check_media: the pre-fill's burst has compressed dates.)
            let list = streammachine_tests::hls_check::parse_media(&text).unwrap().segments;
            let now = streammachine_tests::now_micros();
            if let Some(last) = list.last() {
                let pdt = last.pdt_micros.unwrap_or(0);
                if seen.as_deref() != Some(last.uri.as_str()) {
                    if seen.is_some() {
                        delays.push((now - pdt - (last.duration * 1e6) as i64) as f64 / 1e6);
                    }
                    seen = Some(last.uri.clone());
                }
                if let Some(third) = list.len().checked_sub(3).map(|k| &list[k]) {
                    behind.push((now - third.pdt_micros.unwrap_or(0)) as f64 / 1e6);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        rows.push((
            "HLS latency: a segment is listed after its last audio arrived (mean of 3, polled every 100 ms)".into(),
            format!("{:.2} s", mean(&delays)),
        ));
        rows.push((
            "HLS latency: encoder to a player starting three 10 s segments from the end (mean over 30 s)".into(),
            format!("{:.1} s", mean(&behind)),
        ));
        src.abort();
    });
    rows
}
