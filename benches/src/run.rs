//! `udsipc bench`: the side-by-side table. In one run it measures, per
//! message size, two tables of one topology each:
//!
//! - **two processes** (a writer process → a reader process, as a
//!   deployment is) in every column: this library, the Go reference
//!   (through `conformance/go-peer`) and the mixed Go/Rust pairs, a
//!   tokio-util + unsigned-varint baseline and udsipc's codec in it,
//!   ZeroMQ (libzmq PUSH → PULL over `ipc://`), and the framed-copy and
//!   raw limits (blocking and epoll);
//! - **in one process** (two threads): this library with the same producer
//!   API, the tokio-util and codec baselines, the limits;
//!
//! then one-way latency at a fixed rate (Rust, Go, ZeroMQ) next to this
//! machine's latency floor. Every column reports CPU ns per message (user
//! + system, from `getrusage`) besides throughput.
//!
//! The method: each round measures every column of every size once, in an
//! order that rotates from round to round, so the machine's drift hits all
//! columns alike; each ratio (udsipc over tokio-util, ZeroMQ, Go, a limit)
//! is the median of the per-round ratios, printed with their spread; a
//! limit that udsipc beats by more than 5% is marked unreliable.
//!
//! This module owns the runner's arguments and its run; the `udsipc`
//! binary (package `udsipc-cli`) calls [`run`] for `udsipc bench`, and the
//! Rust peer processes it spawns are that same binary's hidden `bench peer`
//! subcommand. Allocations per message are counted only in a binary that
//! installs [`crate::alloc::Counting`] or [`crate::alloc::CountingWhenStarted`]
//! (the `udsipc` binary does, the second: [`run`] starts it).

use std::path::PathBuf;
use std::time::Instant;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use crate::columns::{Cell, Column, Peers, measure};
use crate::peer::{Peer, PeerArgs};
use crate::report::{
    ColumnInfo, FloorRow, InprocRow, LatencyRow, Row, Samples, ScalingRow, Table, busy_label,
};
use crate::rust_peer::run_rust_peer;
use crate::{gopeer, latency, limits, median, size_label};

/// `udsipc bench --help`'s description.
pub const LONG_ABOUT: &str = "\
Throughput, CPU per message and latency of udsipc next to the Go reference,
a tokio-util baseline, ZeroMQ and this machine's limits, per message size,
in one run: a table of two processes per column and one of in-process
columns, interleaved rounds, ratios as medians of per-round ratios with
their spread. Prints markdown tables on stdout (progress on stderr) and can
write JSON and an SVG chart. The Go columns need Go and the Go reference
module (or a checkout named by UDSIPC_GO_REFERENCE), the ZeroMQ column a C
compiler ($CC or cc) and libzmq; each is n/a, with the reason, otherwise.";

