//! Graceful shutdown: one token that says "stop", one tracker that says "everyone stopped".
//!
//! Idle clients are closed at once; clients inside a transaction finish it (bounded by the
//! drain timeout) before they are closed.

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Signals every task to stop and closes the tracker to new tasks.
    pub fn trigger(&self) {
        self.tracker.close();
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown was triggered. Cancel-safe.
    pub async fn triggered(&self) {
        self.token.cancelled().await
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Waits for every tracked task, at most `grace`. Returns whether all finished.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}
