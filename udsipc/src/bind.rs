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
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, Flock, FlockArg};
use nix::sys::socket::{Backlog, UnixAddr, bind, listen};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, fchmodat, fstatat};

use crate::error::StartError;
use crate::socket::{self, SocketAddress, parent_of};

/// A listening socket and, for a path, the file it owns.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) listener: UnixListener,
    pub(crate) file: Option<OwnedSocketFile>,
}

/// Binds and listens on `name` (a path or an abstract name) as described in
/// the module docs, first creating a path's directory if it is missing
/// (mode 0750, like Go's `EnsureSocketDir`); with `mode`, the socket file
/// gets that mode before any peer can reach it.
pub(crate) fn listen_on(name: &Path, mode: Option<u32>) -> Result<Bound, StartError> {
    let path = match SocketAddress::parse(name)? {
        SocketAddress::Path(path) => path,
        address => {
            let listener = address
                .std_addr()
                .and_then(|addr| UnixListener::bind_addr(&addr))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(bind_error(name))?;
            return Ok(Bound {
                listener,
                file: None,
            });
        }
    };
    let parent = parent_of(&path);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(parent)
        .map_err(|source| StartError::CreateDir {
            dir: parent.to_owned(),
            source,
        })?;
    let replaceable = socket::replaceable_socket_dir(&path);
    if let Some(dir) = &replaceable {
        tracing::warn!(
            dir = %dir.display(),
            "the socket's directory is writable by others and has no sticky bit: anyone can replace the socket"
        );
    }
    // Released (its file removed) when this returns, however it returns.
    let _lock = PathLock::acquire(&path)?;
    sweep_staging(parent);
    clear_stale(&path)?;
    let staged_fits =
        parent.join(STAGING_EXAMPLE).as_os_str().len() <= socket::max_socket_path_len();
    let staging = if staged_fits || replaceable.is_some() {
        Some(Staging::create(parent).map_err(bind_error(&path))?)
    } else {
        None
    };
    bind_listening(&path, staging.as_ref(), mode).map_err(|e| match e.kind() {
        // `bind` or the publishing found something at the path.
        io::ErrorKind::AddrInUse | io::ErrorKind::AlreadyExists => taken(&path),
        _ => bind_error(&path)(e),
    })
}

/// The error for an IO failure while taking `path`.
fn bind_error(path: &Path) -> impl Fn(io::Error) -> StartError + use<> {
    let path = path.to_owned();
    move |source| StartError::Bind {
        path: path.clone(),
        source,
    }
}

/// Binds a new socket, reads its identity, gives it `mode` and puts it to
/// listen (called with the lock held): inside `staging`, then published at
/// `path`; without one (a path whose staging name would not fit in
/// `sun_path`, in a directory others cannot replace files in) directly at
/// `path`, as Go does: `bind` never replaces a file, and the socket is
/// removed again if a later step fails.
fn bind_listening(path: &Path, staging: Option<&Staging>, mode: Option<u32>) -> io::Result<Bound> {
    let fd = socket::stream_socket()?;
    let (dir, name, at) = match staging {
        Some(staging) => (
            Some(staging.fd.as_raw_fd()),
            Path::new(STAGED),
            staging.bind_path(path)?,
        ),
        None => (None, path, path.to_owned()),
    };
    bind(fd.as_raw_fd(), &UnixAddr::new(&at)?)?;
    #[cfg(test)]
    hook::fire(hook::Point::Bound);
    let file = OwnedSocketFile {
        path: path.to_owned(),
        identity: identify(dir, name)?,
        removed: Mutex::new(false),
    };
    let finish = || -> io::Result<()> {
        if let Some(mode) = mode {
            chmod_socket(dir, name, file.identity, mode)?;
        }
        listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))?;
        staging.map_or(Ok(()), |staging| staging.publish(path))
    };
    if let Err(e) = finish() {
        if staging.is_none() {
            // The lock is ours: remove the socket we made, if it is still ours.
            let _ = file.remove_locked();
        }
        return Err(e);
    }
    Ok(Bound {
        listener: UnixListener::from(fd),
        file: Some(file),
    })
}

/// Device and inode of the socket `name` in `dir` (`None`: the working
/// directory), read without following a link.
fn identify(dir: Option<RawFd>, name: &Path) -> io::Result<(u64, u64)> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(io::Error::other(
            "the bound socket is not where it was bound",
        ));
    }
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// Sets the mode of the socket `name` in `dir` that has `identity`, without
/// following a link where the system can (`fchmodat2`); elsewhere after
/// checking the name still holds that socket (it is in a directory others
/// cannot replace files in, see [`bind_listening`]).
fn chmod_socket(
    dir: Option<RawFd>,
    name: &Path,
    identity: (u64, u64),
    mode: u32,
) -> io::Result<()> {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let bits = Mode::from_bits_truncate(mode as nix::libc::mode_t);
    match fchmodat(dir, name, bits, FchmodatFlags::NoFollowSymlink) {
        Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => {}
        other => return Ok(other?),
    }
    if identify(dir, name)? != identity {
        return Err(io::Error::other(
            "the bound socket was replaced before its mode was set",
        ));
    }
    Ok(fchmodat(dir, name, bits, FchmodatFlags::FollowSymlink)?)
}

