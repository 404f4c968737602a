//! `udsipc send`: run a [`udsipc::Writer`] and deliver messages given as
//! arguments or as lines of stdin.
//!
//! This module owns the send arguments, turning input into messages (line
//! splitting, `--hex`), the delivery check that decides the exit code, and
//! the stats line. Messages are queued with [`udsipc::Writer::send`], which
//! waits for queue room, so a fast stdin never makes the Writer drop any.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::watch;
use tokio::time::Instant;
use udsipc::{StopError, Writer, WriterError, WriterMetrics, WriterMetricsHandle};

use super::observe::{self, Exporter, MetricsArgs};
use super::signals::Signals;
use super::{CliError, Outcome, hex, parse_positive_secs, parse_secs, parse_size, stats_line};

/// The Writer's first reconnect delay: short, so a `send` started just
/// before its listener still delivers quickly.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The ceiling of the Writer's doubling reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

const STDIN_BUFFER: usize = 64 * 1024;

/// The send queue's bound in bytes (besides the Writer's 10,000
/// messages): what `send` holds when nobody reads, whatever the lines'
/// size. A longer message still goes, alone.
pub const QUEUE_BYTES: usize = 8 << 20;

/// After a signal during the drain, how long to wait for the Writer to
/// count what it discards before printing the stats.
const DISCARD_WAIT: Duration = Duration::from_secs(1);

/// `--help` text; set on the [`Command`](super::Command) variant, whose doc
/// comment would otherwise replace it.
pub(crate) const LONG_ABOUT: &str = "\
Connect to SOCKET and send each MESSAGE, or, with no MESSAGE, each line of stdin (without \
its trailing \\n or \\r\\n) as one message. Empty messages are skipped and not counted, as the \
Go writer does, and input with no non-empty message never connects (exit 0, all counters 0). A \
MESSAGE that starts with '-' goes after `--`.

If SOCKET is not there yet, the connection breaks, or the listener refuses this sender \
(closes without reading), it reconnects after 100 ms, doubling up to 1 s, so a send started \
just before its listener still delivers quickly and a refused one does not storm; with \
--connect-timeout SECS, a SOCKET nobody listens on (no connection made and nothing written \
within SECS of the first message) ends it at once: one `error: no connection to SOCKET ...` \
line, the stats, exit 1. A slow or \
paused listener is not a broken one: the connection is kept (a `Backpressure` warning is \
printed once per pause longer than 1 s). Input is never dropped: reading pauses while the \
send queue (10,000 messages or 8 MiB) is full, for as long as no listener takes them. A line \
(or MESSAGE) longer than --max-message-size (its hex digits: twice that) is a usage error \
(exit 2), read no further than the limit. A message the listener closes the connection on before reading it whole, on 5 connections in a row (e.g. \
larger than its --max-message-size), is given up (`failed`) and the rest go on. At the end it \
waits, for up to --drain-timeout, until the listener has read everything, then discards what \
is left.

stderr gets a `warning: ...` line per connect failure, refused or broken connection, \
backpressure episode or failed message and, last, one JSON line of counters: \
{\"sent\",\"delivered\",\"dropped\",\"failed\",\"discarded\",\"unconfirmed\",\"retried\",\
\"backpressure\",\"refused\",\"reconnects\",\"queued\"}. `queued` is the number of non-empty \
messages given; `sent` counts those handed to the kernel, `delivered` those the listener has \
read from the socket (the kernel says so); `unconfirmed` ones were written but their \
connection died before the listener was seen to read them (never sent twice). Exit code 0 \
only if the listener read every message (delivered == queued): \"read\" means read off SOCKET \
by whatever listens there, so through `udsipc proxy` (or any forwarder) it is the proxy that \
read them, and exit 0 says nothing about what reached the service behind it (count there, \
e.g. with `udsipc listen`'s stats); 1 otherwise (or on \
SIGINT/SIGTERM: the first stops reading input and drains; one during the drain discards what \
is left, as `discarded`, and exits at once); 2 for bad arguments, a line that is not hex \
under --hex or one that is too long (lines before it have been queued).";

const AFTER_HELP: &str = "\
Examples:
  udsipc send /tmp/app.sock hello world
  printf 'one\\ntwo\\n' | udsipc send /tmp/app.sock
  udsipc send /tmp/app.sock --hex 00ff 48656c6c6f
  seq 100000 | udsipc send /tmp/app.sock --drain-timeout 30";

/// Arguments of `udsipc send`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct SendArgs {
    /// Socket path to connect to
    #[arg(value_name = "SOCKET")]
    pub socket: PathBuf,

    /// Hex-decode each message (argument or line) before sending it
    #[arg(long)]
    pub hex: bool,

    /// How long to keep delivering queued messages once the input ends (decimal seconds)
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub drain_timeout: Duration,

    /// Longest message (bytes, or with a unit: 64KiB, 1MB, 1MiB); a longer line (or MESSAGE) is refused, exit 2
    #[arg(long, value_name = "SIZE", default_value_t = udsipc::DEFAULT_MAX_MESSAGE_SIZE, value_parser = parse_size)]
    pub max_message_size: u64,

    /// Give up, exit 1 with one error line, when no connection to SOCKET is made within SECS of the first message (decimal seconds; default: keep retrying until the drain timeout)
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs)]
    pub connect_timeout: Option<Duration>,

    /// `--metrics ADDR`: the Writer's counters (udsipc_writer_*) for Prometheus
    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// Messages to send; without any, each line of stdin is one message
    #[arg(value_name = "MESSAGE")]
    pub messages: Vec<OsString>,
}

