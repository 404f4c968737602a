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
