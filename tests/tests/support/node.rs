//! A recording storage node: accepts vminsert connections on a fixed address, runs the core's
//! server side of the protocol for each, acks every block and keeps every row it received.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shardgate_core::wire::codec::Bucket;
use shardgate_core::wire::row::decode_block;
use shardgate_core::wire::server::{Reply, ServerConfig, ServerConn, ServerEvent};
use shardgate_core::Time;

/// One received row: the raw metric name (tenant + labels), milliseconds and the value's bits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Row {
    pub name: Vec<u8>,
    pub ts: i64,
    pub bits: u64,
}

#[derive(Default)]
struct Recorded {
    rows: Vec<Row>,
    /// Protocol or decoding trouble; a correct gateway causes none.
    errors: Vec<String>,
    metadata_blocks: usize,
}

pub struct RecordingNode {
    pub addr: String,
    recorded: Arc<Mutex<Recorded>>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl RecordingNode {
    pub fn start(addr: &str) -> Result<RecordingNode, String> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            format!("cannot bind storage node {addr} ({e}); is another process using the port?")
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("nonblocking {addr}: {e}"))?;
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (recorded, stop, threads) = (recorded.clone(), stop.clone(), threads.clone());
            std::thread::spawn(move || accept_loop(listener, recorded, stop, threads))
        };
        Ok(RecordingNode {
            addr: addr.to_string(),
            recorded,
            stop,
            threads,
            acceptor: Some(acceptor),
        })
    }

    pub fn rows(&self) -> Vec<Row> {
        self.lock().rows.clone()
    }

    pub fn row_count(&self) -> usize {
        self.lock().rows.len()
    }

    pub fn errors(&self) -> Vec<String> {
        self.lock().errors.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Close the listener and every connection; when this returns the port is free again.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for RecordingNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(
    listener: TcpListener,
    recorded: Arc<Mutex<Recorded>>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (recorded, stop) = (recorded.clone(), stop.clone());
                let t = std::thread::spawn(move || serve(stream, recorded, stop));
                threads.lock().unwrap_or_else(|p| p.into_inner()).push(t);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve(mut stream: TcpStream, recorded: Arc<Mutex<Recorded>>, stop: Arc<AtomicBool>) {
    let base = Instant::now();
    let now = || Time::from_micros(base.elapsed().as_micros() as u64);
    let _ = stream.set_nonblocking(false);
    // A short read timeout lets the thread notice the stop flag and drive handshake timeouts.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
    let _ = stream.set_nodelay(true);
    let mut conn = ServerConn::new(ServerConfig::default(), now());
    let mut buf = vec![0u8; 64 * 1024];
    let note = |msg: String| {
        recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .errors
            .push(msg)
    };
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => conn.handle_closed(now()),
            Ok(n) => conn.handle_input(&buf[..n], now()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                conn.handle_timeout(now())
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => conn.handle_closed(now()),
        }
        let mut done = false;
        while let Some(ev) = conn.poll_event() {
            match ev {
                ServerEvent::Handshaken { .. } => {}
                ServerEvent::Block {
                    request,
                    bucket,
                    block,
                } => {
                    match bucket {
                        Bucket::Rows => {
                            let mut rows = Vec::new();
                            for r in decode_block(&block) {
                                match r {
                                    Ok(r) => rows.push(Row {
                                        name: r.metric_name.to_vec(),
                                        ts: r.sample.timestamp_ms,
                                        bits: r.sample.value_bits,
                                    }),
                                    Err(e) => note(format!("undecodable row in a block: {e}")),
                                }
                            }
                            recorded
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .rows
                                .extend(rows);
                        }
                        // The vectors store only rows; metadata is acked and counted.
                        Bucket::Metadata => {
                            recorded
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .metadata_blocks += 1
                        }
                    }
                    conn.reply(request, Reply::Ok);
                }
                ServerEvent::HealthCheck | ServerEvent::Closed => done = true,
                ServerEvent::Error(e) => {
                    note(format!("protocol error: {e}"));
                    done = true;
                }
            }
        }
        while let Some(out) = conn.poll_transmit() {
            if stream.write_all(&out).is_err() {
                done = true;
                break;
            }
        }
        if done || conn.is_closed() {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
