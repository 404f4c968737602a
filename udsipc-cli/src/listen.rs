//! `udsipc listen`: run a [`udsipc::Reader`] and print one line per message.
//!
//! This module owns the listen arguments, the line formats, the stop
//! conditions (`--count`, SIGINT, SIGTERM, a failed stdout) and the stats
//! line. Stdout itself belongs to the printer thread (`printer`): the handler
//! only formats and queues.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use udsipc::{Reader, ReaderMetrics, StartError};

use super::observe::{self, Exporter, MetricsArgs};
use super::printer::{LineSender, Printer};
use super::signals::Signals;
use super::{CliError, Outcome, hex, parse_positive_secs, parse_size, stats_line};

/// How long a stop lets connected writers deliver what they already sent.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// `--help` text; set on the [`Command`](super::Command) variant, whose doc
/// comment would otherwise replace it.
pub(crate) const LONG_ABOUT: &str = "\
Bind SOCKET, accept any number of writers, and print one line per message on stdout.

stderr gets `listening on SOCKET` once the socket is bound (wait for that line before \
sending), a `warning: ...` line for each connection closed on an error (bad prefix, \
oversized or truncated message), and at exit one JSON line of counters: \
{\"received\",\"connections\",\"errors\",\"active_connections\",\"rejected_connections\",\"printed\"}.

It stops after --count messages, or on SIGINT/SIGTERM: it stops accepting, lets connected \
writers deliver what they already sent (up to 5 s), prints every line, then the stats, and \
removes the socket file. While stdout is not read, connections stop reading (backpressure \
reaches the writers); if stdout still takes nothing 5 s into a stop, it gives up on the \
lines not yet printed and exits 1. A stale socket file at SOCKET is replaced; any other file is left \
alone (exit 1). The systemd environment (LISTEN_FDS, RUNTIME_DIRECTORY) is ignored.

Crash window: a writer counts a message delivered once listen has read it. Killed \
(SIGKILL), listen loses what it read and did not print yet: its line queue (up to \
65,536 lines and 4 MiB), its 64 KiB stdout buffer and one receive buffer per connection \
(256 KiB). A SIGTERM/SIGINT stop loses none of it.";

const AFTER_HELP: &str = "\
Examples:
  # print messages as text until Ctrl-C
  udsipc listen /tmp/app.sock
  # print the next 3 messages as hex, then exit
  udsipc listen /tmp/app.sock --format hex --count 3";

/// Arguments of `udsipc listen`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct ListenArgs {
    /// Socket path to bind
    #[arg(value_name = "SOCKET")]
    pub socket: PathBuf,

    /// How to print each message
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Exit after printing N messages (N >= 1)
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub count: Option<u64>,

    /// Largest accepted message (bytes, or with a unit: 64KiB, 1MB, 1MiB); a longer one closes its connection, counts as an error and is not printed
    #[arg(long, value_name = "SIZE", default_value_t = udsipc::DEFAULT_MAX_MESSAGE_SIZE, value_parser = parse_size)]
    pub max_message_size: u64,

    /// Close a connection that takes longer than this to deliver a message (decimal seconds, e.g. 0.5)
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_positive_secs)]
    pub inactivity_timeout: Duration,

    /// File mode of the socket, in octal (e.g. 660), set before it accepts connections
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    pub socket_mode: Option<u32>,

    /// Admit peers running as this UID (repeatable; with --allow-gid, either list admits)
    #[arg(long, value_name = "UID")]
    pub allow_uid: Vec<u32>,

    /// Admit peers whose primary group is this GID (repeatable)
    #[arg(long, value_name = "GID")]
    pub allow_gid: Vec<u32>,

    /// Close connections beyond this many open at once (N >= 1)
    #[arg(long, value_name = "N", value_parser = parse_max_connections)]
    pub max_connections: Option<usize>,

    /// `--metrics ADDR`: the Reader's counters (udsipc_reader_*) for Prometheus
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// How `listen` prints a message: one line each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum Format {
    /// The bytes as UTF-8 (invalid sequences replaced by U+FFFD) with control characters shown escaped (`\n`, `\r`, `\x1b`, `\u{9b}`; tab kept), so a writer cannot drive the terminal; one line per message
    Text,
    /// The bytes unchanged, then a newline: for pipes and programs, never a terminal (a writer's control sequences pass through)
    Raw,
    /// Lowercase hex of the bytes
    Hex,
    /// The length in bytes, in decimal
    Len,
}

