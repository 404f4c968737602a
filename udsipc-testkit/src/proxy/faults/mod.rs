//! The built-in faults. Each is a plain value implementing [`Fault`]; those
//! that act "per connection" keep per-connection state keyed by
//! [`Chunk::conn`]. Byte-level and frame-aimed faults live here; the ones
//! that reorder frames, act on a connection's lifetime, or pick connections
//! at random are in their own files.

mod lifetime;
mod reorder;
mod toxicity;

use std::collections::HashMap;
use std::time::Duration;

use super::fault::{Chunk, CutMode, Fault, Verdict};

pub use lifetime::{ResetPeer, SlowClose, Timeout};
pub use reorder::{Duplicate, Swap};
pub use toxicity::Toxicity;

/// Delivers every chunk in writes of a random size in `min..=max` bytes
/// (split anywhere, including inside a length prefix), with an optional
/// pause between writes.
///
/// ```
/// use std::time::Duration;
/// let f = udsipc_testkit::proxy::Fragment::new(1, 7).pause(Duration::from_millis(1));
/// ```
#[derive(Debug, Clone)]
pub struct Fragment {
    min: usize,
    max: usize,
    pause: Duration,
}

impl Fragment {
    /// Pieces of `min..=max` bytes (`min` is raised to 1, `max` to `min`).
    pub fn new(min: usize, max: usize) -> Self {
        let min = min.max(1);
        Self {
            min,
            max: max.max(min),
            pause: Duration::ZERO,
        }
    }

    /// Sleep this long between pieces.
    pub fn pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }
}

impl Fault for Fragment {
    fn name(&self) -> &str {
        "fragment"
    }

    fn on_chunk(&mut self, _chunk: &mut Chunk<'_>) -> Verdict {
        Verdict::Fragment {
            min: self.min,
            max: self.max,
            pause: self.pause,
        }
    }
}

/// Closes both sides of every connection once `n` bytes have gone through.
#[derive(Debug, Clone)]
pub struct DropAfterBytes {
    n: u64,
}

impl DropAfterBytes {
    /// Cut each connection after its first `n` bytes.
    pub fn new(n: u64) -> Self {
        Self { n }
    }
}

impl Fault for DropAfterBytes {
    fn name(&self) -> &str {
        "drop-after-bytes"
    }

    fn on_chunk(&mut self, chunk: &mut Chunk<'_>) -> Verdict {
        let end = chunk.offset() + chunk.data().len() as u64;
        if end < self.n {
            return Verdict::Pass;
        }
        let at = usize::try_from(self.n.saturating_sub(chunk.offset())).unwrap_or(usize::MAX);
        Verdict::Cut {
            at,
            mode: CutMode::Both,
        }
    }
}

/// Closes both sides of every connection after `n` whole frames, or
/// `mid_frame` bytes into frame `n` (so the upstream sees a truncated frame).
#[derive(Debug, Clone)]
pub struct DropAfterFrames {
    n: u64,
    mid_frame: usize,
    targets: HashMap<u64, u64>,
}

impl DropAfterFrames {
    /// Cut each connection right after its `n`th whole frame.
    pub fn new(n: u64) -> Self {
        Self {
            n,
            mid_frame: 0,
            targets: HashMap::new(),
        }
    }

    /// Cut `bytes` into the next frame instead (its prefix counts).
    pub fn mid_frame(mut self, bytes: usize) -> Self {
        self.mid_frame = bytes;
        self
    }
}

impl Fault for DropAfterFrames {
    fn name(&self) -> &str {
        "drop-after-frames"
    }

    fn on_chunk(&mut self, chunk: &mut Chunk<'_>) -> Verdict {
        let conn = chunk.conn();
        if !self.targets.contains_key(&conn) {
            // Frame `n` starts where frame `n - 1` ends (or at byte 0).
            let start = if self.n == 0 {
                Some(0)
            } else {
                chunk.frame_end(self.n - 1)
            };
            if let Some(start) = start {
                let target = chunk.offset() + start as u64 + self.mid_frame as u64;
                self.targets.insert(conn, target);
            }
        }
        let Some(&target) = self.targets.get(&conn) else {
            return Verdict::Pass;
        };
        let end = chunk.offset() + chunk.data().len() as u64;
        if end < target || (end == target && self.mid_frame > 0 && !chunk.end_of_stream()) {
            return Verdict::Pass;
        }
        self.targets.remove(&conn);
        Verdict::Cut {
            at: usize::try_from(target.saturating_sub(chunk.offset())).unwrap_or(usize::MAX),
            mode: CutMode::Both,
        }
    }
}

