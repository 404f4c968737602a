//! Building the ZeroMQ column's peer: `zmq-peer`, a small C program on
//! libzmq (PUSH → PULL over `ipc://`, the runner's peer contract; its
//! source is `benches/zmq-peer/zmq_peer.c`, embedded in this crate).
//!
//! It is compiled at run time, as the Go peer is built, with `$CC` (or
//! `cc`) against the system's libzmq (Debian: `libzmq3-dev`, which
//! `ci/bench` installs when missing). When that fails the ZeroMQ column is
//! n/a with the reason, and nothing else changes: no Rust binding, so
//! building this crate never needs libzmq.
//!
//! Set like udsipc's Writer: the high-water marks are the Writer's default
//! queue bound ([`udsipc::DEFAULT_MAX_BUFFERED_WRITES`] messages), the
//! send buffer its default `SO_SNDBUF` ([`udsipc::DEFAULT_WRITE_BUFFER_SIZE`]).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The C source of zmq-peer.
pub const SOURCE: &str = include_str!("../zmq-peer/zmq_peer.c");

/// The environment variable naming the C compiler (default `cc`).
pub const CC_ENV: &str = "CC";

/// Compiles zmq-peer into `work` (a scratch directory); returns the
/// binary, or a one-line reason why the ZeroMQ column cannot be measured.
pub fn build(work: &Path) -> Result<PathBuf, String> {
    let src = work.join("zmq_peer.c");
    std::fs::write(&src, SOURCE).map_err(|e| format!("{}: {e}", src.display()))?;
    let bin = work.join("zmq-peer");
    let cc = std::env::var_os(CC_ENV)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "cc".into());
    let out = Command::new(&cc)
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .arg(format!(
            "-DUDSIPC_HWM={}",
            udsipc::DEFAULT_MAX_BUFFERED_WRITES
        ))
        .arg(format!(
            "-DUDSIPC_SNDBUF={}",
            udsipc::DEFAULT_WRITE_BUFFER_SIZE
        ))
        .arg("-lzmq")
        .output()
        .map_err(|e| format!("no C compiler ({}: {e})", Path::new(&cc).display()))?;
    if out.status.success() {
        return Ok(bin);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("zmq.h") || err.contains("-lzmq") {
        return Err("libzmq is not installed (Debian: apt-get install libzmq3-dev)".to_owned());
    }
    let line = err
        .lines()
        .find(|l| l.contains("error"))
        .unwrap_or("failed without a message")
        .trim();
    Err(format!("zmq-peer does not compile ({line})"))
}
