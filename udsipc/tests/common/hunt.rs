//! What the seeded hunts share: their random numbers (a splitmix64
//! sequence, so a seed replays the same draws), numbered messages and
//! seeds read from the environment.

use std::time::Duration;

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
