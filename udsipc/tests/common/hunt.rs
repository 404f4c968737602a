//! What the seeded hunts share: their random numbers (a splitmix64
//! sequence, so a seed replays the same draws), numbered messages and
//! seeds read from the environment.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use udsipc::WriterMetrics;

use super::PATIENCE;

/// A seeded splitmix64 generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
    pub fn fork(&mut self) -> Rng {
        Rng(self.next())
    }
}

/// A message of `len` bytes (at least 8) that starts with `id`.
pub fn message(id: u64, len: usize) -> Vec<u8> {
    let mut m = id.to_le_bytes().to_vec();
    m.resize(len.max(8), id as u8);
    m
}

/// The id a [`message`] starts with.
pub fn id_of(body: &[u8]) -> u64 {
    u64::from_le_bytes(body[..8].try_into().unwrap())
}

/// `name`'s value as a number, decimal or `0x` hex.
pub fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// A run's seed: `name`'s value (to replay a run), else the clock's.
pub fn seed_from(name: &str) -> u64 {
    env_u64(name).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    })
}

/// What a reader received (message ids, in order) against what the
/// Writer accepted: nothing twice, nothing never accepted, each
/// producer's messages (the id's high half) in order.
pub fn check_received(received: &[u64], accepted: &HashSet<u64>, ctx: &str) {
    let mut last: HashMap<u64, u64> = HashMap::new();
    let mut seen = HashSet::new();
    for &id in received {
        assert!(seen.insert(id), "{id:#x} received twice; {ctx}");
        assert!(
            accepted.contains(&id),
            "{id:#x} received, not accepted; {ctx}"
        );
        if let Some(prev) = last.insert(id >> 32, id) {
            assert!(prev < id, "{prev:#x} then {id:#x}: out of order; {ctx}");
        }
    }
}

/// A stopped Writer's counters against its `accepted` messages and the
/// `received` its reader kept: the queue empty, every accepted message
/// counted once, `delivered <= received <= delivered + unconfirmed`.
pub fn check_counts(m: &WriterMetrics, accepted: u64, received: u64, ctx: &str) {
    assert_eq!(m.queue_depth, 0, "{ctx}");
    assert_eq!(
        m.delivered + m.unconfirmed + m.failed + m.discarded,
        accepted,
        "every accepted message counted once; {ctx}"
    );
    assert!(
        m.delivered <= received,
        "delivered {} > received {received}; {ctx}",
        m.delivered
    );
    assert!(
        received <= m.delivered + m.unconfirmed,
        "received {received} > delivered + unconfirmed; {ctx}"
    );
}

/// Joins `t`, failing (with `ctx`) if it runs past [`PATIENCE`] or panics:
/// a hang is a finding, never a timing assertion.
pub fn join_within<T>(t: std::thread::JoinHandle<T>, what: &str, ctx: &dyn Fn() -> String) -> T {
    let start = std::time::Instant::now();
    while !t.is_finished() {
        assert!(start.elapsed() < PATIENCE, "{what} hung; {}", ctx());
        std::thread::sleep(Duration::from_millis(1));
    }
    t.join()
        .unwrap_or_else(|_| panic!("{what} panicked; {}", ctx()))
}
