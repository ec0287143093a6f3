//! Starting servers: ping, kind, URI shape, several servers at once.

mod common;

use mongodb::bson::{doc, Document};
use polymongo_testkit::{ServerKind, ServerOptions, TestServer};

#[tokio::test]
async fn start_gives_a_server_that_answers_ping() {
    let server = TestServer::start().await.expect("start");
    assert_eq!(server.kind(), common::expected_default_kind());
    let client = common::client(&server).await;
    let reply = client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .expect("ping");
    assert_eq!(
        reply
            .get_f64("ok")
            .ok()
            .or(reply.get_i32("ok").ok().map(f64::from)),
        Some(1.0)
    );
    client.shutdown().await;
}

#[tokio::test]
async fn nx_server_describes_itself() {
    let server = TestServer::start_with(ServerOptions::new().kind(ServerKind::Nx27017))
        .await
        .expect("start nx");
    assert_eq!(server.kind(), ServerKind::Nx27017);
    let port = server.port().expect("port");
    assert_eq!(
        server.uri(),
        format!("mongodb://127.0.0.1:{port}/?directConnection=true")
    );
    assert!(server.pid().is_some());
    assert!(!server.supports_transactions());
    assert!(!server.is_replica_set());
    let debug = format!("{server:?}");
    assert!(
        debug.contains("Nx27017") && debug.contains(&port.to_string()),
        "{debug}"
    );
}

#[tokio::test]
async fn two_servers_at_once_are_independent() {
    let opts = ServerOptions::new().managed(true);
    let (a, b) = tokio::join!(
        TestServer::start_with(opts.clone()),
        TestServer::start_with(opts)
    );
    let (a, b) = (a.expect("server a"), b.expect("server b"));
    assert_ne!(a.port(), b.port());
    assert_ne!(a.pid(), b.pid());

    let (ca, cb) = (common::client(&a).await, common::client(&b).await);
    ca.database("app")
        .collection::<Document>("c")
        .insert_one(doc! { "_id": 1, "only": "in a" })
        .await
        .expect("insert into a");
    let in_a = ca
        .database("app")
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await;
    let in_b = cb
        .database("app")
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await;
    assert_eq!(in_a.expect("count a"), 1);
    assert_eq!(
        in_b.expect("count b"),
        0,
        "a document inserted in server a appeared in server b"
    );
    ca.shutdown().await;
    cb.shutdown().await;
}

/// A test server starts with no signal blocked, whatever the thread that started it had
/// blocked (a child inherits its parent's mask).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_server_starts_with_no_signal_blocked_whatever_its_parent_blocked() {
    use std::mem::MaybeUninit;
    // The current-thread runtime of this test spawns the server from this thread.
    let mut blocked = MaybeUninit::<libc::sigset_t>::uninit();
    let mut before = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: plain signal-set calls on local sets; the mask is restored below.
    unsafe {
        libc::sigemptyset(blocked.as_mut_ptr());
        libc::sigaddset(blocked.as_mut_ptr(), libc::SIGTERM);
        libc::sigaddset(blocked.as_mut_ptr(), libc::SIGCHLD);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, blocked.as_ptr(), before.as_mut_ptr()),
            0
        );
    }
    let here = mask_in(&std::fs::read_to_string("/proc/thread-self/status").expect("status"));
    let started = TestServer::start_with(ServerOptions::new().kind(ServerKind::Nx27017)).await;
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, before.as_ptr(), std::ptr::null_mut());
    }
    let wanted = (1u64 << (libc::SIGTERM - 1)) | (1u64 << (libc::SIGCHLD - 1));
    assert_eq!(
        here & wanted,
        wanted,
        "the premise: blocked in the spawning thread"
    );
    let mut server = started.expect("start nx");
    let pid = server.pid().expect("pid");
    assert_eq!(
        signal_mask(pid) & wanted,
        0,
        "the server inherited the blocked signals"
    );
    // And SIGTERM stops it.
    server.stop().await.expect("stop");
}

/// The blocked-signal mask of process `pid`'s main thread.
#[cfg(target_os = "linux")]
fn signal_mask(pid: u32) -> u64 {
    mask_in(&std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status"))
}

/// `SigBlk` of a `/proc/…/status` text.
#[cfg(target_os = "linux")]
fn mask_in(status: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .expect("SigBlk");
    u64::from_str_radix(line.trim(), 16).expect("hex mask")
}
