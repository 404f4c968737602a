//! A writer process → a reader process, each either this runner (the
//! hidden `udsipc bench peer`: this library, or with `--engine` a baseline
//! or limit), the Go peer (`conformance/go-peer`, the Go reference) or the
//! ZeroMQ peer ([`crate::zmq`]). All speak one contract:
//!
//! ```text
//! PROGRAM SUBCOMMAND --role reader --socket PATH --count N --size S [--latency]
//! PROGRAM SUBCOMMAND --role writer --socket PATH --count N --size S [--rate R]
//! ```
//!
//! The reader binds, prints `ready`, receives N messages and prints one
//! JSON [`Report`]; the writer sends N messages (paced at R per second with
//! a `CLOCK_MONOTONIC` send time in the first 8 bytes when `--rate` is
//! given), drains and prints its own [`Report`]. The transfer time is the
//! reader's last delivery minus the writer's start, on the machine-wide
//! monotonic clock. Each report may carry the process's CPU over its part
//! of the transfer (`cpu_ns`, see [`crate::cpu`]).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Measurement;
use crate::cpu::{Cpu, children_ns};

/// What a peer process runs (`--engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Engine {
    /// This library: a `Writer` (a `BufferedWriter` up to 256 B, `send`
    /// above), a `Reader` with a handler.
    #[default]
    Udsipc,
    /// tokio-util `FramedWrite`/`FramedRead` with unsigned-varint's
    /// `UviBytes`.
    TokioUtil,
    /// tokio-util `FramedWrite`/`FramedRead` with udsipc's `UvarintCodec`.
    Codec,
    /// Frames copied into 256 KiB writes, blocking.
    FramedBlocking,
    /// Frames copied into 256 KiB writes, waiting in epoll.
    FramedEpoll,
    /// 256 KiB writes of one buffer, no framing, blocking.
    RawBlocking,
    /// 256 KiB writes of one buffer, no framing, waiting in epoll.
    RawEpoll,
}

impl Engine {
    /// The `--engine` value.
    pub fn arg(self) -> &'static str {
        match self {
            Engine::Udsipc => "udsipc",
            Engine::TokioUtil => "tokio-util",
            Engine::Codec => "codec",
            Engine::FramedBlocking => "framed-blocking",
            Engine::FramedEpoll => "framed-epoll",
            Engine::RawBlocking => "raw-blocking",
            Engine::RawEpoll => "raw-epoll",
        }
    }
}

/// How long a peer may take before it is killed.
pub(crate) const PATIENCE: Duration = Duration::from_secs(180);

/// The peer command line (the runner's hidden `bench peer` subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct PeerArgs {
    /// `reader` or `writer`.
    #[arg(long)]
    pub role: String,
    /// Socket path.
    #[arg(long)]
    pub socket: PathBuf,
    /// Messages to move.
    #[arg(long)]
    pub count: u64,
    /// Bytes per message.
    #[arg(long)]
    pub size: usize,
    /// Writer: messages per second, each stamped with its send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Reader: messages carry send times; report p50/p99 latency.
    #[arg(long)]
    pub latency: bool,
    /// A minimal blocking reader or writer, with no library and no framing
    /// (the latency floor across processes; see `minimal_peer`).
    #[arg(long)]
    pub minimal: bool,
    /// What to run: this library (the default), or a baseline or limit as
    /// a process (see `engines`).
    #[arg(long, value_enum, default_value_t)]
    pub engine: Engine,
}

/// What a peer prints when done (one JSON line).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// `reader` or `writer`.
    pub role: String,
    /// Messages received (reader) or sent (writer).
    pub msgs: u64,
    /// Payload bytes received or sent.
    pub bytes: u64,
    /// Reader: monotonic ns of the first delivery.
    #[serde(default)]
    pub first_ns: i64,
    /// Reader: monotonic ns of the last delivery.
    #[serde(default)]
    pub last_ns: i64,
    /// Writer: monotonic ns just before the first send.
    #[serde(default)]
    pub start_ns: i64,
    /// Writer: monotonic ns once drained.
    #[serde(default)]
    pub end_ns: i64,
    /// Heap allocations counted after the warm-up (the first 10% of the
    /// messages delivered, for a reader; written, for a writer) to the end.
    pub allocs: u64,
    /// Messages over which `allocs` were counted.
    pub alloc_msgs: u64,
    /// Reader with `--latency`: p50 and p99 one-way latency in ns, over the
    /// messages after the warm-up (the first 10%).
    #[serde(default)]
    pub latency_ns: Option<[i64; 2]>,
    /// User + system CPU of the whole process (every thread) over the
    /// transfer, ns: a reader's from `ready` to its last delivery, a
    /// writer's from just before its first send until drained. Without it
    /// the runner charges the process's whole life (start-up included).
    #[serde(default)]
    pub cpu_ns: Option<u64>,
}

/// A program that speaks the peer contract.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Name in the table: `Rust`, `Go`, `ZeroMQ`, ...
    pub name: &'static str,
    program: PathBuf,
    subcommand: Vec<String>,
    /// Whether its reports count allocations.
    counts_allocs: bool,
}

impl Peer {
    /// The `udsipc` binary's hidden `bench peer` subcommand (this library).
    pub fn rust(udsipc: PathBuf) -> Self {
        Self::rust_engine(udsipc, Engine::Udsipc)
    }

