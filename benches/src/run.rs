//! `udsipc bench`: the side-by-side table. In one run it measures, per
//! message size, the Go reference (through `conformance/go-peer`), this
//! library (separate processes and in one process), the mixed Go/Rust
//! pairs, a tokio-util + unsigned-varint baseline, the framed-copy and raw
//! limits (blocking and epoll, the faster kept), then one-way latency at a
//! fixed rate next to this machine's latency floor; it prints markdown
//! tables (each udsipc cell also as a share of its limit) and can write
//! JSON and an SVG chart.
//!
//! Every cell is the median of several rounds; each round measures every
//! column of every size once, so machine drift hits all columns alike.
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

use crate::columns::{Column, Peers, fill_row, measure};
use crate::peer::{Peer, PeerArgs};
use crate::report::{FloorRow, LatencyRow, Row, Samples, ScalingRow, Table};
use crate::rust_peer::run_rust_peer;
use crate::{gopeer, latency, limits, median, size_label};

/// `udsipc bench --help`'s description.
pub const LONG_ABOUT: &str = "\
Throughput and latency of udsipc next to the Go reference, a tokio-util
baseline and the raw socket, per message size, in one run: prints markdown
tables on stdout (progress on stderr) and can write JSON and an SVG chart.
The Go columns need Go and the Go reference module (or a checkout named by
UDSIPC_GO_REFERENCE) and are n/a, with the reason, otherwise.";

/// Throughput and latency of udsipc next to the Go reference, a tokio-util
/// baseline and the raw socket, per message size (`udsipc bench`).
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    peer: Option<Sub>,
    /// Fewer bytes per cell and fewer rounds: 3 rounds of up to 64 MiB
    /// (under a minute; the full run is 5 rounds of up to 256 MiB).
    #[arg(long)]
    quick: bool,
    /// A tiny run that only checks everything works (for CI).
    #[arg(long, conflicts_with = "quick")]
    smoke: bool,
    /// Rounds (the median of each cell is reported).
    #[arg(long)]
    rounds: Option<usize>,
    /// Payload MiB moved per cell.
    #[arg(long)]
    mib: Option<u64>,
    /// Measure only this message size in bytes (repeatable; default: 64 B,
    /// 1 KiB, 10 KiB, 100 KiB and 1 MiB).
    #[arg(long = "size", value_name = "BYTES")]
    sizes: Vec<usize>,
    /// Skip the Go columns.
    #[arg(long)]
    no_go: bool,
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
    bytes: u64,
    max_messages: u64,
    latency_messages: u64,
}

impl Plan {
    fn from(args: &BenchArgs) -> Self {
        let mut p = match (args.smoke, args.quick) {
            (true, _) => Plan {
                rounds: 1,
                bytes: 1 << 20,
                max_messages: 4_000,
                latency_messages: 200,
            },
            (_, true) => Plan {
                rounds: 3,
                bytes: 64 << 20,
                max_messages: 600_000,
                latency_messages: 5_000,
            },
            _ => Plan {
                rounds: 5,
                bytes: 256 << 20,
                max_messages: 2_000_000,
                latency_messages: 20_000,
            },
        };
        if let Some(r) = args.rounds {
            p.rounds = r.max(1);
        }
        if let Some(m) = args.mib {
            p.bytes = m.max(1) << 20;
            p.max_messages = u64::MAX;
        }
        p
    }

    fn messages(&self, size: usize) -> u64 {
        (self.bytes / size.max(1) as u64).clamp(16, self.max_messages)
    }
}

