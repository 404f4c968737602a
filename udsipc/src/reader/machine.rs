//! One Reader connection's decisions, without IO: when it may start
//! (its ordering turn), when to hand frames over, when to read and how,
//! when a drain shuts our reading side and when it is over, when the
//! inactivity deadline closes the connection, and with which error (if
//! any) it ends.
//!
//! Inputs come in through `handle_*` methods: the ordering turn reached,
//! the Reader's phase (read by the driver at every step), a delivery's
//! end, a read's result, readiness, and the timer.
//! [`Machine::poll_action`] takes `now` and answers with the next thing to
//! do; [`Machine::poll_timeout`] says when to call
//! [`Machine::handle_timeout`] if nothing else happens;
//! [`Machine::poll_report`] holds the error a connection ended with, and
//! [`Machine::take_handed_over`] what to tell newer connections of the same
//! process (see `order`). Bytes are read into [`Machine::rx`]
//! (the decoding rules and deadlines stay in [`Receiver`]), and a delivery
//! takes its frames from there.
//!
//! ```text
//!   WaitTurn ─turn─▶ Deliver? ──▶ phase ──▶ Read(readiness) ──▶ bytes: Deliver?
//!                    (frames)    forced:      │ would block
//!                       │        Close        ▼
//!                  WaitHandler   draining:  Read(direct) [draining] ─ nothing left: Close
//!                       │        ShutdownRead │
//!                   delivered                 ▼
//!                                           Wait ── readable / phase: Deliver?
//!                                             └─ timer: Read(direct), then judge the deadline
//! ```
//!
//! The tokio driver (`connection`) only moves bytes, readiness and time in
//! and out; this module never touches a socket, a clock or a task, and
//! imports nothing else of the Reader.

use std::io::{self, ErrorKind::*};
use std::time::{Duration, Instant};

use crate::error::{ReadStage, ReaderError};
use crate::frame::{Expired, FrameError, Receiver};
use crate::lifecycle::Phase;

/// Why a delivery ended its connection (it passes it to
/// [`Machine::handle_delivered`]).
#[derive(Debug)]
pub(crate) enum Stop {
    /// The peer broke the framing rules.
    Protocol(FrameError),
    /// The socket could not be read (or registered for reads again).
    Read(io::Error),
    /// A forced stop, or the consumer went away: close quietly.
    Quiet,
}

/// How to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// Through the runtime's readiness: nothing to read (no syscall) when
    /// no event was seen since the last read found nothing.
    Readiness,
    /// A direct non-blocking read, whatever the runtime last saw: the
    /// kernel's own answer (a drain's end, or bytes that arrived in time
    /// before a deadline is judged).
    Direct,
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Wait until the older connections of this writer process have
    /// handed over what they held (see `order`): call
    /// [`handle_turn`](Machine::handle_turn); a phase change may end the
    /// wait too.
    WaitTurn,
    /// Hand every complete frame in the receiver over, then call
    /// [`handle_delivered`](Machine::handle_delivered).
    Deliver,
    /// The handler holds the frames: nothing is read until
    /// [`handle_delivered`](Machine::handle_delivered) (backpressure).
    WaitHandler,
    /// Shut our reading side (a drain begins: the kernel keeps what the
    /// peer sent and refuses the rest); no answer needed.
    ShutdownRead,
    /// Read into [`rx`](Machine::rx) once, then call
    /// [`handle_read`](Machine::handle_read).
    Read(Via),
    /// Wait for readiness ([`handle_readable`](Machine::handle_readable)),
    /// a phase change, or [`poll_timeout`](Machine::poll_timeout)
    /// ([`handle_timeout`](Machine::handle_timeout)).
    Wait,
    /// Close the connection; [`poll_report`](Machine::poll_report) holds
    /// the error it ended with, if any. Final.
    Close,
}

/// Where the connection is in its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting for the ordering turn.
    Turn,
    /// Start of a round: hand over what is complete, if anything.
    Deliver,
    /// The delivery has the frames.
    Delivering,
    /// Handed over: act on the phase, then read.
    Phase,
    /// A read, through readiness or direct: draining, once readiness said
    /// nothing, to ask the kernel; or when the timer fired, to take what
    /// arrived in time before judging the deadline (never while draining:
    /// a drain has no deadline).
    Read(Via),
    /// Waiting.
    Wait,
    /// Over.
    Closed,
}

