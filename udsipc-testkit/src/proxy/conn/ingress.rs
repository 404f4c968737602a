//! The ingress half of a pump: reads one side, maps each chunk onto the
//! frames, asks the faults ([`super::plan`]), hands the result to the
//! egress, and carries out cuts and stalls. When its stream ends
//! abnormally (a cut, a read error, a close from outside) it logs what may
//! be lost.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::AsyncReadExt;
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::super::events::FaultEvent;
use super::super::fault::{CutMode, Direction, Verdict};
use super::super::rng::FaultRng;
use super::super::tracker::Cursor;
use super::super::{Framing, Shared, lock};
use super::accounting::{FrameEnds, reason_name, shut_and_count};
use super::plan::{self, Context, Plan};
use super::{Item, PhaseTx, Progress, Reason, close};

const READ_SIZE: usize = 64 * 1024;
const MAX_HOLDS: usize = 16;

pub(super) struct Ingress {
    shared: Arc<Shared>,
    conn: u64,
    direction: Direction,
    phase: PhaseTx,
    progress: Arc<Progress>,
    rng: FaultRng,
    cursor: Cursor,
    offset: u64,
    frame_ends: FrameEnds,
    poisoned_at: Option<u64>,
    last_end: u64,
    announced: Vec<String>,
    started: Instant,
}

/// One read: bytes, a clean end, or an error.
enum Read {
    Bytes(usize),
    End,
    Failed(io::Error),
    ClosedFromOutside,
    /// A fault's [`super::super::Fault::cut_after`] came due.
    Deadline(String),
}

impl Ingress {
    pub(super) fn new(
        shared: Arc<Shared>,
        conn: u64,
        direction: Direction,
        phase: PhaseTx,
        progress: Arc<Progress>,
        seed: u64,
    ) -> Self {
        Self {
            shared,
            conn,
            direction,
            phase,
            progress,
            rng: FaultRng::from_seed(seed),
            cursor: Cursor::default(),
            offset: 0,
            frame_ends: FrameEnds::default(),
            poisoned_at: None,
            last_end: 0,
            announced: Vec::new(),
            started: Instant::now(),
        }
    }

    /// The earliest cut a fault asked for by time, and whose it is.
    fn deadline(&self) -> Option<(Instant, String)> {
        let mut faults = lock(self.shared.faults(self.direction));
        faults
            .iter_mut()
            .filter_map(|f| {
                let after = f.fault.cut_after(self.conn)?;
                Some((self.started.max(f.added) + after, f.fault.name().to_owned()))
            })
            .min_by_key(|(at, _)| *at)
    }

    /// How long a clean end waits before it is passed on.
    fn close_delay(&self) -> std::time::Duration {
        let mut faults = lock(self.shared.faults(self.direction));
        faults
            .iter_mut()
            .map(|f| f.fault.close_delay(self.conn))
            .max()
            .unwrap_or_default()
    }

