//! A fault-injecting Unix socket proxy.
//!
//! [`FaultProxy`] listens on one Unix stream socket path and connects every
//! client it accepts to an upstream path, forwarding bytes both ways. Faults
//! ([`Fault`] values: the built-in ones below or closures via [`fault_fn`])
//! act on either direction; with [`Framing::Uvarint`] they see each chunk
//! mapped onto the udsipc framing, so they can aim at frame N. Random
//! choices come from a seed ([`FaultRng`]), and every fault that fires is
//! recorded in the event log ([`FaultProxy::events`]). The [`registry`]
//! names every built-in fault (the `--fault` grammar, [`spec`], and the
//! toxiproxy-compatible control API, [`api`], derive from it).
//!
//! Inside: `listener` binds and accepts, `conn` runs each
//! connection (ingress, plan, egress, accounting), `faults` holds the
//! built-in faults.
//!
//! ```text
//!   writer ──▶ [ listen path | faults | ] ──▶ upstream path (reader)
//!          ◀──                            ◀──
//! ```
//!
//! It speaks plain bytes, so it works in front of any Unix-socket service,
//! Go or Rust; only frame-aimed faults assume the varint framing.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use udsipc_testkit::proxy::{DropAfterFrames, FaultProxy, Fragment};
//!
//! let dir = tempfile::tempdir()?;
//! let (front, back) = (dir.path().join("front.sock"), dir.path().join("back.sock"));
//! let upstream = tokio::net::UnixListener::bind(&back)?;
//! let proxy = FaultProxy::builder(&front, &back)
//!     .seed(7)
//!     .fault(Fragment::new(1, 3))
//!     .fault(DropAfterFrames::new(2))
//!     .start()
//!     .await?;
//!
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let mut client = tokio::net::UnixStream::connect(&front).await?;
//! client.write_all(&[1, b'a', 1, b'b', 1, b'c']).await?; // three frames
//! let (mut server, _) = upstream.accept().await?;
//! let mut got = Vec::new();
//! server.read_to_end(&mut got).await?; // the proxy cut after two frames
//! assert_eq!(got, [1, b'a', 1, b'b']);
//! assert!(proxy.events().iter().any(|e| e.fault == "drop-after-frames"));
//! proxy.stop().await;
//! # Ok(())
//! # }
//! ```

pub mod api;
mod conn;
mod events;
mod fault;
mod faults;
mod listener;
pub mod registry;
mod rng;
pub mod spec;
mod tracker;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

pub use events::{DEFAULT_EVENT_CAPACITY, EventSink, FaultEvent};
pub use fault::{Chunk, CutMode, Direction, Fault, FnFault, Verdict, fault_fn};
pub use faults::{
    Bandwidth, CorruptBody, CorruptPrefix, DropAfterBytes, DropAfterFrames, Duplicate, Fragment,
    Latency, PrefixRewrite, Reset, ResetPeer, SlowClose, Stall, Swap, Timeout, Toxicity,
};
pub use rng::FaultRng;
pub use tracker::{Part, Segment};

use conn::{PhaseTx, Reason};
use events::EventLog;

/// A fault installed on one direction of a proxy.
pub(crate) struct Installed {
    pub(crate) id: u64,
    /// When it was added: a [`Fault::cut_after`] counts from here for
    /// connections older than the fault.
    pub(crate) added: Instant,
    pub(crate) fault: Box<dyn Fault>,
}

type FaultList = Mutex<Vec<Installed>>;

/// How the proxy reads the bytes it forwards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Framing {
    /// udsipc's framing: a uvarint length, then that many bytes. Faults can
    /// aim at frame N and events say which frame they hit.
    #[default]
    Uvarint,
    /// Any byte stream (HTTP, gRPC, a database protocol...): chunks map onto
    /// no frames, so only byte-level faults mean anything.
    None,
}

/// A time during which the proxy is not listening: its socket file is
/// removed, so new connections fail (`refuse` in the CLI). By default the
/// connections open when it begins are cut too, as when a service restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    after: Duration,
    duration: Option<Duration>,
    cut_connections: bool,
}

