//! The Writer's machine with fake time and no sockets: every decision,
//! driven event by event.

use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::writer::batch::IOV_PER_CALL;

const SEC: Duration = Duration::from_secs(1);

fn cfg(max_attempts: u32) -> Config {
    Config {
        path: "/run/test.sock".into(),
        write_timeout: SEC,
        initial_backoff: SEC,
        max_backoff: 5 * SEC,
        max_attempts,
        sampling: (SAMPLE_MIN, SAMPLE_MAX),
    }
}

fn msg(len: usize, tag: u8) -> Item {
    Item::new(Bytes::from(vec![tag; len]), false)
}

fn reset() -> io::Error {
    io::ErrorKind::ConnectionReset.into()
}

fn pipe() -> io::Error {
    io::ErrorKind::BrokenPipe.into()
}

/// A machine, a fake clock and helpers that play the driver.
struct T {
    m: Machine,
    now: Instant,
}

impl T {
    fn new(max_attempts: u32) -> Self {
        let now = Instant::now();
        Self {
            m: Machine::new(cfg(max_attempts), now),
            now,
        }
    }

    fn at(&mut self, d: Duration) {
        self.now += d;
    }

    fn action(&mut self) -> Action {
        self.m.poll_action(self.now)
    }

    fn push(&mut self, items: impl IntoIterator<Item = Item>) {
        self.m.pending_mut().extend(items);
    }

    fn connect(&mut self) {
        assert_eq!(self.action(), Action::Dial);
        self.m.handle_connected(self.now);
    }

    /// Bytes the next write would write.
    fn offered(&self) -> usize {
        let mut iov = [IoSlice::new(&[]); IOV_PER_CALL];
        let n = self.m.iovecs(&mut iov);
        iov[..n].iter().map(|s| s.len()).sum()
    }

    /// Asserts the next action is a write, and writes `n` bytes of it (all
    /// it offers when `None`); returns how many.
    fn write(&mut self, n: Option<usize>) -> usize {
        assert_eq!(self.action(), Action::Write);
        let n = n.unwrap_or_else(|| self.offered());
        self.m.handle_written(self.now, n);
        n
    }

    /// Asserts the next action is a sample and answers it.
    fn sample(&mut self, unread: u64) {
        assert_eq!(self.action(), Action::Sample);
        self.m.handle_sample(
            self.now,
            Sample {
                unread: Some(unread),
                error: None,
                hangup: false,
            },
        );
    }

    /// Proves a fresh connection: the probe byte, then the head, both read.
    /// A machine with `max_attempts` on a connection its first message
    /// (10 bytes) has proven: probe, head, both read.
    fn proven(max_attempts: u32) -> Self {
        let mut t = Self::new(max_attempts);
        t.connect();
        t.push([msg(10, 0)]);
        t.prove();
        t
    }

    fn prove(&mut self) {
        assert_eq!(self.write(None), 1, "the probe is one byte");
        self.sample(0);
        self.write(None);
        self.sample(0);
    }

    fn die(&mut self, error: io::Error) {
        self.m
            .handle_write_error(self.now, error, Sample::default());
        assert_eq!(self.action(), Action::Close);
        self.m.handle_closed(self.now);
    }

    /// A write fails with `error` while the socket holds `unread` bytes.
    fn die_unread(&mut self, error: io::Error, unread: u64) {
        let sample = Sample {
            unread: Some(unread),
            ..Sample::default()
        };
        self.m.handle_write_error(self.now, error, sample);
        assert_eq!(self.action(), Action::Close);
        self.m.handle_closed(self.now);
    }

