//! Fault specs as text (`fragment:1-16:2`), the `udsipc proxy --fault`
//! grammar.
//!
//! ```
//! use udsipc_testkit::proxy::spec::FaultSpec;
//! let spec: FaultSpec = "drop-after-frames:1000".parse()?;
//! assert_eq!(spec, FaultSpec::DropAfterFrames(1000));
//! assert!("drop-after-frames:many".parse::<FaultSpec>().is_err());
//! # Ok::<(), udsipc_testkit::proxy::spec::SpecError>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::{
    Bandwidth, CorruptBody, CorruptPrefix, DropAfterBytes, DropAfterFrames, FaultProxyBuilder,
    Fragment, Latency, Outage, PrefixRewrite, Reset, Stall,
};

/// Every accepted form, one per line, as error messages and `--help` show.
pub const VALID_FORMS: &str = "\
  fragment:MIN-MAX[:PAUSE_MS]   deliver in writes of MIN..=MAX bytes (split anywhere), PAUSE_MS apart
  drop-after-bytes:N            close both sides of each connection after N bytes
  drop-after-frames:N           close both sides of each connection after N whole frames
  stall:AFTER_MS:FOR_MS         once, AFTER_MS after start, stop reading from the client for FOR_MS
  latency:MS                    deliver every chunk MS later
  bandwidth:BYTES_PER_SEC       forward at most BYTES_PER_SEC per connection
  corrupt-body:FRAME            flip one bit in the body of frame FRAME (from 0) of each connection
  corrupt-prefix:FRAME[:HOW]    rewrite frame FRAME's length prefix; HOW = oversized (default), overflow, truncated
  refuse:AFTER_MS:FOR_MS        AFTER_MS after start, stop listening (and cut connections) for FOR_MS
  reset:AFTER_FRAMES            after AFTER_FRAMES whole frames, close the client side with unread data, leave the upstream open";

/// One parsed `--fault` spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultSpec {
    /// `fragment:MIN-MAX[:PAUSE_MS]`
    Fragment {
        /// Smallest write.
        min: usize,
        /// Largest write.
        max: usize,
        /// Pause between writes, ms.
        pause_ms: u64,
    },
    /// `drop-after-bytes:N`
    DropAfterBytes(u64),
    /// `drop-after-frames:N`
    DropAfterFrames(u64),
    /// `stall:AFTER_MS:FOR_MS`
    Stall {
        /// When, after the proxy started.
        after_ms: u64,
        /// How long.
        for_ms: u64,
    },
    /// `latency:MS`
    Latency(u64),
    /// `bandwidth:BYTES_PER_SEC`
    Bandwidth(u64),
    /// `corrupt-body:FRAME`
    CorruptBody(u64),
    /// `corrupt-prefix:FRAME[:HOW]`
    CorruptPrefix(u64, PrefixRewrite),
    /// `refuse:AFTER_MS:FOR_MS`
    Refuse {
        /// When, after the proxy started.
        after_ms: u64,
        /// How long.
        for_ms: u64,
    },
    /// `reset:AFTER_FRAMES`
    Reset(u64),
}

/// A spec that does not parse: names the spec, what is wrong, and the
/// valid forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    spec: String,
    reason: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid fault spec `{}`: {}\nvalid forms:\n{VALID_FORMS}",
            self.spec, self.reason
        )
    }
}

impl std::error::Error for SpecError {}

impl FromStr for FaultSpec {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let fail = |reason: String| SpecError {
            spec: spec.to_owned(),
            reason,
        };
        let mut parts = spec.split(':');
        let kind = parts.next().unwrap_or_default();
        let args: Vec<&str> = parts.collect();
        let want = |min: usize, max: usize| -> Result<(), SpecError> {
            if args.len() < min || args.len() > max {
                let n = if min == max {
                    min.to_string()
                } else {
                    format!("{min} to {max}")
                };
                return Err(fail(format!(
                    "`{kind}` takes {n} argument(s), got {}",
                    args.len()
                )));
            }
            Ok(())
        };
        let num = |i: usize, what: &str| -> Result<u64, SpecError> {
            args[i]
                .parse::<u64>()
                .map_err(|_| fail(format!("{what} must be a whole number, got `{}`", args[i])))
        };
        Ok(match kind {
            "fragment" => {
                want(1, 2)?;
                let (min, max) = args[0]
                    .split_once('-')
                    .ok_or_else(|| fail(format!("expected MIN-MAX, got `{}`", args[0])))?;
                let parse = |s: &str, what: &str| {
                    s.parse::<usize>()
                        .map_err(|_| fail(format!("{what} must be a whole number, got `{s}`")))
                };
                let (min, max) = (parse(min, "MIN")?, parse(max, "MAX")?);
                if min == 0 || max < min {
                    return Err(fail(format!("need 1 <= MIN <= MAX, got {min}-{max}")));
                }
                let pause_ms = if args.len() == 2 {
                    num(1, "PAUSE_MS")?
                } else {
                    0
                };
                Self::Fragment { min, max, pause_ms }
            }
            "drop-after-bytes" => {
                want(1, 1)?;
                Self::DropAfterBytes(num(0, "N")?)
            }
            "drop-after-frames" => {
                want(1, 1)?;
                Self::DropAfterFrames(num(0, "N")?)
            }
            "stall" => {
                want(2, 2)?;
                Self::Stall {
                    after_ms: num(0, "AFTER_MS")?,
                    for_ms: num(1, "FOR_MS")?,
                }
            }
            "latency" => {
                want(1, 1)?;
                Self::Latency(num(0, "MS")?)
            }
            "bandwidth" => {
                want(1, 1)?;
                let rate = num(0, "BYTES_PER_SEC")?;
                if rate == 0 {
                    return Err(fail("BYTES_PER_SEC must be at least 1".to_owned()));
                }
                Self::Bandwidth(rate)
            }
            "corrupt-body" => {
                want(1, 1)?;
                Self::CorruptBody(num(0, "FRAME")?)
            }
            "corrupt-prefix" => {
                want(1, 2)?;
                let how = match args.get(1).copied() {
                    None | Some("oversized") => PrefixRewrite::Oversized,
                    Some("overflow") => PrefixRewrite::Overflow,
                    Some("truncated") => PrefixRewrite::Truncated,
                    Some(other) => {
                        return Err(fail(format!(
                            "HOW must be oversized, overflow or truncated, got `{other}`"
                        )));
                    }
                };
                Self::CorruptPrefix(num(0, "FRAME")?, how)
            }
            "refuse" => {
                want(2, 2)?;
                Self::Refuse {
                    after_ms: num(0, "AFTER_MS")?,
                    for_ms: num(1, "FOR_MS")?,
                }
            }
            "reset" => {
                want(1, 1)?;
                Self::Reset(num(0, "AFTER_FRAMES")?)
            }
            other => return Err(fail(format!("unknown fault `{other}`"))),
        })
    }
}

