//! A storage-node STAND-IN for tests and demos, not a database: it speaks the server side of the
//! vminsert protocol, appends every rows block to one log file (fsynced before the ack), keeps
//! all rows in memory, and serves them back as JSON lines. Used by the `shardgate-node` binary
//! and, in-process, by `shardgate` when no `-storageNode` is given.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use hyper::{Method, StatusCode};
use shardgate_core::wire::row::{decode_block, decode_metric_name};
use shardgate_core::wire::{Bucket, Reply, ServerConfig, ServerConn, ServerEvent};
use shardgate_core::Time;

use crate::http::server::{self, Handler};
use crate::{error, info, warn};

/// One stored row: the raw metric name as it came on the wire, timestamp and value bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRow {
    pub mnraw: Vec<u8>,
    pub ts: i64,
    pub value_bits: u64,
}

struct Store {
    log: File,
    rows: Vec<StoredRow>,
}

pub struct StandIn {
    store: Mutex<Store>,
    read_only: AtomicBool,
    blocks: AtomicU64,
    path: PathBuf,
}

const LOG_NAME: &str = "rows.log";
/// Refuse to rebuild from a record claiming more than this (the protocol's own block cap).
const MAX_RECORD: usize = 100 * 1024 * 1024;

fn decode_rows(block: &[u8], out: &mut Vec<StoredRow>) -> Result<(), String> {
    for r in decode_block(block) {
        let r = r.map_err(|e| format!("bad row in block: {e:?}"))?;
        out.push(StoredRow {
            mnraw: r.metric_name.to_vec(),
            ts: r.sample.timestamp_ms,
            value_bits: r.sample.value_bits,
        });
    }
    Ok(())
}

