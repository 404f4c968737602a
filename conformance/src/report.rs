//! The report assembled from case×arm results ([`crate::result`]): the
//! N×N matrix, markdown, JSON and JUnit. `conformance-report` (run by
//! `ci/test` after nextest) writes `report.json`, `report.md` and
//! `report.xml` from the per-test result files.

use crate::gopeer::out_dir;
pub use crate::result::{CaseResult, collect, record, results_dir};

/// The arms' writers and readers, in first-seen order (`raw` last).
fn peers(results: &[CaseResult]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in results {
        if let Some((w, rd)) = r.arm.split_once("->") {
            for n in [w, rd] {
                if n != "raw" && !names.iter().any(|x| x == n) {
                    names.push(n.to_owned());
                }
            }
        }
    }
    names.sort_by_key(|n| {
        ["Go", "Rust", "Py"]
            .iter()
            .position(|b| b == n)
            .unwrap_or(3)
    });
    names.push("raw".to_owned());
    names
}

/// What one run shows in a table cell.
fn cell(r: &CaseResult) -> &'static str {
    match (r.pass, r.unsupported) {
        (true, _) => "pass",
        (false, true) => "unsupported",
        (false, false) => "**FAIL**",
    }
}

/// The N×N matrix: writers down, readers across (`raw` is a plain socket
/// writing or reading exact bytes); each cell is passed/run over every case
/// of that arm.
pub fn matrix(results: &[CaseResult]) -> String {
    let names = peers(results);
    let mut md = String::from("| writer \\ reader |");
    for n in &names {
        md.push_str(&format!(" {n} |"));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(names.len()));
    md.push('\n');
    for w in &names {
        md.push_str(&format!("| **{w}** |"));
        for r in &names {
            let arm = format!("{w}->{r}");
            let runs: Vec<&CaseResult> = results.iter().filter(|x| x.arm == arm).collect();
            if runs.is_empty() {
                md.push_str(" |");
                continue;
            }
            let passed = runs.iter().filter(|x| x.pass).count();
            let unsupported = runs.iter().filter(|x| x.unsupported).count();
            let mark = if passed + unsupported < runs.len() {
                " **FAIL**"
            } else {
                ""
            };
            let skip = if unsupported > 0 {
                format!(" ({unsupported} unsupported)")
            } else {
                String::new()
            };
            md.push_str(&format!(" {passed}/{}{skip}{mark} |", runs.len()));
        }
        md.push('\n');
    }
    md
}

/// The markdown report: the matrix, then one table per PROTOCOL.md
/// section (case × arm), the catalog, and each result's detail.
pub fn markdown(results: &[CaseResult]) -> String {
    let mut arms: Vec<&str> = Vec::new();
    for r in results {
        if !arms.contains(&r.arm.as_str()) {
            arms.push(&r.arm);
        }
    }
    arms.sort_by_key(|a| {
        crate::cases::ARM_ORDER
            .iter()
            .position(|o| o == a)
            .unwrap_or(usize::MAX)
    });
    let mut cases: Vec<&str> = Vec::new();
    for c in crate::cases::CATALOG {
        if results.iter().any(|r| r.case == c.id) {
            cases.push(c.id);
        }
    }
    for r in results {
        if !cases.contains(&r.case.as_str()) {
            cases.push(&r.case);
        }
    }
    cases.sort_by_key(|c| section_key(c));
    let passed = results.iter().filter(|r| r.pass).count();
    let unsupported = results.iter().filter(|r| r.unsupported).count();
    let mut md = format!(
        "# udsipc conformance report\n\n{passed} of {} case×arm runs passed \
         ({unsupported} unsupported), {} cases.\n\n## Matrix\n\n",
        results.len(),
        cases.len()
    );
    md.push_str(&matrix(results));
    let mut section = String::new();
    for c in &cases {
        let top = c.split(['.', '-']).next().unwrap_or("");
        if top != section {
            section = top.to_owned();
            md.push_str(&format!(
                "\n## {section} {}\n\n| case | level |",
                crate::spec::title(&section)
            ));
            for a in &arms {
                md.push_str(&format!(" {a} |"));
            }
            md.push_str("\n|---|---|");
            md.push_str(&"---|".repeat(arms.len()));
            md.push('\n');
        }
        let level = crate::cases::find(c).map_or("", |k| k.level.as_str());
        md.push_str(&format!("| `{c}` | {level} |"));
        for a in &arms {
            let text = results
                .iter()
                .find(|r| r.case == *c && r.arm == *a)
                .map_or("", cell);
            md.push_str(&format!(" {text} |"));
        }
        md.push('\n');
    }
    md.push_str("\n## Cases\n\n");
    for c in crate::cases::CATALOG {
        md.push_str(&format!(
            "- `{}` ({}, PROTOCOL.md {}): {}.\n  Rule: {}.\n  Expected: {}.\n",
            c.id,
            c.level.as_str(),
            c.section(),
            c.description,
            c.rule,
            c.expected
        ));
    }
    md.push_str("\n## Details\n\n");
    for r in results {
        md.push_str(&format!(
            "- `{}` {} — {}: {}\n",
            r.case,
            r.arm,
            cell(r).trim_matches('*'),
            r.detail.replace('\n', " ")
        ));
    }
    md
}

/// Sort key of a case ID by its rule number.
fn section_key(id: &str) -> Vec<u32> {
    let number = id.split_once('-').map_or(id, |(n, _)| n);
    number
        .split('.')
        .map(|p| p.parse().unwrap_or(u32::MAX))
        .collect()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JUnit XML: one test suite per case, one test case per arm; failures
/// carry the detail, unsupported runs are skipped.
pub fn junit(results: &[CaseResult]) -> String {
    let failures = results.iter().filter(|r| !r.pass && !r.unsupported).count();
    let skipped = results.iter().filter(|r| r.unsupported).count();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"udsipc-conformance\" \
         tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">\n",
        results.len()
    );
    let mut cases: Vec<&str> = Vec::new();
    for r in results {
        if !cases.contains(&r.case.as_str()) {
            cases.push(&r.case);
        }
    }
    cases.sort_by_key(|c| section_key(c));
    for c in cases {
        let runs: Vec<&CaseResult> = results.iter().filter(|r| r.case == c).collect();
        let f = runs.iter().filter(|r| !r.pass && !r.unsupported).count();
        let s = runs.iter().filter(|r| r.unsupported).count();
        xml.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" skipped=\"{s}\">\n",
            xml_escape(c),
            runs.len()
        ));
        for r in runs {
            xml.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\">",
                xml_escape(c),
                xml_escape(&r.arm)
            ));
            if r.unsupported {
                xml.push_str(&format!("<skipped message=\"{}\"/>", xml_escape(&r.detail)));
            } else if !r.pass {
                xml.push_str(&format!("<failure message=\"{}\"/>", xml_escape(&r.detail)));
            } else {
                xml.push_str(&format!(
                    "<system-out>{}</system-out>",
                    xml_escape(&r.detail)
                ));
            }
            xml.push_str("</testcase>\n");
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// Writes `report.json`, `report.md` and `report.xml` (JUnit) next to the results; returns the
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
    std::fs::write(dir.join("report.xml"), junit(&results))?;
    Ok(results)
}
