//! The `serde` feature: metrics snapshots and error kinds round-trip
//! through a serde format (JSON here), with stable field names.
#![cfg(feature = "serde")]

use udsipc::frame::FrameError;
use udsipc::{ReadStage, ReaderMetrics, WriteFailure, WritePhase, WriterMetrics};

#[test]
fn writer_metrics_round_trip_with_named_counters() {
    let mut m = WriterMetrics::default();
    m.sent = 7;
    m.dropped = 2;
    let json = serde_json::to_value(m).unwrap();
    assert_eq!(json["sent"], 7);
    assert_eq!(json["dropped"], 2);
    assert_eq!(serde_json::from_value::<WriterMetrics>(json).unwrap(), m);
}

#[test]
fn reader_metrics_round_trip_with_named_counters() {
    let mut m = ReaderMetrics::default();
    m.received = 3;
    let json = serde_json::to_value(m).unwrap();
    assert_eq!(json["received"], 3);
    assert_eq!(serde_json::from_value::<ReaderMetrics>(json).unwrap(), m);
}

#[test]
fn error_kinds_round_trip() {
    let e = FrameError::TooLarge { len: 11, max: 10 };
    let json = serde_json::to_string(&e).unwrap();
    assert_eq!(serde_json::from_str::<FrameError>(&json).unwrap(), e);
    let json = serde_json::to_string(&WriteFailure::NoConsumer).unwrap();
    assert_eq!(
        serde_json::from_str::<WriteFailure>(&json).unwrap(),
        WriteFailure::NoConsumer
    );
    for p in [WritePhase::Running, WritePhase::Draining] {
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<WritePhase>(&json).unwrap(), p);
    }
    let s = serde_json::to_string(&ReadStage::Body).unwrap();
    assert_eq!(
        serde_json::from_str::<ReadStage>(&s).unwrap(),
        ReadStage::Body
    );
}
