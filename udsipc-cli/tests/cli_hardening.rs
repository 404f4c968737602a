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
