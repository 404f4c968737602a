//! The ways a producer waits for room in the Writer's queue, named after
//! tokio's `mpsc::Sender`: [`Writer::reserve`] → [`Permit`] (wait without
//! putting a message at risk) and [`Writer::send_blocking`] (synchronous
//! code). `write_message`/`write_bytes` (never wait) and `send` (waits with
//! the message in hand) live in the parent module.
//!
//! This module owns no state: it only combines the queue's `wait_room`,
//! `push_owned` and held slots (`reserve_slot`/`push_reserved`/
//! `release_reserved`), so it cannot disturb the writer task.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::inner::{Writer, WriterInner};
use super::queue::Refused;
use crate::error::{StopError, WriteError};
use crate::lifecycle::Phase;

/// A slot in a Writer's queue, held for you by [`Writer::reserve`]; spend
/// it with [`Permit::send`] (tokio: `mpsc::Permit`).
///
/// While the permit lives, the slot counts against
/// [`max_buffered_writes`](crate::WriterBuilder::max_buffered_writes): no
/// other producer can take it, so [`send`](Self::send) never fails with
/// `BufferFull`. Dropping the permit unused gives the slot back.
#[derive(Debug)]
#[must_use = "a permit holds a queue slot until `send` is called or it is dropped"]
pub struct Permit<'a> {
    writer: &'a Writer,
    /// Whether the slot is still held (cleared once `send` spends it).
    holds_slot: bool,
}

impl Permit<'_> {
    /// Queues `data` into the held slot, without blocking and without
    /// copying. An empty message is accepted and not sent (the slot is
    /// given back).
    ///
    /// Errors: [`WriteError::Stopped`] (the message handed back) if the
    /// Writer began stopping after the permit was given. Never `BufferFull`.
    pub fn send(mut self, data: impl Into<Bytes>) -> Result<(), WriteError<Bytes>> {
        let data = data.into();
        if data.is_empty() {
            return Ok(()); // `drop` gives the slot back
        }
        self.holds_slot = false;
        self.writer
            .inner
            .queue
            .push_reserved(data)
            .map_err(WriteError::Stopped)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.holds_slot {
            self.writer.inner.queue.release_reserved();
        }
    }
}

