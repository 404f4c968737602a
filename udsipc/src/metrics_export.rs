//! The Reader's and the Writer's counters reported through the [`metrics`]
//! facade (feature `metrics`), for whatever recorder the program installed
//! (a Prometheus exporter, StatsD, ...).
//!
//! Nothing is recorded per message: the Reader and the Writer keep their
//! counters in their own atomics, as without the feature, and a *snapshot*
//! is published when the program asks, typically right before its exporter
//! renders a scrape, or from a periodic task:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("app.sock");
//! let reader = udsipc::Reader::builder(&path).start(|_msg: &[u8]| Ok(()))?;
//! udsipc::metrics_export::describe(); // once: help texts and units
//! // ... on each scrape (or every few seconds):
//! reader.publish_metrics(); // udsipc_reader_*{socket="/run/app.sock"}
//! # reader.stop_blocking(std::time::Duration::from_secs(1))?;
//! # Ok(())
//! # }
//! ```
//!
//! Counters are published with [`metrics::Counter::absolute`], so a
//! recorder sees the running totals the snapshot holds; the two
//! instantaneous values are gauges. Every series carries the label
//! `socket` (the socket path, or any text given to
//! [`ReaderMetrics::publish`] / [`WriterMetrics::publish`]).
//!
//! | name | kind | field |
//! |---|---|---|
//! | `udsipc_reader_received_total` | counter | [`ReaderMetrics::received`] |
//! | `udsipc_reader_connections_total` | counter | [`ReaderMetrics::connections`] |
//! | `udsipc_reader_errors_total` | counter | [`ReaderMetrics::errors`] |
//! | `udsipc_reader_active_connections` | gauge | [`ReaderMetrics::active_connections`] |
//! | `udsipc_reader_rejected_connections_total` | counter | [`ReaderMetrics::rejected_connections`] |
//! | `udsipc_reader_abandoned_handlers_total` | counter | [`ReaderMetrics::abandoned_handlers`] |
//! | `udsipc_reader_unhandled_total` | counter | [`ReaderMetrics::unhandled`] |
//! | `udsipc_writer_sent_total` | counter | [`WriterMetrics::sent`] |
//! | `udsipc_writer_delivered_total` | counter | [`WriterMetrics::delivered`] |
//! | `udsipc_writer_dropped_total` | counter | [`WriterMetrics::dropped`] |
//! | `udsipc_writer_failed_total` | counter | [`WriterMetrics::failed`] |
//! | `udsipc_writer_queue_depth` | gauge | [`WriterMetrics::queue_depth`] |
//! | `udsipc_writer_reconnects_total` | counter | [`WriterMetrics::reconnects`] |
//! | `udsipc_writer_discarded_total` | counter | [`WriterMetrics::discarded`] |
//! | `udsipc_writer_unconfirmed_total` | counter | [`WriterMetrics::unconfirmed`] |
//! | `udsipc_writer_retried_total` | counter | [`WriterMetrics::retried`] |
//! | `udsipc_writer_backpressure_total` | counter | [`WriterMetrics::backpressure`] |
//! | `udsipc_writer_refused_total` | counter | [`WriterMetrics::refused`] |
//!
//! This module owns the names, help texts and the mapping from snapshot
//! fields to series; it never touches the counters themselves.

use crate::{Reader, ReaderMetrics, Writer, WriterMetrics};

/// The label every series carries: the socket it is about.
pub const SOCKET_LABEL: &str = "socket";

/// One series of a snapshot `M`: its name, its help text, and the field it
/// publishes. A name ending in `_total` is a counter, any other a gauge (the
/// Prometheus naming rule the table follows).
type Series<M> = (&'static str, &'static str, fn(&M) -> u64);

