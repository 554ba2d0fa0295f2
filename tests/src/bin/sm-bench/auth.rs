//! Listener authentication's cost (issue 12): server CPU per 1000 connected
//! listeners with and without a `listenerAuth` webhook, and connects/s
//! through it, against the tests' real HTTP server on loopback (which
//! answers at once, so the figures are the server's side).

use crate::*;
use streammachine_tests::webhook::{Reply, Webhook};

/// Connects, sends the request, and keeps reading until `stop`: `Ok` once
/// the answer was 200 and audio came.
async fn listen(
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> Result<(), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // user:pass = bench:bench
    s.write_all(
        b"GET /bench HTTP/1.1\r\nHost: bench\r\nAuthorization: Basic YmVuY2g6YmVuY2g=\r\n\r\n",
    )
    .await
    .map_err(|e| format!("write: {e}"))?;
    let mut buf = vec![0u8; 8192];
    let mut head = Vec::new();
    loop {
        let n = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before audio".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if !head.starts_with(b"HTTP/1.1 200") {
                return Err(String::from_utf8_lossy(&head[..i]).into_owned());
            }
            if head.len() > i + 4 {
                break;
            }
        }
    }
    let Some(mut stop) = stop else {
        return Ok(());
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = s.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return },
                _ = stop.changed() => return,
            }
        }
    });
    Ok(())
}

pub(crate) fn bench_auth(seconds: u64) -> Vec<(String, String)> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let hook = Webhook::start(|_| Reply {
        headers: vec![("icecast-auth-user".into(), "1".into())],
        ..Reply::default()
    });
    let exe = crate::server_binary();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = "streams:\n  - key: bench\n    password: bench\n    rewindSeconds: 600\n    burstSeconds: 2\n";
    let configs = [
        ("no auth", stream.to_string()),
        (
            "URL auth",
            format!(
                "{stream}    listenerAuth: {{ listenerAdd: \"http://{0}/add\", listenerRemove: \"http://{0}/remove\" }}\n",
                hook.addr
            ),
        ),
    ];
    let mut rows = Vec::new();
    let mut per_1000 = Vec::new();
    let mut rates = Vec::new();
    for (label, config) in &configs {
        let server = ServerProcess::try_start(exe.to_str().unwrap(), config, &[])
            .unwrap_or_else(|log| panic!("server did not start:\n{log}"));
        let pid = server.pid();
        rt.block_on(async {
            let src = tokio::spawn(crate::server::source(server.source, 5));
            tokio::time::sleep(Duration::from_secs(2)).await;
            let c0 = cpu_seconds(pid);
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(5)).await;
            let idle = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64();
            // 1000 listeners, connected in batches, then steady state.
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let mut connected = 0;
            for _ in 0..4 {
                let tasks: Vec<_> = (0..250)
                    .map(|_| tokio::spawn(listen(server.listen, Some(stop_rx.clone()))))
                    .collect();
                for t in tasks {
                    if matches!(t.await, Ok(Ok(()))) {
                        connected += 1;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let c0 = cpu_seconds(pid);
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let cpu = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64();
            let p = (cpu - idle) * 100.0 * 1000.0 / f64::from(connected.max(1));
            per_1000.push(p);
            rows.push((
                format!("{label}: server CPU per 1000 connected listeners (minus source-only)"),
                format!("{p:.2} % of a core ({connected} of 1000 connected)"),
            ));
            stop_tx.send_replace(true);
            tokio::time::sleep(Duration::from_secs(2)).await;
            // Connects/s: 32 clients connecting, getting audio and leaving in
            // a loop for 5 s (each connect is a listener_add, each leave a
            // listener_remove).
            let done = Arc::new(AtomicU64::new(0));
            let failed = Arc::new(AtomicU64::new(0));
            let until = Instant::now() + Duration::from_secs(5);
            let c0 = cpu_seconds(pid);
            let t0 = Instant::now();
            let workers: Vec<_> = (0..32)
                .map(|_| {
                    let (done, failed, addr) =
                        (Arc::clone(&done), Arc::clone(&failed), server.listen);
                    tokio::spawn(async move {
                        while Instant::now() < until {
                            match listen(addr, None).await {
                                Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                                Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                    })
                })
                .collect();
            for w in workers {
                let _ = w.await;
            }
            let secs = t0.elapsed().as_secs_f64();
            let cpu = (cpu_seconds(pid) - c0) / secs;
            let rate = done.load(Ordering::Relaxed) as f64 / secs;
            rates.push(rate);
            rows.push((
                format!(
                    "{label}: connects/s, 32 clients connecting in a loop (connect, audio, leave)"
                ),
                format!(
                    "{rate:.0}/s ({} failed), server CPU {:.0} % of a core",
                    failed.load(Ordering::Relaxed),
                    cpu * 100.0
                ),
            ));
            src.abort();
        });
    }
    let adds = hook.actions("listener_add").len();
    let removes = hook.actions("listener_remove").len();
    rows.push((
        "URL auth: webhook calls received (listener_add / listener_remove)".into(),
        format!("{adds} / {removes}"),
    ));
    if let ([a, b], [ra, rb]) = (&per_1000[..], &rates[..]) {
        rows.push((
            "URL auth: added CPU per 1000 connected listeners; connects/s ratio auth / none".into(),
            format!("{:+.2} % of a core; {:.2}", b - a, rb / ra.max(1e-9)),
        ));
    }
    rows
}
