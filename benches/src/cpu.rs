//! CPU time (user + system) from `getrusage`, not wall time: what a
//! transfer costs the machine, which a busy neighbour moves far less than
//! throughput.
//!
//! Every peer (Rust, Go, C) reports its own process's CPU over the
//! transfer (`RUSAGE_SELF`, every thread: a reader's from `ready` to its
//! last delivery, a writer's from its first send until drained), leaving
//! out start-up, which costs 2-6 ms per process here, a visible share of a
//! cell. A peer that does not report it is charged its whole life instead:
//! what reaping it adds to the runner's `RUSAGE_CHILDREN`. An in-process
//! column reads `RUSAGE_SELF` around its transfer: both threads together.

use nix::sys::resource::{UsageWho, getrusage};

fn ns(who: UsageWho) -> u64 {
    let Ok(u) = getrusage(who) else { return 0 };
    let ns =
        |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000_000 + t.tv_usec() as u64 * 1_000;
    ns(u.user_time()) + ns(u.system_time())
}

/// User + system CPU of every child this process has reaped, ns.
pub fn children_ns() -> u64 {
    ns(UsageWho::RUSAGE_CHILDREN)
}

/// User + system CPU of this process (every thread), ns.
pub fn self_ns() -> u64 {
    ns(UsageWho::RUSAGE_SELF)
}

/// CPU a transfer took, ns, per process (`reader` is `None` for an
/// in-process transfer, whose `writer` is then the whole process).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cpu {
    /// The writer process (or the one process), ns.
    pub writer_ns: u64,
    /// The reader process, ns, when it is another process.
    pub reader_ns: Option<u64>,
}

impl Cpu {
    /// Both processes (or the one), ns.
    pub fn total_ns(&self) -> u64 {
        self.writer_ns + self.reader_ns.unwrap_or(0)
    }
}
