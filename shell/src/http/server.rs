//! hyper 1.x HTTP/1.1 on smol: accept loop, per-connection limits, and small response helpers.
//! Framing is hyper's; this file only wires sockets, timers and limits.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_io::{Async, Timer};
use bytes::Bytes;
use event_listener::Event;
use futures_lite::future;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use smol_hyper::rt::{FuturesIo, SmolTimer};

use crate::{error, warn};

pub type Body = Full<Bytes>;
pub type Resp = Response<Body>;
pub type BoxFut = Pin<Box<dyn Future<Output = Resp> + Send>>;
/// What serves one request. It gets the peer address for logs.
pub type Handler = Arc<dyn Fn(Request<Incoming>, SocketAddr) -> BoxFut + Send + Sync>;

/// Limits of one HTTP listener.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Largest request head (request line and headers) hyper buffers.
    pub max_header_bytes: usize,
    /// A client must finish sending its request head within this time.
    pub header_read_timeout: Duration,
    pub keep_alive: bool,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(30),
            keep_alive: true,
        }
    }
}

/// Turn a `-httpListenAddr` value (`:8480`, `host:port`) into a socket address; an empty host
/// means all IPv4 interfaces (vminsert listens on `tcp4` unless `-enableTCP6`).
pub fn listen_address(addr: &str) -> Result<SocketAddr, String> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    use std::net::ToSocketAddrs;
    full.to_socket_addrs()
        .map_err(|e| format!("cannot resolve listen address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {addr:?}"))
}

pub fn bind(addr: &str) -> Result<Async<TcpListener>, String> {
    let sa = listen_address(addr)?;
    Async::<TcpListener>::bind(sa).map_err(|e| format!("cannot listen on {addr:?}: {e}"))
}

/// Tracks in-flight requests and tells the accept loop to stop.
#[derive(Default)]
pub struct ServerControl {
    stopping: AtomicBool,
    stop: Event,
    in_flight: AtomicUsize,
    idle: Event,
}

impl ServerControl {
    pub fn new() -> Arc<ServerControl> {
        Arc::new(ServerControl::default())
    }

    /// Stop accepting new connections.
    pub fn stop_accepting(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.notify(usize::MAX);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Wait until no request is in flight, or `timeout`. Returns whether it got idle.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let l = self.idle.listen();
            if self.in_flight() == 0 {
                return true;
            }
            let timed_out = future::or(
                async {
                    l.await;
                    false
                },
                async {
                    Timer::at(deadline).await;
                    true
                },
            )
            .await;
            if timed_out {
                return self.in_flight() == 0;
            }
        }
    }
}

struct InFlight(Arc<ServerControl>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify(usize::MAX);
        }
    }
}

