//! The successor's side: receive the predecessor's sockets and buffers,
//! prepare everything, then take over in one step.

use super::*;

/// What a successor received, before adopting it.
pub(super) struct Received {
    hello: Hello,
    /// Buffers copied (dumps).
    buffers: Vec<(String, Vec<u8>)>,
    /// The predecessor's memory files, and buffers by reference into them.
    imported: crate::buffer::arena::Imported,
    by_reference: Vec<(String, Vec<u8>)>,
    listening: Vec<(String, OwnedFd)>,
    sources: Vec<(SourceMsg, OwnedFd)>,
    listeners: Vec<(ListenerMsg, OwnedFd)>,
}

pub(super) fn receive(sock: &mut UnixStream) -> Result<Received, HandoffError> {
    let (kind, _, payload) = fd::recv(sock, MAX_HELLO)?;
    if kind != b'H' {
        return Err(HandoffError::Protocol("no hello".into()));
    }
    let hello: Hello = serde_json::from_slice(&payload)?;
    tracing::info!(pid = hello.pid, mode = %hello.mode, "a predecessor is handing off");
    let mut r = Received {
        hello,
        buffers: Vec::new(),
        imported: crate::buffer::arena::Imported::new(),
        by_reference: Vec::new(),
        listening: Vec::new(),
        sources: Vec::new(),
        listeners: Vec::new(),
    };
    loop {
        let (kind, mut fds, payload) = fd::recv(sock, MAX_MESSAGE)?;
        match kind {
            b'B' | b'R' => {
                let (key, rest) = buffers::split_key(&payload)?;
                let rest = rest.to_vec();
                if kind == b'B' {
                    r.buffers.push((key, rest));
                } else {
                    r.by_reference.push((key, rest));
                }
            }
            b'M' => buffers::receive_files(&mut r.imported, &payload, fds)?,
            b'L' => {
                let msg: ListeningMsg = serde_json::from_slice(&payload)?;
                if msg.kinds.len() != fds.len() {
                    return Err(HandoffError::Protocol(
                        "listening sockets without descriptors".into(),
                    ));
                }
                r.listening.extend(msg.kinds.into_iter().zip(fds));
            }
            b'S' | b'C' => {
                let fd = fds.pop().ok_or_else(|| {
                    HandoffError::Protocol("a connection without its descriptor".into())
                })?;
                if kind == b'S' {
                    r.sources.push((serde_json::from_slice(&payload)?, fd));
                } else {
                    r.listeners.push((serde_json::from_slice(&payload)?, fd));
                }
            }
            b'E' => return Ok(r),
            k => return Err(HandoffError::Protocol(format!("unknown message {k}"))),
        }
    }
}

pub(super) fn tcp(fd: OwnedFd) -> std::io::Result<tokio::net::TcpStream> {
    let s = std::net::TcpStream::from(fd);
    s.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(s)
}

pub(super) fn output_name(s: &str) -> &'static str {
    match s {
        "icy" => "icy",
        "pump" => "pump",
        _ => "raw",
    }
}

/// What a successor has made ready to run, not yet running: nothing drives a
/// socket until the predecessor confirms it has let go ([`commit`]).
pub(super) struct Prepared {
    /// The predecessor's memory files: adopted at commit.
    imported: crate::buffer::arena::Imported,
    /// Streams holding audio in them: emptied if the handoff does not happen
    /// (the predecessor goes on using and freeing that memory).
    borrowed: Vec<Arc<crate::stream::Stream>>,
    listening: Vec<(String, tokio::net::TcpListener)>,
    sources: Vec<crate::source::icecast::ParkedSource>,
    listeners: Vec<crate::output::listener::ParkedListener>,
    summary: Summary,
}