/// The JSON object `send` prints as its last stderr line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SendStats {
    /// Messages handed whole to the kernel (not proof of delivery).
    pub sent: u64,
    /// Messages the listener has read from the socket, as the kernel
    /// confirms.
    pub delivered: u64,
    /// Messages the Writer's queue refused (always 0: `send` waits for room).
    pub dropped: u64,
    /// Messages given up: not read whole on 5 fresh connections in a row.
    pub failed: u64,
    /// Messages thrown away, never written whole, when the drain timeout
    /// passed.
    pub discarded: u64,
    /// Messages written whole whose read was never confirmed (their
    /// connection died with unread bytes, or the drain timeout passed).
    pub unconfirmed: u64,
    /// Messages sent again on a new connection because the previous one
    /// ended before they could have been read whole.
    pub retried: u64,
    /// Times the listener read nothing for a whole second (connection kept).
    pub backpressure: u64,
    /// Connections the listener closed without reading anything.
    pub refused: u64,
    /// Successful connections after the first one.
    pub reconnects: u64,
    /// Non-empty messages given (and queued).
    pub queued: u64,
}

impl SendStats {
    fn new(m: WriterMetrics, queued: u64) -> Self {
        Self {
            sent: m.sent,
            delivered: m.delivered,
            dropped: m.dropped,
            failed: m.failed,
            discarded: m.discarded,
            unconfirmed: m.unconfirmed,
            retried: m.retried,
            backpressure: m.backpressure,
            refused: m.refused,
            reconnects: m.reconnects,
            queued,
        }
    }
}

/// Runs `send` to completion.
pub(crate) fn run(args: SendArgs) -> Outcome {
    // Arguments are checked before anything is sent.
    let given = match decode_arguments(&args) {
        Ok(given) => given,
        Err(e) => return Outcome::early(e),
    };
    let runtime = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => return Outcome::early(e),
    };
    let delivery = runtime.block_on(deliver(&args, given));
    // A signal may have left a read of stdin blocked in the runtime's thread
    // pool: do not wait for it.
    runtime.shutdown_background();
    let Delivery {
        input,
        stop,
        metrics,
        queued,
    } = match delivery {
        Ok(d) => d,
        Err(e) => return Outcome::early(e),
    };
    let stats = SendStats::new(metrics, queued);
    let failure = match input {
        Err(e) => Some(e),
        Ok(()) if stats.delivered != stats.queued => Some(CliError::Failed(undelivered(
            &stats,
            &stop,
            args.drain_timeout,
        ))),
        Ok(()) => None,
    };
    if let Err(e @ StopError::Cleanup { .. }) = &stop {
        eprintln!("warning: {e}");
    }
    Outcome {
        failure,
        stats: Some(stats_line(&stats)),
    }
}

fn undelivered(stats: &SendStats, stop: &Result<(), StopError>, drain: Duration) -> String {
    let mut message = format!(
        "delivered {} of {} message(s) (the listener read them)",
        stats.delivered, stats.queued
    );
    if stats.failed > 0 {
        message += &format!(
            "; {} failed (the listener closed the connection on it 5 times before reading it whole)",
            stats.failed
        );
    }
    if stats.unconfirmed > 0 {
        message += &format!(
            "; {} written but not confirmed read (maybe delivered)",
            stats.unconfirmed
        );
    }
    if let Err(StopError::DeadlineExceeded { discarded, .. }) = stop {
        message += &format!("; {discarded} discarded when the drain timeout ({drain:?}) passed");
    }
    if stats.refused > 0 && stats.delivered == 0 {
        message += &format!(
            "; the listener refused all {} connection(s) without reading (allow-list or connection cap?)",
            stats.refused
        );
    }
    message
}

