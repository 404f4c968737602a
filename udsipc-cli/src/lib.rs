//! The `udsipc` command line (the `udsipc` binary of this package): the
//! argument grammar, exit codes, and the reporting every subcommand shares.
//! Install it with `cargo install --locked udsipc-cli` (or `--path udsipc-cli` from
//! a checkout); `udsipc --help` teaches the rest.
//!
//! Every subcommand follows one contract, which scripts rely on:
//!
//! | situation | stderr | exit code |
//! |---|---|---|
//! | success | ..., then one JSON object of counters as the last line | 0 |
//! | the command ran but failed (bind refused, messages lost, stdout closed) | `error: ...`, then the JSON line if the command got as far as running | 1 |
//! | bad arguments or unusable input (invalid hex) | clap's usage error, or `error: ...` (then the JSON line if something already ran) | 2 |
//!
//! Each subcommand owns its arguments, its run and its stats in its own
//! module ([`listen`], [`send`], [`proxy`]); `bench` is the table runner of
//! `udsipc-benches` (it prints `error: ...` and exits 1 when it fails),
//! built with the default cargo feature `bench` (without it, the binary
//! links no bench code and installs no counting allocator).
//! Two hidden subcommands are the peer roles the test suites spawn, so one
//! Rust program serves them all: `udsipc peer hello|read|write ...` (the
//! conformance suite's peer contract, see `conformance/PEERS.md`) and
//! `udsipc bench peer --role reader|writer ...` (one side of a measured
//! pair). This module only dispatches and turns an outcome into stderr lines
//! and an exit code.

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod hex;
pub mod listen;
pub mod observe;
mod peer;
mod printer;
pub mod proxy;
pub mod send;
mod signals;

const ABOUT: &str = "Send and receive udsipc messages (varint length-prefixed frames over a Unix stream socket) from the shell";

const AFTER_HELP: &str = "\
Examples:
  # terminal 1: print every message as hex until Ctrl-C
  udsipc listen /tmp/app.sock --format hex
  # terminal 2: one message per line of stdin
  printf 'hello\\nworld\\n' | udsipc send /tmp/app.sock

Each subcommand writes one JSON object of counters as its last line on stderr
(bench prints its tables on stdout instead).
Exit codes: 0 success, 1 the command failed, 2 bad arguments or input.";

