//! Faults as values: the [`Fault`] trait, the [`Verdict`] a fault returns
//! for a chunk, and the [`Chunk`] it looks at.
//!
//! A fault never does IO itself. The proxy reads a chunk from one side, maps
//! it onto the frames of the stream, shows it to every fault in turn, and
//! carries out what they asked for: forward it later, in pieces, slower,
//! stop reading for a while, or cut the connection at a given byte. Faults
//! may also rewrite the bytes in place ([`Chunk::data_mut`]).

use std::ops::Range;
use std::time::Duration;

use super::rng::FaultRng;
use super::tracker::{Part, Segment};

/// Which way bytes flow through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// From the connecting client (the writer) to the upstream (the reader).
    ToUpstream,
    /// From the upstream back to the client.
    ToClient,
}

/// How a cut ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CutMode {
    /// Close both sides: the upstream gets what came before the cut, then
    /// end of stream; the client's unread bytes are discarded and its next
    /// write fails.
    Both,
    /// Close the client's side only, with its unread bytes discarded; the
    /// upstream side stays open and silent (no end of stream) until the
    /// upstream closes it or the proxy stops.
    ClientOnly,
}

/// What the proxy does with a chunk, as one fault asked.
///
/// When several faults answer for the same chunk, delays and stalls add up,
/// the earliest cut wins, the slowest bandwidth wins, and the last
/// fragmentation wins.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Forward the chunk (as the fault may have rewritten it).
    Pass,
    /// Decide nothing yet: read more bytes into this chunk and ask again.
    /// Prefer [`Fault::wants_more`], which is asked before any fault acts:
    /// a `Hold` comes after the faults before it in the list acted on a
    /// chunk that is then read again (what they did to it is lost). A
    /// fault must return it before changing anything; at end of stream the
    /// proxy stops asking.
    Hold,
    /// Forward the chunk this long after it arrived (latency: later chunks
    /// keep flowing behind it).
    Delay(Duration),
    /// Forward the chunk in writes of a random size in `min..=max` bytes,
    /// sleeping `pause` between them (partial writes).
    Fragment {
        /// Smallest piece, at least 1.
        min: usize,
        /// Largest piece.
        max: usize,
        /// Sleep between pieces.
        pause: Duration,
    },
    /// Forward no faster than this many bytes per second.
    Throttle {
        /// The bandwidth.
        bytes_per_sec: u64,
    },
    /// Forward the chunk, then stop reading from its source for this long
    /// (the source's socket buffer fills up: backpressure).
    StallAfter(Duration),
    /// Forward the first `at` bytes of the chunk, then cut the connection.
    Cut {
        /// How many bytes of the chunk still go through.
        at: usize,
        /// Which sides close.
        mode: CutMode,
    },
}

/// A fault: looks at each chunk and returns a [`Verdict`].
///
/// Implement it for a type, or pass a closure to [`fault_fn`]. One fault
/// value serves every connection of the proxy (it is called under a lock),
/// so a fault that should fire once keeps that in its own state, and one
/// that fires per connection uses [`Chunk::conn`] and [`Chunk::offset`].
pub trait Fault: Send + 'static {
    /// A short kebab-case name used in the event log (`"drop-after-frames"`).
    fn name(&self) -> &str;

    /// Decides what happens to `chunk`.
    fn on_chunk(&mut self, chunk: &mut Chunk<'_>) -> Verdict;

    /// Whether the fault needs more bytes in this chunk before it can act
    /// (a whole length prefix, a whole frame). Every fault is asked before
    /// any sees the chunk in [`Fault::on_chunk`]; if one says yes, the
    /// proxy reads more into the chunk and asks again, so no fault acts on
    /// a chunk that is then read again. Not asked at end of stream, nor
    /// once the proxy has held a chunk for 16 reads (then `on_chunk` gets
    /// what there is). Default: never.
    fn wants_more(&self, chunk: &Chunk<'_>) -> bool {
        let _ = chunk;
        false
    }

    /// How long a clean end of stream on connection `conn` waits before it
    /// is passed on (slow close). Asked when the source ends; default none.
    fn close_delay(&mut self, conn: u64) -> Duration {
        let _ = conn;
        Duration::ZERO
    }

    /// Cut connection `conn` (both sides) this long after the fault began
    /// to apply to it, whether bytes flow or not (a timeout, a reset).
    /// Asked before each read; default never.
    fn cut_after(&mut self, conn: u64) -> Option<Duration> {
        let _ = conn;
        None
    }
}

