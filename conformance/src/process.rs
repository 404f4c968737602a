//! Peer processes: starting one with its output read on threads, its
//! stderr tagged with the case and arm it serves, and every wait on it
//! bounded: answers, stdin writes and its exit each have a deadline, after
//! which the case fails with what it was waiting for and the process is
//! killed. What a peer *means* (roles, flags, counters) is [`crate::peer`]'s.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::events::{Event, Events, PATIENCE, from_hex};

thread_local! {
    static LABEL: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// Names the peers this thread starts from now on (`"CASE ARM"`): their
/// stderr lines are printed as `[CASE ARM] PEER ROLE: line`, and
/// [`end_peers_of`] can end them. A case body that starts peers from
/// threads of its own passes [`label`] on with this.
pub fn set_label(label: Option<Arc<str>>) {
    LABEL.with(|l| *l.borrow_mut() = label);
}

/// The label of the peers this thread starts (see [`set_label`]).
pub fn label() -> Option<Arc<str>> {
    LABEL.with(|l| l.borrow().clone())
}

/// Peer processes still running, by label: what [`end_peers_of`] kills.
/// An entry's flag is set once the process is reaped, so a PID the kernel
/// may have given to another process is never signalled.
type Live = Mutex<Vec<(Arc<str>, i32, Arc<AtomicBool>)>>;
static LIVE: Live = Mutex::new(Vec::new());

/// Kills every peer process started under `label` that is still running
/// (the runner's last resort for a case that overran its budget).
pub fn end_peers_of(label: &str) {
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    for (l, pid, reaped) in live.iter() {
        if &**l == label && !reaped.load(Ordering::SeqCst) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    live.retain(|(_, _, reaped)| !reaped.load(Ordering::SeqCst));
}

/// The JSON lines of a peer other than messages and errors (its
/// *answers*: `ready`, `write`, `metrics`, `stopped`, and any event the
/// suite does not know), kept in order and looked up by kind.
#[derive(Debug, Default)]
pub(crate) struct Answers {
    lines: Mutex<(Vec<Value>, bool)>,
    cv: Condvar,
}

impl Answers {
    fn push(&self, v: Value) {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .push(v);
        self.cv.notify_all();
    }

    fn end(&self) {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.cv.notify_all();
    }

    /// Waits until `deadline` for the `n`-th (0-based) line whose `event`
    /// is `kind`; lines of other kinds are skipped, so a peer may print
    /// events the suite does not know (PEERS.md).
    fn nth(&self, kind: &str, n: usize, within: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + within;
        let mut guard = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let (lines, ended) = &*guard;
            if let Some(v) = lines.iter().filter(|v| v["event"] == kind).nth(n) {
                return Ok(v.clone());
            }
            if *ended {
                return Err(format!(
                    "the peer's output ended without a `{kind}` line (#{})",
                    n + 1
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "waited {within:?} for a `{kind}` line (#{}) from the peer",
                    n + 1
                ));
            }
            guard = self
                .cv
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A running peer process.
#[derive(Debug)]
pub(crate) struct PeerProcess {
    child: Child,
    reaped: Arc<AtomicBool>,
    answers: Arc<Answers>,
    /// How many answers of each kind were taken.
    taken: HashMap<String, usize>,
    stdin: Option<ChildStdin>,
    /// Ends (disconnects) once every stderr line was printed.
    stderr_done: Option<std::sync::mpsc::Receiver<()>>,
}

impl PeerProcess {
    /// Starts `cmd` (`who`: e.g. `Go reader`, in tagged stderr lines):
    /// messages and errors it prints go to `events`, its answers are kept
    /// for [`next`](Self::next), its stderr is tagged with the thread's
    /// [`label`].
    pub(crate) fn spawn(cmd: &mut Command, who: &str, events: Events) -> Result<Self, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning the {who}: {e}"))?;
        let reaped = Arc::new(AtomicBool::new(false));
        let label = label().unwrap_or_else(|| Arc::from("-"));
        {
            let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
            live.retain(|(_, _, r)| !r.load(Ordering::SeqCst));
            live.push((label.clone(), child.id() as i32, reaped.clone()));
        }
        let answers = Arc::new(Answers::default());
        if let Some(stdout) = child.stdout.take() {
            let answers = answers.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let Ok(v) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    match v["event"].as_str() {
                        Some("message") => {
                            events.push(Event::Message(from_hex(v["hex"].as_str().unwrap_or(""))))
                        }
                        Some("error") => events
                            .push(Event::Error(v["context"].as_str().unwrap_or("").to_owned())),
                        _ => answers.push(v),
                    }
                }
                answers.end();
            });
        }
        let stderr_done = child.stderr.take().map(|stderr| {
            let who = who.to_owned();
            let (done, stderr_done) = std::sync::mpsc::channel::<()>();
            std::thread::spawn(move || {
                let _done = done;
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[{label}] {who}: {line}");
                }
            });
            stderr_done
        });
        let stdin = child.stdin.take();
        if let Some(s) = &stdin {
            // Writes wait with a deadline (`write_line`), never forever on
            // a peer that stopped reading.
            use nix::fcntl::{F_GETFL, F_SETFL, OFlag, fcntl};
            use std::os::fd::AsRawFd;
            let fd = s.as_raw_fd();
            let flags = fcntl(fd, F_GETFL).map_err(|e| e.to_string())?;
            fcntl(
                fd,
                F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(Self {
            child,
            reaped,
            answers,
            taken: HashMap::new(),
            stdin,
            stderr_done,
        })
    }

    /// Its process ID.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// The next answer of `kind` (`ready`, `write`, `metrics`, `stopped`),
    /// waited for until `within` has passed.
    pub(crate) fn next(&mut self, kind: &str, within: Duration) -> Result<Value, String> {
        let n = self.taken.entry(kind.to_owned()).or_insert(0);
        let v = self.answers.nth(kind, *n, within)?;
        *n += 1;
        Ok(v)
    }

    /// Writes `line` and a newline to its stdin, waiting at most
    /// [`PATIENCE`] for the peer to make room.
    pub(crate) fn write_line(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("the peer's stdin is closed")?;
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        let deadline = Instant::now() + PATIENCE;
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match stdin.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if !wait_writable(stdin, deadline) {
                        return Err(format!(
                            "waited {PATIENCE:?} for the peer to read its stdin"
                        ));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("writing to the peer's stdin: {e}")),
            }
        }
        Ok(())
    }

    /// Closes its stdin (the end of a writer's input).
    pub(crate) fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Sends `signal` to it.
    pub(crate) fn signal(&self, signal: nix::sys::signal::Signal) -> Result<(), String> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.id() as i32), signal)
            .map_err(|e| format!("{signal} to the peer: {e}"))
    }

    /// Its exit status if it has exited.
    pub(crate) fn try_wait(&mut self) -> Result<Option<ExitStatus>, String> {
        let status = self.child.try_wait().map_err(|e| e.to_string())?;
        if status.is_some() {
            self.reaped.store(true, Ordering::SeqCst);
        }
        Ok(status)
    }

    /// Waits at most `within` for it to exit; past that it is killed and
    /// the wait fails.
    pub(crate) fn wait_within(&mut self, within: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "the peer process did not exit within {within:?} (killed)"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped.store(true, Ordering::SeqCst);
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.kill();
        // Its last stderr lines are printed before the case reports (a
        // process it left behind may hold the pipe open: bounded).
        if let Some(done) = self.stderr_done.take() {
            let _ = done.recv_timeout(Duration::from_secs(2));
        }
    }
}

/// Waits until `fd` can be written without blocking, or `deadline`.
fn wait_writable(fd: &impl AsFd, deadline: Instant) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(n) if n > 0 => return true,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return true,
        }
    }
}
