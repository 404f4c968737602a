//! The case catalog and the bodies that run it.
//!
//! A *pair* case is one body run in four arms (writer→reader: Go→Rust,
//! Rust→Go, Rust→Rust, and Go→Go as the control); a *raw* case writes
//! exact bytes (often malformed) from a plain socket to each reader
//! (raw→Go, raw→Rust) and expects the same outcome from both. Where the
//! implementations differ by design, the expected outcome is written per
//! implementation and the detail says which one was checked.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::peer::{
    Impl, Profile, ReaderCounts, ReaderOpts, ReaderPeer, WriterCounts, WriterOpts, WriterPeer,
    socket_path,
};
use crate::result::{CaseResult, record};
pub use crate::spec::Level;
use crate::support::{RawExpect, check, describe, number, numbered, one, payload, raw, uvarint};
use crate::{reader_cases, spec_cases};

/// Arms in report order: every writer→reader pair of the built-in peers,
/// then raw bytes to each reader, then each writer to a raw socket.
pub const ARM_ORDER: [&str; 15] = [
    "Go->Rust",
    "Rust->Go",
    "Rust->Rust",
    "Go->Go",
    "Py->Go",
    "Go->Py",
    "Py->Rust",
    "Rust->Py",
    "Py->Py",
    "raw->Go",
    "raw->Rust",
    "raw->Py",
    "Go->raw",
    "Rust->raw",
    "Py->raw",
];

/// How a case is run.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// Writer and reader of any implementation: `(writer, reader)`.
    Pair(fn(Impl, Impl) -> Result<String, String>),
    /// Exact bytes to a reader of any implementation (arm `raw->X`).
    Raw(fn(Impl) -> Result<String, String>),
    /// A writer of any implementation to a plain socket that checks the
    /// exact bytes (arm `X->raw`).
    ToRaw(fn(Impl) -> Result<String, String>),
}

/// One entry of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Stable ID: the PROTOCOL.md rule number, a dash, a name
    /// (`2.2.3-non-minimal-prefix`).
    pub id: &'static str,
    /// MUST or SHOULD, as the rule it checks.
    pub level: Level,
    /// What the case does.
    pub description: &'static str,
    /// The rule it checks (DESIGN.md's wire protocol or the Go source).
    pub rule: &'static str,
    /// The observable outcome expected.
    pub expected: &'static str,
    /// The body.
    pub body: Body,
}