/// Prepares what a predecessor sent: config, buffers, listening sockets,
/// sources and listeners, without starting anything.
pub(super) fn prepare(
    server: &Arc<dyn HandoffHost>,
    r: Received,
) -> Result<Prepared, HandoffError> {
    let mut summary = Summary::default();
    let mut ready = Prepared {
        imported: crate::buffer::arena::Imported::new(),
        borrowed: Vec::new(),
        listening: Vec::new(),
        sources: Vec::new(),
        listeners: Vec::new(),
        summary: Summary::default(),
    };
    let ours = server.mode().to_string();
    if r.hello.mode != ours {
        return Err(HandoffError::Refused(format!(
            "the predecessor is a {} server, this one is {ours}",
            r.hello.mode
        )));
    }
    if let Some(running) = r.hello.running {
        // Before anything is adopted, so a failure leaves the predecessor serving.
        let applied = server
            .apply(running.source_mounts, running.streams)
            .map_err(|e| HandoffError::Refused(format!("its configuration: {e}")))?;
        tracing::info!(created = ?applied.created, updated = ?applied.updated, removed = ?applied.removed, "handoff: serving the predecessor's streams and mounts");
    }
    for (key, dump) in r.buffers {
        let Some(stream) = server.stream(&key) else {
            tracing::warn!(stream = %key, "handoff: no such stream here; its buffer is skipped");
            continue;
        };
        let limits = crate::persist::Limits {
            max_total_bytes: Some(dump.len() as u64),
            ..Default::default()
        };
        let (header, records) = crate::persist::read_dump(&dump[..], &limits)
            .map_err(|e| HandoffError::Buffer(e.to_string()))?;
        stream.clear_buffer();
        crate::persist::rewind::restore_into(&stream, header, records, true)
            .map_err(|e| HandoffError::Buffer(e.to_string()))?;
        summary.buffers += 1;
    }
    let imported = r.imported;
    // Each stream on its own thread: decoding O(chunks) records and filling a
    // buffer is all a by-reference handoff costs.
    let mut targets = Vec::new();
    for (key, payload) in r.by_reference {
        match server.stream(&key) {
            Some(stream) => targets.push((stream, payload)),
            None => {
                tracing::warn!(stream = %key, "handoff: no such stream here; its buffer is skipped")
            }
        }
    }
    for (stream, _) in &targets {
        stream.clear_buffer();
        ready.borrowed.push(Arc::clone(stream));
    }
    let results = buffers::on_threads(&targets, |(stream, payload)| {
        let (header, records) = buffers::decode(&imported, payload)?;
        let n = crate::persist::rewind::restore_into(stream, header, records, true)
            .map_err(|e| HandoffError::Buffer(e.to_string()))?;
        tracing::info!(stream = %stream.key(), chunks = n, "handoff: buffer taken over in place (its memory passed, not copied)");
        Ok(n)
    });
    for r in results {
        r?;
        summary.buffers += 1;
    }
    ready.imported = imported;
    // The predecessor's buffers are the truth: nothing to wait for.
    server.release_resync_hold("buffers handed over by the predecessor");
    for (kind, fd) in r.listening {
        let l = std::net::TcpListener::from(fd);
        l.set_nonblocking(true)?;
        ready
            .listening
            .push((kind, tokio::net::TcpListener::from_std(l)?));
    }
    for (msg, fd) in r.sources {
        let Some(mount) = server.mount(&msg.mount) else {
            tracing::warn!(mount = %msg.mount, "handoff: no such mount here; the source is closed");
            continue;
        };
        let sock = tcp(fd)?;
        let guard = mount.add_source_ranked(msg.info, false, msg.priority);
        guard
            .entry()
            .bytes
            .store(msg.bytes, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut k) = guard.entry().format_key.lock() {
            k.clone_from(&msg.format_key);
        }
        if msg.active {
            mount.continue_with(guard.id());
        }
        let codec = match mount.format() {
            streammachine_config::AudioFormat::Mp3 => crate::format::Codec::Mp3,
            streammachine_config::AudioFormat::Aac => crate::format::Codec::Aac,
        };
        let run = Box::new(crate::source::icecast::SourceRun {
            framer: crate::format::Framer::resume(codec, msg.framer),
            chunker: crate::buffer::Chunker::resume(msg.chunker),
            format_key: msg.format_key,
        });
        ready.sources.push(crate::source::icecast::ParkedSource {
            sock,
            peer: msg.peer,
            guard,
            run,
        });
        summary.sources += 1;
    }
    for (msg, fd) in r.listeners {
        let Some(stream) = server.stream(&msg.stream) else {
            tracing::warn!(stream = %msg.stream, "handoff: no such stream here; the listener is closed");
            continue;
        };
        let sock = tcp(fd)?;
        let output = output_name(&msg.output);
        let sent = server
            .metrics()
            .listener_sent_bytes
            .with_label_values(&[stream.key(), output]);
        let icy = msg.icy.map(crate::output::icy::IcyWriter::from_state);
        let mut sender = crate::output::live::Sender::new(
            stream,
            Position {
                seq: msg.seq,
                offset: msg.offset,
            },
            msg.end.map(|(seq, offset)| Position { seq, offset }),
            icy,
            msg.lag_allowance,
            sent,
        );
        sender.bytes = msg.bytes;
        sender.audio_micros = msg.audio_micros;
        let session = msg
            .session
            .and_then(|st| server.analytics().resume(&msg.stream, output, st));
        let who = crate::roster::Who {
            id: msg.id,
            ip: msg.peer.ip(),
            user_agent: msg.user_agent,
            output,
            connected_at: msg
                .connected_ms
                .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
        };
        let carried = crate::output::listener::Carried {
            who,
            session,
            auth: msg.auth,
        };
        ready.listeners.push(crate::output::listener::adopted(
            sock, msg.peer, sender, carried,
        ));
        summary.listeners += 1;
    }
    ready.summary = summary;
    Ok(ready)
}