    async fn read(&self, src: &mut OwnedReadHalf, buf: &mut [u8]) -> Read {
        let mut phase = self.phase.subscribe();
        let direction = self.direction;
        let deadline = self.deadline();
        let due = async {
            match &deadline {
                Some((at, _)) => tokio::time::sleep_until(*at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // A cut that is due wins over bytes waiting (reset-peer:0 cuts
            // before anything is read).
            biased;
            () = due => Read::Deadline(deadline.map(|(_, name)| name).unwrap_or_default()),
            r = src.read(buf) => match r {
                Ok(0) => Read::End,
                Ok(n) => Read::Bytes(n),
                Err(e) => Read::Failed(e),
            },
            _ = phase.wait_for(|p| !p.source_open(direction)) => Read::ClosedFromOutside,
        }
    }

    pub(super) async fn run(mut self, mut src: OwnedReadHalf, tx: mpsc::Sender<Item>) {
        let mut buf = vec![0u8; READ_SIZE];
        loop {
            let n = match self.read(&mut src, &mut buf).await {
                Read::Bytes(n) => n,
                Read::End => {
                    self.end(&tx).await;
                    return;
                }
                Read::Deadline(name) => {
                    self.send_close(&tx, CutMode::Both).await;
                    self.cut_logged(&src, &name, self.offset, self.frame_now(), CutMode::Both, 0);
                    return;
                }
                Read::Failed(e) => {
                    self.read_failed(&src, &tx, &e).await;
                    return;
                }
                Read::ClosedFromOutside => {
                    self.closed_from_outside(&src, 0);
                    return;
                }
            };
            let mut original = buf[..n].to_vec();
            let mut end_of_stream = false;
            let mut failure = None;
            let mut outside = false;
            let mut holds = 0;
            let (plan, data, segments, next) = loop {
                let (segments, next) = match self.shared.framing {
                    Framing::Uvarint => self.cursor.map(&original),
                    Framing::None => (Vec::new(), self.cursor),
                };
                let mut data = original.clone();
                let mut poisoned = self.poisoned_at;
                let at = Context {
                    conn: self.conn,
                    direction: self.direction,
                    offset: self.offset,
                    elapsed: self.shared.start.elapsed(),
                    end_of_stream,
                    segments: &segments,
                };
                let may_hold = !end_of_stream && holds < MAX_HOLDS;
                let plan = {
                    let mut faults = lock(self.shared.faults(self.direction));
                    Plan::ask(
                        &mut faults,
                        &mut data,
                        &at,
                        &mut self.rng,
                        &mut poisoned,
                        may_hold,
                    )
                };
                if plan.hold && may_hold {
                    holds += 1;
                    match self.read(&mut src, &mut buf).await {
                        Read::Bytes(more) => original.extend_from_slice(&buf[..more]),
                        Read::End => end_of_stream = true,
                        Read::Failed(e) => {
                            end_of_stream = true;
                            failure = Some(e);
                        }
                        Read::ClosedFromOutside | Read::Deadline(_) => {
                            end_of_stream = true;
                            outside = true;
                        }
                    }
                    continue;
                }
                self.poisoned_at = poisoned;
                break (plan, data, segments, next);
            };
            let chunk_start = self.offset;
            self.log_plan(&plan, chunk_start);
            self.offset += original.len() as u64;
            self.cursor = next;
            let ends: Vec<u64> = segments
                .iter()
                .filter(|s| s.frame_ends_here)
                .map(|s| s.range.end as u64)
                .collect();

            if let Some((at, mode)) = plan.cut {
                let at = at.min(data.len());
                for &end in ends.iter().filter(|&&end| end <= at as u64) {
                    self.push_frame_end(chunk_start + end);
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
                self.send_close(&tx, mode).await;
                let name = plan
                    .fired
                    .iter()
                    .find(|(_, v)| matches!(v, Verdict::Cut { .. }))
                    .map_or_else(|| "cut".to_owned(), |(name, _)| name.clone());
                let frame = self.frame_of(&segments, at);
                self.cut_logged(&src, &name, cut_offset, frame, mode, rest);
                return;
            }

            for end in &ends {
                self.push_frame_end(chunk_start + end);
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
                let direction = self.direction;
                let _ = self
                    .phase
                    .subscribe()
                    .wait_for(|p| !p.source_open(direction))
                    .await;
                self.closed_from_outside(&src, unsent);
                return;
            }
            if let Some(e) = failure {
                self.read_failed(&src, &tx, &e).await;
                return;
            }
            if outside {
                self.closed_from_outside(&src, 0);
                return;
            }
            if end_of_stream {
                self.end(&tx).await;
                return;
            }
            if !plan.stall.is_zero() {
                let direction = self.direction;
                let mut phase = self.phase.subscribe();
                tokio::select! {
                    _ = tokio::time::sleep(plan.stall) => {}
                    _ = phase.wait_for(|p| !p.source_open(direction)) => {}
                }
            }
        }
    }

    /// Queues a cut. A real writer has finished writing on its old
    /// connection before it reconnects: the client learns of the cut only
    /// once the upstream has every byte sent before it, so a writer that
    /// reconnects at once never gets bytes onto a new upstream connection
    /// while the old one still receives.
    async fn send_close(&self, tx: &mpsc::Sender<Item>, mode: CutMode) {
        let (flushed_tx, flushed) = oneshot::channel();
        let _ = tx.send(Item::Close(mode, flushed_tx)).await;
        if self.direction == Direction::ToUpstream {
            let _ = flushed.await;
        }
    }

    /// The source ended cleanly: pass the end on (after any slow close).
    async fn end(&self, tx: &mpsc::Sender<Item>) {
        let linger = self.close_delay();
        let _ = tx.send(Item::Eof { linger }).await;
        if self.direction == Direction::ToClient {
            // The upstream closed: once the client has everything (the
            // egress then closes it) or is gone anyway, close the upstream
            // side too, even one a fault left open and silent.
            let _ = self.phase.subscribe().wait_for(|p| !p.client_open).await;
            close(&self.phase, true, true, Reason::Upstream);
        }
    }

    /// After a cut at `cut_offset` was queued: shuts the source, closes its
    /// side and logs the cut with what may be lost (`rest`: bytes read but
    /// not forwarded).
    fn cut_logged(
        &mut self,
        src: &OwnedReadHalf,
        name: &str,
        cut_offset: u64,
        frame: Option<u64>,
        mode: CutMode,
        rest: u64,
    ) {
        let pending = shut_and_count(src.as_ref());
        self.close_source(Reason::Cut);
        let last_whole = self.last_whole_before(cut_offset);
        let mut event = self.event(name, cut_offset, frame);
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
                    let frame = self.frame_now();
                    let mut event = self.event(name, chunk_start, frame);
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
            let frame = self.frame_now();
            let mut event = self.event(name, chunk_start, frame);
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

    /// The frame the next byte belongs to (none without framing).
    fn frame_now(&self) -> Option<u64> {
        (self.shared.framing == Framing::Uvarint).then(|| self.cursor.frame())
    }

    /// The frame byte `at` of the last chunk belongs to.
    fn frame_of(&self, segments: &[super::super::tracker::Segment], at: usize) -> Option<u64> {
        (self.shared.framing == Framing::Uvarint)
            .then(|| plan::frame_at(segments, at, self.cursor.frame()))
    }

    /// Where the last whole frame at or before `at` ended, or where the
    /// stream stopped being parseable if that is earlier.
    fn last_whole_before(&mut self, at: u64) -> u64 {
        if self.shared.framing == Framing::None {
            return at;
        }
        let end = self.frame_ends.last_at_or_before(at);
        self.poisoned_at.map_or(end, |p| end.min(p))
    }

    fn close_source(&self, reason: Reason) {
        match self.direction {
            Direction::ToUpstream => close(&self.phase, true, false, reason),
            Direction::ToClient => close(&self.phase, false, true, reason),
        }
    }

    /// Reading the source failed (the client or the upstream reset the
    /// connection): not a clean end. Everything read was handed on; the
    /// destination is closed as for a cut, so it does not mistake the
    /// failure for an orderly end between frames, and what may be lost is
    /// logged.
    async fn read_failed(&mut self, src: &OwnedReadHalf, tx: &mpsc::Sender<Item>, e: &io::Error) {
        let upstream_failed = self.direction == Direction::ToClient;
        if upstream_failed {
            // The upstream reset the connection: its service is gone, as
            // when it closes; the client -> upstream side accounts for what
            // the upstream lost ("upstream-closed"), even when it had
            // forwarded everything already.
            close(&self.phase, true, true, Reason::UpstreamReset);
        }
        self.send_close(tx, CutMode::Both).await;
        let pending = shut_and_count(src.as_ref());
        self.close_source(Reason::Cut);
        let offset = self.offset;
        let last_whole = self.last_whole_before(offset);
        let frame = self.frame_now();
        let mut event = self.event("read-error", offset, frame);
        event.detail = format!(
            "reading from the {} failed ({e}); connection closed at byte {offset}",
            if upstream_failed {
                "upstream"
            } else {
                "client"
            }
        );
        event.discarded_bytes = pending;
        event.in_flight_bytes = pending + (offset - last_whole);
        event.closed_connection = !upstream_failed;
        self.shared.log.push(event);
    }

    /// The connection is being closed from elsewhere: the upstream failed,
    /// an outage, or the proxy stopping. Logs the bytes the client had sent
    /// that were never forwarded (the egress logs what it had not delivered).
    fn closed_from_outside(&mut self, src: &OwnedReadHalf, unsent: u64) {
        let pending = shut_and_count(src.as_ref()) + unsent;
        if self.direction != Direction::ToUpstream || pending == 0 {
            return;
        }
        let Some(name) = reason_name(self.phase.borrow().reason) else {
            return;
        };
        let frame = self.frame_now();
        let mut event = self.event(name, self.offset, frame);
        event.detail = format!("{pending} bytes the client sent were never forwarded");
        event.discarded_bytes = pending;
        event.in_flight_bytes = pending;
        self.shared.log.push(event);
    }
}
