//! The Reader's delivery paths on runtimes given from a plain thread: the
//! connection tasks spawn and register their sockets inside the accept
//! task (no runtime entered by the caller), the dedicated slots and the
//! blocking-pool burst share one path, and a handler's panic is an error.
//! Real sockets, no timing assertions.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::*;
use rstest::rstest;
use tokio::runtime::Handle;
use udsipc::{Reader, ReaderBuilder, StopError};

const STOP: Duration = Duration::from_secs(20);

/// A runtime driven by a thread of its own until dropped; the test thread
/// itself is outside any runtime.
struct Driven {
    handle: Handle,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Driven {
    fn new(current_thread: bool) -> Self {
        let rt = match current_thread {
            true => tokio::runtime::Builder::new_current_thread(),
            false => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(2);
                b
            }
        }
        .enable_all()
        .build()
        .unwrap();
        let handle = rt.handle().clone();
        let (shutdown, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async {
                let _ = rx.await;
            });
            // Waits for the blocking pool's threads.
            drop(rt);
        });
        Self {
            handle,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// Shuts the runtime down and waits until it is gone.
    fn finish(mut self) {
        drop(self.shutdown.take());
        self.thread.take().unwrap().join().unwrap();
    }
}

/// The dedicated slots a Reader has (see `SyncDelivery`).
fn slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

fn body(conn: u32, seq: u32) -> Vec<u8> {
    let mut b = conn.to_le_bytes().to_vec();
    b.extend_from_slice(&seq.to_le_bytes());
    b
}

fn ids(b: &[u8]) -> (u32, u32) {
    let n = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    (n(0), n(4))
}

/// Every seventh message's handler panics.
fn panics(seq: u32) -> bool {
    seq % 7 == 3
}

#[derive(Clone, Copy, Debug)]
enum Path {
    SyncMayBlock,
    SyncInline,
    Async,
    Incoming,
}

