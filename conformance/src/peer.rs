//! Reader and writer peers of either implementation behind one interface,
//! so a case body is written once and run in every arm.
//!
//! Peers other than the in-process Rust one are child processes speaking
//! the peer contract (`conformance/PEERS.md`: `read` / `write` roles, JSON
//! lines on stdout): go-peer, the Python peer, or any command; the Rust
//! peers are `udsipc::Reader` / `udsipc::Writer` in the test process. Every observation is an event
//! waited for with generous patience, never a timing assertion.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use crate::events::{Event, Events, PATIENCE, from_hex};
use crate::gopeer::go_peer;
use crate::process::PeerProcess;

/// How a peer is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// This crate's `udsipc::Reader` / `udsipc::Writer` inside the test
    /// process (in its own process, `udsipc peer`, where one is needed).
    InProcessRust,
    /// `go-peer/`, built on first use.
    GoPeer,
    /// `py-peer/udsipc_peer.py` run by `python3`.
    PyPeer,
    /// Any program speaking the peer contract (`conformance/PEERS.md`):
    /// the argv before the role.
    Command(Vec<String>),
}

/// Which behaviour a peer is judged by where the Go reference departs from
/// PROTOCOL.md (the by-design cases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// PROTOCOL.md's rules (this crate, the Python peer, any new port).
    Spec,
    /// The Go reference's observed behaviour, documented next to each rule.
    GoReference,
}

/// One implementation under test.
#[derive(Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// The name in arms and reports (`Go`, `Rust`, `Py`, or as given).
    pub name: String,
    /// How to run it.
    pub program: Program,
    /// Judged by the Go reference's documented behaviour where it departs
    /// from PROTOCOL.md (its `hello` line says `"profile":"go-reference"`);
    /// every other peer is judged by the spec.
    pub go_reference: bool,
    /// The capabilities its `hello` listed (PEERS.md), `None` when it
    /// listed none: then every capability is assumed.
    pub capabilities: Option<Vec<String>>,
}

/// Which implementation plays a role: a handle to its [`PeerSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Impl(pub &'static PeerSpec);

#[allow(non_upper_case_globals)]
impl Impl {
    /// The Go reference through go-peer.
    pub const Go: Impl = Impl(&PeerSpec {
        name: String::new(),
        program: Program::GoPeer,
        go_reference: true,
        capabilities: None,
    });
    /// This crate's udsipc, in-process.
    pub const Rust: Impl = Impl(&PeerSpec {
        name: String::new(),
        program: Program::InProcessRust,
        go_reference: false,
        capabilities: None,
    });
    /// The independent Python peer, written from PROTOCOL.md alone.
    pub const Py: Impl = Impl(&PeerSpec {
        name: String::new(),
        program: Program::PyPeer,
        go_reference: false,
        capabilities: None,
    });

    /// A peer given as a command (lives for the rest of the process).
    pub fn command(
        name: &str,
        argv: Vec<String>,
        go_reference: bool,
        capabilities: Option<Vec<String>>,
    ) -> Impl {
        Impl(Box::leak(Box::new(PeerSpec {
            name: name.to_owned(),
            program: Program::Command(argv),
            go_reference,
            capabilities,
        })))
    }

    /// The built-in peer called `name` (`Go`, `Rust`, `Py`).
    pub fn builtin(name: &str) -> Option<Impl> {
        match name {
            "Go" => Some(Self::Go),
            "Rust" => Some(Self::Rust),
            "Py" => Some(Self::Py),
            _ => None,
        }
    }

    /// Its name in arms and reports.
    pub fn name(self) -> &'static str {
        match &self.0.program {
            Program::GoPeer => "Go",
            Program::InProcessRust => "Rust",
            Program::PyPeer => "Py",
            Program::Command(_) => &self.0.name,
        }
    }

    /// Whether the Go reference's documented departures apply.
    pub fn is_go_reference(self) -> bool {
        self.0.go_reference
    }

    /// Which behaviour it is judged by.
    pub fn profile(self) -> Profile {
        if self.0.go_reference {
            Profile::GoReference
        } else {
            Profile::Spec
        }
    }

    /// Whether it has `capability` (see [`crate::capability`]).
    pub fn supports(self, capability: &str) -> bool {
        self.0
            .capabilities
            .as_ref()
            .is_none_or(|c| c.iter().any(|x| x == capability))
    }

    /// Whether it runs inside this process.
    fn in_process(self) -> bool {
        self.0.program == Program::InProcessRust
    }

    /// The argv of this peer as a program (role and flags follow).
    pub fn argv(self) -> Result<Vec<std::ffi::OsString>, String> {
        Ok(match &self.0.program {
            Program::GoPeer => vec![go_peer().map_err(|e| e.to_string())?.into()],
            Program::InProcessRust => vec![rust_peer()?.into(), "peer".into()],
            Program::PyPeer => vec![
                python()?.into(),
                // No site packages: the peer is standard library only, and
                // it starts faster.
                "-S".into(),
                crate::crate_dir().join("py-peer/udsipc_peer.py").into(),
            ],
            Program::Command(argv) => argv.iter().map(Into::into).collect(),
        })
    }
}

