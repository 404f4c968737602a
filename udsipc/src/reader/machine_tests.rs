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
            .map(|(i, c)| (i, c.m.receiver().read_total() + c.sock.queue.len() as u64))
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
                    let got = c.sock.read(via, c.m.receiver_mut());
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
                match c.m.receiver_mut().next_owned() {
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
        c.m.handle_delivered(result, None);
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
    let m1 = w.conns[0].m.receiver_mut().next_owned().unwrap();
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
    assert_eq!(
        m.receiver_mut().next_owned().unwrap().as_deref(),
        Some(&b"m1"[..])
    );
    m.handle_delivered(Ok(()), None);
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
    assert_eq!(w.conns[0].m.receiver().capacity(), 0, "released while idle");
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
