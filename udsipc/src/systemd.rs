//! systemd integration: socket activation, readiness notification and
//! `RUNTIME_DIRECTORY`, as the Go reference's `SystemdManager` does it.
//!
//! This module owns the environment variables systemd sets and the two
//! kernel objects they name (the listening fd and the notify socket). It is
//! one of the crate's two rooms with `unsafe` code (the other is `sys`):
//! adopting fd 3 as an owned socket.
//!
//! The activation variables are read, never unset: unsetting them
//! (`remove_var`) is unsound while other threads may read the environment,
//! and it is not needed. The passed fds are made close-on-exec, so children
//! inherit no socket, and `LISTEN_PID` names this process, so a child that
//! inherits the variables ignores them (as libsystemd does). Within this
//! process a table records which passed fds were taken, so a second Reader
//! never adopts the same fd.
//!
//! ```
//! use std::path::Path;
//! use udsipc::systemd::SystemdEnv;
//!
//! let env = SystemdEnv::from_vars([("RUNTIME_DIRECTORY", "/run/app")]);
//! assert!(env.is_systemd());
//! assert_eq!(env.resolve_socket_path(Path::new("/tmp/app.sock")), Path::new("/run/app/app.sock"));
//! ```

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use crate::error::SystemdError;
use crate::socket::SocketAddress;

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The systemd-related environment, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemdEnv {
    /// `RUNTIME_DIRECTORY` (first entry if systemd lists several).
    pub runtime_directory: Option<PathBuf>,
    /// `STATE_DIRECTORY`.
    pub state_directory: Option<PathBuf>,
    /// `LISTEN_FDS`.
    pub listen_fds: Option<String>,
    /// `LISTEN_PID`.
    pub listen_pid: Option<String>,
    /// `LISTEN_FDNAMES`.
    pub listen_fdnames: Option<String>,
    /// `NOTIFY_SOCKET`.
    pub notify_socket: Option<String>,
}

impl SystemdEnv {
    /// Reads the process environment. Empty variables count as unset.
    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))))
    }

    /// Builds from explicit `(name, value)` pairs (for tests and embedding).
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<str>,
        V: Into<OsString>,
    {
        let mut env = Self::default();
        for (k, v) in vars {
            let v: OsString = v.into();
            if v.is_empty() {
                continue;
            }
            let text = || v.to_string_lossy().into_owned();
            match k.as_ref() {
                "RUNTIME_DIRECTORY" => {
                    // systemd joins several RuntimeDirectory= entries with ':'.
                    let first = text().split(':').next().unwrap_or_default().to_owned();
                    env.runtime_directory = Some(PathBuf::from(first));
                }
                "STATE_DIRECTORY" => env.state_directory = Some(PathBuf::from(&v)),
                "LISTEN_FDS" => env.listen_fds = Some(text()),
                "LISTEN_PID" => env.listen_pid = Some(text()),
                "LISTEN_FDNAMES" => env.listen_fdnames = Some(text()),
                "NOTIFY_SOCKET" => env.notify_socket = Some(text()),
                _ => {}
            }
        }
        env
    }

    /// Whether the process runs under systemd, by the Go reference's rule:
    /// any of `RUNTIME_DIRECTORY`, `LISTEN_FDS` or `NOTIFY_SOCKET` is set.
    pub fn is_systemd(&self) -> bool {
        self.runtime_directory.is_some()
            || self.listen_fds.is_some()
            || self.notify_socket.is_some()
    }

    /// The socket path to use: `RUNTIME_DIRECTORY/<file name of fallback>`
    /// under systemd with a runtime directory, else `fallback` (Go's
    /// `ResolveSocketPath`).
    pub fn resolve_socket_path(&self, fallback: &Path) -> PathBuf {
        match (&self.runtime_directory, fallback.file_name()) {
            (Some(dir), Some(name)) if self.is_systemd() => dir.join(name),
            _ => fallback.to_owned(),
        }
    }

    /// The sockets passed to this process by socket activation, with their
    /// `LISTEN_FDNAMES` names (empty when unnamed), from fd 3 on.
    ///
    /// `Ok(None)` when nothing was passed to *this* process: `LISTEN_FDS` is
    /// unset, or `LISTEN_PID` is unset (as libsystemd's `sd_listen_fds`
    /// decides; Go accepts a missing `LISTEN_PID`, which lets a stale
    /// inherited `LISTEN_FDS` adopt an unrelated fd 3).
    pub fn passed_fds(&self) -> Result<Option<Vec<(RawFd, String)>>, SystemdError> {
        let (Some(fds), Some(pid)) = (&self.listen_fds, &self.listen_pid) else {
            return Ok(None);
        };
        let listen_pid: u32 = pid
            .trim()
            .parse()
            .map_err(|_| SystemdError::InvalidListenPid(pid.clone()))?;
        let me = std::process::id();
        if listen_pid != me {
            return Err(SystemdError::ListenPidMismatch {
                listen_pid,
                pid: me,
            });
        }
        let count: usize = fds
            .trim()
            .parse()
            .map_err(|_| SystemdError::InvalidListenFds(fds.clone()))?;
        let names = self.listen_fdnames.clone().unwrap_or_default();
        let mut names = names.split(':');
        Ok(Some(
            (0..count)
                .map(|i| {
                    let name = names.next().unwrap_or_default().to_owned();
                    (LISTEN_FDS_START + i as RawFd, name)
                })
                .collect(),
        ))
    }
}

