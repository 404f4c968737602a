//! The baselines and limits as peer processes (see [`crate::peer`]), so
//! that the main table is two processes in every column, as a deployment
//! is: `udsipc bench peer --engine ENGINE --role reader|writer ...`.
//!
//! The reader binds a Unix socket, prints `ready`, accepts one connection
//! and reads until the cell's messages (or bytes) arrived; the writer
//! connects, sets `SO_SNDBUF` to 256 KiB as every column does, and writes.
//! Each side runs the same half that the in-process column runs on a
//! thread ([`crate::baseline`], [`crate::limits`]).

use std::os::unix::net::{UnixListener, UnixStream};

use bytes::Bytes;
use udsipc::codec::UvarintCodec;
use unsigned_varint::codec::UviBytes;

use crate::alloc::allocations;
use crate::baseline::{SNDBUF, read_frames, set_sndbuf, write_frames};
use crate::clock::monotonic_ns;
use crate::cpu::self_ns;
use crate::limits::{Waiting, framed_source, raw_source, read_all, write_all};
use crate::peer::{Engine, PeerArgs, Report};
use crate::warmup_messages;

/// How an engine's role waits on its socket.
fn waiting(engine: Engine) -> Waiting {
    match engine {
        Engine::FramedBlocking | Engine::RawBlocking => Waiting::Blocking,
        _ => Waiting::Epoll,
    }
}

/// Runs one role of a baseline or limit engine and returns its report.
pub fn run(args: &PeerArgs) -> Result<Report, String> {
    match args.role.as_str() {
        "reader" => reader(args),
        "writer" => writer(args),
        other => Err(format!("--role must be reader or writer, not {other:?}")),
    }
}

fn max_len(size: usize) -> usize {
    size.max(1)
}

fn reader(args: &PeerArgs) -> Result<Report, String> {
    let _ = std::fs::remove_file(&args.socket);
    let listener = UnixListener::bind(&args.socket).map_err(|e| e.to_string())?;
    println!("ready");
    let cpu_start = self_ns();
    let (conn, _) = listener.accept().map_err(|e| e.to_string())?;
    let (count, size) = (args.count, args.size);
    let warm = warmup_messages(count).max(1);
    let (msgs, bytes, allocs, alloc_msgs) = match args.engine {
        Engine::TokioUtil | Engine::Codec => {
            let (got, bytes, mark) = if args.engine == Engine::TokioUtil {
                let mut decoder = UviBytes::<Bytes>::default();
                decoder.set_max_len(max_len(size));
                read_frames(conn, decoder, count, warm)?
            } else {
                let codec = UvarintCodec::new().max_message_size(max_len(size) as u64);
                read_frames(conn, codec, count, warm)?
            };
            let allocs = allocations() - mark;
            (got, bytes, allocs, count.saturating_sub(warm).max(1))
        }
        Engine::FramedBlocking | Engine::FramedEpoll | Engine::RawBlocking | Engine::RawEpoll => {
            let total = engine_bytes(args.engine, size, count);
            let got = read_all(conn, total, waiting(args.engine))?;
            if got != total {
                return Err(format!("{got} of {total} bytes arrived"));
            }
            (count, count * size as u64, 0, 0)
        }
        Engine::Udsipc => unreachable!("the udsipc engine is rust_peer's"),
    };
    let last_ns = monotonic_ns();
    Ok(Report {
        role: "reader".into(),
        msgs,
        bytes,
        last_ns,
        allocs,
        alloc_msgs,
        cpu_ns: Some(self_ns().saturating_sub(cpu_start)),
        ..Report::default()
    })
}

/// Bytes on the wire for a limit engine's cell.
fn engine_bytes(engine: Engine, size: usize, count: u64) -> u64 {
    match engine {
        Engine::FramedBlocking | Engine::FramedEpoll => framed_source(size, count).1,
        _ => count * size as u64,
    }
}

fn writer(args: &PeerArgs) -> Result<Report, String> {
    let conn = UnixStream::connect(&args.socket).map_err(|e| e.to_string())?;
    set_sndbuf(&conn, SNDBUF);
    let (count, size) = (args.count, args.size);
    let warm = warmup_messages(count).max(1);
    let cpu_start = self_ns();
    let start_ns = monotonic_ns();
    let (allocs, alloc_msgs) = match args.engine {
        Engine::TokioUtil => {
            let mark = write_frames(conn, UviBytes::<Bytes>::default(), size, count, warm)?;
            (allocations() - mark, count.saturating_sub(warm).max(1))
        }
        Engine::Codec => {
            let mark = write_frames(conn, UvarintCodec::new(), size, count, warm)?;
            (allocations() - mark, count.saturating_sub(warm).max(1))
        }
        Engine::FramedBlocking | Engine::FramedEpoll => {
            write_all(conn, framed_source(size, count).0, waiting(args.engine))?;
            (0, 0)
        }
        Engine::RawBlocking | Engine::RawEpoll => {
            write_all(conn, raw_source(count * size as u64), waiting(args.engine))?;
            (0, 0)
        }
        Engine::Udsipc => unreachable!("the udsipc engine is rust_peer's"),
    };
    Ok(Report {
        role: "writer".into(),
        msgs: count,
        bytes: count * size as u64,
        start_ns,
        end_ns: monotonic_ns(),
        allocs,
        alloc_msgs,
        cpu_ns: Some(self_ns().saturating_sub(cpu_start)),
        ..Report::default()
    })
}
