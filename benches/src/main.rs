//! `udsipc-benches`: measures this library's throughput next to the raw
//! Unix-socket limit on this machine and prints a markdown table.
//!
//! Each column is the median of several repetitions, interleaved (every
//! column once per round) so that machine drift hits all columns alike.

use std::time::Instant;

use clap::Parser;
use udsipc_benches::{median, raw_socket_limit, rust_in_process};

/// Throughput of udsipc (Writer -> Reader, one process, real socket) and of
/// the raw socket, per message size.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Fewer bytes per measurement and fewer rounds (well under a minute).
    #[arg(long)]
    quick: bool,
    /// A tiny run that only checks everything works (for CI).
    #[arg(long, conflicts_with = "quick")]
    smoke: bool,
    /// Rounds per size (the median is reported).
    #[arg(long)]
    rounds: Option<usize>,
    /// Payload bytes moved per measurement, in MiB.
    #[arg(long)]
    mib: Option<u64>,
    /// Measure only this message size in bytes (repeatable; default: 64 B,
    /// 1 KiB, 10 KiB, 100 KiB and 1 MiB).
    #[arg(long = "size", value_name = "BYTES")]
    sizes: Vec<usize>,
}

const SIZES: [usize; 5] = [64, 1024, 10 * 1024, 100 * 1024, 1024 * 1024];

fn label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let (rounds, mib) = match (args.smoke, args.quick) {
        (true, _) => (1, 1),
        (_, true) => (3, 64),
        _ => (5, 512),
    };
    let rounds = args.rounds.unwrap_or(rounds).max(1);
    let total = args.mib.unwrap_or(mib) << 20;
    let dir = tempfile_dir()?;
    let started = Instant::now();
    println!("| size | udsipc MB/s | udsipc msgs/s | raw socket MB/s | udsipc / raw |");
    println!("|---:|---:|---:|---:|---:|");
    let sizes = if args.sizes.is_empty() {
        SIZES.to_vec()
    } else {
        args.sizes.clone()
    };
    for size in sizes {
        let messages = (total / size as u64).max(16);
        let (mut rust, mut rate, mut raw) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            eprint!("\r{} round {}/{} ...", label(size), round + 1, rounds);
            let path = dir.join(format!("bench-{size}-{round}.sock"));
            let m = rust_in_process(&path, size, messages)?;
            rust.push(m.mb_per_sec());
            rate.push(m.msgs_per_sec());
            raw.push(raw_socket_limit(messages * size as u64)?.mb_per_sec());
        }
        eprint!("\r{:40}\r", "");
        let (r, q, l) = (median(&mut rust), median(&mut rate), median(&mut raw));
        println!(
            "| {} | {r:.0} | {q:.0} | {l:.0} | {:.2} |",
            label(size),
            r / l
        );
    }
    eprintln!(
        "{} round(s) of {} MiB per cell, {:.1} s in all",
        rounds,
        total >> 20,
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("udsipc-benches-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}
