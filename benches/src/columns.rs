//! The table's columns, how each one is measured, and which table it
//! belongs to: every column of the main table is two processes (a writer
//! process → a reader process, as a deployment is), every column of the
//! in-process table is two threads of the runner.

use std::path::Path;

use crate::Measurement;
use crate::baseline::{tokio_util_framed, udsipc_codec_framed};
use crate::inproc::rust_in_process;
use crate::limits::{Waiting, framed_copy_limit, raw_limit};
use crate::peer::{Peer, run_pair};

/// Which table a column belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Topology {
    /// A writer process → a reader process (the main table).
    TwoProcesses,
    /// A writer thread → a reader thread of one process.
    InProcess,
}

/// One column of the throughput tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Column {
    /// Go writer process → Go reader process (the Go reference).
    Go,
    /// Rust writer process → Rust reader process (this library).
    Rust,
    /// Go writer process → Rust reader process.
    GoToRust,
    /// Rust writer process → Go reader process.
    RustToGo,
    /// tokio-util + unsigned-varint, two processes.
    TokioUtil,
    /// tokio-util `Framed` with udsipc's `UvarintCodec`, two processes.
    UdsipcCodec,
    /// libzmq PUSH → PULL over `ipc://`, two processes.
    Zmq,
    /// The raw socket, no framing, waiting in epoll, two processes.
    Raw,
    /// The raw socket, blocking, two processes.
    RawBlocking,
    /// Frames copied into 256 KiB writes, waiting in epoll, two processes.
    FramedLimit,
    /// Frames copied into 256 KiB writes, blocking, two processes.
    FramedLimitBlocking,
    /// This library, Writer → Reader in one process.
    RustInProcess,
    /// tokio-util + unsigned-varint, two threads.
    TokioUtilInProcess,
    /// tokio-util `Framed` with udsipc's `UvarintCodec`, two threads.
    UdsipcCodecInProcess,
    /// The raw socket, waiting in epoll, two threads.
    RawInProcess,
    /// The raw socket, blocking, two threads.
    RawBlockingInProcess,
    /// The framed-copy limit, waiting in epoll, two threads.
    FramedLimitInProcess,
    /// The framed-copy limit, blocking, two threads.
    FramedLimitBlockingInProcess,
}

impl Column {
    /// Every column.
    pub const ALL: [Column; 18] = [
        Column::Rust,
        Column::TokioUtil,
        Column::UdsipcCodec,
        Column::Zmq,
        Column::Go,
        Column::GoToRust,
        Column::RustToGo,
        Column::FramedLimit,
        Column::FramedLimitBlocking,
        Column::Raw,
        Column::RawBlocking,
        Column::RustInProcess,
        Column::TokioUtilInProcess,
        Column::UdsipcCodecInProcess,
        Column::FramedLimitInProcess,
        Column::FramedLimitBlockingInProcess,
        Column::RawInProcess,
        Column::RawBlockingInProcess,
    ];

    /// Whether the column needs the Go peer.
    pub fn needs_go(self) -> bool {
        matches!(self, Column::Go | Column::GoToRust | Column::RustToGo)
    }

    /// Whether the column needs the ZeroMQ peer.
    pub fn needs_zmq(self) -> bool {
        self == Column::Zmq
    }

    /// Which table the column is in.
    pub fn topology(self) -> Topology {
        match self {
            Column::RustInProcess
            | Column::TokioUtilInProcess
            | Column::UdsipcCodecInProcess
            | Column::RawInProcess
            | Column::RawBlockingInProcess
            | Column::FramedLimitInProcess
            | Column::FramedLimitBlockingInProcess => Topology::InProcess,
            _ => Topology::TwoProcesses,
        }
    }

