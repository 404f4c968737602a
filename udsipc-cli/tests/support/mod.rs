//! What the proxy's process-level tests share: a `udsipc proxy` child whose
//! stderr is read line by line, and the programs they drive it with.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

/// The bound on every wait; generous, because CI machines stall.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Reads a child's stderr lines on a thread.
pub(crate) fn lines(err: ChildStderr) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A running `udsipc proxy`.
pub(crate) struct Proxy {
    child: Child,
    stderr: Receiver<String>,
    /// Every stderr line read so far.
    pub(crate) lines: Vec<String>,
}

impl Proxy {
    /// Starts `udsipc proxy ARGS...` and waits for a stderr line starting
    /// with `ready` (returned).
    pub(crate) fn start(args: &[&str], ready: &str) -> (Self, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_udsipc"));
        command.arg("proxy").args(args);
        Self::start_command(command, ready)
    }

    /// [`Proxy::start`] for a command line of one's own (a shell that sets
    /// limits, then execs `udsipc proxy`).
    pub(crate) fn start_command(mut command: Command, ready: &str) -> (Self, String) {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let mut proxy = Self {
            child,
            stderr: lines(err),
            lines: Vec::new(),
        };
        let line = proxy.wait_for(ready);
        (proxy, line)
    }

    /// Waits for a stderr line that starts with `prefix`.
    pub(crate) fn wait_for(&mut self, prefix: &str) -> String {
        loop {
            let line = self
                .stderr
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("no `{prefix}` line; stderr so far: {:#?}", self.lines));
            self.lines.push(line.clone());
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and returns the exit code and every stderr line.
    pub(crate) fn stop(mut self) -> (Option<i32>, Vec<String>) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.stderr.recv_timeout(WAIT) {
            self.lines.push(line);
        }
        (status.code(), std::mem::take(&mut self.lines))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `go` binary: on the PATH, or where the official tarball puts it.
pub(crate) fn go() -> PathBuf {
    for candidate in ["go", "/usr/local/go/bin/go"] {
        if Command::new(candidate)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return PathBuf::from(candidate);
        }
    }
    panic!("`go` is not installed: ci/test installs it, or see https://go.dev/doc/install");
}

/// Runs `program` with `args`, failing the test with its output if it
/// cannot run.
pub(crate) fn output(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    cwd: &Path,
) -> std::process::Output {
    let program = program.as_ref().to_owned();
    Command::new(&program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program:?}: {e} (ci/test installs it)"))
}