/// One connection's state and decisions.
#[derive(Debug)]
pub(crate) struct Machine {
    /// The receive buffer: reads go in, a delivery takes frames out.
    pub(crate) rx: Receiver,
    max_message_size: u64,
    timeout: Duration,
    step: Step,
    /// The Reader's phase, as last fed (only moves forward).
    phase: Phase,
    /// Our reading side is shut: no deadlines, and a direct read finding
    /// nothing ends the connection.
    draining: bool,
    /// The result of the read the current step waits for.
    got: Option<io::Result<usize>>,
    report: Option<ReaderError>,
    /// Bytes of the stream that no longer hold newer connections back, and
    /// how much of that was taken by [`take_handed_over`](Self::take_handed_over).
    handed_over: u64,
    published: u64,
}

impl Machine {
    /// A connection accepted at `now`, for frames of at most
    /// `max_message_size` bytes each due within `timeout`; `turn_free`
    /// when no older connection of its writer process holds it back.
    pub(crate) fn new(
        max_message_size: u64,
        timeout: Duration,
        now: Instant,
        turn_free: bool,
    ) -> Self {
        Self {
            rx: Receiver::new(max_message_size, timeout, now),
            max_message_size,
            timeout,
            step: if turn_free { Step::Deliver } else { Step::Turn },
            phase: Phase::Running,
            draining: false,
            got: None,
            report: None,
            handed_over: 0,
            published: 0,
        }
    }

    // ----- outputs -------------------------------------------------------