/// Every case, in priority order.
pub const CATALOG: &[Case] = &[
    Case {
        id: "6.1-abstract-name",
        level: Level::Must,
        description: "the reader and the writer are both given \"@udsipc-conf-...\"; 3 messages",
        rule: "a name starting with @ is the Linux abstract socket of the rest of the name, as Go's net package reads it",
        expected: "the reader is listed in /proc/net/unix as that abstract name, no file of that name appears, all 3 delivered",
        body: Body::Pair(spec_cases::abstract_pair),
    },
    Case {
        id: "6.3-relative-path",
        level: Level::Must,
        description: "reader and writer given a relative name (a directory in the working directory, then rel.sock)",
        rule: "any other name is a file path, relative to the working directory",
        expected: "the message is delivered",
        body: Body::Pair(spec_cases::relative_path),
    },
    Case {
        id: "6.4-name-length-limit",
        level: Level::Must,
        description: "a reader on a 108-byte name, then on a 107-byte name, then one frame",
        rule: "names longer than sizeof(sun_path) - 1 (107) bytes are refused",
        expected: "the 108-byte name is refused, the 107-byte one serves the frame",
        body: Body::Raw(spec_cases::name_length_limit),
    },
    Case {
        id: "6.5-abstract-name-leaves-files-alone",
        level: Level::Should,
        description: "a regular file called @name sits in the working directory; a reader runs on @name and stops",
        rule: "an abstract name has no file: nothing is created, checked or removed",
        expected: "Spec: the file keeps its content. Go reference: the file is removed (CleanupSocket runs os.Remove on the name)",
        body: Body::Raw(spec_cases::abstract_leaves_files),
    },
    Case {
        id: "8.2-notify-ready-and-stopping",
        level: Level::Should,
        description: "the reader runs with NOTIFY_SOCKET naming a datagram socket of ours; it starts, then stops",
        rule: "READY=1 once listening, STOPPING=1 at stop",
        expected: "READY=1, then STOPPING=1. Spec: the reader's own socket file is removed at stop (7.3). Go reference: whether it left the file is reported",
        body: Body::Raw(spec_cases::notify_ready_and_stopping),
    },
    Case {
        id: "8.3-runtime-directory",
        level: Level::Should,
        description: "the reader is given /nonexistent-udsipc-conf/app.sock with RUNTIME_DIRECTORY set to a directory of ours; one frame",
        rule: "under systemd, the socket is $RUNTIME_DIRECTORY/<last component of the name>",
        expected: "the frame is served at $RUNTIME_DIRECTORY/app.sock. Spec: the file is removed at stop. Go reference: whether it left the file is reported",
        body: Body::Raw(spec_cases::runtime_directory),
    },
    Case {
        id: "8.4-listen-pid-required",
        level: Level::Should,
        description: "systemd-socket-activate starts the reader through `env -u LISTEN_PID` (LISTEN_FDS=1, fd 3, no LISTEN_PID) on the first connection, which sends \"hi\"",
        rule: "activation variables without LISTEN_PID (or for another PID) are not for this process",
        expected: "Spec: fd 3 is not adopted; the reader finds the path held by a live socket and refuses to start. Go reference: adopts fd 3 and serves \"hi\"",
        body: Body::Raw(spec_cases::listen_pid_required),
    },
    Case {
        id: "2.1-golden-vectors",
        level: Level::Must,
        description: "every vector of conformance/vectors.json, each on its own connection followed by the end of the stream (one reader per max_message_size)",
        rule: "the framing rules of sections 2 and 3, as the golden vectors spell them out byte for byte",
        expected: "each vector's messages delivered, then its outcome: a clean close, or one error with its context",
        body: Body::Raw(spec_cases::golden_vectors),
    },
    Case {
        id: "2.1-frame-layout",
        level: Level::Must,
        description: "bytes 05 \"hello\" 03 \"abc\" in one write, then a proof frame",
        rule: "a frame is uvarint(len) || body, frames follow each other with nothing between",
        expected: "hello, abc delivered; errors=0; connection open",
        body: Body::Raw(spec_cases::frame_layout),
    },
    Case {
        id: "2.2.2-writer-minimal-prefixes",
        level: Level::Must,
        description: "the writer sends messages of 1, 127, 128, 0, 16383, 16384 and 2^21 bytes to a plain socket that records the bytes",
        rule: "writers emit the minimal prefix and no frame for an empty message",
        expected: "exactly the concatenated minimal frames of the six non-empty messages, nothing else; sent=6",
        body: Body::ToRaw(spec_cases::writer_bytes),
    },
    Case {
        id: "5.5-write-timeout-is-a-stall-limit",
        level: Level::Should,
        description: "a 4 MiB message to a plain socket that reads 32 KiB every 10 ms (about 1.3 s in all); default 1 s write timeout",
        rule: "the write timeout bounds how long the socket may stay full, not how long a message may take",
        expected: "Spec: the whole frame arrives on one connection. Go reference: its deadline covers the whole write, so it cuts the moving transfer and retries",
        body: Body::ToRaw(spec_cases::write_timeout_is_a_stall_limit),
    },
    Case {
        id: "4.6-accept-errors-give-up",
        level: Level::Should,
        description: "the reader runs under `prlimit --nofile=64:64` with max_accept_errors 2; clients connect until it reports",
        rule: "after max_accept_errors consecutive accept failures (100 ms apart) the reader stops accepting and reports it; running out of descriptors is temporary and may instead be shed",
        expected: "one error \"too many consecutive failures in accept loop\" (Go reference, Python peer), or (udsipc, better) connections shed (reported as \"connection rejected\" or silently, a MAY) or accepting paused, and a writer arriving later served",
        body: Body::Raw(spec_cases::accept_errors_give_up),
    },
    Case {
        id: "4.6-max-accept-errors-any-value",
        level: Level::Should,
        description: "a reader started with max_accept_errors 64; one frame",
        rule: "any accept-error limit is accepted",
        expected: "Spec: starts and serves the frame. Go reference: refuses values above 63 at start",
        body: Body::Raw(spec_cases::max_accept_errors_any_value),
    },
    Case {
        id: "4.7-peer-credentials",
        level: Level::Should,
        description: "a reader admitting only uid+1 (--allow-uid) gets a connection from us; then one admitting our uid",
        rule: "a reader may restrict peers by user ID (SO_PEERCRED); a refused connection is closed before any byte is read",
        expected: "Spec: first connection closed unread, one error \"connection rejected\", nothing delivered; the second reader serves us. Go reference: no such option (its peer answers 127)",
        body: Body::Raw(spec_cases::peer_credentials),
    },
    Case {
        id: "4.8-order-across-reconnects",
        level: Level::Should,
        description: "one process (the suite) has an older connection whose handler holds \"hold\" for 1.5 s while 50 more frames wait unread in its socket; it then opens a newer connection and sends 10 frames",
        rule: "what one writer process sent on an older connection reaches the handler before anything it sends on a newer one",
        expected: "Spec: \"hold\", the older connection's 50, then the newer one's 10. Go reference: connections are served independently (the order seen is reported, not asserted)",
        body: Body::Raw(reader_cases::older_connection_first),
    },
    Case {
        id: "5.9-slow-reader-no-reconnect",
        level: Level::Should,
        description: "the reader's handler sleeps 1.5 s on the first message (\"pause\") while 1500 numbered 4 KiB messages follow; writer write timeout 300 ms",
        rule: "a socket that stays full past the write timeout is backpressure: reported, the connection kept",
        expected: "Spec: everything delivered in order on one connection, no reader error. Go reference: reconnects (reported, not asserted)",
        body: Body::Pair(spec_cases::slow_reader_no_reconnect),
    },
    Case {
        id: "5.10-poison-message-given-up",
        level: Level::Should,
        description: "reader max_message_size 1024; the writer (max backoff 200 ms) sends a 4 MiB message, then \"after\"",
        rule: "a message the reader refuses on max_attempts (5) fresh connections in a row is given up and the queue moves on",
        expected: "Spec: \"after\" delivered, the reader reported only \"message too large\", the writer's failed=1. Go reference: retries the big message forever, \"after\" never sent (observed for 2 s)",
        body: Body::Pair(spec_cases::poison_message_given_up),
    },
    Case {
        id: "5.1-buffer-full",
        level: Level::Must,
        description: "writer with a queue of 3 and no reader; 5 send attempts that do not wait; then a reader starts",
        rule: "sending never blocks: a full queue refuses the message and counts it as dropped",
        expected: "3 accepted, 2 refused; the 3 delivered in order; dropped=2 sent=3",
        body: Body::Pair(spec_cases::buffer_full),
    },
    Case {
        id: "5.2-reconnect-until-reader-appears",
        level: Level::Must,
        description: "the writer starts and queues 3 messages; the reader starts 300 ms later",
        rule: "a writer keeps connecting with backoff (1 s, doubling, capped) until it succeeds",
        expected: "all 3 delivered in order",
        body: Body::Pair(spec_cases::reconnect_until_reader),
    },
    Case {
        id: "5.4-cut-frame-delivered-once",
        level: Level::Must,
        description: "writer -> proxy that cuts the first connection 1500 bytes in (inside frame 14 of 101-byte frames) -> reader; 30 messages, then 10 more after the cut",
        rule: "never a duplicate, never half a message: a cut frame is lost on that connection; a message whose write had completed when the connection died may be lost (at most once), one whose own write failed is sent whole on the next",
        expected: "every delivered message intact and once; m0..m13 and m30..m39 all delivered; m14..m29 (written whole before the proxy cut) may be lost in every arm",
        body: Body::Pair(spec_cases::cut_frame),
    },
    Case {
        id: "7.1-parent-directory-created",
        level: Level::Should,
        description: "the socket path's parent directories a/b do not exist",
        rule: "a reader creates missing parent directories with mode 0750",
        expected: "the reader starts; a/b exists with mode 750",
        body: Body::Raw(spec_cases::parent_directory),
    },
    Case {
        id: "7.3-stop-removes-socket-file",
        level: Level::Must,
        description: "a reader starts and stops",
        rule: "a reader removes the socket file it created when it stops",
        expected: "the socket file exists while it runs and is gone after",
        body: Body::Raw(spec_cases::stop_removes_file),
    },
    Case {
        id: "2.2.1-varint-boundaries",
        level: Level::Must,
        description: "messages of 1, 127, 128, 16383, 16384, 2^21-1, 2^21 and 2^21+1 bytes (1- to 4-byte prefixes)",
        rule: "a message is uvarint(len) || bytes[len], uvarint as Go's encoding/binary",
        expected: "every message delivered byte for byte in order; reader received=8 errors=0; writer sent=8 failed=0",
        body: Body::Pair(varint_boundaries),
    },
    Case {
        id: "2.3.2-zero-length-writes",
        level: Level::Must,
        description: "the writer is given an empty message, then \"x\"",
        rule: "len == 0: the Go Writer never sends one (WriteMessage returns nil), Rust's must not either",
        expected: "reader gets only \"x\"; writer sent=1",
        body: Body::Pair(zero_length_writes),
    },
    Case {
        id: "2.4.1-exact-max",
        level: Level::Must,
        description: "max_message_size 1024; a 1024-byte message then a 1-byte one",
        rule: "only len > max_message_size is refused",
        expected: "both delivered, errors=0",
        body: Body::Pair(exact_max),
    },
    Case {
        id: "2.4.2-max-plus-one",
        level: Level::Must,
        description: "max_message_size 1024; a 1025-byte message",
        rule: "len > max_message_size: error \"message too large\", connection closed",
        expected: "nothing delivered; reader errors=1 with context \"message too large\", received=0",
        body: Body::Pair(max_plus_one),
    },
    Case {
        id: "2.2.6-fragmented-through-proxy",
        level: Level::Must,
        description: "writer -> testkit FaultProxy (Fragment 1..=1: every byte forwarded by its own write) -> reader; messages of 1, 127, 128, 129, 16383 and 16384 bytes",
        rule: "a prefix (and a body) may arrive in any number of pieces",
        expected: "every message delivered byte for byte in order; errors=0",
        body: Body::Pair(fragmented_through_proxy),
    },
    Case {
        id: "2.5-many-frames-per-write",
        level: Level::Must,
        description: "2000 small messages (1..64 bytes) queued at once, so writers pack many frames per write",
        rule: "frames are self-delimiting; the reader parses every frame of a read",
        expected: "all 2000 delivered in order; received=2000 errors=0; sent=2000",
        body: Body::Pair(many_frames),
    },
    Case {
        id: "4.1-handler-error-keeps-connection",
        level: Level::Must,
        description: "the handler fails for the message \"bad\" among \"a\", \"bad\", \"b\"",
        rule: "handler error: counted, connection stays open, message not counted as received",
        expected: "handler sees a, bad, b; one error \"handler failed to process a message\"; received=2 errors=1; one connection (no reconnect)",
        body: Body::Pair(handler_error),
    },
    Case {
        id: "5.6-writer-drain-on-stop",
        level: Level::Must,
        description: "1000 messages queued, then the writer is stopped at once",
        rule: "Writer.Stop drains the queue before returning (until its deadline)",
        expected: "all 1000 delivered in order; sent=1000 failed=0",
        body: Body::Pair(writer_drain),
    },
    Case {
        id: "5.3-reconnect-retry",
        level: Level::Must,
        description: "10 messages to reader A; A stops; reader B starts on the same path; 10 more messages",
        rule: "the writer reconnects with backoff and retries the message whose write failed first",
        expected: "A got m0..m9, B got exactly m10..m19 in order (nothing lost or doubled)",
        body: Body::Pair(reconnect_retry),
    },
    Case {
        id: "4.2-inactivity-timeout-then-reconnect",
        level: Level::Must,
        description: "reader inactivity timeout 300 ms; \"a\", 1 s of silence, \"b\"",
        rule: "inactivity timeout while waiting for a prefix: connection closed, not an error; the writer reconnects",
        expected: "a and b delivered; reader errors=0",
        body: Body::Pair(inactivity_reconnect),
    },
    Case {
        id: "4.2-inactivity-inside-a-frame",
        level: Level::Must,
        description: "reader inactivity timeout 300 ms; one connection sends 80 (a prefix begun), another 05 41 42 (a body begun), then both wait",
        rule: "the whole frame must arrive within the timeout: it expiring inside a prefix closes silently, inside a body is \"failed to read the complete message\"",
        expected: "both connections closed by the reader; one error, \"failed to read the complete message\"; nothing delivered",
        body: Body::Raw(reader_cases::inactivity_inside_a_frame),
    },
    Case {
        id: "4.4-sixteen-writers",
        level: Level::Must,
        description: "16 writers, 50 numbered messages each, at the same time",
        rule: "one connection per writer; frames never interleave within a connection",
        expected: "800 messages, each writer's in its own order, none lost or doubled",
        body: Body::Pair(sixteen_writers),
    },
    Case {
        id: "7.4-reader-drain-on-stop",
        level: Level::Should,
        description: "the writer (max backoff 200 ms) is fed numbered 1000-byte messages without pause; reader A (inactivity timeout 1 s) holds message 300 for 1.5 s, so the writer is mid-stream on a full socket when A is stopped; feeding goes on until A's stop returns, then 10 more and reader B takes over",
        rule: "a stopping reader delivers what its peers wrote before the stop, refuses at the socket what they write after it (the writer retries it elsewhere) and ends within its deadline",
        expected: "Spec: A's stop ends without error, A+B together got every message once, B the last. Go reader: messages in the socket when A stopped may be lost (count shown in the detail)",
        body: Body::Pair(reader_cases::reader_drain),
    },
    Case {
        id: "5.7-drain-while-reader-down",
        level: Level::Should,
        description: "no reader; 5 messages queued; the writer is stopped (30 s deadline) and a reader starts 300 ms later",
        rule: "BY DESIGN: Rust's Writer keeps reconnecting during its drain until the deadline; Go's drain fails every queued message at once when it is not connected",
        expected: "Rust writer: all 5 delivered, sent=5 failed=0. Go writer: nothing delivered, sent=0 failed=5",
        body: Body::Pair(drain_while_reader_down),
    },
    Case {
        id: "4.5-reader-connections",
        level: Level::Should,
        description: "one writer sends one message and stops; then the reader stops",
        rule: "BY DESIGN: Rust's `connections` counts served connections; Go's Stop dials its own socket to wake Accept and counts that connection too",
        expected: "Rust reader: connections=1. Go reader: connections=2",
        body: Body::Pair(reader_connections),
    },
    Case {
        id: "7.2-non-socket-file",
        level: Level::Should,
        description: "a regular file is at the socket path when the reader starts",
        rule: "BY DESIGN: Rust refuses a path that is not a socket and leaves it untouched; Go deletes whatever is there",
        expected: "Rust reader: start fails, the file keeps its content. Go reader: starts, the file is replaced by its socket",
        body: Body::Raw(non_socket_file),
    },
    Case {
        id: "7.2-second-reader-on-live-socket",
        level: Level::Should,
        description: "reader A is live; reader B of the same implementation starts on the same path; a client connects and sends \"hi\"",
        rule: "BY DESIGN: Rust refuses a socket with a live reader (\"address in use\"); Go removes it and takes the path over",
        expected: "Rust: B refused, A gets \"hi\". Go: B starts and gets \"hi\", A is orphaned",
        body: Body::Raw(second_reader),
    },
    Case {
        id: "5.8-write-after-stop",
        level: Level::Should,
        description: "the writer sends \"a\", is stopped (drained), then is asked to write \"late\"",
        rule: "BY DESIGN: Rust refuses writes after stop (`WriteError::Stopped`, the message handed back); Go's WriteMessage accepts them into a queue nobody will ever write",
        expected: "reader gets \"a\" only. Rust writer: the late write fails with \"stopped\", queue 0. Go writer: the late write returns nil, queue 1, sent stays 1",
        body: Body::Pair(write_after_stop),
    },
    Case {
        id: "4.3-handler-panic",
        level: Level::Should,
        description: "a client sends \"a\", \"boom\", \"b\" in one write; the handler panics on \"boom\"",
        rule: "BY DESIGN: Rust contains a handler panic (counted as a handler error, connection kept); Go does not recover it, so the panic ends the reader's process",
        expected: "Rust reader: handler sees a, boom, b (then a proof frame); one error \"handler failed to process a message\"; received=3. Go reader: handler sees a, boom; the process exits with status 2 (Go's panic exit)",
        body: Body::Raw(handler_panic),
    },
    Case {
        id: "8.1-socket-activation",
        level: Level::Must,
        description: "the reader runs under systemd-socket-activate (fd 3, LISTEN_FDS=1, started by the first connection); 3 messages",
        rule: "a socket-activated Reader adopts the passed listener; systemd owns the socket file",
        expected: "all 3 delivered; errors=0; the socket file is still there after the reader stopped",
        body: Body::Pair(socket_activation),
    },
    Case {
        id: "2.3.1-zero-length-frames",
        level: Level::Must,
        description: "bytes 00 | 01 41 | 00 00 | 01 42, then a proof frame",
        rule: "len == 0: skipped silently",
        expected: "A, B delivered; errors=0; connection open",
        body: Body::Raw(raw_zero_length),
    },
    Case {
        id: "2.2.3-non-minimal-prefix",
        level: Level::Must,
        description: "81 00 41 (1, non-minimal), 80 80 00 (0), 82 80 00 42 43 (2), then a proof frame",
        rule: "non-minimal prefixes are accepted, as Go accepts them",
        expected: "A, BC delivered; errors=0; connection open",
        body: Body::Raw(raw_non_minimal),
    },
    Case {
        id: "2.2.6-prefix-byte-per-write",
        level: Level::Must,
        description: "frames of 128, 16384 and 2^21 bytes whose 2-, 3- and 4-byte prefixes are written one byte per write",
        rule: "a prefix may arrive in any number of pieces",
        expected: "all three delivered; errors=0",
        body: Body::Raw(raw_fragmented_prefix),
    },
    Case {
        id: "2.2.4-overflow-10th-byte",
        level: Level::Must,
        description: "ff x9 then 02 (10th byte > 1)",
        rule: "prefix longer than 64 bits: overflow error, closed",
        expected: "nothing delivered; error \"failed to read the length prefix\"; closed by the reader",
        body: Body::Raw(raw_overflow_10th),
    },
    Case {
        id: "2.2.5-11-byte-prefix",
        level: Level::Must,
        description: "80 x10 then 01 (continuation bit still set on the 10th byte)",
        rule: "prefix longer than 10 bytes: overflow error, closed",
        expected: "nothing delivered; error \"failed to read the length prefix\"; closed by the reader",
        body: Body::Raw(raw_eleven_bytes),
    },
    Case {
        id: "3.2-truncated-prefix",
        level: Level::Must,
        description: "80, then the writer closes",
        rule: "EOF inside a prefix: error (counted), closed",
        expected: "nothing delivered; error \"failed to read the length prefix\"",
        body: Body::Raw(raw_truncated_prefix),
    },
    Case {
        id: "3.3-truncated-body",
        level: Level::Must,
        description: "05 41 42, then the writer closes",
        rule: "EOF inside a body: error (counted), closed",
        expected: "nothing delivered; error \"failed to read the complete message\"",
        body: Body::Raw(raw_truncated_body),
    },
    Case {
        id: "3.1-clean-eof-between-frames",
        level: Level::Must,
        description: "01 41, then the writer closes",
        rule: "EOF before the first prefix byte: clean close, not an error",
        expected: "A delivered; errors=0",
        body: Body::Raw(raw_clean_eof),
    },
    Case {
        id: "2.4.2-prefix-only",
        level: Level::Must,
        description: "max_message_size 1024; only a prefix declaring 1025 bytes (no body)",
        rule: "len > max_message_size is refused from the prefix alone, before any body byte",
        expected: "nothing delivered; error \"message too large\"; closed by the reader",
        body: Body::Raw(raw_max_plus_one),
    },
    Case {
        id: "2.4.3-huge-declared-length",
        level: Level::Must,
        description: "default max; a prefix declaring 2^40 bytes",
        rule: "len > max_message_size: error, closed, nothing of that size allocated",
        expected: "nothing delivered; error \"message too large\"; closed by the reader",
        body: Body::Raw(raw_huge),
    },
];

