//! A control API that speaks toxiproxy's HTTP API, so toxiproxy's client
//! libraries drive [`FaultProxy`](super::FaultProxy)s unchanged: the same
//! endpoints, JSON shapes and status codes, with Unix socket paths where
//! toxiproxy has `host:port`.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /proxies`, `POST /proxies` | list, create (`name`, `listen`, `upstream`, `enabled`) |
//! | `GET`, `POST`/`PATCH`, `DELETE /proxies/{name}` | show, update (move, enable, disable), delete |
//! | `GET /proxies/{name}/toxics`, `POST` | list, add (`name`, `type`, `stream`, `toxicity`, `attributes`) |
//! | `GET`, `POST`/`PATCH`, `DELETE /proxies/{name}/toxics/{toxic}` | show, update, remove |
//! | `POST /reset` | every proxy enabled, every toxic removed |
//! | `POST /populate` | create or replace a list of proxies |
//! | `GET /version` | `{"version": ...}` |
//!
//! Toxic types are the [registry](super::registry)'s: toxiproxy's own
//! (`latency`, `bandwidth`, `slow_close`, `timeout`, `reset_peer`, `slicer`,
//! `limit_data`) and ours (`drop_after_frames`, `corrupt_prefix`,
//! `corrupt_body`, `stall`, `refuse`, `reset`, `duplicate`, `swap`).
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use udsipc_testkit::proxy::api::{ApiAddr, ControlApi, ProxyDefaults};
//! use udsipc_testkit::proxy::Framing;
//! let api = ControlApi::new(ProxyDefaults { seed: 1, framing: Framing::Uvarint, sink: None });
//! let server = api.serve(&ApiAddr::Tcp("127.0.0.1:8474".into())).await?;
//! // ... a toxiproxy client now talks to 127.0.0.1:8474 ...
//! server.stop().await;
//! api.stop_all().await;
//! # Ok(()) }
//! ```
//!
//! # Who can drive it
//!
//! Like toxiproxy's, the API has no authentication: whoever reaches it
//! makes the proxy process create sockets, remove stale ones and connect
//! wherever that process may. So:
//!
//! - a TCP API binds a loopback address only (other hosts never reach it),
//!   but every local user does: prefer a Unix socket;
//! - a Unix-socket API's file is `0600` by default
//!   ([`ServeOptions::socket_mode`]): only its owner (and root) connect,
//!   and a connection that raced the `chmod` is checked against the mode;
//! - on a Unix-socket API the caller is known (`SO_PEERCRED`): a caller
//!   other than root or the proxy's own user may only name a `listen` path
//!   in a directory they can write (and replace no stale socket they could
//!   not remove themselves) and an `upstream` socket they could connect to
//!   (403 otherwise).
//!
//! Every connection is bounded: the request header must arrive within
//! [`ServeOptions::header_timeout`] (5 s; also how long an idle kept-alive
//! connection stays), the body within 10 s and 1 MiB (counted while it is
//! read, chunked or not: a larger one gets 413 at once), and past
//! [`ServeOptions::max_connections`] (256) a new connection closes the
//! oldest one.

mod access;
mod http;
mod state;

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Mutex, oneshot};
use tokio::task::{AbortHandle, JoinSet};

pub use state::{ApiError, ProxyDefaults, SharedSink};

use super::ProxyStats;
use super::listener::{FileId, chmod_ours, remove_if_ours};
use super::spec::FaultSpec;
use access::Caller;
use state::State;

/// Limits of an API server; [`ServeOptions::default`] lists the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    header_timeout: Duration,
    max_connections: usize,
    socket_mode: u32,
}

impl Default for ServeOptions {
    /// A header within 5 s, 256 connections, a socket file of mode `0600`.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(5),
            max_connections: 256,
            socket_mode: 0o600,
        }
    }
}

impl ServeOptions {
    /// How long a connection may take to send a request's header, counted
    /// from when the server waits for it (so also how long an idle
    /// kept-alive connection stays open). Default 5 s.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// How many connections may be open at once; one more closes the
    /// oldest (at least 1). Default 256.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// The mode of a Unix-socket API's file (connecting needs write
    /// permission on it). Default `0600`: its owner only.
    pub fn socket_mode(mut self, mode: u32) -> Self {
        self.socket_mode = mode & 0o777;
        self
    }
}

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAddr {
    /// A TCP address (`127.0.0.1:8474`, as toxiproxy's clients expect).
    Tcp(String),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl std::str::FromStr for ApiAddr {
    type Err = std::convert::Infallible;

    /// A path (anything with a `/`) is a Unix socket; anything else is
    /// `host:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s.contains('/') {
            Self::Unix(PathBuf::from(s))
        } else {
            Self::Tcp(s.to_owned())
        })
    }
}

/// The proxies an API manages; cheap to clone (shared).
#[derive(Clone)]
pub struct ControlApi {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for ControlApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlApi").finish_non_exhaustive()
    }
}

/// A running API server; [`ApiServer::stop`] ends it.
#[derive(Debug)]
pub struct ApiServer {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    /// The address it listens on (the port chosen, for `host:0`).
    pub local_addr: String,
}

