//! A delivery ledger: proves that nothing was lost, duplicated, reordered
//! or corrupted, and explains every message that did not arrive.
//!
//! Each message the ledger makes carries its id and a checksum:
//!
//! ```text
//! +---------+----------------------------+-------------------+
//! | id (8)  | filler (derived from id)   | FNV-1a 64 of all  |
//! | u64 LE  | len - 16 bytes             | before (8), LE    |
//! +---------+----------------------------+-------------------+
//! ```
//!
//! The sender records what the Writer refused ([`Ledger::dropped`]) or
//! reported failed ([`Ledger::failed`]); the receiver's handler calls
//! [`Ledger::delivered`] with the connection the message came on. The
//! [`LedgerReport`] then classifies every id.
//!
//! ```
//! use udsipc_testkit::ledger::Ledger;
//! let ledger = Ledger::new();
//! let (a, msg_a) = ledger.message(32);
//! let (_, msg_b) = ledger.message(100);
//! let (c, _) = ledger.message(40);
//! ledger.dropped(c); // the Writer said BufferFull
//! ledger.delivered(&msg_b, 1);
//! ledger.delivered(&msg_b, 1); // again
//! let report = ledger.report();
//! assert_eq!((report.sent, report.delivered, report.dropped), (3, 1, 1));
//! assert_eq!((report.lost, report.duplicated), (1, 1));
//! assert_eq!(report.lost_ids, [a]);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

/// The smallest message the ledger makes: id and checksum.
pub const MIN_LEN: usize = 16;

/// How many lost ids a report lists.
const LIST_LOST: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reported {
    Nothing,
    Dropped,
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    len: u32,
    reported: Reported,
    deliveries: u32,
}

#[derive(Debug, Default)]
struct State {
    entries: Vec<Entry>,
    last_on_conn: HashMap<u64, u64>,
    corrupted: u64,
    reordered: u64,
    duplicated_ids: Vec<u64>,
    reordered_ids: Vec<u64>,
}

/// Records what was sent and what arrived; see the [module docs](self).
#[derive(Debug, Default)]
pub struct Ledger {
    state: Mutex<State>,
}

/// FNV-1a, 64 bits: catches any corruption a test can cause.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The message with this id and length (at least [`MIN_LEN`]).
pub fn encode(id: u64, len: usize) -> Vec<u8> {
    let len = len.max(MIN_LEN);
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&id.to_le_bytes());
    let seed = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    m.extend((0..len - MIN_LEN).map(|i| (seed >> (8 * (i % 8))) as u8 ^ i as u8));
    let sum = checksum(&m);
    m.extend_from_slice(&sum.to_le_bytes());
    m
}

/// The id of an intact ledger message; `None` if any byte is wrong.
pub fn decode(m: &[u8]) -> Option<u64> {
    let (body, sum) = m.split_at_checked(m.len().checked_sub(8)?)?;
    if body.len() < 8 || checksum(body).to_le_bytes() != sum {
        return None;
    }
    let id = u64::from_le_bytes(body[..8].try_into().ok()?);
    (encode(id, m.len()) == m).then_some(id)
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next message, `len` bytes long (at least [`MIN_LEN`]), and
    /// records it as sent.
    pub fn message(&self, len: usize) -> (u64, Vec<u8>) {
        let len = len.clamp(MIN_LEN, u32::MAX as usize);
        let mut state = self.lock();
        let id = state.entries.len() as u64;
        state.entries.push(Entry {
            len: len as u32,
            reported: Reported::Nothing,
            deliveries: 0,
        });
        drop(state);
        (id, encode(id, len))
    }

    /// The sender was told this message was not accepted (BufferFull).
    pub fn dropped(&self, id: u64) {
        self.report_outcome(id, Reported::Dropped);
    }

    /// The sender was told this message was not delivered (discarded at
    /// stop, or handed back as failed).
    pub fn failed(&self, id: u64) {
        self.report_outcome(id, Reported::Failed);
    }

    fn report_outcome(&self, id: u64, what: Reported) {
        if let Some(e) = self.lock().entries.get_mut(id as usize) {
            e.reported = what;
        }
    }

    /// A message arrived on `connection`; checks it and records it.
    pub fn delivered(&self, body: &[u8], connection: u64) {
        let mut state = self.lock();
        let Some(id) = decode(body).filter(|&id| (id as usize) < state.entries.len()) else {
            state.corrupted += 1;
            return;
        };
        let repeat = state.entries[id as usize].deliveries > 0;
        state.entries[id as usize].deliveries += 1;
        if repeat {
            // A duplicate: counted once, as a duplicate, never also as a
            // reordering (it is not a message out of place).
            if state.duplicated_ids.len() < LIST_LOST {
                state.duplicated_ids.push(id);
            }
            return;
        }
        if let Some(last) = state.last_on_conn.insert(connection, id) {
            if id < last {
                state.reordered += 1;
                if state.reordered_ids.len() < LIST_LOST {
                    state.reordered_ids.push(id);
                }
            }
        }
    }

    /// Classifies every id sent so far.
    pub fn report(&self) -> LedgerReport {
        let state = self.lock();
        let mut r = LedgerReport {
            sent: state.entries.len() as u64,
            corrupted: state.corrupted,
            reordered: state.reordered,
            duplicated_ids: state.duplicated_ids.clone(),
            reordered_ids: state.reordered_ids.clone(),
            ..LedgerReport::default()
        };
        for (id, e) in state.entries.iter().enumerate() {
            if e.deliveries > 0 {
                r.delivered += 1;
                r.duplicated += u64::from(e.deliveries - 1);
                if e.reported != Reported::Nothing {
                    r.delivered_though_reported += 1;
                }
                continue;
            }
            match e.reported {
                Reported::Dropped => r.dropped += 1,
                Reported::Failed => r.failed += 1,
                Reported::Nothing => {
                    r.lost += 1;
                    r.lost_bytes += framed_len(e.len);
                    if r.lost_ids.len() < LIST_LOST {
                        r.lost_ids.push(id as u64);
                    }
                }
            }
        }
        r
    }
}

