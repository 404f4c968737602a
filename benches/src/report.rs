//! The table: per-size rows of medians, the markdown the runner prints (in
//! the style of the Go reference's README), and the JSON it writes.

use serde::Serialize;

use crate::limits::Waiting;
use crate::{median, size_label};

/// Repeated samples of one cell; reported as medians.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    mbps: Vec<f64>,
    msgs: Vec<f64>,
    allocs: Vec<f64>,
}

impl Samples {
    /// Adds one measurement.
    pub fn push(&mut self, m: &crate::Measurement) {
        self.mbps.push(m.mb_per_sec());
        self.msgs.push(m.msgs_per_sec());
        if let Some(a) = m.allocs_per_msg() {
            self.allocs.push(a);
        }
    }

    /// Median MB/s, if measured.
    pub fn mbps(&self) -> Option<f64> {
        med(&self.mbps)
    }

    /// Median messages per second, if measured.
    pub fn msgs_per_sec(&self) -> Option<f64> {
        med(&self.msgs)
    }

    /// Median allocations per message, if counted.
    pub fn allocs_per_msg(&self) -> Option<f64> {
        med(&self.allocs)
    }

    /// The slowest round as a share of the median, in percent (a "slow
    /// mode" shows as a low figure); `None` with fewer than 2 rounds.
    pub fn slowest_pct_of_median(&self) -> Option<f64> {
        let slowest = self.mbps.iter().copied().reduce(f64::min)?;
        let median = med(&self.mbps)?;
        (self.mbps.len() > 1 && median > 0.0).then(|| 100.0 * slowest / median)
    }
}

fn med(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| median(&mut v.to_vec()))
}

/// One message size's medians (MB = 1e6 bytes). `None`: not measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    /// Message size in bytes.
    pub size: usize,
    /// Go reference, Go writer process → Go reader process.
    pub go_mbps: Option<f64>,
    /// Go → Go messages per second.
    pub go_msgs_per_sec: Option<f64>,
    /// Go → Go allocations per message (both processes).
    pub go_allocs_per_msg: Option<f64>,
    /// udsipc, Rust writer process → Rust reader process.
    pub rust_mbps: Option<f64>,
    /// Rust → Rust messages per second.
    pub rust_msgs_per_sec: Option<f64>,
    /// Rust → Rust allocations per message (both processes).
    pub rust_allocs_per_msg: Option<f64>,
    /// Rust → Rust: the slowest round's MB/s as a share of the median, %.
    pub rust_slowest_round_pct: Option<f64>,
    /// udsipc, Writer → Reader in one process.
    pub rust_inproc_mbps: Option<f64>,
    /// In-process messages per second.
    pub rust_inproc_msgs_per_sec: Option<f64>,
    /// In-process allocations per message.
    pub rust_inproc_allocs_per_msg: Option<f64>,
    /// Go writer → Rust reader.
    pub go_to_rust_mbps: Option<f64>,
    /// Rust writer → Go reader.
    pub rust_to_go_mbps: Option<f64>,
    /// tokio-util `FramedWrite`/`FramedRead` + unsigned-varint `UviBytes`.
    pub tokio_util_mbps: Option<f64>,
    /// tokio-util allocations per message.
    pub tokio_util_allocs_per_msg: Option<f64>,
    /// tokio-util: the slowest round's MB/s as a share of the median, %.
    pub tokio_util_slowest_round_pct: Option<f64>,
    /// tokio-util `FramedWrite`/`FramedRead` with udsipc's `UvarintCodec`
    /// (the tokio-util column's shape, only the codec differs).
    pub codec_mbps: Option<f64>,
    /// udsipc codec allocations per message.
    pub codec_allocs_per_msg: Option<f64>,
    /// The raw socket: no framing, 256 KiB writes; the faster of blocking
    /// threads and epoll (see `raw_limit_how`).
    pub raw_limit_mbps: Option<f64>,
    /// Which way of waiting gave `raw_limit_mbps`.
    pub raw_limit_how: Option<Waiting>,
    /// The raw socket with blocking threads.
    pub raw_blocking_mbps: Option<f64>,
    /// The raw socket waiting in epoll.
    pub raw_epoll_mbps: Option<f64>,
    /// The framed-copy limit: frames copied into 256 KiB writes, no queue,
    /// no parsing; the faster way of waiting (see `framed_limit_how`).
    pub framed_limit_mbps: Option<f64>,
    /// Which way of waiting gave `framed_limit_mbps`.
    pub framed_limit_how: Option<Waiting>,
    /// The framed-copy limit with blocking threads.
    pub framed_blocking_mbps: Option<f64>,
    /// The framed-copy limit waiting in epoll.
    pub framed_epoll_mbps: Option<f64>,
    /// The latency floor (paced one-way 64 B to a blocking reader), p50 µs;
    /// on the row of the latency message size.
    pub latency_floor_p50_us: Option<f64>,
    /// The latency floor, p99 µs.
    pub latency_floor_p99_us: Option<f64>,
    /// The latency floor across processes (the same, a minimal writer
    /// process to a minimal reader process), p50 µs.
    pub latency_floor_processes_p50_us: Option<f64>,
    /// The latency floor across processes, p99 µs.
    pub latency_floor_processes_p99_us: Option<f64>,
}

