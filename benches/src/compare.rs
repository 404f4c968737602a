//! `udsipc bench --compare A.json B.json ...`: whether runs agree. For
//! each message size and headline ratio of the main table, each run's
//! median (the JSON's `ratio_*` fields), their median, and the largest
//! deviation from it; the bar is ±10%.

use std::path::PathBuf;

use serde_json::Value;

use crate::{median, size_label};

/// The headline ratios, by JSON field, and how the table names them.
pub const HEADLINE: [(&str, &str); 6] = [
    ("ratio_tokio_util", "udsipc / tokio-util"),
    ("ratio_zmq", "udsipc / ZeroMQ"),
    ("ratio_go", "udsipc / Go"),
    ("ratio_framed_limit", "udsipc / framed-copy limit"),
    ("ratio_raw_limit", "udsipc / raw limit"),
    ("ratio_cpu_framed_limit", "udsipc / framed-copy CPU"),
];

/// Runs agree on a ratio when each is within this share of their median.
pub const AGREE_WITHIN: f64 = 0.10;

/// The comparison of `files` (JSON written by `--json`) as markdown.
pub fn compare(files: &[PathBuf]) -> Result<String, String> {
    let runs = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            serde_json::from_str::<Value>(&text).map_err(|e| format!("{}: {e}", f.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rows = |run: &Value| run["rows"].as_array().cloned().unwrap_or_default();
    let mut sizes: Vec<u64> = runs
        .iter()
        .flat_map(|r| rows(r).into_iter().filter_map(|row| row["size"].as_u64()))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut out = String::from("| size | ratio |");
    for i in 1..=runs.len() {
        out.push_str(&format!(" run {i} |"));
    }
    out.push_str(" median | largest deviation | within ±10% |\n|---:|---|");
    out.push_str(&"---:|".repeat(runs.len()));
    out.push_str("---:|---:|---|\n");
    let (mut agree, mut compared) = (0, 0);
    for size in sizes {
        for (field, name) in HEADLINE {
            let values: Vec<Option<f64>> = runs
                .iter()
                .map(|run| {
                    rows(run)
                        .iter()
                        .find(|row| row["size"].as_u64() == Some(size))
                        .and_then(|row| row[field].as_f64())
                })
                .collect();
            let present: Vec<f64> = values.iter().flatten().copied().collect();
            if present.len() < 2 {
                continue;
            }
            let mid = median(&mut present.clone());
            let deviation = present
                .iter()
                .map(|v| (v / mid - 1.0).abs())
                .fold(0.0, f64::max);
            let ok = deviation <= AGREE_WITHIN && present.len() == runs.len();
            compared += 1;
            agree += usize::from(ok);
            out.push_str(&format!("| {} | {name} |", size_label(size as usize)));
            for v in &values {
                out.push_str(&v.map_or(" n/a |".to_owned(), |v| format!(" {v:.2}× |")));
            }
            out.push_str(&format!(
                " {mid:.2}× | ±{:.0}% | {} |\n",
                100.0 * deviation,
                if ok { "yes" } else { "no" }
            ));
        }
    }
    out.push_str(&format!(
        "\n{agree} of {compared} headline ratios agree within ±{:.0}% across {} runs.\n",
        100.0 * AGREE_WITHIN,
        runs.len()
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_agree_when_every_ratio_is_within_ten_percent_of_their_median() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, tokio: f64| {
            let path = dir.path().join(name);
            let json = serde_json::json!({"rows": [
                {"size": 1024, "ratio_tokio_util": tokio, "ratio_zmq": null}
            ]});
            std::fs::write(&path, json.to_string()).unwrap();
            path
        };
        let files = [write("a", 1.0), write("b", 1.05), write("c", 0.95)];
        let md = compare(&files).unwrap();
        assert!(
            md.contains(
                "| 1 KiB | udsipc / tokio-util | 1.00× | 1.05× | 0.95× | 1.00× | ±5% | yes |"
            ),
            "{md}"
        );
        assert!(md.contains("1 of 1 headline ratios agree"), "{md}");
        let files = [write("d", 1.0), write("e", 1.5)];
        let md = compare(&files).unwrap();
        assert!(md.contains("| no |"), "{md}");
        assert!(compare(&[dir.path().join("missing")]).is_err());
    }
}
