//! One accepted connection on the Reader side: read, parse every complete
//! frame in the buffer, call the handler on each body in place, repeat.
//!
//! This module owns the per-connection buffer and the Go-exact classification
//! of how a connection ends (clean close, timeout, protocol error). It does
//! not accept connections or know about other connections.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep};

use crate::error::{HandlerError, ReadStage, ReaderError};
use crate::frame::{FrameDecoder, Next, decode_varint};
use crate::lifecycle::Phase;
use crate::reader::{ConnectionInfo, ReaderInner};

/// A new connection's buffer: small, so idle connections cost little.
pub(crate) const INITIAL_BUF: usize = 8 * 1024;
/// Reads that keep filling the buffer grow it up to this (for throughput).
pub(crate) const STREAM_BUF: usize = 256 * 1024;
/// An enlarged, empty buffer shrinks back after this much quiet.
const SHRINK_AFTER: Duration = Duration::from_millis(250);

/// The read buffer: `data[start..]` holds unparsed bytes; reads append into
/// the spare capacity after `data.len()` without zeroing it first, so memory
/// the kernel has not written into costs no resident pages.
#[derive(Debug)]
pub(crate) struct ConnBuf {
    data: Vec<u8>,
    start: usize,
    /// The last read filled all the space it was given.
    filled_last_read: bool,
}

impl ConnBuf {
    pub(crate) fn new() -> Self {
        Self {
            data: Vec::with_capacity(INITIAL_BUF),
            start: 0,
            filled_last_read: false,
        }
    }

    pub(crate) fn filled(&self) -> &[u8] {
        &self.data[self.start..]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }

    /// Bytes reserved for this connection (what it costs, at most).
    pub(crate) fn capacity(&self) -> usize {
        self.data.capacity()
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.data.len() {
            self.start = 0;
            self.data.clear();
        }
    }

    /// Reads what the socket has into the spare capacity (tokio's readiness
    /// first: `WouldBlock` when no event was seen).
    pub(crate) fn read_from(&mut self, stream: &UnixStream) -> io::Result<usize> {
        let offered = self.spare_len();
        let n = stream.try_read_buf(&mut self.data)?;
        self.filled_last_read = n == offered;
        Ok(n)
    }

    /// Reads what the kernel has right now, bypassing tokio's readiness
    /// cache (used while draining; zeroes the spare room first).
    pub(crate) fn read_now(&mut self, stream: &UnixStream) -> io::Result<usize> {
        use nix::sys::socket::{MsgFlags, recv};
        use std::os::fd::AsRawFd;
        let end = self.data.len();
        let offered = self.spare_len();
        self.data.resize(self.data.capacity(), 0);
        let got = recv(
            stream.as_raw_fd(),
            &mut self.data[end..],
            MsgFlags::MSG_DONTWAIT,
        );
        let n = *got.as_ref().unwrap_or(&0);
        self.data.truncate(end + n);
        self.filled_last_read = n == offered;
        got.map_err(io::Error::from)
    }

    fn spare_len(&self) -> usize {
        self.data.capacity() - self.data.len()
    }

    /// Makes room for the next read. `frame_len` is the size of the frame at
    /// the front, when its prefix is known.
    ///
    /// A frame that does not fit makes the buffer grow only once what arrived
    /// has (nearly) filled it, and then by the decoder's bounded step: the
    /// reservation stays within `max(2 * arrived, arrived + GROWTH_STEP)` of
    /// the bytes that actually came, whatever length was declared. Reads that
    /// keep filling the buffer (a fast stream of frames) double it up to
    /// [`STREAM_BUF`].
    pub(crate) fn make_room(&mut self, frame_len: Option<usize>, decoder: &FrameDecoder) {
        let buffered = self.data.len() - self.start;
        let cap = self.data.capacity();
        let mut want = cap;
        if let Some(total) = frame_len {
            if total > cap && cap - buffered < cap / 8 {
                want = decoder.grow_hint(buffered, total).max(cap);
            }
        }
        if self.filled_last_read && cap < STREAM_BUF {
            want = want.max((cap * 2).min(STREAM_BUF));
        }
        // Move the partial frame to the front when the tail is short.
        let tail = cap - self.data.len();
        if self.start > 0 && (tail < cap / 4 || want > cap) {
            self.data.copy_within(self.start.., 0);
            self.data.truncate(buffered);
            self.start = 0;
        }
        if want > cap {
            self.data.reserve_exact(want - self.data.len());
        }
        debug_assert!(self.spare_len() > 0, "a read always has room");
    }

