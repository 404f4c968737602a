//! Order across reconnects: what one writer process sent on an older
//! connection is handed over before anything it sends on a newer one.
//!
//! A Writer reconnects only after its old connection died, but the Reader may
//! still hold (in its buffer or in the kernel's receive queue) bytes that the
//! writer sent on the old connection. Without a rule, the two connections'
//! tasks would hand messages over concurrently and one writer's messages
//! could arrive out of order. The rule: when a connection arrives from
//! process P (`SO_PEERCRED`), it records, for every older open connection of
//! P, how many bytes that connection has received so far plus what waits in
//! its kernel queue (`FIONREAD`), and delivers nothing until each older
//! connection has handed over that many bytes or closed. Bytes the older
//! connection receives later do not hold the new one back, so independent
//! writers in one process still run concurrently.
//!
//! Nor does a frame the older connection has only begun: once it has read
//! those bytes and handed over every whole frame, with nothing more to
//! read, they count as handed over. A writer reconnects only after closing
//! its old connection, so a frame cut there never completes (the writer
//! sends it again on the new one); a frame that does complete later comes
//! from another, independent writer of the process. Waiting for it would
//! hold the newer connection back for as long as that writer takes: each
//! of our Writers begins a connection with a one-byte probe, so 64 Writers
//! of one process starting together waited for one another's probes in
//! turn (up to seconds).
//!
//! This module owns only that bookkeeping; the connection task reports what
//! it read and handed over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use super::info::Socket;
use crate::sys;

/// One open connection's progress, as seen by newer connections of the
/// same process.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Bytes read from the socket; written under the lock together with the
    /// read itself, so that `read + FIONREAD` is an exact snapshot.
    read: Mutex<ReadState>,
    handed_over: AtomicU64,
    waiters: AtomicUsize,
    /// Newer connections waiting to measure this one (see
    /// [`snapshot`](Self::snapshot)): reads that wait are not begun
    /// meanwhile.
    measuring: AtomicUsize,
    changed: Notify,
}

#[derive(Debug, Default)]
struct ReadState {
    total: u64,
    closed: bool,
    /// A read that waits is under way, outside the lock: `total` may lag
    /// what the socket has given up, so no snapshot may be taken now.
    waiting: bool,
}

impl Progress {
    /// Runs a read of this connection's socket and counts what it read,
    /// atomically with respect to [`OrderBook::admit`]'s snapshot.
    pub(crate) fn read_with<T>(&self, read: impl FnOnce() -> (usize, T)) -> T {
        let mut st = self.lock();
        let (n, out) = read();
        st.total += n as u64;
        out
    }

