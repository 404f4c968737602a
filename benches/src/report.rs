//! The table: per-size rows of medians, the markdown the runner prints (in
//! the style of the Go reference's README), and the JSON it writes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::columns::{Cell, Column, Topology};
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

    /// The samples of every round that measured the column.
    pub fn of(rounds: &[Option<crate::Measurement>]) -> Self {
        let mut s = Self::default();
        rounds.iter().flatten().for_each(|m| s.push(m));
        s
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

/// The median of the rounds that have a value.
pub fn median_of(v: &[Option<f64>]) -> Option<f64> {
    med(&v.iter().flatten().copied().collect::<Vec<_>>())
}

/// The smallest and largest per-round ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// The smallest per-round ratio.
    pub min: f64,
    /// The largest per-round ratio.
    pub max: f64,
}

/// The median and spread of per-round ratios `num / den` over the rounds
/// that have both.
pub fn ratio_of(num: &[Option<f64>], den: &[Option<f64>]) -> Option<(f64, Spread)> {
    let mut v: Vec<f64> = num
        .iter()
        .zip(den)
        .filter_map(|(n, d)| Some(((*n)?, (*d)?)))
        .filter(|(_, d)| *d > 0.0)
        .map(|(n, d)| n / d)
        .collect();
    if v.is_empty() {
        return None;
    }
    let spread = Spread {
        min: v.iter().copied().fold(f64::INFINITY, f64::min),
        max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    };
    Some((median(&mut v), spread))
}

/// A limit udsipc beats by more than this (per-round ratio median) is not
/// a limit in that cell: the table marks it unreliable.
pub const UNRELIABLE_ABOVE: f64 = 1.05;

/// Median CPU ns per message of a two-process column, per process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuNs {
    /// The writer process.
    pub writer: f64,
    /// The reader process.
    pub reader: f64,
}

/// One message size's medians in the main table (two processes in every
/// column; MB = 1e6 bytes). `None`: not measured.
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
    /// udsipc, Writer → Reader in one process (from the in-process table).
    pub rust_inproc_mbps: Option<f64>,
    /// In-process messages per second.
    pub rust_inproc_msgs_per_sec: Option<f64>,
    /// In-process allocations per message.
    pub rust_inproc_allocs_per_msg: Option<f64>,
    /// Go writer → Rust reader.
    pub go_to_rust_mbps: Option<f64>,
    /// Rust writer → Go reader.
    pub rust_to_go_mbps: Option<f64>,
    /// tokio-util `FramedWrite`/`FramedRead` + unsigned-varint `UviBytes`,
    /// two processes.
    pub tokio_util_mbps: Option<f64>,
    /// tokio-util allocations per message (both processes).
    pub tokio_util_allocs_per_msg: Option<f64>,
    /// tokio-util: the slowest round's MB/s as a share of the median, %.
    pub tokio_util_slowest_round_pct: Option<f64>,
    /// tokio-util `FramedWrite`/`FramedRead` with udsipc's `UvarintCodec`
    /// (the tokio-util column's shape, only the codec differs).
    pub codec_mbps: Option<f64>,
    /// udsipc codec allocations per message (both processes).
    pub codec_allocs_per_msg: Option<f64>,
    /// libzmq PUSH → PULL over `ipc://`, payload MB/s.
    pub zmq_mbps: Option<f64>,
    /// ZeroMQ messages per second.
    pub zmq_msgs_per_sec: Option<f64>,
    /// The raw socket: no framing, 256 KiB writes; each round's faster way
    /// of waiting, median (see `raw_limit_how`).
    pub raw_limit_mbps: Option<f64>,
    /// Which way of waiting has the higher median.
    pub raw_limit_how: Option<Waiting>,
    /// The raw socket with blocking peers.
    pub raw_blocking_mbps: Option<f64>,
    /// The raw socket waiting in epoll.
    pub raw_epoll_mbps: Option<f64>,
    /// The framed-copy limit: frames copied into 256 KiB writes, no queue,
    /// no parsing; each round's faster way of waiting, median.
    pub framed_limit_mbps: Option<f64>,
    /// Which way of waiting has the higher median.
    pub framed_limit_how: Option<Waiting>,
    /// The framed-copy limit with blocking peers.
    pub framed_blocking_mbps: Option<f64>,
    /// The framed-copy limit waiting in epoll.
    pub framed_epoll_mbps: Option<f64>,
    /// Median of the per-round ratios udsipc MB/s / framed-copy limit MB/s.
    pub ratio_framed_limit: Option<f64>,
    /// Median of the per-round ratios udsipc / raw limit.
    pub ratio_raw_limit: Option<f64>,
    /// Median of the per-round ratios udsipc / tokio-util.
    pub ratio_tokio_util: Option<f64>,
    /// Median of the per-round ratios udsipc / ZeroMQ.
    pub ratio_zmq: Option<f64>,
    /// Median of the per-round ratios udsipc / Go.
    pub ratio_go: Option<f64>,
    /// Median of the per-round ratios of CPU ns per message, both
    /// processes: udsipc / the framed-copy limit (its cheaper way).
    pub ratio_cpu_framed_limit: Option<f64>,
    /// The smallest and largest per-round ratio, keyed by the ratio's
    /// field name (`ratio_framed_limit`, `ratio_raw_limit`,
    /// `ratio_tokio_util`, `ratio_zmq`, `ratio_go`,
    /// `ratio_cpu_framed_limit`).
    pub ratio_spread: BTreeMap<&'static str, Spread>,
    /// Median CPU ns per message (user + system) of the writer and the
    /// reader process, by column key.
    pub cpu_ns_per_msg: BTreeMap<&'static str, CpuNs>,
    /// The limits udsipc beat by more than 5% in this cell (`framed_copy`,
    /// `raw`): not limits here; the table prints "unreliable".
    pub limit_unreliable: Vec<&'static str>,
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

