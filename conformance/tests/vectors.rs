//! `conformance/vectors.json` (PROTOCOL.md appendix B) against the frame
//! receiver the Rust Reader runs, fed whole, one byte per read, and split
//! at every position; and the Python peer's own tests on the same vectors.

use std::time::{Duration, Instant};

use serde_json::Value;
use udsipc::frame::{FrameError, Receiver};
use udsipc_conformance::peer::from_hex;

/// What a reader did with one vector's bytes.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    messages: Vec<Vec<u8>>,
    /// `None` for a clean close, else the error's context.
    context: Option<&'static str>,
}

fn context(e: FrameError) -> &'static str {
    match e {
        FrameError::TooLarge { .. } => "message too large",
        FrameError::TruncatedBody { .. } => "failed to read the complete message",
        _ => "failed to read the length prefix",
    }
}

/// Feeds `chunks` then the end of the stream, taking every frame after each.
fn receive(max: u64, chunks: &[&[u8]]) -> Outcome {
    let mut rx = Receiver::new(max, Duration::from_secs(3600), Instant::now());
    let mut messages = Vec::new();
    for chunk in chunks {
        rx.fill(|buf| {
            buf.extend_from_slice(chunk);
            Ok::<_, ()>(chunk.len())
        })
        .expect("an infallible read");
        loop {
            match rx.next_owned() {
                Ok(Some(m)) => messages.push(m.to_vec()),
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        messages,
                        context: Some(context(e)),
                    };
                }
            }
        }
    }
    Outcome {
        messages,
        context: rx.finish().err().map(context),
    }
}

fn vectors() -> (u64, Vec<Value>) {
    let text = std::fs::read_to_string(udsipc_conformance::crate_dir().join("vectors.json"))
        .expect("vectors.json");
    let doc: Value = serde_json::from_str(&text).expect("vectors.json is JSON");
    let default = doc["default_max_message_size"]
        .as_u64()
        .expect("default max");
    (default, doc["vectors"].as_array().expect("vectors").clone())
}

fn expected(v: &Value) -> Outcome {
    let messages = v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| from_hex(m.as_str().expect("hex")))
        .collect();
    let context = match v["outcome"].as_str() {
        Some("clean-close") => None,
        Some("error") => Some(match v["context"].as_str() {
            Some("message too large") => "message too large",
            Some("failed to read the complete message") => "failed to read the complete message",
            Some("failed to read the length prefix") => "failed to read the length prefix",
            other => panic!("{}: unknown context {other:?}", v["name"]),
        }),
        other => panic!("{}: unknown outcome {other:?}", v["name"]),
    };
    Outcome { messages, context }
}

#[test]
fn every_vector_decodes_as_golden_whole_bytewise_and_split_anywhere() {
    let (default, vectors) = vectors();
    assert!(vectors.len() >= 30, "{} vectors", vectors.len());
    for v in &vectors {
        let name = v["name"].as_str().expect("name");
        let max = v["max_message_size"].as_u64().unwrap_or(default);
        let input = from_hex(v["input"].as_str().expect("input"));
        let want = expected(v);
        assert_eq!(receive(max, &[&input]), want, "{name}: whole");
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(receive(max, &bytes), want, "{name}: one byte per read");
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(receive(max, &[a, b]), want, "{name}: split at {at}");
        }
    }
}

#[test]
fn every_framing_rule_has_a_vector() {
    let (_, vectors) = vectors();
    let rules: Vec<&str> = vectors.iter().filter_map(|v| v["rule"].as_str()).collect();
    for rule in [
        "2.1", "2.2.1", "2.2.3", "2.2.4", "2.2.5", "2.3.1", "2.4.1", "2.4.2", "2.4.3", "2.5",
        "3.1", "3.2", "3.3",
    ] {
        assert!(rules.contains(&rule), "no vector for rule {rule}");
    }
    let known: Vec<String> = udsipc_conformance::spec::protocol()
        .into_iter()
        .map(|s| s.number)
        .collect();
    for r in rules {
        assert!(
            known.iter().any(|k| k == r),
            "a vector cites unknown rule {r}"
        );
    }
}

#[test]
fn python_peer_passes_its_own_tests_on_the_vectors() {
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&py)
        .args(["-m", "unittest", "-q", "test_udsipc_peer"])
        .current_dir(udsipc_conformance::crate_dir().join("py-peer"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("{py}: {e} (ci/test installs python3)"));
    assert!(
        out.status.success(),
        "python peer tests failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
