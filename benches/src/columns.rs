//! The table's columns and how each one is measured.

use std::path::Path;

use crate::Measurement;
use crate::baseline::{tokio_util_framed, udsipc_codec_framed};
use crate::inproc::rust_in_process;
use crate::limits::{Waiting, framed_copy_limit, raw_limit};
use crate::peer::{Peer, run_pair};
use crate::report::{Row, Samples};

/// One column of the throughput table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Column {
    /// Go writer process → Go reader process (the Go reference).
    Go,
    /// Rust writer process → Rust reader process (this library).
    Rust,
    /// This library, Writer → Reader in one process.
    RustInProcess,
    /// Go writer process → Rust reader process.
    GoToRust,
    /// Rust writer process → Go reader process.
    RustToGo,
    /// tokio-util + unsigned-varint, two threads.
    TokioUtil,
    /// tokio-util `Framed` with udsipc's `UvarintCodec`, two threads.
    UdsipcCodec,
    /// The raw socket, no framing, waiting in epoll.
    Raw,
    /// The raw socket, blocking threads.
    RawBlocking,
    /// Frames copied into 256 KiB writes, waiting in epoll.
    FramedLimit,
    /// Frames copied into 256 KiB writes, blocking threads.
    FramedLimitBlocking,
}

impl Column {
    /// Every column, in measuring order.
    pub const ALL: [Column; 11] = [
        Column::Go,
        Column::Rust,
        Column::RustInProcess,
        Column::GoToRust,
        Column::RustToGo,
        Column::TokioUtil,
        Column::UdsipcCodec,
        Column::Raw,
        Column::RawBlocking,
        Column::FramedLimit,
        Column::FramedLimitBlocking,
    ];

    /// Whether the column needs the Go peer.
    pub fn needs_go(self) -> bool {
        matches!(self, Column::Go | Column::GoToRust | Column::RustToGo)
    }

    /// A short name for progress messages.
    pub fn name(self) -> &'static str {
        match self {
            Column::Go => "Go → Go",
            Column::Rust => "Rust → Rust",
            Column::RustInProcess => "Rust in-process",
            Column::GoToRust => "Go → Rust",
            Column::RustToGo => "Rust → Go",
            Column::TokioUtil => "tokio-util",
            Column::UdsipcCodec => "udsipc codec (tokio-util Framed)",
            Column::Raw => "raw socket (epoll)",
            Column::RawBlocking => "raw socket (blocking)",
            Column::FramedLimit => "framed-copy limit (epoll)",
            Column::FramedLimitBlocking => "framed-copy limit (blocking)",
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
}

/// Measures one cell: `messages` messages of `size` bytes through `column`,
/// with a socket in `dir`.
pub fn measure(
    column: Column,
    peers: &Peers,
    dir: &Path,
    size: usize,
    messages: u64,
) -> Result<Measurement, String> {
    let socket = dir.join(format!("{size}.sock"));
    let go = || peers.go.as_ref().ok_or("the Go peer is not available");
    let pair = |w: &Peer, r: &Peer| run_pair(w, r, &socket, size, messages, None);
    Ok(match column {
        Column::Go => pair(go()?, go()?)?.measurement,
        Column::Rust => pair(&peers.rust, &peers.rust)?.measurement,
        Column::GoToRust => pair(go()?, &peers.rust)?.measurement,
        Column::RustToGo => pair(&peers.rust, go()?)?.measurement,
        Column::RustInProcess => rust_in_process(&socket, size, messages)?,
        Column::TokioUtil => tokio_util_framed(size, messages)?,
        Column::UdsipcCodec => udsipc_codec_framed(size, messages)?,
        Column::Raw => raw_limit(messages * size as u64, Waiting::Epoll)?,
        Column::RawBlocking => raw_limit(messages * size as u64, Waiting::Blocking)?,
        Column::FramedLimit => framed_copy_limit(size, messages, Waiting::Epoll)?,
        Column::FramedLimitBlocking => framed_copy_limit(size, messages, Waiting::Blocking)?,
    })
}

/// Fills `row` with the medians of each column's samples.
pub fn fill_row(row: &mut Row, column: Column, s: &Samples) {
    match column {
        Column::Go => {
            row.go_mbps = s.mbps();
            row.go_msgs_per_sec = s.msgs_per_sec();
            row.go_allocs_per_msg = s.allocs_per_msg();
        }
        Column::Rust => {
            row.rust_mbps = s.mbps();
            row.rust_msgs_per_sec = s.msgs_per_sec();
            row.rust_allocs_per_msg = s.allocs_per_msg();
            row.rust_slowest_round_pct = s.slowest_pct_of_median();
        }
        Column::RustInProcess => {
            row.rust_inproc_mbps = s.mbps();
            row.rust_inproc_msgs_per_sec = s.msgs_per_sec();
            row.rust_inproc_allocs_per_msg = s.allocs_per_msg();
        }
        Column::GoToRust => row.go_to_rust_mbps = s.mbps(),
        Column::RustToGo => row.rust_to_go_mbps = s.mbps(),
        Column::TokioUtil => {
            row.tokio_util_mbps = s.mbps();
            row.tokio_util_allocs_per_msg = s.allocs_per_msg();
            row.tokio_util_slowest_round_pct = s.slowest_pct_of_median();
        }
        Column::UdsipcCodec => {
            row.codec_mbps = s.mbps();
            row.codec_allocs_per_msg = s.allocs_per_msg();
        }
        Column::Raw => row.raw_epoll_mbps = s.mbps(),
        Column::RawBlocking => row.raw_blocking_mbps = s.mbps(),
        Column::FramedLimit => row.framed_epoll_mbps = s.mbps(),
        Column::FramedLimitBlocking => row.framed_blocking_mbps = s.mbps(),
    }
    // Each limit is the faster of its two ways of waiting.
    (row.raw_limit_mbps, row.raw_limit_how) = best(row.raw_blocking_mbps, row.raw_epoll_mbps);
    (row.framed_limit_mbps, row.framed_limit_how) =
        best(row.framed_blocking_mbps, row.framed_epoll_mbps);
}

fn best(blocking: Option<f64>, epoll: Option<f64>) -> (Option<f64>, Option<Waiting>) {
    match (blocking, epoll) {
        (Some(b), Some(e)) if b >= e => (Some(b), Some(Waiting::Blocking)),
        (_, Some(e)) => (Some(e), Some(Waiting::Epoll)),
        (Some(b), None) => (Some(b), Some(Waiting::Blocking)),
        (None, None) => (None, None),
    }
}
