//! The fault registry: one row per fault, from which everything else that
//! names faults is derived: the `--fault` SPEC parser and its valid-forms
//! message ([`super::spec`]), the toxiproxy-compatible API's toxic types
//! ([`super::api`]), and the README's fault table ([`markdown_table`], kept
//! in step by a test).
//!
//! A new fault is one row here, one [`FaultArgs`] variant and its arm in
//! [`FaultArgs::build`].

use std::time::Duration;

use serde_json::{Map, Value};

use super::{
    Bandwidth, CorruptBody, CorruptPrefix, DropAfterBytes, DropAfterFrames, Duplicate, Fault,
    Fragment, Latency, Outage, PrefixRewrite, Reset, ResetPeer, SlowClose, Stall, Swap, Timeout,
};

/// One fault as the registry knows it.
#[derive(Debug)]
#[non_exhaustive]
pub struct FaultKind {
    /// The SPEC name (`drop-after-frames`) and event-log name.
    pub name: &'static str,
    /// The SPEC arguments after `NAME:` (`N`, `MIN-MAX[:PAUSE_MS]`).
    pub args: &'static str,
    /// The control API's toxic `type`.
    pub toxic: &'static str,
    /// Whether `toxic` is one of toxiproxy's own types (else it is ours).
    pub toxiproxy: bool,
    /// The toxic's `attributes`: name and the JSON of its default.
    pub attributes: &'static [(&'static str, &'static str)],
    /// Whether it needs the uvarint framing (aims at frame N).
    pub frame_aware: bool,
    /// One line of documentation.
    pub doc: &'static str,
    from_spec: fn(&[&str]) -> Result<FaultArgs, String>,
    from_attributes: fn(&Map<String, Value>) -> Result<FaultArgs, String>,
}

impl FaultKind {
    /// `NAME:ARGS`, as `--help` shows it.
    pub fn form(&self) -> String {
        if self.args.is_empty() {
            self.name.to_owned()
        } else {
            format!("{}:{}", self.name, self.args)
        }
    }

    /// Parses the arguments of a SPEC (the `:`-separated parts after the
    /// name).
    pub fn parse_spec(&self, args: &[&str]) -> Result<FaultArgs, String> {
        (self.from_spec)(args)
    }

    /// Parses a toxic's `attributes` (missing ones take their defaults, as
    /// toxiproxy's zero values).
    pub fn parse_attributes(&self, attributes: &Map<String, Value>) -> Result<FaultArgs, String> {
        for key in attributes.keys() {
            if !self.attributes.iter().any(|(name, _)| name == key) {
                let known: Vec<&str> = self.attributes.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "`{}` has no attribute `{key}` (it has: {})",
                    self.toxic,
                    known.join(", ")
                ));
            }
        }
        (self.from_attributes)(attributes)
    }

    /// `attributes` with every missing attribute set to its default.
    pub fn complete_attributes(&self, attributes: &Map<String, Value>) -> Map<String, Value> {
        self.attributes
            .iter()
            .map(|(name, default)| {
                let value = attributes
                    .get(*name)
                    .cloned()
                    .unwrap_or_else(|| serde_json::from_str(default).unwrap_or(Value::Null));
                ((*name).to_owned(), value)
            })
            .collect()
    }
}

/// A fault's parameters, parsed from a SPEC or from toxic attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultArgs {
    /// `fragment`: writes of `min..=max` bytes, `pause_us` apart.
    Fragment {
        /// Smallest write.
        min: usize,
        /// Largest write.
        max: usize,
        /// Pause between writes, µs.
        pause_us: u64,
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
    /// `latency:MS[:JITTER_MS]`
    Latency {
        /// Delay.
        ms: u64,
        /// Jitter (±).
        jitter_ms: u64,
    },
    /// `bandwidth:BYTES_PER_SEC`
    Bandwidth(u64),
    /// `slow-close:MS`
    SlowClose(u64),
    /// `timeout:MS`
    Timeout(u64),
    /// `reset-peer:MS`
    ResetPeer(u64),
    /// `corrupt-body:FRAME`
    CorruptBody(u64),
    /// `corrupt-prefix:FRAME[:HOW]`
    CorruptPrefix(u64, PrefixRewrite),
    /// `refuse:AFTER_MS:FOR_MS`
    Refuse {
        /// When, after the proxy started (or the toxic was added).
        after_ms: u64,
        /// How long.
        for_ms: u64,
    },
    /// `reset:AFTER_FRAMES`
    Reset(u64),
    /// `duplicate:FRAME`
    Duplicate(u64),
    /// `swap:FRAME`
    Swap(u64),
}

