//! Assembles `target/conformance/report.{json,md}` from the per-test
//! result files the conformance tests wrote; exits 1 if a run failed.

fn main() {
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
