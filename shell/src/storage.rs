//! Drives the core [`Gateway`] over real TCP: dials storage nodes when told, carries bytes both
//! ways, passes the time, and lets HTTP handlers push batches with back-pressure.
//!
//! Design: one `Mutex<Shared>` holds the gateway *and* the table of live connection tasks.
//! Every caller (HTTP handler, connection task, timer task) locks it, makes one `handle_*` or
//! `push` call, then drains `poll_output` before unlocking. Why a mutex and not a driver task
//! with channels: every gateway call is short and never awaits, so a lock is held for
//! microseconds; a push gets its answer synchronously (no reply channel per request); and
//! because outputs are dispatched under the same lock that records which task owns which
//! `ConnId`, a connection task that lost a race with `Output::Close` (its socket failed just
//! as the gateway dropped it) can be recognised by its generation number and ignored, so a
//! late `handle_closed` never hits a newer connection with the same id.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use bytes::Bytes;
use event_listener::Event;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use shardgate_core::gateway::{ConnId, Gateway, GatewayConfig, Output, PushError};
use shardgate_core::route::Batch;
use shardgate_core::Time;

use crate::{error, info, warn};

/// The default vmstorage port for vminsert connections.
pub const DEFAULT_STORAGE_PORT: u16 = 8400;

/// Validate and normalise a `-storageNode` entry for dialing (spec wire-protocol.md §1.1):
/// `:8400` is appended when the entry has no port; an entry with `/` or one that cannot be
/// split into host and port (a bare IPv6 literal such as `::1`) is refused.
pub fn dial_address(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("empty -storageNode entry".into());
    }
    if raw.contains('/') {
        return Err(format!("-storageNode={raw:?} must not contain '/'"));
    }
    if split_host_port(raw).is_ok() {
        return Ok(raw.to_string());
    }
    let with_port = format!("{raw}:{DEFAULT_STORAGE_PORT}");
    match split_host_port(&with_port) {
        Ok(_) => Ok(with_port),
        Err(e) => Err(format!("cannot parse -storageNode={raw:?}: {e}")),
    }
}

/// Go's `net.SplitHostPort`.
pub fn split_host_port(s: &str) -> Result<(&str, &str), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or("missing ']' in address")?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = after.strip_prefix(':').ok_or("missing port in address")?;
        if port.contains(':') || host.contains('[') {
            return Err("too many colons in address".into());
        }
        return Ok((host, port));
    }
    let i = s.rfind(':').ok_or("missing port in address")?;
    let (host, port) = (&s[..i], &s[i + 1..]);
    if host.contains(':') {
        return Err("too many colons in address".into());
    }
    Ok((host, port))
}

/// Check the whole `-storageNode` list: empty items and exact duplicates are fatal.
pub fn validate_storage_nodes(nodes: &[String]) -> Result<Vec<String>, String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(nodes.len());
    for n in nodes {
        if !seen.insert(n.as_str()) {
            return Err(format!("duplicate -storageNode={n:?}"));
        }
        out.push(dial_address(n)?);
    }
    Ok(out)
}

/// Why a push did not go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushFailure {
    /// The buffers stayed full until the deadline (`-insert.maxQueueDuration`): 503.
    Timeout,
    /// Graceful shutdown has begun: 503.
    ShuttingDown,
}

impl std::fmt::Display for PushFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushFailure::Timeout => f.write_str(
                "cannot push data to storage nodes in -insert.maxQueueDuration: storage nodes are overloaded or unavailable",
            ),
            PushFailure::ShuttingDown => {
                f.write_str("cannot send data to storage nodes: graceful shutdown is in progress")
            }
        }
    }
}

/// Socket settings for storage-node connections.
#[derive(Clone, Debug)]
pub struct DialConfig {
    pub dial_timeout: Duration,
    /// `TCP_USER_TIMEOUT`; zero leaves it unset.
    pub user_timeout: Duration,
    pub enable_tcp6: bool,
}

