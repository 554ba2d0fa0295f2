//! `streammachine run`: the server under a small supervisor (the original's
//! "runner"). On SIGHUP, or when `--trigger-file`'s modification time
//! changes, it starts a new server process from the binary on disk (that is
//! how an upgrade works outside Kubernetes), waits until it listens for a
//! handoff, and tells the old one to hand everything over; the old one exits
//! 0. If the new one fails, the old one keeps serving. SIGTERM and SIGINT go
//! to the server; the supervisor exits with the server's code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

/// Runs the supervisor.
pub fn run(trigger_file: Option<PathBuf>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(supervise(trigger_file))
}

/// The binary as invoked, as a path that is looked up again at every
/// upgrade: symlinks are not resolved (flipping a `current` link to a new
/// release is an upgrade) and a bare name is found on `PATH` (not through
/// `/proc/self/exe`, which names the old, replaced file). Also the arguments
/// without `run`.
fn command_line() -> (PathBuf, Vec<std::ffi::OsString>) {
    let mut argv = std::env::args_os();
    let argv0 = argv.next().map(PathBuf::from).unwrap_or_default();
    let exe = invoked_path(&argv0, std::env::var_os("PATH").as_deref())
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or(argv0);
    (exe, server_args(argv.collect()))
}

/// The arguments for the server: ours without `run` and its own options.
fn server_args(mut rest: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    if let Some(i) = rest.iter().position(|a| a == "run") {
        rest.remove(i);
        if rest.get(i).is_some_and(|a| a == "--trigger-file") {
            rest.drain(i..(i + 2).min(rest.len()));
        } else if rest
            .get(i)
            .is_some_and(|a| a.to_string_lossy().starts_with("--trigger-file="))
        {
            rest.remove(i);
        }
    }
    rest
}

/// `argv0` made absolute without resolving links, or found on `path`.
fn invoked_path(argv0: &Path, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if argv0.components().count() > 1 {
        return if argv0.is_absolute() {
            Some(argv0.to_path_buf())
        } else {
            std::env::current_dir().ok().map(|d| d.join(argv0))
        };
    }
    std::env::split_paths(path?)
        .map(|dir| dir.join(argv0))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn spawn(
    exe: &Path,
    args: &[std::ffi::OsString],
    control: &Path,
    handoff_from: Option<&Path>,
) -> std::io::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.args(args).arg("--control-socket").arg(control);
    if let Some(h) = handoff_from {
        cmd.arg("--handoff-from").arg(h);
    }
    cmd.kill_on_drop(false).spawn()
}

async fn send_term(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
}

async fn control(path: &Path, line: String) -> std::io::Result<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let s = tokio::net::UnixStream::connect(path).await?;
    let (rd, mut wr) = s.into_split();
    wr.write_all(line.as_bytes()).await?;
    let mut reply = String::new();
    BufReader::new(rd).read_line(&mut reply).await?;
    Ok(reply.trim().to_string())
}

/// The server process being supervised and its control socket.
struct Serving {
    exe: PathBuf,
    args: Vec<std::ffi::OsString>,
    dir: PathBuf,
    generation: u32,
    child: Child,
    control_path: PathBuf,
}

impl Serving {
    /// Starts a new server from the binary on disk and hands off to it; the
    /// old one keeps serving if anything fails.
    async fn hand_off(&mut self, why: &str) {
        self.generation += 1;
        let next_control = self.dir.join(format!("control-{}.sock", self.generation));
        let handoff = self.dir.join(format!("handoff-{}.sock", self.generation));
        tracing::info!(why, "supervisor: starting a new server to hand off to");
        let mut next = match spawn(&self.exe, &self.args, &next_control, Some(&handoff)) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "supervisor: cannot start the new server; the old one keeps serving");
                return;
            }
        };
        // Wait until the new one listens for the handoff (or dies).
        let mut ready = false;
        for _ in 0..300 {
            if handoff.exists() {
                ready = true;
                break;
            }
            if let Ok(Some(st)) = next.try_wait() {
                tracing::error!(status = %st, "supervisor: the new server exited before taking over; the old one keeps serving");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !ready {
            send_term(&next).await;
            return;
        }
        match control(
            &self.control_path,
            format!("HANDOFF {}\n", handoff.display()),
        )
        .await
        {
            Ok(reply) if reply.starts_with("OK") => {
                tracing::info!(reply = %reply, pid = next.id(), exe = %self.exe.display(), "supervisor: handed off to the new server");
                let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
                self.child = next;
                self.control_path = next_control;
            }
            other => {
                tracing::error!(reply = ?other, "supervisor: handoff failed; the old server keeps serving");
                send_term(&next).await;
                let _ = next.wait().await;
            }
        }
    }
}

