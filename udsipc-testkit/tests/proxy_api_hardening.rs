//! The proxy and its control API against a hostile local user: bodies past
//! the limit, headers sent a byte at a time, a removed outage, a file put
//! where the API's socket was, an event log that would grow forever, a TCP
//! API on every interface, other users naming paths they could not create,
//! and a bandwidth limit that must hold from the first byte. Real sockets;
//! every wait is bounded and nothing asserts a wall-clock duration.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rstest::rstest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use udsipc_testkit::proxy::api::{ApiAddr, ApiServer, ControlApi, ProxyDefaults, ServeOptions};
use udsipc_testkit::proxy::{Bandwidth, FaultEvent, FaultProxy, Framing};

/// The bound on every wait; generous, because CI machines stall.
const WAIT: Duration = Duration::from_secs(30);

/// An API on a Unix socket in its own directory, on its own runtime; the
/// test drives it with blocking sockets.
struct Api {
    dir: tempfile::TempDir,
    path: PathBuf,
    api: ControlApi,
    server: Option<ApiServer>,
    events: Arc<Mutex<Vec<FaultEvent>>>,
    rt: tokio::runtime::Runtime,
}

impl Api {
    fn start(options: ServeOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let api = ControlApi::new(ProxyDefaults {
            seed: 1,
            framing: Framing::Uvarint,
            sink: Some(Arc::new(move |e: &FaultEvent| {
                seen.lock().unwrap().push(e.clone());
            })),
        });
        let server = rt
            .block_on(api.serve_with(&ApiAddr::Unix(path.clone()), options))
            .unwrap();
        Self {
            dir,
            path,
            api,
            server: Some(server),
            events,
            rt,
        }
    }

    fn connect(&self) -> StdStream {
        let s = StdStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }

    /// One request on its own connection; the status and the body.
    fn call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = self.connect();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        status_and_body(&text)
    }

    fn stop(mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.stop());
        }
        self.rt.block_on(self.api.stop_all());
    }
}

fn status_and_body(text: &str) -> (u16, String) {
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.trim_end().to_owned())
}

/// Reads until the peer closes (or the wait bound); what came.
fn read_until_closed(s: &mut StdStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

// --- item 2: the body limit holds while the body is read -----------------

#[rstest]
#[case::chunked("Transfer-Encoding: chunked")]
#[case::declared_length("Content-Length: 2000000")]
fn a_body_past_the_limit_is_refused_before_it_ends(#[case] framing: &str) {
    let api = Api::start(ServeOptions::default());
    let mut s = api.connect();
    write!(
        s,
        "POST /proxies HTTP/1.1\r\nHost: api\r\n{framing}\r\n\r\n"
    )
    .unwrap();
    // 1.5 MiB of body (the limit is 1 MiB), and the body never ends: only a
    // proxy that counts while it reads can answer.
    let mut writer = s.try_clone().unwrap();
    let chunked = framing.contains("chunked");
    let feeder = std::thread::spawn(move || {
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..24 {
            let sent = if chunked {
                write!(writer, "{:x}\r\n", piece.len())
                    .and_then(|()| writer.write_all(&piece))
                    .and_then(|()| writer.write_all(b"\r\n"))
            } else {
                writer.write_all(&piece)
            };
            if sent.is_err() {
                return;
            }
        }
    });
    let answer = read_until_closed(&mut s).expect("no answer while the body was still open");
    let (status, body) = status_and_body(&String::from_utf8_lossy(&answer));
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("request body too large"), "{body}");
    drop(s);
    feeder.join().unwrap();
    api.stop();
}

#[test]
fn a_declared_length_past_the_limit_is_refused_without_reading_the_body() {
    let api = Api::start(ServeOptions::default());
    let mut s = api.connect();
    write!(
        s,
        "POST /proxies HTTP/1.1\r\nHost: api\r\nContent-Length: 100000000\r\n\r\n{{"
    )
    .unwrap();
    let answer = read_until_closed(&mut s).expect("no answer");
    assert_eq!(status_and_body(&String::from_utf8_lossy(&answer)).0, 413);
    api.stop();
}