impl Case {
    /// The PROTOCOL.md rule the case checks: its ID up to the first dash.
    pub fn section(&self) -> &'static str {
        self.id.split_once('-').map_or(self.id, |(s, _)| s)
    }
}

/// The case with this ID.
pub fn find(id: &str) -> Option<&'static Case> {
    CATALOG.iter().find(|c| c.id == id)
}

/// How long one case×arm may run before the runner gives up on it: well
/// above every case's own deadlines ([`PATIENCE`](crate::peer::PATIENCE)
/// per blocking step), so it only ends a case that missed one.
pub const CASE_BUDGET: Duration = Duration::from_secs(150);

/// Runs `case` from `writer` to `reader` (`None`: a plain socket writing
/// or reading exact bytes) and returns the result (not recorded).
pub fn run_arm(case: &Case, writer: Option<Impl>, reader: Option<Impl>) -> CaseResult {
    let arm = format!(
        "{}->{}",
        writer.map_or("raw", Impl::name),
        reader.map_or("raw", Impl::name)
    );
    let started = std::time::Instant::now();
    let lacking = writer
        .into_iter()
        .chain(reader)
        .flat_map(|p| {
            crate::capability::needs(case.id)
                .iter()
                .filter(move |c| !p.supports(c))
                .map(move |c| (p, *c))
        })
        .next();
    if let Some((peer, capability)) = lacking {
        return CaseResult {
            case: case.id.to_owned(),
            arm,
            pass: false,
            unsupported: true,
            detail: format!(
                "{}the {} peer's hello does not list `{capability}`: {}",
                crate::peer::UNSUPPORTED,
                peer.name(),
                crate::capability::describe(capability)
            ),
            seconds: 0.0,
        };
    }
    let label: std::sync::Arc<str> = format!("{} {arm}", case.id).into();
    let body = case.body;
    let arm_name = arm.clone();
    let id = case.id;
    let thread_label = label.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    // The body runs on a thread of its own under a budget: every blocking
    // step has its own deadline, this is the last resort that keeps a run
    // going (and its report coming) if one was missed.
    let spawned = std::thread::Builder::new()
        .name(format!("case {label}"))
        .spawn(move || {
            crate::process::set_label(Some(thread_label));
            let outcome = match (body, writer, reader) {
                (Body::Pair(f), Some(w), Some(r)) => f(w, r),
                (Body::Raw(f), None, Some(r)) => f(r),
                (Body::ToRaw(f), Some(w), None) => f(w),
                _ => Err(format!("{id} has no arm {arm_name}")),
            };
            let _ = tx.send(outcome);
        });
    let outcome = match spawned {
        Err(e) => Err(format!("could not start the case's thread: {e}")),
        Ok(_) => match rx.recv_timeout(CASE_BUDGET) {
            Ok(outcome) => outcome,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                crate::process::end_peers_of(&label);
                Err(format!(
                    "the case did not finish within its budget of {CASE_BUDGET:?}; its peer \
                     processes were killed"
                ))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                crate::process::end_peers_of(&label);
                Err("the case's body panicked (see the test's stderr)".to_owned())
            }
        },
    };
    let detail = match &outcome {
        Ok(d) | Err(d) => d.clone(),
    };
    CaseResult {
        case: case.id.to_owned(),
        arm,
        pass: outcome.is_ok(),
        unsupported: detail.starts_with(crate::peer::UNSUPPORTED),
        detail,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Runs `id` in `arm` (one of [`ARM_ORDER`]), records the result and
/// panics with the detail if it failed.
pub fn run(id: &str, arm: &str) {
    let case = find(id).unwrap_or_else(|| panic!("no case {id}"));
    let imp = |s: &str| Impl::builtin(s).unwrap_or_else(|| panic!("no peer {s}"));
    let (from, to) = arm
        .split_once("->")
        .unwrap_or_else(|| panic!("bad arm {arm}"));
    let writer = (from != "raw").then(|| imp(from));
    let reader = (to != "raw").then(|| imp(to));
    let result = run_arm(case, writer, reader);
    if let Err(e) = record(&result) {
        eprintln!("could not record the result: {e}");
    }
    if !result.pass {
        panic!(
            "{id} [{arm}] failed.\nrule: {}\nexpected: {}\ndiffered: {}",
            case.rule, case.expected, result.detail
        );
    }
}

/// What a [`roundtrip`] observed: messages, error contexts, counters.
type Roundtrip = (Vec<Vec<u8>>, Vec<String>, ReaderCounts, WriterCounts);

/// Starts a reader and a writer, sends `msgs`, waits for `expect_delivered`
/// handler calls, stops the writer (drain) then the reader.
fn roundtrip(
    w: Impl,
    r: Impl,
    opts: &ReaderOpts,
    msgs: &[Vec<u8>],
    expect_delivered: usize,
    expect_errors: usize,
) -> Result<Roundtrip, String> {
    let (_dir, path) = socket_path()?;
    let reader = ReaderPeer::start(r, &path, opts)?;
    // A reader on a loaded machine may take more than the default 1 s to
    // drain a 2 MiB message: this is not a backpressure case (5.5).
    let patient = WriterOpts {
        write_timeout: Some(Duration::from_secs(10)),
        ..WriterOpts::default()
    };
    let mut writer = WriterPeer::start(w, &path, &patient)?;
    for m in msgs {
        writer.send(m)?;
    }
    reader.events.wait_messages(expect_delivered)?;
    reader.events.wait_errors(expect_errors)?;
    let wc = writer.stop()?;
    let events = reader.events.clone();
    let rc = reader.stop()?;
    Ok((events.messages(), events.errors(), rc, wc))
}

fn varint_boundaries(w: Impl, r: Impl) -> Result<String, String> {
    let lens = [
        1usize,
        127,
        128,
        16383,
        16384,
        (1 << 21) - 1,
        1 << 21,
        (1 << 21) + 1,
    ];
    let msgs: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(i, &l)| payload(l, i as u8))
        .collect();
    let opts = ReaderOpts {
        max_message_size: Some((1 << 21) + 1),
        ..ReaderOpts::default()
    };
    let (got, errs, rc, wc) = roundtrip(w, r, &opts, &msgs, msgs.len(), 0)?;
    check(got == msgs, || {
        format!(
            "delivered {} (expected {})",
            describe(&got),
            describe(&msgs)
        )
    })?;
    check(errs.is_empty() && rc.errors == 0, || {
        format!("reader errors {errs:?}")
    })?;
    check(rc.received == 8 && wc.sent == 8 && wc.failed == 0, || {
        format!("{rc:?} {wc:?}")
    })?;
    Ok(format!("delivered {}; {rc:?}; {wc:?}", describe(&got)))
}

