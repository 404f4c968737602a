//! The Writer as a `futures::Sink<Bytes>` (feature `futures`), so any
//! `Stream` can be forwarded into it with backpressure
//! (`stream.forward(writer.into_sink())`).
//!
//! This module owns the adapter's one-message buffer and its pending waits;
//! it reaches the queue only through the Writer's push and `wait_room` and stops the
//! Writer only through its `stop`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use futures_sink::Sink;

use super::queue::{Body, frame_len_of};
use super::send::Payload;
use super::{Writer, WriterInner};
use crate::error::{StopError, WriteError};

type Wait = Pin<Box<dyn Future<Output = bool> + Send>>;
type Closing = Pin<Box<dyn Future<Output = Result<(), StopError>> + Send>>;

/// Why the [`WriterSink`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The Writer is stopping or stopped; the message is handed back.
    #[error("writer is stopped")]
    Stopped(Bytes),
    /// Closing the sink stopped the Writer, and the stop did not finish
    /// cleanly (for example its deadline, the Writer's
    /// [`linger`](crate::WriterBuilder::linger), passed with messages left).
    #[error(transparent)]
    Stop(#[from] StopError),
    /// Misuse: `start_send` while an earlier message still waits for room
    /// (`poll_ready` was not called, or did not return `Ready(Ok)`). The
    /// message is handed back; the earlier one is kept.
    #[error("start_send without poll_ready: an earlier message still waits for room")]
    NotReady(Bytes),
}

/// A [`Writer`] as a `futures::Sink<Bytes>`: see [`Writer::into_sink`].
///
/// - `poll_ready` waits for room in the queue (backpressure, nothing
///   dropped, nothing counted in `dropped`);
/// - `start_send` queues the message (no copy);
/// - `poll_flush` resolves once every message given to the sink is in the
///   Writer's queue: the Writer delivers in the background, as with `send`;
/// - `poll_close` flushes, then stops the Writer with its
///   [`linger`](crate::WriterBuilder::linger) as the deadline, and resolves
///   once the queue is drained and read (or with [`SinkError::Stop`]).
///
/// Dropping the sink drops the Writer (which then lingers).
///
/// # Cancel safety
///
/// `SinkExt::send` and `feed` futures on this sink are cancel safe in the
/// sense of the `Sink` contract: a message handed to `start_send` is held
/// in the sink until the queue takes it, and a later `poll_flush`/
/// `poll_close` (or the next `poll_ready`) finishes queuing it.
pub struct WriterSink {
    writer: Writer,
    /// A message `start_send` accepted that the queue had no room for yet.
    held: Option<Bytes>,
    wait: Option<Wait>,
    closing: Option<Closing>,
}

impl std::fmt::Debug for WriterSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterSink")
            .field("writer", &self.writer)
            .field("held", &self.held.as_ref().map(Bytes::len))
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// This Writer as a `futures::Sink<Bytes>` (feature `futures`).
    ///
    /// ```
    /// use futures_util::{stream, StreamExt};
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("app.sock");
    /// let reader = udsipc::Reader::builder(&path).start(|_msg: &[u8]| Ok(()))?;
    /// let sink = udsipc::Writer::builder(&path).max_buffered_writes(8).start()?.into_sink();
    /// let messages = stream::iter(0..100u32).map(|i| Ok(bytes::Bytes::from(i.to_string())));
    /// messages.forward(sink).await?; // waits for room; closing drains and stops
    /// # reader.stop(std::time::Duration::from_secs(5)).await?;
    /// assert_eq!(reader.metrics().received, 100);
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_sink(self) -> WriterSink {
        WriterSink {
            writer: self,
            held: None,
            wait: None,
            closing: None,
        }
    }
}

impl WriterSink {
    /// The Writer underneath (for its metrics).
    pub fn get_ref(&self) -> &Writer {
        &self.writer
    }

    /// The Writer back, with the message the sink still holds if the queue
    /// had no room for it yet.
    pub fn into_inner(self) -> (Writer, Option<Bytes>) {
        (self.writer, self.held)
    }

    /// Moves the held message into the queue, waiting for room as needed
    /// (no wait is lost when this is dropped half-way: the message stays
    /// held, and the wait begun for it is polled again next time).
    fn poll_push_held(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SinkError>> {
        loop {
            if let Some(wait) = self.wait.as_mut() {
                ready!(wait.as_mut().poll(cx));
                self.wait = None;
            }
            let Some(msg) = self.held.take() else {
                return Poll::Ready(Ok(()));
            };
            let need = frame_len_of(msg.len());
            match self.writer.inner.push(Body::Owned(msg), false) {
                Err(WriteError::BufferFull(back)) => self.held = Some(Bytes::back(back)),
                Err(e) => return Poll::Ready(Err(SinkError::Stopped(Bytes::back(e.into_inner())))),
                Ok(()) => return Poll::Ready(Ok(())),
            }
            let inner: Arc<WriterInner> = Arc::clone(&self.writer.inner);
            self.wait = Some(Box::pin(async move {
                inner.queue.wait_room(1, need, None).await
            }));
        }
    }
}

impl Sink<Bytes> for WriterSink {
    type Error = SinkError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SinkError>> {
        self.get_mut().poll_push_held(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Bytes) -> Result<(), SinkError> {
        let this = self.get_mut();
        if this.held.is_some() {
            return Err(SinkError::NotReady(item));
        }
        // One try, without waiting (a waker that wakes nobody: the next
        // `poll_*` polls the wait again). Refused for want of room (a race
        // with a producer that does not wait), it is held.
        this.held = Some(item);
        match this.poll_push_held(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result,
            Poll::Pending => Ok(()),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SinkError>> {
        self.get_mut().poll_push_held(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SinkError>> {
        let this = self.get_mut();
        if this.closing.is_none() {
            ready!(this.poll_push_held(cx))?;
        }
        let inner = &this.writer.inner;
        let closing = this
            .closing
            .get_or_insert_with(|| Box::pin(Arc::clone(inner).stop(inner.opts.linger)));
        let result = ready!(closing.as_mut().poll(cx));
        // Closing again after this stops again: a no-op, `Ok` (the Writer
        // is stopped).
        this.closing = None;
        Poll::Ready(result.map_err(SinkError::from))
    }
}