/// What a fault becomes: a [`Fault`] on a direction, or an outage of the
/// whole listener.
#[non_exhaustive]
pub enum Built {
    /// A fault value.
    Fault(Box<dyn Fault>),
    /// The listener goes away for a while.
    Outage(Outage),
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fault(fault) => f.debug_tuple("Fault").field(&fault.name()).finish(),
            Self::Outage(o) => f.debug_tuple("Outage").field(o).finish(),
        }
    }
}

impl FaultArgs {
    /// Makes the fault.
    pub fn build(self) -> Built {
        let ms = Duration::from_millis;
        let fault: Box<dyn Fault> = match self {
            Self::Fragment { min, max, pause_us } => {
                Box::new(Fragment::new(min, max).pause(Duration::from_micros(pause_us)))
            }
            Self::DropAfterBytes(n) => Box::new(DropAfterBytes::new(n)),
            Self::DropAfterFrames(n) => Box::new(DropAfterFrames::new(n)),
            Self::Stall { after_ms, for_ms } => Box::new(Stall::new(ms(after_ms), ms(for_ms))),
            Self::Latency { ms: d, jitter_ms } => {
                Box::new(Latency::new(ms(d)).jitter(ms(jitter_ms)))
            }
            Self::Bandwidth(rate) => Box::new(Bandwidth(rate)),
            Self::SlowClose(d) => Box::new(SlowClose::new(ms(d))),
            Self::Timeout(d) => Box::new(Timeout::new(ms(d))),
            Self::ResetPeer(d) => Box::new(ResetPeer::new(ms(d))),
            Self::CorruptBody(frame) => Box::new(CorruptBody::new(frame)),
            Self::CorruptPrefix(frame, how) => Box::new(CorruptPrefix::new(frame, how)),
            Self::Refuse { after_ms, for_ms } => {
                return Built::Outage(Outage::new(ms(after_ms), ms(for_ms)));
            }
            Self::Reset(n) => Box::new(Reset::after_frames(n)),
            Self::Duplicate(n) => Box::new(Duplicate::new(n)),
            Self::Swap(n) => Box::new(Swap::new(n)),
        };
        Built::Fault(fault)
    }

    /// The toxic `attributes` that describe these arguments (the API shows
    /// them for faults given as `--fault`; `bandwidth`'s `rate` is rounded
    /// down to whole KB/s, `slicer`'s are centred on the MIN-MAX range).
    pub fn attributes(&self) -> Map<String, Value> {
        let pairs: Vec<(&str, Value)> = match *self {
            Self::Fragment { min, max, pause_us } => vec![
                ("average_size", ((min + max) / 2).into()),
                ("size_variation", ((max - min) / 2).into()),
                ("delay", pause_us.into()),
            ],
            Self::DropAfterBytes(n) => vec![("bytes", n.into())],
            Self::DropAfterFrames(n) | Self::Reset(n) => vec![("frames", n.into())],
            Self::Stall { after_ms, for_ms } | Self::Refuse { after_ms, for_ms } => {
                vec![("after", after_ms.into()), ("duration", for_ms.into())]
            }
            Self::Latency { ms, jitter_ms } => {
                vec![("latency", ms.into()), ("jitter", jitter_ms.into())]
            }
            Self::Bandwidth(rate) => vec![("rate", (rate / 1000).into())],
            Self::SlowClose(d) => vec![("delay", d.into())],
            Self::Timeout(d) | Self::ResetPeer(d) => vec![("timeout", d.into())],
            Self::CorruptBody(n) | Self::Duplicate(n) | Self::Swap(n) => vec![("frame", n.into())],
            Self::CorruptPrefix(n, how) => vec![("frame", n.into()), ("how", how.as_str().into())],
        };
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// The registry row of this fault.
    pub fn kind(&self) -> &'static FaultKind {
        let name = match self {
            Self::Fragment { .. } => "fragment",
            Self::DropAfterBytes(_) => "drop-after-bytes",
            Self::DropAfterFrames(_) => "drop-after-frames",
            Self::Stall { .. } => "stall",
            Self::Latency { .. } => "latency",
            Self::Bandwidth(_) => "bandwidth",
            Self::SlowClose(_) => "slow-close",
            Self::Timeout(_) => "timeout",
            Self::ResetPeer(_) => "reset-peer",
            Self::CorruptBody(_) => "corrupt-body",
            Self::CorruptPrefix(..) => "corrupt-prefix",
            Self::Refuse { .. } => "refuse",
            Self::Reset(_) => "reset",
            Self::Duplicate(_) => "duplicate",
            Self::Swap(_) => "swap",
        };
        by_name(name).unwrap_or(&FAULTS[0])
    }
}