/// A fault made of a name and a closure.
///
/// ```
/// use udsipc_testkit::proxy::{fault_fn, Fault, Verdict};
/// // Cut every connection at its 100th byte.
/// let fault = fault_fn("cut-at-100", |chunk| {
///     let end = chunk.offset() + chunk.data().len() as u64;
///     if end >= 100 {
///         Verdict::Cut { at: (100 - chunk.offset()) as usize, mode: udsipc_testkit::proxy::CutMode::Both }
///     } else {
///         Verdict::Pass
///     }
/// });
/// assert_eq!(fault.name(), "cut-at-100");
/// ```
pub fn fault_fn<F>(name: impl Into<String>, f: F) -> FnFault<F>
where
    F: FnMut(&mut Chunk<'_>) -> Verdict + Send + 'static,
{
    FnFault {
        name: name.into(),
        f,
    }
}

/// A named closure fault; see [`fault_fn`].
pub struct FnFault<F> {
    name: String,
    f: F,
}

impl<F> Fault for FnFault<F>
where
    F: FnMut(&mut Chunk<'_>) -> Verdict + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn on_chunk(&mut self, chunk: &mut Chunk<'_>) -> Verdict {
        (self.f)(chunk)
    }
}

/// One chunk read from one side of one connection, as a fault sees it.
///
/// Positions (`usize`) are indexes into [`Chunk::data`]; frame numbers count
/// the frames of this direction of this connection from 0, as the sender
/// framed them (before any fault rewrote a prefix).
pub struct Chunk<'a> {
    pub(crate) data: &'a mut Vec<u8>,
    pub(crate) segments: &'a [Segment],
    pub(crate) conn: u64,
    pub(crate) direction: Direction,
    pub(crate) offset: u64,
    pub(crate) elapsed: Duration,
    pub(crate) rng: &'a mut FaultRng,
    pub(crate) end_of_stream: bool,
    pub(crate) notes: &'a mut Vec<Note>,
    pub(crate) poisoned_at: &'a mut Option<u64>,
}

/// Something a fault did to a chunk in place, for the event log.
#[derive(Debug, Clone)]
pub(crate) struct Note {
    pub(crate) position: usize,
    pub(crate) frame: Option<u64>,
    pub(crate) detail: String,
}

impl Chunk<'_> {
    /// The bytes, as earlier faults left them.
    pub fn data(&self) -> &[u8] {
        self.data
    }

    /// The bytes, to rewrite in place (corruption). Growing or shrinking
    /// them moves later positions; the frame map keeps describing the
    /// bytes as they arrived.
    pub fn data_mut(&mut self) -> &mut Vec<u8> {
        self.data
    }

    /// The connection's number, from 1 in accept order.
    pub fn conn(&self) -> u64 {
        self.conn
    }

    /// Which way the chunk flows.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Bytes of this direction of this connection before the chunk.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Time since the proxy started.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The connection's random source, seeded from the proxy's seed, the
    /// connection number and the direction (portable: the same seed gives
    /// the same draws everywhere).
    pub fn rng(&mut self) -> &mut FaultRng {
        self.rng
    }

    /// Whether the source ended right after this chunk ([`Verdict::Hold`]
    /// gets no more bytes).
    pub fn end_of_stream(&self) -> bool {
        self.end_of_stream
    }

    /// The frame parts in this chunk, in order.
    pub fn segments(&self) -> &[Segment] {
        self.segments
    }

    /// The index of the first frame that starts or continues in this chunk.
    pub fn first_frame(&self) -> Option<u64> {
        self.segments.first().map(|s| s.frame)
    }

    /// Where frame `n`'s prefix lies in this chunk, and whether all of it
    /// is here (it may begin in an earlier chunk or end in a later one).
    pub fn prefix_range(&self, n: u64) -> Option<(Range<usize>, bool)> {
        self.part(n, Part::Prefix)
            .map(|s| (s.range.clone(), s.starts_here && s.ends_here))
    }

    /// Where the bytes of frame `n`'s body that are in this chunk lie.
    pub fn body_range(&self, n: u64) -> Option<Range<usize>> {
        self.part(n, Part::Body).map(|s| s.range.clone())
    }

    /// The position just after frame `n`'s last byte, if it ends here.
    pub fn frame_end(&self, n: u64) -> Option<usize> {
        self.segments
            .iter()
            .find(|s| s.frame == n && s.frame_ends_here)
            .map(|s| s.range.end)
    }

    /// How many frames of this direction of the connection are complete by
    /// `position` in this chunk.
    pub fn frames_complete_at(&self, position: usize) -> u64 {
        let mut done = self.first_frame().unwrap_or(0);
        for s in self.segments {
            if s.range.end > position {
                break;
            }
            if s.frame_ends_here {
                done = s.frame + 1;
            }
        }
        done
    }

    /// Records, for the event log, what the fault did at `position`.
    pub fn note(&mut self, position: usize, frame: Option<u64>, detail: impl Into<String>) {
        self.notes.push(Note {
            position,
            frame,
            detail: detail.into(),
        });
    }

    /// Declares that from `position` on, the receiver can no longer find
    /// frame boundaries (a rewritten prefix): bytes forwarded after it
    /// count as in flight if the connection is cut.
    pub fn poison_from(&mut self, position: usize) {
        let at = self.offset + position as u64;
        if self.poisoned_at.is_none_or(|p| at < p) {
            *self.poisoned_at = Some(at);
        }
    }

    fn part(&self, n: u64, part: Part) -> Option<&Segment> {
        self.segments
            .iter()
            .find(|s| s.frame == n && s.part == part)
    }
}
