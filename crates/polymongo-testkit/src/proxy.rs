//! [`FaultProxy`]: a TCP proxy between a client and a test server that injects
//! network faults on command.
//!
//! nx-27017 ignores `configureFailPoint`, so network faults in tests come from
//! killing the server or from this proxy. The proxy listens on a free
//! 127.0.0.1 port and forwards every accepted connection to one upstream
//! address, each connection in its own task. The current [`Fault`] is
//! broadcast to the connection tasks through a [`tokio::sync::watch`]
//! channel, so a change applies at once to live connections as well as new
//! ones, with no polling.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::error::TestKitError;

/// Size of the read buffer of each direction of each connection.
const CHUNK: usize = 64 * 1024;
/// Pause after a failed `accept` (for example too many open files), so the
/// accept loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// What the proxy does to the bytes of every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward bytes both ways unchanged (the default).
    #[default]
    PassThrough,
    /// Hold each chunk read from either side for this long after it arrived,
    /// then forward it. Chunks keep their order; a side is not read while one
    /// of its chunks waits.
    Latency(Duration),
    /// Keep connections open, read and discard everything from both sides and
    /// forward nothing: a network partition in which no packet is answered
    /// and none is refused. New connections are accepted and black-holed too.
    BlackHole,
}

/// Counters since the proxy started (a cheap snapshot, see [`FaultProxy::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ProxyStats {
    /// Client connections accepted and forwarded (refused ones not counted).
    pub accepted: u64,
    /// Client connections closed at once because of [`FaultProxy::refuse_new`].
    pub refused: u64,
    /// Client connections closed by [`FaultProxy::drop_all`].
    pub dropped: u64,
    /// Client connections open now (as [`FaultProxy::connections`]).
    pub open: usize,
    /// Bytes forwarded from clients to the upstream server.
    pub bytes_to_upstream: u64,
    /// Bytes forwarded from the upstream server to clients.
    pub bytes_to_client: u64,
    /// Bytes read from either side and discarded under [`Fault::BlackHole`].
    pub bytes_discarded: u64,
}

/// State shared by the handle, the accept loop and the connection tasks.
#[derive(Debug, Default)]
struct Shared {
    refuse_new: AtomicBool,
    open: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    bytes_to_upstream: AtomicU64,
    bytes_to_client: AtomicU64,
    bytes_discarded: AtomicU64,
}

/// Decrements the open-connection count when a connection task ends or is
/// aborted (the guard lives inside the task's future).
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A fault-injecting TCP proxy in front of one upstream server.
///
/// Start it with [`FaultProxy::start`], point a client at
/// [`uri_for`](Self::uri_for)`(server.uri())`, and change the fault at any
/// time from any task ([`pass_through`](Self::pass_through),
/// [`set_latency`](Self::set_latency), [`black_hole`](Self::black_hole),
/// [`drop_all`](Self::drop_all), [`refuse_new`](Self::refuse_new)). All
/// methods take `&self`; share the proxy with an `Arc` if several tasks drive
/// it.
///
/// [`stop`](Self::stop) (or dropping the proxy) stops accepting and closes
/// every connection; no task outlives it.
///
/// ```no_run
/// use std::time::Duration;
/// use mongodb::{bson::doc, Client};
/// use polymongo_testkit::{FaultProxy, TestServer};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestServer::start().await?;
/// let proxy = FaultProxy::start(&format!("127.0.0.1:{}", server.port().unwrap())).await?;
/// let client = Client::with_uri_str(proxy.uri_for(server.uri())).await?;
///
/// proxy.set_latency(Duration::from_millis(200)); // every round trip now takes 400 ms or more
/// proxy.black_hole();                            // operations time out
/// proxy.pass_through();                          // and recover
/// proxy.drop_all();                              // every open connection is closed
/// # let _ = client; Ok(()) }
/// ```
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    fault: watch::Sender<Fault>,
    /// Bumped by `drop_all`; each connection task closes when it changes.
    generation: watch::Sender<u64>,
    shared: Arc<Shared>,
    /// The accept loop and the signal that stops it; `None` once stopped.
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .field("fault", &self.fault())
            .field("stats", &self.stats())
            .field("running", &self.running.is_some())
            .finish()
    }
}