    fn reports(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.m.poll_report())
            .map(|e| format!("{} | {e}", e.context()))
            .collect()
    }

    fn next_dial_in(&self) -> Duration {
        self.m.poll_timeout().expect("a dial is scheduled") - self.now
    }

    /// Asserts the next action is a wait, and arms the task's wait for it:
    /// its timer, and whether it keeps a registration for room.
    fn arm(&mut self) -> (Option<Instant>, bool) {
        let Action::Wait(w) = self.action() else {
            panic!("not a wait: {:?}", self.action());
        };
        self.m.arm(w)
    }

    /// Writes what the machine offers, as often as it asks to, then
    /// answers the sample that follows.
    fn flush(&mut self, unread: u64) {
        loop {
            match self.action() {
                Action::Write => self.m.handle_written(self.now, self.offered()),
                Action::Sample => break,
                other => panic!("{other:?}"),
            }
        }
        self.m.handle_sample(
            self.now,
            Sample {
                unread: Some(unread),
                error: None,
                hangup: false,
            },
        );
    }
}

#[test]
fn failed_dials_back_off_doubling_to_the_cap() {
    let mut t = T::new(5);
    let mut delays = Vec::new();
    for _ in 0..5 {
        assert_eq!(t.action(), Action::Dial);
        t.m.handle_dial_failed(t.now, io::ErrorKind::NotFound.into());
        let d = t.next_dial_in();
        delays.push(d.as_secs());
        assert!(matches!(t.action(), Action::Wait(_)), "waits out the delay");
        t.at(d);
    }
    assert_eq!(delays, [1, 2, 4, 5, 5]);
    assert!(
        t.reports()
            .iter()
            .all(|r| r.starts_with("failed to connect"))
    );
}

#[test]
fn a_fresh_connection_writes_one_byte_then_the_head_then_the_rest() {
    let mut t = T::new(5);
    t.connect();
    t.push([msg(10, 1), msg(10, 2), msg(10, 3)]);
    assert_eq!(t.write(None), 1, "the probe byte alone");
    t.sample(768); // not read yet: wait for its read, sampling again soon
    assert_eq!(
        t.action(),
        Action::Wait(Wait {
            messages: false,
            writable: false,
            hangup: true,
            read: true,
        })
    );
    assert_eq!(t.m.poll_timeout(), Some(t.now + SAMPLE_MIN));
    t.at(SAMPLE_MIN);
    t.sample(0);
    assert_eq!(t.write(None), 10, "the rest of the head, alone");
    assert_eq!(t.m.stats().sent, 1);
    t.sample(0);
    assert_eq!(t.m.stats().delivered, 1);
    assert_eq!(t.write(None), 22, "then everything else at once");
    t.sample(0);
    let s = t.m.stats();
    assert_eq!((s.sent, s.delivered, s.refused, s.retried), (3, 3, 0, 0));
    assert_eq!(t.m.take_freed().0, 3);
    assert_eq!(
        t.action(),
        Action::Wait(Wait {
            messages: true,
            writable: false,
            hangup: true,
            read: false,
        })
    );
}

#[test]
fn a_refused_connection_blames_no_message_and_backs_off_like_a_failed_dial() {
    let mut t = T::new(2);
    t.push([msg(10, 1)]);
    let mut delays = Vec::new();
    for _ in 0..4 {
        t.connect();
        assert_eq!(t.write(None), 1);
        t.sample(768);
        // The reader closes without reading: the byte is unread.
        t.m.handle_sample(
            t.now,
            Sample {
                unread: Some(0),
                error: Some(reset()),
                hangup: true,
            },
        );
        assert_eq!(t.action(), Action::Close);
        t.m.handle_closed(t.now);
        let d = t.next_dial_in();
        delays.push(d.as_secs());
        t.at(d);
    }
    assert_eq!(delays, [1, 2, 4, 5]);
    let s = t.m.stats();
    assert_eq!((s.refused, s.failed, s.retried, s.sent), (4, 0, 0, 0));
    assert_eq!(
        t.m.pending_mut()[0].attempts,
        0,
        "the message is not blamed"
    );
    assert!(
        t.reports()
            .iter()
            .all(|r| r.starts_with("connection refused by the reader"))
    );
}