/// Accept connections until `ctl.stop_accepting()`; each connection is served by hyper on `exec`.
pub async fn serve(
    listener: Async<TcpListener>,
    exec: Arc<smol::Executor<'static>>,
    limits: ServerLimits,
    ctl: Arc<ServerControl>,
    handler: Handler,
) {
    loop {
        if ctl.is_stopping() {
            return;
        }
        let stop = ctl.stop.listen();
        if ctl.is_stopping() {
            return;
        }
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            stop.await;
            None
        })
        .await;
        let (stream, peer) = match accepted {
            None => return,
            Some(Ok(x)) => x,
            Some(Err(e)) => {
                // Out of file descriptors and the like: back off instead of spinning.
                error!("cannot accept HTTP connection: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.get_ref().set_nodelay(true);
        exec.spawn(serve_conn(
            stream,
            peer,
            limits.clone(),
            ctl.clone(),
            handler.clone(),
        ))
        .detach();
    }
}

/// Serve HTTP/1.1 on one already accepted connection (any byte stream: the OpenTSDB port hands
/// over sockets whose first byte it has already read).
pub async fn serve_conn<S>(
    stream: S,
    peer: SocketAddr,
    limits: ServerLimits,
    ctl: Arc<ServerControl>,
    handler: Handler,
) where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        ctl.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(ctl.clone());
        let fut = handler(req, peer);
        async move {
            let r = fut.await;
            drop(guard);
            Ok::<_, std::convert::Infallible>(r)
        }
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(SmolTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(limits.keep_alive);
    if let Err(e) = b.serve_connection(FuturesIo::new(stream), svc).await {
        if !e.is_incomplete_message() {
            warn!("error serving HTTP connection from {peer}: {e}");
        }
    }
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub fn with_type(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

pub fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// An error response: the text with a trailing newline, as vminsert's error helper writes it.
pub fn error_text(status: StatusCode, msg: &str) -> Resp {
    text(status, format!("{msg}\n"))
}

/// Read one body frame with a deadline so a client that stops sending cannot hold a worker.
pub async fn next_chunk(body: &mut Incoming, timeout: Duration) -> Result<Option<Bytes>, String> {
    use http_body_util::BodyExt;
    loop {
        let frame = future::or(async { Ok(body.frame().await) }, async {
            Timer::after(timeout).await;
            Err(format!(
                "cannot read request body in {timeout:?}; the client is too slow or stalled"
            ))
        })
        .await?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(format!("cannot read request body: {e}")),
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    if !data.is_empty() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// Read the whole body, refusing more than `limit` bytes.
pub async fn read_whole(
    body: &mut Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    match next_chunk(body, timeout).await? {
        None => Ok(Vec::new()),
        Some(first) => read_rest(body, first, limit, timeout).await,
    }
}

/// Read the rest of a body whose first chunk is already in hand, refusing more than `limit`
/// bytes in all.
pub async fn read_rest(
    body: &mut Incoming,
    first: Bytes,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let too_big = || {
        format!(
            "too big request: more than {limit} bytes; it mustn't exceed -maxInsertRequestSize={limit} bytes"
        )
    };
    if first.len() > limit {
        return Err(too_big());
    }
    let mut out = first.to_vec();
    while let Some(chunk) = next_chunk(body, timeout).await? {
        if out.len() + chunk.len() > limit {
            return Err(too_big());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The most of an unread request body read and dropped after the response is decided, so the
/// keep-alive connection can carry the next request (Go's net/http uses the same bound).
pub const MAX_DRAIN: usize = 256 * 1024;

/// The longest a client may take to send the rest of a body nobody will use.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Make `resp` safe to send on a keep-alive connection whose request body may be left partly
/// unread (a request refused before or while its body was read). Up to [`MAX_DRAIN`] of what
/// remains is read and dropped, so the next request on the connection starts where it
/// should; when more remains, the client stalls, or it waits for `100 Continue` we never
/// sent, the response says `Connection: close` and the connection ends after it.
pub async fn finish_body(
    headers: &hyper::HeaderMap,
    body: &mut Incoming,
    mut resp: Resp,
    timeout: Duration,
) -> Resp {
    use hyper::body::Body as _;
    if body.is_end_stream() {
        return resp;
    }
    let expects_continue = headers
        .get(hyper::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    // A declared length beyond the bound is not worth reading at all.
    let too_big = body
        .size_hint()
        .exact()
        .is_some_and(|n| n > MAX_DRAIN as u64);
    let drained = !expects_continue && !too_big && drain(body, timeout).await;
    if !drained {
        resp.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// Read and drop the rest of `body`: true when it ended within [`MAX_DRAIN`] bytes and
/// `timeout` in all.
async fn drain(body: &mut Incoming, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    let mut seen = 0usize;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        match next_chunk(body, left).await {
            Ok(None) => return true,
            Ok(Some(chunk)) => {
                seen += chunk.len();
                if seen > MAX_DRAIN {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(listen_address(":8480").unwrap().to_string(), "0.0.0.0:8480");
        assert_eq!(listen_address("127.0.0.1:0").unwrap().port(), 0);
        assert!(listen_address("nonsense").is_err());
    }
}
