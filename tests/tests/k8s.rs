//! End to end on a real Kubernetes cluster (issue: "Kubernetes for real"):
//! the chart installed with helm, the images built from `docker/`, real pods.
//! `tests/k8s/run.sh` brings the cluster up (the kit in `../shared/k8s/`, or
//! any `KUBECONFIG`), builds and loads the images, installs the chart and runs
//! these with `--ignored`, one at a time (they share the cluster and, in
//! Socket mode, the node's host ports). `./test.sh` runs that script.
//!
//! The tests talk to the cluster as a user does: kubectl, helm, and TCP to
//! Service ClusterIPs and the node's address (the kit routes both from the
//! machine's own network namespace).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use streammachine_tests::*;

/// Runs kubectl; `Err` carries its stderr.
fn kubectl(args: &[&str]) -> Result<String, String> {
    run("kubectl", args, None)
}

fn kubectl_ok(args: &[&str]) -> String {
    kubectl(args).unwrap_or_else(|e| panic!("kubectl {}: {e}", args.join(" ")))
}

fn kubectl_stdin(args: &[&str], input: &str) -> String {
    run("kubectl", args, Some(input)).unwrap_or_else(|e| panic!("kubectl {}: {e}", args.join(" ")))
}

fn helm(args: &[&str]) -> String {
    let exe = std::env::var("HELM").unwrap_or_else(|_| "helm".into());
    run(&exe, args, None).unwrap_or_else(|e| panic!("helm {}: {e}", args.join(" ")))
}

fn run(exe: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {exe}: {e}"))?;
    if let Some(i) = input {
        child.stdin.take().unwrap().write_all(i.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&kubectl_ok(&a)).unwrap()
}

/// Polls `check` every 500 ms until it gives a value, or fails after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn condition(obj: &Value, t: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
        .map(|c| c["status"].as_str().unwrap_or("").to_string())
}

fn ready(ns: &str, kind: &str, name: &str) -> bool {
    kubectl(&["get", "-n", ns, kind, name, "-o", "json"])
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .is_some_and(|o| condition(&o, "Ready").as_deref() == Some("True"))
}

/// The pods of `ns` with the given component label: (name, image, ready, deleting).
fn pods(ns: &str, component: &str) -> Vec<(String, String, bool, bool)> {
    let v = json(&[
        "get",
        "pods",
        "-n",
        ns,
        "-l",
        &format!("app.kubernetes.io/component={component}"),
    ]);
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let ready = p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                ready,
                !p["metadata"]["deletionTimestamp"].is_null(),
            )
        })
        .collect()
}