fn zero_length_writes(w: Impl, r: Impl) -> Result<String, String> {
    let msgs = vec![Vec::new(), b"x".to_vec()];
    let (got, _, rc, wc) = roundtrip(w, r, &ReaderOpts::default(), &msgs, 1, 0)?;
    check(got == vec![b"x".to_vec()], || {
        format!("delivered {}", describe(&got))
    })?;
    check(wc.sent == 1 && rc.received == 1 && rc.errors == 0, || {
        format!("{rc:?} {wc:?}")
    })?;
    Ok(format!("only \"x\" delivered; {rc:?}; {wc:?}"))
}

fn exact_max(w: Impl, r: Impl) -> Result<String, String> {
    let msgs = vec![payload(1024, 7), vec![9]];
    let opts = ReaderOpts {
        max_message_size: Some(1024),
        ..ReaderOpts::default()
    };
    let (got, errs, rc, _) = roundtrip(w, r, &opts, &msgs, 2, 0)?;
    check(got == msgs && errs.is_empty() && rc.errors == 0, || {
        format!("delivered {} errors {errs:?}", describe(&got))
    })?;
    Ok(format!("1024 and 1 byte delivered; {rc:?}"))
}

fn max_plus_one(w: Impl, r: Impl) -> Result<String, String> {
    let msgs = vec![payload(1025, 3)];
    let opts = ReaderOpts {
        max_message_size: Some(1024),
        ..ReaderOpts::default()
    };
    let (got, errs, rc, wc) = roundtrip(w, r, &opts, &msgs, 0, 1)?;
    check(got.is_empty(), || format!("delivered {}", describe(&got)))?;
    check(errs == ["message too large"], || format!("errors {errs:?}"))?;
    check(rc.received == 0 && rc.errors == 1, || format!("{rc:?}"))?;
    Ok(format!("refused: errors {errs:?}; {rc:?}; {wc:?}"))
}

