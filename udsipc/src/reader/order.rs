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
//! Admission costs O(1) however many connections a process holds (it
//! walked every open connection of the process under one lock: 6,000 held
//! connections made every admission of that process, and through the
//! accept loop every other process's, wait). A newer connection can only be
//! held back by an older one that holds something, so only those are
//! visited: the ones whose task read bytes it has not handed over yet or is
//! inside a read that waits (*listed*, by the task itself, in O(1) per
//! change), and the ones with bytes in their kernel queue, which the kernel
//! names: each process with two or more open connections gets an `epoll`
//! set of them (level-triggered, read and hang-up interest), and a
//! zero-timeout `epoll_wait` returns the ready ones only; the kernel puts a
//! socket on that list when the peer's `send` queues bytes, before the
//! peer's next `connect` can return. Idle held connections cost nothing.
//! Each process has its own lock (the book's own is held for a map lookup,
//! and when a connection comes or goes), so no process's reads delay
//! another's. Where the `epoll` set cannot be had or refuses a socket
//! (another system, no descriptor left), every open connection of the
//! process is measured at every admission, as before, until a later
//! admission makes the set anew.
//!
//! This module owns only that bookkeeping; the connection task reports what
//! it read and handed over.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use super::info::Socket;
use super::lock;
use crate::sys;

/// One open connection's progress, as seen by newer connections of the
/// same process.
#[derive(Default)]
pub(crate) struct Progress {
    /// Bytes read from the socket; written under the lock together with the
    /// read itself, so that `read + FIONREAD` is an exact snapshot.
    read: Mutex<ReadState>,
    handed_over: AtomicU64,
    waiters: AtomicUsize,
    /// Newer connections waiting to measure this one (see
    /// [`Turn::wait`]): reads that wait are not begun
    /// meanwhile.
    measuring: AtomicUsize,
    changed: Notify,
    socket: Weak<UnixStream>,
    /// Its process's group, and its key there.
    group: Weak<Group>,
    id: u64,
    /// In its group's `listed` set: it may hold bytes it read and has not
    /// handed over, or be inside a read that waits. Only the connection's
    /// owner (its task, or the thread serving it) reads, hands over and so
    /// lists, so the flag and the set agree, and a read always runs listed.
    listed: AtomicBool,
}

#[derive(Default)]
struct ReadState {
    total: u64,
    closed: bool,
    /// A read that waits is under way, outside the lock: `total` may lag
    /// what the socket has given up, so no snapshot may be taken now.
    waiting: bool,
}

impl Progress {
    /// Puts this connection on its group's list, or takes it off.
    fn list(&self, on: bool) {
        let Some(group) = self.group.upgrade() else {
            // Out of the book (closed): nobody measures it.
            return;
        };
        if self.listed.swap(on, Ordering::Relaxed) != on {
            let mut g = lock(&group.state);
            if on {
                g.listed.insert(self.id);
            } else {
                g.listed.remove(&self.id);
            }
        }
    }

    /// Runs a read of this connection's socket and counts what it read,
    /// atomically with respect to [`OrderBook::admit`]'s snapshot.
    ///
    /// A read that `waits` (on a dedicated thread, bounded by the socket's
    /// receive timeout) runs outside the lock, marked as under way, so that
    /// a newer connection arriving meanwhile takes its snapshot once it is
    /// over (see [`Turn::wait`]) instead of waiting for the lock. It is
    /// `WouldBlock`, without reading, while a newer connection waits to
    /// take one: the caller reads without waiting from then on (back in its
    /// task), so the snapshot waits for one read at most.
    pub(crate) fn read_with(
        &self,
        waits: bool,
        read: impl FnOnce() -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.list(true);
        let mut st = lock(&self.read);
        let out = if waits {
            // SeqCst pairs with `Turn::wait`'s measure, which counts itself
            // in first.
            if self.measuring.load(Ordering::SeqCst) > 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            st.waiting = true;
            drop(st);
            let out = read();
            st = lock(&self.read);
            st.waiting = false;
            out
        } else {
            read()
        };
        st.total += *out.as_ref().unwrap_or(&0) as u64;
        let caught_up = st.total <= self.handed_over.load(Ordering::SeqCst);
        drop(st);
        if waits && self.measuring.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
        if caught_up {
            self.list(false);
        }
        out
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
        let before = self.handed_over.fetch_max(total, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
        if total > before && total >= lock(&self.read).total {
            self.list(false);
        }
    }

    /// Waits until `target` bytes were handed over or the connection closed.
    async fn reached(&self, target: u64) {
        self.wait_for(&self.waiters, || {
            (self.handed_over.load(Ordering::SeqCst) >= target || lock(&self.read).closed)
                .then_some(())
        })
        .await;
    }

    /// How far this connection must get before a connection arriving now
    /// may deliver: what it received plus what waits in its kernel queue
    /// (`u64::MAX` if that cannot be asked: its close is waited for then);
    /// 0 if it is closed; `None` while a read that waits is under way.
    fn target(&self, st: &ReadState) -> Option<u64> {
        if st.closed {
            return Some(0);
        }
        if st.waiting {
            return None;
        }
        // The socket is open while its connection is not closed; a failed
        // query waits for the close instead.
        let unread = (self.socket.upgrade())
            .map_or(Ok(0), |s| sys::unread_bytes(&*s))
            .map_or(u64::MAX, |n| n as u64);
        Some(st.total.saturating_add(unread))
    }
}

/// An older connection a new one waits for, and how far (`None`: found in
/// a read that waits; measured once that read is over).
pub(crate) struct Wait {
    progress: Arc<Progress>,
    target: Option<u64>,
}

/// What a new connection must wait for before it delivers anything.
#[derive(Default)]
pub(crate) struct Turn(Vec<Wait>);

impl Turn {
    /// Resolves once every older connection of the same process has handed
    /// over what it held when this one arrived.
    pub(crate) async fn wait(self) {
        for w in self.0 {
            let p = &w.progress;
            let target = match w.target {
                Some(t) => t,
                // Measured once no read that waits is under way, later than
                // this connection's arrival, so maybe more than it held then:
                // waiting for more is still in order.
                None => p.wait_for(&p.measuring, || p.target(&lock(&p.read))).await,
            };
            p.reached(target).await;
        }
    }

