//! Turning queued messages into as few write syscalls as possible, without
//! IO: a plan of iovecs over a staging buffer (small frames copied together)
//! and the large bodies themselves (never copied), plus the bookkeeping of
//! partial writes.
//!
//! The writer task asks the plan for iovecs, hands them to `writev`, and
//! tells the plan how many bytes went; the plan says how many messages are
//! now fully written.

use std::collections::VecDeque;
use std::io::IoSlice;

use super::queue::Item;
use crate::frame::put_prefix;

/// Frames up to this size are copied into the staging buffer.
pub(crate) const COPY_MAX: usize = 4 * 1024;
/// Upper bound of the staging buffer per batch.
const STAGING_MAX: usize = 512 * 1024;
/// Upper bound of bytes per batch.
const BATCH_MAX: usize = 4 * 1024 * 1024;
/// Upper bound of segments per batch.
const SEGS_MAX: usize = 1024;
/// iovecs handed to one `writev`.
pub(crate) const IOV_PER_CALL: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg {
    /// `staging[start..end]`.
    Staged { start: usize, end: usize },
    /// The bytes of item `item` (a large body, or a large pre-framed frame).
    Item { item: usize },
}

/// A write plan over the first `items` queued messages.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Grows to what the batches need (at most `STAGING_MAX` plus one
    /// frame) and keeps it: an idle Writer holds none.
    staging: Vec<u8>,
    segs: Vec<Seg>,
    /// Byte offset (within the batch) at which each planned item ends.
    ends: Vec<usize>,
    /// Bytes written so far.
    cursor: usize,
    /// Items fully written so far.
    completed: usize,
}

impl Batch {
    /// Plans the write of as many of `items` (from the front) as fit.
    #[cfg(test)]
    pub(crate) fn plan(&mut self, items: &VecDeque<Item>) {
        self.plan_up_to(items, usize::MAX);
    }

    /// Plans the write of at most `max_items` of `items` (from the front),
    /// as many as fit.
    pub(crate) fn plan_up_to(&mut self, items: &VecDeque<Item>, max_items: usize) {
        self.clear();
        let mut total = 0usize;
        let mut staged_from = 0usize;
        for (i, item) in items.iter().enumerate().take(max_items) {
            let frame_len = item.frame_len();
            if i > 0
                && (total + frame_len > BATCH_MAX
                    || self.segs.len() + 3 > SEGS_MAX
                    || self.staging.len() + COPY_MAX.min(frame_len) > STAGING_MAX)
            {
                break;
            }
            if !item.framed {
                put_prefix(&mut self.staging, item.bytes.len());
            }
            if frame_len <= COPY_MAX {
                self.staging.extend_from_slice(&item.bytes);
            } else {
                if self.staging.len() > staged_from {
                    self.segs.push(Seg::Staged {
                        start: staged_from,
                        end: self.staging.len(),
                    });
                    staged_from = self.staging.len();
                }
                self.segs.push(Seg::Item { item: i });
            }
            total += frame_len;
            self.ends.push(total);
        }
        if self.staging.len() > staged_from {
            self.segs.push(Seg::Staged {
                start: staged_from,
                end: self.staging.len(),
            });
        }
    }

    /// An empty plan (the staging buffer is kept).
    pub(crate) fn clear(&mut self) {
        self.staging.clear();
        self.segs.clear();
        self.ends.clear();
        self.cursor = 0;
        self.completed = 0;
    }

    /// Messages in the plan.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether every planned byte was written.
    pub(crate) fn is_done(&self) -> bool {
        self.ends.last().is_none_or(|&end| self.cursor >= end)
    }

    /// Bytes written so far.
    pub(crate) fn cursor(&self) -> usize {
        self.cursor
    }

    /// The byte offset (within the batch) at which planned item `i` ends.
    pub(crate) fn end_of(&self, i: usize) -> usize {
        self.ends[i]
    }

    /// Messages fully written so far.
    pub(crate) fn completed(&self) -> usize {
        self.completed
    }

    /// Bytes written of the first item not written whole.
    pub(crate) fn written_into_next(&self) -> usize {
        self.cursor - self.completed.checked_sub(1).map_or(0, |i| self.ends[i])
    }