fn many_frames(w: Impl, r: Impl) -> Result<String, String> {
    let msgs: Vec<Vec<u8>> = (0..2000).map(|i| payload(1 + i % 64, i as u8)).collect();
    let (got, errs, rc, wc) = roundtrip(w, r, &ReaderOpts::default(), &msgs, 2000, 0)?;
    check(got == msgs, || {
        format!("delivered {} out of order or changed", got.len())
    })?;
    check(
        errs.is_empty() && rc.received == 2000 && wc.sent == 2000,
        || format!("errors {errs:?} {rc:?} {wc:?}"),
    )?;
    Ok(format!("2000 in order; {rc:?}; {wc:?}"))
}

fn handler_error(w: Impl, r: Impl) -> Result<String, String> {
    let msgs = vec![b"a".to_vec(), b"bad".to_vec(), b"b".to_vec()];
    let opts = ReaderOpts {
        fail_on: Some(b"bad".to_vec()),
        ..ReaderOpts::default()
    };
    let (got, errs, rc, wc) = roundtrip(w, r, &opts, &msgs, 3, 1)?;
    check(got == msgs, || format!("handler saw {}", describe(&got)))?;
    check(errs == ["handler failed to process a message"], || {
        format!("errors {errs:?}")
    })?;
    check(rc.received == 2 && rc.errors == 1, || format!("{rc:?}"))?;
    // One connection: the reader kept it (Go's reader also counts the
    // connection its Stop makes to itself).
    let own = u64::from(r.is_go_reference());
    check(rc.connections == 1 + own && wc.sent == 3, || {
        format!("the connection was not kept: {rc:?} {wc:?}")
    })?;
    Ok(format!(
        "a, bad, b handled on one connection; {rc:?}; {wc:?}"
    ))
}

