//! Taking a socket path for a Reader while other processes may race for it,
//! and giving it back at stop. Abstract names have no file: they are bound
//! directly (the kernel refuses a name still bound, and a name dies with its
//! socket).
//!
//! For a path, a start goes through these steps; each closes one race:
//!
//! 1. **Lock.** An advisory lock (`flock`) on `<path>.lock`, held while a
//!    start (or a stop) changes the path, and released, the file removed,
//!    once it is done, whether it succeeded or was refused. Two udsipc starts
//!    on one path never overlap: the second waits (a moment at most) and
//!    then finds the first one's socket live (`AddrInUse`), so one that
//!    judged a socket stale cannot unlink a newer reader's socket, and a
//!    bound-but-not-yet-listening socket is never seen by another udsipc
//!    start. The lock dies with the process, so a killed start never blocks
//!    a restart. A running Reader does not hold it: a successor can start on
//!    the path once the predecessor's socket file is gone (the blue/green
//!    hot upgrade the Go reference allows), and the predecessor's stop,
//!    which takes the lock for its check-and-unlink, leaves the successor's
//!    socket alone. A lock held past that moment, or a lock file another
//!    user owns, is reported as what it is ([`StartError::LockHeld`]), not
//!    as a live reader.
//! 2. **Sweep** the staging directories (step 4) that killed starts left
//!    beside the path: only ours (name `.udsipc-XXXXXX`, a real directory
//!    owned by this user with mode 0700, unchanged for a while) and only
//!    dead ones (a start holds a lock on its staging directory while it
//!    lives: if we can take it, its start is gone).
//! 3. **Stale check** under the lock: nothing there is fine; a non-socket is
//!    refused untouched; a socket that answers is refused (`AddrInUse`: it
//!    may be a reader that does not take the lock, such as the Go
//!    reference); one that refuses connections is removed.
//! 4. **Bind in a private directory.** The socket is bound inside a fresh
//!    `mkdtemp` directory (mode 0700, ours) beside the path, its identity
//!    (device, inode) read there without following links, its mode set
//!    there, and it is put to `listen` there. No other user can add,
//!    replace or link anything inside that directory, so the mode change can
//!    only ever reach our own socket, whatever happens at the public path.
//!    When `<dir>/.udsipc-XXXXXX/s` does not fit in `sun_path` (108 bytes)
//!    but the path does, the socket is bound directly at the path, as Go
//!    does (`bind` never replaces a file, and the lock keeps udsipc starts
//!    out), unless the directory is writable by others without the sticky
//!    bit: then it is bound in the private directory through
//!    `/proc/self/fd`, and without `/proc` the start is refused saying so.
//! 5. **Publish atomically.** `renameat2(RENAME_NOREPLACE)` (or `link` where
//!    the file system lacks it) moves the already listening socket to the
//!    path, and fails instead of replacing anything that appeared there
//!    meanwhile. Writers never see a half-made socket: it appears listening
//!    and with its final mode.
//!
//! Stopping takes the lock again, removes the socket only if the path
//! still holds the recorded identity, then removes the lock file and
//! releases the lock, in that order, so no other udsipc start can slip in
//! between the check and the unlink. A stop that cannot take the lock
//! leaves the socket file (the next start finds it stale and removes it).
//!
//! What is left: a reader that does not take the lock (another
//! implementation) racing a udsipc start on the same path; the probe and
//! `NOREPLACE` narrow that to the instant between a stale probe and its
//! unlink.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::StartError;
use crate::socket::{self, Probe, SocketAddress};

/// A listening socket and, for a path, the file it owns.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) listener: UnixListener,
    pub(crate) file: Option<OwnedSocketFile>,
}

/// Binds and listens on `name` (a path or an abstract name) as described in
/// the module docs; with `mode`, the socket file gets that mode before any
/// peer can reach it.
pub(crate) fn listen_on(name: &Path, mode: Option<u32>) -> Result<Bound, StartError> {
    let bind_error = |source: io::Error| StartError::Bind {
        path: name.to_owned(),
        source,
    };
    match SocketAddress::parse(name)? {
        SocketAddress::Path(path) => listen_on_file(&path, mode),
        address => {
            let fd = new_socket().map_err(bind_error)?;
            bind_fd(&fd, &address.unix_addr().map_err(bind_error)?).map_err(bind_error)?;
            listen_fd(&fd).map_err(bind_error)?;
            Ok(Bound {
                listener: UnixListener::from(fd),
                file: None,
            })
        }
    }
}