fn want(args: &[&str], min: usize, max: usize) -> Result<(), String> {
    if args.len() < min || args.len() > max {
        let n = if min == max {
            min.to_string()
        } else {
            format!("{min} to {max}")
        };
        return Err(format!("takes {n} argument(s), got {}", args.len()));
    }
    Ok(())
}

fn num(args: &[&str], i: usize, what: &str) -> Result<u64, String> {
    args[i]
        .parse::<u64>()
        .map_err(|_| format!("{what} must be a whole number, got `{}`", args[i]))
}

fn opt(args: &[&str], i: usize, what: &str) -> Result<u64, String> {
    if i < args.len() {
        num(args, i, what)
    } else {
        Ok(0)
    }
}

/// One argument spec: `NAME:N`.
fn one(args: &[&str], what: &str) -> Result<u64, String> {
    want(args, 1, 1)?;
    num(args, 0, what)
}

fn attr(m: &Map<String, Value>, name: &str) -> Result<u64, String> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .ok_or_else(|| format!("attribute `{name}` must be a non-negative number, got {v}")),
    }
}

fn at_least_one(v: u64, what: &str) -> Result<u64, String> {
    if v == 0 {
        return Err(format!("{what} must be at least 1"));
    }
    Ok(v)
}

fn rewrite(how: Option<&str>) -> Result<PrefixRewrite, String> {
    match how {
        None | Some("oversized") => Ok(PrefixRewrite::Oversized),
        Some("overflow") => Ok(PrefixRewrite::Overflow),
        Some("truncated") => Ok(PrefixRewrite::Truncated),
        Some(other) => Err(format!(
            "HOW must be oversized, overflow or truncated, got `{other}`"
        )),
    }
}

fn fragment_spec(args: &[&str]) -> Result<FaultArgs, String> {
    want(args, 1, 2)?;
    let (min, max) = args[0]
        .split_once('-')
        .ok_or_else(|| format!("expected MIN-MAX, got `{}`", args[0]))?;
    let parse = |s: &str, what: &str| {
        s.parse::<usize>()
            .map_err(|_| format!("{what} must be a whole number, got `{s}`"))
    };
    let (min, max) = (parse(min, "MIN")?, parse(max, "MAX")?);
    if min == 0 || max < min {
        return Err(format!("need 1 <= MIN <= MAX, got {min}-{max}"));
    }
    Ok(FaultArgs::Fragment {
        min,
        max,
        pause_us: opt(args, 1, "PAUSE_MS")?.saturating_mul(1000),
    })
}

fn slicer_attributes(m: &Map<String, Value>) -> Result<FaultArgs, String> {
    let average = at_least_one(attr(m, "average_size")?, "average_size")?;
    let variation = attr(m, "size_variation")?.min(average - 1);
    Ok(FaultArgs::Fragment {
        min: usize::try_from(average - variation).unwrap_or(usize::MAX),
        max: usize::try_from(average + variation).unwrap_or(usize::MAX),
        pause_us: attr(m, "delay")?,
    })
}

