//! Results of case×arm runs and the report assembled from them.
//!
//! Every test runs in its own process (nextest), so each writes one JSON
//! file into `target/conformance/results/`; `conformance-report` (run by
//! `ci/test` after nextest) turns them into `report.json` and `report.md`.

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

/// The markdown report: a case×arm table, then each result's detail.
pub fn markdown(results: &[CaseResult]) -> String {
    let mut arms: Vec<&str> = Vec::new();
    for r in results {
        if !arms.contains(&r.arm.as_str()) {
            arms.push(&r.arm);
        }
    }
    arms.sort_by_key(|a| crate::cases::ARM_ORDER.iter().position(|o| o == a));
    let mut cases: Vec<&str> = Vec::new();
    for r in results {
        if !cases.contains(&r.case.as_str()) {
            cases.push(&r.case);
        }
    }
    let passed = results.iter().filter(|r| r.pass).count();
    let mut md = format!(
        "# udsipc conformance report\n\n{passed} of {} case×arm runs passed.\n\n| case |",
        results.len()
    );
    for a in &arms {
        md.push_str(&format!(" {a} |"));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(arms.len()));
    md.push('\n');
    for c in &cases {
        md.push_str(&format!("| `{c}` |"));
        for a in &arms {
            let cell = match results.iter().find(|r| r.case == *c && r.arm == *a) {
                Some(r) if r.pass => "pass",
                Some(_) => "**FAIL**",
                None => "",
            };
            md.push_str(&format!(" {cell} |"));
        }
        md.push('\n');
    }
    md.push_str("\n## Cases\n\n");
    for c in crate::cases::CATALOG {
        md.push_str(&format!(
            "- `{}`: {}.\n  Rule: {}.\n  Expected: {}.\n",
            c.id, c.description, c.rule, c.expected
        ));
    }
    md.push_str("\n## Details\n\n");
    for r in results {
        md.push_str(&format!(
            "- `{}` {} — {}: {}\n",
            r.case,
            r.arm,
            if r.pass { "pass" } else { "FAIL" },
            r.detail.replace('\n', " ")
        ));
    }
    md
}

/// Writes `report.json` and `report.md` next to the results; returns the
/// results.
pub fn write_report() -> std::io::Result<Vec<CaseResult>> {
    let results = collect()?;
    let dir = out_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(&results)?,
    )?;
    std::fs::write(dir.join("report.md"), markdown(&results))?;
    Ok(results)
}
