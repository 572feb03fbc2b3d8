//! A storage node: the core's server side ([`ServerConn`]) per accepted connection, over an
//! in-memory log that survives a crash only up to its last sync. Faults that live in the node's
//! software (read-only, slow replies, dropping a connection instead of replying) are read from
//! the ledger at the moment they matter.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use shardgate_core::wire::row::decode_block;
use shardgate_core::wire::{Bucket, Reply, ServerConfig, ServerConn, ServerError, ServerEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::{TcpListener, TcpStream};

use crate::ledger::{ConnKey, RowKey, Shared};
use crate::world::now;

/// The port vmstorage listens on for vminsert.
pub const STORAGE_PORT: u16 = 8400;

/// How often the node checks its fault flags while a connection is idle.
const POLL: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct StorageParams {
    pub node: usize,
    pub name: Rc<str>,
    /// How often the log is synced; rows appended since the last sync die with a crash.
    pub sync_interval: Duration,
}

/// The node's software; turmoil calls it again on every restart.
pub async fn run(ledger: Shared, p: StorageParams) -> turmoil::Result {
    ledger.borrow_mut().event(&p.name, format_args!("start"));
    let listener = TcpListener::bind(("0.0.0.0", STORAGE_PORT)).await?;
    let sync = {
        let (ledger, node, every) = (ledger.clone(), p.node, p.sync_interval);
        async move {
            loop {
                tokio::time::sleep(every).await;
                ledger.borrow_mut().logs[node].sync();
            }
        }
    };
    tokio::task::spawn_local(sync);
    loop {
        let (stream, peer) = listener.accept().await?;
        let (ledger, p) = (ledger.clone(), p.clone());
        tokio::task::spawn_local(async move {
            serve(ledger, p, stream, peer).await;
        });
    }
}

/// Why a connection ended, for the trace.
enum End {
    Peer,
    Io,
    Reset,
    DroppedBeforeAck,
    Protocol(ServerError),
}

async fn serve(ledger: Shared, p: StorageParams, stream: TcpStream, peer: SocketAddr) {
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let key: ConnKey = (peer, local);
    let epoch = ledger.borrow().node_faults[p.node].reset_epoch;
    let mut conn = ServerConn::new(ServerConfig::default(), now());
    let (mut rd, mut wr) = stream.into_split();
    let mut written = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let end = 'conn: loop {
        // Answer every complete block, then write what the protocol produced.
        let mut acked: Option<Vec<RowKey>> = None;
        while let Some(ev) = conn.poll_event() {
            match ev {
                ServerEvent::Handshaken { legacy } => {
                    ledger.borrow_mut().event(
                        &p.name,
                        format_args!("handshake from {peer} legacy={legacy}"),
                    );
                }
                ServerEvent::Block {
                    request,
                    bucket,
                    block,
                } => {
                    let slow = {
                        let mut l = ledger.borrow_mut();
                        let f = &mut l.node_faults[p.node];
                        if f.drop_before_ack > 0 {
                            f.drop_before_ack -= 1;
                            break 'conn End::DroppedBeforeAck;
                        }
                        f.slow_ack
                    };
                    if !slow.is_zero() {
                        tokio::time::sleep(slow).await;
                    }
                    let rows = match rows_of(bucket, &block) {
                        Ok(rows) => rows,
                        Err(e) => {
                            let mut l = ledger.borrow_mut();
                            l.anomalies
                                .push(format!("{}: undecodable block from {peer}: {e}", p.name));
                            conn.reply(request, Reply::Error(e));
                            continue;
                        }
                    };
                    let mut l = ledger.borrow_mut();
                    if l.node_faults[p.node].read_only {
                        l.event(
                            &p.name,
                            format_args!("read-only reply, {} rows from {peer}", rows.len()),
                        );
                        conn.reply(request, Reply::ReadOnly);
                        continue;
                    }
                    l.logs[p.node].append(&rows);
                    for r in &rows {
                        l.acked.entry(*r).or_default().insert(p.node);
                    }
                    l.event(
                        &p.name,
                        format_args!("ack {:?} block of {} rows from {peer}", bucket, rows.len()),
                    );
                    drop(l);
                    conn.reply(request, Reply::Ok);
                    acked = Some(rows);
                }
                ServerEvent::HealthCheck | ServerEvent::Closed => break 'conn End::Peer,
                ServerEvent::Error(e) => {
                    while let Some(bytes) = conn.poll_transmit() {
                        let _ = wr.write_all(&bytes).await;
                    }
                    break 'conn End::Protocol(e);
                }
            }
        }
        while let Some(bytes) = conn.poll_transmit() {
            if wr.write_all(&bytes).await.is_err() {
                break 'conn End::Io;
            }
            written += bytes.len() as u64;
        }
        if let Some(rows) = acked.take() {
            if !rows.is_empty() {
                ledger
                    .borrow_mut()
                    .acks_by_conn
                    .entry(key)
                    .or_default()
                    .push((written, rows));
            }
        }
        if conn.is_closed() {
            break End::Peer;
        }
        if ledger.borrow().node_faults[p.node].reset_epoch != epoch {
            break End::Reset;
        }
        let deadline = conn.poll_timeout();
        tokio::select! {
            biased;
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => conn.handle_closed(now()),
                Ok(n) => conn.handle_input(&buf[..n], now()),
            },
            _ = tokio::time::sleep(POLL) => {
                if let Some(t) = deadline {
                    if now() >= t {
                        conn.handle_timeout(now());
                    }
                }
            }
        }
    };
    let mut l = ledger.borrow_mut();
    match end {
        End::Peer => l.event(&p.name, format_args!("connection from {peer} closed")),
        End::Io => l.event(&p.name, format_args!("connection from {peer} broke")),
        End::Reset => l.event(
            &p.name,
            format_args!("connection from {peer} reset after partition"),
        ),
        End::DroppedBeforeAck => l.event(
            &p.name,
            format_args!("fault: closed {peer} instead of replying"),
        ),
        End::Protocol(e) => {
            // A connection cut halfway through a request ends in an unexpected EOF, and a
            // partition can hold a handshake past its deadline; anything else means our own
            // gateway spoke the protocol wrong.
            if !matches!(
                e,
                ServerError::UnexpectedEof | ServerError::HandshakeTimeout
            ) {
                l.anomalies
                    .push(format!("{}: protocol error from {peer}: {e}", p.name));
            }
            l.event(&p.name, format_args!("connection from {peer} failed: {e}"))
        }
    }
}

/// The rows of a block, as row keys. Metadata blocks carry no rows the checkers follow.
fn rows_of(bucket: Bucket, block: &[u8]) -> Result<Vec<RowKey>, String> {
    if bucket == Bucket::Metadata {
        return Ok(Vec::new());
    }
    decode_block(block)
        .map(|r| {
            r.map(|r| RowKey::new(r.metric_name, r.sample))
                .map_err(|e| e.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_core::model::{Label, Sample, Tenant};
    use shardgate_core::wire::row::{encode_metric_name, encode_row};

    #[test]
    fn block_rows_become_row_keys() {
        let mut name = Vec::new();
        encode_metric_name(&mut name, Tenant::new(1, 2), &[Label::metric_name(b"up")]);
        let mut block = Vec::new();
        encode_row(&mut block, &name, Sample::new(5, 1.0));
        encode_row(&mut block, &name, Sample::new(6, 2.0));
        let rows = rows_of(Bucket::Rows, &block).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1], RowKey::new(&name, Sample::new(6, 2.0)));
        assert!(rows_of(Bucket::Rows, &block[..block.len() - 1]).is_err());
        assert!(rows_of(Bucket::Rows, b"").unwrap().is_empty());
    }
}
