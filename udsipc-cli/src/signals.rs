//! SIGINT and SIGTERM as one awaitable event, so a subcommand can stop
//! gracefully and still print its stats.
//!
//! Handlers are installed when [`Signals::install`] runs; call it before
//! announcing readiness so that a signal sent right after the announcement is
//! caught rather than killing the process.

use tokio::signal::unix::{Signal, SignalKind, signal};

use super::CliError;

/// The installed SIGINT and SIGTERM handlers.
#[derive(Debug)]
pub(crate) struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    /// Installs the handlers; must run inside the tokio runtime.
    pub(crate) fn install() -> Result<Self, CliError> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind)
                .map_err(|e| CliError::Failed(format!("failed to install the {name} handler: {e}")))
        };
        Ok(Self {
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    /// Waits for either signal and returns its name.
    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