/// Throughput and latency of udsipc next to the Go reference, a tokio-util
/// baseline and the raw socket, per message size (`udsipc bench`).
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    peer: Option<Sub>,
    /// Shorter cells and fewer rounds: 3 rounds of about 0.25 s per
    /// measurement (about 2 minutes; the full run is 5 rounds of about 0.5 s).
    #[arg(long)]
    quick: bool,
    /// A tiny run that only checks everything works (for CI).
    #[arg(long, conflicts_with = "quick")]
    smoke: bool,
    /// Rounds (the median of each cell is reported).
    #[arg(long)]
    rounds: Option<usize>,
    /// Payload MiB moved per measurement, instead of sizing each
    /// measurement by time.
    #[arg(long, conflicts_with = "cell_ms")]
    mib: Option<u64>,
    /// How long each measurement lasts, in milliseconds (each column of
    /// each size is timed once first, and its message count set from that
    /// rate; default: 250 with `--quick`, 500 otherwise).
    #[arg(long, value_name = "MS")]
    cell_ms: Option<u64>,
    /// Measure only this message size in bytes (repeatable; default: 64 B,
    /// 1 KiB, 10 KiB, 100 KiB and 1 MiB).
    #[arg(long = "size", value_name = "BYTES", value_parser = parse_size)]
    sizes: Vec<usize>,
    /// Skip the Go columns.
    #[arg(long)]
    no_go: bool,
    /// Skip the ZeroMQ column.
    #[arg(long)]
    no_zmq: bool,
    /// Measure only this column (repeatable; default: all). Latency is
    /// measured only when every column is.
    #[arg(long = "column", value_enum, value_name = "COLUMN")]
    columns: Vec<Column>,
    /// Write the results as JSON (an object with a `rows` list).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write an SVG bar chart of the throughput.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Also measure 1 KiB throughput with 1, 4, 16 and 64 Writers into one
    /// Reader (in one process).
    #[arg(long)]
    scaling: bool,
    /// Also measure each latency pair while N `yes > /dev/null` processes
    /// keep the cores busy (N = 2 on a 2-core machine: every core busy).
    #[arg(long, value_name = "N", default_value_t = 0)]
    busy_cores: usize,
    /// Measure nothing: compare runs written with `--json` (whether each
    /// headline ratio agrees within ±10% across them).
    #[arg(long, value_name = "JSON", num_args = 2.., conflicts_with_all = ["quick", "smoke"])]
    compare: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// One side of a measured pair (used by the runner itself).
    #[command(hide = true)]
    Peer(PeerArgs),
}

const SIZES: [usize; 5] = [64, 1024, 10 * 1024, 100 * 1024, 1024 * 1024];

/// How much one run measures.
struct Plan {
    rounds: usize,
    /// Payload bytes of a measurement sized by bytes (and of the timing
    /// measurement that sizes one by time).
    bytes: u64,
    max_messages: u64,
    /// How long a measurement sized by time lasts; `None`: sized by bytes.
    cell_secs: Option<f64>,
    latency_messages: u64,
}

/// The most messages a measurement sized by time may send, and the most
/// payload bytes (so that a wildly fast timing cannot make a cell run for
/// minutes).
const TIMED_MAX_MESSAGES: u64 = 100_000_000;
const TIMED_MAX_BYTES: u64 = 64 << 30;

impl Plan {
    fn from(args: &BenchArgs) -> Self {
        let mut p = match (args.smoke, args.quick) {
            (true, _) => Plan {
                rounds: 1,
                bytes: 1 << 20,
                max_messages: 4_000,
                cell_secs: None,
                latency_messages: 200,
            },
            (_, true) => Plan {
                rounds: 3,
                bytes: 16 << 20,
                max_messages: 150_000,
                cell_secs: Some(0.25),
                latency_messages: 5_000,
            },
            _ => Plan {
                rounds: 5,
                bytes: 32 << 20,
                max_messages: 300_000,
                cell_secs: Some(0.5),
                latency_messages: 20_000,
            },
        };
        if let Some(r) = args.rounds {
            p.rounds = r.max(1);
        }
        if let Some(m) = args.mib {
            p.bytes = m.max(1) << 20;
            p.max_messages = u64::MAX;
            p.cell_secs = None;
        }
        if let Some(ms) = args.cell_ms {
            p.cell_secs = Some(ms.max(1) as f64 / 1e3);
        }
        p
    }

    /// Messages of a measurement sized by bytes.
    fn messages(&self, size: usize) -> u64 {
        (self.bytes / size.max(1) as u64).clamp(16, self.max_messages)
    }

    /// Messages of a measurement of `secs` at the rate `timing` measured.
    fn timed_messages(secs: f64, size: usize, timing: &crate::Measurement) -> u64 {
        let most = TIMED_MAX_MESSAGES.min(TIMED_MAX_BYTES / size.max(1) as u64);
        ((timing.msgs_per_sec() * secs) as u64).clamp(16, most.max(16))
    }
}

