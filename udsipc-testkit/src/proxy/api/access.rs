//! Who calls the API, and whether they could have used a path themselves.
//!
//! A proxy often runs with more rights than its callers (root, in a test
//! rig). On a Unix-socket API the kernel names the caller (`SO_PEERCRED`),
//! so the API refuses what the caller could not have done without it:
//! listening in a directory they cannot write (or replacing a stale socket
//! they could not remove), forwarding to a socket they could not connect
//! to. The checks read the classic permission bits (owner, group, other;
//! the sticky bit), as the kernel does without ACLs; they are made when a
//! proxy is created or moved, not again later. Nothing here touches a file.

use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[cfg(test)]
const READ: u32 = 4;
const WRITE: u32 = 2;
const SEARCH: u32 = 1;

/// A caller known by its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    uid: u32,
    gid: u32,
    /// Supplementary groups, as `/proc/PID/status` listed them when the
    /// caller connected (empty if it could not be read).
    groups: Vec<u32>,
}

impl Caller {
    /// The peer of a Unix-socket connection; `None` when the kernel does
    /// not say, or when the caller is root or the proxy's own user (the
    /// kernel already applies their rights to everything the proxy does).
    pub(crate) fn of_peer(stream: &tokio::net::UnixStream) -> Option<Self> {
        let cred = stream.peer_cred().ok()?;
        let me = nix::unistd::geteuid().as_raw();
        if cred.uid() == 0 || cred.uid() == me {
            return None;
        }
        let groups = cred.pid().map(supplementary_groups).unwrap_or_default();
        Some(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            groups,
        })
    }

    /// Whether the permission bits of a file owned by `uid:gid` with `mode`
    /// grant this caller every bit of `want` (`READ`, `WRITE`, `SEARCH`).
    fn granted(&self, mode: u32, uid: u32, gid: u32, want: u32) -> bool {
        let bits = if uid == self.uid {
            mode >> 6
        } else if gid == self.gid || self.groups.contains(&gid) {
            mode >> 3
        } else {
            mode
        } & 0o7;
        bits & want == want
    }

    fn may(&self, meta: &Metadata, want: u32) -> bool {
        self.granted(meta.permissions().mode(), meta.uid(), meta.gid(), want)
    }

    /// Whether this caller may connect to the API's own socket, of `mode`
    /// owned by `uid:gid` (the socket file's mode is set just after it is
    /// bound: this closes that gap).
    pub(crate) fn may_connect_to_api(&self, mode: u32, uid: u32, gid: u32) -> bool {
        self.granted(mode, uid, gid, WRITE)
    }

    /// Every directory from the root to `dir` must let the caller through.
    fn search(&self, dir: &Path) -> Result<(), String> {
        for ancestor in dir.ancestors().collect::<Vec<_>>().into_iter().rev() {
            let meta = std::fs::metadata(ancestor)
                .map_err(|e| format!("cannot check {}: {e}", ancestor.display()))?;
            if !self.may(&meta, SEARCH) {
                return Err(denied(ancestor, "search"));
            }
        }
        Ok(())
    }

    /// Could the caller have bound `listen` themselves: write and search
    /// its directory, and, for a file already there (a stale socket the
    /// proxy would replace), remove it (the sticky bit: only its owner or
    /// the directory's).
    pub(crate) fn may_listen(&self, listen: &Path) -> Result<(), String> {
        let dir = parent(listen)?;
        self.search(&dir)?;
        let meta = std::fs::metadata(&dir).map_err(|e| e.to_string())?;
        if !self.may(&meta, WRITE | SEARCH) {
            return Err(denied(&dir, "create files in"));
        }
        let Some(name) = listen.file_name() else {
            return Err(format!("{} names no file", listen.display()));
        };
        if let Ok(file) = std::fs::symlink_metadata(dir.join(name)) {
            let sticky = meta.permissions().mode() & 0o1000 != 0;
            if sticky && file.uid() != self.uid && meta.uid() != self.uid {
                return Err(format!(
                    "{} is another user's, in a sticky directory: you could not replace it",
                    listen.display()
                ));
            }
        }
        Ok(())
    }

    /// Could the caller have connected to `upstream` themselves: search
    /// its directories and write the socket (if it exists yet).
    pub(crate) fn may_connect(&self, upstream: &Path) -> Result<(), String> {
        let dir = parent(upstream)?;
        self.search(&dir)?;
        let Some(name) = upstream.file_name() else {
            return Err(format!("{} names no file", upstream.display()));
        };
        // A symlink is followed as `connect` follows it: the target's
        // directories must let the caller through too.
        let Ok(target) = dir.join(name).canonicalize() else {
            return Ok(()); // not there (yet): nothing to connect to
        };
        if let Some(target_dir) = target.parent() {
            self.search(target_dir)?;
        }
        match std::fs::metadata(&target) {
            Ok(meta) if !self.may(&meta, WRITE) => Err(denied(upstream, "connect to")),
            _ => Ok(()),
        }
    }
}

/// The directory a path's file is in, resolved (symlinks followed, as the
/// proxy's own `bind` and `connect` would).
fn parent(path: &Path) -> Result<PathBuf, String> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    dir.canonicalize()
        .map_err(|e| format!("cannot check {}: {e}", dir.display()))
}

fn denied(path: &Path, what: &str) -> String {
    format!(
        "permission denied: you (the API's caller) may not {what} {}",
        path.display()
    )
}

/// The `Groups:` line of `/proc/PID/status`.
fn supplementary_groups(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            uid: 1000,
            gid: 100,
            groups: vec![27],
        }
    }

    #[test]
    fn the_owner_group_and_other_bits_apply_in_that_order() {
        let c = caller();
        assert!(c.granted(0o700, 1000, 0, READ | WRITE | SEARCH));
        assert!(
            !c.granted(0o077, 1000, 100, READ),
            "the owner's bits decide"
        );
        assert!(c.granted(0o070, 0, 100, WRITE));
        assert!(c.granted(0o020, 0, 27, WRITE), "a supplementary group");
        assert!(!c.granted(0o707, 0, 100, READ), "the group's bits decide");
        assert!(c.granted(0o002, 0, 0, WRITE));
        assert!(!c.granted(0o755, 0, 0, WRITE));
        assert!(!c.granted(0o600, 0, 0, WRITE));
    }
}