    /// The column's key in the JSON (`cpu_ns_per_msg`, `columns`), the
    /// same in both tables.
    pub fn key(self) -> &'static str {
        match self {
            Column::Go => "go",
            Column::Rust | Column::RustInProcess => "udsipc",
            Column::GoToRust => "go_to_rust",
            Column::RustToGo => "rust_to_go",
            Column::TokioUtil | Column::TokioUtilInProcess => "tokio_util",
            Column::UdsipcCodec | Column::UdsipcCodecInProcess => "codec",
            Column::Zmq => "zmq",
            Column::Raw | Column::RawInProcess => "raw_epoll",
            Column::RawBlocking | Column::RawBlockingInProcess => "raw_blocking",
            Column::FramedLimit | Column::FramedLimitInProcess => "framed_limit_epoll",
            Column::FramedLimitBlocking | Column::FramedLimitBlockingInProcess => {
                "framed_limit_blocking"
            }
        }
    }

    /// A short name for progress messages and the tables.
    pub fn name(self) -> &'static str {
        match self {
            Column::Go => "Go → Go",
            Column::Rust => "udsipc (Rust → Rust)",
            Column::GoToRust => "Go → Rust",
            Column::RustToGo => "Rust → Go",
            Column::TokioUtil => "tokio-util",
            Column::UdsipcCodec => "udsipc codec (tokio-util Framed)",
            Column::Zmq => "ZeroMQ",
            Column::Raw => "raw socket (epoll)",
            Column::RawBlocking => "raw socket (blocking)",
            Column::FramedLimit => "framed-copy limit (epoll)",
            Column::FramedLimitBlocking => "framed-copy limit (blocking)",
            Column::RustInProcess => "udsipc in-process",
            Column::TokioUtilInProcess => "tokio-util in-process",
            Column::UdsipcCodecInProcess => "udsipc codec in-process",
            Column::RawInProcess => "raw socket in-process (epoll)",
            Column::RawBlockingInProcess => "raw socket in-process (blocking)",
            Column::FramedLimitInProcess => "framed-copy limit in-process (epoll)",
            Column::FramedLimitBlockingInProcess => "framed-copy limit in-process (blocking)",
        }
    }

    /// What the writer calls per message, and what reads.
    pub fn producer(self) -> &'static str {
        match self {
            Column::Rust | Column::RustInProcess => {
                "udsipc `BufferedWriter::send` + `flush` up to 256 B, `Writer::send` (owned `Bytes`) above, the Writer on the producer's current-thread runtime → udsipc `Reader` handler"
            }
            Column::Go => "Go `Writer.WriteMessage` (queue of count + 100) → Go `Reader` handler",
            Column::GoToRust => "Go `Writer.WriteMessage` → udsipc `Reader` handler",
            Column::RustToGo => "udsipc, as the udsipc column → Go `Reader` handler",
            Column::TokioUtil | Column::TokioUtilInProcess => {
                "tokio-util `FramedWrite::feed` (`UviBytes`, writes at 256 KiB) + `flush` → `FramedRead` (256 KiB reads), current-thread runtimes"
            }
            Column::UdsipcCodec | Column::UdsipcCodecInProcess => {
                "tokio-util `FramedWrite::feed` with udsipc's `UvarintCodec` + `flush` → `FramedRead`, as tokio-util"
            }
            Column::Zmq => {
                "libzmq `zmq_send` on PUSH (SNDHWM 10,000 messages and SO_SNDBUF 256 KiB, the Writer's defaults) → `zmq_msg_recv` on PULL (RCVHWM 10,000), `ipc://`, in C"
            }
            Column::Raw | Column::RawInProcess => {
                "`write` of one 256 KiB buffer, no framing → 256 KiB `read`s; non-blocking, epoll"
            }
            Column::RawBlocking | Column::RawBlockingInProcess => {
                "`write` of one 256 KiB buffer, no framing → 256 KiB `read`s; blocking"
            }
            Column::FramedLimit | Column::FramedLimitInProcess => {
                "frames (varint + body) copied into 256 KiB buffers, one `write` each → 256 KiB `read`s, no parsing; non-blocking, epoll"
            }
            Column::FramedLimitBlocking | Column::FramedLimitBlockingInProcess => {
                "frames (varint + body) copied into 256 KiB buffers, one `write` each → 256 KiB `read`s, no parsing; blocking"
            }
        }
    }
}

/// The peers available to this run.
#[derive(Debug, Clone)]
pub struct Peers {
    /// This runner's own `peer` subcommand.
    pub rust: Peer,
    /// The Go peer, when it could be built.
    pub go: Option<Peer>,
    /// The ZeroMQ peer, when it could be built.
    pub zmq: Option<Peer>,
    /// This runner's `peer --engine` for the baselines and limits.
    pub exe: std::path::PathBuf,
}