impl FaultProxy {
    /// Starts a proxy on a free 127.0.0.1 port that forwards to `upstream`
    /// (`"host:port"`, e.g. `"127.0.0.1:27017"`), in [`Fault::PassThrough`].
    ///
    /// Must be called inside a tokio runtime; the proxy's tasks run on it.
    /// The upstream is resolved once here and connected to once per accepted
    /// connection (a connection whose upstream cannot be reached is closed,
    /// unless it is black-holed).
    ///
    /// # Errors
    /// [`TestKitError::Io`] when `upstream` does not resolve or the listening
    /// socket cannot be bound.
    pub async fn start(upstream: &str) -> Result<FaultProxy, TestKitError> {
        let upstream_addr = tokio::net::lookup_host(upstream)
            .await
            .map_err(|e| TestKitError::io(format!("resolving proxy upstream {upstream:?}"), e))?
            .next()
            .ok_or_else(|| {
                TestKitError::io(
                    format!("resolving proxy upstream {upstream:?}"),
                    io::Error::new(io::ErrorKind::NotFound, "no address"),
                )
            })?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| TestKitError::io("binding 127.0.0.1:0 for the fault proxy", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| TestKitError::io("reading the fault proxy's address", e))?;

        let (fault, _) = watch::channel(Fault::PassThrough);
        let (generation, _) = watch::channel(0u64);
        let shared = Arc::new(Shared::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(
            listener,
            upstream_addr,
            fault.subscribe(),
            generation.subscribe(),
            Arc::clone(&shared),
            stop_rx,
        ));
        tracing::debug!(%addr, upstream = %upstream_addr, "fault proxy started");
        Ok(FaultProxy {
            addr,
            upstream: upstream_addr,
            fault,
            generation,
            shared,
            running: Some((stop_tx, task)),
        })
    }

    /// The address the proxy listens on (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The upstream address connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// `server_uri` with its host list replaced by the proxy's address, the
    /// credentials, path and query kept, e.g.
    /// `mongodb://127.0.0.1:5000/?directConnection=true` →
    /// `mongodb://127.0.0.1:PROXY/?directConnection=true`.
    ///
    /// `directConnection=true` is added when the URI does not set
    /// `directConnection`: otherwise a driver would discover the replica set's
    /// members by their real addresses and go around the proxy. A
    /// `mongodb+srv://` URI becomes `mongodb://` (the proxy is one host).
    pub fn uri_for(&self, server_uri: &str) -> String {
        rewrite_uri(server_uri, &self.addr.to_string())
    }

    /// The fault in force now.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Applies `fault` to every open and every new connection, at once.
    pub fn set_fault(&self, fault: Fault) {
        tracing::debug!(addr = %self.addr, ?fault, "fault proxy mode");
        self.fault.send_replace(fault);
    }

    /// Forwards bytes unchanged: [`Fault::PassThrough`].
    pub fn pass_through(&self) {
        self.set_fault(Fault::PassThrough);
    }

    /// Delays each forwarded chunk, in each direction, by `delay`:
    /// [`Fault::Latency`]. A request/reply round trip takes at least `2 × delay`.
    pub fn set_latency(&self, delay: Duration) {
        self.set_fault(Fault::Latency(delay));
    }

    /// Keeps connections open but forwards nothing and discards everything:
    /// [`Fault::BlackHole`]. Bytes held by [`Fault::Latency`] at that moment are
    /// discarded too.
    pub fn black_hole(&self) {
        self.set_fault(Fault::BlackHole);
    }