/// The Python interpreter: `$PYTHON` or `python3`.
fn python() -> Result<String, String> {
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    if Command::new(&py)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        Ok(py)
    } else {
        Err(format!(
            "{py} not found: the Python peer needs Python 3.8 or newer (ci/test installs python3)"
        ))
    }
}

/// Reader options both implementations understand.
#[derive(Debug, Clone, Default)]
pub struct ReaderOpts {
    /// `WithMaxMessageSize` / `max_message_size`.
    pub max_message_size: Option<u64>,
    /// `WithInactivityTimeout` / `inactivity_timeout`.
    pub inactivity_timeout: Option<Duration>,
    /// The handler returns an error for a message equal to this.
    pub fail_on: Option<Vec<u8>>,
    /// The handler panics on a message equal to this.
    pub panic_on: Option<Vec<u8>>,
    /// Admit only peers running as this user (`allow_uid`; Go has no such
    /// option).
    pub allow_uid: Option<u32>,
    /// `WithMaxAcceptErrors` / `max_accept_errors`.
    pub max_accept_errors: Option<u32>,
    /// The handler sleeps this long on a message equal to this.
    pub pause_on: Option<(Vec<u8>, Duration)>,
}

/// A reader's counters when it stopped (Go's `GetMetrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderCounts {
    /// Messages handled successfully.
    pub received: u64,
    /// Connections accepted (Go also counts the connection its own `Stop`
    /// makes to wake its accept loop).
    pub connections: u64,
    /// Errors counted.
    pub errors: u64,
    /// What its stop reported (`""`: it ended within its deadline).
    pub stop_error: String,
}

/// A writer's counters when it stopped (Go's `GetMetrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterCounts {
    /// Messages written to a connection.
    pub sent: u64,
    /// Messages refused because the queue was full.
    pub dropped: u64,
    /// Messages given up for good: neither written whole nor kept for a
    /// retry (PEERS.md's one definition; a failed write that is retried is
    /// not counted, nor what a stop's deadline discards).
    pub failed: u64,
}

/// The command line of `imp` in `role` with `args`, run through
/// `wrapper` (e.g. `prlimit --nofile=64:64`) when it is not empty.
fn peer_command(
    imp: Impl,
    args: &[&str],
    env: &[(&str, &str)],
    wrapper: &[&str],
) -> Result<Command, String> {
    let mut argv: Vec<std::ffi::OsString> = wrapper.iter().map(Into::into).collect();
    argv.extend(imp.argv()?);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).args(args).envs(env.iter().copied());
    Ok(cmd)
}

/// Starts `imp` in `role` (`read` or `write`) and waits for its `ready`.
fn start_process(
    imp: Impl,
    args: &[&str],
    env: &[(&str, &str)],
    wrapper: &[&str],
    events: Events,
) -> Result<PeerProcess, String> {
    let role = args.first().copied().unwrap_or("");
    let who = format!("{} {role}", imp.name());
    let mut proc = PeerProcess::spawn(&mut peer_command(imp, args, env, wrapper)?, &who, events)?;
    let ready = proc
        .next("ready", PATIENCE + PATIENCE)
        .map_err(|e| unsupported_or(&mut proc, e))?;
    if ready["event"] != "ready" {
        return Err(format!("{who}: expected ready, got {ready}"));
    }
    Ok(proc)
}

/// The start of a case detail that means "this peer does not support the
/// role or a flag the case needs" (it exited 127, PEERS.md).
pub const UNSUPPORTED: &str = "unsupported: ";

