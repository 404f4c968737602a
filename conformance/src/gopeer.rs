//! Building `go-peer/` once for every test process, with the workspace's
//! one go-peer builder ([`udsipc_benches::gopeer::build`], which the
//! benchmark table uses too: the same sources, the same optional local
//! checkout of the Go reference through `UDSIPC_GO_REFERENCE`).
//!
//! nextest runs each test in its own process; the first one to get here
//! builds go-peer (module download included, verified against the
//! committed `go.sum`) under an exclusive file lock, the others wait on the
//! lock and reuse the binary. The binary's name carries a hash of the Go
//! sources, so an edit to them triggers a rebuild.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};
pub use udsipc_benches::gopeer::source_dir;

use crate::{GoUnavailable, crate_dir, go_binary};

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
    // A local checkout of the reference builds another binary.
    std::env::var_os(udsipc_benches::gopeer::REFERENCE_ENV).hash(&mut h);
    for f in files {
        f.file_name().hash(&mut h);
        std::fs::read(&f)?.hash(&mut h);
    }
    Ok(h.finish())
}

/// The path of a go-peer binary built from the current sources, building it
/// first if no test process has yet.
pub fn go_peer() -> Result<PathBuf, Box<dyn std::error::Error>> {
    go_binary()?;
    let dir = out_dir();
    std::fs::create_dir_all(&dir)?;
    let bin = dir.join(format!("go-peer-{:016x}", sources_hash()?));
    let lock = std::fs::File::create(dir.join("go-peer.lock"))?;
    let _guard = Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, e)| e)?;
    if bin.exists() {
        return Ok(bin);
    }
    let work = dir.join(format!("go-peer.build-{}", std::process::id()));
    let built = udsipc_benches::gopeer::build(&work).map_err(GoUnavailable);
    let renamed = built.map(|tmp| std::fs::rename(tmp, &bin));
    let _ = std::fs::remove_dir_all(&work);
    renamed??;
    Ok(bin)
}
