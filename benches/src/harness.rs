//! A long-lived Writer → Reader pair for the criterion benches: set up once
//! per benchmark, then each sample sends a batch and waits until the
//! handler has seen all of it, counting allocations on the way.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::alloc::allocations;

/// Deliveries seen by the handler, and a waiter for a target count.
#[derive(Debug, Default)]
pub struct Counter {
    received: AtomicU64,
    target: AtomicU64,
    reached: Mutex<u64>,
    cv: Condvar,
}

impl Counter {
    /// Counts one delivery; wakes the waiter when its target is reached.
    pub fn hit(&self) {
        let n = self.received.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.target.load(Ordering::Acquire) {
            *self.reached.lock().unwrap() = n;
            self.cv.notify_all();
        }
    }

    /// Deliveries so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Acquire)
    }

    /// Arms the waiter for `target` total deliveries (before sending).
    pub fn expect(&self, target: u64) {
        self.target.store(target, Ordering::Release);
    }

    /// Blocks until `target` deliveries were seen (panics after a minute).
    pub fn wait(&self, target: u64) {
        let guard = self.reached.lock().unwrap();
        let (_guard, timeout) = self
            .cv
            .wait_timeout_while(guard, Duration::from_secs(60), |_| self.received() < target)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "only {} of {target} messages arrived",
            self.received()
        );
    }
}

/// Allocations and messages summed over a benchmark's samples.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    allocations: u64,
    messages: u64,
}

impl Tally {
    /// Adds one sample.
    pub fn add(&mut self, allocations: u64, messages: u64) {
        self.allocations += allocations;
        self.messages += messages;
    }

    /// Prints `name: N allocations per message` to stderr.
    pub fn print(&self, name: &str) {
        if self.messages > 0 {
            eprintln!(
                "{name}: {:.4} allocations per message ({} messages)",
                self.allocations as f64 / self.messages as f64,
                self.messages
            );
        }
    }
}

/// A running Reader with a counting handler and Writers to it.
pub struct Pair {
    /// The Reader's deliveries.
    pub counter: Arc<Counter>,
    reader: udsipc::Reader,
    /// Writers, one connection each.
    pub writers: Vec<udsipc::Writer>,
    producer: tokio::runtime::Runtime,
    /// Allocations per message over the samples taken.
    pub tally: Tally,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("writers", &self.writers.len())
            .finish_non_exhaustive()
    }
}

impl Pair {
    /// Starts a Reader at `path` whose handler runs `work` on each message,
    /// and `writers` Writers with queues of `capacity` messages.
    pub fn start(
        path: &Path,
        writers: usize,
        capacity: usize,
        work: impl Fn(&[u8]) + Send + Sync + 'static,
    ) -> Self {
        let counter = Arc::new(Counter::default());
        let sink = Arc::clone(&counter);
        let reader = udsipc::Reader::builder(path)
            .systemd(false)
            .start(move |m: &[u8]| {
                work(m);
                sink.hit();
                Ok(())
            })
            .expect("reader starts");
        let writers = (0..writers)
            .map(|_| {
                udsipc::Writer::builder(path)
                    .max_buffered_writes(capacity)
                    .start()
                    .expect("writer starts")
            })
            .collect();
        let producer = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            counter,
            reader,
            writers,
            producer,
            tally: Tally::default(),
        }
    }

    /// Sends `iters` copies of `payload` round-robin over the Writers
    /// (waiting for queue room, never dropping) and waits until all were
    /// delivered; returns the time taken.
    pub fn round_trip(&mut self, payload: &Bytes, iters: u64) -> Duration {
        let target = self.counter.received() + iters;
        self.counter.expect(target);
        let before = allocations();
        let start = Instant::now();
        let writers = &self.writers;
        self.producer.block_on(async {
            for i in 0..iters {
                let w = &writers[i as usize % writers.len()];
                w.send(payload.clone()).await.expect("writer running");
            }
        });
        self.counter.wait(target);
        let elapsed = start.elapsed();
        self.tally.add(allocations() - before, iters);
        elapsed
    }

    /// Stops everything, draining.
    pub fn stop(self) {
        for w in &self.writers {
            w.stop_blocking(Duration::from_secs(10))
                .expect("writer drains");
        }
        self.reader
            .stop_blocking(Duration::from_secs(10))
            .expect("reader drains");
    }
}
