//! Cancel keys: the proxy hands every client its own (pid, secret) and maps it to whatever
//! server connection the client holds at that moment. Server keys never leave the proxy.
//!
//! A cancel in flight pins the server connection: the client's relay does not return it to
//! the pool until PostgreSQL has acknowledged the cancel (closed the cancel connection), so
//! a late cancel cannot land on the next client's query.

use crate::pool::{send_cancel, BackendKey};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

/// Longest a relay waits for a cancel in flight before releasing anyway (then it closes
/// the server connection instead of reusing it).
const CANCEL_SETTLE: Duration = Duration::from_secs(5);

#[derive(Default)]
struct TargetState {
    server: Option<BackendKey>,
    in_flight: u32,
}

/// One client's cancel key and the server it currently runs on.
pub struct CancelTarget {
    pub pid: u32,
    pub secret: u32,
    state: Mutex<TargetState>,
    settled: Notify,
}

pub struct CancelRegistry {
    targets: Mutex<HashMap<u32, Arc<CancelTarget>>>,
    next_pid: AtomicU32,
    server_host: String,
    server_port: u16,
}

/// Registration of a client's key; dropping it unregisters.
pub struct CancelHandle {
    registry: Arc<CancelRegistry>,
    pub target: Arc<CancelTarget>,
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry.targets.lock().remove(&self.target.pid);
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("the OS random source is unavailable");
    u32::from_ne_bytes(b)
}

impl CancelRegistry {
    pub fn new(server_host: String, server_port: u16) -> Arc<Self> {
        Arc::new(CancelRegistry {
            targets: Mutex::new(HashMap::new()),
            next_pid: AtomicU32::new(random_u32() >> 1),
            server_host,
            server_port,
        })
    }

    /// Issues a fresh key for a client that just logged in.
    pub fn register(self: &Arc<Self>) -> CancelHandle {
        let secret = random_u32();
        let mut targets = self.targets.lock();
        let pid = loop {
            let pid = self.next_pid.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
            if pid != 0 && !targets.contains_key(&pid) {
                break pid;
            }
        };
        let target = Arc::new(CancelTarget {
            pid,
            secret,
            state: Mutex::new(TargetState::default()),
            settled: Notify::new(),
        });
        targets.insert(pid, target.clone());
        CancelHandle {
            registry: self.clone(),
            target,
        }
    }

    /// Handles a client's CancelRequest. Unknown keys and wrong secrets are ignored silently,
    /// as PostgreSQL does, so that keys cannot be probed.
    pub async fn cancel(&self, pid: u32, secret: u32) -> bool {
        let target = self.targets.lock().get(&pid).cloned();
        let Some(target) = target else { return false };
        if !bool::from(target.secret.to_be_bytes().ct_eq(&secret.to_be_bytes())) {
            return false;
        }
        self.cancel_running(&target).await
    }

    /// Cancels whatever the target's client runs now (also used for command_timeout).
    pub async fn cancel_running(&self, target: &CancelTarget) -> bool {
        let key = {
            let mut st = target.state.lock();
            match st.server {
                Some(k) => {
                    st.in_flight += 1;
                    k
                }
                None => return false,
            }
        };
        let result = tokio::time::timeout(
            CANCEL_SETTLE,
            send_cancel(&self.server_host, self.server_port, key),
        )
        .await;
        if !matches!(result, Ok(Ok(()))) {
            tracing::warn!(
                server_pid = key.pid,
                "could not deliver a cancel request to the server"
            );
        }
        let mut st = target.state.lock();
        st.in_flight -= 1;
        if st.in_flight == 0 {
            target.settled.notify_waiters();
        }
        true
    }
}

impl CancelTarget {
    /// The client now runs on the server with `key`.
    #[inline]
    pub fn attach(&self, key: BackendKey) {
        self.state.lock().server = Some(key);
    }

    /// The client leaves its server. Returns `false` if a cancel aimed at that server did
    /// not settle in time: the caller must then close the server connection, not reuse it.
    pub async fn detach(&self) -> bool {
        let deadline = tokio::time::Instant::now() + CANCEL_SETTLE;
        loop {
            let settled = self.settled.notified();
            {
                let mut st = self.state.lock();
                if st.in_flight == 0 {
                    st.server = None;
                    return true;
                }
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                self.state.lock().server = None;
                return false;
            }
        }
    }
}