#[test]
fn a_head_the_reader_closes_on_is_failed_after_max_attempts_and_the_queue_moves_on() {
    let mut t = T::new(3);
    t.push([msg(4 << 20, 0xbb), msg(10, 1)]);
    let mut delays = Vec::new();
    for _ in 0..3 {
        t.connect();
        assert_eq!(t.write(None), 1);
        t.sample(0); // the reader reads the probe byte...
        t.write(Some(200_000)); // ...then the head goes, part of it...
        t.m.handle_would_block(t.now);
        t.die(reset()); // ...and the reader closes with it unread.
        delays.push(t.next_dial_in().as_secs());
        t.at(t.next_dial_in());
    }
    assert_eq!(
        delays,
        [1, 2, 0],
        "no message was read: the backoff grows; giving the message up redials at once"
    );
    let s = t.m.stats();
    assert_eq!((s.failed, s.retried, s.sent, s.delivered), (1, 3, 0, 0));
    let reports = t.reports();
    assert!(
        reports.iter().any(|r| r
            == "message failed | a 4194304-byte message was given up after 3 connections \
                ended before the reader read it whole"),
        "{reports:?}"
    );
    // The next message goes through, and a read message resets the backoff.
    t.connect();
    t.prove();
    assert_eq!(t.m.stats().delivered, 1);
    t.push([msg(10, 2)]);
    t.die(pipe());
    assert_eq!(t.next_dial_in(), Duration::ZERO, "a productive connection");
    assert_eq!(
        t.m.take_freed().0,
        2,
        "the failed and the delivered slots released"
    );
}

#[test]
fn a_slow_reader_is_one_backpressure_episode_per_stall_and_the_connection_is_kept() {
    let mut t = T::proven(5);
    t.push((0..100).map(|i| msg(1000, i)));
    t.write(Some(5000));
    t.m.handle_would_block(t.now);
    let blocked = Action::Wait(Wait {
        messages: false,
        writable: true,
        hangup: false,
        read: false,
    });
    assert_eq!(t.action(), blocked);
    t.at(SEC - Duration::from_millis(1));
    assert_eq!(t.action(), blocked);
    assert_eq!(t.m.stats().backpressure, 0);
    t.at(Duration::from_millis(1));
    assert_eq!(t.action(), blocked, "reported, and still waiting");
    assert_eq!(t.m.stats().backpressure, 1);
    t.at(30 * SEC);
    assert_eq!(t.action(), blocked);
    assert_eq!(t.m.stats().backpressure, 1, "once per episode");
    // The reader reads again: progress ends the episode.
    t.m.handle_writable(t.now);
    t.write(Some(5000));
    t.m.handle_would_block(t.now);
    t.at(SEC);
    assert_eq!(t.action(), blocked);
    let s = t.m.stats();
    assert_eq!((s.backpressure, s.failed, s.reconnects), (2, 0, 0));
    let reports = t.reports();
    assert_eq!(reports.len(), 2);
    assert!(
        reports.iter().all(|r| r.contains("Backpressure")),
        "{reports:?}"
    );
}

#[test]
fn a_reader_that_read_everything_before_closing_got_every_whole_message_and_only_the_cut_one_is_retried()
 {
    let mut t = T::proven(5);
    t.push((1..=4).map(|i| msg(100, i)));
    t.write(Some(3 * 101 + 50)); // three whole, the fourth cut
    t.die(pipe());
    let s = t.m.stats();
    assert_eq!((s.delivered, s.retried, s.unconfirmed), (4, 1, 0));
    let head = &t.m.pending_mut()[0];
    assert_eq!((head.bytes[0], head.attempts, head.sent), (4, 1, false));
}

#[test]
fn epipe_from_a_reader_that_shut_its_side_counts_no_unread_message_as_delivered() {
    // Issue 27: the reader's drain calls shutdown(SHUT_RD); writes then
    // fail with EPIPE and no pending error while its buffer still holds
    // what it did not read. That was taken as "everything read".
    let mut t = T::proven(5);
    t.push((1..=5).map(|i| msg(100, i)));
    t.write(None); // all five whole
    t.die_unread(pipe(), 4 * 101); // the reader read the first only
    let s = t.m.stats();
    assert_eq!(
        (s.sent, s.delivered, s.unconfirmed, s.retried),
        (6, 2, 4, 0),
        "its drain may still read the others: unconfirmed, never retried"
    );
    assert!(t.m.pending_mut().is_empty());
}

