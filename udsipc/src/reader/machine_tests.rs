//! The Reader's connection machine with fake time and no sockets: the
//! engine's scenarios (order across reconnects, a slow consumer, protocol
//! violations, a stop past a stuck handler, inactivity) driven event by
//! event. A small world plays the driver: simulated sockets with the
//! kernel's queue, readiness and a shut reading side; a handler that
//! returns at once or is held by the test; the order book's rule; a clock
//! moved by hand.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::frame::{SHRINK_AFTER, encode_frame};

const MAX: u64 = 1024;
const TIMEOUT: Duration = Duration::from_secs(10);
const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn wire(bodies: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for body in bodies {
        encode_frame(body, &mut out);
    }
    out
}

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

/// Our end of one connection socket, as the kernel and the runtime keep it.
#[derive(Debug, Default)]
struct Socket {
    /// Bytes the peer sent that we have not read.
    queue: VecDeque<u8>,
    /// The peer closed its end.
    peer_closed: bool,
    /// We shut our reading side (a drain).
    shut: bool,
    /// The runtime saw a readiness event since a read last found nothing.
    ready: bool,
    /// An error the next read returns.
    error: Option<io::Error>,
}

impl Socket {
    /// The peer sends `bytes`; `false` if refused (our side is shut: the
    /// writer sees `EPIPE` and keeps them).
    fn send(&mut self, bytes: &[u8]) -> bool {
        if self.shut {
            return false;
        }
        self.queue.extend(bytes);
        self.ready = true;
        true
    }

    /// Bytes arrive in the kernel before the runtime has seen their event
    /// (a loaded machine).
    fn send_unseen(&mut self, bytes: &[u8]) {
        self.queue.extend(bytes);
    }

    fn close(&mut self) {
        self.peer_closed = true;
        self.ready = true;
    }

    /// One read as the driver makes it.
    fn read(&mut self, via: Via, rx: &mut Receiver) -> io::Result<usize> {
        if via == Via::Readiness && !self.ready {
            // No syscall: tokio answers from its readiness.
            return Err(would_block());
        }
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.queue.is_empty() {
            if self.peer_closed || self.shut {
                return Ok(0);
            }
            self.ready = false;
            return Err(would_block());
        }
        let queue = &mut self.queue;
        rx.fill(|buf| {
            let n = (buf.capacity() - buf.len()).min(queue.len());
            buf.extend(queue.drain(..n));
            Ok(n)
        })
    }
}

/// One connection: its machine, its socket and what the driver saw.
#[derive(Debug)]
struct Conn {
    m: Machine,
    sock: Socket,
    /// Older connections of the same process and how far each must get
    /// (the order book's snapshot at arrival).
    turn: Vec<(usize, u64)>,
    /// What the machine told newer connections it handed over.
    published: u64,
    /// The handler does not return until the test lets it.
    held: bool,
    /// The machine said `Close`, with this error (`Some(None)`: quietly).
    closed: Option<Option<ReaderError>>,
    /// Reads the driver made.
    reads: usize,
}

/// The simulated world: a clock, the Reader's phase, connections, and every
/// message handed over as (connection, body), in order.
struct World {
    now: Instant,
    phase: Phase,
    conns: Vec<Conn>,
    log: Vec<(usize, Bytes)>,
}

impl World {
    fn new() -> Self {
        Self {
            now: Instant::now(),
            phase: Phase::Running,
            conns: Vec::new(),
            log: Vec::new(),
        }
    }

    /// A connection of the writer process every connection here belongs
    /// to: it waits for what each older open one holds now (what it read
    /// plus what waits in its kernel queue), as `order` rules.
    fn connect(&mut self) -> usize {
        let turn: Vec<_> = (self.conns.iter().enumerate())
            .filter(|(_, c)| c.closed.is_none())
            .map(|(i, c)| (i, c.m.rx.read_total() + c.sock.queue.len() as u64))
            .collect();
        let m = Machine::new(MAX, TIMEOUT, self.now, turn.is_empty());
        self.conns.push(Conn {
            m,
            sock: Socket::default(),
            turn,
            published: 0,
            held: false,
            closed: None,
            reads: 0,
        });
        self.conns.len() - 1
    }

