//! The whole gateway driven by a plain loop with virtual time against in-memory storage nodes
//! that speak the real server side of the protocol: the same calls the shell and the
//! simulator make, with nothing else in between.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use shardgate_core::gateway::{Bucket, ConnId, Gateway, GatewayConfig, Output, PushError};
use shardgate_core::model::{Label, Sample, Tenant};
use shardgate_core::route::{series_hash, ShardKey};
use shardgate_core::wire::row::decode_block;
use shardgate_core::wire::server::{Reply, ServerConfig, ServerConn, ServerEvent};
use shardgate_core::Time;

#[derive(Default)]
struct StorageNode {
    up: bool,
    read_only: bool,
    /// Every row it acknowledged: (raw metric name, timestamp).
    rows: Vec<(Vec<u8>, i64)>,
    /// Every metadata block it acknowledged.
    metadata: Vec<Vec<u8>>,
}

struct Cluster {
    gw: Gateway,
    nodes: Vec<StorageNode>,
    conns: BTreeMap<ConnId, ServerConn>,
    now: Time,
    /// Bytes in flight gateway → node and node → gateway, delivered on the next step.
    to_node: VecDeque<(ConnId, Vec<u8>)>,
    to_gw: VecDeque<(ConnId, Vec<u8>)>,
}

impl Cluster {
    fn new(n: usize, rf: usize) -> Cluster {
        let addrs: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", 19001 + i)).collect();
        let mut config = GatewayConfig::new(addrs);
        config.router.replication_factor = rf;
        let now = Time::from_millis(1);
        let mut nodes = Vec::new();
        nodes.resize_with(n, || StorageNode {
            up: true,
            ..Default::default()
        });
        Cluster {
            gw: Gateway::new(config, now),
            nodes,
            conns: BTreeMap::new(),
            now,
            to_node: VecDeque::new(),
            to_gw: VecDeque::new(),
        }
    }

    /// Deliver everything pending, repeatedly, at the current time.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(out) = self.gw.poll_output() {
                moved = true;
                match out {
                    Output::Dial(c) => {
                        if self.nodes[c.node].up {
                            self.conns
                                .insert(c, ServerConn::new(ServerConfig::default(), self.now));
                            self.gw.handle_dialed(c, self.now);
                        } else {
                            self.gw.handle_dial_failed(c, self.now);
                        }
                    }
                    Output::Transmit(c, bytes) => self.to_node.push_back((c, bytes.to_vec())),
                    Output::Close(c) => {
                        self.conns.remove(&c);
                        self.to_node.retain(|(id, _)| *id != c);
                        self.to_gw.retain(|(id, _)| *id != c);
                    }
                }
            }
            while let Some((c, bytes)) = self.to_node.pop_front() {
                moved = true;
                let node = &mut self.nodes[c.node];
                let Some(server) = self.conns.get_mut(&c) else {
                    continue;
                };
                server.handle_input(&bytes, self.now);
                while let Some(ev) = server.poll_event() {
                    if let ServerEvent::Block {
                        request,
                        block,
                        bucket,
                    } = ev
                    {
                        if node.read_only {
                            server.reply(request, Reply::ReadOnly);
                        } else if bucket == Bucket::Metadata {
                            node.metadata.push(block);
                            server.reply(request, Reply::Ok);
                        } else {
                            for row in decode_block(&block) {
                                let row = row.unwrap();
                                node.rows
                                    .push((row.metric_name.to_vec(), row.sample.timestamp_ms));
                            }
                            server.reply(request, Reply::Ok);
                        }
                    }
                }
                while let Some(b) = server.poll_transmit() {
                    self.to_gw.push_back((c, b));
                }
            }
            while let Some((c, bytes)) = self.to_gw.pop_front() {
                moved = true;
                self.gw.handle_input(c, &bytes, self.now);
            }
            if !moved {
                break;
            }
        }
    }

    /// Advance virtual time in steps, firing the gateway's timers.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.settle();
            let next = self.gw.poll_timeout().unwrap_or(end).min(end).max(self.now);
            self.now = next.max(self.now + Duration::from_millis(1)).min(end);
            self.gw.handle_timeout(self.now);
            if self.now >= end {
                self.settle();
                return;
            }
        }
    }

    fn crash(&mut self, node: usize) {
        self.nodes[node].up = false;
        let gone: Vec<ConnId> = self
            .conns
            .keys()
            .filter(|c| c.node == node)
            .copied()
            .collect();
        for c in gone {
            self.conns.remove(&c);
            self.to_node.retain(|(id, _)| *id != c);
            self.to_gw.retain(|(id, _)| *id != c);
            self.gw.handle_closed(c, self.now);
        }
    }

    fn push_series(&mut self, count: usize, ts: i64) -> Vec<Vec<u8>> {
        let mut batch = self.gw.new_batch();
        let mut names = Vec::new();
        for i in 0..count {
            let value = format!("s{i}");
            let labels = [
                Label::metric_name(b"m"),
                Label::new(b"series", value.as_bytes()),
            ];
            batch.add_series(
                self.gw.placement(),
                Tenant::new(1, 2),
                &labels,
                ShardKey::MetricName,
                &[Sample::new(ts, 1.0)],
            );
            let mut mn = Vec::new();
            shardgate_core::wire::row::encode_metric_name(&mut mn, Tenant::new(1, 2), &labels);
            names.push(mn);
        }
        loop {
            match self.gw.push(&mut batch, self.now) {
                Ok(()) => break,
                Err(PushError::Overload) => self.run_for(Duration::from_millis(10)),
                Err(e) => panic!("push failed: {e}"),
            }
        }
        names
    }

    fn copies(&self, name: &[u8], ts: i64) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .rows
                    .iter()
                    .any(|(n, t)| n == name && *t == ts)
            })
            .collect()
    }
}

