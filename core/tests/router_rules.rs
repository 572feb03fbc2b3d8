//! One test per routing rule of sharding-and-replication.md §4–§9, against a fake cluster.

mod router_util;

use std::time::Duration;

use router_util::{Cluster, Mode};
use shardgate_core::route::{
    Batch, Bucket, FailReason, NodeEvent, NodeSet, Placement, PlacementKind, PushError, Router,
    RouterConfig, RouterFault,
};
use shardgate_core::Time;

fn cfg() -> RouterConfig {
    RouterConfig::default()
}

#[test]
fn an_idle_nodes_data_waits_for_the_tick_then_goes_home() {
    let mut c = Cluster::new(3, cfg());
    let mut b = c.batch(100);
    let homes: Vec<u64> = b.nodes().iter().map(|n| n.rows).collect();
    c.r.push(&mut b, c.now).unwrap();
    assert!(b.is_empty());
    assert_eq!(c.collect(), 0, "nothing is sent before the flush tick");
    let tick = c.r.poll_timeout().expect("a tick is due");
    assert_eq!(tick - c.now, Duration::from_millis(200));
    c.run_until(tick);
    for (i, f) in c.nodes.iter().enumerate() {
        assert_eq!(f.stored.len() as u64, homes[i], "node {i}");
        assert_eq!(c.r.stats().nodes[i].rows_sent_total, homes[i]);
        assert_eq!(c.r.stats().nodes[i].rows_pushed_total, homes[i]);
    }
    assert!(c.r.is_drained());
    assert_eq!(c.r.buffered_bytes(), 0);
    assert_eq!(c.r.poll_timeout(), None, "nothing to wake up for");
}

#[test]
fn sends_are_back_to_back_while_data_keeps_arriving() {
    let mut c = Cluster::new(1, cfg());
    let mut b = c.batch(10);
    c.r.push(&mut b, c.now).unwrap();
    c.now = c.r.poll_timeout().unwrap();
    c.r.handle_timeout(c.now);
    assert_eq!(c.collect(), 1);
    // More rows arrive while the first block is in flight.
    let mut b = c.batch(5);
    c.r.push(&mut b, c.now).unwrap();
    assert_eq!(c.collect(), 0, "one request per link");
    c.respond();
    assert_eq!(
        c.collect(),
        1,
        "the refilled buffer goes at once, without a tick"
    );
    c.respond();
    assert_eq!(c.nodes[0].stored.len(), 15);
    assert!(c.r.is_drained());
}

#[test]
fn unavailable_home_node_reroutes_each_row_by_rendezvous_among_ready_nodes() {
    let mut c = Cluster::new(3, cfg());
    c.r.handle_node_event(
        1,
        NodeEvent::Failed {
            block: None,
            reason: FailReason::Dial,
        },
        c.now,
    );
    assert_eq!(c.r.stats().nodes[1].dial_errors_total, 1);
    let mut b = c.batch(300);
    let home1 = b.nodes()[1].rows;
    assert!(home1 > 50);
    // Where §6.1 says each of node 1's rows must go.
    let mut excl = NodeSet::new(3);
    excl.insert(1);
    let mut want = [0u64; 3];
    for row in shardgate_core::wire::row::decode_block(&b.nodes()[1].bytes) {
        let row = row.unwrap();
        want
            [c.p.select(shardgate_core::route::series_hash(row.metric_name), &excl)] += 1;
    }
    let direct: Vec<u64> = b.nodes().iter().map(|n| n.rows).collect();
    c.r.push(&mut b, c.now).unwrap();
    let s = c.r.stats();
    assert_eq!(s.reroutes_total, 1);
    assert_eq!(s.rerouted_rows_processed_total, home1);
    assert_eq!(s.nodes[1].rows_rerouted_from_here_total, home1);
    assert_eq!(s.nodes[1].rows_pushed_total, home1);
    assert_eq!(s.nodes[0].rows_rerouted_to_here_total, want[0]);
    assert_eq!(s.nodes[2].rows_rerouted_to_here_total, want[2]);
    assert!(want[0] > 0 && want[2] > 0, "rows split over both: {want:?}");
    assert_eq!(c.r.node_gauges(0).rows_pending, direct[0] + want[0]);
    assert!(!c.r.node_gauges(1).is_reachable);
    c.advance_ms(300);
    assert_eq!(c.stored_total(), 300);
    assert!(c.nodes[1].stored.is_empty());
}

