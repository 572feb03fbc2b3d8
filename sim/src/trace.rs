//! The event trace: every decision-relevant event, hashed in order. Two runs of one seed must
//! produce the same hash; the last events are kept in full for a violation report.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

use xxhash_rust::xxh64::Xxh64;

/// How many events a violation report shows.
pub const KEEP_LAST: usize = 40;

pub struct Trace {
    hasher: Xxh64,
    events: u64,
    last: VecDeque<String>,
    line: String,
    /// Print every event to stderr as it happens (replaying one seed by hand).
    pub echo: bool,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            hasher: Xxh64::new(0),
            events: 0,
            last: VecDeque::with_capacity(KEEP_LAST),
            line: String::new(),
            echo: false,
        }
    }
}

impl Trace {
    /// Record one event at simulated time `at` on `host`.
    pub fn record(&mut self, at: Duration, host: &str, what: std::fmt::Arguments<'_>) {
        self.line.clear();
        let _ = write!(
            self.line,
            "{:>10.3}ms {host:<8} {what}",
            at.as_secs_f64() * 1000.0
        );
        self.hasher.update(self.line.as_bytes());
        self.hasher.update(b"\n");
        self.events += 1;
        if self.echo {
            eprintln!("{}", self.line);
        }
        if self.last.len() == KEEP_LAST {
            self.last.pop_front();
        }
        self.last.push_back(self.line.clone());
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// Hash of every event so far, in order.
    pub fn hash(&self) -> u64 {
        self.hasher.digest()
    }

    pub fn last_events(&self) -> Vec<String> {
        self.last.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_content_and_order() {
        let mut a = Trace::default();
        let mut b = Trace::default();
        let t = Duration::from_millis(3);
        a.record(t, "gw0", format_args!("push {}", 1));
        a.record(t, "node1", format_args!("ack"));
        b.record(t, "node1", format_args!("ack"));
        b.record(t, "gw0", format_args!("push {}", 1));
        assert_ne!(a.hash(), b.hash());
        let mut c = Trace::default();
        c.record(t, "gw0", format_args!("push {}", 1));
        c.record(t, "node1", format_args!("ack"));
        assert_eq!(a.hash(), c.hash());
        assert_eq!(a.events(), 2);
    }

    #[test]
    fn keeps_only_the_last_events() {
        let mut t = Trace::default();
        for i in 0..(KEEP_LAST + 5) {
            t.record(Duration::ZERO, "h", format_args!("e{i}"));
        }
        let last = t.last_events();
        assert_eq!(last.len(), KEEP_LAST);
        assert!(last[0].ends_with("e5"));
    }
}
