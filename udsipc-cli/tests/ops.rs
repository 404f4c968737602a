//! What an operator meets around the data path: `--metrics` scraped as
//! Prometheus would, `RUST_LOG`, size units, `send --connect-timeout`,
//! empty input, completions and the man page (issue 23, items 4 and 5).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use udsipc_cli::listen::ListenStats;
use udsipc_cli::send::SendStats;

mod support;
use support::lines;

const BIN: &str = env!("CARGO_BIN_EXE_udsipc");
const WAIT: Duration = Duration::from_secs(30);

/// Waits for a line starting with `prefix`; returns it.
fn wait_for(rx: &Receiver<String>, seen: &mut Vec<String>, prefix: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.starts_with(prefix) {
                    return line;
                }
            }
            Err(e) => panic!("no stderr line starting with {prefix:?} ({e:?}); so far: {seen:#?}"),
        }
    }
}

/// All the remaining lines (the process has exited or is exiting).
fn rest(rx: &Receiver<String>, seen: &mut Vec<String>) {
    while let Ok(line) = rx.recv_timeout(WAIT) {
        seen.push(line);
    }
}

/// `GET /metrics` on `addr`, as a scraper does; the body.
fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to --metrics");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

/// The value of `name{socket="<socket>"}` in a scrape.
fn value(body: &str, name: &str, socket: &Path) -> Option<u64> {
    let series = format!("{name}{{socket=\"{}\"}} ", socket.display());
    body.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.trim().parse().expect("an integer value"))
}

/// Scrapes until `done` holds for the body.
fn scrape_until(addr: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let body = scrape(addr);
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "never {what}:\n{body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metrics_addr(line: &str) -> String {
    line.strip_prefix("metrics on http://")
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected announcement {line:?}"))
        .to_owned()
}

struct Listen {
    child: Child,
    err: Receiver<String>,
    seen: Vec<String>,
}

impl Listen {
    fn start(socket: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .arg("listen")
            .arg(socket)
            .args(["--format", "len"])
            .args(extra)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = lines(child.stderr.take().unwrap());
        Self {
            child,
            err,
            seen: Vec::new(),
        }
    }

    fn wait_for(&mut self, prefix: &str) -> String {
        wait_for(&self.err, &mut self.seen, prefix)
    }

    /// SIGTERM, then every line up to the exit.
    fn stop(mut self) -> Vec<String> {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
        rest(&self.err, &mut self.seen);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}: {:#?}", self.seen);
        self.seen
    }
}

fn send(socket: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .arg("send")
        .arg(socket)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = pipe.write_all(&data);
    });
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    output
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn udsipc(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

// ---------------------------------------------------------------------------
// --metrics
// ---------------------------------------------------------------------------

#[test]
fn listen_metrics_scrape_equals_the_stats_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("m.sock");
    let mut listen = Listen::start(&socket, &["--metrics", "127.0.0.1:0"], &[]);
    let addr = metrics_addr(&listen.wait_for("metrics on "));
    listen.wait_for("listening on ");
    let input: String = (0..300).map(|i| format!("message {i}\n")).collect();
    let sent = send(&socket, &[], input.as_bytes());
    assert!(sent.status.success(), "{sent:?}");
    // A second sender: two connections.
    assert!(send(&socket, &["last"], b"").status.success());
    let body = scrape_until(&addr, "all read and closed", |b| {
        value(b, "udsipc_reader_received_total", &socket) == Some(301)
            && value(b, "udsipc_reader_active_connections", &socket) == Some(0)
    });
    assert!(
        body.contains("# HELP udsipc_reader_received_total"),
        "{body}"
    );
    let seen = listen.stop();
    let stats: ListenStats = serde_json::from_str(seen.last().unwrap()).unwrap();
    let scraped = |name| value(&body, name, &socket).unwrap_or_else(|| panic!("{name}:\n{body}"));
    assert_eq!(scraped("udsipc_reader_received_total"), stats.received);
    assert_eq!(
        scraped("udsipc_reader_connections_total"),
        stats.connections
    );
    assert_eq!(scraped("udsipc_reader_errors_total"), stats.errors);
    assert_eq!(
        scraped("udsipc_reader_active_connections"),
        stats.active_connections
    );
    assert_eq!(
        scraped("udsipc_reader_rejected_connections_total"),
        stats.rejected_connections
    );
    assert_eq!(scraped("udsipc_reader_abandoned_handlers_total"), 0);
    assert_eq!((stats.received, stats.connections), (301, 2));
}

