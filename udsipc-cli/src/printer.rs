//! The printer thread: the only place `listen` writes stdout.
//!
//! A Reader's handler runs synchronously on a connection task, so it must
//! not wait on a slow terminal or pipe. It formats a line and hands it over
//! a queue bounded by bytes ([`QUEUE_BYTES`]) and by lines ([`LINE_QUEUE`]);
//! only when it is full does the handler block, which is the backpressure we
//! want: the connection then reads no more, the socket fills, and the
//! writers wait or see their own queue fill. A stdout nobody reads so costs
//! at most the budget, never memory in proportion to what is sent. The thread writes
//! through a buffer and flushes whenever the queue is momentarily empty, so
//! a reader of stdout sees each line promptly without a syscall per line
//! under load.
//!
//! If stdout fails (say, the reading end of a pipe went away), the thread
//! reports it once through its failure callback and keeps draining the queue
//! without writing, so the handler never blocks on a dead printer.

use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many formatted lines may wait for the printer.
pub(crate) const LINE_QUEUE: usize = 65_536;

/// How many bytes of formatted lines may wait for the printer. A single
/// line larger than this is still taken when the queue is empty.
pub(crate) const QUEUE_BYTES: usize = 4 << 20;

/// Capacity of the buffer in front of stdout.
const OUT_BUFFER: usize = 64 * 1024;

enum Msg {
    Line(Vec<u8>),
    /// Everything before this has been sent: write it out and stop.
    End,
}

/// Hands formatted lines to the printer; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct LineSender {
    tx: SyncSender<Msg>,
    budget: Arc<Budget>,
}

/// The bytes queued for the printer, and the senders waiting for room.
#[derive(Debug)]
struct Budget {
    limit: usize,
    state: Mutex<BudgetState>,
    room: Condvar,
}

#[derive(Debug, Default)]
struct BudgetState {
    queued: usize,
    /// Set by [`Printer::finish`]: nobody waits for room any more.
    closed: bool,
    /// Senders blocked for room (for tests).
    waiting: usize,
}

impl Budget {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            state: Mutex::new(BudgetState::default()),
            room: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `n` more bytes fit (or the queue is empty), then counts
    /// them. `false` once the printer is finished.
    fn take(&self, n: usize) -> bool {
        let mut st = self.lock();
        while !st.closed && st.queued > 0 && st.queued.saturating_add(n) > self.limit {
            st.waiting += 1;
            st = self.room.wait(st).unwrap_or_else(|p| p.into_inner());
            st.waiting -= 1;
        }
        if st.closed {
            return false;
        }
        st.queued += n;
        true
    }

    /// `n` bytes left the queue.
    fn give(&self, n: usize) {
        let mut st = self.lock();
        st.queued = st.queued.saturating_sub(n);
        drop(st);
        self.room.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.room.notify_all();
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Line(line) => write!(f, "Line({} bytes)", line.len()),
            Self::End => f.write_str("End"),
        }
    }
}

impl LineSender {
    /// Queues one line (its newline included), waiting while the queue is
    /// full. A line sent after [`Printer::finish`] is dropped.
    pub(crate) fn send(&self, line: Vec<u8>) {
        let n = line.len();
        if self.budget.take(n) && self.tx.send(Msg::Line(line)).is_err() {
            self.budget.give(n);
        }
    }
}

/// The printer thread and the queue into it.
#[derive(Debug)]
pub(crate) struct Printer {
    tx: SyncSender<Msg>,
    budget: Arc<Budget>,
    /// The thread's result, sent when it ends (so `finish` can wait for it
    /// with a deadline: a stdout nobody reads never takes the last lines).
    ended: Receiver<io::Result<()>>,
    thread: JoinHandle<()>,
}

impl Printer {
    /// Starts the thread writing to `out`; `on_failure` runs once, on the
    /// printer thread, if writing fails.
    pub(crate) fn spawn<W, F>(out: W, on_failure: F) -> io::Result<Self>
    where
        W: Write + Send + 'static,
        F: FnOnce() + Send + 'static,
    {
        Self::with_queue(out, on_failure, LINE_QUEUE, QUEUE_BYTES)
    }

    fn with_queue<W, F>(out: W, on_failure: F, capacity: usize, bytes: usize) -> io::Result<Self>
    where
        W: Write + Send + 'static,
        F: FnOnce() + Send + 'static,
    {
        let (tx, rx) = sync_channel(capacity);
        let (done, ended) = sync_channel(1);
        let budget = Arc::new(Budget::new(bytes));
        let printed = Arc::clone(&budget);
        let thread = std::thread::Builder::new()
            .name("udsipc-printer".to_owned())
            .spawn(move || {
                let _ = done.send(print_lines(&rx, out, on_failure, &printed));
            })?;
        Ok(Self {
            tx,
            budget,
            ended,
            thread,
        })
    }