fn cluster_ip(ns: &str, svc: &str) -> String {
    kubectl_ok(&[
        "get",
        "svc",
        "-n",
        ns,
        svc,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
}

fn node_ip() -> String {
    kubectl_ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ])
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

/// The streamer image tags `tests/k8s/run.sh` loaded (the same image twice,
/// so a tag change is a real image change to Kubernetes).
fn image_tags() -> (String, String) {
    (
        std::env::var("STREAMMACHINE_E2E_TAG_V1").unwrap_or_else(|_| "e2e-v1".into()),
        std::env::var("STREAMMACHINE_E2E_TAG_V2").unwrap_or_else(|_| "e2e-v2".into()),
    )
}

/// Listeners on the Socket slave in t2/t3: 20, or `STREAMMACHINE_E2E_LISTENERS`
/// (the issue's upgrade figure is taken with 1000).
fn socket_listeners() -> usize {
    std::env::var("STREAMMACHINE_E2E_LISTENERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
}

/// The helm release every test shares: installed by `tests/k8s/run.sh`.
const RELEASE: &str = "sm";
const RELEASE_NS: &str = "streammachine-system";

fn fresh_namespace(ns: &str) {
    let _ = kubectl(&["delete", "namespace", ns, "--wait=true", "--timeout=120s"]);
    kubectl_ok(&["create", "namespace", ns]);
}

/// Ten minutes of MP3 at 64 kbit/s whose frames never repeat (noise), made
/// once with ffmpeg: a listener's bytes can be found in it exactly.
fn unique_mp3() -> Vec<u8> {
    static MP3: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    MP3.get_or_init(|| {
        require("ffmpeg");
        let path = scratch_dir("k8s-noise").join("noise.mp3");
        let st = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("anoisesrc=d=600:c=pink:r=44100:a=0.3")
            .args(["-ac", "2", "-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success(), "ffmpeg could not make the test audio");
        let data = std::fs::read(&path).unwrap();
        // Drop the ID3/Xing head: start at the first audio frame.
        let frames = frames_of(&data, streamer::format::Codec::Mp3);
        data[frames[1].0..].to_vec()
    })
    .clone()
}

/// An encoder that keeps its mount fed in real time and reconnects when the
/// master goes away (as butt, Liquidsoap and ffmpeg with a restart loop do).
/// Every byte it got the server to take is in `sent`, in order.
struct Encoder {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<u8>>>,
    connections: Arc<Mutex<u32>>,
    thread: Option<JoinHandle<()>>,
}

impl Encoder {
    fn start(master: SocketAddr, mount: &'static str, password: &'static str) -> Encoder {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (st, se, co) = (stop.clone(), sent.clone(), connections.clone());
        let thread = std::thread::spawn(move || {
            let data = unique_mp3();
            let frames = frames_of(&data, streamer::format::Codec::Mp3);
            let mut next = 0usize;
            let start = Instant::now();
            let mut samples = 0u64;
            while !st.load(Ordering::Relaxed) && next < frames.len() {
                // A Service whose pod just went away may point at an address
                // that no longer answers: never wait for the kernel's timeout.
                if TcpStream::connect_timeout(&master, Duration::from_secs(2)).is_err() {
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
                let Ok(mut src) = std::panic::catch_unwind(|| {
                    Source::connect(master, mount, password, SourceMethod::Ice, &[])
                })
                .unwrap_or_else(|_| Err("connect failed".into())) else {
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                };
                *co.lock().unwrap() += 1;
                // A master that went away with its pod may never answer again
                // (its address is gone): notice by a write timeout, or by its
                // FIN, as real encoders do, and reconnect.
                src.sock
                    .set_write_timeout(Some(Duration::from_secs(3)))
                    .unwrap();
                src.sock.set_nonblocking(false).unwrap();
                let mut probe = [0u8; 1];
                while !st.load(Ordering::Relaxed) && next < frames.len() {
                    if next.is_multiple_of(20) {
                        src.sock.set_nonblocking(true).unwrap();
                        let closed = matches!(src.sock.peek(&mut probe), Ok(0));
                        src.sock.set_nonblocking(false).unwrap();
                        if closed {
                            break;
                        }
                    }
                    let (o, l, s) = frames[next];
                    let due = Duration::from_micros(samples * 1_000_000 / 44_100);
                    if let Some(w) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(w);
                    }
                    if src.send(&data[o..o + l]).is_err() {
                        break;
                    }
                    se.lock().unwrap().extend_from_slice(&data[o..o + l]);
                    samples += u64::from(s);
                    next += 1;
                }
            }
        });
        Encoder {
            stop,
            sent,
            connections,
            thread: Some(thread),
        }
    }

    fn sent(&self) -> Vec<u8> {
        self.sent.lock().unwrap().clone()
    }

    fn connections(&self) -> u32 {
        *self.connections.lock().unwrap()
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw listener reading in a thread: every byte, the time of each read,
/// and how it ended.
struct Listener {
    stop: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<u8>>>,
    reads: Arc<Mutex<Vec<Instant>>>,
    end: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn connect(at: SocketAddr, path: &str) -> Listener {
        Self::try_connect(at, path).unwrap_or_else(|st| panic!("listener GET {path}: HTTP {st}"))
    }

    /// Connects; `Err` with the status when the answer is not 200.
    fn try_connect(at: SocketAddr, path: &str) -> Result<Listener, u16> {
        let mut s = TcpStream::connect_timeout(&at, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: e2e\r\n\r\n").as_bytes())
            .unwrap();
        let (status, _, rest) = read_head(&mut s);
        if status != 200 {
            return Err(status);
        }
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let got = Arc::new(Mutex::new(rest));
        let reads = Arc::new(Mutex::new(vec![Instant::now()]));
        let end = Arc::new(Mutex::new(None));
        let (st, g, r, e) = (stop.clone(), got.clone(), reads.clone(), end.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while !st.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => {
                        *e.lock().unwrap() = Some("closed by the server".into());
                        return;
                    }
                    Ok(n) => {
                        g.lock().unwrap().extend_from_slice(&buf[..n]);
                        r.lock().unwrap().push(Instant::now());
                    }
                    // EINTR: a signal (a debugger attaching) is no disconnect.
                    Err(err)
                        if matches!(
                            err.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(err) => {
                        *e.lock().unwrap() = Some(format!("read error: {err}"));
                        return;
                    }
                }
            }
        });
        Ok(Listener {
            stop,
            got,
            reads,
            end,
            thread: Some(thread),
        })
    }

    fn len(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Asks the reader to stop, without waiting (stopping many at once
    /// takes one read timeout, not one each).
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops reading; gives the bytes and the read times.
    fn finish(mut self) -> (Vec<u8>, Vec<Instant>, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let got = std::mem::take(&mut *self.got.lock().unwrap());
        let reads = std::mem::take(&mut *self.reads.lock().unwrap());
        (got, reads, self.end.lock().unwrap().clone())
    }
}

/// Splits `got` into runs that each appear contiguously in `sent`, greedily:
/// one run is a byte-exact stream; each extra run is a place where bytes
/// were lost or repeated.
fn runs_in(got: &[u8], sent: &[u8]) -> Vec<(usize, usize)> {
    const PROBE: usize = 2048;
    let mut runs = Vec::new();
    let mut i = 0;
    while i + PROBE <= got.len() {
        let Some(at) = find(sent, &got[i..i + PROBE]) else {
            panic!(
                "listener bytes {i}..{} are nowhere in what the encoder sent",
                i + PROBE
            );
        };
        let mut n = PROBE;
        while i + n < got.len() && at + n < sent.len() && got[i + n] == sent[at + n] {
            n += 1;
        }
        runs.push((at, n));
        i += n;
    }
    runs
}

/// The longest pause between reads that ended before `t`.
fn longest_gap_before(reads: &[Instant], t: Instant) -> Duration {
    reads
        .windows(2)
        .filter(|w| w[1] <= t)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// The longest pause between reads that overlaps `from..to`.
fn longest_gap(reads: &[Instant], from: Instant, to: Instant) -> Duration {
    reads
        .windows(2)
        .filter(|w| w[1] >= from && w[0] <= to)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// Reads an ICY stream until `title` arrives.
fn wait_icy_title(at: SocketAddr, path: &str, title: &str, timeout: Duration) -> usize {
    let (mut s, metaint, rest) = icy_listener(at, path);
    let wire = read_until(&mut s, rest, timeout, |w| {
        strip_icy(w, metaint)
            .1
            .iter()
            .any(|(_, t)| t.contains(title))
    });
    let (audio, titles) = strip_icy(&wire, metaint);
    assert!(
        titles.iter().any(|(_, t)| t.contains(title)),
        "no ICY title {title:?} within {timeout:?} on {path}: {titles:?}"
    );
    audio.len()
}

fn read_until(
    s: &mut TcpStream,
    mut have: Vec<u8>,
    timeout: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let end = Instant::now() + timeout;
    let mut buf = vec![0u8; 16 * 1024];
    while Instant::now() < end && !done(&have) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => have.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    have
}

/// Sets the title as encoders do (`song` already form-encoded).
fn set_title(master: SocketAddr, mount: &str, password: &str, song: &str) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("source:{password}"));
    let r = http_get(
        master,
        &format!("/admin/metadata?mount=/{mount}&mode=updinfo&song={song}"),
        &[("Authorization", &format!("Basic {auth}"))],
    );
    assert_eq!(r.status, 200, "title update: {}", r.text());
}

/// The admin token of a SourceMount's master (its link Secret).
fn admin_token(ns: &str, mount: &str) -> String {
    use base64::Engine as _;
    let b64 = kubectl_ok(&[
        "get",
        "secret",
        "-n",
        ns,
        &format!("{mount}-link"),
        "-o",
        "jsonpath={.data.admin-token}",
    ]);
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .unwrap(),
    )
    .unwrap()
}

fn pod_uids(ns: &str) -> Vec<(String, i64)> {
    let v = json(&["get", "pods", "-n", ns]);
    let mut out: Vec<(String, i64)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["uid"].as_str().unwrap().to_string(),
                p["status"]["containerStatuses"][0]["restartCount"]
                    .as_i64()
                    .unwrap_or(0),
            )
        })
        .collect();
    out.sort();
    out
}

/// 1–3: the chart's operator serves `manifests/examples/` as documented:
/// pods Ready, SourceMount and Streams Ready with listener URLs; an encoder
/// into the master, ICY titles and HLS on the slave Service; a rewind edit on
/// a Stream reaches the master live, with no pod restarted or replaced.
#[test]
#[ignore = "needs a cluster: tests/k8s/run.sh"]
fn t1_examples_serve_audio_titles_and_hls_and_take_edits_live() {
    let ns = "e2e-examples";
    fresh_namespace(ns);
    unique_mp3(); // made before the clock starts
    let t0 = Instant::now();
    kubectl_ok(&["apply", "-n", ns, "-f", "../manifests/examples/"]);
    wait_for(
        "SourceMount main Ready=True",
        Duration::from_secs(240),
        || ready(ns, "sourcemount", "main").then_some(()),
    );
    let ready_after = t0.elapsed();
    for s in ["main-mp3", "main-aac"] {
        wait_for(
            &format!("Stream {s} Ready=True"),
            Duration::from_secs(60),
            || ready(ns, "stream", s).then_some(()),
        );
    }
    // Ready=True needs one ready slave; every pod follows within seconds.
    let all_ready = wait_for(
        "1 master and 2 slave pods Ready",
        Duration::from_secs(60),
        || {
            let (masters, slaves) = (pods(ns, "master"), pods(ns, "slave"));
            (masters.len() == 1 && slaves.len() == 2 && masters.iter().chain(&slaves).all(|p| p.2))
                .then(|| t0.elapsed())
        },
    );
    let stream = json(&["get", "stream", "-n", ns, "main-mp3"]);
    let urls = stream["status"]["listenerUrls"].to_string();
    assert!(
        urls.contains("main-slave") && urls.contains("/main-mp3"),
        "listener URLs: {urls}"
    );

    // 2: an encoder into the master Service, listeners on the slave Service.
    let master = cluster_ip(ns, "main-master");
    let slave = addr(&cluster_ip(ns, "main-slave"), 8000);
    let enc = Encoder::start(addr(&master, 8001), "main", "CHANGE-ME");
    let first = wait_for(
        "first audio byte on a slave",
        Duration::from_secs(60),
        || {
            let mut s = TcpStream::connect_timeout(&slave, Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET /main-mp3 HTTP/1.0\r\n\r\n").ok()?;
            let (status, _, rest) = read_head(&mut s);
            let body = read_n(&mut s, rest, 4096, Duration::from_secs(3));
            (status == 200 && body.len() >= 4096).then(|| t0.elapsed())
        },
    );
    eprintln!(
        "figure: kubectl apply of the examples to SourceMount Ready: {:.1} s; to every pod Ready: {:.1} s; to the first audio byte on a slave (encoder started then): {:.1} s",
        ready_after.as_secs_f64(),
        all_ready.as_secs_f64(),
        first.as_secs_f64()
    );
    set_title(
        addr(&master, 8001),
        "main",
        "CHANGE-ME",
        "E2E+Artist+-+First+Title",
    );
    let audio = wait_icy_title(
        slave,
        "/main-mp3",
        "E2E Artist - First Title",
        Duration::from_secs(30),
    );
    assert!(audio > 0);
    // The AAC transcode plays too (ADTS sync words).
    let mut s = TcpStream::connect(slave).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /main-aac HTTP/1.0\r\n\r\n").unwrap();
    let (status, _, rest) = read_head(&mut s);
    assert_eq!(status, 200);
    let aac = read_n(&mut s, rest, 16 * 1024, Duration::from_secs(20));
    assert!(
        aac.windows(2)
            .filter(|w| w[0] == 0xFF && w[1] & 0xF6 == 0xF0)
            .count()
            > 10,
        "no ADTS frames from the AAC stream ({} bytes)",
        aac.len()
    );
    // HLS: ffmpeg plays the playlist from the slave.
    let out = Command::new("timeout")
        .args(["60", "ffmpeg", "-v", "error", "-nostdin", "-i"])
        .arg(format!("http://{slave}/main-mp3.m3u8"))
        .args(["-t", "4", "-f", "wav", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg HLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // At least 3 of the 4 s asked (44.1 kHz stereo 16-bit PCM): the live
    // playlist of a stream that just started may hold less.
    assert!(
        out.stdout.len() >= 3 * 44_100 * 4,
        "HLS decoded {} bytes",
        out.stdout.len()
    );

    // The studio input (its password from the Secret) takes over from the
    // encoder on the mount's own path at once, and hands back when it leaves.
    let token = admin_token(ns, "main");
    let admin = addr(&master, 8002);
    let on_air = || -> Option<(i64, usize)> {
        let r = http_get(
            admin,
            "/api/source-mounts/main",
            &[("Authorization", &format!("Bearer {token}"))],
        );
        let v: Value = serde_json::from_slice(&r.body).ok()?;
        let sources = v["sources"].as_array()?;
        let active = sources.iter().find(|s| s["active"] == true)?;
        Some((active["priority"].as_i64()?, sources.len()))
    };
    let studio = Encoder::start(addr(&master, 8001), "studio", "CHANGE-ME-TOO");
    wait_for("the studio on air", Duration::from_secs(30), || {
        (on_air() == Some((10, 2))).then_some(())
    });
    drop(studio);
    wait_for(
        "the automation back on air",
        Duration::from_secs(30),
        || (on_air() == Some((0, 1))).then_some(()),
    );

    // 3: edits reach the pods live.
    let before = pod_uids(ns);
    kubectl_ok(&[
        "patch",
        "stream",
        "-n",
        ns,
        "main-mp3",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"rewindSeconds":7200,"title":"Edited Title"}}"#,
    ]);
    wait_for(
        "the rewind edit on the master",
        Duration::from_secs(90),
        || {
            let r = http_get(
                admin,
                "/api/streams/main-mp3",
                &[("Authorization", &format!("Bearer {token}"))],
            );
            (r.status == 200 && r.text().replace(' ', "").contains("\"rewindSeconds\":7200"))
                .then_some(())
        },
    );
    assert_eq!(pod_uids(ns), before, "an edit restarted or replaced a pod");
    drop(enc);
    let _ = kubectl(&["delete", "namespace", ns, "--wait=false"]);
}

/// A SourceMount `live` (one slave, `handoff` as given, 20 s drain) with
/// its password Secret and one MP3 Stream `live-mp3`.
fn live_mount(handoff: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: live-source}}
stringData: {{password: e2e-secret}}
---
apiVersion: streammachine.io/v1alpha1
kind: SourceMount
metadata: {{name: live}}
spec:
  format: mp3
  password: {{secretKeyRef: {{name: live-source, key: password}}}}
  slaves:
    replicas: 1
    handoff: {handoff}
    drainSeconds: 20
---
apiVersion: streammachine.io/v1alpha1
kind: Stream
metadata: {{name: live-mp3}}
spec:
  sourceMount: live
  rewindSeconds: 3600
  burstSeconds: 2
"#
    )
}

/// The status a direct `GET path` on `at` gets; `None` when nothing answers.
fn status_of(at: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&at, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: e2e\r\n\r\n").as_bytes())
        .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Waits until the slave workload has exactly one pod, a new one (not in
/// `old`), ready, running `image`.
fn wait_slave_replaced(ns: &str, old: &[String], image: &str, timeout: Duration) -> String {
    wait_for("the slave pod to be replaced", timeout, || {
        let p = pods(ns, "slave");
        (p.len() == 1 && !old.contains(&p[0].0) && p[0].2 && !p[0].3 && p[0].1.ends_with(image))
            .then(|| p[0].0.clone())
    })
}

/// SourceMount `live` in `ns` ([`live_mount`]), fed by an encoder, with
/// `n` raw listeners that have played for a few seconds: on the node's host
/// port (`Socket`) or through the slave Service (`Drain`).
struct Rig {
    enc: Encoder,
    listeners: Vec<Listener>,
    /// Where listeners connect.
    at: SocketAddr,
}

fn rig(ns: &str, handoff: &str, n: usize) -> Rig {
    fresh_namespace(ns);
    kubectl_stdin(&["apply", "-n", ns, "-f", "-"], &live_mount(handoff));
    wait_for(
        "SourceMount live Ready=True",
        Duration::from_secs(180),
        || ready(ns, "sourcemount", "live").then_some(()),
    );
    let master = cluster_ip(ns, "live-master");
    let enc = Encoder::start(addr(&master, 8001), "live", "e2e-secret");
    let at = match handoff {
        "Socket" => addr(&node_ip(), 8000),
        _ => addr(&cluster_ip(ns, "live-slave"), 8000),
    };
    wait_for("audio on the slave", Duration::from_secs(60), || {
        let mut s = TcpStream::connect_timeout(&at, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /live-mp3 HTTP/1.0\r\n\r\n").ok()?;
        let (status, _, rest) = read_head(&mut s);
        (status == 200 && read_n(&mut s, rest, 2048, Duration::from_secs(3)).len() >= 2048)
            .then_some(())
    });
    let listeners: Vec<Listener> = (0..n).map(|_| Listener::connect(at, "/live-mp3")).collect();
    std::thread::sleep(Duration::from_secs(3));
    Rig { enc, listeners, at }
}

impl Rig {
    /// Waits until every listener has had another second of audio (8000
    /// bytes at 64 kbit/s).
    fn wait_all_play(&self, what: &str) {
        let lens: Vec<usize> = self.listeners.iter().map(Listener::len).collect();
        wait_for(what, Duration::from_secs(60), || {
            self.listeners
                .iter()
                .zip(&lens)
                .all(|(l, n)| l.len() > n + 8000)
                .then_some(())
        });
    }

    /// Stops the listeners and checks each: never disconnected (unless
    /// `closed_ok`), its bytes at most `max_runs` exact runs of what the
    /// encoder sent, in order. Gives the longest read gap within `window` and
    /// before it.
    fn check(
        self,
        max_runs: u32,
        window: (Instant, Instant),
        closed_ok: bool,
    ) -> (Duration, Duration) {
        self.listeners.iter().for_each(Listener::stop);
        let finished: Vec<_> = self.listeners.into_iter().map(Listener::finish).collect();
        // Taken after the listeners stopped: everything they have was sent before.
        let sent = self.enc.sent();
        let (mut gap, mut calm) = (Duration::ZERO, Duration::ZERO);
        for (i, (got, reads, end)) in finished.into_iter().enumerate() {
            assert!(
                closed_ok || end.is_none(),
                "listener {i} was disconnected: {end:?}"
            );
            let runs = runs_in(&got, &sent);
            assert!(
                !runs.is_empty() && runs.len() as u32 <= max_runs,
                "listener {i}: {} exact runs of the encoder's bytes, at most {max_runs} allowed: {runs:?}",
                runs.len()
            );
            for w in runs.windows(2) {
                assert!(
                    w[1].0 >= w[0].0 + w[0].1,
                    "listener {i}: audio repeated: {runs:?}"
                );
            }
            gap = gap.max(longest_gap(&reads, window.0, window.1));
            calm = calm.max(longest_gap_before(&reads, window.0));
        }
        (gap, calm)
    }
}

/// 4 (slave-only change): `handoff: Socket`. A change of the slaves' settings
/// rolls the host-network DaemonSet: the new pod starts beside the old one,
/// and the old pod's preStop hands it every listener. Each listener keeps one
/// byte-exact stream; nobody is disconnected.
#[test]
#[ignore = "needs a cluster: tests/k8s/run.sh"]
fn t2_socket_slave_rollout_keeps_every_listener_byte_exact() {
    let ns = "e2e-socket";
    let (v1, _) = image_tags();
    let rig = rig(ns, "Socket", socket_listeners());
    let old: Vec<String> = pods(ns, "slave").into_iter().map(|p| p.0).collect();
    let t_a = Instant::now();
    kubectl_ok(&[
        "patch",
        "sourcemount",
        "-n",
        ns,
        "live",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"slaves":{"resources":{"requests":{"cpu":"101m"}}}}}"#,
    ]);
    wait_slave_replaced(ns, &old, &v1, Duration::from_secs(180));
    let a_done = Instant::now();
    rig.wait_all_play("listeners to get audio from the new pod");
    let (gap, calm) = rig.check(1, (t_a, a_done), false);
    eprintln!(
        "figure: Socket slave-only rollout: {:.1} s from the patch to the old pod gone; longest read gap across it {} ms, before it {} ms ({} listeners, 0 disconnected, 0 bytes lost or repeated)",
        (a_done - t_a).as_secs_f64(),
        gap.as_millis(),
        calm.as_millis(),
        socket_listeners()
    );
    let _ = kubectl(&["delete", "namespace", ns, "--wait=true", "--timeout=120s"]);
}

/// 4 (image upgrade): `helm upgrade --set streamerImage.tag=…` rolls the
/// master first (the encoder reconnects, the master takes its buffer back
/// from the slave), then the Socket slave, which hands its listeners over.
/// Nobody is disconnected; each listener's audio is one exact run per
/// encoder connection, in order (the only bytes it may miss are the ones no
/// master took while it restarted).
#[test]
#[ignore = "needs a cluster: tests/k8s/run.sh"]
fn t3_socket_image_upgrade_keeps_every_listener() {
    let ns = "e2e-socket";
    let (v1, v2) = image_tags();
    let rig = rig(ns, "Socket", socket_listeners());
    let old: Vec<String> = pods(ns, "slave").into_iter().map(|p| p.0).collect();
    let t_b = Instant::now();
    let upgrade = |tag: &str| {
        helm(&[
            "upgrade",
            RELEASE,
            "../helm/streammachine",
            "-n",
            RELEASE_NS,
            "--reuse-values",
            "--set",
            &format!("streamerImage.tag={tag}"),
            "--wait",
        ])
    };
    upgrade(&v2);
    wait_for(
        "the master on the new image",
        Duration::from_secs(180),
        || {
            let p = pods(ns, "master");
            (p.len() == 1 && p[0].1.ends_with(&v2) && p[0].2).then_some(())
        },
    );
    wait_slave_replaced(ns, &old, &v2, Duration::from_secs(240));
    let b_done = Instant::now();
    rig.wait_all_play("listeners to get audio after the upgrade");
    let connections = rig.enc.connections();
    let (gap, calm) = rig.check(connections, (t_b, b_done), false);
    eprintln!(
        "figure: Socket image upgrade (helm upgrade, master then slave): {:.1} s to the slave replaced; longest read gap across it {} ms, before it {} ms; encoder connections {connections} ({} listeners, 0 disconnected)",
        (b_done - t_b).as_secs_f64(),
        gap.as_millis(),
        calm.as_millis(),
        socket_listeners()
    );
    // The node's host ports freed, the release back on v1.
    let _ = kubectl(&["delete", "namespace", ns, "--wait=true", "--timeout=120s"]);
    upgrade(&v1);
}

/// The segment numbers of an HLS media playlist (`…/seg/<n>.<ext>` lines).
fn segments(playlist: &str) -> Vec<u64> {
    playlist
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split("/seg/").nth(1)?.split('.').next()?.parse().ok())
        .collect()
}

/// Polls a live HLS playlist (and fetches each new segment) through `at`
/// every second until stopped, like a player; fails on the first request that
/// does not succeed or a playlist that skips past segments it never listed.
struct HlsPlayer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<u64, String>>>,
}

