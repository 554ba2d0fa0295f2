//! Big buffers on the real server process (issue 11): the memory a full
//! buffer holds in steady state, while old audio keeps leaving it.

use crate::*;

/// An Icecast source connection on `mount` (password `bench`), accepted.
pub(crate) async fn connect_source(addr: std::net::SocketAddr, mount: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("source:bench");
    s.write_all(
        format!("SOURCE /{mount} ICE/1.0\r\nAuthorization: Basic {auth}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut reply = [0u8; 19];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"HTTP/1.0 200 OK\r\n\r\n", "source refused");
    s
}

/// A source that sends `seconds` of `data` (44.1 kHz MP3, looped) as fast
/// as the server takes it, then leaves. Returns the audio bytes sent.
pub(crate) async fn fast_source(
    addr: std::net::SocketAddr,
    mount: &str,
    data: &[u8],
    seconds: u64,
) -> u64 {
    let frames = frames_of(data, Codec::Mp3);
    let mut s = connect_source(addr, mount).await;
    let frame_us = 1152.0 * 1e6 / 44100.0;
    let total = (seconds as f64 * 1e6 / frame_us) as usize;
    // Whole passes at a time (fewer, larger writes).
    let mut pass = Vec::new();
    for &(o, l, _) in &frames {
        pass.extend_from_slice(&data[o..o + l]);
    }
    let mut sent_frames = 0usize;
    let mut sent_bytes = 0u64;
    while sent_frames < total {
        let n = frames.len().min(total - sent_frames);
        let bytes: usize = frames[..n].iter().map(|f| f.1).sum();
        s.write_all(&pass[..bytes]).await.unwrap();
        sent_frames += n;
        sent_bytes += bytes as u64;
    }
    s.shutdown().await.unwrap();
    sent_bytes
}

/// One steady-state run: a buffer of `hours` fed `fed_hours` of audio.
fn steady_state(hours: u64, fed_hours: u64) -> Vec<(String, String)> {
    let exe = crate::server_binary();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cfg = format!(
        "streams:\n  - key: big\n    password: bench\n    rewindSeconds: {}\n",
        hours * 3600
    );
    let server = ServerProcess::try_start(exe.to_str().unwrap(), &cfg, &[])
        .unwrap_or_else(|log| panic!("server did not start:\n{log}"));
    let pid = server.pid();
    let server_source = server.source;
    let idle = rss(pid);
    let bytes_metric = "streammachine_buffer_bytes{stream=\"big\"}";
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let feeder =
        rt.spawn(async move { fast_source(server_source, "big", &data, fed_hours * 3600).await });
    let started = Instant::now();
    // (rss, raw held) every 250 ms until the source is done and the buffer
    // settled.
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut settled = 0;
    let mut last_raw = 0u64;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let raw = server.metric(bytes_metric).unwrap_or(0.0) as u64;
        samples.push((rss(pid), raw));
        if feeder.is_finished() {
            settled = if raw == last_raw { settled + 1 } else { 0 };
            if settled >= 8 {
                break;
            }
        }
        last_raw = raw;
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "feeding took over 30 min"
        );
    }
    let sent = rt.block_on(feeder).unwrap();
    let took = started.elapsed();
    let &(end_rss, end_raw) = samples.last().unwrap();
    // "On the way": from the moment the buffer first held its length.
    let full = end_raw * 99 / 100;
    let worst = samples
        .iter()
        .skip_while(|(_, raw)| *raw < full)
        .map(|(r, raw)| *r as f64 / *raw as f64)
        .fold(0.0f64, f64::max);
    let worst_growth = samples
        .iter()
        .skip_while(|(_, raw)| *raw < full)
        .map(|(r, raw)| r.saturating_sub(idle) as f64 / *raw as f64)
        .fold(0.0f64, f64::max);
    let label = format!("steady state, {hours} h buffer fed {fed_hours} h");
    vec![
        (
            format!("{label}: audio sent / held at the end"),
            format!(
                "{:.1} MB in {:.1} s / {:.1} MB",
                sent as f64 / 1e6,
                took.as_secs_f64(),
                end_raw as f64 / 1e6
            ),
        ),
        (
            format!("{label}: server RSS idle / at the end"),
            format!(
                "{:.1} MB / {:.1} MB",
                idle as f64 / 1e6,
                end_rss as f64 / 1e6
            ),
        ),
        (
            format!("{label}: RSS / raw audio held, at the end (target <= 1.05)"),
            format!("{:.3}", end_rss as f64 / end_raw as f64),
        ),
        (
            format!("{label}: RSS / raw audio held, worst once full (target <= 1.08)"),
            format!("{worst:.3}"),
        ),
        (
            format!("{label}: (RSS - idle RSS) / raw, at the end / worst once full"),
            format!(
                "{:.3} / {worst_growth:.3}",
                end_rss.saturating_sub(idle) as f64 / end_raw as f64
            ),
        ),
    ]
}

/// The steady-state figures: an 8 h buffer fed 24 h, a 1 h buffer fed 12 h.
pub(crate) fn bench_big() -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for (hours, fed) in [(1, 12), (8, 24)] {
        eprintln!("sm-bench: a {hours} h buffer fed {fed} h of audio at full speed…");
        rows.extend(steady_state(hours, fed));
    }
    rows
}