#[test]
fn epipe_from_a_shut_reader_retries_only_the_message_cut_mid_write() {
    let mut t = T::proven(5);
    t.push((1..=4).map(|i| msg(100, i)));
    t.write(Some(3 * 101 + 50)); // three whole, the fourth cut
    t.die_unread(pipe(), 2 * 101 + 50); // the reader read the first only
    let s = t.m.stats();
    assert_eq!((s.delivered, s.unconfirmed, s.retried), (2, 2, 1));
    let head = &t.m.pending_mut()[0];
    assert_eq!((head.bytes[0], head.attempts, head.sent), (4, 1, false));
}

#[test]
fn a_hangup_with_bytes_unread_and_no_error_is_not_everything_read() {
    let mut t = T::proven(5);
    t.push((1..=3).map(|i| msg(100, i)));
    t.write(None);
    t.m.handle_sample(
        t.now,
        Sample {
            unread: Some(101),
            error: None,
            hangup: true,
        },
    );
    let s = t.m.stats();
    assert_eq!((s.delivered, s.unconfirmed), (3, 1));
}

#[test]
fn a_reset_retries_the_message_holding_the_last_byte_and_leaves_the_others_unconfirmed() {
    let mut t = T::proven(5);
    t.push((1..=5).map(|i| msg(100, i)));
    t.write(None); // all five whole
    t.sample(5 * 101 - 101); // only the first is known read
    assert_eq!(t.m.stats().delivered, 2);
    t.die(reset());
    let s = t.m.stats();
    assert_eq!(
        (s.sent, s.delivered, s.unconfirmed, s.retried),
        (6, 2, 3, 1)
    );
    let head = &t.m.pending_mut()[0];
    assert_eq!((head.bytes[0], head.sent), (5, true));
    let reports = t.reports();
    assert!(
        reports
            .iter()
            .any(|r| r.starts_with("unconfirmed messages | 3 message(s)")),
        "{reports:?}"
    );
    // The retry is not counted as sent twice.
    t.connect();
    t.prove();
    let s = t.m.stats();
    assert_eq!((s.sent, s.delivered), (6, 3));
}

