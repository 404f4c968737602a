//! `udsipc proxy`: run a [`udsipc_testkit::proxy::FaultProxy`] in front
//! of any Unix-socket service and print each fault as it fires.

use std::path::PathBuf;

use serde::Serialize;

use super::observe::{self, Exporter, MetricsArgs};
use super::signals::Signals;
use super::{CliError, Outcome, stats_line};
use udsipc_testkit::proxy::api::{ApiAddr, ControlApi, ProxyDefaults, ServeOptions};
use udsipc_testkit::proxy::registry::valid_forms;
use udsipc_testkit::proxy::spec::FaultSpec;
use udsipc_testkit::proxy::{FaultEvent, FaultProxy, Framing, ProxyStats};

/// `--help` text; set on the [`Command`](super::Command) variant.
pub(crate) const LONG_ABOUT: &str = "\
Listen on --listen, connect every client to --upstream, forward bytes both ways, and inject \
faults into either direction (a SPEC's `down:` prefix aims at upstream -> client bytes).

stderr gets `proxying LISTEN -> UPSTREAM` once the socket is bound (wait for that line before \
connecting), one JSON line per fault that fires (its first key is `fault`), and at exit one \
JSON line of counters: {\"connections\",\"upstream_unreachable\",\"bytes_to_upstream\",\
\"bytes_to_client\",\"faults\"}. It runs until SIGINT/SIGTERM, then closes every connection \
and removes its socket file. With --api, faults can also be added, changed and removed while \
it runs through toxiproxy's HTTP API (any toxiproxy client library works; --fault SPECs show \
as toxics `fault-1`, `fault-2`, ... of the proxy --name), stderr gets `api listening on ADDR` \
once the API is up, and --listen/--upstream become optional (proxies are then created through \
the API, as with toxiproxy-server). The API has toxiproxy's (lack of) authentication: prefer a \
socket path (mode --api-mode, 600 by default; callers of other users may only name paths they \
could use themselves); a TCP API binds loopback only and a warning says every local user can \
reach it. Each API connection must send its header within 5 s and its body (at most 1 MiB) \
within 10 s; past 256 connections the oldest is closed. Works in front of any Unix-socket service: with --framing none \
(HTTP, gRPC, anything) only byte-level faults apply; frame-aimed ones assume uvarint \
length-prefixed frames.";

const AFTER_HELP: &str = "\
Examples:
  # deliver in 1..16-byte writes, and cut every connection after 1000 messages
  udsipc proxy --listen /tmp/front.sock --upstream /tmp/app.sock \\
      --fault fragment:1-16 --fault drop-after-frames:1000
  # take the socket away for 2 s after 5 s
  udsipc proxy --listen /tmp/front.sock --upstream /tmp/app.sock --fault refuse:5000:2000
  # driven at run time through toxiproxy's API: curl --unix-socket, or a toxiproxy
  # client on a loopback port (toxiproxy.NewClient(\"127.0.0.1:8474\"))
  udsipc proxy --api /run/user/1000/toxiproxy.sock
  udsipc proxy --api 127.0.0.1:8474
  # an HTTP service: 50 ms on every response, 10% of connections cut after 5 s
  udsipc proxy --listen /tmp/front.sock --upstream /tmp/http.sock --framing none \\
      --fault down:latency:50 --fault reset-peer:5000@0.1";

/// Arguments of `udsipc proxy`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct ProxyArgs {
    /// Socket path clients connect to (a stale socket file is replaced)
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "api",
        requires = "upstream"
    )]
    pub listen: Option<PathBuf>,

    /// Socket path of the real service
    #[arg(long, value_name = "PATH", requires = "listen")]
    pub upstream: Option<PathBuf>,

    /// Also serve toxiproxy's HTTP API here (a socket path, preferred, or a
    /// loopback host:port such as 127.0.0.1:8474), so toxiproxy clients add,
    /// change and remove faults at run time. It has no authentication: who
    /// can connect can make this process create, remove and connect to
    /// sockets with its rights
    #[arg(long, value_name = "ADDR")]
    pub api: Option<ApiAddr>,

    /// File mode of a socket-path --api, in octal (600: its owner only; on
    /// it, other users may only name paths they could use themselves)
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = parse_mode, requires = "api")]
    pub api_mode: u32,

    /// The API's name for the --listen/--upstream proxy
    #[arg(long, value_name = "NAME", default_value = "udsipc")]
    pub name: String,

    /// Seed of every random choice (the same seed replays the same faults)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,

    /// How the bytes are framed: uvarint (udsipc) or none (any byte stream)
    #[arg(long, value_name = "FRAMING", default_value = "uvarint", value_parser = parse_framing)]
    pub framing: Framing,

    /// A fault to inject; repeatable. Forms:
    #[arg(long = "fault", value_name = "SPEC", value_parser = parse_spec, long_help = fault_help(), requires = "listen")]
    pub faults: Vec<FaultSpec>,

    /// `--metrics ADDR`: the proxy's counters (udsipc_proxy_*) for
    /// Prometheus; not with --api
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

fn fault_help() -> String {
    format!(
        "A fault to inject; repeatable. SPEC is one of ([frames]: needs --framing uvarint):\n{}",
        valid_forms()
    )
}

fn parse_framing(text: &str) -> Result<Framing, String> {
    match text {
        "uvarint" => Ok(Framing::Uvarint),
        "none" => Ok(Framing::None),
        other => Err(format!("unknown framing `{other}`: use uvarint or none")),
    }
}

