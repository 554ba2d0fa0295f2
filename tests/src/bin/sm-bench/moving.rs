//! Moving big buffers (issue 11): four streams × 8 h at 128/64/48/32 kbit/s
//! (≈ 1.04 GB of audio) filled by fast sources, then an export and an
//! import of the 8 h 128 kbit/s buffer over HTTP and a handoff with 1000
//! listeners connected, the processes' RSS sampled every 10 ms throughout.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use crate::*;

const HOURS: u64 = 8;
const RATES: [u32; 4] = [128, 64, 48, 32];
const TOKEN: &str = "bench";

/// The fixture re-encoded at `kbps` (ffmpeg), as MP3 bytes.
fn clip(kbps: u32, dir: &Path) -> Vec<u8> {
    if kbps == 128 {
        return fixture("mp3/mp3-44100-128-s.mp3");
    }
    let out = dir.join(format!("clip-{kbps}.mp3"));
    let ok = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(streammachine_tests::fixture_path("mp3/mp3-44100-128-s.mp3"))
        .args(["-ar", "44100", "-b:a", &format!("{kbps}k"), "-f", "mp3"])
        .arg(&out)
        .status()
        .expect("ffmpeg runs")
        .success();
    assert!(ok, "ffmpeg could not make the {kbps} kbit/s clip");
    std::fs::read(out).unwrap()
}

/// Sends `data` (MP3) to `mount` in real time, forever (aborted at the end).
async fn paced_source(addr: std::net::SocketAddr, mount: String, data: Vec<u8>) {
    let frames = frames_of(&data, Codec::Mp3);
    let mut s = crate::big::connect_source(addr, &mount).await;
    let frame_us = 1152.0 * 1e6 / 44100.0;
    let start = Instant::now();
    let mut sent = 0usize;
    loop {
        for &(o, l, _) in &frames {
            let due = Duration::from_micros((sent as f64 * frame_us) as u64);
            if let Some(w) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(w).await;
            }
            if s.write_all(&data[o..o + l]).await.is_err() {
                return;
            }
            sent += 1;
        }
    }
}

