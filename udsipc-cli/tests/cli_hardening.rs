//! The `udsipc` binary against hostile arguments and surroundings: durations
//! past the clock, a socket directory anyone can write, and signals during
//! `send`'s drain. Real processes, real sockets; every wait is bounded.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rstest::rstest;

const BIN: &str = env!("CARGO_BIN_EXE_udsipc");

/// The bound on every wait; generous, because CI machines stall.
const WAIT: Duration = Duration::from_secs(30);

/// A running `udsipc` whose stderr is read line by line on a thread.
struct Proc {
    child: Child,
    stderr: Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(args: &[&str], stdin: Stdio) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to start the udsipc binary");
        let (tx, stderr) = channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line starting with `prefix`.
    fn stderr_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(e) => panic!("no stderr line {prefix:?} ({e:?}); saw {:#?}", self.seen),
            }
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, signal).expect("kill failed");
    }

    /// Waits (bounded) for the exit; the remaining stderr lines are kept.
    fn wait(mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.seen.extend(self.stderr.iter());
                return (status, self.seen);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("udsipc did not exit; stderr {:#?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("udsipc-cli")
        .tempdir()
        .unwrap()
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::try_from(body.len()).unwrap()];
    out.extend_from_slice(body);
    out
}

#[rstest]
#[case::inactivity_timeout(&["listen", "SOCK", "--inactivity-timeout", "1e20"])]
#[case::drain_timeout(&["send", "SOCK", "--drain-timeout", "1e20", "x"])]
fn a_duration_past_the_largest_is_a_clear_usage_error(#[case] args: &[&str]) {
    let dir = tempdir();
    let sock = dir.path().join("s.sock");
    let args: Vec<&str> = args
        .iter()
        .map(|a| {
            if *a == "SOCK" {
                sock.to_str().unwrap()
            } else {
                a
            }
        })
        .collect();
    let (status, stderr) = Proc::spawn(&args, Stdio::null()).wait();
    assert_eq!(status.code(), Some(2), "{stderr:#?}");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("at most 1.845e19 seconds")),
        "{stderr:#?}"
    );
}

#[test]
fn listen_takes_an_inactivity_timeout_of_1e19_as_never() {
    let dir = tempdir();
    let sock = dir.path().join("s.sock");
    let mut listen = Proc::spawn(
        &[
            "listen",
            sock.to_str().unwrap(),
            "--inactivity-timeout",
            "1e19",
            "--count",
            "2",
        ],
        Stdio::null(),
    );
    listen.stderr_line("listening on");
    // Two whole messages, then one cut in half: the half waits with no
    // deadline until the stop (after --count) cuts it.
    let mut wire = frame(b"one");
    wire.extend(frame(b"two"));
    wire.extend([9, b'h']);
    let mut a = UnixStream::connect(&sock).unwrap();
    a.write_all(&wire).unwrap();
    let (status, stderr) = listen.wait();
    assert_eq!(status.code(), Some(0), "{stderr:#?}");
    assert!(
        !stderr.iter().any(|l| l.contains("panicked")),
        "{stderr:#?}"
    );
}

#[test]
fn listen_warns_when_anyone_can_replace_its_socket() {
    let dir = tempdir();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let sock = open.join("s.sock");
    let mut listen = Proc::spawn(
        &["listen", sock.to_str().unwrap(), "--count", "1"],
        Stdio::null(),
    );
    let warning = listen.stderr_line("warning:");
    assert!(warning.contains("writable by others"), "{warning}");
    assert!(warning.contains(open.to_str().unwrap()), "{warning}");
    listen.stderr_line("listening on");
    UnixStream::connect(&sock)
        .unwrap()
        .write_all(&frame(b"x"))
        .unwrap();
    assert_eq!(listen.wait().0.code(), Some(0));
}

#[test]
fn listen_is_silent_about_a_sticky_world_writable_directory() {
    let dir = tempdir();
    let sticky = dir.path().join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let sock = sticky.join("s.sock");
    let mut listen = Proc::spawn(
        &["listen", sock.to_str().unwrap(), "--count", "1"],
        Stdio::null(),
    );
    let first = listen.stderr_line("");
    assert!(first.starts_with("listening on"), "{first}");
    UnixStream::connect(&sock)
        .unwrap()
        .write_all(&frame(b"x"))
        .unwrap();
    assert_eq!(listen.wait().0.code(), Some(0));
}

