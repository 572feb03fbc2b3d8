//! Helpers for the end-to-end tests in tests/tests: build and start the real binaries, wait for
//! their log lines, and talk plain HTTP/1.1 to them. Standard library only.
//!
//! Finding the binaries: `cargo test -p shardgate-e2e` does not build another package's
//! binaries, so [`bin`] runs `cargo build -p shardgate --bins` once (same profile, same
//! `CARGO_TARGET_DIR` as the test run, found from the test executable's own path
//! `<target>/<profile>/deps/<test>`), then returns `<target>/<profile>/<name>`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// `<target>/<profile>`, where this test executable was built.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// Path of a shardgate binary, building the package's binaries on first use.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = profile_dir();
    BUILT.get_or_init(|| {
        let target = dir.parent().expect("target dir").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "shardgate", "--bins"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo build");
        assert!(st.success(), "cargo build -p shardgate --bins failed");
    });
    let p = dir.join(name);
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: Mutex<u32> = Mutex::new(0);
    let mut n = N.lock().unwrap_or_else(|p| p.into_inner());
    *n += 1;
    let p = std::env::temp_dir().join(format!("shardgate-e2e-{tag}-{}-{}", std::process::id(), *n));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("create temp dir");
    p
}

/// A running binary whose stderr lines are collected; killed on drop.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Proc {
    pub fn start(name: &str, args: &[String]) -> Proc {
        let mut child = Command::new(bin(name))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Wait for a stderr line containing `needle`; return the text after it up to the next
    /// whitespace or `/` (handy for "…at http://127.0.0.1:1234/").
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(i) = line.find(needle) {
                        let rest = &line[i + needle.len()..];
                        let end = rest
                            .find(|c: char| c.is_whitespace() || c == '/')
                            .unwrap_or(rest.len());
                        return rest[..end].to_string();
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {timeout:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Send a signal by pid (the `kill` utility; std has no signal API).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
    }

    /// Wait for the process to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st.code();
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a binary to completion: (exit code, stdout, stderr).
pub fn run(name: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin(name))
        .args(args)
        .output()
        .expect("run binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A minimal HTTP/1.1 exchange with `Connection: close`: (status, body).
pub fn http(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read response");
    parse_response(&resp)
}

fn parse_response(resp: &[u8]) -> (u16, Vec<u8>) {
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head")
        + 4;
    let head = String::from_utf8_lossy(&resp[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = &resp[head_end..];
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    if !chunked {
        return (status, body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16)
            .expect("chunk size");
        rest = &rest[eol + 2..];
        if n == 0 {
            return (status, out);
        }
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n + 2..];
    }
}

pub fn get(addr: &str, path: &str) -> (u16, String) {
    let (s, b) = http("GET", addr, path, &[], b"");
    (s, String::from_utf8_lossy(&b).into_owned())
}

/// Poll `f` until it returns Some or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster helpers for the fault, real-client and bad-request tests. Standard library only, like
// the rest of this file, so the JSON lines of the stand-in are read with a tiny field extractor.
// ---------------------------------------------------------------------------------------------

/// One row as a stand-in reports it on `/api/v1/export/raw`: (raw metric name in hex,
/// timestamp, value bits in hex).
pub type RawRow = (String, i64, String);

/// A `shardgate-node` stand-in process and the addresses it listens on.
pub struct StandInNode {
    pub proc: Proc,
    /// `host:port` of the vminsert protocol listener, as the gateway's `-storageNode` wants it.
    pub rpc: String,
    /// `host:port` of its HTTP API (export, read-only switch).
    pub web: String,
    pub dir: PathBuf,
}

impl StandInNode {
    /// Start on ephemeral loopback ports.
    pub fn start(dir: &std::path::Path) -> StandInNode {
        StandInNode::start_at(dir, "127.0.0.1:0", "127.0.0.1:0")
    }

    /// Start on the given addresses (used to bring a node back where the gateway expects it).
    pub fn start_at(dir: &std::path::Path, rpc: &str, web: &str) -> StandInNode {
        let mut p = Proc::start(
            "shardgate-node",
            &[
                format!("-vminsertAddr={rpc}"),
                format!("-httpListenAddr={web}"),
                format!("-storageDataPath={}", dir.display()),
            ],
        );
        let rpc = p.wait_for(
            "accepting vminsert connections at ",
            Duration::from_secs(30),
        );
        let web = p.wait_for(
            "serving the stand-in HTTP API at http://",
            Duration::from_secs(30),
        );
        StandInNode {
            proc: p,
            rpc,
            web,
            dir: dir.to_path_buf(),
        }
    }

    /// SIGKILL, as a crash or an OOM kill would: no chance to close connections nicely.
    pub fn kill(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }

    /// Every row the node holds; panics if the node does not answer.
    pub fn raw_rows(&self) -> Vec<RawRow> {
        try_raw_rows(&self.web).unwrap_or_else(|| panic!("stand-in at {} did not answer", self.web))
    }

    pub fn set_read_only(&self, on: bool) {
        let q = if on { "1" } else { "0" };
        let (status, body) = http(
            "POST",
            &self.web,
            &format!("/readonly?enabled={q}"),
            &[],
            b"",
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
}

/// Start `n` stand-ins under `base/n<i>`.
pub fn start_nodes(base: &std::path::Path, n: usize) -> Vec<StandInNode> {
    (0..n)
        .map(|i| StandInNode::start(&base.join(format!("n{i}"))))
        .collect()
}

/// The `-storageNode` value for these nodes.
pub fn storage_node_flag(nodes: &[StandInNode]) -> String {
    nodes
        .iter()
        .map(|n| n.rpc.clone())
        .collect::<Vec<_>>()
        .join(",")
}

/// Rows of a stand-in's `/api/v1/export/raw`, or None when it cannot be reached.
pub fn try_raw_rows(web: &str) -> Option<Vec<RawRow>> {
    let (status, body) = try_http("GET", web, "/api/v1/export/raw", &[], b"").ok()?;
    if status != 200 {
        return None;
    }
    let body = String::from_utf8_lossy(&body);
    Some(
        body.lines()
            .map(|l| {
                let row = (|| {
                    Some((
                        json_str(l, "name_hex")?.to_string(),
                        json_num(l, "ts")?,
                        json_str(l, "value_bits")?.to_string(),
                    ))
                })();
                row.unwrap_or_else(|| panic!("bad export line {l:?}"))
            })
            .collect(),
    )
}

/// The string value of `"key":"..."` in a flat JSON line whose strings need no escapes (hex,
/// tenants). Good enough for the stand-in's raw export, not a JSON parser.
fn json_str<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let start = line.find(&pat)? + pat.len();
    let end = line[start..].find('"')?;
    Some(&line[start..start + end])
}

fn json_num(line: &str, key: &str) -> Option<i64> {
    let pat = format!("\"{key}\":");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    let end = rest
        .find(|c: char| c != '-' && !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Start the gateway with `args` plus an ephemeral loopback `-httpListenAddr`; its address.
pub fn start_gateway(args: &[String]) -> (Proc, String) {
    let mut all = vec!["-httpListenAddr=127.0.0.1:0".to_string()];
    all.extend_from_slice(args);
    let mut p = Proc::start("shardgate", &all);
    let addr = p.wait_for("started server at http://", Duration::from_secs(30));
    (p, addr)
}

/// Wait until the gateway reports `n` storage nodes, every one reachable.
pub fn wait_all_reachable(gateway: &str, n: usize, timeout: Duration) -> bool {
    eventually(timeout, || {
        let (_, m) = try_get(gateway, "/metrics").ok()?;
        let vals = metric_values(&m, "vm_rpc_vmstorage_is_reachable");
        (vals.len() == n && vals.iter().all(|(_, v)| *v == 1.0)).then_some(())
    })
    .is_some()
}

/// Every sample of the series `name` in a Prometheus text page: (label text inside `{}`,
/// value). `name` must match exactly (so `vm_x` does not match `vm_x_total`).
pub fn metric_values(page: &str, name: &str) -> Vec<(String, f64)> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
                let close = r.rfind('}')?;
                (r[..close].to_string(), r[close + 1..].trim())
            } else if rest.starts_with(' ') {
                (String::new(), rest.trim())
            } else {
                return None;
            };
            let value = value.split_whitespace().next()?.parse::<f64>().ok()?;
            Some((labels, value))
        })
        .collect()
}

/// The value of `name` whose labels contain every `needles` substring (e.g. `addr="1.2.3.4:5"`);
/// the sum when several series match, None when none does.
pub fn metric_value(page: &str, name: &str, needles: &[&str]) -> Option<f64> {
    let matching: Vec<f64> = metric_values(page, name)
        .into_iter()
        .filter(|(labels, _)| needles.iter().all(|n| labels.contains(n)))
        .map(|(_, v)| v)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// Like [`http`] but an I/O failure (refused, reset, timed out) is an `Err` instead of a
/// panic: load generators run while processes die.
pub fn try_http(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    use std::net::ToSocketAddrs;
    let sa = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("no address for {addr}")))?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    if !resp.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(std::io::Error::other("connection closed before a response"));
    }
    Ok(parse_response(&resp))
}

pub fn try_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let (s, b) = try_http("GET", addr, path, &[], b"")?;
    Ok((s, String::from_utf8_lossy(&b).into_owned()))
}

