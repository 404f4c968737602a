//! The latency floor across processes: the peer contract (see
//! [`crate::peer`]) kept to the least a program can do, with no library and
//! no framing: a blocking writer that sleeps until each message is due and
//! `write`s it, and a blocking reader that `read`s it (`udsipc bench peer
//! --minimal`). The in-process floor in [`crate::limits`] runs the same on
//! two threads of one process, which a pair of processes (every other
//! latency row) cannot match: waking a thread of another process costs
//! more.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use crate::clock::monotonic_ns;
use crate::peer::{PeerArgs, Report};

/// Runs one role of the minimal peer and returns its report.
pub fn run(args: &PeerArgs) -> Result<Report, String> {
    if args.size < 8 {
        return Err("--size must be at least 8 (the send time)".to_owned());
    }
    match args.role.as_str() {
        "reader" => reader(args),
        "writer" => writer(args),
        other => Err(format!("--role must be reader or writer, not {other:?}")),
    }
}

fn reader(args: &PeerArgs) -> Result<Report, String> {
    let _ = std::fs::remove_file(&args.socket);
    let listener = UnixListener::bind(&args.socket).map_err(|e| e.to_string())?;
    println!("ready");
    let (mut conn, _) = listener.accept().map_err(|e| e.to_string())?;
    let warm = crate::warmup_messages(args.count);
    let mut buf = vec![0u8; args.size];
    let mut latencies = Vec::with_capacity(args.count as usize);
    let (mut first_ns, mut last_ns) = (0, 0);
    let mut msgs = 0;
    while msgs < args.count {
        if conn.read_exact(&mut buf).is_err() {
            break;
        }
        let now = monotonic_ns();
        if msgs == 0 {
            first_ns = now;
        }
        last_ns = now;
        msgs += 1;
        if args.latency && msgs > warm {
            latencies.push(now - i64::from_le_bytes(buf[..8].try_into().expect("8 bytes")));
        }
    }
    latencies.sort_unstable();
    let latency_ns = (!latencies.is_empty()).then(|| {
        let n = latencies.len();
        [latencies[n / 2], latencies[n * 99 / 100]]
    });
    Ok(Report {
        role: "reader".into(),
        msgs,
        bytes: msgs * args.size as u64,
        first_ns,
        last_ns,
        latency_ns,
        ..Report::default()
    })
}

fn writer(args: &PeerArgs) -> Result<Report, String> {
    let mut conn = UnixStream::connect(&args.socket).map_err(|e| e.to_string())?;
    let interval = args.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut buf = vec![0u8; args.size];
    let start_ns = monotonic_ns();
    let begin = Instant::now();
    for i in 0..args.count {
        if let Some(interval) = interval {
            let due = begin + interval.mul_f64(i as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        buf[..8].copy_from_slice(&monotonic_ns().to_le_bytes());
        conn.write_all(&buf).map_err(|e| e.to_string())?;
    }
    Ok(Report {
        role: "writer".into(),
        msgs: args.count,
        bytes: args.count * args.size as u64,
        start_ns,
        end_ns: monotonic_ns(),
        ..Report::default()
    })
}