    /// A handle for queueing lines.
    pub(crate) fn lines(&self) -> LineSender {
        LineSender {
            tx: self.tx.clone(),
            budget: Arc::clone(&self.budget),
        }
    }

    /// Writes out every line queued so far, flushes, and stops the thread,
    /// waiting at most `patience` for stdout to take them.
    ///
    /// Call it once nothing sends any more (after the Reader has stopped);
    /// it does not wait for senders still held elsewhere to be dropped. If
    /// stdout does not take the lines in time (a pipe nobody reads), it
    /// returns `TimedOut` and leaves the thread behind: the process exits
    /// without it.
    pub(crate) fn finish(self, patience: Duration) -> io::Result<()> {
        // Senders still waiting for room are past the stop: they give up.
        self.budget.close();
        let deadline = Instant::now()
            .checked_add(patience)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        let stuck = || {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("stdout took no more lines for {patience:?}; the rest were not printed"),
            )
        };
        let mut end = Msg::End;
        loop {
            match self.tx.try_send(end) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => break,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return Err(stuck());
                    }
                    end = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        drop(self.tx);
        let left = deadline.saturating_duration_since(Instant::now());
        match self.ended.recv_timeout(left) {
            Ok(result) => {
                let _ = self.thread.join();
                result
            }
            Err(RecvTimeoutError::Timeout) => Err(stuck()),
            Err(RecvTimeoutError::Disconnected) => {
                Err(io::Error::other("the printer thread panicked"))
            }
        }
    }
}

