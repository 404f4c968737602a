//! Measurements for the udsipc benchmark table runner ([`run`], the
//! `udsipc bench` command of the `udsipc-cli` package) and the criterion
//! benches (`benches/`).
//!
//! Every measurement moves a fixed number of messages through real Unix
//! sockets on this machine and reports wall time, CPU time and
//! allocations; nothing here asserts on speed.
//!
//! | module | measures |
//! |---|---|
//! | [`inproc`] | this library, Writer → Reader in one process |
//! | [`peer`] | a writer process → a reader process (Rust, Go or ZeroMQ, any pair) |
//! | [`rust_peer`] | this library's side of that contract (the hidden `udsipc bench peer`) |
//! | [`engines`] | the baselines and limits as peer processes (`bench peer --engine`) |
//! | [`zmq`] | the ZeroMQ peer (libzmq PUSH → PULL, a small C program built at run time) |
//! | [`baseline`] | tokio-util + unsigned-varint `Framed`, and udsipc's codec in it |
//! | [`cpu`] | CPU time per process from `getrusage` |
//! | [`latency`] | one-way latency at a fixed message rate (through [`peer`]) |
//! | [`limits`] | the framed-copy and raw limits and the latency floor, blocking and epoll |
//! | [`minimal_peer`] | the latency floor across processes (the hidden `udsipc bench peer --minimal`) |
//! | [`alloc`] | the counting global allocator behind "allocs/msg" |

pub mod alloc;
pub mod baseline;
pub mod chart;
pub mod clock;
pub mod columns;
pub mod compare;
pub mod cpu;
pub mod engines;
pub mod gopeer;
pub mod harness;
pub mod inproc;
pub mod latency;
pub mod limits;
pub mod minimal_peer;
pub mod peer;
pub mod report;
pub mod run;
pub mod rust_peer;
pub mod zmq;

use std::time::Duration;

/// One timed transfer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Message size in bytes.
    pub size: usize,
    /// Messages delivered.
    pub messages: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    /// Wall time from the first send to the last delivery.
    pub elapsed: Duration,
    /// Heap allocations per message in steady state (after the first
    /// [`WARMUP_PERCENT`]% of messages, every process involved), when
    /// counted.
    pub allocs_per_msg: Option<f64>,
    /// CPU time (user + system) of each process involved, when measured.
    pub cpu: Option<cpu::Cpu>,
}

impl Measurement {
    /// Payload megabytes per second (1 MB = 1e6 bytes).
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    /// Messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    /// Heap allocations per message in steady state, when counted.
    pub fn allocs_per_msg(&self) -> Option<f64> {
        self.allocs_per_msg
    }

    /// CPU ns per message of the writer process (or the one process) and
    /// of the reader process, when measured.
    pub fn cpu_ns_per_msg(&self) -> Option<(f64, Option<f64>)> {
        let cpu = self.cpu?;
        let per = |ns: u64| ns as f64 / self.messages.max(1) as f64;
        Some((per(cpu.writer_ns), cpu.reader_ns.map(per)))
    }
}

/// Allocations are counted after this share of a transfer's messages (the
/// warm-up: connecting, buffers growing to their working size).
pub const WARMUP_PERCENT: u64 = 10;

/// The message after which allocations are counted, of `count`.
pub fn warmup_messages(count: u64) -> u64 {
    count * WARMUP_PERCENT / 100
}

/// Allocations per message over the messages after the warm-up.
pub fn per_steady_message(allocations: u64, count: u64) -> f64 {
    allocations as f64 / (count - warmup_messages(count)).max(1) as f64
}

/// A payload of `size` bytes that costs nothing to clone or drop: one
/// static buffer per size, as the Go benchmarks pass the same slice every
/// time. (A shared `Bytes` would add an atomic reference count bouncing
/// between the producing and the writing thread, which measures the
/// benchmark, not the library.)
pub fn payload(size: usize) -> bytes::Bytes {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static BUFFERS: OnceLock<Mutex<HashMap<usize, &'static [u8]>>> = OnceLock::new();
    let mut buffers = BUFFERS.get_or_init(Default::default).lock().unwrap();
    let buf = *buffers
        .entry(size)
        .or_insert_with(|| Vec::leak((0..size).map(|i| i as u8).collect()));
    bytes::Bytes::from_static(buf)
}

/// The median of `values` (which must not be empty).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// `64 B`, `1 KiB`, `1 MiB`: how the table names a message size.
pub fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}