enum ConnCmd {
    Write(Bytes),
    Close,
}

struct ConnHandle {
    generation: u64,
    tx: async_channel::Sender<ConnCmd>,
}

struct Shared {
    gw: Gateway,
    conns: HashMap<ConnId, ConnHandle>,
    next_generation: u64,
}

pub struct Storage {
    shared: Mutex<Shared>,
    /// Woken whenever the gateway may have freed buffer space (any `handle_*` call).
    progress: Event,
    /// Woken whenever the gateway's next deadline may have moved.
    timer_changed: Event,
    epoch: Instant,
    /// Dial address per node index (placement order).
    addrs: Vec<String>,
    dial: DialConfig,
    exec: Arc<smol::Executor<'static>>,
    me: std::sync::Weak<Storage>,
}

impl Storage {
    /// Build the gateway and start its timer task on `exec`. Connections are dialed when the
    /// gateway asks for them.
    pub fn start(
        config: GatewayConfig,
        dial: DialConfig,
        exec: Arc<smol::Executor<'static>>,
    ) -> Result<Arc<Storage>, String> {
        validate_storage_nodes(&config.storage_nodes)?;
        let epoch = Instant::now();
        let gw = Gateway::new(config, Time::ZERO);
        let addrs = gw
            .placement()
            .nodes()
            .iter()
            .map(|n| dial_address(n))
            .collect::<Result<Vec<_>, _>>()?;
        let st = Arc::new_cyclic(|me| Storage {
            shared: Mutex::new(Shared {
                gw,
                conns: HashMap::new(),
                next_generation: 0,
            }),
            progress: Event::new(),
            timer_changed: Event::new(),
            epoch,
            addrs,
            dial,
            exec: exec.clone(),
            me: me.clone(),
        });
        exec.spawn(st.clone().timer_task()).detach();
        Ok(st)
    }

    /// The gateway's notion of now.
    pub fn now(&self) -> Time {
        Time::from_micros(self.epoch.elapsed().as_micros().min(u64::MAX as u128) as u64)
    }