/// The faster way of waiting by median, and its median.
fn how(blocking: Option<f64>, epoll: Option<f64>) -> Option<Waiting> {
    match (blocking, epoll) {
        (Some(b), Some(e)) if b >= e => Some(Waiting::Blocking),
        (_, Some(_)) => Some(Waiting::Epoll),
        (Some(_), None) => Some(Waiting::Blocking),
        (None, None) => None,
    }
}

impl Row {
    /// The main table's row for `cell` (its two-process columns).
    pub fn from_cell(cell: &Cell) -> Self {
        use Column as C;
        let s = |c: Column| Samples::of(&cell.of(c));
        let mbps = |c: Column| cell.per_round(c, mb);
        let (rust, tokio, go) = (s(C::Rust), s(C::TokioUtil), s(C::Go));
        let framed = cell.best_mbps(C::FramedLimitBlocking, C::FramedLimit);
        let raw = cell.best_mbps(C::RawBlocking, C::Raw);
        let mut row = Row {
            size: cell.size,
            go_mbps: go.mbps(),
            go_msgs_per_sec: go.msgs_per_sec(),
            go_allocs_per_msg: go.allocs_per_msg(),
            rust_mbps: rust.mbps(),
            rust_msgs_per_sec: rust.msgs_per_sec(),
            rust_allocs_per_msg: rust.allocs_per_msg(),
            rust_slowest_round_pct: rust.slowest_pct_of_median(),
            go_to_rust_mbps: s(C::GoToRust).mbps(),
            rust_to_go_mbps: s(C::RustToGo).mbps(),
            tokio_util_mbps: tokio.mbps(),
            tokio_util_allocs_per_msg: tokio.allocs_per_msg(),
            tokio_util_slowest_round_pct: tokio.slowest_pct_of_median(),
            codec_mbps: s(C::UdsipcCodec).mbps(),
            codec_allocs_per_msg: s(C::UdsipcCodec).allocs_per_msg(),
            zmq_mbps: s(C::Zmq).mbps(),
            zmq_msgs_per_sec: s(C::Zmq).msgs_per_sec(),
            raw_blocking_mbps: s(C::RawBlocking).mbps(),
            raw_epoll_mbps: s(C::Raw).mbps(),
            raw_limit_mbps: median_of(&raw),
            framed_blocking_mbps: s(C::FramedLimitBlocking).mbps(),
            framed_epoll_mbps: s(C::FramedLimit).mbps(),
            framed_limit_mbps: median_of(&framed),
            ..Row::default()
        };
        row.raw_limit_how = how(row.raw_blocking_mbps, row.raw_epoll_mbps);
        row.framed_limit_how = how(row.framed_blocking_mbps, row.framed_epoll_mbps);
        let udsipc = mbps(C::Rust);
        let cpu_framed = cell.least_cpu(C::FramedLimitBlocking, C::FramedLimit);
        for (key, den, slot) in [
            ("ratio_framed_limit", framed, &mut row.ratio_framed_limit),
            ("ratio_raw_limit", raw, &mut row.ratio_raw_limit),
            (
                "ratio_tokio_util",
                mbps(C::TokioUtil),
                &mut row.ratio_tokio_util,
            ),
            ("ratio_zmq", mbps(C::Zmq), &mut row.ratio_zmq),
            ("ratio_go", mbps(C::Go), &mut row.ratio_go),
        ] {
            if let Some((m, spread)) = ratio_of(&udsipc, &den) {
                *slot = Some(m);
                row.ratio_spread.insert(key, spread);
            }
        }
        if let Some((m, spread)) = ratio_of(&cell.cpu_total(C::Rust), &cpu_framed) {
            row.ratio_cpu_framed_limit = Some(m);
            row.ratio_spread.insert("ratio_cpu_framed_limit", spread);
        }
        for (column, _) in &cell.rounds {
            if column.topology() != Topology::TwoProcesses {
                continue;
            }
            let per = |f: fn((f64, Option<f64>)) -> f64| {
                median_of(
                    &cell
                        .of(*column)
                        .iter()
                        .map(|m| m.as_ref()?.cpu_ns_per_msg().map(f))
                        .collect::<Vec<_>>(),
                )
            };
            if let (Some(writer), Some(reader)) = (per(|c| c.0), per(|c| c.1.unwrap_or(0.0))) {
                row.cpu_ns_per_msg
                    .insert(column.key(), CpuNs { writer, reader });
            }
        }
        row.limit_unreliable = unreliable(row.ratio_framed_limit, row.ratio_raw_limit);
        row
    }