#[test]
fn healthy_cluster_places_every_row_on_its_home_and_replicas() {
    let mut c = Cluster::new(3, 2);
    c.run_for(Duration::from_millis(50));
    let names = c.push_series(300, 1000);
    c.run_for(Duration::from_secs(1));
    for name in &names {
        let home = c.gw.placement().primary(series_hash(name));
        let want: Vec<usize> = {
            let mut v: Vec<usize> = c.gw.placement().replicas(home, 2).collect();
            v.sort();
            v
        };
        assert_eq!(c.copies(name, 1000), want);
    }
    let stats = c.gw.router().stats();
    assert_eq!(
        stats.nodes.iter().map(|n| n.rows_sent_total).sum::<u64>(),
        600
    );
}

#[test]
fn crashed_node_rows_go_elsewhere_and_nothing_is_lost() {
    let mut c = Cluster::new(3, 1);
    c.run_for(Duration::from_millis(50));
    c.crash(1);
    let names = c.push_series(300, 2000);
    c.run_for(Duration::from_secs(2));
    for name in &names {
        let copies = c.copies(name, 2000);
        assert_eq!(copies.len(), 1, "every row exactly once");
        assert_ne!(copies[0], 1, "nothing on the crashed node");
    }
    let stats = c.gw.router().stats();
    assert!(stats.nodes[1].rows_rerouted_from_here_total > 0);
    assert!(stats.nodes[1].dial_errors_total > 0);
}

#[test]
fn read_only_node_rows_go_elsewhere() {
    let mut c = Cluster::new(3, 1);
    c.nodes[0].read_only = true;
    c.run_for(Duration::from_millis(50));
    let names = c.push_series(300, 3000);
    c.run_for(Duration::from_secs(2));
    let names2 = c.push_series(300, 3001);
    c.run_for(Duration::from_secs(2));
    for (name, ts) in names
        .iter()
        .map(|n| (n, 3000))
        .chain(names2.iter().map(|n| (n, 3001)))
    {
        let copies = c.copies(name, ts);
        assert_eq!(copies.len(), 1);
        assert_ne!(copies[0], 0);
    }
    assert!(c.gw.router().node_gauges(0).is_read_only);
}

