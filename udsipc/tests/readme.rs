//! The READMEs' quick start is `examples/quick_start.rs`, which CI compiles
//! and runs: a new user who copies it gets a program that builds.

use std::path::PathBuf;

/// The first ```rust block after the "Quick start" heading.
fn quick_start_block(readme: &str) -> &str {
    let heading = readme
        .find("## Quick start")
        .expect("a Quick start section");
    let start = readme[heading..].find("```rust\n").expect("a rust block") + heading + 8;
    let len = readme[start..].find("```\n").expect("the block's end");
    &readme[start..start + len]
}

/// The crate's directory: test runners start test binaries there (a path
/// compiled in would be wrong for a binary reused from another checkout,
/// as when the packaged crate is tested).
fn crate_dir() -> PathBuf {
    std::env::current_dir().unwrap()
}

fn example_main() -> String {
    let dir = crate_dir();
    let ex = std::fs::read_to_string(dir.join("examples/quick_start.rs")).unwrap();
    ex[ex.find("use std::time::Duration;").unwrap()..].to_owned()
}

#[test]
fn the_crate_readme_quick_start_is_the_quick_start_example() {
    let dir = crate_dir();
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert_eq!(quick_start_block(&readme), example_main());
}

#[test]
fn the_workspace_readme_quick_start_is_the_quick_start_example() {
    // Absent from the published crate, present in the repository.
    let path = crate_dir().join("../README.md");
    let Ok(readme) = std::fs::read_to_string(path) else {
        return;
    };
    assert_eq!(quick_start_block(&readme), example_main());
}

/// The workspace README is a front door (issue 23): at most 300 lines, the
/// two commands first, and one link away from every example and from every
/// document its old sections moved to.
#[test]
fn the_workspace_readme_links_every_example_and_every_moved_section() {
    // Absent from the published crate, present in the repository.
    let root = crate_dir().join("..");
    let Ok(readme) = std::fs::read_to_string(root.join("README.md")) else {
        return;
    };
    let lines = readme.lines().count();
    assert!(lines <= 300, "README.md has {lines} lines (at most 300)");
    let opening: Vec<&str> = readme.lines().skip(3).take(2).collect();
    assert!(
        opening[0].starts_with("cargo run --release -p udsipc-cli -- bench"),
        "the main job's command comes first: {opening:?}"
    );
    assert!(
        opening[1].starts_with("ci/test "),
        "then the tests: {opening:?}"
    );

    let mut examples: Vec<String> = std::fs::read_dir(crate_dir().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".rs"))
        .collect();
    examples.sort();
    assert!(!examples.is_empty());
    for name in &examples {
        let link = format!("](udsipc/examples/{name})");
        assert!(readme.contains(&link), "README.md does not link {link}");
    }

    for doc in [
        "SECURITY.md",
        "docs/from-go.md",
        "docs/guarantees.md",
        "docs/PROTOCOL.md",
        "docs/bench-log.md",
        "benches/README.md",
        "udsipc-testkit/README.md",
        "conformance/README.md",
        "conformance/PEERS.md",
        "udsipc-cli/README.md",
    ] {
        assert!(root.join(doc).is_file(), "{doc} is missing");
        let link = format!("]({doc}");
        assert!(readme.contains(&link), "README.md does not link {doc}");
    }
}