/// The whole command line: `udsipc <COMMAND> ...`.
#[derive(Debug, Parser)]
#[command(name = "udsipc", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Receive messages on a socket and print one line per message.
    #[command(long_about = listen::LONG_ABOUT)]
    Listen(listen::ListenArgs),
    /// Send messages (arguments, or lines of stdin) to a socket.
    #[command(long_about = send::LONG_ABOUT)]
    Send(send::SendArgs),
    /// Forward a socket to another, injecting faults (drops, stalls, partial writes, ...).
    #[command(long_about = proxy::LONG_ABOUT)]
    Proxy(proxy::ProxyArgs),
    /// Measure udsipc next to the Go reference, tokio-util and the raw socket (the side-by-side table).
    #[cfg(feature = "bench")]
    #[command(long_about = udsipc_benches::run::LONG_ABOUT)]
    Bench(udsipc_benches::run::BenchArgs),
    /// Print a shell completion script on stdout (e.g. `udsipc completions bash > /etc/bash_completion.d/udsipc`).
    Completions {
        /// The shell to complete in
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout (e.g. `udsipc man > udsipc.1; man ./udsipc.1`).
    Man,
    /// The conformance suite's peer contract (`hello`, `read`, `write`):
    /// spawned by the suite, not meant to be run by hand.
    #[command(hide = true, disable_help_flag = true)]
    Peer {
        /// The role and its flags, parsed by the contract's own rules
        /// (unknown roles and flags exit 127).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Parses the process arguments, runs the subcommand and returns its exit
/// code; this is the whole `udsipc` binary.
pub fn main() -> ExitCode {
    run(Cli::parse())
}

/// Runs an already parsed command line: prints its report on stderr and
/// returns its exit code.
pub fn run(cli: Cli) -> ExitCode {
    observe::init_tracing();
    raise_descriptor_limit();
    let outcome = match cli.command {
        Command::Listen(args) => listen::run(args),
        Command::Send(args) => send::run(args),
        Command::Proxy(args) => proxy::run(args),
        #[cfg(feature = "bench")]
        Command::Bench(args) => Outcome {
            failure: udsipc_benches::run::run(&args).err().map(CliError::Failed),
            stats: None,
        },
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "udsipc", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man => return man(),
        Command::Peer { args } => return peer::run(&args),
    };
    outcome.report()
}

/// `udsipc man`: the roff man page on stdout.
fn man() -> ExitCode {
    let command = <Cli as clap::CommandFactory>::command();
    let mut page = Vec::new();
    match clap_mangen::Man::new(command).render(&mut page) {
        Ok(()) => {
            use std::io::Write;
            match std::io::stdout().write_all(&page) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing to stdout failed: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            eprintln!("error: rendering the man page failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// Raises the soft limit on open descriptors to the hard one, as the Go
/// runtime does at start: a listener or a proxy serving many connections
/// should not run out at a distribution's default soft limit (often 1,024)
/// when the hard one allows more. Best effort: a failure leaves the limit
/// as it was.
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Why a subcommand failed, which decides its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CliError {
    /// The arguments or the input cannot be used: exit code 2.
    Usage(String),
    /// The command ran and could not do its job: exit code 1.
    Failed(String),
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Failed(_) => 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Self::Usage(message) | Self::Failed(message)) = self;
        // One line, always: scripts read stderr line by line.
        f.write_str(&message.replace('\n', " "))
    }
}

impl std::error::Error for CliError {}

/// What a subcommand ended with.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Why it failed, if it did.
    pub(crate) failure: Option<CliError>,
    /// The JSON stats line, when the command got as far as running.
    pub(crate) stats: Option<String>,
}

impl Outcome {
    /// A failure before anything ran: no stats line.
    pub(crate) fn early(failure: CliError) -> Self {
        Self {
            failure: Some(failure),
            stats: None,
        }
    }

    /// Prints `error: ...` (if any), then the stats line, and returns the
    /// exit code.
    fn report(self) -> ExitCode {
        if let Some(failure) = &self.failure {
            eprintln!("error: {failure}");
        }
        if let Some(stats) = &self.stats {
            eprintln!("{stats}");
        }
        ExitCode::from(self.failure.map_or(0, |f| f.exit_code()))
    }
}

/// Serialises a stats struct as the one-line JSON object that ends stderr.
pub(crate) fn stats_line(stats: &impl serde::Serialize) -> String {
    serde_json::to_string(stats).expect("stats are plain integers and always serialise")
}

/// The runtime the subcommands run on. Multi-threaded, because a `listen`
/// handler may block on a full printer queue while other connections keep
/// being served.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("failed to start the tokio runtime: {e}")))
}

/// Parses decimal seconds (`5`, `0.5`, `1e-3`) into a duration; refuses
/// negative, NaN and infinite values, and values past the largest duration
/// (about 1.8e19 seconds). Any value up to that is taken as given: the
/// library saturates, so a huge one such as `1e19` means "never".
pub(crate) fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| "expected a number of seconds, such as 5 or 0.5".to_owned())?;
    if !secs.is_finite() || secs < 0.0 {
        return Err("expected a finite, non-negative number of seconds".to_owned());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| {
        format!(
            "at most {:.3e} seconds (any value that large means never)",
            Duration::MAX.as_secs_f64()
        )
    })
}

/// Parses a size in bytes: `65536`, or with an SI or binary unit
/// (`64KiB`, `1MB` = 1,000,000, `1MiB` = 1,048,576, `1.5 GiB`).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    parse_size::parse_size(text.trim())
        .map_err(|e| format!("expected a size in bytes, such as 65536, 64KiB, 1MB or 1MiB ({e})"))
}

/// [`parse_secs`], refusing zero.
pub(crate) fn parse_positive_secs(text: &str) -> Result<Duration, String> {
    match parse_secs(text)? {
        d if d.is_zero() => Err("must be greater than zero".to_owned()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn secs_accept_integers_decimals_and_exponents() {
        assert_eq!(parse_secs("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_secs(" 1e-3 "), Ok(Duration::from_millis(1)));
        assert_eq!(parse_secs("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn secs_refuse_negative_nan_infinite_and_words() {
        for bad in ["-1", "NaN", "inf", "", "5s", "abc"] {
            assert!(parse_secs(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn sizes_take_si_and_binary_units() {
        assert_eq!(parse_size("65536"), Ok(65_536));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size(" 10 MiB "), Ok(10 << 20));
        for bad in ["", "1XB", "-1", "MiB", "1e999"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.starts_with("expected a size in bytes"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn positive_secs_refuse_zero() {
        assert!(parse_positive_secs("0").is_err());
        assert!(parse_positive_secs("0.0").is_err());
        assert_eq!(parse_positive_secs("0.25"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn error_messages_stay_on_one_line() {
        let e = CliError::Failed("first\nsecond".to_owned());
        assert_eq!(e.to_string(), "first second");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(CliError::Usage(String::new()).exit_code(), 2);
    }
}
