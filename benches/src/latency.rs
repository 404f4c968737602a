//! One-way latency at a fixed rate: a paced writer process stamps each
//! message with its `CLOCK_MONOTONIC` send time, the reader process
//! subtracts it from its receive time, and reports p50 and p99.

use std::path::Path;
use std::time::Duration;

use crate::peer::{Peer, run_pair};

/// Messages per second while latency is measured.
pub const RATE: f64 = 10_000.0;
/// Message size while latency is measured (the send time takes 8 bytes).
pub const SIZE: usize = 64;

/// p50 and p99 one-way latency of `count` messages from `writer` to
/// `reader` at [`RATE`] messages per second.
pub fn one_way(
    writer: &Peer,
    reader: &Peer,
    socket: &Path,
    count: u64,
) -> Result<(Duration, Duration), String> {
    run_pair(writer, reader, socket, SIZE, count, Some(RATE))?
        .latency
        .ok_or_else(|| "the reader reported no latency".to_owned())
}