// --- item 3: slowloris ---------------------------------------------------

#[test]
fn a_header_sent_a_byte_at_a_time_is_cut_at_the_header_timeout() {
    // The default options: the header must be whole within 5 s.
    let api = Api::start(ServeOptions::default());
    let mut s = api.connect();
    s.write_all(b"GET /version HTTP/1.1\r\nHost: api\r\n")
        .unwrap();
    let mut trickle = s.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        // A header line that never ends, a byte every 100 ms, for at most
        // the wait bound.
        for _ in 0..300 {
            if trickle.write_all(b"X").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let answer = read_until_closed(&mut s).expect("a slow header was never cut");
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
    drop(s);
    trickler.join().unwrap();
    api.stop();
}

#[test]
fn connections_past_the_cap_push_out_the_oldest_so_the_api_still_answers() {
    let api = Api::start(
        ServeOptions::default()
            .max_connections(4)
            .header_timeout(Duration::from_secs(3600)),
    );
    // Eight clients that send half a header and nothing more.
    let mut idle: Vec<StdStream> = (0..8)
        .map(|_| {
            let mut s = api.connect();
            s.write_all(b"GET /version HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    // A real request still gets its answer...
    assert_eq!(api.call("GET", "/version", "").0, 200);
    // ...and the oldest idle ones were closed to make room for it.
    let closed = idle
        .iter_mut()
        .take(4)
        .map(|s| read_until_closed(s).is_ok())
        .filter(|&closed| closed)
        .count();
    assert_eq!(closed, 4);
    api.stop();
}

// --- item 4: a removed refuse toxic ----------------------------------------

#[rstest]
#[case::deleted("DELETE", "/proxies/p/toxics/out")]
#[case::reset("POST", "/reset")]
fn a_removed_refuse_toxic_never_takes_the_listener_away(
    #[case] method: &str,
    #[case] remove: &str,
) {
    let api = Api::start(ServeOptions::default());
    let (front, back) = (api.dir.path().join("f.sock"), api.dir.path().join("b.sock"));
    let _upstream = std::os::unix::net::UnixListener::bind(&back).unwrap();
    let body = format!(
        r#"{{"name":"p","listen":"{}","upstream":"{}"}}"#,
        front.display(),
        back.display()
    );
    assert_eq!(api.call("POST", "/proxies", &body).0, 201);
    let toxic = r#"{"name":"out","type":"refuse","attributes":{"after":300,"duration":60000}}"#;
    assert_eq!(api.call("POST", "/proxies/p/toxics", toxic).0, 200);
    assert_eq!(api.call(method, remove, "").0, 204);
    // Well past the outage's start: the listener is still there.
    std::thread::sleep(Duration::from_millis(1500));
    let meta = std::fs::symlink_metadata(&front).expect("the listen socket was removed");
    assert!(meta.file_type().is_socket());
    StdStream::connect(&front).expect("the proxy stopped listening");
    let events = api.events.lock().unwrap().clone();
    assert!(!events.iter().any(|e| e.fault == "refuse"), "{events:#?}");
    api.stop();
}

#[test]
fn removing_a_refuse_toxic_during_its_outage_ends_the_outage() {
    let api = Api::start(ServeOptions::default());
    let (front, back) = (api.dir.path().join("f.sock"), api.dir.path().join("b.sock"));
    let _upstream = std::os::unix::net::UnixListener::bind(&back).unwrap();
    let body = format!(
        r#"{{"name":"p","listen":"{}","upstream":"{}"}}"#,
        front.display(),
        back.display()
    );
    assert_eq!(api.call("POST", "/proxies", &body).0, 201);
    let toxic = r#"{"name":"out","type":"refuse","attributes":{"after":0,"duration":3600000}}"#;
    assert_eq!(api.call("POST", "/proxies/p/toxics", toxic).0, 200);
    wait_until(|| !front.exists(), "the outage never began");
    assert_eq!(api.call("DELETE", "/proxies/p/toxics/out", "").0, 204);
    wait_until(
        || StdStream::connect(&front).is_ok(),
        "the listener never came back",
    );
    api.stop();
}

fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// --- item 5: the API's socket file is removed only if it is still ours -----

#[test]
fn stopping_the_api_leaves_a_file_someone_put_at_its_path() {
    let api = Api::start(ServeOptions::default());
    std::fs::remove_file(&api.path).unwrap();
    std::fs::write(&api.path, b"not yours").unwrap();
    let path = api.path.clone();
    let dir = tempfile::tempdir().unwrap(); // keeps nothing; `api.dir` goes with `api`
    let kept = dir.path().join("kept");
    api.stop_keeping(&path, &kept);
    assert_eq!(std::fs::read(&kept).unwrap(), b"not yours");
}

impl Api {
    /// Stops, then copies `path` (if still there) to `to` before the
    /// directory goes.
    fn stop_keeping(mut self, path: &Path, to: &Path) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.stop());
        }
        if path.exists() {
            std::fs::copy(path, to).unwrap();
        }
        self.rt.block_on(self.api.stop_all());
    }
}

// --- item 6: the event log is bounded --------------------------------------

#[tokio::test]
async fn the_event_log_keeps_the_newest_events_and_counts_the_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (front, back) = (dir.path().join("f.sock"), dir.path().join("nobody.sock"));
    let proxy = FaultProxy::builder(&front, &back)
        .event_capacity(50)
        .start()
        .await
        .unwrap();
    // Nobody listens upstream: every connection is one event.
    for _ in 0..120 {
        let mut c = UnixStream::connect(&front).await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(WAIT, c.read_to_end(&mut sink)).await;
    }
    let events = proxy.events();
    assert_eq!(events.len(), 50);
    assert_eq!(proxy.stats().events_dropped, 70);
    assert_eq!(events.last().unwrap().conn, 120);
    assert_eq!(events.first().unwrap().conn, 71);
    proxy.stop().await;
}

