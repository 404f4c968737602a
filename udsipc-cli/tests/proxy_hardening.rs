//! `udsipc proxy --api` against a hostile local user: slow clients holding
//! the API's connections under a low descriptor limit, and a TCP API.
//! Real processes and sockets; every wait is bounded.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;

use support::{Proxy, WAIT};

/// The `Max open files` soft and hard limits of process `pid`.
fn open_files_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    let mut fields = line.split_whitespace().skip(3);
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

fn get_version(api: &std::path::Path) -> String {
    let mut s = UnixStream::connect(api).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /version HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .expect("GET /version got no answer");
    answer
}

#[test]
fn slow_api_clients_leave_the_api_and_its_proxies_working_under_a_low_soft_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (api, front, back) = (
        dir.path().join("api.sock"),
        dir.path().join("front.sock"),
        dir.path().join("back.sock"),
    );
    let upstream = UnixListener::bind(&back).unwrap();
    // A soft limit of 128 descriptors (the hard one as it was).
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"ulimit -Sn 128 && exec "$0" proxy "$@""#)
        .arg(env!("CARGO_BIN_EXE_udsipc"))
        .args(["--api", api.to_str().unwrap()])
        .args(["--listen", front.to_str().unwrap()])
        .args(["--upstream", back.to_str().unwrap()]);
    let (proxy, _) = Proxy::start_command(command, "api listening on ");
    // 400 clients each send half a request header, then nothing.
    let slow: Vec<UnixStream> = (0..400)
        .map(|_| {
            let mut s = UnixStream::connect(&api).unwrap();
            let _ = s.write_all(b"GET /version HTTP/1.1\r\nHo");
            s
        })
        .collect();
    // The API still answers...
    let answer = get_version(&api);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // ...and a client of the existing proxy still reaches its upstream.
    let mut client = UnixStream::connect(&front).unwrap();
    client.write_all(&[1, b'x']).unwrap();
    upstream.set_nonblocking(false).unwrap();
    let (mut server, _) = upstream.accept().unwrap();
    server.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = [0; 2];
    server.read_exact(&mut got).unwrap();
    assert_eq!(got, [1, b'x']);
    // The soft limit was raised to the hard one at start.
    let (soft, hard) = open_files_limit(proxy.pid());
    assert_eq!(
        soft, hard,
        "the soft descriptor limit stayed below the hard one"
    );
    drop(slow);
    let (code, lines) = proxy.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[test]
fn a_tcp_api_warns_that_every_local_user_can_drive_it() {
    let (proxy, _) = Proxy::start(&["--api", "127.0.0.1:0"], "api listening on ");
    let (code, lines) = proxy.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("warning: the API is on TCP") && l.contains("every local user")),
        "{lines:#?}"
    );
}

#[test]
fn a_tcp_api_on_every_interface_is_refused() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_udsipc"))
        .args(["proxy", "--api", "0.0.0.0:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the proxy served an API on every interface");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");
}
