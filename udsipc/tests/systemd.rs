//! systemd integration with real components: socket activation through the
//! real `systemd-socket-activate`, and notifications received on a real
//! datagram socket (Go: systemd_env_test.go).
//!
//! Each scenario runs in a child process (this test binary re-run with
//! `--ignored --exact systemd_child`), so environment variables are never
//! changed inside the test harness's own process.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use udsipc::{Reader, Writer};

const SCENARIO: &str = "UDSIPC_CHILD_SCENARIO";
const OUT: &str = "UDSIPC_CHILD_OUT";

/// Not a test on its own: the body of every child process.
#[test]
#[ignore = "run by the other tests in a child process"]
fn systemd_child() {
    let Ok(scenario) = std::env::var(SCENARIO) else {
        return;
    };
    let out = std::env::var(OUT).unwrap();
    let mut report = Vec::new();
    match scenario.as_str() {
        "activated" => {
            let c = Collector::new();
            let reader = Reader::builder("/nonexistent-dir/fallback.sock")
                .start(c.handler())
                .unwrap();
            report.push(format!("activated={}", reader.is_socket_activated()));
            // The environment is left alone (no remove_var), and the passed
            // fd is close-on-exec so children inherit no socket.
            let kept = ["LISTEN_FDS", "LISTEN_PID"]
                .iter()
                .all(|v| std::env::var_os(v).is_some());
            report.push(format!("env_kept={kept}"));
            let cloexec = nix::fcntl::fcntl(3, nix::fcntl::FcntlArg::F_GETFD)
                .is_ok_and(|f| f & nix::fcntl::FdFlag::FD_CLOEXEC.bits() != 0);
            report.push(format!("fd3_cloexec={cloexec}"));
            for m in c.take(3) {
                report.push(format!("msg={}", String::from_utf8(m).unwrap()));
            }
            reader.stop_blocking(Duration::from_secs(10)).unwrap();
            report.push(format!("received={}", reader.metrics().received));
        }
        "notify" => {
            let dir = tempfile::tempdir().unwrap();
            let reader = Reader::builder(dir.path().join("n.sock"))
                .start(|_: &[u8]| Ok(()))
                .unwrap();
            reader.notify_status("serving").unwrap();
            reader.stop_blocking(Duration::from_secs(10)).unwrap();
            report.push("done".into());
        }
        "two_named" => {
            let (ca, cb) = (Collector::new(), Collector::new());
            let a = Reader::builder("/nonexistent-dir/a.sock")
                .systemd_fd_name("alpha")
                .start(ca.handler())
                .unwrap();
            let b = Reader::builder("/nonexistent-dir/b.sock")
                .systemd_fd_name("beta")
                .start(cb.handler())
                .unwrap();
            report.push(format!(
                "activated={},{}",
                a.is_socket_activated(),
                b.is_socket_activated()
            ));
            report.push(format!(
                "a={}",
                String::from_utf8(ca.take(1).remove(0)).unwrap()
            ));
            report.push(format!(
                "b={}",
                String::from_utf8(cb.take(1).remove(0)).unwrap()
            ));
            a.stop_blocking(Duration::from_secs(10)).unwrap();
            b.stop_blocking(Duration::from_secs(10)).unwrap();
        }
        "no_listen_pid" => {
            let dir = tempfile::tempdir().unwrap();
            let reader = Reader::builder(dir.path().join("own.sock"))
                .start(|_: &[u8]| Ok(()))
                .unwrap();
            report.push(format!("activated={}", reader.is_socket_activated()));
            report.push(format!(
                "own_socket={}",
                dir.path().join("own.sock").exists()
            ));
            reader.stop_blocking(Duration::from_secs(10)).unwrap();
        }
        "runtime_dir" => {
            let reader = Reader::builder("/nonexistent-dir/app.sock")
                .start(|_: &[u8]| Ok(()))
                .unwrap();
            let p = reader.socket_path().to_owned();
            report.push(format!("path={}", p.display()));
            report.push(format!("exists={}", p.exists()));
            reader.stop_blocking(Duration::from_secs(10)).unwrap();
        }
        "start_error" => {
            let dir = tempfile::tempdir().unwrap();
            let err = Reader::builder(dir.path().join("e.sock"))
                .start(|_: &[u8]| Ok(()))
                .unwrap_err();
            report.push(format!("error={err}"));
        }
        other => panic!("unknown scenario {other}"),
    }
    std::fs::write(out, report.join("\n")).unwrap();
}