    /// Fills `out` with the iovecs of at most `budget` bytes of the
    /// unwritten rest; returns how many.
    pub(crate) fn iovecs<'a>(
        &'a self,
        items: &'a VecDeque<Item>,
        mut budget: usize,
        out: &mut [IoSlice<'a>],
    ) -> usize {
        let mut skip = self.cursor;
        let mut n = 0;
        for seg in &self.segs {
            if n == out.len() || budget == 0 {
                break;
            }
            let bytes: &'a [u8] = match *seg {
                Seg::Staged { start, end } => &self.staging[start..end],
                Seg::Item { item } => &items[item].bytes,
            };
            if skip >= bytes.len() {
                skip -= bytes.len();
                continue;
            }
            let take = (bytes.len() - skip).min(budget);
            out[n] = IoSlice::new(&bytes[skip..skip + take]);
            budget -= take;
            skip = 0;
            n += 1;
        }
        n
    }

    /// Records that `written` more bytes went out; returns how many messages
    /// that completed.
    pub(crate) fn advance(&mut self, written: usize) -> usize {
        self.cursor += written;
        let before = self.completed;
        while self.completed < self.ends.len() && self.ends[self.completed] <= self.cursor {
            self.completed += 1;
        }
        self.completed - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn items(sizes: &[usize]) -> VecDeque<Item> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Item::new(Bytes::from(vec![i as u8; n]), false))
            .collect()
    }

    fn expected(items: &VecDeque<Item>, count: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for it in items.iter().take(count) {
            crate::frame::encode_frame(&it.bytes, &mut out);
        }
        out
    }

    fn drain(batch: &mut Batch, items: &VecDeque<Item>, chunk: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        while !batch.is_done() {
            let mut iov = [IoSlice::new(&[]); IOV_PER_CALL];
            let n = batch.iovecs(items, usize::MAX, &mut iov);
            let mut budget = chunk;
            let mut wrote = 0;
            for s in &iov[..n] {
                let take = s.len().min(budget);
                wire.extend_from_slice(&s[..take]);
                budget -= take;
                wrote += take;
                if budget == 0 {
                    break;
                }
            }
            batch.advance(wrote);
        }
        wire
    }

    #[test]
    fn mixed_sizes_produce_the_exact_frame_stream_under_any_partial_write() {
        let its = items(&[1, 5000, 3, 0, 70_000, 2, 4096, 4097]);
        for chunk in [1, 7, 100, 4096, 1 << 20] {
            let mut b = Batch::default();
            b.plan(&its);
            assert_eq!(b.len(), its.len());
            let wire = drain(&mut b, &its, chunk);
            assert_eq!(wire, expected(&its, its.len()), "chunk {chunk}");
            assert_eq!(b.completed(), its.len());
        }
    }

    #[test]
    fn completion_counts_only_whole_frames() {
        let its = items(&[10, 10]);
        let mut b = Batch::default();
        b.plan(&its);
        assert_eq!(b.advance(10), 0); // 11 bytes make the first frame
        assert_eq!(b.advance(1), 1);
        assert_eq!(b.advance(10), 0);
        assert_eq!(b.advance(1), 1);
        assert!(b.is_done());
    }

    #[test]
    fn plan_is_bounded() {
        let its = items(&vec![1000; 2000]);
        let mut b = Batch::default();
        b.plan(&its);
        assert!(b.len() < 2000 && b.len() > 100);
        assert!(b.end_of(b.len() - 1) <= STAGING_MAX + COPY_MAX);
        let wire = drain(&mut b, &its, usize::MAX);
        assert_eq!(wire, expected(&its, b.len()));
    }

    #[test]
    fn a_budget_stops_the_write_at_that_byte_until_raised() {
        let its = items(&[10, 10]);
        let mut b = Batch::default();
        b.plan_up_to(&its, 1);
        assert_eq!(b.len(), 1);
        {
            let mut iov = [IoSlice::new(&[]); IOV_PER_CALL];
            let n = b.iovecs(&its, 1, &mut iov);
            assert_eq!((n, iov[0].len()), (1, 1));
        }
        assert_eq!(b.advance(1), 0);
        let mut iov = [IoSlice::new(&[]); IOV_PER_CALL];
        assert_eq!(b.iovecs(&its, 0, &mut iov), 0);
        let wire = drain(&mut b, &its, 3);
        assert_eq!(wire, expected(&its, 1)[1..]);
    }

    #[test]
    fn first_item_is_always_planned_even_if_huge() {
        let its = items(&[BATCH_MAX + 5]);
        let mut b = Batch::default();
        b.plan(&its);
        assert_eq!(b.len(), 1);
    }
}
