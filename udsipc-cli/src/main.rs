//! The `udsipc` command. Everything but `main` lives in the `udsipc_cli`
//! library; run `udsipc --help` for the contract.

// Counts allocations so that `udsipc bench` can report allocations per
// message of its peer processes, but only once a bench starts it: listen,
// send and proxy pay a relaxed load of a flag nobody writes per allocation.
#[cfg(feature = "bench")]
#[global_allocator]
static ALLOC: udsipc_benches::alloc::CountingWhenStarted =
    udsipc_benches::alloc::CountingWhenStarted;

fn main() -> std::process::ExitCode {
    udsipc_cli::main()
}