/// Replaces `e` by an [`UNSUPPORTED`] detail when the peer exited 127.
fn unsupported_or(proc: &mut PeerProcess, e: String) -> String {
    // Its stdout ended, so it is exiting: give it a moment to be reaped.
    match proc.wait_within(Duration::from_secs(2)) {
        Ok(status) if status.code() == Some(127) => {
            format!("{UNSUPPORTED}the peer exited 127 ({e})")
        }
        Ok(status) => format!("{e} (the peer exited with {status})"),
        Err(_) => e,
    }
}

/// A running reader of either implementation.
#[derive(Debug)]
pub struct ReaderPeer {
    /// What it delivered and reported.
    pub events: Events,
    kind: ReaderKind,
}

#[derive(Debug)]
enum ReaderKind {
    /// A peer program, or a reader under systemd-socket-activate.
    Process(PeerProcess),
    Rust(udsipc::Reader),
}

impl ReaderPeer {
    /// Starts a reader on `path` and waits until it listens.
    pub fn start(imp: Impl, path: &Path, opts: &ReaderOpts) -> Result<Self, String> {
        Self::start_env(imp, path, opts, &[])
    }

    /// Starts a reader with extra environment variables: always in a
    /// process of its own (`udsipc peer` for the Rust peer), since the
    /// environment is per process.
    pub fn start_env(
        imp: Impl,
        path: &Path,
        opts: &ReaderOpts,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        Self::start_wrapped(imp, path, opts, env, &[])
    }

