//! A client: pushes generated series in Prometheus text to the gateways, for several tenants,
//! at a seeded pace with bursts. A refused request is retried as a whole, as real clients do,
//! so rows the gateway took before refusing may arrive twice.

use std::fmt::Write as _;
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

use crate::gateway_host::{CLIENT_PORT, REPLY_OK};
use crate::ledger::Shared;
use crate::rng::{stream, SimRng};

pub const TENANTS: [(u32, u32); 3] = [(0, 0), (1, 0), (7, 3)];
/// Timestamps start here, so they look like real ones.
const EPOCH_MS: i64 = 1_700_000_000_000;

#[derive(Clone)]
pub struct ClientParams {
    pub index: usize,
    pub seed: u64,
    pub gateways: Vec<String>,
    /// Stop sending new requests at this simulated time.
    pub load_until: Duration,
    /// Distinct series this client owns.
    pub series: usize,
}

/// One request: tenant and body, before framing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub tenant: (u32, u32),
    pub text: String,
    pub rows: u64,
}

/// The next request of a client: `seq` numbers it, and doubles as every row's timestamp offset,
/// so no (series, timestamp) pair is ever sent twice by different requests.
pub fn make_request(rng: &mut SimRng, p: &ClientParams, seq: u64) -> Request {
    let tenant = TENANTS[rng.gen_range(0..TENANTS.len())];
    let n = rng.gen_range(1..=p.series);
    let first = rng.gen_range(0..p.series);
    let ts = EPOCH_MS + (seq as i64) * 1000 + p.index as i64;
    let mut text = String::new();
    for k in 0..n {
        let s = (first + k) % p.series;
        let v = rng.gen_range(0..1_000_000u32);
        let _ = writeln!(
            text,
            "sim_rows_total{{job=\"sim\",client=\"{}\",series=\"{s}\"}} {v} {ts}",
            p.index
        );
    }
    Request {
        tenant,
        text,
        rows: n as u64,
    }
}

pub async fn run(ledger: Shared, p: ClientParams) -> turmoil::Result {
    let name = format!("client{}", p.index);
    let mut rng = stream(p.seed, &name);
    let mut conns: Vec<Option<TcpStream>> = (0..p.gateways.len()).map(|_| None).collect();
    let mut seq = 0u64;
    while turmoil::sim_elapsed().unwrap_or_default() < p.load_until {
        let burst = if rng.gen_bool(0.1) {
            rng.gen_range(3..15)
        } else {
            1
        };
        for _ in 0..burst {
            seq += 1;
            let req = make_request(&mut rng, &p, seq);
            ledger.borrow_mut().rows_generated += req.rows;
            // A refused request is retried a few times, then given up (nothing was accepted
            // for the rows the gateway did not take, so nothing is owed for them).
            for attempt in 0..20 {
                let g = rng.gen_range(0..p.gateways.len());
                let ok = send(&mut conns[g], &p.gateways[g], &req).await;
                {
                    let mut l = ledger.borrow_mut();
                    l.requests_sent += 1;
                    if !ok {
                        l.requests_refused += 1;
                    }
                    l.event(
                        &name,
                        format_args!(
                            "request {seq} try {attempt} to gw{g}: {} rows ok={ok}",
                            req.rows
                        ),
                    );
                }
                if ok {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(rng.gen_range(100..500))).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(10..150))).await;
    }
    Ok(())
}

async fn send(conn: &mut Option<TcpStream>, gateway: &str, req: &Request) -> bool {
    if conn.is_none() {
        match TcpStream::connect((gateway, CLIENT_PORT)).await {
            Ok(s) => *conn = Some(s),
            Err(_) => return false,
        }
    }
    let stream = conn.as_mut().expect("connected above");
    let mut frame = Vec::with_capacity(12 + req.text.len());
    frame.extend_from_slice(&((8 + req.text.len()) as u32).to_be_bytes());
    frame.extend_from_slice(&req.tenant.0.to_be_bytes());
    frame.extend_from_slice(&req.tenant.1.to_be_bytes());
    frame.extend_from_slice(req.text.as_bytes());
    let mut reply = [0u8; 1];
    let ok = stream.write_all(&frame).await.is_ok() && stream.read_exact(&mut reply).await.is_ok();
    if !ok {
        *conn = None;
        return false;
    }
    reply[0] == REPLY_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_seeded_and_never_repeat_a_row() {
        let p = ClientParams {
            index: 2,
            seed: 9,
            gateways: vec!["gw0".into()],
            load_until: Duration::from_secs(1),
            series: 5,
        };
        let a = make_request(&mut stream(9, "client2"), &p, 1);
        let b = make_request(&mut stream(9, "client2"), &p, 1);
        assert_eq!(a, b);
        assert_eq!(a.text.lines().count() as u64, a.rows);
        assert!(a.text.contains("client=\"2\""));
        let c = make_request(&mut stream(9, "client2"), &p, 2);
        let ts = |r: &Request| r.text.split_whitespace().last().unwrap().to_string();
        assert_ne!(ts(&a), ts(&c), "each request has its own timestamp");
    }
}
