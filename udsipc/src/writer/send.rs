//! The Writer's sending API, on tokio `mpsc::Sender`'s model: one table of
//! ways in (see [`Writer`]'s docs), one [`Payload`] trait that decides by
//! the argument's type whether a message is copied (borrowed bytes) or
//! queued as it is (owned bytes), and one way each to wait for room:
//! async, blocking, bounded or not, with or without the message in hand
//! ([`Permit`], [`OwnedPermit`]).
//!
//! This module owns no state: it combines the queue's single push, its
//! held slots and its room gate, so it cannot disturb the writer task.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::queue::{Body, frame_len_of};
use super::{Writer, WriterInner};
use crate::error::{StopError, WriteError};

/// A message a [`Writer`] can queue: borrowed bytes are copied into the
/// queue (one copy, no allocation per small message), owned bytes are
/// queued as they are (no copy; messages up to 256 bytes are copied
/// anyway, which costs less than a queue entry of their own).
///
/// | argument | queued | handed back when refused |
/// |---|---|---|
/// | `&[u8]`, `&Vec<u8>`, `&[u8; N]`, `&str`, `&Bytes`, … (any `&T` where `T: AsRef<[u8]>`) | copied | `()`: the caller still holds them |
/// | [`Bytes`], `Vec<u8>`, `Box<[u8]>`, `String` | as they are | as [`Bytes`] |
///
/// Sealed: the table is the whole list.
// (Sealed by its hidden methods: they name the queue's `Body`, a type no
// other crate can name, so no other crate can implement them.)
//
// No lifetime parameter: with one (`Payload<'a> for &'a T`), the future of
// an `async fn` generic over it was never `Send` for borrowed bytes (the
// compiler cannot prove the impl for every pair of erased lifetimes), so
// `tokio::spawn` refused a task that awaited `send(&bytes)`.
pub trait Payload: Sized {
    /// What a refusal hands back: `()` for borrowed bytes, the owned ones.
    type Back;
    #[doc(hidden)]
    fn into_body<'a>(self) -> Body<'a>
    where
        Self: 'a;
    #[doc(hidden)]
    fn back(body: Body<'_>) -> Self::Back;
}

impl<T: AsRef<[u8]> + ?Sized> Payload for &T {
    /// Nothing: the caller still holds the bytes (and an error that
    /// borrows nothing goes through `?` into any error type).
    type Back = ();
    fn into_body<'a>(self) -> Body<'a>
    where
        Self: 'a,
    {
        Body::Borrowed(self.as_ref())
    }
    fn back(_: Body<'_>) {}
}

macro_rules! owned_payload {
    ($($t:ty),*) => {$(
        impl Payload for $t {
            type Back = Bytes;
            fn into_body<'a>(self) -> Body<'a> {
                Body::Owned(Bytes::from(self))
            }
            fn back(body: Body<'_>) -> Bytes {
                match body {
                    Body::Owned(b) => b,
                    Body::Borrowed(b) => Bytes::copy_from_slice(b),
                }
            }
        }
    )*};
}
owned_payload!(Bytes, Vec<u8>, Box<[u8]>, String);

/// A slot in a Writer's queue, held for you by [`Writer::reserve`] or
/// [`Writer::try_reserve`]; spend it with [`Permit::send`] (tokio:
/// `mpsc::Permit`).
///
/// While the permit lives, the slot counts against
/// [`max_buffered_writes`](crate::WriterBuilder::max_buffered_writes): no
/// other producer can take it, so [`send`](Self::send) never fails with
/// `BufferFull`. Dropping the permit unused gives the slot back.
///
/// It borrows the Writer, or, from [`Writer::reserve_owned`], owns a
/// handle on its state: an [`OwnedPermit`].
#[derive(Debug)]
#[must_use = "a permit holds a queue slot until `send` is called or it is dropped"]
pub struct Permit<'w>(Option<Cow<'w, Arc<WriterInner>>>);

/// A [`Permit`] that owns a handle on the Writer's state, so it can be
/// moved into a task or kept in a struct (tokio: `mpsc::OwnedPermit`);
/// from [`Writer::reserve_owned`].
pub type OwnedPermit = Permit<'static>;

impl Permit<'_> {
    /// Queues `msg` into the held slot, without waiting. An empty message
    /// is accepted and not sent (the slot is given back).
    ///
    /// Errors: [`WriteError::Stopped`] (the message handed back) if the
    /// Writer began stopping after the permit was given. Never `BufferFull`.
    pub fn send<P: Payload>(mut self, msg: P) -> Result<(), WriteError<P::Back>> {
        let body = msg.into_body();
        if body.is_empty() {
            return Ok(()); // dropping the permit gives the slot back
        }
        let inner = self.0.take().expect("a permit is spent once");
        inner.push(body, true).map_err(|e| e.map(P::back))
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(inner) = &self.0 {
            inner.queue.release_reserved();
        }
    }
}