impl Row {
    /// Rust processes over Go processes.
    pub fn rust_vs_go(&self) -> Option<f64> {
        Some(self.rust_mbps? / self.go_mbps?)
    }

    /// Rust processes as a share of the framed-copy limit, in percent.
    pub fn rust_pct_of_framed_limit(&self) -> Option<f64> {
        Some(100.0 * self.rust_mbps? / self.framed_limit_mbps?)
    }

    /// Rust processes as a share of the raw limit, in percent.
    pub fn rust_pct_of_raw_limit(&self) -> Option<f64> {
        Some(100.0 * self.rust_mbps? / self.raw_limit_mbps?)
    }

    /// Rust processes over tokio-util.
    pub fn rust_vs_tokio_util(&self) -> Option<f64> {
        Some(self.rust_mbps? / self.tokio_util_mbps?)
    }
}

/// Throughput with several Writers into one Reader (one process).
#[derive(Debug, Clone, Serialize)]
pub struct ScalingRow {
    /// Concurrent Writers, one connection each.
    pub writers: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Median payload MB/s over all Writers.
    pub mbps: f64,
    /// Median messages per second over all Writers.
    pub msgs_per_sec: f64,
}

/// The latency floor of this machine, p50/p99 µs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FloorRow {
    /// Half the round trip of a blocking 64 B ping-pong, p50.
    pub ping_pong_p50_us: f64,
    /// Ping-pong p99.
    pub ping_pong_p99_us: f64,
    /// 64 B at the latency rate, one way, to a blocking reader, p50.
    pub paced_p50_us: f64,
    /// Paced one-way p99.
    pub paced_p99_us: f64,
    /// The paced one-way floor between two processes (minimal blocking
    /// peers, no library), p50: the shape of the other latency rows.
    pub processes_p50_us: f64,
    /// Paced one-way across processes, p99.
    pub processes_p99_us: f64,
}

/// p50/p99 one-way latency of one writer → reader pair.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    /// `Rust → Rust`, `Go → Go`, ...
    pub pair: String,
    /// Messages per second.
    pub rate: f64,
    /// Message size in bytes.
    pub size: usize,
    /// Median one-way latency, µs.
    pub p50_us: f64,
    /// 99th percentile one-way latency, µs.
    pub p99_us: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Table {
    /// One row per message size.
    pub rows: Vec<Row>,
    /// Latency at a fixed rate.
    pub latency: Vec<LatencyRow>,
    /// The latency floor measured in the same run.
    pub latency_floor: Option<FloorRow>,
    /// Throughput by number of concurrent Writers (with `--scaling`).
    pub scaling: Vec<ScalingRow>,
    /// Why the Go columns are empty, if they are.
    pub go_unavailable: Option<String>,
    /// Repetitions per cell (medians are reported).
    pub rounds: usize,
    /// Payload bytes per measurement (fewer for very slow cells).
    pub bytes_per_cell: u64,
    /// The 1-minute load average when the run started and ended.
    pub load_average: [Option<f64>; 2],
}

fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        None => "n/a".into(),
        Some(v) => {
            let s = format!("{v:.decimals$}");
            // Thousands separators on the integer part.
            let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(i, f)| (i, f));
            let mut out = String::new();
            for (i, c) in int.chars().enumerate() {
                if i > 0 && (int.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            if !frac.is_empty() {
                out.push('.');
                out.push_str(frac);
            }
            out
        }
    }
}

fn ratio(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |r| format!("{r:.1}×"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |p| format!("{p:.0}%"))
}

fn with_how(v: Option<f64>, how: Option<Waiting>) -> String {
    match how {
        Some(h) if v.is_some() => format!("{} ({})", num(v, 0), h.name()),
        _ => num(v, 0),
    }
}

