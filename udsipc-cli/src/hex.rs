//! Hex for `listen --format hex` (lowercase out) and `send --hex` (either
//! case in).
//!
//! Written here instead of depending on the `hex` crate: it is two short
//! loops, and the decoder's errors name the offending digit and its position
//! in the words the CLI's messages need.

use std::fmt;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends the lowercase hex of `bytes` to `out`.
pub(crate) fn encode_into(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
}

/// Why a text is not hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HexError {
    /// An odd number of digits: the last byte is incomplete.
    OddLength {
        /// How many digits there were.
        len: usize,
    },
    /// A character that is not a hex digit.
    InvalidDigit {
        /// Its 1-based position (in bytes).
        position: usize,
        /// What was found there.
        found: Found,
    },
}

/// What stands where a hex digit should.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// A character (its UTF-8 bytes start at the position).
    Char(char),
    /// A byte that starts no valid UTF-8 character.
    Byte(u8),
}

impl Found {
    /// What starts at `text[i..]`.
    fn at(text: &[u8], i: usize) -> Self {
        let rest = &text[i..text.len().min(i + 4)];
        let valid = match std::str::from_utf8(rest) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or_default(),
        };
        valid.chars().next().map_or(Self::Byte(text[i]), Self::Char)
    }
}

impl fmt::Display for Found {
    /// Quoted, with anything unprintable escaped once: `"g"`, `"é"`,
    /// `"\u{1b}"`, `"\xff"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Char(c) => write!(f, "\"{}\"", c.escape_debug()),
            Self::Byte(b) => write!(f, "\"\\x{b:02x}\""),
        }
    }
}

impl fmt::Display for HexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::OddLength { len } => {
                write!(f, "invalid hex: odd number of digits ({len})")
            }
            Self::InvalidDigit { position, found } => write!(
                f,
                "invalid hex: {found} at position {position} is not a hex digit"
            ),
        }
    }
}

/// Decodes hex digits (upper or lower case, nothing else) into bytes.
pub(crate) fn decode(text: &[u8]) -> Result<Vec<u8>, HexError> {
    let digit = |i: usize| {
        char::from(text[i])
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| HexError::InvalidDigit {
                position: i + 1,
                found: Found::at(text, i),
            })
    };
    // Report a bad character before an odd length: it is the likelier typo.
    let mut out = Vec::with_capacity(text.len() / 2);
    for pair in (0..text.len()).step_by(2) {
        let high = digit(pair)?;
        if pair + 1 == text.len() {
            return Err(HexError::OddLength { len: text.len() });
        }
        out.push((high << 4) | digit(pair + 1)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference written for clarity, not speed.
    fn naive_encode(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn encode_matches_the_naive_form_for_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        encode_into(&all, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), naive_encode(&all));
    }

    #[test]
    fn decode_round_trips_every_byte_in_both_cases() {
        let all: Vec<u8> = (0..=255).collect();
        let lower = naive_encode(&all);
        assert_eq!(decode(lower.as_bytes()), Ok(all.clone()));
        assert_eq!(decode(lower.to_uppercase().as_bytes()), Ok(all));
    }

    #[test]
    fn decode_of_nothing_is_nothing() {
        assert_eq!(decode(b""), Ok(vec![]));
    }

    #[test]
    fn decode_names_the_first_bad_digit() {
        assert_eq!(
            decode(b"00zz"),
            Err(HexError::InvalidDigit {
                position: 3,
                found: Found::Char('z')
            })
        );
        assert_eq!(
            decode(b"0 "),
            Err(HexError::InvalidDigit {
                position: 2,
                found: Found::Char(' ')
            })
        );
        assert_eq!(
            decode(b"abc").unwrap_err().to_string(),
            "invalid hex: odd number of digits (3)"
        );
        assert_eq!(
            decode(b"0g").unwrap_err().to_string(),
            "invalid hex: \"g\" at position 2 is not a hex digit"
        );
    }

    #[test]
    fn a_non_ascii_character_is_reported_escaped_once() {
        assert_eq!(
            decode("0é".as_bytes()).unwrap_err().to_string(),
            "invalid hex: \"é\" at position 2 is not a hex digit"
        );
        assert_eq!(
            decode(b"\x1b[").unwrap_err().to_string(),
            "invalid hex: \"\\u{1b}\" at position 1 is not a hex digit"
        );
        assert_eq!(
            decode(b"00\xff").unwrap_err().to_string(),
            "invalid hex: \"\\xff\" at position 3 is not a hex digit"
        );
    }
}
