//! The values a Reader hands out and shares: which connection a message
//! came on, an owned message, the connection socket. A leaf: it imports
//! nothing of the Reader.

use std::sync::Arc;

use bytes::Bytes;

use crate::policy::PeerCredentials;

/// Which connection a message arrived on, for handlers started with
/// [`ReaderBuilder::start_with_info`](crate::ReaderBuilder::start_with_info).
///
/// Messages of one connection reach the handler in the order they were
/// sent; messages of different connections may interleave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The connection's number within this Reader, from 1 in accept order.
    pub id: u64,
    /// The peer's process, user and group ids as the kernel saw them at
    /// `connect` (`SO_PEERCRED`); `None` if it could not be read.
    pub peer: Option<PeerCredentials>,
}

/// A message with the connection it came on, owned: the body shares the
/// connection buffer's memory (no copy) and may be kept as long as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The message body.
    pub body: Bytes,
    /// Which connection it arrived on.
    pub connection: ConnectionInfo,
}

/// A Reader's connection socket (non-blocking), shared by its task, the
/// thread its delivery may run on, and the order book.
pub(crate) type Socket = Arc<std::os::unix::net::UnixStream>;