#[test]
fn single_node_or_rerouting_disabled_means_back_pressure() {
    for (n, disable) in [(1, false), (3, true)] {
        let mut c = Cluster::new(
            n,
            RouterConfig {
                disable_rerouting_on_unavailable: disable,
                ..cfg()
            },
        );
        let down = NodeEvent::Failed {
            block: None,
            reason: FailReason::Dial,
        };
        for i in 0..n {
            c.r.handle_node_event(i, down, c.now);
        }
        // With rerouting disabled only the home nodes' state matters; break them all.
        let mut b = c.batch(50);
        assert_eq!(c.r.push(&mut b, c.now), Err(PushError::Overload));
        assert_eq!(b.rows(), 50, "the batch keeps every row");
        assert_eq!(c.r.buffered_bytes(), 0);
        for i in 0..n {
            c.r.handle_node_event(i, NodeEvent::Ready { legacy: false }, c.now);
        }
        c.r.push(&mut b, c.now).unwrap();
        c.advance_ms(300);
        assert_eq!(c.stored_total(), 50);
        assert_eq!(c.r.stats().reroutes_total, 0);
    }
}

#[test]
fn rerouting_disabled_stalls_only_the_unavailable_nodes_share() {
    let mut c = Cluster::new(
        3,
        RouterConfig {
            disable_rerouting_on_unavailable: true,
            ..cfg()
        },
    );
    c.nodes[2].mode = Mode::Down;
    c.r.handle_node_event(
        2,
        NodeEvent::Failed {
            block: None,
            reason: FailReason::Dial,
        },
        c.now,
    );
    let mut b = c.batch(90);
    let stuck = b.nodes()[2].rows;
    assert_eq!(c.r.push(&mut b, c.now), Err(PushError::Overload));
    assert_eq!(b.rows(), stuck);
    assert_eq!(b.nodes()[2].rows, stuck);
    c.advance_ms(300);
    assert_eq!(c.stored_total() as u64, 90 - stuck);
}

#[test]
fn a_full_node_buffer_pushes_back_and_splits_what_fits() {
    let mut c = Cluster::new(
        1,
        RouterConfig {
            node_buffer_limit: 1000,
            ..cfg()
        },
    );
    let mut b = c.batch(200); // about 30 bytes a row: several buffers' worth
    let total = b.bytes();
    assert!(total > 3000);
    assert_eq!(c.r.push(&mut b, c.now), Err(PushError::Overload));
    let taken = total - b.bytes();
    assert!(taken <= 1000 && taken > 900, "took {taken}");
    assert_eq!(c.r.buffered_bytes(), taken);
    // Keep retrying as a producer would; every block stays within the limit.
    for _ in 0..100 {
        c.advance_ms(200);
        if c.r.push(&mut b, c.now).is_ok() {
            break;
        }
    }
    c.advance_ms(400);
    assert_eq!(c.stored_total(), 200);
    assert!(c.log.iter().all(|&(_, rows, _)| rows > 0 && rows < 40));
    let (copies, dup) = c.copies();
    assert!(!dup && copies.values().all(|&k| k == 1));
}