/// The trigger file's modification time (`None` while it does not exist).
fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

async fn supervise(trigger_file: Option<PathBuf>) -> ExitCode {
    let (exe, args) = command_line();
    let dir = std::env::temp_dir().join(format!("streammachine-run-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::error!(dir = %dir.display(), error = %e, "cannot create the supervisor's directory");
        return ExitCode::from(2);
    }
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return ExitCode::from(2);
    };
    let control_path = dir.join("control-0.sock");
    let child = match spawn(&exe, &args, &control_path, None) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(exe = %exe.display(), error = %e, "cannot start the server");
            return ExitCode::from(2);
        }
    };
    tracing::info!(
        pid = child.id(),
        trigger_file = ?trigger_file,
        "supervisor: server started; SIGHUP (or a touch of the trigger file) hands off to a new process"
    );
    let mut s = Serving {
        exe,
        args,
        dir: dir.clone(),
        generation: 0,
        child,
        control_path,
    };
    let mut seen = trigger_file.as_deref().and_then(modified);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            status = s.child.wait() => {
                let code = status.ok().and_then(|s| s.code()).unwrap_or(1);
                tracing::info!(code, "supervisor: server exited");
                let _ = std::fs::remove_dir_all(&dir);
                return ExitCode::from(u8::try_from(code).unwrap_or(1));
            }
            _ = term.recv() => send_term(&s.child).await,
            _ = int.recv() => send_term(&s.child).await,
            _ = hup.recv() => s.hand_off("SIGHUP").await,
            _ = tick.tick(), if trigger_file.is_some() => {
                let now = trigger_file.as_deref().and_then(modified);
                if now.is_some() && now != seen {
                    seen = now;
                    s.hand_off("the trigger file was touched").await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_invoked_path_is_kept_unresolved_or_found_on_path() {
        let dir = std::env::temp_dir().join(format!("sm-sup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("streammachine");
        std::fs::write(&bin, b"#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = dir.join("current");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&bin, &link).unwrap();
        // A link stays a link: a flipped link is the next upgrade.
        assert_eq!(invoked_path(&link, None), Some(link.clone()));
        // A bare name is looked up on PATH, skipping what is not executable.
        let other = dir.join("empty");
        std::fs::create_dir_all(&other).unwrap();
        let path = std::env::join_paths([other.clone(), dir.clone()]).unwrap();
        assert_eq!(
            invoked_path(Path::new("streammachine"), Some(&path)),
            Some(bin.clone())
        );
        assert_eq!(invoked_path(Path::new("nothing-here"), Some(&path)), None);
        let rel = invoked_path(Path::new("./x/streammachine"), None).unwrap();
        // The server gets neither `run` nor its options.
        let os = |v: &[&str]| -> Vec<std::ffi::OsString> { v.iter().map(Into::into).collect() };
        assert_eq!(
            server_args(os(&[
                "--config",
                "c.yaml",
                "run",
                "--trigger-file",
                "/t",
                "--x"
            ])),
            os(&["--config", "c.yaml", "--x"])
        );
        assert_eq!(
            server_args(os(&["run", "--trigger-file=/t"])),
            Vec::<std::ffi::OsString>::new()
        );
        assert!(rel.is_absolute() && rel.ends_with("x/streammachine"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
