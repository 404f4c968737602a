//! The receive path of one connection, without IO: the buffer, its growth
//! and shrinking, parsing every complete frame, the per-frame inactivity
//! deadline and the classification of an end of stream.
//!
//! The Reader's connection task only moves bytes and time in and out:
//!
//! ```text
//!   socket ──read──▶ Receiver::fill ──▶ next_borrowed / next_owned ──▶ handler
//!   clock  ─────────▶ poll_timeout / handle_timeout ──▶ Expired (close)
//!   EOF    ─────────▶ finish ──▶ clean, or a truncated frame
//! ```
//!
//! Memory: a new connection holds nothing until its first read, then
//! [`INITIAL_BUFFER`] bytes. The buffer grows
//! for a large frame only once what arrived has nearly filled it, and then by
//! [`FrameDecoder::grow_hint`]'s bounded step, so a peer that declares a huge
//! length but sends little makes the Reader hold little. Reads that keep
//! filling the buffer double it up to [`STREAM_BUFFER`]; a buffer that has
//! been empty for [`SHRINK_AFTER`] is released (the next read starts again
//! from [`INITIAL_BUFFER`]), so an idle connection holds no buffer at all.
//!
//! Owned messages ([`Receiver::next_owned`]) are frozen slices of the buffer,
//! not copies; the buffer's memory is reused once every such slice is gone.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use udsipc::frame::Receiver;
//!
//! let now = Instant::now();
//! let mut rx = Receiver::new(1024, Duration::from_secs(10), now);
//! let wire = [3, b'a', b'b', b'c', 2, b'x'];
//! rx.fill(|buf| {
//!     buf.extend_from_slice(&wire);
//!     Ok::<_, std::io::Error>(wire.len())
//! })?;
//! assert_eq!(rx.next_borrowed()?, Some(&b"abc"[..]));
//! assert_eq!(rx.next_borrowed()?, None); // "x" of 2 bytes: need more
//! rx.on_idle(now); // nothing more to read: the next deadline starts
//! assert!(rx.finish().is_err()); // the stream ended inside a body
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use super::pool::Pool;
use super::{FrameDecoder, FrameError, Next, decode_varint};

/// A new connection's buffer: small, so idle connections cost little.
pub const INITIAL_BUFFER: usize = 8 * 1024;
/// Reads that keep filling the buffer grow it up to this, for throughput.
pub const STREAM_BUFFER: usize = 256 * 1024;

/// Earlier buffers kept for reuse while handed-out messages still share
/// them (owned delivery); all are dropped when an idle buffer is released.
const SPARES: usize = 2;
/// A buffer that has held nothing for this long is released.
pub const SHRINK_AFTER: Duration = Duration::from_millis(250);

/// Why the inactivity deadline closed a connection
/// ([`Receiver::handle_timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Waiting for a frame, or inside its length prefix: a quiet close, as
    /// in Go.
    Idle,
    /// Inside a message body: an error, as in Go.
    InsideBody {
        /// The declared body length.
        expected: u64,
        /// Body bytes that had arrived.
        got: u64,
    },
}

/// One connection's receive state: buffer, frame parsing and deadlines.
#[derive(Debug)]
pub struct Receiver {
    buf: BytesMut,
    decoder: FrameDecoder,
    timeout: Duration,
    /// When the frame being waited for must be complete; `None` = never
    /// (a timeout too large to add to a clock reading).
    deadline: Option<Instant>,
    /// A frame completed since the deadline was last set: the next wait
    /// for more bytes starts a new deadline.
    restart_deadline: bool,
    /// The buffer size this connection works with now.
    size: usize,
    /// Size of the frame at the front once its prefix is known.
    front_frame: Option<usize>,
    /// The last read filled all the room it was offered.
    filled_last_read: bool,
    shrink_at: Option<Instant>,
    /// Earlier buffers still shared by handed-out messages, oldest first:
    /// reused once those are dropped, instead of allocating another.
    spares: Pool,
    /// `buf` holds no memory of its own yet (new, or released while idle).
    released: bool,
    /// Bytes at the front of `buf` already handed out (frames lent by
    /// `next_borrowed`, skipped empty frames): dropped at the next
    /// `release`.
    lent: usize,
    /// Bytes of the frame last returned, not yet counted as handed over.
    unreported: usize,
    read_total: u64,
    handed_over: u64,
}

