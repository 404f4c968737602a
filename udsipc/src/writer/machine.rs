//! The Writer's decisions, without IO: when to dial, what to write, what a
//! dead connection means for each message on it, when to back off, when to
//! give up on a message, when a drain is over.
//!
//! Inputs come in through `handle_*` methods, each with the time `now`
//! (connected, dial failed, bytes written, would block, writable, write
//! error with the socket's pending error, a sample of the socket, stop,
//! force); [`Machine::poll_action`] takes `now` too and applies the time
//! (the drain deadline, sample times, backpressure episodes, dial times).
//! Outputs come out of [`Machine::poll_action`] (the next thing to do, and
//! for a wait which readiness to watch), [`Machine::poll_timeout`] (when to
//! call again if nothing happens), [`Machine::take_direct`] (whether a
//! producer may write by itself now), [`Machine::wake_task`] (whether the
//! task must be woken after it did),
//! [`Machine::poll_report`] (errors for the callback), the counters in
//! [`Machine::stats`] and [`Machine::take_freed`] (queue slots to release).
//! The tokio driver only moves bytes and time; this module never touches a
//! socket, a clock or a task.
//!
//! # Delivery truth
//!
//! On Linux, a Unix stream socket's unread-bytes count (`SIOCOUTQ`) is the
//! true size of the buffers the peer has not finished reading: at least the
//! unread bytes, exactly 0 once everything was read. So after a sample,
//! `written - unread` bytes are known to be read (a lower bound), and a
//! message that ends below it is *delivered*. When a connection dies the
//! kernel says how: if the reader closed with unread bytes, the writer's
//! socket gets `ECONNRESET` (the *last* byte written was not read); if it
//! had read everything, writes just fail with `EPIPE`.
//!
//! Each fresh connection is proven before it carries traffic: the first
//! byte of the head message is written alone and must be read (unread count
//! 0) before the rest of the head goes, and the head must be read before
//! anything else goes. A connection that dies with its probe byte unread was
//! refused (the reader read nothing): nothing is lost and the head message
//! is not blamed. A head that dies half-read is provably not read whole, so
//! retrying it can never duplicate it; after `max_attempts` such deaths it
//! is failed for good (a poison message). Messages written whole whose read
//! was never confirmed when a connection died with unread bytes are
//! *unconfirmed*: maybe read, never retried (no duplicates, ever).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::batch::Batch;
use super::queue::Item;
use crate::error::{WriteFailure, WritePhase, WriterError};
use crate::metrics::WriterMetrics;

/// The first interval between samples of the unread count while waiting
/// for the reader to read; it doubles to [`SAMPLE_MAX`] while nothing moves.
pub(crate) const SAMPLE_MIN: Duration = Duration::from_millis(1);
/// The longest interval between samples while waiting.
pub(crate) const SAMPLE_MAX: Duration = Duration::from_millis(50);

/// `at + d`, saturating: a sum past what the clock can hold (any duration
/// option set to `Duration::MAX`, which means "never") becomes a point
/// about 30 years ahead, which never comes.
pub(crate) fn later(at: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    at.checked_add(d.min(FAR)).unwrap_or(at)
}
/// While streaming, the unread count is sampled after this many bytes.
const SAMPLE_EVERY_BYTES: u64 = 256 * 1024;

/// The machine's options.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) path: PathBuf,
    pub(crate) write_timeout: Duration,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) max_attempts: u32,
    /// The first and the longest interval between samples while waiting
    /// for the reader ([`SAMPLE_MIN`] and [`SAMPLE_MAX`]; tests stretch
    /// them to prove that the reader's reads alone move a connection on).
    pub(crate) sampling: (Duration, Duration),
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Connect, then call `handle_connected` or `handle_dial_failed`.
    Dial,
    /// Write [`Machine::iovecs`] once, then call `handle_written`,
    /// `handle_would_block` or `handle_write_error`.
    Write,
    /// Read the unread count and the pending socket error, then call
    /// `handle_sample`.
    Sample,
    /// Drop the connection (its end is accounted for), then call
    /// `handle_closed`.
    Close,
    /// Wait for one of these, or for [`Machine::poll_timeout`].
    Wait(Wait),
    /// Finished: drop the connection, end the task.
    Done,
}

