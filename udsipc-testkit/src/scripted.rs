//! A scripted IO double: exact partial reads and writes, errors and
//! not-ready returns, in a given order, with no timing involved
//! (STYLE: scripted IO for edge cases).
//!
//! Reads and writes follow two separate scripts. A read returns exactly the
//! next scripted chunk (or as much of it as fits; the rest comes next), an
//! error, or one `Pending`; after the script, end of stream. A write accepts
//! at most the next scripted count of bytes, or fails; after the script it
//! accepts everything. What was written is kept for inspection.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use udsipc_testkit::scripted::ScriptedIo;
//!
//! let mut io = ScriptedIo::builder()
//!     .read(&[0x81])          // half a two-byte prefix
//!     .pending()              // then the peer is slow once
//!     .read(&[0x01, b'x'])    // the rest of the prefix, one body byte
//!     .accept(1)              // the next write takes one byte only
//!     .build();
//! let mut buf = [0u8; 8];
//! assert_eq!(io.read(&mut buf).await.unwrap(), 1);
//! assert_eq!(io.read(&mut buf).await.unwrap(), 2);
//! assert_eq!(io.read(&mut buf).await.unwrap(), 0); // end of script
//! assert_eq!(io.write(b"abc").await.unwrap(), 1);
//! io.write_all(b"bc").await.unwrap();
//! assert_eq!(io.written(), b"abc");
//! # }
//! ```

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug)]
enum ReadStep {
    Data(Vec<u8>),
    Error(io::ErrorKind),
    Pending,
}

#[derive(Debug)]
enum WriteStep {
    Accept(usize),
    Error(io::ErrorKind),
    Pending,
}

/// Builds a [`ScriptedIo`].
#[derive(Debug, Default)]
pub struct Builder {
    reads: VecDeque<ReadStep>,
    writes: VecDeque<WriteStep>,
}

impl Builder {
    /// The next read returns these bytes (over several reads if the
    /// caller's buffer is smaller).
    pub fn read(mut self, bytes: &[u8]) -> Self {
        self.reads.push_back(ReadStep::Data(bytes.to_vec()));
        self
    }

    /// The next read fails with this kind of error.
    pub fn read_error(mut self, kind: io::ErrorKind) -> Self {
        self.reads.push_back(ReadStep::Error(kind));
        self
    }

    /// The next read is not ready once (the task is woken at once).
    pub fn pending(mut self) -> Self {
        self.reads.push_back(ReadStep::Pending);
        self
    }

    /// The next write accepts at most `n` bytes (0 means a write of zero
    /// bytes, which `write_all` reports as `WriteZero`).
    pub fn accept(mut self, n: usize) -> Self {
        self.writes.push_back(WriteStep::Accept(n));
        self
    }

    /// The next write fails with this kind of error.
    pub fn write_error(mut self, kind: io::ErrorKind) -> Self {
        self.writes.push_back(WriteStep::Error(kind));
        self
    }

    /// The next write is not ready once.
    pub fn write_pending(mut self) -> Self {
        self.writes.push_back(WriteStep::Pending);
        self
    }

    /// The double.
    pub fn build(self) -> ScriptedIo {
        ScriptedIo {
            reads: self.reads,
            writes: self.writes,
            written: Transcript::default(),
        }
    }
}

/// The IO double; see the [module docs](self). Implements tokio's
/// `AsyncRead`/`AsyncWrite` and std's `Read`/`Write` (where a scripted
/// `Pending` is `WouldBlock`).
#[derive(Debug)]
pub struct ScriptedIo {
    reads: VecDeque<ReadStep>,
    writes: VecDeque<WriteStep>,
    written: Transcript,
}

/// A shared view of what was written to a [`ScriptedIo`], still readable
/// after the double was moved into the code under test.
#[derive(Debug, Clone, Default)]
pub struct Transcript(Arc<Mutex<Vec<u8>>>);

impl Transcript {
    /// A copy of everything written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ScriptedIo {
    /// Starts a script.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Everything written so far.
    pub fn written(&self) -> Vec<u8> {
        self.written.bytes()
    }

    /// A handle on what is written, to read after moving the double away.
    pub fn transcript(&self) -> Transcript {
        self.written.clone()
    }

    /// Whether every read and write step has been used.
    pub fn is_done(&self) -> bool {
        self.reads.is_empty() && self.writes.is_empty()
    }

    fn read_step(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        match self.reads.pop_front() {
            None => Some(Ok(0)),
            Some(ReadStep::Pending) => None,
            Some(ReadStep::Error(kind)) => Some(Err(kind.into())),
            Some(ReadStep::Data(mut bytes)) => {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                if n < bytes.len() {
                    bytes.drain(..n);
                    self.reads.push_front(ReadStep::Data(bytes));
                }
                Some(Ok(n))
            }
        }
    }

    fn write_step(&mut self, buf: &[u8]) -> Option<io::Result<usize>> {
        match self.writes.pop_front() {
            None => {
                self.written.lock().extend_from_slice(buf);
                Some(Ok(buf.len()))
            }
            Some(WriteStep::Pending) => None,
            Some(WriteStep::Error(kind)) => Some(Err(kind.into())),
            Some(WriteStep::Accept(n)) => {
                let n = n.min(buf.len());
                self.written.lock().extend_from_slice(&buf[..n]);
                Some(Ok(n))
            }
        }
    }
}

impl AsyncRead for ScriptedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut tmp = vec![0u8; buf.remaining()];
        match this.read_step(&mut tmp) {
            None => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Ok(n)) => {
                buf.put_slice(&tmp[..n]);
                Poll::Ready(Ok(()))
            }
            Some(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for ScriptedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().write_step(buf) {
            None => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(r) => Poll::Ready(r),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl io::Read for ScriptedIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_step(buf)
            .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))
    }
}

impl io::Write for ScriptedIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_step(buf)
            .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn a_chunk_larger_than_the_buffer_arrives_over_several_reads() {
        let mut io = ScriptedIo::builder().read(b"abcdef").read(b"g").build();
        let mut buf = [0u8; 4];
        assert_eq!(io.read(&mut buf).unwrap(), 4);
        assert_eq!(io.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"ef");
        assert_eq!(io.read(&mut buf).unwrap(), 1);
        assert_eq!(io.read(&mut buf).unwrap(), 0);
        assert!(io.is_done());
    }

    #[test]
    fn errors_and_pending_come_in_script_order() {
        let mut io = ScriptedIo::builder()
            .pending()
            .read_error(io::ErrorKind::ConnectionReset)
            .accept(2)
            .write_error(io::ErrorKind::BrokenPipe)
            .build();
        let mut buf = [0u8; 4];
        assert_eq!(
            io.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(
            io.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
        assert_eq!(io.write(b"xyz").unwrap(), 2);
        assert_eq!(
            io.write(b"z").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        assert_eq!(io.write(b"z").unwrap(), 1);
        assert_eq!(io.written(), b"xyz");
    }
}