    /// Rust processes over Go processes (median of per-round ratios).
    pub fn rust_vs_go(&self) -> Option<f64> {
        self.ratio_go
    }

    /// Rust processes as a share of the framed-copy limit, in percent.
    pub fn rust_pct_of_framed_limit(&self) -> Option<f64> {
        Some(100.0 * self.ratio_framed_limit?)
    }

    /// Rust processes as a share of the raw limit, in percent.
    pub fn rust_pct_of_raw_limit(&self) -> Option<f64> {
        Some(100.0 * self.ratio_raw_limit?)
    }

    /// Rust processes over tokio-util (median of per-round ratios).
    pub fn rust_vs_tokio_util(&self) -> Option<f64> {
        self.ratio_tokio_util
    }
}

fn mb(m: &crate::Measurement) -> f64 {
    m.mb_per_sec()
}

fn unreliable(framed: Option<f64>, raw: Option<f64>) -> Vec<&'static str> {
    let mut out = vec![];
    if framed.is_some_and(|r| r > UNRELIABLE_ABOVE) {
        out.push("framed_copy");
    }
    if raw.is_some_and(|r| r > UNRELIABLE_ABOVE) {
        out.push("raw");
    }
    out
}

/// One message size in the in-process table (two threads of one process
/// in every column), by column key (`udsipc`, `tokio_util`, `codec`,
/// `framed_limit_blocking`, ...).
#[derive(Debug, Clone, Default, Serialize)]
pub struct InprocRow {
    /// Message size in bytes.
    pub size: usize,
    /// Median payload MB/s.
    pub mbps: BTreeMap<&'static str, f64>,
    /// Median messages per second.
    pub msgs_per_sec: BTreeMap<&'static str, f64>,
    /// Median allocations per message, where counted.
    pub allocs_per_msg: BTreeMap<&'static str, f64>,
    /// Median CPU ns per message of the whole process (writer and reader
    /// threads together).
    pub cpu_ns_per_msg: BTreeMap<&'static str, f64>,
    /// The framed-copy limit: each round's faster way, median MB/s.
    pub framed_limit_mbps: Option<f64>,
    /// The raw limit: each round's faster way, median MB/s.
    pub raw_limit_mbps: Option<f64>,
    /// Median of the per-round ratios udsipc / framed-copy limit.
    pub ratio_framed_limit: Option<f64>,
    /// Median of the per-round ratios udsipc / raw limit.
    pub ratio_raw_limit: Option<f64>,
    /// Median of the per-round ratios udsipc / tokio-util.
    pub ratio_tokio_util: Option<f64>,
    /// Median of the per-round CPU ratios udsipc / framed-copy limit (its
    /// cheaper way).
    pub ratio_cpu_framed_limit: Option<f64>,
    /// The smallest and largest per-round ratio, by the ratio's name.
    pub ratio_spread: BTreeMap<&'static str, Spread>,
    /// The limits udsipc beat by more than 5% in this cell.
    pub limit_unreliable: Vec<&'static str>,
}

