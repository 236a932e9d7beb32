//! Cancel keys: the proxy hands every client its own (pid, secret) and maps it to whatever
//! server connection the client holds at that moment. Server keys never leave the proxy.
//!
//! A cancel in flight pins the server connection: the client's relay does not return it to
//! the pool until PostgreSQL has acknowledged the cancel (closed the cancel connection), so
//! a late cancel cannot land on the next client's query.

use crate::pool::{send_cancel, BackendKey};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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
    /// Deadline of the running command on `command_timeout`'s coarse clock; 0 = none.
    command_deadline: AtomicU64,
    /// The watchdog cancelled the command for its timeout (the relay rewords the 57014).
    timed_out: AtomicBool,
}

pub struct CancelRegistry {
    targets: Mutex<HashMap<u32, Arc<CancelTarget>>>,
    next_pid: AtomicU32,
    server_host: String,
    server_port: u16,
    peers: CancelPeers,
}

/// Proxies behind one address (the pool hosts) hand out keys whose pid carries the issuing
/// host's number in its top bits; a CancelRequest that reaches another host is forwarded to
/// the issuer, the only one that knows which server query the key maps to.
#[derive(Clone, Debug, Default)]
pub struct CancelPeers {
    /// This host's number, 0..=15.
    pub host_id: u8,
    /// Address of each host by number (this host's own entry is ignored).
    pub peers: Vec<Option<String>>,
}

const HOST_SHIFT: u32 = 27;
const HOST_MASK: u32 = 0xf << HOST_SHIFT;

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
    u32::from_ne_bytes(crate::entropy::bytes())
}

impl CancelRegistry {
    pub fn new(server_host: String, server_port: u16, peers: CancelPeers) -> Arc<Self> {
        Arc::new(CancelRegistry {
            targets: Mutex::new(HashMap::new()),
            next_pid: AtomicU32::new(random_u32()),
            server_host,
            server_port,
            peers,
        })
    }

    /// The host number a pid was issued by.
    pub fn host_of(pid: u32) -> u8 {
        ((pid & HOST_MASK) >> HOST_SHIFT) as u8
    }

    /// Issues a fresh key for a client that just logged in.
    pub fn register(self: &Arc<Self>) -> CancelHandle {
        let secret = random_u32();
        let mut targets = self.targets.lock();
        let pid = loop {
            // Positive pids (clients print them), host number in bits 27..31.
            let serial = self.next_pid.fetch_add(1, Ordering::Relaxed) & !HOST_MASK & 0x7fff_ffff;
            let pid = serial | ((self.peers.host_id as u32) << HOST_SHIFT);
            if pid != 0 && !targets.contains_key(&pid) {
                break pid;
            }
        };
        let target = Arc::new(CancelTarget {
            pid,
            secret,
            state: Mutex::new(TargetState::default()),
            settled: Notify::new(),
            command_deadline: AtomicU64::new(0),
            timed_out: AtomicBool::new(false),
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
        let host = Self::host_of(pid);
        if host != self.peers.host_id {
            return self.forward(host, pid, secret).await;
        }
        let target = self.targets.lock().get(&pid).cloned();
        let Some(target) = target else { return false };
        if !bool::from(target.secret.to_be_bytes().ct_eq(&secret.to_be_bytes())) {
            return false;
        }
        self.cancel_running(&target).await
    }

    /// Passes a CancelRequest to the host that issued its key. The peer checks the secret;
    /// this host learns nothing about it.
    async fn forward(&self, host: u8, pid: u32, secret: u32) -> bool {
        let Some(Some(addr)) = self.peers.peers.get(host as usize) else {
            return false;
        };
        let send = async {
            let mut stream = tokio::net::TcpStream::connect(addr.as_str()).await?;
            let mut buf = bytes::BytesMut::with_capacity(16);
            crate::protocol::encode::cancel_request(&mut buf, pid, secret);
            tokio::io::AsyncWriteExt::write_all(&mut stream, &buf).await?;
            let mut sink = [0u8; 16];
            while tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        };
        match tokio::time::timeout(CANCEL_SETTLE, send).await {
            Ok(Ok(())) => true,
            _ => {
                tracing::warn!(peer = %addr, "could not forward a cancel request to the host that issued its key");
                false
            }
        }
    }

    /// The targets whose command deadline passed at `now`; each is disarmed and marked
    /// timed out, so it is returned once.
    pub fn expired_commands(&self, now: u64) -> Vec<Arc<CancelTarget>> {
        let targets = self.targets.lock();
        targets
            .values()
            .filter(|t| {
                let d = t.command_deadline.load(Ordering::Relaxed);
                d != 0
                    && d <= now
                    && t.command_deadline
                        .compare_exchange(d, 0, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
            })
            .map(|t| {
                t.timed_out.store(true, Ordering::Release);
                t.clone()
            })
            .collect()
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
    /// Starts the command timeout: the watchdog cancels the command after `deadline` (on
    /// `command_timeout`'s clock) unless disarmed first.
    #[inline]
    pub fn arm_command(&self, deadline: u64) {
        self.timed_out.store(false, Ordering::Relaxed);
        self.command_deadline.store(deadline, Ordering::Relaxed);
    }

    #[inline]
    pub fn disarm_command(&self) {
        self.command_deadline.store(0, Ordering::Relaxed);
    }

    /// Whether the watchdog cancelled the command since the last call.
    #[inline]
    pub fn take_timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed) && self.timed_out.swap(false, Ordering::Acquire)
    }

    /// The client now runs on the server with `key`.
    #[inline]
    pub fn attach(&self, key: BackendKey) {
        self.state.lock().server = Some(key);
    }

    /// The client leaves its server if no cancel aimed at it is in flight (`true`); else
    /// the caller waits in [`CancelTarget::detach`]. The relay's common case, without a
    /// future.
    #[inline]
    pub fn try_detach(&self) -> bool {
        let mut st = self.state.lock();
        let idle = st.in_flight == 0;
        if idle {
            st.server = None;
        }
        idle
    }

    /// The client leaves its server. Returns `false` if a cancel aimed at that server did
    /// not settle in time: the caller must then close the server connection, not reuse it.
    pub async fn detach(&self) -> bool {
        {
            // The common case, with no clock read and no waiter registered.
            let mut st = self.state.lock();
            if st.in_flight == 0 {
                st.server = None;
                return true;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_carry_the_host_number() {
        let peers = CancelPeers {
            host_id: 5,
            peers: vec![],
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let reg = CancelRegistry::new("127.0.0.1".into(), 1, peers);
            for _ in 0..100 {
                let h = reg.register();
                assert_eq!(CancelRegistry::host_of(h.target.pid), 5);
                assert!(h.target.pid <= 0x7fff_ffff);
            }
        });
    }
}