/// The MESSAGE arguments as messages (hex-decoded under `--hex`); `None`
/// when there are none and stdin is to be read.
fn decode_arguments(args: &SendArgs) -> Result<Option<Vec<Bytes>>, CliError> {
    if args.messages.is_empty() {
        return Ok(None);
    }
    let limit = Limit::new(args.max_message_size, args.hex);
    let decoded = args.messages.iter().enumerate().map(|(i, arg)| {
        let raw = arg.as_bytes();
        let what = || format!("MESSAGE argument {}", i + 1);
        limit.check(raw, &what)?;
        if args.hex {
            hex::decode(raw)
                .map(Bytes::from)
                .map_err(|e| CliError::Usage(format!("{}: {e}", what())))
        } else {
            Ok(Bytes::copy_from_slice(raw))
        }
    });
    decoded.collect::<Result<_, _>>().map(Some)
}

/// The longest message, and so the longest line (`--hex`: twice as many
/// digits) `send` reads.
#[derive(Debug, Clone, Copy)]
struct Limit {
    message: u64,
    /// The line's bytes (without its ending) it allows.
    line: usize,
}

impl Limit {
    fn new(message: u64, hex: bool) -> Self {
        let digits = if hex {
            message.saturating_mul(2)
        } else {
            message
        };
        Self {
            message,
            line: usize::try_from(digits).unwrap_or(usize::MAX),
        }
    }

    /// Refuses a line longer than the limit; `what` names it.
    fn check(&self, line: &[u8], what: &dyn Fn() -> String) -> Result<(), CliError> {
        if line.len() <= self.line {
            return Ok(());
        }
        Err(CliError::Usage(format!(
            "{}: longer than --max-message-size ({} bytes{}); not sent, and nothing after it",
            what(),
            self.message,
            if self.line == usize::try_from(self.message).unwrap_or(usize::MAX) {
                ""
            } else {
                ", in hex twice as many digits"
            },
        )))
    }
}

/// What a run of the Writer ended with.
struct Delivery {
    /// Whether all the input was read and queued.
    input: Result<(), CliError>,
    /// How the graceful stop went.
    stop: Result<(), StopError>,
    /// The final counters.
    metrics: WriterMetrics,
    /// Non-empty messages queued.
    queued: u64,
}

/// Connection failures seen by the Writer's error callback, for
/// `--connect-timeout`.
#[derive(Debug, Default)]
struct Dialing {
    /// A dial failed at least once.
    failed: AtomicBool,
    /// The last dial failure, for the error line.
    last: Mutex<String>,
}

/// The Writer, started on the first non-empty message (empty input never
/// dials).
struct LazyWriter<'a> {
    writer: Option<Writer>,
    args: &'a SendArgs,
    dialing: Arc<Dialing>,
    started: watch::Sender<Option<(Instant, WriterMetricsHandle)>>,
    exporter: &'a Exporter,
    queued: Arc<AtomicU64>,
    /// The Writer refused its options (an unusable socket path): reported
    /// alone, as before anything ran.
    refused: Option<CliError>,
}

impl LazyWriter<'_> {
    fn get(&mut self) -> Result<&Writer, CliError> {
        if self.writer.is_none() {
            let dialing = Arc::clone(&self.dialing);
            let quiet_dials = self.args.connect_timeout.is_some();
            let writer = Writer::builder(&self.args.socket)
                .max_buffered_bytes(QUEUE_BYTES)
                .initial_backoff(INITIAL_BACKOFF)
                .max_backoff(MAX_BACKOFF)
                .on_error(move |e| {
                    if let WriterError::Connect { .. } = e {
                        dialing.failed.store(true, Relaxed);
                        *dialing.last.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
                        if quiet_dials {
                            return; // summed up by the one error line, if it comes to that
                        }
                    }
                    eprintln!("warning: {e}");
                })
                .start()
                .map_err(|e| {
                    let e = CliError::Usage(e.to_string());
                    self.refused = Some(e.clone());
                    e
                })?;
            let handle = writer.metrics_handle();
            let queued = Arc::clone(&self.queued);
            let label = self.args.socket.display().to_string();
            let published = handle.clone();
            self.exporter.publish(move || {
                observe::publish_writer(published.get(), queued.load(Relaxed), &label);
            });
            self.started.send_replace(Some((Instant::now(), handle)));
            self.writer = Some(writer);
        }
        Ok(self.writer.as_ref().expect("started above"))
    }
}

