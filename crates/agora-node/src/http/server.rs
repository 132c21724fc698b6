//! The HTTP server: the accept loop in front of the router, with the bounds an operator expects of anything on a
//! port (nginx's and Envoy's defaults are the model):
//!
//! - **Headers in bounded time** (`[http] header-timeout`): a client that trickles its request headers (slowloris)
//!   is disconnected; bodies are bounded by `[http] body-timeout` where they are read (`http::body`).
//! - **A connection limit** (`[http] max-connections`, also kept below the process's file-descriptor limit): past
//!   it, a new connection is still read, but only `GET /healthz` is answered; everything else gets 503 with
//!   `Retry-After`, counted. The health check therefore keeps answering however many clients hold connections.
//!   Those places past the limit are a reserve a flood cannot hold: a connection there that has not started a
//!   request within [`PEEK_WAIT`] is closed, so each idle connection of a flood takes a place for 100 ms, not for a
//!   header timeout (256 places then absorb 2,500 new idle connections a second, and a load balancer's probe, which
//!   sends its request at once, gets through).
//! - **Accept errors** (out of file descriptors) are logged rate-limited and retried after a pause, instead of a
//!   busy loop or a crash.
//! - **Graceful shutdown**: on the signal, no new connection is accepted and open ones are drained, within a
//!   deadline (EventSource connections of the direct transport end with their streams, at the signal).
//! - **Health checks off the busy runtime.** Accepting runs on a thread of its own (a one-thread runtime), which
//!   peeks at each plain-HTTP connection's first bytes (for at most 100 ms): a `GET /healthz` is answered right there
//!   (and the connection closed after it), so that 10,000 busy streams on the main runtime cannot delay a load balancer's health check;
//!   every other connection (and every TLS one, whose bytes cannot be peeked) moves to the main runtime: a
//!   `GET /v1/eventsource` to the direct transport and the fan-out (`http::direct`), the rest to hyper.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use crate::error::ServeError;
use crate::services::metrics::NodeMetrics;

/// Connections served past the limit (health checks only) at once, at most; beyond these, the connection is closed
/// at once.
const OVERFLOW_CONNECTIONS: usize = 256;

/// How long a connection past the limit may take to send its headers: short, so that clients holding those slots
/// (a slowloris) give way to the next health check within a second.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// What a connection buffers at most, each way, in hyper (its own default is about 400 KiB).
const CONNECTION_BUFFER: usize = 64 << 10;

/// The send buffer of an SSE stream's socket (`GET /v1/events`): a few hundred events.
const STREAM_SEND_BUFFER: usize = 128 << 10;

/// How long the edge thread waits for a connection's first bytes before handing it to the main runtime.
const PEEK_WAIT: Duration = Duration::from_millis(100);

/// Pause after an accept error (e.g. out of file descriptors) before accepting again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// File descriptors kept free for everything that is not an HTTP connection (NATS, files, the journal's logs).
const FD_RESERVE: u64 = 64;

/// The server's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served normally at once.
    pub max_connections: usize,
    /// Connections past that, served for the health check only.
    pub overflow_connections: usize,
    /// Time to receive a request's headers.
    pub header_timeout: Duration,
    /// Time open connections get to finish after the shutdown signal.
    pub drain: Duration,
    /// Stack size of the accept thread (the default suits; tests set an impossible one to make the start fail).
    pub accept_thread_stack: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            overflow_connections: OVERFLOW_CONNECTIONS,
            header_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(5),
            accept_thread_stack: 2 * 1024 * 1024,
        }
    }
}

/// Raises the soft file-descriptor limit to the hard limit (where the OS allows) and fits the connection limits
/// under it, so that accepting never fails for lack of descriptors: `(normal, overflow)` connections.
pub fn fit_to_fd_limit(max_connections: usize) -> (usize, usize) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!("cannot read or raise the file-descriptor limit: {e}");
            return (max_connections, OVERFLOW_CONNECTIONS);
        }
    };
    // Three quarters of the descriptors for connections, an eighth for health checks past the limit, the rest for
    // NATS, push deliveries (bounded separately), files, and accepting-then-closing.
    let spare = limit.saturating_sub(FD_RESERVE);
    let usable = usize::try_from(spare / 4 * 3).unwrap_or(usize::MAX).max(16);
    let overflow = usize::try_from(spare / 8)
        .unwrap_or(usize::MAX)
        .clamp(4, OVERFLOW_CONNECTIONS);
    if usable < max_connections {
        tracing::warn!(
            fd_limit = limit,
            "[http] max-connections = {max_connections} does not fit the process's file-descriptor limit of {limit}: \
             serving at most {usable} connections (raise LimitNOFILE / ulimit -n)"
        );
    }
    (max_connections.min(usable), overflow)
}

