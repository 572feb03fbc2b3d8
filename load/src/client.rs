//! Sends pre-generated bodies over K keep-alive connections and counts the outcome.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use crate::bodies::Body;

/// Where and how to send.
#[derive(Clone, Debug)]
pub struct Target {
    /// Full URL of the insert endpoint, query included.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub connections: usize,
    pub timeout: Duration,
}

/// What happened.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub requests: u64,
    pub failed_requests: u64,
    /// Samples in requests answered 2xx.
    pub samples_accepted: u64,
    pub body_bytes: u64,
    /// From the moment every connection thread is ready until the last answer.
    pub elapsed: Duration,
    /// The first few failures, for the operator.
    pub errors: Vec<String>,
}

const MAX_ERRORS_KEPT: usize = 5;

/// Send every body once, spread over `target.connections` threads that each keep one
/// connection alive. Bodies are handed out in order from a shared counter, so a slow request on
/// one connection does not leave the others idle.
pub fn send_all(target: &Target, bodies: Arc<Vec<Body>>) -> Outcome {
    let k = target.connections.max(1);
    let next = Arc::new(AtomicUsize::new(0));
    let start_line = Arc::new(Barrier::new(k + 1));
    let shared = Arc::new(Mutex::new(Outcome::default()));
    let mut threads = Vec::with_capacity(k);
    for _ in 0..k {
        let (target, bodies, next, start_line, shared) = (
            target.clone(),
            Arc::clone(&bodies),
            Arc::clone(&next),
            Arc::clone(&start_line),
            Arc::clone(&shared),
        );
        threads.push(std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .max_idle_connections_per_host(1)
                .timeout(target.timeout)
                .redirects(0)
                .build();
            let mut mine = Outcome::default();
            start_line.wait();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                mine.requests += 1;
                mine.body_bytes += body.bytes.len() as u64;
                match post(&agent, &target, &body.bytes) {
                    Ok(()) => mine.samples_accepted += body.samples,
                    Err(e) => {
                        mine.failed_requests += 1;
                        if mine.errors.len() < MAX_ERRORS_KEPT {
                            mine.errors.push(format!("request {i}: {e}"));
                        }
                    }
                }
            }
            let mut all = shared.lock().unwrap_or_else(|p| p.into_inner());
            all.requests += mine.requests;
            all.failed_requests += mine.failed_requests;
            all.samples_accepted += mine.samples_accepted;
            all.body_bytes += mine.body_bytes;
            let room = MAX_ERRORS_KEPT.saturating_sub(all.errors.len());
            all.errors.extend(mine.errors.into_iter().take(room));
        }));
    }
    start_line.wait();
    let started = Instant::now();
    for t in threads {
        let _ = t.join();
    }
    let elapsed = started.elapsed();
    let mut out = std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner()));
    out.elapsed = elapsed;
    out
}

/// One POST; anything but a 2xx answer is an error carrying the status and the start of the
/// response body (the gateway says there why it refused).
fn post(agent: &ureq::Agent, target: &Target, body: &[u8]) -> Result<(), String> {
    let mut req = agent.post(&target.url);
    for (name, value) in &target.headers {
        req = req.set(name, value);
    }
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            return Err(format!("HTTP {code}: {}", snippet(r)));
        }
        Err(e) => return Err(e.to_string()),
    };
    let code = resp.status();
    // Reading the body to its end is what lets the agent reuse the connection.
    let text = snippet(resp);
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP {code}: {text}"))
    }
}

fn snippet(resp: ureq::Response) -> String {
    let mut buf = Vec::new();
    // Answers are short; cap what is kept in case a misdirected URL streams something big.
    let _ = resp.into_reader().take(64 << 10).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.trim().chars().take(200).collect()
}