/// A table of [`Series`], one `counter field "help"` or `gauge field "help"`
/// entry per snapshot field: the field is named once, and its series is
/// `<prefix><field>_total` for a counter, `<prefix><field>` for a gauge.
macro_rules! series {
    ($prefix:literal; $($kind:ident $field:ident $help:literal,)*) => {
        [$((concat!($prefix, stringify!($field), series!(@$kind)), $help, |m| m.$field),)*]
    };
    (@counter) => { "_total" };
    (@gauge) => { "" };
}

/// The Reader's series, in [`ReaderMetrics`] field order.
const READER: [Series<ReaderMetrics>; 7] = series!["udsipc_reader_";
    counter received "Messages the handler accepted",
    counter connections "Connections accepted and served",
    counter errors "Protocol violations, read failures and handler errors",
    gauge active_connections "Connections open right now",
    counter rejected_connections
        "Connections closed by a Reader policy before any byte was read",
    counter abandoned_handlers "Handler calls a stop had to leave running",
    counter unhandled
        "Messages read whole and never handed over (a stop's deadline cut them)",
];

/// The Writer's series, in [`WriterMetrics`] field order.
const WRITER: [Series<WriterMetrics>; 11] = series!["udsipc_writer_";
    counter sent "Messages handed whole to the kernel (not proof the reader got them)",
    counter delivered
        "Messages the reader has read from the socket, as the kernel confirms (read, not handled)",
    counter dropped "Messages refused because the queue was full",
    counter failed
        "Messages given up: not read whole on max_attempts fresh connections in a row",
    gauge queue_depth "Messages accepted and not yet written whole, failed or discarded",
    counter reconnects "Successful connections after the first one",
    counter discarded
        "Messages thrown away before being written whole (stop deadline, linger, unflushed)",
    counter unconfirmed
        "Messages written whole whose read was never confirmed (maybe read, never retried)",
    counter retried "Messages sent again on a new connection",
    counter backpressure
        "Backpressure episodes: the reader read nothing for a whole write_timeout",
    counter refused "Connections the reader closed without reading the first byte",
];

/// Registers the help text of every `udsipc_*` series with the installed
/// recorder. Optional (recorders that render help, such as Prometheus
/// exporters, show it); call it once, after installing the recorder.
pub fn describe() {
    let reader = READER.iter().map(|s| (s.0, s.1));
    for (name, help) in reader.chain(WRITER.iter().map(|s| (s.0, s.1))) {
        if name.ends_with("_total") {
            ::metrics::describe_counter!(name, help);
        } else {
            ::metrics::describe_gauge!(name, help);
        }
    }
}

/// Publishes each series of `table` with its value in `snapshot`, labelled
/// with `socket`.
fn publish<M>(table: &[Series<M>], snapshot: &M, socket: &str) {
    for (name, _, value) in table {
        let value = value(snapshot);
        let labels = [(SOCKET_LABEL, socket.to_owned())];
        if name.ends_with("_total") {
            ::metrics::counter!(*name, &labels).absolute(value);
        } else {
            // A gauge holds an f64: exact up to 2^53, far past any count
            // of connections or queued messages.
            #[allow(clippy::cast_precision_loss)]
            ::metrics::gauge!(*name, &labels).set(value as f64);
        }
    }
}

impl ReaderMetrics {
    /// Publishes this snapshot through the [`metrics`] facade: one
    /// `udsipc_reader_*` series per field, labelled `socket="<socket>"`
    /// (the table is in [`metrics_export`](crate::metrics_export)).
    ///
    /// Costs a lookup in the installed recorder per field, and nothing when
    /// no recorder is installed. Publishing an older snapshot after a newer
    /// one leaves the counters at the newer totals (counters only rise).
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn publish(&self, socket: &str) {
        publish(&READER, self, socket);
    }
}

impl WriterMetrics {
    /// Publishes this snapshot through the [`metrics`] facade: one
    /// `udsipc_writer_*` series per field, labelled `socket="<socket>"`
    /// (the table is in [`metrics_export`](crate::metrics_export)).
    ///
    /// Costs a lookup in the installed recorder per field, and nothing when
    /// no recorder is installed.
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn publish(&self, socket: &str) {
        publish(&WRITER, self, socket);
    }
}