#[test]
fn a_drain_with_no_reader_discards_at_its_deadline() {
    let mut t = T::new(5);
    t.push([msg(10, 0), msg(10, 1)]);
    assert_eq!(t.action(), Action::Dial);
    t.m.handle_dial_failed(t.now, io::ErrorKind::NotFound.into());
    t.m.handle_stop(t.now, t.now + 3 * SEC);
    let mut dials = 0;
    loop {
        match t.action() {
            Action::Dial => {
                dials += 1;
                t.m.handle_dial_failed(t.now, io::ErrorKind::NotFound.into());
            }
            Action::Wait(_) => t.at(t.m.poll_timeout().unwrap() - t.now),
            Action::Done => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(dials, 1, "after 1 s, then 2 s more reaches the deadline");
    let s = t.m.stats();
    assert_eq!((s.discarded, s.unconfirmed), (2, 0));
    assert!(t.m.was_forced());
    assert_eq!(t.m.take_freed().0, 2);
}

#[test]
fn a_drain_waits_until_the_reader_has_read_everything() {
    let mut t = T::new(5);
    t.connect();
    t.push([msg(10, 0), msg(10, 1)]);
    t.prove();
    t.write(None);
    t.sample(700);
    t.m.handle_stop(t.now, t.now + 10 * SEC);
    assert!(matches!(t.action(), Action::Wait(_)));
    t.at(t.m.poll_timeout().unwrap() - t.now);
    t.sample(0);
    assert_eq!(t.action(), Action::Done);
    let s = t.m.stats();
    assert_eq!((s.delivered, s.discarded, s.unconfirmed), (2, 0, 0));
    assert!(!t.m.was_forced());
}

#[test]
fn a_drain_deadline_leaves_written_but_unread_messages_unconfirmed() {
    let mut t = T::proven(5);
    t.push([msg(10, 1), msg(10, 2)]);
    t.write(None);
    t.m.handle_stop(t.now, t.now + 2 * SEC);
    let mut episodes_seen = false;
    loop {
        match t.action() {
            Action::Sample => t.m.handle_sample(
                t.now,
                Sample {
                    unread: Some(1500),
                    error: None,
                    hangup: false,
                },
            ),
            Action::Wait(_) => t.at(t.m.poll_timeout().unwrap() - t.now),
            Action::Done => break,
            other => panic!("{other:?}"),
        }
        episodes_seen |= t.m.stats().backpressure > 0;
    }
    assert!(episodes_seen, "an unread drain is backpressure");
    let s = t.m.stats();
    assert_eq!((s.delivered, s.unconfirmed, s.discarded), (1, 2, 0));
}

#[test]
fn backoff_resets_only_after_the_reader_read_a_whole_message() {
    let mut t = T::new(5);
    let refuse = |t: &mut T| {
        t.connect();
        t.m.handle_sample(
            t.now,
            Sample {
                unread: Some(0),
                error: None,
                hangup: true,
            },
        );
        assert_eq!(t.action(), Action::Close);
        t.m.handle_closed(t.now);
        let d = t.next_dial_in();
        t.at(d);
        d.as_secs()
    };
    t.push([msg(10, 0), msg(10, 1)]);
    assert_eq!((refuse(&mut t), refuse(&mut t)), (1, 2));
    t.connect();
    t.prove();
    t.push([msg(10, 2)]);
    t.die(pipe());
    assert_eq!(t.next_dial_in(), Duration::ZERO);
    assert_eq!(refuse(&mut t), 1, "back to the first delay");
}

#[test]
fn an_idle_hangup_is_not_an_error_and_redials_only_when_there_is_something_to_send() {
    let mut t = T::proven(5);
    t.m.handle_sample(
        t.now,
        Sample {
            unread: Some(0),
            error: None,
            hangup: true,
        },
    );
    assert_eq!(t.action(), Action::Close);
    t.m.handle_closed(t.now);
    assert_eq!(
        t.action(),
        Action::Wait(Wait {
            messages: true,
            ..Wait::default()
        })
    );
    assert_eq!(t.m.poll_timeout(), None, "no timer: nothing to send");
    assert_eq!(t.reports(), Vec::<String>::new());
    assert_eq!(t.m.stats().refused, 0);
    t.push([msg(10, 1)]);
    assert_eq!(t.action(), Action::Dial);
}

/// `n` messages of `len` bytes (the i-th filled with `i`, from 1) as one
/// run, the way the queue makes it.
fn run(n: u8, len: usize) -> Item {
    let q = crate::writer::queue::Queue::new(1024, usize::MAX);
    for i in 1..=n {
        q.push_copy(&vec![i; len]).unwrap();
    }
    let mut out = std::collections::VecDeque::new();
    q.take_all(&mut out);
    assert_eq!(out.len(), 1, "one run");
    out.pop_front().unwrap()
}

/// The tag of a framed single message (its first body byte).
fn tag(item: &Item) -> u8 {
    assert_eq!(item.count, 1);
    item.bytes[item.bytes.len() - item.body_len()]
}

#[test]
fn a_run_is_written_at_once_and_counted_once_read_whole() {
    let mut t = T::new(5);
    t.connect();
    t.push([run(5, 100)]);
    // The probe and the head take the run's first message alone.
    assert_eq!(t.write(None), 1);
    t.sample(0);
    assert_eq!(t.write(None), 100);
    t.sample(0);
    assert_eq!((t.m.stats().sent, t.m.stats().delivered), (1, 1));
    assert_eq!(t.write(None), 4 * 101, "the other four in one write");
    assert_eq!(t.m.stats().sent, 5);
    t.sample(4 * 101 - 150); // one more read whole, the next one half
    assert_eq!(
        t.m.stats().delivered,
        1,
        "a run read in part is not walked at each sample"
    );
    t.at(SAMPLE_MIN);
    t.sample(0);
    let s = t.m.stats();
    assert_eq!((s.sent, s.delivered, s.unconfirmed), (5, 5, 0));
    assert_eq!(
        t.m.take_freed(),
        (5, 5 * 101),
        "the run's frame bytes, split or not"
    );
}

/// A fresh connection that wrote a run of 5 messages of 100 bytes (the
/// head alone, then the other four at once) of which the reader has read
/// the head, one more whole and half the next.
fn run_of_five_read_in_part() -> T {
    let mut t = T::new(5);
    t.connect();
    t.push([run(5, 100)]);
    t.write(None);
    t.sample(0);
    t.write(None);
    t.sample(0);
    t.write(None);
    t.sample(4 * 101 - 150);
    t
}

#[test]
fn a_run_read_in_part_counts_its_read_messages_when_the_connection_ends() {
    // A reset: the last message was not read whole, and is retried.
    for (error, delivered, unconfirmed, retried) in [(pipe(), 5, 0, 0), (reset(), 2, 2, 1)] {
        let mut t = run_of_five_read_in_part();
        t.die(error);
        let s = t.m.stats();
        assert_eq!(
            (s.sent, s.delivered, s.unconfirmed, s.retried),
            (5, delivered, unconfirmed, retried)
        );
    }
    // And when a stop's deadline passes.
    let mut t = run_of_five_read_in_part();
    t.m.handle_force(t.now);
    let s = t.m.stats();
    assert_eq!((s.delivered, s.unconfirmed), (2, 3));
}

/// A run cut mid-write whose written part was read in part: the messages
/// read count as delivered when the connection dies (they are in flight
/// only once the end settles the cut run).
#[test]
fn a_run_cut_mid_write_and_read_in_part_counts_what_was_read() {
    let mut t = T::proven(5);
    t.push([run(4, 100)]);
    t.write(Some(3 * 101 + 50)); // three whole, the fourth cut
    // Two of the three read (the socket full: sampled while blocked).
    t.m.handle_sample(
        t.now,
        Sample {
            unread: Some(101 + 50),
            error: None,
            hangup: false,
        },
    );
    t.die(reset());
    let s = t.m.stats();
    assert_eq!(
        (s.sent, s.delivered, s.unconfirmed, s.retried),
        (4, 3, 1, 1),
        "the head and two read; the third maybe read; the cut one retried"
    );
}

#[test]
fn a_cut_inside_a_run_retries_only_the_cut_message() {
    for (error, delivered, unconfirmed) in [(pipe(), 4, 0), (reset(), 1, 3)] {
        let mut t = T::proven(5);
        t.push([run(4, 100)]);
        t.write(Some(3 * 101 + 50)); // three whole, the fourth cut
        t.die(error);
        let s = t.m.stats();
        assert_eq!(
            (s.sent, s.delivered, s.unconfirmed, s.retried),
            (4, delivered, unconfirmed, 1)
        );
        let pending = t.m.pending_mut();
        assert_eq!(pending.len(), 1);
        assert_eq!((tag(&pending[0]), pending[0].attempts), (4, 1));
        assert!(!pending[0].sent);
        assert_eq!(
            t.m.take_freed(),
            (4, 11 + 3 * 101),
            "the cut one is not freed"
        );
    }
}

#[test]
fn a_reset_at_a_boundary_inside_a_run_retries_the_last_whole_message() {
    let mut t = T::proven(5);
    t.push([run(4, 100)]);
    t.write(Some(3 * 101)); // three whole, the fourth not started
    t.die(reset());
    let s = t.m.stats();
    assert_eq!(
        (s.sent, s.delivered, s.unconfirmed, s.retried),
        (4, 1, 2, 1)
    );
    let pending = t.m.pending_mut();
    assert_eq!(pending.len(), 2);
    assert_eq!((tag(&pending[0]), pending[0].sent), (3, true));
    assert_eq!((tag(&pending[1]), pending[1].sent), (4, false));
    // Both go on the next connection; the retry is not counted again.
    t.connect();
    t.prove();
    t.write(None);
    t.sample(0);
    let s = t.m.stats();
    assert_eq!((s.sent, s.delivered), (5, 3));
}

#[test]
fn a_forced_stop_inside_a_run_discards_only_what_was_not_written_whole() {
    let mut t = T::proven(5);
    t.push([run(4, 100)]);
    t.write(Some(2 * 101 + 10));
    t.m.handle_force(t.now);
    let s = t.m.stats();
    assert_eq!(
        (s.sent, s.delivered, s.unconfirmed, s.discarded),
        (3, 1, 2, 2)
    );
    assert_eq!(t.m.take_freed().0, 5, "every queue slot is given back");
    assert_eq!(t.action(), Action::Done);
}

#[test]
fn a_quiet_close_at_a_boundary_inside_a_run_delivers_what_was_written() {
    let mut t = T::proven(5);
    t.push([run(4, 100)]);
    t.write(Some(2 * 101));
    // The reader read everything, then closed (its inactivity timeout).
    t.m.handle_sample(
        t.now,
        Sample {
            unread: Some(0),
            error: None,
            hangup: true,
        },
    );
    let s = t.m.stats();
    assert_eq!(
        (s.sent, s.delivered, s.unconfirmed, s.retried),
        (3, 3, 0, 0)
    );
    assert!(t.reports().is_empty(), "not an error");
    assert_eq!(t.m.pending_mut()[0].count, 2, "the rest of the run waits");
}

#[test]
fn a_window_counts_up_to_its_limit_and_starts_again_after_it() {
    let mut t = T::proven(5);
    let t0 = t.now + DIRECT_WINDOW;
    for i in 0..DIRECT_MAX {
        let at = t0 + Duration::from_micros(u64::from(i));
        assert!(t.m.take_direct(at), "{i}");
    }
    assert!(
        !t.m.take_direct(t0 + DIRECT_WINDOW / 2),
        "the limit within the window"
    );
    assert!(t.m.take_direct(t0 + DIRECT_WINDOW), "a new window");
    assert!(!{
        let mut full = T::proven(5);
        let t1 = full.now + DIRECT_WINDOW;
        (0..=DIRECT_MAX).all(|_| full.m.take_direct(t1))
    });
}

#[test]
fn a_producer_writes_by_itself_only_on_an_idle_proven_connection_and_at_most_four_times_per_window()
{
    let mut t = T::new(5);
    assert!(!t.m.take_direct(t.now), "no connection");
    t.connect();
    assert!(!t.m.take_direct(t.now), "not proven");
    t.push([msg(10, 0)]);
    t.prove();
    for i in 0..DIRECT_MAX {
        assert!(t.m.take_direct(t.now), "{i}");
    }
    assert_eq!(DIRECT_MAX, 4);
    assert!(
        !t.m.take_direct(t.now + DIRECT_WINDOW / 2),
        "the window's budget is spent: the task batches"
    );
    t.at(DIRECT_WINDOW);
    t.push([msg(10, 1), msg(1000, 2)]);
    assert!(!t.m.take_direct(t.now), "messages wait to be written");
    t.write(Some(5));
    t.m.handle_would_block(t.now);
    assert!(!t.m.take_direct(t.now), "the socket is full");
    t.m.handle_writable(t.now);
    t.flush(0);
    assert!(t.m.take_direct(t.now), "idle again, in a new window");
    t.push([msg(10, 3)]);
    t.flush(3);
    assert!(t.m.take_direct(t.now), "bytes unread do not stop it");
    t.m.handle_stop(t.now, t.now + SEC);
    assert!(!t.m.take_direct(t.now), "draining: the task alone finishes");
}

#[test]
fn after_a_direct_write_the_task_is_woken_only_if_the_machine_needs_it() {
    let mut t = T::proven(5);
    assert_eq!(t.arm(), (None, false), "the task waits for messages only");
    // A message written by a producer and read at once: nothing to do.
    t.push([msg(10, 1)]);
    t.flush(0);
    let idle = t.action();
    assert!(!t.m.wake_task(idle));
    // Not read yet: a sample timer the task's wait lacks.
    t.push([msg(10, 2)]);
    t.flush(5);
    let last = t.action();
    assert_eq!(last, idle, "waiting for messages, as before");
    assert!(t.m.wake_task(last), "a timer the task lacks");
    // The task waits with that timer (or an earlier one): no wake-up.
    assert_eq!(t.arm().0, t.m.poll_timeout());
    assert!(!t.m.wake_task(last));
    // An error to report.
    t.m.reports.push_back(WriterError::Unconfirmed {
        messages: 1,
        approx_bytes: 1,
    });
    assert!(t.m.wake_task(last), "the callback runs on the task");
    assert_eq!(t.reports().len(), 1);
    // A full socket, a dead connection: the task's.
    t.push([msg(1000, 3)]);
    t.write(Some(1));
    t.m.handle_would_block(t.now);
    let full = t.action();
    assert!(matches!(full, Action::Wait(w) if w.writable));
    assert!(t.m.wake_task(full));
    t.m.handle_write_error(t.now, pipe(), Sample::default());
    let dead = t.action();
    assert_eq!(dead, Action::Close);
    assert!(t.m.wake_task(dead));
}

#[test]
fn the_task_keeps_a_registration_for_room_for_a_full_socket_until_all_is_read() {
    let mut t = T::new(5);
    assert_eq!(t.m.arm(Wait::default()), (t.m.poll_timeout(), false));
    t.connect();
    t.push([msg(10, 0)]);
    t.prove();
    t.push((0..100).map(|i| msg(1000, i)));
    t.write(Some(5000));
    t.m.handle_would_block(t.now);
    let (timer, room) = t.arm();
    assert!(room, "waiting for room");
    assert_eq!(timer, Some(t.now + SEC), "the backpressure timer");
    t.m.handle_writable(t.now);
    t.flush(500);
    assert!(t.arm().1, "kept while bytes are unread");
    t.at(SAMPLE_MIN);
    t.sample(0);
    assert_eq!(t.arm(), (None, false), "dropped once all is read");
}

#[test]
fn the_task_keeps_a_registration_for_room_while_it_waits_on_the_readers_reads_only() {
    let mut t = T::new(5);
    t.connect();
    t.push([msg(10, 1), msg(10, 2), msg(10, 3)]);
    assert_eq!(t.write(None), 1);
    t.sample(1);
    assert!(t.arm().1, "the probe waits on the reader's reads");
    t.at(SAMPLE_MIN);
    t.sample(0);
    t.flush(0);
    t.flush(10);
    let (timer, room) = t.arm();
    assert!(!room, "streaming: dropped though bytes are unread");
    assert_eq!(timer, Some(t.now + SAMPLE_MIN), "the sample timer instead");
    t.m.handle_stop(t.now, t.now + SEC);
    let Action::Wait(w) = t.action() else {
        panic!("a drain waits")
    };
    assert!(w.read && !w.messages);
    assert!(t.m.arm(w).1, "a drain waits on the reader's reads");
}

#[test]
fn a_head_of_one_byte_is_proven_by_its_probe_and_the_connection_opens() {
    // An empty message is a one-byte frame: the probe byte is all of it.
    let mut t = T::new(3);
    t.connect();
    t.push([msg(0, 0), msg(10, 1)]);
    assert_eq!(t.write(None), 1, "the probe is the whole head");
    t.sample(0);
    assert_eq!(t.m.stats().delivered, 1);
    assert_eq!(t.write(None), 11, "open: the next message goes");
    t.sample(0);
    assert_eq!(t.m.stats().delivered, 2);
}
