//! The `udsipc` command. Everything but `main` lives in the `udsipc_cli`
//! library; run `udsipc --help` for the contract.

// Counts allocations (one relaxed atomic add each) so that `udsipc bench`
// can report allocations per message of its peer processes.
#[global_allocator]
static ALLOC: udsipc_benches::alloc::Counting = udsipc_benches::alloc::Counting;

fn main() -> std::process::ExitCode {
    udsipc_cli::main()
}