/// Measures one cell: `messages` messages of `size` bytes through `column`,
/// with a socket in `dir`. Every measurement carries CPU time (see
/// [`crate::cpu`]): each process's for the two-process columns, the
/// runner's for the in-process ones (writer and reader together).
pub fn measure(
    column: Column,
    peers: &Peers,
    dir: &Path,
    size: usize,
    messages: u64,
) -> Result<Measurement, String> {
    use crate::peer::Engine;
    let socket = dir.join(format!("{size}.sock"));
    let go = || peers.go.as_ref().ok_or("the Go peer is not available");
    let pair = |w: &Peer, r: &Peer| run_pair(w, r, &socket, size, messages, None);
    let engine = |e: Engine| {
        let p = Peer::rust_engine(peers.exe.clone(), e);
        run_pair(&p, &p, &socket, size, messages, None)
    };
    // The raw limit has no messages: count the cell's, so that its CPU per
    // message is per the same payload bytes.
    let as_cell = |mut m: Measurement| {
        m.size = size;
        m.messages = messages;
        m
    };
    let total = messages * size as u64;
    Ok(match column {
        Column::Go => pair(go()?, go()?)?.measurement,
        Column::Rust => pair(&peers.rust, &peers.rust)?.measurement,
        Column::GoToRust => pair(go()?, &peers.rust)?.measurement,
        Column::RustToGo => pair(&peers.rust, go()?)?.measurement,
        Column::Zmq => {
            let z = peers
                .zmq
                .as_ref()
                .ok_or("the ZeroMQ peer is not available")?;
            pair(z, z)?.measurement
        }
        Column::TokioUtil => engine(Engine::TokioUtil)?.measurement,
        Column::UdsipcCodec => engine(Engine::Codec)?.measurement,
        Column::Raw => engine(Engine::RawEpoll)?.measurement,
        Column::RawBlocking => engine(Engine::RawBlocking)?.measurement,
        Column::FramedLimit => engine(Engine::FramedEpoll)?.measurement,
        Column::FramedLimitBlocking => engine(Engine::FramedBlocking)?.measurement,
        Column::RustInProcess => rust_in_process(&socket, size, messages)?,
        Column::TokioUtilInProcess => tokio_util_framed(size, messages)?,
        Column::UdsipcCodecInProcess => udsipc_codec_framed(size, messages)?,
        Column::RawInProcess => as_cell(raw_limit(total, Waiting::Epoll)?),
        Column::RawBlockingInProcess => as_cell(raw_limit(total, Waiting::Blocking)?),
        Column::FramedLimitInProcess => framed_copy_limit(size, messages, Waiting::Epoll)?,
        Column::FramedLimitBlockingInProcess => {
            framed_copy_limit(size, messages, Waiting::Blocking)?
        }
    })
}

/// Every round's measurement of every column of one message size (`None`
/// where a round has none: a column dropped mid-run).
#[derive(Debug, Clone, Default)]
pub struct Cell {
    /// Message size in bytes.
    pub size: usize,
    /// Per column, one entry per round.
    pub rounds: Vec<(Column, Vec<Option<Measurement>>)>,
}

impl Cell {
    /// An empty cell for `columns` over `rounds` rounds.
    pub fn new(size: usize, columns: &[Column], rounds: usize) -> Self {
        Self {
            size,
            rounds: columns.iter().map(|&c| (c, vec![None; rounds])).collect(),
        }
    }

    /// Records `column`'s measurement in `round`.
    pub fn put(&mut self, column: Column, round: usize, m: Measurement) {
        if let Some((_, r)) = self.rounds.iter_mut().find(|(c, _)| *c == column) {
            r[round] = Some(m);
        }
    }

    /// Drops every measurement of `column` (it failed mid-run).
    pub fn drop_column(&mut self, column: Column) {
        if let Some((_, r)) = self.rounds.iter_mut().find(|(c, _)| *c == column) {
            r.iter_mut().for_each(|m| *m = None);
        }
    }

    /// `column`'s measurements, one per round (empty when not measured).
    pub fn of(&self, column: Column) -> Vec<Option<Measurement>> {
        self.rounds
            .iter()
            .find(|(c, _)| *c == column)
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    }

    /// `f` of `column`'s measurements, one per round.
    pub fn per_round(&self, column: Column, f: impl Fn(&Measurement) -> f64) -> Vec<Option<f64>> {
        self.of(column).iter().map(|m| m.as_ref().map(&f)).collect()
    }

    /// The faster of two columns' MB/s in each round (a limit measured two
    /// ways: each round's limit is its faster way).
    pub fn best_mbps(&self, a: Column, b: Column) -> Vec<Option<f64>> {
        let (a, b) = (self.per_round(a, mbps), self.per_round(b, mbps));
        (0..a.len().max(b.len()))
            .map(
                |i| match (a.get(i).copied().flatten(), b.get(i).copied().flatten()) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, y) => x.or(y),
                },
            )
            .collect()
    }

    /// The smaller of two columns' CPU ns per message (both processes) in
    /// each round.
    pub fn least_cpu(&self, a: Column, b: Column) -> Vec<Option<f64>> {
        let (a, b) = (self.cpu_total(a), self.cpu_total(b));
        (0..a.len().max(b.len()))
            .map(
                |i| match (a.get(i).copied().flatten(), b.get(i).copied().flatten()) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                },
            )
            .collect()
    }

    /// `column`'s CPU ns per message, writer + reader, per round.
    pub fn cpu_total(&self, column: Column) -> Vec<Option<f64>> {
        self.of(column)
            .iter()
            .map(|m| {
                let (w, r) = m.as_ref()?.cpu_ns_per_msg()?;
                Some(w + r.unwrap_or(0.0))
            })
            .collect()
    }
}

/// Payload MB/s of a measurement.
pub fn mbps(m: &Measurement) -> f64 {
    m.mb_per_sec()
}
