//! Case bodies added with PROTOCOL.md: the frame layout a writer puts on
//! the wire, the writer's queue limit and reconnects, a frame cut by a
//! broken connection, addressing (section 6) and the socket file's life.
//! The catalog entries are in [`crate::cases`].

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::peer::{Impl, PATIENCE, Profile, ReaderOpts, ReaderPeer, WriterOpts, WriterPeer};
use crate::support::{
    RawExpect, accept_within, check, describe, number, numbered, one, payload, raw, uvarint,
};

/// A fresh directory in the working directory (so relative names can be
/// used), removed when dropped.
fn cwd_dir() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix(".conf-tmp-")
        .tempdir_in(".")
        .map_err(|e| e.to_string())
}

/// The directory's name relative to the working directory.
fn relative(dir: &tempfile::TempDir) -> Result<PathBuf, String> {
    dir.path()
        .file_name()
        .map(PathBuf::from)
        .ok_or_else(|| "no directory name".to_owned())
}

/// An abstract socket name (`@...`) unique to this process and call.
fn abstract_name(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    PathBuf::from(format!(
        "@udsipc-conf-{tag}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Whether `/proc/net/unix` lists a listening socket bound to `name`
/// (abstract names are shown with their `@`).
fn abstract_bound(name: &Path) -> bool {
    let name = name.to_string_lossy();
    std::fs::read_to_string("/proc/net/unix").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().nth(7) == Some(name.as_ref()))
    })
}

/// Sends `msgs`, waits for them, stops both; returns what was delivered.
fn deliver(w: Impl, r: Impl, name: &Path, msgs: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
    let reader = ReaderPeer::start(r, name, &ReaderOpts::default())?;
    let mut writer = WriterPeer::start(w, name, &WriterOpts::default())?;
    for m in msgs {
        writer.send(m)?;
    }
    reader.events.wait_messages(msgs.len())?;
    writer.stop()?;
    let events = reader.events.clone();
    reader.stop()?;
    Ok(events.messages())
}

/// 2.1: one frame after another, nothing else.
pub(crate) fn frame_layout(r: Impl) -> Result<String, String> {
    raw(
        r,
        RawExpect {
            opts: ReaderOpts::default(),
            chunks: one(b"\x05hello\x03abc"),
            close_after: false,
            delivered: &[b"hello", b"abc"],
            errors: &[],
            closed_by_reader: false,
        },
    )
}

/// 2.2.2 (and 2.3.2 on the wire): the exact bytes a writer sends.
pub(crate) fn writer_bytes(w: Impl) -> Result<String, String> {
    let (_dir, path) = crate::peer::socket_path()?;
    let listener = UnixListener::bind(&path).map_err(|e| format!("bind: {e}"))?;
    let lens = [1usize, 127, 128, 0, 16383, 16384, 1 << 21];
    let msgs: Vec<Vec<u8>> = lens.iter().map(|&l| payload(l, l as u8)).collect();
    let mut writer = WriterPeer::start(w, &path, &WriterOpts::default())?;
    for m in &msgs {
        writer.send(m)?;
    }
    let mut conn = accept_within(&listener, &format!("the {} writer", w.name()))?;
    let mut expected = Vec::new();
    for m in msgs.iter().filter(|m| !m.is_empty()) {
        expected.extend(uvarint(m.len() as u64));
        expected.extend_from_slice(m);
    }
    conn.set_read_timeout(Some(PATIENCE))
        .map_err(|e| e.to_string())?;
    let mut got = vec![0u8; expected.len()];
    conn.read_exact(&mut got)
        .map_err(|e| format!("reading {} bytes: {e}", expected.len()))?;
    let wc = writer.stop()?;
    // Nothing more: the stop closed the connection after the last frame.
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    let first_diff = got.iter().zip(&expected).position(|(a, b)| a != b);
    check(first_diff.is_none() && rest.is_empty(), || {
        format!(
            "bytes differ from the minimal frames at offset {first_diff:?}; {} extra bytes",
            rest.len()
        )
    })?;
    check(wc.sent == 6, || format!("{wc:?}"))?;
    Ok(format!(
        "{} bytes, exactly the minimal frames of lengths {lens:?} without the empty one; {wc:?}",
        got.len()
    ))
}

