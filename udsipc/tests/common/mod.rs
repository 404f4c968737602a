//! Helpers shared by the integration tests: temporary socket paths, a
//! collecting handler, raw frame builders and bounded waits.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use udsipc::frame::{Next, encode_frame};

pub mod hunt;

/// How long any test waits for an event before failing (generous: CI
/// machines are noisy, and nothing asserts on speed).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A temporary directory and a socket path inside it.
pub struct TempSock {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn temp_sock() -> TempSock {
    let dir = tempfile::Builder::new().prefix("udsipc").tempdir().unwrap();
    let path = dir.path().join("t.sock");
    TempSock { dir, path }
}

/// A handler that forwards every message to a channel.
pub struct Collector {
    pub rx: mpsc::Receiver<Vec<u8>>,
    tx: mpsc::Sender<Vec<u8>>,
}

impl Collector {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Self { rx, tx }
    }

    pub fn handler(
        &self,
    ) -> impl Fn(&[u8]) -> Result<(), udsipc::HandlerError> + Send + Sync + 'static {
        let tx = Mutex::new(self.tx.clone());
        move |m: &[u8]| {
            tx.lock().unwrap().send(m.to_vec()).unwrap();
            Ok(())
        }
    }

    /// Waits for exactly `n` messages.
    pub fn take(&self, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                self.rx
                    .recv_timeout(PATIENCE)
                    .unwrap_or_else(|_| panic!("message {i} of {n} never arrived"))
            })
            .collect()
    }

    /// Asserts nothing more arrived (after the reader has stopped).
    pub fn assert_empty(&self) {
        assert_eq!(self.rx.try_recv().ok(), None);
    }
}

/// Collects errors reported to a callback.
#[derive(Clone, Default)]
pub struct Errors(pub Arc<Mutex<Vec<String>>>);

impl Errors {
    pub fn reader_callback(&self) -> impl Fn(&udsipc::ReaderError) + Send + Sync + 'static {
        let errs = self.0.clone();
        move |e| errs.lock().unwrap().push(format!("{} | {e}", e.context()))
    }
    pub fn writer_callback(&self) -> impl Fn(&udsipc::WriterError) + Send + Sync + 'static {
        let errs = self.0.clone();
        move |e| errs.lock().unwrap().push(format!("{} | {e}", e.context()))
    }
    pub fn list(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Encodes messages into one wire buffer.
pub fn frames(msgs: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        encode_frame(m, &mut out);
    }
    out
}

/// Polls `cond` until it holds, for at most `PATIENCE`. Only for state that
/// has no event to wait on (counters of another component).
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads from `s` until EOF (or error), with a generous timeout.
pub fn read_to_end(s: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
    use std::io::Read;
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Decodes a byte stream into its complete frames and the leftover bytes.
pub fn split_frames(wire: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let d = udsipc::frame::FrameDecoder::new(u64::MAX);
    let (mut out, mut at) = (Vec::new(), 0);
    while let Ok(Next::Frame { body, consumed }) = d.decode(&wire[at..]) {
        out.push(wire[at..][body].to_vec());
        at += consumed;
    }
    (out, wire.len() - at)
}

impl TempSock {
    /// A Reader on this socket with default options (systemd ignored) whose
    /// messages go to `c`.
    pub fn reader(&self, c: &Collector) -> udsipc::Reader {
        udsipc::Reader::builder(&self.path)
            .systemd(false)
            .start(c.handler())
            .unwrap()
    }
}

/// This test binary re-run as a child that runs one ignored test body
/// (`test_name`), with a line protocol: the child prints words on stdout,
/// the parent writes words to its stdin.
pub struct ChildTest {
    /// The child process.
    pub child: std::process::Child,
    /// Its stdin; dropping it tells the child to finish.
    pub stdin: Option<std::process::ChildStdin>,
    said: std::sync::mpsc::Receiver<String>,
}

impl ChildTest {
    /// Starts `test_name` in a child with `envs` set.
    pub fn spawn(test_name: &str, envs: &[(&str, String)]) -> Self {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", test_name, "--nocapture"])
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, said) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Self { child, stdin, said }
    }

    /// Waits (at most `patience`) for a line starting with `word`; returns it.
    pub fn wait_for(&self, word: &str, patience: Duration) -> String {
        loop {
            let line = self
                .said
                .recv_timeout(patience)
                .unwrap_or_else(|_| panic!("the child never said {word:?}"));
            if line.starts_with(word) {
                return line;
            }
        }
    }

    /// Writes `word` as one line to the child's stdin.
    pub fn say(&mut self, word: &str) {
        use std::io::Write;
        writeln!(self.stdin.as_mut().unwrap(), "{word}").unwrap();
    }

    /// Closes stdin and waits for the child to exit successfully.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child test: {status}");
    }
}

/// Bytes written on `s` that its peer has not read yet (`SIOCOUTQ`): falls
/// to exactly 0 once the peer has read everything.
pub fn unread(s: &std::os::unix::net::UnixStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: nix::libc::c_int = 0;
    // SAFETY: TIOCOUTQ (= SIOCOUTQ) writes one c_int through the pointer,
    // which points to a live local; the fd is open for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { nix::libc::ioctl(s.as_raw_fd(), nix::libc::TIOCOUTQ, &mut n) };
    assert_eq!(rc, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    n as usize
}

/// A field of `/proc/self/status` (e.g. `VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// This process's resident memory, in KiB.
pub fn rss_kib() -> usize {
    status_kib("VmRSS")
}

/// A Writer to `path` with room for `capacity` messages that redials after
/// `backoff` (at first and at most).
pub fn writer_with_backoff(
    path: &std::path::Path,
    capacity: usize,
    backoff: Duration,
) -> udsipc::Writer {
    udsipc::Writer::builder(path)
        .max_buffered_writes(capacity)
        .initial_backoff(backoff)
        .max_backoff(backoff)
        .start()
        .unwrap()
}
