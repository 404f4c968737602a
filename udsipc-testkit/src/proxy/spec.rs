//! Fault specs as text (`down:fragment:1-16:2@0.5`), the `udsipc proxy
//! --fault` grammar, derived from [`super::registry`].
//!
//! ```text
//! [up:|down:]NAME[:ARG]...[@TOXICITY]
//! ```
//!
//! `up:` (the default) acts on client → upstream bytes, `down:` on
//! upstream → client bytes; `@TOXICITY` applies the fault to that share
//! of the connections (0.0 to 1.0, default 1.0).
//!
//! ```
//! use udsipc_testkit::proxy::Direction;
//! use udsipc_testkit::proxy::registry::FaultArgs;
//! use udsipc_testkit::proxy::spec::FaultSpec;
//! let spec: FaultSpec = "drop-after-frames:1000".parse()?;
//! assert_eq!(spec.args, FaultArgs::DropAfterFrames(1000));
//! assert_eq!(spec.direction, Direction::ToUpstream);
//! let spec: FaultSpec = "down:latency:5@0.25".parse()?;
//! assert_eq!((spec.direction, spec.toxicity), (Direction::ToClient, 0.25));
//! assert!("drop-after-frames:many".parse::<FaultSpec>().is_err());
//! # Ok::<(), udsipc_testkit::proxy::spec::SpecError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use super::registry::{self, Built, FaultArgs};
use super::{Direction, FaultProxyBuilder, Framing, Toxicity};

/// One parsed `--fault` spec.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct FaultSpec {
    /// Which bytes it acts on.
    pub direction: Direction,
    /// The share of connections it applies to (1.0: all).
    pub toxicity: f64,
    /// The fault and its parameters.
    pub args: FaultArgs,
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
            "invalid fault spec `{}`: {}\nvalid forms:\n{}",
            self.spec,
            self.reason,
            registry::valid_forms()
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
        let (rest, toxicity) = match spec.rsplit_once('@') {
            Some((rest, p)) => {
                let p: f64 = p
                    .parse()
                    .ok()
                    .filter(|p: &f64| (0.0..=1.0).contains(p))
                    .ok_or_else(|| fail(format!("TOXICITY must be 0.0 to 1.0, got `{p}`")))?;
                (rest, p)
            }
            None => (spec, 1.0),
        };
        let (direction, rest) = if let Some(rest) = rest.strip_prefix("up:") {
            (Direction::ToUpstream, rest)
        } else if let Some(rest) = rest.strip_prefix("down:") {
            (Direction::ToClient, rest)
        } else {
            (Direction::ToUpstream, rest)
        };
        let mut parts = rest.split(':');
        let name = parts.next().unwrap_or_default();
        let args: Vec<&str> = parts.collect();
        let kind =
            registry::by_name(name).ok_or_else(|| fail(format!("unknown fault `{name}`")))?;
        let args = kind
            .parse_spec(&args)
            .map_err(|e| fail(format!("`{name}` {e}")))?;
        Ok(Self {
            direction,
            toxicity,
            args,
        })
    }
}

impl FaultSpec {
    /// Refuses a frame-aimed fault on a proxy that does not parse frames.
    pub fn check_framing(&self, framing: Framing) -> Result<(), String> {
        let kind = self.args.kind();
        if framing == Framing::None && kind.frame_aware {
            let byte_level: Vec<&str> = registry::FAULTS
                .iter()
                .filter(|k| !k.frame_aware)
                .map(|k| k.name)
                .collect();
            return Err(format!(
                "`{}` aims at frames, but --framing none reads no frames; byte-level faults: {}",
                kind.name,
                byte_level.join(", ")
            ));
        }
        Ok(())
    }

