//! Races over the socket file, widened deterministically: a hook stops one
//! start at the exact point where another process could act, and the test
//! acts there.

use std::fs;
use std::os::fd::AsRawFd;
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

/// How a start is refused while another start holds the path: it waited
/// for the lock and found the other live, or was still waiting (the other
/// one paused by a test) and says the lock is held.
fn refused_as_taken(e: &StartError) -> bool {
    matches!(
        e,
        StartError::AddrInUse { .. } | StartError::LockHeld { source: None, .. }
    )
}

fn lock_file(path: &Path) -> std::path::PathBuf {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    lock.into()
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
            assert!(refused_as_taken(&e), "{e}");
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
            assert!(refused_as_taken(&e), "{e}");
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

/// Issue 24, item 7: a refused start left `<path>.lock` behind.
#[test]
fn a_refused_start_leaves_no_lock_file() {
    let dir = temp_dir();
    let path = dir.path().join("s.sock");
    fs::write(&path, b"not a socket").unwrap();
    let err = listen_on(&path, None).unwrap_err();
    assert!(matches!(err, StartError::NotASocket { .. }), "{err}");
    assert!(!lock_file(&path).exists(), "refused as not a socket");
    fs::remove_file(&path).unwrap();
    let live = listen_on(&path, None).unwrap();
    assert!(
        !lock_file(&path).exists(),
        "a running reader holds no lock file"
    );
    let err = listen_on(&path, None).unwrap_err();
    assert!(matches!(err, StartError::AddrInUse { .. }), "{err}");
    assert!(!lock_file(&path).exists(), "refused as in use");
    live.file.as_ref().unwrap().remove().unwrap();
    assert!(!lock_file(&path).exists(), "stopped");
}

/// Issue 24, item 8: the blue/green hot upgrade. With reader A running and
/// its socket file removed, B starts on the path (A held the lock for its
/// whole life: B was refused), and A's stop leaves B's socket alone.
#[test]
fn a_successor_starts_once_the_predecessors_socket_file_is_gone() {
    let dir = temp_dir();
    let path = dir.path().join("s.sock");
    let a = listen_on(&path, None).unwrap();
    fs::remove_file(&path).unwrap();
    let b = listen_on(&path, None).expect("the successor starts");
    assert!(reaches(&path, &b.listener));
    a.file.as_ref().unwrap().remove().unwrap();
    assert!(reaches(&path, &b.listener), "A's stop removed B's socket");
    // While B runs with its socket in place, a third start is refused.
    let err = listen_on(&path, None).unwrap_err();
    assert!(matches!(err, StartError::AddrInUse { .. }), "{err}");
    b.file.as_ref().unwrap().remove().unwrap();
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Issue 24, item 7: another user holding `<path>.lock` (a shared
/// directory) made a start say "a live reader already accepts connections"
/// with nothing at the path. Run as root, the lock file is given to
/// `nobody`; otherwise it is ours, held by another open file.
#[test]
fn a_lock_held_by_someone_else_is_reported_as_such_not_as_a_live_reader() {
    let dir = temp_dir();
    let path = dir.path().join("s.sock");
    let lock = lock_file(&path);
    let file = fs::File::create(&lock).unwrap();
    let root = nix::unistd::geteuid().is_root();
    if root {
        nix::unistd::fchown(file.as_raw_fd(), Some(65534.into()), Some(65534.into())).unwrap();
    }
    let held = Flock::lock(file, FlockArg::LockExclusiveNonblock).unwrap();
    let err = listen_on(&path, None).unwrap_err();
    match &err {
        StartError::LockHeld { lock: l, owner, .. } => {
            assert_eq!(l, &lock);
            assert_eq!(
                *owner,
                Some(if root {
                    65534
                } else {
                    nix::unistd::geteuid().as_raw()
                })
            );
        }
        other => panic!("{other}"),
    }
    let said = err.to_string();
    assert!(!said.contains("live reader already"), "{said}");
    assert!(said.contains("no live reader answers"), "{said}");
    drop(held);
    // Free again: the start goes ahead and leaves another user's file be.
    let bound = listen_on(&path, None).unwrap();
    assert!(reaches(&path, &bound.listener));
    assert_eq!(lock.exists(), root, "removed only if ours");
}

/// A leftover as a start killed between bind and publish leaves it: a
/// `.udsipc-XXXXXX` directory (0700, ours) holding the bound socket `s`,
/// made `age` ago.
fn leftover(dir: &Path, name: &str, age: std::time::Duration) -> std::path::PathBuf {
    let staging = dir.join(name);
    fs::create_dir(&staging).unwrap();
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o700)).unwrap();
    drop(UnixListener::bind(staging.join("s")).unwrap());
    let then = std::time::SystemTime::now() - age;
    let then = nix::sys::time::TimeSpec::from(then.duration_since(std::time::UNIX_EPOCH).unwrap());
    nix::sys::stat::utimensat(
        None,
        &staging,
        &then,
        &then,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    staging
}

/// The child half of the next test: a start killed (SIGABRT) right after
/// its socket is bound in the staging directory.
#[test]
#[ignore = "run by a_start_sweeps_the_staging_directories_killed_starts_left"]
fn start_killed_mid_bind() {
    let Some(path) = std::env::var_os("UDSIPC_KILLED_START_PATH") else {
        return;
    };
    hook::set(Box::new(|p| {
        if p == Point::Bound {
            std::process::abort();
        }
    }));
    let _ = listen_on(Path::new(&path), None);
}

/// Issue 24, item 7: a start killed mid-bind left its staging directory
/// every time, and later starts never swept them. Swept now: only dead
/// ones of ours, by name, owner, mode and age.
#[test]
fn a_start_sweeps_the_staging_directories_killed_starts_left() {
    let dir = temp_dir();
    let path = dir.path().join("s.sock");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "bind::tests::start_killed_mid_bind",
            "--ignored",
            "--nocapture",
        ])
        .env("UDSIPC_KILLED_START_PATH", &path)
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child was to be killed");
    let killed: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".udsipc-")
        })
        .collect();
    assert_eq!(
        killed.len(),
        1,
        "the killed start left its staging directory"
    );
    let old = std::time::Duration::from_secs(3600);
    // Age it as if the start was killed an hour ago.
    let then = nix::sys::time::TimeSpec::from(
        (std::time::SystemTime::now() - old)
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap(),
    );
    nix::sys::stat::utimensat(
        None,
        &killed[0],
        &then,
        &then,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let dead = leftover(dir.path(), ".udsipc-dead01", old);
    // Kept: alive (its start holds its lock), too young, not ours by name
    // or by mode, a link.
    let alive = leftover(dir.path(), ".udsipc-live01", old);
    let alive_lock = Flock::lock(
        fs::File::open(&alive).unwrap(),
        FlockArg::LockExclusiveNonblock,
    )
    .unwrap();
    let young = leftover(dir.path(), ".udsipc-young1", std::time::Duration::ZERO);
    let other_name = leftover(dir.path(), ".udsipc-toolong", old);
    let open_mode = leftover(dir.path(), ".udsipc-open01", old);
    fs::set_permissions(&open_mode, fs::Permissions::from_mode(0o755)).unwrap();
    let link = dir.path().join(".udsipc-link01");
    symlink(&alive, &link).unwrap();
    let bound = listen_on(&path, None).unwrap();
    assert!(reaches(&path, &bound.listener));
    assert!(!killed[0].exists(), "the killed start's directory was kept");
    assert!(!dead.exists());
    for kept in [&alive, &young, &other_name, &open_mode] {
        assert!(kept.join("s").exists(), "{kept:?} was swept");
    }
    assert!(fs::symlink_metadata(&link).is_ok());
    drop(alive_lock);
}

