//! The `udsipc` binary's contract, exercised as scripts use it: real
//! processes, real Unix sockets, and frames written by hand with a raw
//! `std::os::unix::net::UnixStream`.
//!
//! Nothing here sleeps to synchronise: a test waits for the `listening on`
//! line, for stdout lines, for a warning on stderr, or for the Reader to
//! close a connection. Every wait is bounded by [`WAIT`].

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rstest::rstest;
use tempfile::TempDir;
use udsipc_cli::listen::ListenStats;
use udsipc_cli::send::SendStats;

const BIN: &str = env!("CARGO_BIN_EXE_udsipc");

/// The bound on every wait; generous, because CI machines stall.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// A running `udsipc` process whose stdout and stderr are read line by line
/// on their own threads, so it never blocks on a full pipe.
struct Proc {
    child: Child,
    stdout: Receiver<Vec<u8>>,
    stderr: Receiver<String>,
    out: Vec<u8>,
    err: Vec<String>,
    feeder: Option<JoinHandle<()>>,
}

/// A finished `udsipc` process.
#[derive(Debug)]
struct Done {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<String>,
}

fn spawn_lines<R: Read + Send + 'static, T: Send + 'static>(
    from: R,
    convert: fn(Vec<u8>) -> T,
) -> Receiver<T> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut from = BufReader::new(from);
        loop {
            let mut line = Vec::new();
            match from.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(convert(line)).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

impl Proc {
    /// Starts `udsipc ARGS...`; `stdin` is written (then closed) on a thread,
    /// or stdin is /dev/null.
    fn spawn<S: AsRef<OsStr>>(args: &[S], stdin: Option<Vec<u8>>) -> Self {
        Self::spawn_command(Command::new(BIN), args, stdin)
    }

    /// As [`spawn`](Self::spawn), with the `udsipc` binary already in `cmd`
    /// (e.g. behind `setpriv`).
    fn spawn_command<S: AsRef<OsStr>>(
        mut cmd: Command,
        args: &[S],
        stdin: Option<Vec<u8>>,
    ) -> Self {
        let mut child = cmd
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to start the udsipc binary");
        let feeder = stdin.map(|data| {
            let mut pipe: ChildStdin = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                // The process may exit early (bad input): a broken pipe is fine.
                let _ = pipe.write_all(&data);
            })
        });
        let stdout = spawn_lines(child.stdout.take().unwrap(), |l| l);
        let stderr = spawn_lines(child.stderr.take().unwrap(), |l| {
            String::from_utf8_lossy(&l)
                .trim_end_matches('\n')
                .to_owned()
        });
        Self {
            child,
            stdout,
            stderr,
            out: Vec::new(),
            err: Vec::new(),
            feeder,
        }
    }

    /// Waits for the first stderr line matching `pred`.
    fn stderr_until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.err.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => self.fail(&format!("no stderr line {what} ({e:?})")),
            }
        }
    }

    /// Waits for the next stdout line (newline included).
    fn stdout_line(&mut self) -> Vec<u8> {
        match self.stdout.recv_timeout(WAIT) {
            Ok(line) => {
                self.out.extend_from_slice(&line);
                line
            }
            Err(e) => self.fail(&format!("no stdout line ({e:?})")),
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, signal).expect("kill failed");
    }

    /// Waits for the process to end (both pipes closed) and collects output.
    fn finish(mut self) -> Done {
        let deadline = Instant::now() + WAIT;
        let mut out_open = true;
        let mut err_open = true;
        while out_open || err_open {
            let left = deadline.saturating_duration_since(Instant::now());
            if out_open {
                match self.stdout.recv_timeout(left) {
                    Ok(line) => self.out.extend_from_slice(&line),
                    Err(RecvTimeoutError::Disconnected) => out_open = false,
                    Err(RecvTimeoutError::Timeout) => self.fail("the process did not exit"),
                }
            } else {
                match self.stderr.recv_timeout(left) {
                    Ok(line) => self.err.push(line),
                    Err(RecvTimeoutError::Disconnected) => err_open = false,
                    Err(RecvTimeoutError::Timeout) => self.fail("the process did not exit"),
                }
            }
        }
        let status = self.child.wait().unwrap();
        if let Some(feeder) = self.feeder.take() {
            feeder.join().unwrap();
        }
        Done {
            status,
            stdout: std::mem::take(&mut self.out),
            stderr: std::mem::take(&mut self.err),
        }
    }

    fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.kill();
        self.err.extend(self.stderr.try_iter());
        panic!(
            "{what}\nstdout so far: {:?}\nstderr so far:\n{}",
            String::from_utf8_lossy(&self.out),
            self.err.join("\n")
        );
    }
}

impl Done {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn stdout_text(&self) -> &str {
        std::str::from_utf8(&self.stdout).expect("stdout is not UTF-8")
    }

    fn last_stderr_line(&self) -> &str {
        self.stderr.last().map_or("", String::as_str)
    }