/// The machine's shared memory (`Shmem` in /proc/meminfo: memfd pages).
fn shmem() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("Shmem:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Samples the peak RSS of `pids` (0: the machine's Shmem) every 10 ms
/// until stopped.
struct Peaks {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl Peaks {
    fn watch(pids: Vec<u32>) -> Peaks {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = vec![0u64; pids.len()];
            while !s.load(Ordering::Relaxed) {
                for (p, pid) in peak.iter_mut().zip(&pids) {
                    *p = (*p).max(if *pid == 0 { shmem() } else { rss(*pid) });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        Peaks { stop, thread }
    }

    fn end(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// A raw HTTP/1.1 request on a new connection; returns the status and the
/// body, which goes to `sink`.
async fn request(
    addr: std::net::SocketAddr,
    head: String,
    body: Option<&Path>,
    sink: &mut (dyn std::io::Write + Send),
) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    if let Some(path) = body {
        let mut f = tokio::fs::File::open(path).await.unwrap();
        tokio::io::copy(&mut f, &mut s).await.unwrap();
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let status;
    loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "no answer");
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..i]).to_string();
            status = text[9..12].parse().unwrap();
            let chunked = text
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked");
            let mut rest = head[i + 4..].to_vec();
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                rest.extend_from_slice(&buf[..n]);
                if chunked {
                    // Decode complete chunks as they come, keep the tail.
                    let mut at = 0;
                    while let Some(e) = rest[at..].windows(2).position(|w| w == b"\r\n") {
                        let size = usize::from_str_radix(
                            std::str::from_utf8(&rest[at..at + e]).unwrap().trim(),
                            16,
                        )
                        .unwrap();
                        if rest.len() < at + e + 2 + size + 2 {
                            break;
                        }
                        sink.write_all(&rest[at + e + 2..at + e + 2 + size])
                            .unwrap();
                        at += e + 2 + size + 2;
                        if size == 0 {
                            return status;
                        }
                    }
                    rest.drain(..at);
                } else {
                    sink.write_all(&rest).unwrap();
                    rest.clear();
                }
            }
            if !chunked {
                sink.write_all(&rest).unwrap();
            }
            return status;
        }
    }
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

pub(crate) fn bench_moving() -> Vec<(String, String)> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let exe = crate::server_binary();
    let dir = streammachine_tests::scratch_dir("bench-moving");
    let (lp, sp, ap) = (
        streammachine_tests::free_port(),
        streammachine_tests::free_port(),
        streammachine_tests::free_port(),
    );
    let ports = |extra: &[String]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--listen-port",
            &lp.to_string(),
            "--source-port",
            &sp.to_string(),
            "--admin-port",
            &ap.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend_from_slice(extra);
        v
    };
    let mut cfg = format!("admin: {{ token: {TOKEN} }}\nstreams:\n");
    for r in RATES {
        cfg += &format!(
            "  - key: s{r}\n    password: {TOKEN}\n    rewindSeconds: {}\n",
            HOURS * 3600
        );
    }
    cfg += &format!(
        "  - key: imported\n    password: {TOKEN}\n    rewindSeconds: {}\n",
        HOURS * 3600 + 600
    );
    let a_args = ports(&[
        "--control-socket".into(),
        dir.join("a.sock").display().to_string(),
    ]);
    let mut old = ServerProcess::try_start(
        exe.to_str().unwrap(),
        &cfg,
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap_or_else(|log| panic!("server did not start:\n{log}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    let clips: Vec<(u32, Vec<u8>)> = RATES.iter().map(|&r| (r, clip(r, &dir))).collect();

    // Fill: four fast sources at once.
    let t = Instant::now();
    rt.block_on(async {
        let feeds: Vec<_> = clips
            .iter()
            .map(|(r, data)| {
                let (addr, mount, data) = (old.source, format!("s{r}"), data.clone());
                tokio::spawn(async move {
                    crate::big::fast_source(addr, &mount, &data, HOURS * 3600 + 120).await
                })
            })
            .collect();
        for f in feeds {
            f.await.unwrap();
        }
    });
    let held = |p: &ServerProcess| -> u64 {
        RATES
            .iter()
            .map(|r| {
                p.metric(&format!("streammachine_buffer_bytes{{stream=\"s{r}\"}}"))
                    .unwrap_or(0.0) as u64
            })
            .sum()
    };
    // Settled: every source gone and the buffers no longer change.
    let mut last = 0;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = held(&old);
        if now == last
            && RATES.iter().all(|r| {
                old.metric(&format!("streammachine_source_connected{{mount=\"s{r}\"}}"))
                    == Some(0.0)
            })
        {
            break;
        }
        last = now;
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "filling took over 10 min"
        );
    }
    let raw = held(&old);
    rows.push((
        "moving: 4 streams × 8 h (128/64/48/32 kbit/s) held".into(),
        format!(
            "{} (filled in {:.1} s), server RSS {}",
            mb(raw),
            t.elapsed().as_secs_f64(),
            mb(rss(old.pid()))
        ),
    ));

    // Export of the 8 h 128 kbit/s buffer.
    let dump = dir.join("s128.dump");
    let before = rss(old.pid());
    let peaks = Peaks::watch(vec![old.pid()]);
    let t = Instant::now();
    let status = rt.block_on(async {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&dump).unwrap());
        let head = format!("GET /api/streams/s128/rewind HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n");
        let s = request(old.admin, head, None, &mut file).await;
        std::io::Write::flush(&mut file).unwrap();
        s
    });
    let took = t.elapsed();
    let peak = peaks.end()[0];
    assert_eq!(status, 200, "export refused");
    let size = std::fs::metadata(&dump).unwrap().len();
    rows.push((
        "moving: export of the 8 h stream over HTTP: dump, time".into(),
        format!("{} in {:.2} s", mb(size), took.as_secs_f64()),
    ));
    rows.push((
        "moving: export: server peak RSS growth (target <= 16 MB)".into(),
        mb(peak.saturating_sub(before)),
    ));

    // Import of that dump into the empty stream.
    let before = rss(old.pid());
    let peaks = Peaks::watch(vec![old.pid()]);
    let t = Instant::now();
    let status = rt.block_on(async {
        let head = format!("PUT /api/streams/imported/rewind HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n");
        request(old.admin, head, Some(&dump), &mut std::io::sink()).await
    });
    let took = t.elapsed();
    let peak = peaks.end()[0];
    assert_eq!(status, 204, "import refused");
    let imported = old
        .metric("streammachine_buffer_bytes{stream=\"imported\"}")
        .unwrap_or(0.0) as u64;
    let after = rss(old.pid());
    rows.push((
        "moving: import of that dump over HTTP: audio imported, time".into(),
        format!("{} in {:.2} s", mb(imported), took.as_secs_f64()),
    ));
    rows.push((
        "moving: import: server peak RSS growth beyond the imported audio (target <= 16 MB)".into(),
        format!(
            "{} (RSS {} → peak {} → {} after)",
            mb(peak.saturating_sub(before).saturating_sub(imported)),
            mb(before),
            mb(peak),
            mb(after)
        ),
    ));
    let _ = std::fs::remove_file(&dump);
    // Back to the four streams for the handoff.
    let cleared = streammachine_tests::http_call(
        old.admin,
        "DELETE",
        "/api/streams/imported/rewind",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(cleared.status, 204);

    // Handoff with 1000 listeners on the four streams.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let bytes = Arc::new(AtomicU64::new(0));
    let live = rt.spawn(paced_source(old.source, "s128".into(), clips[0].1.clone()));
    let listeners: Vec<_> = rt.block_on(async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut v = Vec::new();
        for i in 0..1000 {
            let (addr, stop, bytes) = (old.listen, stop_rx.clone(), Arc::clone(&bytes));
            let key = format!("s{}", RATES[i % 4]);
            v.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(format!("GET /{key} HTTP/1.1\r\nHost: b\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                let mut buf = vec![0u8; 16 * 1024];
                let mut stop = stop;
                loop {
                    tokio::select! {
                        r = s.read(&mut buf) => match r {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => { bytes.fetch_add(n as u64, Ordering::Relaxed); }
                        },
                        _ = stop.changed() => return true,
                    }
                }
            }));
            if i % 250 == 249 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        v
    });
    let b_args = ports(&[
        "--control-socket".into(),
        dir.join("b.sock").display().to_string(),
        "--handoff-from".into(),
        dir.join("h.sock").display().to_string(),
    ]);
    let new = ServerProcess::try_start(
        exe.to_str().unwrap(),
        &cfg,
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(new
        .wait_log("waiting for a predecessor", Duration::from_secs(10))
        .is_some());
    let old_before = rss(old.pid());
    let shmem_before = shmem();
    let peaks = Peaks::watch(vec![old.pid(), new.pid(), 0]);
    let t = Instant::now();
    let reply = rt.block_on(async {
        use tokio::io::AsyncBufReadExt;
        let s = tokio::net::UnixStream::connect(dir.join("a.sock"))
            .await
            .unwrap();
        let (rd, mut wr) = s.into_split();
        wr.write_all(format!("HANDOFF {}\n", dir.join("h.sock").display()).as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        tokio::io::BufReader::new(rd)
            .read_line(&mut line)
            .await
            .unwrap();
        line
    });
    let took = t.elapsed();
    let _ = old.wait_exit(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let peak = peaks.end();
    let new_after = rss(new.pid());
    let shmem_after = shmem();
    let took_ms = |p: &ServerProcess, what: &str| -> String {
        p.log_lines(what)
            .first()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v["took_ms"].as_u64().or(v["fields"]["took_ms"].as_u64()))
            .map_or("?".into(), |t| t.to_string())
    };
    let old_took = took_ms(&old, "handed off to the successor");
    let new_took = took_ms(&new, "took over from the predecessor");
    let at_handoff = bytes.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2));
    stop_tx.send_replace(true);
    let kept = rt.block_on(async {
        let mut kept = 0;
        for l in listeners {
            kept += usize::from(l.await.unwrap());
        }
        kept
    });
    live.abort();
    assert!(reply.starts_with("OK"), "handoff failed: {reply}");
    assert!(
        bytes.load(Ordering::Relaxed) > at_handoff,
        "no audio after the handoff"
    );
    rows.push((
        "moving: handoff of 4 × 8 h with 1000 listeners: command to OK (target <= 1 s; <= 100 ms if memory passes)".into(),
        format!(
            "{:.0} ms ({old_took} ms in the old process, {new_took} ms in the successor), {kept} of 1000 listeners kept",
            took.as_secs_f64() * 1e3
        ),
    ));
    rows.push((
        "moving: handoff: the machine's shared memory (Shmem, where the buffers live) before / peak / after".into(),
        format!("{} / {} / {}", mb(shmem_before), mb(peak[2]), mb(shmem_after)),
    ));
    rows.push((
        "moving: handoff: old process peak RSS / RSS before (target <= 1.10)".into(),
        format!(
            "{:.3} ({} → {})",
            peak[0] as f64 / old_before as f64,
            mb(old_before),
            mb(peak[0])
        ),
    ));
    rows.push((
        "moving: handoff: successor peak RSS / old RSS before (target <= 1.10)".into(),
        format!(
            "{:.3} (peak {}, {} after; passed pages count in a process's RSS only once it touches them: see Shmem)",
            peak[1] as f64 / old_before as f64,
            mb(peak[1]),
            mb(new_after)
        ),
    ));
    drop(new);
    rows
}