impl InprocRow {
    /// The in-process table's row for `cell`; `None` without in-process
    /// columns.
    pub fn from_cell(cell: &Cell) -> Option<Self> {
        use Column as C;
        let mut row = InprocRow {
            size: cell.size,
            ..InprocRow::default()
        };
        for (column, rounds) in &cell.rounds {
            if column.topology() != Topology::InProcess {
                continue;
            }
            let s = Samples::of(rounds);
            let key = column.key();
            s.mbps().map(|v| row.mbps.insert(key, v));
            s.msgs_per_sec().map(|v| row.msgs_per_sec.insert(key, v));
            s.allocs_per_msg()
                .map(|v| row.allocs_per_msg.insert(key, v));
            median_of(&cell.cpu_total(*column)).map(|v| row.cpu_ns_per_msg.insert(key, v));
        }
        if row.mbps.is_empty() {
            return None;
        }
        let framed = cell.best_mbps(C::FramedLimitBlockingInProcess, C::FramedLimitInProcess);
        let raw = cell.best_mbps(C::RawBlockingInProcess, C::RawInProcess);
        row.framed_limit_mbps = median_of(&framed);
        row.raw_limit_mbps = median_of(&raw);
        let udsipc = cell.per_round(C::RustInProcess, mb);
        let cpu_framed = cell.least_cpu(C::FramedLimitBlockingInProcess, C::FramedLimitInProcess);
        for (key, den, slot) in [
            ("ratio_framed_limit", framed, &mut row.ratio_framed_limit),
            ("ratio_raw_limit", raw, &mut row.ratio_raw_limit),
            (
                "ratio_tokio_util",
                cell.per_round(C::TokioUtilInProcess, mb),
                &mut row.ratio_tokio_util,
            ),
        ] {
            if let Some((m, spread)) = ratio_of(&udsipc, &den) {
                *slot = Some(m);
                row.ratio_spread.insert(key, spread);
            }
        }
        if let Some((m, spread)) = ratio_of(&cell.cpu_total(C::RustInProcess), &cpu_framed) {
            row.ratio_cpu_framed_limit = Some(m);
            row.ratio_spread.insert("ratio_cpu_framed_limit", spread);
        }
        row.limit_unreliable = unreliable(row.ratio_framed_limit, row.ratio_raw_limit);
        Some(row)
    }
}

/// What a column measures and how, for the note under the tables.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnInfo {
    /// The column's key (as in `cpu_ns_per_msg`).
    pub key: &'static str,
    /// Its name in the tables.
    pub name: &'static str,
    /// Which table: `two_processes` or `in_process`.
    pub topology: Topology,
    /// What the writer calls per message, and what reads.
    pub producer: &'static str,
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

/// `, 2 cores busy` for a measurement with busy cores, else nothing.
pub(crate) fn busy_label(busy: usize) -> String {
    match busy {
        0 => String::new(),
        1 => ", 1 core busy".to_owned(),
        n => format!(", {n} cores busy"),
    }
}

/// p50/p99 one-way latency of one writer → reader pair.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    /// `Rust → Rust`, `Go → Go`, ...
    pub pair: String,
    /// How many `yes > /dev/null` processes kept the cores busy meanwhile
    /// (`--busy-cores`; 0: none).
    pub busy_cores: usize,
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
    /// One row per message size of the in-process table.
    pub inproc_rows: Vec<InprocRow>,
    /// Every measured column: what it measures and its producer API.
    pub columns: Vec<ColumnInfo>,
    /// Why the Go columns are empty, if they are.
    pub go_unavailable: Option<String>,
    /// Why the ZeroMQ column is empty, if it is.
    pub zmq_unavailable: Option<String>,
    /// Rounds; each measures every column of every cell once, in an order
    /// that rotates round by round (medians are reported).
    pub rounds: usize,
    /// Payload bytes per measurement (fewer for very slow cells) when
    /// measurements are sized by bytes; of the timing measurement that
    /// sizes each one otherwise.
    pub bytes_per_cell: u64,
    /// How long each measurement was sized to last, in seconds (`None`:
    /// sized by bytes, with `--mib` or `--smoke`).
    pub cell_seconds: Option<f64>,
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

