//! Reader behaviour over real Unix sockets, driven by raw client sockets
//! writing hand-made bytes (Go: reader_test.go).

mod common;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use rstest::rstest;
use udsipc::{ConfigError, Reader, ReaderError, StartError, StopError};

const STOP: Duration = Duration::from_secs(10);

fn start(sock: &TempSock, c: &Collector, errs: &Errors) -> Reader {
    Reader::builder(&sock.path)
        .systemd(false)
        .on_error(errs.reader_callback())
        .start(c.handler())
        .unwrap()
}

fn connect(sock: &TempSock) -> UnixStream {
    UnixStream::connect(&sock.path).unwrap()
}

#[test]
fn empty_path_is_a_config_error() {
    let err = Reader::builder("").start(|_: &[u8]| Ok(())).unwrap_err();
    assert!(
        matches!(err, StartError::Config(ConfigError::EmptyPath)),
        "{err}"
    );
}

#[test]
fn too_long_path_names_the_platform_limit() {
    let long = format!("/tmp/{}", "x".repeat(udsipc::max_socket_path_len()));
    let err = Reader::builder(&long).start(|_: &[u8]| Ok(())).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&udsipc::max_socket_path_len().to_string()) && text.contains("sun_path"),
        "{text}"
    );
}

#[test]
fn zero_inactivity_timeout_is_refused() {
    let sock = temp_sock();
    let err = Reader::builder(&sock.path)
        .inactivity_timeout(Duration::ZERO)
        .start(|_: &[u8]| Ok(()))
        .unwrap_err();
    assert!(matches!(
        err,
        StartError::Config(ConfigError::Zero {
            option: "inactivity_timeout"
        })
    ));
}

#[test]
fn parent_directory_is_created_with_mode_0750() {
    let sock = temp_sock();
    let path = sock.dir.path().join("a/b/app.sock");
    let reader = Reader::builder(&path)
        .systemd(false)
        .start(|_: &[u8]| Ok(()))
        .unwrap();
    let mode = std::fs::metadata(sock.dir.path().join("a/b"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750 & !umask());
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket()
    );
    reader.stop_blocking(STOP).unwrap();
    assert!(!path.exists(), "socket file removed at stop");
}

fn umask() -> u32 {
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(old);
    old.bits()
}

#[test]
fn frames_are_delivered_in_order_with_metrics() {
    let sock = temp_sock();
    let (c, errs) = (Collector::new(), Errors::default());
    let reader = start(&sock, &c, &errs);
    let mut s = connect(&sock);
    s.write_all(&frames(&[b"hello", b"", b"world", &[0u8; 300]]))
        .unwrap();
    assert_eq!(
        c.take(3),
        [b"hello".to_vec(), b"world".to_vec(), vec![0u8; 300]]
    );
    drop(s);
    reader.stop_blocking(STOP).unwrap();
    let m = reader.metrics();
    assert_eq!((m.received, m.connections, m.errors), (3, 1, 0));
    assert!(errs.list().is_empty(), "{:?}", errs.list());
}

/// Raw inputs and what the Reader must do with them (Go-exact).
#[rstest]
#[case::zero_length_skipped(vec![0, 1, b'a', 0], vec![b"a".to_vec()], 0)]
#[case::non_minimal_prefix_accepted(vec![0x83, 0x00, b'a', b'b', b'c'], vec![b"abc".to_vec()], 0)]
#[case::overflow_10th_byte(vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], vec![], 1)]
#[case::eleven_byte_prefix(vec![0xff; 11], vec![], 1)]
#[case::truncated_prefix_then_eof(vec![1, b'z', 0x80], vec![b"z".to_vec()], 1)]
#[case::truncated_body_then_eof(vec![5, b'a', b'b'], vec![], 1)]
#[case::oversized_declared_length(vec![0x81, 0x08], vec![], 1)] // 1025 > 1024
#[case::exact_max_delivered(
    { let mut v = vec![0x80, 0x08]; v.extend(vec![7u8; 1024]); v },
    vec![vec![7u8; 1024]], 0
)]
#[case::huge_declared_length_allocates_nothing(vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], vec![], 1)]
fn raw_input_is_classified_like_go(
    #[case] input: Vec<u8>,
    #[case] delivered: Vec<Vec<u8>>,
    #[case] errors: u64,
) {
    let sock = temp_sock();
    let (c, errs) = (Collector::new(), Errors::default());
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .max_message_size(1024)
        .on_error(errs.reader_callback())
        .start(c.handler())
        .unwrap();
    let mut s = connect(&sock);
    s.write_all(&input).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    // The Reader closes its side when the stream ends or is rejected.
    let _ = read_to_end(&mut s);
    assert_eq!(c.take(delivered.len()), delivered);
    eventually("connection closed", || {
        reader.metrics().active_connections == 0
    });
    reader.stop_blocking(STOP).unwrap();
    c.assert_empty();
    assert_eq!(reader.metrics().errors, errors, "{:?}", errs.list());
    assert_eq!(errs.list().len() as u64, errors);
}