    /// A world with one connection.
    fn one() -> Self {
        let mut w = Self::new();
        w.connect();
        w.run();
        w
    }

    fn sock(&mut self, i: usize) -> &mut Socket {
        &mut self.conns[i].sock
    }

    /// Moves the clock on, then runs.
    fn at(&mut self, d: Duration) {
        self.now += d;
        self.run();
    }

    /// Moves the Reader to `phase`, then runs.
    fn phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.run();
    }

    /// Plays every connection's driver until none can move on without the
    /// test (a held handler, a wait, a close).
    fn run(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for i in 0..self.conns.len() {
                moved |= self.drive(i);
            }
            if !moved {
                return;
            }
        }
        panic!("the world never settles");
    }

    /// Drives connection `i` until it waits; whether it did anything.
    fn drive(&mut self, i: usize) -> bool {
        let mut moved = false;
        for _ in 0..10_000 {
            let (now, phase) = (self.now, self.phase);
            let turn_reached = self.turn_reached(i);
            let c = &mut self.conns[i];
            if c.closed.is_some() {
                return moved;
            }
            c.m.handle_phase(phase);
            let action = c.m.poll_action(now);
            if let Some(n) = c.m.take_handed_over() {
                c.published = n;
            }
            match action {
                Action::WaitTurn if turn_reached => c.m.handle_turn(now),
                Action::WaitTurn | Action::WaitHandler => return moved,
                Action::Deliver if c.held => return true,
                Action::Deliver => self.deliver(i, Ok(())),
                Action::ShutdownRead => c.sock.shut = true,
                Action::Read(via) => {
                    c.reads += 1;
                    let got = c.sock.read(via, &mut c.m.rx);
                    c.m.handle_read(got);
                }
                Action::Wait if c.sock.ready => c.m.handle_readable(Ok(())),
                Action::Wait if c.m.poll_timeout().is_some_and(|t| t <= now) => {
                    c.m.handle_timeout();
                }
                Action::Wait => return moved,
                Action::Close => {
                    c.closed = Some(c.m.poll_report());
                    return true;
                }
            }
            moved = true;
        }
        panic!("connection {i} never waits");
    }

    /// The order book's rule: every older connection handed over what it
    /// held at this one's arrival, or closed.
    fn turn_reached(&self, i: usize) -> bool {
        self.conns[i].turn.iter().all(|&(older, target)| {
            let o = &self.conns[older];
            o.closed.is_some() || o.published >= target
        })
    }

    /// Plays an async handler's delivery: every complete frame, one by one,
    /// until none is left or the framing breaks; `cut` ends it early as a
    /// forced stop does.
    fn deliver(&mut self, i: usize, cut: Result<(), Stop>) {
        let c = &mut self.conns[i];
        let mut result = Ok(());
        if cut.is_ok() {
            loop {
                match c.m.rx.next_owned() {
                    Ok(Some(body)) => self.log.push((i, body)),
                    Ok(None) => break,
                    Err(e) => {
                        result = Err(Stop::Protocol(e));
                        break;
                    }
                }
            }
        } else {
            result = cut;
        }
        c.m.handle_delivered(result);
    }

    /// The held handler of connection `i` returns.
    fn release(&mut self, i: usize) {
        self.conns[i].held = false;
        self.deliver(i, Ok(()));
        self.run();
    }

    fn action(&mut self, i: usize) -> Action {
        let now = self.now;
        self.conns[i].m.poll_action(now)
    }

    /// The bodies handed over on connection `i`.
    fn got(&self, i: usize) -> Vec<&[u8]> {
        (self.log.iter())
            .filter(|(c, _)| *c == i)
            .map(|(_, b)| &b[..])
            .collect()
    }

    fn closed(&self, i: usize) -> Option<&Option<ReaderError>> {
        self.conns[i].closed.as_ref()
    }

    fn closed_quietly(&self, i: usize) -> bool {
        matches!(self.closed(i), Some(None))
    }
}

// ----- order across reconnects ---------------------------------------------