impl Outage {
    /// Stop listening `after` the proxy started, for `duration`.
    pub fn new(after: Duration, duration: Duration) -> Self {
        Self {
            after,
            duration: Some(duration),
            cut_connections: true,
        }
    }

    /// Leave open connections alone; only new ones fail.
    pub fn keep_connections(mut self) -> Self {
        self.cut_connections = false;
        self
    }
}

/// Byte and connection counters of a running proxy.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyStats {
    /// Client connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub active: u64,
    /// Accepted clients closed because the upstream could not be reached.
    pub upstream_unreachable: u64,
    /// Bytes written to the upstream.
    pub bytes_to_upstream: u64,
    /// Bytes written to clients.
    pub bytes_to_client: u64,
    /// Events dropped from the log (the oldest) to keep it within its
    /// capacity ([`FaultProxyBuilder::event_capacity`]).
    pub events_dropped: u64,
}

pub(crate) struct Shared {
    pub(crate) start: Instant,
    pub(crate) seed: u64,
    pub(crate) framing: Framing,
    forward: Arc<FaultList>,
    backward: Arc<FaultList>,
    next_fault: AtomicU64,
    pub(crate) log: EventLog,
    pub(crate) conns: Mutex<HashMap<u64, PhaseTx>>,
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    /// Bumped by every outage that cuts connections.
    pub(crate) outages: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) upstream_unreachable: AtomicU64,
    to_upstream: AtomicU64,
    to_client: AtomicU64,
}

impl Shared {
    pub(crate) fn faults(&self, direction: Direction) -> &FaultList {
        match direction {
            Direction::ToUpstream => &self.forward,
            Direction::ToClient => &self.backward,
        }
    }

