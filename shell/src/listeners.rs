//! The non-HTTP listeners: Graphite, Influx and OpenTSDB telnet over TCP and UDP, and the
//! clusternative server that takes rows from another vminsert (spec: flags-and-endpoints.md
//! §3.4, formats/graphite.md, influx.md, opentsdb-telnet.md, wire-protocol.md §10).
//!
//! TCP and UDP listeners always run in multitenant mode (the tenant comes from each series'
//! `vm_account_id`/`vm_project_id` labels). A TCP connection is one stream: each read is split
//! into lines, parsed and pushed before the next read, so a connection holds its read buffer
//! plus at most one unfinished line. A UDP datagram is one independent stream.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use shardgate_core::formats::clusternative;
use shardgate_core::formats::graphite::GraphiteParser;
use shardgate_core::formats::influx::{InfluxParser, Precision};
use shardgate_core::formats::lines::DEFAULT_MAX_LINE_LEN;
use shardgate_core::formats::opentsdb::OpenTsdbParser;
use shardgate_core::ingest::{Ingest, IngestScratch, Protocol, RequestConfig, TenantMode};
use shardgate_core::model::Label;
use shardgate_core::wire::{Bucket, Reply, ServerConfig, ServerConn, ServerEvent};
use shardgate_core::{Tenant, Time};

use crate::http::limiter::Limiter;
use crate::http::server::{self, Handler, ServerControl, ServerLimits};
use crate::pipeline::{
    now_ms, GraphiteLines, InfluxLines, IngestShared, LineHandler, Lines, OpenTsdbLines,
};
use crate::{error, info, warn};

/// Largest UDP datagram read, and the size of each TCP read.
const READ_BUF: usize = 64 * 1024;

/// How long the OpenTSDB port waits for the first byte that tells telnet from HTTP.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the listeners share.
#[derive(Clone)]
pub struct ListenerCtx {
    pub ingest: Arc<IngestShared>,
    pub limiter: Arc<Limiter>,
    pub exec: Arc<smol::Executor<'static>>,
}

/// A line protocol served over TCP and UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineProtocol {
    Graphite,
    Influx,
    OpenTsdb,
}

impl LineProtocol {
    /// The `type` label of the row counters.
    pub fn rows_type(self) -> &'static str {
        match self {
            LineProtocol::Graphite => "graphite",
            LineProtocol::Influx => "influx",
            LineProtocol::OpenTsdb => "opentsdb",
        }
    }

    fn ingest_protocol(self) -> Protocol {
        match self {
            LineProtocol::Influx => Protocol::Influx,
            _ => Protocol::Standard,
        }
    }
}

/// Bind TCP and UDP on the same address. With port 0 the TCP port is picked first and UDP
/// takes the same number, retrying when that UDP port happens to be taken.
pub fn bind_tcp_udp(addr: &str) -> Result<(Async<TcpListener>, Async<UdpSocket>), String> {
    let sa = server::listen_address(addr)?;
    for _ in 0..20 {
        let tcp = Async::<TcpListener>::bind(sa)
            .map_err(|e| format!("cannot listen on {addr:?}: {e}"))?;
        let port = tcp
            .get_ref()
            .local_addr()
            .map_err(|e| format!("cannot listen on {addr:?}: {e}"))?
            .port();
        match Async::<UdpSocket>::bind(SocketAddr::new(sa.ip(), port)) {
            Ok(udp) => return Ok((tcp, udp)),
            Err(e) if sa.port() != 0 => {
                return Err(format!("cannot listen for UDP on {addr:?}: {e}"))
            }
            Err(_) => continue,
        }
    }
    Err(format!(
        "cannot find a port free for both TCP and UDP for {addr:?}"
    ))
}

/// Start the TCP and UDP listeners of one line protocol. For OpenTSDB, `http` serves the
/// connections whose first byte is not `p`. Returns the bound address.
pub fn start_line_listener(
    ctx: &ListenerCtx,
    proto: LineProtocol,
    addr: &str,
    http: Option<(Handler, Arc<ServerControl>)>,
) -> Result<SocketAddr, String> {
    let (tcp, udp) = bind_tcp_udp(addr)?;
    let local = tcp.get_ref().local_addr().map_err(|e| e.to_string())?;
    info!(
        "started {} TCP and UDP server at {local}",
        proto.rows_type()
    );
    ctx.exec
        .spawn(accept_loop(ctx.clone(), proto, tcp, http))
        .detach();
    ctx.exec.spawn(udp_loop(ctx.clone(), proto, udp)).detach();
    Ok(local)
}

