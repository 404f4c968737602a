//! The fault table in this crate's README (`udsipc-testkit/README.md`, where
//! the workspace README links for fault injection) is the registry's:
//! regenerate it with
//! `UDSIPC_WRITE_README=1 cargo test -p udsipc-testkit --test readme_fault_table`.

use udsipc_testkit::proxy::registry::markdown_table;

const BEGIN: &str = "<!-- fault-table:begin (generated from the fault registry) -->\n";
const END: &str = "<!-- fault-table:end -->";

#[test]
fn the_readme_fault_table_matches_the_registry() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme
        .find(BEGIN)
        .expect("README has no fault-table:begin marker")
        + BEGIN.len();
    let end = readme[start..]
        .find(END)
        .expect("README has no fault-table:end marker")
        + start;
    let table = markdown_table();
    if std::env::var_os("UDSIPC_WRITE_README").is_some_and(|v| !v.is_empty()) {
        let updated = format!("{}{table}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        readme[start..end],
        table,
        "the README's fault table is stale: rerun with UDSIPC_WRITE_README=1"
    );
}