/// A writer reconnected while its old connection still held messages (one
/// in the handler, two in the kernel): the new connection hands nothing
/// over until the old one has handed over all three.
#[test]
fn an_older_connections_unread_bytes_are_handed_over_before_a_newer_ones() {
    let mut w = World::new();
    let old = w.connect();
    w.conns[old].held = true;
    w.sock(old).send(&wire(&[b"a1"]));
    w.run();
    assert_eq!(w.action(old), Action::WaitHandler);
    w.sock(old).send(&wire(&[b"a2", b"a3"]));
    w.sock(old).close();
    let new = w.connect();
    w.sock(new).send(&wire(&[b"b1"]));
    w.run();
    assert_eq!(w.action(new), Action::WaitTurn);
    assert_eq!(w.conns[new].reads, 0, "nothing read before its turn");
    w.release(old);
    assert!(w.closed_quietly(old));
    let order: Vec<_> = w.log.iter().map(|(_, b)| &b[..]).collect();
    assert_eq!(order, [&b"a1"[..], b"a2", b"a3", b"b1"]);
}

/// The turn covers what the older connection held at the newer one's
/// arrival, not what it receives later: independent writers of one
/// process still run side by side.
#[test]
fn a_newer_connection_is_not_held_back_by_what_an_older_one_receives_later() {
    let mut w = World::new();
    let old = w.connect();
    w.sock(old).send(&wire(&[b"a1"]));
    let new = w.connect();
    w.conns[old].held = true;
    w.sock(new).send(&wire(&[b"b1"]));
    w.run();
    assert_eq!(w.action(new), Action::WaitTurn);
    w.release(old);
    w.conns[old].held = true;
    w.sock(old).send(&wire(&[b"a2"]));
    w.run();
    assert_eq!(
        w.action(old),
        Action::WaitHandler,
        "a2 is still in the handler"
    );
    assert_eq!(w.got(new), [b"b1"]);
}

/// A frame the older connection has only begun holds nobody back: once it
/// has read its bytes and handed over every whole frame, they count.
#[test]
fn a_newer_connection_is_not_held_back_by_a_frame_an_older_one_has_only_begun() {
    let mut w = World::new();
    let old = w.connect();
    let half = wire(&[b"a1", b"a2-cut-short"]);
    w.sock(old).send(&half[..half.len() - 4]);
    let new = w.connect();
    w.sock(new).send(&wire(&[b"b1"]));
    w.run();
    assert_eq!(w.got(old), [b"a1"]);
    assert_eq!(w.got(new), [b"b1"]);
    assert!(w.closed(old).is_none(), "the old connection still waits");
}

/// While it waits for its turn the connection's first deadline has not
/// started: it starts when the turn comes.
#[test]
fn the_first_deadline_starts_when_the_turn_comes() {
    let mut w = World::new();
    let old = w.connect();
    w.conns[old].held = true;
    w.sock(old).send(&wire(&[b"a1"]));
    w.run();
    let new = w.connect();
    w.at(TIMEOUT * 2);
    assert_eq!(w.action(new), Action::WaitTurn);
    w.release(old);
    w.at(TIMEOUT - MS);
    assert!(w.closed(new).is_none());
    w.at(MS);
    assert!(w.closed_quietly(new));
}

// ----- a slow consumer -------------------------------------------------------

/// While the handler holds a message nothing more is read (the kernel's
/// queue fills: backpressure) and no deadline runs; once it returns, the
/// rest is read and handed over, and the next deadline starts then.
#[test]
fn a_busy_handler_stops_reading_and_the_deadline_until_it_returns() {
    let mut w = World::one();
    w.conns[0].held = true;
    w.sock(0).send(&wire(&[b"m1"]));
    w.run();
    let reads = w.conns[0].reads;
    w.sock(0).send(&wire(&[b"m2", b"m3"]));
    w.at(TIMEOUT * 3);
    assert_eq!(w.action(0), Action::WaitHandler);
    assert_eq!(w.conns[0].reads, reads, "no read while the handler is busy");
    assert_eq!(w.sock(0).queue.len(), 6, "m2 and m3 wait in the kernel");
    assert_eq!(w.conns[0].m.poll_timeout(), None);
    w.release(0);
    assert_eq!(w.got(0), [b"m1", b"m2", b"m3"]);
    assert_eq!(w.action(0), Action::Wait);
    let released = w.now;
    w.at(TIMEOUT - MS);
    assert!(w.closed(0).is_none());
    w.at(MS);
    assert!(w.closed_quietly(0));
    assert_eq!(w.now, released + TIMEOUT);
}