impl Format {
    /// Appends the line for `msg`, newline included, to `out`.
    ///
    /// ```
    /// use udsipc_cli::listen::Format;
    /// let mut out = Vec::new();
    /// Format::Hex.write_line(b"\x00\xff", &mut out);
    /// Format::Len.write_line(b"abc", &mut out);
    /// Format::Text.write_line(b"caf\xc3\xa9 \xff", &mut out);
    /// Format::Text.write_line(b"\x1b[2J\tx\ny", &mut out);
    /// Format::Raw.write_line(b"\x1b[2J", &mut out);
    /// assert_eq!(
    ///     String::from_utf8(out).unwrap(),
    ///     "00ff\n3\ncafé \u{fffd}\n\\x1b[2J\tx\\ny\n\x1b[2J\n"
    /// );
    /// ```
    pub fn write_line(self, msg: &[u8], out: &mut Vec<u8>) {
        match self {
            Self::Text => {
                out.reserve(msg.len() + 1);
                write_escaped(&String::from_utf8_lossy(msg), out);
            }
            Self::Raw => {
                out.reserve(msg.len() + 1);
                out.extend_from_slice(msg);
            }
            Self::Hex => {
                out.reserve(msg.len() * 2 + 1);
                hex::encode_into(msg, out);
            }
            Self::Len => out.extend_from_slice(msg.len().to_string().as_bytes()),
        }
        out.push(b'\n');
    }
}

/// Appends `text` with every C0 control but tab, DEL and every C1 control
/// escaped visibly: `\n`, `\r`, `\xNN` (C0, DEL), `\u{NN}` (C1). What a
/// terminal would act on never reaches it; a backslash is left as it is.
fn write_escaped(text: &str, out: &mut Vec<u8>) {
    // C1 controls (U+0080..U+009F) are 0xC2 0x80..0x9F in UTF-8.
    let plain = |b: u8| (b >= 0x20 || b == b'\t') && b != 0x7f && b != 0xc2;
    if text.bytes().all(plain) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let mut utf8 = [0; 4];
    for c in text.chars() {
        match c {
            '\t' => out.push(b'\t'),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\0'..='\x1f' | '\x7f' => {
                out.extend_from_slice(format!("\\x{:02x}", u32::from(c)).as_bytes());
            }
            '\u{80}'..='\u{9f}' => {
                out.extend_from_slice(format!("\\u{{{:x}}}", u32::from(c)).as_bytes());
            }
            c => out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes()),
        }
    }
}

/// The JSON object `listen` prints as its last stderr line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ListenStats {
    /// Messages the Reader delivered, including any that arrived after the
    /// `--count`-th and were not printed.
    pub received: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Connections closed on a protocol or read error (handler errors cannot
    /// happen here).
    pub errors: u64,
    /// Connections still open when the stats were taken (0 after a clean stop).
    pub active_connections: u64,
    /// Connections refused by a Reader policy.
    pub rejected_connections: u64,
    /// Lines handed to stdout.
    pub printed: u64,
}

impl ListenStats {
    fn new(m: ReaderMetrics, printed: u64) -> Self {
        Self {
            received: m.received,
            connections: m.connections,
            errors: m.errors,
            active_connections: m.active_connections,
            rejected_connections: m.rejected_connections,
            printed,
        }
    }
}

/// Runs `listen` to completion.
pub(crate) fn run(args: ListenArgs) -> Outcome {
    let runtime = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => return Outcome::early(e),
    };
    // Wakes the main task: the --count-th line was queued, or stdout failed.
    let done = Arc::new(Notify::new());
    let on_stdout_failure = {
        let done = Arc::clone(&done);
        move || done.notify_one()
    };
    let printer = match Printer::spawn(io::stdout(), on_stdout_failure) {
        Ok(p) => p,
        Err(e) => {
            return Outcome::early(CliError::Failed(format!(
                "failed to start the printer thread: {e}"
            )));
        }
    };
    let taken = Arc::new(AtomicU64::new(0));
    let served = runtime.block_on(serve(
        &args,
        printer.lines(),
        Arc::clone(&taken),
        Arc::clone(&done),
    ));
    // A handler stuck on a full stdout may have been left behind by the
    // stop: do not wait for it (dropping a runtime waits for its blocking
    // threads).
    runtime.shutdown_background();
    // Print what is queued, as long as stdout takes it.
    let printed = printer.finish(STOP_TIMEOUT);
    let metrics = match served {
        Ok(metrics) => metrics,
        Err(e) => return Outcome::early(e),
    };
    let taken = taken.load(Relaxed);
    let stats = ListenStats::new(metrics, args.count.map_or(taken, |c| taken.min(c)));
    Outcome {
        failure: printed
            .err()
            .map(|e| CliError::Failed(format!("writing to stdout failed: {e}"))),
        stats: Some(stats_line(&stats)),
    }
}