fn print_lines<W: Write>(
    rx: &Receiver<Msg>,
    out: W,
    on_failure: impl FnOnce(),
    budget: &Budget,
) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(OUT_BUFFER, out);
    let mut on_failure = Some(on_failure);
    let mut failure: Option<io::Error> = None;
    let mut fail = |e: io::Error, failure: &mut Option<io::Error>| {
        if let Some(callback) = on_failure.take() {
            callback();
        }
        failure.get_or_insert(e);
    };
    // Whether lines were written since the last flush (an idle printer does
    // not flush at all).
    let mut dirty = false;
    loop {
        let msg = match rx.try_recv() {
            Ok(msg) => msg,
            Err(TryRecvError::Empty) => {
                // The queue ran dry: show what we have before waiting.
                if failure.is_none() && dirty {
                    dirty = false;
                    if let Err(e) = out.flush() {
                        fail(e, &mut failure);
                    }
                }
                match rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        match msg {
            Msg::End => break,
            Msg::Line(line) if failure.is_none() => {
                dirty = true;
                if let Err(e) = out.write_all(&line) {
                    fail(e, &mut failure);
                }
                budget.give(line.len());
            }
            // stdout is gone: drain without writing.
            Msg::Line(line) => budget.give(line.len()),
        }
    }
    match failure {
        Some(e) => Err(e),
        None => out.flush(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc::{Sender, channel};

    use super::*;
    use udsipc_testkit::scripted::ScriptedIo;

    /// What the printer did to its output, in order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Event {
        Write(Vec<u8>),
        Flush,
    }

    /// An output that reports every write and flush on a channel.
    struct Recorder(Sender<Event>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.send(Event::Write(buf.to_vec()));
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            let _ = self.0.send(Event::Flush);
            Ok(())
        }
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn finish_writes_every_line_in_order_then_flushes() {
        let (tx, events) = channel();
        let printer = Printer::spawn(Recorder(tx), || {}).unwrap();
        let lines = printer.lines();
        for i in 0..1000 {
            lines.send(format!("{i}\n").into_bytes());
        }
        printer.finish(WAIT).unwrap();
        let events: Vec<Event> = events.try_iter().collect();
        let written: Vec<u8> = events
            .iter()
            .filter_map(|e| match e {
                Event::Write(b) => Some(b.clone()),
                Event::Flush => None,
            })
            .flatten()
            .collect();
        let expected: String = (0..1000).map(|i| format!("{i}\n")).collect();
        assert_eq!(String::from_utf8(written).unwrap(), expected);
        assert_eq!(events.last(), Some(&Event::Flush));
    }

    #[test]
    fn a_line_is_flushed_as_soon_as_the_queue_runs_dry() {
        let (tx, events) = channel();
        let printer = Printer::spawn(Recorder(tx), || {}).unwrap();
        printer.lines().send(b"first\n".to_vec());
        // Not finished, nothing else queued: the line must come out anyway.
        assert_eq!(
            events.recv_timeout(WAIT),
            Ok(Event::Write(b"first\n".to_vec()))
        );
        assert_eq!(events.recv_timeout(WAIT), Ok(Event::Flush));
        printer.finish(WAIT).unwrap();
    }

    #[test]
    fn every_line_arrives_through_an_output_that_takes_one_byte_per_write() {
        let mut script = ScriptedIo::builder();
        for _ in 0..500 {
            script = script.accept(1);
        }
        let out = script.build();
        let transcript = out.transcript();
        let printer = Printer::spawn(out, || {}).unwrap();
        let lines = printer.lines();
        for i in 0..100 {
            lines.send(format!("line {i}\n").into_bytes());
        }
        printer.finish(WAIT).unwrap();
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(String::from_utf8(transcript.bytes()).unwrap(), expected);
    }

    #[test]
    fn a_failed_output_is_reported_once_and_the_queue_keeps_draining() {
        // One byte goes through, then the pipe breaks; any write after the
        // failure would be accepted and show up in the transcript.
        let out = ScriptedIo::builder()
            .accept(1)
            .write_error(io::ErrorKind::BrokenPipe)
            .build();
        let transcript = out.transcript();
        let failures = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&failures);
        // A queue of 1: a printer that stopped draining would block the sends.
        let printer = Printer::with_queue(
            out,
            move || {
                counter.fetch_add(1, Ordering::Relaxed);
            },
            1,
            QUEUE_BYTES,
        )
        .unwrap();
        let lines = printer.lines();
        for _ in 0..100 {
            lines.send(vec![b'x'; OUT_BUFFER + 1]); // larger than the buffer: written at once
        }
        let err = printer.finish(WAIT).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(failures.load(Ordering::Relaxed), 1);
        assert_eq!(transcript.bytes(), b"x", "no write after the failure");
    }

    #[test]
    fn lines_sent_after_finish_are_dropped_without_blocking() {
        let (tx, _events) = channel();
        let printer = Printer::with_queue(Recorder(tx), || {}, 1, QUEUE_BYTES).unwrap();
        let lines = printer.lines();
        printer.finish(WAIT).unwrap();
        for _ in 0..10 {
            lines.send(b"late\n".to_vec());
        }
    }

    /// An output whose every write blocks until the test ends: a pipe
    /// nobody reads.
    struct NeverRead(Arc<std::sync::Barrier>);

    impl Write for NeverRead {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            self.0.wait();
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn finish_gives_up_on_a_stdout_nobody_reads_within_its_patience() {
        let release = Arc::new(std::sync::Barrier::new(2));
        let printer =
            Printer::with_queue(NeverRead(Arc::clone(&release)), || {}, 1, QUEUE_BYTES).unwrap();
        let lines = printer.lines();
        // Bigger than the buffer: written at once, and the write blocks.
        lines.send(vec![b'x'; OUT_BUFFER + 1]);
        lines.send(vec![b'y'; 10]); // fills the queue of 1
        let err = printer.finish(Duration::from_millis(100)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        release.wait();
    }

    /// An output whose writes block until released, saying when one starts.
    struct Gate {
        entered: Sender<()>,
        release: Arc<std::sync::Barrier>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            self.release.wait();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_blocks_senders_once_the_byte_budget_is_queued() {
        const LINE: usize = OUT_BUFFER + 1; // each one written at once
        let (entered, write_started) = channel();
        let release = Arc::new(std::sync::Barrier::new(2));
        let gate = Gate {
            entered,
            release: Arc::clone(&release),
        };
        // Room for 3 lines by bytes, 1000 by count.
        let printer = Printer::with_queue(gate, || {}, 1000, 3 * LINE).unwrap();
        let lines = printer.lines();
        let budget = Arc::clone(&printer.budget);
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&sent);
        let sender = std::thread::spawn(move || {
            for _ in 0..100 {
                lines.send(vec![b'x'; LINE]);
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        // The printer is stuck writing the first line.
        write_started.recv_timeout(WAIT).unwrap();
        // The sender fills the budget, then waits (it must not finish: a
        // queue bounded by lines alone would take all 100).
        let start = Instant::now();
        while budget.lock().waiting == 0 {
            assert!(
                !sender.is_finished(),
                "all {} lines were queued past the byte budget",
                sent.load(Ordering::Relaxed)
            );
            assert!(start.elapsed() < WAIT, "the sender never blocked");
            std::thread::sleep(Duration::from_millis(1));
        }
        // The line being written counts until it is written.
        assert_eq!(sent.load(Ordering::Relaxed), 3);
        assert!(budget.lock().queued <= 3 * LINE);
        // finish releases the blocked sender (its lines are dropped).
        budget.close();
        sender.join().unwrap();
        drop(release);
        drop(printer);
    }
}