impl Receiver {
    /// A receiver for frames of at most `max_message_size` bytes, each of
    /// which must arrive within `inactivity_timeout` of the moment the
    /// receiver starts waiting for it; `now` starts the first deadline.
    pub fn new(max_message_size: u64, inactivity_timeout: Duration, now: Instant) -> Self {
        Self {
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(max_message_size),
            timeout: inactivity_timeout,
            deadline: now.checked_add(inactivity_timeout),
            restart_deadline: false,
            size: INITIAL_BUFFER,
            front_frame: None,
            filled_last_read: false,
            shrink_at: None,
            spares: Pool::new(SPARES - 1),
            released: true,
            lent: 0,
            unreported: 0,
            read_total: 0,
            handed_over: 0,
        }
    }

    /// Makes room, then lets `read` append to the buffer's spare capacity
    /// (e.g. tokio's `try_read_buf`, which does not zero it first), and
    /// accounts for what it appended. Returns what `read` returned.
    ///
    /// # Panics
    ///
    /// If `read` reports more bytes than it appended.
    pub fn fill<E>(
        &mut self,
        read: impl FnOnce(&mut BytesMut) -> Result<usize, E>,
    ) -> Result<usize, E> {
        self.release();
        self.make_room();
        let offered = self.buf.capacity() - self.buf.len();
        let before = self.buf.len();
        let n = read(&mut self.buf)?;
        assert_eq!(self.buf.len(), before + n, "read reported {n} bytes");
        if n > 0 {
            self.filled_last_read = n == offered;
            self.read_total += n as u64;
            self.shrink_at = None;
        }
        Ok(n)
    }

    /// The socket had nothing more to read: the receiver now waits. Starts
    /// the next frame's inactivity deadline if a frame completed since the
    /// last wait (as in Go, the deadline covers one whole frame and starts
    /// once the previous message was handed over), and arms the timer that
    /// releases an empty buffer.
    pub fn on_idle(&mut self, now: Instant) {
        self.release();
        if std::mem::take(&mut self.restart_deadline) {
            self.deadline = now.checked_add(self.timeout);
        }
        let holds = !self.released || !self.spares.is_empty();
        if self.buf.is_empty() && holds && self.shrink_at.is_none() {
            self.shrink_at = now.checked_add(SHRINK_AFTER);
        }
    }