/// `send` with nobody listening and a drain that would never end: a signal
/// during the drain discards what is left and exits at once, with the
/// stats line. `input_open`: stdin stays open, so the first signal stops
/// reading input and starts the drain, and the second one ends it.
///
/// The first signal may come before `send` has queued a line (stdin is
/// read on a blocking thread): such a run still must account for
/// everything (`discarded == queued`, both 0), and is run again, until one
/// run had something queued to discard.
#[rstest]
#[case::signal_during_the_drain(false, Signal::SIGTERM)]
#[case::second_signal(true, Signal::SIGINT)]
fn a_signal_during_sends_drain_discards_and_exits_at_once(
    #[case] input_open: bool,
    #[case] signal: Signal,
) {
    let dir = tempdir();
    let sock = dir.path().join("nobody.sock");
    let sock = sock.to_str().unwrap();
    let mut queued_runs = 0;
    for _ in 0..10 {
        let stats = signal_a_draining_send(sock, input_open, signal);
        if stats["queued"].as_u64().unwrap() > 0 {
            queued_runs += 1;
            break;
        }
    }
    assert_eq!(
        queued_runs, 1,
        "no run had queued a message before the signal"
    );
}

/// One run of [`a_signal_during_sends_drain_discards_and_exits_at_once`]:
/// checks the exit and the accounting, returns the stats line.
fn signal_a_draining_send(sock: &str, input_open: bool, signal: Signal) -> serde_json::Value {
    let (args, stdin): (Vec<&str>, Stdio) = if input_open {
        (
            vec!["send", sock, "--drain-timeout", "1e10"],
            Stdio::piped(),
        )
    } else {
        (
            vec!["send", sock, "--drain-timeout", "1e10", "hello"],
            Stdio::null(),
        )
    };
    let mut send = Proc::spawn(&args, stdin);
    if input_open {
        let mut pipe = send.child.stdin.take().unwrap();
        // More than a pipe holds: once written, `send` has read most of it.
        pipe.write_all(&b"hello\n".repeat(20_000)).unwrap();
        // Held open: only a signal ends the input.
        std::mem::forget(pipe);
    }
    // Connecting fails (nobody listens): what is queued stays undelivered.
    send.stderr_line("warning:");
    if input_open {
        send.signal(signal);
        send.stderr_line("warning: interrupted");
    }
    send.signal(signal);
    let (status, stderr) = send.wait();
    assert_eq!(status.code(), Some(1), "{stderr:#?}");
    let stats: serde_json::Value = serde_json::from_str(stderr.last().unwrap()).unwrap();
    assert_eq!(stats["discarded"], stats["queued"], "{stderr:#?}");
    assert_eq!(stats["sent"], 0, "{stderr:#?}");
    if stats["queued"].as_u64().unwrap() > 0 {
        assert!(
            stderr.iter().any(|l| l.contains("discarded")),
            "{stderr:#?}"
        );
    }
    stats
}

#[test]
fn send_hex_reports_a_non_ascii_character_escaped_once() {
    let dir = tempdir();
    let sock = dir.path().join("s.sock");
    let args = ["send", sock.to_str().unwrap(), "--hex", "0é"];
    let (status, stderr) = Proc::spawn(&args, Stdio::null()).wait();
    assert_eq!(status.code(), Some(2), "{stderr:#?}");
    assert!(
        stderr.iter().any(|l| l
            == r#"error: MESSAGE argument 1: invalid hex: "é" at position 2 is not a hex digit"#),
        "{stderr:#?}"
    );
}

/// A writer's terminal control sequences: a window title (OSC), clear
/// screen and a cursor move (CSI), backspace, DEL, the 8-bit CSI U+009B,
/// a carriage return and a newline; a tab is kept.
const HOSTILE: &[u8] = b"\x1b]0;pwned\x07\x1b[2J\x1b[1;1H\x08\x7f\xc2\x9b31m\ta\rb\nc";

fn listen_one(format: &str, msg: &[u8]) -> Vec<u8> {
    let dir = tempdir();
    let sock = dir.path().join("s.sock");
    let mut listen = Proc::spawn(
        &[
            "listen",
            sock.to_str().unwrap(),
            "--format",
            format,
            "--count",
            "1",
        ],
        Stdio::null(),
    );
    listen.stderr_line("listening on");
    let mut wire = vec![u8::try_from(msg.len()).unwrap()];
    wire.extend_from_slice(msg);
    UnixStream::connect(&sock)
        .unwrap()
        .write_all(&wire)
        .unwrap();
    let mut stdout = listen.child.stdout.take().unwrap();
    let (status, stderr) = listen.wait();
    assert_eq!(status.code(), Some(0), "{stderr:#?}");
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut stdout, &mut out).unwrap();
    out
}

