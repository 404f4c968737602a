//! One proxied connection: two pumps (client → upstream, upstream →
//! client), each an ingress task that reads and asks the faults, and an
//! egress task that writes what the faults allowed, when they allowed it.
//!
//! The ingress side owns all accounting for the event log: when its
//! connection ends abnormally it shuts its source down for reading (the
//! sender's later writes fail), counts the bytes still unread, and records
//! what may be lost.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::Shared;
use super::events::FaultEvent;
use super::fault::{Chunk, CutMode, Direction, Note, Verdict};
use super::tracker::Cursor;

const READ_SIZE: usize = 64 * 1024;
const QUEUE_CHUNKS: usize = 16;
const MAX_HOLDS: usize = 16;

/// Why a connection is being closed by someone other than a pump's own cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Still open.
    None,
    /// A fault cut it (already logged by the cutting ingress).
    Cut,
    /// The upstream closed its side or refused our bytes.
    Upstream,
    /// The client closed (normal end).
    Client,
    /// An outage (`refuse`) cut every connection.
    Outage,
    /// The proxy is stopping.
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

enum Item {
    Data {
        bytes: Vec<u8>,
        deliver_at: Instant,
        fragment: Option<(usize, usize, Duration)>,
        throttle: Option<u64>,
        stream_end: u64,
    },
    Eof,
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

pub(crate) fn new_phase() -> PhaseTx {
    Arc::new(watch::channel(Phase::open()).0)
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
    let egress = egress(
        shared.clone(),
        conn,
        direction,
        dst,
        rx,
        phase.clone(),
        progress.clone(),
        SmallRng::seed_from_u64(seed.rotate_left(17)),
    );
    let ingress = Ingress {
        shared,
        conn,
        direction,
        phase,
        progress,
        rng: SmallRng::seed_from_u64(seed),
        cursor: Cursor::default(),
        offset: 0,
        frame_ends: FrameEnds::default(),
        poisoned_at: None,
        last_end: 0,
        announced: Vec::new(),
    }
    .run(src, tx);
    tokio::join!(ingress, egress);
}

/// Stream offsets where whole frames end, kept only as far back as needed
/// to answer "where did the last whole frame before byte X end".
#[derive(Default)]
struct FrameEnds {
    ends: VecDeque<u64>,
    floor: u64,
}

impl FrameEnds {
    fn push(&mut self, end: u64) {
        self.ends.push_back(end);
        if self.ends.len() > 1 << 20 {
            if let Some(end) = self.ends.pop_front() {
                self.floor = end;
            }
        }
    }

    fn last_at_or_before(&mut self, at: u64) -> u64 {
        while self.ends.len() > 1 && self.ends[1] <= at {
            self.floor = self.ends.pop_front().unwrap_or(self.floor);
        }
        match self.ends.front() {
            Some(&end) if end <= at => end,
            _ => self.floor,
        }
    }
}

struct Ingress {
    shared: Arc<Shared>,
    conn: u64,
    direction: Direction,
    phase: PhaseTx,
    progress: Arc<Progress>,
    rng: SmallRng,
    cursor: Cursor,
    offset: u64,
    frame_ends: FrameEnds,
    poisoned_at: Option<u64>,
    last_end: u64,
    announced: Vec<String>,
}

/// The verdicts of every fault for one chunk, combined.
#[derive(Default)]
struct Plan {
    hold: bool,
    delay: Duration,
    fragment: Option<(usize, usize, Duration)>,
    throttle: Option<u64>,
    stall: Duration,
    cut: Option<(usize, CutMode)>,
    fired: Vec<(String, Verdict)>,
    notes: Vec<(String, Note)>,
}

impl Ingress {
    fn source_open(&self, p: &Phase) -> bool {
        match self.direction {
            Direction::ToUpstream => p.client_open,
            Direction::ToClient => p.upstream_open,
        }
    }