/// Once, `after` the proxy started, stops reading from the client for `for`
/// (its socket buffer fills: backpressure and write timeouts), then resumes.
#[derive(Debug, Clone)]
pub struct Stall {
    after: Duration,
    duration: Duration,
    fired: bool,
}

impl Stall {
    /// Stall for `duration`, at the first chunk `after` the proxy started.
    pub fn new(after: Duration, duration: Duration) -> Self {
        Self {
            after,
            duration,
            fired: false,
        }
    }
}

impl Fault for Stall {
    fn name(&self) -> &str {
        "stall"
    }

    fn on_chunk(&mut self, chunk: &mut Chunk<'_>) -> Verdict {
        if self.fired || chunk.elapsed() < self.after {
            return Verdict::Pass;
        }
        self.fired = true;
        Verdict::StallAfter(self.duration)
    }
}

/// Delivers every chunk this long after it arrived, give or take a random
/// jitter (bytes behind it keep flowing: latency, not a throughput cap;
/// order is kept).
#[derive(Debug, Clone)]
pub struct Latency {
    delay: Duration,
    jitter: Duration,
}

impl Latency {
    /// Every chunk `delay` late.
    pub fn new(delay: Duration) -> Self {
        Self {
            delay,
            jitter: Duration::ZERO,
        }
    }

    /// Each chunk's delay is drawn from `delay ± jitter` (never below 0).
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }
}

impl Fault for Latency {
    fn name(&self) -> &str {
        "latency"
    }

    fn on_chunk(&mut self, chunk: &mut Chunk<'_>) -> Verdict {
        if self.jitter.is_zero() {
            return Verdict::Delay(self.delay);
        }
        let jitter = u64::try_from(self.jitter.as_micros()).unwrap_or(u64::MAX);
        let delay = u64::try_from(self.delay.as_micros()).unwrap_or(u64::MAX);
        let drawn = chunk.rng().between(0, jitter.saturating_mul(2));
        let micros = (delay + drawn).saturating_sub(jitter);
        Verdict::Delay(Duration::from_micros(micros))
    }
}

/// Forwards at most this many bytes per second per connection, paced from
/// the first byte (toxiproxy's `bandwidth`): a piece of at most a tenth of
/// a second's worth waits for its time before it is written, so N bytes
/// take N / rate seconds however they arrive, and no burst gets through at
/// a connection's start or after a pause.
#[derive(Debug, Clone)]
pub struct Bandwidth(pub u64);

impl Fault for Bandwidth {
    fn name(&self) -> &str {
        "bandwidth"
    }

    fn on_chunk(&mut self, _chunk: &mut Chunk<'_>) -> Verdict {
        Verdict::Throttle {
            bytes_per_sec: self.0.max(1),
        }
    }
}

/// Flips one random bit in the body of frame `n` of every connection (of
/// the first non-empty frame from `n` on).
#[derive(Debug, Clone)]
pub struct CorruptBody {
    n: u64,
    targets: HashMap<u64, Option<u64>>,
}

impl CorruptBody {
    /// Corrupt frame `n` (counted from 0) of each connection.
    pub fn new(n: u64) -> Self {
        Self {
            n,
            targets: HashMap::new(),
        }
    }
}

impl Fault for CorruptBody {
    fn name(&self) -> &str {
        "corrupt-body"
    }

    fn on_chunk(&mut self, chunk: &mut Chunk<'_>) -> Verdict {
        let conn = chunk.conn();
        let target = self.targets.entry(conn).or_insert(Some(self.n));
        let Some(mut frame) = *target else {
            return Verdict::Pass;
        };
        // Skip zero-length frames: they have no body to corrupt.
        while chunk.frame_end(frame).is_some() && chunk.body_range(frame).is_none() {
            frame += 1;
        }
        *target = Some(frame);
        let Some(body) = chunk.body_range(frame).filter(|r| !r.is_empty()) else {
            return Verdict::Pass;
        };
        let byte = chunk.rng().between(body.start as u64, body.end as u64 - 1) as usize;
        let bit = chunk.rng().below(8);
        chunk.data_mut()[byte] ^= 1 << bit;
        chunk.note(
            byte,
            Some(frame),
            format!("flipped bit {bit} of a body byte"),
        );
        *target = None;
        Verdict::Pass
    }
}