/// What may end a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Wait {
    /// New messages in the queue (take them, then poll again).
    pub(crate) messages: bool,
    /// Room in the socket: call `handle_writable`.
    pub(crate) writable: bool,
    /// A hang-up of the open connection: sample with `hangup: true`.
    pub(crate) hangup: bool,
    /// The reader reading some of what was written (the socket's room
    /// changes): sample then. Asked for only while the machine waits on
    /// the reader (a fresh connection's probe, a drain), not while it
    /// streams. The sample timer stays the fallback: Linux signals room
    /// only once less than a quarter of the send buffer is in use, so a
    /// drain of a larger backlog moves on at the timer until then.
    pub(crate) read: bool,
}

/// Why the driver keeps a registration for room ([`Machine::arm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    /// The socket filled: kept until the reader has read everything.
    Full,
    /// For a wait on the reader's reads: dropped at the next other wait.
    Reads,
}

/// Producers write by themselves at most [`DIRECT_MAX`] times per this
/// long; more often, messages come faster than one write each is worth,
/// and the task batches them.
const DIRECT_WINDOW: Duration = Duration::from_micros(50);
/// See [`DIRECT_WINDOW`]. More than one: a paced producer whose sleep
/// overshot sends messages close together, and each one left to the task
/// waited for a thread's wake-up. 64 B at 10,000 msgs/s, 3 interleaved
/// pairs: p50/p99 12.9-14.8/52-109 µs with one write per window,
/// 9.8-11.9/42-46 µs with four.
const DIRECT_MAX: u32 = 4;

/// One look at the socket.
#[derive(Debug, Default)]
pub(crate) struct Sample {
    /// Bytes written and not yet read (`SIOCOUTQ`); `None` where the system
    /// cannot tell (then what was written is taken as read, as Go does).
    pub(crate) unread: Option<u64>,
    /// The socket's pending error (`SO_ERROR`), read after `unread`.
    pub(crate) error: Option<io::Error>,
    /// The reader hung up.
    pub(crate) hangup: bool,
}

/// Messages written whole and not yet known to be read: one message, or
/// a run of them.
#[derive(Debug)]
struct Flight {
    /// Offset on the connection at which the last of them ends.
    end: u64,
    /// Their frames, kept for a run (to count the part of it that gets
    /// read) and for the last flight written (to retry it,
    /// [`Conn::take_last_written`]); `None` for one message.
    item: Option<Item>,
}

impl Flight {
    /// How many.
    fn count(&self) -> u64 {
        self.item.as_ref().map_or(1, |item| u64::from(item.count))
    }

    /// Counts off the messages of a run that end by `read`; returns how
    /// many.
    fn read_up_to(&mut self, read: u64) -> u32 {
        let Some(run) = &mut self.item else { return 0 };
        let start = self.end - run.bytes.len() as u64;
        if read <= start {
            return 0;
        }
        let (n, at) = run.whole_within((read - start) as usize);
        // All of it read is a whole flight, counted as one instead.
        if run.split_front_at(n, at).is_none() {
            return 0;
        }
        n
    }
}

fn count(flights: &VecDeque<Flight>) -> u64 {
    flights.iter().map(Flight::count).sum()
}