    async fn run(mut self, mut src: OwnedReadHalf, tx: mpsc::Sender<Item>) {
        let mut phase = self.phase.subscribe();
        let mut buf = vec![0u8; READ_SIZE];
        loop {
            let n = tokio::select! {
                r = src.read(&mut buf) => r.unwrap_or(0),
                _ = phase.wait_for(|p| !self.source_open(p)) => {
                    self.closed_from_outside(&src, 0);
                    return;
                }
            };
            if n == 0 {
                let _ = tx.send(Item::Eof).await;
                self.source_ended();
                return;
            }
            let mut original = buf[..n].to_vec();
            let mut end_of_stream = false;
            let mut holds = 0;
            let (plan, data, segments_end, next) = loop {
                let (segments, next) = self.cursor.map(&original);
                let mut data = original.clone();
                let mut poisoned = self.poisoned_at;
                let plan = self.ask_faults(&mut data, &segments, end_of_stream, &mut poisoned);
                if plan.hold && !end_of_stream && holds < MAX_HOLDS {
                    holds += 1;
                    let more = tokio::select! {
                        r = src.read(&mut buf) => r.unwrap_or(0),
                        _ = phase.wait_for(|p| !self.source_open(p)) => 0,
                    };
                    if more == 0 {
                        end_of_stream = true;
                    }
                    original.extend_from_slice(&buf[..more]);
                    continue;
                }
                self.poisoned_at = poisoned;
                let ends: Vec<(usize, u64)> = segments
                    .iter()
                    .filter(|s| s.frame_ends_here)
                    .map(|s| (s.range.end, s.frame))
                    .collect();
                break (plan, data, ends, next);
            };
            let chunk_start = self.offset;
            self.log_plan(&plan, chunk_start);
            self.offset += original.len() as u64;
            self.cursor = next;

            if let Some((at, mode)) = plan.cut {
                let at = at.min(data.len());
                for &(end, _) in segments_end.iter().filter(|(end, _)| *end <= at) {
                    self.push_frame_end(chunk_start + end as u64);
                }
                let cut_offset = chunk_start + at as u64;
                // A rewritten prefix may have changed the chunk's length:
                // count the difference as not delivered, to stay an upper
                // bound on what the upstream lost.
                let rest = (data.len() - at + data.len().abs_diff(original.len())) as u64;
                let mut delivered = data;
                delivered.truncate(at);
                let item = Item::Data {
                    bytes: delivered,
                    deliver_at: Instant::now() + plan.delay,
                    fragment: plan.fragment,
                    throttle: plan.throttle,
                    stream_end: cut_offset,
                };
                let _ = tx.send(item).await;
                let (flushed_tx, flushed) = oneshot::channel();
                let _ = tx.send(Item::Close(mode, flushed_tx)).await;
                // A real writer has finished writing on its old connection
                // before it reconnects: the client learns of the cut only
                // once the upstream has every byte sent before it, so a
                // writer that reconnects at once never gets bytes onto a new
                // upstream connection while the old one still receives.
                if self.direction == Direction::ToUpstream {
                    let _ = flushed.await;
                }
                let pending = shut_and_count(&src);
                self.close_source(Reason::Cut);
                let (name, frame) = plan
                    .fired
                    .iter()
                    .find(|(_, v)| matches!(v, Verdict::Cut { .. }))
                    .map(|(name, _)| (name.clone(), self.frame_at(cut_offset)))
                    .unwrap_or_else(|| ("cut".to_owned(), None));
                let last_whole = self.last_whole_before(cut_offset);
                let mut event = self.event(&name, cut_offset, frame);
                event.detail = format!(
                    "connection closed ({}) at byte {cut_offset}",
                    match mode {
                        CutMode::Both => "both sides",
                        CutMode::ClientOnly => "client side only, upstream left open",
                    }
                );
                event.discarded_bytes = rest + pending;
                event.in_flight_bytes = rest + pending + (cut_offset - last_whole);
                event.closed_connection = true;
                self.shared.log.push(event);
                return;
            }

            for (end, _) in &segments_end {
                self.push_frame_end(chunk_start + *end as u64);
            }
            let item = Item::Data {
                bytes: data,
                deliver_at: Instant::now() + plan.delay,
                fragment: plan.fragment,
                throttle: plan.throttle,
                stream_end: self.offset,
            };
            if let Err(unsent) = tx.send(item).await {
                // The egress ended (its side failed); the phase says why.
                let unsent = match unsent.0 {
                    Item::Data { bytes, .. } => bytes.len() as u64,
                    _ => 0,
                };
                let _ = phase.wait_for(|p| !self.source_open(p)).await;
                self.closed_from_outside(&src, unsent);
                return;
            }
            if !plan.stall.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(plan.stall) => {}
                    _ = phase.wait_for(|p| !self.source_open(p)) => {}
                }
            }
        }
    }

    fn ask_faults(
        &mut self,
        data: &mut Vec<u8>,
        segments: &[super::tracker::Segment],
        end_of_stream: bool,
        poisoned: &mut Option<u64>,
    ) -> Plan {
        let mut plan = Plan::default();
        let faults = self.shared.faults(self.direction);
        let mut faults = faults.lock().unwrap_or_else(|p| p.into_inner());
        for (_, fault) in faults.iter_mut() {
            let mut notes = Vec::new();
            let mut chunk = Chunk {
                data,
                segments,
                conn: self.conn,
                direction: self.direction,
                offset: self.offset,
                elapsed: self.shared.start.elapsed(),
                rng: &mut self.rng,
                end_of_stream,
                notes: &mut notes,
                poisoned_at: poisoned,
            };
            let verdict = fault.on_chunk(&mut chunk);
            let name = fault.name().to_owned();
            plan.notes
                .extend(notes.into_iter().map(|n| (name.clone(), n)));
            match &verdict {
                Verdict::Pass => continue,
                Verdict::Hold => plan.hold = true,
                Verdict::Delay(d) => plan.delay += *d,
                Verdict::Fragment { min, max, pause } => {
                    plan.fragment = Some(((*min).max(1), (*max).max(*min).max(1), *pause));
                }
                Verdict::Throttle { bytes_per_sec } => {
                    let rate = (*bytes_per_sec).max(1);
                    plan.throttle = Some(plan.throttle.map_or(rate, |r| r.min(rate)));
                }
                Verdict::StallAfter(d) => plan.stall += *d,
                Verdict::Cut { at, mode } => {
                    if plan.cut.is_none_or(|(earlier, _)| *at < earlier) {
                        plan.cut = Some((*at, *mode));
                    }
                }
            }
            plan.fired.push((name, verdict));
        }
        plan
    }

    /// Logs what fired: notes and discrete verdicts every time, continuous
    /// ones (fragment, latency, bandwidth) once per connection.
    fn log_plan(&mut self, plan: &Plan, chunk_start: u64) {
        for (name, note) in &plan.notes {
            let mut event = self.event(name, chunk_start + note.position as u64, note.frame);
            event.detail = note.detail.clone();
            self.shared.log.push(event);
        }
        for (name, verdict) in &plan.fired {
            let detail = match verdict {
                Verdict::Delay(d) => format!("every chunk delayed {} ms", d.as_millis()),
                Verdict::Fragment { min, max, pause } => format!(
                    "writes of {min}..={max} bytes, {} ms apart",
                    pause.as_millis()
                ),
                Verdict::Throttle { bytes_per_sec } => {
                    format!("at most {bytes_per_sec} bytes/s")
                }
                Verdict::StallAfter(d) => {
                    let mut event = self.event(name, chunk_start, Some(self.cursor.frame()));
                    event.detail = format!("stopped reading for {} ms", d.as_millis());
                    self.shared.log.push(event);
                    continue;
                }
                _ => continue,
            };
            if self.announced.iter().any(|n| n == name) {
                continue;
            }
            self.announced.push(name.clone());
            let mut event = self.event(name, chunk_start, Some(self.cursor.frame()));
            event.detail = detail;
            self.shared.log.push(event);
        }
    }

    fn push_frame_end(&mut self, end: u64) {
        let size = end - self.last_end;
        self.last_end = end;
        self.progress.max_frame.fetch_max(size, Ordering::Relaxed);
        self.frame_ends.push(end);
    }

    fn event(&self, name: &str, byte_offset: u64, frame: Option<u64>) -> FaultEvent {
        let mut event = FaultEvent::new(name, self.shared.start.elapsed(), self.conn);
        event.direction = Some(self.direction);
        event.byte_offset = byte_offset;
        event.frame = frame;
        event
    }

    fn frame_at(&self, offset: u64) -> Option<u64> {
        (offset <= self.offset).then(|| self.cursor.frame())
    }

    /// Where the last whole frame at or before `at` ended, or where the
    /// stream stopped being parseable if that is earlier.
    fn last_whole_before(&mut self, at: u64) -> u64 {
        let end = self.frame_ends.last_at_or_before(at);
        self.poisoned_at.map_or(end, |p| end.min(p))
    }

    fn close_source(&self, reason: Reason) {
        match self.direction {
            Direction::ToUpstream => close(&self.phase, true, false, reason),
            Direction::ToClient => close(&self.phase, false, true, reason),
        }
    }

    fn source_ended(&self) {
        // The client finishing is the normal end; the upstream closing
        // means its service is gone: close the client too, so its next
        // write fails as it would on a direct connection.
        if self.direction == Direction::ToClient {
            close(&self.phase, true, true, Reason::Upstream);
        }
    }

    /// The connection is being closed from elsewhere: the upstream failed,
    /// an outage, or the proxy stopping. Logs the bytes the client had sent
    /// that were never read (the egress logs what it had not delivered).
    fn closed_from_outside(&mut self, src: &OwnedReadHalf, unsent: u64) {
        let pending = shut_and_count(src) + unsent;
        if self.direction != Direction::ToUpstream || pending == 0 {
            return;
        }
        let Some(name) = reason_name(self.phase.borrow().reason) else {
            return;
        };
        let mut event = self.event(name, self.offset, Some(self.cursor.frame()));
        event.detail = format!("{pending} bytes the client sent were never forwarded");
        event.discarded_bytes = pending;
        event.in_flight_bytes = pending;
        self.shared.log.push(event);
    }
}