/// Runs this test binary as a child with `env`, through `wrapper` if given.
fn child_command(wrapper: Option<Command>, scenario: &str, out: &Path) -> Command {
    let exe = std::env::current_exe().unwrap();
    let child_args = [
        "--ignored",
        "--exact",
        "systemd_child",
        "--nocapture",
        "--test-threads=1",
    ];
    let mut cmd = match wrapper {
        Some(mut w) => {
            w.arg("-E").arg(format!("{SCENARIO}={scenario}"));
            w.arg("-E").arg(format!("{OUT}={}", out.display()));
            w.arg("--").arg(&exe).args(child_args);
            w
        }
        None => {
            let mut c = Command::new(&exe);
            c.args(child_args).env(SCENARIO, scenario).env(OUT, out);
            c
        }
    };
    for var in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        "RUNTIME_DIRECTORY",
    ] {
        cmd.env_remove(var);
    }
    // The child's own test-harness chatter is not ours to print.
    cmd.stdout(Stdio::null());
    cmd
}

fn run_child(mut cmd: Command, out: &Path) -> String {
    let status = cmd.status().unwrap();
    assert!(status.success(), "child failed: {status}");
    std::fs::read_to_string(out).unwrap()
}

fn systemd_socket_activate() -> Command {
    let found = Command::new("systemd-socket-activate")
        .arg("--version")
        .output();
    assert!(
        found.is_ok(),
        "systemd-socket-activate is missing: install the Debian package `systemd` (ci/test does)"
    );
    Command::new("systemd-socket-activate")
}

#[test]
fn reader_adopts_the_socket_from_systemd_socket_activate() {
    let sock = temp_sock();
    let out = sock.dir.path().join("out.txt");
    let mut child = activate(&[&sock.path], "app", "activated", &out);
    let writer = Writer::builder(&sock.path).start().unwrap();
    for m in [&b"one"[..], b"two", b"three"] {
        writer.try_send(m).unwrap();
    }
    writer.stop_blocking(Duration::from_secs(10)).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "activated child failed: {status}");
    let report = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        report,
        "activated=true\nenv_kept=true\nfd3_cloexec=true\nmsg=one\nmsg=two\nmsg=three\nreceived=3"
    );
    // systemd owns the socket file: the Reader must not have removed it.
    assert!(sock.path.exists());
}

fn expect_notifications(sock: &UnixDatagram, want: &[&str]) {
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 256];
    for w in want {
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), *w);
    }
}

#[test]
fn ready_status_and_stopping_reach_a_path_notify_socket() {
    let sock = temp_sock();
    let notify_path = sock.dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let out = sock.dir.path().join("out.txt");
    let mut cmd = child_command(None, "notify", &out);
    cmd.env("NOTIFY_SOCKET", &notify_path);
    assert_eq!(run_child(cmd, &out), "done");
    expect_notifications(&notify, &["READY=1", "STATUS=serving", "STOPPING=1"]);
}

#[test]
fn ready_status_and_stopping_reach_an_abstract_notify_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("udsipc-test-{}-{}", std::process::id(), line!());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let notify = UnixDatagram::bind_addr(&addr).unwrap();
    let sock = temp_sock();
    let out = sock.dir.path().join("out.txt");
    let mut cmd = child_command(None, "notify", &out);
    cmd.env("NOTIFY_SOCKET", format!("@{name}"));
    assert_eq!(run_child(cmd, &out), "done");
    expect_notifications(&notify, &["READY=1", "STATUS=serving", "STOPPING=1"]);
}