#[test]
fn node_that_comes_back_gets_its_series_again() {
    let mut c = Cluster::new(2, 1);
    c.run_for(Duration::from_millis(50));
    c.crash(0);
    c.push_series(100, 4000);
    c.run_for(Duration::from_secs(1));
    c.nodes[0].up = true;
    c.run_for(Duration::from_secs(5));
    let names = c.push_series(100, 4001);
    c.run_for(Duration::from_secs(1));
    for name in &names {
        let home = c.gw.placement().primary(series_hash(name));
        assert_eq!(c.copies(name, 4001), vec![home]);
    }
}

#[test]
fn shutdown_drains_everything_to_the_nodes() {
    let mut c = Cluster::new(3, 1);
    c.run_for(Duration::from_millis(50));
    let names = c.push_series(500, 5000);
    c.gw.begin_shutdown(c.now);
    c.run_for(Duration::from_millis(100));
    assert!(c.gw.is_drained());
    for name in &names {
        assert_eq!(c.copies(name, 5000).len(), 1);
    }
    let mut b = c.gw.new_batch();
    b.add_series(
        c.gw.placement(),
        Tenant::default(),
        &[Label::metric_name(b"x")],
        ShardKey::MetricName,
        &[Sample::new(1, 1.0)],
    );
    assert_eq!(c.gw.push(&mut b, c.now), Err(PushError::ShuttingDown));
}

#[test]
fn metadata_goes_to_its_home_node_on_the_metadata_connection() {
    let mut c = Cluster::new(3, 1);
    c.run_for(Duration::from_millis(50));
    let mut batch = c.gw.new_batch();
    assert!(batch.add_metadata(
        c.gw.placement(),
        Tenant::default(),
        1,
        b"http_requests_total",
        b"Total requests",
        b""
    ));
    c.gw.push(&mut batch, c.now).unwrap();
    c.run_for(Duration::from_secs(1));
    // The row of sharding spec example F; its home is chosen by hashing the whole row.
    let row = hex::decode("0000000000000000000000010013687474705f72657175657374735f746f74616c000e546f74616c2072657175657374730000").unwrap();
    let home = c.gw.placement().primary(series_hash(&row));
    for (i, node) in c.nodes.iter().enumerate() {
        let want: Vec<Vec<u8>> = if i == home { vec![row.clone()] } else { vec![] };
        assert_eq!(node.metadata, want, "node {i}");
        assert!(node.rows.is_empty());
    }
    assert_eq!(
        c.gw.metadata_router().unwrap().stats().nodes[home].rows_sent_total,
        1
    );
}

#[test]
fn metadata_that_cannot_be_placed_never_holds_up_rows() {
    let mut c = Cluster::new(2, 1);
    // No node is reachable: the metadata is dropped and counted, and the push still succeeds.
    c.crash(0);
    c.crash(1);
    c.run_for(Duration::from_millis(50));
    let mut batch = c.gw.new_batch();
    assert!(batch.add_metadata(c.gw.placement(), Tenant::default(), 2, b"g", b"", b""));
    assert_eq!(c.gw.push(&mut batch, c.now), Ok(()));
    assert_eq!(c.gw.metadata_dropped_total(), 1);
    assert!(batch.is_empty());
}

#[test]
fn rows_pushed_before_the_first_dial_wait_for_their_home_node() {
    // Pushed at once, before any storage node has answered its first dial: vminsert buffers
    // for a node that has not failed yet, so nothing may be rerouted away from home.
    let mut c = Cluster::new(3, 1);
    let mut batch = c.gw.new_batch();
    let labels = [Label::metric_name(b"early")];
    batch.add_series(
        c.gw.placement(),
        Tenant::default(),
        &labels,
        ShardKey::MetricName,
        &[Sample::new(1, 1.0)],
    );
    assert_eq!(c.gw.push(&mut batch, c.now), Err(PushError::Overload));
    let names = c.push_series(200, 6000);
    c.run_for(Duration::from_secs(1));
    for name in &names {
        let home = c.gw.placement().primary(series_hash(name));
        assert_eq!(c.copies(name, 6000), vec![home]);
    }
    let stats = c.gw.router().stats();
    assert_eq!(
        stats
            .nodes
            .iter()
            .map(|n| n.rows_rerouted_from_here_total)
            .sum::<u64>(),
        0
    );
}