/// The error for a path taken by someone else while we held the lock.
fn taken(path: &Path) -> StartError {
    let path = path.to_owned();
    match fs::symlink_metadata(&path) {
        Ok(m) if !m.file_type().is_socket() => StartError::NotASocket { path },
        _ => StartError::AddrInUse { path },
    }
}

/// Device and inode: what identifies a file.
fn id(meta: &fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// Removes the file at `path`; one already gone is fine.
fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes `path` free to publish on (called with the lock held):
/// - nothing there: fine;
/// - not a socket: refused, left untouched;
/// - a socket with a live listener: refused (address in use);
/// - a stale socket (connection refused): removed.
fn clear_stale(path: &Path) -> Result<(), StartError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(bind_error(path)(e)),
        Ok(meta) if !meta.file_type().is_socket() => return Err(taken(path)),
        Ok(_) => {}
    }
    match socket::is_live(path) {
        Ok(true) => Err(taken(path)),
        Ok(false) => {
            #[cfg(test)]
            hook::fire(hook::Point::JudgedStale);
            remove_if_there(path).map_err(|source| StartError::RemoveStale {
                path: path.to_owned(),
                source,
            })
        }
        Err(source) => Err(bind_error(path)(source)),
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
        let error = bind_error(&path);
        let held = |owner: Option<u32>, source: Option<io::Error>| match socket::is_live(socket) {
            Ok(true) => StartError::AddrInUse {
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
            let meta = file.metadata().map_err(&error)?;
            if !meta.is_file() {
                return Err(error(io::Error::other(
                    "the lock file is not a regular file",
                )));
            }
            if let Some(lock) = try_lock(file, &path).map_err(&error)? {
                return Ok(Self { path, lock });
            }
            if Instant::now() >= deadline {
                return Err(held(Some(meta.uid()), None));
            }
            std::thread::sleep(Duration::from_millis(5));
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
        if fs::symlink_metadata(&self.path).is_ok_and(|now| id(&now) == id(&ours)) {
            let _ = fs::remove_file(&self.path);
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
        let unchanged = meta.modified().ok().and_then(|m| m.elapsed().ok());
        if !meta.is_dir()
            || meta.uid() != uid
            || meta.mode() & 0o7777 != 0o700
            || unchanged.unwrap_or_default() < STAGING_AGE
        {
            continue;
        }
        // Alive (its start holds it): left alone. Ours until dropped.
        if let Ok(Some(fd)) = lock_dir(&path) {
            if fd.metadata().is_ok_and(|opened| id(&opened) == id(&meta)) {
                drop(Staging { dir: path, fd });
            }
        }
    }
}

/// Opens the directory at `path` (never through a link) and takes its lock
/// as [`try_lock`] does.
fn lock_dir(path: &Path) -> io::Result<Option<Flock<File>>> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(path)?;
    try_lock(dir, path)
}

/// Takes the lock (`flock`) of `file`, opened at `path`, without waiting:
/// `None` if another process holds it, or if once locked `path` no longer
/// holds this file. (A holder removes the file when it is done: if it did
/// so between our open and our lock, we hold a lock on a file nobody else
/// can see; the caller tries again with the one at the path now.)
fn try_lock(file: File, path: &Path) -> io::Result<Option<Flock<File>>> {
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(file) => file,
        Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
        Err((_, errno)) => return Err(errno.into()),
    };
    let ours = id(&file.metadata()?);
    Ok(fs::symlink_metadata(path)
        .is_ok_and(|now| id(&now) == ours)
        .then_some(file))
}

/// A fresh private directory beside the socket path where the socket is
/// bound, given its mode and put to listen before it is published. Locked
/// (`flock`) while it exists, so that [`sweep_staging`] knows it is alive.
/// Dropping it removes the socket `s` in it, if there, and the directory.
struct Staging {
    dir: PathBuf,
    fd: Flock<File>,
}

/// The socket's name inside the staging directory.
const STAGED: &str = "s";