fn parse_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err("expected an octal file mode such as 600 or 660".to_owned()),
    }
}

fn parse_spec(text: &str) -> Result<FaultSpec, String> {
    text.parse::<FaultSpec>().map_err(|e| e.to_string())
}

#[derive(Debug, Serialize)]
struct ProxyCounters {
    connections: u64,
    upstream_unreachable: u64,
    bytes_to_upstream: u64,
    bytes_to_client: u64,
    faults: usize,
}

impl ProxyCounters {
    fn new(stats: ProxyStats, faults: usize) -> Self {
        Self {
            connections: stats.connections,
            upstream_unreachable: stats.upstream_unreachable,
            bytes_to_upstream: stats.bytes_to_upstream,
            bytes_to_client: stats.bytes_to_client,
            faults,
        }
    }
}

pub(crate) fn run(args: ProxyArgs) -> Outcome {
    let runtime = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => return Outcome::early(e),
    };
    runtime.block_on(serve(args))
}

async fn serve(args: ProxyArgs) -> Outcome {
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => return Outcome::early(e),
    };
    for spec in &args.faults {
        if let Err(e) = spec.check_framing(args.framing) {
            return Outcome::early(CliError::Usage(e));
        }
    }
    if let Some(api) = args.api.clone() {
        if args.metrics.metrics.is_some() {
            return Outcome::early(CliError::Usage(
                "--metrics is not available with --api (the API's proxies come and go)".to_owned(),
            ));
        }
        return serve_api(args, api, signals).await;
    }
    let exporter = match Exporter::start(&args.metrics).await {
        Ok(e) => e,
        Err(e) => return Outcome::early(e),
    };
    let (Some(listen), Some(upstream)) = (args.listen.clone(), args.upstream.clone()) else {
        return Outcome::early(CliError::Usage(
            "--listen and --upstream are needed without --api".to_owned(),
        ));
    };
    let mut builder = FaultProxy::builder(&listen, &upstream)
        .seed(args.seed)
        .framing(args.framing)
        .on_event(print_event);
    for spec in args.faults {
        builder = spec.apply(builder);
    }
    let proxy = match builder.start().await {
        Ok(p) => std::sync::Arc::new(p),
        Err(e) => {
            return Outcome::early(CliError::Failed(format!(
                "cannot listen on {}: {e}",
                listen.display()
            )));
        }
    };
    let published = std::sync::Arc::clone(&proxy);
    let label = listen.display().to_string();
    exporter.publish(move || {
        let stats = published.stats();
        observe::publish_proxy(
            &[
                ("udsipc_proxy_connections_total", false, stats.connections),
                ("udsipc_proxy_active_connections", true, stats.active),
                (
                    "udsipc_proxy_upstream_unreachable_total",
                    false,
                    stats.upstream_unreachable,
                ),
                (
                    "udsipc_proxy_bytes_to_upstream_total",
                    false,
                    stats.bytes_to_upstream,
                ),
                (
                    "udsipc_proxy_bytes_to_client_total",
                    false,
                    stats.bytes_to_client,
                ),
                ("udsipc_proxy_faults_total", false, published.events_fired()),
            ],
            &label,
        );
    });
    eprintln!("proxying {} -> {}", listen.display(), upstream.display());
    signals.recv().await;
    proxy.stop().await;
    let faults = usize::try_from(proxy.events_fired()).unwrap_or(usize::MAX);
    Outcome {
        failure: None,
        stats: Some(stats_line(&ProxyCounters::new(proxy.stats(), faults))),
    }
}

/// `--api`: every proxy (the --listen one, if given, and those the API
/// creates) lives in a [`ControlApi`].
async fn serve_api(args: ProxyArgs, addr: ApiAddr, mut signals: Signals) -> Outcome {
    let api = ControlApi::new(ProxyDefaults {
        seed: args.seed,
        framing: args.framing,
        sink: Some(std::sync::Arc::new(print_event)),
    });
    if let (Some(listen), Some(upstream)) = (&args.listen, &args.upstream) {
        let (l, u) = (listen.display().to_string(), upstream.display().to_string());
        if let Err(e) = api.create_proxy(&args.name, &l, &u).await {
            return Outcome::early(CliError::Failed(format!(
                "cannot listen on {l}: {}",
                e.message
            )));
        }
        for (i, spec) in args.faults.iter().enumerate() {
            let name = format!("fault-{}", i + 1);
            if let Err(e) = api.add_spec(&args.name, &name, *spec).await {
                return Outcome::early(CliError::Failed(e.message));
            }
        }
        eprintln!("proxying {l} -> {u}");
    }
    if let ApiAddr::Tcp(a) = &addr {
        eprintln!(
            "warning: the API is on TCP ({a}): every local user can drive it, with this \
             process's rights (create, remove and connect to sockets); prefer --api PATH.sock"
        );
    }
    let options = ServeOptions::default().socket_mode(args.api_mode);
    let server = match api.serve_with(&addr, options).await {
        Ok(s) => s,
        Err(e) => {
            api.stop_all().await;
            return Outcome::early(CliError::Failed(format!(
                "cannot serve the API on {addr:?}: {e}"
            )));
        }
    };
    eprintln!("api listening on {}", server.local_addr);
    signals.recv().await;
    server.stop().await;
    let (stats, faults) = api.stop_all().await;
    Outcome {
        failure: None,
        stats: Some(stats_line(&ProxyCounters::new(stats, faults))),
    }
}

fn print_event(event: &FaultEvent) {
    eprintln!("{}", serde_json::to_string(event).unwrap_or_default());
}
