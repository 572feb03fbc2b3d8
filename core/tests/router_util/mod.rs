//! A fake cluster around a [`Router`]: storage nodes that ack, refuse, fail or stall, driven by
//! a fake clock. Shared by the router tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use shardgate_core::model::Sample;
use shardgate_core::route::{
    Batch, BlockId, FailReason, NodeEvent, Output, Placement, PlacementKind, Router, RouterConfig,
    ShardKey,
};
use shardgate_core::wire::row::decode_block;
use shardgate_core::{Label, Tenant, Time};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Acknowledges every block.
    Up,
    /// Answers read-only (blocks discarded); probes too.
    ReadOnly,
    /// The connection breaks on the next request.
    Down,
    /// Holds the request without answering.
    Stall,
}

#[derive(Debug)]
pub struct Request {
    pub block: BlockId,
    pub bytes: Bytes,
    pub rows: u64,
}

#[derive(Debug)]
pub struct FakeNode {
    pub mode: Mode,
    /// Row ids (timestamps) the node stored, in arrival order.
    pub stored: Vec<i64>,
    pub probes: u32,
    pub blocks: u32,
    pub in_flight: Option<Request>,
}

pub struct Cluster {
    pub r: Router,
    pub p: Arc<Placement>,
    pub now: Time,
    pub nodes: Vec<FakeNode>,
    /// Every send in order: (node, rows, is_probe).
    pub log: Vec<(usize, u64, bool)>,
    next_id: i64,
    pub pushed: u64,
}

pub fn node_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("10.0.0.{}:8400", i + 1)).collect()
}

impl Cluster {
    /// `n` storage nodes, all connected.
    pub fn new(n: usize, config: RouterConfig) -> Cluster {
        let p = Arc::new(Placement::new(&node_names(n), PlacementKind::Rendezvous, 0));
        let now = Time::from_millis(1_000);
        let r = Router::new(p.clone(), config, now);
        let mut c = Cluster {
            r,
            p,
            now,
            nodes: (0..n)
                .map(|_| FakeNode {
                    mode: Mode::Up,
                    stored: Vec::new(),
                    probes: 0,
                    blocks: 0,
                    in_flight: None,
                })
                .collect(),
            log: Vec::new(),
            next_id: 1,
            pushed: 0,
        };
        for i in 0..n {
            c.r.handle_node_event(i, NodeEvent::Ready { legacy: false }, c.now);
        }
        c
    }

    /// A batch of `series` fresh series with one sample each; the sample timestamp is the row id.
    pub fn batch(&mut self, series: usize) -> Batch {
        let mut b = Batch::new(self.p.len());
        for _ in 0..series {
            let id = self.next_id;
            self.next_id += 1;
            let v = id.to_string();
            let labels = [
                Label::metric_name(b"m"),
                Label::new(b"series", v.as_bytes()),
            ];
            assert!(b.add_series(
                &self.p,
                Tenant::default(),
                &labels,
                ShardKey::MetricName,
                &[Sample::new(id, 1.0)],
            ));
        }
        self.pushed += series as u64;
        b
    }

    /// Home node of the row with id `id` (made by [`Cluster::batch`]).
    pub fn home_of(&self, id: i64) -> usize {
        let v = id.to_string();
        let mut b = Batch::new(self.p.len());
        b.add_series(
            &self.p,
            Tenant::default(),
            &[
                Label::metric_name(b"m"),
                Label::new(b"series", v.as_bytes()),
            ],
            ShardKey::MetricName,
            &[Sample::new(id, 1.0)],
        );
        (0..self.p.len()).find(|&i| b.nodes()[i].rows > 0).unwrap()
    }

    /// Move the router's sends onto the fake links. Panics if a link gets a second request.
    pub fn collect(&mut self) -> usize {
        let mut k = 0;
        while let Some(Output::Send {
            node,
            block,
            bytes,
            rows,
        }) = self.r.poll_output()
        {
            let f = &mut self.nodes[node];
            assert!(
                f.in_flight.is_none(),
                "node {node} got block {block} while {:?} is in flight",
                f.in_flight.as_ref().map(|r| r.block)
            );
            self.log.push((node, rows, bytes.is_empty()));
            f.in_flight = Some(Request { block, bytes, rows });
            k += 1;
        }
        k
    }

    /// Let every node that is not stalled answer its request.
    pub fn respond(&mut self) -> usize {
        let mut k = 0;
        for i in 0..self.nodes.len() {
            if self.nodes[i].mode == Mode::Stall {
                continue;
            }
            let Some(req) = self.nodes[i].in_flight.take() else {
                continue;
            };
            k += 1;
            let ev = self.answer(i, req);
            self.r.handle_node_event(i, ev, self.now);
        }
        k
    }

    fn answer(&mut self, i: usize, req: Request) -> NodeEvent {
        let f = &mut self.nodes[i];
        match f.mode {
            Mode::Up => {
                if req.bytes.is_empty() {
                    f.probes += 1;
                } else {
                    f.blocks += 1;
                    let mut n = 0;
                    for row in decode_block(&req.bytes) {
                        f.stored.push(row.unwrap().sample.timestamp_ms);
                        n += 1;
                    }
                    assert_eq!(n, req.rows);
                }
                NodeEvent::Acked(req.block)
            }
            Mode::ReadOnly => {
                if req.bytes.is_empty() {
                    f.probes += 1;
                }
                NodeEvent::ReadOnly(req.block)
            }
            Mode::Down | Mode::Stall => NodeEvent::Failed {
                block: Some(req.block),
                reason: FailReason::Connection,
            },
        }
    }

    /// Answer sends until the router goes quiet, without moving the clock.
    pub fn settle(&mut self) {
        for _ in 0..10_000 {
            let a = self.collect();
            let b = self.respond();
            if a == 0 && b == 0 {
                return;
            }
        }
        panic!("router never settled");
    }

    /// Settle, then jump to the router's next deadline, until `until` or nothing is left.
    pub fn run_until(&mut self, until: Time) {
        loop {
            self.settle();
            match self.r.poll_timeout() {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.r.handle_timeout(self.now);
                }
                _ => {
                    self.now = self.now.max(until);
                    self.r.handle_timeout(self.now);
                    self.settle();
                    return;
                }
            }
        }
    }

    pub fn advance_ms(&mut self, ms: u64) {
        let until = self.now + std::time::Duration::from_millis(ms);
        self.run_until(until);
    }

    /// How many distinct nodes stored each row id, and whether any node stored one twice.
    pub fn copies(&self) -> (BTreeMap<i64, usize>, bool) {
        let mut m = BTreeMap::new();
        let mut dup = false;
        for f in &self.nodes {
            let mut seen = std::collections::BTreeSet::new();
            for &id in &f.stored {
                if !seen.insert(id) {
                    dup = true;
                }
                *m.entry(id).or_insert(0) += 1;
            }
        }
        (m, dup)
    }

    pub fn stored_total(&self) -> usize {
        self.copies().0.len()
    }
}
