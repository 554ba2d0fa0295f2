//! The operator at rest (issue 5): the release `streammachine-operator`
//! against a minimal stand-in for the Kubernetes API (every list empty, every
//! watch held open and quiet), so its memory and CPU with nothing to do can
//! be measured without a cluster.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{cpu_seconds, rss};

/// Serves one API client connection: lists are empty, watches stay open.
async fn serve(mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
            if buf.len() > 64 * 1024 {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let path = target.split('?').next().unwrap_or("/");
        if target.contains("watch=true") || target.contains("watch=1") {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await;
            // Quiet until the client leaves.
            let _ = s.read(&mut tmp).await;
            return;
        }
        let kind = path.rsplit('/').next().unwrap_or("items");
        let body = format!(
            "{{\"kind\":\"{kind}List\",\"apiVersion\":\"v1\",\"metadata\":{{\"resourceVersion\":\"1\"}},\"items\":[]}}"
        );
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

pub fn bench() -> Vec<(String, String)> {
    let exe = std::env::current_exe()
        .unwrap()
        .with_file_name("streammachine-operator");
    assert!(
        exe.exists(),
        "{} not found: ./bench.sh builds it",
        exe.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let api = listener.local_addr().unwrap();
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = std::sync::Arc::clone(&requests);
    rt.spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(serve(s));
        }
    });
    let dir = std::env::temp_dir().join(format!("sm-bench-operator-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{ server: \"http://{api}\" }}\nusers:\n- name: u\n  user: {{ token: bench }}\ncontexts:\n- name: x\n  context: {{ cluster: c, user: u, namespace: radio }}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = std::process::Command::new(&exe)
        .args(["--http-address", &http.to_string()])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Settle: its watches are up (one connection per watched kind, and the lists).
    let start = Instant::now();
    while requests.load(std::sync::atomic::Ordering::Relaxed) < 8
        && start.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let c0 = cpu_seconds(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(20));
    let cpu = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64();
    let memory = rss(pid);
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(alive, "the operator exited during the measurement");
    vec![
        (
            "operator at rest (empty cluster, all watches open): RSS".into(),
            format!("{:.1} MB", memory as f64 / 1e6),
        ),
        (
            "operator at rest: CPU".into(),
            format!("{:.3} % of a core over 20 s", cpu * 100.0),
        ),
        (
            "operator at rest: API connections opened".into(),
            format!("{}", requests.load(std::sync::atomic::Ordering::Relaxed)),
        ),
    ]
}
