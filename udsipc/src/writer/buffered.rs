//! [`BufferedWriter`]: a producer's own buffer of framed messages in front
//! of a Writer's queue, handed over as one run per buffer instead of one
//! locked push per message (what `std::io::BufWriter` is to a file, or
//! tokio-util's `FramedWrite` between `feed` and `flush`).
//!
//! It owns no state of the Writer: messages are copied into an [`Arena`]
//! of its own, and a hand-over is the run cut from it, pushed to the queue
//! as one item (the kind the queue's own arena makes for
//! [`Writer::send`]), so the writer task, the delivery accounting and
//! the retries see nothing new, and no byte is copied twice. Its chunks
//! come back once written, as the queue's do: nothing is allocated per
//! hand-over in steady state.

use std::sync::atomic::Ordering::Relaxed;

use super::{Writer, WriterInner};

use super::arena::Arena;
use super::queue::frame_len_of;
use super::send::now;
use crate::error::{StopError, WriteError};
use crate::lifecycle::Phase;

/// The default size of a [`BufferedWriter`]'s buffer, in frame bytes
/// (length prefixes and bodies): 256 KiB, as the Writer's socket buffer
/// ([`DEFAULT_WRITE_BUFFER_SIZE`](crate::DEFAULT_WRITE_BUFFER_SIZE)).
/// Measured against 32 and 128 KiB: the same at 64 B; at 1 KiB, 32 KiB
/// hand-overs made a third less.
pub const DEFAULT_BUFFERED_CAPACITY: usize = 256 * 1024;

/// A buffer of framed messages of one producer's own, in front of a
/// [`Writer`]'s queue: [`Writer::buffered`] makes one.
///
/// A message sent through it is copied, with its length prefix, into the
/// buffer, with no lock and no atomic read-modify-write (one plain load of
/// the Writer's phase, to refuse once it stops); what the buffer holds goes
/// to the Writer's queue as one entry, without another copy, when the
/// buffer is full, when [`flush`](Self::flush) is called, and when it is
/// dropped. For one producer of many small messages this costs a fraction
/// of [`Writer::send`] per message, which takes the queue's lock each
/// time so that any number of producers can share the Writer: at 64 B,
/// 50-55 M against 22-38 M messages per second between two processes on
/// the 2-core machine of the README's figures. At 1 KiB it wins long
/// streams (5.2 M against 4.45 M for [`Writer::send`] over 3 M messages)
/// and loses short ones (its first chunks are fresh memory); from about
/// 4 KiB the copy costs more than it saves (at 10 KiB, half as fast): hand
/// those over as `Bytes` with [`Writer::send`] (no copy).
///
/// What it holds is not sent yet, and is not in the Writer's
/// [`queue_depth`](crate::WriterMetrics::queue_depth): call
/// [`flush`](Self::flush) when a burst ends and before stopping the Writer
/// (a stop drains the queue, not this buffer). In the queue a hand-over
/// counts as the messages it holds against
/// [`max_buffered_writes`](crate::WriterBuilder::max_buffered_writes) and
/// [`max_buffered_bytes`](crate::WriterBuilder::max_buffered_bytes): a
/// full queue makes [`send`](Self::send) and `flush` wait, never
/// drop. A hand-over holds at most half of `max_buffered_writes`
/// messages (and of `max_buffered_bytes`), the room the queue wakes its
/// waiting producers at; when only part of it fits, that part goes in and
/// the rest waits, so it makes progress whenever a single message would.
///
/// ```
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("app.sock");
/// let reader = udsipc::Reader::builder(&path).start(|_msg: &[u8]| Ok(()))?;
/// let writer = udsipc::Writer::builder(&path).start()?;
/// let mut out = writer.buffered();
/// let mut record = [0u8; 64];
/// for i in 0..100_000u32 {
///     record[..4].copy_from_slice(&i.to_le_bytes());
///     out.send(&record).await?; // copied into the buffer
/// }
/// out.flush().await?; // the rest goes to the queue
/// drop(out);
/// writer.stop(std::time::Duration::from_secs(5)).await?;
/// assert_eq!(writer.metrics().delivered, 100_000);
/// # reader.stop(std::time::Duration::from_secs(5)).await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "messages are sent when the buffer is flushed or dropped"]
pub struct BufferedWriter<'a> {
    writer: &'a Writer,
    /// The Writer's shared state (one pointer less on the way to its phase
    /// for each message).
    inner: &'a WriterInner,
    /// Frames copied in; what was not cut off yet is the buffer (what a
    /// hand-over could not give the queue yet stays there, in order).
    arena: Arena,
    /// Hand over once the buffer would pass this many bytes...
    capacity: usize,
    /// ... or holds this many messages.
    max_count: u32,
}

