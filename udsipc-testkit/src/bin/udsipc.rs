//! The `udsipc` command. Everything but `main` lives in
//! [`udsipc_testkit::cli`]; run `udsipc --help` for the contract.

fn main() -> std::process::ExitCode {
    udsipc_testkit::cli::main()
}