fn listen_on_file(path: &Path, mode: Option<u32>) -> Result<Bound, StartError> {
    let bind_error = |source: io::Error| StartError::Bind {
        path: path.to_owned(),
        source,
    };
    let replaceable = socket::replaceable_dir(path);
    if let Some(dir) = &replaceable {
        tracing::warn!(
            dir = %dir.display(),
            "the socket's directory is writable by others and has no sticky bit: anyone can replace the socket"
        );
    }
    // Released (its file removed) when this returns, however it returns.
    let _lock = PathLock::acquire(path)?;
    sweep_staging(parent_of(path));
    clear_stale(path)?;
    let fd = new_socket().map_err(bind_error)?;
    let staged_fits =
        parent_of(path).join(STAGING_EXAMPLE).as_os_str().len() <= socket::max_socket_path_len();
    let identity = if staged_fits || replaceable.is_some() {
        let staging = Staging::create(path).map_err(bind_error)?;
        let addr = nix::sys::socket::UnixAddr::new(staging.bind_path(path)?.as_path())
            .map_err(|e| bind_error(e.into()))?;
        bind_fd(&fd, &addr).map_err(bind_error)?;
        hook::fire(hook::Point::Bound);
        let identity = staging.identify().map_err(bind_error)?;
        if let Some(mode) = mode {
            staging.chmod(mode).map_err(bind_error)?;
        }
        listen_fd(&fd).map_err(bind_error)?;
        staging.publish(path)?;
        identity
    } else {
        bind_directly(&fd, path, mode)?
    };
    Ok(Bound {
        listener: UnixListener::from(fd),
        file: Some(OwnedSocketFile {
            path: path.to_owned(),
            identity,
            removed: Mutex::new(false),
        }),
    })
}

/// The directory a socket path is in (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Binds, identifies, gives its mode to and listens on the socket directly
/// at `path`, as Go does, for a path whose staging name would not fit in
/// `sun_path` (called with the lock held, in a directory others cannot
/// replace files in). `bind` never replaces a file; the socket is removed
/// again if a later step fails.
fn bind_directly(fd: &OwnedFd, path: &Path, mode: Option<u32>) -> Result<(u64, u64), StartError> {
    let bind_error = |source: io::Error| StartError::Bind {
        path: path.to_owned(),
        source,
    };
    let addr = nix::sys::socket::UnixAddr::new(path).map_err(|e| bind_error(e.into()))?;
    match nix::sys::socket::bind(fd.as_raw_fd(), &addr) {
        Ok(()) => {}
        Err(Errno::EADDRINUSE) => return Err(taken(path)),
        Err(e) => return Err(bind_error(e.into())),
    }
    hook::fire(hook::Point::Bound);
    let meta = fs::symlink_metadata(path).map_err(bind_error)?;
    if !meta.file_type().is_socket() {
        return Err(bind_error(io::Error::other(
            "the bound socket is not where it was bound",
        )));
    }
    let identity = (meta.dev(), meta.ino());
    let made = OwnedSocketFile {
        path: path.to_owned(),
        identity,
        removed: Mutex::new(false),
    };
    let finish = || -> io::Result<()> {
        if let Some(mode) = mode {
            chmod_socket(path, identity, mode)?;
        }
        listen_fd(fd)
    };
    if let Err(e) = finish() {
        // The lock is ours: remove the socket we made, if it is still ours.
        let _ = made.remove_locked();
        return Err(bind_error(e));
    }
    Ok(identity)
}

