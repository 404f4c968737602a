//! The listening side of a [`super::FaultProxy`]: binding its socket
//! without ever blocking (a live listener's full backlog must not hang
//! start-up), accepting with a back-off on errors (a process out of file
//! descriptors must not spin a core), connecting each client to the
//! upstream, outages, and the proxy's stop.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::conn::{self, Reason};
use super::events::FaultEvent;
use super::{Control, Shared, lock};

/// How long the proxy waits to connect to the upstream for a new client.
const UPSTREAM_CONNECT: Duration = Duration::from_secs(5);

/// The first pause after a failed accept; it doubles up to
/// [`ACCEPT_BACKOFF_MAX`] and resets after a success (as Go's net/http).
pub(crate) const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest pause after failed accepts.
pub(crate) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What a connection attempt says about the socket at a path.
enum Probe {
    /// Someone accepts (or their backlog is full: `EAGAIN`).
    Live,
    /// Connection refused (nobody listens), or the file just vanished.
    Stale,
    /// Could not tell (e.g. no permission to connect).
    Unknown(io::Error),
}

/// Connects without blocking: a blocking connect to a listener whose
/// backlog is full would wait forever, inside async code.
fn probe(path: &Path) -> Probe {
    use nix::errno::Errno;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    let attempt = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .and_then(|fd| {
        let addr = UnixAddr::new(path)?;
        connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)
    });
    match attempt {
        Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINPROGRESS) => Probe::Live,
        Err(Errno::ECONNREFUSED) | Err(Errno::ENOENT) => Probe::Stale,
        Err(e) => Probe::Unknown(e.into()),
    }
}

/// Binds `path`, replacing a stale socket file; refuses a path that is not
/// a socket or on which something listens. Never blocks.
pub(crate) fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; not touching it",
                    path.display()
                ),
            ));
        }
        Ok(_) => match probe(path) {
            Probe::Live => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("address in use: something listens on {}", path.display()),
                ));
            }
            Probe::Stale => match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            },
            Probe::Unknown(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot tell whether {} is in use: {e}", path.display()),
                ));
            }
        },
        Err(_) => {}
    }
    UnixListener::bind(path)
}

/// Which file a path named when we bound it: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The socket file at `path` now (not following a symlink).
    pub(crate) fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        meta.file_type().is_socket().then(|| Self {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// Sets the mode of the socket file we bound at `path` (`ours`), never of
/// a file put there since: the file is opened without following a link
/// (`O_PATH | O_NOFOLLOW`), checked to be our socket, and changed through
/// that handle (`/proc/self/fd`), so a symlink swapped in cannot redirect
/// the change. Without `/proc`, the path is checked, then changed.
pub(crate) fn chmod_ours(path: &Path, ours: Option<FileId>, mode: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let not_ours = || {
        io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} changed while it was being set up", path.display()),
        )
    };
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_PATH | nix::libc::O_NOFOLLOW)
        .open(path)?;
    let meta = handle.metadata()?;
    let id = meta.file_type().is_socket().then(|| FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    });
    if id.is_none() || id != ours {
        return Err(not_ours());
    }
    let permissions = std::fs::Permissions::from_mode(mode);
    let through = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    match std::fs::set_permissions(&through, permissions.clone()) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if FileId::of(path) != ours {
                return Err(not_ours());
            }
            std::fs::set_permissions(path, permissions)
        }
        done => done,
    }
}

/// Removes the socket file at `path` only if it is still the one we bound
/// (same device and inode): a file someone put there since, or a
/// successor's socket, is left alone.
pub(crate) fn remove_if_ours(path: &Path, ours: Option<FileId>) {
    if ours.is_some() && FileId::of(path) == ours {
        let _ = std::fs::remove_file(path);
    }
}

/// Connects a freshly accepted client to the upstream and serves it; if the
/// upstream cannot be reached, closes the client at once and logs why.
async fn connect_and_serve(
    shared: Arc<Shared>,
    conn: u64,
    client: UnixStream,
    upstream: PathBuf,
    outages_at_accept: u64,
) {
    // Bounded: an upstream whose backlog is full would hold this task (and
    // the proxy's stop) forever.
    let connect = tokio::time::timeout(UPSTREAM_CONNECT, UnixStream::connect(&upstream)).await;
    let up = match connect {
        Ok(Ok(up)) => up,
        Ok(Err(e)) => return unreachable(&shared, conn, client, &upstream, &e.to_string()),
        Err(_) => {
            let why = format!("no answer within {} s", UPSTREAM_CONNECT.as_secs());
            return unreachable(&shared, conn, client, &upstream, &why);
        }
    };
    let phase = conn::new_phase();
    lock(&shared.conns).insert(conn, phase.clone());
    // Accepted just before a stop or an outage, registered after it closed
    // everything: close it too.
    if shared.stopping.load(Ordering::SeqCst) {
        conn::close(&phase, true, true, Reason::Stop);
    } else if shared.outages.load(Ordering::SeqCst) != outages_at_accept {
        conn::close(&phase, true, true, Reason::Outage);
    }
    conn::serve(shared.clone(), conn, client, up, phase).await;
    lock(&shared.conns).remove(&conn);
}