    /// [`start_env`](Self::start_env), the peer run through `wrapper` (e.g.
    /// `prlimit --nofile=64:64`) when it is not empty.
    pub fn start_wrapped(
        imp: Impl,
        path: &Path,
        opts: &ReaderOpts,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Result<Self, String> {
        let events = Events::default();
        match imp.in_process() && env.is_empty() && wrapper.is_empty() {
            false => {
                let mut args = vec!["read".to_owned(), "--socket".into(), path_str(path)];
                if let Some(n) = opts.max_message_size {
                    args.extend(["--max-message-size".into(), n.to_string()]);
                }
                if let Some(d) = opts.inactivity_timeout {
                    args.extend([
                        "--inactivity-timeout".into(),
                        format!("{}ms", d.as_millis()),
                    ]);
                }
                if let Some(m) = &opts.fail_on {
                    args.extend(["--fail-on".into(), crate::to_hex(m)]);
                }
                if let Some(m) = &opts.panic_on {
                    args.extend(["--panic-on".into(), crate::to_hex(m)]);
                }
                if let Some(uid) = opts.allow_uid {
                    args.extend(["--allow-uid".into(), uid.to_string()]);
                }
                if let Some(n) = opts.max_accept_errors {
                    args.extend(["--max-accept-errors".into(), n.to_string()]);
                }
                if let Some((m, d)) = &opts.pause_on {
                    args.extend([
                        "--pause-on".into(),
                        crate::to_hex(m),
                        "--pause-ms".into(),
                        d.as_millis().to_string(),
                    ]);
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let proc = start_process(imp, &args, env, wrapper, events.clone())?;
                Ok(Self {
                    events,
                    kind: ReaderKind::Process(proc),
                })
            }
            true => {
                let mut b = udsipc::Reader::builder(path);
                if let Some(n) = opts.max_message_size {
                    b = b.max_message_size(n);
                }
                if let Some(d) = opts.inactivity_timeout {
                    b = b.inactivity_timeout(d);
                }
                if let Some(uid) = opts.allow_uid {
                    b = b.allow_uid(uid);
                }
                if let Some(n) = opts.max_accept_errors {
                    b = b.max_accept_errors(n);
                }
                let on_err = events.clone();
                b = b.on_error(move |e| on_err.push(Event::Error(e.context().to_owned())));
                let ev = events.clone();
                let fail_on = opts.fail_on.clone();
                let panic_on = opts.panic_on.clone();
                let pause_on = opts.pause_on.clone();
                let reader = b
                    .start(move |msg| {
                        ev.push(Event::Message(msg.to_vec()));
                        if fail_on.as_deref() == Some(msg) {
                            return Err("rejected by fail_on".into());
                        }
                        if panic_on.as_deref() == Some(msg) {
                            panic!("conformance: panic_on message");
                        }
                        if let Some((m, d)) = &pause_on {
                            if m.as_slice() == msg {
                                std::thread::sleep(*d);
                            }
                        }
                        Ok(())
                    })
                    .map_err(|e| format!("Rust reader start: {e}"))?;
                Ok(Self {
                    events,
                    kind: ReaderKind::Rust(reader),
                })
            }
        }
    }

    /// Starts a reader in its own process under `systemd-socket-activate`,
    /// which creates the socket at `path` and hands it over as fd 3
    /// (`LISTEN_FDS=1`) when the first client connects: `go-peer read`, or
    /// `udsipc peer read` (the `udsipc-cli` binary, the Rust Reader behind
    /// the same contract).
    pub fn start_activated(imp: Impl, path: &Path) -> Result<Self, String> {
        Self::start_activated_via(imp, path, &[])
    }

    /// [`start_activated`](Self::start_activated) with `wrapper` (e.g.
    /// `env -u LISTEN_PID`) between systemd-socket-activate and the peer.
    pub fn start_activated_via(imp: Impl, path: &Path, wrapper: &[&str]) -> Result<Self, String> {
        let argv = imp.argv()?;
        let mut cmd = Command::new("systemd-socket-activate");
        cmd.arg("-l")
            .arg(path)
            .args(wrapper)
            .args(argv)
            .args(["read", "--socket"])
            .arg(path);
        let events = Events::default();
        let who = format!("{} read (socket-activated)", imp.name());
        let proc = PeerProcess::spawn(&mut cmd, &who, events.clone()).map_err(|e| {
            format!(
                "{e} (systemd-socket-activate: install it with `apt-get install systemd`; \
                 ci/test does)"
            )
        })?;
        // Listening, not only bound: a connect between its bind and its
        // listen is refused (seen in CI).
        let deadline = Instant::now() + PATIENCE;
        while !listening(path) {
            if Instant::now() >= deadline {
                return Err("systemd-socket-activate did not listen on the socket".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Self {
            events,
            kind: ReaderKind::Process(proc),
        })
    }

    /// For a reader in its own process: waits (with the suite's patience)
    /// for the process to exit and returns its exit status. `Ok(None)` for
    /// an in-process reader, which has no process to end.
    pub fn wait_exit(&mut self) -> Result<Option<std::process::ExitStatus>, String> {
        let ReaderKind::Process(proc) = &mut self.kind else {
            return Ok(None);
        };
        proc.wait_within(PATIENCE).map(Some)
    }

    /// Stops the reader gracefully and returns its counters.
    pub fn stop(mut self) -> Result<ReaderCounts, String> {
        match &mut self.kind {
            ReaderKind::Process(proc) => {
                proc.signal(nix::sys::signal::Signal::SIGTERM)?;
                // Its own stop deadline is 10 s (PEERS.md): twice the
                // suite's patience is plenty.
                let m = proc.next("metrics", PATIENCE + PATIENCE);
                let _ = proc.wait_within(PATIENCE);
                let m = m?;
                Ok(ReaderCounts {
                    received: m["received"].as_u64().unwrap_or(u64::MAX),
                    connections: m["connections"].as_u64().unwrap_or(u64::MAX),
                    errors: m["errors"].as_u64().unwrap_or(u64::MAX),
                    stop_error: m["stop_error"].as_str().unwrap_or("").to_owned(),
                })
            }
            ReaderKind::Rust(reader) => {
                reader
                    .stop_blocking(Duration::from_secs(10))
                    .map_err(|e| format!("Rust reader stop: {e}"))?;
                let m = reader.metrics();
                Ok(ReaderCounts {
                    received: m.received,
                    connections: m.connections,
                    errors: m.errors,
                    stop_error: String::new(),
                })
            }
        }
    }
}

/// Writer options both implementations understand.
#[derive(Debug, Clone, Default)]
pub struct WriterOpts {
    /// `WithMaxBackoff` / `max_backoff`.
    pub max_backoff: Option<Duration>,
    /// `WithMaxBufferedWrites` / `max_buffered_writes`.
    pub max_buffered_writes: Option<usize>,
    /// `WithWriteTimeout` / `write_timeout`.
    pub write_timeout: Option<Duration>,
}

/// A running writer of either implementation.
#[derive(Debug)]
pub struct WriterPeer {
    kind: WriterKind,
}

#[derive(Debug)]
enum WriterKind {
    Process(PeerProcess),
    Rust(udsipc::Writer),
}

impl WriterPeer {
    /// Starts a writer towards `path` (it connects in the background).
    pub fn start(imp: Impl, path: &Path, opts: &WriterOpts) -> Result<Self, String> {
        match imp.in_process() {
            false => {
                let mut args = vec!["write".to_owned(), "--socket".into(), path_str(path)];
                if let Some(d) = opts.max_backoff {
                    args.extend(["--max-backoff".into(), format!("{}ms", d.as_millis())]);
                }
                if let Some(n) = opts.max_buffered_writes {
                    args.extend(["--max-buffered-writes".into(), n.to_string()]);
                }
                if let Some(d) = opts.write_timeout {
                    args.extend(["--write-timeout".into(), format!("{}ms", d.as_millis())]);
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let proc = start_process(imp, &args, &[], &[], Events::default())?;
                Ok(Self {
                    kind: WriterKind::Process(proc),
                })
            }
            true => {
                let mut b = udsipc::Writer::builder(path);
                if let Some(d) = opts.max_backoff {
                    b = b.max_backoff(d);
                }
                if let Some(n) = opts.max_buffered_writes {
                    b = b.max_buffered_writes(n);
                }
                if let Some(d) = opts.write_timeout {
                    b = b.write_timeout(d);
                }
                let w = b.start().map_err(|e| format!("Rust writer start: {e}"))?;
                Ok(Self {
                    kind: WriterKind::Rust(w),
                })
            }
        }
    }

    /// Queues one message (waiting while the queue is full).
    pub fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        match &mut self.kind {
            WriterKind::Process(proc) => proc.write_line(&crate::to_hex(msg)),
            WriterKind::Rust(w) => {
                let deadline = Instant::now() + PATIENCE;
                loop {
                    match w.try_send(msg) {
                        Ok(()) => return Ok(()),
                        Err(udsipc::WriteError::BufferFull(_)) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(1))
                        }
                        Err(e) => return Err(format!("Rust try_send: {e}")),
                    }
                }
            }
        }
    }

    /// One send attempt that does not wait for queue room: `Ok(Ok(()))` if
    /// the message was accepted, `Ok(Err(text))` if it was refused.
    pub fn try_send(&mut self, msg: &[u8]) -> Result<Result<(), String>, String> {
        match &mut self.kind {
            WriterKind::Process(proc) => {
                proc.write_line(&format!("try {}", crate::to_hex(msg)))?;
                let v = proc.next("write", PATIENCE)?;
                match v["error"].as_str() {
                    Some("") => Ok(Ok(())),
                    Some(e) => Ok(Err(e.to_owned())),
                    None => Err(format!("expected a write line, got {v}")),
                }
            }
            WriterKind::Rust(w) => Ok(w.try_send(msg).map_err(|e| e.to_string())),
        }
    }

    /// The number of messages written so far.
    pub fn sent(&mut self) -> Result<u64, String> {
        match &mut self.kind {
            WriterKind::Process(proc) => {
                proc.write_line("metrics")?;
                let v = proc.next("metrics", PATIENCE)?;
                Ok(v["sent"].as_u64().unwrap_or(0))
            }
            WriterKind::Rust(w) => Ok(w.metrics().sent),
        }
    }

    /// Waits until at least `n` messages were written.
    pub fn wait_sent(&mut self, n: u64) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let sent = self.sent()?;
            if sent >= n {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "waited {PATIENCE:?} for {n} sent; writer sent {sent}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the writer gracefully (drain), then writes `msg`: returns the
    /// counters after the stop, what the late write returned (`Ok` if it was
    /// accepted), and the messages still queued at the end.
    pub fn stop_then_write(
        mut self,
        msg: &[u8],
    ) -> Result<(WriterCounts, Result<(), String>, u64), String> {
        match &mut self.kind {
            WriterKind::Process(proc) => {
                proc.write_line("stop")?;
                // The stop drains with a 30 s deadline (PEERS.md).
                proc.next("stopped", WRITER_STOP)?;
                proc.write_line(&crate::to_hex(msg))?;
                let wrote = proc.next("write", PATIENCE)?;
                let m = finish_writer(proc)?;
                let late = match wrote["error"].as_str() {
                    Some("") => Ok(()),
                    Some(e) => Err(e.to_owned()),
                    None => return Err(format!("go-peer write: expected write, got {wrote}")),
                };
                let queued = m["queue"].as_u64().unwrap_or(u64::MAX);
                Ok((WriterCounts::from_json(&m), late, queued))
            }
            WriterKind::Rust(w) => {
                w.stop_blocking(Duration::from_secs(30))
                    .map_err(|e| format!("Rust writer stop: {e}"))?;
                let late = w.try_send(msg).map_err(|e| e.to_string());
                let m = w.metrics();
                Ok((m.into(), late, m.queue_depth))
            }
        }
    }

    /// Stops the writer gracefully (drain) and returns its counters.
    pub fn stop(mut self) -> Result<WriterCounts, String> {
        match &mut self.kind {
            WriterKind::Process(proc) => {
                let m = finish_writer(proc)?;
                Ok(WriterCounts::from_json(&m))
            }
            WriterKind::Rust(w) => {
                w.stop_blocking(Duration::from_secs(30))
                    .map_err(|e| format!("Rust writer stop: {e}"))?;
                Ok(w.metrics().into())
            }
        }
    }
}

impl WriterCounts {
    /// From go-peer's `metrics` line.
    fn from_json(m: &Value) -> Self {
        Self {
            sent: m["sent"].as_u64().unwrap_or(u64::MAX),
            dropped: m["dropped"].as_u64().unwrap_or(u64::MAX),
            failed: m["failed"].as_u64().unwrap_or(u64::MAX),
        }
    }
}

impl From<udsipc::WriterMetrics> for WriterCounts {
    fn from(m: udsipc::WriterMetrics) -> Self {
        Self {
            sent: m.sent,
            dropped: m.dropped,
            failed: m.failed,
        }
    }
}

/// How long a writer process may take to stop: its own drain deadline is
/// 30 s (PEERS.md), plus the suite's patience.
const WRITER_STOP: Duration = Duration::from_secs(30).saturating_add(PATIENCE);

/// Ends a writer process's stdin (it drains and stops) and returns its
/// last answer, the final metrics.
fn finish_writer(proc: &mut PeerProcess) -> Result<Value, String> {
    proc.close_stdin();
    let m = loop {
        let m = proc.next("metrics", WRITER_STOP)?;
        if m["final"] != false {
            break m;
        }
    };
    let _ = proc.wait_within(PATIENCE);
    Ok(m)
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A fresh socket path in a fresh temporary directory (kept alive by the
/// returned guard).
pub fn socket_path() -> Result<(tempfile::TempDir, PathBuf), String> {
    let dir = tempfile::Builder::new()
        .prefix("udsipc-conf")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let p = dir.path().join("s.sock");
    Ok((dir, p))
}

/// The `udsipc` binary (package `udsipc-cli`), whose hidden `peer`
/// subcommand is the Rust peer: next to the running binary (`conform`) or
/// one level up from a test executable (`deps/`). When it is not there
/// (only this package's tests were built), it is built once with the cargo
/// that runs the tests (`$CARGO`), in the same profile; cargo's own lock
/// serialises concurrent builds.
pub fn rust_peer() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no directory for udsipc")?;
    let candidates = [dir, dir.parent().unwrap_or(dir)];
    let find = || {
        candidates
            .iter()
            .map(|d| d.join("udsipc"))
            .find(|b| b.is_file())
    };
    if let Some(bin) = find() {
        return Ok(bin);
    }
    let hint = "build it with `cargo build -p udsipc-cli`";
    let cargo = std::env::var_os("CARGO").ok_or_else(|| format!("udsipc is missing: {hint}"))?;
    let profile_dir = candidates
        .iter()
        .find(|d| d.join("build").is_dir())
        .ok_or_else(|| format!("udsipc is missing: {hint}"))?;
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "-p", "udsipc-cli", "--bin", "udsipc"])
        .current_dir(crate::crate_dir());
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let out = build
        .output()
        .map_err(|e| format!("udsipc is missing and cargo did not run ({e}): {hint}"))?;
    if !out.status.success() {
        return Err(format!(
            "udsipc is missing and `cargo build -p udsipc-cli` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    find().ok_or_else(|| format!("udsipc is missing after the build: {hint}"))
}

/// Whether a socket bound at `path` is listening, from the kernel's table
/// of Unix sockets (`/proc/net/unix`: the `__SO_ACCEPTCON` flag, 0x10000),
/// without connecting to it (a connection would start an activated reader).
fn listening(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        // No such table: fall back to the file's existence.
        return path.exists();
    };
    let path = path.to_string_lossy();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8
            && fields[7] == path
            && u32::from_str_radix(fields[3], 16).is_ok_and(|flags| flags & 0x10000 != 0)
    })
}