/// With `--connect-timeout`: resolves, with the error to report, once the
/// timeout has passed since the Writer started while no connection was
/// made (a dial failed and nothing was written or refused since); pending
/// forever otherwise.
async fn connect_deadline(
    args: &SendArgs,
    mut started: watch::Receiver<Option<(Instant, WriterMetricsHandle)>>,
    dialing: Arc<Dialing>,
) -> CliError {
    let Some(timeout) = args.connect_timeout else {
        return std::future::pending().await;
    };
    let Ok(Some((at, handle))) = started.wait_for(Option::is_some).await.map(|s| s.clone()) else {
        return std::future::pending().await;
    };
    tokio::time::sleep_until(at + timeout).await;
    let m = handle.get();
    if !dialing.failed.load(Relaxed) || m.sent > 0 || m.refused > 0 {
        return std::future::pending().await;
    }
    let last = dialing
        .last
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    CliError::Failed(format!(
        "no connection to {} within --connect-timeout ({timeout:?}): is anything listening there? ({last})",
        args.socket.display()
    ))
}

async fn deliver(args: &SendArgs, given: Option<Vec<Bytes>>) -> Result<Delivery, CliError> {
    let mut signals = Signals::install()?;
    let exporter = Exporter::start(&args.metrics).await?;
    let dialing = Arc::new(Dialing::default());
    let (started, started_rx) = watch::channel(None);
    let queued = Arc::new(AtomicU64::new(0));
    let mut lazy = LazyWriter {
        writer: None,
        args,
        dialing: Arc::clone(&dialing),
        started,
        exporter: &exporter,
        queued: Arc::clone(&queued),
        refused: None,
    };
    let deadline = connect_deadline(args, started_rx, dialing);
    tokio::pin!(deadline);
    let limit = Limit::new(args.max_message_size, args.hex);
    let mut input = tokio::select! {
        fed = feed(&mut lazy, given, args.hex, limit, &queued) => fed,
        signal = signals.recv() => {
            eprintln!("warning: interrupted by {signal}: stopped reading input, draining (a second signal discards)");
            Err(CliError::Failed(format!("interrupted by {signal}: stopped reading input")))
        }
        unreachable = &mut deadline => Err(unreachable),
    };
    if let Some(refused) = lazy.refused.take() {
        return Err(refused);
    }
    let queued = queued.load(Relaxed);
    let Some(writer) = lazy.writer.take() else {
        // Nothing to send: never dialed.
        return Ok(Delivery {
            input,
            stop: Ok(()),
            metrics: WriterMetrics::default(),
            queued,
        });
    };
    let metrics = writer.metrics_handle();
    // Given up on connecting: discard at once rather than drain.
    let drain = if input.is_err()
        && matches!(&input, Err(CliError::Failed(m)) if m.starts_with("no connection to"))
    {
        Duration::ZERO
    } else {
        args.drain_timeout
    };
    let mut stop = Box::pin(writer.stop(drain));
    let stop = tokio::select! {
        // The stop is polled first, so it has begun (the queue is closed)
        // even when the second signal is already waiting: dropping a stop
        // that never ran would leave the Writer running.
        biased;
        stop = &mut stop => stop,
        interruption = async {
            tokio::select! {
                signal = signals.recv() => Err(signal),
                unreachable = &mut deadline => Ok(unreachable),
            }
        } => {
            // Dropping the stop discards the queue at once (its cancel
            // safety); wait, briefly, for the Writer's task to count that.
            drop(stop);
            let deadline = tokio::time::Instant::now() + DISCARD_WAIT;
            while !metrics.is_finished() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let discarded = metrics.get().discarded;
            input = Err(match interruption {
                Err(signal) => CliError::Failed(format!(
                    "interrupted by {signal} while draining: {discarded} discarded"
                )),
                Ok(CliError::Failed(unreachable)) => {
                    CliError::Failed(format!("{unreachable}; {discarded} discarded"))
                }
                Ok(other) => other,
            });
            Ok(())
        }
    };
    Ok(Delivery {
        input,
        stop,
        metrics: metrics.get(),
        queued,
    })
}

/// Queues every message: the given ones, or one per line of stdin.
async fn feed(
    writer: &mut LazyWriter<'_>,
    given: Option<Vec<Bytes>>,
    hex: bool,
    limit: Limit,
    queued: &AtomicU64,
) -> Result<(), CliError> {
    if let Some(messages) = given {
        for msg in messages {
            queue(writer, msg, queued).await?;
        }
        return Ok(());
    }
    let mut stdin = BufReader::with_capacity(STDIN_BUFFER, tokio::io::stdin());
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        // Never more than the limit and its `\r\n`: a line without an end
        // must not grow until memory runs out.
        let most = u64::try_from(limit.line)
            .unwrap_or(u64::MAX)
            .saturating_add(2);
        let read = (&mut stdin)
            .take(most)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| CliError::Failed(format!("reading stdin failed: {e}")))?;
        if read == 0 {
            break;
        }
        let body = strip_line_end(&line);
        limit.check(body, &|| format!("stdin line {number}"))?;
        let msg = if hex {
            hex::decode(body)
                .map(Bytes::from)
                .map_err(|e| CliError::Usage(format!("stdin line {number}: {e}")))?
        } else {
            Bytes::copy_from_slice(body)
        };
        queue(writer, msg, queued).await?;
    }
    Ok(())
}

