//! One proxied connection: two pumps (client → upstream, upstream →
//! client), each an ingress task that reads and asks the faults
//! ([`ingress`], [`plan`]), and an egress task that writes what the faults
//! allowed, when they allowed it ([`egress`]).
//!
//! The ingress side owns the accounting for the event log
//! ([`accounting`]): when its connection ends abnormally it shuts its source
//! down for reading (the sender's later writes fail), counts the bytes still
//! unread, and records what may be lost.
//!
//! This module owns the connection's shared state ([`Phase`]) and wires
//! the tasks together; it does no IO itself.

mod accounting;
mod egress;
mod ingress;
mod plan;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::Shared;
use super::fault::{CutMode, Direction};
use super::rng::FaultRng;

pub(crate) use accounting::shut_and_count;

const QUEUE_CHUNKS: usize = 16;

/// Why a connection is being closed by someone other than a pump's own cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Still open.
    None,
    /// A fault cut it, or a read failed (already logged by the ingress).
    Cut,
    /// The upstream closed its side or refused our bytes.
    Upstream,
    /// Reading from the upstream failed: it reset the connection (closed
    /// with bytes unread), so it may have lost what it had not read yet.
    UpstreamReset,
    /// The client closed (normal end).
    Client,
    /// An outage (`refuse`) cut every connection.
    Outage,
    /// The proxy is stopping (or its API disabled it).
    Stop,
}

/// Which sides are still open; every task watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Phase {
    pub(crate) client_open: bool,
    pub(crate) upstream_open: bool,
    pub(crate) reason: Reason,
}

impl Phase {
    fn open() -> Self {
        Self {
            client_open: true,
            upstream_open: true,
            reason: Reason::None,
        }
    }

    /// Whether the side bytes of `direction` come from is open.
    fn source_open(&self, direction: Direction) -> bool {
        match direction {
            Direction::ToUpstream => self.client_open,
            Direction::ToClient => self.upstream_open,
        }
    }

    /// Whether the side bytes of `direction` go to is open.
    fn dest_open(&self, direction: Direction) -> bool {
        match direction {
            Direction::ToUpstream => self.upstream_open,
            Direction::ToClient => self.client_open,
        }
    }
}

/// Closes sides of a connection from anywhere (outages, proxy stop).
pub(crate) type PhaseTx = Arc<watch::Sender<Phase>>;

pub(crate) fn close(phase: &watch::Sender<Phase>, client: bool, upstream: bool, reason: Reason) {
    phase.send_if_modified(|p| {
        let before = *p;
        p.client_open &= !client;
        p.upstream_open &= !upstream;
        if p.reason == Reason::None && (client || upstream) {
            p.reason = reason;
        }
        *p != before
    });
}

pub(crate) fn new_phase() -> PhaseTx {
    Arc::new(watch::channel(Phase::open()).0)
}

/// What the ingress hands its egress.
enum Item {
    Data {
        bytes: Vec<u8>,
        deliver_at: Instant,
        fragment: Option<(usize, usize, std::time::Duration)>,
        throttle: Option<u64>,
        stream_end: u64,
    },
    /// The source ended cleanly; `linger` delays the close (slow close).
    Eof { linger: std::time::Duration },
    /// A cut: `flushed` fires once everything queued before it was written
    /// (and, for a full cut, the destination shut).
    Close(CutMode, oneshot::Sender<()>),
}

/// What one pump shares with its egress task.
struct Progress {
    /// Stream offset up to which the egress has written everything.
    delivered: AtomicU64,
    /// The largest whole frame seen so far (prefix plus body).
    max_frame: AtomicU64,
}

/// Serves one accepted connection until both sides are closed.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    conn: u64,
    client: UnixStream,
    upstream: UnixStream,
    phase: PhaseTx,
) {
    let (client_r, client_w) = client.into_split();
    let (upstream_r, upstream_w) = upstream.into_split();
    let forward = pump(
        shared.clone(),
        conn,
        Direction::ToUpstream,
        client_r,
        upstream_w,
        phase.clone(),
    );
    let backward = pump(
        shared,
        conn,
        Direction::ToClient,
        upstream_r,
        client_w,
        phase.clone(),
    );
    tokio::join!(forward, backward);
}

async fn pump(
    shared: Arc<Shared>,
    conn: u64,
    direction: Direction,
    src: OwnedReadHalf,
    dst: OwnedWriteHalf,
    phase: PhaseTx,
) {
    let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
    let progress = Arc::new(Progress {
        delivered: AtomicU64::new(0),
        max_frame: AtomicU64::new(0),
    });
    let seed = shared.seed ^ conn.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ direction as u64;
    let egress = egress::run(
        egress::Egress {
            shared: shared.clone(),
            conn,
            direction,
            phase: phase.clone(),
            progress: progress.clone(),
            rng: FaultRng::from_seed(seed.rotate_left(17)),
        },
        dst,
        rx,
    );
    let ingress =
        ingress::Ingress::new(shared, conn, direction, phase, progress, seed).run(src, tx);
    tokio::join!(ingress, egress);
}
