//! The rules of `docs/PROTOCOL.md`, read from the document itself so the
//! catalog and the report can be checked against it: every heading of the
//! form `N.N[.N] [LEVEL] summary` is a rule; headings without a level
//! (`## 2 Framing`, `### 2.2 The length prefix`) group rules.

/// How binding the rule a case checks is (PROTOCOL.md section 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Level {
    /// A MUST rule: every implementation has to pass.
    Must,
    /// A SHOULD rule: the Go reference is judged by its documented
    /// departure, every other peer by the rule.
    Should,
}

impl Level {
    /// `MUST` or `SHOULD`, as PROTOCOL.md writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Must => "MUST",
            Self::Should => "SHOULD",
        }
    }
}

/// One numbered heading of PROTOCOL.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Its number, e.g. `2.2.3`.
    pub number: String,
    /// `Some` for a rule, `None` for a heading that groups rules.
    pub level: Option<Level>,
    /// The heading's text after the number and level.
    pub title: String,
}

/// The text of `docs/PROTOCOL.md`, built into the crate.
pub const PROTOCOL_MD: &str = include_str!("../../docs/PROTOCOL.md");

/// Every numbered heading of `text` (a PROTOCOL.md), in document order.
///
/// ```
/// use udsipc_conformance::spec::sections;
/// let s = sections("## 2 Framing\n#### 2.2.3 [MUST] Readers accept non-minimal prefixes\n");
/// assert_eq!(s[1].number, "2.2.3");
/// assert_eq!(s[1].title, "Readers accept non-minimal prefixes");
/// assert!(s[0].level.is_none() && s[1].level.is_some());
/// ```
pub fn sections(text: &str) -> Vec<Section> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("##")?.trim_start_matches('#');
            let rest = rest.strip_prefix(' ')?;
            let (number, rest) = rest.split_once(' ')?;
            let numbered = !number.is_empty()
                && number
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            if !numbered {
                return None;
            }
            let (level, title) = if let Some(t) = rest.strip_prefix("[MUST] ") {
                (Some(Level::Must), t)
            } else if let Some(t) = rest.strip_prefix("[SHOULD] ") {
                (Some(Level::Should), t)
            } else {
                (None, rest)
            };
            Some(Section {
                number: number.to_owned(),
                level,
                title: title.to_owned(),
            })
        })
        .collect()
}

/// The sections of the built-in PROTOCOL.md.
pub fn protocol() -> Vec<Section> {
    sections(PROTOCOL_MD)
}

/// The title of section `number` (with its level, for rules), or `""`.
pub fn title(number: &str) -> String {
    protocol()
        .into_iter()
        .find(|s| s.number == number)
        .map(|s| match s.level {
            Some(l) => format!("[{}] {}", l.as_str(), s.title),
            None => s.title,
        })
        .unwrap_or_default()
}

/// MUST rules the black-box suite cannot check, with where they are
/// checked instead. The catalog test accepts these without a case.
pub const CHECKED_ELSEWHERE: &[(&str, &str)] = &[(
    "6.2",
    "a NUL byte cannot travel in a command line, so no peer can be given such a name; \
     udsipc/tests/addressing.rs checks it for the Rust crate",
)];