#[rstest]
fn every_delivery_path_serves_a_runtime_given_from_a_plain_thread(
    #[values(Path::SyncMayBlock, Path::SyncInline, Path::Async, Path::Incoming)] path: Path,
    #[values(true, false)] current_thread: bool,
) {
    // More busy connections than dedicated slots: some take the burst path.
    let conns = (2 * slots() + 2) as u32;
    let per_conn = 400u32;
    let rt = Driven::new(current_thread);
    let sock = temp_sock();
    let got = Arc::new(Mutex::new(Vec::<(u32, u32)>::new()));
    let builder = Reader::builder(&sock.path)
        .systemd(false)
        .runtime(rt.handle.clone());
    let record = {
        let got = Arc::clone(&got);
        move |b: &[u8]| {
            let id = ids(b);
            got.lock().unwrap().push(id);
            assert!(!panics(id.1), "handler panic {id:?}");
            Ok(())
        }
    };
    let (reader, consumer) = match path {
        Path::SyncMayBlock => (builder.start(record).unwrap(), None),
        Path::SyncInline => (
            builder.handler_may_block(false).start(record).unwrap(),
            None,
        ),
        Path::Async => {
            let record = Arc::new(record);
            let reader = builder
                .start_async(move |m| {
                    let record = Arc::clone(&record);
                    async move {
                        tokio::task::yield_now().await;
                        record(&m.body)
                    }
                })
                .unwrap();
            (reader, None)
        }
        Path::Incoming => {
            let (reader, mut incoming) = builder.incoming().unwrap();
            let got = Arc::clone(&got);
            let consumer = rt.handle.spawn(async move {
                while let Some(m) = incoming.recv().await {
                    got.lock().unwrap().push(ids(&m.body));
                }
            });
            (reader, Some(consumer))
        }
    };
    let writers: Vec<_> = (0..conns)
        .map(|c| {
            let path = sock.path.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&path).unwrap();
                for chunk in (0..per_conn).collect::<Vec<_>>().chunks(100) {
                    let bodies: Vec<Vec<u8>> = chunk.iter().map(|&i| body(c, i)).collect();
                    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
                    s.write_all(&frames(&refs)).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    // Everything written is in the kernel: a graceful stop delivers it all.
    reader.stop_blocking(STOP).unwrap();
    if let Some(consumer) = consumer {
        rt.handle.block_on(consumer).unwrap();
    }
    let got = got.lock().unwrap().clone();
    let total = u64::from(conns * per_conn);
    assert_eq!(got.len() as u64, total, "lost or duplicated");
    for c in 0..conns {
        let seqs: Vec<u32> = got.iter().filter(|id| id.0 == c).map(|id| id.1).collect();
        assert_eq!(seqs, (0..per_conn).collect::<Vec<_>>(), "connection {c}");
    }
    let m = reader.metrics();
    let failed = match path {
        Path::Incoming => 0,
        _ => u64::from(conns * (0..per_conn).filter(|&s| panics(s)).count() as u32),
    };
    assert_eq!((m.received, m.errors), (total - failed, failed));
    assert_eq!(
        (m.connections, m.active_connections, m.unhandled),
        (u64::from(conns), 0, 0)
    );
    drop(reader);
    rt.finish();
}

/// A gate every handler call waits at until opened.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    entered: AtomicU64,
    calls: AtomicU64,
}

impl Gate {
    fn pass(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// A Reader whose handler blocks at `gate` (may block: on the blocking pool
/// or in `block_in_place`), with one more stuck connection than there are
/// dedicated slots, so one of them is served without a slot; the last
/// client is idle.
fn stuck_reader(
    rt: &Driven,
    sock: &TempSock,
    gate: &Arc<Gate>,
    builder: impl FnOnce(ReaderBuilder) -> ReaderBuilder,
) -> (Reader, Vec<UnixStream>) {
    let g = Arc::clone(gate);
    let reader = builder(
        Reader::builder(&sock.path)
            .systemd(false)
            .runtime(rt.handle.clone()),
    )
    .start(move |_: &[u8]| {
        g.pass();
        Ok(())
    })
    .unwrap();
    // One more, idle: once it is accepted, the others were admitted.
    let mut clients: Vec<UnixStream> = (0..slots() + 2)
        .map(|_| UnixStream::connect(&sock.path).unwrap())
        .collect();
    eventually("every connection accepted", || {
        reader.metrics().connections == clients.len() as u64
    });
    // All of this process, admitted before any held a byte: none waits for
    // an older one's turn.
    let n = clients.len() as u64 - 1;
    for (c, s) in clients.iter_mut().take(n as usize).enumerate() {
        let bodies: Vec<Vec<u8>> = (0..10).map(|i| body(c as u32, i)).collect();
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        s.write_all(&frames(&refs)).unwrap();
    }
    eventually("every connection's handler entered", || {
        gate.entered.load(Ordering::SeqCst) == n
    });
    (reader, clients)
}

/// The client side sees the Reader close its connection.
fn closed_by_reader(s: &mut UnixStream) {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    match s.read(&mut [0u8; 16]) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("connection not closed: {other:?}"),
    }
}

#[rstest]
fn a_forced_stop_past_handlers_stuck_with_and_without_a_slot_returns_and_counts(
    #[values(true, false)] current_thread: bool,
) {
    let rt = Driven::new(current_thread);
    let sock = temp_sock();
    let gate = Arc::new(Gate::default());
    let (reader, mut clients) = stuck_reader(&rt, &sock, &gate, |b| b);
    let n = clients.len() as u64 - 1;
    let err = reader.stop_blocking(Duration::from_millis(50)).unwrap_err();
    let StopError::ConnectionsCut {
        connections,
        abandoned,
        ..
    } = err
    else {
        panic!("unexpected: {err:?}");
    };
    // Every call is held at the gate: all of them are abandoned.
    // The idle one ended in the drain.
    assert_eq!((connections, abandoned), (n, n));
    assert_eq!(reader.metrics().abandoned_handlers, n);
    gate.open();
    eventually("every connection ended", || {
        reader.metrics().active_connections == 0
    });
    for s in &mut clients {
        closed_by_reader(s);
    }
    let m = reader.metrics();
    // A call that finished after the stop is still counted, once.
    assert_eq!(m.received, gate.calls.load(Ordering::SeqCst));
    assert!(m.received + m.unhandled <= n * 10, "{m:?}");
    drop(reader);
    rt.finish();
}

#[rstest]
fn dropping_a_reader_past_stuck_handlers_closes_every_connection(
    #[values(true, false)] current_thread: bool,
) {
    let rt = Driven::new(current_thread);
    let sock = temp_sock();
    let gate = Arc::new(Gate::default());
    let (reader, mut clients) = stuck_reader(&rt, &sock, &gate, |b| b);
    drop(reader);
    assert!(!sock.path.exists());
    gate.open();
    for s in &mut clients {
        closed_by_reader(s);
    }
    rt.finish();
}

#[rstest]
fn a_runtime_shut_down_under_handlers_stuck_on_its_pool_ends_cleanly(
    #[values(true, false)] current_thread: bool,
) {
    // The runtime's shutdown drops the connection tasks waiting for their
    // pool threads, and waits for those threads: once the handlers return,
    // the threads give up the connections and the runtime is gone.
    let rt = Driven::new(current_thread);
    let sock = temp_sock();
    let gate = Arc::new(Gate::default());
    let (reader, mut clients) = stuck_reader(&rt, &sock, &gate, |b| b);
    let Driven {
        shutdown, thread, ..
    } = rt;
    drop(shutdown);
    gate.open();
    thread.unwrap().join().unwrap();
    for s in &mut clients {
        closed_by_reader(s);
    }
    assert!(matches!(
        reader.stop_blocking(STOP),
        Err(StopError::RuntimeGone)
    ));
    assert!(reader.metrics().received <= gate.calls.load(Ordering::SeqCst));
}
