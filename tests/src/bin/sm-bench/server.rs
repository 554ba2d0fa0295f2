//! The release server under load: time to first byte, a connection storm,
//! CPU and memory per listener, HLS segment load.

use crate::*;

/// Feeds the server a 128 kbit/s MP3 in real time (after a fast pre-fill),
/// forever; the task is aborted at the end.
pub(crate) async fn source(addr: std::net::SocketAddr, prefill_secs: u64) {
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    let mut s = TcpStream::connect(addr).await.unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("source:bench");
    s.write_all(format!("SOURCE /bench ICE/1.0\r\nAuthorization: Basic {auth}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = [0u8; 19];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"HTTP/1.0 200 OK\r\n\r\n", "source refused");
    let frame_us = 1152.0 * 1e6 / 44100.0;
    let prefill = (prefill_secs as f64 * 1e6 / frame_us) as usize;
    let start = Instant::now();
    let mut sent = 0usize;
    loop {
        for &(o, l, _) in &frames {
            if sent >= prefill {
                let due = Duration::from_micros(((sent - prefill) as f64 * frame_us) as u64);
                if let Some(w) = due.checked_sub(start.elapsed()) {
                    tokio::time::sleep(w).await;
                }
            }
            if s.write_all(&data[o..o + l]).await.is_err() {
                return;
            }
            sent += 1;
        }
    }
}

/// One listener: connects, measures the time to its first audio byte, then
/// reads (and drops) until told to stop.
pub(crate) async fn listener(
    addr: std::net::SocketAddr,
    bytes: Arc<AtomicU64>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Duration, String> {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"GET /bench HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = vec![0u8; 8192];
    let mut head = Vec::new();
    let ttfb = loop {
        let n = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before audio".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if head.len() > i + 4 {
                break t.elapsed();
            }
        }
    };
    drop(head);
    let mut stop = stop;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => { bytes.fetch_add(n as u64, Ordering::Relaxed); }
                },
                _ = stop.changed() => return,
            }
        }
    });
    Ok(ttfb)
}

/// `clients` keep-alive connections fetching segments round-robin for `time`.
pub(crate) async fn segment_load(
    addr: std::net::SocketAddr,
    uris: Arc<Vec<String>>,
    clients: usize,
    time: Duration,
) -> (u64, u64, f64) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let uris = Arc::clone(&uris);
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let (mut reqs, mut bytes) = (0u64, 0u64);
                let mut buf = vec![0u8; 256 * 1024];
                let mut i = c * 7;
                while start.elapsed() < time {
                    let uri = &uris[i % uris.len()];
                    i += 13;
                    s.write_all(format!("GET {uri} HTTP/1.1\r\nHost: b\r\n\r\n").as_bytes())
                        .await
                        .unwrap();
                    // Read the head, then Content-Length bytes.
                    let mut have = Vec::new();
                    let (head_end, len) = loop {
                        let n = s.read(&mut buf).await.unwrap();
                        assert!(n > 0);
                        have.extend_from_slice(&buf[..n]);
                        if let Some(e) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&have[..e]).to_ascii_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .unwrap()
                                .trim()
                                .parse()
                                .unwrap();
                            break (e + 4, len);
                        }
                    };
                    let mut got = have.len() - head_end;
                    while got < len {
                        let n = s.read(&mut buf).await.unwrap();
                        assert!(n > 0);
                        got += n;
                    }
                    reqs += 1;
                    bytes += len as u64;
                }
                (reqs, bytes)
            })
        })
        .collect();
    let (mut r, mut b) = (0, 0);
    for t in tasks {
        let (x, y) = t.await.unwrap();
        r += x;
        b += y;
    }
    (r, b, start.elapsed().as_secs_f64())
}

