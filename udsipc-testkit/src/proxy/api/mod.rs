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

mod http;
mod state;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinSet;

pub use state::{ApiError, ProxyDefaults, SharedSink};

use super::ProxyStats;
use super::spec::FaultSpec;
use state::State;

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

    /// Serves the HTTP API on `addr` until [`ApiServer::stop`].
    pub async fn serve(&self, addr: &ApiAddr) -> io::Result<ApiServer> {
        let (stop, stopped) = oneshot::channel();
        let (listener, local_addr, path) = match addr {
            ApiAddr::Tcp(a) => {
                let listener = tokio::net::TcpListener::bind(a.as_str()).await?;
                let local = listener.local_addr()?.to_string();
                (Listener::Tcp(listener), local, None)
            }
            ApiAddr::Unix(path) => {
                let listener = super::listener::bind(path)?;
                let local = path.display().to_string();
                (Listener::Unix(listener), local, Some(path.clone()))
            }
        };
        let task = tokio::spawn(accept_loop(stopped, self.state.clone(), listener, path));
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

fn serve_connection<S>(connections: &mut JoinSet<()>, state: &Arc<Mutex<State>>, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = state.clone();
    connections.spawn(async move {
        let service = service_fn(move |req| http::handle(state.clone(), req));
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
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
    path: Option<PathBuf>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = accept(&listener) => match accepted {
                Ok(Stream::Tcp(s)) => serve_connection(&mut connections, &state, s),
                Ok(Stream::Unix(s)) => serve_connection(&mut connections, &state, s),
                // Out of descriptors, most likely: pause rather than spin.
                Err(_) => tokio::time::sleep(super::listener::ACCEPT_BACKOFF_MIN).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    if let Some(path) = path {
        let _ = std::fs::remove_file(path);
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}