impl HlsPlayer {
    fn start(at: SocketAddr, path: &'static str) -> HlsPlayer {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut last: Option<u64> = None;
            let mut fetched = 0u64;
            while !st.load(Ordering::Relaxed) {
                let r = http_get(at, path, &[]);
                if r.status != 200 {
                    return Err(format!("playlist: HTTP {}", r.status));
                }
                let text = r.text();
                let segs = segments(&text);
                let (Some(&first), Some(&newest)) = (segs.first(), segs.last()) else {
                    return Err(format!("a playlist without segments: {text}"));
                };
                if let Some(l) = last {
                    if first > l + 1 {
                        return Err(format!(
                            "gap: had up to {l}, the next playlist starts at {first}"
                        ));
                    }
                }
                for n in segs.iter().filter(|&&n| last.is_none_or(|l| n > l)) {
                    let uri = text
                        .lines()
                        .find(|l| l.contains(&format!("/seg/{n}.")))
                        .unwrap_or_default();
                    let seg = http_get(at, &format!("/{}", uri.trim_start_matches('/')), &[]);
                    if seg.status != 200 || seg.body.is_empty() {
                        return Err(format!("segment {n}: HTTP {}", seg.status));
                    }
                    fetched += 1;
                }
                last = Some(newest);
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(fetched)
        });
        HlsPlayer {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; gives the number of segments fetched, or the first failure.
    fn finish(mut self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// 5: `handoff: Drain`. A slave-only change rolls the slave Deployment: the
/// new pod becomes Ready, the old one stops taking listeners (the Service
/// sends new ones to the new pod) and keeps serving its connected listeners,
/// byte-exact, until `drainSeconds` (20); an HLS player through the Service
/// moves to the new pod without a failed request or a gap.
#[test]
#[ignore = "needs a cluster: tests/k8s/run.sh"]
fn t4_drain_rollout_serves_the_connected_until_the_deadline_and_moves_hls() {
    let ns = "e2e-drain";
    let (v1, _) = image_tags();
    let rig = rig(ns, "Drain", 3);
    // A live stream lists no segment until its first one is complete (up to a
    // segment's length after the source starts): start the player once it plays.
    wait_for("a first HLS segment", Duration::from_secs(30), || {
        let r = http_get(rig.at, "/live-mp3.m3u8?window=6", &[]);
        (r.status == 200 && r.text().contains("#EXTINF")).then_some(())
    });
    let hls = HlsPlayer::start(rig.at, "/live-mp3.m3u8?window=6");
    let old: Vec<String> = pods(ns, "slave").into_iter().map(|p| p.0).collect();
    let t = Instant::now();
    kubectl_ok(&[
        "patch",
        "sourcemount",
        "-n",
        ns,
        "live",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"slaves":{"resources":{"requests":{"cpu":"101m"}}}}}"#,
    ]);
    let old_ip = kubectl_ok(&[
        "get",
        "pod",
        "-n",
        ns,
        &old[0],
        "-o",
        "jsonpath={.status.podIP}",
    ]);
    let draining = wait_for("the old slave draining", Duration::from_secs(120), || {
        let p = pods(ns, "slave");
        let old_draining = p.iter().any(|p| old.contains(&p.0) && p.3);
        let new_ready = p.iter().any(|p| !old.contains(&p.0) && p.2);
        // Terminating is not yet draining: its preStop hook may not have
        // run. Draining is when the old pod itself turns new listeners away.
        (old_draining && new_ready && status_of(addr(&old_ip, 8000), "/live-mp3") == Some(503))
            .then(Instant::now)
    });
    // New listeners go to the new pod: the Service lists only ready pods,
    // and until it catches up the draining one answers 503 with
    // Retry-After, which a player follows. The connected ones play on.
    let fresh =
        wait_for(
            "a new listener taken",
            Duration::from_secs(30),
            || match Listener::try_connect(rig.at, "/live-mp3") {
                Ok(l) => Some(l),
                Err(503) => {
                    std::thread::sleep(Duration::from_secs(1));
                    None
                }
                Err(st) => panic!("a new listener during the drain: HTTP {st}"),
            },
        );
    rig.wait_all_play("the connected listeners served while the old pod drains");
    wait_for(
        "the drained listeners closed",
        Duration::from_secs(60),
        || {
            rig.listeners
                .iter()
                .all(|l| l.end.lock().unwrap().is_some())
                .then_some(())
        },
    );
    let closed = draining.elapsed();
    assert!(
        closed >= Duration::from_secs(15),
        "drained listeners closed after {closed:?}, before drainSeconds (20)"
    );
    wait_slave_replaced(ns, &old, &v1, Duration::from_secs(120));
    let replaced = t.elapsed();
    let before = fresh.len();
    wait_for(
        "the new listener to play on the new pod",
        Duration::from_secs(30),
        || (fresh.len() > before + 8000).then_some(()),
    );
    let (fresh_got, _, fresh_end) = fresh.finish();
    assert_eq!(
        fresh_end, None,
        "the listener on the new pod was disconnected"
    );
    let segments = hls
        .finish()
        .unwrap_or_else(|e| panic!("HLS through the rollout: {e}"));
    let sent = rig.enc.sent();
    assert_eq!(
        runs_in(&fresh_got, &sent).len(),
        1,
        "the new pod's listener: bytes not exact"
    );
    drop(sent);
    rig.check(1, (draining, draining), true);
    eprintln!(
        "figure: Drain slave-only rollout: {:.1} s from the patch to the old pod gone; connected listeners closed {:.1} s after the drain began (drainSeconds 20); HLS player: {segments} segments, no failed request",
        replaced.as_secs_f64(),
        closed.as_secs_f64()
    );
    let _ = kubectl(&["delete", "namespace", ns, "--wait=false"]);
}

/// 6: the master pod killed (no grace): the slave keeps serving its buffer,
/// the new master takes the audio back from it (the HLS numbering goes on,
/// the oldest segment stays), the encoder reconnects, and the listeners,
/// never disconnected, hear one exact run per encoder connection.
#[test]
#[ignore = "needs a cluster: tests/k8s/run.sh"]
fn t5_a_killed_master_comes_back_with_its_buffer_and_no_listener_notices() {
    let ns = "e2e-master";
    let rig = rig(ns, "Drain", 3);
    let playlist = || {
        let r = http_get(rig.at, "/live-mp3.m3u8", &[]);
        assert_eq!(r.status, 200);
        segments(&r.text())
    };
    let before = wait_for("a segment on the slave", Duration::from_secs(60), || {
        Some(playlist()).filter(|p| !p.is_empty())
    });
    let master = pods(ns, "master").remove(0).0;
    let t = Instant::now();
    kubectl_ok(&[
        "delete",
        "pod",
        "-n",
        ns,
        &master,
        "--grace-period=0",
        "--force",
    ]);
    wait_for("a new master Ready", Duration::from_secs(120), || {
        let p = pods(ns, "master");
        (p.len() == 1 && p[0].0 != master && p[0].2).then_some(())
    });
    wait_for("the encoder to reconnect", Duration::from_secs(60), || {
        (rig.enc.connections() >= 2).then_some(())
    });
    rig.wait_all_play("listeners to hear the new master's audio");
    let back = t.elapsed();
    let after = playlist();
    assert_eq!(
        after.first(),
        before.first(),
        "the slave's buffer was not kept"
    );
    assert!(
        after.last() > before.last(),
        "no new segment after the master came back: {before:?} then {after:?}"
    );
    assert!(
        after.windows(2).all(|w| w[1] > w[0]),
        "segment numbers out of order: {after:?}"
    );
    let connections = rig.enc.connections();
    let (gap, calm) = rig.check(connections, (t, t + back), false);
    eprintln!(
        "figure: master pod killed: {:.1} s until listeners hear new audio (encoder reconnected); longest read gap {} ms (before: {} ms); 0 listeners disconnected",
        back.as_secs_f64(),
        gap.as_millis(),
        calm.as_millis()
    );
    let _ = kubectl(&["delete", "namespace", ns, "--wait=false"]);
}

/// The operator's Lease and service account: the release's full name.
const RELEASE_FULLNAME: &str = "sm-streammachine";

/// The holder of the operator's Lease (`""` when none).
fn lease_holder() -> String {
    kubectl(&[
        "get",
        "lease",
        "-n",
        RELEASE_NS,
        RELEASE_FULLNAME,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .unwrap_or_default()
}

/// 7: two operator replicas; the leader pod is force-deleted (no grace
/// period; the process gets SIGTERM and releases its Lease) right after a
/// SourceMount is applied, in its first reconcile: the standby takes the
/// Lease and finishes the work, once — one of each child, a link Secret that
/// is generated once and then kept, the SourceMount Ready.
#[test]
#[ignore = "needs a cluster: tests/k8s/run.sh"]
fn t6_a_killed_leader_leaves_its_work_to_the_standby_done_once() {
    let ns = "e2e-operator";
    let replicas = |n: &str| {
        helm(&[
            "upgrade",
            RELEASE,
            "../helm/streammachine",
            "-n",
            RELEASE_NS,
            "--reuse-values",
            "--set",
            &format!("replicaCount={n}"),
            "--wait",
        ])
    };
    replicas("2");
    let operators = || {
        let v = json(&["get", "pods", "-n", RELEASE_NS]);
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let leader = wait_for(
        "a leader among two replicas",
        Duration::from_secs(120),
        || {
            let h = lease_holder();
            (operators().len() == 2 && operators().contains(&h)).then_some(h)
        },
    );
    fresh_namespace(ns);
    kubectl_stdin(&["apply", "-n", ns, "-f", "-"], &live_mount("Drain"));
    let t = Instant::now();
    kubectl_ok(&[
        "delete",
        "pod",
        "-n",
        RELEASE_NS,
        &leader,
        "--grace-period=0",
        "--force",
    ]);
    let new_leader = wait_for(
        "the standby to take the Lease",
        Duration::from_secs(90),
        || {
            let h = lease_holder();
            (!h.is_empty() && h != leader).then_some(h)
        },
    );
    let failover = t.elapsed();
    wait_for(
        "SourceMount live Ready=True",
        Duration::from_secs(180),
        || ready(ns, "sourcemount", "live").then_some(()),
    );
    let served = t.elapsed();
    for (kind, want) in [
        ("deployments", 2),
        ("services", 2),
        ("configmaps", 1),
        ("secrets", 1),
        ("poddisruptionbudgets", 1),
    ] {
        let v = json(&[
            "get",
            kind,
            "-n",
            ns,
            "-l",
            "app.kubernetes.io/managed-by=streammachine-operator",
        ]);
        assert_eq!(v["items"].as_array().unwrap().len(), want, "{kind} in {ns}");
    }
    // The link Secret is kept by every later reconcile (a change of the
    // SourceMount makes one).
    let token = admin_token(ns, "live");
    kubectl_ok(&[
        "patch",
        "sourcemount",
        "-n",
        ns,
        "live",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"monitored":true}}"#,
    ]);
    wait_for("the change observed", Duration::from_secs(60), || {
        let o = json(&["get", "sourcemount", "-n", ns, "live"]);
        (o["status"]["observedGeneration"] == o["metadata"]["generation"]).then_some(())
    });
    assert_eq!(
        admin_token(ns, "live"),
        token,
        "the link Secret was regenerated"
    );
    assert_eq!(lease_holder(), new_leader);
    eprintln!(
        "figure: operator leader force-deleted (no grace: SIGTERM, it releases the Lease) with 2 replicas: Lease taken over after {:.1} s; the new SourceMount Ready {:.1} s after the kill",
        failover.as_secs_f64(),
        served.as_secs_f64()
    );
    let _ = kubectl(&["delete", "namespace", ns, "--wait=false"]);
    replicas("1");
}

/// 8: what the chart installs is narrow: the Lease is named after the
/// release (two releases in one namespace never block each other) and held
/// by the operator; its service account may not update or delete any Secret,
/// nor write anything it does not manage; its log is plain text from the
/// first line.
#[test]
#[ignore = "needs a cluster: tests/k8s/run.sh"]
fn t7_the_install_is_narrow() {
    let holder = wait_for("the release's Lease held", Duration::from_secs(60), || {
        let h = lease_holder();
        (!h.is_empty()).then_some(h)
    });
    assert!(holder.starts_with(RELEASE_FULLNAME), "held by {holder}");
    let sa = format!("system:serviceaccount:{RELEASE_NS}:{RELEASE_FULLNAME}");
    let can = |verb: &str, what: &str, ns: &str| -> bool {
        let (resource, sub) = what.split_once('/').unwrap_or((what, ""));
        let mut args = vec!["auth", "can-i", verb, resource, "-n", ns, "--as", &sa];
        let sub = format!("--subresource={sub}");
        if what.contains('/') {
            args.push(&sub);
        }
        // `auth can-i` answers "no" with exit status 1.
        match kubectl(&args) {
            Ok(out) => out.trim() == "yes",
            // "no" is exit status 1 with an empty stderr; anything said there is a failure.
            Err(e) => {
                assert!(
                    e.trim().is_empty() || e.trim() == "no",
                    "kubectl auth can-i {verb} {what}: {e}"
                );
                false
            }
        }
    };
    for (verb, what, want) in [
        ("get", "secrets", true),
        ("create", "secrets", true),
        ("patch", "secrets", true),
        ("update", "secrets", false),
        ("delete", "secrets", false),
        ("deletecollection", "secrets", false),
        ("update", "deployments.apps", false),
        ("create", "pods", false),
        ("delete", "sourcemounts.streammachine.io", false),
        ("patch", "sourcemounts.streammachine.io/status", true),
        ("update", "sourcemounts.streammachine.io/finalizers", true),
        ("patch", "leases.coordination.k8s.io", false),
    ] {
        let ns = "kube-system";
        assert_eq!(can(verb, what, ns), want, "{verb} {what} in {ns}");
    }
    assert!(
        can("patch", "leases.coordination.k8s.io", RELEASE_NS),
        "its own Lease"
    );
    // The operator's log: plain text (no colour codes), a start-up line first.
    let pod = holder;
    let log = kubectl_ok(&["logs", "-n", RELEASE_NS, &pod]);
    assert!(!log.contains('\x1b'), "ANSI codes in the log:\n{log}");
    let first = log.lines().next().unwrap_or_default();
    assert!(
        first.contains("streammachine-operator starting"),
        "first line: {first}"
    );
}