impl Reader {
    /// Publishes a snapshot of this Reader's counters through the
    /// [`metrics`] facade, labelled with its socket path (see
    /// [`ReaderMetrics::publish`]). Call it when the recorder is about to
    /// be read (before a scrape renders) or periodically.
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn publish_metrics(&self) {
        self.metrics()
            .publish(&self.socket_path().display().to_string());
    }
}

impl Writer {
    /// Publishes a snapshot of this Writer's counters through the
    /// [`metrics`] facade, labelled with its socket path (see
    /// [`WriterMetrics::publish`]; after the Writer is gone, publish
    /// [`WriterMetricsHandle::get`](crate::WriterMetricsHandle::get)'s
    /// snapshot the same way).
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn publish_metrics(&self) {
        self.metrics()
            .publish(&self.socket_path().display().to_string());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::{Arc, Mutex};

    use ::metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder,
        SharedString, Unit,
    };

    use super::*;

    /// What a test recorder saw: per series name, its labels and value.
    type Seen = Arc<Mutex<BTreeMap<String, (Vec<(String, String)>, Arc<Cell>)>>>;

    #[derive(Debug, Default)]
    struct Cell {
        value: AtomicU64,
        gauge: std::sync::atomic::AtomicBool,
    }

    impl CounterFn for Cell {
        fn increment(&self, value: u64) {
            self.value.fetch_add(value, Relaxed);
        }
        fn absolute(&self, value: u64) {
            self.value.fetch_max(value, Relaxed);
        }
    }

    impl GaugeFn for Cell {
        fn increment(&self, _: f64) {
            unreachable!("udsipc only sets gauges")
        }
        fn decrement(&self, _: f64) {
            unreachable!("udsipc only sets gauges")
        }
        fn set(&self, value: f64) {
            self.gauge.store(true, Relaxed);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            self.value.store(value as u64, Relaxed);
        }
    }

    #[derive(Default)]
    struct TestRecorder {
        seen: Seen,
        described: Mutex<Vec<String>>,
    }

    impl TestRecorder {
        fn cell(&self, key: &Key) -> Arc<Cell> {
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let mut seen = self.seen.lock().unwrap();
            let entry = seen
                .entry(key.name().to_owned())
                .or_insert_with(|| (labels, Arc::default()));
            Arc::clone(&entry.1)
        }
    }