/// Issue 24, item 7: a path whose parent is longer than ~90 bytes was
/// bound through `/proc/self/fd`, so without `/proc` a valid 102-byte path
/// failed with "No such file or directory". It is bound directly now, as
/// Go does. (The test hides `/proc` from this thread's starts; the same
/// test passes with `/proc` unmounted: see the report of issue 24.)
#[test]
fn a_102_byte_path_under_a_long_parent_binds_without_proc() {
    let dir = temp_dir();
    let parent_len = 102 - "/s.sock".len();
    let pad = parent_len - dir.path().as_os_str().len() - 1;
    let parent = dir.path().join("p".repeat(pad));
    fs::create_dir(&parent).unwrap();
    let path = parent.join("s.sock");
    assert_eq!(path.as_os_str().len(), 102);
    hook::set_no_proc(true);
    let bound = listen_on(&path, Some(0o640));
    hook::set_no_proc(false);
    let bound = bound.unwrap();
    assert!(reaches(&path, &bound.listener));
    let mode = fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    bound.file.as_ref().unwrap().remove().unwrap();
    let left: Vec<_> = fs::read_dir(&parent).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Where binding directly is unsafe (a directory anyone can write to,
/// without the sticky bit) a long path still needs `/proc`; without it the
/// start says so instead of "No such file or directory".
#[test]
fn a_long_path_in_a_replaceable_directory_without_proc_says_why() {
    let dir = temp_dir();
    let parent = dir
        .path()
        .join("p".repeat(90 - dir.path().as_os_str().len()));
    fs::create_dir(&parent).unwrap();
    fs::set_permissions(&parent, fs::Permissions::from_mode(0o777)).unwrap();
    let path = parent.join("s.sock");
    hook::set_no_proc(true);
    let err = listen_on(&path, None);
    hook::set_no_proc(false);
    let said = err.unwrap_err().to_string();
    assert!(
        said.contains("/proc") && said.contains("sun_path"),
        "{said}"
    );
    // With /proc it binds through the descriptor, as before.
    let bound = listen_on(&path, None).unwrap();
    assert!(reaches(&path, &bound.listener));
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
