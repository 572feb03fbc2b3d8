//! Helpers shared by `vectors_replay.rs` and `differential.rs` (and only by them): an in-test
//! recording storage node, the gateway process, a tiny HTTP/1.1 client and row rendering.
//!
//! Each test binary uses a different subset, hence the blanket dead-code allowance.
#![allow(dead_code)]

pub mod export;
pub mod node;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shardgate_core::wire::row::decode_metric_name;

/// The workspace root: relabel paths in the vectors are relative to it, so the gateway runs here.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

pub fn vectors_dir(sub: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors")).join(sub)
}

/// The gateway binary, built for this test run's profile and target directory on first use
/// (`cargo test` builds test harnesses, not the shell's binaries).
pub fn shardgate_bin() -> PathBuf {
    shardgate_e2e::bin("shardgate")
}

/// Milliseconds since the Unix epoch, for comparing "now" timestamps.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A port on 127.0.0.1 that is free for both TCP and UDP right now.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP on 127.0.0.1");
}

/// Fails unless `addr` can be bound for TCP (and for UDP when `udp`): a fixed-port vector
/// cannot run while something else holds its port.
pub fn check_port_free(addr: &str, udp: bool) -> Result<(), String> {
    TcpListener::bind(addr).map_err(|e| {
        format!("TCP port {addr} is taken by another process ({e}); stop it and rerun")
    })?;
    if udp {
        UdpSocket::bind(addr).map_err(|e| {
            format!("UDP port {addr} is taken by another process ({e}); stop it and rerun")
        })?;
    }
    Ok(())
}

/// A running gateway (or any other server); killed on drop. Its stderr is kept for diagnostics.
pub struct Server {
    pub name: String,
    child: Child,
    log: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    pub fn start(
        name: &str,
        bin: &std::path::Path,
        args: &[String],
        cwd: &std::path::Path,
    ) -> Server {
        let mut child = Command::new(bin)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                // A chatty process must not grow the test's memory without end.
                if log.len() < 1 << 20 {
                    log.extend_from_slice(&buf[..n]);
                }
            }
        });
        Server {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The last `max` bytes of what the process wrote to stderr.
    pub fn log_tail(&self, max: usize) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let start = log.len().saturating_sub(max);
        String::from_utf8_lossy(&log[start..]).into_owned()
    }

    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            _ => None,
        }
    }

    /// Poll `GET path` on `addr` until it answers 200.
    pub fn wait_http_ok(
        &mut self,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                return Err(format!(
                    "{} exited ({st}) before {path} answered; stderr:\n{}",
                    self.name,
                    self.log_tail(3000)
                ));
            }
            if let Ok(r) = http_request(addr, "GET", path, &[], b"") {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not answer 200 on http://{addr}{path} within {timeout:?}; stderr:\n{}",
                    self.name,
                    self.log_tail(3000)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill the process and wait for it, so that its ports are free when this returns.
    pub fn stop(mut self) {
        self.kill_and_wait();
    }

    fn kill_and_wait(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_and_wait();
    }
}

pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One HTTP/1.1 exchange with `Connection: close`. Errors are returned, not panicked, so a
/// broken gateway turns into a failed vector rather than an aborted run.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<HttpResponse, String> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let has_len = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if !has_len && (method != "GET" || !body.is_empty()) {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    if let Err(e) = s.write_all(req.as_bytes()).and_then(|_| s.write_all(body)) {
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        return parse_response(&resp).map_err(|_| format!("send request to {addr}{path}: {e}"));
    }
    let mut resp = Vec::new();
    // A server that answers before reading the whole body may reset the connection after its
    // response; what arrived before the reset is still the answer.
    if let Err(e) = s.read_to_end(&mut resp) {
        return parse_response(&resp).map_err(|_| format!("read response from {addr}{path}: {e}"));
    }
    parse_response(&resp)
}

fn parse_response(resp: &[u8]) -> Result<HttpResponse, String> {
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete response head in {} bytes", resp.len()))?
        + 4;
    let head = String::from_utf8_lossy(&resp[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let body = &resp[head_end..];
    if !head.contains("transfer-encoding: chunked") {
        return Ok(HttpResponse {
            status,
            body: body.to_vec(),
        });
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size line")?;
        let size = String::from_utf8_lossy(&rest[..eol]);
        let size = size.split(';').next().unwrap_or("").trim();
        let n = usize::from_str_radix(size, 16).map_err(|e| format!("chunk size: {e}"))?;
        rest = &rest[eol + 2..];
        if n == 0 {
            return Ok(HttpResponse { status, body: out });
        }
        if rest.len() < n {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&rest[..n]);
        rest = rest.get(n + 2..).unwrap_or(&[]);
    }
}

/// Send one whole payload over a fresh TCP connection, retrying the connect for a short
/// while because a listener may come up just after the HTTP server.
pub fn send_tcp(addr: &str, payload: &[u8]) -> Result<(), String> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut s = loop {
        match TcpStream::connect_timeout(&sock, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("no TCP listener at {addr}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    s.write_all(payload)
        .map_err(|e| format!("write to {addr}: {e}"))?;
    // A server that stops at a bad line may have closed (and reset) the connection already;
    // everything was written, so that is not a failure to send.
    match s.shutdown(std::net::Shutdown::Write) {
        Err(e) if e.kind() != std::io::ErrorKind::NotConnected => {
            return Err(format!("shutdown {addr}: {e}"))
        }
        _ => {}
    }
    // Wait for the server to close its side, so the data was read before we move on.
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut sink = [0u8; 256];
    while let Ok(n) = s.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    Ok(())
}

/// Send one datagram. UDP gives no sign of a missing listener, so the caller checks that the
/// TCP side of the same address is up first.
pub fn send_udp(addr: &str, payload: &[u8]) -> Result<(), String> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    s.send_to(payload, addr)
        .map_err(|e| format!("send datagram to {addr}: {e}"))?;
    Ok(())
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use flate2::write::GzEncoder;
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

/// `0:0 name{a="b",c="d"}` for a raw metric name (tenant + labels as on the wire).
pub fn render_metric_name(mnraw: &[u8]) -> String {
    let (tenant, labels) = match decode_metric_name(mnraw) {
        Ok(x) => x,
        Err(e) => return format!("<{e}: {}>", hex::encode(mnraw)),
    };
    let mut name = String::new();
    let mut rest = Vec::new();
    for l in labels {
        match l {
            Ok(l) if l.name.is_empty() => name = lossy(l.value),
            Ok(l) => rest.push(format!("{}={:?}", lossy(l.name), lossy(l.value))),
            Err(e) => rest.push(format!("<{e}>")),
        }
    }
    format!("{tenant} {name}{{{}}}", rest.join(","))
}

pub fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