#[test]
fn unreachable_notify_socket_fails_start_clearly() {
    let sock = temp_sock();
    let out = sock.dir.path().join("out.txt");
    let mut cmd = child_command(None, "start_error", &out);
    cmd.env("NOTIFY_SOCKET", sock.dir.path().join("nobody-here"));
    let report = run_child(cmd, &out);
    assert!(
        report.contains("failed to connect to the systemd notify socket"),
        "{report}"
    );
}

#[test]
fn runtime_directory_moves_the_socket() {
    let sock = temp_sock();
    let out = sock.dir.path().join("out.txt");
    let runtime = sock.dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    let mut cmd = child_command(None, "runtime_dir", &out);
    cmd.env("RUNTIME_DIRECTORY", &runtime);
    let report = run_child(cmd, &out);
    assert_eq!(
        report,
        format!("path={}\nexists=true", runtime.join("app.sock").display())
    );
}

#[test]
fn listen_pid_of_another_process_is_refused() {
    let sock = temp_sock();
    let out = sock.dir.path().join("out.txt");
    let mut cmd = child_command(None, "start_error", &out);
    cmd.env("LISTEN_FDS", "1").env("LISTEN_PID", "1");
    let report = run_child(cmd, &out);
    assert!(
        report.contains("LISTEN_PID 1 does not match current PID"),
        "{report}"
    );
}

#[test]
fn listen_fds_without_a_socket_at_fd_3_is_refused() {
    let sock = temp_sock();
    let out = sock.dir.path().join("out.txt");
    // LISTEN_PID must name the child itself: a shell exports its own pid and
    // execs the test binary, which keeps that pid.
    let mut wrapper = Command::new("sh");
    wrapper.args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\""]);
    let exe = std::env::current_exe().unwrap();
    wrapper.arg(&exe).args([
        "--ignored",
        "--exact",
        "systemd_child",
        "--nocapture",
        "--test-threads=1",
    ]);
    wrapper
        .env(SCENARIO, "start_error")
        .env(OUT, &out)
        .stdout(Stdio::null());
    for var in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        "RUNTIME_DIRECTORY",
    ] {
        wrapper.env_remove(var);
    }
    let report = run_child(wrapper, &out);
    assert!(
        report.contains("fd 3 is not a listening Unix stream socket"),
        "{report}"
    );
}

#[test]
fn listen_fds_without_listen_pid_is_not_for_this_process() {
    let sock = temp_sock();
    let out = sock.dir.path().join("out.txt");
    let mut cmd = child_command(None, "no_listen_pid", &out);
    cmd.env("LISTEN_FDS", "1");
    assert_eq!(run_child(cmd, &out), "activated=false\nown_socket=true");
}

/// Starts `systemd-socket-activate` for `scenario` listening on `sockets`
/// and waits until it listens.
fn activate(sockets: &[&Path], fdnames: &str, scenario: &str, out: &Path) -> std::process::Child {
    let mut wrapper = systemd_socket_activate();
    for s in sockets {
        wrapper.arg("-l").arg(s);
    }
    wrapper.arg(format!("--fdname={fdnames}"));
    let mut cmd = child_command(Some(wrapper), scenario, out);
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut listening = 0;
    let mut line = String::new();
    while listening < sockets.len() {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "systemd-socket-activate exited early"
        );
        if line.contains("Listening on") {
            listening += 1;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    child
}

#[test]
fn two_readers_take_their_own_named_activated_sockets() {
    let sock = temp_sock();
    let (a, b) = (
        sock.dir.path().join("a.sock"),
        sock.dir.path().join("b.sock"),
    );
    let out = sock.dir.path().join("out.txt");
    let mut child = activate(&[&a, &b], "alpha:beta", "two_named", &out);
    for (path, msg) in [(&a, &b"to alpha"[..]), (&b, b"to beta")] {
        let w = Writer::builder(path).start().unwrap();
        w.try_send(msg).unwrap();
        w.stop_blocking(Duration::from_secs(10)).unwrap();
    }
    assert!(child.wait().unwrap().success());
    let report = std::fs::read_to_string(&out).unwrap();
    assert_eq!(report, "activated=true,true\na=to alpha\nb=to beta");
}
