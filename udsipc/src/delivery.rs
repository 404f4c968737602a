//! The three ways messages leave a connection, behind one trait: a
//! synchronous handler on borrowed bytes, an async handler on owned bytes,
//! and a bounded stream ([`Incoming`]).
//!
//! Each way applies backpressure the same way: the connection reads nothing
//! more until what it holds has been handed over, so a slow consumer fills
//! the socket, then the Writer's queue, then the producers see `BufferFull`
//! or wait.
//!
//! This module owns handing messages over and counting them; reading,
//! deadlines and the connection's life belong to `connection`.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::runtime::RuntimeFlavor;
use tokio::sync::{mpsc, watch};

use crate::error::{HandlerError, ReaderError};
use crate::frame::{FrameError, Receiver};
use crate::lifecycle::{Phase, panic_message};
use crate::reader::{ConnectionInfo, ReaderInner};

/// A message with the connection it came on, owned: the body shares the
/// connection buffer's memory (no copy) and may be kept as long as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The message body.
    pub body: Bytes,
    /// Which connection it arrived on.
    pub connection: ConnectionInfo,
}

/// The synchronous handler type.
pub(crate) type SyncHandler =
    dyn Fn(&[u8], &ConnectionInfo) -> Result<(), HandlerError> + Send + Sync;

/// What a connection task hands its frames to.
pub(crate) trait Deliver: Send + Sync + 'static {
    /// Hands over every complete frame `conn.rx` holds, then returns `Ok`;
    /// `Err` ends the connection.
    fn deliver<'a>(
        &'a self,
        conn: &'a mut Conn,
    ) -> impl Future<Output = Result<(), Stop>> + Send + 'a;
}

/// Why delivery ended a connection.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The peer broke the framing rules.
    Protocol(FrameError),
    /// A forced stop, or the consumer went away: close quietly.
    Quiet,
}

/// The per-connection state delivery works on.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) rx: Receiver,
    pub(crate) info: ConnectionInfo,
    pub(crate) inner: Arc<ReaderInner>,
    pub(crate) phase: watch::Receiver<Phase>,
    pub(crate) flavor: RuntimeFlavor,
    /// Worker threads of the runtime the connection runs on.
    pub(crate) workers: usize,
}

/// Resolves once the phase is `Forced` (or its sender is gone).
pub(crate) async fn forced(phase: &mut watch::Receiver<Phase>) {
    loop {
        if *phase.borrow_and_update() == Phase::Forced {
            return;
        }
        if phase.changed().await.is_err() {
            return;
        }
    }
}

/// Counts and reports one handler outcome.
fn account(inner: &ReaderInner, result: Result<(), HandlerError>, received: &mut u64) {
    match result {
        Ok(()) => *received += 1,
        Err(e) => inner.report(ReaderError::Handler(e)),
    }
}

/// A handler call whose panic becomes a handler error.
fn call_sync(
    handler: &SyncHandler,
    body: &[u8],
    info: &ConnectionInfo,
) -> Result<(), HandlerError> {
    match catch_unwind(AssertUnwindSafe(|| handler(body, info))) {
        Ok(result) => result,
        Err(payload) => {
            Err(format!("handler panicked: {}", panic_message(payload.as_ref())).into())
        }
    }
}

/// The synchronous handler on borrowed bytes.
///
/// A handler may block, and must then hold back only its own connection
/// (which reads nothing more meanwhile: backpressure), never the others nor
/// a stop's deadline. Handler calls run inline on the tokio worker (no
/// thread hand-off, no allocation) as long as that leaves at least one
/// worker of the runtime free; when every other worker is already inside a
/// handler (one may be stuck), the call runs inside `block_in_place`, which
/// hands the worker's other tasks to a fresh thread first. On a
/// current-thread runtime calls run on the blocking pool.
pub(crate) struct SyncDelivery {
    pub(crate) handler: Arc<SyncHandler>,
}

impl SyncDelivery {
    fn run(
        handler: &SyncHandler,
        rx: &mut Receiver,
        info: &ConnectionInfo,
        inner: &ReaderInner,
    ) -> Result<(), Stop> {
        let mut received = 0;
        let result = loop {
            match rx.next_borrowed() {
                Ok(Some(body)) => account(inner, call_sync(handler, body, info), &mut received),
                Ok(None) => break Ok(()),
                Err(e) => break Err(Stop::Protocol(e)),
            }
        };
        if received > 0 {
            inner.counters.received.fetch_add(received, Relaxed);
        }
        result
    }
}