    /// Closes every open connection, both the client's and the upstream
    /// socket, and goes on accepting new ones in the current fault. Returns at
    /// once; the connection tasks close their sockets within moments (poll
    /// [`connections`](Self::connections) to wait for it).
    pub fn drop_all(&self) {
        tracing::debug!(addr = %self.addr, open = self.connections(), "fault proxy drops all connections");
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// While `refuse` is true, every new connection is accepted and closed at
    /// once with a reset (the client sees "connection reset"; a listening
    /// socket cannot refuse selectively). Open connections are not affected.
    pub fn refuse_new(&self, refuse: bool) {
        self.shared.refuse_new.store(refuse, Ordering::SeqCst);
    }

    /// Client connections open through the proxy now.
    pub fn connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Counters since the proxy started.
    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            accepted: s.accepted.load(Ordering::SeqCst),
            refused: s.refused.load(Ordering::SeqCst),
            dropped: s.dropped.load(Ordering::SeqCst),
            open: s.open.load(Ordering::SeqCst),
            bytes_to_upstream: s.bytes_to_upstream.load(Ordering::SeqCst),
            bytes_to_client: s.bytes_to_client.load(Ordering::SeqCst),
            bytes_discarded: s.bytes_discarded.load(Ordering::SeqCst),
        }
    }

    /// Whether [`stop`](Self::stop) has been called.
    pub fn is_stopped(&self) -> bool {
        self.running.is_none()
    }

    /// Stops accepting, closes every connection and waits until all of the
    /// proxy's tasks have ended (after which [`connections`](Self::connections)
    /// is 0). Stopping a stopped proxy does nothing.
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::warn!(addr = %self.addr, error = %e, "fault proxy accept loop panicked");
                }
            }
            tracing::debug!(addr = %self.addr, "fault proxy stopped");
        }
    }
}

impl Drop for FaultProxy {
    /// Aborts the accept loop, which drops the listener and aborts every
    /// connection task (their sockets close when the runtime drops them).
    fn drop(&mut self) {
        if let Some((_, task)) = self.running.take() {
            task.abort();
        }
    }
}