impl Staging {
    /// Makes and locks the directory. A sweep never takes a directory this
    /// young (see [`STAGING_AGE`]), so the lock is free.
    fn create(parent: &Path) -> io::Result<Self> {
        let dir = nix::unistd::mkdtemp(&parent.join(format!("{STAGING_PREFIX}XXXXXX")))?;
        let busy = || io::Error::other("the new staging directory is locked by another process");
        let fd = lock_dir(&dir)
            .and_then(|fd| fd.ok_or_else(busy))
            .inspect_err(|_| {
                let _ = fs::remove_dir(&dir);
            })?;
        // Still the directory mkdtemp made for us, not one swapped in.
        let meta = fd.metadata()?;
        if meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o077 != 0 {
            return Err(io::Error::other("the staging directory was replaced"));
        }
        Ok(Self { dir, fd })
    }

    /// Where to bind: the staging directory's path, or (when that would not
    /// fit in `sun_path`) the same directory through its descriptor in
    /// `/proc/self/fd`, refused with a clear error where that is missing.
    fn bind_path(&self, socket: &Path) -> io::Result<PathBuf> {
        let direct = self.dir.join(STAGED);
        let max = socket::max_socket_path_len();
        if direct.as_os_str().len() <= max {
            return Ok(direct);
        }
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        let reaches = fs::metadata(&by_fd)
            .is_ok_and(|m| self.fd.metadata().is_ok_and(|ours| id(&m) == id(&ours)));
        #[cfg(test)]
        let reaches = reaches && !hook::no_proc();
        if !reaches {
            return Err(io::Error::other(format!(
                "the socket cannot be bound safely: {:?} is writable by others without the sticky bit, so the socket is staged in a private directory first, but {direct:?} ({} bytes) does not fit in sun_path ({max} bytes) and /proc/self/fd, the way to bind it through a descriptor, is not available; use a shorter directory path, a directory others cannot write to (or with the sticky bit), or mount /proc",
                parent_of(socket),
                direct.as_os_str().len(),
            )));
        }
        Ok(by_fd.join(STAGED))
    }

    /// Moves the listening socket to `path`, never replacing anything.
    fn publish(&self, path: &Path) -> io::Result<()> {
        let dir = Some(self.fd.as_raw_fd());
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let renamed = {
            use nix::fcntl::{RenameFlags, renameat2};
            renameat2(dir, STAGED, None, path, RenameFlags::RENAME_NOREPLACE)
        };
        // No `renameat2` on other systems: the link fallback below.
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let renamed: nix::Result<()> = Err(Errno::ENOSYS);
        match renamed {
            // File systems without RENAME_NOREPLACE: link (which never
            // replaces either); dropping the staging removes its name.
            Err(Errno::EINVAL | Errno::ENOSYS) => Ok(nix::unistd::linkat(
                dir,
                Path::new(STAGED),
                None,
                path,
                AtFlags::empty(),
            )?),
            other => Ok(other?),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        use nix::unistd::{UnlinkatFlags, unlinkat};
        let dir = Some(self.fd.as_raw_fd());
        if identify(dir, Path::new(STAGED)).is_ok() {
            let _ = unlinkat(dir, STAGED, UnlinkatFlags::NoRemoveDir);
        }
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
            Ok(meta) => Ok(id(&meta) == self.identity),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// [`remove`](Self::remove) with the lock already held.
    fn remove_locked(&self) -> io::Result<()> {
        if !self.still_ours()? {
            return Ok(());
        }
        remove_if_there(&self.path)
    }
}

/// Test-only pauses at the points where another process could act.
#[cfg(test)]
pub(crate) mod hook {
    /// Where a start can be paused.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Point {
        /// The socket at the path was judged stale, not yet removed.
        JudgedStale,
        /// The new socket is bound, not yet listening.
        Bound,
    }

    /// What a test runs at each point.
    pub(crate) type Hook = Box<dyn FnMut(Point)>;

    thread_local! {
        static HOOK: std::cell::RefCell<Option<Hook>> = const { std::cell::RefCell::new(None) };
        static NO_PROC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Installs `f` for starts on this thread.
    pub(crate) fn set(f: Hook) {
        HOOK.with(|h| *h.borrow_mut() = Some(f));
    }

    /// Makes starts on this thread act as if `/proc` were not mounted.
    pub(crate) fn set_no_proc(gone: bool) {
        NO_PROC.with(|n| n.set(gone));
    }

    /// Whether a test made `/proc` unavailable to this thread's starts.
    pub(crate) fn no_proc() -> bool {
        NO_PROC.with(std::cell::Cell::get)
    }

    /// Calls this thread's hook, if any.
    pub(crate) fn fire(point: Point) {
        HOOK.with(|h| {
            if let Some(f) = h.borrow_mut().as_mut() {
                f(point);
            }
        });
    }
}

#[cfg(test)]
#[path = "bind_tests.rs"]
mod tests;
