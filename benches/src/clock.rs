//! `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the
//! machine, so a writer process's send time and a reader process's receive
//! time can be subtracted (the Go peer reads the same clock).

/// Now, in `CLOCK_MONOTONIC` nanoseconds.
pub fn monotonic_ns() -> i64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always readable on Linux");
    ts.tv_sec() * 1_000_000_000 + ts.tv_nsec()
}
