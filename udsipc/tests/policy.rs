//! Who may connect: the connection cap and peer-credential allow-lists,
//! checked with real sockets and, when the tests run as root, a real second
//! user (uid/gid 65534) in a child process.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use udsipc::{ConfigError, Reader, StartError};

const STOP: Duration = Duration::from_secs(10);
const CLIENT_SOCK: &str = "UDSIPC_CLIENT_SOCK";

/// Not a test on its own: the body of the second-user client process.
#[test]
#[ignore = "run by other tests in a child process"]
fn client_child() {
    let Ok(path) = std::env::var(CLIENT_SOCK) else {
        return;
    };
    let mut s = UnixStream::connect(path).expect("connect");
    // A refused peer may see the write fail: that is the point.
    let _ = s.write_all(&frames(&[b"from uid 65534"]));
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = read_to_end(&mut s);
}

#[test]
fn zero_max_connections_is_refused() {
    let sock = temp_sock();
    let err = Reader::builder(&sock.path)
        .max_connections(0)
        .start(|_: &[u8]| Ok(()))
        .unwrap_err();
    assert!(matches!(
        err,
        StartError::Config(ConfigError::Zero {
            option: "max_connections"
        })
    ));
}

#[test]
fn connection_over_the_cap_is_closed_and_the_others_are_unaffected() {
    let sock = temp_sock();
    let (c, errs) = (Collector::new(), Errors::default());
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .max_connections(2)
        .on_error(errs.reader_callback())
        .start(c.handler())
        .unwrap();
    let mut a = UnixStream::connect(&sock.path).unwrap();
    let mut b = UnixStream::connect(&sock.path).unwrap();
    a.write_all(&frames(&[b"a1"])).unwrap();
    b.write_all(&frames(&[b"b1"])).unwrap();
    let mut first = c.take(2);
    first.sort();
    assert_eq!(first, [b"a1".to_vec(), b"b1".to_vec()]);
    let mut over = UnixStream::connect(&sock.path).unwrap();
    let _ = over.write_all(&frames(&[b"over"]));
    assert_eq!(
        read_to_end(&mut over),
        Vec::<u8>::new(),
        "closed by the reader"
    );
    eventually("the refusal is counted", || {
        reader.metrics().rejected_connections == 1
    });
    a.write_all(&frames(&[b"a2"])).unwrap();
    assert_eq!(c.take(1), [b"a2".to_vec()]);
    // Below the cap again, a new connection is served.
    drop(b);
    eventually("b closed", || reader.metrics().active_connections == 1);
    let mut d = UnixStream::connect(&sock.path).unwrap();
    d.write_all(&frames(&[b"d1"])).unwrap();
    assert_eq!(c.take(1), [b"d1".to_vec()]);
    drop((a, d));
    reader.stop_blocking(STOP).unwrap();
    c.assert_empty();
    let m = reader.metrics();
    assert_eq!(
        (m.connections, m.rejected_connections, m.errors, m.received),
        (3, 1, 0, 4)
    );
    let list = errs.list();
    assert!(
        list.len() == 1 && list[0].contains("connection cap of 2 reached"),
        "{list:?}"
    );
}

#[test]
fn own_uid_on_the_allow_list_is_admitted() {
    let sock = temp_sock();
    let c = Collector::new();
    let me = nix::unistd::getuid().as_raw();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .allow_uid(me)
        .start(c.handler())
        .unwrap();
    let mut s = UnixStream::connect(&sock.path).unwrap();
    s.write_all(&frames(&[b"mine"])).unwrap();
    assert_eq!(c.take(1), [b"mine".to_vec()]);
    reader.stop_blocking(STOP).unwrap();
    assert_eq!(reader.metrics().rejected_connections, 0);
}

#[test]
fn own_gid_on_the_allow_list_is_admitted() {
    let sock = temp_sock();
    let c = Collector::new();
    let gid = nix::unistd::getgid().as_raw();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .allow_uid(u32::MAX - 1)
        .allow_gid(gid)
        .start(c.handler())
        .unwrap();
    let mut s = UnixStream::connect(&sock.path).unwrap();
    s.write_all(&frames(&[b"group"])).unwrap();
    assert_eq!(c.take(1), [b"group".to_vec()]);
    reader.stop_blocking(STOP).unwrap();
}

#[test]
fn peer_off_the_allow_lists_is_closed_before_any_byte_is_read() {
    let sock = temp_sock();
    let (c, errs) = (Collector::new(), Errors::default());
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .allow_uid(u32::MAX - 1)
        .allow_gid(u32::MAX - 1)
        .on_error(errs.reader_callback())
        .start(c.handler())
        .unwrap();
    let mut s = UnixStream::connect(&sock.path).unwrap();
    let _ = s.write_all(&frames(&[b"not yours"]));
    assert_eq!(read_to_end(&mut s), Vec::<u8>::new());
    eventually("the refusal is counted", || {
        reader.metrics().rejected_connections == 1
    });
    reader.stop_blocking(STOP).unwrap();
    c.assert_empty();
    let m = reader.metrics();
    assert_eq!((m.received, m.connections, m.errors), (0, 0, 0));
    let me = nix::unistd::getuid().as_raw();
    let list = errs.list();
    assert!(
        list[0].starts_with("connection rejected") && list[0].contains(&format!("uid {me}")),
        "{list:?}"
    );
}

/// Runs the client child as uid/gid 65534 against `path`. The child is a
/// copy of this test binary in the socket's directory: the build's own copy
/// may sit in a checkout the second user cannot traverse (a clone in a 0700
/// directory).
fn run_as_nobody(path: &std::path::Path) {
    let exe = path.with_file_name("policy-test-for-nobody");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let status = Command::new(&exe)
        .args(["--ignored", "--exact", "client_child", "--nocapture"])
        .env(CLIENT_SOCK, path)
        .uid(65534)
        .gid(65534)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "client child failed: {status}");
}

fn nobody_can_reach(sock: &TempSock) {
    std::fs::set_permissions(sock.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_real_second_user_is_refused_or_admitted_by_the_lists() {
    if !nix::unistd::getuid().is_root() {
        eprintln!(
            "needs root to run a client as uid 65534; the same-user tests above cover the logic"
        );
        return;
    }
    // Refused: only root is allowed.
    let sock = temp_sock();
    nobody_can_reach(&sock);
    let c = Collector::new();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .socket_mode(0o666)
        .allow_uid(0)
        .start(c.handler())
        .unwrap();
    run_as_nobody(&sock.path);
    eventually("the refusal is counted", || {
        reader.metrics().rejected_connections == 1
    });
    reader.stop_blocking(STOP).unwrap();
    c.assert_empty();

    // Admitted: uid 65534 is on the list.
    let sock = temp_sock();
    nobody_can_reach(&sock);
    let c = Collector::new();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .socket_mode(0o666)
        .allow_uid(65534)
        .start(c.handler())
        .unwrap();
    run_as_nobody(&sock.path);
    assert_eq!(c.take(1), [b"from uid 65534".to_vec()]);
    reader.stop_blocking(STOP).unwrap();
    assert_eq!(reader.metrics().rejected_connections, 0);
}