/// Runs `udsipc bench` (the table, or with the hidden `peer` subcommand one
/// side of a measured pair); the error is one line.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    // Both the runner (its in-process columns) and a peer role count.
    crate::alloc::start_counting();
    match &args.peer {
        Some(Sub::Peer(p)) => run_rust_peer(p),
        None if !args.compare.is_empty() => {
            print!("{}", crate::compare::compare(&args.compare)?);
            Ok(())
        }
        None => run_table(args),
    }
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `yes > /dev/null` processes keeping the cores busy while it lives.
struct Busy(Vec<std::process::Child>);

impl Busy {
    fn start(n: usize) -> Result<Self, String> {
        let spawn = |_| {
            std::process::Command::new("yes")
                .stdout(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("--busy-cores: cannot run `yes`: {e}"))
        };
        (0..n).map(spawn).collect::<Result<_, _>>().map(Busy)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writer counts for `--scaling`.
const SCALING_WRITERS: [usize; 4] = [1, 4, 16, 64];
/// Message size for `--scaling`.
const SCALING_SIZE: usize = 1024;

fn measure_scaling(plan: &Plan, dir: &std::path::Path, table: &mut Table) -> Result<(), String> {
    let messages = plan.messages(SCALING_SIZE);
    for &writers in &SCALING_WRITERS {
        let mut samples = Samples::default();
        for round in 0..plan.rounds {
            eprintln!("scaling: {writers} writer(s), round {}", round + 1);
            let path = dir.join(format!("scaling-{writers}.sock"));
            let m = crate::inproc::rust_in_process_writers(&path, SCALING_SIZE, messages, writers)?;
            samples.push(&m);
        }
        table.scaling.push(ScalingRow {
            writers,
            size: SCALING_SIZE,
            mbps: samples.mbps().unwrap_or(0.0),
            msgs_per_sec: samples.msgs_per_sec().unwrap_or(0.0),
        });
    }
    Ok(())
}

/// The optional peers a run took out, each with the reason: a Go or
/// ZeroMQ peer that fails mid-run takes its columns out; it does not fail
/// the run.
#[derive(Default)]
struct Dropped {
    go: Option<String>,
    zmq: Option<String>,
}

impl Dropped {
    /// Whether a measurement that needs these peers was taken out.
    fn any(&self, go: bool, zmq: bool) -> bool {
        (go && self.go.is_some()) || (zmq && self.zmq.is_some())
    }

    /// Whether `column` was taken out.
    fn column(&self, column: Column) -> bool {
        self.any(column.needs_go(), column.needs_zmq())
    }

    /// Takes out the peer a failed measurement of `what` needed; a
    /// failure that needed neither ends the run.
    fn fail(
        &mut self,
        go: bool,
        zmq: bool,
        what: &str,
        e: String,
        bar: &ProgressBar,
    ) -> Result<(), String> {
        let (slot, peer, columns) = match (go, zmq) {
            (true, _) => (&mut self.go, "Go", "Go columns"),
            (_, true) => (&mut self.zmq, "ZeroMQ", "ZeroMQ column"),
            _ => return Err(format!("{what}: {e}")),
        };
        bar.println(format!("{columns} dropped: {what}: {e}"));
        *slot = Some(format!("the {peer} peer failed: {what}: {e}"));
        Ok(())
    }
}

/// A message size: bytes, or with a unit (`64KiB`, `1MB`, `1MiB`).
fn parse_size(text: &str) -> Result<usize, String> {
    let bytes = parse_size::parse_size(text.trim())
        .map_err(|e| format!("expected a size in bytes, such as 64, 1KiB, 1MB or 1MiB ({e})"))?;
    usize::try_from(bytes).map_err(|_| format!("{bytes} bytes is too large here"))
}

fn run_table(args: &BenchArgs) -> Result<(), String> {
    let plan = Plan::from(args);
    let sizes = if args.sizes.is_empty() {
        SIZES.to_vec()
    } else {
        args.sizes.clone()
    };
    let dir = std::env::temp_dir().join(format!("udsipc-benches-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut table = Table {
        rounds: plan.rounds,
        bytes_per_cell: plan.bytes,
        cell_seconds: plan.cell_secs,
        load_average: [load_average(), None],
        ..Table::default()
    };
    // The Rust peer processes are this very program's `bench peer`.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let wants =
        |f: fn(Column) -> bool| args.columns.is_empty() || args.columns.iter().any(|&c| f(c));
    let go = if args.no_go || !wants(Column::needs_go) {
        Err("skipped".to_owned())
    } else {
        eprintln!("building conformance/go-peer ...");
        gopeer::build(&dir).map(Peer::go)
    };
    let zmq = if args.no_zmq || !wants(Column::needs_zmq) {
        Err("skipped".to_owned())
    } else {
        eprintln!("compiling zmq-peer ...");
        crate::zmq::build(&dir).map(Peer::zmq)
    };
    let minimal = Peer::minimal(exe.clone());
    let peers = Peers {
        rust: Peer::rust(exe.clone()),
        go: go.as_ref().ok().cloned(),
        zmq: zmq.as_ref().ok().cloned(),
        exe,
    };
    if let Err(why) = &go {
        eprintln!("Go columns: n/a ({why})");
        table.go_unavailable = Some(why.clone());
    }
    if let Err(why) = &zmq {
        eprintln!("ZeroMQ column: n/a ({why})");
        table.zmq_unavailable = Some(why.clone());
    }
    let columns: Vec<Column> = Column::ALL
        .into_iter()
        .filter(|c| peers.go.is_some() || !c.needs_go())
        .filter(|c| peers.zmq.is_some() || !c.needs_zmq())
        .filter(|c| args.columns.is_empty() || args.columns.contains(c))
        .collect();
    // Latency: the pairs (with `--busy-cores`, each again with the cores
    // busy), then the floor (`None`), in rotating order too.
    let mut pairs: Vec<(Option<(&Peer, &Peer)>, usize)> = vec![];
    if args.columns.is_empty() {
        let mut quiet = vec![(&peers.rust, &peers.rust)];
        quiet.extend(peers.go.as_ref().map(|g| (g, g)));
        quiet.extend(peers.zmq.as_ref().map(|z| (z, z)));
        for busy in [0, args.busy_cores] {
            if busy > 0 || pairs.is_empty() {
                pairs.extend(quiet.iter().map(|&p| (Some(p), busy)));
            }
        }
        pairs.push((None, 0));
    }
    let timing_steps = if plan.cell_secs.is_some() {
        sizes.len() * columns.len()
    } else {
        0
    };
    let steps = timing_steps + plan.rounds * (sizes.len() * columns.len() + pairs.len());
    // On stderr, drawn only when it is a terminal (hidden otherwise, so a
    // piped or logged run stays quiet): one step per cell, the cell being
    // measured as its message, redrawn twice a second so the clock moves
    // during a long cell.
    let bar = ProgressBar::new(steps as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .map_err(|e| e.to_string())?,
    );
    if !bar.is_hidden() {
        bar.enable_steady_tick(std::time::Duration::from_millis(500));
    }
    let mut cells: Vec<Cell> = sizes
        .iter()
        .map(|&size| Cell::new(size, &columns, plan.rounds))
        .collect();
    let mut lat: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); pairs.len()];
    // The latency floor: ping-pong p50/p99, paced p50/p99 (two threads),
    // paced p50/p99 (two processes).
    let mut floor: [Vec<f64>; 6] = Default::default();
    let mut dropped = Dropped::default();
    // Messages per measurement, by size and column: by bytes, or (the
    // default) from one timing measurement of each, so that every
    // measurement lasts about as long whatever its rate. A short cell is
    // at the mercy of one scheduler hiccup; this keeps each one long
    // enough to average them out.
    let mut counts: Vec<Vec<u64>> = sizes
        .iter()
        .map(|&size| vec![plan.messages(size); columns.len()])
        .collect();
    if let Some(secs) = plan.cell_secs {
        for (si, &size) in sizes.iter().enumerate() {
            for (ci, &column) in columns.iter().enumerate() {
                bar.inc(1);
                if dropped.column(column) {
                    continue;
                }
                bar.set_message(format!("timing: {} {}", size_label(size), column.name()));
                let what = format!("{} at {}", column.name(), size_label(size));
                match measure(column, &peers, &dir, size, plan.messages(size)) {
                    Ok(m) => counts[si][ci] = Plan::timed_messages(secs, size, &m),
                    Err(e) => {
                        dropped.fail(column.needs_go(), column.needs_zmq(), &what, e, &bar)?
                    }
                }
            }
        }
    }
    for round in 0..plan.rounds {
        for (si, cell) in cells.iter_mut().enumerate() {
            let size = cell.size;
            // Every column of the cell once, starting one further along
            // each round (and each size), so no column always runs first,
            // last, or right after the same neighbour.
            for k in 0..columns.len() {
                let ci = (k + round + si) % columns.len();
                let column = columns[ci];
                bar.inc(1);
                if dropped.column(column) {
                    continue;
                }
                bar.set_message(format!(
                    "round {}: {} {}",
                    round + 1,
                    size_label(size),
                    column.name()
                ));
                let what = format!("{} at {}", column.name(), size_label(size));
                match measure(column, &peers, &dir, size, counts[si][ci]) {
                    Ok(m) => cell.put(column, round, m),
                    Err(e) => {
                        dropped.fail(column.needs_go(), column.needs_zmq(), &what, e, &bar)?
                    }
                }
            }
        }
        for k in 0..pairs.len() {
            let pi = (k + round) % pairs.len();
            bar.inc(1);
            let (pair, busy) = pairs[pi];
            let Some((w, r)) = pair else {
                bar.set_message(format!("round {}: latency floor", round + 1));
                let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
                let (p50, p99) = limits::ping_pong(plan.latency_messages)?;
                floor[0].push(us(p50));
                floor[1].push(us(p99));
                let (p50, p99) = limits::paced_one_way(plan.latency_messages, latency::RATE)?;
                floor[2].push(us(p50));
                floor[3].push(us(p99));
                let socket = dir.join("floor.sock");
                let (p50, p99) =
                    latency::one_way(&minimal, &minimal, &socket, plan.latency_messages)
                        .map_err(|e| format!("latency floor across processes: {e}"))?;
                floor[4].push(us(p50));
                floor[5].push(us(p99));
                continue;
            };
            let (uses_go, uses_zmq) = (w.name == "Go", w.name == "ZeroMQ");
            if dropped.any(uses_go, uses_zmq) {
                continue;
            }
            bar.set_message(format!(
                "round {}: latency {} → {}{}",
                round + 1,
                w.name,
                r.name,
                busy_label(busy)
            ));
            let load = Busy::start(busy)?;
            let measured = latency::one_way(w, r, &dir.join("latency.sock"), plan.latency_messages);
            drop(load);
            match measured {
                Ok((p50, p99)) => {
                    lat[pi].0.push(p50.as_secs_f64() * 1e6);
                    lat[pi].1.push(p99.as_secs_f64() * 1e6);
                }
                Err(e) => dropped.fail(uses_go, uses_zmq, "latency", e, &bar)?,
            }
        }
    }
    bar.finish_and_clear();
    for cell in &mut cells {
        for &column in &columns {
            if dropped.column(column) {
                cell.drop_column(column);
            }
        }
        let mut row = Row::from_cell(cell);
        let inproc = InprocRow::from_cell(cell);
        if let Some(i) = &inproc {
            row.rust_inproc_mbps = i.mbps.get("udsipc").copied();
            row.rust_inproc_msgs_per_sec = i.msgs_per_sec.get("udsipc").copied();
            row.rust_inproc_allocs_per_msg = i.allocs_per_msg.get("udsipc").copied();
        }
        table.rows.push(row);
        table.inproc_rows.extend(inproc);
    }
    table.columns = columns
        .iter()
        .filter(|&&c| !dropped.column(c))
        .map(|&c| ColumnInfo {
            key: c.key(),
            name: c.name(),
            topology: c.topology(),
            producer: c.producer(),
        })
        .collect();
    if dropped.go.is_some() {
        table.go_unavailable = dropped.go.clone();
    }
    if dropped.zmq.is_some() {
        table.zmq_unavailable = dropped.zmq.clone();
    }
    if !floor[0].is_empty() {
        let [pp50, pp99, paced50, paced99, proc50, proc99] = &mut floor;
        let f = FloorRow {
            ping_pong_p50_us: median(pp50),
            ping_pong_p99_us: median(pp99),
            paced_p50_us: median(paced50),
            paced_p99_us: median(paced99),
            processes_p50_us: median(proc50),
            processes_p99_us: median(proc99),
        };
        if let Some(row) = table.rows.iter_mut().find(|r| r.size == latency::SIZE) {
            row.latency_floor_p50_us = Some(f.paced_p50_us);
            row.latency_floor_p99_us = Some(f.paced_p99_us);
            row.latency_floor_processes_p50_us = Some(f.processes_p50_us);
            row.latency_floor_processes_p99_us = Some(f.processes_p99_us);
        }
        table.latency_floor = Some(f);
    }
    for ((pair, busy), (p50, p99)) in pairs.iter().zip(&mut lat) {
        let Some((w, r)) = pair else { continue };
        if p50.is_empty() || dropped.any(w.name == "Go", w.name == "ZeroMQ") {
            continue;
        }
        table.latency.push(LatencyRow {
            pair: format!("{} → {}", w.name, r.name),
            busy_cores: *busy,
            rate: latency::RATE,
            size: latency::SIZE,
            p50_us: median(p50),
            p99_us: median(p99),
        });
    }
    if args.scaling {
        measure_scaling(&plan, &dir, &mut table)?;
    }
    table.load_average[1] = load_average();
    print!("{}", table.markdown());
    eprintln!(
        "{} round(s), {} per measurement, {:.1} s in all; load average {} at start, {} at end",
        plan.rounds,
        plan.cell_secs
            .map_or(format!("up to {} MiB", plan.bytes >> 20), |s| format!(
                "about {s:.2} s"
            )),
        started.elapsed().as_secs_f64(),
        table.load_average[0].map_or("?".into(), |l| format!("{l:.2}")),
        table.load_average[1].map_or("?".into(), |l| format!("{l:.2}")),
    );
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&table).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        let title = "udsipc vs the Go reference: payload MB/s by message size";
        crate::chart::write_svg(&table.rows, title, path)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn timing(messages: u64, size: usize, millis: u64) -> crate::Measurement {
        crate::Measurement {
            size,
            messages,
            bytes: messages * size as u64,
            elapsed: Duration::from_millis(millis),
            allocs_per_msg: None,
            cpu: None,
        }
    }

    #[test]
    fn a_timed_measurement_lasts_about_as_long_at_any_rate() {
        // 150,000 messages in 15 ms: 10 M/s, so 0.25 s is 2.5 M messages.
        assert_eq!(
            Plan::timed_messages(0.25, 64, &timing(150_000, 64, 15)),
            2_500_000
        );
        // A slow column gets fewer messages for the same time.
        assert_eq!(
            Plan::timed_messages(0.25, 64, &timing(150_000, 64, 150)),
            250_000
        );
    }

    #[test]
    fn a_timed_measurement_stays_within_its_bounds() {
        // Never fewer than 16 messages, never more than the byte bound.
        assert_eq!(
            Plan::timed_messages(0.25, 1 << 20, &timing(16, 1 << 20, 60_000)),
            16
        );
        let huge = Plan::timed_messages(1e6, 1 << 20, &timing(1_000, 1 << 20, 1));
        assert_eq!(huge, TIMED_MAX_BYTES >> 20);
        let tiny = Plan::timed_messages(1e6, 1, &timing(1_000_000, 1, 1));
        assert_eq!(tiny, TIMED_MAX_MESSAGES);
    }
}
