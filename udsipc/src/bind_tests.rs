//! Races over the socket file, widened deterministically: a hook stops one
//! start at the exact point where another process could act, and the test
//! acts there.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc;

use super::hook::{self, Point};
use super::*;

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("udsipc-bind")
        .tempdir()
        .unwrap()
}

/// Whether a connection to `path` reaches `listener` (and not another).
fn reaches(path: &Path, listener: &UnixListener) -> bool {
    let Ok(_client) = UnixStream::connect(path) else {
        return false;
    };
    listener.set_nonblocking(true).unwrap();
    listener.accept().is_ok()
}

/// Runs a start of `path` on another thread that stops at `point` until the
/// returned sender is used (or dropped).
fn start_paused_at(
    path: &Path,
    mode: Option<u32>,
    point: Point,
) -> (
    mpsc::Receiver<()>,
    mpsc::Sender<()>,
    std::thread::JoinHandle<Result<Bound, StartError>>,
) {
    let (at_tx, at_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let path = path.to_owned();
    let join = std::thread::spawn(move || {
        hook::set(Box::new(move |p| {
            if p == point {
                let _ = at_tx.send(());
                let _ = go_rx.recv();
            }
        }));
        listen_on(&path, mode)
    });
    (at_rx, go_tx, join)
}

#[test]
fn socket_mode_never_follows_a_symlink_swapped_in_after_bind() {
    let dir = temp_dir();
    let path = dir.path().join("s.sock");
    let victim = dir.path().join("victim");
    fs::write(&victim, b"secret").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    let (at, go, join) = start_paused_at(&path, Some(0o666), Point::Bound);
    at.recv().unwrap();
    // The attacker's move: whatever sits at the path becomes a link to a
    // file this Reader did not create.
    let _ = fs::remove_file(&path);
    symlink(&victim, &path).unwrap();
    drop(go);
    let _ = join.join().unwrap();
    let mode = fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "the victim's mode was changed to {mode:o}");
}

#[test]
fn a_stale_judgement_never_unlinks_a_newer_live_socket() {
    let dir = temp_dir();
    let path = dir.path().join("s.sock");
    // A stale socket file, as a killed reader leaves it.
    drop(UnixListener::bind(&path).unwrap());
    let (at, go, join) = start_paused_at(&path, None, Point::JudgedStale);
    at.recv().unwrap();
    // Meanwhile a newer reader starts on the same path.
    let newer = listen_on(&path, None);
    drop(go);
    let older = join.join().unwrap();
    match (older, newer) {
        (Ok(_), Ok(_)) => panic!("two live readers on one path: one is unreachable"),
        (Ok(o), Err(e)) | (Err(e), Ok(o)) => {
            assert!(matches!(e, StartError::AddrInUse { .. }), "{e}");
            assert!(
                reaches(&path, &o.listener),
                "the live reader is unreachable"
            );
        }
        (Err(a), Err(b)) => panic!("neither started: {a}; {b}"),
    }
}

#[test]
fn a_bound_socket_not_yet_listening_is_never_taken_as_stale() {
    let dir = temp_dir();
    let path = dir.path().join("s.sock");
    let (at, go, join) = start_paused_at(&path, None, Point::Bound);
    at.recv().unwrap();
    // Another start while the first has bound but not yet listened.
    let second = listen_on(&path, None);
    drop(go);
    let first = join.join().unwrap();
    match (first, second) {
        (Ok(first), Ok(second)) => {
            // Stopping the orphan must never delete the winner's socket.
            first.file.as_ref().unwrap().remove().unwrap();
            drop(first);
            assert!(
                reaches(&path, &second.listener),
                "stopping the first reader removed the second one's socket"
            );
            panic!("both started on one path");
        }
        (Ok(winner), Err(e)) | (Err(e), Ok(winner)) => {
            assert!(matches!(e, StartError::AddrInUse { .. }), "{e}");
            assert!(reaches(&path, &winner.listener));
        }
        (Err(a), Err(b)) => panic!("neither started: {a}; {b}"),
    }
}

#[test]
fn a_stopped_reader_leaves_neither_socket_nor_lock_file() {
    let dir = temp_dir();
    let path = dir.path().join("s.sock");
    let bound = listen_on(&path, Some(0o660)).unwrap();
    let mode = fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o660);
    assert!(reaches(&path, &bound.listener));
    bound.file.as_ref().unwrap().remove().unwrap();
    // A second remove is harmless.
    bound.file.as_ref().unwrap().remove().unwrap();
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn what_a_killed_reader_leaves_does_not_block_a_restart() {
    let dir = temp_dir();
    let path = dir.path().join("s.sock");
    // Dropped without a stop, as a killed process: the kernel releases
    // the lock, the socket and lock files stay.
    drop(listen_on(&path, None).unwrap());
    assert!(path.exists());
    let again = listen_on(&path, None).unwrap();
    assert!(reaches(&path, &again.listener));
}

#[test]
fn a_path_with_no_room_for_the_staging_directory_still_binds() {
    let dir = temp_dir();
    let room = crate::socket::max_socket_path_len() - dir.path().as_os_str().len() - 1;
    // The socket path fits; `<dir>/.udsipc-XXXXXX/s` would not.
    let path = dir.path().join("x".repeat(room));
    assert_eq!(path.as_os_str().len(), crate::socket::max_socket_path_len());
    let bound = listen_on(&path, Some(0o600)).unwrap();
    assert!(reaches(&path, &bound.listener));
}

#[cfg(target_os = "linux")]
#[test]
fn an_abstract_name_has_no_file_and_no_lock() {
    let name = format!("@udsipc-bind-test-{}", std::process::id());
    let bound = listen_on(Path::new(&name), Some(0o600)).unwrap();
    assert!(bound.file.is_none());
    assert!(matches!(
        listen_on(Path::new(&name), None),
        Err(StartError::Bind { .. })
    ));
}

#[test]
fn a_directory_anyone_can_write_without_the_sticky_bit_is_flagged() {
    let dir = temp_dir();
    for (mode, flagged) in [
        (0o777, true),
        (0o1777, false),
        (0o755, false),
        (0o770, false),
    ] {
        let sub = dir.path().join(format!("d{mode:o}"));
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(mode)).unwrap();
        let found = crate::replaceable_socket_dir(&sub.join("s.sock"));
        assert_eq!(found.is_some(), flagged, "mode {mode:o}");
    }
    assert_eq!(crate::replaceable_socket_dir(Path::new("@abstract")), None);
}

#[test]
fn a_file_that_happens_to_have_the_lock_name_is_kept() {
    let dir = temp_dir();
    let path = dir.path().join("s.sock");
    let lock = dir.path().join("s.sock.lock");
    fs::write(&lock, b"the application's own data").unwrap();
    let bound = listen_on(&path, None).unwrap();
    bound.file.as_ref().unwrap().remove().unwrap();
    assert_eq!(fs::read(&lock).unwrap(), b"the application's own data");
    assert!(!path.exists());
}