fn writer_drain(w: Impl, r: Impl) -> Result<String, String> {
    let (_dir, path) = socket_path()?;
    let reader = ReaderPeer::start(r, &path, &ReaderOpts::default())?;
    let mut writer = WriterPeer::start(w, &path, &WriterOpts::default())?;
    let msgs: Vec<Vec<u8>> = (0..1000).map(|i| payload(100, i as u8)).collect();
    for m in &msgs {
        writer.send(m)?;
    }
    let wc = writer.stop()?;
    reader.events.wait_messages(1000)?;
    let got = reader.events.messages();
    let rc = reader.stop()?;
    check(got == msgs, || format!("delivered {}", describe(&got)))?;
    check(wc.sent == 1000 && wc.failed == 0, || format!("{wc:?}"))?;
    Ok(format!(
        "stop returned after all 1000 were written; {wc:?}; {rc:?}"
    ))
}

/// Reader options for cases that stop a reader while a writer is connected
/// but idle: Go's Stop waits for such a connection until its inactivity
/// timeout (it checks for shutdown only between reads), 10 s by default.
fn idle_tolerant() -> ReaderOpts {
    ReaderOpts {
        inactivity_timeout: Some(Duration::from_secs(1)),
        ..ReaderOpts::default()
    }
}

fn reconnect_retry(w: Impl, r: Impl) -> Result<String, String> {
    let (_dir, path) = socket_path()?;
    let opts = idle_tolerant();
    let a = ReaderPeer::start(r, &path, &opts)?;
    let mut writer = WriterPeer::start(w, &path, &WriterOpts::default())?;
    let msgs: Vec<Vec<u8>> = (0..20).map(|i| numbered(i, 16)).collect();
    for m in &msgs[..10] {
        writer.send(m)?;
    }
    a.events.wait_messages(10)?;
    writer.wait_sent(10)?;
    let a_events = a.events.clone();
    let ac = a.stop()?;
    let b = ReaderPeer::start(r, &path, &opts)?;
    for m in &msgs[10..] {
        writer.send(m)?;
    }
    b.events.wait_messages(10)?;
    let wc = writer.stop()?;
    let b_events = b.events.clone();
    let bc = b.stop()?;
    let (ga, gb) = (a_events.messages(), b_events.messages());
    check(ga == msgs[..10], || {
        format!(
            "A got {:?}",
            ga.iter().map(|m| number(m)).collect::<Vec<_>>()
        )
    })?;
    check(gb == msgs[10..], || {
        format!(
            "B got {:?}",
            gb.iter().map(|m| number(m)).collect::<Vec<_>>()
        )
    })?;
    Ok(format!(
        "A got m0..m9, B m10..m19; A {ac:?}; B {bc:?}; writer {wc:?}"
    ))
}

fn inactivity_reconnect(w: Impl, r: Impl) -> Result<String, String> {
    let (_dir, path) = socket_path()?;
    let opts = ReaderOpts {
        inactivity_timeout: Some(Duration::from_millis(300)),
        ..ReaderOpts::default()
    };
    let reader = ReaderPeer::start(r, &path, &opts)?;
    let mut writer = WriterPeer::start(w, &path, &WriterOpts::default())?;
    writer.send(b"a")?;
    reader.events.wait_messages(1)?;
    // Long enough for the reader to close the idle connection (if it has
    // not yet, "b" still arrives: the case then proves less, never fails).
    std::thread::sleep(Duration::from_millis(1000));
    writer.send(b"b")?;
    reader.events.wait_messages(2)?;
    let wc = writer.stop()?;
    let events = reader.events.clone();
    let rc = reader.stop()?;
    let (got, errs) = (events.messages(), events.errors());
    check(got == [b"a".to_vec(), b"b".to_vec()], || {
        format!("delivered {}", describe(&got))
    })?;
    check(errs.is_empty() && rc.errors == 0, || {
        format!("errors {errs:?} {rc:?}")
    })?;
    Ok(format!("a, idle close, b after reconnect; {rc:?}; {wc:?}"))
}

fn sixteen_writers(w: Impl, r: Impl) -> Result<String, String> {
    let (_dir, path) = socket_path()?;
    let reader = ReaderPeer::start(r, &path, &ReaderOpts::default())?;
    let per = 50usize;
    let handles: Vec<_> = (0..16u8)
        .map(|id| {
            let path = path.clone();
            let label = crate::process::label();
            std::thread::spawn(move || -> Result<WriterCounts, String> {
                crate::process::set_label(label);
                let mut writer = WriterPeer::start(w, &path, &WriterOpts::default())?;
                for seq in 0..per {
                    let mut m = numbered(seq, 32);
                    m.push(id);
                    writer.send(&m)?;
                }
                writer.stop()
            })
        })
        .collect();
    let mut sent = 0;
    for h in handles {
        sent += h.join().map_err(|_| "writer thread panicked")??.sent;
    }
    reader.events.wait_messages(16 * per)?;
    let got = reader.events.messages();
    let rc = reader.stop()?;
    let mut next = [0usize; 16];
    for m in &got {
        let id = *m.last().unwrap_or(&0) as usize;
        check(id < 16 && number(m) == next[id], || {
            format!(
                "writer {id}: got #{} where #{} was due",
                number(m),
                next[id]
            )
        })?;
        next[id] += 1;
    }
    check(got.len() == 16 * per && sent == 800, || {
        format!("got {} sent {sent}", got.len())
    })?;
    Ok(format!("800 messages, each writer in order; {rc:?}"))
}

fn raw_zero_length(r: Impl) -> Result<String, String> {
    raw(
        r,
        RawExpect {
            opts: ReaderOpts::default(),
            chunks: one(&[0, 1, b'A', 0, 0, 1, b'B']),
            close_after: false,
            delivered: &[b"A", b"B"],
            errors: &[],
            closed_by_reader: false,
        },
    )
}

fn raw_non_minimal(r: Impl) -> Result<String, String> {
    raw(
        r,
        RawExpect {
            opts: ReaderOpts::default(),
            chunks: one(&[
                0x81, 0x00, b'A', 0x80, 0x80, 0x00, 0x82, 0x80, 0x00, b'B', b'C',
            ]),
            close_after: false,
            delivered: &[b"A", b"BC"],
            errors: &[],
            closed_by_reader: false,
        },
    )
}

fn raw_fragmented_prefix(r: Impl) -> Result<String, String> {
    let bodies: Vec<Vec<u8>> = [128usize, 16384, 1 << 21]
        .iter()
        .map(|&l| payload(l, l as u8))
        .collect();
    let mut chunks = Vec::new();
    for b in &bodies {
        for byte in uvarint(b.len() as u64) {
            chunks.push(vec![byte]);
        }
        chunks.push(b.clone());
    }
    let delivered: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    raw(
        r,
        RawExpect {
            opts: ReaderOpts {
                max_message_size: Some(1 << 21),
                ..ReaderOpts::default()
            },
            chunks,
            close_after: false,
            delivered: &delivered,
            errors: &[],
            closed_by_reader: false,
        },
    )
}