fn unreachable(shared: &Shared, conn: u64, client: UnixStream, upstream: &Path, why: &str) {
    shared.upstream_unreachable.fetch_add(1, Ordering::Relaxed);
    // Shut for reading first: the client's next write fails, and what it
    // had already sent is counted, then the close ends its reads.
    let discarded = conn::shut_and_count(&client);
    let _ = client
        .into_std()
        .map(|s| s.shutdown(std::net::Shutdown::Both));
    let mut event = FaultEvent::new("upstream-unreachable", shared.start.elapsed(), conn);
    event.detail = format!(
        "cannot connect to {}: {why}; client closed",
        upstream.display()
    );
    event.discarded_bytes = discarded;
    event.in_flight_bytes = discarded;
    event.closed_connection = true;
    shared.log.push(event);
}

pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    listener: UnixListener,
    listen: PathBuf,
    upstream: PathBuf,
    mut control: mpsc::UnboundedReceiver<Control>,
    id: Option<FileId>,
) {
    let mut listener = Some(listener);
    let mut id = id;
    // The outage going on now (0: none, or one nobody can end early).
    let mut current_outage = 0;
    let mut back_at: Option<Instant> = None;
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut tasks = JoinSet::new();
    let mut next_conn = 1u64;
    loop {
        tokio::select! {
            accepted = accept(listener.as_ref()) => {
                let client = match accepted {
                    Ok(client) => {
                        backoff = ACCEPT_BACKOFF_MIN;
                        client
                    }
                    Err(e) => {
                        let mut event = FaultEvent::new("accept-error", shared.start.elapsed(), 0);
                        event.detail = format!("accept failed ({e}); retrying in {} ms", backoff.as_millis());
                        shared.log.push(event);
                        // Pause, but stay responsive to stop and outages.
                        let pause = tokio::time::sleep(backoff);
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                        tokio::pin!(pause);
                        // A connection ending frees descriptors: try again then.
                        tokio::select! {
                            () = &mut pause => {}
                            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                        }
                        continue;
                    }
                };
                let conn = next_conn;
                next_conn += 1;
                shared.connections.fetch_add(1, Ordering::Relaxed);
                let outages_at_accept = shared.outages.load(Ordering::SeqCst);
                tasks.spawn(connect_and_serve(
                    shared.clone(),
                    conn,
                    client,
                    upstream.clone(),
                    outages_at_accept,
                ));
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            ctl = control.recv() => match ctl {
                Some(Control::Outage(outage, outage_id)) => {
                    current_outage = outage_id;
                    if listener.take().is_some() {
                        remove_if_ours(&listen, id);
                    }
                    if outage.cut_connections {
                        shared.outages.fetch_add(1, Ordering::SeqCst);
                        shared.close_all(Reason::Outage);
                    }
                    let mut event = FaultEvent::new("refuse", shared.start.elapsed(), 0);
                    event.detail = match outage.duration {
                        Some(d) => format!(
                            "listener removed for {} ms{}",
                            d.as_millis(),
                            if outage.cut_connections { ", open connections cut" } else { "" }
                        ),
                        None => "listener removed until enabled again, open connections cut".to_owned(),
                    };
                    shared.log.push(event);
                    back_at = outage.duration.map(|d| Instant::now() + d);
                }
                Some(Control::Resume) => {
                    if listener.is_none() {
                        back_at = Some(Instant::now());
                    }
                }
                Some(Control::EndOutage(outage_id)) => {
                    if listener.is_none() && outage_id != 0 && outage_id == current_outage {
                        back_at = Some(Instant::now());
                    }
                }
                Some(Control::Stop) | None => break,
            },
            () = sleep_until(back_at) => {
                back_at = None;
                current_outage = 0;
                match bind(&listen) {
                    Ok(l) => {
                        id = FileId::of(&listen);
                        listener = Some(l);
                        let mut event = FaultEvent::new("refuse", shared.start.elapsed(), 0);
                        event.detail = "listener back".to_owned();
                        shared.log.push(event);
                    }
                    Err(e) => {
                        let mut event = FaultEvent::new("refuse", shared.start.elapsed(), 0);
                        event.detail = format!("could not listen again after an outage: {e}");
                        shared.log.push(event);
                        tracing::warn!(error = %e, "could not listen again after an outage");
                    }
                }
            }
        }
    }
    drop(listener);
    remove_if_ours(&listen, id);
    shared.stopping.store(true, Ordering::SeqCst);
    shared.close_all(Reason::Stop);
    while tasks.join_next().await.is_some() {}
}

async fn accept(listener: Option<&UnixListener>) -> io::Result<UnixStream> {
    match listener {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn chmod_ours_changes_our_socket_and_nothing_a_link_points_at() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let _ours = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let id = FileId::of(&path);
        chmod_ours(&path, id, 0o600).unwrap();
        assert_eq!(mode(&path), 0o600);
        // Someone swaps in a link to a file of theirs: refused, untouched.
        let other = dir.path().join("other");
        std::fs::write(&other, b"x").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&other, &path).unwrap();
        assert!(chmod_ours(&path, id, 0o666).is_err());
        assert_eq!(mode(&other), 0o644);
        // Another socket at the path: not ours either.
        std::fs::remove_file(&path).unwrap();
        let _theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let before = mode(&path);
        assert!(chmod_ours(&path, id, 0o666).is_err());
        assert_eq!(mode(&path), before);
    }
}
