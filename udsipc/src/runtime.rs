//! Where the Reader's and Writer's tasks run: the caller's tokio runtime when
//! there is one, else a small runtime this library owns, so synchronous
//! programs can use the crate without setting up tokio.

use std::future::Future;
use std::io;
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

use crate::error::StopError;

static OWN_RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The runtime to spawn on: an explicit one, the current one, or ours
/// (created on first use; an error if the system refuses its threads).
pub(crate) fn handle(explicit: Option<&Handle>) -> io::Result<Handle> {
    if let Some(h) = explicit.cloned().or_else(|| Handle::try_current().ok()) {
        return Ok(h);
    }
    if let Some(rt) = OWN_RUNTIME.get() {
        return Ok(rt.handle().clone());
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("udsipc")
        .enable_all()
        .build()?;
    // Two threads may race here; the loser's runtime is dropped unused
    // (outside any async context, where dropping a runtime is allowed).
    Ok(OWN_RUNTIME.get_or_init(|| built).handle().clone())
}

/// Runs `fut` on `handle` and blocks the calling thread until it finishes.
///
/// Never panics: on a current-thread runtime's own thread (where waiting
/// would deadlock) it returns [`StopError::WouldDeadlock`] without running
/// `fut`; if the runtime shuts down before `fut` finishes, it returns
/// [`StopError::RuntimeGone`].
pub(crate) fn block_on<F>(handle: &Handle, fut: F) -> Result<F::Output, StopError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let current = Handle::try_current().ok();
    if current
        .as_ref()
        .is_some_and(|c| c.runtime_flavor() == RuntimeFlavor::CurrentThread)
    {
        return Err(StopError::WouldDeadlock);
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    // On a runtime that is shutting down the task is dropped unrun, which
    // drops `tx`: the wait below then ends with `RuntimeGone`.
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    let wait = move || rx.recv().map_err(|_| StopError::RuntimeGone);
    match current {
        Some(_) => tokio::task::block_in_place(wait),
        None => wait(),
    }
}

/// Runs `f` when dropped unless disarmed: the cleanup of an async operation
/// whose future may be dropped half-way (e.g. a `stop` inside a `select!`).
pub(crate) struct OnCancel<F: FnMut()>(Option<F>);

impl<F: FnMut()> OnCancel<F> {
    pub(crate) fn new(f: F) -> Self {
        Self(Some(f))
    }

    /// The operation finished: nothing to clean up.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl<F: FnMut()> Drop for OnCancel<F> {
    fn drop(&mut self) {
        if let Some(mut f) = self.0.take() {
            f();
        }
    }
}

/// Calls a user callback; a panic in it is logged and contained, so it
/// cannot take down the task that reported the error.
pub(crate) fn call_guarded(what: &'static str, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        tracing::error!(
            callback = what,
            "a udsipc callback panicked; the panic was contained"
        );
    }
}