/// Sets the mode of the socket at `path` that has `identity`, without
/// following a link where the system can (`fchmodat2`); elsewhere after
/// checking the path still holds that socket (it is in a directory others
/// cannot replace files in, see [`bind_directly`]).
fn chmod_socket(path: &Path, identity: (u64, u64), mode: u32) -> io::Result<()> {
    use nix::sys::stat::{FchmodatFlags, Mode, fchmodat};
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let bits = Mode::from_bits_truncate(mode as nix::libc::mode_t);
    match fchmodat(None, path, bits, FchmodatFlags::NoFollowSymlink) {
        Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => {}
        other => return Ok(other?),
    }
    let meta = fs::symlink_metadata(path)?;
    if !meta.file_type().is_socket() || (meta.dev(), meta.ino()) != identity {
        return Err(io::Error::other(
            "the bound socket was replaced before its mode was set",
        ));
    }
    Ok(fchmodat(None, path, bits, FchmodatFlags::FollowSymlink)?)
}

/// The error for a path taken by someone else while we held the lock.
fn taken(path: &Path) -> StartError {
    match fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => StartError::NotASocket {
            path: path.to_owned(),
        },
        _ => StartError::AddrInUse {
            path: path.to_owned(),
        },
    }
}

/// A close-on-exec, non-blocking stream socket (see `socket::stream_socket`
/// for the systems without atomic flags).
fn new_socket() -> io::Result<OwnedFd> {
    Ok(crate::socket::stream_socket()?)
}

fn bind_fd(fd: &OwnedFd, addr: &nix::sys::socket::UnixAddr) -> io::Result<()> {
    Ok(nix::sys::socket::bind(fd.as_raw_fd(), addr)?)
}

fn listen_fd(fd: &OwnedFd) -> io::Result<()> {
    use nix::sys::socket::{Backlog, listen};
    Ok(listen(fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))?)
}

/// Makes `path` free to publish on (called with the lock held):
/// - nothing there: fine;
/// - not a socket: refused, left untouched;
/// - a socket with a live listener: refused (address in use);
/// - a stale socket (connection refused): removed.
fn clear_stale(path: &Path) -> Result<(), StartError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StartError::Bind {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(StartError::NotASocket {
            path: path.to_owned(),
        });
    }
    match socket::probe(path) {
        Probe::Live => Err(StartError::AddrInUse {
            path: path.to_owned(),
        }),
        Probe::Stale => {
            hook::fire(hook::Point::JudgedStale);
            match fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(StartError::RemoveStale {
                    path: path.to_owned(),
                    source,
                }),
            }
        }
        Probe::Unknown(source) => Err(StartError::Bind {
            path: path.to_owned(),
            source,
        }),
    }
}

/// How long a start or a stop waits for the lock that another one holds (a
/// start holds it for a few system calls) before it says so.
const LOCK_PATIENCE: Duration = Duration::from_secs(1);

/// The advisory lock beside a socket path (`<path>.lock`), held while the
/// path is changed. Dropping it removes the file if it is still the one we
/// locked, empty and ours, then unlocks.
#[derive(Debug)]
struct PathLock {
    path: PathBuf,
    lock: Flock<File>,
}

impl PathLock {
    fn acquire(socket: &Path) -> Result<Self, StartError> {
        let mut path = socket.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        let error = |source: io::Error| StartError::Bind {
            path: path.clone(),
            source,
        };
        let held = |owner: Option<u32>, source: Option<io::Error>| match socket::probe(socket) {
            Probe::Live => StartError::AddrInUse {
                path: socket.to_owned(),
            },
            _ => StartError::LockHeld {
                path: socket.to_owned(),
                lock: path.clone(),
                owner,
                source,
            },
        };
        let deadline = Instant::now() + LOCK_PATIENCE;
        let mut replaced = 0;
        loop {
            let opened = OpenOptions::new()
                .write(true)
                .create(true)
                .mode(0o600)
                // Never a link, and never block on a FIFO planted there.
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                .open(&path);
            let file = match opened {
                Ok(file) => file,
                // Another user's file (protected_regular refuses even root
                // in a sticky directory), not a reader on the path.
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    let owner = fs::symlink_metadata(&path).ok().map(|m| m.uid());
                    return Err(held(owner, Some(e)));
                }
                Err(e) => return Err(error(e)),
            };
            let meta = file.metadata().map_err(error)?;
            if !meta.is_file() {
                return Err(error(io::Error::other(
                    "the lock file is not a regular file",
                )));
            }
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                // A previous holder removes the file when it is done: if it
                // did so between our open and our lock, we hold a lock on a
                // file nobody else can see, so try again with the one at
                // the path now.
                Ok(lock) => match fs::symlink_metadata(&path) {
                    Ok(now) if now.dev() == meta.dev() && now.ino() == meta.ino() => {
                        return Ok(Self { path, lock });
                    }
                    _ if replaced < 16 => replaced += 1,
                    _ => {
                        return Err(error(io::Error::other(
                            "the lock file kept being replaced while locking it",
                        )));
                    }
                },
                Err((_, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((_, Errno::EWOULDBLOCK)) => return Err(held(Some(meta.uid()), None)),
                Err((_, errno)) => return Err(error(errno.into())),
            }
        }
    }
}