/// 5.1: a full queue refuses, counts the drop, keeps what it holds.
pub(crate) fn buffer_full(w: Impl, r: Impl) -> Result<String, String> {
    let (_dir, path) = crate::peer::socket_path()?;
    let opts = WriterOpts {
        max_buffered_writes: Some(3),
        ..WriterOpts::default()
    };
    let mut writer = WriterPeer::start(w, &path, &opts)?;
    let mut answers = Vec::new();
    for i in 0..5 {
        answers.push(writer.try_send(&numbered(i, 8))?);
    }
    let accepted = answers.iter().filter(|a| a.is_ok()).count();
    let reader = ReaderPeer::start(r, &path, &ReaderOpts::default())?;
    writer.wait_sent(3)?;
    reader.events.wait_messages(3)?;
    let wc = writer.stop()?;
    let events = reader.events.clone();
    reader.stop()?;
    let got = events.messages();
    check(accepted == 3, || format!("answers {answers:?}"))?;
    check(
        got == (0..3).map(|i| numbered(i, 8)).collect::<Vec<_>>(),
        || format!("delivered {}", describe(&got)),
    )?;
    check(wc.dropped == 2 && wc.sent == 3, || format!("{wc:?}"))?;
    Ok(format!(
        "3 accepted, 2 refused ({:?}); the 3 delivered; {wc:?}",
        answers.last()
    ))
}

