//! Conformance for the UDS-IPC protocol (`docs/PROTOCOL.md`), as a suite
//! any implementation can run against.
//!
//! - [`spec`]: the rules of PROTOCOL.md, read from the document itself,
//!   and their [`Level`](spec::Level);
//! - [`cases`] (and the bodies in `spec_cases`, on the helpers of
//!   `support`): the catalog, each case a rule number, MUST or SHOULD, and
//!   a body run for every writer→reader pair, every reader (raw bytes) or
//!   every writer (bytes on the wire);
//! - [`peer`]: the peers behind one interface: the in-process Rust
//!   Reader/Writer, or any program speaking `PEERS.md` (go-peer, built by
//!   [`gopeer`]; `udsipc peer`, the hidden subcommand of the `udsipc-cli`
//!   package's binary; the Python peer; anything given to `conform`);
//! - [`result`]: the outcome of one run, as a value and a file;
//! - [`report`]: the N×N matrix, markdown/JSON/JUnit.
//!
//! Imports run one way: `cases` → `spec_cases` → `support` → `peer`;
//! `report` → `cases`, `result`, `spec`; value types (`spec::Level`,
//! `result::CaseResult`) live in leaf modules so nothing imports back up.
//!
//! - `tests/cases.rs`: one nextest test per case×arm for the gate;
//!   `tests/nonconforming.rs`: peers that break 4.8 and 7.4 on purpose,
//!   which those cases must fail; `tests/runner.rs`: `conform` as a user
//!   runs it (deadlines, tagged stderr, capabilities, answers by kind);
//!   `tests/vectors.rs`: `vectors.json` against the Rust frame receiver and
//!   the Python peer's own tests; `tests/catalog.rs`: the catalog against
//!   PROTOCOL.md; `tests/go_varint.rs`: the codec against Go's
//!   `encoding/binary` (`go-varint/`, [`GoVarint`]).

pub mod capability;
pub mod cases;
pub mod events;
pub mod gopeer;
pub mod peer;
pub mod process;
mod reader_cases;
pub mod report;
pub mod result;
pub mod spec;
mod spec_cases;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Why a Go helper could not be used.
#[derive(Debug)]
pub struct GoUnavailable(pub String);

impl std::fmt::Display for GoUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GoUnavailable {}

/// The `go` binary to use: `$GO`, `go` on `PATH`, or `/usr/local/go/bin/go`.
pub fn go_binary() -> Result<PathBuf, GoUnavailable> {
    if let Some(go) = udsipc_benches::gopeer::go_binary() {
        return Ok(go);
    }
    Err(GoUnavailable(
        "the Go toolchain is not installed: install Go 1.24 or newer (e.g. `apt-get install golang-go`, \
         or the official tarball into /usr/local/go) and put `go` on PATH, or set GO=/path/to/go"
            .into(),
    ))
}

/// The directory of this crate (where `go-varint/` lives).
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A running `go-varint` process answering one request line at a time.
#[derive(Debug)]
pub struct GoVarint {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl GoVarint {
    /// Builds and starts `go-varint` (its build output goes under `target/`).
    pub fn start() -> Result<Self, Box<dyn std::error::Error>> {
        let go = go_binary()?;
        let target = crate_dir().join("../target/conformance");
        std::fs::create_dir_all(&target)?;
        // One binary per process: tests run in parallel processes.
        let bin = target.join(format!("go-varint-{}", std::process::id()));
        let build = Command::new(&go)
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(crate_dir().join("go-varint"))
            .env("GOFLAGS", "-mod=mod")
            .output()?;
        if !build.status.success() {
            return Err(format!(
                "go build of go-varint failed: {}",
                String::from_utf8_lossy(&build.stderr)
            )
            .into());
        }
        let mut child = Command::new(&bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    /// Sends one request line and returns the answer line.
    pub fn ask(&mut self, request: &str) -> std::io::Result<String> {
        writeln!(self.stdin, "{request}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    }
}

impl Drop for GoVarint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(crate_dir().join(format!(
            "../target/conformance/go-varint-{}",
            std::process::id()
        )));
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
