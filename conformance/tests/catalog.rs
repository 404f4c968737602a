//! The catalog against docs/PROTOCOL.md: every case cites a rule that
//! exists, with the rule's level, and every MUST rule has a case.

use udsipc_conformance::cases::{CATALOG, Level};
use udsipc_conformance::spec::{CHECKED_ELSEWHERE, protocol};

#[test]
fn every_case_cites_a_rule_of_protocol_md_with_its_level() {
    let rules = protocol();
    for case in CATALOG {
        let rule = rules
            .iter()
            .find(|s| s.number == case.section())
            .unwrap_or_else(|| {
                panic!(
                    "{} cites {}, which PROTOCOL.md does not define",
                    case.id,
                    case.section()
                )
            });
        assert_eq!(
            rule.level,
            Some(case.level),
            "{} is {:?} but rule {} is {:?}",
            case.id,
            case.level,
            rule.number,
            rule.level
        );
    }
}

#[test]
fn every_must_rule_has_a_case() {
    let missing: Vec<String> = protocol()
        .into_iter()
        .filter(|s| s.level == Some(Level::Must))
        .filter(|s| !CATALOG.iter().any(|c| c.section() == s.number))
        .filter(|s| !CHECKED_ELSEWHERE.iter().any(|(n, _)| *n == s.number))
        .map(|s| format!("{} {}", s.number, s.title))
        .collect();
    assert!(missing.is_empty(), "MUST rules without a case: {missing:?}");
}

#[test]
fn case_ids_are_unique_and_named_after_their_rule() {
    let mut ids: Vec<&str> = CATALOG.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), CATALOG.len(), "duplicate case IDs");
    for c in CATALOG {
        let name = &c.id[c.section().len()..];
        assert!(
            name.len() > 1
                && name.starts_with('-')
                && name[1..]
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{}: an ID is `N.N-lowercase-name`",
            c.id
        );
    }
}

#[test]
fn rules_are_numbered_once_and_in_order() {
    let rules = protocol();
    let key = |n: &str| {
        n.split('.')
            .map(|p| p.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    for pair in rules.windows(2) {
        assert!(
            key(&pair[0].number) < key(&pair[1].number),
            "{} then {}",
            pair[0].number,
            pair[1].number
        );
    }
}