#[derive(Debug, Default)]
struct Conn {
    /// The head was read: stream freely. Before, the connection proves
    /// itself: nothing written yet (the probe byte is next), then the
    /// probe byte written and waited for (nothing more is
    /// [`allowed`](Self::allowed)), then the rest of the head written and
    /// waited for.
    open: bool,
    /// Bytes written on this connection.
    written: u64,
    /// Bytes known to be read (a lower bound).
    confirmed: u64,
    /// `written` at the last sample.
    sampled_at: u64,
    /// Messages written whole and not yet known to be read, in order.
    inflight: VecDeque<Flight>,
    /// The last write would have blocked.
    blocked: bool,
    /// Since when the driver has waited for the reader without progress.
    stalled_since: Option<Instant>,
    /// A backpressure episode was reported and has not ended.
    episode: bool,
    /// The registration for room the driver keeps, and why.
    room: Option<Room>,
    /// The next sample (now, or while waiting for the reader to read).
    sample_due: Option<Instant>,
    sample_every: Duration,
}

impl Conn {
    /// Bytes that may be written now: until the reader has read
    /// something, one in all (the probe byte, which it must read first).
    fn allowed(&self) -> usize {
        if self.confirmed > 0 {
            usize::MAX
        } else {
            usize::from(self.written == 0)
        }
    }

    fn progress(&mut self) {
        self.stalled_since = None;
        self.episode = false;
    }

    /// Takes the messages in flight that end by `read` off, with `partly`
    /// those of a run read in part too; returns how many.
    fn take_read(&mut self, read: u64, partly: bool) -> u64 {
        let mut n = 0;
        while let Some(f) = self.inflight.front_mut() {
            if f.end > read {
                // A run read in part is counted once read whole, or when
                // the connection ends (`partly`): walking its frames at
                // every sample cost a tenth of the writing thread's time
                // at 64 B.
                if partly {
                    n += u64::from(f.read_up_to(read));
                }
                break;
            }
            n += f.count();
            self.inflight.pop_front();
        }
        n
    }

    /// Takes the last message written whole off the flights if the last
    /// byte written is its last (after a reset, that byte was not read).
    fn take_last_written(&mut self) -> Option<Item> {
        let f = self.inflight.back_mut().filter(|f| f.end == self.written)?;
        match f.item.as_mut()?.split_last() {
            Some(last) => {
                f.end -= last.frame_len() as u64;
                Some(last)
            }
            None => self.inflight.pop_back()?.item,
        }
    }
}

#[derive(Debug)]
enum Link {
    /// No connection; dial at the instant (then the driver dials, and
    /// polls again only once it calls `handle_connected` or
    /// `handle_dial_failed`).
    Down(Instant),
    Up(Conn),
    /// The connection ended and is accounted for; redial after the delay.
    Dead(Duration),
    /// Finished.
    Gone,
}

/// The Writer's state machine.
#[derive(Debug)]
pub(crate) struct Machine {
    cfg: Config,
    /// The next reconnect delay: from `initial_backoff`, doubling up to
    /// `max_backoff`, back to the start once a message was read.
    backoff: Duration,
    /// Messages not yet written whole on the current connection, in order;
    /// the first `batch.completed()` of them are written whole (the planned
    /// batch is retired once done: a batch not done is planned).
    pending: VecDeque<Item>,
    /// The write planned; it started at `written - cursor` on the
    /// connection.
    batch: Batch,
    /// Finished once `Link::Gone`.
    link: Link,
    /// Set by a stop: drain (write everything queued, wait until it is
    /// read) until then; `None` while running (and once finished).
    deadline: Option<Instant>,
    forced: bool,
    dialed_before: bool,
    /// The counters the machine keeps (not `dropped`, `queue_depth`).
    stats: WriterMetrics,
    reports: VecDeque<WriterError>,
    /// Queue slots to release, and their frame bytes.
    freed: (usize, usize),
    /// Writes producers made by themselves: the window they count in.
    /// Since when, and how many (fixed windows of [`DIRECT_WINDOW`]).
    direct: (Instant, u32),
    /// The timer of the task's wait while it waits ([`Machine::arm`]).
    armed: Option<Instant>,
}