    fn listen_stats(&self) -> ListenStats {
        serde_json::from_str(self.last_stderr_line())
            .unwrap_or_else(|e| panic!("last stderr line is not listen stats ({e}): {self:#?}"))
    }

    fn send_stats(&self) -> SendStats {
        serde_json::from_str(self.last_stderr_line())
            .unwrap_or_else(|e| panic!("last stderr line is not send stats ({e}): {self:#?}"))
    }

    fn has_stderr_line(&self, prefix: &str) -> bool {
        self.stderr.iter().any(|l| l.starts_with(prefix))
    }
}

/// A `udsipc listen` on `dir/listen.sock`, ready (its `listening on` line
/// has been read).
struct Listener {
    proc: Proc,
    path: PathBuf,
}

impl Listener {
    fn start(dir: &Path, options: &[&str]) -> Self {
        let path = dir.join("listen.sock");
        let mut args: Vec<OsString> = vec!["listen".into(), path.clone().into()];
        args.extend(options.iter().map(OsString::from));
        let mut proc = Proc::spawn(&args, None);
        let first = proc.stderr_until("announcing readiness", |_| true);
        assert_eq!(first, format!("listening on {}", path.display()));
        Self { proc, path }
    }

    fn connect(&self) -> UnixStream {
        let stream = UnixStream::connect(&self.path).expect("connect failed");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
    }

    /// Finishes the process and checks what every exit must look like.
    fn finish(self) -> Done {
        let path = self.path;
        let done = self.proc.finish();
        assert_eq!(done.code(), Some(0), "{done:#?}");
        assert!(!path.exists(), "the socket file was left behind");
        let stats = done.listen_stats();
        assert_eq!(stats.active_connections, 0);
        assert_eq!(stats.rejected_connections, 0);
        done
    }
}

/// Runs `udsipc send SOCKET OPTIONS...` to completion.
fn send(socket: &Path, options: &[&str], stdin: Option<&[u8]>) -> Done {
    send_proc(socket, options, stdin).finish()
}

fn send_proc(socket: &Path, options: &[&str], stdin: Option<&[u8]>) -> Proc {
    let mut args: Vec<OsString> = vec!["send".into(), socket.into()];
    args.extend(options.iter().map(OsString::from));
    Proc::spawn(&args, stdin.map(<[u8]>::to_vec))
}

/// Runs `udsipc ARGS...` with no stdin to completion.
fn udsipc(args: &[&str]) -> Done {
    Proc::spawn(args, None).finish()
}

/// A frame with a minimal varint prefix, encoded here independently of
/// `udsipc::frame`.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut n = body.len();
    while n >= 0x80 {
        out.push((n & 0x7f) as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(body);
    out
}

/// Waits until the Reader closes `stream`: end of file, or a reset when it
/// closed with bytes unread.
fn assert_closed_by_reader(stream: &mut UnixStream) {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the reader to close the connection, got {other:?}"),
    }
}

fn tempdir() -> TempDir {
    tempfile::tempdir().unwrap()
}

// ---------------------------------------------------------------------------
// listen: delivery, byte for byte
// ---------------------------------------------------------------------------

#[rstest]
#[case::text("text", b"\x05hello\x06w\xc3\xb6rld\x02\xffa".to_vec(), 3, "hello\nwörld\n\u{fffd}a\n")]
#[case::text_shows_a_newline_escaped("text", b"\x03a\nb".to_vec(), 1, "a\\nb\n")]
#[case::raw_with_newline_spans_lines("raw", b"\x03a\nb".to_vec(), 1, "a\nb\n")]
#[case::hex("hex", b"\x03\x00\xab\xff\x01\x0a".to_vec(), 2, "00abff\n0a\n")]
#[case::len(
    "len",
    [&[0x80, 0x01][..], &[b'x'; 128], b"\x01y", &[0xff, 0x01], &[0; 255]].concat(),
    3,
    "128\n1\n255\n"
)]
#[case::non_minimal_prefix_is_delivered("text", b"\x83\x00abc".to_vec(), 1, "abc\n")]
#[case::zero_length_frame_is_skipped("hex", b"\x00\x01x\x80\x00\x01y".to_vec(), 2, "78\n79\n")]
fn listen_prints_each_message_byte_for_byte(
    #[case] format: &str,
    #[case] wire: Vec<u8>,
    #[case] count: u64,
    #[case] expected: &str,
) {
    let dir = tempdir();
    let count_arg = count.to_string();
    let listener = Listener::start(dir.path(), &["--format", format, "--count", &count_arg]);
    listener.connect().write_all(&wire).unwrap();
    let done = listener.finish();
    assert_eq!(done.stdout_text(), expected);
    let stats = done.listen_stats();
    assert_eq!((stats.received, stats.printed), (count, count));
    assert_eq!((stats.connections, stats.errors), (1, 0));
}