/// Serves one connection (plain or TLS) until it ends or the drain ends it.
async fn serve_connection<I>(io: I, service: Router, header_timeout: Duration, watcher: Watcher)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // hyper's default lets a connection buffer ~400 KiB of response before it waits for the socket: a stream to
        // a client that stopped reading then makes and holds that much (4,000 such streams: 1.6 GiB, and seconds
        // of the API runtime's CPU making it). Requests fit well within this (headers are refused past 32 KiB).
        .max_buf_size(CONNECTION_BUFFER)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    let _ = watcher.watch(connection).await;
}

/// Serves `router` on `listener` (HTTPS when `tls` is set) until `shutdown`, then drains open connections for at
/// most `limits.drain`. Accepting and health checks run on a thread of their own (see the module documentation).
///
/// Returns once that thread has drained: `Ok` after a shutdown, an error when the thread or its runtime could not
/// start, so that a node whose API never served exits with a failure instead of looking like a clean stop.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<super::tls::Acceptor>,
    metrics: Arc<NodeMetrics>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let main = tokio::runtime::Handle::current();
    let listener = listener.into_std().map_err(ServeError::Listener)?;
    // The thread reports whether it serves (`started`), then when it has drained (`done`).
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<Result<(), ServeError>>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("agora-http-edge".into())
        .stack_size(limits.accept_thread_stack)
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = started_tx.send(Err(ServeError::AcceptRuntime(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        let _ = started_tx.send(Ok(()));
                        accept_loop(listener, router, limits, tls, metrics, shutdown, main).await;
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(ServeError::Listener(e)));
                    }
                }
            });
            let _ = done_tx.send(());
        })
        .map_err(ServeError::AcceptThread)?;
    started_rx.await.map_err(|_| ServeError::AcceptThreadDied)??;
    let _ = done_rx.await;
    Ok(())
}

/// The accept loop, on the edge thread: limits, the health fast path, hand-off to `main`, then the drain.
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<super::tls::Acceptor>,
    metrics: Arc<NodeMetrics>,
    shutdown: CancellationToken,
    main: tokio::runtime::Handle,
) {
    let normal = Arc::new(Semaphore::new(limits.max_connections));
    let silent_dropped = agora::log_limit::LogLimiter::new();
    let silent_dropped = Arc::new(silent_dropped);
    let overflow = Arc::new(Semaphore::new(limits.overflow_connections));
    let graceful = GracefulShutdown::new();
    let accept_errors = agora::log_limit::LogLimiter::new();
    let health_only = health_only_router(router.clone());
    loop {
        let (stream, _peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    let (n, log) = accept_errors.record();
                    if log {
                        tracing::error!(total = n, "cannot accept an HTTP connection: {e}");
                    }
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        // Events are small writes that must leave at once: Nagle's algorithm would hold one back until the previous
        // one is acknowledged, and the client may delay that acknowledgement by up to 40 ms.
        let _ = stream.set_nodelay(true);
        let (service, permit, header_timeout, overflowing) = match normal.clone().try_acquire_owned() {
            Ok(permit) => (router.clone(), permit, limits.header_timeout, false),
            Err(_) => match overflow.clone().try_acquire_owned() {
                Ok(permit) => {
                    metrics.connections_refused.inc();
                    let timeout = limits.header_timeout.min(OVERFLOW_HEADER_TIMEOUT);
                    (health_only.clone(), permit, timeout, true)
                }
                Err(_) => {
                    metrics.connections_refused.inc();
                    drop(stream);
                    continue;
                }
            },
        };
        let watcher = graceful.watcher();
        if let Some(tls) = tls.as_ref().map(super::tls::Acceptor::get) {
            let Some(stream) = to_main(stream) else { continue };
            main.spawn(async move {
                if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                    // The handshake is bounded like the headers that follow it.
                    match tokio::time::timeout(header_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, service, header_timeout, watcher).await,
                        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
                drop(permit);
            });
            continue;
        }
        let health_only = health_only.clone();
        let main = main.clone();
        let silent_dropped = silent_dropped.clone();
        tokio::spawn(async move {
            let first = first_request(&stream, header_timeout).await;
            // Connections past the limit are served here anyway (health checks only, closed after one answer); one
            // that has said nothing yet gives its place back at once (see the module documentation).
            if overflowing && first == FirstRequest::Silent {
                let (n, log) = silent_dropped.record();
                if log {
                    tracing::warn!(
                        total = n,
                        "past [http] max-connections, connections that send no request within {PEEK_WAIT:?} are \
                         closed (a flood of idle connections?)"
                    );
                }
                drop(stream);
                drop(permit);
                return;
            }
            if first == FirstRequest::Health || overflowing {
                serve_connection(stream, health_only, header_timeout, watcher).await;
                drop(permit);
                return;
            }
            let Some(stream) = to_main(stream) else { return };
            main.spawn(async move {
                let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                    return;
                };
                if first == FirstRequest::EventSource {
                    // The fan-out keeps the connection's place for as long as the stream lasts.
                    return super::direct::serve(stream, service, header_timeout, permit).await;
                }
                if first == FirstRequest::Stream {
                    // A stream to a client that stops reading fills its socket's send buffer before the stream
                    // notices: bounded, 5,000 such clients hold 640 MiB less of kernel memory (and the copies into
                    // it) than with the autotuned buffers, and the stream falls behind (and is caught up or ended)
                    // sooner.
                    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(STREAM_SEND_BUFFER);
                }
                serve_connection(stream, service, header_timeout, watcher).await;
                drop(permit);
            });
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.drain) => {
            tracing::warn!("HTTP connections still open after {:?}; closing them", limits.drain);
        }
    }
}

/// Detaches a connection from the edge thread's reactor, to be registered with the main runtime's.
fn to_main(stream: tokio::net::TcpStream) -> Option<std::net::TcpStream> {
    stream
        .into_std()
        .map_err(|e| tracing::debug!("cannot move a connection to the main runtime: {e}"))
        .ok()
}

/// What a plain connection's first request is, as far as the accept loop cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FirstRequest {
    /// `GET` or `HEAD /healthz`: answered on the edge thread.
    Health,
    /// `GET /v1/eventsource`: the direct transport and the fan-out (`http::direct`).
    EventSource,
    /// `GET /v1/events`: an SSE stream through hyper, with a bounded send buffer.
    Stream,
    /// Anything else, or not known in time: hyper on the main runtime.
    Other,
    /// No byte within [`PEEK_WAIT`]: hyper on the main runtime, or closed when past the limit.
    Silent,
}