#[test]
fn listen_text_shows_terminal_controls_escaped() {
    let out = listen_one("text", HOSTILE);
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[1;1H\\x08\\x7f\\u{9b}31m\ta\\rb\\nc\n"
    );
    // Nothing a terminal acts on but the tab and the line's end.
    let line = &out[..out.len() - 1];
    assert!(
        !line
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f || b == 0xc2),
        "{out:?}"
    );
}

#[test]
fn listen_raw_passes_the_bytes_unchanged_for_pipes() {
    let mut expected = HOSTILE.to_vec();
    expected.push(b'\n');
    assert_eq!(listen_one("raw", HOSTILE), expected);
}

/// Writes `input` to `send`'s stdin on a thread, counting what the pipe
/// took; the thread ends when all is written or the pipe closes.
fn feed(
    send: &mut Proc,
    input: Vec<u8>,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::thread::JoinHandle<()>,
) {
    let mut pipe = send.child.stdin.take().unwrap();
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = taken.clone();
    let thread = std::thread::spawn(move || {
        for piece in input.chunks(16 * 1024) {
            if pipe.write_all(piece).is_err() {
                return;
            }
            counter.fetch_add(piece.len(), std::sync::atomic::Ordering::SeqCst);
        }
    });
    (taken, thread)
}

#[rstest]
#[case::text(&[], b'a')]
#[case::hex(&["--hex"], b'0')]
fn send_refuses_a_line_longer_than_a_message_may_be(#[case] flags: &[&str], #[case] fill: u8) {
    let dir = tempdir();
    let sock = dir.path().join("nobody.sock");
    let mut args = vec!["send", sock.to_str().unwrap(), "--drain-timeout", "0"];
    args.extend_from_slice(flags);
    let mut send = Proc::spawn(&args, Stdio::piped());
    // A first line, then one past the limit (10 MiB; in hex, twice that
    // many digits) that never ends.
    let mut input = if flags.is_empty() {
        b"ok\n".to_vec()
    } else {
        b"00\n".to_vec()
    };
    input.resize(
        input.len() + 2 * (udsipc::DEFAULT_MAX_MESSAGE_SIZE as usize) + 16,
        fill,
    );
    let (_taken, _thread) = feed(&mut send, input);
    let (status, stderr) = send.wait();
    assert_eq!(status.code(), Some(2), "{stderr:#?}");
    assert!(
        stderr.iter().any(|l| l.starts_with("error: stdin line 2: ")
            && l.contains("longer than")
            && l.contains("10485760")),
        "{stderr:#?}"
    );
    let stats: serde_json::Value = serde_json::from_str(stderr.last().unwrap()).unwrap();
    assert_eq!(stats["queued"], 1, "{stderr:#?}");
}

#[test]
fn sends_queue_is_bounded_in_bytes_while_nobody_listens() {
    const LINES: usize = 64;
    let dir = tempdir();
    let sock = dir.path().join("later.sock");
    let mut send = Proc::spawn(
        &["send", sock.to_str().unwrap(), "--drain-timeout", "30"],
        Stdio::piped(),
    );
    let mut line = vec![b'x'; 1 << 20];
    line.push(b'\n');
    let (taken, thread) = feed(&mut send, line.repeat(LINES));
    // Nobody listens: `send` stops reading once its queue holds its byte
    // bound, long before the 64 MiB are in.
    send.stderr_line("warning:");
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !thread.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let held = taken.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        held < 24 << 20,
        "send took {held} bytes of stdin with nobody listening"
    );
    // A listener comes: every line is delivered.
    let mut listen = Proc::spawn(
        &[
            "listen",
            sock.to_str().unwrap(),
            "--format",
            "len",
            "--count",
            &LINES.to_string(),
        ],
        Stdio::null(),
    );
    listen.stderr_line("listening on");
    thread.join().unwrap();
    let (status, stderr) = send.wait();
    assert_eq!(status.code(), Some(0), "{stderr:#?}");
    let stats: serde_json::Value = serde_json::from_str(stderr.last().unwrap()).unwrap();
    assert_eq!(stats["delivered"], LINES, "{stderr:#?}");
    assert_eq!(listen.wait().0.code(), Some(0));
}
