//! Test tooling for udsipc and for any service that speaks over a Unix
//! stream socket (most of it knows the udsipc framing: varint
//! length-prefixed messages).
//!
//! | module | what |
//! |---|---|
//! | [`proxy`] | [`FaultProxy`](proxy::FaultProxy): a fault-injecting Unix socket proxy for any service (fragment, drop, stall, latency, bandwidth, corrupt, refuse, reset, duplicate, swap, timeout, slow close), both directions, frame-aware, seeded, with an event log and a toxiproxy-compatible control API ([`proxy::api`]) |
//! | [`ledger`] | messages that carry an id and a checksum, and a report of what was delivered once intact, dropped, failed, lost in flight, duplicated, reordered or corrupted |
//! | [`strategies`] | proptest strategies: varint-boundary lengths, frame sequences, chunkings, malformed prefixes |
//! | [`oracle`] | a byte-at-a-time reference decoder to test fast ones against |
//! | [`scripted`] | a scripted IO double: exact partial reads and writes, errors, not-ready |
//!
//! The `udsipc` command (package `udsipc-cli`) puts the proxy in front of
//! any process from the shell: `udsipc proxy`.

pub mod ledger;
pub mod oracle;
pub mod proxy;
pub mod scripted;
pub mod strategies;