// ----- protocol violations and read errors ---------------------------------

/// A prefix declaring more than the maximum closes the connection with
/// `TooLarge` as soon as it is read, before any body byte is awaited.
#[test]
fn an_oversized_prefix_closes_with_too_large_before_the_body_arrives() {
    let mut w = World::one();
    w.sock(0).send(&[0x80, 0x10]); // 2048
    w.run();
    assert!(w.got(0).is_empty());
    assert!(matches!(
        w.closed(0),
        Some(Some(ReaderError::Protocol(FrameError::TooLarge {
            len: 2048,
            max: MAX
        })))
    ));
}

/// Whole frames before a broken prefix are handed over; then the
/// connection closes with the violation.
#[test]
fn frames_before_an_overflowing_prefix_are_handed_over_then_it_closes() {
    let mut w = World::one();
    let mut bytes = wire(&[b"ok"]);
    bytes.extend([0xff; 11]);
    w.sock(0).send(&bytes);
    w.run();
    assert_eq!(w.got(0), [b"ok"]);
    assert!(matches!(
        w.closed(0),
        Some(Some(ReaderError::Protocol(FrameError::PrefixOverflow)))
    ));
}

/// The end of the stream is clean at a frame boundary, a truncated body
/// inside one.
#[test]
fn the_end_of_the_stream_inside_a_body_is_a_truncated_body() {
    let mut w = World::one();
    w.sock(0).send(&[5, b'a', b'b']);
    w.sock(0).close();
    w.run();
    assert!(matches!(
        w.closed(0),
        Some(Some(ReaderError::Protocol(FrameError::TruncatedBody {
            expected: 5,
            got: 2
        })))
    ));
    let mut w = World::one();
    w.sock(0).send(&wire(&[b"whole"]));
    w.sock(0).close();
    w.run();
    assert_eq!(w.got(0), [b"whole"]);
    assert!(w.closed_quietly(0));
}

/// A read that fails names where in a frame the connection was.
#[test]
fn a_read_error_says_whether_it_came_inside_a_body_or_a_prefix() {
    for (bytes, stage) in [
        (&[5u8, 1][..], ReadStage::Body),
        (&[][..], ReadStage::Prefix),
    ] {
        let mut w = World::one();
        w.sock(0).send(bytes);
        w.run();
        w.sock(0).error = Some(io::ErrorKind::ConnectionReset.into());
        w.sock(0).ready = true;
        w.run();
        match w.closed(0) {
            Some(Some(ReaderError::Read { stage: s, .. })) => assert_eq!(*s, stage),
            other => panic!("{other:?}"),
        }
    }
}

/// A delivery that broke the framing, failed to read or was cut by a
/// forced stop ends the connection with what it said.
#[test]
fn a_delivery_that_stops_ends_the_connection_as_it_says() {
    let mut w = World::one();
    w.conns[0].held = true;
    w.sock(0).send(&wire(&[b"m1"]));
    w.run();
    // It handed m1 over, then could not register the socket again.
    let m1 = w.conns[0].m.rx.next_owned().unwrap();
    assert_eq!(m1.as_deref(), Some(&b"m1"[..]));
    w.deliver(0, Err(Stop::Read(io::ErrorKind::Other.into())));
    w.run();
    assert!(matches!(
        w.closed(0),
        Some(Some(ReaderError::Read {
            stage: ReadStage::Prefix,
            ..
        }))
    ));
}

// ----- stop --------------------------------------------------------------

/// A drain shuts our reading side (later sends are refused), hands over
/// what the kernel already held, then ends quietly at the end of the
/// stream.
#[test]
fn a_drain_shuts_our_side_hands_over_what_the_kernel_held_then_ends_quietly() {
    let mut w = World::one();
    w.sock(0).send_unseen(&wire(&[b"m1", b"m2"]));
    w.phase(Phase::Draining);
    assert!(w.sock(0).shut);
    assert!(!w.sock(0).send(b"late"), "refused: the writer keeps it");
    assert_eq!(w.got(0), [b"m1", b"m2"]);
    assert!(w.closed_quietly(0));
}