    /// [`read_with`](Self::read_with) for a read that may wait (on a
    /// dedicated thread, bounded by the socket's receive timeout): it runs
    /// outside the lock, marked as under way, so that a newer connection
    /// arriving meanwhile takes its snapshot once it is over (see
    /// [`Turn::wait`]) instead of waiting for the lock. `None`, without
    /// reading, while a newer connection waits to take one: the caller
    /// reads without waiting from then on (back in its task), so the
    /// snapshot waits for one read at most.
    pub(crate) fn read_waiting_with<T>(&self, read: impl FnOnce() -> (usize, T)) -> Option<T> {
        {
            let mut st = self.lock();
            // SeqCst pairs with `snapshot`, which counts itself in first.
            if self.measuring.load(Ordering::SeqCst) > 0 {
                return None;
            }
            st.waiting = true;
        }
        let (n, out) = read();
        {
            let mut st = self.lock();
            st.total += n as u64;
            st.waiting = false;
        }
        if self.measuring.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
        Some(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReadState> {
        self.read.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no read that waits is under way, then returns what this
    /// connection has received so far plus what waits in its kernel queue
    /// (`u64::MAX` if that cannot be asked: the close is waited for then);
    /// 0 once closed.
    async fn snapshot(&self, socket: &Weak<std::os::unix::net::UnixStream>) -> u64 {
        self.wait_for(&self.measuring, || target_of(&self.lock(), socket))
            .await
    }

    /// Waits until `check` answers, woken by every change it may look at;
    /// counted meanwhile in `counter`, which whoever makes such a change
    /// reads (SeqCst, after the change) to know whether to notify.
    async fn wait_for<T>(&self, counter: &AtomicUsize, mut check: impl FnMut() -> Option<T>) -> T {
        counter.fetch_add(1, Ordering::SeqCst);
        let _registered = crate::runtime::OnCancel::new(|| {
            counter.fetch_sub(1, Ordering::SeqCst);
        });
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(answer) = check() {
                return answer;
            }
            notified.await;
        }
    }

    /// The first `total` bytes of the stream no longer hold a newer
    /// connection back: their whole frames were handed over, and what is
    /// left of them is at most the start of a frame whose end has not
    /// arrived (see [`OrderBook`]). Never goes back.
    pub(crate) fn set_handed_over(&self, total: u64) {
        self.handed_over.fetch_max(total, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until `target` bytes were handed over or the connection closed.
    async fn reached(&self, target: u64) {
        self.wait_for(&self.waiters, || {
            (self.handed_over.load(Ordering::SeqCst) >= target || self.is_closed()).then_some(())
        })
        .await;
    }
}

/// How far a connection whose state is `st` must get before a connection
/// arriving now may deliver: what it received plus what waits in its kernel
/// queue (`u64::MAX` if that cannot be asked: its close is waited for
/// then); 0 if it is closed; `None` while a read that waits is under way.
fn target_of(st: &ReadState, socket: &Weak<std::os::unix::net::UnixStream>) -> Option<u64> {
    if st.closed {
        return Some(0);
    }
    if st.waiting {
        return None;
    }
    // The socket is open while its connection is not closed; a failed
    // query waits for the close instead.
    let unread = socket
        .upgrade()
        .map_or(Ok(0), |s| sys::unread_bytes(&*s))
        .map_or(u64::MAX, |n| n as u64);
    Some(st.total.saturating_add(unread))
}

/// An older connection a new one waits for, and how far (`None`: found in
/// a read that waits; measured once that read is over).
#[derive(Debug)]
pub(crate) struct Wait {
    progress: Arc<Progress>,
    socket: Weak<std::os::unix::net::UnixStream>,
    target: Option<u64>,
}

/// What a new connection must wait for before it delivers anything.
#[derive(Debug, Default)]
pub(crate) struct Turn(Vec<Wait>);

impl Turn {
    /// Resolves once every older connection of the same process has handed
    /// over what it held when this one arrived.
    pub(crate) async fn wait(self) {
        for w in self.0 {
            let target = match w.target {
                Some(t) => t,
                // Measured later than this connection's arrival, so maybe
                // more than it held then: waiting for more is still in order.
                None => w.progress.snapshot(&w.socket).await,
            };
            w.progress.reached(target).await;
        }
    }

    /// Whether there is nothing to wait for.
    pub(crate) fn is_free(&self) -> bool {
        self.0.is_empty()
    }
}

/// Unregisters a connection from the book when it ends (however it ends).
#[derive(Debug)]
pub(crate) struct Registration {
    book: Arc<OrderBook>,
    pid: i32,
    progress: Arc<Progress>,
}

impl Registration {
    pub(crate) fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.progress.close();
        let mut by_pid = self.book.lock();
        if let Some(list) = by_pid.get_mut(&self.pid) {
            list.retain(|e| !Arc::ptr_eq(&e.progress, &self.progress));
            if list.is_empty() {
                by_pid.remove(&self.pid);
            }
        }
    }
}

#[derive(Debug)]
struct Entry {
    progress: Arc<Progress>,
    socket: Weak<std::os::unix::net::UnixStream>,
}

/// The open connections of each peer process.
#[derive(Debug, Default)]
pub(crate) struct OrderBook {
    by_pid: Mutex<HashMap<i32, Vec<Entry>>>,
}

impl OrderBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Vec<Entry>>> {
        self.by_pid.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection of process `pid` and returns what it must
    /// wait for. `pid` `None` (credentials unavailable) waits for nothing.
    pub(crate) fn admit(
        self: &Arc<Self>,
        pid: Option<i32>,
        socket: &Socket,
    ) -> (Option<Registration>, Turn) {
        let Some(pid) = pid.filter(|p| *p > 0) else {
            return (None, Turn::default());
        };
        let progress = Arc::new(Progress::default());
        let mut by_pid = self.lock();
        let list = by_pid.entry(pid).or_default();
        let mut turn = Vec::new();
        for e in list.iter() {
            let st = e.progress.lock();
            if st.closed {
                continue;
            }
            turn.push(Wait {
                progress: Arc::clone(&e.progress),
                socket: e.socket.clone(),
                target: target_of(&st, &e.socket),
            });
        }
        list.push(Entry {
            progress: Arc::clone(&progress),
            socket: Arc::downgrade(socket),
        });
        drop(by_pid);
        let reg = Registration {
            book: Arc::clone(self),
            pid,
            progress,
        };
        (Some(reg), Turn(turn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn socket() -> (UnixStream, Socket) {
        let (peer, ours) = UnixStream::pair().unwrap();
        (peer, Arc::new(ours))
    }

    /// A newer connection arriving while the older one is inside a read
    /// that waits measures the older one once that read is over, so it also
    /// waits for what the read took (measured during the read, the older
    /// one's count would have missed it).
    #[tokio::test]
    async fn a_newer_connection_measures_an_older_one_after_its_waiting_read() {
        let book = Arc::new(OrderBook::default());
        let pid = Some(4242);
        let (_older_peer, older_socket) = socket();
        let (older, turn) = book.admit(pid, &older_socket);
        assert!(turn.is_free());
        let progress = Arc::clone(older.as_ref().unwrap().progress());
        let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
        let (finish, finish_rx) = std::sync::mpsc::channel::<()>();
        let reading = std::thread::spawn({
            let progress = Arc::clone(&progress);
            move || {
                progress.read_waiting_with(|| {
                    entered_tx.send(()).unwrap();
                    finish_rx.recv().unwrap();
                    (10, ())
                })
            }
        });
        entered.recv().unwrap();
        let (_newer_peer, newer_socket) = socket();
        let (_newer, turn) = book.admit(pid, &newer_socket);
        assert!(!turn.is_free());
        let turn = tokio::spawn(turn.wait());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!turn.is_finished(), "the read is still under way");
        finish.send(()).unwrap();
        reading.join().unwrap();
        // The measurement is pending: no read that waits begins meanwhile.
        let next = progress.read_waiting_with(|| -> (usize, ()) { panic!("read while measured") });
        assert!(next.is_none());
        // The 10 bytes the read took count: handing over fewer is not enough.
        progress.set_handed_over(9);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!turn.is_finished(), "9 of the 10 bytes handed over");
        progress.set_handed_over(10);
        turn.await.unwrap();
    }

    #[tokio::test]
    async fn a_closed_older_connection_holds_nothing_back() {
        let book = Arc::new(OrderBook::default());
        let (mut older_peer, older_socket) = socket();
        std::io::Write::write_all(&mut older_peer, b"unread").unwrap();
        let (older, _) = book.admit(Some(7), &older_socket);
        let (_newer_peer, newer_socket) = socket();
        let (_newer, turn) = book.admit(Some(7), &newer_socket);
        assert!(!turn.is_free(), "6 unread bytes to wait for");
        drop(older);
        turn.wait().await;
    }
}