impl Table {
    /// The markdown tables (throughput, allocations, latency).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str("| size | Go MB/s | udsipc MB/s | udsipc msgs/s | udsipc / Go | udsipc in-process MB/s | Go → Rust MB/s | Rust → Go MB/s | tokio-util MB/s | udsipc / tokio-util | udsipc codec MB/s | framed-copy limit MB/s | udsipc % of framed limit | raw limit MB/s | udsipc % of raw limit |\n");
        s.push_str(
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                size_label(r.size),
                num(r.go_mbps, 0),
                num(r.rust_mbps, 0),
                num(r.rust_msgs_per_sec, 0),
                ratio(r.rust_vs_go()),
                num(r.rust_inproc_mbps, 0),
                num(r.go_to_rust_mbps, 0),
                num(r.rust_to_go_mbps, 0),
                num(r.tokio_util_mbps, 0),
                ratio(r.rust_vs_tokio_util()),
                num(r.codec_mbps, 0),
                with_how(r.framed_limit_mbps, r.framed_limit_how),
                pct(r.rust_pct_of_framed_limit()),
                with_how(r.raw_limit_mbps, r.raw_limit_how),
                pct(r.rust_pct_of_raw_limit()),
            ));
        }
        s.push_str("\n| size | Go allocs/msg | udsipc allocs/msg | udsipc in-process allocs/msg | tokio-util allocs/msg | udsipc codec allocs/msg |\n");
        s.push_str("|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                size_label(r.size),
                num(r.go_allocs_per_msg, 2),
                num(r.rust_allocs_per_msg, 4),
                num(r.rust_inproc_allocs_per_msg, 4),
                num(r.tokio_util_allocs_per_msg, 2),
                num(r.codec_allocs_per_msg, 2),
            ));
        }
        if self.rows.iter().any(|r| r.rust_slowest_round_pct.is_some()) {
            s.push_str("\n| size | udsipc slowest round % of median | tokio-util slowest round % of median |\n|---:|---:|---:|\n");
            for r in &self.rows {
                s.push_str(&format!(
                    "| {} | {} | {} |\n",
                    size_label(r.size),
                    pct(r.rust_slowest_round_pct),
                    pct(r.tokio_util_slowest_round_pct),
                ));
            }
        }
        if !self.latency.is_empty() {
            let l = &self.latency[0];
            s.push_str(&format!(
                "\n| one-way latency, {} B at {} msgs/s | p50 µs | p99 µs |\n|---|---:|---:|\n",
                l.size,
                num(Some(l.rate), 0)
            ));
            for l in &self.latency {
                s.push_str(&format!(
                    "| {} | {:.1} | {:.1} |\n",
                    l.pair, l.p50_us, l.p99_us
                ));
            }
            if let Some(f) = &self.latency_floor {
                s.push_str(&format!(
                    "| floor: paced one-way, blocking reader | {:.1} | {:.1} |\n| floor: the same between two processes | {:.1} | {:.1} |\n| floor: blocking ping-pong, half round trip | {:.1} | {:.1} |\n",
                    f.paced_p50_us,
                    f.paced_p99_us,
                    f.processes_p50_us,
                    f.processes_p99_us,
                    f.ping_pong_p50_us,
                    f.ping_pong_p99_us
                ));
                if let Some(rust) = self.latency.iter().find(|l| l.pair == "Rust → Rust") {
                    s.push_str(&format!(
                        "| Rust → Rust ÷ paced floor | {:.2}× | {:.2}× |\n| Rust → Rust ÷ paced floor between processes | {:.2}× | {:.2}× |\n",
                        rust.p50_us / f.paced_p50_us,
                        rust.p99_us / f.paced_p99_us,
                        rust.p50_us / f.processes_p50_us,
                        rust.p99_us / f.processes_p99_us
                    ));
                }
            }
        }
        if !self.scaling.is_empty() {
            s.push_str("\n| writers into one Reader (in-process) | size | MB/s | msgs/s |\n|---:|---:|---:|---:|\n");
            for r in &self.scaling {
                s.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    r.writers,
                    size_label(r.size),
                    num(Some(r.mbps), 0),
                    num(Some(r.msgs_per_sec), 0)
                ));
            }
        }
        if let Some(why) = &self.go_unavailable {
            s.push_str(&format!("\nGo columns: n/a ({why})\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(mbps: &[f64]) -> Samples {
        Samples {
            mbps: mbps.to_vec(),
            ..Samples::default()
        }
    }

    #[test]
    fn the_slowest_round_is_reported_against_the_median() {
        assert_eq!(
            samples(&[100.0, 50.0, 100.0]).slowest_pct_of_median(),
            Some(50.0)
        );
        assert_eq!(
            samples(&[90.0, 100.0, 110.0]).slowest_pct_of_median(),
            Some(90.0)
        );
        assert_eq!(samples(&[100.0]).slowest_pct_of_median(), None, "one round");
        assert_eq!(samples(&[]).slowest_pct_of_median(), None);
    }

    #[test]
    fn the_spread_table_appears_once_a_column_has_rounds() {
        let mut table = Table::default();
        table.rows.push(Row {
            size: 64,
            rust_slowest_round_pct: Some(93.4),
            ..Row::default()
        });
        let md = table.markdown();
        assert!(md.contains("| 64 B | 93% | n/a |"), "{md}");
    }
}
