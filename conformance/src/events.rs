//! What a peer reports, as values both the case code and the process
//! plumbing use: events, their shared log, hex, the patience of a wait.
//! A leaf: it imports nothing of the suite.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long any expected event may take before the case fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Something a reader reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handler was called with this message (also when it then failed).
    Message(Vec<u8>),
    /// The error callback was called with this Go context string.
    Error(String),
}

/// Events shared between a peer and the test, with a condition variable.
#[derive(Debug, Clone, Default)]
pub struct Events(Arc<(Mutex<Vec<Event>>, Condvar)>);

impl Events {
    /// Records one event.
    pub fn push(&self, e: Event) {
        let (lock, cv) = &*self.0;
        lock.lock().unwrap_or_else(|p| p.into_inner()).push(e);
        cv.notify_all();
    }

    /// A copy of every event so far.
    pub fn snapshot(&self) -> Vec<Event> {
        self.0.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The messages delivered so far, in order.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        self.snapshot()
            .into_iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m),
                Event::Error(_) => None,
            })
            .collect()
    }

    /// The error contexts reported so far, in order.
    pub fn errors(&self) -> Vec<String> {
        self.snapshot()
            .into_iter()
            .filter_map(|e| match e {
                Event::Error(c) => Some(c),
                Event::Message(_) => None,
            })
            .collect()
    }

    /// Waits until `done` holds for the events, for at most [`PATIENCE`].
    pub fn wait(&self, what: &str, done: impl Fn(&[Event]) -> bool) -> Result<(), String> {
        let (lock, cv) = &*self.0;
        let deadline = Instant::now() + PATIENCE;
        let mut events = lock.lock().unwrap_or_else(|p| p.into_inner());
        while !done(&events) {
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "waited {PATIENCE:?} for {what}; saw {} messages and errors {:?}",
                    events
                        .iter()
                        .filter(|e| matches!(e, Event::Message(_)))
                        .count(),
                    events
                        .iter()
                        .filter_map(|e| match e {
                            Event::Error(c) => Some(c.as_str()),
                            Event::Message(_) => None,
                        })
                        .collect::<Vec<_>>()
                ));
            }
            events = cv
                .wait_timeout(events, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// Waits until at least `n` messages were delivered.
    pub fn wait_messages(&self, n: usize) -> Result<(), String> {
        self.wait(&format!("{n} messages"), |ev| {
            ev.iter().filter(|e| matches!(e, Event::Message(_))).count() >= n
        })
    }

    /// Waits until at least `n` errors were reported.
    pub fn wait_errors(&self, n: usize) -> Result<(), String> {
        self.wait(&format!("{n} errors"), |ev| {
            ev.iter().filter(|e| matches!(e, Event::Error(_))).count() >= n
        })
    }
}

/// Decodes lowercase hex.
pub fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}