fn reason_name(reason: Reason) -> Option<&'static str> {
    match reason {
        Reason::Upstream => Some("upstream-closed"),
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
fn abandon(
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
fn shut_and_count(src: &OwnedReadHalf) -> u64 {
    let stream: &UnixStream = src.as_ref();
    let fd = stream.as_fd();
    let _ = nix::sys::socket::shutdown(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        nix::sys::socket::Shutdown::Read,
    );
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    // Reading (not peeking) after SHUT_RD: nothing new can arrive, so the
    // count is exact; the bytes are discarded, as the close would.
    while let Ok(n) = nix::sys::socket::recv(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &mut buf,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    ) {
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    total
}

#[allow(clippy::too_many_arguments)]
async fn egress(
    shared: Arc<Shared>,
    conn: u64,
    direction: Direction,
    mut dst: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Item>,
    phase_tx: PhaseTx,
    progress: Arc<Progress>,
    mut rng: SmallRng,
) {
    let mut phase = phase_tx.subscribe();
    let dest_open = move |p: &Phase| match direction {
        Direction::ToUpstream => p.upstream_open,
        Direction::ToClient => p.client_open,
    };
    let mut next_free = Instant::now();
    loop {
        // Biased: once the connection is being closed, that wins over
        // queued items (and over the queue's end when the ingress has gone).
        let item = tokio::select! {
            biased;
            _ = phase.wait_for(|p| !dest_open(p)) => None,
            item = rx.recv() => item,
        };
        let Some(item) = item else {
            // The ingress never ends its queue without an end-of-stream or a
            // close item, so this is an abnormal end: account for it.
            abandon(
                &shared, conn, direction, &dst, &mut rx, 0, &progress, &phase_tx,
            );
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
                    &mut rng,
                );
                let ok = tokio::select! {
                    ok = write => ok,
                    _ = phase.wait_for(|p| !dest_open(p)) => false,
                };
                if !ok {
                    if direction == Direction::ToUpstream {
                        // Closed before abandoning, so the reason is ours
                        // unless someone else closed it first.
                        close(&phase_tx, true, true, Reason::Upstream);
                    }
                    let held = bytes.len() as u64;
                    abandon(
                        &shared, conn, direction, &dst, &mut rx, held, &progress, &phase_tx,
                    );
                    // The destination is gone: close everything, so the
                    // source's sender learns it on its next write.
                    close(
                        &phase_tx,
                        true,
                        true,
                        match direction {
                            Direction::ToUpstream => Reason::Upstream,
                            Direction::ToClient => Reason::Client,
                        },
                    );
                    return;
                }
                shared.count_forwarded(direction, bytes.len());
                progress.delivered.store(stream_end, Ordering::Release);
            }
            Item::Eof => {
                let _ = dst.shutdown().await;
                if direction == Direction::ToUpstream {
                    // Normal end: the upstream finishes reading and closes.
                    let _ = phase.wait_for(|p| !dest_open(p)).await;
                }
                return;
            }
            Item::Close(CutMode::Both, flushed) => {
                let _ = dst.shutdown().await;
                let _ = flushed.send(());
                close(&phase_tx, true, true, Reason::Cut);
                return;
            }
            Item::Close(CutMode::ClientOnly, flushed) => {
                let _ = flushed.send(());
                // Keep this side open and silent until its peer or the proxy
                // closes it.
                let _ = phase.wait_for(|p| !dest_open(p)).await;
                return;
            }
        }
    }
}

async fn write_item(
    dst: &mut OwnedWriteHalf,
    bytes: &[u8],
    deliver_at: Instant,
    fragment: Option<(usize, usize, Duration)>,
    throttle: Option<u64>,
    next_free: &mut Instant,
    rng: &mut SmallRng,
) -> bool {
    tokio::time::sleep_until(deliver_at).await;
    let mut rest = bytes;
    let mut first = true;
    while !rest.is_empty() {
        let piece = match fragment {
            Some((min, max, pause)) => {
                if !first && !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                rng.random_range(min..=max).min(rest.len())
            }
            None => rest.len(),
        };
        first = false;
        if let Some(rate) = throttle {
            // Never more than 64 KiB at once, so the pace stays smooth.
            let piece = piece.min(64 * 1024);
            tokio::time::sleep_until(*next_free).await;
            let cost = Duration::from_secs_f64(piece as f64 / rate as f64);
            *next_free = Instant::now().max(*next_free) + cost;
            if dst.write_all(&rest[..piece]).await.is_err() {
                return false;
            }
            rest = &rest[piece..];
            continue;
        }
        if dst.write_all(&rest[..piece]).await.is_err() {
            return false;
        }
        rest = &rest[piece..];
    }
    true
}