/// 5.2: a writer started before its reader connects once the reader is up.
pub(crate) fn reconnect_until_reader(w: Impl, r: Impl) -> Result<String, String> {
    let (_dir, path) = crate::peer::socket_path()?;
    let mut writer = WriterPeer::start(w, &path, &WriterOpts::default())?;
    let msgs: Vec<Vec<u8>> = (0..3).map(|i| numbered(i, 12)).collect();
    for m in &msgs {
        writer.send(m)?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let reader = ReaderPeer::start(r, &path, &ReaderOpts::default())?;
    reader.events.wait_messages(3)?;
    let wc = writer.stop()?;
    let events = reader.events.clone();
    let rc = reader.stop()?;
    let got = events.messages();
    check(got == msgs, || format!("delivered {}", describe(&got)))?;
    Ok(format!(
        "connected after the reader appeared; 3 delivered in order; {rc:?}; {wc:?}"
    ))
}

/// Writer -> proxy that cuts the first connection inside frame 14 ->
/// reader; 30 messages, the cut, 10 more. Returns the numbers delivered, in
/// order, and a summary.
fn cut_run(w: Impl, r: Impl) -> Result<(Vec<usize>, String), String> {
    use udsipc_testkit::proxy::{CutMode, FaultProxy, Verdict, fault_fn};
    let (dir, path) = crate::peer::socket_path()?;
    let front = dir.path().join("front.sock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let reader = ReaderPeer::start(r, &path, &ReaderOpts::default())?;
    // Cut the first connection 1500 bytes in: inside frame 14 of 101-byte
    // frames. Later connections pass.
    const CUT: u64 = 1500;
    let mut first = None;
    let cut = fault_fn("cut-first-connection", move |chunk| {
        let conn = *first.get_or_insert(chunk.conn());
        let end = chunk.offset() + chunk.data().len() as u64;
        if chunk.conn() != conn || end < CUT || chunk.offset() >= CUT {
            return Verdict::Pass;
        }
        Verdict::Cut {
            at: usize::try_from(CUT - chunk.offset()).unwrap_or(usize::MAX),
            mode: CutMode::Both,
        }
    });
    let proxy = rt
        .block_on(FaultProxy::builder(&front, &path).fault(cut).start())
        .map_err(|e| format!("proxy: {e}"))?;
    let mut writer = WriterPeer::start(w, &front, &WriterOpts::default())?;
    let msgs: Vec<Vec<u8>> = (0..40).map(|i| numbered(i, 100)).collect();
    for m in &msgs[..30] {
        writer.send(m)?;
    }
    let deadline = Instant::now() + PATIENCE;
    while !proxy
        .events()
        .iter()
        .any(|e| e.fault == "cut-first-connection")
    {
        if Instant::now() > deadline {
            return Err("the proxy never cut the connection".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for m in &msgs[30..] {
        writer.send(m)?;
    }
    reader.events.wait("the last message", |ev| {
        ev.iter()
            .any(|e| matches!(e, crate::peer::Event::Message(m) if number(m) == 39))
    })?;
    let wc = writer.stop()?;
    rt.block_on(proxy.stop());
    let events = reader.events.clone();
    let rc = reader.stop()?;
    let got = events.messages();
    for m in &got {
        check(
            m.len() == 100 && number(m) < 40 && *m == msgs[number(m)],
            || format!("a changed or partial message of {} bytes", m.len()),
        )?;
    }
    let nums: Vec<usize> = got.iter().map(|m| number(m)).collect();
    let summary = format!(
        "delivered {nums:?}; errors {:?}; {rc:?}; {wc:?}",
        events.errors()
    );
    Ok((nums, summary))
}

/// 5.4: a connection cut in the middle of a frame; nothing doubled, nothing
/// half delivered, and what is sent after the cut arrives.
pub(crate) fn cut_frame(w: Impl, r: Impl) -> Result<String, String> {
    let (nums, summary) = cut_run(w, r)?;
    let mut seen = [0u32; 40];
    for &n in &nums {
        seen[n] += 1;
    }
    check(seen.iter().all(|&n| n <= 1), || {
        format!("a message was delivered twice: {summary}")
    })?;
    check(seen[..14].iter().all(|&n| n == 1), || {
        format!("a message before the cut is missing: {summary}")
    })?;
    check(seen[30..].iter().all(|&n| n == 1), || {
        format!("a message sent after the cut is missing: {summary}")
    })?;
    let lost = seen.iter().filter(|&&n| n == 0).count();
    Ok(format!(
        "each delivered once and intact, {lost} lost with the cut connection \
         (order across the two connections is rule 4.8's); {summary}"
    ))
}

/// 6.1: `@name` is an abstract socket for every implementation.
pub(crate) fn abstract_pair(w: Impl, r: Impl) -> Result<String, String> {
    let name = abstract_name("pair");
    let reader = ReaderPeer::start(r, &name, &ReaderOpts::default())?;
    let bound = abstract_bound(&name);
    let file = Path::new(&name).exists();
    let mut writer = WriterPeer::start(w, &name, &WriterOpts::default())?;
    let msgs: Vec<Vec<u8>> = (0..3).map(|i| numbered(i, 20)).collect();
    for m in &msgs {
        writer.send(m)?;
    }
    let waited = reader.events.wait_messages(3);
    let wc = writer.stop()?;
    let events = reader.events.clone();
    let rc = reader.stop()?;
    let _ = std::fs::remove_file(&name);
    check(bound, || {
        format!(
            "{} reader: {} is not an abstract socket in /proc/net/unix (file created: {file})",
            r.name(),
            name.display()
        )
    })?;
    check(!file, || {
        format!(
            "{} reader created a file called {}",
            r.name(),
            name.display()
        )
    })?;
    waited?;
    let got = events.messages();
    check(got == msgs, || format!("delivered {}", describe(&got)))?;
    Ok(format!(
        "abstract {} reached: 3 delivered, no file; {rc:?}; {wc:?}",
        name.display()
    ))
}

/// 6.3: a relative name is a path from the working directory.
pub(crate) fn relative_path(w: Impl, r: Impl) -> Result<String, String> {
    let dir = cwd_dir()?;
    let name = relative(&dir)?.join("rel.sock");
    let msgs = vec![b"relative".to_vec()];
    let got = deliver(w, r, &name, &msgs)?;
    check(got == msgs, || format!("delivered {}", describe(&got)))?;
    Ok(format!("{} reached by its relative name", name.display()))
}

/// 6.4: 107 bytes bind, 108 are refused.
pub(crate) fn name_length_limit(r: Impl) -> Result<String, String> {
    let dir = cwd_dir()?;
    let base = relative(&dir)?;
    let limit = udsipc::max_socket_path_len();
    let name_of = |len: usize| {
        let fill = len - base.as_os_str().len() - 1;
        base.join("n".repeat(fill))
    };
    let over = ReaderPeer::start(r, &name_of(limit + 1), &ReaderOpts::default());
    if let Ok(reader) = over {
        let _ = reader.stop();
        return Err(format!("a {}-byte name was accepted", limit + 1));
    }
    let name = name_of(limit);
    let reader = ReaderPeer::start(r, &name, &ReaderOpts::default())?;
    let mut conn = UnixStream::connect(&name).map_err(|e| format!("connect: {e}"))?;
    conn.write_all(&[2, b'o', b'k'])
        .map_err(|e| e.to_string())?;
    reader.events.wait_messages(1)?;
    drop(conn);
    reader.stop()?;
    Ok(format!(
        "{limit}-byte name served, {}-byte name refused",
        limit + 1
    ))
}

/// 6.5: a reader on `@name` leaves a file called `@name` alone.
pub(crate) fn abstract_leaves_files(r: Impl) -> Result<String, String> {
    use std::os::linux::net::SocketAddrExt;
    // A file named like the abstract name, in the working directory every
    // peer shares with this process (where a relative path would be).
    let name = abstract_name("file");
    std::fs::write(&name, b"keep").map_err(|e| e.to_string())?;
    let outcome = (|| {
        let reader = ReaderPeer::start(r, &name, &ReaderOpts::default())?;
        let bytes = name.as_os_str().as_encoded_bytes();
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..])
            .map_err(|e| e.to_string())?;
        let mut conn = UnixStream::connect_addr(&addr).map_err(|e| format!("connect: {e}"))?;
        conn.write_all(&[1, b'x']).map_err(|e| e.to_string())?;
        reader.events.wait_messages(1)?;
        drop(conn);
        reader.stop().map(drop)
    })();
    let kept = std::fs::read(&name).ok();
    let _ = std::fs::remove_file(&name);
    outcome?;
    match r.profile() {
        Profile::Spec => {
            check(kept.as_deref() == Some(b"keep".as_slice()), || {
                format!("{} reader removed or changed the file @name", r.name())
            })?;
            Ok(format!("{} reader left the file alone", r.name()))
        }
        Profile::GoReference => {
            check(kept.is_none(), || {
                "the Go reader left the file (its CleanupSocket removes it)".into()
            })?;
            Ok(
                "Go reader removed the file called @name in its working directory \
                (by design of Go: CleanupSocket runs on the abstract name)"
                    .into(),
            )
        }
    }
}

/// 7.1: missing parent directories are created with mode 0750.
pub(crate) fn parent_directory(r: Impl) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let (dir, _) = crate::peer::socket_path()?;
    let parent = dir.path().join("a/b");
    let path = parent.join("s.sock");
    let reader = ReaderPeer::start(r, &path, &ReaderOpts::default())?;
    let mode = std::fs::metadata(&parent)
        .map(|m| m.permissions().mode() & 0o777)
        .map_err(|e| format!("{}: {e}", parent.display()))?;
    reader.stop()?;
    // 0750 less the umask (0022 here, so 0750).
    check(mode == 0o750, || format!("directory mode {mode:o}"))?;
    Ok(format!("created {} with mode {mode:o}", parent.display()))
}

/// 7.3: stop removes the socket file the reader created.
pub(crate) fn stop_removes_file(r: Impl) -> Result<String, String> {
    let (_dir, path) = crate::peer::socket_path()?;
    let reader = ReaderPeer::start(r, &path, &ReaderOpts::default())?;
    let existed = path.exists();
    reader.stop()?;
    check(existed && !path.exists(), || {
        format!(
            "existed while running: {existed}; still there: {}",
            path.exists()
        )
    })?;
    Ok("the socket file existed while running and is gone after stop".into())
}

/// Appendix B: every vector of `vectors.json` on its own connection, then
/// the end of the stream; the reader must deliver its messages and end as
/// it says.
pub(crate) fn golden_vectors(r: Impl) -> Result<String, String> {
    let text = std::fs::read_to_string(crate::crate_dir().join("vectors.json"))
        .map_err(|e| format!("vectors.json: {e}"))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let default = doc["default_max_message_size"].as_u64().unwrap_or(10 << 20);
    let vectors = doc["vectors"].as_array().cloned().unwrap_or_default();
    let mut maxes: Vec<u64> = vectors
        .iter()
        .map(|v| v["max_message_size"].as_u64().unwrap_or(default))
        .collect();
    maxes.sort_unstable();
    maxes.dedup();
    let mut checked = 0;
    for max in maxes {
        let (_dir, path) = crate::peer::socket_path()?;
        let opts = ReaderOpts {
            max_message_size: Some(max),
            ..ReaderOpts::default()
        };
        let reader = ReaderPeer::start(r, &path, &opts)?;
        let mut want_messages = Vec::new();
        let mut want_errors = Vec::new();
        for v in vectors
            .iter()
            .filter(|v| v["max_message_size"].as_u64().unwrap_or(default) == max)
        {
            let name = v["name"].as_str().unwrap_or("?");
            let input = crate::peer::from_hex(v["input"].as_str().unwrap_or(""));
            want_messages.extend(
                v["messages"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| crate::peer::from_hex(m.as_str().unwrap_or(""))),
            );
            if v["outcome"] == "error" {
                want_errors.push(v["context"].as_str().unwrap_or("").to_owned());
            }
            let mut conn = UnixStream::connect(&path).map_err(|e| format!("connect: {e}"))?;
            conn.write_all(&input)
                .map_err(|e| format!("{name}: write: {e}"))?;
            let _ = conn.shutdown(std::net::Shutdown::Write);
            // The reader closes once it met the end or an error; then its
            // reports for this vector are complete (waited for below).
            conn.set_read_timeout(Some(PATIENCE))
                .map_err(|e| e.to_string())?;
            let mut sink = Vec::new();
            let _ = conn.read_to_end(&mut sink);
            let (m, e) = (want_messages.len(), want_errors.len());
            reader.events.wait(&format!("vector {name}"), |ev| {
                let got_m = ev
                    .iter()
                    .filter(|x| matches!(x, crate::peer::Event::Message(_)))
                    .count();
                got_m >= m && ev.len() - got_m >= e
            })?;
            let (got_m, got_e) = (reader.events.messages(), reader.events.errors());
            check(got_m == want_messages && got_e == want_errors, || {
                format!(
                    "{name}: delivered {} errors {:?}, expected {} errors {:?}",
                    describe(&got_m),
                    got_e,
                    describe(&want_messages),
                    want_errors
                )
            })?;
            checked += 1;
        }
        let rc = reader.stop()?;
        check(rc.errors == want_errors.len() as u64, || {
            format!("max {max}: {rc:?}, expected {} errors", want_errors.len())
        })?;
    }
    Ok(format!(
        "all {checked} vectors of vectors.json: messages and outcome as golden"
    ))
}

/// 5.5: a 4 MiB message to a reader that keeps reading slowly (32 KiB
/// every 10 ms, about 1.3 s in all) with the default 1 s write timeout:
/// the transfer never stalls, it only takes longer than the timeout.
pub(crate) fn write_timeout_is_a_stall_limit(w: Impl) -> Result<String, String> {
    let (_dir, path) = crate::peer::socket_path()?;
    let listener = UnixListener::bind(&path).map_err(|e| format!("bind: {e}"))?;
    let msg = payload(4 << 20, 5);
    let mut frame = uvarint(msg.len() as u64);
    frame.extend_from_slice(&msg);
    let mut writer = WriterPeer::start(w, &path, &WriterOpts::default())?;
    writer.send(&msg)?;
    let mut conn = accept_within(&listener, &format!("the {} writer", w.name()))?;
    conn.set_read_timeout(Some(PATIENCE))
        .map_err(|e| e.to_string())?;
    let mut got = Vec::with_capacity(frame.len());
    let mut buf = vec![0u8; 32 << 10];
    let started = Instant::now();
    while got.len() < frame.len() {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed();
    let whole = got == frame;
    // Whatever the outcome, let the writer finish: close our side and
    // refuse what follows.
    drop(conn);
    drop(listener);
    let wc = writer.stop()?;
    match w.profile() {
        Profile::Spec => {
            check(whole, || {
                format!(
                    "{} writer cut a moving transfer after {} of {} bytes ({took:?}); {wc:?}",
                    w.name(),
                    got.len(),
                    frame.len()
                )
            })?;
            Ok(format!(
                "{} writer: the whole 4 MiB frame on one connection in {took:?} (slower than the \
                 1 s write timeout, never stalled that long); {wc:?}",
                w.name()
            ))
        }
        Profile::GoReference => {
            check(!whole, || {
                format!(
                    "the Go writer sent the whole frame in {took:?}: the reader was not slow enough"
                )
            })?;
            Ok(format!(
                "Go writer: its 1 s deadline covers the whole message, so it cut the moving \
                 transfer after {} of {} bytes ({took:?}) and retries it (by design of Go); {wc:?}",
                got.len(),
                frame.len()
            ))
        }
    }
}

/// 4.7: a reader admitting only another user refuses our connection before
/// reading it; admitting us, it serves it.
pub(crate) fn peer_credentials(r: Impl) -> Result<String, String> {
    let me = nix::unistd::getuid().as_raw();
    let (_dir, path) = crate::peer::socket_path()?;
    let other = ReaderOpts {
        allow_uid: Some(me.wrapping_add(1)),
        ..ReaderOpts::default()
    };
    let reader = match ReaderPeer::start(r, &path, &other) {
        Err(e) if r.is_go_reference() && e.starts_with(crate::peer::UNSUPPORTED) => {
            return Ok(format!(
                "Go reference: no peer-credential option, go-peer answers 127 (by design of Go): {e}"
            ));
        }
        started => started?,
    };
    let mut conn = UnixStream::connect(&path).map_err(|e| format!("connect: {e}"))?;
    let _ = conn.write_all(&[1, b'x']);
    conn.set_read_timeout(Some(PATIENCE))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1];
    let closed = matches!(conn.read(&mut buf), Ok(0) | Err(_));
    reader.events.wait_errors(1)?;
    let events = reader.events.clone();
    reader.stop()?;
    let (got, errs) = (events.messages(), events.errors());
    check(closed && got.is_empty(), || {
        format!("closed: {closed}; delivered {}", describe(&got))
    })?;
    check(errs == ["connection rejected"], || {
        format!("errors {errs:?}")
    })?;
    let mine = ReaderOpts {
        allow_uid: Some(me),
        ..ReaderOpts::default()
    };
    let (_dir2, path2) = crate::peer::socket_path()?;
    let reader = ReaderPeer::start(r, &path2, &mine)?;
    let mut conn = UnixStream::connect(&path2).map_err(|e| format!("connect: {e}"))?;
    conn.write_all(&[1, b'y']).map_err(|e| e.to_string())?;
    reader.events.wait_messages(1)?;
    drop(conn);
    reader.stop()?;
    Ok(format!(
        "{}: uid {me} refused by a reader admitting uid {} (closed unread, \"connection rejected\"), \
         served by one admitting uid {me}",
        r.name(),
        me.wrapping_add(1)
    ))
}

/// Reads one datagram (with the suite's patience).
fn datagram(sock: &std::os::unix::net::UnixDatagram) -> Result<String, String> {
    sock.set_read_timeout(Some(PATIENCE))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .map_err(|e| format!("notify socket: {e}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// 8.2: `READY=1` once listening, `STOPPING=1` at stop, on `NOTIFY_SOCKET`.
pub(crate) fn notify_ready_and_stopping(r: Impl) -> Result<String, String> {
    let (dir, path) = crate::peer::socket_path()?;
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path)
        .map_err(|e| format!("bind notify socket: {e}"))?;
    let env = [("NOTIFY_SOCKET", notify_path.to_str().unwrap_or(""))];
    let reader = ReaderPeer::start_env(r, &path, &ReaderOpts::default(), &env)?;
    let ready = datagram(&notify)?;
    reader.stop()?;
    let stopping = datagram(&notify)?;
    let left = path.exists();
    check(ready.contains("READY=1"), || {
        format!("first notification {ready:?}")
    })?;
    check(stopping.contains("STOPPING=1"), || {
        format!("notification at stop {stopping:?}")
    })?;
    match r.profile() {
        Profile::Spec => {
            check(!left, || {
                format!("{} reader left its own socket file (rule 7.3)", r.name())
            })?;
            Ok(format!(
                "{}: {ready:?} then {stopping:?}; its socket file removed at stop",
                r.name()
            ))
        }
        Profile::GoReference => Ok(format!(
            "Go: {ready:?} then {stopping:?}; socket file left after stop: {left} (with \
             NOTIFY_SOCKET set Go takes its systemd path at Stop and leaves the file to \
             systemd, although it created it)"
        )),
    }
}

/// 8.3: under systemd with `RUNTIME_DIRECTORY`, the socket is
/// `$RUNTIME_DIRECTORY/<last component of the name>`.
pub(crate) fn runtime_directory(r: Impl) -> Result<String, String> {
    let (dir, _) = crate::peer::socket_path()?;
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).map_err(|e| e.to_string())?;
    let name = Path::new("/nonexistent-udsipc-conf/app.sock");
    let env = [("RUNTIME_DIRECTORY", runtime.to_str().unwrap_or(""))];
    let reader = ReaderPeer::start_env(r, name, &ReaderOpts::default(), &env)?;
    let actual = runtime.join("app.sock");
    let mut conn =
        UnixStream::connect(&actual).map_err(|e| format!("connect {}: {e}", actual.display()))?;
    conn.write_all(&[3, b'r', b'u', b'n'])
        .map_err(|e| e.to_string())?;
    reader.events.wait_messages(1)?;
    drop(conn);
    reader.stop()?;
    let left = actual.exists();
    match r.profile() {
        Profile::Spec => {
            check(!left, || {
                format!("{} reader left its own socket file (rule 7.3)", r.name())
            })?;
            Ok(format!(
                "{}: bound {} instead of {}; removed it at stop",
                r.name(),
                actual.display(),
                name.display()
            ))
        }
        Profile::GoReference => Ok(format!(
            "Go: bound {} instead of {}; socket file left after stop: {left} (Go's systemd \
             path at Stop)",
            actual.display(),
            name.display()
        )),
    }
}

/// 8.4: socket activation without `LISTEN_PID` is not for this process.
pub(crate) fn listen_pid_required(r: Impl) -> Result<String, String> {
    let (_dir, path) = crate::peer::socket_path()?;
    let mut reader = ReaderPeer::start_activated_via(r, &path, &["env", "-u", "LISTEN_PID"])?;
    // systemd-socket-activate starts the reader on this first connection.
    let mut conn = UnixStream::connect(&path).map_err(|e| format!("connect: {e}"))?;
    let _ = conn.write_all(&[2, b'h', b'i']);
    match r.profile() {
        Profile::Spec => {
            let status = reader.wait_exit()?.ok_or("the reader is not a process")?;
            let got = reader.events.messages();
            check(got.is_empty() && !status.success(), || {
                format!("delivered {} and exited with {status}", describe(&got))
            })?;
            Ok(format!(
                "{} reader ignored LISTEN_FDS without LISTEN_PID: it did not adopt fd 3, found \
                 the path held by a live socket and refused to start ({status})",
                r.name()
            ))
        }
        Profile::GoReference => {
            reader.events.wait_messages(1)?;
            drop(conn);
            reader.stop()?;
            Ok(
                "Go adopted fd 3 with LISTEN_FDS=1 and no LISTEN_PID, and served \"hi\" \
                (by design of Go: a missing LISTEN_PID is accepted)"
                    .into(),
            )
        }
    }
}

/// 4.6: any accept-error limit is taken.
pub(crate) fn max_accept_errors_any_value(r: Impl) -> Result<String, String> {
    let (_dir, path) = crate::peer::socket_path()?;
    let opts = ReaderOpts {
        max_accept_errors: Some(64),
        ..ReaderOpts::default()
    };
    match (r.profile(), ReaderPeer::start(r, &path, &opts)) {
        (Profile::Spec, Ok(reader)) => {
            let mut conn = UnixStream::connect(&path).map_err(|e| format!("connect: {e}"))?;
            conn.write_all(&[1, b'k']).map_err(|e| e.to_string())?;
            reader.events.wait_messages(1)?;
            drop(conn);
            reader.stop()?;
            Ok(format!(
                "{} reader started with max_accept_errors 64 and served",
                r.name()
            ))
        }
        (Profile::Spec, Err(e)) => Err(format!("refused max_accept_errors 64: {e}")),
        (Profile::GoReference, Err(e)) => Ok(format!(
            "Go refused max_accept_errors 64 at start (by design of Go: at most 63): {e}"
        )),
        (Profile::GoReference, Ok(reader)) => {
            let _ = reader.stop();
            Err("the Go reader accepted max_accept_errors 64".into())
        }
    }
}

/// 4.6: a reader out of file descriptors (`prlimit --nofile=64:64`, more
/// clients than that) either gives up after `max_accept_errors` (2)
/// failures in a row and says so (the Go reference), or, better, keeps
/// accepting and sheds what it cannot serve (udsipc: resource errors are
/// temporary), so a writer arriving once descriptors are free is served.
pub(crate) fn accept_errors_give_up(r: Impl) -> Result<String, String> {
    let (_dir, path) = crate::peer::socket_path()?;
    let opts = ReaderOpts {
        max_accept_errors: Some(2),
        ..ReaderOpts::default()
    };
    let reader = ReaderPeer::start_wrapped(r, &path, &opts, &[], &["prlimit", "--nofile=64:64"])?;
    let mut clients = Vec::new();
    let said = |ev: &[crate::peer::Event], what: &str| {
        ev.iter()
            .any(|e| matches!(e, crate::peer::Event::Error(c) if c == what))
    };
    const GAVE_UP: &str = "too many consecutive failures in accept loop";
    const SHED: &str = "connection rejected";
    // A reader may shed silently (a MAY of 4.6, as libuv does on EMFILE):
    // a client closed unread by the reader counts as shed, reported or not.
    let closed_unread = |clients: &[UnixStream]| {
        clients.iter().any(|c| {
            let mut byte = [0u8; 1];
            match (&*c).read(&mut byte) {
                Ok(0) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                Ok(_) => false,
            }
        })
    };
    let deadline = Instant::now() + PATIENCE;
    let mut shed_silently = false;
    loop {
        let events = reader.events.snapshot();
        if said(&events, GAVE_UP) || said(&events, SHED) {
            break;
        }
        if closed_unread(&clients) {
            shed_silently = true;
            break;
        }
        if Instant::now() > deadline {
            // Neither gave up nor shed: a reader may also just pause
            // accepting while it has no descriptor; then it must serve a
            // writer once the clients are gone (below).
            break;
        }
        if clients.len() < 100 {
            match UnixStream::connect(&path) {
                Ok(c) => {
                    c.set_nonblocking(true).map_err(|e| e.to_string())?;
                    clients.push(c);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(clients);
    let gave_up = said(&reader.events.snapshot(), GAVE_UP);
    if !gave_up {
        serve_late_writer(&reader.events, &path)?;
    }
    let how = if shed_silently {
        "shed connections silently (closed unread)"
    } else if said(&reader.events.snapshot(), SHED) {
        "shed connections"
    } else {
        "paused accepting"
    };
    let errs = reader.events.errors();
    reader.stop()?;
    Ok(if gave_up {
        format!(
            "{} reader out of descriptors gave up accepting after 2 consecutive errors: {errs:?}",
            r.name()
        )
    } else {
        format!(
            "{} reader out of descriptors {how} and served a later writer: {errs:?}",
            r.name()
        )
    })
}

/// A writer arriving once the clients that exhausted the reader's
/// descriptors are gone must be served. The reader frees their descriptors
/// as it sees them close, which takes a moment: until then it may still shed
/// the newcomer (closed unread), so the writer tries again, as any writer
/// would, until its message is delivered.
fn serve_late_writer(events: &crate::peer::Events, path: &Path) -> Result<(), String> {
    let delivered = || {
        events
            .snapshot()
            .iter()
            .any(|e| matches!(e, crate::peer::Event::Message(m) if m == b"late!"))
    };
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let mut late = UnixStream::connect(path).map_err(|e| format!("late connect: {e}"))?;
        // The write may go through even to a connection about to be shed.
        let _ = late.write_all(&[5, b'l', b'a', b't', b'e', b'!']);
        late.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
        loop {
            if delivered() {
                return Ok(());
            }
            let mut byte = [0u8; 1];
            match late.read(&mut byte) {
                // Closed by the reader: shed, unread. Try again.
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() > deadline {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
    Err(format!(
        "a writer arriving once the clients were gone was never served in {PATIENCE:?}"
    ))
}

/// 5.9: the reader's handler sleeps 1.5 s on the first message while 6 MiB
/// more is queued; the writer's write timeout is 300 ms.
pub(crate) fn slow_reader_no_reconnect(w: Impl, r: Impl) -> Result<String, String> {
    let (_dir, path) = crate::peer::socket_path()?;
    let ropts = ReaderOpts {
        pause_on: Some((b"pause".to_vec(), Duration::from_millis(1500))),
        ..ReaderOpts::default()
    };
    let wopts = WriterOpts {
        write_timeout: Some(Duration::from_millis(300)),
        ..WriterOpts::default()
    };
    let reader = ReaderPeer::start(r, &path, &ropts)?;
    let mut writer = WriterPeer::start(w, &path, &wopts)?;
    let msgs: Vec<Vec<u8>> = (0..1500).map(|i| numbered(i, 4096)).collect();
    writer.send(b"pause")?;
    for m in &msgs {
        writer.send(m)?;
    }
    reader.events.wait_messages(msgs.len() + 1)?;
    let wc = writer.stop()?;
    let events = reader.events.clone();
    let rc = reader.stop()?;
    let got = events.messages();
    let errs = events.errors();
    let in_order = got.len() == msgs.len() + 1 && got[1..] == msgs[..];
    // Go's reader also counts the connection its Stop makes to itself.
    let own = u64::from(r.is_go_reference());
    let connections = rc.connections - own;
    let summary = format!(
        "{} messages, in order: {in_order}; writer connections seen by the reader: \
         {connections}; reader errors {errs:?}; {wc:?}",
        got.len()
    );
    match w.profile() {
        Profile::Spec => {
            check(in_order && errs.is_empty() && connections == 1, || {
                format!("{} writer: {summary}", w.name())
            })?;
            Ok(format!(
                "{} writer waited on its one connection: {summary}",
                w.name()
            ))
        }
        Profile::GoReference => Ok(format!(
            "Go writer (its write timeout fails the write and reconnects, by design of Go): \
             {summary}"
        )),
    }
}

/// 5.10: a message the reader refuses every time (4 MiB against a 1 KiB
/// limit: more than a reader's read size plus the socket buffers, so the
/// write fails each time), then "after".
pub(crate) fn poison_message_given_up(w: Impl, r: Impl) -> Result<String, String> {
    let (_dir, path) = crate::peer::socket_path()?;
    let ropts = ReaderOpts {
        max_message_size: Some(1024),
        ..ReaderOpts::default()
    };
    let reader = ReaderPeer::start(r, &path, &ropts)?;
    // A writer that backs off between refused attempts (as udsipc does)
    // would take 1 + 2 + 4 + 8 s to give up at the default backoff.
    let wopts = WriterOpts {
        max_backoff: Some(Duration::from_millis(200)),
        ..WriterOpts::default()
    };
    let mut writer = WriterPeer::start(w, &path, &wopts)?;
    writer.send(&payload(4 << 20, 9))?;
    writer.send(b"after")?;
    match w.profile() {
        Profile::Spec => {
            reader.events.wait_messages(1)?;
            let wc = writer.stop()?;
            let events = reader.events.clone();
            let rc = reader.stop()?;
            let (got, errs) = (events.messages(), events.errors());
            check(got == [b"after".to_vec()], || {
                format!("delivered {}", describe(&got))
            })?;
            check(
                !errs.is_empty() && errs.iter().all(|e| e == "message too large"),
                || format!("errors {errs:?}"),
            )?;
            // `failed` counts messages given up (PEERS.md): this one, once.
            check(wc.failed == 1, || {
                format!("failed should count the one message given up: {wc:?}")
            })?;
            Ok(format!(
                "{} writer gave the 4 MiB message up after {} refusals and delivered \"after\"; \
                 {rc:?}; {wc:?}",
                w.name(),
                errs.len()
            ))
        }
        Profile::GoReference => {
            // Observe the Go writer for a while; it never gets past the
            // message the reader refuses.
            std::thread::sleep(Duration::from_secs(2));
            let got = reader.events.messages();
            let refusals = reader.events.errors().len();
            // Not `stop`: Go's writer loop never looks at the stop signal
            // between a reconnect and the retry, so its Stop would not
            // return; the process is killed instead.
            drop(writer);
            let rc = reader.stop()?;
            check(got.is_empty() && refusals > 1, || {
                format!("delivered {}; {refusals} refusals", describe(&got))
            })?;
            Ok(format!(
                "Go writer retried the 4 MiB message {refusals} times in 2 s and never sent \
                 \"after\" (by design of Go: retried first, forever; its Stop does not return \
                 in this state, so it was killed); {rc:?}"
            ))
        }
    }
}