/// The passed fds that Readers of this process took; `None` until the
/// first Reader looked at what was passed.
static TAKEN: Mutex<Option<Vec<RawFd>>> = Mutex::new(None);

/// Which of the `passed` sockets a Reader gets: the one named `name`, or
/// with no name the only one passed (`Ok(None)` once it is `taken`: the
/// Reader then binds its own path, as Go's second Reader does).
fn select(
    passed: &[(RawFd, String)],
    taken: &[RawFd],
    name: Option<&str>,
) -> Result<Option<RawFd>, SystemdError> {
    match name {
        None if passed.len() == 1 => Ok(Some(passed[0].0).filter(|fd| !taken.contains(fd))),
        None => Err(SystemdError::FdCount(passed.len())),
        Some(name) => {
            let (fd, _) =
                passed
                    .iter()
                    .find(|(_, n)| n == name)
                    .ok_or_else(|| SystemdError::NoSuchName {
                        name: name.to_owned(),
                        names: passed
                            .iter()
                            .map(|(_, n)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(":"),
                    })?;
            if taken.contains(fd) {
                return Err(SystemdError::AlreadyTaken(*fd));
            }
            Ok(Some(*fd))
        }
    }
}

/// Takes ownership of a socket systemd passed (if any), checks that it is a
/// listening Unix stream socket and returns it non-blocking.
///
/// The first call marks every passed fd close-on-exec, so that children
/// inherit none of them; the variables stay as they are (a child sees a
/// `LISTEN_PID` that is not its own and ignores them).
pub(crate) fn take_activation_listener(
    env: &SystemdEnv,
    name: Option<&str>,
) -> Result<Option<UnixListener>, SystemdError> {
    let Some(passed) = env.passed_fds()? else {
        return Ok(None);
    };
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    let taken = taken.get_or_insert_with(|| {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        for (fd, _) in &passed {
            let _ = fcntl(*fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        }
        Vec::new()
    });
    let Some(fd) = select(&passed, taken, name)? else {
        return Ok(None);
    };
    let not_a_listener = |why: String| SystemdError::NotAListener { fd, why };
    // Check before owning: fstat fails on a closed fd, and only an open
    // file is adopted.
    nix::sys::stat::fstat(fd).map_err(|e| not_a_listener(e.to_string()))?;
    // SAFETY: `fd` is open (fstat succeeded) and was passed by the launcher
    // to this very process (LISTEN_PID matched our pid; the number
    // comes from LISTEN_FDS). By the socket-activation protocol the passed
    // fds belong to whoever consumes them, and the TAKEN table, held locked
    // here, hands each fd out at most once, so nothing else owns it.
    #[allow(unsafe_code)]
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Err(why) = check_listener(&owned) {
        // Not ours to close: hand the fd back untouched.
        let _ = owned.into_raw_fd();
        return Err(not_a_listener(why));
    }
    taken.push(fd);
    let listener = UnixListener::from(owned);
    listener
        .set_nonblocking(true)
        .map_err(|e| not_a_listener(e.to_string()))?;
    Ok(Some(listener))
}

fn check_listener(fd: &OwnedFd) -> Result<(), String> {
    use nix::sys::socket::{SockType, UnixAddr, getsockname, getsockopt, sockopt};
    // Fails on anything but a socket.
    let ty = getsockopt(fd, sockopt::SockType).map_err(|e| e.to_string())?;
    if ty != SockType::Stream {
        return Err(format!("socket type is {ty:?}, not a stream"));
    }
    if !getsockopt(fd, sockopt::AcceptConn).map_err(|e| e.to_string())? {
        return Err("socket is not listening".into());
    }
    // Fails on a socket of another family.
    getsockname::<UnixAddr>(fd.as_raw_fd()).map_err(|e| format!("not a Unix socket: {e}"))?;
    Ok(())
}

/// A connection to systemd's notify socket (`NOTIFY_SOCKET`), path or
/// abstract (`@name`).
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
}

impl Notifier {
    /// Connects to `addr` (a path, or `@name` for an abstract socket).
    pub fn connect(addr: &str) -> Result<Self, SystemdError> {
        let err = |source| SystemdError::Notify {
            addr: addr.to_owned(),
            source,
        };
        let to = SocketAddress::parse(Path::new(addr))
            .map_err(io::Error::other)
            .and_then(|a| a.std_addr())
            .map_err(err)?;
        let socket = UnixDatagram::unbound().map_err(err)?;
        socket.connect_addr(&to).map_err(err)?;
        Ok(Self { socket })
    }

    /// Connects to `NOTIFY_SOCKET` if the environment names one.
    pub fn from_env(env: &SystemdEnv) -> Result<Option<Self>, SystemdError> {
        env.notify_socket.as_deref().map(Self::connect).transpose()
    }

    /// Sends one notification: `"READY=1"`, `"STOPPING=1"`,
    /// `"STATUS=<text>"` or any other `sd_notify` assignment.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.socket.send(state.as_bytes()).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_systemd_without_its_variables() {
        let env = SystemdEnv::from_vars([("STATE_DIRECTORY", "/var/lib/x")]);
        assert!(!env.is_systemd());
        assert_eq!(
            env.resolve_socket_path(Path::new("/tmp/a.sock")),
            Path::new("/tmp/a.sock")
        );
    }

    #[test]
    fn runtime_directory_takes_first_entry_and_base_name() {
        let env = SystemdEnv::from_vars([("RUNTIME_DIRECTORY", "/run/a:/run/b")]);
        assert_eq!(
            env.resolve_socket_path(Path::new("/somewhere/else/app.sock")),
            Path::new("/run/a/app.sock")
        );
    }

    #[test]
    fn notify_only_does_not_move_the_socket() {
        let env = SystemdEnv::from_vars([("NOTIFY_SOCKET", "/run/systemd/notify")]);
        assert!(env.is_systemd());
        assert_eq!(
            env.resolve_socket_path(Path::new("/tmp/a.sock")),
            Path::new("/tmp/a.sock")
        );
    }

    #[test]
    fn passed_fds_rules() {
        let me = std::process::id().to_string();
        let env = SystemdEnv::from_vars([("LISTEN_FDS", "1"), ("LISTEN_PID", me.as_str())]);
        assert_eq!(env.passed_fds().unwrap(), Some(vec![(3, String::new())]));
        let named = SystemdEnv::from_vars([
            ("LISTEN_FDS", "2"),
            ("LISTEN_PID", me.as_str()),
            ("LISTEN_FDNAMES", "a:b"),
        ]);
        assert_eq!(
            named.passed_fds().unwrap(),
            Some(vec![(3, "a".into()), (4, "b".into())])
        );
        if std::process::id() != 1 {
            let other = SystemdEnv::from_vars([("LISTEN_FDS", "1"), ("LISTEN_PID", "1")]);
            assert!(matches!(
                other.passed_fds(),
                Err(SystemdError::ListenPidMismatch { .. })
            ));
        }
        let bad = SystemdEnv::from_vars([("LISTEN_FDS", "x"), ("LISTEN_PID", me.as_str())]);
        assert!(matches!(
            bad.passed_fds(),
            Err(SystemdError::InvalidListenFds(_))
        ));
        let badpid = SystemdEnv::from_vars([("LISTEN_FDS", "1"), ("LISTEN_PID", "abc")]);
        assert!(matches!(
            badpid.passed_fds(),
            Err(SystemdError::InvalidListenPid(_))
        ));
        let no_pid = SystemdEnv::from_vars([("LISTEN_FDS", "1")]);
        assert_eq!(
            no_pid.passed_fds().unwrap(),
            None,
            "not passed to this process"
        );
        assert_eq!(SystemdEnv::default().passed_fds().unwrap(), None);
    }

    #[test]
    fn selection_by_name_and_by_uniqueness() {
        let one = [(3, String::new())];
        assert_eq!(select(&one, &[], None).unwrap(), Some(3));
        assert_eq!(select(&one, &[3], None).unwrap(), None);
        let two = [(3, "a".to_owned()), (4, "b".to_owned())];
        assert!(matches!(
            select(&two, &[4], None),
            Err(SystemdError::FdCount(2))
        ));
        assert_eq!(select(&two, &[4], Some("a")).unwrap(), Some(3));
        assert!(matches!(
            select(&two, &[4], Some("b")),
            Err(SystemdError::AlreadyTaken(4))
        ));
        assert!(matches!(
            select(&two, &[4], Some("c")),
            Err(SystemdError::NoSuchName { .. })
        ));
    }
}