/// Runs `udsipc bench` (the table, or with the hidden `peer` subcommand one
/// side of a measured pair); the error is one line.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    // Both the runner (its in-process columns) and a peer role count.
    crate::alloc::start_counting();
    match &args.peer {
        Some(Sub::Peer(p)) => run_rust_peer(p),
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
        load_average: [load_average(), None],
        ..Table::default()
    };
    // The Rust peer processes are this very program's `bench peer`.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let wants_go = args.columns.is_empty() || args.columns.iter().any(|c| c.needs_go());
    let go = if args.no_go || !wants_go {
        Err("skipped".to_owned())
    } else {
        eprintln!("building conformance/go-peer ...");
        gopeer::build(&dir).map(Peer::go)
    };
    let minimal = Peer::minimal(exe.clone());
    let peers = Peers {
        rust: Peer::rust(exe),
        go: go.as_ref().ok().cloned(),
    };
    if let Err(why) = &go {
        eprintln!("Go columns: n/a ({why})");
        table.go_unavailable = Some(why.clone());
    }
    let columns: Vec<Column> = Column::ALL
        .into_iter()
        .filter(|c| peers.go.is_some() || !c.needs_go())
        .filter(|c| args.columns.is_empty() || args.columns.contains(c))
        .collect();
    let pairs: Vec<(&Peer, &Peer)> = match &peers.go {
        _ if !args.columns.is_empty() => vec![],
        Some(g) => vec![(&peers.rust, &peers.rust), (g, g)],
        None => vec![(&peers.rust, &peers.rust)],
    };
    let floor_steps = usize::from(!pairs.is_empty());
    let steps = plan.rounds * (sizes.len() * columns.len() + pairs.len() + floor_steps);
    let bar = ProgressBar::new(steps as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .map_err(|e| e.to_string())?,
    );
    let mut samples = vec![vec![Samples::default(); columns.len()]; sizes.len()];
    let mut lat: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); pairs.len()];
    // The latency floor, measured with the pairs: ping-pong p50/p99, paced
    // p50/p99 (two threads), paced p50/p99 (two processes).
    let mut floor: [Vec<f64>; 6] = Default::default();
    // A Go peer that fails mid-run takes the Go columns out (with the
    // reason); it does not fail the run.
    let mut go_failed: Option<String> = None;
    for round in 1..=plan.rounds {
        for (si, &size) in sizes.iter().enumerate() {
            for (ci, &column) in columns.iter().enumerate() {
                bar.inc(1);
                if column.needs_go() && go_failed.is_some() {
                    continue;
                }
                bar.set_message(format!(
                    "round {round}: {} {}",
                    size_label(size),
                    column.name()
                ));
                let what = format!("{} at {}", column.name(), size_label(size));
                match measure(column, &peers, &dir, size, plan.messages(size)) {
                    Ok(m) => samples[si][ci].push(&m),
                    Err(e) if column.needs_go() => {
                        bar.println(format!("Go columns dropped: {what}: {e}"));
                        go_failed = Some(format!("the Go peer failed: {what}: {e}"));
                    }
                    Err(e) => return Err(format!("{what}: {e}")),
                }
            }
        }
        // Alternate which pair goes first, so a disturbance right after the
        // throughput cells does not always hit the same one.
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        if !pairs.is_empty() {
            bar.inc(1);
            bar.set_message(format!("round {round}: latency floor"));
            let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
            let (p50, p99) = limits::ping_pong(plan.latency_messages)?;
            floor[0].push(us(p50));
            floor[1].push(us(p99));
            let (p50, p99) = limits::paced_one_way(plan.latency_messages, latency::RATE)?;
            floor[2].push(us(p50));
            floor[3].push(us(p99));
            let socket = dir.join("floor.sock");
            let (p50, p99) = latency::one_way(&minimal, &minimal, &socket, plan.latency_messages)
                .map_err(|e| format!("latency floor across processes: {e}"))?;
            floor[4].push(us(p50));
            floor[5].push(us(p99));
        }
        for pi in order {
            let (w, r) = pairs[pi];
            bar.inc(1);
            let uses_go = w.name == "Go" || r.name == "Go";
            if uses_go && go_failed.is_some() {
                continue;
            }
            bar.set_message(format!("round {round}: latency {} → {}", w.name, r.name));
            match latency::one_way(w, r, &dir.join("latency.sock"), plan.latency_messages) {
                Ok((p50, p99)) => {
                    lat[pi].0.push(p50.as_secs_f64() * 1e6);
                    lat[pi].1.push(p99.as_secs_f64() * 1e6);
                }
                Err(e) if uses_go => {
                    bar.println(format!("Go columns dropped: latency: {e}"));
                    go_failed = Some(format!("the Go peer failed: latency: {e}"));
                }
                Err(e) => return Err(format!("latency: {e}")),
            }
        }
    }
    bar.finish_and_clear();
    for (si, &size) in sizes.iter().enumerate() {
        let mut row = Row {
            size,
            ..Row::default()
        };
        for (ci, &column) in columns.iter().enumerate() {
            if !(column.needs_go() && go_failed.is_some()) {
                fill_row(&mut row, column, &samples[si][ci]);
            }
        }
        table.rows.push(row);
    }
    if go_failed.is_some() {
        table.go_unavailable = go_failed;
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
    for ((w, r), (p50, p99)) in pairs.iter().zip(&mut lat) {
        if p50.is_empty() {
            continue;
        }
        table.latency.push(LatencyRow {
            pair: format!("{} → {}", w.name, r.name),
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
        "{} round(s), up to {} MiB per cell, {:.1} s in all; load average {} at start, {} at end",
        plan.rounds,
        plan.bytes >> 20,
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