/// Every fault, in the order `--help` and the README list them.
pub static FAULTS: &[FaultKind] = &[
    FaultKind {
        name: "latency",
        args: "MS[:JITTER_MS]",
        toxic: "latency",
        toxiproxy: true,
        attributes: &[("latency", "0"), ("jitter", "0")],
        frame_aware: false,
        doc: "deliver every chunk MS later (each ± a random JITTER_MS); order is kept",
        from_spec: |a| {
            want(a, 1, 2)?;
            Ok(FaultArgs::Latency {
                ms: num(a, 0, "MS")?,
                jitter_ms: opt(a, 1, "JITTER_MS")?,
            })
        },
        from_attributes: |m| {
            Ok(FaultArgs::Latency {
                ms: attr(m, "latency")?,
                jitter_ms: attr(m, "jitter")?,
            })
        },
    },
    FaultKind {
        name: "bandwidth",
        args: "BYTES_PER_SEC",
        toxic: "bandwidth",
        toxiproxy: true,
        attributes: &[("rate", "0")],
        frame_aware: false,
        doc: "forward at most BYTES_PER_SEC per connection (the API's `rate` is in KB/s)",
        from_spec: |a| {
            Ok(FaultArgs::Bandwidth(at_least_one(
                one(a, "BYTES_PER_SEC")?,
                "BYTES_PER_SEC",
            )?))
        },
        from_attributes: |m| {
            Ok(FaultArgs::Bandwidth(
                at_least_one(attr(m, "rate")?, "rate")?.saturating_mul(1000),
            ))
        },
    },
    FaultKind {
        name: "slow-close",
        args: "MS",
        toxic: "slow_close",
        toxiproxy: true,
        attributes: &[("delay", "0")],
        frame_aware: false,
        doc: "pass a clean close on MS late",
        from_spec: |a| Ok(FaultArgs::SlowClose(one(a, "MS")?)),
        from_attributes: |m| Ok(FaultArgs::SlowClose(attr(m, "delay")?)),
    },
    FaultKind {
        name: "timeout",
        args: "MS",
        toxic: "timeout",
        toxiproxy: true,
        attributes: &[("timeout", "0")],
        frame_aware: false,
        doc: "let nothing through, and cut each connection after MS (never if 0)",
        from_spec: |a| Ok(FaultArgs::Timeout(one(a, "MS")?)),
        from_attributes: |m| Ok(FaultArgs::Timeout(attr(m, "timeout")?)),
    },
    FaultKind {
        name: "reset-peer",
        args: "MS",
        toxic: "reset_peer",
        toxiproxy: true,
        attributes: &[("timeout", "0")],
        frame_aware: false,
        doc: "cut each connection MS after it began, unread bytes discarded (0: at once)",
        from_spec: |a| Ok(FaultArgs::ResetPeer(one(a, "MS")?)),
        from_attributes: |m| Ok(FaultArgs::ResetPeer(attr(m, "timeout")?)),
    },
    FaultKind {
        name: "fragment",
        args: "MIN-MAX[:PAUSE_MS]",
        toxic: "slicer",
        toxiproxy: true,
        attributes: &[
            ("average_size", "0"),
            ("size_variation", "0"),
            ("delay", "0"),
        ],
        frame_aware: false,
        doc: "deliver in writes of MIN..=MAX bytes (split anywhere), PAUSE_MS apart (the API's `delay` is in µs)",
        from_spec: fragment_spec,
        from_attributes: slicer_attributes,
    },
    FaultKind {
        name: "drop-after-bytes",
        args: "N",
        toxic: "limit_data",
        toxiproxy: true,
        attributes: &[("bytes", "0")],
        frame_aware: false,
        doc: "close both sides of each connection after N bytes",
        from_spec: |a| Ok(FaultArgs::DropAfterBytes(one(a, "N")?)),
        from_attributes: |m| Ok(FaultArgs::DropAfterBytes(attr(m, "bytes")?)),
    },
    FaultKind {
        name: "refuse",
        args: "AFTER_MS:FOR_MS",
        toxic: "refuse",
        toxiproxy: false,
        attributes: &[("after", "0"), ("duration", "0")],
        frame_aware: false,
        doc: "AFTER_MS after start, stop listening (and cut connections) for FOR_MS (toxiproxy: `enabled: false`, its clients' `down`)",
        from_spec: |a| {
            want(a, 2, 2)?;
            Ok(FaultArgs::Refuse {
                after_ms: num(a, 0, "AFTER_MS")?,
                for_ms: num(a, 1, "FOR_MS")?,
            })
        },
        from_attributes: |m| {
            Ok(FaultArgs::Refuse {
                after_ms: attr(m, "after")?,
                for_ms: attr(m, "duration")?,
            })
        },
    },
    FaultKind {
        name: "stall",
        args: "AFTER_MS:FOR_MS",
        toxic: "stall",
        toxiproxy: false,
        attributes: &[("after", "0"), ("duration", "0")],
        frame_aware: false,
        doc: "once, AFTER_MS after start, stop reading from the source for FOR_MS",
        from_spec: |a| {
            want(a, 2, 2)?;
            Ok(FaultArgs::Stall {
                after_ms: num(a, 0, "AFTER_MS")?,
                for_ms: num(a, 1, "FOR_MS")?,
            })
        },
        from_attributes: |m| {
            Ok(FaultArgs::Stall {
                after_ms: attr(m, "after")?,
                for_ms: attr(m, "duration")?,
            })
        },
    },
    FaultKind {
        name: "drop-after-frames",
        args: "N",
        toxic: "drop_after_frames",
        toxiproxy: false,
        attributes: &[("frames", "0")],
        frame_aware: true,
        doc: "close both sides of each connection after N whole frames",
        from_spec: |a| Ok(FaultArgs::DropAfterFrames(one(a, "N")?)),
        from_attributes: |m| Ok(FaultArgs::DropAfterFrames(attr(m, "frames")?)),
    },
    FaultKind {
        name: "reset",
        args: "AFTER_FRAMES",
        toxic: "reset",
        toxiproxy: false,
        attributes: &[("frames", "0")],
        frame_aware: true,
        doc: "after AFTER_FRAMES whole frames, close the client side with unread data, leave the upstream open and silent (down: the other way round)",
        from_spec: |a| Ok(FaultArgs::Reset(one(a, "AFTER_FRAMES")?)),
        from_attributes: |m| Ok(FaultArgs::Reset(attr(m, "frames")?)),
    },
    FaultKind {
        name: "corrupt-body",
        args: "FRAME",
        toxic: "corrupt_body",
        toxiproxy: false,
        attributes: &[("frame", "0")],
        frame_aware: true,
        doc: "flip one bit in the body of frame FRAME (from 0) of each connection",
        from_spec: |a| Ok(FaultArgs::CorruptBody(one(a, "FRAME")?)),
        from_attributes: |m| Ok(FaultArgs::CorruptBody(attr(m, "frame")?)),
    },
    FaultKind {
        name: "corrupt-prefix",
        args: "FRAME[:HOW]",
        toxic: "corrupt_prefix",
        toxiproxy: false,
        attributes: &[("frame", "0"), ("how", "\"oversized\"")],
        frame_aware: true,
        doc: "rewrite frame FRAME's length prefix; HOW = oversized (default), overflow, truncated",
        from_spec: |a| {
            want(a, 1, 2)?;
            let how = rewrite(a.get(1).copied())?;
            Ok(FaultArgs::CorruptPrefix(num(a, 0, "FRAME")?, how))
        },
        from_attributes: |m| {
            let how = match m.get("how") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.as_str()),
                Some(other) => {
                    return Err(format!("attribute `how` must be a string, got {other}"));
                }
            };
            Ok(FaultArgs::CorruptPrefix(attr(m, "frame")?, rewrite(how)?))
        },
    },
    FaultKind {
        name: "duplicate",
        args: "FRAME",
        toxic: "duplicate",
        toxiproxy: false,
        attributes: &[("frame", "0")],
        frame_aware: true,
        doc: "deliver frame FRAME (from 0) of each connection twice in a row",
        from_spec: |a| Ok(FaultArgs::Duplicate(one(a, "FRAME")?)),
        from_attributes: |m| Ok(FaultArgs::Duplicate(attr(m, "frame")?)),
    },
    FaultKind {
        name: "swap",
        args: "FRAME",
        toxic: "swap",
        toxiproxy: false,
        attributes: &[("frame", "0")],
        frame_aware: true,
        doc: "deliver frames FRAME and FRAME+1 of each connection in swapped order",
        from_spec: |a| Ok(FaultArgs::Swap(one(a, "FRAME")?)),
        from_attributes: |m| Ok(FaultArgs::Swap(attr(m, "frame")?)),
    },
];