impl Machine {
    /// A machine that dials at once.
    pub(crate) fn new(cfg: Config, now: Instant) -> Self {
        Self {
            backoff: cfg.initial_backoff.min(cfg.max_backoff),
            cfg,
            pending: VecDeque::new(),
            batch: Batch::default(),
            link: Link::Down(now),
            deadline: None,
            forced: false,
            dialed_before: false,
            stats: WriterMetrics::default(),
            reports: VecDeque::new(),
            freed: (0, 0),
            direct: (now, 0),
            armed: None,
        }
    }

    // ----- outputs -------------------------------------------------------

    /// The counters now.
    pub(crate) fn stats(&self) -> WriterMetrics {
        self.stats
    }

    /// Whether the machine finished by discarding (a deadline or a force)
    /// rather than by draining.
    pub(crate) fn was_forced(&self) -> bool {
        self.forced
    }

    /// The next error for the callback.
    pub(crate) fn poll_report(&mut self) -> Option<WriterError> {
        self.reports.pop_front()
    }

    /// Queue slots to release (messages written whole for the first time,
    /// failed or discarded) since the last call, and their frame bytes.
    pub(crate) fn take_freed(&mut self) -> (usize, usize) {
        std::mem::take(&mut self.freed)
    }

    /// Whether the driver should move queued messages in (it takes them
    /// all at once, so only when the machine has run out).
    pub(crate) fn wants_messages(&self) -> bool {
        self.pending.is_empty() && !self.done()
    }

    /// Whether a producer that just queued a message into an empty queue
    /// may write what is queued by itself, now (then it plays the driver
    /// until the machine waits, and asks [`wake_task`](Self::wake_task)):
    /// the connection is open and proven, with nothing being written or
    /// waiting to be, and the direct writes of the current window (at most
    /// [`DIRECT_MAX`] per [`DIRECT_WINDOW`]) are not used up. Counts one.
    pub(crate) fn take_direct(&mut self, now: Instant) -> bool {
        let Link::Up(c) = &self.link else {
            return false;
        };
        if !c.open || !self.pending.is_empty() || self.deadline.is_some() {
            return false;
        }
        let (start, n) = &mut self.direct;
        if now.saturating_duration_since(*start) >= DIRECT_WINDOW {
            (*start, *n) = (now, 0);
        }
        *n += 1;
        *n <= DIRECT_MAX
    }

    /// After a direct write that stopped at `last`: whether the task must
    /// still be woken. Not when the machine waits for messages only (not
    /// for room), with nothing to report and no timer the task's wait
    /// lacks: its wake-up (a thread woken on a 2-core machine, right when
    /// the reader needs the core) is saved.
    pub(crate) fn wake_task(&self, last: Action) -> bool {
        let idle = matches!(last, Action::Wait(w) if w.messages && !w.writable);
        let timer_armed = self
            .poll_timeout()
            .is_none_or(|due| self.armed.is_some_and(|armed| armed <= due));
        !(idle && timer_armed && self.reports.is_empty())
    }

    /// The task is about to wait for `w`: the timer of its wait (which
    /// [`wake_task`](Self::wake_task) compares with), and whether it keeps
    /// a registration for room (makes one if there is none). Registered for
    /// writes all the time, every read by the reader would wake the
    /// runtime's IO driver for nothing; so one is kept for a full socket
    /// until the reader has read everything, and for a wait on the reader's
    /// reads until the next other wait.
    pub(crate) fn arm(&mut self, w: Wait) -> (Option<Instant>, bool) {
        self.armed = self.poll_timeout();
        let Link::Up(c) = &mut self.link else {
            return (self.armed, false);
        };
        if w.writable {
            c.room = Some(Room::Full);
        } else if w.read {
            c.room.get_or_insert(Room::Reads);
        } else if c.room == Some(Room::Reads) || c.confirmed >= c.written {
            c.room = None;
        }
        (self.armed, c.room.is_some())
    }

    /// Where the driver puts messages taken from the queue.
    pub(crate) fn pending_mut(&mut self) -> &mut VecDeque<Item> {
        &mut self.pending
    }

