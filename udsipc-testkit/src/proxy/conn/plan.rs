//! The plan for one chunk: every fault of the direction is asked in turn
//! and their verdicts combined (delays and stalls add up, the earliest cut
//! wins, the slowest bandwidth wins, the last fragmentation wins). Pure
//! apart from the faults' own state: no IO, no clock.

use std::time::Duration;

use super::super::Installed;
use super::super::fault::{Chunk, CutMode, Direction, Note, Verdict};
use super::super::rng::FaultRng;
use super::super::tracker::Segment;

/// The verdicts of every fault for one chunk, combined.
#[derive(Default)]
pub(super) struct Plan {
    pub(super) hold: bool,
    pub(super) delay: Duration,
    pub(super) fragment: Option<(usize, usize, Duration)>,
    pub(super) throttle: Option<u64>,
    pub(super) stall: Duration,
    pub(super) cut: Option<(usize, CutMode)>,
    pub(super) fired: Vec<(String, Verdict)>,
    pub(super) notes: Vec<(String, Note)>,
}

/// Where the chunk sits, as the faults are told.
pub(super) struct Context<'a> {
    pub(super) conn: u64,
    pub(super) direction: Direction,
    pub(super) offset: u64,
    pub(super) elapsed: Duration,
    pub(super) end_of_stream: bool,
    pub(super) segments: &'a [Segment],
}

impl Plan {
    /// Asks every fault about `data` (which they may rewrite) and combines
    /// their verdicts; first, if `may_hold`, whether one wants more bytes
    /// (then nothing acts and the plan only says to hold).
    pub(super) fn ask(
        faults: &mut [Installed],
        data: &mut Vec<u8>,
        at: &Context<'_>,
        rng: &mut FaultRng,
        poisoned: &mut Option<u64>,
        may_hold: bool,
    ) -> Plan {
        let mut plan = Plan::default();
        if may_hold {
            let mut notes = Vec::new();
            let chunk = Chunk {
                data,
                segments: at.segments,
                conn: at.conn,
                direction: at.direction,
                offset: at.offset,
                elapsed: at.elapsed,
                rng,
                end_of_stream: at.end_of_stream,
                notes: &mut notes,
                poisoned_at: poisoned,
            };
            if faults.iter().any(|f| f.fault.wants_more(&chunk)) {
                plan.hold = true;
                return plan;
            }
        }
        for fault in faults.iter_mut().map(|f| &mut f.fault) {
            let mut notes = Vec::new();
            let mut chunk = Chunk {
                data,
                segments: at.segments,
                conn: at.conn,
                direction: at.direction,
                offset: at.offset,
                elapsed: at.elapsed,
                rng,
                end_of_stream: at.end_of_stream,
                notes: &mut notes,
                poisoned_at: poisoned,
            };
            let verdict = fault.on_chunk(&mut chunk);
            let name = fault.name().to_owned();
            plan.notes
                .extend(notes.into_iter().map(|n| (name.clone(), n)));
            plan.add(&verdict);
            if verdict != Verdict::Pass {
                plan.fired.push((name, verdict));
            }
        }
        plan
    }

    fn add(&mut self, verdict: &Verdict) {
        match verdict {
            Verdict::Pass => {}
            Verdict::Hold => self.hold = true,
            Verdict::Delay(d) => self.delay += *d,
            Verdict::Fragment { min, max, pause } => {
                self.fragment = Some(((*min).max(1), (*max).max(*min).max(1), *pause));
            }
            Verdict::Throttle { bytes_per_sec } => {
                let rate = (*bytes_per_sec).max(1);
                self.throttle = Some(self.throttle.map_or(rate, |r| r.min(rate)));
            }
            Verdict::StallAfter(d) => self.stall += *d,
            Verdict::Cut { at, mode } => {
                if self.cut.is_none_or(|(earlier, _)| *at < earlier) {
                    self.cut = Some((*at, *mode));
                }
            }
        }
    }
}

/// The index of the frame byte `at` of a chunk belongs to (the first frame
/// not complete by then), given the chunk's segments; `fallback` when the
/// chunk maps onto no frame (an unparseable stream, or no framing).
pub(super) fn frame_at(segments: &[Segment], at: usize, fallback: u64) -> u64 {
    let mut frame = segments.first().map_or(fallback, |s| s.frame);
    for s in segments {
        if s.range.end > at {
            break;
        }
        if s.frame_ends_here {
            frame = s.frame + 1;
        }
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::super::super::tracker::Cursor;
    use super::*;

    #[test]
    fn frame_at_a_cut_counts_the_frames_before_it_not_the_chunk_end() {
        let mut wire = Vec::new();
        for _ in 0..2000 {
            udsipc::frame::encode_frame(b"abc", &mut wire);
        }
        let (segments, end) = Cursor::default().map(&wire);
        assert_eq!(end.frame(), 2000);
        // After 1000 whole frames of 4 bytes, byte 4000 begins frame 1000.
        assert_eq!(frame_at(&segments, 4000, end.frame()), 1000);
        assert_eq!(frame_at(&segments, 4002, end.frame()), 1000);
        assert_eq!(frame_at(&segments, 0, end.frame()), 0);
        assert_eq!(frame_at(&[], 0, 17), 17);
    }
}