/// Starts everything prepared: from here on this process drives the sockets.
pub(super) fn commit(server: &Arc<dyn HandoffHost>, mut ready: Prepared) -> Summary {
    std::mem::take(&mut ready.imported).adopt();
    ready.borrowed.clear();
    for (kind, l) in std::mem::take(&mut ready.listening) {
        Arc::clone(server).adopt_listening(&kind, l);
    }
    for src in std::mem::take(&mut ready.sources) {
        src.resume(&Arc::clone(server).source_host());
    }
    for l in std::mem::take(&mut ready.listeners) {
        crate::output::listener::resume(&Arc::clone(server).output_host(), l);
    }
    ready.summary
}

impl Drop for Prepared {
    /// Not committed: the predecessor goes on using (and freeing) the memory
    /// the borrowed buffers point into, so they are emptied.
    fn drop(&mut self) {
        for s in &self.borrowed {
            s.clear_buffer();
        }
    }
}

/// Listens on the Unix socket `path`, replacing a stale one a previous process
/// left behind; logs `what` once and gives `None` when it cannot.
/// Only this server's user may connect (mode 0600): whoever connects can
/// take over or hand over every listener.
pub(super) fn bind(path: &Path, what: &str) -> Option<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .and_then(|l| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            Ok(l)
        })
        .map_err(|e| tracing::error!(path = %path.display(), error = %e, "{what}"))
        .ok()?;
    Some(listener)
}

/// The successor's handoff socket, bound before anything is served (so a
/// successor that cannot take over exits with the reason instead of serving
/// beside its predecessor) under a private name, and published at its real
/// path only once the server is ready ([`receive_loop`]).
#[derive(Debug)]
pub struct Offer {
    listener: tokio::net::UnixListener,
    staged: PathBuf,
    path: PathBuf,
}