#[test]
fn the_memory_budget_bounds_everything_buffered() {
    let mut c = Cluster::new(
        3,
        RouterConfig {
            node_buffer_limit: 1000,
            memory_budget: 1500,
            ..cfg()
        },
    );
    for n in &mut c.nodes {
        n.mode = Mode::Stall;
    }
    let mut b = c.batch(300);
    assert_eq!(c.r.push(&mut b, c.now), Err(PushError::Overload));
    assert!(c.r.buffered_bytes() <= 1500);
    c.advance_ms(250); // blocks move into flight and stall there
    let mut more = c.batch(100);
    let _ = c.r.push(&mut more, c.now);
    let _ = c.r.push(&mut b, c.now);
    assert!(c.r.buffered_bytes() <= 1500, "{}", c.r.buffered_bytes());
    for n in &mut c.nodes {
        n.mode = Mode::Up;
    }
    // Stalled requests now get answered.
    for _ in 0..200 {
        c.advance_ms(200);
        let r1 = c.r.push(&mut b, c.now);
        let r2 = c.r.push(&mut more, c.now);
        assert!(c.r.buffered_bytes() <= 1500);
        if r1.is_ok() && r2.is_ok() {
            break;
        }
    }
    c.advance_ms(400);
    assert_eq!(c.stored_total(), 400);
}

#[test]
fn drop_samples_on_overload_drops_for_broken_and_full_nodes_but_not_read_only_ones() {
    let mut c = Cluster::new(
        3,
        RouterConfig {
            drop_samples_on_overload: true,
            ..cfg()
        },
    );
    c.r.handle_node_event(
        0,
        NodeEvent::Failed {
            block: None,
            reason: FailReason::Dial,
        },
        c.now,
    );
    let mut b = c.batch(90);
    let home0 = b.nodes()[0].rows;
    c.r.push(&mut b, c.now).unwrap();
    assert_eq!(c.r.stats().nodes[0].rows_dropped_on_overload_total, home0);
    assert_eq!(c.r.stats().nodes[0].rows_pushed_total, home0);
    assert_eq!(c.r.stats().reroutes_total, 0);
    c.advance_ms(300);
    assert_eq!(c.stored_total() as u64, 90 - home0);

    // A read-only node's share is rerouted, not dropped.
    c.r.handle_node_event(0, NodeEvent::Ready { legacy: false }, c.now);
    c.nodes[1].mode = Mode::ReadOnly;
    let mut b = c.batch(60);
    let home1 = b.nodes()[1].rows;
    c.r.push(&mut b, c.now).unwrap();
    c.advance_ms(300); // node 1's block meets the read-only reply
    let mut b = c.batch(60);
    let later1 = b.nodes()[1].rows;
    c.r.push(&mut b, c.now).unwrap();
    assert_eq!(c.r.stats().nodes[1].rows_dropped_on_overload_total, 0);
    assert_eq!(c.r.stats().nodes[1].rows_rerouted_from_here_total, later1);
    c.advance_ms(300);
    assert_eq!(c.stored_total() as u64, 90 - home0 + 120);
    assert!(home1 > 0 && later1 > 0);
}

#[test]
fn replicas_go_to_the_next_nodes_in_order_skipping_unavailable_ones() {
    let mut c = Cluster::new(
        4,
        RouterConfig {
            replication_factor: 2,
            ..cfg()
        },
    );
    let mut b = c.batch(200);
    c.r.push(&mut b, c.now).unwrap();
    c.advance_ms(300);
    let (copies, dup) = c.copies();
    assert!(!dup);
    assert_eq!(copies.len(), 200);
    for (&id, &k) in &copies {
        assert_eq!(k, 2);
        let h = c.home_of(id);
        assert!(c.nodes[h].stored.contains(&id));
        assert!(c.nodes[(h + 1) % 4].stored.contains(&id));
    }
    // Node 2 breaks while holding a block: the copy slides to node 3.
    c.nodes[2].mode = Mode::Down;
    let mut b = c.batch(200);
    let direct: Vec<u64> = b.nodes().iter().map(|n| n.rows).collect();
    let first = c.now;
    c.r.push(&mut b, c.now).unwrap();
    c.advance_ms(300);
    let _ = first;
    let (copies, dup) = c.copies();
    assert!(!dup);
    assert_eq!(copies.len(), 400);
    assert!(copies.values().all(|&k| k == 2), "two distinct copies each");
    assert!(c.r.stats().nodes[2].connection_errors_total >= 1);
    assert!(direct[2] > 0);
    assert_eq!(c.r.stats().rows_incompletely_replicated_total, 0);
}