    /// Gives back an enlarged buffer's memory when it holds nothing.
    pub(crate) fn shrink(&mut self) {
        if self.is_empty() && self.data.capacity() > INITIAL_BUF {
            self.data = Vec::with_capacity(INITIAL_BUF);
            self.start = 0;
            self.filled_last_read = false;
        }
    }

    /// Appends `bytes` as a read offering all the spare room would.
    #[cfg(test)]
    fn push(&mut self, bytes: &[u8]) {
        let offered = self.spare_len();
        assert!(bytes.len() <= offered, "a read never exceeds the room");
        self.data.extend_from_slice(bytes);
        self.filled_last_read = bytes.len() == offered;
    }
}

/// How a connection ended.
enum End {
    /// Clean close, idle timeout, drained, or forced stop: not an error.
    Quiet,
    /// Counted in `errors` and reported.
    Error(ReaderError),
}

/// Serves one connection until it ends.
pub(crate) async fn serve(
    stream: UnixStream,
    inner: Arc<ReaderInner>,
    info: ConnectionInfo,
    mut phase: watch::Receiver<Phase>,
) {
    if let End::Error(e) = run(&stream, &inner, &info, &mut phase).await {
        inner.report(e);
    }
}

async fn run(
    stream: &UnixStream,
    inner: &ReaderInner,
    info: &ConnectionInfo,
    phase: &mut watch::Receiver<Phase>,
) -> End {
    let decoder = FrameDecoder::new(inner.config.max_message_size);
    let timeout = inner.config.inactivity_timeout;
    let mut buf = ConnBuf::new();
    let deadline = sleep(timeout);
    tokio::pin!(deadline);
    let shrink = sleep(SHRINK_AFTER);
    tokio::pin!(shrink);
    let mut shrink_armed = false;
    let mut draining = false;

    loop {
        // Parse every complete frame before reading again.
        let mut frames = 0u64;
        let mut received = 0u64;
        let frame_len = loop {
            match decoder.decode(buf.filled()) {
                Ok(Next::Frame { body, consumed }) => {
                    if !body.is_empty() {
                        match call(inner, &buf.filled()[body], info) {
                            Ok(()) => received += 1,
                            Err(e) => inner.report(ReaderError::Handler(e)),
                        }
                    }
                    frames += 1;
                    buf.consume(consumed);
                }
                Ok(Next::NeedMore { frame_len }) => break frame_len,
                Err(e) => {
                    inner.counters.received.fetch_add(received, Relaxed);
                    return End::Error(ReaderError::Protocol(e));
                }
            }
        };
        if received > 0 {
            inner.counters.received.fetch_add(received, Relaxed);
        }
        if frames > 0 {
            // As in Go, the inactivity deadline covers one whole frame and
            // restarts when a frame is complete.
            deadline.as_mut().reset(Instant::now() + timeout);
        }
        match *phase.borrow() {
            Phase::Forced => return End::Quiet,
            Phase::Draining if !draining => {
                draining = true;
                begin_drain(stream);
            }
            _ => {}
        }

        buf.make_room(frame_len, &decoder);
        match buf.read_from(stream) {
            Ok(0) => return at_eof(&decoder, buf.filled()),
            Ok(_) => {
                // Stay fair to other connections on this worker.
                tokio::task::consume_budget().await;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if draining {
                    // tokio's WouldBlock may only mean "no readiness event
                    // seen yet": ask the kernel itself. After `begin_drain`
                    // it answers with data, then end of stream.
                    match buf.read_now(stream) {
                        Ok(0) => return at_eof(&decoder, buf.filled()),
                        Ok(_) => {
                            tokio::task::consume_budget().await;
                            continue;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock && buf.is_empty() => {
                            return End::Quiet;
                        }
                        Err(_) => {}
                    }
                }
                if buf.is_empty() && buf.capacity() > INITIAL_BUF && !shrink_armed {
                    // Give an enlarged buffer back after a quiet spell; armed
                    // once, so steady small traffic cannot postpone it.
                    shrink.as_mut().reset(Instant::now() + SHRINK_AFTER);
                    shrink_armed = true;
                }
                tokio::select! {
                    biased;
                    changed = phase.changed() => {
                        if changed.is_err() {
                            return End::Quiet;
                        }
                    }
                    ready = stream.readable() => {
                        if let Err(source) = ready {
                            return End::Error(ReaderError::Read { stage: stage(buf.filled()), source });
                        }
                    }
                    () = &mut deadline, if !draining => return on_timeout(buf.filled(), timeout),
                    () = &mut shrink, if shrink_armed => {
                        shrink_armed = false;
                        buf.shrink();
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return End::Error(ReaderError::Read {
                    stage: stage(buf.filled()),
                    source,
                });
            }
        }
    }
}

/// Starts a graceful drain of this connection: shuts down our reading side,
/// so the kernel keeps what the peer already sent (we read it all, then end
/// of stream) and refuses anything sent from now on with `EPIPE` at the
/// writer, which keeps the message and retries it on its next connection.
/// The cut is made by the kernel at one instant: nothing is half-accepted.
fn begin_drain(stream: &UnixStream) {
    use nix::sys::socket::{Shutdown, shutdown};
    use std::os::fd::AsRawFd;
    let _ = shutdown(stream.as_raw_fd(), Shutdown::Read);
}

/// The peer closed: clean at a frame boundary, an error inside a frame.
fn at_eof(decoder: &FrameDecoder, rest: &[u8]) -> End {
    match decoder.finish(rest) {
        Ok(()) => End::Quiet,
        Err(e) => End::Error(ReaderError::Protocol(e)),
    }
}

fn call(inner: &ReaderInner, body: &[u8], info: &ConnectionInfo) -> Result<(), HandlerError> {
    match catch_unwind(AssertUnwindSafe(|| (inner.handler)(body, info))) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".to_owned());
            Err(format!("handler panicked: {what}").into())
        }
    }
}

fn stage(buffered: &[u8]) -> ReadStage {
    match decode_varint(buffered) {
        Ok(Some(_)) => ReadStage::Body,
        _ => ReadStage::Prefix,
    }
}

/// Go-exact: a timeout while waiting for (or inside) a prefix closes quietly;
/// a timeout inside a body is an error.
fn on_timeout(buffered: &[u8], timeout: Duration) -> End {
    match decode_varint(buffered) {
        Ok(Some((len, prefix_len))) => End::Error(ReaderError::BodyTimeout {
            timeout,
            expected: len,
            got: (buffered.len() - prefix_len) as u64,
        }),
        _ => End::Quiet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::GROWTH_STEP;

    /// The most a buffer holding `arrived` bytes of a large frame may reserve.
    fn bound(arrived: usize) -> usize {
        INITIAL_BUF.max(2 * arrived).max(arrived + GROWTH_STEP)
    }

    #[test]
    fn a_large_declared_frame_keeps_the_initial_buffer_until_what_arrived_fills_it() {
        let d = FrameDecoder::new(16 << 20);
        let mut b = ConnBuf::new();
        // A 16 MiB prefix and 100 bytes of body.
        b.push(&[0x80, 0x80, 0x80, 0x08]);
        b.push(&[7; 100]);
        b.make_room(Some((16 << 20) + 4), &d);
        assert_eq!(b.capacity(), INITIAL_BUF);
        assert_eq!(b.filled().len(), 104);
    }

    #[test]
    fn buffer_grows_for_a_large_frame_by_bounded_steps() {
        let frame = (10 << 20) + 4;
        let d = FrameDecoder::new(10 << 20);
        for chunk in [1000, usize::MAX] {
            let mut b = ConnBuf::new();
            let (mut arrived, mut growths, mut cap) = (0, 0, b.capacity());
            while arrived < frame {
                b.make_room(Some(frame), &d);
                if b.capacity() != cap {
                    growths += 1;
                    cap = b.capacity();
                }
                assert!(
                    cap <= bound(arrived),
                    "{cap} reserved for {arrived} arrived"
                );
                assert!(cap <= frame.max(INITIAL_BUF));
                let n = chunk.min(cap - b.filled().len()).min(frame - arrived);
                b.push(&vec![1; n]);
                arrived += n;
            }
            assert_eq!(b.filled().len(), frame);
            // Doubling steps, not one reallocation per read.
            assert!(growths <= 12, "{growths} reallocations (chunk {chunk})");
        }
    }

    #[test]
    fn full_reads_grow_to_the_stream_size_and_shrink_when_idle() {
        let d = FrameDecoder::new(10 << 20);
        let mut b = ConnBuf::new();
        for _ in 0..10 {
            let n = b.capacity() - b.filled().len();
            b.push(&vec![0; n]);
            let len = b.filled().len();
            b.consume(len);
            b.make_room(None, &d);
        }
        assert_eq!(b.capacity(), STREAM_BUF);
        b.shrink();
        assert_eq!(b.capacity(), INITIAL_BUF);
    }

    #[test]
    fn partial_frame_moves_to_front_when_tail_is_short() {
        let d = FrameDecoder::new(1 << 20);
        let mut b = ConnBuf::new();
        let mut data = vec![1; INITIAL_BUF - 1];
        data.extend_from_slice(&[0x80]);
        b.push(&data);
        b.consume(INITIAL_BUF - 2);
        b.make_room(None, &d);
        assert_eq!(b.filled(), [1, 0x80]);
        assert!(b.capacity() - b.filled().len() >= INITIAL_BUF - 2);
    }
}