impl FaultSpec {
    /// Adds this fault to a proxy being built.
    pub fn apply(self, builder: FaultProxyBuilder) -> FaultProxyBuilder {
        let ms = Duration::from_millis;
        match self {
            Self::Fragment { min, max, pause_ms } => {
                builder.fault(Fragment::new(min, max).pause(ms(pause_ms)))
            }
            Self::DropAfterBytes(n) => builder.fault(DropAfterBytes::new(n)),
            Self::DropAfterFrames(n) => builder.fault(DropAfterFrames::new(n)),
            Self::Stall { after_ms, for_ms } => builder.fault(Stall::new(ms(after_ms), ms(for_ms))),
            Self::Latency(d) => builder.fault(Latency(ms(d))),
            Self::Bandwidth(rate) => builder.fault(Bandwidth(rate)),
            Self::CorruptBody(frame) => builder.fault(CorruptBody::new(frame)),
            Self::CorruptPrefix(frame, how) => builder.fault(CorruptPrefix::new(frame, how)),
            Self::Refuse { after_ms, for_ms } => {
                builder.outage(Outage::new(ms(after_ms), ms(for_ms)))
            }
            Self::Reset(n) => builder.fault(Reset::after_frames(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses() {
        let cases = [
            (
                "fragment:1-16",
                FaultSpec::Fragment {
                    min: 1,
                    max: 16,
                    pause_ms: 0,
                },
            ),
            (
                "fragment:2-3:5",
                FaultSpec::Fragment {
                    min: 2,
                    max: 3,
                    pause_ms: 5,
                },
            ),
            ("drop-after-bytes:10", FaultSpec::DropAfterBytes(10)),
            ("drop-after-frames:0", FaultSpec::DropAfterFrames(0)),
            (
                "stall:100:2000",
                FaultSpec::Stall {
                    after_ms: 100,
                    for_ms: 2000,
                },
            ),
            ("latency:5", FaultSpec::Latency(5)),
            ("bandwidth:1000", FaultSpec::Bandwidth(1000)),
            ("corrupt-body:3", FaultSpec::CorruptBody(3)),
            (
                "corrupt-prefix:3",
                FaultSpec::CorruptPrefix(3, PrefixRewrite::Oversized),
            ),
            (
                "corrupt-prefix:3:truncated",
                FaultSpec::CorruptPrefix(3, PrefixRewrite::Truncated),
            ),
            (
                "refuse:10:20",
                FaultSpec::Refuse {
                    after_ms: 10,
                    for_ms: 20,
                },
            ),
            ("reset:7", FaultSpec::Reset(7)),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<FaultSpec>(), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_specs_name_the_spec_the_problem_and_the_valid_forms() {
        for (text, problem) in [
            ("explode", "unknown fault `explode`"),
            ("fragment:5-2", "need 1 <= MIN <= MAX"),
            ("fragment:0-2", "need 1 <= MIN <= MAX"),
            ("fragment:7", "expected MIN-MAX"),
            ("stall:1", "takes 2 argument(s), got 1"),
            ("latency:soon", "MS must be a whole number, got `soon`"),
            ("bandwidth:0", "at least 1"),
            ("corrupt-prefix:1:weird", "HOW must be"),
            ("reset:1:2", "takes 1 argument(s), got 2"),
            ("", "unknown fault ``"),
        ] {
            let err = text.parse::<FaultSpec>().unwrap_err().to_string();
            assert!(err.contains(&format!("`{text}`")), "{err}");
            assert!(err.contains(problem), "{text}: {err}");
            assert!(err.contains("valid forms:"), "{err}");
            assert!(err.contains("drop-after-frames:N"), "{err}");
        }
    }
}