    /// The body length of the next complete, non-empty frame (zero-length
    /// frames before it are skipped), without taking it; `None` when more
    /// bytes are needed. A consumer with a byte budget asks before it takes.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use udsipc::frame::Receiver;
    ///
    /// let mut rx = Receiver::new(1024, Duration::from_secs(10), Instant::now());
    /// rx.fill(|buf| {
    ///     buf.extend_from_slice(&[0, 3, b'a', b'b', b'c']);
    ///     Ok::<_, std::io::Error>(5)
    /// })?;
    /// assert_eq!(rx.next_len()?, Some(3));
    /// assert_eq!(rx.next_owned()?.as_deref(), Some(&b"abc"[..]));
    /// assert_eq!(rx.next_len()?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_len(&mut self) -> Result<Option<usize>, FrameError> {
        self.release();
        Ok(self.next_frame()?.map(|(body_start, end)| end - body_start))
    }

    /// The next complete, non-empty frame's body, borrowed from the buffer
    /// until the next call; `None` when more bytes are needed. Zero-length
    /// frames are skipped, as the Go reference skips them.
    pub fn next_borrowed(&mut self) -> Result<Option<&[u8]>, FrameError> {
        // Frames lent earlier stay in the buffer (a cursor moves past them)
        // until the next read or owned message drops them all at once:
        // dropping each one as the next is asked for cost as much as
        // parsing it.
        self.report();
        let Some((body_start, end)) = self.next_frame()? else {
            return Ok(None);
        };
        self.unreported = end - self.lent;
        self.lent = end;
        Ok(Some(&self.buf[body_start..end]))
    }

    /// The next complete, non-empty frame's body as owned bytes that share
    /// the buffer's memory (no copy); `None` when more bytes are needed.
    pub fn next_owned(&mut self) -> Result<Option<Bytes>, FrameError> {
        self.release();
        let Some((body_start, end)) = self.next_frame()? else {
            return Ok(None);
        };
        // Skipped empty frames before it: dropped first.
        let skipped = std::mem::take(&mut self.lent);
        self.buf.advance(skipped);
        let mut frame = self.buf.split_to(end - skipped);
        frame.advance(body_start - skipped);
        self.unreported = end - skipped;
        Ok(Some(frame.freeze()))
    }

    /// Finds the next non-empty frame after the lent bytes: `(body start,
    /// frame end)`, both from the front of the buffer. Empty frames are
    /// skipped: lent, and counted as handed over.
    fn next_frame(&mut self) -> Result<Option<(usize, usize)>, FrameError> {
        loop {
            match self.decoder.decode(&self.buf[self.lent..])? {
                Next::Frame { body, consumed } => {
                    self.restart_deadline = true;
                    self.front_frame = None;
                    if body.is_empty() {
                        self.lent += consumed;
                        self.handed_over += consumed as u64;
                        continue;
                    }
                    return Ok(Some((self.lent + body.start, self.lent + consumed)));
                }
                Next::NeedMore { frame_len } => {
                    self.front_frame = frame_len;
                    self.rewind_if_empty();
                    return Ok(None);
                }
            }
        }
    }

    /// Counts the frame handed out last as handed over.
    fn report(&mut self) {
        self.handed_over += self.unreported as u64;
        self.unreported = 0;
    }

    /// [`report`](Self::report)s, and drops the lent frames from the
    /// buffer.
    fn release(&mut self) {
        self.report();
        self.buf.advance(std::mem::take(&mut self.lent));
        self.rewind_if_empty();
    }

    /// An empty buffer starts again at the front of its memory when no
    /// handed-out message still shares it (a pointer reset, no copy).
    fn rewind_if_empty(&mut self) {
        if self.buf.is_empty() && self.lent == 0 {
            let _ = self.buf.try_reclaim(self.size);
        }
    }

    /// The peer closed the stream: `Ok` at a frame boundary, the truncated
    /// frame otherwise. Call after taking every complete frame.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        self.release();
        self.decoder.finish(&self.buf)
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has something to
    /// do; `None` if never.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline.into_iter().chain(self.shrink_at).min()
    }

    /// Acts on the clock: shrinks an idle enlarged buffer, and reports an
    /// expired inactivity deadline (the caller closes the connection).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Expired> {
        if self.shrink_at.is_some_and(|at| at <= now) {
            self.shrink_at = None;
            self.release();
            if self.buf.is_empty() {
                self.size = INITIAL_BUFFER;
                self.buf = BytesMut::new();
                self.released = true;
                self.spares.clear();
                self.filled_last_read = false;
            }
        }
        self.deadline
            .is_some_and(|d| d <= now)
            .then(|| self.expired())
    }

    /// How a deadline expiring now would be classified; also where a read
    /// error came ([`Expired::InsideBody`]: a complete prefix had arrived).
    pub fn expired(&self) -> Expired {
        let rest = &self.buf[self.lent..];
        match decode_varint(rest) {
            Ok(Some((expected, prefix_len))) => Expired::InsideBody {
                expected,
                got: (rest.len() - prefix_len) as u64,
            },
            _ => Expired::Idle,
        }
    }

    /// Bytes buffered and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.lent
    }

    /// Whether the receiver holds no buffer memory (new, or released while
    /// idle) and nothing buffered: its next [`fill`](Self::fill) allocates.
    pub fn is_released(&self) -> bool {
        self.released && self.buf.is_empty()
    }

    /// Bytes of buffer this connection holds now (what it costs, at most).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes read from the stream so far.
    pub fn read_total(&self) -> u64 {
        self.read_total
    }

    /// Bytes of whole frames (prefix and body) handed over so far: a frame
    /// counts once the frame after it is asked for, or at
    /// [`finish`](Self::finish).
    pub fn handed_over(&self) -> u64 {
        self.handed_over
    }

    /// Ensures the next read has room, growing or compacting the buffer as
    /// the module docs describe.
    fn make_room(&mut self) {
        let buffered = self.buf.len();
        let spare = self.buf.capacity() - buffered;
        let mut want = self.size;
        if let Some(total) = self.front_frame {
            if total > self.size && buffered >= self.size - self.size / 8 {
                want = self.decoder.grow_hint(buffered, total).max(want);
            }
        }
        if self.filled_last_read && self.size < STREAM_BUFFER {
            want = want.max((self.size * 2).min(STREAM_BUFFER));
        }
        self.filled_last_read = false;
        let grew = want > self.size;
        self.size = want;
        let need = self.size.saturating_sub(buffered).max(1);
        if spare >= need || (spare > 0 && spare >= self.size / 4 && !grew) {
            return;
        }
        // Move the partial frame to the front of the same memory when no
        // handed-out message still uses it; otherwise a fresh allocation of
        // exactly the working size.
        if self.buf.try_reclaim(need) {
            return;
        }
        // The oldest spare no handed-out message uses anymore, or a new
        // allocation.
        let mut fresh = self
            .spares
            .take(buffered + need)
            .unwrap_or_else(|| BytesMut::with_capacity(buffered + need));
        fresh.extend_from_slice(&self.buf);
        // An empty handle (new, or released) holds no memory: the pool
        // ignores it.
        self.spares.give(std::mem::replace(&mut self.buf, fresh));
        self.released = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{GROWTH_STEP, encode_frame};

    const T: Duration = Duration::from_secs(10);

    fn push(rx: &mut Receiver, _now: Instant, bytes: &[u8]) -> usize {
        rx.fill(|buf| {
            let n = bytes.len().min(buf.capacity() - buf.len());
            buf.extend_from_slice(&bytes[..n]);
            Ok::<_, ()>(n)
        })
        .unwrap()
    }

    /// The most a buffer holding `arrived` bytes of a large frame may hold.
    fn bound(arrived: usize) -> usize {
        INITIAL_BUFFER.max(2 * arrived).max(arrived + GROWTH_STEP)
    }

    /// Borrowed frames stay in the buffer behind a cursor until the next
    /// read; mixed with owned ones, empty frames and a partial frame, every
    /// body comes out whole, in order, and is counted once handed over.
    #[test]
    fn lent_frames_are_dropped_at_the_next_read_and_counted_as_handed_over() {
        let now = Instant::now();
        let mut rx = Receiver::new(100, T, now);
        let mut wire = Vec::new();
        let bodies: [&[u8]; 7] = [b"a", b"", b"bc", b"", b"", b"def", b"ghij"];
        for body in bodies {
            encode_frame(body, &mut wire);
        }
        let (first, rest) = wire.split_at(wire.len() - 3); // "ghij" arrives late
        push(&mut rx, now, first);
        assert_eq!(rx.next_borrowed().unwrap(), Some(&b"a"[..]));
        assert_eq!(rx.handed_over(), 0, "counted once the next is asked for");
        assert_eq!(rx.next_borrowed().unwrap(), Some(&b"bc"[..]));
        assert_eq!(rx.handed_over(), 3, "a, then the empty frame skipped");
        assert_eq!(rx.buffered(), first.len() - 6);
        // An owned message after borrowed ones (and two empty frames).
        assert_eq!(rx.next_owned().unwrap().as_deref(), Some(&b"def"[..]));
        assert_eq!(rx.handed_over(), 8);
        assert_eq!(rx.next_borrowed().unwrap(), None);
        assert_eq!(rx.handed_over(), 12);
        assert_eq!(rx.buffered(), 2, "the prefix and first byte of ghij");
        push(&mut rx, now, rest);
        assert_eq!(rx.next_borrowed().unwrap(), Some(&b"ghij"[..]));
        assert_eq!(rx.next_borrowed().unwrap(), None);
        rx.finish().unwrap();
        assert_eq!(rx.handed_over(), wire.len() as u64);
        assert_eq!(rx.buffered(), 0);
    }

    #[test]
    fn every_complete_frame_of_a_read_is_parsed_before_reading_again() {
        let now = Instant::now();
        let mut rx = Receiver::new(100, T, now);
        let mut wire = Vec::new();
        for body in [&b"a"[..], b"", b"bc", b"def"] {
            encode_frame(body, &mut wire);
        }
        push(&mut rx, now, &wire);
        let mut got = Vec::new();
        while let Some(m) = rx.next_borrowed().unwrap() {
            got.push(m.to_vec());
        }
        assert_eq!(got, [b"a".to_vec(), b"bc".to_vec(), b"def".to_vec()]);
        rx.finish().unwrap();
        assert_eq!(rx.handed_over(), wire.len() as u64);
    }

    #[test]
    fn owned_messages_share_the_buffer_instead_of_copying() {
        let now = Instant::now();
        let mut rx = Receiver::new(100, T, now);
        push(&mut rx, now, &[2, b'h', b'i', 1, b'!']);
        let first = rx.next_owned().unwrap().unwrap();
        let second = rx.next_owned().unwrap().unwrap();
        assert_eq!((&first[..], &second[..]), (&b"hi"[..], &b"!"[..]));
        // Both point into one allocation, one after the other.
        assert_eq!(first.as_ptr() as usize + 3, second.as_ptr() as usize);
    }

    #[test]
    fn a_buffer_shared_by_handed_out_messages_is_reused_once_they_are_dropped() {
        let now = Instant::now();
        let mut rx = Receiver::new(1000, T, now);
        // 63 frames of 128 bytes: less than the 8 KiB buffer (no growth).
        let frames: Vec<u8> = (0..63u8)
            .flat_map(|i| std::iter::once(127).chain(std::iter::repeat_n(i, 127)))
            .collect();
        let take_all = |rx: &mut Receiver| {
            push(rx, now, &frames);
            std::iter::from_fn(|| rx.next_owned().unwrap()).collect::<Vec<_>>()
        };
        let first = take_all(&mut rx);
        let first_buffer = first[0].as_ptr() as usize - 1;
        // The first messages still share the first buffer: a second one.
        let second = take_all(&mut rx);
        assert_ne!(second[0].as_ptr() as usize - 1, first_buffer);
        drop(first);
        // Now the second is shared, and the first free again: reused.
        let third = take_all(&mut rx);
        assert_eq!(third[0].as_ptr() as usize - 1, first_buffer);
        assert_eq!(third.len(), 63);
        assert!(
            third
                .iter()
                .enumerate()
                .all(|(i, m)| m[..] == [i as u8; 127])
        );
        drop(second);
    }

    #[test]
    fn spare_buffers_are_dropped_when_an_idle_buffer_is_released() {
        let now = Instant::now();
        let mut rx = Receiver::new(1000, T, now);
        let frames = [&[127u8][..], &[5u8; 127][..]].concat().repeat(63);
        push(&mut rx, now, &frames);
        let held: Vec<_> = std::iter::from_fn(|| rx.next_owned().unwrap()).collect();
        push(&mut rx, now, &frames);
        while rx.next_owned().unwrap().is_some() {}
        assert_eq!(rx.spares.len(), 1);
        rx.on_idle(now);
        assert!(rx.handle_timeout(now + SHRINK_AFTER).is_none());
        assert!(rx.spares.is_empty());
        assert_eq!(rx.capacity(), 0);
        drop(held);
    }

    #[test]
    fn the_deadline_restarts_when_the_receiver_starts_waiting_for_the_next_frame() {
        let t0 = Instant::now();
        let mut rx = Receiver::new(100, T, t0);
        assert_eq!(rx.poll_timeout(), Some(t0 + T));
        push(&mut rx, t0, &[1, b'a']);
        assert!(rx.next_borrowed().unwrap().is_some());
        // The handler took 3 s: the next frame's deadline starts after it.
        let t1 = t0 + Duration::from_secs(3);
        assert!(rx.next_borrowed().unwrap().is_none());
        rx.on_idle(t1);
        // First the idle buffer's release, then the deadline.
        assert_eq!(rx.poll_timeout(), Some(t1 + SHRINK_AFTER));
        assert_eq!(rx.handle_timeout(t1 + SHRINK_AFTER), None);
        assert_eq!(rx.capacity(), 0);
        assert_eq!(rx.poll_timeout(), Some(t1 + T));
        assert_eq!(rx.handle_timeout(t1 + T - Duration::from_millis(1)), None);
        assert_eq!(rx.handle_timeout(t1 + T), Some(Expired::Idle));
    }

    #[test]
    fn a_deadline_inside_a_body_is_an_error_and_inside_a_prefix_is_quiet() {
        let t0 = Instant::now();
        let mut rx = Receiver::new(1000, T, t0);
        push(&mut rx, t0, &[0x80]);
        assert_eq!(rx.next_borrowed().unwrap(), None);
        assert_eq!(rx.handle_timeout(t0 + T), Some(Expired::Idle));
        push(&mut rx, t0, &[0x01, 9, 9]);
        assert_eq!(rx.next_borrowed().unwrap(), None);
        assert_eq!(
            rx.handle_timeout(t0 + T),
            Some(Expired::InsideBody {
                expected: 128,
                got: 2
            })
        );
    }

    #[test]
    fn a_timeout_too_large_for_the_clock_means_never() {
        let now = Instant::now();
        let rx = Receiver::new(100, Duration::MAX, now);
        assert_eq!(rx.poll_timeout(), None);
    }

    #[test]
    fn end_of_stream_is_clean_only_at_a_frame_boundary() {
        let now = Instant::now();
        let mut rx = Receiver::new(100, T, now);
        push(&mut rx, now, &[3, 1]);
        assert_eq!(rx.next_borrowed().unwrap(), None);
        assert_eq!(
            rx.finish(),
            Err(FrameError::TruncatedBody {
                expected: 3,
                got: 1
            })
        );
    }

    #[test]
    fn a_large_declared_frame_keeps_the_initial_buffer_until_what_arrived_fills_it() {
        let now = Instant::now();
        let mut rx = Receiver::new(16 << 20, T, now);
        push(&mut rx, now, &[0x80, 0x80, 0x80, 0x08]);
        push(&mut rx, now, &[7; 100]);
        assert_eq!(rx.next_borrowed().unwrap(), None);
        push(&mut rx, now, &[]);
        assert_eq!(rx.capacity(), INITIAL_BUFFER);
        assert_eq!(rx.buffered(), 104);
    }

    #[test]
    fn the_buffer_grows_for_a_large_frame_by_bounded_steps() {
        let frame = (10 << 20) + 4;
        let mut wire = vec![0x80, 0x80, 0x80, 0x05];
        wire.resize(frame, 1);
        for chunk in [1000, usize::MAX] {
            let now = Instant::now();
            let mut rx = Receiver::new(10 << 20, T, now);
            let (mut arrived, mut growths, mut cap) = (0, 0, rx.capacity());
            while arrived < frame {
                let end = arrived.saturating_add(chunk).min(frame);
                arrived += push(&mut rx, now, &wire[arrived..end]);
                if rx.capacity() != cap {
                    growths += 1;
                    cap = rx.capacity();
                }
                assert!(
                    cap <= bound(arrived),
                    "{cap} reserved for {arrived} arrived"
                );
                assert!(cap <= frame.max(INITIAL_BUFFER));
                if arrived < frame {
                    assert_eq!(rx.next_borrowed().unwrap(), None);
                }
            }
            assert_eq!(rx.next_borrowed().unwrap().map(<[u8]>::len), Some(10 << 20));
            assert!(growths <= 14, "{growths} reallocations (chunk {chunk})");
        }
    }

    #[test]
    fn full_reads_grow_to_the_stream_size_and_an_idle_buffer_is_released() {
        let now = Instant::now();
        let mut rx = Receiver::new(10 << 20, T, now);
        let ones = vec![0u8; STREAM_BUFFER]; // zero-length frames
        for _ in 0..10 {
            push(&mut rx, now, &ones);
            assert_eq!(rx.next_borrowed().unwrap(), None);
        }
        assert_eq!(rx.capacity(), STREAM_BUFFER);
        rx.on_idle(now);
        assert_eq!(rx.poll_timeout(), Some(now + SHRINK_AFTER));
        assert_eq!(rx.handle_timeout(now + SHRINK_AFTER), None);
        assert_eq!(rx.capacity(), 0);
        // The next read starts again from the initial size.
        push(&mut rx, now, &[0]);
        assert_eq!(rx.capacity(), INITIAL_BUFFER);
    }

    #[test]
    fn a_partial_frame_moves_to_the_front_when_the_tail_is_short() {
        let now = Instant::now();
        let mut rx = Receiver::new(1 << 20, T, now);
        let mut data = vec![0u8; INITIAL_BUFFER - 1];
        data.push(0x80);
        push(&mut rx, now, &data);
        assert_eq!(rx.next_borrowed().unwrap(), None);
        push(&mut rx, now, &[0x01]);
        assert_eq!(rx.buffered(), 2);
        assert!(rx.capacity() >= INITIAL_BUFFER - 2);
    }
}