fn raw_overflow_10th(r: Impl) -> Result<String, String> {
    let mut b = vec![0xff; 9];
    b.push(0x02);
    raw(
        r,
        RawExpect {
            opts: ReaderOpts::default(),
            chunks: vec![b],
            close_after: false,
            delivered: &[],
            errors: &["failed to read the length prefix"],
            closed_by_reader: true,
        },
    )
}

fn raw_eleven_bytes(r: Impl) -> Result<String, String> {
    let mut b = vec![0x80; 10];
    b.push(0x01);
    raw(
        r,
        RawExpect {
            opts: ReaderOpts::default(),
            chunks: vec![b],
            close_after: false,
            delivered: &[],
            errors: &["failed to read the length prefix"],
            closed_by_reader: true,
        },
    )
}

fn raw_truncated_prefix(r: Impl) -> Result<String, String> {
    raw(
        r,
        RawExpect {
            opts: ReaderOpts::default(),
            chunks: one(&[0x80]),
            close_after: true,
            delivered: &[],
            errors: &["failed to read the length prefix"],
            closed_by_reader: true,
        },
    )
}

fn raw_truncated_body(r: Impl) -> Result<String, String> {
    raw(
        r,
        RawExpect {
            opts: ReaderOpts::default(),
            chunks: one(&[5, b'A', b'B']),
            close_after: true,
            delivered: &[],
            errors: &["failed to read the complete message"],
            closed_by_reader: true,
        },
    )
}

fn raw_clean_eof(r: Impl) -> Result<String, String> {
    raw(
        r,
        RawExpect {
            opts: ReaderOpts::default(),
            chunks: one(&[1, b'A']),
            close_after: true,
            delivered: &[b"A"],
            errors: &[],
            closed_by_reader: true,
        },
    )
}

fn raw_max_plus_one(r: Impl) -> Result<String, String> {
    raw(
        r,
        RawExpect {
            opts: ReaderOpts {
                max_message_size: Some(1024),
                ..ReaderOpts::default()
            },
            chunks: vec![uvarint(1025)],
            close_after: false,
            delivered: &[],
            errors: &["message too large"],
            closed_by_reader: true,
        },
    )
}

fn raw_huge(r: Impl) -> Result<String, String> {
    raw(
        r,
        RawExpect {
            opts: ReaderOpts::default(),
            chunks: vec![uvarint(1 << 40)],
            close_after: false,
            delivered: &[],
            errors: &["message too large"],
            closed_by_reader: true,
        },
    )
}

fn drain_while_reader_down(w: Impl, r: Impl) -> Result<String, String> {
    let (_dir, path) = socket_path()?;
    let mut writer = WriterPeer::start(w, &path, &WriterOpts::default())?;
    let msgs: Vec<Vec<u8>> = (0..5).map(|i| numbered(i, 8)).collect();
    for m in &msgs {
        writer.send(m)?;
    }
    let (wc, reader) = std::thread::scope(|s| {
        let label = crate::process::label();
        let late = s.spawn(|| {
            crate::process::set_label(label);
            std::thread::sleep(Duration::from_millis(300));
            ReaderPeer::start(r, &path, &ReaderOpts::default())
        });
        let wc = writer.stop();
        let reader = late.join().map_err(|_| "reader thread panicked".to_owned());
        (wc, reader)
    });
    let (wc, reader) = (wc?, reader??);
    match w.profile() {
        Profile::Spec => {
            reader.events.wait_messages(5)?;
            let got = reader.events.messages();
            let rc = reader.stop()?;
            check(got == msgs && wc.sent == 5 && wc.failed == 0, || {
                format!("delivered {}; {wc:?}", describe(&got))
            })?;
            Ok(format!(
                "{} writer reconnected during its drain: all 5 delivered; {wc:?}; {rc:?}",
                w.name()
            ))
        }
        Profile::GoReference => {
            let got = reader.events.messages();
            let rc = reader.stop()?;
            check(got.is_empty() && wc.sent == 0 && wc.failed == 5, || {
                format!("delivered {}; {wc:?}", describe(&got))
            })?;
            Ok(format!(
                "Go writer failed all 5 at once during its drain (by design of Go): {wc:?}; {rc:?}"
            ))
        }
    }
}

fn reader_connections(w: Impl, r: Impl) -> Result<String, String> {
    let (_, _, rc, wc) = roundtrip(w, r, &ReaderOpts::default(), &[b"one".to_vec()], 1, 0)?;
    let expected = match r.profile() {
        Profile::Spec => 1,
        Profile::GoReference => 2,
    };
    check(rc.connections == expected, || {
        format!(
            "{} reader: connections {} (expected {expected})",
            r.name(),
            rc.connections
        )
    })?;
    Ok(format!(
        "{} reader: connections={} for one writer connection; {rc:?}; {wc:?}",
        r.name(),
        rc.connections
    ))
}

fn non_socket_file(r: Impl) -> Result<String, String> {
    use std::os::unix::fs::FileTypeExt;
    let (_dir, path) = socket_path()?;
    std::fs::write(&path, b"keep").map_err(|e| e.to_string())?;
    let started = ReaderPeer::start(r, &path, &ReaderOpts::default());
    let is_socket = std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_socket());
    let content = std::fs::read(&path).ok();
    match (r.profile(), started) {
        (Profile::Spec, Err(e)) => {
            check(content.as_deref() == Some(b"keep".as_slice()), || {
                format!("file changed: {content:?}")
            })?;
            Ok(format!("{} reader refused ({e}); file untouched", r.name()))
        }
        (Profile::Spec, Ok(reader)) => {
            let _ = reader.stop();
            Err(format!("{} reader started over a regular file", r.name()))
        }
        (Profile::GoReference, Ok(reader)) => {
            let _ = reader.stop();
            check(is_socket, || {
                "Go reader started but the path is not its socket".into()
            })?;
            Ok("Go reader deleted the regular file and listens there (by design of Go)".into())
        }
        (Profile::GoReference, Err(e)) => Err(format!("Go reader did not start: {e}")),
    }
}

fn write_after_stop(w: Impl, r: Impl) -> Result<String, String> {
    let (_dir, path) = socket_path()?;
    let reader = ReaderPeer::start(r, &path, &ReaderOpts::default())?;
    let mut writer = WriterPeer::start(w, &path, &WriterOpts::default())?;
    writer.send(b"a")?;
    reader.events.wait_messages(1)?;
    let (wc, late, queued) = writer.stop_then_write(b"late")?;
    let events = reader.events.clone();
    let _ = reader.stop()?;
    let got = events.messages();
    check(got == [b"a".to_vec()], || {
        format!("delivered {}", describe(&got))
    })?;
    check(wc.sent == 1, || format!("{wc:?}"))?;
    match w.profile() {
        Profile::Spec => {
            check(late.as_ref().is_err_and(|e| e.contains("stopped")), || {
                format!("the late write returned {late:?}")
            })?;
            check(queued == 0, || format!("{queued} still queued"))?;
        }
        Profile::GoReference => {
            check(late.is_ok(), || format!("the late write returned {late:?}"))?;
            check(queued == 1, || format!("{queued} still queued"))?;
        }
    }
    Ok(format!(
        "late write: {late:?}; {queued} left queued; {wc:?} (by design: Rust refuses, Go queues)"
    ))
}