/// How [`CorruptPrefix`] rewrites a length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrefixRewrite {
    /// A valid varint declaring 2^62 bytes: larger than any reader's limit.
    Oversized,
    /// Ten bytes of `0xff`: a varint that overflows 64 bits.
    Overflow,
    /// The prefix's first byte with its continuation bit set, then the
    /// connection is cut: the stream ends inside the prefix.
    Truncated,
}

impl PrefixRewrite {
    /// The name used in specs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::Overflow => "overflow",
            Self::Truncated => "truncated",
        }
    }
}

/// Rewrites the length prefix of frame `n` of every connection.
#[derive(Debug, Clone)]
pub struct CorruptPrefix {
    n: u64,
    rewrite: PrefixRewrite,
    done: HashMap<u64, ()>,
}

impl CorruptPrefix {
    /// Rewrite frame `n`'s prefix (counted from 0) on each connection.
    pub fn new(n: u64, rewrite: PrefixRewrite) -> Self {
        Self {
            n,
            rewrite,
            done: HashMap::new(),
        }
    }
}

impl Fault for CorruptPrefix {
    fn name(&self) -> &str {
        "corrupt-prefix"
    }

    fn wants_more(&self, chunk: &Chunk<'_>) -> bool {
        !self.done.contains_key(&chunk.conn())
            && chunk.prefix_range(self.n).is_some_and(|(_, whole)| !whole)
    }

    fn on_chunk(&mut self, chunk: &mut Chunk<'_>) -> Verdict {
        if self.done.contains_key(&chunk.conn()) {
            return Verdict::Pass;
        }
        // The whole prefix, unless the proxy gave up waiting for it (or the
        // stream ended inside it): then what there is of it.
        let Some((range, _)) = chunk.prefix_range(self.n) else {
            return Verdict::Pass;
        };
        self.done.insert(chunk.conn(), ());
        let mut new = Vec::with_capacity(udsipc::frame::MAX_VARINT_LEN);
        let mut cut = None;
        match self.rewrite {
            PrefixRewrite::Oversized => {
                let mut buf = [0; udsipc::frame::MAX_VARINT_LEN];
                let n = udsipc::frame::encode_varint(1 << 62, &mut buf);
                new.extend_from_slice(&buf[..n]);
            }
            PrefixRewrite::Overflow => new.extend_from_slice(&[0xff; 10]),
            PrefixRewrite::Truncated => {
                new.push(chunk.data()[range.start] | 0x80);
                cut = Some(range.start + 1);
            }
        }
        let detail = format!(
            "prefix {:02x?} rewritten {} as {:02x?}",
            &chunk.data()[range.clone()],
            self.rewrite.as_str(),
            new
        );
        chunk.data_mut().splice(range.clone(), new);
        chunk.note(range.start, Some(self.n), detail);
        chunk.poison_from(range.start);
        match cut {
            Some(at) => Verdict::Cut {
                at,
                mode: CutMode::Both,
            },
            None => Verdict::Pass,
        }
    }
}

/// After `n` whole frames, closes the client's side of each connection with
/// its unread bytes pending, and leaves the upstream side open and silent.
#[derive(Debug, Clone)]
pub struct Reset {
    n: u64,
}

impl Reset {
    /// Reset each connection after its `n`th whole frame.
    pub fn after_frames(n: u64) -> Self {
        Self { n }
    }
}

impl Fault for Reset {
    fn name(&self) -> &str {
        "reset"
    }

    fn on_chunk(&mut self, chunk: &mut Chunk<'_>) -> Verdict {
        let at = if self.n == 0 {
            (chunk.offset() == 0).then_some(0)
        } else {
            chunk.frame_end(self.n - 1)
        };
        match at {
            Some(at) => Verdict::Cut {
                at,
                mode: CutMode::ClientOnly,
            },
            None => Verdict::Pass,
        }
    }
}