/// A drain that finds half a frame waits for the rest with no inactivity
/// deadline: the stop's own deadline bounds it.
#[test]
fn a_drain_with_half_a_frame_waits_without_a_deadline() {
    let mut w = World::one();
    w.sock(0).send(&[5, b'a']);
    w.run();
    // Should the kernel answer "nothing yet" rather than the end of the
    // stream after our side is shut.
    w.sock(0).error = Some(would_block());
    w.phase(Phase::Draining);
    assert_eq!(w.action(0), Action::Wait);
    assert_eq!(w.conns[0].m.poll_timeout(), None);
    w.at(TIMEOUT * 2);
    assert!(w.closed(0).is_none());
}

/// A stop past a handler that does not return: the drain does not touch
/// the connection while the handler holds it; at the stop's deadline the
/// phase is forced, the delivery gives up, and the connection closes
/// quietly with what it still held discarded.
#[test]
fn a_stop_past_a_stuck_handler_drains_then_forces_at_the_deadline() {
    let mut w = World::one();
    w.conns[0].held = true;
    w.sock(0).send(&wire(&[b"m1", b"m2"]));
    w.run();
    w.phase(Phase::Draining);
    assert_eq!(w.action(0), Action::WaitHandler);
    assert!(!w.sock(0).shut, "the drain begins once the handler returns");
    w.at(5 * SEC);
    w.phase(Phase::Forced);
    assert_eq!(w.action(0), Action::WaitHandler, "the handler is stuck");
    // The delivery notices the forced stop (an async handler is dropped).
    w.deliver(0, Err(Stop::Quiet));
    w.run();
    assert!(w.closed_quietly(0));
    assert!(w.got(0).is_empty());
}

/// A forced stop seen after a delivery that handed over part of a backlog
/// (a sync handler checks it between frames) closes without reading on.
#[test]
fn a_forced_stop_after_a_delivery_closes_without_reading_on() {
    let mut w = World::one();
    w.conns[0].held = true;
    w.sock(0).send(&wire(&[b"m1", b"m2"]));
    w.run();
    let reads = w.conns[0].reads;
    w.sock(0).send(&wire(&[b"m3"]));
    w.phase(Phase::Forced);
    let m = &mut w.conns[0].m;
    assert_eq!(m.rx.next_owned().unwrap().as_deref(), Some(&b"m1"[..]));
    m.handle_delivered(Ok(()));
    w.conns[0].held = false;
    w.run();
    assert!(w.closed_quietly(0));
    assert_eq!(w.conns[0].reads, reads);
}

/// A connection waiting for its ordering turn ends at a forced stop, not
/// at a drain.
#[test]
fn a_connection_waiting_for_its_turn_ends_at_a_forced_stop_only() {
    let mut w = World::new();
    let old = w.connect();
    w.conns[old].held = true;
    w.sock(old).send(&wire(&[b"a1"]));
    w.run();
    let new = w.connect();
    w.phase(Phase::Draining);
    assert_eq!(w.action(new), Action::WaitTurn);
    w.phase(Phase::Forced);
    assert!(w.closed_quietly(new));
    assert_eq!(w.conns[new].reads, 0);
}

// ----- inactivity ----------------------------------------------------------

/// Silence between frames (or before the first) closes the connection
/// quietly at the deadline, as in Go; the idle buffer is released first.
#[test]
fn an_idle_connection_closes_quietly_at_the_deadline() {
    let mut w = World::one();
    w.sock(0).send(&wire(&[b"m1"]));
    w.run();
    assert_eq!(w.conns[0].m.poll_timeout(), Some(w.now + SHRINK_AFTER));
    w.at(SHRINK_AFTER);
    assert_eq!(w.conns[0].m.rx.capacity(), 0, "released while idle");
    w.at(TIMEOUT - SHRINK_AFTER - MS);
    assert!(w.closed(0).is_none());
    w.at(MS);
    assert!(w.closed_quietly(0));
}