#[test]
fn a_link_carries_one_request_and_queued_copies_go_first_come_first_served() {
    // RF = 3 on 3 nodes: every job needs every link; the harness panics on a second request.
    let mut c = Cluster::new(
        3,
        RouterConfig {
            replication_factor: 3,
            ..cfg()
        },
    );
    for _ in 0..20 {
        let mut b = c.batch(30);
        c.r.push(&mut b, c.now).unwrap();
        c.advance_ms(50);
    }
    c.advance_ms(1000);
    let (copies, dup) = c.copies();
    assert!(!dup);
    assert_eq!(copies.len(), 600);
    assert!(copies.values().all(|&k| k == 3));
}

#[test]
fn no_copy_anywhere_retries_the_whole_block_at_the_next_tick() {
    let mut c = Cluster::new(2, cfg());
    let mut b = c.batch(40);
    c.r.push(&mut b, c.now).unwrap();
    for n in &mut c.nodes {
        n.mode = Mode::Down;
    }
    c.advance_ms(200);
    assert_eq!(c.stored_total(), 0);
    let sends = c.log.len();
    assert!(sends >= 2, "both nodes tried");
    assert!(!c.r.is_ready(0) && !c.r.is_ready(1));
    assert!(c.r.buffered_bytes() > 0, "the blocks are kept");
    // Still broken at the next tick: nothing to try.
    c.advance_ms(200);
    assert_eq!(c.log.len(), sends);
    for (i, n) in c.nodes.iter_mut().enumerate() {
        n.mode = Mode::Up;
        c.r.handle_node_event(i, NodeEvent::Ready { legacy: false }, c.now);
    }
    assert_eq!(c.collect(), 0, "a failed block waits for the tick");
    c.advance_ms(200);
    assert_eq!(c.stored_total(), 40);
    assert!(c.r.is_drained());
    assert_eq!(c.r.stats().rows_incompletely_replicated_total, 0);
}

#[test]
fn fewer_reachable_nodes_than_replicas_counts_incomplete_replication() {
    let mut c = Cluster::new(
        3,
        RouterConfig {
            replication_factor: 3,
            ..cfg()
        },
    );
    c.nodes[1].mode = Mode::Down;
    let mut b = c.batch(30);
    c.r.push(&mut b, c.now).unwrap();
    c.advance_ms(300);
    let (copies, dup) = c.copies();
    assert!(!dup);
    assert_eq!(copies.len(), 30);
    assert!(copies.values().all(|&k| k == 2));
    assert_eq!(c.r.stats().rows_incompletely_replicated_total, 30);
    assert!(c.r.is_drained());
}

#[test]
fn read_only_node_hands_its_block_on_and_is_probed_until_writable() {
    let mut c = Cluster::new(3, cfg());
    c.nodes[1].mode = Mode::ReadOnly;
    let mut b = c.batch(90);
    let home1 = b.nodes()[1].rows;
    c.r.push(&mut b, c.now).unwrap();
    c.advance_ms(200);
    assert!(c.r.node_gauges(1).is_read_only);
    assert!(c.r.node_gauges(1).is_reachable);
    assert_eq!(c.stored_total(), 90, "node 1's block went to node 2");
    assert!(c.nodes[2].stored.len() as u64 >= home1);
    // A reconnect does not clear read-only.
    c.r.handle_node_event(
        1,
        NodeEvent::Failed {
            block: None,
            reason: FailReason::Connection,
        },
        c.now,
    );
    c.r.handle_node_event(1, NodeEvent::Ready { legacy: false }, c.now);
    assert!(!c.r.is_ready(1));
    // Probes every 30 s, empty, while read-only.
    let t0 = c.now;
    c.advance_ms(29_000);
    assert_eq!(c.nodes[1].probes, 0);
    c.advance_ms(2_000);
    assert_eq!(
        c.nodes[1].probes, 1,
        "first probe ~30 s after going read-only"
    );
    assert!(!c.r.is_ready(1), "a read-only answer keeps it read-only");
    let _ = t0;
    c.nodes[1].mode = Mode::Up;
    c.advance_ms(30_000);
    assert!(c.r.is_ready(1), "an acked probe clears read-only");
    assert!(c.log.iter().filter(|l| l.2).all(|l| l.0 == 1 && l.1 == 0));
    assert_eq!(c.r.poll_timeout(), None);
}