async fn accept_loop(
    ctx: ListenerCtx,
    proto: LineProtocol,
    listener: Async<TcpListener>,
    http: Option<(Handler, Arc<ServerControl>)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                error!("cannot accept {} connection: {e}", proto.rows_type());
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.get_ref().set_nodelay(true);
        ctx.ingest.metrics.inc(&format!(
            "vm_ingestserver_requests_total{{type=\"{}\",name=\"write\",net=\"tcp\"}}",
            proto.rows_type()
        ));
        let ctx2 = ctx.clone();
        let http = http.clone();
        ctx.exec
            .spawn(async move {
                let result = match proto {
                    LineProtocol::OpenTsdb => serve_opentsdb_conn(&ctx2, stream, peer, http).await,
                    _ => serve_tcp(&ctx2, proto, stream, Vec::new()).await,
                };
                if let Err(e) = result {
                    ctx2.ingest.metrics.inc(&format!(
                        "vm_ingestserver_request_errors_total{{type=\"{}\",name=\"write\",net=\"tcp\"}}",
                        proto.rows_type()
                    ));
                    warn!("{} connection from {peer}: {e}", proto.rows_type());
                }
            })
            .detach();
    }
}

/// The OpenTSDB port serves telnet `put` lines and HTTP: a first byte `p` means telnet, any
/// other goes to the HTTP server with that byte replayed (opentsdb-telnet.md).
async fn serve_opentsdb_conn(
    ctx: &ListenerCtx,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    http: Option<(Handler, Arc<ServerControl>)>,
) -> Result<(), String> {
    let mut first = [0u8; 1];
    let got = future::or(async { Some((&stream).read(&mut first).await) }, async {
        Timer::after(FIRST_BYTE_TIMEOUT).await;
        None
    })
    .await;
    match got {
        None => Err("no data within 5s of connecting; closing".into()),
        Some(Err(e)) => Err(format!("read error: {e}")),
        Some(Ok(0)) => Ok(()),
        Some(Ok(_)) if first[0] == b'p' => {
            serve_tcp(ctx, LineProtocol::OpenTsdb, stream, first.to_vec()).await
        }
        Some(Ok(_)) => match http {
            Some((handler, ctl)) => {
                let io = Replay {
                    first: Some(first[0]),
                    inner: stream,
                };
                server::serve_conn(io, peer, ServerLimits::default(), ctl, handler).await;
                Ok(())
            }
            None => Err("not a telnet put line and no HTTP handler".into()),
        },
    }
}