/// Inside a prefix the deadline is quiet; inside a body it is an error
/// that says how much of the body came.
#[test]
fn a_deadline_inside_a_body_is_an_error_and_inside_a_prefix_quiet() {
    let mut w = World::one();
    w.sock(0).send(&[0x80]);
    w.at(TIMEOUT);
    assert!(w.closed_quietly(0));
    let mut w = World::one();
    w.sock(0).send(&[100, 1, 2, 3]);
    w.at(TIMEOUT);
    assert!(matches!(
        w.closed(0),
        Some(Some(ReaderError::BodyTimeout {
            timeout: TIMEOUT,
            expected: 100,
            got: 3
        }))
    ));
}

/// As in Go, the deadline covers the whole frame: bytes trickling in do
/// not extend it.
#[test]
fn the_deadline_covers_the_whole_frame_not_each_read() {
    let mut w = World::one();
    w.sock(0).send(&[50]);
    for _ in 0..9 {
        w.at(SEC);
        w.sock(0).send(&[7]);
        w.run();
    }
    w.at(SEC - MS);
    assert!(w.closed(0).is_none());
    w.at(MS);
    assert!(matches!(
        w.closed(0),
        Some(Some(ReaderError::BodyTimeout {
            expected: 50,
            got: 9,
            ..
        }))
    ));
}

/// Bytes already in the kernel when the deadline comes arrived in time,
/// even if the runtime has not reported them yet: they are read before
/// the connection is judged.
#[test]
fn bytes_in_the_kernel_at_the_deadline_are_taken_before_judging() {
    let mut w = World::one();
    w.sock(0).send(&[3, b'a']);
    w.run();
    w.sock(0).send_unseen(b"bc");
    w.at(TIMEOUT);
    assert_eq!(w.got(0), [b"abc"]);
    assert!(w.closed(0).is_none());
    assert_eq!(w.action(0), Action::Wait);
}

// ----- a Writer machine and Reader machines over a simulated pipe ----------

mod pipe {
    //! The Writer's machine and the Reader's connection machines meet over a
    //! simulated socket pair with a small kernel buffer and a fake clock, as
    //! quinn-proto's tests step two endpoints over a simulated network:
    //! each side's driver is played here, the clock moves to the next timer
    //! whenever neither side can move on.

    use std::io::IoSlice;

    use super::*;
    use crate::writer::Item;
    use crate::writer::machine::{
        Action as WAction, Config, Machine as WMachine, SAMPLE_MAX, SAMPLE_MIN, Sample,
    };

    /// Bytes the kernel holds for one connection before writes block.
    const CAP: usize = 128;
    const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

    /// The Reader side (a [`World`]), one Writer, and which connection the
    /// Writer's current one is.
    struct Sim {
        w: World,
        wr: WMachine,
        conn: Option<usize>,
        /// The unread count at the Writer's last sample.
        sampled: usize,
    }

    impl Sim {
        fn new() -> Self {
            let w = World::new();
            let cfg = Config {
                path: "/run/sim.sock".into(),
                write_timeout: WRITE_TIMEOUT,
                initial_backoff: 100 * MS,
                max_backoff: SEC,
                max_attempts: 3,
                sampling: (SAMPLE_MIN, SAMPLE_MAX),
            };
            let wr = WMachine::new(cfg, w.now);
            Self {
                w,
                wr,
                conn: None,
                sampled: 0,
            }
        }

        fn send(&mut self, bodies: &[Vec<u8>]) {
            let items = bodies
                .iter()
                .map(|b| Item::new(Bytes::from(b.clone()), false));
            self.wr.pending_mut().extend(items);
        }

        /// What the Writer's socket tells a sample.
        fn sample(&self, hangup: bool) -> Sample {
            let c = self.conn.map(|i| &self.w.conns[i]);
            let closed = c.is_some_and(|c| c.closed.is_some());
            Sample {
                unread: Some(c.map_or(0, |c| c.sock.queue.len() as u64)),
                error: None,
                hangup: hangup || closed,
            }
        }

