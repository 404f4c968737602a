//! What a connection that ends abnormally may lose, for the event log:
//! where whole frames ended ([`FrameEnds`]), the bytes a sender had sent
//! that were never read ([`shut_and_count`]), and what an egress could not
//! deliver ([`abandon`]). Only counting; the decisions are the ingress's
//! and the egress's.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering;

use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, watch};

use super::super::Shared;
use super::super::events::FaultEvent;
use super::super::fault::Direction;
use super::{Item, Phase, Progress, Reason};

/// Stream offsets where whole frames end, kept only as far back as needed
/// to answer "where did the last whole frame before byte X end".
#[derive(Default)]
pub(super) struct FrameEnds {
    ends: VecDeque<u64>,
    floor: u64,
}

impl FrameEnds {
    pub(super) fn push(&mut self, end: u64) {
        self.ends.push_back(end);
        if self.ends.len() > 1 << 20 {
            if let Some(end) = self.ends.pop_front() {
                self.floor = end;
            }
        }
    }

    pub(super) fn last_at_or_before(&mut self, at: u64) -> u64 {
        while self.ends.len() > 1 && self.ends[1] <= at {
            self.floor = self.ends.pop_front().unwrap_or(self.floor);
        }
        match self.ends.front() {
            Some(&end) if end <= at => end,
            _ => self.floor,
        }
    }
}

/// The event name for a connection closed from outside its pumps.
pub(super) fn reason_name(reason: Reason) -> Option<&'static str> {
    match reason {
        Reason::Upstream | Reason::UpstreamReset => Some("upstream-closed"),
        Reason::Outage => Some("refuse"),
        Reason::Stop => Some("proxy-stopped"),
        Reason::None | Reason::Cut | Reason::Client => None,
    }
}

/// The destination is gone (or being closed) with bytes still to deliver:
/// logs what the upstream may lose, namely what was never written (`held`
/// plus the queue), what sat unread in its socket (at most twice the socket
/// send buffer, the kernel's own limit) and a frame split at the end.
#[allow(clippy::too_many_arguments)]
pub(super) fn abandon(
    shared: &Shared,
    conn: u64,
    direction: Direction,
    dst: &OwnedWriteHalf,
    rx: &mut mpsc::Receiver<Item>,
    held: u64,
    progress: &Progress,
    phase: &watch::Sender<Phase>,
) {
    rx.close();
    let mut queued = held;
    while let Ok(item) = rx.try_recv() {
        if let Item::Data { bytes, .. } = item {
            queued += bytes.len() as u64;
        }
    }
    if direction != Direction::ToUpstream {
        return;
    }
    let Some(name) = reason_name(phase.borrow().reason) else {
        return;
    };
    let stream: &UnixStream = dst.as_ref();
    let sndbuf = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::SndBuf)
        .map_or(0, |b| b as u64);
    let delivered = progress.delivered.load(Ordering::Acquire);
    let mut event = FaultEvent::new(name, shared.start.elapsed(), conn);
    event.direction = Some(direction);
    event.byte_offset = delivered;
    event.detail =
        format!("connection closed: {queued} bytes not yet forwarded, {delivered} forwarded");
    event.discarded_bytes = queued;
    event.in_flight_bytes = queued + 2 * sndbuf + progress.max_frame.load(Ordering::Relaxed);
    event.closed_connection = true;
    shared.log.push(event);
}

/// Shuts `src` down for reading (the sender's next write fails) and counts
/// the bytes it had sent that were never read.
pub(crate) fn shut_and_count(stream: &UnixStream) -> u64 {
    let fd = stream.as_fd().as_raw_fd();
    let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Read);
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    // Reading (not peeking) after SHUT_RD: nothing new can arrive, so the
    // count is exact; the bytes are discarded, as the close would.
    while let Ok(n) = nix::sys::socket::recv(fd, &mut buf, nix::sys::socket::MsgFlags::MSG_DONTWAIT)
    {
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    total
}