    /// The next thing to do. Cheap when the answer is a wait: call it after
    /// every input.
    pub(crate) fn poll_action(&mut self, now: Instant) -> Action {
        loop {
            match self.step {
                Step::Turn if self.phase == Phase::Forced => return self.close(None),
                Step::Turn => return Action::WaitTurn,
                Step::Deliver => match self.rx.next_len() {
                    Ok(Some(_)) => {
                        self.step = Step::Delivering;
                        return Action::Deliver;
                    }
                    Ok(None) => self.step = Step::Phase,
                    Err(e) => return self.close(Some(ReaderError::Protocol(e))),
                },
                Step::Delivering => return Action::WaitHandler,
                Step::Phase => {
                    self.offer(self.rx.handed_over());
                    self.step = Step::Read(Via::Readiness);
                    match self.phase {
                        Phase::Forced => return self.close(None),
                        Phase::Draining if !self.draining => {
                            self.draining = true;
                            return Action::ShutdownRead;
                        }
                        _ => {}
                    }
                }
                Step::Read(via) => match self.got.take() {
                    None => return Action::Read(via),
                    Some(Ok(0)) => return self.at_eof(),
                    Some(Ok(_)) => self.step = Step::Deliver,
                    Some(Err(e)) => match (via, e.kind()) {
                        // tokio's WouldBlock may only mean "no readiness
                        // event seen yet": the kernel itself answers with
                        // data, then end of stream, once our reading side
                        // is shut.
                        (Via::Readiness, WouldBlock) if self.draining => {
                            self.step = Step::Read(Via::Direct);
                        }
                        (Via::Readiness, WouldBlock) => return self.idle(now),
                        (Via::Readiness, Interrupted) => self.step = Step::Deliver,
                        (Via::Readiness, _) => return self.read_error(e),
                        (Via::Direct, WouldBlock) if self.draining && self.rx.buffered() == 0 => {
                            return self.close(None);
                        }
                        (Via::Direct, _) if self.draining => return self.idle(now),
                        // Bytes already in the kernel arrived in time, even
                        // if the driver has not been told yet (a loaded
                        // machine): taken before the connection is judged
                        // inactive.
                        (Via::Direct, _) => match self.rx.handle_timeout(now) {
                            // Go-exact: quiet while waiting for (or inside) a
                            // prefix, an error inside a body.
                            Some(Expired::Idle) => return self.close(None),
                            Some(Expired::InsideBody { expected, got }) => {
                                let timeout = self.timeout;
                                let e = ReaderError::BodyTimeout {
                                    timeout,
                                    expected,
                                    got,
                                };
                                return self.close(Some(e));
                            }
                            // Only the idle buffer's release was due.
                            None => self.step = Step::Deliver,
                        },
                    },
                },
                Step::Wait => return Action::Wait,
                Step::Closed => return Action::Close,
            }
        }
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) if nothing
    /// else happens: only while waiting, and never while draining (the
    /// stop's own deadline bounds a drain).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.step != Step::Wait || self.draining {
            return None;
        }
        self.rx.poll_timeout()
    }

    /// The error the connection ended with (once it said
    /// [`Action::Close`]); `None` for a quiet end.
    pub(crate) fn poll_report(&mut self) -> Option<ReaderError> {
        self.report.take()
    }

    /// How many bytes of the stream newer connections of this process need
    /// no longer wait for, when that grew since the last call.
    pub(crate) fn take_handed_over(&mut self) -> Option<u64> {
        (self.handed_over > self.published).then(|| {
            self.published = self.handed_over;
            self.handed_over
        })
    }

    // ----- inputs --------------------------------------------------------

    /// The ordering turn came: the connection starts at `now` (its first
    /// frame's deadline starts then).
    pub(crate) fn handle_turn(&mut self, now: Instant) {
        if self.step == Step::Turn {
            self.rx = Receiver::new(self.max_message_size, self.timeout, now);
            self.step = Step::Deliver;
        }
    }

    /// The Reader's phase now (fed before every poll; phases only move
    /// forward). A change wakes a waiting connection.
    pub(crate) fn handle_phase(&mut self, phase: Phase) {
        if phase > self.phase {
            self.phase = phase;
            if self.step == Step::Wait {
                self.step = Step::Deliver;
            }
        }
    }

    /// The delivery finished: `Ok` once every complete frame was handed
    /// over (or a forced stop cut it short). A delivery that drove the
    /// machine on itself (a sync handler's thread) may tell of an error in
    /// any step: it ends the connection all the same.
    pub(crate) fn handle_delivered(&mut self, result: Result<(), Stop>) {
        match result {
            _ if self.step == Step::Closed => {}
            Ok(()) if self.step == Step::Delivering => self.step = Step::Phase,
            Ok(()) => {}
            Err(Stop::Protocol(e)) => {
                self.close(Some(ReaderError::Protocol(e)));
            }
            Err(Stop::Read(source)) => {
                self.read_error(source);
            }
            Err(Stop::Quiet) => {
                self.close(None);
            }
        }
    }

    /// Whether a delivery has the frames (it began and has not finished).
    pub(crate) fn delivering(&self) -> bool {
        self.step == Step::Delivering
    }

    /// The read asked for returned this (bytes appended to the receiver, 0
    /// at the end of the stream, or an error).
    pub(crate) fn handle_read(&mut self, result: io::Result<usize>) {
        if matches!(self.step, Step::Read(_)) {
            self.got = Some(result);
        }
    }

    /// The socket is readable (or waiting for that failed).
    pub(crate) fn handle_readable(&mut self, result: io::Result<()>) {
        if self.step != Step::Wait {
            return;
        }
        match result {
            Ok(()) => self.step = Step::Deliver,
            Err(source) => {
                self.read_error(source);
            }
        }
    }

    /// [`poll_timeout`](Self::poll_timeout)'s time came; the next action
    /// reads once more before the deadline is judged at the next poll's
    /// `now`.
    pub(crate) fn handle_timeout(&mut self) {
        if self.step == Step::Wait {
            self.step = Step::Read(Via::Direct);
        }
    }

    // ----- helpers -------------------------------------------------------

    fn close(&mut self, error: Option<ReaderError>) -> Action {
        self.step = Step::Closed;
        self.report = error;
        Action::Close
    }

    /// The peer closed: clean at a frame boundary, an error inside a frame.
    fn at_eof(&mut self) -> Action {
        match self.rx.finish() {
            Ok(()) => self.close(None),
            Err(e) => self.close(Some(ReaderError::Protocol(e))),
        }
    }

    fn read_error(&mut self, source: io::Error) -> Action {
        let stage = if matches!(self.rx.expired(), Expired::InsideBody { .. }) {
            ReadStage::Body
        } else {
            ReadStage::Prefix
        };
        self.close(Some(ReaderError::Read { stage, source }))
    }

    /// Nothing more to read: the connection waits.
    fn idle(&mut self, now: Instant) -> Action {
        self.rx.on_idle(now);
        // Every whole frame read is handed over: the rest of what was read
        // is the start of a frame, which holds no newer connection back
        // (see `order`).
        self.offer(self.rx.read_total());
        self.step = Step::Wait;
        Action::Wait
    }

    fn offer(&mut self, total: u64) {
        self.handed_over = self.handed_over.max(total);
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