/// A loopback port that was free a moment ago, for programs that cannot report the port they
/// bound (Prometheus, vmagent). The small race with other processes is accepted.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Kills the child on drop, for third-party programs started with plain `Command`.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One remote-write series: labels (name, value) in order, and samples (timestamp ms, value).
pub type RemoteWriteSeries = (Vec<(String, String)>, Vec<(i64, f64)>);

/// Minimal protobuf writer for Prometheus remote write v1 `WriteRequest`s (uncompressed; the
/// caller snappy-compresses): one entry per series, labels in the given order.
pub fn remote_write_proto(series: &[RemoteWriteSeries]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn field_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
        varint(out, u64::from(field << 3 | 2));
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    let mut req = Vec::new();
    for (labels, samples) in series {
        let mut ts = Vec::new();
        for (n, v) in labels {
            let mut l = Vec::new();
            field_bytes(&mut l, 1, n.as_bytes());
            field_bytes(&mut l, 2, v.as_bytes());
            field_bytes(&mut ts, 1, &l);
        }
        for (t, v) in samples {
            let mut s = Vec::new();
            s.push(1 << 3 | 1);
            s.extend_from_slice(&v.to_bits().to_le_bytes());
            s.push(2 << 3);
            varint(&mut s, *t as u64);
            field_bytes(&mut ts, 2, &s);
        }
        field_bytes(&mut req, 1, &ts);
    }
    req
}

/// Open a request (`Connection: close`) and send its head plus `first` bytes of the body; the
/// rest comes with [`finish_slow_request`].
pub fn start_slow_request(gateway: &str, path: &str, body: &[u8], first: usize) -> TcpStream {
    let mut s = TcpStream::connect(gateway).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {gateway}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..first]).unwrap();
    s.flush().unwrap();
    s
}

pub fn finish_slow_request(mut s: TcpStream, rest: &[u8]) -> (u16, String) {
    s.write_all(rest).expect("send the rest of the body");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read response");
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

impl StandInNode {
    /// Switch read-only mode with SIGUSR1 (on) / SIGUSR2 (off) and wait until the node says so.
    pub fn signal_read_only(&self, on: bool) {
        self.proc.signal(if on { "USR1" } else { "USR2" });
        let want = format!("read_only={on}");
        let done = eventually(Duration::from_secs(5), || {
            let (_, b) = try_get(&self.web, "/readonly").ok()?;
            b.contains(&want).then_some(())
        });
        assert!(
            done.is_some(),
            "stand-in at {} did not turn {want}",
            self.web
        );
    }
}