impl std::fmt::Debug for BufferedWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedWriter")
            .field("buffered", &self.buffered())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// A [`BufferedWriter`] in front of this Writer, with a buffer of
    /// [`DEFAULT_BUFFERED_CAPACITY`] (256 KiB; see
    /// [`with_capacity`](BufferedWriter::with_capacity)): for one producer
    /// of many small messages, cheaper per message than
    /// [`send`](Self::send) (1.5-2.5 times the throughput at 64 B).
    /// Nothing is allocated before the first message.
    pub fn buffered(&self) -> BufferedWriter<'_> {
        let queue = &self.inner.queue;
        BufferedWriter {
            writer: self,
            inner: &self.inner,
            arena: Arena::new(queue.byte_capacity / 2),
            capacity: 0,
            max_count: u32::try_from((queue.capacity / 2).max(1)).unwrap_or(u32::MAX),
        }
        .with_capacity(DEFAULT_BUFFERED_CAPACITY)
    }
}

impl BufferedWriter<'_> {
    /// A buffer of `bytes` frame bytes instead (at most half the Writer's
    /// `max_buffered_bytes`, if set, as the queue wakes waiting producers
    /// at half its bound; at least one byte). A message whose frame is
    /// larger than the buffer goes to the queue alone, as
    /// [`Writer::send`] would send it, after what the buffer held.
    pub fn with_capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes.min(self.inner.queue.byte_capacity / 2).max(1);
        self
    }

    /// Copies `data` into the buffer, framed; when the buffer is full, first
    /// hands it to the Writer's queue, waiting for room there (never
    /// dropping). An empty message is accepted and not sent, as Go does.
    ///
    /// Errors: [`WriteError::Stopped`] once the Writer is stopping (`data`
    /// was not taken; what the buffer held is counted as discarded).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: cancelled while it waits for room, `data` was not
    /// taken and what the buffer held stays in it, in order.
    pub async fn send(&mut self, data: impl AsRef<[u8]>) -> Result<(), WriteError<()>> {
        // The common case, a copy into the buffer, stays outside the
        // larger future of the waiting path.
        let data = data.as_ref();
        if self.try_buffer(data)? {
            return Ok(());
        }
        self.send_past_buffer(data, false).await
    }

    /// [`send`](Self::send) for synchronous code: waits for room
    /// by blocking the calling thread, as
    /// [`Writer::send_blocking`] does (on a current-thread runtime's
    /// own thread it cannot wait: a full queue then refuses with
    /// [`WriteError::BufferFull`], and nothing is lost: `data` was not
    /// taken and the buffer keeps what it held; except that a message
    /// larger than the buffer goes through `Writer::send_blocking`,
    /// whose refusal there is counted as dropped).
    pub fn send_blocking(&mut self, data: impl AsRef<[u8]>) -> Result<(), WriteError<()>> {
        let data = data.as_ref();
        if self.try_buffer(data)? {
            return Ok(());
        }
        now(self.send_past_buffer(data, true))
    }

    /// `send` (or, with `blocking`, `send_blocking`, never pending then)
    /// of what the buffer has no room for: flush, then buffer it, or queue
    /// it on its own if it is larger than the buffer.
    async fn send_past_buffer(
        &mut self,
        data: &[u8],
        blocking: bool,
    ) -> Result<(), WriteError<()>> {
        self.flush_with(blocking).await?;
        if self.try_buffer(data)? {
            return Ok(());
        }
        self.writer.send_until(data, None, blocking).await
    }

    /// Hands what the buffer holds to the Writer's queue, waiting for room
    /// there (never dropping). After it returns `Ok`, the messages are
    /// queued like any other: a stop drains them.
    ///
    /// Errors: [`WriteError::Stopped`] once the Writer is stopping: what the
    /// buffer held is not sent and is counted in the Writer's `discarded`
    /// (an empty buffer has nothing to refuse: `Ok`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: cancelled while it waits, the buffer keeps what it
    /// held, and the next `flush` (or the drop) hands it over.
    pub async fn flush(&mut self) -> Result<(), WriteError<()>> {
        self.flush_with(false).await
    }

    /// [`flush`](Self::flush) for synchronous code, blocking the calling
    /// thread while the queue is full (on a current-thread runtime's own
    /// thread it cannot wait: a full queue then returns
    /// [`WriteError::BufferFull`], and the buffer keeps what it held).
    pub fn flush_blocking(&mut self) -> Result<(), WriteError<()>> {
        now(self.flush_with(true))
    }

    /// `flush`, or, with `blocking`, `flush_blocking` (never pending then).
    async fn flush_with(&mut self, blocking: bool) -> Result<(), WriteError<()>> {
        while let Some((count, len)) = self.try_hand_over(false)? {
            match self.writer.wait_room(count, len, None, blocking).await {
                Ok(_) => {}
                Err(StopError::WouldDeadlock) => return Err(WriteError::BufferFull(())),
                Err(_) => {
                    self.discard();
                    return Err(WriteError::Stopped(()));
                }
            }
        }
        Ok(())
    }

    /// Messages in the buffer, not yet handed to the Writer's queue.
    pub fn buffered(&self) -> usize {
        self.arena.frames as usize
    }

    /// A send's step without waiting: whether `data` is now in the buffer
    /// (or empty); if not, the buffer must be handed over first, or the
    /// message is larger than the buffer (it goes to the queue alone).
    #[inline]
    fn try_buffer(&mut self, data: &[u8]) -> Result<bool, WriteError<()>> {
        if data.is_empty() {
            return Ok(true);
        }
        if self.inner.phase.get() != Phase::Running {
            self.discard();
            return Err(WriteError::Stopped(()));
        }
        let frame_len = frame_len_of(data.len());
        let count = self.arena.frames;
        // The buffer is handed over first when the frame would not fit.
        let full = count > 0
            && (self.arena.uncut().len() + frame_len > self.capacity
                || count >= self.max_count
                || !self.arena.has_room(frame_len));
        if full || frame_len > self.capacity {
            return Ok(false);
        }
        if !self.arena.has_room(frame_len) {
            // Nothing is buffered (handed over first): move on.
            self.arena.next_chunk(self.capacity);
        }
        self.arena.put_frame(data);
        Ok(true)
    }

    /// Offers what the buffer holds to the queue, once: `None` when
    /// everything was taken, else the room to wait for (messages, bytes).
    fn try_hand_over(
        &mut self,
        past_bounds: bool,
    ) -> Result<Option<(usize, usize)>, WriteError<()>> {
        let taken = self.inner.queue.push_run(&mut self.arena, past_bounds);
        // Refused: the Writer is stopping, and what the buffer held goes.
        let first = taken.inspect_err(|_| self.discard())?;
        self.inner.queued(first);
        let left = self.arena.frames as usize;
        Ok((left > 0).then(|| (left, self.arena.uncut().len())))
    }

    /// Drops what the buffer holds (the Writer is stopping), counted in the
    /// Writer's `discarded`.
    fn discard(&mut self) {
        let n = self.buffered() as u64;
        drop(self.arena.cut());
        if n > 0 {
            self.inner
                .counters
                .discarded_unflushed
                .fetch_add(n, Relaxed);
            tracing::warn!(
                discarded = n,
                path = %self.inner.opts.cfg.path.display(),
                "udsipc buffered writer: the Writer stopped before these messages were flushed"
            );
        }
    }
}

impl Drop for BufferedWriter<'_> {
    /// Hands what the buffer holds to the queue without waiting, past the
    /// queue's bounds if it must (by at most one buffer); counted as
    /// discarded if the Writer has stopped.
    fn drop(&mut self) {
        let _ = self.try_hand_over(true);
    }
}
