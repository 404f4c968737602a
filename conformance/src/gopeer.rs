//! Building `go-peer/` once for every test process.
//!
//! nextest runs each test in its own process; the first one to get here
//! builds go-peer (module download included, verified against the
//! committed `go.sum`) under an exclusive file lock, the others wait on the
//! lock and reuse the binary. The binary's name carries a hash of the Go
//! sources, so an edit to them triggers a rebuild.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

use crate::{GoUnavailable, crate_dir, go_binary};

/// The go-peer sources.
pub fn source_dir() -> PathBuf {
    crate_dir().join("go-peer")
}

/// Where built artefacts and results go: `target/conformance/`, or
/// `$CARGO_TARGET_DIR/conformance/` (a relative `CARGO_TARGET_DIR` is taken
/// from the workspace root, as cargo does, since tests run in the crate's
/// directory).
pub fn out_dir() -> PathBuf {
    let workspace = crate_dir().join("..");
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map(|v| workspace.join(v))
        .unwrap_or_else(|| workspace.join("target"))
        .join("conformance")
}

fn sources_hash() -> std::io::Result<u64> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(source_dir())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "go")
                || p.file_name()
                    .is_some_and(|n| n == "go.mod" || n == "go.sum")
        })
        .collect();
    files.sort();
    let mut h = DefaultHasher::new();
    for f in files {
        f.file_name().hash(&mut h);
        std::fs::read(&f)?.hash(&mut h);
    }
    Ok(h.finish())
}

/// The path of a go-peer binary built from the current sources, building it
/// first if no test process has yet.
pub fn go_peer() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let go = go_binary()?;
    let dir = out_dir();
    std::fs::create_dir_all(&dir)?;
    let bin = dir.join(format!("go-peer-{:016x}", sources_hash()?));
    let lock = std::fs::File::create(dir.join("go-peer.lock"))?;
    let _guard = Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, e)| e)?;
    if bin.exists() {
        return Ok(bin);
    }
    let tmp = dir.join(format!("go-peer.tmp-{}", std::process::id()));
    let build = Command::new(&go)
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(source_dir())
        .output()?;
    if !build.status.success() {
        return Err(Box::new(GoUnavailable(format!(
            "go build of conformance/go-peer failed (it needs the Go module proxy, or \
             GOFLAGS=-mod=mod with GONOSUMDB/GOFLAGS as your network allows): {}",
            String::from_utf8_lossy(&build.stderr).trim()
        ))));
    }
    std::fs::rename(&tmp, &bin)?;
    Ok(bin)
}