    /// The iovecs of the next write (for [`Action::Write`]).
    pub(crate) fn iovecs<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let Link::Up(c) = &self.link else { return 0 };
        self.batch.iovecs(&self.pending, c.allowed(), out)
    }

    /// When to call [`poll_action`](Self::poll_action) again if nothing
    /// else happens.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let (a, b) = match &self.link {
            // Redialing waits for something to send (the first dial is
            // eager, as in Go).
            Link::Down(t) if self.wants_to_dial() => (Some(*t), None),
            Link::Up(c) => (
                c.sample_due,
                c.stalled_since
                    .filter(|_| !c.episode)
                    .map(|s| later(s, self.cfg.write_timeout)),
            ),
            _ => (None, None),
        };
        [self.deadline, a, b].into_iter().flatten().min()
    }

    /// The next thing to do at `now`.
    pub(crate) fn poll_action(&mut self, now: Instant) -> Action {
        if self.done() {
            return Action::Done;
        }
        if self.deadline.is_some_and(|d| now >= d) {
            self.handle_force(now);
            return Action::Done;
        }
        // Drained: everything written, and read.
        let all_read = match &self.link {
            Link::Down(_) => true,
            Link::Up(c) => c.confirmed >= c.written,
            _ => false,
        };
        if self.deadline.is_some() && self.pending.is_empty() && all_read {
            self.finish();
            return Action::Done;
        }
        match self.link {
            Link::Gone => Action::Done,
            Link::Dead(_) => Action::Close,
            Link::Down(at) if now >= at && self.wants_to_dial() => Action::Dial,
            Link::Down(_) => Action::Wait(Wait {
                messages: self.pending.is_empty() && self.deadline.is_none(),
                ..Wait::default()
            }),
            Link::Up(_) => self.poll_connected(now),
        }
    }

    fn poll_connected(&mut self, now: Instant) -> Action {
        let Link::Up(c) = &mut self.link else {
            unreachable!("poll_connected on a connection that is not up")
        };
        if c.sample_due.is_some_and(|t| now >= t) {
            c.sample_due = None;
            return Action::Sample;
        }
        // Backpressure: waiting for the reader for a whole write timeout.
        let timeout = self.cfg.write_timeout;
        if !c.episode
            && c.stalled_since
                .is_some_and(|s| now.saturating_duration_since(s) >= timeout)
        {
            c.episode = true;
            self.stats.backpressure += 1;
            let phase = phase_of(self.deadline.is_some(), self.pending.front());
            self.reports.push_back(WriterError::Write {
                kind: WriteFailure::Backpressure,
                phase,
                source: io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the reader read nothing for the write timeout ({:?}); \
                             the connection is kept",
                        self.cfg.write_timeout
                    ),
                ),
            });
        }
        let writing = !self.batch.is_done() && c.allowed() > 0;
        if c.blocked {
            c.stalled_since.get_or_insert(now);
            return Action::Wait(Wait {
                writable: true,
                ..Wait::default()
            });
        }
        if c.written == 0 && !self.pending.is_empty() {
            // The probe: the head's first byte, alone; a run's first
            // message is the head alone.
            if let Some(first) = self.pending[0].split_front(1) {
                self.pending.push_front(first);
            }
            self.batch.plan_up_to(&self.pending, 1);
            return Action::Write;
        }
        if writing || (c.open && !self.pending.is_empty()) {
            if !writing {
                self.batch.plan_up_to(&self.pending, usize::MAX);
            }
            return Action::Write;
        }
        // Nothing to write now.
        let awaiting_probe = !c.open && c.written > 0;
        let unread = c.confirmed < c.written;
        if awaiting_probe || (self.deadline.is_some() && unread) {
            c.stalled_since.get_or_insert(now);
        }
        if unread && c.sample_due.is_none() {
            c.sample_due = Some(now + c.sample_every);
        }
        Action::Wait(Wait {
            messages: self.pending.is_empty() && self.deadline.is_none(),
            writable: false,
            hangup: true,
            read: unread && (awaiting_probe || self.deadline.is_some()),
        })
    }

    // ----- inputs --------------------------------------------------------

    /// A dial succeeded.
    pub(crate) fn handle_connected(&mut self, _now: Instant) {
        if self.dialed_before {
            self.stats.reconnects += 1;
        }
        self.dialed_before = true;
        self.link = Link::Up(Conn {
            sample_every: self.cfg.sampling.0,
            ..Conn::default()
        });
    }

    /// A dial failed: back off.
    pub(crate) fn handle_dial_failed(&mut self, now: Instant, source: io::Error) {
        self.reports.push_back(WriterError::Connect {
            path: self.cfg.path.clone(),
            source,
        });
        self.link = Link::Down(later(now, self.next_delay()));
    }

    /// The connection was dropped after [`Action::Close`].
    pub(crate) fn handle_closed(&mut self, now: Instant) {
        if let Link::Dead(delay) = self.link {
            self.link = Link::Down(later(now, delay));
        }
    }

    /// `n > 0` bytes of the planned write went out.
    pub(crate) fn handle_written(&mut self, now: Instant, n: usize) {
        let Link::Up(c) = &mut self.link else { return };
        let before = self.batch.completed();
        let whole = self.batch.advance(n);
        c.written += n as u64;
        c.blocked = false;
        c.progress();
        for i in before..before + whole {
            let item = &mut self.pending[i];
            if !item.sent {
                item.sent = true;
                self.stats.sent += u64::from(item.count);
                self.freed.0 += item.count as usize;
                self.freed.1 += item.frame_len();
            }
            // A run is kept to count the part of it that gets read; the
            // last message written, to be retried (see `connection_died`).
            let keep = item.count > 1 || i + 1 == before + whole;
            c.inflight.push_back(Flight {
                end: c.written - (self.batch.cursor() - self.batch.end_of(i)) as u64,
                item: keep.then(|| item.clone()),
            });
        }
        // The probe byte, or the head, written: sample at once.
        let rest = self.pending.len() - self.batch.completed();
        if c.allowed() == 0
            || self.batch.is_done()
                && (!c.open || rest == 0 || c.written - c.sampled_at >= SAMPLE_EVERY_BYTES)
        {
            c.sample_due = Some(now);
        }
        if self.batch.is_done() {
            self.retire_batch();
        }
    }

    /// The socket is full.
    pub(crate) fn handle_would_block(&mut self, now: Instant) {
        if let Link::Up(c) = &mut self.link {
            c.blocked = true;
            c.stalled_since.get_or_insert(now);
        }
    }

    /// The socket has room again (or hung up: the next write will tell).
    pub(crate) fn handle_writable(&mut self, _now: Instant) {
        if let Link::Up(c) = &mut self.link {
            c.blocked = false;
        }
    }

    /// A write failed: the connection is dead. `sample` is a look at the
    /// socket right after (its unread count and pending error).
    pub(crate) fn handle_write_error(&mut self, _now: Instant, source: io::Error, sample: Sample) {
        let reset = is_reset(&source) || sample.error.as_ref().is_some_and(is_reset);
        self.connection_died(reset, sample.unread, Some(source));
    }

    /// A look at the socket, asked for by [`Action::Sample`] or taken on a
    /// hang-up.
    pub(crate) fn handle_sample(&mut self, now: Instant, sample: Sample) {
        let Link::Up(c) = &mut self.link else { return };
        if let Some(error) = sample.error {
            // Read before the purge that follows a reader's close, the
            // unread count proves nothing once an error is pending.
            return self.connection_died(is_reset(&error), sample.unread, Some(error));
        }
        if sample.hangup {
            // No error: if the reader had read everything when it closed and
            // nothing was cut (e.g. its inactivity timeout), nothing is lost
            // and it is not an error. Redial when there is something to send.
            return self.connection_died(false, sample.unread, None);
        }
        c.sampled_at = c.written;
        let read = c.written.saturating_sub(sample.unread.unwrap_or(0));
        if read <= c.confirmed {
            // No progress: sample less and less often.
            if c.confirmed < c.written {
                c.sample_due = Some(now + c.sample_every);
                c.sample_every = (c.sample_every * 2).min(self.cfg.sampling.1);
            }
            return;
        }
        c.confirmed = read;
        c.progress();
        c.sample_every = self.cfg.sampling.0;
        c.sample_due = (read < c.written).then(|| now + c.sample_every);
        self.stats.delivered += c.take_read(read, false);
        if !c.open {
            // The probe byte was read: the rest of the head goes; once it
            // is written and read, the connection is open.
            c.open = self.batch.is_done() && c.inflight.is_empty();
        }
    }

    /// A graceful stop: write what is queued (the driver has moved it all
    /// in) and wait until it is read, until `deadline` (a deadline passed
    /// already forces at the next [`poll_action`](Self::poll_action)).
    pub(crate) fn handle_stop(&mut self, _now: Instant, deadline: Instant) {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
    }

    // ----- internals -----------------------------------------------------

    /// The reconnect delay to wait now; the following one doubles.
    fn next_delay(&mut self) -> Duration {
        let d = self.backoff;
        self.backoff = d.saturating_mul(2).min(self.cfg.max_backoff);
        d
    }

    /// Finished (drained, or forced).
    fn done(&self) -> bool {
        matches!(self.link, Link::Gone)
    }

    fn wants_to_dial(&self) -> bool {
        !self.pending.is_empty() || !self.dialed_before
    }

    /// Drops the finished part of the batch from `pending`.
    fn retire_batch(&mut self) {
        self.pending.drain(..self.batch.completed());
        self.batch.clear();
    }

    /// Retires the written part of the batch when a connection ends: the
    /// messages of a run written whole before the cut go in flight (sent),
    /// and the message the cut is in becomes the head, alone. Returns
    /// whether a message was partly written (now the head).
    fn settle(&mut self, c: &mut Conn) -> bool {
        let into = self.batch.written_into_next();
        let base = c.written - into as u64;
        self.retire_batch();
        let Some(head) = self.pending.front_mut().filter(|_| into > 0) else {
            return false;
        };
        let (n, at) = head.whole_within(into);
        if let Some(mut done) = head.split_front_at(n, at) {
            self.stats.sent += u64::from(n);
            self.freed.0 += n as usize;
            self.freed.1 += at;
            done.sent = true;
            c.inflight.push_back(Flight {
                end: base + at as u64,
                item: Some(done),
            });
        }
        // The cut is inside a message, not between two messages of a run.
        let partial = at < into;
        if partial {
            if let Some(cut) = self.pending[0].split_front(1) {
                self.pending.push_front(cut);
            }
        }
        partial
    }

    /// The connection is dead: account for every message on it, from what
    /// its socket said: a reset (the reader closed with bytes unread: the
    /// last byte written was not read), bytes the reader left `unread`
    /// (it shut its side, `shutdown(SHUT_RD)`: writes fail with `EPIPE`
    /// while what it holds stays unread, maybe to be read by its drain), or
    /// everything read. `source`: the error to report; `None` for a reader
    /// that hung up, an error only if it left something unread or cut.
    fn connection_died(&mut self, reset: bool, unread: Option<u64>, source: Option<io::Error>) {
        let Link::Up(mut c) = std::mem::replace(&mut self.link, Link::Dead(Duration::ZERO)) else {
            return;
        };
        let partial = self.settle(&mut c);
        // What is known read counts now, a run read in part too (a reset
        // tells nothing new).
        let unread = unread.unwrap_or(0);
        let read = if reset {
            c.confirmed
        } else {
            c.written.saturating_sub(unread).max(c.confirmed)
        };
        let delivered = c.take_read(read, true);
        self.stats.delivered += delivered;
        // The reader read a whole message on it (an open connection's
        // head was).
        let productive = c.open || delivered > 0;
        let source = source.or_else(|| {
            (unread > 0 || partial).then(|| {
                io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the reader closed the connection",
                )
            })
        });
        // Refused: the reader read nothing, not even the probe byte;
        // nothing is lost and the head is not blamed.
        let refused = read == 0;
        // Whether its death ended a poison message (its cause is gone).
        let mut gave_up = false;
        match source {
            None => {}
            Some(source) if refused => {
                self.stats.refused += 1;
                self.reports.push_back(WriterError::Refused {
                    path: self.cfg.path.clone(),
                    source,
                });
            }
            Some(source) => {
                self.reports.push_back(WriterError::Write {
                    kind: WriteFailure::NoConsumer,
                    phase: phase_of(self.deadline.is_some(), self.pending.front()),
                    source,
                });
                // After a reset, the message holding the last byte written
                // was not read whole; a message written in part was not
                // either (its rest never reaches this reader, whatever it
                // still reads). Either is retried.
                if reset && !partial {
                    if let Some(last) = c.take_last_written() {
                        self.pending.push_front(last);
                        gave_up = self.retry_head();
                    }
                }
                if partial {
                    gave_up = self.retry_head();
                }
                // The others written whole since the last confirmation may or
                // may not be read (a shut reader's drain may still read them):
                // never retried, never counted as delivered.
                let lost = count(&c.inflight);
                if lost > 0 {
                    let to = c.inflight.back().map_or(read, |f| f.end);
                    self.stats.unconfirmed += lost;
                    self.reports.push_back(WriterError::Unconfirmed {
                        messages: lost,
                        approx_bytes: to.saturating_sub(read),
                    });
                }
            }
        }
        // A productive connection, or one whose death ended a poison
        // message (its cause is gone), is redialled at once; the backoff
        // itself restarts only after a message was read.
        if productive {
            self.backoff = self.cfg.initial_backoff.min(self.cfg.max_backoff);
        }
        let delay = if productive || gave_up {
            Duration::ZERO
        } else {
            self.next_delay()
        };
        self.link = Link::Dead(delay);
    }

    /// The head of `pending`, a single message, was provably not read
    /// whole on a connection that died: count the attempt, and fail it for
    /// good after `max_attempts` (then `true`).
    fn retry_head(&mut self) -> bool {
        let Some(head) = self.pending.front_mut() else {
            return false;
        };
        head.attempts += 1;
        self.stats.retried += 1;
        if head.attempts < self.cfg.max_attempts {
            return false;
        }
        let item = self.pending.pop_front().expect("the head exists");
        self.stats.failed += 1;
        if !item.sent {
            self.freed.0 += 1;
            self.freed.1 += item.frame_len();
        }
        self.reports.push_back(WriterError::MessageFailed {
            size: item.body_len(),
            attempts: item.attempts,
        });
        true
    }

    /// Stop at once (or the deadline passed): discard what was not written
    /// whole; what was written whole and not confirmed stays unconfirmed.
    pub(crate) fn handle_force(&mut self, _now: Instant) {
        if self.done() {
            return;
        }
        self.forced = true;
        if let Link::Up(mut c) = std::mem::replace(&mut self.link, Link::Gone) {
            self.settle(&mut c);
            self.stats.delivered += c.take_read(c.confirmed, true);
            self.stats.unconfirmed += count(&c.inflight);
        }
        for item in self.pending.drain(..) {
            self.stats.discarded += u64::from(item.count);
            if !item.sent {
                self.freed.0 += item.count as usize;
                self.freed.1 += item.frame_len();
            }
        }
        self.finish();
    }

    fn finish(&mut self) {
        self.deadline = None;
        self.link = Link::Gone;
    }
}

fn is_reset(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionReset
}

fn phase_of(draining: bool, head: Option<&Item>) -> WritePhase {
    if draining {
        WritePhase::Draining
    } else if head.is_some_and(|h| h.attempts > 0) {
        WritePhase::RetryAfterReconnect
    } else {
        WritePhase::Running
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