/// Tells a connection's first request from its first bytes, peeked without consuming them. Waits for them at most
/// [`PEEK_WAIT`] (or `within`, if shorter): a connection that sends nothing is [`FirstRequest::Silent`], one that
/// trickles [`FirstRequest::Other`]; either is handed on, where the header timeout ends it (or closed at once past
/// the connection limit); the edge thread never spends long on one.
async fn first_request(stream: &tokio::net::TcpStream, within: Duration) -> FirstRequest {
    const PROBES: [(&[u8], FirstRequest); 4] = [
        (b"GET /healthz", FirstRequest::Health),
        (b"HEAD /healthz", FirstRequest::Health),
        (b"GET /v1/eventsource", FirstRequest::EventSource),
        (b"GET /v1/events", FirstRequest::Stream),
    ];
    let mut buffer = [0u8; 32];
    let deadline = tokio::time::Instant::now() + within.min(PEEK_WAIT);
    let mut pause = Duration::from_millis(1);
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buffer)).await;
        let n = match peeked {
            Ok(Ok(n)) => n,
            // Nothing arrived in time.
            Err(_) => return FirstRequest::Silent,
            Ok(Err(_)) => return FirstRequest::Other,
        };
        let head = &buffer[..n];
        let matched = PROBES
            .iter()
            .find(|(p, _)| head.len() > p.len() && head.starts_with(p) && matches!(head[p.len()], b' ' | b'?'));
        if let Some((_, first)) = matched {
            return *first;
        }
        // Not enough bytes yet to tell, and they could still make a known request: wait for more.
        let undecided = PROBES.iter().any(|(p, _)| head.len() <= p.len() && p.starts_with(head));
        if n == 0 || !undecided || tokio::time::Instant::now() + pause > deadline {
            return FirstRequest::Other;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// What a connection past the limit gets: the health check, or 503 with `Retry-After`; and the connection closes.
fn health_only_router(router: Router) -> Router {
    Router::new()
        .fallback(|| async { busy() })
        .route(
            "/healthz",
            axum::routing::any(move |request: Request<Body>| health(router.clone(), request)),
        )
        .layer(axum::middleware::map_response(close_connection))
}

async fn health(router: Router, request: Request<Body>) -> Result<Response, Infallible> {
    use tower::ServiceExt;
    router.oneshot(request).await
}

fn busy() -> Response {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many connections ([http] max-connections); retry later",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

async fn close_connection(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").await.expect("bind")
    }

    #[tokio::test]
    async fn an_accept_thread_that_cannot_start_is_an_error_not_a_clean_stop() {
        let limits = Limits {
            accept_thread_stack: 1 << 50, // more than any address space: the spawn fails
            ..Limits::default()
        };
        let served = serve(
            listener().await,
            Router::new(),
            limits,
            None,
            Arc::new(NodeMetrics::default()),
            CancellationToken::new(),
        )
        .await;
        assert!(matches!(served, Err(ServeError::AcceptThread(_))), "{served:?}");
    }

    #[tokio::test]
    async fn a_shutdown_after_serving_is_a_clean_stop() {
        let listener = listener().await;
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            Router::new().route("/x", axum::routing::get(|| async { "x" })),
            Limits::default(),
            None,
            Arc::new(NodeMetrics::default()),
            shutdown.clone(),
        ));
        // It really serves before it stops.
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer)
            .await
            .expect("read");
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("drained in time")
            .expect("joined");
        assert!(stopped.is_ok(), "{stopped:?}");
    }
}