#[test]
fn protocol_errors_carry_go_context_strings() {
    let sock = temp_sock();
    let (c, errs) = (Collector::new(), Errors::default());
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .max_message_size(10)
        .on_error(errs.reader_callback())
        .start(c.handler())
        .unwrap();
    for input in [&[11u8][..], &[0xff; 11][..], &[3, 1][..]] {
        let mut s = connect(&sock);
        s.write_all(input).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let _ = read_to_end(&mut s);
    }
    eventually("three errors", || reader.metrics().errors == 3);
    reader.stop_blocking(STOP).unwrap();
    let mut list = errs.list();
    list.sort();
    assert!(
        list[0].starts_with("failed to read the complete message"),
        "{list:?}"
    );
    assert!(
        list[1].starts_with("failed to read the length prefix"),
        "{list:?}"
    );
    assert!(list[2].starts_with("message too large"), "{list:?}");
}

#[test]
fn frames_split_at_every_byte_are_reassembled() {
    let sock = temp_sock();
    let (c, errs) = (Collector::new(), Errors::default());
    let reader = start(&sock, &c, &errs);
    let big = vec![0x5au8; 20_000];
    let wire = frames(&[b"a", &big, &[1u8; 128], b"end"]);
    let mut s = connect(&sock);
    for b in &wire {
        s.write_all(std::slice::from_ref(b)).unwrap();
        s.flush().unwrap();
    }
    assert_eq!(
        c.take(4),
        [b"a".to_vec(), big, vec![1u8; 128], b"end".to_vec()]
    );
    reader.stop_blocking(STOP).unwrap();
    assert_eq!(reader.metrics().errors, 0);
}

#[test]
fn many_frames_in_one_write_are_all_delivered_in_order() {
    let sock = temp_sock();
    let (c, errs) = (Collector::new(), Errors::default());
    let reader = start(&sock, &c, &errs);
    let msgs: Vec<Vec<u8>> = (0..5000u32)
        .map(|i| i.to_le_bytes().repeat(1 + (i % 7) as usize))
        .collect();
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    let mut s = connect(&sock);
    s.write_all(&frames(&refs)).unwrap();
    assert_eq!(c.take(msgs.len()), msgs);
    reader.stop_blocking(STOP).unwrap();
}

#[test]
fn handler_error_is_counted_and_connection_stays_open() {
    let sock = temp_sock();
    let errs = Errors::default();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let tx = std::sync::Mutex::new(tx);
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .on_error(errs.reader_callback())
        .start(move |m: &[u8]| {
            tx.lock().unwrap().send(m.to_vec()).unwrap();
            if m == b"bad" {
                Err("refused".into())
            } else {
                Ok(())
            }
        })
        .unwrap();
    let mut s = connect(&sock);
    s.write_all(&frames(&[b"ok1", b"bad", b"ok2"])).unwrap();
    for want in [&b"ok1"[..], b"bad", b"ok2"] {
        assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), want);
    }
    drop(s);
    reader.stop_blocking(STOP).unwrap();
    let m = reader.metrics();
    assert_eq!((m.received, m.errors, m.connections), (2, 1, 1));
    assert!(errs.list()[0].starts_with("handler failed to process a message"));
}

#[test]
fn handler_panic_is_contained_and_counted() {
    let sock = temp_sock();
    let c = Collector::new();
    let inner = c.handler();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .start(move |m: &[u8]| {
            if m == b"boom" {
                panic!("boom");
            }
            inner(m)
        })
        .unwrap();
    let mut s = connect(&sock);
    s.write_all(&frames(&[b"boom", b"after"])).unwrap();
    assert_eq!(c.take(1), [b"after".to_vec()]);
    reader.stop_blocking(STOP).unwrap();
    assert_eq!(reader.metrics().errors, 1);
}