impl ApiServer {
    /// Stops accepting requests and waits for those in progress.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl ControlApi {
    /// An API with no proxies yet.
    pub fn new(defaults: ProxyDefaults) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::new(defaults))),
        }
    }

    /// Creates a proxy, as `POST /proxies` does.
    pub async fn create_proxy(
        &self,
        name: &str,
        listen: &str,
        upstream: &str,
    ) -> Result<(), ApiError> {
        let mut state = self.state.lock().await;
        state
            .create_proxy(
                name.to_owned(),
                listen.to_owned(),
                upstream.to_owned(),
                true,
            )
            .await
            .map(|_| ())
    }

    /// Adds a parsed `--fault` to proxy `proxy` as a toxic named `name`.
    pub async fn add_spec(&self, proxy: &str, name: &str, spec: FaultSpec) -> Result<(), ApiError> {
        self.state
            .lock()
            .await
            .add_spec(proxy, name.to_owned(), spec)
    }

    /// Stops every proxy; returns the summed counters and the number of
    /// events of every proxy the API ran.
    pub async fn stop_all(&self) -> (ProxyStats, usize) {
        self.state.lock().await.stop_all().await
    }

    /// Serves the HTTP API on `addr` until [`ApiServer::stop`], with the
    /// default [`ServeOptions`].
    pub async fn serve(&self, addr: &ApiAddr) -> io::Result<ApiServer> {
        self.serve_with(addr, ServeOptions::default()).await
    }

    /// Serves the HTTP API on `addr` until [`ApiServer::stop`].
    ///
    /// Refuses a TCP address that is not loopback (`127.0.0.1`, `::1`,
    /// `localhost`): the API gives its callers the proxy process's rights.
    pub async fn serve_with(&self, addr: &ApiAddr, options: ServeOptions) -> io::Result<ApiServer> {
        let (stop, stopped) = oneshot::channel();
        let (listener, local_addr, socket) = match addr {
            ApiAddr::Tcp(a) => {
                let listener = tokio::net::TcpListener::bind(a.as_str()).await?;
                let local = listener.local_addr()?;
                if !local.ip().is_loopback() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "the API may listen on a loopback address only (127.0.0.1, ::1), \
                             not {local}: it has no authentication"
                        ),
                    ));
                }
                (Listener::Tcp(listener), local.to_string(), None)
            }
            ApiAddr::Unix(path) => {
                let listener = super::listener::bind(path)?;
                let file = FileId::of(path);
                if let Err(e) = chmod_ours(path, file, options.socket_mode) {
                    remove_if_ours(path, file);
                    return Err(e);
                }
                let meta = std::fs::symlink_metadata(path)?;
                let socket = ApiSocket {
                    path: path.clone(),
                    file,
                    mode: options.socket_mode,
                    uid: meta.uid(),
                    gid: meta.gid(),
                };
                let local = path.display().to_string();
                (Listener::Unix(listener), local, Some(socket))
            }
        };
        let task = tokio::spawn(accept_loop(
            stopped,
            self.state.clone(),
            listener,
            socket,
            options,
        ));
        Ok(ApiServer {
            stop: Some(stop),
            task,
            local_addr,
        })
    }
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// A Unix-socket API's file: which one we bound, and who may connect.
struct ApiSocket {
    path: PathBuf,
    file: Option<FileId>,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// The open connections, oldest first.
struct Connections {
    tasks: JoinSet<()>,
    order: VecDeque<AbortHandle>,
    max: usize,
}

impl Connections {
    /// Serves one connection, closing the oldest first if there are
    /// already `max`.
    fn serve<S>(
        &mut self,
        state: &Arc<Mutex<State>>,
        options: &ServeOptions,
        caller: Option<Caller>,
        stream: S,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        while self.tasks.len() >= self.max && self.tasks.try_join_next().is_some() {}
        if self.tasks.len() >= self.max {
            // The oldest still open goes (it is closed when next polled;
            // until then the set may hold one more).
            while let Some(oldest) = self.order.pop_front() {
                if !oldest.is_finished() {
                    oldest.abort();
                    break;
                }
            }
        }
        if self.order.len() > 2 * self.max {
            self.order.retain(|h| !h.is_finished());
        }
        let state = state.clone();
        let header_timeout = options.header_timeout;
        let caller = caller.map(Arc::new);
        let handle = self.tasks.spawn(async move {
            let service = service_fn(move |req| http::handle(state.clone(), caller.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        self.order.push_back(handle);
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<Stream> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
    }
}

async fn accept_loop(
    mut stopped: oneshot::Receiver<()>,
    state: Arc<Mutex<State>>,
    listener: Listener,
    socket: Option<ApiSocket>,
    options: ServeOptions,
) {
    let mut connections = Connections {
        tasks: JoinSet::new(),
        order: VecDeque::new(),
        max: options.max_connections,
    };
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = accept(&listener) => match accepted {
                Ok(Stream::Tcp(s)) => connections.serve(&state, &options, None, s),
                Ok(Stream::Unix(s)) => {
                    let caller = Caller::of_peer(&s);
                    // Connected before the mode was set, and the mode would
                    // have kept them out: close.
                    let refused = socket.as_ref().zip(caller.as_ref()).is_some_and(|(f, c)| {
                        !c.may_connect_to_api(f.mode, f.uid, f.gid)
                    });
                    if !refused {
                        connections.serve(&state, &options, caller, s);
                    }
                }
                // Out of descriptors, most likely: pause rather than spin.
                Err(_) => tokio::time::sleep(super::listener::ACCEPT_BACKOFF_MIN).await,
            },
            Some(_) = connections.tasks.join_next(), if !connections.tasks.is_empty() => {}
        }
    }
    drop(listener);
    if let Some(socket) = socket {
        // Only our own socket: not a file someone put there since.
        remove_if_ours(&socket.path, socket.file);
    }
    connections.tasks.abort_all();
    while connections.tasks.join_next().await.is_some() {}
}
