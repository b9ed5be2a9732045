//! HTTP/1 serving that a hostile peer cannot exhaust: a cap on open connections (an upgraded
//! WebSocket still counts until it closes), a deadline for a new connection's first request
//! head (so a silent or drip-fed connection is closed), `TCP_NODELAY`, the peer's address in
//! each request's extensions (`ConnectInfo<SocketAddr>`), and a graceful shutdown that waits
//! for connections to close.
//!
//! `axum::serve` has neither a cap nor a deadline (it sets no timer, so hyper's header-read
//! timeout never fires), which is why this loop exists. The deadline is enforced by peeking
//! at the socket before hyper sees it, not with hyper's own timer: with that timer set,
//! upgraded WebSockets relayed 70 times fewer messages (809 against 59,625 msg/s in
//! `scripts/bench-mesh.sh`, 2026-12-03), and the cause was not found.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt as _;

use crate::shards::{Placement, Shards};

/// Descriptors kept free for everything else a server opens (key files, Redis, the admin
/// listener's connections, logs) when the connection cap is derived from `RLIMIT_NOFILE`.
const RESERVED_DESCRIPTORS: u64 = 256;

/// Limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Most connections open at once; further ones are accepted and closed at once.
    pub max_connections: usize,
    /// How long a new connection may take to send its first request's head.
    pub header_read_timeout: Duration,
    /// A connection that moves no byte either way for this long is closed (an idle keep-alive
    /// connection, a WebSocket whose peer vanished). Engine.IO pings every 25 s, so a live
    /// session is never this quiet.
    pub idle_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl ServeLimits {
    /// These limits, with the connection cap lowered to fit the process's descriptor limit
    /// (after raising its soft limit to the hard one), so accepting never starves the rest of
    /// the process of descriptors.
    pub fn fitted_to_descriptors(self) -> Self {
        let Some(available) = raise_descriptor_limit() else {
            return self;
        };
        let fit = available.saturating_sub(RESERVED_DESCRIPTORS).max(16);
        Self {
            max_connections: self
                .max_connections
                .min(usize::try_from(fit).unwrap_or(usize::MAX)),
            ..self
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit in force.
fn raise_descriptor_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let current = limit.current?;
    if let Some(maximum) = limit.maximum
        && maximum > current
    {
        limit.current = Some(maximum);
        if setrlimit(Resource::Nofile, limit).is_ok() {
            return Some(maximum);
        }
    }
    Some(current)
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, asks every
/// connection to finish its current request, and returns once all have closed (the caller
/// bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_on(listener, router, limits, &Shards::caller(), shutdown).await
}

/// [`serve`], with each accepted connection (and every task it spawns) pinned to one of
/// `shards`' runtimes.
pub async fn serve_on(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shards: &Shards,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let (stop, stopping) = watch::channel(false);
    let refused = AtomicU64::new(0);
    let mut last_warning: Option<Instant> = None;
    let idle = Arc::new(IdleTracker::new(limits.idle_timeout));
    let sweeper = tokio::spawn(idle.clone().sweep());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors or a connection reset before accept: wait, go on.
                    tracing::warn!(%addr, %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(tcp);
            let total = refused.fetch_add(1, Ordering::Relaxed) + 1;
            if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                last_warning = Some(Instant::now());
                tracing::warn!(%addr, max_connections = max, refused_total = total, "connection limit reached: closing new connections until some end");
            }
            continue;
        };
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "could not set TCP_NODELAY");
        }
        let (activity, router, stopping) = (idle.track(), router.clone(), stopping.clone());
        let serve = move |tcp| {
            let io = Counted {
                tcp,
                _slot: slot,
                activity,
            };
            serve_connection(io, peer, router, limits.header_read_timeout, stopping)
        };
        match shards.next() {
            Placement::Here => {
                tokio::spawn(serve(tcp));
            }
            Placement::Thread(runtime) => {
                // A socket belongs to the runtime whose reactor it is registered with: take
                // it off this one and register it on the shard's.
                let tcp = match tcp.into_std() {
                    Ok(tcp) => tcp,
                    Err(err) => {
                        tracing::debug!(%peer, %err, "could not hand a connection to its shard");
                        continue;
                    }
                };
                runtime.spawn(async move {
                    match TcpStream::from_std(tcp) {
                        Ok(tcp) => serve(tcp).await,
                        Err(err) => {
                            tracing::debug!(%peer, %err, "could not register a connection on its shard");
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    // Keeps closing idle connections while the others drain.
    let _sweeper = AbortOnDrop(sweeper);
    // Every slot back means every connection, upgraded ones included, has closed.
    let _ = slots
        .acquire_many(u32::try_from(max).unwrap_or(u32::MAX))
        .await;
    Ok(())
}

async fn serve_connection(
    io: Counted,
    peer: SocketAddr,
    router: Router,
    header_read_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    if !head_arrives(&io.tcp, header_read_timeout).await {
        tracing::debug!(%peer, "closing a connection that sent no complete request head in time");
        return;
    }
    let service =
        hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(%peer, %err, "connection ended");
            }
            return;
        }
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    connection.as_mut().graceful_shutdown();
    if let Err(err) = connection.await {
        tracing::debug!(%peer, %err, "connection ended during shutdown");
    }
}

/// Largest request head looked for; hyper refuses larger heads itself.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Whether a whole request head (up to its blank line) arrives within `deadline`. Peeks, so
/// hyper still reads every byte.
async fn head_arrives(tcp: &TcpStream, deadline: Duration) -> bool {
    let mut buf = vec![0u8; 4096];
    tokio::time::timeout(deadline, async {
        loop {
            let n = match tcp.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || n >= MAX_HEAD_BYTES {
                return true;
            }
            if n == buf.len() {
                buf.resize((buf.len() * 2).min(MAX_HEAD_BYTES), 0);
            } else {
                // More bytes are coming: wait for them rather than spin on the same peek.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    })
    .await
    .unwrap_or(false)
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// When each open connection last moved a byte; a sweeper closes the quiet ones. One shared
/// table and one sweeping task, rather than a timer per connection.
#[derive(Debug)]
struct IdleTracker {
    timeout: Duration,
    base: Instant,
    next_id: AtomicU64,
    live: std::sync::Mutex<std::collections::HashMap<u64, Arc<Activity>>>,
}

#[derive(Debug, Default)]
struct Activity {
    /// Milliseconds since the tracker's base at the last byte read or written.
    last_ms: AtomicU64,
    expired: std::sync::atomic::AtomicBool,
    /// The reader to wake when the connection expires: every connection has a pending read
    /// (hyper waiting for a request, or a WebSocket reader).
    reader: futures_util::task::AtomicWaker,
}

/// A connection's entry in the tracker; removes itself when the connection drops.
#[derive(Debug)]
struct Tracked {
    id: u64,
    activity: Arc<Activity>,
    tracker: Arc<IdleTracker>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.tracker
            .live
            .lock()
            .expect("idle lock")
            .remove(&self.id);
    }
}

impl IdleTracker {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            base: Instant::now(),
            next_id: AtomicU64::new(0),
            live: std::sync::Mutex::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn track(self: &Arc<Self>) -> Tracked {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::default());
        activity.last_ms.store(self.now_ms(), Ordering::Relaxed);
        self.live
            .lock()
            .expect("idle lock")
            .insert(id, activity.clone());
        Tracked {
            id,
            activity,
            tracker: self.clone(),
        }
    }

    async fn sweep(self: Arc<Self>) {
        let timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let mut ticker = tokio::time::interval((self.timeout / 4).max(Duration::from_millis(50)));
        loop {
            ticker.tick().await;
            let now = self.now_ms();
            let live = self.live.lock().expect("idle lock");
            for activity in live.values() {
                if now.saturating_sub(activity.last_ms.load(Ordering::Relaxed)) > timeout_ms
                    && !activity.expired.swap(true, Ordering::Relaxed)
                {
                    activity.reader.wake();
                }
            }
        }
    }
}

impl Tracked {
    fn touch(&self) {
        self.activity
            .last_ms
            .store(self.tracker.now_ms(), Ordering::Relaxed);
    }

    /// Passes a write's outcome through, noting activity when bytes went out.
    fn wrote(&self, polled: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            self.touch();
        }
        polled
    }

    fn expired(&self) -> bool {
        self.activity.expired.load(Ordering::Relaxed)
    }
}

fn idle_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection idle too long")
}

/// A connection holding one slot of the cap for as long as it is open, including after an
/// upgrade to WebSocket (hyper hands this very value to the upgrade), and closed once idle.
#[derive(Debug)]
struct Counted {
    tcp: TcpStream,
    _slot: OwnedSemaphorePermit,
    activity: Tracked,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.activity.expired() {
            return Poll::Ready(Err(idle_error()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => self.activity.touch(),
            Poll::Pending => {
                self.activity.activity.reader.register(cx.waker());
                // Expired between the check and the registration: do not sleep through it.
                if self.activity.expired() {
                    return Poll::Ready(Err(idle_error()));
                }
            }
            _ => {}
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.activity.expired() {
            return Poll::Ready(Err(idle_error()));
        }
        let polled = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.activity.wrote(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.activity.expired() {
            return Poll::Ready(Err(idle_error()));
        }
        let polled = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.activity.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    async fn start(limits: ServeLimits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/peer",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.ip().to_string()
            }),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, router, limits, async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    /// Reads until the server closes the connection; how long that took.
    fn closed_after(mut stream: std::net::TcpStream) -> Duration {
        let started = Instant::now();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
        started.elapsed()
    }

    #[tokio::test]
    async fn silent_and_drip_fed_connections_are_closed() {
        let limits = ServeLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ServeLimits::default()
        };
        let (addr, _stop) = start(limits).await;
        let silent = std::net::TcpStream::connect(addr).unwrap();
        let mut drip = std::net::TcpStream::connect(addr).unwrap();
        let mut served = std::net::TcpStream::connect(addr).unwrap();
        let waited = tokio::task::spawn_blocking(move || {
            drip.write_all(b"GET /peer HTTP/1.1\r\n").unwrap();
            let drip = std::thread::spawn(move || {
                for _ in 0..20 {
                    if drip.write_all(b"X-Slow: 1\r\n").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                closed_after(drip)
            });
            served
                .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut answer = [0u8; 512];
            let n = served.read(&mut answer).unwrap();
            assert!(
                String::from_utf8_lossy(&answer[..n]).contains("127.0.0.1"),
                "the peer address reaches the handler"
            );
            [closed_after(silent), drip.join().unwrap()]
        })
        .await
        .unwrap();
        for (what, took) in ["silent", "drip-fed"].iter().zip(waited) {
            assert!(took < Duration::from_secs(3), "{what}: open for {took:?}");
        }
    }

    #[tokio::test]
    async fn a_keep_alive_connection_idle_after_a_request_is_closed() {
        let limits = ServeLimits {
            idle_timeout: Duration::from_millis(400),
            ..ServeLimits::default()
        };
        let (addr, _stop) = start(limits).await;
        let took = tokio::task::spawn_blocking(move || {
            let mut idle = std::net::TcpStream::connect(addr).unwrap();
            idle.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut answer = [0u8; 512];
            let n = idle.read(&mut answer).unwrap();
            assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
            closed_after(idle)
        })
        .await
        .unwrap();
        assert!(
            took < Duration::from_secs(2),
            "idle keep-alive open for {took:?}"
        );
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_and_a_freed_slot_is_reused() {
        let limits = ServeLimits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(30),
            ..ServeLimits::default()
        };
        let (addr, _stop) = start(limits).await;
        let held: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let over = std::net::TcpStream::connect(addr).unwrap();
        let took = tokio::task::spawn_blocking(move || closed_after(over))
            .await
            .unwrap();
        assert!(
            took < Duration::from_secs(2),
            "over the cap, open for {took:?}"
        );
        drop(held);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = reqwest_like_get(addr).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    async fn reqwest_like_get(addr: SocketAddr) -> String {
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer
        })
        .await
        .unwrap()
    }

    #[test]
    fn the_cap_fits_the_descriptor_limit() {
        let fitted = ServeLimits {
            max_connections: usize::MAX,
            ..ServeLimits::default()
        }
        .fitted_to_descriptors();
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap();
        assert!(fitted.max_connections as u64 <= soft.saturating_sub(RESERVED_DESCRIPTORS).max(16));
    }
}
