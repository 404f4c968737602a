//! Building `conformance/go-peer`, the Go program that drives the Go
//! reference for the Go columns.
//!
//! The reference module comes from `UDSIPC_GO_REFERENCE` (a local checkout
//! of github.com/Psiphon-Inc/uds-ipc, used through `go mod edit -replace`)
//! or else from the Go module proxy (at the version and hash pinned in
//! `go.mod`/`go.sum`). When neither works, the Go columns say
//! why in one line and the rest of the table is measured as usual.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable naming a local checkout of the Go reference.
pub const REFERENCE_ENV: &str = "UDSIPC_GO_REFERENCE";
/// The Go module path of the Go reference.
pub const MODULE: &str = "github.com/Psiphon-Inc/uds-ipc";

/// The go-peer sources in this workspace.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/go-peer")
}

/// The `go` binary: `$GO`, `go` on `PATH`, or `/usr/local/go/bin/go`.
pub fn go_binary() -> Option<PathBuf> {
    std::env::var_os("GO")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("go"), PathBuf::from("/usr/local/go/bin/go")])
        .find(|c| {
            Command::new(c)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Builds go-peer into `work` (a scratch directory); returns the binary,
/// or a one-line reason why the Go columns cannot be measured.
pub fn build(work: &Path) -> Result<PathBuf, String> {
    let go = go_binary().ok_or("Go is not installed (set GO or put go on PATH)")?;
    let src = work.join("go-peer-src");
    std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
    // go.mod, go.sum and every Go file (main.go dispatches to read.go/write.go).
    let entries = std::fs::read_dir(source_dir()).map_err(|e| e.to_string())?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "go.mod" || name == "go.sum" || name.ends_with(".go") {
            let from = entry.path();
            std::fs::copy(&from, src.join(&*name))
                .map_err(|e| format!("{}: {e}", from.display()))?;
        }
    }
    if let Some(checkout) = std::env::var_os(REFERENCE_ENV).filter(|v| !v.is_empty()) {
        let checkout = std::fs::canonicalize(&checkout)
            .map_err(|e| format!("{REFERENCE_ENV}={}: {e}", Path::new(&checkout).display()))?;
        let replace = format!("-replace={MODULE}={}", checkout.display());
        run(Command::new(&go)
            .args(["mod", "edit", &replace])
            .current_dir(&src))?;
    }
    let bin = work.join("go-peer");
    run(Command::new(&go)
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .env("GOFLAGS", "-mod=mod"))?;
    Ok(bin)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("failed without a message")
        .trim();
    Err(format!(
        "go-peer does not build ({line}); set {REFERENCE_ENV} to a checkout of {MODULE}"
    ))
}