        /// One Writer step; whether it did anything.
        fn step_writer(&mut self) -> bool {
            let now = self.w.now;
            match self.wr.poll_action(now) {
                // A Reader that stops has closed its listener.
                WAction::Dial if self.w.phase != Phase::Running => {
                    let refused = io::ErrorKind::ConnectionRefused.into();
                    self.wr.handle_dial_failed(now, refused);
                }
                WAction::Dial => {
                    self.conn = Some(self.w.connect());
                    self.wr.handle_connected(now);
                }
                WAction::Write => self.write(),
                WAction::Sample => {
                    let s = self.sample(false);
                    self.sampled = s.unread.unwrap_or(0) as usize;
                    self.wr.handle_sample(now, s);
                }
                WAction::Close => {
                    if let Some(i) = self.conn.take() {
                        self.w.sock(i).close();
                    }
                    self.wr.handle_closed(now);
                }
                WAction::Wait(wait) => {
                    let Some(i) = self.conn else { return false };
                    let c = &self.w.conns[i];
                    let unread = c.sock.queue.len();
                    // A peer gone or shut makes the socket writable too
                    // (the write then fails).
                    let gone = c.closed.is_some() || c.sock.shut;
                    if wait.writable && (unread < CAP || gone) {
                        self.wr.handle_writable(now);
                    } else if (wait.hangup && c.closed.is_some())
                        || (wait.read && unread < self.sampled)
                    {
                        let s = self.sample(false);
                        self.sampled = unread;
                        self.wr.handle_sample(now, s);
                    } else {
                        return false;
                    }
                }
                WAction::Done => return false,
            }
            true
        }

        /// One `sendmsg` of what the machine offers, into the kernel's room.
        fn write(&mut self) {
            let now = self.w.now;
            let i = self.conn.expect("writing on a connection");
            let mut iov = [IoSlice::new(&[]); 64];
            let n = self.wr.iovecs(&mut iov);
            let bytes: Vec<u8> = iov[..n].iter().flat_map(|s| s.iter().copied()).collect();
            let c = &mut self.w.conns[i];
            if c.closed.is_some() || c.sock.shut {
                let unread = c.sock.queue.len();
                let error = if c.closed.is_some() && unread > 0 {
                    io::ErrorKind::ConnectionReset
                } else {
                    io::ErrorKind::BrokenPipe
                };
                let s = self.sample(true);
                self.wr.handle_write_error(now, error.into(), s);
                return;
            }
            let room = CAP - c.sock.queue.len();
            if room == 0 {
                self.wr.handle_would_block(now);
                return;
            }
            let n = room.min(bytes.len());
            assert!(c.sock.send(&bytes[..n]));
            self.wr.handle_written(now, n);
        }

        /// Both sides until neither moves.
        fn settle(&mut self) {
            for _ in 0..100_000 {
                self.w.run();
                if !self.step_writer() {
                    self.w.run();
                    if !self.step_writer() {
                        return;
                    }
                }
            }
            panic!("the simulation never settles");
        }

        /// Settles, then moves the clock to the next timer of either side,
        /// until `done` holds; `limit` bounds the simulated time.
        fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) {
            let end = self.w.now + limit;
            loop {
                self.settle();
                if done(self) {
                    return;
                }
                let timers = (self.w.conns.iter())
                    .filter_map(|c| c.m.poll_timeout())
                    .chain(self.wr.poll_timeout());
                let next = timers.min().expect("a timer to wait for");
                assert!(next <= end, "not done by the limit");
                self.w.now = self.w.now.max(next);
            }
        }

