//! Keep-alive after an early refusal. A request answered before its body is read (bad tenant,
//! unsupported path, bad CSV format, unknown encoding) must leave its connection fit for the
//! next request, as vminsert's Go server does by reading a small unread body before reusing
//! the connection. A body too big to be worth reading gets `Connection: close` instead.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use shardgate_e2e::{eventually, get, temp_dir, Proc};

const TS: i64 = 1_700_000_000_000;

/// One parsed response: status, lower-cased headers, body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A client that keeps one TCP connection open across requests.
struct Conn {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        Conn {
            reader: BufReader::new(s),
            host: addr.to_string(),
        }
    }

    /// Send the request head; `content_length` may announce more than `body` holds.
    fn send(&mut self, path: &str, headers: &[(&str, &str)], content_length: usize, body: &[u8]) {
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {content_length}\r\n",
            self.host
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let s = self.reader.get_mut();
        s.write_all(head.as_bytes())
            .and_then(|()| s.write_all(body))
            .and_then(|()| s.flush())
            .unwrap_or_else(|e| panic!("send {path}: {e}"));
    }

    /// Read one response (Content-Length framed, as the gateway answers).
    fn read(&mut self, what: &str) -> Response {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{what}: reading the status line: {e}"));
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no status line, got {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader
                .read_line(&mut h)
                .unwrap_or_else(|e| panic!("{what}: reading headers: {e}"));
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').expect("header line");
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().expect("content-length"));
        let mut body = vec![0; len];
        self.reader
            .read_exact(&mut body)
            .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"));
        Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    fn request(&mut self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.send(path, headers, body.len(), body);
        self.read(path)
    }
}

fn start_embedded() -> (std::path::PathBuf, Proc, String) {
    let dir = temp_dir("keepalive");
    let args = [
        "-httpListenAddr=127.0.0.1:0".to_string(),
        format!("-storageDataPath={}", dir.display()),
    ];
    let mut p = Proc::start("shardgate", &args);
    let addr = p.wait_for("started server at http://", Duration::from_secs(60));
    (dir, p, addr)
}

/// A text-import body of `n` lines of the series `name{i="…"}`, about `n * 40` bytes.
fn text_body(name: &str, n: usize) -> Vec<u8> {
    let mut b = String::new();
    for i in 0..n {
        b.push_str(&format!("{name}{{i=\"{i}\"}} {i} {TS}\n"));
    }
    b.into_bytes()
}

/// A refused request: path, headers, and a word its error must mention.
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn early_refusals_leave_the_connection_usable() {
    let (dir, mut gw, addr) = start_embedded();
    // Each refusal is decided before any body byte is read; its body (about 40 KiB, well
    // under the drain bound) is still on the wire when the answer goes out.
    let refused = text_body("refused", 1000);
    let cases: [Case; 5] = [
        (
            "/insert/1:2:3/prometheus/api/v1/import/prometheus",
            &[],
            "1:2:3",
        ),
        (
            "/insert/abc/prometheus/api/v1/import/prometheus",
            &[],
            "unsupported path",
        ),
        (
            "/insert/0/prometheus/api/v1/import/csv?format=nonsense",
            &[],
            "nonsense",
        ),
        (
            "/insert/0/prometheus/api/v1/import/prometheus",
            &[("Content-Encoding", "br")],
            "br",
        ),
        (
            "/insert/0/prometheus/api/v1/import/prometheus?extra_label=novalue",
            &[],
            "extra_label",
        ),
    ];
    let mut conn = Conn::open(&addr);
    for (k, (path, headers, mention)) in cases.iter().enumerate() {
        let bad = conn.request(path, headers, &refused);
        assert_eq!(bad.status, 400, "{path}: {}", bad.body);
        assert!(
            bad.body.contains(mention),
            "{path}: the error should mention {mention:?}: {:?}",
            bad.body
        );
        assert_ne!(
            bad.header("connection"),
            Some("close"),
            "{path}: a small unread body is drained, the connection stays open"
        );
        // The next request on the same connection is answered normally.
        let name = format!("kept_{k}");
        let good = conn.request(
            "/insert/0/prometheus/api/v1/import/prometheus",
            &[],
            &text_body(&name, 3),
        );
        assert_eq!(
            good.status, 204,
            "the request after {path} on the same connection: {}",
            good.body
        );
    }
    // Every good request's rows arrived, none of the refused ones.
    let export = eventually(Duration::from_secs(20), || {
        let (status, body) = get(&addr, "/api/v1/export");
        (status == 200 && (0..cases.len()).all(|k| body.contains(&format!("kept_{k}"))))
            .then_some(body)
    })
    .expect("the rows sent after each refusal were stored");
    assert!(!export.contains("refused"), "{export}");
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(30)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unread_body_beyond_the_drain_bound_closes_the_connection() {
    let (dir, mut gw, addr) = start_embedded();
    let mut conn = Conn::open(&addr);
    // Only the head of a 1 MiB request: the refusal must not wait for the body.
    conn.send(
        "/insert/1:2:3/prometheus/api/v1/import/prometheus",
        &[],
        1 << 20,
        b"",
    );
    let bad = conn.read("bad tenant with a 1 MiB body");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(
        bad.header("connection"),
        Some("close"),
        "a body too big to drain must end the connection"
    );
    let mut rest = Vec::new();
    let n = conn.reader.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0, "nothing may follow a Connection: close answer");
    // The gateway itself is fine.
    let mut fresh = Conn::open(&addr);
    let good = fresh.request(
        "/insert/0/prometheus/api/v1/import/prometheus",
        &[],
        &text_body("after_close", 2),
    );
    assert_eq!(good.status, 204, "{}", good.body);
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(30)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
