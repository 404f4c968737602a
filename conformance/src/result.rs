//! The outcome of one case in one arm, as a value, and its file.
//!
//! Every test runs in its own process (nextest), so each writes one JSON
//! file into `target/conformance/results/`; [`crate::report`] assembles
//! them. A leaf of the crate: the runner records here without knowing the
//! report.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::gopeer::out_dir;

/// The outcome of one case in one arm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseResult {
    /// The case's stable ID, e.g. `2.2.1-varint-boundaries`.
    pub case: String,
    /// The arm, e.g. `Go->Rust` or `raw->Go`.
    pub arm: String,
    /// Whether the observed outcome was the expected one.
    pub pass: bool,
    /// The peer does not support what the case needs (it exited 127).
    #[serde(default)]
    pub unsupported: bool,
    /// What was observed, or what differed.
    pub detail: String,
    /// How long the run took (shown, never asserted).
    #[serde(default)]
    pub seconds: f64,
}

/// The directory of per-test result files.
pub fn results_dir() -> PathBuf {
    out_dir().join("results")
}

/// Writes one result file.
pub fn record(r: &CaseResult) -> std::io::Result<()> {
    let dir = results_dir();
    std::fs::create_dir_all(&dir)?;
    let name = format!("{}__{}.json", r.case, r.arm).replace(['/', '>', ' '], "_");
    std::fs::write(dir.join(name), serde_json::to_vec_pretty(r)?)
}

/// Reads every result file, sorted by case then arm.
pub fn collect() -> std::io::Result<Vec<CaseResult>> {
    let mut out = Vec::new();
    let dir = results_dir();
    if dir.exists() {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "json") {
                let r: CaseResult = serde_json::from_slice(&std::fs::read(&p)?)?;
                out.push(r);
            }
        }
    }
    out.sort_by(|a, b| (&a.case, &a.arm).cmp(&(&b.case, &b.arm)));
    Ok(out)
}