#[test]
fn shutdown_flushes_at_once_refuses_pushes_and_counts_what_it_drops() {
    let mut c = Cluster::new(3, cfg());
    let mut b = c.batch(60);
    c.r.push(&mut b, c.now).unwrap();
    c.r.begin_shutdown(c.now);
    assert!(c.collect() > 0, "the final pass does not wait for the tick");
    c.settle();
    assert_eq!(c.stored_total(), 60);
    assert!(c.r.is_drained());
    let mut b = c.batch(1);
    assert_eq!(c.r.push(&mut b, c.now), Err(PushError::ShuttingDown));

    // Nobody can take the rows: dropped and counted.
    let mut c = Cluster::new(2, cfg());
    let mut b = c.batch(30);
    c.r.push(&mut b, c.now).unwrap();
    for n in &mut c.nodes {
        n.mode = Mode::Down;
    }
    c.r.begin_shutdown(c.now);
    c.settle();
    assert!(c.r.is_drained());
    assert_eq!(c.r.stats().rows_dropped_on_shutdown_total, 30);
}

#[test]
fn metadata_bucket_never_drops_on_overload_and_drops_for_legacy_links() {
    let p = std::sync::Arc::new(Placement::new(
        &router_util::node_names(1),
        PlacementKind::Rendezvous,
        0,
    ));
    let mut r = Router::new(
        p,
        RouterConfig {
            bucket: Bucket::Metadata,
            drop_samples_on_overload: true,
            ..cfg()
        },
        Time::ZERO,
    );
    // Example 5 of row-encoding.md, twice.
    let row = hex::decode("0000000000000000000000010013687474705f72657175657374735f746f74616c000e546f74616c2072657175657374730000").unwrap();
    let mut b = Batch::new(1);
    b.put_node(
        0,
        shardgate_core::route::NodeRows {
            bytes: [row.clone(), row].concat(),
            rows: 2,
        },
    );
    assert_eq!(r.push(&mut b, Time::ZERO), Err(PushError::Overload));
    assert_eq!(r.stats().nodes[0].rows_dropped_on_overload_total, 0);
    r.handle_node_event(0, NodeEvent::Ready { legacy: true }, Time::ZERO);
    r.push(&mut b, Time::ZERO).unwrap();
    r.handle_timeout(Time::from_millis(200));
    assert_eq!(r.poll_output(), None, "nothing goes to a legacy link");
    assert!(r.is_drained());
    assert_eq!(r.stats().nodes[0].rows_dropped_on_unsupported_rpc, 2);
    assert_eq!(r.stats().nodes[0].rows_sent_total, 0);
}

#[test]
fn a_stale_ack_changes_nothing() {
    let mut c = Cluster::new(1, cfg());
    let mut b = c.batch(3);
    c.r.push(&mut b, c.now).unwrap();
    c.now = c.r.poll_timeout().unwrap();
    c.r.handle_timeout(c.now);
    c.collect();
    let real = c.nodes[0].in_flight.as_ref().unwrap().block;
    c.r.handle_node_event(0, NodeEvent::Acked(real + 100), c.now);
    assert!(!c.r.is_drained());
    c.respond();
    assert!(c.r.is_drained());
    assert_eq!(c.r.stats().nodes[0].rows_sent_total, 3);
}