    /// Whether there is nothing to wait for.
    pub(crate) fn is_free(&self) -> bool {
        self.0.is_empty()
    }
}

/// A connection's place in the book: its progress, for newer connections
/// of the same process to follow; dropped when the connection ends (however
/// it ends), which takes it out of the book.
#[derive(Default)]
pub(crate) struct Registration {
    pub(crate) progress: Arc<Progress>,
    /// The book and its process's group; `None` when the process is
    /// unknown (nobody waits for such a connection).
    entry: Option<(Arc<OrderBook>, Arc<Group>)>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let p = &self.progress;
        lock(&p.read).closed = true;
        p.changed.notify_waiters();
        let Some((book, group)) = &self.entry else {
            return;
        };
        // Lock order: the book, then a group.
        let mut groups = lock(&book.groups);
        let mut g = lock(&group.state);
        g.members.remove(&p.id);
        g.listed.remove(&p.id);
        if let Some(set) = &g.epoll {
            set.remove(p);
        }
        if g.members.is_empty() {
            // Its epoll set, if any, is closed with it.
            groups.remove(&group.pid);
        }
    }
}

/// The open connections of one peer process.
pub(crate) struct Group {
    pid: i32,
    state: Mutex<GroupState>,
}

#[derive(Default)]
struct GroupState {
    next_id: u64,
    members: HashMap<u64, Arc<Progress>>,
    /// Members that may hold bytes read and not handed over, or are in a
    /// read that waits (see [`Progress::listed`]).
    listed: HashSet<u64>,
    /// The members with bytes in their kernel queue, as the kernel keeps
    /// them; made when a second connection arrives. Without it, every
    /// member is measured at every admission.
    epoll: Option<watch::Set>,
}

/// The open connections of each peer process.
#[derive(Default)]
pub(crate) struct OrderBook {
    groups: Mutex<HashMap<i32, Arc<Group>>>,
    /// Older connections visited by admissions so far: the measure of
    /// admission's cost that the scaling tests read.
    #[cfg(test)]
    visited: AtomicU64,
}

impl OrderBook {
    /// Registers a new connection of process `pid` and returns what it must
    /// wait for. `pid` `None` (credentials unavailable) waits for nothing.
    ///
    /// Visits only the older connections of `pid` that hold something (see
    /// the module docs): O(1) for idle ones, under `pid`'s lock alone.
    pub(crate) fn admit(
        self: &Arc<Self>,
        pid: Option<i32>,
        socket: &Socket,
    ) -> (Registration, Turn) {
        let Some(pid) = pid.filter(|p| *p > 0) else {
            return Default::default();
        };
        let mut groups = lock(&self.groups);
        let group = Arc::clone(groups.entry(pid).or_insert_with(|| {
            Arc::new(Group {
                pid,
                state: Mutex::default(),
            })
        }));
        let mut g = lock(&group.state);
        drop(groups);
        let st: &mut GroupState = &mut g;
        if st.epoll.is_none() && !st.members.is_empty() {
            st.epoll = watch::Set::new().filter(|set| st.members.values().all(|m| set.add(m)));
        }
        let mut candidates: Vec<u64> = st.listed.iter().copied().collect();
        let known = match &mut st.epoll {
            Some(set) => set.ready(st.members.len(), &mut candidates),
            None => false,
        };
        if !known {
            candidates.extend(st.members.keys());
        }
        candidates.sort_unstable();
        candidates.dedup();
        #[cfg(test)]
        self.visited
            .fetch_add(candidates.len() as u64, Ordering::Relaxed);
        let mut turn = Vec::new();
        for id in candidates {
            let Some(m) = st.members.get(&id) else {
                continue;
            };
            let pst = lock(&m.read);
            if !pst.closed {
                let target = m.target(&pst);
                turn.push(Wait {
                    progress: Arc::clone(m),
                    target,
                });
            }
        }
        let id = st.next_id;
        st.next_id += 1;
        let progress = Arc::new(Progress {
            socket: Arc::downgrade(socket),
            group: Arc::downgrade(&group),
            id,
            ..Progress::default()
        });
        if st.epoll.as_ref().is_some_and(|set| !set.add(&progress)) {
            // Refused: every member is measured until a new set is made.
            st.epoll = None;
        }
        st.members.insert(id, Arc::clone(&progress));
        drop(g);
        let entry = Some((Arc::clone(self), group));
        (Registration { progress, entry }, Turn(turn))
    }

