//! Faults that test a consumer's own robustness to a stream that is valid
//! but wrong: a frame delivered twice ([`Duplicate`]), two frames swapped
//! ([`Swap`]). Both wait (with [`Fault::wants_more`]) until the frames they
//! need are whole in one chunk; a frame split over more reads than the
//! proxy holds is left alone, and the event log says so.

use std::collections::HashSet;
use std::ops::Range;

use super::super::fault::{Chunk, Fault, Verdict};
use super::super::tracker::Part;

/// Where frames `first..=last` lie in a chunk.
enum Found {
    /// All of them, whole, in this range.
    Whole(Range<usize>),
    /// Frame `first` begins here but `last` does not end here yet.
    Partly,
    /// Frame `first` has not begun, or began in an earlier chunk.
    NotHere,
}

fn find(chunk: &Chunk<'_>, first: u64, last: u64) -> Found {
    let begins = chunk
        .segments()
        .iter()
        .find(|s| s.frame == first && s.part == Part::Prefix && s.starts_here);
    match (begins, chunk.frame_end(last)) {
        (Some(start), Some(end)) => Found::Whole(start.range.start..end),
        (Some(_), None) => Found::Partly,
        (None, _) => Found::NotHere,
    }
}

/// What to do when the frames are not whole here: wait for them, or give
/// up (noted) on a connection whose frames were partly forwarded already
/// (or not whole when the proxy stopped holding).
fn not_whole(chunk: &mut Chunk<'_>, done: &mut HashSet<u64>, first: u64, last: u64) -> Verdict {
    let touched = chunk
        .segments()
        .iter()
        .any(|s| (first..=last).contains(&s.frame));
    if touched {
        done.insert(chunk.conn());
        chunk.note(
            0,
            Some(first),
            format!("frames {first}..={last} span more reads than the proxy holds; left alone"),
        );
    }
    Verdict::Pass
}

/// Delivers frame `n` of every connection twice in a row (a retry bug,
/// a replayed buffer): a consumer that is not idempotent shows it.
#[derive(Debug, Clone)]
pub struct Duplicate {
    n: u64,
    done: HashSet<u64>,
}

impl Duplicate {
    /// Duplicate frame `n` (counted from 0) of each connection.
    pub fn new(n: u64) -> Self {
        Self {
            n,
            done: HashSet::new(),
        }
    }
}

impl Fault for Duplicate {
    fn name(&self) -> &str {
        "duplicate"
    }

    fn wants_more(&self, chunk: &Chunk<'_>) -> bool {
        !self.done.contains(&chunk.conn()) && matches!(find(chunk, self.n, self.n), Found::Partly)
    }

    fn on_chunk(&mut self, chunk: &mut Chunk<'_>) -> Verdict {
        let conn = chunk.conn();
        if self.done.contains(&conn) {
            return Verdict::Pass;
        }
        match find(chunk, self.n, self.n) {
            Found::Whole(range) => {
                let copy = chunk.data()[range.clone()].to_vec();
                let len = copy.len();
                chunk.data_mut().splice(range.end..range.end, copy);
                chunk.note(
                    range.end,
                    Some(self.n),
                    format!("frame delivered twice ({len} bytes repeated)"),
                );
                self.done.insert(conn);
                Verdict::Pass
            }
            Found::Partly | Found::NotHere => not_whole(chunk, &mut self.done, self.n, self.n),
        }
    }
}

/// Delivers frames `n` and `n + 1` of every connection in swapped order:
/// a consumer that assumes order within a connection shows it.
#[derive(Debug, Clone)]
pub struct Swap {
    n: u64,
    done: HashSet<u64>,
}

impl Swap {
    /// Swap frames `n` and `n + 1` (counted from 0) of each connection.
    pub fn new(n: u64) -> Self {
        Self {
            n,
            done: HashSet::new(),
        }
    }
}

impl Fault for Swap {
    fn name(&self) -> &str {
        "swap"
    }

    fn wants_more(&self, chunk: &Chunk<'_>) -> bool {
        !self.done.contains(&chunk.conn())
            && matches!(find(chunk, self.n, self.n + 1), Found::Partly)
    }

    fn on_chunk(&mut self, chunk: &mut Chunk<'_>) -> Verdict {
        let conn = chunk.conn();
        if self.done.contains(&conn) {
            return Verdict::Pass;
        }
        match find(chunk, self.n, self.n + 1) {
            Found::Whole(range) => {
                let Some(first_end) = chunk.frame_end(self.n) else {
                    return Verdict::Pass;
                };
                chunk.data_mut()[range.clone()].rotate_left(first_end - range.start);
                chunk.note(
                    range.start,
                    Some(self.n),
                    format!("frames {} and {} swapped", self.n, self.n + 1),
                );
                self.done.insert(conn);
                Verdict::Pass
            }
            Found::Partly | Found::NotHere => not_whole(chunk, &mut self.done, self.n, self.n + 1),
        }
    }
}
