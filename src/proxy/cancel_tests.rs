//! Unit tests of `proxy::cancel` (kept apart: the module is long enough).

use super::*;

/// Runs `test` on a current-thread runtime with a registry whose server is `listener`.
fn with_fake_server<F, Fut>(test: F)
where
    F: FnOnce(tokio::net::TcpListener, Arc<CancelRegistry>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let reg = CancelRegistry::new("127.0.0.1".into(), port, CancelPeers::default());
        test(listener, reg).await
    });
}

/// A cancel on its way to the server keeps the relay from giving the server up; once
/// PostgreSQL closes the cancel connection the relay detaches, and a cancel after that
/// finds no server to send to.
#[test]
fn a_cancel_in_flight_holds_the_server_until_it_settles() {
    use tokio::io::AsyncReadExt;
    with_fake_server(|listener, reg| async move {
        let handle = reg.register(None, ClientInfo::for_tests());
        let target = handle.target.clone();
        target.attach(BackendKey { pid: 42, secret: 7 });
        let (arrived_tx, arrived_rx) = tokio::sync::oneshot::channel();
        let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 16];
            s.read_exact(&mut request).await.unwrap();
            arrived_tx.send(()).unwrap();
            let _ = close_rx.await;
            request
        });
        let canceller = {
            let (reg, target) = (reg.clone(), target.clone());
            tokio::spawn(async move { reg.cancel_running(&target).await })
        };
        arrived_rx.await.unwrap();
        assert!(!target.try_detach(), "a cancel is in flight");
        let detach = {
            let target = target.clone();
            tokio::spawn(async move { target.detach().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!detach.is_finished(), "detached with a cancel in flight");
        close_tx.send(()).unwrap();
        assert!(detach.await.unwrap(), "the cancel settled");
        assert!(canceller.await.unwrap());
        let request = server.await.unwrap();
        assert_eq!(&request[8..12], &42u32.to_be_bytes(), "the server's pid");
        assert_eq!(&request[12..16], &7u32.to_be_bytes(), "the server's secret");
        assert!(
            !reg.cancel_running(&target).await,
            "no server after detaching"
        );
        assert!(target.try_detach());
    });
}

/// The watchdog sends its cancel from a task of its own. The server is pinned when the
/// deadline is found, so a relay that finishes meanwhile waits for the cancel to settle
/// instead of taking its next statement, or handing the server to another client, into
/// its way; and a client between transactions is not cancelled at all.
#[test]
fn a_timed_out_command_is_cancelled_on_the_server_that_ran_it() {
    use tokio::io::AsyncReadExt;
    with_fake_server(|listener, reg| async move {
        let handle = reg.register(None, ClientInfo::for_tests());
        let target = handle.target.clone();
        let ran_it = BackendKey { pid: 42, secret: 7 };
        target.attach(ran_it);
        target.arm_command(5);
        let mut expired = reg.expired_commands(10);
        assert_eq!(expired.len(), 1);
        let (found, key, _) = expired.pop().unwrap();
        assert_eq!(found.pid, target.pid);
        assert_eq!(key, ran_it);
        assert!(reg.expired_commands(10).is_empty(), "found once");
        assert!(
            !target.try_detach(),
            "the relay finished first: the server stays pinned"
        );
        let detach = {
            let target = target.clone();
            tokio::spawn(async move { target.detach().await })
        };
        let deliver = {
            let reg = reg.clone();
            tokio::spawn(async move { reg.deliver(&found, key).await })
        };
        let (mut s, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 16];
        s.read_exact(&mut request).await.unwrap();
        assert_eq!(&request[8..12], &42u32.to_be_bytes(), "the server's pid");
        assert!(!detach.is_finished(), "detached with the cancel in flight");
        drop(s);
        deliver.await.unwrap();
        assert!(detach.await.unwrap(), "the cancel settled");
        assert!(target.take_timed_out(), "the relay rewords the 57014");

        target.arm_command(20);
        assert!(target.try_detach());
        assert!(
            reg.expired_commands(30).is_empty(),
            "between transactions: nothing to cancel"
        );
        assert!(!target.take_timed_out());
        assert!(target.try_detach(), "nothing pinned");
    });
}

