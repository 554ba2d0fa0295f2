//! The real server binary as a child process, with its ports, scratch
//! directory and signals.

use crate::*;

/// A running `streammachine` process.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// Listener port.
    pub listen: SocketAddr,
    /// Source port.
    pub source: SocketAddr,
    /// Admin port.
    pub admin: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// Scratch directory of this server.
    pub dir: PathBuf,
}

/// A fresh scratch directory.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sm-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl ServerProcess {
    /// Starts `exe` with `config` (YAML; ports are forced to 0 on 127.0.0.1)
    /// and waits until it listens.
    pub fn start(exe: &str, config: &str) -> ServerProcess {
        Self::try_start(exe, config, &[]).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    /// Like [`start`](Self::start), returning the log on failure.
    pub fn try_start(
        exe: &str,
        config: &str,
        extra_args: &[&str],
    ) -> Result<ServerProcess, String> {
        let dir = scratch_dir("server");
        let cfg = dir.join("config.yaml");
        std::fs::write(&cfg, config).unwrap();
        let mut child = Command::new(exe)
            .arg("--config")
            .arg(&cfg)
            .args(["--bind", "127.0.0.1", "--log-format", "json"])
            // Ports chosen by the OS, unless the caller names one.
            .args(
                ["--listen-port", "--source-port", "--admin-port"]
                    .into_iter()
                    .filter(|flag| !extra_args.contains(flag))
                    .flat_map(|flag| [flag, "0"]),
            )
            .args(extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {exe}: {e}"))?;
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("\"message\":\"listening\"") {
                        let _ = tx.send(line.clone());
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(logs.lock().unwrap().join("\n"));
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        // A master has no listener port, a slave no source port: 0.0.0.0:0 then.
        let addr = |k: &str| {
            v[k].as_str()
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .unwrap_or_else(|| "0.0.0.0:0".parse().unwrap())
        };
        Ok(ServerProcess {
            listen: addr("listeners"),
            source: addr("sources"),
            admin: addr("admin"),
            child,
            logs,
            dir,
        })
    }

    /// Every log line so far (JSON).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(l) = self.log_lines(needle).into_iter().next() {
                return Some(l);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A metric's value from `/metrics` on the admin port; `series` is the
    /// name with labels exactly as exposed, e.g. `streammachine_sources{mount="test"}`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let body = String::from_utf8(http_get(self.admin, "/metrics", &[]).body).unwrap();
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.trim().parse().ok())
    }

    /// An Icecast source on `mount` sends `data` and leaves; returns once the
    /// server has taken all of it (the source is counted out).
    pub fn send_source(&self, mount: &str, password: &str, data: &[u8]) {
        let mut src = Source::connect(self.source, mount, password, SourceMethod::Ice, &[])
            .unwrap_or_else(|e| panic!("source on {mount}: {e}"));
        src.send(data).unwrap();
        drop(src);
        assert!(
            self.wait_metric(
                &format!("streammachine_source_connected{{mount=\"{mount}\"}}"),
                0.0,
                Duration::from_secs(5)
            ),
            "the source on {mount} did not end"
        );
    }

    /// Waits until a metric has `value`.
    pub fn wait_metric(&self, series: &str, value: f64, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.metric(series) == Some(value) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    /// Waits until a metric is at least `value`.
    pub fn wait_metric_at_least(&self, series: &str, value: f64, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.metric(series).is_some_and(|v| v >= value) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.wait_exit(Duration::from_secs(20))
    }

    /// Waits for the process to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                // Let the log reader thread catch up with the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// PID of the process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Is it still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends a signal to a process (`STOP`, `CONT`, `HUP`…).
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}