#[test]
fn idle_connection_is_closed_quietly_after_inactivity_timeout() {
    let sock = temp_sock();
    let (c, errs) = (Collector::new(), Errors::default());
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .inactivity_timeout(Duration::from_millis(100))
        .on_error(errs.reader_callback())
        .start(c.handler())
        .unwrap();
    let mut s = connect(&sock);
    s.write_all(&frames(&[b"one"])).unwrap();
    // Half a prefix: still a quiet close in Go.
    s.write_all(&[0x80]).unwrap();
    assert_eq!(c.take(1), [b"one".to_vec()]);
    // The reader closes the connection: we see EOF.
    assert_eq!(read_to_end(&mut s), Vec::<u8>::new());
    reader.stop_blocking(STOP).unwrap();
    assert_eq!(reader.metrics().errors, 0, "{:?}", errs.list());
}

#[test]
fn timeout_inside_a_body_is_an_error() {
    let sock = temp_sock();
    let (c, errs) = (Collector::new(), Errors::default());
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .inactivity_timeout(Duration::from_millis(100))
        .on_error(errs.reader_callback())
        .start(c.handler())
        .unwrap();
    let mut s = connect(&sock);
    s.write_all(&[10, 1, 2, 3]).unwrap();
    assert_eq!(read_to_end(&mut s), Vec::<u8>::new());
    eventually("error counted", || reader.metrics().errors == 1);
    reader.stop_blocking(STOP).unwrap();
    assert!(
        errs.list()[0].contains("inside a message body (3 of 10 bytes)"),
        "{:?}",
        errs.list()
    );
}

#[test]
fn slow_drip_is_cut_off_by_the_per_frame_deadline() {
    // One byte every 30 ms of a 100-byte frame never completes within 300 ms.
    let sock = temp_sock();
    let (c, errs) = (Collector::new(), Errors::default());
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .inactivity_timeout(Duration::from_millis(300))
        .on_error(errs.reader_callback())
        .start(c.handler())
        .unwrap();
    let mut s = connect(&sock);
    s.write_all(&[100]).unwrap();
    let mut cut = false;
    for _ in 0..400 {
        std::thread::sleep(Duration::from_millis(30));
        if s.write_all(&[1]).is_err() {
            cut = true;
            break;
        }
    }
    assert!(cut, "the reader never cut the slow-drip connection");
    reader.stop_blocking(STOP).unwrap();
    assert_eq!(reader.metrics().errors, 1);
    c.assert_empty();
}

#[test]
fn stop_drains_what_is_already_in_the_kernel_buffer() {
    let sock = temp_sock();
    let (c, errs) = (Collector::new(), Errors::default());
    let reader = start(&sock, &c, &errs);
    let mut s = connect(&sock);
    s.write_all(&frames(&[b"first"])).unwrap();
    assert_eq!(c.take(1), [b"first".to_vec()]);
    // These sit in the socket buffer when the stop begins.
    let msgs: Vec<Vec<u8>> = (0..2000u32).map(|i| i.to_be_bytes().to_vec()).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    s.write_all(&frames(&refs)).unwrap();
    reader.stop_blocking(STOP).unwrap();
    assert_eq!(c.take(2000), msgs);
    assert_eq!(reader.metrics().received, 2001);
}

