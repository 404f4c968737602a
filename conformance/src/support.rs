//! What case bodies share: payloads that show a shifted or changed body,
//! their numbering, the outcome check, and the raw-bytes body every raw
//! case is made of. A leaf of the crate: it knows peers, not the catalog.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use crate::peer::{Impl, PATIENCE, ReaderOpts, ReaderPeer, socket_path};

pub(crate) fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

/// `len` bytes derived from `seed`, so a wrong or shifted body shows.
pub(crate) fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8))
        .collect()
}

pub(crate) fn describe(msgs: &[Vec<u8>]) -> String {
    let lens: Vec<usize> = msgs.iter().map(Vec::len).collect();
    if lens.len() > 12 {
        format!("{} messages", lens.len())
    } else {
        format!("lengths {lens:?}")
    }
}

pub(crate) fn numbered(i: usize, len: usize) -> Vec<u8> {
    let mut m = payload(len.max(4), i as u8);
    m[..4].copy_from_slice(&(i as u32).to_be_bytes());
    m
}

pub(crate) fn number(m: &[u8]) -> usize {
    u32::from_be_bytes([m[0], m[1], m[2], m[3]]) as usize
}

/// Exact bytes to a reader, then what both readers must show.
pub(crate) struct RawExpect<'a> {
    pub(crate) opts: ReaderOpts,
    /// Each chunk is one write, with a short pause after it.
    pub(crate) chunks: Vec<Vec<u8>>,
    /// Close our writing side after the chunks.
    pub(crate) close_after: bool,
    pub(crate) delivered: &'a [&'a [u8]],
    pub(crate) errors: &'a [&'a str],
    /// Whether the reader must close the connection (else a proof frame is
    /// sent afterwards and must be delivered).
    pub(crate) closed_by_reader: bool,
}

pub(crate) fn raw(r: Impl, x: RawExpect<'_>) -> Result<String, String> {
    let (_dir, path) = socket_path()?;
    let reader = ReaderPeer::start(r, &path, &x.opts)?;
    let mut conn = UnixStream::connect(&path).map_err(|e| format!("connect: {e}"))?;
    for c in &x.chunks {
        conn.write_all(c).map_err(|e| format!("write: {e}"))?;
        if x.chunks.len() > 1 {
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    if x.close_after {
        let _ = conn.shutdown(std::net::Shutdown::Write);
    }
    let mut expected: Vec<Vec<u8>> = x.delivered.iter().map(|m| m.to_vec()).collect();
    reader.events.wait_errors(x.errors.len())?;
    if x.closed_by_reader {
        conn.set_read_timeout(Some(PATIENCE))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1];
        match conn.read(&mut buf) {
            Ok(0) => {}
            Ok(_) => return Err("the reader sent bytes".into()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => return Err(format!("connection not closed by the reader: {e}")),
        }
    } else if !x.close_after {
        conn.write_all(&[1, b'Z'])
            .map_err(|e| format!("proof frame: {e}"))?;
        expected.push(b"Z".to_vec());
        let _ = conn.shutdown(std::net::Shutdown::Write);
    }
    reader.events.wait_messages(expected.len())?;
    drop(conn);
    let events = reader.events.clone();
    let rc = reader.stop()?;
    let (got, errs) = (events.messages(), events.errors());
    check(got == expected, || format!("delivered {}", describe(&got)))?;
    check(errs == x.errors, || format!("errors {errs:?}"))?;
    check(rc.errors == x.errors.len() as u64, || format!("{rc:?}"))?;
    check(rc.received == expected.len() as u64, || format!("{rc:?}"))?;
    Ok(format!(
        "delivered {}; errors {errs:?}; closed by reader: {}; {rc:?}",
        describe(&got),
        x.closed_by_reader
    ))
}

pub(crate) fn one(bytes: &[u8]) -> Vec<Vec<u8>> {
    vec![bytes.to_vec()]
}

pub(crate) fn uvarint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// Accepts one connection on `listener`, waiting at most [`PATIENCE`] for
/// `who` (e.g. "the Go writer") to connect.
pub(crate) fn accept_within(listener: &UnixListener, who: &str) -> Result<UnixStream, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + PATIENCE;
    loop {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok(conn);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(format!("waited {PATIENCE:?} for {who} to connect"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}