fn ratio(v: Option<f64>, spread: Option<&Spread>) -> String {
    match (v, spread) {
        (None, _) => "n/a".into(),
        (Some(r), Some(sp)) if sp.min != sp.max => {
            format!("{r:.2}× ({:.2}–{:.2})", sp.min, sp.max)
        }
        (Some(r), _) => format!("{r:.2}×"),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |p| format!("{p:.0}%"))
}

/// A share of a limit with its spread, or "unreliable" when udsipc beat
/// the limit by more than 5%.
fn of_limit(v: Option<f64>, spread: Option<&Spread>) -> String {
    match (v, spread) {
        (None, _) => "n/a".into(),
        (Some(r), sp) => {
            let range = sp
                .filter(|sp| sp.min != sp.max)
                .map_or(String::new(), |sp| {
                    format!(" ({:.0}–{:.0}%)", 100.0 * sp.min, 100.0 * sp.max)
                });
            if r > UNRELIABLE_ABOVE {
                format!("unreliable: udsipc {:.0}%{range}", 100.0 * r)
            } else {
                format!("{:.0}%{range}", 100.0 * r)
            }
        }
    }
}

/// `1.31× (1.25–1.40; ±6%)`: a ratio, its per-round range, and half the
/// range as a share of the median.
fn spread_cell(v: Option<f64>, spread: Option<&Spread>) -> String {
    match (v, spread) {
        (Some(r), Some(sp)) if r > 0.0 => format!(
            "{r:.2}× ({:.2}–{:.2}; ±{:.0}%)",
            sp.min,
            sp.max,
            50.0 * (sp.max - sp.min) / r
        ),
        (v, _) => ratio(v, None),
    }
}

fn with_how(v: Option<f64>, how: Option<Waiting>) -> String {
    match how {
        Some(h) if v.is_some() => format!("{} ({})", num(v, 0), h.name()),
        _ => num(v, 0),
    }
}

fn cpu_pair(c: Option<&CpuNs>) -> String {
    c.map_or("n/a".into(), |c| {
        format!("{} + {}", num(Some(c.writer), 0), num(Some(c.reader), 0))
    })
}

