//! Master and slaves: a slave's sync over the link, and a handoff of
//! listeners that must not lose a byte.

use crate::*;

pub(crate) fn bench_link() -> Vec<(String, String)> {
    use streamer::stream::Stream;
    use streammachine_config::{AudioFormat, StreamConfig};
    let mut rows = Vec::new();
    let exe = crate::server_binary();
    // A master that starts with 4 h in its buffer (from a dump).
    let dir = streammachine_tests::scratch_dir("bench-link");
    let metrics = streamer::metrics::Metrics::new().unwrap();
    let mut cfg = StreamConfig::new("bench");
    cfg.rewind_seconds = 4 * 3600 + 60;
    let stream = Stream::new(cfg, AudioFormat::Mp3, &metrics);
    stream.restore(hours_of_audio(4), Some("mp3-44100-128-s"));
    let raw = stream.read_buffer().bytes();
    streamer::persist::rewind::save_stream(&stream, &dir).unwrap();
    drop(stream);
    let master = ServerProcess::try_start(
        exe.to_str().unwrap(),
        &format!("mode: master\nlink: {{ secret: bench }}\ndumps: {{ dir: {} }}\nstreams:\n  - key: bench\n    password: bench\n    rewindSeconds: {}\n", dir.display(), 4 * 3600 + 60),
        &[],
    )
    .unwrap_or_else(|log| panic!("master did not start:\n{log}"));
    let slave_cfg = format!(
        "mode: slave\nlink: {{ secret: bench }}\nmaster: {{ url: \"http://{}\" }}\n",
        master.admin
    );
    let bytes = |s: &ServerProcess| {
        s.metric("streammachine_buffer_bytes{stream=\"bench\"}")
            .unwrap_or(0.0) as usize
    };
    let t = Instant::now();
    let slave = ServerProcess::try_start(exe.to_str().unwrap(), &slave_cfg, &[]).unwrap();
    while bytes(&slave) < raw {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "slave sync too slow"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t.elapsed();
    rows.push((
        "link: new slave receives a 4 h 128 kbit/s buffer (incl. process start)".into(),
        format!(
            "{:.2} s ({:.0} MB, {:.0} MB/s)",
            took.as_secs_f64(),
            raw as f64 / 1e6,
            raw as f64 / 1e6 / took.as_secs_f64()
        ),
    ));
    // Steady state: master CPU with 0 and with 8 slaves, a real-time source.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let pid = master.pid();
    let cpu_over = |secs: u64| {
        let c0 = cpu_seconds(pid);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64()
    };
    drop(slave);
    let src = rt.spawn(source(master.source, 0));
    std::thread::sleep(Duration::from_secs(3));
    let base = cpu_over(15);
    let mut slaves = Vec::new();
    for _ in 0..8 {
        slaves.push(ServerProcess::try_start(exe.to_str().unwrap(), &slave_cfg, &[]).unwrap());
    }
    for s in &slaves {
        while bytes(s) < raw {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let with = cpu_over(15);
    rows.push((
        "link: master CPU, real-time source, no slaves".into(),
        format!("{:.2} % of a core", base * 100.0),
    ));
    rows.push((
        "link: master CPU per slave at steady state (8 slaves)".into(),
        format!("{:.3} % of a core", (with - base) * 100.0 / 8.0),
    ));
    src.abort();
    rows
}

/// One listener that checks every byte: after finding where it starts in the
/// (looped) source audio, each read must continue it exactly.
pub(crate) async fn checking_listener(
    addr: std::net::SocketAddr,
    audio: Arc<Vec<u8>>,
    stop: tokio::sync::watch::Receiver<bool>,
    window: Arc<std::sync::Mutex<Option<(Instant, Instant)>>>,
) -> (u64, u64, Duration, Duration, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /bench HTTP/1.1\r\nHost: b\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 32 * 1024];
    let mut pending = Vec::new();
    // Skip the head; locate the first 4 KiB of audio.
    let mut pos: Option<usize> = None;
    let (mut bytes, mut bad) = (0u64, 0u64);
    let mut last = Instant::now();
    // Gaps between reads once audio flows: (from, to).
    let mut gaps: Vec<(Instant, Instant)> = Vec::new();
    let mut stop = stop;
    let mut dropped = false;
    loop {
        let n = tokio::select! {
            r = s.read(&mut buf) => match r { Ok(0) | Err(_) => { dropped = true; break }, Ok(n) => n },
            _ = stop.changed() => break,
        };
        let now = Instant::now();
        if pos.is_some() && now - last > Duration::from_millis(100) {
            gaps.push((last, now));
        }
        last = now;
        match pos {
            None => {
                pending.extend_from_slice(&buf[..n]);
                let Some(h) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                if pending.len() < h + 4 + 4096 {
                    continue;
                }
                let body = &pending[h + 4..];
                let start = audio
                    .windows(4096)
                    .position(|w| w == &body[..4096])
                    .expect("listener bytes not from the source");
                for (i, b) in body.iter().enumerate() {
                    if audio[(start + i) % audio.len()] != *b {
                        bad += 1;
                    }
                }
                bytes += body.len() as u64;
                pos = Some((start + body.len()) % audio.len());
                pending = Vec::new();
            }
            Some(p) => {
                let mut q = p;
                for b in &buf[..n] {
                    if audio[q] != *b {
                        bad += 1;
                    }
                    q = (q + 1) % audio.len();
                }
                bytes += n as u64;
                pos = Some(q);
            }
        }
    }
    // The longest gap overlapping the handoff, and the longest elsewhere
    // (the chunk rhythm: the baseline the handoff is compared with).
    let (a, b) = window.lock().unwrap().unwrap_or((last, last));
    let (mut across, mut elsewhere) = (Duration::ZERO, Duration::ZERO);
    for (from, to) in gaps {
        if to >= a && from <= b {
            across = across.max(to - from);
        } else {
            elsewhere = elsewhere.max(to - from);
        }
    }
    (bytes, bad, across, elsewhere, dropped)
}

pub(crate) fn bench_handoff(n: usize) -> Vec<(String, String)> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let exe = crate::server_binary();
    let dir = streammachine_tests::scratch_dir("bench-handoff");
    let (lp, sp, ap) = (
        streammachine_tests::free_port(),
        streammachine_tests::free_port(),
        streammachine_tests::free_port(),
    );
    let ports = |extra: &[String]| -> Vec<String> {
        let mut v = vec![
            "--listen-port".to_string(),
            lp.to_string(),
            "--source-port".into(),
            sp.to_string(),
            "--admin-port".into(),
            ap.to_string(),
        ];
        v.extend_from_slice(extra);
        v
    };
    let cfg = "streams:\n  - key: bench\n    password: bench\n    rewindSeconds: 600\n    burstSeconds: 2\n";
    let a_args = ports(&[
        "--control-socket".into(),
        dir.join("a.sock").display().to_string(),
    ]);
    let mut old = ServerProcess::try_start(
        exe.to_str().unwrap(),
        cfg,
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let audio = Arc::new(streammachine_tests::audio_of(&data, Codec::Mp3));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    rt.block_on(async {
        let src = tokio::spawn(source(old.source, 3));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let window = Arc::new(std::sync::Mutex::new(None));
        let mut tasks = Vec::new();
        for batch in 0..n.div_ceil(250) {
            for _ in 0..250.min(n - batch * 250) {
                tasks.push(tokio::spawn(checking_listener(old.listen, Arc::clone(&audio), stop_rx.clone(), Arc::clone(&window))));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let b_args = ports(&["--control-socket".into(), dir.join("b.sock").display().to_string(), "--handoff-from".into(), dir.join("h.sock").display().to_string()]);
        let new = ServerProcess::try_start(exe.to_str().unwrap(), cfg, &b_args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert!(new.wait_log("waiting for a predecessor", Duration::from_secs(10)).is_some());
        let t0 = Instant::now();
        let reply = {
            use tokio::io::AsyncBufReadExt;
            let s = tokio::net::UnixStream::connect(dir.join("a.sock")).await.unwrap();
            let (rd, mut wr) = s.into_split();
            wr.write_all(format!("HANDOFF {}\n", dir.join("h.sock").display()).as_bytes()).await.unwrap();
            let mut line = String::new();
            tokio::io::BufReader::new(rd).read_line(&mut line).await.unwrap();
            line
        };
        let took = t0.elapsed();
        *window.lock().unwrap() = Some((t0, Instant::now()));
        let exit = tokio::task::block_in_place(|| old.wait_exit(Duration::from_secs(10)));
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop_tx.send_replace(true);
        let (mut bytes, mut bad, mut max_gap, mut baseline, mut ended, mut dropped) =
            (0u64, 0u64, Duration::ZERO, Duration::ZERO, 0usize, 0usize);
        for t in tasks {
            let (b, x, g, e, d) = t.await.unwrap();
            dropped += usize::from(d);
            bytes += b;
            bad += x;
            max_gap = max_gap.max(g);
            baseline = baseline.max(e);
            ended += 1;
        }
        let took_ms = new.log_lines("took over from the predecessor").first().and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok()).map(|v| v["took_ms"].clone());
        rows.push((format!("handoff, {n} listeners: command to OK (park, send, successor adopts, ack)"), format!("{} ({})", ms(took), reply.trim())));
        rows.push((format!("handoff, {n} listeners: successor's adopt time"), format!("{} ms", took_ms.unwrap_or_default())));
        rows.push((format!("handoff, {n} listeners: longest gap between reads overlapping the handoff / elsewhere in the run (the ~1 s chunk rhythm)"), format!("{} / {} (the handoff adds {})", ms(max_gap), ms(baseline), ms(max_gap.saturating_sub(baseline)))));
        rows.push((format!("handoff, {n} listeners: bytes checked / lost or duplicated"), format!("{:.1} MB / {bad} wrong bytes over {ended} listeners, {dropped} disconnected; old process exit code {exit:?}", bytes as f64 / 1e6)));
        src.abort();
        drop(new);
    });
    rows
}
