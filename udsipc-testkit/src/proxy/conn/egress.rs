//! The egress half of a pump: writes what the ingress queued, when the
//! faults said (latency), how they said (fragments, bandwidth), and closes
//! its side as asked. If its destination fails it closes the connection
//! and accounts for what it could not deliver.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::Shared;
use super::super::fault::{CutMode, Direction};
use super::super::rng::FaultRng;
use super::accounting::abandon;
use super::{Item, PhaseTx, Progress, Reason, close};

/// Everything an egress task needs besides its socket and queue.
pub(super) struct Egress {
    pub(super) shared: Arc<Shared>,
    pub(super) conn: u64,
    pub(super) direction: Direction,
    pub(super) phase: PhaseTx,
    pub(super) progress: Arc<Progress>,
    pub(super) rng: FaultRng,
}

impl Egress {
    /// Accounts for what this egress could not deliver ([`abandon`]),
    /// `held` bytes in hand besides its queue.
    fn abandon(&self, dst: &OwnedWriteHalf, rx: &mut mpsc::Receiver<Item>, held: u64) {
        abandon(
            &self.shared,
            self.conn,
            self.direction,
            dst,
            rx,
            held,
            &self.progress,
            &self.phase,
        );
    }
}

pub(super) async fn run(mut e: Egress, mut dst: OwnedWriteHalf, mut rx: mpsc::Receiver<Item>) {
    let direction = e.direction;
    let mut phase = e.phase.subscribe();
    let mut next_free = Instant::now();
    loop {
        // Biased: once the connection is being closed, that wins over
        // queued items (and over the queue's end when the ingress has gone).
        let item = tokio::select! {
            biased;
            _ = phase.wait_for(|p| !p.dest_open(direction)) => None,
            item = rx.recv() => item,
        };
        let Some(item) = item else {
            // The ingress never ends its queue without an end-of-stream or a
            // close item, so this is an abnormal end: account for it.
            e.abandon(&dst, &mut rx, 0);
            return;
        };
        match item {
            Item::Data {
                bytes,
                deliver_at,
                fragment,
                throttle,
                stream_end,
            } => {
                let write = write_item(
                    &mut dst,
                    &bytes,
                    deliver_at,
                    fragment,
                    throttle,
                    &mut next_free,
                    &mut e.rng,
                );
                let ok = tokio::select! {
                    ok = write => ok,
                    _ = phase.wait_for(|p| !p.dest_open(direction)) => false,
                };
                if !ok {
                    if direction == Direction::ToUpstream {
                        // Closed before abandoning, so the reason is ours
                        // unless someone else closed it first.
                        close(&e.phase, true, true, Reason::Upstream);
                    }
                    let held = bytes.len() as u64;
                    e.abandon(&dst, &mut rx, held);
                    // The destination is gone: close everything, so the
                    // source's sender learns it on its next write.
                    close(
                        &e.phase,
                        true,
                        true,
                        match direction {
                            Direction::ToUpstream => Reason::Upstream,
                            Direction::ToClient => Reason::Client,
                        },
                    );
                    return;
                }
                e.shared.count_forwarded(direction, bytes.len());
                e.progress.delivered.store(stream_end, Ordering::Release);
            }
            Item::Eof { linger } => {
                if !linger.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(linger) => {}
                        _ = phase.wait_for(|p| !p.dest_open(direction)) => {}
                    }
                }
                let _ = dst.shutdown().await;
                match direction {
                    // Normal end: the upstream finishes reading and closes.
                    // If it resets instead, what it had not read is lost:
                    // account for it, as when a write fails.
                    Direction::ToUpstream => {
                        let reset = phase
                            .wait_for(|p| !p.dest_open(direction))
                            .await
                            .is_ok_and(|p| p.reason == Reason::UpstreamReset);
                        if reset {
                            e.abandon(&dst, &mut rx, 0);
                        }
                    }
                    // The upstream closed, and the client has everything it
                    // sent: its service is gone, so close the client too
                    // (its next write fails, as on a direct connection).
                    Direction::ToClient => close(&e.phase, true, true, Reason::Upstream),
                }
                return;
            }
            Item::Close(CutMode::Both, flushed) => {
                let _ = dst.shutdown().await;
                let _ = flushed.send(());
                close(&e.phase, true, true, Reason::Cut);
                return;
            }
            Item::Close(CutMode::ClientOnly, flushed) => {
                let _ = flushed.send(());
                // Keep this side open and silent until its peer or the proxy
                // closes it.
                let _ = phase.wait_for(|p| !p.dest_open(direction)).await;
                return;
            }
        }
    }
}

/// How late a paced write may find its timer and still keep to the
/// schedule (the timer's granularity is 1 ms).
const PACE_SLACK: Duration = Duration::from_millis(10);

/// The largest piece a bandwidth limit of `rate` bytes/s writes at once:
/// 100 ms worth (at least a byte, at most 64 KiB).
fn pace_piece(rate: u64) -> usize {
    usize::try_from(rate / 10)
        .unwrap_or(usize::MAX)
        .clamp(1, 64 * 1024)
}

async fn write_item(
    dst: &mut OwnedWriteHalf,
    bytes: &[u8],
    deliver_at: Instant,
    fragment: Option<(usize, usize, Duration)>,
    throttle: Option<u64>,
    next_free: &mut Instant,
    rng: &mut FaultRng,
) -> bool {
    tokio::time::sleep_until(deliver_at).await;
    let mut rest = bytes;
    let mut first = true;
    while !rest.is_empty() {
        let mut piece = match fragment {
            Some((min, max, pause)) => {
                if !first && !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                (rng.between(min as u64, max as u64) as usize).min(rest.len())
            }
            None => rest.len(),
        };
        first = false;
        if let Some(rate) = throttle {
            // Paced from the first byte, as toxiproxy does: each piece (a
            // tenth of a second's worth at most, so the pace stays smooth)
            // waits for its own time before it is written; an idle
            // connection earns no credit for a burst later.
            piece = piece.min(pace_piece(rate));
            let cost = Duration::from_secs_f64(piece as f64 / rate as f64);
            // A timer that woke a little late (under 10 ms) is caught up
            // on, not charged to the rate; after a longer pause the pace
            // starts again from now.
            let now = Instant::now();
            let base = if now.saturating_duration_since(*next_free) < PACE_SLACK {
                *next_free
            } else {
                now
            };
            *next_free = base + cost;
            tokio::time::sleep_until(*next_free).await;
        }
        if dst.write_all(&rest[..piece]).await.is_err() {
            return false;
        }
        rest = &rest[piece..];
    }
    true
}
