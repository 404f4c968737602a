//! Where the Reader's and Writer's tasks run: the caller's tokio runtime when
//! there is one, else a small runtime this library owns, so synchronous
//! programs can use the crate without setting up tokio.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

static OWN_RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The runtime to spawn on: an explicit one, the current one, or ours.
pub(crate) fn handle(explicit: Option<&Handle>) -> Handle {
    if let Some(h) = explicit {
        return h.clone();
    }
    if let Ok(h) = Handle::try_current() {
        return h;
    }
    OWN_RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("udsipc")
                .enable_all()
                .build()
                .expect("udsipc: failed to start its tokio runtime")
        })
        .handle()
        .clone()
}

/// Runs `fut` on `handle` and blocks the calling thread until it finishes.
///
/// # Panics
///
/// When called from a current-thread tokio runtime's own thread, where
/// blocking would deadlock: use the async form there.
pub(crate) fn block_on<F>(handle: &Handle, fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    let wait = move || {
        rx.recv()
            .expect("udsipc: runtime shut down during a blocking stop")
    };
    match Handle::try_current() {
        Ok(current) if current.runtime_flavor() == RuntimeFlavor::CurrentThread => {
            panic!(
                "udsipc: blocking stop called inside a current-thread tokio runtime; use `stop(..).await`"
            )
        }
        Ok(_) => tokio::task::block_in_place(wait),
        Err(_) => wait(),
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