impl Writer {
    /// Waits until the queue has room for a message, holds one slot, and
    /// returns it as a [`Permit`] to queue one message without waiting and
    /// without the risk of `BufferFull` (tokio: `Sender::reserve`). Use it
    /// in `select!` loops, where [`send`](Self::send) would lose its message
    /// if another branch won.
    ///
    /// Returns [`WriteError::Stopped`] once the Writer is stopping.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no message is involved until the permit is spent, and a
    /// dropped wait holds no slot (the slot is taken in the same poll that
    /// returns the permit).
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("app.sock");
    /// let writer = udsipc::Writer::builder(&path).start()?;
    /// let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    /// tx.send(bytes::Bytes::from_static(b"hello")).await?;
    /// drop(tx);
    /// loop {
    ///     tokio::select! {
    ///         // Waiting for room here never costs a message.
    ///         permit = writer.reserve() => {
    ///             let Some(msg) = rx.recv().await else { break };
    ///             permit?.send(msg)?;
    ///         }
    ///         _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => break,
    ///     }
    /// }
    /// # let _ = writer.stop(std::time::Duration::from_millis(10)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reserve(&self) -> Result<Permit<'_>, WriteError<()>> {
        loop {
            if self.stopping() {
                return Err(WriteError::Stopped(()));
            }
            match self.inner.queue.reserve_slot() {
                Ok(()) => {
                    return Ok(Permit {
                        writer: self,
                        holds_slot: true,
                    });
                }
                Err(Refused::Closed) => return Err(WriteError::Stopped(())),
                Err(Refused::Full) => self.inner.queue.wait_room(1).await,
            }
        }
    }

    /// Whether a stop (or a drop's linger) has visibly begun. A stop closes
    /// the queue before it leaves `Running`, so a wait that the close ended
    /// is refused by `reserve_slot` (`Closed`) even before this says so.
    /// (Not `stop_lock.try_lock()`: two producers trying it at once made
    /// one of them see `Stopped` on a running Writer.)
    fn stopping(&self) -> bool {
        self.inner.phase.get() != Phase::Running
    }

    /// Queues owned bytes, blocking the calling thread while the queue is
    /// full, for synchronous code (tokio: `Sender::blocking_send`). Fails
    /// only once the Writer is stopping ([`WriteError::Stopped`], the message
    /// handed back). Nothing is counted as dropped while it waits.
    ///
    /// Never panics. On a current-thread tokio runtime's own thread, where
    /// waiting would deadlock, it does not wait: it behaves as
    /// [`write_bytes`](Self::write_bytes) (a full queue refuses with
    /// `BufferFull`, counted as dropped); use `send(..).await` there. Inside
    /// a multi-thread runtime it works (the thread is handed over to
    /// blocking for the wait). If the Writer's runtime was shut down it
    /// returns `Stopped`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("app.sock");
    /// let reader = udsipc::Reader::builder(&path).start(|_msg: &[u8]| Ok(()))?;
    /// let writer = udsipc::Writer::builder(&path).max_buffered_writes(16).start()?;
    /// for i in 0..1_000u32 {
    ///     writer.send_blocking(i.to_le_bytes().to_vec())?; // waits, never drops
    /// }
    /// writer.stop_blocking(std::time::Duration::from_secs(5))?;
    /// assert_eq!(writer.metrics().dropped, 0);
    /// # reader.stop_blocking(std::time::Duration::from_secs(5))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_blocking(&self, data: impl Into<Bytes>) -> Result<(), WriteError<Bytes>> {
        let data = data.into();
        if data.is_empty() {
            return Ok(());
        }
        let need = crate::writer::queue::frame_len_of(data.len());
        self.block_until_pushed(data, need, |queue, data| queue.push_owned(data))
    }

    /// [`send_blocking`](Self::send_blocking) for a borrowed message, copied
    /// once there is room: for synchronous producers of small messages, no
    /// `Bytes` to build and no allocation per message (the blocking twin of
    /// [`send_copy`](Self::send_copy)). The same errors, without the message
    /// (the caller still holds it).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("app.sock");
    /// let reader = udsipc::Reader::builder(&path).start(|_msg: &[u8]| Ok(()))?;
    /// let writer = udsipc::Writer::builder(&path).max_buffered_writes(16).start()?;
    /// let mut record = [0u8; 64];
    /// for i in 0..1_000u32 {
    ///     record[..4].copy_from_slice(&i.to_le_bytes());
    ///     writer.send_copy_blocking(&record)?; // waits, never drops
    /// }
    /// writer.stop_blocking(std::time::Duration::from_secs(5))?;
    /// assert_eq!(writer.metrics().dropped, 0);
    /// # reader.stop_blocking(std::time::Duration::from_secs(5))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_copy_blocking(&self, data: &[u8]) -> Result<(), WriteError<()>> {
        if data.is_empty() {
            return Ok(());
        }
        let need = crate::writer::queue::frame_len_of(data.len());
        self.block_until_pushed(data, need, |queue, data| {
            queue.push_copy(data).map_err(|r| (r, data))
        })
        .map_err(|e| match e {
            WriteError::BufferFull(_) => WriteError::BufferFull(()),
            WriteError::Stopped(_) => WriteError::Stopped(()),
        })
    }

    /// Tries `push` until it takes `data`, blocking this thread on the
    /// Writer's runtime for room for a `need`-byte frame between tries (see
    /// [`send_blocking`](Self::send_blocking) for where it cannot wait).
    fn block_until_pushed<T>(
        &self,
        mut data: T,
        need: usize,
        push: impl Fn(&crate::writer::queue::Queue, T) -> Result<(), (Refused, T)>,
    ) -> Result<(), WriteError<T>> {
        let queue = &self.inner.queue;
        loop {
            match push(queue, data) {
                Ok(()) => return Ok(()),
                Err((Refused::Closed, back)) => return Err(WriteError::Stopped(back)),
                Err((Refused::Full, back)) => data = back,
            }
            // The message stays on this thread; only the wait runs on the
            // Writer's runtime.
            let inner: Arc<WriterInner> = Arc::clone(&self.inner);
            let waited =
                crate::runtime::block_on(
                    &self.handle,
                    async move { inner.queue.wait_room(need).await },
                );
            match waited {
                Ok(()) => {}
                Err(StopError::WouldDeadlock) => {
                    return push(queue, data).map_err(|(r, back)| {
                        if r == Refused::Full {
                            self.inner.counters.dropped.fetch_add(1, Relaxed);
                            WriteError::BufferFull(back)
                        } else {
                            WriteError::Stopped(back)
                        }
                    });
                }
                Err(_) => return Err(WriteError::Stopped(data)),
            }
        }
    }
}
