//! What an operator looks at besides the stats line: the library's tracing
//! events on stderr (`RUST_LOG`), and `--metrics ADDR`, the counters served
//! in the Prometheus text format.
//!
//! This module owns the subscriber, the recorder and the scrape endpoint.
//! Subcommands only hand it snapshot functions (`Exporter::publish`):
//! nothing is recorded per message; each scrape publishes fresh snapshots,
//! then renders.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::CliError;

/// Installs a tracing subscriber writing to stderr when `RUST_LOG` is set
/// (e.g. `RUST_LOG=debug`, `RUST_LOG=udsipc=trace`); without it nothing is
/// installed and the library's events cost a disabled-callsite check.
/// A `RUST_LOG` that does not parse is reported on stderr and ignored.
pub(crate) fn init_tracing() {
    let Some(spec) = std::env::var_os("RUST_LOG") else {
        return;
    };
    if spec.is_empty() {
        return;
    }
    match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(filter) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .try_init();
        }
        Err(e) => eprintln!("warning: RUST_LOG ignored: {e}"),
    }
}

/// `--metrics ADDR`, shared by listen, send and proxy.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MetricsArgs {
    /// Serve the counters in the Prometheus text format on this TCP address
    /// (e.g. 127.0.0.1:9091; port 0 picks one), at /metrics; stderr gets
    /// `metrics on http://ADDR/metrics` once it is up
    #[arg(long = "metrics", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
}

/// Publishes one snapshot of some counters through the `metrics` facade.
pub(crate) type Publish = Box<dyn Fn() + Send + Sync>;

/// The running `--metrics` endpoint (or nothing, without `--metrics`).
#[derive(Clone, Default)]
pub(crate) struct Exporter {
    publishers: Arc<Mutex<Vec<Publish>>>,
    /// Whether an endpoint runs (otherwise snapshot functions are dropped).
    serving: bool,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    /// Starts the endpoint if `--metrics` was given (must run inside the
    /// tokio runtime), and prints `metrics on http://ADDR/metrics`.
    pub(crate) async fn start(args: &MetricsArgs) -> Result<Self, CliError> {
        let mut exporter = Self::default();
        if let Some(addr) = args.metrics {
            exporter.serving = true;
            let bound = exporter.serve(addr).await?;
            eprintln!("metrics on http://{bound}/metrics");
        }
        Ok(exporter)
    }

    /// Adds a snapshot function, called on every scrape.
    pub(crate) fn publish(&self, publish: impl Fn() + Send + Sync + 'static) {
        if self.serving {
            self.lock().push(Box::new(publish));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Publish>> {
        self.publishers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cfg(not(feature = "metrics"))]
    async fn serve(&self, _: SocketAddr) -> Result<SocketAddr, CliError> {
        Err(CliError::Usage(
            "--metrics: this udsipc was built without the `metrics` feature".to_owned(),
        ))
    }

    #[cfg(feature = "metrics")]
    async fn serve(&self, addr: SocketAddr) -> Result<SocketAddr, CliError> {
        prometheus::serve(self.clone(), addr).await
    }
}

/// Publishes a Reader's counters (`udsipc_reader_*`).
pub(crate) fn publish_reader(reader: &udsipc::Reader) {
    #[cfg(feature = "metrics")]
    reader.publish_metrics();
    #[cfg(not(feature = "metrics"))]
    let _ = reader;
}

/// Publishes a Writer's counters (`udsipc_writer_*`) and the messages
/// `send` queued (`udsipc_send_queued_total`).
pub(crate) fn publish_writer(metrics: udsipc::WriterMetrics, queued: u64, socket: &str) {
    #[cfg(feature = "metrics")]
    {
        metrics.publish(socket);
        let labels = [(udsipc::metrics_export::SOCKET_LABEL, socket.to_owned())];
        metrics::counter!("udsipc_send_queued_total", &labels).absolute(queued);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (metrics, queued, socket);
}

/// The proxy's counters, as `udsipc_proxy_*` series: (name, is a gauge,
/// value).
pub(crate) type ProxySeries = [(&'static str, bool, u64)];

/// Publishes the proxy's counters.
pub(crate) fn publish_proxy(series: &ProxySeries, socket: &str) {
    #[cfg(feature = "metrics")]
    for &(name, gauge, value) in series {
        let labels = [("socket", socket.to_owned())];
        if gauge {
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!(name, &labels).set(value as f64);
        } else {
            metrics::counter!(name, &labels).absolute(value);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (series, socket);
}

#[cfg(feature = "metrics")]
mod prometheus {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::time::Duration;

    use http_body_util::Full;
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
    use tokio::net::TcpListener;

    use super::{CliError, Exporter};

    /// How long one scrape connection may take, whatever the client does.
    const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

    /// Installs the Prometheus recorder as the global one, binds `addr`
    /// and serves scrapes until the process ends; returns the bound address.
    pub(super) async fn serve(
        exporter: Exporter,
        addr: SocketAddr,
    ) -> Result<SocketAddr, CliError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::Failed(format!("--metrics: cannot listen on {addr}: {e}")))?;
        let bound = listener.local_addr().unwrap_or(addr);
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder)
            .map_err(|e| CliError::Failed(format!("--metrics: {e}")))?;
        udsipc::metrics_export::describe();
        tokio::spawn(accept(listener, exporter, handle));
        Ok(bound)
    }

    async fn accept(listener: TcpListener, exporter: Exporter, handle: PrometheusHandle) {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: do not spin.
                    eprintln!("warning: --metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (exporter, handle) = (exporter.clone(), handle.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let response = respond(&exporter, &handle, &req);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            });
        }
    }

    fn respond(
        exporter: &Exporter,
        handle: &PrometheusHandle,
        req: &Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        let (status, kind, body) = match req.uri().path() {
            "/metrics" | "/" => {
                for publish in exporter.lock().iter() {
                    publish();
                }
                (
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    handle.render(),
                )
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found: the counters are at /metrics\n".to_owned(),
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(kind) = kind.parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, kind);
        }
        response
    }
}
