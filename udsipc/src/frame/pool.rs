//! Buffers kept for reuse once nothing handed out of them is held any
//! more: the one chunk pool of the crate (the receive buffers of a
//! [`Receiver`](super::Receiver), the Writer's copy arenas). Fresh memory
//! costs a page fault per 4 KiB; a steady stream through reused buffers
//! allocates nothing.

use std::collections::VecDeque;

use bytes::BytesMut;

/// Spare buffers, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    spares: VecDeque<BytesMut>,
    /// Spares kept after a search found none free.
    keep: usize,
}

impl Pool {
    /// A pool that keeps `keep` spares.
    pub(crate) fn new(keep: usize) -> Self {
        Self {
            spares: VecDeque::new(),
            keep,
        }
    }

    /// Keeps `buf` (emptied) to reuse once nothing cut from it is held (a
    /// handle without memory of its own is dropped).
    pub(crate) fn give(&mut self, mut buf: BytesMut) {
        if buf.capacity() > 0 {
            buf.clear();
            self.spares.push_back(buf);
        }
    }

    /// The oldest spare with room for `capacity` bytes that nothing handed
    /// out uses any more, taken out of the pool. When none is free, the
    /// oldest spares beyond `keep` are let go (still in use: freed by their
    /// last user).
    pub(crate) fn take(&mut self, capacity: usize) -> Option<BytesMut> {
        if let Some(i) = self.spares.iter_mut().position(|b| b.try_reclaim(capacity)) {
            return self.spares.remove(i);
        }
        while self.spares.len() > self.keep {
            self.spares.pop_front();
        }
        None
    }

    /// How many spares it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.spares.len()
    }

    /// Whether it holds no spare.
    pub(crate) fn is_empty(&self) -> bool {
        self.spares.is_empty()
    }

    /// Lets go of every spare.
    pub(crate) fn clear(&mut self) {
        self.spares.clear();
    }
}