impl Deliver for SyncDelivery {
    async fn deliver(&self, conn: &mut Conn) -> Result<(), Stop> {
        match conn.rx.ready() {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => return Err(Stop::Protocol(e)),
        }
        match conn.flavor {
            RuntimeFlavor::CurrentThread => {
                let mut rx = std::mem::replace(&mut conn.rx, Receiver::placeholder());
                let handler = Arc::clone(&self.handler);
                let (info, inner) = (conn.info, Arc::clone(&conn.inner));
                let task = tokio::task::spawn_blocking(move || {
                    let result = Self::run(&*handler, &mut rx, &info, &inner);
                    (rx, result)
                });
                match task.await {
                    Ok((rx, result)) => {
                        conn.rx = rx;
                        result
                    }
                    // The runtime is shutting down: nothing left to serve.
                    Err(_) => Err(Stop::Quiet),
                }
            }
            _ => {
                let inline = InlineSlot::take(conn.workers);
                if inline.is_some() {
                    Self::run(&*self.handler, &mut conn.rx, &conn.info, &conn.inner)
                } else {
                    tokio::task::block_in_place(|| {
                        Self::run(&*self.handler, &mut conn.rx, &conn.info, &conn.inner)
                    })
                }
            }
        }
    }
}

/// Handler calls running inline on tokio workers, across every Reader of
/// the process.
static INLINE_CALLS: AtomicUsize = AtomicUsize::new(0);

/// The right to run a handler call inline: granted while fewer than
/// `workers - 1` calls run inline, so one worker always stays free.
struct InlineSlot;

impl InlineSlot {
    fn take(workers: usize) -> Option<Self> {
        if INLINE_CALLS.fetch_add(1, SeqCst) < workers.saturating_sub(1) {
            Some(Self)
        } else {
            INLINE_CALLS.fetch_sub(1, SeqCst);
            None
        }
    }
}

impl Drop for InlineSlot {
    fn drop(&mut self) {
        INLINE_CALLS.fetch_sub(1, SeqCst);
    }
}

/// The async handler on owned bytes: one message at a time per connection,
/// and no reading while its future is pending.
pub(crate) struct AsyncDelivery<F> {
    pub(crate) handler: F,
}

impl<F, Fut> Deliver for AsyncDelivery<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    async fn deliver(&self, conn: &mut Conn) -> Result<(), Stop> {
        loop {
            let body = match conn.rx.next_owned() {
                Ok(Some(body)) => body,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Stop::Protocol(e)),
            };
            let pending = std::pin::pin!((self.handler)(Message {
                body,
                connection: conn.info,
            }));
            let fut = CatchPanic { fut: pending };
            let result = tokio::select! {
                biased;
                () = forced(&mut conn.phase) => return Err(Stop::Quiet),
                r = fut => r,
            };
            let mut received = 0;
            account(&conn.inner, result, &mut received);
            if received > 0 {
                conn.inner.counters.received.fetch_add(received, Relaxed);
            }
        }
    }
}

/// A pinned future whose panic becomes a handler error.
struct CatchPanic<'a, Fut> {
    fut: Pin<&'a mut Fut>,
}

impl<Fut: Future<Output = Result<(), HandlerError>>> Future for CatchPanic<'_, Fut> {
    type Output = Result<(), HandlerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.fut.as_mut();
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(p) => p,
            Err(payload) => Poll::Ready(Err(format!(
                "handler panicked: {}",
                panic_message(payload.as_ref())
            )
            .into())),
        }
    }
}

/// The bounded stream: each message waits for room in the channel.
pub(crate) struct ChannelDelivery {
    pub(crate) tx: mpsc::Sender<Message>,
}

impl Deliver for ChannelDelivery {
    async fn deliver(&self, conn: &mut Conn) -> Result<(), Stop> {
        loop {
            match conn.rx.ready() {
                Ok(false) => return Ok(()),
                Ok(true) => {}
                Err(e) => return Err(Stop::Protocol(e)),
            }
            // Room first, then the message: a cancelled wait loses nothing.
            let permit = tokio::select! {
                biased;
                () = forced(&mut conn.phase) => return Err(Stop::Quiet),
                p = self.tx.reserve() => match p {
                    Ok(p) => p,
                    // The consumer dropped `Incoming`: nobody takes messages.
                    Err(_) => return Err(Stop::Quiet),
                },
            };
            match conn.rx.next_owned() {
                Ok(Some(body)) => {
                    permit.send(Message {
                        body,
                        connection: conn.info,
                    });
                    conn.inner.counters.received.fetch_add(1, Relaxed);
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(Stop::Protocol(e)),
            }
        }
    }
}

/// The messages of a Reader started with
/// [`ReaderBuilder::incoming`](crate::ReaderBuilder::incoming), in arrival
/// order per connection, with backpressure: while this stream is not read,
/// connections stop reading once its capacity is reached.
///
/// It ends (`None`) once the Reader has stopped and every connection has
/// handed over what it had. Dropping it while the Reader runs makes every
/// connection close at its next message (that message is lost; stop the
/// Reader first to lose nothing).
///
/// It implements [`futures_core::Stream`], and [`recv`](Self::recv) for use
/// without a stream combinator crate.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<Message>,
}

impl Incoming {
    pub(crate) fn new(rx: mpsc::Receiver<Message>) -> Self {
        Self { rx }
    }

    /// The next message; `None` once the Reader has stopped and drained.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is never lost by dropping this future.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// Polls for the next message (the `Stream` method, usable directly).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }

    /// The next message if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }
}

impl futures_core::Stream for Incoming {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}