#[test]
fn stop_ends_a_partial_frame_as_truncated_and_refuses_later_bytes() {
    let sock = temp_sock();
    let (c, errs) = (Collector::new(), Errors::default());
    let reader = start(&sock, &c, &errs);
    let mut s = connect(&sock);
    s.write_all(&frames(&[b"first"])).unwrap();
    assert_eq!(c.take(1), [b"first".to_vec()]);
    s.write_all(&[50, 1, 2]).unwrap(); // a frame the stop will cut
    reader.stop_blocking(STOP).unwrap();
    assert_eq!(read_to_end(&mut s), Vec::<u8>::new(), "connection closed");
    // The rest of the frame is refused by the kernel, so a writer keeps it.
    let err = s.write_all(&[3; 48]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    assert_eq!(reader.metrics().errors, 1, "{:?}", errs.list());
    assert!(
        errs.list()[0].contains("2 of 50 bytes"),
        "{:?}",
        errs.list()
    );
}

#[test]
fn stop_under_load_hands_the_rest_to_the_next_reader_without_loss_or_duplicates() {
    let sock = temp_sock();
    let c = Collector::new();
    // The first reader's handler pauses at message 1000 until the stop has
    // begun, so the writer is still mid-stream when the drain starts.
    let reached = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let (r1, r2) = (reached.clone(), release.clone());
    let count = AtomicUsize::new(0);
    let inner = c.handler();
    let first = Reader::builder(&sock.path)
        .systemd(false)
        .start(move |m: &[u8]| {
            if count.fetch_add(1, Ordering::SeqCst) == 999 {
                r1.wait();
                r2.wait();
            }
            inner(m)
        })
        .unwrap();
    let writer = udsipc::Writer::builder(&sock.path)
        .max_buffered_writes(1_000_000)
        .write_timeout(Duration::from_secs(60))
        .initial_backoff(Duration::from_millis(10))
        .start()
        .unwrap();
    let total = 20_000u32;
    for i in 0..total {
        let mut m = i.to_le_bytes().to_vec();
        m.resize(1000, 0x11);
        writer.try_send(&m).unwrap();
    }
    reached.wait();
    let first = std::thread::spawn(move || {
        first.stop_blocking(STOP).unwrap();
        first
    });
    // Not a synchronisation: only makes it likely that the stop has begun.
    std::thread::sleep(Duration::from_millis(100));
    release.wait();
    let first = first.join().unwrap();
    let second = sock.reader(&c);
    writer.stop_blocking(STOP).unwrap();
    second.stop_blocking(STOP).unwrap();
    let (a, b) = (first.metrics().received, second.metrics().received);
    eprintln!(
        "first reader: {a}, second: {b}, writer: {:?}",
        writer.metrics()
    );
    let got: Vec<u32> = c
        .take((a + b) as usize)
        .iter()
        .map(|m| u32::from_le_bytes(m[..4].try_into().unwrap()))
        .collect();
    c.assert_empty();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "duplicated or reordered"
    );
    assert_eq!(got.len() as u64, u64::from(total), "lost messages");
    assert_eq!(writer.metrics().sent, u64::from(total));
}

#[test]
fn a_handler_running_at_the_deadline_finishes_in_the_grace_or_is_reported_abandoned() {
    // The stop is bounded (deadline plus a short grace) whatever the handler
    // does; it never interrupts a call, and says whether it left one running.
    let sock = temp_sock();
    let entered = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let done = Arc::new(AtomicUsize::new(0));
    let (e, r, d) = (entered.clone(), release.clone(), done.clone());
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .start(move |_: &[u8]| {
            e.wait();
            r.wait();
            d.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
    let mut s = connect(&sock);
    s.write_all(&frames(&[b"slow"])).unwrap();
    entered.wait();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        release.wait();
    });
    let err = reader.stop_blocking(Duration::from_millis(50)).unwrap_err();
    let StopError::ConnectionsCut {
        connections: 1,
        abandoned,
        ..
    } = err
    else {
        panic!("unexpected: {err:?}");
    };
    if abandoned == 0 {
        assert_eq!(done.load(Ordering::SeqCst), 1, "not abandoned: finished");
    }
    assert_eq!(reader.metrics().abandoned_handlers, abandoned);
    releaser.join().unwrap();
    eventually("the handler call ends", || done.load(Ordering::SeqCst) == 1);
}