impl Drop for PathLock {
    /// Removes the lock file (still ours: no udsipc start removes or
    /// replaces it without first taking the lock), then unlocks (the lock
    /// field drops after this). A lock file is never written to: one that is
    /// not empty, or belongs to another user, is somebody else's file that
    /// happens to have the name, and is left in place.
    fn drop(&mut self) {
        let Ok(ours) = self.lock.metadata() else {
            return;
        };
        if ours.len() != 0 || ours.uid() != nix::unistd::geteuid().as_raw() {
            return;
        }
        if let Ok(now) = fs::symlink_metadata(&self.path) {
            if now.dev() == ours.dev() && now.ino() == ours.ino() {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// How long a staging directory must have been left unchanged before a
/// start may sweep it (besides being dead: see [`sweep_staging`]), so that
/// one made by an older udsipc, which does not lock it, is never swept
/// while its start runs.
const STAGING_AGE: Duration = Duration::from_secs(10);

/// The staging directory's name pattern (`mkdtemp`'s template) and the
/// longest path under it, as an example for its length.
const STAGING_PREFIX: &str = ".udsipc-";
const STAGING_EXAMPLE: &str = ".udsipc-XXXXXX/s";

/// Removes the staging directories that killed starts left in `dir`:
/// named `.udsipc-` and six characters, real directories (not links) owned
/// by this user with mode 0700, unchanged for [`STAGING_AGE`], and dead: a
/// start holds an `flock` on its staging directory while it lives, and the
/// kernel drops it when the process dies, so one we can lock is nobody's.
/// Inside, only a socket named `s` is removed; a directory with anything
/// else in it stays. Errors are ignored: a sweep is a courtesy.
fn sweep_staging(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let uid = nix::unistd::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.len() != STAGING_PREFIX.len() + 6 || !name.starts_with(STAGING_PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let unchanged = std::time::SystemTime::now()
            .duration_since(meta.modified().unwrap_or(std::time::SystemTime::now()))
            .unwrap_or_default();
        if !meta.is_dir()
            || meta.uid() != uid
            || meta.mode() & 0o7777 != 0o700
            || unchanged < STAGING_AGE
        {
            continue;
        }
        let _ = sweep_one(&path, &meta);
    }
}

/// [`sweep_staging`] for one candidate, `meta` its `lstat`.
fn sweep_one(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    use nix::sys::stat::{SFlag, fstatat};
    use nix::unistd::{UnlinkatFlags, unlinkat};
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(path)?;
    let opened = dir.metadata()?;
    if opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Ok(());
    }
    // Alive (its start holds it): left alone. Ours until we drop it.
    let Ok(dir) = Flock::lock(dir, FlockArg::LockExclusiveNonblock) else {
        return Ok(());
    };
    let at = Some(dir.as_raw_fd());
    if let Ok(st) = fstatat(at, STAGED, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK {
            unlinkat(at, STAGED, UnlinkatFlags::NoRemoveDir)?;
        }
    }
    fs::remove_dir(path)
}

/// A fresh private directory beside the socket path where the socket is
/// bound, given its mode and put to listen before it is published. Locked
/// (`flock`) while it exists, so that [`sweep_staging`] knows it is alive.
struct Staging {
    dir: PathBuf,
    fd: Flock<File>,
}

/// The socket's name inside the staging directory.
const STAGED: &str = "s";

impl Staging {
    fn create(path: &Path) -> io::Result<Self> {
        // A sweep that judged a new directory dead (before we locked it)
        // may remove it under us: then we make another.
        let mut last = io::Error::other("the staging directory kept being removed");
        for _ in 0..4 {
            match Self::try_create(parent_of(path)) {
                Ok(Some(staging)) => return Ok(staging),
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// `None` if the new directory was taken by a sweep.
    fn try_create(parent: &Path) -> io::Result<Option<Self>> {
        let dir = nix::unistd::mkdtemp(&parent.join(format!("{STAGING_PREFIX}XXXXXX")))?;
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
            .open(&dir);
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                return Err(e);
            }
        };
        let fd = match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
            Ok(fd) => fd,
            // A sweep holds it and is removing it.
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, errno)) => {
                let _ = fs::remove_dir(&dir);
                return Err(errno.into());
            }
        };
        // Still the directory mkdtemp made for us, not one swapped in, and
        // still at its name (a sweep may have removed it before we locked).
        let meta = fd.metadata()?;
        if !meta.is_dir()
            || meta.uid() != nix::unistd::geteuid().as_raw()
            || meta.mode() & 0o077 != 0
        {
            return Err(io::Error::other("the staging directory was replaced"));
        }
        match fs::symlink_metadata(&dir) {
            Ok(now) if now.dev() == meta.dev() && now.ino() == meta.ino() => {
                Ok(Some(Self { dir, fd }))
            }
            _ => Ok(None),
        }
    }

    /// Where to bind: the staging directory's path, or (when that would not
    /// fit in `sun_path`) the same directory through its descriptor in
    /// `/proc/self/fd`, refused with a clear error where that is missing.
    fn bind_path(&self, socket: &Path) -> Result<PathBuf, StartError> {
        let direct = self.dir.join(STAGED);
        if direct.as_os_str().len() <= socket::max_socket_path_len() {
            return Ok(direct);
        }
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        let reaches = !hook::no_proc()
            && fs::metadata(&by_fd).is_ok_and(|m| {
                self.fd
                    .metadata()
                    .is_ok_and(|ours| m.dev() == ours.dev() && m.ino() == ours.ino())
            });
        if !reaches {
            let dir = parent_of(socket);
            return Err(StartError::Bind {
                path: socket.to_owned(),
                source: io::Error::other(format!(
                    "the socket cannot be bound safely: {dir:?} is writable by others without the sticky bit, so the socket is staged in a private directory first, but {:?} ({} bytes) does not fit in sun_path ({} bytes) and /proc/self/fd, the way to bind it through a descriptor, is not available; use a shorter directory path, a directory others cannot write to (or with the sticky bit), or mount /proc",
                    direct,
                    direct.as_os_str().len(),
                    socket::max_socket_path_len(),
                )),
            });
        }
        Ok(by_fd.join(STAGED))
    }

    /// Device and inode of the bound socket, read inside the private
    /// directory without following links.
    fn identify(&self) -> io::Result<(u64, u64)> {
        use nix::sys::stat::{SFlag, fstatat};
        let st = fstatat(
            Some(self.fd.as_raw_fd()),
            STAGED,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
            return Err(io::Error::other(
                "the bound socket is not where it was bound",
            ));
        }
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// Sets the socket's mode. The entry is inside a 0700 directory of ours
    /// and was just checked to be our socket: this cannot reach another file.
    fn chmod(&self, mode: u32) -> io::Result<()> {
        use nix::sys::stat::{FchmodatFlags, Mode, fchmodat};
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let mode = Mode::from_bits_truncate(mode as nix::libc::mode_t);
        Ok(fchmodat(
            Some(self.fd.as_raw_fd()),
            STAGED,
            mode,
            FchmodatFlags::FollowSymlink,
        )?)
    }

    /// Moves the listening socket to `path`, never replacing anything.
    fn publish(&self, path: &Path) -> Result<(), StartError> {
        let dir = Some(self.fd.as_raw_fd());
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let renamed = {
            use nix::fcntl::{RenameFlags, renameat2};
            renameat2(dir, STAGED, None, path, RenameFlags::RENAME_NOREPLACE)
        };
        // No `renameat2` on other systems: the link fallback below.
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let renamed: nix::Result<()> = Err(Errno::ENOSYS);
        let moved = match renamed {
            // File systems without RENAME_NOREPLACE: link (which never
            // replaces either), then drop the staging name.
            Err(Errno::EINVAL | Errno::ENOSYS) => nix::unistd::linkat(
                dir,
                Path::new(STAGED),
                None,
                path,
                nix::fcntl::AtFlags::empty(),
            ),
            other => other,
        };
        match moved {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => match fs::symlink_metadata(path) {
                Ok(m) if !m.file_type().is_socket() => Err(StartError::NotASocket {
                    path: path.to_owned(),
                }),
                _ => Err(StartError::AddrInUse {
                    path: path.to_owned(),
                }),
            },
            Err(e) => Err(StartError::Bind {
                path: path.to_owned(),
                source: e.into(),
            }),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        use nix::unistd::{UnlinkatFlags, unlinkat};
        let _ = unlinkat(
            Some(self.fd.as_raw_fd()),
            STAGED,
            UnlinkatFlags::NoRemoveDir,
        );
        let _ = fs::remove_dir(&self.dir);
    }
}

/// The identity of the socket file this Reader created, so that stopping
/// removes that file and never a successor's.
#[derive(Debug)]
pub(crate) struct OwnedSocketFile {
    path: PathBuf,
    /// Device and inode of the socket, read from the bound socket itself.
    identity: (u64, u64),
    /// Set by [`OwnedSocketFile::remove`].
    removed: Mutex<bool>,
}

impl OwnedSocketFile {
    /// Removes the socket file if it is still the one we created, under the
    /// path's lock (taken for the check and the unlink only, and only when
    /// the path still holds our socket: a successor's is left without
    /// waiting). Safe to call more than once. An error if the lock could not
    /// be had: the socket file is left then (stale once we stop listening:
    /// the next start removes it).
    pub(crate) fn remove(&self) -> io::Result<()> {
        let mut removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        if *removed {
            return Ok(());
        }
        if !self.still_ours()? {
            *removed = true;
            return Ok(());
        }
        let _lock = PathLock::acquire(&self.path).map_err(|e| match e {
            StartError::Bind { source, .. } => source,
            other => io::Error::new(io::ErrorKind::WouldBlock, other.to_string()),
        })?;
        *removed = true;
        self.remove_locked()
    }

    /// Whether the path holds our socket.
    fn still_ours(&self) -> io::Result<bool> {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) => Ok((meta.dev(), meta.ino()) == self.identity),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// [`remove`](Self::remove) with the lock already held.
    fn remove_locked(&self) -> io::Result<()> {
        if !self.still_ours()? {
            return Ok(());
        }
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The socket path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Test-only pauses at the points where another process could act.
pub(crate) mod hook {
    /// Where a start can be paused.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) enum Point {
        /// The socket at the path was judged stale, not yet removed.
        JudgedStale,
        /// The new socket is bound, not yet listening.
        Bound,
    }

    /// What a test runs at each point.
    #[cfg(test)]
    pub(crate) type Hook = Box<dyn FnMut(Point)>;

    #[cfg(test)]
    thread_local! {
        static HOOK: std::cell::RefCell<Option<Hook>> = const { std::cell::RefCell::new(None) };
    }

    /// Installs `f` for starts on this thread.
    #[cfg(test)]
    pub(crate) fn set(f: Hook) {
        HOOK.with(|h| *h.borrow_mut() = Some(f));
    }

    #[cfg(test)]
    thread_local! {
        static NO_PROC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Makes starts on this thread act as if `/proc` were not mounted.
    #[cfg(test)]
    pub(crate) fn set_no_proc(gone: bool) {
        NO_PROC.with(|n| n.set(gone));
    }

    /// Whether a test made `/proc` unavailable to this thread's starts.
    #[inline]
    pub(crate) fn no_proc() -> bool {
        #[cfg(test)]
        return NO_PROC.with(std::cell::Cell::get);
        #[cfg(not(test))]
        false
    }

    /// Calls this thread's hook, if any (nothing outside tests).
    #[inline]
    pub(crate) fn fire(_point: Point) {
        #[cfg(test)]
        HOOK.with(|h| {
            if let Some(f) = h.borrow_mut().as_mut() {
                f(_point);
            }
        });
    }
}

#[cfg(test)]
#[path = "bind_tests.rs"]
mod tests;
