//! Test tooling for udsipc and for any service that speaks its wire format
//! (varint length-prefixed messages over a Unix stream socket).
//!
//! Today the crate holds the `udsipc` command-line tool, in [`cli`]:
//! `udsipc listen` prints the messages a socket receives, `udsipc send`
//! delivers messages given as arguments or as lines of stdin. Both end with
//! one JSON object of counters on stderr, so shell scripts and tests can
//! check what happened. A fault-injecting proxy, proptest strategies and a
//! delivery ledger are planned for this crate as well.

pub mod cli;
pub mod ledger;
pub mod oracle;
pub mod proxy;
pub mod scripted;
pub mod strategies;