impl StandIn {
    /// Open (or create) the row log under `dir` and rebuild the in-memory rows from it. A torn
    /// last record (a crash mid-write, never acked) is cut off.
    pub fn open(dir: &Path, read_only: bool) -> std::io::Result<Arc<StandIn>> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_NAME);
        let mut log = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let mut data = Vec::new();
        log.read_to_end(&mut data)?;
        let mut rows = Vec::new();
        let mut off = 0usize;
        let mut blocks = 0u64;
        while data.len() - off >= 4 {
            let n = u32::from_be_bytes(data[off..off + 4].try_into().expect("4 bytes")) as usize;
            if n > MAX_RECORD || data.len() - off - 4 < n {
                break;
            }
            let mut block_rows = Vec::new();
            if decode_rows(&data[off + 4..off + 4 + n], &mut block_rows).is_err() {
                break;
            }
            rows.extend(block_rows);
            blocks += 1;
            off += 4 + n;
        }
        if off < data.len() {
            warn!(
                "cutting {} bytes of a torn record off {}",
                data.len() - off,
                path.display()
            );
            log.set_len(off as u64)?;
        }
        info!(
            "stand-in storage node opened {} with {} rows in {blocks} blocks",
            path.display(),
            rows.len()
        );
        Ok(Arc::new(StandIn {
            store: Mutex::new(Store { log, rows }),
            read_only: AtomicBool::new(read_only),
            blocks: AtomicU64::new(blocks),
            path,
        }))
    }

    pub fn set_read_only(&self, on: bool) {
        if self.read_only.swap(on, Ordering::SeqCst) != on {
            info!(
                "stand-in storage node {} is now {}",
                self.path.display(),
                if on { "read-only" } else { "writable" }
            );
        }
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::SeqCst)
    }

    /// Decode, log and fsync one rows block; only then is it visible and may it be acked.
    pub fn append_block(&self, block: &[u8]) -> Result<usize, String> {
        let mut rows = Vec::new();
        decode_rows(block, &mut rows)?;
        let len = u32::try_from(block.len()).map_err(|_| "block too large".to_string())?;
        let mut s = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let mut rec = Vec::with_capacity(4 + block.len());
        rec.extend_from_slice(&len.to_be_bytes());
        rec.extend_from_slice(block);
        s.log
            .write_all(&rec)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        s.log
            .sync_data()
            .map_err(|e| format!("cannot fsync {}: {e}", self.path.display()))?;
        let n = rows.len();
        s.rows.extend(rows);
        self.blocks.fetch_add(1, Ordering::Relaxed);
        Ok(n)
    }

    pub fn rows(&self) -> Vec<StoredRow> {
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rows
            .clone()
    }

    pub fn row_count(&self) -> usize {
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rows
            .len()
    }

    /// Serve the vminsert protocol on `listener` until the process ends.
    pub async fn serve_vminsert(
        self: Arc<Self>,
        listener: Async<TcpListener>,
        exec: Arc<smol::Executor<'static>>,
        config: ServerConfig,
    ) {
        let epoch = Instant::now();
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.get_ref().set_nodelay(true);
                    exec.spawn(self.clone().serve_conn(stream, peer, config.clone(), epoch))
                        .detach();
                }
                Err(e) => {
                    error!("cannot accept vminsert connection: {e}");
                    Timer::after(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn serve_conn(
        self: Arc<Self>,
        stream: Async<TcpStream>,
        peer: SocketAddr,
        cfg: ServerConfig,
        epoch: Instant,
    ) {
        let now = || Time::from_micros(epoch.elapsed().as_micros() as u64);
        let mut sc = ServerConn::new(cfg, now());
        let mut buf = vec![0u8; 64 * 1024];
        let mut s = &stream;
        loop {
            // Answer everything that is ready, then write, until nothing more comes out.
            loop {
                let mut progressed = false;
                while let Some(ev) = sc.poll_event() {
                    progressed = true;
                    match ev {
                        ServerEvent::Handshaken { legacy } => {
                            info!("accepted vminsert connection from {peer} (legacy={legacy})")
                        }
                        ServerEvent::Block {
                            request,
                            bucket,
                            block,
                        } => {
                            let reply = self.answer(bucket, block).await;
                            sc.reply(request, reply);
                        }
                        ServerEvent::HealthCheck | ServerEvent::Closed => {}
                        ServerEvent::Error(e) => warn!("vminsert connection from {peer}: {e}"),
                    }
                }
                while let Some(out) = sc.poll_transmit() {
                    progressed = true;
                    if let Err(e) = s.write_all(&out).await {
                        warn!("cannot write to {peer}: {e}");
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

    async fn answer(self: &Arc<Self>, bucket: Bucket, block: Vec<u8>) -> Reply {
        if bucket != Bucket::Rows {
            // Metadata is acknowledged and not kept, as the recording stand-ins did.
            return Reply::Ok;
        }
        if self.is_read_only() {
            return Reply::ReadOnly;
        }
        let me = self.clone();
        match smol::unblock(move || me.append_block(&block)).await {
            Ok(_) => Reply::Ok,
            Err(e) => {
                error!("{e}");
                Reply::Error(e)
            }
        }
    }

    /// The stand-in's HTTP API.
    pub fn http_handler(self: &Arc<Self>) -> Handler {
        let me = self.clone();
        Arc::new(move |req, _peer| {
            let me = me.clone();
            Box::pin(async move {
                let path = req.uri().path().to_string();
                let query = req.uri().query().unwrap_or("").to_string();
                match path.as_str() {
                    "/api/v1/export" => server::with_type(StatusCode::OK, "application/jsonl", export_json_lines(&me.rows())),
                    "/api/v1/export/raw" => server::with_type(StatusCode::OK, "application/jsonl", export_raw_lines(&me.rows())),
                    "/health" => server::text(StatusCode::OK, "OK"),
                    "/readonly" if req.method() == Method::POST => {
                        let v = crate::http::route::query_arg(&query, "enabled").unwrap_or_default();
                        match crate::flags::parse_bool(&String::from_utf8_lossy(&v)) {
                            Ok(on) => {
                                me.set_read_only(on);
                                server::text(StatusCode::OK, format!("read_only={on}\n"))
                            }
                            Err(_) => server::error_text(StatusCode::BAD_REQUEST, "want ?enabled=1 or ?enabled=0"),
                        }
                    }
                    "/readonly" => server::text(StatusCode::OK, format!("read_only={}\n", me.is_read_only())),
                    "/metrics" => server::text(
                        StatusCode::OK,
                        format!(
                            "vm_standin_rows_stored {}\nvm_standin_blocks_stored {}\nvm_standin_is_read_only {}\n",
                            me.row_count(),
                            me.blocks.load(Ordering::Relaxed),
                            u8::from(me.is_read_only())
                        ),
                    ),
                    _ => server::error_text(StatusCode::NOT_FOUND, &format!("unsupported path requested: {path:?}")),
                }
            })
        })
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json_number(bits: u64) -> serde_json::Value {
    let v = f64::from_bits(bits);
    // JSON has no NaN or Inf; vmselect writes them as bare words, we write strings.
    match serde_json::Number::from_f64(v) {
        Some(n) => serde_json::Value::Number(n),
        None if v.is_nan() => serde_json::Value::String("NaN".into()),
        None if v > 0.0 => serde_json::Value::String("+Inf".into()),
        None => serde_json::Value::String("-Inf".into()),
    }
}

/// vmselect-style export: one line per series (grouped by raw metric name, first-seen order),
/// samples sorted by time.
pub fn export_json_lines(rows: &[StoredRow]) -> String {
    let mut order: Vec<&[u8]> = Vec::new();
    let mut by_name: std::collections::HashMap<&[u8], Vec<(i64, u64)>> =
        std::collections::HashMap::new();
    for r in rows {
        by_name
            .entry(&r.mnraw)
            .or_insert_with(|| {
                order.push(&r.mnraw);
                Vec::new()
            })
            .push((r.ts, r.value_bits));
    }
    let mut out = String::new();
    for name in order {
        let Ok((tenant, labels)) = decode_metric_name(name) else {
            continue;
        };
        let mut metric = serde_json::Map::new();
        for l in labels.flatten() {
            let key = if l.name.is_empty() {
                "__name__".to_string()
            } else {
                lossy(l.name)
            };
            metric.insert(key, serde_json::Value::String(lossy(l.value)));
        }
        let mut samples = by_name.remove(name).unwrap_or_default();
        samples.sort_by_key(|s| s.0);
        let line = serde_json::json!({
            "metric": metric,
            "values": samples.iter().map(|s| json_number(s.1)).collect::<Vec<_>>(),
            "timestamps": samples.iter().map(|s| s.0).collect::<Vec<_>>(),
            "tenant": tenant.to_string(),
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// Every row with its exact bits: `{"tenant":"a:p","name_hex":..,"ts":..,"value_bits":"<hex>"}`.
pub fn export_raw_lines(rows: &[StoredRow]) -> String {
    let mut out = String::new();
    for r in rows {
        let tenant = decode_metric_name(&r.mnraw)
            .map(|(t, _)| t.to_string())
            .unwrap_or_default();
        let line = serde_json::json!({
            "tenant": tenant,
            "name_hex": hex_string(&r.mnraw),
            "ts": r.ts,
            "value_bits": format!("{:016x}", r.value_bits),
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

fn hex_string(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_core::model::{Label, Sample};
    use shardgate_core::wire::row::{encode_metric_name, encode_row};
    use shardgate_core::Tenant;

    fn block(rows: &[(&[Label<'_>], i64, f64)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (labels, ts, v) in rows {
            let mut mn = Vec::new();
            encode_metric_name(&mut mn, Tenant::new(1, 2), labels);
            encode_row(&mut b, &mn, Sample::new(*ts, *v));
        }
        b
    }

    #[test]
    fn rows_survive_a_restart_and_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let up = [Label::metric_name(b"up"), Label::new(b"job", b"x")];
        {
            let s = StandIn::open(dir.path(), false).unwrap();
            assert_eq!(
                s.append_block(&block(&[(&up, 1000, 1.0), (&up, 2000, 0.0)]))
                    .unwrap(),
                2
            );
            assert!(s.append_block(b"\xff\xff").is_err());
        }
        // A torn record from a crash mid-write.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_NAME))
            .unwrap();
        f.write_all(&[0, 0, 0, 50, 1, 2]).unwrap();
        drop(f);
        let s = StandIn::open(dir.path(), false).unwrap();
        assert_eq!(s.row_count(), 2);
        s.append_block(&block(&[(&up, 3000, f64::NAN)])).unwrap();
        let s = StandIn::open(dir.path(), false).unwrap();
        assert_eq!(s.row_count(), 3);
        let json = export_json_lines(&s.rows());
        assert_eq!(json.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(v["metric"]["__name__"], "up");
        assert_eq!(v["metric"]["job"], "x");
        assert_eq!(v["timestamps"], serde_json::json!([1000, 2000, 3000]));
        assert_eq!(v["values"], serde_json::json!([1.0, 0.0, "NaN"]));
        let raw = export_raw_lines(&s.rows());
        let first: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
        assert_eq!(first["tenant"], "1:2");
        assert_eq!(first["value_bits"], "3ff0000000000000");
        assert!(first["name_hex"]
            .as_str()
            .unwrap()
            .starts_with("0000000100000002"));
    }
}