        fn bodies(&self) -> Vec<Vec<u8>> {
            self.w.log.iter().map(|(_, b)| b.to_vec()).collect()
        }
    }

    fn messages(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![i as u8; 1 + i % 60]).collect()
    }

    /// Every message crosses a pipe smaller than a few of them, whole, in
    /// order, once, and the Writer learns that each was read.
    #[test]
    fn every_message_crosses_a_small_pipe_in_order_once_and_is_known_delivered() {
        let mut s = Sim::new();
        let sent = messages(200);
        s.send(&sent);
        s.run_until(10 * SEC, |s| s.wr.stats().delivered == 200);
        assert_eq!(s.bodies(), sent);
        let st = s.wr.stats();
        assert_eq!(
            (st.sent, st.failed, st.unconfirmed, st.reconnects),
            (200, 0, 0, 0)
        );
    }

    /// A handler stuck for longer than the write timeout: the Reader reads
    /// nothing more, the pipe fills, the Writer reports one backpressure
    /// episode and keeps the connection; once the handler returns,
    /// everything arrives.
    #[test]
    fn a_stuck_handler_fills_the_pipe_and_the_writer_reports_backpressure_once() {
        let mut s = Sim::new();
        s.send(&messages(1));
        s.run_until(SEC, |s| s.w.log.len() == 1);
        let i = s.conn.unwrap();
        s.w.conns[i].held = true;
        let sent = messages(100);
        s.send(&sent[1..]);
        s.run_until(SEC, |s| s.w.conns[i].sock.queue.len() == CAP);
        let reads = s.w.conns[i].reads;
        s.run_until(5 * WRITE_TIMEOUT, |s| s.wr.stats().backpressure == 1);
        assert_eq!(
            s.w.conns[i].reads, reads,
            "nothing read while the handler holds"
        );
        s.w.release(i);
        s.run_until(10 * SEC, |s| s.wr.stats().delivered == 100);
        assert_eq!(s.bodies(), sent);
        assert_eq!(s.wr.stats().backpressure, 1);
        assert_eq!(s.wr.stats().reconnects, 0);
    }

    /// The Reader closes a connection idle past its inactivity timeout; the
    /// Writer sees the hang-up, and redials only when it has something to
    /// send. Nothing is lost, nothing is reported as an error.
    #[test]
    fn an_idle_connection_closed_by_the_reader_is_redialed_for_the_next_message() {
        let mut s = Sim::new();
        let sent = messages(20);
        s.send(&sent[..10]);
        s.run_until(SEC, |s| s.wr.stats().delivered == 10);
        let first = s.conn.unwrap();
        s.run_until(2 * TIMEOUT, |s| s.w.closed(first).is_some());
        assert!(s.w.closed_quietly(first));
        s.settle();
        assert_eq!(s.w.conns.len(), 1, "no redial with nothing to send");
        s.send(&sent[10..]);
        s.run_until(5 * SEC, |s| s.wr.stats().delivered == 20);
        assert_eq!(s.bodies(), sent);
        assert_eq!(s.w.conns.len(), 2);
        assert_eq!(s.wr.stats().reconnects, 1);
        assert!(s.wr.poll_report().is_none());
    }

    /// A Reader drain in the middle of a stream (the handler busy, the pipe
    /// full): our side is shut, the Writer's next write fails with `EPIPE`
    /// and keeps its messages; every whole frame the kernel held is handed
    /// over, and nothing twice.
    #[test]
    fn a_reader_drain_mid_stream_hands_over_what_was_sent_before_it_and_nothing_twice() {
        let mut s = Sim::new();
        let sent = messages(100);
        s.send(&sent[..1]);
        s.run_until(SEC, |s| s.w.log.len() == 1);
        let i = s.conn.unwrap();
        s.w.conns[i].held = true;
        s.send(&sent[1..]);
        s.run_until(SEC, |s| s.w.conns[i].sock.queue.len() == CAP);
        s.w.phase(Phase::Draining);
        assert!(
            !s.w.conns[i].sock.shut,
            "the drain begins once the handler returns"
        );
        s.w.release(i);
        assert!(s.w.conns[i].sock.shut);
        s.run_until(SEC, |s| s.w.closed(i).is_some());
        // The frame the Writer's last write cut short ends the stream
        // inside its body (the Writer keeps it for its next connection).
        assert!(matches!(
            s.w.closed(i),
            Some(Some(ReaderError::Protocol(
                FrameError::TruncatedBody { .. }
            )))
        ));
        let got = s.bodies();
        assert!(got.len() < sent.len(), "the drain cut the stream");
        assert_eq!(got, sent[..got.len()], "a prefix, in order, once");
        s.run_until(5 * SEC, |s| s.conn.is_none());
        let st = s.wr.stats();
        assert_eq!(st.failed, 0, "nothing given up");
        assert!(st.delivered <= got.len() as u64);
        assert_eq!(s.w.conns.len(), 1, "the stopped Reader accepts no more");
    }
}
