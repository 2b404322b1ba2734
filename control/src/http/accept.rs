//! Accepting connections: the per-address and global caps, counted before TLS (a connection
//! over either is closed at once, holding no slot), the TLS handshake within a timeout, then
//! HTTP/1.1 on the connection.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Extension;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use wgmesh_config::control::{DEFAULT_HANDSHAKE_TIMEOUT_SECS, DEFAULT_MAX_CONNECTIONS};

use super::{lock_limiter, router, Remote, Shared};
use crate::limiter::{DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, DEFAULT_NETMAP_INTERVAL, WINDOW};

/// The server's limits (control.toml sets the connection limits and the timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Most connections served at once (every agent holds one long poll); one more is closed
    /// at once.
    pub max_connections: usize,
    /// Most connections one source address (an IPv6 /64) holds at once, counted before TLS.
    pub max_connections_per_address: u32,
    /// How long a client has to finish the TLS handshake, to send its request headers, and to
    /// send a request body.
    pub handshake_timeout: Duration,
    /// Minimum interval between two netmaps handed to one host.
    pub netmap_interval: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            handshake_timeout: Duration::from_secs(DEFAULT_HANDSHAKE_TIMEOUT_SECS.into()),
            netmap_interval: DEFAULT_NETMAP_INTERVAL,
        }
    }
}

/// Accepts TLS connections on `listener` and serves the API until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let router = router(Arc::clone(&shared));
    let slots = Arc::new(tokio::sync::Semaphore::new(shared.limits.max_connections));
    let mut refused = RefusedLog::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        // Counted before TLS, and closed at once when over a cap: a flood of idle connections
        // from one address neither holds slots nor waits in the backlog in front of others.
        if !lock_limiter(&shared.connections).open(remote.ip()) {
            refused.note(remote, "its address holds the most connections allowed");
            continue;
        }
        let counted = Counted {
            shared: Arc::clone(&shared),
            addr: remote.ip(),
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refused.note(
                remote,
                "the control plane holds the most connections allowed",
            );
            continue;
        };
        let service = TowerToHyperService::new(router.clone().layer(Extension(Remote(remote))));
        let acceptor = acceptor.clone();
        let timeout = shared.limits.handshake_timeout;
        tokio::spawn(async move {
            let _held = (slot, counted);
            serve_connection(tcp, remote, acceptor, service, timeout).await;
        });
    }
}

/// The TLS handshake (within `timeout`), then HTTP/1.1 on one connection.
async fn serve_connection(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    service: TowerToHyperService<Router>,
    timeout: Duration,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%remote, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(tls), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(%remote, "connection ended: {e}");
    }
}

/// Logs refused connections at most once per [`WINDOW`], with how many were refused.
#[derive(Default)]
struct RefusedLog {
    since: Option<Instant>,
    count: u64,
}

impl RefusedLog {
    fn note(&mut self, remote: SocketAddr, why: &str) {
        self.count += 1;
        let now = Instant::now();
        if self.since.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            tracing::warn!(
                %remote,
                refused = self.count,
                "closing new connections at once: {why}"
            );
            self.since = Some(now);
            self.count = 0;
        }
    }
}

/// One accepted connection's place in [`ConnectionCounts`], given back when it drops.
struct Counted {
    shared: Arc<Shared>,
    addr: IpAddr,
}

impl Drop for Counted {
    fn drop(&mut self) {
        lock_limiter(&self.shared.connections).close(self.addr);
    }
}