/// A cancel while the client queues marks that wait (the relay then gives back the
/// server it gets, unused); it marks nothing while the client idles, and each wait has
/// an id of its own, so a late withdrawal of one cannot end the next. Once the client
/// runs on a server, a cancel goes to that server.
#[test]
fn a_cancel_of_a_queued_client_withdraws_only_that_wait() {
    with_fake_server(|listener, reg| async move {
        let handle = reg.register(None, ClientInfo::for_tests());
        let target = handle.target.clone();
        let key = BackendKey { pid: 42, secret: 7 };
        assert!(
            !reg.cancel_running(&target).await,
            "idle: nothing to cancel"
        );
        let first = target.queue();
        assert!(reg.cancel_running(&target).await);
        assert!(!reg.cancel_running(&target).await, "withdrawn once");
        assert!(
            !target.attach_after_queue(&first, key),
            "handed over after the cancel"
        );
        assert!(!reg.cancel_running(&target).await, "the key never showed");
        let second = target.queue();
        assert_ne!(first.id, second.id);
        assert_ne!(second.id, 0);
        assert!(!target.leave_queue(&second), "timed out, not cancelled");
        let third = target.queue();
        assert!(target.attach_after_queue(&third, key));
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        });
        assert!(reg.cancel_running(&target).await, "sent to the server");
        server.await.unwrap();
        assert!(target.try_detach());
    });
}

#[test]
fn server_keys_pack_into_one_word() {
    let key = BackendKey {
        pid: 4_194_304,
        secret: u32::MAX,
    };
    assert_eq!(unpack(pack(key)), Some(key));
    assert_eq!(unpack(0), None);
}

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
            let h = reg.register(None, ClientInfo::for_tests());
            assert_eq!(CancelRegistry::host_of(h.target.pid), 5);
            assert!(h.target.pid <= 0x7fff_ffff);
        }
    });
}

/// Counts its wake-ups.
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The watchdog gives a server up only while the timeout it cancelled is still the last
/// word on the command, and wakes the session's task when it does.
#[test]
fn an_unanswered_timeout_gives_the_server_up_once() {
    let reg = CancelRegistry::new("127.0.0.1".into(), 1, CancelPeers::default());
    let handle = reg.register(None, ClientInfo::for_tests());
    let target = handle.target.clone();
    let counter = Arc::new(CountingWaker(Default::default()));
    target.watch_relay(&std::task::Waker::from(counter.clone()));
    target.attach(BackendKey { pid: 42, secret: 7 });

    // The server answered (the relay read its bytes): nothing to give up.
    target.arm_command(5);
    let (_, _, first) = reg.expired_commands(10).pop().unwrap();
    target.cancel_settled();
    assert!(target.take_timed_out());
    assert!(!target.give_up_unanswered(first));

    // A later command started meanwhile: the old timeout says nothing about it.
    target.arm_command(15);
    let (_, _, second) = reg.expired_commands(20).pop().unwrap();
    target.cancel_settled();
    target.arm_command(100);
    assert!(!target.give_up_unanswered(second));
    assert!(!target.server_unresponsive());
    assert_eq!(counter.0.load(Ordering::SeqCst), 0);

    // Silence since the cancel: given up, the relay woken, and only once.
    let (_, _, third) = reg.expired_commands(200).pop().unwrap();
    target.cancel_settled();
    assert_ne!(third, second, "each timeout has its own number");
    assert!(target.give_up_unanswered(third));
    assert!(target.server_unresponsive());
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    assert!(!target.give_up_unanswered(third));
    assert!(
        target.take_timed_out(),
        "a late reply still reads as the timeout's"
    );
    assert!(!target.server_unresponsive());
}

/// On another worker thread the watchdog's number for a timeout can land after the relay
/// finished that command and armed its next one (the number is stored after the claim):
/// the next command, never timed out, is not given up.
#[test]
fn a_timeout_number_landing_on_the_next_command_gives_nothing_up() {
    let reg = CancelRegistry::new("127.0.0.1".into(), 1, CancelPeers::default());
    let handle = reg.register(None, ClientInfo::for_tests());
    let target = handle.target.clone();
    target.attach(BackendKey { pid: 42, secret: 7 });
    target.arm_command(5);
    let (_, _, n) = reg.expired_commands(10).pop().unwrap();
    target.cancel_settled();
    // The relay read the reply before `n` was stored, then started its next command.
    target.timed_out.store(0, Ordering::Relaxed);
    target.arm_command(100);
    target.timed_out.store(n, Ordering::Release);
    assert!(!target.give_up_unanswered(n));
    assert!(!target.server_unresponsive());
}
