//! [`Toxicity`]: a fault that applies only to a random share of the
//! connections (toxiproxy's `toxicity`).

use std::collections::HashMap;
use std::time::Duration;

use super::super::fault::{Chunk, Fault, Verdict};
use super::super::rng::FaultRng;

/// Wraps a fault so that each connection is picked with probability
/// `toxicity` (once, when the connection is first seen); the others pass
/// untouched. The pick depends on the connection number and `salt` only
/// (not on timing), so a run replays.
pub struct Toxicity {
    inner: Box<dyn Fault>,
    toxicity: f64,
    salt: u64,
    picked: HashMap<u64, bool>,
}

impl std::fmt::Debug for Toxicity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toxicity")
            .field("fault", &self.inner.name())
            .field("toxicity", &self.toxicity)
            .finish_non_exhaustive()
    }
}

impl Toxicity {
    /// `fault` on a `toxicity` share (0.0 to 1.0) of the connections; `salt`
    /// varies the pick between faults of the same proxy.
    pub fn new(fault: impl Fault, toxicity: f64, salt: u64) -> Self {
        Self::boxed(Box::new(fault), toxicity, salt)
    }

    /// [`Toxicity::new`] for a boxed fault.
    pub fn boxed(inner: Box<dyn Fault>, toxicity: f64, salt: u64) -> Self {
        Self {
            inner,
            toxicity,
            salt,
            picked: HashMap::new(),
        }
    }

    fn applies(&mut self, conn: u64) -> bool {
        let (toxicity, salt) = (self.toxicity, self.salt);
        *self.picked.entry(conn).or_insert_with(|| {
            FaultRng::from_seed(salt ^ conn.wrapping_mul(0xa076_1d64_78bd_642f)).chance(toxicity)
        })
    }
}

impl Fault for Toxicity {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn on_chunk(&mut self, chunk: &mut Chunk<'_>) -> Verdict {
        if self.applies(chunk.conn()) {
            self.inner.on_chunk(chunk)
        } else {
            Verdict::Pass
        }
    }

    fn wants_more(&self, chunk: &Chunk<'_>) -> bool {
        // Not yet picked: ask the fault (holding a chunk is harmless).
        self.picked.get(&chunk.conn()) != Some(&false) && self.inner.wants_more(chunk)
    }

    fn close_delay(&mut self, conn: u64) -> Duration {
        if self.applies(conn) {
            self.inner.close_delay(conn)
        } else {
            Duration::ZERO
        }
    }

    fn cut_after(&mut self, conn: u64) -> Option<Duration> {
        if self.applies(conn) {
            self.inner.cut_after(conn)
        } else {
            None
        }
    }
}
