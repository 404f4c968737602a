//! Where the frames of a byte stream lie, chunk by chunk.
//!
//! The proxy forwards arbitrary chunks; faults aim at "frame N", so each
//! chunk is mapped onto the frames of the stream as the writer sent it,
//! before any fault touches it. Pure: no IO, no clock.

use std::ops::Range;

use udsipc::frame::MAX_VARINT_LEN;

/// Which part of a frame a run of bytes belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The varint length prefix.
    Prefix,
    /// The body.
    Body,
}

/// A run of bytes in a chunk that belongs to one part of one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The frame's index on its connection (0 is the first frame).
    pub frame: u64,
    /// Prefix or body.
    pub part: Part,
    /// Where the run lies in the chunk.
    pub range: Range<usize>,
    /// Whether the part began in this chunk.
    pub starts_here: bool,
    /// Whether the part ends in this chunk.
    pub ends_here: bool,
    /// Whether the frame's last byte is in this run (the end of the body,
    /// or the end of the prefix of a zero-length frame).
    pub frame_ends_here: bool,
}

/// The parse state between two chunks of one direction of a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    frame: u64,
    prefix: u64,
    prefix_len: u8,
    body_left: Option<u64>,
    body_len: u64,
    malformed: bool,
}

impl Cursor {
    /// The index of the frame the next byte belongs to.
    pub(crate) fn frame(&self) -> u64 {
        self.frame
    }

    /// Whether the stream stopped being a valid frame sequence (a prefix
    /// longer than ten bytes); nothing after that is mapped.
    #[cfg(test)]
    pub(crate) fn malformed(&self) -> bool {
        self.malformed
    }

    /// Maps `chunk` onto frames starting from this state; returns the
    /// segments and the state after the chunk.
    pub(crate) fn map(&self, chunk: &[u8]) -> (Vec<Segment>, Cursor) {
        let mut at = *self;
        let mut segments = Vec::new();
        let mut i = 0;
        while i < chunk.len() && !at.malformed {
            match at.body_left {
                None => {
                    let start = i;
                    let starts_here = at.prefix_len == 0;
                    let mut done = false;
                    while i < chunk.len() {
                        let byte = chunk[i];
                        i += 1;
                        if usize::from(at.prefix_len) >= MAX_VARINT_LEN {
                            at.malformed = true;
                            break;
                        }
                        let shift = 7 * u32::from(at.prefix_len);
                        at.prefix |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
                        at.prefix_len += 1;
                        if byte & 0x80 == 0 {
                            done = true;
                            break;
                        }
                    }
                    let empty_frame = done && at.prefix == 0;
                    segments.push(Segment {
                        frame: at.frame,
                        part: Part::Prefix,
                        range: start..i,
                        starts_here,
                        ends_here: done,
                        frame_ends_here: empty_frame,
                    });
                    if done {
                        let len = at.prefix;
                        at.prefix = 0;
                        at.prefix_len = 0;
                        if len == 0 {
                            at.frame += 1;
                        } else {
                            at.body_left = Some(len);
                            at.body_len = len;
                        }
                    }
                }
                Some(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(chunk.len() - i);
                    let ends_here = take as u64 == left;
                    segments.push(Segment {
                        frame: at.frame,
                        part: Part::Body,
                        range: i..i + take,
                        starts_here: left == at.body_len,
                        ends_here,
                        frame_ends_here: ends_here,
                    });
                    i += take;
                    if ends_here {
                        at.body_left = None;
                        at.frame += 1;
                    } else {
                        at.body_left = Some(left - take as u64);
                    }
                }
            }
        }
        (segments, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for body in bodies {
            udsipc::frame::encode_frame(body, &mut out);
        }
        out
    }

    #[test]
    fn maps_whole_frames_in_one_chunk() {
        let bytes = stream(&[b"ab", b"", b"c"]);
        let (segments, end) = Cursor::default().map(&bytes);
        let parts: Vec<_> = segments
            .iter()
            .map(|s| (s.frame, s.part, s.range.clone()))
            .collect();
        assert_eq!(
            parts,
            [
                (0, Part::Prefix, 0..1),
                (0, Part::Body, 1..3),
                (1, Part::Prefix, 3..4),
                (2, Part::Prefix, 4..5),
                (2, Part::Body, 5..6),
            ]
        );
        assert_eq!(end.frame(), 3);
    }

    #[test]
    fn any_split_gives_the_same_frames_as_the_whole() {
        let body = vec![7u8; 300]; // two-byte prefix
        let bytes = stream(&[&body, b"x", &body]);
        let (whole, whole_end) = Cursor::default().map(&bytes);
        for cut in 0..=bytes.len() {
            let (mut a, mid) = Cursor::default().map(&bytes[..cut]);
            let (b, end) = mid.map(&bytes[cut..]);
            a.extend(b.into_iter().map(|mut s| {
                s.range = s.range.start + cut..s.range.end + cut;
                s
            }));
            let bytes_of = |segs: &[Segment], f: u64| -> usize {
                segs.iter()
                    .filter(|s| s.frame == f)
                    .map(|s| s.range.len())
                    .sum()
            };
            for f in 0..3 {
                assert_eq!(
                    bytes_of(&a, f),
                    bytes_of(&whole, f),
                    "cut at {cut}, frame {f}"
                );
            }
            assert_eq!(end, whole_end);
        }
    }

    #[test]
    fn an_overlong_prefix_marks_the_stream_malformed() {
        let (_, end) = Cursor::default().map(&[0xff; 11]);
        assert!(end.malformed());
        let (segments, _) = end.map(&[1, 2, 3]);
        assert!(segments.is_empty());
    }
}