/// The output of a future that is never pending: a blocking form's run
/// of the async code it shares with its async form, whose waits block
/// (see [`Writer::wait_room`]).
pub(super) fn now<F: Future>(fut: F) -> F::Output {
    match std::pin::pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("a blocking wait is never pending"),
    }
}

impl WriterInner {
    /// After a push: a message queued into an empty queue is written now by
    /// this thread if the connection is idle (see `driver::write_now`), and
    /// only then is the task woken (its wake-up is not on the message's
    /// way), if it still has anything to do.
    pub(super) fn queued(&self, first: bool) {
        if first && super::driver::write_now(self) {
            self.queue.wake_writer();
        }
    }

    /// `e`, a refusal of `try_send`, counted in `dropped` if for want of
    /// room.
    fn dropped<T>(&self, e: WriteError<T>) -> WriteError<T> {
        if e.is_buffer_full() {
            self.counters.dropped.fetch_add(1, Relaxed);
        }
        e
    }

    /// Queues `body` once (an empty one is accepted and not sent), into
    /// a slot held by a [`Permit`] if `reserved` (see `Queue::push`).
    pub(super) fn push<'a>(
        &self,
        body: Body<'a>,
        reserved: bool,
    ) -> Result<(), WriteError<Body<'a>>> {
        if !body.is_empty() {
            let first = self.queue.push(body, reserved)?;
            self.queued(first);
        }
        Ok(())
    }
}

impl Writer {
    /// Queues `msg` without waiting (Go: `WriteMessage`; tokio:
    /// `Sender::try_send`). Empty messages are accepted and not sent, as in
    /// Go.
    ///
    /// Errors: [`WriteError::BufferFull`] when `max_buffered_writes`
    /// messages (or `max_buffered_bytes`) are queued, counted in `dropped`;
    /// [`WriteError::Stopped`] once the Writer is stopping. Both hand the
    /// message back.
    pub fn try_send<P: Payload>(&self, msg: P) -> Result<(), WriteError<P::Back>> {
        self.inner
            .push(msg.into_body(), false)
            .map_err(|e| self.inner.dropped(e).map(P::back))
    }