#[test]
fn count_prints_exactly_n_lines_then_stops() {
    let dir = tempdir();
    let listener = Listener::start(dir.path(), &["--count", "3"]);
    let wire: Vec<u8> = (1..=5)
        .flat_map(|i| frame(format!("{i}").as_bytes()))
        .collect();
    listener.connect().write_all(&wire).unwrap();
    let done = listener.finish();
    assert_eq!(done.stdout_text(), "1\n2\n3\n");
    let stats = done.listen_stats();
    assert_eq!(stats.printed, 3);
    assert!(
        (3..=5).contains(&stats.received),
        "received counts delivered messages, printed or not: {stats:?}"
    );
}

#[test]
fn fragmented_frames_written_a_byte_at_a_time_arrive_intact() {
    let dir = tempdir();
    let listener = Listener::start(dir.path(), &["--format", "hex", "--count", "3"]);
    let big: Vec<u8> = (0..200u8).collect();
    let wire = [frame(b"a"), frame(&big), frame(b"hello")].concat();
    let mut stream = listener.connect();
    for byte in &wire {
        stream.write_all(std::slice::from_ref(byte)).unwrap();
        stream.flush().unwrap();
    }
    let done = listener.finish();
    let big_hex: String = big.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(done.stdout_text(), format!("61\n{big_hex}\n68656c6c6f\n"));
    assert_eq!(done.listen_stats().errors, 0);
}

#[test]
fn frames_coalesced_in_one_write_all_arrive_in_order() {
    const N: usize = 1000;
    let dir = tempdir();
    let listener = Listener::start(dir.path(), &["--count", &N.to_string()]);
    let wire: Vec<u8> = (0..N)
        .flat_map(|i| frame(format!("msg-{i}").as_bytes()))
        .collect();
    listener.connect().write_all(&wire).unwrap();
    let done = listener.finish();
    let expected: String = (0..N).map(|i| format!("msg-{i}\n")).collect();
    assert_eq!(done.stdout_text(), expected);
    assert_eq!(done.listen_stats().received, N as u64);
}

// ---------------------------------------------------------------------------
// listen: protocol violations
// ---------------------------------------------------------------------------

/// Bad bytes on one connection, then `02 "ok"` on a second: the first is
/// closed and counted as one error, nothing of it is printed, and the
/// listener goes on serving.
#[rstest]
#[case::malformed_prefix(&[], &[0xff; 11], false, "warning: protocol violation")]
#[case::truncated_body_then_close(&[], b"\x05ab", true, "warning: protocol violation")]
#[case::truncated_prefix_then_close(&[], &[0x80], true, "warning: protocol violation")]
#[case::oversized(&["--max-message-size", "4"], b"\x05hello", false, "warning: protocol violation")]
#[case::body_stalls_past_a_decimal_inactivity_timeout(
    &["--inactivity-timeout", "0.2"],
    b"\x05ab",
    false,
    "warning: inactivity timeout"
)]
fn a_bad_connection_is_closed_and_counted_once(
    #[case] options: &[&str],
    #[case] bad: &[u8],
    #[case] close_write: bool,
    #[case] warning: &str,
) {
    let dir = tempdir();
    let mut args = vec!["--count", "1"];
    args.extend_from_slice(options);
    let listener = Listener::start(dir.path(), &args);

    let mut stream = listener.connect();
    stream.write_all(bad).unwrap();
    if close_write {
        stream.shutdown(Shutdown::Write).unwrap();
    }
    assert_closed_by_reader(&mut stream);

    listener.connect().write_all(b"\x02ok").unwrap();
    let done = listener.finish();
    assert_eq!(
        done.stdout_text(),
        "ok\n",
        "nothing printed for the bad input"
    );
    let stats = done.listen_stats();
    assert_eq!(stats.errors, 1, "{done:#?}");
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.received, 1);
    assert!(done.has_stderr_line(warning), "{done:#?}");
}

// ---------------------------------------------------------------------------
// listen: stopping and starting
// ---------------------------------------------------------------------------

#[rstest]
#[case::sigterm(Signal::SIGTERM)]
#[case::sigint(Signal::SIGINT)]
fn a_signal_stops_gracefully_and_ends_with_the_stats(#[case] signal: Signal) {
    let dir = tempdir();
    let mut listener = Listener::start(dir.path(), &[]);
    let mut stream = listener.connect();
    stream
        .write_all(&[frame(b"one"), frame(b"two"), frame(b"three")].concat())
        .unwrap();
    for expected in ["one\n", "two\n", "three\n"] {
        assert_eq!(listener.proc.stdout_line(), expected.as_bytes());
    }

    // The connection stays open: the stop must close it, not wait for it.
    listener.proc.signal(signal);
    assert_closed_by_reader(&mut stream);
    let done = listener.finish();
    assert_eq!(done.stdout_text(), "one\ntwo\nthree\n");
    let stats = done.listen_stats();
    assert_eq!((stats.received, stats.connections, stats.errors), (3, 1, 0));
}