    fn instant_of(&self, t: Time) -> Instant {
        self.epoch + Duration::from_micros(t.as_micros())
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic inside the gateway poisons the lock; the data is still the best we have.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Storage node addresses in placement order, as dialed.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// A fresh batch for this cluster, and the placement it needs.
    pub fn new_batch(&self) -> (Batch, Arc<shardgate_core::route::Placement>) {
        let s = self.lock();
        (s.gw.new_batch(), s.gw.placement().clone())
    }

    /// Run `f` on the gateway (for stats snapshots and the like).
    pub fn with_gateway<R>(&self, f: impl FnOnce(&Gateway) -> R) -> R {
        f(&self.lock().gw)
    }

    /// Push a batch; while the gateway is overloaded wait for progress and retry until
    /// `deadline`.
    pub async fn push(&self, batch: &mut Batch, deadline: Instant) -> Result<(), PushFailure> {
        loop {
            let listener = {
                let mut s = self.lock();
                let now = self.now();
                let r = s.gw.push(batch, now);
                self.pump(&mut s, false);
                match r {
                    Ok(()) => return Ok(()),
                    Err(PushError::ShuttingDown) => return Err(PushFailure::ShuttingDown),
                    // Listen before unlocking so progress made right after is not missed.
                    Err(PushError::Overload) => self.progress.listen(),
                }
            };
            if Instant::now() >= deadline {
                return Err(PushFailure::Timeout);
            }
            let timed_out = future::or(
                async {
                    listener.await;
                    false
                },
                async {
                    Timer::at(deadline).await;
                    true
                },
            )
            .await;
            if timed_out {
                // One last try: progress may have come with the deadline.
                let mut s = self.lock();
                let r = s.gw.push(batch, self.now());
                self.pump(&mut s, false);
                return match r {
                    Ok(()) => Ok(()),
                    Err(PushError::ShuttingDown) => Err(PushFailure::ShuttingDown),
                    Err(PushError::Overload) => Err(PushFailure::Timeout),
                };
            }
        }
    }

    /// Stop taking pushes and wait until everything buffered is delivered or `timeout` passes.
    /// Returns whether the gateway drained.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        {
            let mut s = self.lock();
            s.gw.begin_shutdown(self.now());
            self.pump(&mut s, true);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let listener = {
                let s = self.lock();
                if s.gw.is_drained() {
                    return true;
                }
                self.progress.listen()
            };
            let timed_out = future::or(
                async {
                    listener.await;
                    false
                },
                async {
                    Timer::at(deadline).await;
                    true
                },
            )
            .await;
            if timed_out {
                return self.lock().gw.is_drained();
            }
        }
    }

    /// Dispatch every pending output. Runs with the lock held, so the connection table and
    /// the gateway never disagree.
    fn pump(self: &Storage, s: &mut Shared, progressed: bool) {
        while let Some(out) = s.gw.poll_output() {
            self.dispatch(s, out);
        }
        if progressed {
            self.progress.notify(usize::MAX);
        }
        self.timer_changed.notify(usize::MAX);
    }

    fn dispatch(&self, s: &mut Shared, out: Output) {
        {
            match out {
                Output::Dial(conn) => {
                    let generation = s.next_generation;
                    s.next_generation += 1;
                    let (tx, rx) = async_channel::unbounded();
                    if let Some(old) = s.conns.insert(conn, ConnHandle { generation, tx }) {
                        let _ = old.tx.try_send(ConnCmd::Close);
                    }
                    let me = self.self_arc();
                    self.exec
                        .spawn(conn_task(me, conn, generation, rx))
                        .detach();
                }
                Output::Transmit(conn, bytes) => {
                    if let Some(h) = s.conns.get(&conn) {
                        let _ = h.tx.try_send(ConnCmd::Write(bytes));
                    }
                }
                Output::Close(conn) => {
                    if let Some(h) = s.conns.remove(&conn) {
                        let _ = h.tx.try_send(ConnCmd::Close);
                    }
                }
            }
        }
    }

    /// Dispatch outputs without waking the timer task (which is the caller).
    fn pump_quiet(&self, s: &mut Shared) {
        while let Some(out) = s.gw.poll_output() {
            self.dispatch(s, out);
        }
    }

    /// Run a connection event on the gateway if `generation` still owns `conn`; false when the
    /// task is stale and must stop.
    fn conn_event(
        &self,
        conn: ConnId,
        generation: u64,
        f: impl FnOnce(&mut Gateway, Time),
    ) -> bool {
        let mut s = self.lock();
        match s.conns.get(&conn) {
            Some(h) if h.generation == generation => {}
            _ => return false,
        }
        let now = self.now();
        f(&mut s.gw, now);
        self.pump(&mut s, true);
        true
    }

    async fn timer_task(self: Arc<Self>) {
        loop {
            let (listener, deadline) = {
                let mut s = self.lock();
                let listener = self.timer_changed.listen();
                // Outputs may be queued without any call (the first dials, right after `new`).
                self.pump_quiet(&mut s);
                let mut deadline = s.gw.poll_timeout();
                if let Some(t) = deadline {
                    if t <= self.now() {
                        s.gw.handle_timeout(self.now());
                        self.pump(&mut s, true);
                        deadline = s.gw.poll_timeout();
                    }
                }
                (listener, deadline)
            };
            match deadline {
                Some(t) => {
                    let at = self.instant_of(t);
                    future::or(listener, async {
                        Timer::at(at).await;
                    })
                    .await;
                }
                None => listener.await,
            }
        }
    }

    /// `pump` runs from `&Storage`; connection tasks need an owned handle.
    fn self_arc(&self) -> Arc<Storage> {
        self.me.upgrade().expect("storage outlives its tasks")
    }
}