#[test]
fn the_default_event_log_is_bounded() {
    const { assert!(udsipc_testkit::proxy::DEFAULT_EVENT_CAPACITY <= 10_000) };
}

// --- item 11: who may drive the API ----------------------------------------

#[tokio::test]
async fn a_tcp_api_listens_on_loopback_only() {
    let api = ControlApi::new(ProxyDefaults {
        seed: 0,
        framing: Framing::Uvarint,
        sink: None,
    });
    let err = api
        .serve(&ApiAddr::Tcp("0.0.0.0:0".into()))
        .await
        .expect_err("an API every host can reach");
    assert!(err.to_string().contains("loopback"), "{err}");
    let server = api
        .serve(&ApiAddr::Tcp("127.0.0.1:0".into()))
        .await
        .unwrap();
    server.stop().await;
}

#[test]
fn a_unix_socket_api_is_for_its_owner_by_default() {
    let api = Api::start(ServeOptions::default());
    let mode = std::fs::metadata(&api.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    api.stop();
}

/// As another user (uid 65534; needs root to switch), POSTs `body` to the
/// API with curl; the status.
fn post_as_nobody(api: &Path, path: &str, body: &str) -> (u16, String) {
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new("curl")
        .uid(65534)
        .gid(65534)
        .args(["--silent", "--show-error", "--unix-socket"])
        .arg(api)
        .args([
            "--write-out",
            "\n%{http_code}",
            "-X",
            "POST",
            "--data",
            body,
        ])
        .arg(format!("http://api{path}"))
        .output()
        .expect("cannot run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), body.to_owned())
}

#[test]
fn another_user_cannot_name_paths_it_could_not_create_itself() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: switching to another user needs root");
        return;
    }
    // An API others may reach (mode 0666), in a directory they can search.
    let api = Api::start(ServeOptions::default().socket_mode(0o666));
    std::fs::set_permissions(api.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let private = api.dir.path().join("private");
    let open = api.dir.path().join("open");
    std::fs::create_dir(&private).unwrap();
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // Root's service, which nobody may connect to, and one anyone may.
    let closed_up = private.join("svc.sock");
    let _closed = std::os::unix::net::UnixListener::bind(&closed_up).unwrap();
    // Writable by all, but in a directory nobody else may search.
    std::fs::set_permissions(&closed_up, std::fs::Permissions::from_mode(0o666)).unwrap();
    let open_up = open.join("svc.sock");
    let _open = std::os::unix::net::UnixListener::bind(&open_up).unwrap();
    std::fs::set_permissions(&open_up, std::fs::Permissions::from_mode(0o666)).unwrap();
    // Root's stale socket in the sticky directory: not nobody's to remove.
    let stale = open.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let create = |name: &str, listen: &Path, upstream: &Path| {
        let body = format!(
            r#"{{"name":"{name}","listen":"{}","upstream":"{}"}}"#,
            listen.display(),
            upstream.display()
        );
        post_as_nobody(&api.path, "/proxies", &body)
    };
    let (code, body) = create("a", &private.join("front.sock"), &open_up);
    assert_eq!(code, 403, "{body}");
    assert!(!private.join("front.sock").exists());
    let (code, body) = create("b", &open.join("front.sock"), &closed_up);
    assert_eq!(code, 403, "{body}");
    // A link in the open directory to root's private service.
    let link = open.join("link.sock");
    std::os::unix::fs::symlink(&closed_up, &link).unwrap();
    let (code, body) = create("l", &open.join("front2.sock"), &link);
    assert_eq!(code, 403, "{body}");
    let (code, body) = create("c", &stale, &open_up);
    assert_eq!(code, 403, "{body}");
    assert!(stale.exists(), "nobody removed root's socket");
    let (code, body) = create("d", &open.join("front.sock"), &open_up);
    assert_eq!(code, 201, "{body}");
    api.stop();
}

// --- item 12: bandwidth paces from the first byte --------------------------

/// On tokio's paused clock: time moves only when every task waits, to the
/// next timer, so the elapsed time below is the proxy's own pacing, not
/// the machine's speed.
#[tokio::test(start_paused = true)]
async fn bandwidth_paces_from_the_first_byte() {
    const RATE: u64 = 64_000;
    const SENT: usize = 64_000;
    let dir = tempfile::tempdir().unwrap();
    let (front, back) = (dir.path().join("f.sock"), dir.path().join("b.sock"));
    let upstream = UnixListener::bind(&back).unwrap();
    let proxy = FaultProxy::builder(&front, &back)
        .framing(Framing::None)
        .fault(Bandwidth(RATE))
        .start()
        .await
        .unwrap();
    let mut client = UnixStream::connect(&front).await.unwrap();
    let (mut server, _) = upstream.accept().await.unwrap();
    let start = tokio::time::Instant::now();
    let writer = tokio::spawn(async move {
        client.write_all(&[7; SENT]).await.unwrap();
        client
    });
    let mut got = 0;
    let mut by_half_second = 0;
    let mut buf = vec![0; 1 << 20];
    while got < SENT {
        let n = server.read(&mut buf).await.unwrap();
        assert!(n > 0, "the proxy closed after {got} bytes");
        got += n;
        if start.elapsed() <= Duration::from_millis(500) {
            by_half_second = got;
        }
    }
    let took = start.elapsed();
    // 64,000 bytes at 64,000 bytes/s: a second, never a burst at once.
    assert!(
        by_half_second <= 32_000 + 6_400,
        "{by_half_second} bytes within the first half second"
    );
    assert!(
        took >= Duration::from_millis(900),
        "all of it after {took:?}"
    );
    drop(writer.await.unwrap());
    proxy.stop().await;
}
