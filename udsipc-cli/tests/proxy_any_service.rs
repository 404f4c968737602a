//! The proxy in front of a service that is not udsipc: Python's
//! `http.server` on a Unix socket, reached by `curl --unix-socket` through
//! `udsipc proxy --framing none`, with latency, slicing and a reset; and
//! frame-aimed faults refused without framing.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use support::{Proxy, WAIT, output};

/// A tiny HTTP server on a Unix socket: `GET /N` answers N bytes of `x`.
const SERVER: &str = r#"
import http.server, socketserver, sys

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"x" * int(self.path.strip("/") or "10")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

Server(sys.argv[1], Handler).serve_forever()
"#;

struct HttpServer(Child);

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_server(dir: &Path) -> (HttpServer, std::path::PathBuf) {
    let script = dir.join("server.py");
    std::fs::write(&script, SERVER).unwrap();
    let socket = dir.join("http.sock");
    let child = Command::new("python3")
        .arg(&script)
        .arg(&socket)
        .stdin(Stdio::null())
        .spawn()
        .expect("python3 is needed (ci/test installs it)");
    let server = HttpServer(child);
    let deadline = std::time::Instant::now() + WAIT;
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "http.server never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    (server, socket)
}

/// `curl --unix-socket SOCKET http://service/PATH`: exit code, body, stderr.
fn curl(socket: &Path, path: &str) -> (Option<i32>, String, String) {
    let url = format!("http://service/{path}");
    let out = output(
        "curl",
        &[
            "--silent",
            "--show-error",
            "--max-time",
            "30",
            "--unix-socket",
            socket.to_str().unwrap(),
            &url,
        ],
        Path::new("."),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn proxy(dir: &Path, upstream: &Path, faults: &[&str]) -> (Proxy, std::path::PathBuf) {
    let front = dir.join("front.sock");
    let mut args = vec![
        "--listen",
        front.to_str().unwrap(),
        "--upstream",
        upstream.to_str().unwrap(),
        "--framing",
        "none",
    ];
    for f in faults {
        args.extend(["--fault", f]);
    }
    let (proxy, _) = Proxy::start(&args, "proxying ");
    (proxy, front)
}

#[test]
fn curl_through_the_proxy_gets_the_whole_answer_late_and_in_slices() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, upstream) = http_server(dir.path());
    let (proxy, front) = proxy(
        dir.path(),
        &upstream,
        &["down:latency:20:5", "down:fragment:1-7", "latency:10"],
    );
    for size in [1, 5000] {
        let (code, body, err) = curl(&front, &size.to_string());
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(body, "x".repeat(size));
    }
    let (code, lines) = proxy.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
    for (fault, direction) in [
        ("latency", "to-client"),
        ("fragment", "to-client"),
        ("latency", "to-upstream"),
    ] {
        let found = lines.iter().any(|l| {
            l.starts_with(&format!(r#"{{"fault":"{fault}""#))
                && l.contains(&format!(r#""direction":"{direction}""#))
                && l.contains(r#""frame":null"#)
        });
        assert!(found, "no {fault} {direction} event: {lines:#?}");
    }
}

#[test]
fn curl_through_a_reset_peer_sees_the_connection_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, upstream) = http_server(dir.path());
    let (proxy, front) = proxy(dir.path(), &upstream, &["reset-peer:0"]);
    let (code, body, err) = curl(&front, "10");
    // 52: empty reply from server, 56: failure receiving data, 7: the reset
    // came before curl finished checking its connect (seen once in a full
    // test run; the proxy's log below shows the connection was accepted and
    // reset, not refused).
    assert!(
        matches!(code, Some(7 | 52 | 56)),
        "curl exit {code:?}: {err}"
    );
    assert_eq!(body, "");
    let (_, lines) = proxy.stop();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(r#"{"fault":"reset-peer""#)
                && l.contains(r#""closed_connection":true"#)),
        "{lines:#?}"
    );
}

#[test]
fn frame_aimed_faults_are_refused_with_framing_none() {
    let out = output(
        env!("CARGO_BIN_EXE_udsipc"),
        &[
            "proxy",
            "--listen",
            "/nonexistent/a.sock",
            "--upstream",
            "/nonexistent/b.sock",
            "--framing",
            "none",
            "--fault",
            "down:duplicate:1",
        ],
        Path::new("."),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`duplicate` aims at frames"), "{err}");
    assert!(err.contains("byte-level faults: latency"), "{err}");
}
