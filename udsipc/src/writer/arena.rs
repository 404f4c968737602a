//! Memory for copied messages: frames (length prefix and body) are copied
//! back to back into a chunk, and runs of them are cut off as `Bytes`
//! without another copy. A chunk is reused once nothing cut from it is
//! held any more (written and confirmed), so a steady stream of copies
//! allocates nothing. The Writer's queue keeps one (shared by producers,
//! under its lock) and each [`BufferedWriter`](crate::BufferedWriter) one
//! of its own (no lock).

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::pool::Pool;
use crate::frame::put_prefix;

/// Size of the first chunk (an idle Writer holds no more).
pub(crate) const CHUNK_MIN: usize = 8 * 1024;
/// Chunks double, up to this, while no earlier one can be reused yet (more
/// traffic, or producers running far ahead of the socket): fewer, larger
/// allocations.
pub(crate) const CHUNK_MAX: usize = 1024 * 1024;
/// Used chunks kept to be reused once everything cut from them was
/// written and confirmed (fresh memory costs a page fault per 4 KiB).
const SPARES: usize = 2;

/// A chunk being filled, and earlier ones to reuse.
#[derive(Debug)]
pub(crate) struct Arena {
    /// The chunk being filled; what was cut from it is gone from it.
    current: BytesMut,
    /// Earlier chunks to reuse.
    spares: Pool,
    /// Size of the next new chunk.
    chunk: usize,
    /// Chunks grow up to this.
    chunk_max: usize,
    /// Frames appended since the last cut.
    pub(crate) frames: u32,
}

impl Arena {
    /// An arena whose chunks grow up to `chunk_max` bytes (at least
    /// [`CHUNK_MIN`]); nothing is allocated before the first frame.
    pub(crate) fn new(chunk_max: usize) -> Self {
        Self {
            current: BytesMut::new(),
            spares: Pool::new(SPARES),
            chunk: CHUNK_MIN,
            chunk_max: chunk_max.clamp(CHUNK_MIN, CHUNK_MAX),
            frames: 0,
        }
    }

    /// The frames appended since the last cut, back to back.
    pub(crate) fn uncut(&self) -> &[u8] {
        &self.current
    }

    /// Whether `len` more bytes fit in the current chunk.
    pub(crate) fn has_room(&self, len: usize) -> bool {
        self.current.capacity() - self.current.len() >= len
    }

    /// Appends `body` with its length prefix (room checked with
    /// [`has_room`](Self::has_room) by the caller).
    pub(crate) fn put_frame(&mut self, body: &[u8]) {
        put_prefix(&mut self.current, body.len());
        self.current.put_slice(body);
        self.frames += 1;
    }

    /// Appends bytes as they are.
    #[cfg(test)]
    pub(crate) fn put_bytes(&mut self, frames: &[u8]) {
        self.current.put_slice(frames);
    }

    /// Cuts off everything appended since the last cut.
    pub(crate) fn cut(&mut self) -> Bytes {
        self.cut_to(self.frames, self.current.len())
    }

    /// Cuts off the first `n` frames appended since the last cut, which
    /// end at byte `at`; the others stay.
    pub(crate) fn cut_to(&mut self, n: u32, at: usize) -> Bytes {
        self.frames -= n;
        self.current.split_to(at).freeze()
    }

    /// Moves to a chunk with room for `len` more bytes: the oldest earlier
    /// chunk that nothing cut from it still uses, or a new one. Whatever
    /// was not cut off yet moves along to the new chunk (callers cut first,
    /// so this copy is a safety net, never the fast path).
    pub(crate) fn next_chunk(&mut self, len: usize) {
        let uncut = self.current.split();
        let len = len + uncut.len();
        self.spares.give(std::mem::take(&mut self.current));
        if let Some(chunk) = self.spares.take(len) {
            self.current = chunk;
        } else {
            self.current = BytesMut::with_capacity(self.chunk.max(len));
            self.chunk = (self.chunk * 2).min(self.chunk_max);
        }
        self.current.extend_from_slice(&uncut);
    }

    /// Lets go of every chunk (what was cut off lives on where it went).
    pub(crate) fn clear(&mut self) {
        self.current = BytesMut::new();
        self.spares.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_not_cut_moves_along_to_the_next_chunk() {
        let mut a = Arena::new(CHUNK_MIN);
        a.put_frame(b"abc");
        a.next_chunk(8000);
        a.put_frame(b"de");
        assert_eq!(&a.cut()[..], b"\x03abc\x02de");
    }

    #[test]
    fn frames_are_prefixed_and_cut_without_a_copy() {
        let mut a = Arena::new(CHUNK_MAX);
        assert!(!a.has_room(1), "nothing allocated before the first frame");
        a.next_chunk(1);
        a.put_frame(b"abc");
        a.put_frame(&[7u8; 200]);
        let cut = a.cut();
        assert_eq!(&cut[..4], b"\x03abc");
        assert_eq!(&cut[4..6], &[0xc8, 0x01], "200 as a varint");
        assert_eq!(cut.len(), 4 + 2 + 200);
        assert_eq!(a.uncut().len(), 0);
    }

    #[test]
    fn a_chunk_comes_back_once_nothing_cut_from_it_is_held() {
        let mut a = Arena::new(CHUNK_MAX);
        a.next_chunk(8000);
        let first = a.current.as_ptr();
        a.put_bytes(&[1u8; 8000]);
        let held = a.cut();
        a.next_chunk(8000);
        assert_ne!(a.current.as_ptr(), first, "still held: a new chunk");
        a.put_bytes(&[2u8; 8000]);
        let _second = a.cut();
        drop(held);
        a.next_chunk(8000);
        assert_eq!(a.current.as_ptr(), first, "the oldest free chunk is reused");
        assert!(a.has_room(8000));
    }

    #[test]
    fn chunks_double_up_to_the_limit_and_fit_a_larger_frame() {
        let mut a = Arena::new(4 * CHUNK_MIN);
        let mut held = Vec::new();
        let mut sizes = Vec::new();
        for _ in 0..4 {
            a.next_chunk(1);
            let size = a.current.capacity();
            sizes.push(size);
            a.put_bytes(&vec![0u8; size]);
            held.push(a.cut());
        }
        assert_eq!(
            sizes,
            [CHUNK_MIN, 2 * CHUNK_MIN, 4 * CHUNK_MIN, 4 * CHUNK_MIN]
        );
        a.next_chunk(10 * CHUNK_MIN);
        assert!(a.has_room(10 * CHUNK_MIN));
    }
}