/// A stream whose first byte was already read: it is handed out again before the socket.
struct Replay {
    first: Option<u8>,
    inner: Async<TcpStream>,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if let Some(b) = self.first.take() {
            buf[0] = b;
            return Poll::Ready(Ok(1));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

async fn serve_tcp(
    ctx: &ListenerCtx,
    proto: LineProtocol,
    stream: Async<TcpStream>,
    replay: Vec<u8>,
) -> Result<(), String> {
    let f = &ctx.ingest.formats;
    match proto {
        LineProtocol::Graphite => {
            let h = GraphiteLines {
                parser: GraphiteParser::new(),
                opts: f.graphite,
            };
            tcp_lines(
                ctx,
                proto,
                stream,
                replay,
                Lines::new(DEFAULT_MAX_LINE_LEN, h),
            )
            .await
        }
        LineProtocol::Influx => {
            let h = InfluxLines {
                parser: InfluxParser::new(),
                formats: ctx.ingest.clone(),
                db: Vec::new(),
                precision: Precision::Auto,
            };
            tcp_lines(
                ctx,
                proto,
                stream,
                replay,
                Lines::new(f.influx_max_line_size, h),
            )
            .await
        }
        LineProtocol::OpenTsdb => {
            let h = OpenTsdbLines {
                parser: OpenTsdbParser::new(),
                opts: f.opentsdb,
            };
            tcp_lines(
                ctx,
                proto,
                stream,
                replay,
                Lines::new(DEFAULT_MAX_LINE_LEN, h),
            )
            .await
        }
    }
}

/// One TCP connection of a line protocol: read, parse, push, repeat. The insert slot is held
/// only while a read's lines are parsed and pushed, not while the socket is idle.
async fn tcp_lines<H: LineHandler>(
    ctx: &ListenerCtx,
    proto: LineProtocol,
    stream: Async<TcpStream>,
    replay: Vec<u8>,
    mut lines: Lines<H>,
) -> Result<(), String> {
    let shared = &*ctx.ingest;
    let (mut batch, placement) = shared.storage.new_batch();
    let mut scratch = IngestScratch::default();
    let mut buf = vec![0u8; READ_BUF];
    let mut pending = replay;
    loop {
        let n = if pending.is_empty() {
            match (&stream).read(&mut buf).await {
                Ok(n) => n,
                Err(e) => return Err(format!("read error: {e}")),
            }
        } else {
            let n = pending.len().min(buf.len());
            buf[..n].copy_from_slice(&pending[..n]);
            pending.drain(..n);
            n
        };
        // Taken only once a read brought data, so an idle connection holds no slot.
        let _slot = ctx
            .limiter
            .take(shared.max_queue_duration)
            .await
            .map_err(|e| e.to_string())?;
        let config = shared.config();
        let request = RequestConfig::new(TenantMode::Multitenant, proto.ingest_protocol());
        let mut sink = Ingest::new(&config, request, &placement, &mut batch, &mut scratch);
        let parsed = if n == 0 {
            lines.finish(&mut sink)
        } else {
            lines.feed(&buf[..n], &mut sink)
        };
        let stats = sink.finish();
        shared.account(proto.rows_type(), &stats);
        shared.push(&mut batch).await.map_err(|e| e.to_string())?;
        parsed.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
    }
}

async fn udp_loop(ctx: ListenerCtx, proto: LineProtocol, sock: Async<UdpSocket>) {
    let shared = &*ctx.ingest;
    let (mut batch, placement) = shared.storage.new_batch();
    let mut scratch = IngestScratch::default();
    let mut buf = vec![0u8; READ_BUF];
    let mut graphite = GraphiteParser::new();
    let mut influx = InfluxParser::new();
    let mut opentsdb = OpenTsdbParser::new();
    let count = |what: &str| {
        shared.metrics.inc(&format!(
            "{what}{{type=\"{}\",name=\"write\",net=\"udp\"}}",
            proto.rows_type()
        ))
    };
    loop {
        let n = match sock.recv_from(&mut buf).await {
            Ok((n, _)) => n,
            Err(e) => {
                count("vm_ingestserver_request_errors_total");
                error!("cannot read {} UDP datagram: {e}", proto.rows_type());
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        count("vm_ingestserver_requests_total");
        let config = shared.config();
        let request = RequestConfig::new(TenantMode::Multitenant, proto.ingest_protocol());
        let mut sink = Ingest::new(&config, request, &placement, &mut batch, &mut scratch);
        let block = &buf[..n];
        let now = now_ms();
        let f = &shared.formats;
        match proto {
            LineProtocol::Graphite => {
                graphite.parse_block(block, 1, now, &f.graphite, &mut sink);
            }
            LineProtocol::Influx => {
                let opts = f.influx(b"", Precision::Auto);
                influx.parse_stream(block, 1, now, &opts, &mut sink);
            }
            LineProtocol::OpenTsdb => {
                opentsdb.parse_block(block, 1, now, &f.opentsdb, &mut sink);
            }
        }
        let stats = sink.finish();
        shared.account(proto.rows_type(), &stats);
        if let Err(e) = shared.push(&mut batch).await {
            count("vm_ingestserver_request_errors_total");
            warn!("dropping a {} UDP datagram: {e}", proto.rows_type());
            batch.clear();
        }
    }
}

/// Serve the clusternative port: rows from another vminsert are re-ingested (relabeling,
/// limits, `-sortLabels`) and re-sharded, then acknowledged once queued, as vmstorage acks.
pub async fn serve_clusternative(
    ctx: ListenerCtx,
    listener: Async<TcpListener>,
    config: ServerConfig,
) {
    let epoch = Instant::now();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.get_ref().set_nodelay(true);
                let ctx2 = ctx.clone();
                let config = config.clone();
                ctx.exec
                    .spawn(async move {
                        let m = ctx2.ingest.metrics.clone();
                        m.add("vm_vminsert_conns", 1.0);
                        clusternative_conn(&ctx2, stream, peer, config, epoch).await;
                        m.add("vm_vminsert_conns", -1.0);
                    })
                    .detach();
            }
            Err(e) => {
                error!("cannot accept clusternative connection: {e}");
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn clusternative_conn(
    ctx: &ListenerCtx,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    cfg: ServerConfig,
    epoch: Instant,
) {
    let now = || Time::from_micros(epoch.elapsed().as_micros().min(u64::MAX as u128) as u64);
    let mut sc = ServerConn::new(cfg, now());
    let mut buf = vec![0u8; READ_BUF];
    let mut labels: Vec<Label<'static>> = Vec::new();
    let mut s = &stream;
    loop {
        loop {
            let mut progressed = false;
            while let Some(ev) = sc.poll_event() {
                progressed = true;
                match ev {
                    ServerEvent::Handshaken { legacy } => {
                        info!("accepted clusternative connection from {peer} (legacy={legacy})")
                    }
                    ServerEvent::Block {
                        request,
                        bucket,
                        block,
                    } => {
                        let reply = clusternative_block(ctx, bucket, &block, &mut labels).await;
                        sc.reply(request, reply);
                    }
                    ServerEvent::HealthCheck | ServerEvent::Closed => {}
                    ServerEvent::Error(e) => {
                        ctx.ingest.metrics.inc("vm_vminsert_conn_errors_total");
                        warn!("clusternative connection from {peer}: {e}");
                    }
                }
            }
            while let Some(out) = sc.poll_transmit() {
                progressed = true;
                if let Err(e) = s.write_all(&out).await {
                    ctx.ingest.metrics.inc("vm_vminsert_conn_errors_total");
                    warn!("cannot write to clusternative client {peer}: {e}");
                    return;
                }
            }
            if !progressed {
                break;
            }
        }
        if sc.is_closed() {
            return;
        }
        let deadline = sc.poll_timeout();
        let read = future::or(async { Some(s.read(&mut buf).await) }, async {
            match deadline {
                Some(t) => {
                    Timer::at(epoch + Duration::from_micros(t.as_micros())).await;
                    None
                }
                None => future::pending().await,
            }
        })
        .await;
        match read {
            None => sc.handle_timeout(now()),
            Some(Ok(0)) | Some(Err(_)) => sc.handle_closed(now()),
            Some(Ok(n)) => sc.handle_input(&buf[..n], now()),
        }
    }
}

async fn clusternative_block(
    ctx: &ListenerCtx,
    bucket: Bucket,
    block: &[u8],
    labels: &mut Vec<Label<'static>>,
) -> Reply {
    let shared = &*ctx.ingest;
    if bucket != Bucket::Rows {
        // Metadata from an upper-level vminsert is acknowledged and not forwarded.
        shared.metrics.inc("vm_vminsert_metadata_read_total");
        return Reply::Ok;
    }
    let config = shared.config();
    let (mut batch, placement) = shared.storage.new_batch();
    let mut scratch = IngestScratch::default();
    let request = RequestConfig::new(TenantMode::Fixed(Tenant::default()), Protocol::Standard);
    let mut sink = Ingest::new(&config, request, &placement, &mut batch, &mut scratch);
    let decoded = clusternative::ingest_block(block, &mut sink, labels);
    let stats = sink.finish();
    shared.account("clusternative", &stats);
    shared
        .metrics
        .add("vm_vminsert_metrics_read_total", stats.rows_received as f64);
    // Ack only after the rows are queued: the upper level keeps them until then.
    if let Err(e) = shared.push(&mut batch).await {
        return Reply::Error(e.to_string());
    }
    match decoded {
        Ok(_) => Reply::Ok,
        Err(e) => {
            error!("{e}");
            Reply::Error(e.to_string())
        }
    }
}
