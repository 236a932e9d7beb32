//! Graceful shutdown: one token that says "stop", one tracker that says "everyone stopped".
//!
//! The drain runs what the proxy accepted and ends each session when it is idle. Idle
//! clients are closed at once, unless their next message has already arrived or they send
//! a Terminate within a moment (`relay::interrupt::drain_read`). Clients inside a
//! transaction or queued for a server connection finish it. A connection still in its
//! login, accepted before the drain began, completes it and runs its first transaction
//! within [`LOGIN_GRACE`]: a client that connects per transaction, reaching a process as it
//! begins to drain (a rolling restart), sees no failure. All of it is bounded by the drain
//! timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long after the drain begins a login may still complete, and a session that logged
/// in run its first transaction. Logins take milliseconds; a silent connection holds the
/// drain this long at most.
pub const LOGIN_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
    /// Set with the token: every client reads it once per transaction, and the token's own
    /// check takes a lock.
    stopping: Arc<AtomicBool>,
    /// Ends [`Shutdown::drain`] before its grace: the operator asked twice.
    abandon: CancellationToken,
    /// When [`Shutdown::trigger`] was first called.
    began: Arc<OnceLock<Instant>>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Signals every task to stop and closes the tracker to new tasks.
    pub fn trigger(&self) {
        let _ = self.began.set(Instant::now());
        self.tracker.close();
        self.stopping.store(true, Ordering::Release);
        self.token.cancel();
    }

    #[inline]
    pub fn is_triggered(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The end of the drain's [`LOGIN_GRACE`]; `None` before the drain.
    pub fn login_grace_end(&self) -> Option<Instant> {
        self.began.get().map(|began| *began + LOGIN_GRACE)
    }

    /// Whether the drain began more than [`LOGIN_GRACE`] ago.
    pub fn login_grace_over(&self) -> bool {
        self.login_grace_end()
            .is_some_and(|end| Instant::now() >= end)
    }

    /// Resolves once shutdown was triggered. Cancel-safe.
    pub async fn triggered(&self) {
        self.token.cancelled().await
    }

    /// Wraps `waiter` (a pinned [`Shutdown::triggered`]) for a task that polls it again and
    /// again for its whole life (an idle client's wait, once per transaction): its waker goes
    /// into the token's waiter list at the first poll only, since a task's waker stays the
    /// same; later polls read one flag instead of relocking that list.
    pub fn watch<'a, F: Future<Output = ()>>(&'a self, waiter: Pin<&'a mut F>) -> Watch<'a, F> {
        Watch {
            stopping: &self.stopping,
            waiter,
            registered: false,
        }
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Waits for every tracked task, at most `grace` and not past [`Shutdown::abandon`].
    /// Returns whether all finished.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::select! {
            finished = tokio::time::timeout(grace, self.tracker.wait()) => finished.is_ok(),
            () = self.abandon.cancelled() => self.tracker.is_empty(),
        }
    }

    /// Ends a drain at once, as its grace running out would (a second SIGTERM or SIGINT:
    /// an operator who asks twice does not want to wait `shutdown_timeout_ms`).
    pub fn abandon(&self) {
        self.abandon.cancel();
    }
}

/// See [`Shutdown::watch`]. Only for a future polled by one task throughout: a poll from
/// another task would not move the registered waker.
pub struct Watch<'a, F> {
    stopping: &'a AtomicBool,
    waiter: Pin<&'a mut F>,
    registered: bool,
}

impl<F: Future<Output = ()>> Future for Watch<'_, F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.registered && !self.stopping.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        self.registered = true;
        self.waiter.as_mut().poll(cx)
    }
}
