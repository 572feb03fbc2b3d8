//! A tiny HTTP/1.1 server that accepts inserts and throws them away, for testing the load tool
//! itself without a gateway (`--self-test` and the unit tests).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Largest request body the sink will read; anything bigger is refused, not allocated.
const MAX_BODY: u64 = 256 << 20;
const MAX_HEADER_LINE: u64 = 16 << 10;

/// Decides the status of the n-th insert (0-based, over all connections).
pub type Responder = dyn Fn(u64) -> u16 + Send + Sync;

/// Counters of what the sink received.
#[derive(Default)]
pub struct SinkStats {
    pub inserts: AtomicU64,
    pub body_bytes: AtomicU64,
    pub connections: AtomicU64,
}

/// A running sink; stops accepting when dropped.
pub struct Sink {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub stats: Arc<SinkStats>,
}

impl Sink {
    /// Listen on an ephemeral loopback port; every `POST` gets the status `respond` picks,
    /// `GET /health` gets 200.
    pub fn start(respond: Arc<Responder>) -> io::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(SinkStats::default());
        let (s, st) = (Arc::clone(&stop), Arc::clone(&stats));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                st.connections.fetch_add(1, Ordering::Relaxed);
                let (st, respond) = (Arc::clone(&st), Arc::clone(&respond));
                std::thread::spawn(move || {
                    let _ = serve(conn, &st, &*respond);
                });
            }
        });
        Ok(Sink { addr, stop, stats })
    }

    /// Base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(conn: TcpStream, stats: &SinkStats, respond: &Responder) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        if r.by_ref().take(MAX_HEADER_LINE).read_line(&mut line)? == 0 {
            return Ok(());
        }
        let request_line = line.trim_end().to_string();
        if request_line.is_empty() {
            continue;
        }
        let mut content_length: u64 = 0;
        let mut close = false;
        loop {
            line.clear();
            if r.by_ref().take(MAX_HEADER_LINE).read_line(&mut line)? == 0 {
                return Ok(());
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.parse().unwrap_or(u64::MAX);
                } else if name.eq_ignore_ascii_case("connection")
                    && value.eq_ignore_ascii_case("close")
                {
                    close = true;
                }
            }
        }
        if content_length > MAX_BODY {
            out.write_all(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        }
        let got = io::copy(&mut r.by_ref().take(content_length), &mut io::sink())?;
        let (status, reason) = if request_line.starts_with("POST ") {
            let n = stats.inserts.fetch_add(1, Ordering::Relaxed);
            stats.body_bytes.fetch_add(got, Ordering::Relaxed);
            let code = respond(n);
            (code, if code == 204 { "No Content" } else { "Status" })
        } else if request_line.starts_with("GET /health ") {
            (200, "OK")
        } else {
            (404, "Not Found")
        };
        let body: &[u8] = match status {
            204 => b"",
            200 => b"OK",
            _ => b"refused by the test sink",
        };
        // One write per answer: separate small writes would meet Nagle's algorithm and the
        // client's delayed ACK and stall each request by tens of milliseconds.
        let mut answer = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(body);
        out.write_all(&answer)?;
        if close || got < content_length {
            return Ok(());
        }
    }
}