    /// The `udsipc` binary's hidden `bench peer --engine ENGINE`: a
    /// baseline or limit as a process (see [`crate::engines`]).
    pub fn rust_engine(udsipc: PathBuf, engine: Engine) -> Self {
        let counts_allocs = matches!(engine, Engine::Udsipc | Engine::TokioUtil | Engine::Codec);
        Self {
            name: if engine == Engine::Udsipc {
                "Rust"
            } else {
                engine.arg()
            },
            program: udsipc,
            subcommand: ["bench", "peer", "--engine", engine.arg()]
                .map(String::from)
                .to_vec(),
            counts_allocs,
        }
    }

    /// The minimal peer (`udsipc bench peer --minimal`): the floor across
    /// processes.
    pub fn minimal(udsipc: PathBuf) -> Self {
        Self {
            name: "minimal",
            program: udsipc,
            subcommand: ["bench", "peer", "--minimal"].map(String::from).to_vec(),
            counts_allocs: false,
        }
    }

    /// A built go-peer binary (the Go reference).
    pub fn go(binary: PathBuf) -> Self {
        Self {
            name: "Go",
            program: binary,
            subcommand: vec!["bench".to_owned()],
            counts_allocs: true,
        }
    }

    /// A built zmq-peer binary (libzmq PUSH → PULL, see [`crate::zmq`]).
    pub fn zmq(binary: PathBuf) -> Self {
        Self {
            name: "ZeroMQ",
            program: binary,
            subcommand: vec![],
            counts_allocs: false,
        }
    }

    fn command(&self, role: &str, socket: &Path, count: u64, size: usize) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.subcommand)
            .args(["--role", role, "--socket"])
            .arg(socket)
            .args(["--count", &count.to_string(), "--size", &size.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

/// A pair's result: the transfer, and latency when measured.
#[derive(Debug, Clone, Copy)]
pub struct PairResult {
    /// The transfer as one measurement (allocations of both processes).
    pub measurement: Measurement,
    /// p50 and p99 one-way latency, with `rate`.
    pub latency: Option<(Duration, Duration)>,
}

/// Runs `writer` → `reader` over a socket at `socket`: `count` messages of
/// `size` bytes, paced at `rate` messages per second if given.
pub fn run_pair(
    writer: &Peer,
    reader: &Peer,
    socket: &Path,
    size: usize,
    count: u64,
    rate: Option<f64>,
) -> Result<PairResult, String> {
    let _ = std::fs::remove_file(socket);
    let mut rcmd = reader.command("reader", socket, count, size);
    if rate.is_some() {
        rcmd.arg("--latency");
    }
    let mut rproc = Running::spawn(rcmd, reader.name)?;
    rproc.expect_line("ready")?;
    let mut wcmd = writer.command("writer", socket, count, size);
    if let Some(rate) = rate {
        wcmd.args(["--rate", &rate.to_string()]);
    }
    let mut wproc = Running::spawn(wcmd, writer.name)?;
    let w = wproc.report();
    let r = rproc.report();
    let ((w, writer_ns), (r, reader_ns)) = (w?, r?);
    if r.msgs != count {
        return Err(format!(
            "{} reader got {} of {count} messages",
            reader.name, r.msgs
        ));
    }
    let nanos = (r.last_ns - w.start_ns).max(1) as u64;
    // Start-up costs a process 2-6 ms here, a visible share of a cell's
    // CPU: take the transfer window's when the peer reports it.
    let (writer_ns, reader_ns) = (w.cpu_ns.unwrap_or(writer_ns), r.cpu_ns.unwrap_or(reader_ns));
    Ok(PairResult {
        measurement: Measurement {
            size,
            messages: r.msgs,
            bytes: r.bytes,
            elapsed: Duration::from_nanos(nanos),
            allocs_per_msg: (writer.counts_allocs && reader.counts_allocs).then(|| {
                w.allocs as f64 / w.alloc_msgs.max(1) as f64
                    + r.allocs as f64 / r.alloc_msgs.max(1) as f64
            }),
            cpu: Some(Cpu {
                writer_ns,
                reader_ns: Some(reader_ns),
            }),
        },
        latency: r.latency_ns.map(|[p50, p99]| {
            (
                Duration::from_nanos(p50.max(0) as u64),
                Duration::from_nanos(p99.max(0) as u64),
            )
        }),
    })
}

/// A spawned peer whose stdout lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    name: &'static str,
}

impl Running {
    fn spawn(mut cmd: Command, name: &'static str) -> Result<Self, String> {
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting the {name} peer: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines, name })
    }

    fn next_line(&mut self) -> Result<String, String> {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => Ok(line),
            Err(_) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                Err(format!(
                    "{} peer ended without answering: {}",
                    self.name,
                    err.trim()
                ))
            }
        }
    }

    fn expect_line(&mut self, want: &str) -> Result<(), String> {
        let line = self.next_line()?;
        if line.trim() == want {
            Ok(())
        } else {
            Err(format!(
                "{} peer said {line:?}, expected {want:?}",
                self.name
            ))
        }
    }

    /// The peer's report once it ended, and the CPU time (user + system,
    /// ns) of its whole life: what reaping it added to `RUSAGE_CHILDREN`
    /// (nothing else is reaped meanwhile: the runner waits for its peers
    /// one at a time, on one thread).
    fn report(&mut self) -> Result<(Report, u64), String> {
        let line = self.next_line()?;
        let before = children_ns();
        let _ = self.child.wait();
        let cpu = children_ns().saturating_sub(before);
        let report = serde_json::from_str(&line)
            .map_err(|e| format!("{} peer printed {line:?}: {e}", self.name))?;
        Ok((report, cpu))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