    /// Queues `msg`, waiting for room instead of dropping (tokio:
    /// `Sender::send`). Fails only once the Writer is stopping.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as tokio's `Sender::send`: if the future is dropped
    /// while it waits for room (a `select!` branch that lost), an owned
    /// message was not queued and is lost with the future (not counted
    /// anywhere); a borrowed one is still the caller's. To wait without
    /// that risk, use [`reserve`](Self::reserve) and spend the [`Permit`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("app.sock");
    /// let reader = udsipc::Reader::builder(&path).start(|_msg: &[u8]| Ok(()))?;
    /// let writer = udsipc::Writer::builder(&path).max_buffered_writes(16).start()?;
    /// let mut record = [0u8; 64];
    /// for i in 0..1_000u32 {
    ///     record[..4].copy_from_slice(&i.to_le_bytes());
    ///     writer.send(&record).await?; // copied; waits, never drops
    /// }
    /// writer.send(b"owned, not copied".to_vec()).await?;
    /// writer.stop(std::time::Duration::from_secs(5)).await?;
    /// assert_eq!(writer.metrics().dropped, 0);
    /// # reader.stop(std::time::Duration::from_secs(5)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send<P: Payload>(&self, msg: P) -> Result<(), WriteError<P::Back>> {
        self.send_until(msg, None, false).await
    }

    /// [`send`](Self::send) that waits for room at most `timeout` (tokio:
    /// `Sender::send_timeout`): [`WriteError::Timeout`] then, the message
    /// handed back and not counted as dropped. Cancel safety as `send`.
    pub async fn send_timeout<P: Payload>(
        &self,
        msg: P,
        timeout: Duration,
    ) -> Result<(), WriteError<P::Back>> {
        // A timeout too large for the clock never comes.
        self.send_until(msg, Instant::now().checked_add(timeout), false)
            .await
    }

    /// Queues `msg`, waiting for room until `deadline` (`None`: for ever):
    /// the one push-or-wait loop of the async and the blocking forms
    /// (`blocking`: see [`wait_room`](Self::wait_room)).
    pub(super) async fn send_until<P: Payload>(
        &self,
        msg: P,
        deadline: Option<Instant>,
        blocking: bool,
    ) -> Result<(), WriteError<P::Back>> {
        let mut body = msg.into_body();
        loop {
            match self.inner.push(body, false) {
                Err(WriteError::BufferFull(back)) => body = back,
                done => return done.map_err(|e| e.map(P::back)),
            }
            // The wait is boxed: this future is moved on every call, and
            // with the wait unboxed it would be several times larger. It is
            // allocated only when the producer must wait for room anyway.
            let need = frame_len_of(body.len());
            match Box::pin(self.wait_room(1, need, deadline, blocking)).await {
                Ok(true) => {}
                Ok(false) => return Err(WriteError::Timeout(P::back(body))),
                // It cannot wait: refused as by `try_send`.
                Err(StopError::WouldDeadlock) => {
                    return Err(self.inner.dropped(WriteError::BufferFull(P::back(body))));
                }
                Err(_) => return Err(WriteError::Stopped(P::back(body))),
            }
        }
    }

    /// Queues `msg`, blocking the calling thread while the queue is full,
    /// for synchronous code (tokio: `Sender::blocking_send`). Fails only
    /// once the Writer is stopping ([`WriteError::Stopped`], the message
    /// handed back). Nothing is counted as dropped while it waits.
    ///
    /// Never panics. On a current-thread tokio runtime's own thread, where
    /// waiting would deadlock, it does not wait: it behaves as
    /// [`try_send`](Self::try_send); use `send(..).await` there. Inside a
    /// multi-thread runtime it works (the thread is handed over to blocking
    /// for the wait). If the Writer's runtime was shut down it returns
    /// `Stopped`. A producer that must not wait for ever on a stopped
    /// reader uses [`send_timeout_blocking`](Self::send_timeout_blocking).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("app.sock");
    /// let reader = udsipc::Reader::builder(&path).start(|_msg: &[u8]| Ok(()))?;
    /// let writer = udsipc::Writer::builder(&path).max_buffered_writes(16).start()?;
    /// for i in 0..1_000u32 {
    ///     writer.send_blocking(&i.to_le_bytes())?; // waits, never drops
    /// }
    /// writer.stop_blocking(std::time::Duration::from_secs(5))?;
    /// assert_eq!(writer.metrics().dropped, 0);
    /// # reader.stop_blocking(std::time::Duration::from_secs(5))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_blocking<P: Payload>(&self, msg: P) -> Result<(), WriteError<P::Back>> {
        now(self.send_until(msg, None, true))
    }

    /// [`send_blocking`](Self::send_blocking) that waits for room at most
    /// `timeout`: [`WriteError::Timeout`] then, the message handed back and
    /// not counted as dropped. What a synchronous producer (a server writing
    /// telemetry) uses so that a stopped reader costs it at most `timeout`
    /// per message.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("nobody-reads.sock");
    /// use std::time::Duration;
    /// let writer = udsipc::Writer::builder(&path).max_buffered_writes(1).start()?;
    /// writer.send_timeout_blocking(b"queued", Duration::from_millis(10))?;
    /// let full = writer.send_timeout_blocking(b"no room", Duration::from_millis(10));
    /// assert!(matches!(full, Err(udsipc::WriteError::Timeout(()))));
    /// # let _ = writer.stop_blocking(Duration::ZERO);
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_timeout_blocking<P: Payload>(
        &self,
        msg: P,
        timeout: Duration,
    ) -> Result<(), WriteError<P::Back>> {
        // A timeout too large for the clock never comes.
        now(self.send_until(msg, Instant::now().checked_add(timeout), true))
    }

    /// The queue's `wait_room` (whether it did not time out), or, with
    /// `blocking`, the same wait for synchronous code: the calling thread
    /// blocks, keeping its message; only the wait runs on the Writer's
    /// runtime; and this future is then never pending (see [`now`]).
    pub(super) async fn wait_room(
        &self,
        count: usize,
        len: usize,
        deadline: Option<Instant>,
        blocking: bool,
    ) -> Result<bool, StopError> {
        let inner = Arc::clone(&self.inner);
        let wait = async move { inner.queue.wait_room(count, len, deadline).await };
        if !blocking {
            return Ok(wait.await);
        }
        crate::runtime::block_on(&self.handle, wait)
    }

    /// Waits until the queue has room for a message, holds one slot, and
    /// returns it as a [`Permit`] to queue one message without waiting and
    /// without the risk of `BufferFull` (tokio: `Sender::reserve`). Use it
    /// in `select!` loops, where [`send`](Self::send) would lose an owned
    /// message if another branch won.
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
            match self.try_reserve() {
                Err(WriteError::BufferFull(())) => {
                    self.inner.queue.wait_room(1, 1, None).await;
                }
                done => return done,
            }
        }
    }

    /// Holds a slot if the queue has room now, without waiting (tokio:
    /// `Sender::try_reserve`): [`WriteError::BufferFull`] if not (not
    /// counted as dropped: no message was involved),
    /// [`WriteError::Stopped`] once the Writer is stopping.
    pub fn try_reserve(&self) -> Result<Permit<'_>, WriteError<()>> {
        self.inner.queue.reserve_slot()?;
        Ok(Permit(Some(Cow::Borrowed(&self.inner))))
    }

    /// [`reserve`](Self::reserve) returning an [`OwnedPermit`], which does
    /// not borrow the Writer (tokio: `Sender::reserve_owned`): move it into
    /// a task, spend it there. Cancel safe, as `reserve`.
    pub async fn reserve_owned(&self) -> Result<OwnedPermit, WriteError<()>> {
        let mut held = self.reserve().await?;
        Ok(Permit(held.0.take().map(|w| Cow::Owned(w.into_owned()))))
    }
}