fn framed_len(len: u32) -> u64 {
    udsipc::frame::varint_len(u64::from(len)) as u64 + u64::from(len)
}

/// What happened to every message; see [`Ledger::report`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerReport {
    /// Messages made.
    pub sent: u64,
    /// Distinct messages delivered intact (at least once).
    pub delivered: u64,
    /// Not delivered, and reported dropped (BufferFull) to the sender.
    pub dropped: u64,
    /// Not delivered, and reported failed to the sender.
    pub failed: u64,
    /// Not delivered and never reported: lost in flight.
    pub lost: u64,
    /// The lost messages' size on the wire (prefix plus body).
    pub lost_bytes: u64,
    /// The first lost ids.
    pub lost_ids: Vec<u64>,
    /// Extra deliveries of a message already delivered.
    pub duplicated: u64,
    /// The first ids delivered more than once (one entry per extra
    /// delivery).
    pub duplicated_ids: Vec<u64>,
    /// Deliveries whose bytes were not an intact ledger message.
    pub corrupted: u64,
    /// First deliveries whose id was below the previous first delivery on
    /// the same connection (a repeat counts as duplicated, not reordered).
    pub reordered: u64,
    /// The first ids delivered out of order (after a higher id on their
    /// connection).
    pub reordered_ids: Vec<u64>,
    /// Messages delivered although the sender was told they were dropped
    /// or failed.
    pub delivered_though_reported: u64,
}

impl LedgerReport {
    /// Nothing lost, duplicated, reordered or corrupted, and every message
    /// accounted for exactly once.
    pub fn is_perfect(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.corrupted == 0
            && self.reordered == 0
            && self.delivered_though_reported == 0
            && self.delivered + self.dropped + self.failed == self.sent
    }
}

impl fmt::Display for LedgerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {}, delivered {}, dropped {}, failed {}, lost {} ({} B), duplicated {}, corrupted {}, reordered {}",
            self.sent,
            self.delivered,
            self.dropped,
            self.failed,
            self.lost,
            self.lost_bytes,
            self.duplicated,
            self.corrupted,
            self.reordered
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_any_flipped_bit_is_caught() {
        for len in [0, 16, 17, 100, 1000] {
            let m = encode(42, len);
            assert_eq!(m.len(), len.max(MIN_LEN));
            assert_eq!(decode(&m), Some(42));
            for bit in 0..m.len() * 8 {
                let mut bad = m.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(decode(&bad), None, "len {len}, bit {bit}");
            }
            assert_eq!(decode(&m[..m.len() - 1]), None);
        }
    }

    #[test]
    fn reordering_is_judged_per_connection() {
        let ledger = Ledger::new();
        let msgs: Vec<_> = (0..4).map(|_| ledger.message(20).1).collect();
        // Two connections interleaved, each in order: fine.
        ledger.delivered(&msgs[2], 2);
        ledger.delivered(&msgs[0], 1);
        ledger.delivered(&msgs[3], 2);
        ledger.delivered(&msgs[1], 1);
        assert!(ledger.report().is_perfect(), "{}", ledger.report());
        // Again on one connection: duplicated, not reordered.
        ledger.delivered(&msgs[1], 1);
        let r = ledger.report();
        assert_eq!((r.reordered, r.duplicated), (0, 1));
        assert_eq!(r.duplicated_ids, [1]);
    }

    #[test]
    fn a_swap_is_one_reordering_and_a_duplicate_one_duplication() {
        let ledger = Ledger::new();
        let msgs: Vec<_> = (0..5).map(|_| ledger.message(20).1).collect();
        // 0 1 1 3 2 4: frame 1 twice, frames 2 and 3 swapped.
        for i in [0, 1, 1, 3, 2, 4] {
            ledger.delivered(&msgs[i], 7);
        }
        let r = ledger.report();
        assert_eq!((r.duplicated, r.reordered), (1, 1), "{r}");
        assert_eq!(
            (r.duplicated_ids.clone(), r.reordered_ids.clone()),
            (vec![1], vec![2])
        );
        assert_eq!((r.delivered, r.lost), (5, 0));
    }

    #[test]
    fn every_outcome_is_classified() {
        let ledger = Ledger::new();
        let ids: Vec<_> = (0..5).map(|_| ledger.message(30)).collect();
        ledger.dropped(ids[1].0);
        ledger.failed(ids[2].0);
        ledger.delivered(&ids[0].1, 1);
        ledger.failed(ids[3].0);
        ledger.delivered(&ids[3].1, 1);
        ledger.delivered(b"not a ledger message at all", 1);
        let r = ledger.report();
        assert_eq!(
            (
                r.sent,
                r.delivered,
                r.dropped,
                r.failed,
                r.lost,
                r.corrupted
            ),
            (5, 2, 1, 1, 1, 1)
        );
        assert_eq!((r.lost_ids.clone(), r.lost_bytes), (vec![4], 31));
        assert_eq!(r.delivered_though_reported, 1);
        assert!(!r.is_perfect());
    }
}