/// The row for a SPEC name.
pub fn by_name(name: &str) -> Option<&'static FaultKind> {
    FAULTS.iter().find(|k| k.name == name)
}

/// The row for a toxic `type`.
pub fn by_toxic(toxic: &str) -> Option<&'static FaultKind> {
    FAULTS.iter().find(|k| k.toxic == toxic)
}

/// Every accepted SPEC form, one per line, as `--help` and error messages
/// show them.
pub fn valid_forms() -> String {
    let mut out = String::from(
        "  [up:|down:]NAME:ARGS[@TOXICITY]  up: client -> upstream (default), down: upstream -> client;\n\
         \x20                                  @TOXICITY: the share of connections it applies to (0.0-1.0)\n",
    );
    for kind in FAULTS {
        let form = kind.form();
        let pad = if form.len() < 30 { 30 - form.len() } else { 1 };
        out.push_str(&format!("  {form}{}{}", " ".repeat(pad), kind.doc));
        if kind.frame_aware {
            out.push_str(" [frames]");
        }
        out.push('\n');
    }
    out.pop();
    out
}

/// The README's fault table (markdown): SPEC, toxic type, attributes, what
/// it does.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| `--fault` SPEC | toxic `type` (API) | `attributes` | what it does |\n|---|---|---|---|\n",
    );
    for kind in FAULTS {
        let toxic = if kind.toxiproxy {
            format!("`{}` (toxiproxy)", kind.toxic)
        } else {
            format!("`{}` (udsipc)", kind.toxic)
        };
        let attributes: Vec<String> = kind
            .attributes
            .iter()
            .map(|(name, _)| format!("`{name}`"))
            .collect();
        let frames = if kind.frame_aware {
            "; needs `--framing uvarint`"
        } else {
            ""
        };
        out.push_str(&format!(
            "| `{}` | {toxic} | {} | {}{frames} |\n",
            kind.form(),
            attributes.join(", "),
            kind.doc.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_names_a_distinct_fault_and_toxic_and_round_trips_its_kind() {
        for (i, kind) in FAULTS.iter().enumerate() {
            assert!(
                FAULTS[..i]
                    .iter()
                    .all(|k| k.name != kind.name && k.toxic != kind.toxic)
            );
            let args = kind
                .parse_attributes(&Map::new())
                .or_else(|_| {
                    let mut m = Map::new();
                    for (name, _) in kind.attributes {
                        m.insert((*name).to_owned(), Value::from(2));
                    }
                    kind.parse_attributes(&m)
                })
                .unwrap();
            assert_eq!(args.kind().name, kind.name);
            // The attributes it shows parse back to the same arguments
            // (bandwidth rounds to KB/s, so it is built from KB/s here).
            assert_eq!(
                kind.parse_attributes(&args.attributes()),
                Ok(args),
                "{}",
                kind.name
            );
        }
    }

    #[test]
    fn slicer_attributes_become_fragments_around_the_average() {
        let m: Map<String, Value> =
            serde_json::from_str(r#"{"average_size": 10, "size_variation": 4, "delay": 50}"#)
                .unwrap();
        assert_eq!(
            by_toxic("slicer").unwrap().parse_attributes(&m),
            Ok(FaultArgs::Fragment {
                min: 6,
                max: 14,
                pause_us: 50
            })
        );
    }

    #[test]
    fn unknown_attributes_are_refused_naming_the_known_ones() {
        let m: Map<String, Value> = serde_json::from_str(r#"{"latncy": 5}"#).unwrap();
        let err = by_toxic("latency")
            .unwrap()
            .parse_attributes(&m)
            .unwrap_err();
        assert!(
            err.contains("latncy") && err.contains("latency, jitter"),
            "{err}"
        );
    }
}