#[test]
fn stop_is_idempotent_and_removes_the_socket() {
    let sock = temp_sock();
    let (c, errs) = (Collector::new(), Errors::default());
    let reader = start(&sock, &c, &errs);
    assert!(sock.path.exists());
    reader.stop_blocking(STOP).unwrap();
    reader.stop_blocking(STOP).unwrap();
    assert!(!sock.path.exists());
    assert!(UnixStream::connect(&sock.path).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stops_all_return() {
    let sock = temp_sock();
    let reader = Arc::new(
        Reader::builder(&sock.path)
            .systemd(false)
            .start(|_: &[u8]| Ok(()))
            .unwrap(),
    );
    let a = tokio::spawn({
        let r = reader.clone();
        async move { r.stop(STOP).await }
    });
    let b = tokio::spawn({
        let r = reader.clone();
        async move { r.stop(STOP).await }
    });
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
}

#[test]
fn new_connections_are_refused_once_stopping() {
    let sock = temp_sock();
    let (c, errs) = (Collector::new(), Errors::default());
    let reader = start(&sock, &c, &errs);
    let mut s = connect(&sock);
    s.write_all(&frames(&[b"x"])).unwrap();
    c.take(1);
    reader.stop_blocking(STOP).unwrap();
    assert!(UnixStream::connect(&sock.path).is_err());
}

#[test]
fn connections_are_counted() {
    let sock = temp_sock();
    let (c, errs) = (Collector::new(), Errors::default());
    let reader = start(&sock, &c, &errs);
    for i in 0..5u8 {
        let mut s = connect(&sock);
        s.write_all(&frames(&[&[i]])).unwrap();
        assert_eq!(c.take(1), [vec![i]]);
    }
    reader.stop_blocking(STOP).unwrap();
    let m = reader.metrics();
    assert_eq!((m.connections, m.received), (5, 5));
}

#[test]
fn existing_regular_file_is_left_untouched() {
    let sock = temp_sock();
    std::fs::write(&sock.path, b"precious").unwrap();
    let err = Reader::builder(&sock.path)
        .systemd(false)
        .start(|_: &[u8]| Ok(()))
        .unwrap_err();
    assert!(matches!(err, StartError::NotASocket { .. }), "{err}");
    assert_eq!(std::fs::read(&sock.path).unwrap(), b"precious");
}

#[test]
fn live_reader_is_not_replaced() {
    let sock = temp_sock();
    let first = Reader::builder(&sock.path)
        .systemd(false)
        .start(|_: &[u8]| Ok(()))
        .unwrap();
    let err = Reader::builder(&sock.path)
        .systemd(false)
        .start(|_: &[u8]| Ok(()))
        .unwrap_err();
    assert!(matches!(err, StartError::AddrInUse { .. }), "{err}");
    assert!(err.to_string().contains("t.sock"));
    first.stop_blocking(STOP).unwrap();
}

#[test]
fn stale_socket_is_replaced() {
    let sock = temp_sock();
    drop(std::os::unix::net::UnixListener::bind(&sock.path).unwrap());
    assert!(sock.path.exists());
    let (c, errs) = (Collector::new(), Errors::default());
    let reader = start(&sock, &c, &errs);
    let mut s = connect(&sock);
    s.write_all(&frames(&[b"hi"])).unwrap();
    c.take(1);
    reader.stop_blocking(STOP).unwrap();
}

#[test]
fn stop_never_removes_a_successors_socket() {
    let sock = temp_sock();
    let first = Reader::builder(&sock.path)
        .systemd(false)
        .start(|_: &[u8]| Ok(()))
        .unwrap();
    // Someone replaces the file while the first reader runs.
    std::fs::remove_file(&sock.path).unwrap();
    let second = std::os::unix::net::UnixListener::bind(&sock.path).unwrap();
    first.stop_blocking(STOP).unwrap();
    assert!(sock.path.exists(), "the successor's socket survived");
    drop(second);
}

#[test]
fn socket_mode_is_applied() {
    let sock = temp_sock();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .socket_mode(0o600)
        .start(|_: &[u8]| Ok(()))
        .unwrap();
    let mode = std::fs::metadata(&sock.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    reader.stop_blocking(STOP).unwrap();
}

#[test]
fn dropping_a_running_reader_cleans_up() {
    let sock = temp_sock();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .start(|_: &[u8]| Ok(()))
        .unwrap();
    drop(reader);
    assert!(!sock.path.exists());
}

#[test]
fn reader_runs_on_a_callers_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sock = temp_sock();
    let c = Collector::new();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .runtime(rt.handle().clone())
        .start(c.handler())
        .unwrap();
    let mut s = connect(&sock);
    s.write_all(&frames(&[b"on rt"])).unwrap();
    assert_eq!(c.take(1), [b"on rt".to_vec()]);
    rt.block_on(reader.stop(STOP)).unwrap();
}

#[test]
fn reader_error_reports_are_typed() {
    let e = ReaderError::Protocol(udsipc::frame::FrameError::PrefixOverflow);
    assert_eq!(e.context(), "failed to read the length prefix");
}

#[test]
fn stop_delivers_what_writers_sent_while_still_in_the_accept_backlog() {
    // A runtime nobody drives yet: the connection below stays in the backlog.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sock = temp_sock();
    let c = Collector::new();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .runtime(rt.handle().clone())
        .start(c.handler())
        .unwrap();
    let mut s = connect(&sock);
    s.write_all(&frames(&[b"queued before accept"])).unwrap();
    drop(s);
    rt.block_on(reader.stop(STOP)).unwrap();
    assert_eq!(c.take(1), [b"queued before accept".to_vec()]);
    assert_eq!(reader.metrics().connections, 1);
}

#[test]
fn parent_that_is_a_file_gives_a_clear_error() {
    let sock = temp_sock();
    let file = sock.dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = Reader::builder(file.join("app.sock"))
        .systemd(false)
        .start(|_: &[u8]| Ok(()))
        .unwrap_err();
    assert!(matches!(err, StartError::CreateDir { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("failed to create the socket directory"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_stop_forces_and_removes_the_socket() {
    let sock = temp_sock();
    let entered = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let (e, r) = (entered.clone(), release.clone());
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .start(move |_: &[u8]| {
            e.wait();
            r.wait();
            Ok(())
        })
        .unwrap();
    let mut s = connect(&sock);
    s.write_all(&frames(&[b"stuck"])).unwrap();
    tokio::task::spawn_blocking(move || entered.wait())
        .await
        .unwrap();
    let abandoned = tokio::time::timeout(
        Duration::from_millis(50),
        reader.stop(Duration::from_secs(3600)),
    )
    .await;
    assert!(abandoned.is_err());
    assert!(
        !sock.path.exists(),
        "the dropped stop removed the socket file"
    );
    tokio::task::spawn_blocking(move || release.wait())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while reader.metrics().active_connections > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection not forced closed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn a_panicking_error_callback_does_not_stop_the_reader() {
    let sock = temp_sock();
    let c = Collector::new();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .on_error(|_| panic!("callback bug"))
        .start(c.handler())
        .unwrap();
    let mut bad = connect(&sock);
    bad.write_all(&[0xff; 11]).unwrap();
    assert_eq!(read_to_end(&mut bad), Vec::<u8>::new());
    let mut good = connect(&sock);
    good.write_all(&frames(&[b"still here"])).unwrap();
    assert_eq!(c.take(1), [b"still here".to_vec()]);
    reader.stop_blocking(STOP).unwrap();
    assert_eq!(reader.metrics().errors, 1);
}

#[test]
fn a_listener_with_a_full_backlog_is_not_replaced_and_start_does_not_hang() {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket,
    };
    use std::os::fd::AsRawFd;
    let sock = temp_sock();
    let addr = UnixAddr::new(&sock.path).unwrap();
    let hung = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(hung.as_raw_fd(), &addr).unwrap();
    listen(&hung, Backlog::new(1).unwrap()).unwrap();
    // Fill the backlog of a listener that never accepts.
    let mut clients = Vec::new();
    loop {
        let c = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        let full = connect(c.as_raw_fd(), &addr).is_err();
        clients.push(c);
        if full || clients.len() > 64 {
            break;
        }
    }
    let err = Reader::builder(&sock.path)
        .systemd(false)
        .start(|_: &[u8]| Ok(()))
        .unwrap_err();
    assert!(matches!(err, StartError::AddrInUse { .. }), "{err}");
}

#[test]
fn handlers_started_with_info_learn_the_connection_number_and_peer_credentials() {
    let sock = temp_sock();
    type Seen = Vec<(Vec<u8>, u64, Option<u32>)>;
    let seen: Arc<std::sync::Mutex<Seen>> = Arc::default();
    let log = Arc::clone(&seen);
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .start_with_info(move |msg, conn| {
            let uid = conn.peer.map(|p| p.uid);
            log.lock().unwrap().push((msg.to_vec(), conn.id, uid));
            Ok(())
        })
        .unwrap();
    for body in [&b"first"[..], b"second"] {
        // Counted before the write: the handler may run before we look.
        let n = seen.lock().unwrap().len() + 1;
        let mut s = connect(&sock);
        s.write_all(&frames(&[body])).unwrap();
        eventually("the message", || seen.lock().unwrap().len() == n);
    }
    reader.stop_blocking(STOP).unwrap();
    let me = nix::unistd::getuid().as_raw();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (b"first".to_vec(), 1, Some(me)),
            (b"second".to_vec(), 2, Some(me))
        ]
    );
}