#[test]
fn a_duplicate_only_when_the_link_breaks_after_delivery() {
    // The node stores the block but the connection breaks before the ack: vminsert resends
    // to the next node (wire-protocol.md §4.3).
    let mut c = Cluster::new(2, cfg());
    let mut b = c.batch(20);
    let home0 = b.nodes()[0].rows;
    c.r.push(&mut b, c.now).unwrap();
    c.now = c.r.poll_timeout().unwrap();
    c.r.handle_timeout(c.now);
    c.collect();
    let req = c.nodes[0].in_flight.take().unwrap();
    for row in shardgate_core::wire::row::decode_block(&req.bytes) {
        c.nodes[0].stored.push(row.unwrap().sample.timestamp_ms);
    }
    c.r.handle_node_event(
        0,
        NodeEvent::Failed {
            block: Some(req.block),
            reason: FailReason::Connection,
        },
        c.now,
    );
    c.settle();
    let (copies, _) = c.copies();
    assert_eq!(copies.len(), 20);
    assert_eq!(
        copies.values().filter(|&&k| k == 2).count() as u64,
        home0,
        "exactly the unacknowledged block is duplicated"
    );
}

#[test]
fn fault_knobs_break_the_invariants_they_claim_to() {
    let mut c = Cluster::new(
        2,
        RouterConfig {
            fault: Some(RouterFault::DropOneBlock),
            ..cfg()
        },
    );
    let mut b = c.batch(50);
    c.r.push(&mut b, c.now).unwrap();
    c.advance_ms(300);
    assert!(c.stored_total() < 50);
    assert_eq!(c.r.stats().rows_dropped_total(), 0);

    let mut c = Cluster::new(
        3,
        RouterConfig {
            replication_factor: 2,
            fault: Some(RouterFault::SkipReplica),
            ..cfg()
        },
    );
    let mut b = c.batch(30);
    c.r.push(&mut b, c.now).unwrap();
    c.advance_ms(300);
    assert!(c.copies().0.values().all(|&k| k == 1));
    assert_eq!(c.r.stats().rows_incompletely_replicated_total, 0);

    let mut c = Cluster::new(
        2,
        RouterConfig {
            fault: Some(RouterFault::DuplicateOneBlock),
            ..cfg()
        },
    );
    let mut b = c.batch(30);
    c.r.push(&mut b, c.now).unwrap();
    c.advance_ms(300);
    assert!(c.copies().1, "some node stored a row twice");
}

#[test]
fn the_slowest_node_sheds_rows_when_its_buffer_is_full_with_rf1() {
    let mut c = Cluster::new(
        3,
        RouterConfig {
            node_buffer_limit: 2_000,
            ..cfg()
        },
    );
    // Warm up every link: node 0 answers after 150 ms, the others after 10 ms.
    for _ in 0..30 {
        let mut b = c.batch(30);
        c.r.push(&mut b, c.now).unwrap();
        c.now = c.r.poll_timeout().unwrap();
        c.r.handle_timeout(c.now);
        c.collect();
        c.now = c.now + Duration::from_millis(10);
        for i in 1..3 {
            if let Some(req) = c.nodes[i].in_flight.take() {
                c.r.handle_node_event(i, NodeEvent::Acked(req.block), c.now);
            }
        }
        c.now = c.now + Duration::from_millis(140);
        if let Some(req) = c.nodes[0].in_flight.take() {
            c.r.handle_node_event(0, NodeEvent::Acked(req.block), c.now);
        }
        c.collect();
        assert!(c.nodes.iter().all(|n| n.in_flight.is_none()));
    }
    assert!(c.r.saturation(0) > 1.2 * c.r.saturation(1).max(c.r.saturation(2)));
    assert!(c.r.saturation(1) > 0.0 && c.r.saturation(1) < 0.6);
    let before = c.r.stats().reroutes_total;
    // Far more than node 0's buffer holds.
    let mut b = c.batch(600);
    let home0 = b.nodes()[0].rows;
    let _ = c.r.push(&mut b, c.now);
    let s = c.r.stats();
    assert!(s.reroutes_total > before, "slowness reroute happened");
    assert!(s.nodes[0].rows_rerouted_from_here_total > 0);
    assert!(b.nodes()[0].rows < home0);

    // With RF = 2 it never happens (§6.2).
    let mut c2 = Cluster::new(
        3,
        RouterConfig {
            node_buffer_limit: 2_000,
            replication_factor: 2,
            ..cfg()
        },
    );
    let mut b = c2.batch(600);
    let _ = c2.r.push(&mut b, c2.now);
    assert_eq!(c2.r.stats().reroutes_total, 0);
}