    /// Adds this fault to a proxy being built.
    pub fn apply(self, builder: FaultProxyBuilder) -> FaultProxyBuilder {
        match self.args.build() {
            Built::Outage(outage) => builder.outage(outage),
            Built::Fault(fault) => {
                let fault: Box<dyn super::Fault> = if self.toxicity < 1.0 {
                    let salt = self.toxicity.to_bits() ^ self.args.kind().name.len() as u64;
                    Box::new(Toxicity::boxed(fault, self.toxicity, salt))
                } else {
                    fault
                };
                match self.direction {
                    Direction::ToUpstream => builder.boxed_fault(fault),
                    Direction::ToClient => builder.boxed_reverse_fault(fault),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::PrefixRewrite;
    use super::*;

    #[test]
    fn every_form_parses() {
        let cases = [
            (
                "fragment:1-16",
                FaultArgs::Fragment {
                    min: 1,
                    max: 16,
                    pause_us: 0,
                },
            ),
            (
                "fragment:2-3:5",
                FaultArgs::Fragment {
                    min: 2,
                    max: 3,
                    pause_us: 5000,
                },
            ),
            ("drop-after-bytes:10", FaultArgs::DropAfterBytes(10)),
            ("drop-after-frames:0", FaultArgs::DropAfterFrames(0)),
            (
                "stall:100:2000",
                FaultArgs::Stall {
                    after_ms: 100,
                    for_ms: 2000,
                },
            ),
            (
                "latency:5",
                FaultArgs::Latency {
                    ms: 5,
                    jitter_ms: 0,
                },
            ),
            (
                "latency:5:2",
                FaultArgs::Latency {
                    ms: 5,
                    jitter_ms: 2,
                },
            ),
            ("bandwidth:1000", FaultArgs::Bandwidth(1000)),
            ("slow-close:30", FaultArgs::SlowClose(30)),
            ("timeout:30", FaultArgs::Timeout(30)),
            ("reset-peer:0", FaultArgs::ResetPeer(0)),
            ("corrupt-body:3", FaultArgs::CorruptBody(3)),
            (
                "corrupt-prefix:3",
                FaultArgs::CorruptPrefix(3, PrefixRewrite::Oversized),
            ),
            (
                "corrupt-prefix:3:truncated",
                FaultArgs::CorruptPrefix(3, PrefixRewrite::Truncated),
            ),
            (
                "refuse:10:20",
                FaultArgs::Refuse {
                    after_ms: 10,
                    for_ms: 20,
                },
            ),
            ("reset:7", FaultArgs::Reset(7)),
            ("duplicate:4", FaultArgs::Duplicate(4)),
            ("swap:4", FaultArgs::Swap(4)),
        ];
        for (text, want) in cases {
            let spec = text.parse::<FaultSpec>().unwrap();
            assert_eq!(spec.args, want, "{text}");
            assert_eq!(spec.direction, Direction::ToUpstream);
            assert_eq!(spec.toxicity, 1.0);
        }
        assert!(
            cases.len() >= registry::FAULTS.len(),
            "a registry row has no case here"
        );
    }

    #[test]
    fn a_direction_prefix_and_a_toxicity_suffix_parse() {
        let spec: FaultSpec = "down:duplicate:3@0.5".parse().unwrap();
        assert_eq!(spec.direction, Direction::ToClient);
        assert_eq!(spec.toxicity, 0.5);
        assert_eq!(spec.args, FaultArgs::Duplicate(3));
        let spec: FaultSpec = "up:latency:1".parse().unwrap();
        assert_eq!(spec.direction, Direction::ToUpstream);
    }

    #[test]
    fn bad_specs_name_the_spec_the_problem_and_the_valid_forms() {
        for (text, problem) in [
            ("explode", "unknown fault `explode`"),
            ("fragment:5-2", "need 1 <= MIN <= MAX"),
            ("fragment:0-2", "need 1 <= MIN <= MAX"),
            ("fragment:7", "expected MIN-MAX"),
            ("stall:1", "`stall` takes 2 argument(s), got 1"),
            ("latency:soon", "MS must be a whole number, got `soon`"),
            ("bandwidth:0", "at least 1"),
            ("corrupt-prefix:1:weird", "HOW must be"),
            ("reset:1:2", "takes 1 argument(s), got 2"),
            ("sideways:latency:1", "unknown fault `sideways`"),
            ("latency:1@2", "TOXICITY must be 0.0 to 1.0, got `2`"),
            ("", "unknown fault ``"),
        ] {
            let err = text.parse::<FaultSpec>().unwrap_err().to_string();
            assert!(err.contains(&format!("`{text}`")), "{err}");
            assert!(err.contains(problem), "{text}: {err}");
            assert!(err.contains("valid forms:"), "{err}");
            assert!(err.contains("drop-after-frames:N"), "{err}");
        }
    }

    #[test]
    fn frame_aimed_faults_are_refused_without_framing() {
        let spec: FaultSpec = "swap:1".parse().unwrap();
        let err = spec.check_framing(Framing::None).unwrap_err();
        assert!(err.contains("`swap` aims at frames"), "{err}");
        assert!(err.contains("latency"), "{err}");
        assert!(spec.check_framing(Framing::Uvarint).is_ok());
        let spec: FaultSpec = "latency:1".parse().unwrap();
        assert!(spec.check_framing(Framing::None).is_ok());
    }
}