#[test]
fn a_signal_stops_listen_even_when_nobody_reads_its_stdout() {
    // The handler ends up blocked on a full stdout: the stop must still
    // end, and say what it could not print.
    let dir = tempdir();
    let path = dir.path().join("listen.sock");
    let mut child = Command::new(BIN)
        .arg("listen")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped()) // never read
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _unread_stdout = child.stdout.take().unwrap();
    let stderr = spawn_lines(child.stderr.take().unwrap(), |l| {
        String::from_utf8_lossy(&l).trim_end().to_owned()
    });
    let ready = stderr.recv_timeout(WAIT).expect("listening on");
    assert!(ready.starts_with("listening on"), "{ready}");
    // Far more than a pipe plus the printer's queue hold.
    let mut stream = UnixStream::connect(&path).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let line = frame(&[b'x'; 200]);
    let mut written = 0usize;
    while written < 64 << 20 {
        match stream.write_all(&line) {
            Ok(()) => written += line.len(),
            // The listener stopped reading: backpressure reached us.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("write failed: {e}"),
        }
    }
    assert!(
        written < 64 << 20,
        "listen buffered 64 MiB instead of pushing back"
    );
    kill(
        Pid::from_raw(i32::try_from(child.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "listen did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines: Vec<String> = stderr.try_iter().collect();
    assert_eq!(status.code(), Some(1), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stdout took no more lines")),
        "{lines:#?}"
    );
    let stats: ListenStats = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert!(stats.received > 0);
    assert!(!path.exists(), "the socket file was left behind");
}

#[test]
fn listen_refuses_a_path_that_is_not_a_socket() {
    let dir = tempdir();
    let path = dir.path().join("precious.txt");
    std::fs::write(&path, "keep me").unwrap();
    let done = udsipc(&["listen", path.to_str().unwrap()]);
    assert_eq!(done.code(), Some(1), "{done:#?}");
    assert_eq!(done.stderr.len(), 1, "{done:#?}");
    assert!(done.stderr[0].starts_with("error: refusing to replace"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}

#[test]
fn listen_refuses_a_socket_another_listener_serves() {
    let dir = tempdir();
    let first = Listener::start(dir.path(), &["--count", "1"]);
    let done = udsipc(&["listen", first.path.to_str().unwrap()]);
    assert_eq!(done.code(), Some(1), "{done:#?}");
    assert_eq!(done.stderr.len(), 1, "{done:#?}");
    assert!(done.stderr[0].starts_with("error: address in use"));

    // The first listener is unharmed.
    first.connect().write_all(b"\x05still").unwrap();
    assert_eq!(first.finish().stdout_text(), "still\n");
}

// ---------------------------------------------------------------------------
// send
// ---------------------------------------------------------------------------

#[test]
fn send_delivers_its_arguments_and_skips_empty_ones() {
    let dir = tempdir();
    let listener = Listener::start(dir.path(), &["--format", "hex", "--count", "3"]);
    let sent = send(&listener.path, &["a", "", "b", "c"], None);
    assert_eq!(sent.code(), Some(0), "{sent:#?}");
    let stats = sent.send_stats();
    assert_eq!((stats.sent, stats.delivered, stats.queued), (3, 3, 3));
    assert_eq!((stats.dropped, stats.discarded), (0, 0));
    assert_eq!(listener.finish().stdout_text(), "61\n62\n63\n");
}

#[test]
fn send_delivers_stdin_lines_without_their_endings() {
    let dir = tempdir();
    // Raw: the `\r` inside a line comes out as it went in.
    let listener = Listener::start(dir.path(), &["--format", "raw", "--count", "4"]);
    // Empty lines (also "\r\n" alone) are skipped; the last line has no "\n".
    let input = b"one\r\n\ntwo\n\r\n a\rb \nthree";
    let sent = send(&listener.path, &[], Some(input));
    assert_eq!(sent.code(), Some(0), "{sent:#?}");
    assert_eq!(sent.send_stats().queued, 4);
    assert_eq!(listener.finish().stdout, b"one\ntwo\n a\rb \nthree\n");
}

#[rstest]
#[case::arguments(&["--hex", "00ff", "", "4142"], None)]
#[case::stdin_lines(&["--hex"], Some(&b"00ff\n\n4142\r\n"[..]))]
fn send_hex_decodes_each_message(#[case] options: &[&str], #[case] stdin: Option<&[u8]>) {
    let dir = tempdir();
    let listener = Listener::start(dir.path(), &["--format", "hex", "--count", "2"]);
    let sent = send(&listener.path, options, stdin);
    assert_eq!(sent.code(), Some(0), "{sent:#?}");
    let stats = sent.send_stats();
    assert_eq!((stats.sent, stats.queued), (2, 2));
    assert_eq!(listener.finish().stdout_text(), "00ff\n4142\n");
}

#[test]
fn send_names_the_invalid_hex_stdin_line_and_exits_2() {
    let dir = tempdir();
    let socket = dir.path().join("nobody.sock");
    let done = send(
        &socket,
        &["--hex", "--drain-timeout", "0.3"],
        Some(b"00\n\nzz\n01\n"),
    );
    assert_eq!(done.code(), Some(2), "{done:#?}");
    let error = done
        .stderr
        .iter()
        .find(|l| l.starts_with("error: "))
        .expect("an error line");
    assert!(
        error.starts_with("error: stdin line 3: invalid hex"),
        "{error}"
    );
    assert_eq!(done.send_stats().queued, 1, "the line before it was queued");
}

#[test]
fn send_with_nobody_listening_exits_1_with_nothing_sent() {
    let dir = tempdir();
    let socket = dir.path().join("nobody.sock");
    let done = send(&socket, &["--drain-timeout", "0.3", "a", "b"], None);
    assert_eq!(done.code(), Some(1), "{done:#?}");
    let stats = done.send_stats();
    assert_eq!(
        (stats.sent, stats.delivered, stats.queued, stats.discarded),
        (0, 0, 2, 2)
    );
    assert!(done.has_stderr_line("error: delivered 0 of 2 message(s)"));
}

#[test]
fn send_of_only_empty_lines_succeeds_with_nothing_queued() {
    let dir = tempdir();
    let socket = dir.path().join("nobody.sock");
    let done = send(&socket, &["--drain-timeout", "0.3"], Some(b"\n\r\n\n"));
    assert_eq!(done.code(), Some(0), "{done:#?}");
    let stats = done.send_stats();
    assert_eq!((stats.sent, stats.queued), (0, 0));
}

#[test]
fn send_to_listen_delivers_20000_stdin_lines_in_order() {
    const N: usize = 20_000;
    let dir = tempdir();
    let listener = Listener::start(dir.path(), &["--count", &N.to_string()]);
    let input: String = (0..N).map(|i| format!("line {i:05}\n")).collect();
    let sent = send(&listener.path, &[], Some(input.as_bytes()));
    assert_eq!(sent.code(), Some(0), "{sent:#?}");
    let stats = sent.send_stats();
    assert_eq!(
        (stats.sent, stats.queued, stats.dropped),
        (N as u64, N as u64, 0)
    );
    let done = listener.finish();
    assert!(
        done.stdout_text() == input,
        "lines lost, changed or reordered"
    );
    assert_eq!(done.listen_stats().received, N as u64);
}

#[test]
fn send_started_before_its_listener_still_delivers() {
    let dir = tempdir();
    let socket = dir.path().join("listen.sock");
    let mut early = send_proc(&socket, &["hello"], None);
    // The Writer has tried and failed once: it is now in its short backoff.
    early.stderr_until("about a failed dial", |l| {
        l.starts_with("warning: failed to dial socket")
    });
    let listener = Listener::start(dir.path(), &["--count", "1"]);
    let sent = early.finish();
    assert_eq!(sent.code(), Some(0), "{sent:#?}");
    assert_eq!(sent.send_stats().sent, 1);
    assert_eq!(listener.finish().stdout_text(), "hello\n");
}

#[test]
fn send_to_a_listen_stopped_for_3s_keeps_its_connection_and_delivers_200000_lines_in_order() {
    const N: usize = 200_000;
    let dir = tempdir();
    let mut listener = Listener::start(dir.path(), &["--count", &N.to_string()]);
    let input: String = (0..N).map(|i| format!("line {i:06}\n")).collect();
    let sender = send_proc(
        &listener.path,
        &["--drain-timeout", "60"],
        Some(input.as_bytes()),
    );
    // Mid-stream: the listener has printed something, then stops for 3 s.
    listener.proc.stdout_line();
    listener.proc.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(3));
    listener.proc.signal(Signal::SIGCONT);
    let sent = sender.finish();
    assert_eq!(sent.code(), Some(0), "{sent:#?}");
    let stats = sent.send_stats();
    assert_eq!(
        (
            stats.delivered,
            stats.reconnects,
            stats.failed,
            stats.retried,
            stats.unconfirmed
        ),
        (N as u64, 0, 0, 0, 0),
        "{stats:?}"
    );
    let done = listener.finish();
    assert!(
        done.stdout_text() == input,
        "lines lost, duplicated or reordered"
    );
    let listen = done.listen_stats();
    assert_eq!(
        (listen.received, listen.errors, listen.connections),
        (N as u64, 0, 1)
    );
}

#[test]
fn send_gives_up_a_message_larger_than_listens_max_and_delivers_the_rest() {
    let dir = tempdir();
    let listener = Listener::start(
        dir.path(),
        &[
            "--max-message-size",
            "1024",
            "--format",
            "hex",
            "--count",
            "10",
        ],
    );
    let mut input = "00".repeat(4 << 20);
    input.push('\n');
    let small: String = (0..10).map(|i| format!("{i:02x}\n")).collect();
    input.push_str(&small);
    let sent = send(&listener.path, &["--hex"], Some(input.as_bytes()));
    assert_eq!(sent.code(), Some(1), "{sent:#?}");
    let stats = sent.send_stats();
    assert_eq!(
        (stats.failed, stats.delivered, stats.queued),
        (1, 10, 11),
        "{stats:?}"
    );
    assert!(stats.reconnects <= 5, "{stats:?}");
    assert!(
        sent.has_stderr_line("warning: a 4194304-byte message was given up after 5 connections"),
        "{sent:#?}"
    );
    assert!(
        sent.has_stderr_line(
            "error: delivered 10 of 11 message(s) (the listener read them); 1 failed"
        ),
        "{sent:#?}"
    );
    let done = listener.finish();
    assert_eq!(done.stdout_text(), small);
    assert!(done.listen_stats().errors <= 5);
}

#[test]
fn send_refused_by_listens_allow_list_exits_1_with_nothing_delivered_and_does_not_storm() {
    let me = nix::unistd::getuid().as_raw();
    let someone_else = if me == 4242 { "4243" } else { "4242" };
    let dir = tempdir();
    let listener = Listener::start(dir.path(), &["--allow-uid", someone_else]);
    let started = Instant::now();
    let sent = send(&listener.path, &["--drain-timeout", "1.5", "a", "b"], None);
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(sent.code(), Some(1), "{sent:#?}");
    let stats = sent.send_stats();
    assert_eq!(
        (stats.delivered, stats.failed, stats.queued),
        (0, 0, 2),
        "{stats:?}"
    );
    assert!(stats.refused >= 1, "{stats:?}");
    assert!(
        sent.has_stderr_line("error: delivered 0 of 2 message(s)"),
        "{sent:#?}"
    );
    listener.proc.signal(Signal::SIGTERM);
    let done = listener.proc.finish();
    let rejected = done.listen_stats().rejected_connections;
    // Delays of 100, 200, 400, 800 ms, then 1 s each: a bound on the
    // connections, not a speed (a slow machine only makes fewer).
    let bound = 5.0 + elapsed + 2.0;
    assert!(
        (rejected as f64) <= bound,
        "{rejected} connections in {elapsed:.1} s: the sender storms"
    );
}

// ---------------------------------------------------------------------------
// Bad arguments
// ---------------------------------------------------------------------------

#[rstest]
#[case::unknown_subcommand(&["frobnicate"])]
#[case::listen_without_socket(&["listen"])]
#[case::unknown_format(&["listen", "S", "--format", "xml"])]
#[case::zero_count(&["listen", "S", "--count", "0"])]
#[case::count_not_a_number(&["listen", "S", "--count", "many"])]
#[case::zero_inactivity_timeout(&["listen", "S", "--inactivity-timeout", "0"])]
#[case::negative_inactivity_timeout(&["listen", "S", "--inactivity-timeout", "-1"])]
#[case::max_message_size_not_a_size(&["listen", "S", "--max-message-size", "1XB"])]
#[case::send_without_socket(&["send"])]
#[case::drain_timeout_not_a_number(&["send", "S", "--drain-timeout", "soon"])]
fn bad_arguments_exit_2_with_an_error(#[case] args: &[&str]) {
    let done = udsipc(args);
    assert_eq!(done.code(), Some(2), "{done:#?}");
    assert!(
        done.stderr.iter().any(|l| l.starts_with("error: ")),
        "{done:#?}"
    );
    assert!(done.stdout.is_empty());
}

#[test]
fn bare_udsipc_prints_its_help_and_exits_2() {
    let done = udsipc(&[]);
    assert_eq!(done.code(), Some(2), "{done:#?}");
    assert!(done.has_stderr_line("Usage: udsipc <COMMAND>"), "{done:#?}");
}

/// Errors found by `udsipc` itself rather than by the argument parser: one
/// line, nothing else.
#[rstest]
#[case::invalid_hex_argument(&["send", "S", "--hex", "00", "0g"], "error: MESSAGE argument 2: invalid hex")]
#[case::odd_hex_argument(&["send", "S", "--hex", "abc"], "error: MESSAGE argument 1: invalid hex: odd")]
#[case::listen_path_too_long(&["listen", "LONG"], "error: invalid socket path")]
#[case::send_path_too_long(&["send", "LONG", "x"], "error: invalid socket path")]
fn own_validation_errors_are_one_line_and_exit_2(#[case] args: &[&str], #[case] prefix: &str) {
    let dir = tempdir();
    let long = dir.path().join("x".repeat(200));
    let short = dir.path().join("s.sock");
    let args: Vec<&str> = args
        .iter()
        .map(|&a| match a {
            "S" => short.to_str().unwrap(),
            "LONG" => long.to_str().unwrap(),
            a => a,
        })
        .collect();
    let done = udsipc(&args);
    assert_eq!(done.code(), Some(2), "{done:#?}");
    assert_eq!(done.stderr.len(), 1, "{done:#?}");
    assert!(done.stderr[0].starts_with(prefix), "{done:#?}");
}

#[test]
fn help_teaches_each_subcommand_with_an_example() {
    for (args, example) in [
        (&["--help"][..], "udsipc listen /tmp/app.sock"),
        (&["listen", "--help"][..], "--count 3"),
        (&["send", "--help"][..], "| udsipc send /tmp/app.sock"),
        (&["proxy", "--help"][..], "--fault drop-after-frames:1000"),
        (&["proxy", "--help"][..], "reset:AFTER_FRAMES"),
    ] {
        let done = udsipc(args);
        assert_eq!(done.code(), Some(0));
        assert!(done.stdout_text().contains(example), "{args:?}: {done:#?}");
    }
    let done = udsipc(&["send", "--help"]);
    assert!(
        done.stdout_text().contains("100 ms"),
        "the backoff is documented"
    );
}

// ---------------------------------------------------------------------------
// listen: socket mode and admission
// ---------------------------------------------------------------------------

#[test]
fn listen_applies_the_socket_mode_and_serves_within_the_cap() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let listener = Listener::start(
        dir.path(),
        &[
            "--socket-mode",
            "600",
            "--max-connections",
            "1",
            "--count",
            "1",
        ],
    );
    let mode = std::fs::metadata(&listener.path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    listener.connect().write_all(&frame(b"inside")).unwrap();
    let done = listener.finish();
    assert_eq!(done.stdout_text(), "inside\n");
}

#[test]
fn listen_closes_peers_off_the_allow_lists() {
    let dir = tempdir();
    let mut listener = Listener::start(
        dir.path(),
        &["--allow-uid", "4294967294", "--allow-gid", "4294967294"],
    );
    let mut stream = listener.connect();
    let _ = stream.write_all(&frame(b"refused"));
    assert_closed_by_reader(&mut stream);
    listener
        .proc
        .stderr_until("the refusal warning", |l| l.contains("connection rejected"));
    listener.proc.signal(Signal::SIGTERM);
    let done = listener.proc.finish();
    assert_eq!(done.code(), Some(0), "{done:#?}");
    assert_eq!(done.stdout_text(), "");
    let stats = done.listen_stats();
    assert_eq!(
        (
            stats.rejected_connections,
            stats.received,
            stats.connections
        ),
        (1, 0, 0)
    );
}

/// Runs `udsipc send SOCKET OPTIONS...` as uid/gid 65534 with no
/// supplementary groups, through util-linux's `setpriv`. The binary runs
/// from a copy in the socket's directory: the build's own copy may sit in a
/// checkout the second user cannot traverse (a clone in a 0700 directory).
fn send_as_nobody(socket: &Path, options: &[&str]) -> Done {
    use std::os::unix::fs::PermissionsExt;
    let bin = socket.with_file_name("udsipc-for-nobody");
    if !bin.exists() {
        std::fs::copy(BIN, &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"]);
    cmd.arg(&bin);
    let mut args: Vec<OsString> = vec!["send".into(), socket.into()];
    args.extend(options.iter().map(OsString::from));
    Proc::spawn_command(cmd, &args, None).finish()
}

/// Whether a second user can be run: root, and `setpriv` installed.
fn can_run_a_second_user() -> bool {
    let setpriv = Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    nix::unistd::getuid().is_root() && setpriv
}

/// A directory the second user can reach (`tempdir` makes it 0700).
fn tempdir_for_everyone() -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn listen_allow_lists_refuse_or_admit_a_real_second_user_running_udsipc_send() {
    if !can_run_a_second_user() {
        eprintln!("needs root and setpriv (util-linux) to run `udsipc send` as uid 65534; skipped");
        return;
    }
    // Refused: only root may send.
    let dir = tempdir_for_everyone();
    let mut listener = Listener::start(dir.path(), &["--socket-mode", "666", "--allow-uid", "0"]);
    // Whether the refused sender saw its write fail or not depends on when
    // the Reader closed it; the Reader's side is what is checked.
    let _ = send_as_nobody(&listener.path, &["--drain-timeout", "0.5", "not yours"]);
    let refusal = listener
        .proc
        .stderr_until("the refusal warning", |l| l.contains("connection rejected"));
    assert!(refusal.contains("uid 65534 gid 65534"), "{refusal}");
    listener.proc.signal(Signal::SIGTERM);
    let done = listener.proc.finish();
    assert_eq!(done.code(), Some(0), "{done:#?}");
    assert_eq!(done.stdout_text(), "");
    let stats = done.listen_stats();
    assert!(stats.rejected_connections >= 1, "{stats:?}");
    assert_eq!((stats.received, stats.connections), (0, 0));

    // Admitted: uid 65534 is on the list.
    let dir = tempdir_for_everyone();
    let listener = Listener::start(
        dir.path(),
        &[
            "--socket-mode",
            "666",
            "--allow-uid",
            "65534",
            "--count",
            "1",
        ],
    );
    let sent = send_as_nobody(&listener.path, &["from nobody"]);
    assert_eq!(sent.code(), Some(0), "{sent:#?}");
    assert_eq!(sent.send_stats().sent, 1);
    assert_eq!(listener.finish().stdout_text(), "from nobody\n");
}

// ---------------------------------------------------------------------------
// proxy
// ---------------------------------------------------------------------------

/// A `udsipc proxy` in front of `upstream`, ready (its `proxying` line has
/// been read).
fn start_proxy(dir: &Path, upstream: &Path, faults: &[&str]) -> (Proc, PathBuf) {
    let front = dir.join("front.sock");
    let mut args: Vec<OsString> = vec![
        "proxy".into(),
        "--listen".into(),
        front.clone().into(),
        "--upstream".into(),
        upstream.into(),
        "--seed".into(),
        "9".into(),
    ];
    for fault in faults {
        args.push("--fault".into());
        args.push((*fault).into());
    }
    let mut proc = Proc::spawn(&args, None);
    let first = proc.stderr_until("announcing readiness", |_| true);
    assert_eq!(
        first,
        format!("proxying {} -> {}", front.display(), upstream.display())
    );
    (proc, front)
}

fn fault_lines(done: &Done) -> Vec<serde_json::Value> {
    done.stderr
        .iter()
        .filter(|l| l.starts_with("{\"fault\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn proxy_between_two_processes_corrupts_the_aimed_frame_and_prints_each_fault() {
    let dir = tempdir();
    let mut listener = Listener::start(dir.path(), &["--format", "hex", "--count", "3"]);
    let (proxy, front) = start_proxy(
        dir.path(),
        &listener.path,
        &["fragment:1-2", "corrupt-body:1"],
    );
    let sent = send(&front, &["aaaa", "bbbb", "cccc"], None);
    assert_eq!(sent.code(), Some(0), "{sent:#?}");
    let lines: Vec<Vec<u8>> = (0..3).map(|_| listener.proc.stdout_line()).collect();
    assert_eq!(lines[0], b"61616161\n");
    assert_ne!(lines[1], b"62626262\n", "frame 1 went through unchanged");
    assert_eq!(lines[2], b"63636363\n");
    let listened = listener.finish();
    assert_eq!(listened.listen_stats().received, 3);

    proxy.signal(Signal::SIGINT);
    let done = proxy.finish();
    assert_eq!(done.code(), Some(0), "{done:#?}");
    assert!(!front.exists(), "the proxy left its socket file behind");
    let faults = fault_lines(&done);
    let names: Vec<&str> = faults
        .iter()
        .map(|f| f["fault"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"fragment"), "{done:#?}");
    let corrupt = faults
        .iter()
        .find(|f| f["fault"] == "corrupt-body")
        .unwrap();
    assert_eq!(corrupt["frame"], 1);
    assert_eq!(corrupt["conn"], 1);
    let stats: serde_json::Value = serde_json::from_str(done.last_stderr_line()).unwrap();
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["bytes_to_upstream"], 15);
}

#[test]
fn proxy_cuts_after_n_frames_and_the_sender_delivers_the_rest_on_a_new_connection() {
    let dir = tempdir();
    let mut listener = Listener::start(dir.path(), &["--count", "3"]);
    let (proxy, front) = start_proxy(dir.path(), &listener.path, &["drop-after-frames:2"]);
    let mut stream = UnixStream::connect(&front).unwrap();
    stream
        .write_all(&[frame(b"one"), frame(b"two"), frame(b"three")].concat())
        .unwrap();
    assert_eq!(listener.proc.stdout_line(), b"one\n");
    assert_eq!(listener.proc.stdout_line(), b"two\n");
    // The third frame was cut off: this connection is closed by the proxy.
    assert_closed_by_reader(&mut stream);
    let sent = send(&front, &["three"], None);
    assert_eq!(sent.code(), Some(0), "{sent:#?}");
    assert_eq!(listener.proc.stdout_line(), b"three\n");
    listener.finish();

    proxy.signal(Signal::SIGTERM);
    let done = proxy.finish();
    assert_eq!(done.code(), Some(0), "{done:#?}");
    let cut = fault_lines(&done)
        .into_iter()
        .find(|f| f["fault"] == "drop-after-frames")
        .unwrap_or_else(|| panic!("no drop event: {done:#?}"));
    assert_eq!(cut["byte_offset"], 8);
    assert_eq!(cut["closed_connection"], true);
    assert_eq!(cut["discarded_bytes"], 6, "the whole third frame");
}

#[rstest]
#[case::unknown("explode:1", "unknown fault `explode`")]
#[case::bad_range("fragment:9-2", "need 1 <= MIN <= MAX")]
#[case::not_a_number("drop-after-frames:lots", "N must be a whole number")]
#[case::missing_argument("stall:10", "takes 2 argument(s)")]
fn proxy_refuses_an_invalid_fault_spec_naming_it_and_the_valid_forms(
    #[case] spec: &str,
    #[case] problem: &str,
) {
    let dir = tempdir();
    let front = dir.path().join("front.sock");
    let done = udsipc(&[
        "proxy",
        "--listen",
        front.to_str().unwrap(),
        "--upstream",
        "/nonexistent.sock",
        "--fault",
        spec,
    ]);
    assert_eq!(done.code(), Some(2), "{done:#?}");
    let err = done.stderr.join("\n");
    assert!(err.contains(&format!("`{spec}`")), "{err}");
    assert!(err.contains(problem), "{err}");
    for form in [
        "fragment:MIN-MAX[:PAUSE_MS]",
        "refuse:AFTER_MS:FOR_MS",
        "reset:AFTER_FRAMES",
    ] {
        assert!(err.contains(form), "{form} missing: {err}");
    }
    assert!(!front.exists(), "nothing may be bound on bad arguments");
}