/// Accepts connections until `stop` fires (or its sender is dropped), then
/// aborts and awaits every connection task.
async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    fault: watch::Receiver<Fault>,
    generation: watch::Receiver<u64>,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    if shared.refuse_new.load(Ordering::SeqCst) {
                        shared.refused.fetch_add(1, Ordering::SeqCst);
                        // RST rather than FIN: closer to a refused connection.
                        let _ = client.set_zero_linger();
                        drop(client);
                        continue;
                    }
                    shared.accepted.fetch_add(1, Ordering::SeqCst);
                    shared.open.fetch_add(1, Ordering::SeqCst);
                    let guard = OpenGuard(Arc::clone(&shared));
                    let mut fault = fault.clone();
                    let mut generation = generation.clone();
                    // Connections accepted from here on are not dropped by
                    // earlier `drop_all` calls.
                    generation.mark_unchanged();
                    fault.mark_unchanged();
                    let shared = Arc::clone(&shared);
                    tasks.spawn(async move {
                        let _guard = guard;
                        connection(client, upstream, fault, generation, shared).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fault proxy accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    tasks.shutdown().await;
}

/// One proxied connection: runs until both directions end, an I/O error,
/// or a `drop_all`.
async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    fault: watch::Receiver<Fault>,
    mut generation: watch::Receiver<u64>,
    shared: Arc<Shared>,
) {
    let _ = client.set_nodelay(true);
    let forward = async {
        let server = match TcpStream::connect(upstream).await {
            Ok(server) => server,
            Err(e) => {
                tracing::debug!(%upstream, error = %e, "fault proxy cannot reach upstream");
                return hold_unreachable(client, fault, &shared).await;
            }
        };
        let _ = server.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let up = pump(
            client_read,
            server_write,
            fault.clone(),
            &shared.bytes_to_upstream,
            &shared.bytes_discarded,
        );
        let down = pump(
            server_read,
            client_write,
            fault,
            &shared.bytes_to_client,
            &shared.bytes_discarded,
        );
        // The first error ends both directions (dropping all four halves).
        let _ = tokio::try_join!(up, down);
    };
    tokio::select! {
        () = forward => {}
        changed = generation.changed() => {
            if changed.is_ok() {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// A client whose upstream could not be reached: held open (reading and
/// discarding) while black-holed, closed as soon as it is not.
async fn hold_unreachable(
    mut client: TcpStream,
    mut fault: watch::Receiver<Fault>,
    shared: &Shared,
) {
    let mut buf = vec![0u8; CHUNK];
    while *fault.borrow_and_update() == Fault::BlackHole {
        tokio::select! {
            read = client.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    shared.bytes_discarded.fetch_add(n as u64, Ordering::Relaxed);
                }
            },
            changed = fault.changed() => if changed.is_err() { return },
        }
    }
}

/// Copies `from` → `to` under the current fault until `from` ends (then
/// half-closes `to`) or an I/O error.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
    forwarded: &AtomicU64,
    discarded: &AtomicU64,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        let arrived = Instant::now();
        // Decide what to do with this chunk; a fault change while it waits
        // (under latency) is applied to it.
        loop {
            let current = *fault.borrow_and_update();
            match current {
                Fault::PassThrough => {
                    to.write_all(&buf[..n]).await?;
                    forwarded.fetch_add(n as u64, Ordering::Relaxed);
                    break;
                }
                Fault::BlackHole => {
                    discarded.fetch_add(n as u64, Ordering::Relaxed);
                    break;
                }
                Fault::Latency(delay) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(arrived + delay) => {
                            to.write_all(&buf[..n]).await?;
                            forwarded.fetch_add(n as u64, Ordering::Relaxed);
                            break;
                        }
                        changed = fault.changed() => {
                            if changed.is_err() {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Replaces the host list of a `mongodb://` / `mongodb+srv://` URI with
/// `host_port` (see [`FaultProxy::uri_for`]).
fn rewrite_uri(uri: &str, host_port: &str) -> String {
    let rest = uri
        .strip_prefix("mongodb+srv://")
        .or_else(|| uri.strip_prefix("mongodb://"))
        .unwrap_or(uri);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let userinfo = authority
        .rfind('@')
        .map(|at| &authority[..=at])
        .unwrap_or("");
    let mut out = format!("mongodb://{userinfo}{host_port}");
    let (path, query) = match tail.find('?') {
        Some(q) => (&tail[..q], Some(&tail[q + 1..])),
        None => (tail, None),
    };
    let has_direct = query.is_some_and(|q| {
        q.split('&').any(|kv| {
            kv.split('=')
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case("directConnection"))
        })
    });
    out.push_str(if path.is_empty() { "/" } else { path });
    match query {
        Some(q) if has_direct => {
            out.push('?');
            out.push_str(q);
        }
        Some(q) if !q.is_empty() => {
            out.push('?');
            out.push_str(q);
            out.push_str("&directConnection=true");
        }
        _ => out.push_str("?directConnection=true"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "127.0.0.1:9";

    #[test]
    fn rewrites_the_host_and_keeps_the_query() {
        assert_eq!(
            rewrite_uri("mongodb://127.0.0.1:5000/?directConnection=true", P),
            "mongodb://127.0.0.1:9/?directConnection=true"
        );
        assert_eq!(
            rewrite_uri("mongodb://127.0.0.1:5000/app?w=1&directConnection=false", P),
            "mongodb://127.0.0.1:9/app?w=1&directConnection=false"
        );
    }

    #[test]
    fn adds_direct_connection_when_absent() {
        assert_eq!(
            rewrite_uri("mongodb://127.0.0.1:5000/?replicaSet=testkit", P),
            "mongodb://127.0.0.1:9/?replicaSet=testkit&directConnection=true"
        );
        assert_eq!(
            rewrite_uri("mongodb://127.0.0.1:5000", P),
            "mongodb://127.0.0.1:9/?directConnection=true"
        );
        assert_eq!(
            rewrite_uri("mongodb://a:1,b:2/db", P),
            "mongodb://127.0.0.1:9/db?directConnection=true"
        );
    }

    #[test]
    fn keeps_credentials_and_drops_srv() {
        assert_eq!(
            rewrite_uri("mongodb://u:p%40ss@h:1/?authSource=admin", P),
            "mongodb://u:p%40ss@127.0.0.1:9/?authSource=admin&directConnection=true"
        );
        assert_eq!(
            rewrite_uri("mongodb+srv://cluster.example.com/db", P),
            "mongodb://127.0.0.1:9/db?directConnection=true"
        );
    }

    #[test]
    fn proxy_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<FaultProxy>();
    }
}