    /// Older connections visited by admissions so far.
    #[cfg(test)]
    pub(crate) fn visited(&self) -> u64 {
        self.visited.load(Ordering::Relaxed)
    }
}

/// The kernel's list of which sockets hold unread bytes (or were hung up).
#[cfg(any(target_os = "linux", target_os = "android"))]
mod watch {
    use std::os::fd::AsFd;

    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

    use super::Progress;

    /// A level-triggered `epoll` set: a socket is on its ready list while
    /// bytes (or the end of the stream) wait in it.
    pub(super) struct Set(Epoll, Vec<EpollEvent>);

    impl Set {
        /// `None` if the kernel refuses (no descriptor left, say).
        pub(super) fn new() -> Option<Self> {
            let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).ok()?;
            Some(Self(epoll, Vec::new()))
        }

        /// Adds a connection's socket under its id (a closed one needs no
        /// place); `false` if the kernel refused.
        pub(super) fn add(&self, p: &Progress) -> bool {
            let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            let event = EpollEvent::new(interest, p.id);
            (p.socket.upgrade()).is_none_or(|s| self.0.add(s.as_fd(), event).is_ok())
        }

        /// Takes a connection's socket out, if it is still open (a closed
        /// one left when the kernel released it).
        pub(super) fn remove(&self, p: &Progress) {
            if let Some(s) = p.socket.upgrade() {
                let _ = self.0.delete(s.as_fd());
            }
        }

        /// Appends the ids of the ready sockets among the `members` the set
        /// holds to `out`; `false` if the kernel cannot say. One call with
        /// room for one more than there are members returns them all (a
        /// full answer means a socket closed a moment ago is still listed:
        /// then it cannot say either).
        pub(super) fn ready(&mut self, members: usize, out: &mut Vec<u64>) -> bool {
            self.1.resize(members + 1, EpollEvent::empty());
            match self.0.wait(&mut self.1, EpollTimeout::ZERO) {
                Ok(n) if n <= members => {
                    out.extend(self.1[..n].iter().map(EpollEvent::data));
                    true
                }
                _ => false,
            }
        }
    }
}

