//! The state a running Reader shares between its handle, its accept loop
//! and its connections, and the stop sequence over it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::ReaderBuilder;
use super::order::OrderBook;
use crate::bind::OwnedSocketFile;
use crate::error::{ReaderError, StopError};
use crate::lifecycle::{PhaseCell, Tasks, stop_sequence};
use crate::metrics::ReaderCounters;
use crate::systemd::Notifier;

pub(crate) type ErrorCallback = dyn Fn(&ReaderError) + Send + Sync;

/// State shared by the Reader handle, its accept loop and its connections.
pub(crate) struct ReaderInner {
    /// The options it was started with (read here, not copied out).
    pub(crate) options: ReaderBuilder,
    pub(crate) counters: ReaderCounters,
    pub(crate) phase: PhaseCell,
    pub(crate) tasks: Arc<Tasks>,
    pub(crate) order: Arc<OrderBook>,
    /// The socket path in use (after systemd resolution).
    pub(crate) path: PathBuf,
    pub(crate) owned_file: Option<OwnedSocketFile>,
    pub(crate) notifier: Option<Notifier>,
    pub(crate) stop_lock: tokio::sync::Mutex<bool>,
}

impl ReaderInner {
    /// Counts (where Go counts) and reports an error.
    pub(crate) fn report(&self, error: ReaderError) {
        if !matches!(
            error,
            ReaderError::AcceptGaveUp { .. } | ReaderError::PeerRejected { .. }
        ) {
            self.counters.errors.fetch_add(1, Relaxed);
        }
        tracing::debug!(%error, context = error.context(), "reader error");
        if let Some(cb) = &self.options.on_error {
            crate::runtime::call_guarded("reader on_error", || cb(&error));
        }
    }

    pub(crate) async fn stop(self: Arc<Self>, timeout: Duration) -> Result<(), StopError> {
        // The accept loop accepts what waits in the backlog and closes the
        // listener; each connection shuts its reading side and drains.
        let stopped = stop_sequence(
            &self.stop_lock,
            &self.phase,
            &self.tasks,
            timeout,
            || {
                if let Some(n) = &self.notifier {
                    let _ = n.notify("STOPPING=1");
                }
            },
            || {
                let c = &self.counters;
                (c.active.load(Relaxed), c.unhandled.load(Relaxed))
            },
            || {
                if let Some(file) = &self.owned_file {
                    let _ = file.remove();
                }
            },
        )
        .await;
        let Some(stopped) = stopped else {
            return Ok(());
        };
        // Handler calls stuck (blocked in a system call, say) after a
        // forced stop are abandoned.
        let abandoned = stopped.stuck as u64;
        if abandoned > 0 {
            self.counters.abandoned.fetch_add(abandoned, Relaxed);
            tracing::warn!(
                abandoned,
                "reader stop: handler calls still running after the forced stop were abandoned"
            );
        }
        let cleanup = self.owned_file.as_ref().and_then(|file| {
            let source = file.remove().err()?;
            let path = self.path.clone();
            Some(StopError::Cleanup { path, source })
        });
        // The first of these is the stop's answer.
        let result = match (stopped.forced, cleanup, stopped.panicked) {
            (Some((cut, unhandled_before)), ..) => Err(StopError::ConnectionsCut {
                connections: cut,
                abandoned,
                unhandled: self.counters.unhandled.load(Relaxed) - unhandled_before,
            }),
            (None, Some(cleanup), _) => Err(cleanup),
            (None, None, Some(panicked)) => Err(panicked),
            (None, None, None) => Ok(()),
        };
        tracing::debug!(path = %self.path.display(), ?result, "reader stopped");
        result
    }
}