#[test]
fn send_metrics_scrape_equals_the_stats_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let mut listen = Listen::start(&socket, &[], &[]);
    listen.wait_for("listening on ");
    let mut child = Command::new(BIN)
        .arg("send")
        .arg(&socket)
        .args(["--metrics", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let addr = metrics_addr(&wait_for(&err, &mut seen, "metrics on "));
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..200 {
        writeln!(stdin, "line {i}").unwrap();
    }
    stdin.flush().unwrap();
    let body = scrape_until(&addr, "all 200 delivered", |b| {
        value(b, "udsipc_writer_delivered_total", &socket) == Some(200)
            && value(b, "udsipc_writer_queue_depth", &socket) == Some(0)
    });
    drop(stdin); // end of input: drain (nothing left) and exit
    rest(&err, &mut seen);
    assert!(child.wait().unwrap().success(), "{seen:#?}");
    let stats: SendStats = serde_json::from_str(seen.last().unwrap()).unwrap();
    let scraped = |name| value(&body, name, &socket).unwrap_or_else(|| panic!("{name}:\n{body}"));
    assert_eq!(scraped("udsipc_writer_sent_total"), stats.sent);
    assert_eq!(scraped("udsipc_writer_delivered_total"), stats.delivered);
    assert_eq!(scraped("udsipc_writer_dropped_total"), stats.dropped);
    assert_eq!(scraped("udsipc_writer_failed_total"), stats.failed);
    assert_eq!(scraped("udsipc_writer_discarded_total"), stats.discarded);
    assert_eq!(
        scraped("udsipc_writer_unconfirmed_total"),
        stats.unconfirmed
    );
    assert_eq!(scraped("udsipc_writer_retried_total"), stats.retried);
    assert_eq!(
        scraped("udsipc_writer_backpressure_total"),
        stats.backpressure
    );
    assert_eq!(scraped("udsipc_writer_refused_total"), stats.refused);
    assert_eq!(scraped("udsipc_writer_reconnects_total"), stats.reconnects);
    assert_eq!(scraped("udsipc_send_queued_total"), stats.queued);
    assert_eq!(stats.queued, 200);
    listen.stop();
}

#[test]
fn proxy_metrics_count_its_connections_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = dir.path().join("up.sock");
    let front = dir.path().join("front.sock");
    let mut listen = Listen::start(&upstream, &[], &[]);
    listen.wait_for("listening on ");
    let mut proxy = Command::new(BIN)
        .arg("proxy")
        .arg("--listen")
        .arg(&front)
        .arg("--upstream")
        .arg(&upstream)
        .args(["--metrics", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines(proxy.stderr.take().unwrap());
    let mut seen = Vec::new();
    let addr = metrics_addr(&wait_for(&err, &mut seen, "metrics on "));
    wait_for(&err, &mut seen, "proxying ");
    assert!(send(&front, &["abc", "de"], b"").status.success());
    // Two frames of 1 + 3 and 1 + 2 bytes.
    let body = scrape_until(&addr, "7 bytes forwarded", |b| {
        value(b, "udsipc_proxy_bytes_to_upstream_total", &front) == Some(7)
    });
    assert_eq!(
        value(&body, "udsipc_proxy_connections_total", &front),
        Some(1)
    );
    assert_eq!(value(&body, "udsipc_proxy_faults_total", &front), Some(0));
    kill(
        Pid::from_raw(i32::try_from(proxy.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    rest(&err, &mut seen);
    assert!(proxy.wait().unwrap().success(), "{seen:#?}");
    listen.stop();
}

#[test]
fn metrics_on_an_address_in_use_is_one_error_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = udsipc(&[
        "listen",
        dir.path().join("x.sock").to_str().unwrap(),
        "--metrics",
        &addr,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("error: --metrics: cannot listen on {addr}")),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// RUST_LOG
// ---------------------------------------------------------------------------

#[test]
fn rust_log_debug_prints_the_library_tracing_events_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("t.sock");
    let mut listen = Listen::start(&socket, &[], &[("RUST_LOG", "debug")]);
    listen.wait_for("listening on ");
    let seen = listen.stop();
    assert!(
        seen.iter()
            .any(|l| l.contains("DEBUG") && l.contains("reader started")),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("DEBUG") && l.contains("reader stopped")),
        "{seen:#?}"
    );
}

#[test]
fn without_rust_log_no_tracing_event_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("t.sock");
    let mut listen = Listen::start(&socket, &[], &[]);
    listen.wait_for("listening on ");
    let seen = listen.stop();
    assert_eq!(seen.len(), 2, "{seen:#?}"); // listening on, the stats
}

// ---------------------------------------------------------------------------
// Size units
// ---------------------------------------------------------------------------

#[test]
fn size_flags_take_si_and_binary_units() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let long = "x".repeat(1025);
    let out = send(&socket, &["--max-message-size", "1KiB", &long], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("longer than --max-message-size (1024 bytes)"),
        "{err}"
    );
    let out = send(&socket, &["--max-message-size", "1kB", &long], b"");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(1000 bytes)"),
        "{out:?}"
    );
    // A 1MB limit takes a 1,000,000-byte line and refuses one byte more.
    let mut line = vec![b'y'; 1_000_001];
    line.push(b'\n');
    let out = send(&socket, &["--max-message-size", "1MB"], &line);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("stdin line 1: longer than --max-message-size (1000000 bytes)"),
        "{out:?}"
    );
    let out = udsipc(&[
        "listen",
        "/unused.sock",
        "--max-message-size",
        "1MiB",
        "--help",
    ]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_bad_size_is_a_usage_error_that_shows_the_forms() {
    for bad in ["1XB", "ten", "-5"] {
        let flag = format!("--max-message-size={bad}");
        let out = udsipc(&["listen", "/unused.sock", &flag]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("expected a size in bytes, such as 65536, 64KiB, 1MB or 1MiB"),
            "{bad}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------
// send: connect timeout, empty input, help
// ---------------------------------------------------------------------------

#[test]
fn send_connect_timeout_fails_fast_with_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let started = Instant::now();
    let out = send(&socket, &["--connect-timeout", "0.3", "hello"], b"");
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].starts_with(&format!(
            "error: no connection to {} within --connect-timeout (300ms)",
            socket.display()
        )),
        "{lines:#?}"
    );
    let stats: SendStats = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!((stats.queued, stats.sent, stats.discarded), (1, 0, 1));
}

#[test]
fn send_connect_timeout_lets_a_listener_that_is_there_take_everything() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("here.sock");
    let mut listen = Listen::start(&socket, &[], &[]);
    listen.wait_for("listening on ");
    let out = send(&socket, &["--connect-timeout", "0.2"], b"a\nb\nc\n");
    assert!(out.status.success(), "{out:?}");
    listen.stop();
}

#[test]
fn empty_input_does_not_dial() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("watch.sock");
    let watcher = UnixListener::bind(&socket).unwrap();
    watcher.set_nonblocking(true).unwrap();
    for (args, stdin) in [
        (&[][..], &b""[..]),
        (&[][..], &b"\n\r\n\n"[..]),
        (&[""][..], &b""[..]),
    ] {
        let out = send(&socket, args, stdin);
        assert!(out.status.success(), "{args:?} {stdin:?}: {out:?}");
        let lines = stderr_lines(&out);
        let stats: SendStats = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert_eq!(stats.queued, 0);
        match watcher.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("{args:?} {stdin:?} dialed: {other:?}"),
        }
    }
}