/// Starts the Reader, waits for a stop condition, stops it gracefully and
/// returns its final counters.
async fn serve(
    args: &ListenArgs,
    lines: LineSender,
    taken: Arc<AtomicU64>,
    done: Arc<Notify>,
) -> Result<ReaderMetrics, CliError> {
    // Before `listening on`: a signal sent right after it must be caught,
    // and a scrape right after it must find the endpoint.
    let mut signals = Signals::install()?;
    let exporter = Exporter::start(&args.metrics).await?;
    let (format, count) = (args.format, args.count);
    let count_reached = Arc::clone(&done);
    let handler = move |msg: &[u8]| {
        let n = taken.fetch_add(1, Relaxed) + 1;
        if count.is_some_and(|limit| n > limit) {
            return Ok(()); // past --count: delivered, not printed
        }
        let mut line = Vec::new();
        format.write_line(msg, &mut line);
        lines.send(line);
        if count == Some(n) {
            count_reached.notify_one();
        }
        Ok(())
    };
    let mut builder = Reader::builder(&args.socket)
        .max_message_size(args.max_message_size)
        .inactivity_timeout(args.inactivity_timeout)
        .systemd(false)
        .on_error(|e| eprintln!("warning: {e}"));
    if let Some(mode) = args.socket_mode {
        builder = builder.socket_mode(mode);
    }
    for &uid in &args.allow_uid {
        builder = builder.allow_uid(uid);
    }
    for &gid in &args.allow_gid {
        builder = builder.allow_gid(gid);
    }
    if let Some(n) = args.max_connections {
        builder = builder.max_connections(n);
    }
    if let Some(dir) = udsipc::replaceable_socket_dir(&args.socket) {
        eprintln!(
            "warning: {} is writable by others and has no sticky bit: anyone can replace the socket",
            dir.display()
        );
    }
    let reader = Arc::new(builder.start(handler).map_err(start_error)?);
    let published = Arc::clone(&reader);
    exporter.publish(move || observe::publish_reader(&published));
    eprintln!("listening on {}", reader.socket_path().display());

    tokio::select! {
        _ = signals.recv() => {}
        () = done.notified() => {}
    }
    if let Err(e) = reader.stop(STOP_TIMEOUT).await {
        eprintln!("warning: {e}");
    }
    Ok(reader.metrics())
}

fn parse_count(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err("expected a whole number of messages".to_owned()),
    }
}

fn parse_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err("expected an octal file mode such as 660 or 0o600".to_owned()),
    }
}

fn parse_max_connections(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err("expected a whole number of connections".to_owned()),
    }
}

fn start_error(e: StartError) -> CliError {
    match e {
        StartError::Config(e) => CliError::Usage(e.to_string()),
        e => CliError::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(format: Format, msg: &[u8]) -> String {
        let mut out = Vec::new();
        format.write_line(msg, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_escapes_every_control_but_tab_and_raw_none() {
        let all: Vec<u8> = (0u8..0x20).chain([0x7f]).collect();
        let text = line(Format::Text, &all);
        assert_eq!(
            text,
            "\\x00\\x01\\x02\\x03\\x04\\x05\\x06\\x07\\x08\t\\n\\x0b\\x0c\\r\\x0e\\x0f\
             \\x10\\x11\\x12\\x13\\x14\\x15\\x16\\x17\\x18\\x19\\x1a\\x1b\\x1c\\x1d\\x1e\\x1f\\x7f\n"
        );
        let c1: String = ('\u{80}'..='\u{9f}').collect();
        let text = line(Format::Text, c1.as_bytes());
        assert!(text.starts_with("\\u{80}\\u{81}"), "{text}");
        assert!(text.ends_with("\\u{9f}\n"), "{text}");
        assert!(!text[..text.len() - 1].chars().any(char::is_control));
        // U+00A0 onwards (also 0xC2-led) are printed as they are.
        assert_eq!(line(Format::Text, "\u{a0}é\\".as_bytes()), "\u{a0}é\\\n");
        let mut raw = all.clone();
        raw.push(b'\n');
        assert_eq!(line(Format::Raw, &all).into_bytes(), raw);
    }

    #[test]
    fn text_is_lossy_utf8() {
        assert_eq!(line(Format::Text, b"hello"), "hello\n");
        assert_eq!(line(Format::Text, b"\xffa\xc3"), "\u{fffd}a\u{fffd}\n");
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(line(Format::Hex, &[0x00, 0xab, 0xff]), "00abff\n");
    }

    #[test]
    fn len_is_decimal() {
        assert_eq!(line(Format::Len, &[0; 300]), "300\n");
    }

    #[test]
    fn count_is_a_positive_whole_number() {
        assert_eq!(parse_count("3"), Ok(3));
        for bad in ["0", "-1", "1.5", "many", ""] {
            assert!(parse_count(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn socket_mode_is_octal() {
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert_eq!(parse_mode("0600"), Ok(0o600));
        for bad in ["8", "rw", "", "77777"] {
            assert!(parse_mode(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn max_connections_is_positive() {
        assert_eq!(parse_max_connections("3"), Ok(3));
        assert!(parse_max_connections("0").is_err());
    }

    #[test]
    fn the_default_inactivity_timeout_is_the_library_default() {
        assert_eq!(
            parse_positive_secs("10"),
            Ok(udsipc::DEFAULT_INACTIVITY_TIMEOUT)
        );
    }
}
