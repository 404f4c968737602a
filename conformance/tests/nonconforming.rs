//! Peers that break a rule on purpose, kept so the cases that name the
//! rule are shown to catch it: the Python peer with `UDSIPC_PY_BREAK`
//! (a reader without 4.8's ordering; a reader that lets its writers keep
//! writing after its stop, 7.4) must fail `4.8-order-across-reconnects` and
//! `7.4-reader-drain-on-stop`, which the conforming peers pass
//! (`tests/cases.rs`).

use udsipc_conformance::cases::{find, run_arm};
use udsipc_conformance::peer::Impl;

/// The Python peer with `rules` broken, judged by the spec.
fn broken_py(rules: &str) -> Impl {
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = udsipc_conformance::crate_dir().join("py-peer/udsipc_peer.py");
    Impl::command(
        &format!("py-without-{rules}"),
        vec![
            "env".into(),
            format!("UDSIPC_PY_BREAK={rules}"),
            py,
            "-S".into(),
            script.to_string_lossy().into_owned(),
        ],
        false,
        None,
    )
}

#[test]
fn a_reader_without_the_ordering_rule_fails_4_8() {
    let case = find("4.8-order-across-reconnects").unwrap();
    let result = run_arm(case, None, Some(broken_py("4.8")));
    eprintln!("{}", result.detail);
    assert!(!result.pass && !result.unsupported, "{result:?}");
    assert!(
        result
            .detail
            .contains("newer connection's frames over before"),
        "{result:?}"
    );
}

#[test]
fn a_reader_that_lets_writers_keep_writing_after_stop_fails_7_4() {
    let case = find("7.4-reader-drain-on-stop").unwrap();
    let result = run_arm(case, Some(Impl::Rust), Some(broken_py("7.4")));
    eprintln!("{}", result.detail);
    assert!(!result.pass && !result.unsupported, "{result:?}");
}