impl Table {
    /// The markdown tables: the main (two-process) table with ratios and
    /// their spreads, CPU per message, allocations, the in-process table,
    /// latency, scaling, and what each column measures.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "Two processes in every column (writer process → reader process). Ratios: median of {} per-round ratios (min–max over the rounds); each round runs every column of a cell once, in rotating order{}.\n\n",
            self.rounds,
            self.cell_seconds.map_or(String::new(), |s| format!(
                ", each measurement sized to last about {s:.2} s"
            ))
        ));
        s.push_str("| size | udsipc MB/s | udsipc msgs/s | tokio-util MB/s | udsipc / tokio-util | udsipc codec MB/s | ZeroMQ MB/s | ZeroMQ msgs/s | udsipc / ZeroMQ | Go MB/s | udsipc / Go | Go → Rust MB/s | Rust → Go MB/s | framed-copy limit MB/s | udsipc % of framed limit | raw limit MB/s | udsipc % of raw limit |\n");
        s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            let sp = |k: &str| r.ratio_spread.get(k);
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                size_label(r.size),
                num(r.rust_mbps, 0),
                num(r.rust_msgs_per_sec, 0),
                num(r.tokio_util_mbps, 0),
                ratio(r.ratio_tokio_util, sp("ratio_tokio_util")),
                num(r.codec_mbps, 0),
                num(r.zmq_mbps, 0),
                num(r.zmq_msgs_per_sec, 0),
                ratio(r.ratio_zmq, sp("ratio_zmq")),
                num(r.go_mbps, 0),
                ratio(r.ratio_go, sp("ratio_go")),
                num(r.go_to_rust_mbps, 0),
                num(r.rust_to_go_mbps, 0),
                with_how(r.framed_limit_mbps, r.framed_limit_how),
                of_limit(r.ratio_framed_limit, sp("ratio_framed_limit")),
                with_how(r.raw_limit_mbps, r.raw_limit_how),
                of_limit(r.ratio_raw_limit, sp("ratio_raw_limit")),
            ));
        }
        s.push_str("\nEach ratio's spread across rounds: median (min–max; ± half the range, as a share of the median):\n\n| size | udsipc / tokio-util | udsipc / ZeroMQ | udsipc / Go | udsipc / framed-copy limit | udsipc / raw limit | udsipc / framed-copy CPU |\n|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            let sp = |v: Option<f64>, k: &str| spread_cell(v, r.ratio_spread.get(k));
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                size_label(r.size),
                sp(r.ratio_tokio_util, "ratio_tokio_util"),
                sp(r.ratio_zmq, "ratio_zmq"),
                sp(r.ratio_go, "ratio_go"),
                sp(r.ratio_framed_limit, "ratio_framed_limit"),
                sp(r.ratio_raw_limit, "ratio_raw_limit"),
                sp(r.ratio_cpu_framed_limit, "ratio_cpu_framed_limit"),
            ));
        }
        s.push_str("\nCPU ns per message (user + system; writer process + reader process, from getrusage):\n\n| size | udsipc | tokio-util | udsipc codec | ZeroMQ | Go | framed-copy (blocking) | framed-copy (epoll) | raw (blocking) | raw (epoll) | udsipc / framed-copy CPU |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            let c = |k: &str| cpu_pair(r.cpu_ns_per_msg.get(k));
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                size_label(r.size),
                c("udsipc"),
                c("tokio_util"),
                c("codec"),
                c("zmq"),
                c("go"),
                c("framed_limit_blocking"),
                c("framed_limit_epoll"),
                c("raw_blocking"),
                c("raw_epoll"),
                ratio(
                    r.ratio_cpu_framed_limit,
                    r.ratio_spread.get("ratio_cpu_framed_limit")
                ),
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
        if !self.inproc_rows.is_empty() {
            s.push_str("\nIn one process (writer thread → reader thread; CPU: the whole process, ns per message):\n\n| size | udsipc MB/s | udsipc msgs/s | tokio-util MB/s | udsipc / tokio-util | udsipc codec MB/s | framed-copy limit MB/s | udsipc % of framed limit | raw limit MB/s | udsipc % of raw limit | udsipc CPU | tokio-util CPU | framed-copy CPU (blocking) | udsipc / framed-copy CPU |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for r in &self.inproc_rows {
                let sp = |k: &str| r.ratio_spread.get(k);
                let m = |k: &str| num(r.mbps.get(k).copied(), 0);
                let c = |k: &str| num(r.cpu_ns_per_msg.get(k).copied(), 0);
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    size_label(r.size),
                    m("udsipc"),
                    num(r.msgs_per_sec.get("udsipc").copied(), 0),
                    m("tokio_util"),
                    ratio(r.ratio_tokio_util, sp("ratio_tokio_util")),
                    m("codec"),
                    num(r.framed_limit_mbps, 0),
                    of_limit(r.ratio_framed_limit, sp("ratio_framed_limit")),
                    num(r.raw_limit_mbps, 0),
                    of_limit(r.ratio_raw_limit, sp("ratio_raw_limit")),
                    c("udsipc"),
                    c("tokio_util"),
                    c("framed_limit_blocking"),
                    ratio(r.ratio_cpu_framed_limit, sp("ratio_cpu_framed_limit")),
                ));
            }
        }
        if !self.latency.is_empty() {
            let l = &self.latency[0];
            s.push_str(&format!(
                "\n| one-way latency, {} B at {} msgs/s, two processes | p50 µs | p99 µs |\n|---|---:|---:|\n",
                l.size,
                num(Some(l.rate), 0)
            ));
            for l in &self.latency {
                s.push_str(&format!(
                    "| {}{} | {:.1} | {:.1} |\n",
                    l.pair,
                    busy_label(l.busy_cores),
                    l.p50_us,
                    l.p99_us
                ));
            }
            let find = |pair: &str, busy: bool| {
                self.latency
                    .iter()
                    .find(|l| l.pair == pair && (l.busy_cores > 0) == busy)
            };
            if let (Some(rust), Some(go)) = (find("Rust → Rust", true), find("Go → Go", true)) {
                s.push_str(&format!(
                    "| Rust → Rust ÷ Go → Go{} | {:.2}× | {:.2}× |\n",
                    busy_label(rust.busy_cores),
                    rust.p50_us / go.p50_us,
                    rust.p99_us / go.p99_us
                ));
            }
            let rust = find("Rust → Rust", false);
            if let Some(f) = &self.latency_floor {
                s.push_str(&format!(
                    "| floor: paced one-way, blocking reader (two threads) | {:.1} | {:.1} |\n| floor: the same between two processes | {:.1} | {:.1} |\n| floor: blocking ping-pong, half round trip (two threads) | {:.1} | {:.1} |\n",
                    f.paced_p50_us,
                    f.paced_p99_us,
                    f.processes_p50_us,
                    f.processes_p99_us,
                    f.ping_pong_p50_us,
                    f.ping_pong_p99_us
                ));
                if let Some(rust) = rust {
                    s.push_str(&format!(
                        "| Rust → Rust ÷ paced floor | {:.2}× | {:.2}× |\n| Rust → Rust ÷ paced floor between processes | {:.2}× | {:.2}× |\n",
                        rust.p50_us / f.paced_p50_us,
                        rust.p99_us / f.paced_p99_us,
                        rust.p50_us / f.processes_p50_us,
                        rust.p99_us / f.processes_p99_us
                    ));
                }
            }
            let zmq = find("ZeroMQ → ZeroMQ", false);
            if let (Some(rust), Some(zmq)) = (rust, zmq) {
                s.push_str(&format!(
                    "| Rust → Rust ÷ ZeroMQ → ZeroMQ | {:.2}× | {:.2}× |\n",
                    rust.p50_us / zmq.p50_us,
                    rust.p99_us / zmq.p99_us
                ));
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
        if !self.columns.is_empty() {
            s.push_str("\n| column | topology | producer → reader |\n|---|---|---|\n");
            for c in &self.columns {
                let topology = match c.topology {
                    Topology::TwoProcesses => "two processes",
                    Topology::InProcess => "one process, two threads",
                };
                s.push_str(&format!("| {} | {topology} | {} |\n", c.name, c.producer));
            }
        }
        if let Some(why) = &self.go_unavailable {
            s.push_str(&format!("\nGo columns: n/a ({why})\n"));
        }
        if let Some(why) = &self.zmq_unavailable {
            s.push_str(&format!("\nZeroMQ column: n/a ({why})\n"));
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

    fn measured(mbps: f64, writer_ns: u64, reader_ns: Option<u64>) -> crate::Measurement {
        crate::Measurement {
            size: 1000,
            messages: 1000,
            bytes: 1_000_000,
            elapsed: std::time::Duration::from_secs_f64(1.0 / mbps),
            allocs_per_msg: None,
            cpu: Some(crate::cpu::Cpu {
                writer_ns,
                reader_ns,
            }),
        }
    }

    #[test]
    fn ratios_are_medians_of_per_round_ratios_with_their_range() {
        // Round by round: 2.0, 1.0 and 1.5; the ratio of the medians
        // (150 / 100) would hide the spread.
        let num = [Some(200.0), Some(100.0), Some(150.0)];
        let den = [Some(100.0), Some(100.0), Some(100.0)];
        let (m, spread) = ratio_of(&num, &den).unwrap();
        assert_eq!(m, 1.5);
        assert_eq!(spread, Spread { min: 1.0, max: 2.0 });
        // A round missing either side does not count.
        let (m, _) = ratio_of(&[Some(3.0), None], &[Some(1.0), Some(1.0)]).unwrap();
        assert_eq!(m, 3.0);
        assert!(ratio_of(&[None], &[Some(1.0)]).is_none());
    }

    #[test]
    fn a_row_has_per_process_cpu_per_column_and_every_ratio() {
        let columns = [
            Column::Rust,
            Column::TokioUtil,
            Column::FramedLimit,
            Column::FramedLimitBlocking,
            Column::RustInProcess,
            Column::TokioUtilInProcess,
        ];
        let mut cell = Cell::new(1000, &columns, 2);
        for round in 0..2 {
            cell.put(Column::Rust, round, measured(900.0, 3_000, Some(2_000)));
            cell.put(
                Column::TokioUtil,
                round,
                measured(450.0, 1_000, Some(1_000)),
            );
            cell.put(
                Column::FramedLimit,
                round,
                measured(800.0, 2_000, Some(2_000)),
            );
            let blocking = measured(1000.0, 1_000, Some(1_000));
            cell.put(Column::FramedLimitBlocking, round, blocking);
            cell.put(Column::RustInProcess, round, measured(500.0, 4_000, None));
            let tokio = measured(250.0, 3_000, None);
            cell.put(Column::TokioUtilInProcess, round, tokio);
        }
        let row = Row::from_cell(&cell);
        let close = |v: Option<f64>, want: f64| v.is_some_and(|v| (v - want).abs() < 1e-4);
        assert!(close(row.ratio_tokio_util, 2.0), "{row:?}");
        assert!(
            close(row.ratio_framed_limit, 0.9),
            "each round's faster way: {row:?}"
        );
        assert_eq!(row.framed_limit_how, Some(Waiting::Blocking));
        // 5 ns against the cheaper framed copy's 2 ns per message.
        assert!(close(row.ratio_cpu_framed_limit, 2.5), "{row:?}");
        assert_eq!(
            row.cpu_ns_per_msg["udsipc"],
            CpuNs {
                writer: 3.0,
                reader: 2.0
            }
        );
        assert!(!row.cpu_ns_per_msg.contains_key("udsipc_inproc"));
        assert!(row.limit_unreliable.is_empty());
        assert!(row.ratio_zmq.is_none() && !row.ratio_spread.contains_key("ratio_zmq"));
        let inproc = InprocRow::from_cell(&cell).unwrap();
        assert_eq!(inproc.cpu_ns_per_msg["udsipc"], 4.0);
        // Every ratio's spread is keyed by the ratio's field name.
        assert!(row.ratio_spread.contains_key("ratio_tokio_util"), "{row:?}");
        assert!(close(inproc.ratio_tokio_util, 2.0), "{inproc:?}");
        assert!(
            inproc.ratio_spread.contains_key("ratio_tokio_util"),
            "{inproc:?}"
        );
        assert!(close(inproc.mbps.get("udsipc").copied(), 500.0));
    }

    #[test]
    fn a_limit_udsipc_beats_by_more_than_5_percent_is_marked_unreliable() {
        let columns = [Column::Rust, Column::FramedLimitBlocking];
        let mut cell = Cell::new(10240, &columns, 1);
        cell.put(Column::Rust, 0, measured(1470.0, 1, Some(1)));
        cell.put(Column::FramedLimitBlocking, 0, measured(1000.0, 1, Some(1)));
        let row = Row::from_cell(&cell);
        assert_eq!(row.limit_unreliable, ["framed_copy"]);
        let table = Table {
            rows: vec![row],
            ..Table::default()
        };
        let md = table.markdown();
        assert!(md.contains("unreliable: udsipc 147%"), "{md}");
        assert!(!md.contains("| 147% |"), "{md}");
    }

    #[test]
    fn latency_with_busy_cores_gets_its_own_rows_and_a_ratio_over_go() {
        let row = |pair: &str, busy_cores, p50_us, p99_us| LatencyRow {
            pair: pair.to_owned(),
            busy_cores,
            rate: 10_000.0,
            size: 64,
            p50_us,
            p99_us,
        };
        let table = Table {
            latency: vec![
                row("Rust → Rust", 0, 10.0, 30.0),
                row("Go → Go", 0, 40.0, 90.0),
                row("Rust → Rust", 2, 20.0, 300.0),
                row("Go → Go", 2, 80.0, 600.0),
            ],
            ..Table::default()
        };
        let md = table.markdown();
        assert!(md.contains("| Rust → Rust | 10.0 | 30.0 |"), "{md}");
        assert!(
            md.contains("| Rust → Rust, 2 cores busy | 20.0 | 300.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| Rust → Rust ÷ Go → Go, 2 cores busy | 0.25× | 0.50× |"),
            "{md}"
        );
    }
}