/// Queues one message, waiting for room (the first one starts the
/// Writer); empty messages are skipped.
async fn queue(
    writer: &mut LazyWriter<'_>,
    msg: Bytes,
    queued: &AtomicU64,
) -> Result<(), CliError> {
    if msg.is_empty() {
        return Ok(());
    }
    writer
        .get()?
        .send(msg)
        .await
        .map_err(|_| CliError::Failed("the writer stopped taking messages".to_owned()))?;
    queued.fetch_add(1, Relaxed);
    Ok(())
}

/// A line without its `\n` or `\r\n` ending.
fn strip_line_end(line: &[u8]) -> &[u8] {
    match line.strip_suffix(b"\n") {
        Some(line) => line.strip_suffix(b"\r").unwrap_or(line),
        None => line, // the last line, without a newline: kept as it is
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_are_stripped_once() {
        assert_eq!(strip_line_end(b"a\n"), b"a");
        assert_eq!(strip_line_end(b"a\r\n"), b"a");
        assert_eq!(strip_line_end(b"a"), b"a");
        assert_eq!(strip_line_end(b"\n"), b"");
        assert_eq!(strip_line_end(b"a\r\r\n"), b"a\r");
        assert_eq!(
            strip_line_end(b"a\r"),
            b"a\r",
            "only \\r\\n is a line ending"
        );
    }

    fn args(hex: bool, messages: &[&str]) -> SendArgs {
        SendArgs {
            socket: "/unused".into(),
            hex,
            drain_timeout: Duration::ZERO,
            max_message_size: 4,
            connect_timeout: None,
            metrics: MetricsArgs::default(),
            messages: messages.iter().map(OsString::from).collect(),
        }
    }

    #[test]
    fn no_arguments_means_stdin() {
        assert_eq!(decode_arguments(&args(false, &[])), Ok(None));
    }

    #[test]
    fn arguments_are_hex_decoded_under_hex() {
        assert_eq!(
            decode_arguments(&args(true, &["00ff", ""])),
            Ok(Some(vec![Bytes::from_static(b"\x00\xff"), Bytes::new()]))
        );
    }

    #[test]
    fn an_argument_past_the_limit_is_a_usage_error_naming_it() {
        let err = decode_arguments(&args(false, &["abcd", "abcde"])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .starts_with("MESSAGE argument 2: longer than --max-message-size (4 bytes)"),
            "{err}"
        );
        assert!(decode_arguments(&args(true, &["0011223344"])).is_err());
        assert!(decode_arguments(&args(true, &["00112233"])).is_ok());
    }

    #[test]
    fn a_bad_hex_argument_is_a_usage_error_naming_it() {
        let err = decode_arguments(&args(true, &["00", "0g"])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().starts_with("MESSAGE argument 2: "), "{err}");
    }

    fn stats() -> SendStats {
        SendStats {
            sent: 0,
            delivered: 0,
            dropped: 0,
            failed: 0,
            discarded: 0,
            unconfirmed: 0,
            retried: 0,
            backpressure: 0,
            refused: 0,
            reconnects: 0,
            queued: 0,
        }
    }

    #[test]
    fn undelivered_names_the_failed_and_the_unconfirmed() {
        let stats = SendStats {
            sent: 3,
            delivered: 1,
            failed: 1,
            unconfirmed: 1,
            queued: 3,
            ..stats()
        };
        assert_eq!(
            undelivered(&stats, &Ok(()), Duration::from_millis(300)),
            "delivered 1 of 3 message(s) (the listener read them); 1 failed (the listener closed \
             the connection on it 5 times before reading it whole); 1 written but not confirmed \
             read (maybe delivered)"
        );
    }

    #[test]
    fn undelivered_names_a_refusing_listener() {
        let stats = SendStats {
            refused: 4,
            queued: 2,
            ..stats()
        };
        assert!(
            undelivered(&stats, &Ok(()), Duration::ZERO)
                .ends_with("the listener refused all 4 connection(s) without reading (allow-list or connection cap?)")
        );
    }
}