#[test]
fn send_help_says_a_proxy_is_what_read_the_messages() {
    let out = udsipc(&["send", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("through `udsipc proxy` (or any forwarder) it is the proxy that read them"),
        "{help}"
    );
    assert!(help.contains("--connect-timeout <SECS>"), "{help}");
}

// ---------------------------------------------------------------------------
// Completions and the man page
// ---------------------------------------------------------------------------

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _udsipc"),
        ("zsh", "#compdef udsipc"),
        ("fish", "complete -c udsipc"),
    ] {
        let out = udsipc(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("listen"), "{shell}");
        assert!(script.contains("connect-timeout"), "{shell}");
    }
    let out = udsipc(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_prints_a_roff_page() {
    let out = udsipc(&["man"]);
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH udsipc 1"), "{page}");
    assert!(page.contains(".SH NAME"), "{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    assert!(page.contains("udsipc\\-listen"), "{page}");
}

// ---------------------------------------------------------------------------
// The docs' table of tracing events
// ---------------------------------------------------------------------------

/// Where the macro call whose arguments start `args` closes: the first
/// `)` outside string literals at depth 0.
fn call_end(args: &str) -> usize {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in args.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string && depth == 0 => return i,
            ')' if !in_string => depth -= 1,
            _ => {}
        }
    }
    panic!("unclosed macro call: {args}")
}

/// Every `tracing::LEVEL!(..., "message")` in `dir`: (level, message).
fn tracing_events(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            tracing_events(&path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for level in ["error", "warn", "info", "debug", "trace"] {
            let call = format!("tracing::{level}!(");
            for (at, _) in text.match_indices(&call) {
                let args = &text[at + call.len()..];
                let args = &args[..call_end(args)];
                let end = args.rfind('"').expect("a message literal");
                let start = args[..end].rfind('"').unwrap();
                out.push((level.to_uppercase(), args[start + 1..end].to_owned()));
            }
        }
    }
}

#[test]
fn every_tracing_event_of_the_library_is_in_the_observability_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut events = Vec::new();
    tracing_events(&root.join("udsipc/src"), &mut events);
    assert!(events.len() >= 17, "{events:#?}");
    let docs = std::fs::read_to_string(root.join("docs/observability.md")).unwrap();
    let rows: Vec<&str> = docs.lines().filter(|l| l.starts_with("| ")).collect();
    for (level, message) in &events {
        let row = format!("| {level} | `{message}` |");
        assert!(
            rows.iter().any(|r| r.starts_with(&row)),
            "docs/observability.md has no row `{row}`"
        );
    }
    let documented = rows
        .iter()
        .filter(|r| {
            [
                "| ERROR |",
                "| WARN |",
                "| INFO |",
                "| DEBUG |",
                "| TRACE |",
            ]
            .iter()
            .any(|l| r.starts_with(l))
        })
        .count();
    assert_eq!(
        documented,
        events.len(),
        "rows for events that no longer exist"
    );
}