fn handler_panic(r: Impl) -> Result<String, String> {
    let (_dir, path) = socket_path()?;
    let opts = ReaderOpts {
        panic_on: Some(b"boom".to_vec()),
        ..ReaderOpts::default()
    };
    let mut reader = ReaderPeer::start(r, &path, &opts)?;
    let mut conn = UnixStream::connect(&path).map_err(|e| format!("connect: {e}"))?;
    conn.write_all(&[1, b'a', 4, b'b', b'o', b'o', b'm', 1, b'b'])
        .map_err(|e| format!("write: {e}"))?;
    match r.profile() {
        Profile::Spec => {
            reader.events.wait_errors(1)?;
            conn.write_all(&[1, b'Z'])
                .map_err(|e| format!("proof frame: {e}"))?;
            reader.events.wait_messages(4)?;
            drop(conn);
            let events = reader.events.clone();
            let rc = reader.stop()?;
            let (got, errs) = (events.messages(), events.errors());
            let want: Vec<Vec<u8>> = vec![
                b"a".to_vec(),
                b"boom".to_vec(),
                b"b".to_vec(),
                b"Z".to_vec(),
            ];
            check(got == want, || format!("delivered {}", describe(&got)))?;
            check(errs == ["handler failed to process a message"], || {
                format!("errors {errs:?}")
            })?;
            check(rc.received == 3 && rc.errors == 1, || format!("{rc:?}"))?;
            Ok(format!(
                "{} contained the panic: {}; {rc:?}",
                r.name(),
                describe(&got)
            ))
        }
        Profile::GoReference => {
            let status = reader
                .wait_exit()?
                .ok_or("the Go reader is not a process")?;
            let got = reader.events.messages();
            check(got == [b"a".to_vec(), b"boom".to_vec()], || {
                format!("delivered {}", describe(&got))
            })?;
            check(status.code() == Some(2), || {
                format!("go-peer exited with {status}")
            })?;
            Ok(format!(
                "the Go reader's process died of the panic ({status}) after {} (by design of Go)",
                describe(&got)
            ))
        }
    }
}

fn second_reader(r: Impl) -> Result<String, String> {
    let (_dir, path) = socket_path()?;
    let a = ReaderPeer::start(r, &path, &ReaderOpts::default())?;
    let b = ReaderPeer::start(r, &path, &ReaderOpts::default());
    let mut conn = UnixStream::connect(&path).map_err(|e| format!("connect: {e}"))?;
    conn.write_all(&[2, b'h', b'i'])
        .map_err(|e| e.to_string())?;
    let _ = conn.shutdown(std::net::Shutdown::Write);
    match (r.profile(), b) {
        (Profile::Spec, Err(e)) => {
            a.events.wait_messages(1)?;
            let got = a.events.messages();
            a.stop()?;
            check(got == [b"hi".to_vec()], || {
                format!("A got {}", describe(&got))
            })?;
            Ok(format!(
                "{}: second reader refused ({e}); A kept the path and got \"hi\"",
                r.name()
            ))
        }
        (Profile::Spec, Ok(b)) => {
            let _ = b.stop();
            Err(format!(
                "a second {} reader started on a live socket",
                r.name()
            ))
        }
        (Profile::GoReference, Ok(b)) => {
            b.events.wait_messages(1)?;
            let got = b.events.messages();
            let a_got = a.events.messages();
            b.stop()?;
            drop(a);
            check(got == [b"hi".to_vec()] && a_got.is_empty(), || {
                format!("B got {}, A got {}", describe(&got), describe(&a_got))
            })?;
            Ok("Go: B took the path over (by design of Go); B got \"hi\", A got nothing".into())
        }
        (Profile::GoReference, Err(e)) => Err(format!("second Go reader did not start: {e}")),
    }
}

fn socket_activation(w: Impl, r: Impl) -> Result<String, String> {
    let (_dir, path) = socket_path()?;
    let reader = ReaderPeer::start_activated(r, &path)?;
    let mut writer = WriterPeer::start(w, &path, &WriterOpts::default())?;
    let msgs: Vec<Vec<u8>> = (0..3).map(|i| numbered(i, 10)).collect();
    for m in &msgs {
        writer.send(m)?;
    }
    reader.events.wait_messages(3)?;
    let wc = writer.stop()?;
    let events = reader.events.clone();
    let rc = reader.stop()?;
    let (got, errs) = (events.messages(), events.errors());
    check(got == msgs && errs.is_empty() && rc.errors == 0, || {
        format!("delivered {} errors {errs:?}", describe(&got))
    })?;
    check(path.exists(), || {
        "the activated reader removed systemd's socket file".into()
    })?;
    Ok(format!(
        "activated {} reader delivered 3; socket file left to systemd; {rc:?}; {wc:?}",
        r.name()
    ))
}

fn fragmented_through_proxy(w: Impl, r: Impl) -> Result<String, String> {
    use udsipc_testkit::proxy::{FaultProxy, Fragment};
    let (dir, path) = socket_path()?;
    let front = dir.path().join("front.sock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let reader = ReaderPeer::start(r, &path, &ReaderOpts::default())?;
    let proxy = rt
        .block_on(
            FaultProxy::builder(&front, &path)
                .fault(Fragment::new(1, 1))
                .start(),
        )
        .map_err(|e| format!("proxy: {e}"))?;
    let mut writer = WriterPeer::start(w, &front, &WriterOpts::default())?;
    let msgs: Vec<Vec<u8>> = [1usize, 127, 128, 129, 16383, 16384]
        .iter()
        .map(|&l| payload(l, l as u8))
        .collect();
    for m in &msgs {
        writer.send(m)?;
    }
    let wc = writer.stop()?;
    reader.events.wait_messages(msgs.len())?;
    let fired = proxy.events().iter().any(|e| e.fault == "fragment");
    let forwarded = proxy.stats().bytes_to_upstream;
    rt.block_on(proxy.stop());
    let events = reader.events.clone();
    let rc = reader.stop()?;
    let (got, errs) = (events.messages(), events.errors());
    check(got == msgs, || format!("delivered {}", describe(&got)))?;
    check(errs.is_empty() && rc.errors == 0, || {
        format!("errors {errs:?} {rc:?}")
    })?;
    Ok(format!(
        "delivered {} through the proxy, {forwarded} bytes forwarded one per write \
         (fragment fault fired: {fired}); {rc:?}; {wc:?}",
        describe(&got)
    ))
}
