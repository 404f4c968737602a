//! Assembles `target/conformance/report.{json,md}` from the per-test
//! result files the conformance tests wrote; exits 1 if a run failed or
//! none was recorded. `--clean` instead deletes old result files (run it
//! before the tests, so the report shows this run only).

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--clean") {
        let dir = udsipc_conformance::report::results_dir();
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                eprintln!("conformance-report: removing {}: {e}", dir.display());
                std::process::exit(1);
            }
            _ => {}
        }
        return;
    }
    match udsipc_conformance::report::write_report() {
        Ok(results) => {
            let failed = results.iter().filter(|r| !r.pass).count();
            let dir = udsipc_conformance::gopeer::out_dir();
            println!(
                "conformance: {} runs, {failed} failed; report in {}",
                results.len(),
                dir.join("report.md").display()
            );
            if results.is_empty() || failed > 0 {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("conformance-report: {e}");
            std::process::exit(1);
        }
    }
}