    impl Recorder for TestRecorder {
        fn describe_counter(&self, name: KeyName, _: Option<Unit>, _: SharedString) {
            self.described
                .lock()
                .unwrap()
                .push(name.as_str().to_owned());
        }
        fn describe_gauge(&self, name: KeyName, _: Option<Unit>, _: SharedString) {
            self.described
                .lock()
                .unwrap()
                .push(name.as_str().to_owned());
        }
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {
            unreachable!("udsipc has no histograms")
        }
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.cell(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.cell(key))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            unreachable!("udsipc has no histograms")
        }
    }

    /// The field names of a struct, from its `Debug` output.
    fn fields(debug: &str) -> Vec<String> {
        let inner = &debug[debug.find('{').unwrap() + 1..debug.rfind('}').unwrap()];
        inner
            .split(',')
            .map(|f| f.split(':').next().unwrap().trim().to_owned())
            .filter(|f| !f.is_empty())
            .collect()
    }

    /// Per series name: its labels, value, and whether it is a gauge.
    type Published = BTreeMap<String, (Vec<(String, String)>, u64, bool)>;

    fn published(recorder: &TestRecorder) -> Published {
        recorder
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|(name, (labels, cell))| {
                (
                    name.clone(),
                    (
                        labels.clone(),
                        cell.value.load(Relaxed),
                        cell.gauge.load(Relaxed),
                    ),
                )
            })
            .collect()
    }

    #[test]
    fn every_reader_field_is_published_under_its_name_with_the_socket_label() {
        let recorder = TestRecorder::default();
        let snapshot = ReaderMetrics {
            received: 1,
            connections: 2,
            errors: 3,
            active_connections: 4,
            rejected_connections: 5,
            abandoned_handlers: 6,
            unhandled: 7,
        };
        ::metrics::with_local_recorder(&recorder, || snapshot.publish("/run/a.sock"));
        let seen = published(&recorder);
        let names = fields(&format!("{snapshot:?}"));
        assert_eq!(seen.len(), names.len(), "{seen:?}");
        for (i, field) in names.iter().enumerate() {
            let gauge = field == "active_connections";
            let name = format!("udsipc_reader_{field}{}", if gauge { "" } else { "_total" });
            let (labels, value, is_gauge) = &seen[&name];
            assert_eq!(labels, &[("socket".to_owned(), "/run/a.sock".to_owned())]);
            assert_eq!(*value, i as u64 + 1, "{name}");
            assert_eq!(*is_gauge, gauge, "{name}");
        }
    }

    #[test]
    fn every_writer_field_is_published_under_its_name_with_the_socket_label() {
        let recorder = TestRecorder::default();
        let snapshot = WriterMetrics {
            sent: 1,
            delivered: 2,
            dropped: 3,
            failed: 4,
            queue_depth: 5,
            reconnects: 6,
            discarded: 7,
            unconfirmed: 8,
            retried: 9,
            backpressure: 10,
            refused: 11,
        };
        ::metrics::with_local_recorder(&recorder, || snapshot.publish("w"));
        let seen = published(&recorder);
        let names = fields(&format!("{snapshot:?}"));
        assert_eq!(seen.len(), names.len(), "{seen:?}");
        for (i, field) in names.iter().enumerate() {
            let gauge = field == "queue_depth";
            let name = format!("udsipc_writer_{field}{}", if gauge { "" } else { "_total" });
            let (labels, value, is_gauge) = &seen[&name];
            assert_eq!(labels, &[("socket".to_owned(), "w".to_owned())]);
            assert_eq!(*value, i as u64 + 1, "{name}");
            assert_eq!(*is_gauge, gauge, "{name}");
        }
    }

    #[test]
    fn counters_keep_the_highest_total_and_gauges_the_last_value() {
        let recorder = TestRecorder::default();
        let newer = WriterMetrics {
            sent: 10,
            queue_depth: 7,
            ..WriterMetrics::default()
        };
        let older = WriterMetrics {
            sent: 4,
            queue_depth: 0,
            ..WriterMetrics::default()
        };
        ::metrics::with_local_recorder(&recorder, || {
            newer.publish("w");
            older.publish("w");
        });
        let seen = published(&recorder);
        assert_eq!(seen["udsipc_writer_sent_total"].1, 10);
        assert_eq!(seen["udsipc_writer_queue_depth"].1, 0);
    }

    #[test]
    fn describe_names_every_series_once() {
        let recorder = TestRecorder::default();
        ::metrics::with_local_recorder(&recorder, describe);
        let mut described = recorder.described.into_inner().unwrap();
        let n = described.len();
        described.sort();
        described.dedup();
        assert_eq!(described.len(), n);
        assert_eq!(
            n,
            fields(&format!("{:?}", ReaderMetrics::default())).len()
                + fields(&format!("{:?}", WriterMetrics::default())).len()
        );
        assert!(described.iter().all(|d| d.starts_with("udsipc_")));
    }

    #[test]
    fn reader_publishes_under_its_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sock");
        let reader = Reader::builder(&path).start(|_: &[u8]| Ok(())).unwrap();
        let recorder = TestRecorder::default();
        ::metrics::with_local_recorder(&recorder, || reader.publish_metrics());
        let seen = published(&recorder);
        let (labels, _, _) = &seen["udsipc_reader_connections_total"];
        assert_eq!(labels[0].1, path.display().to_string());
        reader
            .stop_blocking(std::time::Duration::from_secs(1))
            .unwrap();
    }
}