/// Binds the handoff socket for `path` (staged beside it, mode 0600).
pub fn offer(path: &Path) -> std::io::Result<Offer> {
    use std::os::unix::fs::PermissionsExt;
    let name = path.file_name().map_or_else(
        || std::ffi::OsString::from("handoff"),
        std::ffi::OsStr::to_os_string,
    );
    let mut staged_name = std::ffi::OsString::from(".");
    staged_name.push(&name);
    staged_name.push(format!(".starting-{}", std::process::id()));
    let staged = path.with_file_name(staged_name);
    let _ = std::fs::remove_file(&staged);
    let listener = tokio::net::UnixListener::bind(&staged)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
    Ok(Offer {
        listener,
        staged,
        path: path.to_path_buf(),
    })
}

/// The successor side: once this server can serve, publishes its handoff
/// socket and waits there for predecessors.
pub async fn receive_loop(server: Arc<dyn HandoffHost>, offer: Offer) {
    let Offer {
        listener,
        staged,
        path,
    } = offer;
    // Offer to take over only once this server can serve (a slave: once it
    // has its master's streams); whoever hands off waits for the socket.
    let mut shutdown = server.shutdown_signal();
    while !server.is_ready() {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = shutdown.changed() => return,
        }
    }
    // Published by a rename: whoever hands off connects to a socket that
    // is listening already, and never to a half-made one.
    if let Err(e) = std::fs::rename(&staged, &path) {
        tracing::error!(path = %path.display(), error = %e, "cannot publish the handoff socket; no handoff can reach this server");
        let _ = std::fs::remove_file(&staged);
        return;
    }
    {
        use std::os::unix::fs::MetadataExt;
        let id = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
        server.set_handoff_offer(id);
    }
    tracing::info!(path = %path.display(), "waiting for a predecessor's handoff");
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.changed() => return,
        };
        let Ok((conn, _)) = conn else { continue };
        let Ok(mut std_sock) = conn.into_std() else {
            continue;
        };
        if std_sock.set_nonblocking(false).is_err() {
            continue;
        }
        let started = Instant::now();
        let got = tokio::task::spawn_blocking(move || {
            let _ = std_sock.set_read_timeout(Some(Duration::from_secs(60)));
            let r = receive(&mut std_sock);
            (r, std_sock)
        })
        .await;
        let Ok((received, mut std_sock)) = got else {
            continue;
        };
        let host = Arc::clone(&server);
        let outcome =
            match tokio::task::spawn_blocking(move || received.and_then(|r| prepare(&host, r)))
                .await
            {
                Ok(o) => o,
                Err(e) => Err(HandoffError::Protocol(e.to_string())),
            };
        match outcome {
            Ok(ready) => {
                // Acknowledge, then start only once the predecessor confirms
                // it let go (or is gone): never both driving one socket.
                let decision = tokio::task::spawn_blocking(move || {
                    fd::send(&mut std_sock, b'A', &[], b"ok")?;
                    match fd::recv(&mut std_sock, 4096) {
                        Ok((b'C', _, _)) => Ok(true),
                        Ok((b'X', _, _)) => Ok(false),
                        Ok((k, _, _)) => Err(HandoffError::Protocol(format!(
                            "expected a commit, got message {k}"
                        ))),
                        // Gone after our acknowledgement: it had let go.
                        Err(_) => Ok(true),
                    }
                })
                .await
                .map_err(|e| HandoffError::Protocol(e.to_string()))
                .and_then(|r| r);
                match decision {
                    Ok(true) => {
                        let summary = commit(&server, ready);
                        server.handoff_settled();
                        tracing::info!(%summary, took_ms = started.elapsed().as_millis() as u64, "took over from the predecessor");
                    }
                    Ok(false) | Err(_) => {
                        // Our copies of the descriptors close without a FIN.
                        drop(ready);
                        tracing::error!(
                            "the predecessor did not take the acknowledgement; it keeps serving"
                        );
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "handoff from the predecessor failed; it keeps serving");
                let msg = e.to_string();
                let _ = tokio::task::spawn_blocking(move || {
                    fd::send(&mut std_sock, b'X', &[], msg.as_bytes())
                })
                .await;
            }
        }
    }
}