/// Resolve `addr` and connect within the dial timeout, then set the socket options vminsert uses.
async fn dial(addr: &str, cfg: &DialConfig) -> std::io::Result<Async<TcpStream>> {
    let timeout = cfg.dial_timeout;
    let attempt = async {
        let addrs: Vec<SocketAddr> = smol::net::resolve(addr)
            .await?
            .into_iter()
            .filter(|a| cfg.enable_tcp6 || a.is_ipv4())
            .collect();
        let mut last = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no IPv4 address for {addr}"),
        );
        for a in addrs {
            match Async::<TcpStream>::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    let stream = future::or(attempt, async {
        Timer::after(timeout).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("dial timeout after {timeout:?}"),
        ))
    })
    .await?;
    stream.get_ref().set_nodelay(true)?;
    let sock = socket2::SockRef::from(stream.get_ref());
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1));
    sock.set_tcp_keepalive(&ka)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if !cfg.user_timeout.is_zero() {
        sock.set_tcp_user_timeout(Some(cfg.user_timeout))?;
    }
    Ok(stream)
}

enum Ended {
    /// The gateway closed it (or replaced it): do not report.
    ByGateway,
    /// EOF or an I/O error: report `handle_closed`.
    Broken(String),
}

async fn conn_task(
    st: Arc<Storage>,
    conn: ConnId,
    generation: u64,
    rx: async_channel::Receiver<ConnCmd>,
) {
    let addr = st.addrs[conn.node].clone();
    let stream = match dial(&addr, &st.dial).await {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot dial storage node {addr} ({:?}): {e}", conn.bucket);
            st.conn_event(conn, generation, |gw, now| gw.handle_dial_failed(conn, now));
            return;
        }
    };
    if !st.conn_event(conn, generation, |gw, now| gw.handle_dialed(conn, now)) {
        return;
    }
    let stream = Arc::new(stream);
    let writer = {
        let stream = stream.clone();
        async move {
            while let Ok(cmd) = rx.recv().await {
                match cmd {
                    ConnCmd::Write(b) => {
                        if let Err(e) = (&*stream).write_all(&b).await {
                            return Ended::Broken(format!("write error: {e}"));
                        }
                    }
                    ConnCmd::Close => return Ended::ByGateway,
                }
            }
            Ended::ByGateway
        }
    };
    let reader = {
        let stream = stream.clone();
        let st = st.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match (&*stream).read(&mut buf).await {
                    Ok(0) => return Ended::Broken("connection closed by the storage node".into()),
                    Ok(n) => {
                        if !st.conn_event(conn, generation, |gw, now| {
                            gw.handle_input(conn, &buf[..n], now)
                        }) {
                            return Ended::ByGateway;
                        }
                    }
                    Err(e) => return Ended::Broken(format!("read error: {e}")),
                }
            }
        }
    };
    match future::or(writer, reader).await {
        Ended::ByGateway => {}
        Ended::Broken(why) => {
            if st.conn_event(conn, generation, |gw, now| gw.handle_closed(conn, now)) {
                error!(
                    "connection to storage node {addr} ({:?}) broke: {why}",
                    conn.bucket
                );
            }
        }
    }
    let _ = stream.get_ref().shutdown(std::net::Shutdown::Both);
    info!(
        "closed connection to storage node {addr} ({:?})",
        conn.bucket
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_node_addresses() {
        assert_eq!(dial_address("10.0.0.1").unwrap(), "10.0.0.1:8400");
        assert_eq!(dial_address("host:8401").unwrap(), "host:8401");
        assert_eq!(dial_address("[::1]").unwrap(), "[::1]:8400");
        assert_eq!(dial_address("[::1]:9").unwrap(), "[::1]:9");
        assert!(dial_address("::1").is_err());
        assert!(dial_address("http://x").is_err());
        assert!(dial_address("").is_err());
        assert!(validate_storage_nodes(&["a".into(), "a".into()]).is_err());
        // Same node spelled two ways is not an exact duplicate.
        assert_eq!(
            validate_storage_nodes(&["a".into(), "a:8400".into()]).unwrap(),
            ["a:8400", "a:8400"]
        );
    }
}