/// Elsewhere there is no set: every connection is measured at every
/// admission.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod watch {
    use super::Progress;

    pub(super) struct Set;

    impl Set {
        pub(super) fn new() -> Option<Self> {
            None
        }
        pub(super) fn add(&self, _: &Progress) -> bool {
            false
        }
        pub(super) fn remove(&self, _: &Progress) {}
        pub(super) fn ready(&mut self, _: usize, _: &mut Vec<u64>) -> bool {
            false
        }
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
        let progress = Arc::clone(&older.progress);
        let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
        let (finish, finish_rx) = std::sync::mpsc::channel::<()>();
        let reading = std::thread::spawn({
            let progress = Arc::clone(&progress);
            move || {
                progress.read_with(true, || {
                    entered_tx.send(()).unwrap();
                    finish_rx.recv().unwrap();
                    Ok(10)
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
        assert_eq!(reading.join().unwrap().unwrap(), 10);
        // The measurement is pending: no read that waits begins meanwhile.
        let next = progress.read_with(true, || panic!("read while measured"));
        assert_eq!(next.unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
        // The 10 bytes the read took count: handing over fewer is not enough.
        progress.set_handed_over(9);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!turn.is_finished(), "9 of the 10 bytes handed over");
        progress.set_handed_over(10);
        turn.await.unwrap();
    }

    /// Reads what waits in `socket` through `progress` and hands it all
    /// over, as a connection task does: then it holds nothing.
    fn read_and_hand_over(progress: &Progress, socket: &Socket) {
        let n = progress
            .read_with(false, || {
                std::io::Read::read(&mut &**socket, &mut [0u8; 4096])
            })
            .unwrap();
        let total = lock(&progress.read).total;
        progress.set_handed_over(total);
        assert!(n > 0);
    }

    /// `held` open connections of process 7, each of which received bytes
    /// that it read and handed over (idle, their writers still connected).
    fn hold(book: &Arc<OrderBook>, held: usize) -> Vec<(UnixStream, Socket, Registration)> {
        (0..held)
            .map(|_| {
                let (mut peer, ours) = socket();
                let (reg, _) = book.admit(Some(7), &ours);
                std::io::Write::write_all(&mut peer, b"probe").unwrap();
                read_and_hand_over(&reg.progress, &ours);
                (peer, ours, reg)
            })
            .collect()
    }

    /// The scaling test of issue 24: the older connections an admission
    /// visits do not grow with the idle connections its process holds (it
    /// visited every one of them: 1,000 per admission at 1,000 held).
    #[test]
    fn admission_visits_no_idle_connection_however_many_its_process_holds() {
        for held in [10, 1_000] {
            let book = Arc::new(OrderBook::default());
            let _held = hold(&book, held);
            let before = book.visited();
            let mut newer = Vec::new();
            for _ in 0..100 {
                let (peer, ours) = socket();
                let (reg, turn) = book.admit(Some(7), &ours);
                assert!(turn.is_free(), "nothing is held at {held}");
                newer.push((peer, ours, reg));
            }
            assert_eq!(
                book.visited() - before,
                0,
                "visits for 100 admissions at {held} held"
            );
        }
    }

    /// One process whose connections all hold unread bytes costs another
    /// process's admission nothing (each process has its own lock and its
    /// own epoll set); its own admissions visit exactly those that hold.
    #[test]
    fn a_busy_process_costs_another_processes_admission_nothing() {
        let book = Arc::new(OrderBook::default());
        let held = hold(&book, 500);
        for (peer, _, _) in &held {
            std::io::Write::write_all(&mut &*peer, b"unread").unwrap();
        }
        let before = book.visited();
        let (_other_peer, other) = socket();
        let (_other, turn) = book.admit(Some(8), &other);
        assert!(turn.is_free());
        let (_other_peer2, other2) = socket();
        let (_other2, turn) = book.admit(Some(8), &other2);
        assert!(turn.is_free());
        assert_eq!(book.visited() - before, 0, "process 8 visited process 7's");
        let (_same_peer, same) = socket();
        let (_same, turn) = book.admit(Some(7), &same);
        assert_eq!(turn.0.len(), 500, "each of process 7's holds 6 bytes");
        assert_eq!(book.visited() - before, 500);
    }

    /// An older connection that looked idle (read and handed over
    /// everything) but has bytes in its kernel queue when the newer one
    /// arrives is found by the kernel's ready list, and waited for.
    #[tokio::test]
    async fn a_newer_connection_waits_for_bytes_an_idle_older_one_has_not_read_yet() {
        let book = Arc::new(OrderBook::default());
        let mut held = hold(&book, 3);
        let (peer, older, reg) = &mut held[1];
        std::io::Write::write_all(peer, b"sent before the reconnect").unwrap();
        let (_newer_peer, newer) = socket();
        let (_newer, turn) = book.admit(Some(7), &newer);
        assert_eq!(turn.0.len(), 1, "only the one that holds bytes");
        let turn = tokio::spawn(turn.wait());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!turn.is_finished(), "25 bytes not handed over yet");
        read_and_hand_over(&reg.progress, older);
        turn.await.unwrap();
    }

    /// An older connection whose task read bytes and has not handed them
    /// over (its kernel queue is empty) is listed, and waited for.
    #[tokio::test]
    async fn a_newer_connection_waits_for_bytes_an_older_one_read_and_holds() {
        let book = Arc::new(OrderBook::default());
        let (mut peer, older) = socket();
        let (reg, _) = book.admit(Some(7), &older);
        std::io::Write::write_all(&mut peer, b"held").unwrap();
        reg.progress
            .read_with(false, || std::io::Read::read(&mut &*older, &mut [0u8; 16]))
            .unwrap();
        let (_newer_peer, newer) = socket();
        let (_newer, turn) = book.admit(Some(7), &newer);
        assert_eq!(turn.0.len(), 1);
        let turn = tokio::spawn(turn.wait());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!turn.is_finished());
        reg.progress.set_handed_over(4);
        turn.await.unwrap();
        // Caught up: no longer listed, so the next admission visits none.
        let before = book.visited();
        let (_third_peer, third) = socket();
        let (_third, turn) = book.admit(Some(7), &third);
        assert!(turn.is_free());
        assert_eq!(book.visited() - before, 0);
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