pub(crate) fn bench_server(args: &Args) -> Vec<(String, String)> {
    // Each listener is a socket in this process too.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let exe = crate::server_binary();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for (i, &n) in args.listeners.iter().enumerate() {
        // A fresh server per size, so memory the allocator kept from an
        // earlier run does not flatter the next.
        let server = ServerProcess::try_start(
            exe.to_str().unwrap(),
            "streams:\n  - key: bench\n    password: bench\n    rewindSeconds: 3600\n    burstSeconds: 10\n",
            &[],
        )
        .unwrap_or_else(|log| panic!("server did not start:\n{log}"));
        let pid = server.pid();
        rt.block_on(async {
            let src = tokio::spawn(source(server.source, 15));
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let bytes = Arc::new(AtomicU64::new(0));
            if i == 0 {
                // Time to first byte, one listener at a time, idle server.
                let mut single = Vec::new();
                for _ in 0..21 {
                    let (tx, rx) = tokio::sync::watch::channel(false);
                    single.push(listener(server.listen, Arc::clone(&bytes), rx).await.unwrap());
                    tx.send_replace(true);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                single.sort();
                rows.push(("time to first audio byte, one listener, idle server (median of 21)".into(), ms(percentile(&single, 0.5))));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let t0 = Instant::now();
            let c0 = cpu_seconds(pid);
            tokio::time::sleep(Duration::from_secs(5)).await;
            let idle_cpu = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64();
            if i == 0 {
                rows.push(("server CPU, source only, no listeners".into(), format!("{:.2} % of a core", idle_cpu * 100.0)));
                rows.push(("server RSS, idle with 15+ s of audio".into(), format!("{:.1} MB", rss(pid) as f64 / 1e6)));
            }
            // Steady state: connect n listeners in batches (no storm peak), then measure.
            let rss_before = rss(pid);
            let buf_before = buffer_bytes(&server);
            let mut connected = 0usize;
            for batch in 0..n.div_ceil(250) {
                let k = 250.min(n - batch * 250);
                let tasks: Vec<_> = (0..k).map(|_| tokio::spawn(listener(server.listen, Arc::clone(&bytes), stop_rx.clone()))).collect();
                for t in tasks {
                    if matches!(t.await, Ok(Ok(_))) {
                        connected += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            let b0 = bytes.load(Ordering::Relaxed);
            let c0 = cpu_seconds(pid);
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(args.seconds)).await;
            let secs = t0.elapsed().as_secs_f64();
            let cpu = (cpu_seconds(pid) - c0) / secs;
            let rate = (bytes.load(Ordering::Relaxed) - b0) as f64 / secs / connected.max(1) as f64;
            let per_listener = (rss(pid) as f64 - rss_before as f64 - (buffer_bytes(&server) - buf_before)) / connected.max(1) as f64;
            let per_1000 = (cpu - idle_cpu) * 100.0 * 1000.0 / connected.max(1) as f64;
            rows.push((format!("{n} listeners ({connected} connected): server CPU, whole process"), format!("{:.1} % of a core over {secs:.0} s", cpu * 100.0)));
            rows.push((format!("{n} listeners: server CPU per 1000 listeners (minus source-only)"), format!("{per_1000:.2} % of a core")));
            rows.push((format!("{n} listeners: delivered rate per listener"), format!("{rate:.0} B/s (128 kbit/s = 16000 B/s)")));
            rows.push((format!("{n} listeners: server RSS growth per listener (minus buffer growth)"), format!("{per_listener:.0} B")));
            stop_tx.send_replace(true);
            tokio::time::sleep(Duration::from_secs(3)).await;
            // The storm: every listener at once.
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let rss_before = rss(pid);
            let started = Instant::now();
            let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(listener(server.listen, Arc::clone(&bytes), stop_rx.clone()))).collect();
            let mut ttfb = Vec::with_capacity(n);
            let mut failed = 0;
            for t in tasks {
                match tokio::time::timeout(Duration::from_secs(60), t).await {
                    Ok(Ok(Ok(d))) => ttfb.push(d),
                    _ => failed += 1,
                }
            }
            let storm = started.elapsed();
            ttfb.sort();
            rows.push((format!("storm of {n}: listeners that got audio"), format!("{} of {n} ({failed} failed), all within {}", ttfb.len(), ms(storm))));
            rows.push((format!("storm of {n}: time to first audio byte p50 / p99 / max"), format!("{} / {} / {}", ms(percentile(&ttfb, 0.5)), ms(percentile(&ttfb, 0.99)), ms(percentile(&ttfb, 1.0)))));
            tokio::time::sleep(Duration::from_secs(2)).await;
            rows.push((format!("storm of {n}: RSS growth per listener after the storm (incl. its transient peak)"), format!("{:.0} B", (rss(pid) as f64 - rss_before as f64) / n as f64)));
            stop_tx.send_replace(true);
            src.abort();
        });
    }
    rows
}

pub(crate) fn buffer_bytes(server: &ServerProcess) -> f64 {
    server
        .metric("streammachine_buffer_bytes{stream=\"bench\"}")
        .unwrap_or(0.0)
}