    pub(crate) fn count_forwarded(&self, direction: Direction, n: usize) {
        let counter = match direction {
            Direction::ToUpstream => &self.to_upstream,
            Direction::ToClient => &self.to_client,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn add(&self, direction: Direction, fault: Box<dyn Fault>) -> u64 {
        let id = self.next_fault.fetch_add(1, Ordering::Relaxed);
        lock(self.faults(direction)).push(Installed {
            id,
            added: Instant::now(),
            fault,
        });
        id
    }

    pub(crate) fn close_all(&self, reason: Reason) {
        for phase in lock(&self.conns).values() {
            conn::close(phase, true, true, reason);
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Configures a [`FaultProxy`]; see [`FaultProxy::builder`].
pub struct FaultProxyBuilder {
    listen: PathBuf,
    upstream: PathBuf,
    seed: u64,
    framing: Framing,
    forward: Vec<Box<dyn Fault>>,
    backward: Vec<Box<dyn Fault>>,
    outages: Vec<Outage>,
    sink: Option<EventSink>,
    name: Option<String>,
    event_capacity: usize,
}

impl FaultProxyBuilder {
    /// How many events the log keeps (default
    /// [`DEFAULT_EVENT_CAPACITY`]): past it the oldest are dropped and
    /// counted in [`ProxyStats::events_dropped`], so a long run's log stays
    /// bounded. The [`on_event`](Self::on_event) sink sees every event.
    pub fn event_capacity(mut self, events: usize) -> Self {
        self.event_capacity = events;
        self
    }

    /// Names the proxy: every event carries the name (`proxy` in its JSON).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The seed of every random choice (default 0). The same seed and the
    /// same chunks give the same faults.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// How the forwarded bytes are framed (default [`Framing::Uvarint`]).
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// Adds a fault on the client → upstream direction, for the proxy's
    /// whole life. Faults are asked in the order they were added.
    pub fn fault(mut self, fault: impl Fault) -> Self {
        self.forward.push(Box::new(fault));
        self
    }

    /// Adds a fault on the upstream → client direction.
    pub fn reverse_fault(mut self, fault: impl Fault) -> Self {
        self.backward.push(Box::new(fault));
        self
    }

    /// [`FaultProxyBuilder::fault`] for a boxed fault.
    pub fn boxed_fault(mut self, fault: Box<dyn Fault>) -> Self {
        self.forward.push(fault);
        self
    }

    /// [`FaultProxyBuilder::reverse_fault`] for a boxed fault.
    pub fn boxed_reverse_fault(mut self, fault: Box<dyn Fault>) -> Self {
        self.backward.push(fault);
        self
    }

    /// Schedules an outage (the listener goes away for a while).
    pub fn outage(mut self, outage: Outage) -> Self {
        self.outages.push(outage);
        self
    }

    /// Calls `sink` with each event as it fires, besides logging it.
    pub fn on_event(mut self, sink: impl Fn(&FaultEvent) + Send + Sync + 'static) -> Self {
        self.sink = Some(Box::new(sink));
        self
    }

    /// Binds the listen path and starts proxying. Must be called within a
    /// tokio runtime (with the time driver enabled).
    ///
    /// Fails if the listen path exists and is not a socket, or is a socket
    /// something still listens on; a stale socket file is replaced.
    pub async fn start(self) -> io::Result<FaultProxy> {
        let listener = listener::bind(&self.listen)?;
        let id = listener::FileId::of(&self.listen);
        let shared = Arc::new(Shared {
            start: Instant::now(),
            seed: self.seed,
            framing: self.framing,
            forward: Arc::new(Mutex::new(Vec::new())),
            backward: Arc::new(Mutex::new(Vec::new())),
            next_fault: AtomicU64::new(1),
            log: EventLog::new(self.sink, self.name, self.event_capacity),
            conns: Mutex::new(HashMap::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            outages: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            upstream_unreachable: AtomicU64::new(0),
            to_upstream: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
        });
        for fault in self.forward {
            shared.add(Direction::ToUpstream, fault);
        }
        for fault in self.backward {
            shared.add(Direction::ToClient, fault);
        }
        let (control, rx) = mpsc::unbounded_channel();
        for outage in self.outages {
            let control = control.clone();
            tokio::spawn(async move {
                tokio::time::sleep(outage.after).await;
                let _ = control.send(Control::Outage(outage, 0));
            });
        }
        let task = tokio::spawn(listener::accept_loop(
            shared.clone(),
            listener,
            self.listen.clone(),
            self.upstream,
            rx,
            id,
        ));
        Ok(FaultProxy {
            shared,
            control,
            task: Mutex::new(Some(task)),
            listen: self.listen,
        })
    }
}

pub(crate) enum Control {
    /// An outage begins; its id (0: one only a resume or its end stops).
    Outage(Outage, u64),
    /// The outage with this id is over early (its guard was dropped).
    EndOutage(u64),
    /// Listen again now, if an outage removed the listener.
    Resume,
    Stop,
}

/// A running fault proxy; see the [module docs](self).
pub struct FaultProxy {
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<Control>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    listen: PathBuf,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("listen", &self.listen)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// A proxy that will listen on `listen` and forward to `upstream`.
    pub fn builder(listen: impl AsRef<Path>, upstream: impl AsRef<Path>) -> FaultProxyBuilder {
        FaultProxyBuilder {
            listen: listen.as_ref().to_path_buf(),
            upstream: upstream.as_ref().to_path_buf(),
            seed: 0,
            framing: Framing::Uvarint,
            forward: Vec::new(),
            backward: Vec::new(),
            outages: Vec::new(),
            sink: None,
            name: None,
            event_capacity: DEFAULT_EVENT_CAPACITY,
        }
    }

    /// The path clients connect to.
    pub fn listen_path(&self) -> &Path {
        &self.listen
    }

    /// The events kept so far (the newest, up to the log's capacity), in
    /// firing order; [`ProxyStats::events_dropped`] counts the older ones.
    pub fn events(&self) -> Vec<FaultEvent> {
        self.shared.log.snapshot()
    }

    /// Every event that fired so far, kept or dropped.
    pub fn events_fired(&self) -> u64 {
        self.shared.log.fired()
    }

    /// Counters.
    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            connections: s.connections.load(Ordering::Relaxed),
            active: lock(&s.conns).len() as u64,
            upstream_unreachable: s.upstream_unreachable.load(Ordering::Relaxed),
            bytes_to_upstream: s.to_upstream.load(Ordering::Relaxed),
            bytes_to_client: s.to_client.load(Ordering::Relaxed),
            events_dropped: s.log.dropped(),
        }
    }

    /// Adds a fault on the client → upstream direction until the returned
    /// guard is dropped.
    pub fn add_fault(&self, fault: impl Fault) -> FaultGuard {
        let id = self.shared.add(Direction::ToUpstream, Box::new(fault));
        FaultGuard {
            list: Arc::downgrade(&self.shared.forward),
            id,
        }
    }

    /// Adds a fault on the upstream → client direction until the returned
    /// guard is dropped.
    pub fn add_reverse_fault(&self, fault: impl Fault) -> FaultGuard {
        let id = self.shared.add(Direction::ToClient, Box::new(fault));
        FaultGuard {
            list: Arc::downgrade(&self.shared.backward),
            id,
        }
    }

    /// Adds a boxed fault on `direction` until the returned guard is dropped.
    pub fn add_boxed_fault(&self, direction: Direction, fault: Box<dyn Fault>) -> FaultGuard {
        let id = self.shared.add(direction, fault);
        let list = match direction {
            Direction::ToUpstream => &self.shared.forward,
            Direction::ToClient => &self.shared.backward,
        };
        FaultGuard {
            list: Arc::downgrade(list),
            id,
        }
    }

    /// Schedules `outage` to begin its `after` from now, for the proxy's
    /// whole life; [`FaultProxy::add_outage`] can be taken back.
    pub fn schedule_outage(&self, outage: Outage) {
        self.add_outage(outage).keep();
    }

    /// Schedules `outage` to begin its `after` from now, until the returned
    /// guard is dropped: then it never begins, or, if it has, it ends (the
    /// proxy listens again) at once.
    pub fn add_outage(&self, outage: Outage) -> OutageGuard {
        let id = self.shared.next_fault.fetch_add(1, Ordering::Relaxed);
        let control = self.control.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(outage.after).await;
            let _ = control.send(Control::Outage(outage, id));
        });
        OutageGuard {
            timer: timer.abort_handle(),
            control: Some(self.control.clone()),
            id,
        }
    }

    /// Starts an outage now: stop listening for `duration` (cutting the
    /// open connections unless `outage` says to keep them).
    pub fn outage_now(&self, duration: Duration) {
        let _ = self
            .control
            .send(Control::Outage(Outage::new(Duration::ZERO, duration), 0));
    }

    /// Stops listening and cuts every open connection until
    /// [`FaultProxy::enable`] (toxiproxy's `enabled: false`, and its `down`).
    pub fn disable(&self) {
        let mut outage = Outage::new(Duration::ZERO, Duration::ZERO);
        outage.duration = None;
        let _ = self.control.send(Control::Outage(outage, 0));
    }

    /// Listens again after [`FaultProxy::disable`] (or ends an outage early).
    pub fn enable(&self) {
        let _ = self.control.send(Control::Resume);
    }

    /// Stops listening, closes every connection (logging what each loses)
    /// and removes the socket file. Idempotent.
    pub async fn stop(&self) {
        let _ = self.control.send(Control::Stop);
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Stop);
    }
}

/// Takes its outage back when dropped: a pending one never begins, one
/// going on ends at once.
#[must_use = "dropping the guard takes the outage back at once"]
#[derive(Debug)]
pub struct OutageGuard {
    timer: tokio::task::AbortHandle,
    /// `None` once kept.
    control: Option<mpsc::UnboundedSender<Control>>,
    id: u64,
}

impl OutageGuard {
    /// Keeps the outage scheduled whatever happens to the guard.
    pub fn keep(mut self) {
        self.control = None;
    }
}

impl Drop for OutageGuard {
    fn drop(&mut self) {
        if let Some(control) = self.control.take() {
            self.timer.abort();
            let _ = control.send(Control::EndOutage(self.id));
        }
    }
}

/// Removes its fault from the proxy when dropped.
#[must_use = "dropping the guard removes the fault at once"]
#[derive(Debug)]
pub struct FaultGuard {
    list: Weak<FaultList>,
    id: u64,
}

impl FaultGuard {
    /// Keeps the fault for the proxy's whole life.
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for FaultGuard {
    fn drop(&mut self) {
        if let Some(list) = self.list.upgrade() {
            lock(&list).retain(|f| f.id != self.id);
        }
    }
}
