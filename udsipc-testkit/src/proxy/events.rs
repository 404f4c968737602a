//! The event log: one [`FaultEvent`] per fault that fired, the newest
//! [`DEFAULT_EVENT_CAPACITY`] (or the builder's capacity) kept, the older
//! ones counted as dropped.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::fault::Direction;

/// One fault that fired (named as in the registry: `"drop-after-frames"`),
/// or something the proxy observed that ends or refuses a connection:
///
/// | `fault` | what happened |
/// |---|---|
/// | `upstream-closed` | the upstream closed (or reset) a connection; what it may have lost |
/// | `upstream-unreachable` | a client was accepted but the upstream refused it; the client is closed at once |
/// | `read-error` | reading from the client failed (e.g. it closed with unread data): accounted like a cut |
/// | `accept-error` | accepting failed (e.g. out of file descriptors); the listener pauses, doubling from 5 ms to 1 s |
/// | `proxy-stopped` | the proxy stopped with bytes in flight |
///
/// Serialises to one JSON object whose first key is `fault`, the line the
/// `udsipc proxy` command prints on stderr.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct FaultEvent {
    /// The fault's name (`"fragment"`, `"drop-after-frames"`, ...).
    pub fault: String,
    /// Time since the proxy started, in milliseconds.
    pub at_ms: u64,
    /// The connection (from 1, accept order); 0 for the listener.
    pub conn: u64,
    /// The direction the fault acted on, if it acted on bytes.
    pub direction: Option<Direction>,
    /// The stream offset (bytes of that direction of that connection) where
    /// it acted.
    pub byte_offset: u64,
    /// The frame it acted on or in, counted from 0 per connection.
    pub frame: Option<u64>,
    /// What happened, in words.
    pub detail: String,
    /// For an event that ended a connection: bytes the client had sent that
    /// will never reach the upstream (read but not forwarded, or still
    /// unread in the socket).
    pub discarded_bytes: u64,
    /// For an event that ended a connection: every byte the upstream may
    /// not have turned into a whole message, i.e. `discarded_bytes` plus
    /// what was forwarded after the last whole frame (or after a rewritten
    /// prefix). Messages lost on this connection fit in these bytes.
    pub in_flight_bytes: u64,
    /// Whether this event ended its connection (a cut, a reset, the
    /// upstream closing, an outage, the proxy stopping).
    pub closed_connection: bool,
    /// The proxy's name, if it has one (the control API's proxies do);
    /// left out of the JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

impl FaultEvent {
    pub(crate) fn new(fault: &str, elapsed: Duration, conn: u64) -> Self {
        Self {
            fault: fault.to_owned(),
            at_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            conn,
            direction: None,
            byte_offset: 0,
            frame: None,
            detail: String::new(),
            discarded_bytes: 0,
            in_flight_bytes: 0,
            closed_connection: false,
            proxy: None,
        }
    }
}

/// Receives each event as it fires (the CLI prints them).
pub type EventSink = Box<dyn Fn(&FaultEvent) + Send + Sync>;

/// How many events a proxy keeps by default: the newest 10,000 (a few
/// MiB at most); older ones are dropped and counted
/// ([`ProxyStats::events_dropped`](super::ProxyStats::events_dropped)).
/// The event sink ([`FaultProxyBuilder::on_event`](super::FaultProxyBuilder::on_event))
/// still sees every one.
pub const DEFAULT_EVENT_CAPACITY: usize = 10_000;

/// The newest events, in firing order, and how many older ones were
/// dropped.
pub(crate) struct EventLog {
    events: Mutex<VecDeque<FaultEvent>>,
    capacity: usize,
    dropped: AtomicU64,
    sink: Option<EventSink>,
    proxy: Option<String>,
}

impl EventLog {
    pub(crate) fn new(sink: Option<EventSink>, proxy: Option<String>, capacity: usize) -> Self {
        Self {
            events: Mutex::new(VecDeque::new()),
            capacity,
            dropped: AtomicU64::new(0),
            sink,
            proxy,
        }
    }

    pub(crate) fn push(&self, mut event: FaultEvent) {
        event.proxy.clone_from(&self.proxy);
        if let Some(sink) = &self.sink {
            sink(&event);
        }
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if self.capacity == 0 {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if events.len() >= self.capacity {
            events.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        events.push_back(event);
    }

    pub(crate) fn snapshot(&self) -> Vec<FaultEvent> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().cloned().collect()
    }

    /// Events dropped to keep the log within its capacity.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Every event that fired: kept and dropped.
    pub(crate) fn fired(&self) -> u64 {
        let kept = self.events.lock().unwrap_or_else(|p| p.into_inner()).len();
        kept as u64 + self.dropped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_newest_and_counts_the_rest() {
        let log = EventLog::new(None, None, 3);
        for conn in 1..=5 {
            log.push(FaultEvent::new("x", Duration::ZERO, conn));
        }
        let kept: Vec<u64> = log.snapshot().iter().map(|e| e.conn).collect();
        assert_eq!(kept, [3, 4, 5]);
        assert_eq!((log.dropped(), log.fired()), (2, 5));
        let none = EventLog::new(None, None, 0);
        none.push(FaultEvent::new("x", Duration::ZERO, 1));
        assert_eq!((none.snapshot().len(), none.dropped()), (0, 1));
    }
}
