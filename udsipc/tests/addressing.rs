//! What a socket name means (PROTOCOL.md section 6): `@name` and a leading
//! NUL are Linux abstract names, as in the Go reference's `net` package;
//! anything else is a file path. Real Readers and Writers over real sockets.

#![cfg(target_os = "linux")]

use std::io::Write;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udsipc::{ConfigError, Reader, SocketAddress, StartError, Writer};

const STOP: Duration = Duration::from_secs(10);

/// An abstract name no other test (or test process) uses.
fn unique_name(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("@udsipc-test-{tag}-{}-{n}", std::process::id())
}

/// Whether `/proc/net/unix` lists a socket bound to `@name`.
fn abstract_bound(at_name: &str) -> bool {
    std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(7) == Some(at_name))
}

fn collecting_reader(name: &str) -> (Reader, Arc<Mutex<Vec<Vec<u8>>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    let reader = Reader::builder(name)
        .systemd(false)
        .start(move |m: &[u8]| {
            sink.lock().unwrap().push(m.to_vec());
            Ok(())
        })
        .unwrap();
    (reader, got)
}

fn wait_for(got: &Mutex<Vec<Vec<u8>>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().len() < n {
        assert!(Instant::now() < deadline, "waited for {n} messages");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn names_parse_as_the_go_net_package_reads_them() {
    let cases: [(&[u8], Result<SocketAddress, &str>); 7] = [
        (
            b"/run/a.sock",
            Ok(SocketAddress::Path("/run/a.sock".into())),
        ),
        (b"rel/a.sock", Ok(SocketAddress::Path("rel/a.sock".into()))),
        (b"@app", Ok(SocketAddress::Abstract(b"app".to_vec()))),
        (b"\0app", Ok(SocketAddress::Abstract(b"app".to_vec()))),
        (b"@", Ok(SocketAddress::Abstract(Vec::new()))),
        (b"a@b", Ok(SocketAddress::Path("a@b".into()))),
        (b"a\0b", Err("NUL")),
    ];
    for (name, want) in cases {
        use std::os::unix::ffi::OsStrExt;
        let got = SocketAddress::parse(Path::new(std::ffi::OsStr::from_bytes(name)));
        match (got, want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "{name:?}"),
            (Err(ConfigError::NulInPath { .. }), Err("NUL")) => {}
            (g, w) => panic!("{name:?}: got {g:?}, want {w:?}"),
        }
    }
}

#[test]
fn abstract_name_length_counts_the_at_sign_as_go_does() {
    let max = udsipc::max_socket_path_len();
    let fits = format!("@{}", "n".repeat(max - 1));
    assert!(SocketAddress::parse(Path::new(&fits)).is_ok());
    let over = format!("@{}", "n".repeat(max));
    assert!(matches!(
        SocketAddress::parse(Path::new(&over)),
        Err(ConfigError::PathTooLong { .. })
    ));
}

#[test]
fn at_name_binds_the_abstract_namespace_and_creates_no_file() {
    let name = unique_name("bind");
    let (reader, got) = collecting_reader(&name);
    assert!(abstract_bound(&name), "{name} not in /proc/net/unix");
    assert!(
        !Path::new(&name).exists(),
        "a file named {name} was created"
    );
    let addr = SocketAddr::from_abstract_name(&name.as_bytes()[1..]).unwrap();
    let mut conn = UnixStream::connect_addr(&addr).unwrap();
    conn.write_all(&[2, b'h', b'i']).unwrap();
    wait_for(&got, 1);
    reader.stop_blocking(STOP).unwrap();
    assert_eq!(*got.lock().unwrap(), [b"hi".to_vec()]);
    assert!(!abstract_bound(&name), "the name outlived the reader");
}

#[test]
fn writer_to_at_name_reaches_the_abstract_reader() {
    let name = unique_name("write");
    let (reader, got) = collecting_reader(&name);
    let writer = Writer::builder(&name).start().unwrap();
    writer.try_send(b"one").unwrap();
    writer.try_send(b"two").unwrap();
    writer.stop_blocking(STOP).unwrap();
    wait_for(&got, 2);
    reader.stop_blocking(STOP).unwrap();
    assert_eq!(*got.lock().unwrap(), [b"one".to_vec(), b"two".to_vec()]);
}

#[test]
fn leading_nul_and_at_sign_name_the_same_socket() {
    use std::os::unix::ffi::OsStrExt;
    let name = unique_name("nul");
    let (reader, got) = collecting_reader(&name);
    let mut nul = vec![0u8];
    nul.extend_from_slice(&name.as_bytes()[1..]);
    let nul_name = PathBuf::from(std::ffi::OsStr::from_bytes(&nul));
    let writer = Writer::builder(&nul_name).start().unwrap();
    writer.try_send(b"x").unwrap();
    writer.stop_blocking(STOP).unwrap();
    wait_for(&got, 1);
    reader.stop_blocking(STOP).unwrap();
}

#[test]
fn second_reader_on_a_bound_abstract_name_is_refused() {
    let name = unique_name("twice");
    let (first, _) = collecting_reader(&name);
    let err = Reader::builder(&name)
        .systemd(false)
        .start(|_: &[u8]| Ok(()))
        .unwrap_err();
    assert!(matches!(err, StartError::Bind { .. }), "{err}");
    assert!(err.to_string().to_lowercase().contains("in use"), "{err}");
    first.stop_blocking(STOP).unwrap();
    // The name is free again once its socket is closed: nothing stale.
    let (again, _) = collecting_reader(&name);
    again.stop_blocking(STOP).unwrap();
}

#[test]
fn a_file_named_like_the_abstract_name_is_left_alone() {
    // The Go reference removes a file called `@name` in its working
    // directory when it starts and stops a reader on `@name`; ours never
    // touches the file system for an abstract name.
    let name = unique_name("file");
    let file = PathBuf::from(&name);
    std::fs::write(&file, b"keep").unwrap();
    let (reader, _) = collecting_reader(&name);
    reader.stop_blocking(STOP).unwrap();
    let kept = std::fs::read(&file);
    let _ = std::fs::remove_file(&file);
    assert_eq!(kept.unwrap(), b"keep");
}

#[test]
fn a_name_with_an_inner_nul_is_refused_by_reader_and_writer() {
    use std::os::unix::ffi::OsStrExt;
    let bad = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/a\0b.sock"));
    let err = Reader::builder(bad).start(|_: &[u8]| Ok(())).unwrap_err();
    assert!(
        matches!(err, StartError::Config(ConfigError::NulInPath { .. })),
        "{err}"
    );
    let err = Writer::builder(bad).start().unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
}
