//! Random sequences of pushes, acks, failures, read-only replies, recoveries and timeouts
//! against a fake cluster; afterwards every accepted row is accounted for.

mod router_util;

use proptest::prelude::*;
use router_util::{Cluster, Mode};
use shardgate_core::route::{Batch, FailReason, NodeEvent, PushError, RouterConfig, RouterFault};

#[derive(Clone, Debug)]
enum Op {
    Push(usize),
    Respond,
    SetMode(usize, Mode),
    Break(usize),
    Reconnect(usize),
    Advance(u64),
}

fn op(nodes: usize) -> impl Strategy<Value = Op> {
    let mode = prop_oneof![
        3 => Just(Mode::Up),
        1 => Just(Mode::ReadOnly),
        1 => Just(Mode::Down),
        1 => Just(Mode::Stall),
    ];
    prop_oneof![
        4 => (1usize..60).prop_map(Op::Push),
        4 => Just(Op::Respond),
        2 => (0..nodes, mode).prop_map(|(n, m)| Op::SetMode(n, m)),
        1 => (0..nodes).prop_map(Op::Break),
        2 => (0..nodes).prop_map(Op::Reconnect),
        3 => prop_oneof![Just(50u64), Just(200), Just(1_000), Just(31_000)].prop_map(Op::Advance),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    nodes: usize,
    rf: usize,
    limit: usize,
    budget: usize,
    drop_on_overload: bool,
    no_reroute: bool,
    shutdown: bool,
    ops: Vec<Op>,
    fault: Option<RouterFault>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..6).prop_flat_map(|nodes| {
        (
            Just(nodes),
            1usize..4,
            prop_oneof![Just(200usize), Just(1_000), Just(100_000)],
            prop_oneof![Just(300usize), Just(2_500), Just(1 << 20)],
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2),
            any::<bool>(),
            prop::collection::vec(op(nodes), 1..80),
        )
            .prop_map(
                |(nodes, rf, limit, budget, drop_on_overload, no_reroute, shutdown, ops)| Case {
                    nodes,
                    rf,
                    limit,
                    budget,
                    drop_on_overload,
                    no_reroute,
                    shutdown,
                    ops,
                    fault: None,
                },
            )
    })
}

fn run(case: &Case) -> Result<(), TestCaseError> {
    let config = RouterConfig {
        replication_factor: case.rf,
        node_buffer_limit: case.limit,
        memory_budget: case.budget,
        drop_samples_on_overload: case.drop_on_overload,
        disable_rerouting_on_unavailable: case.no_reroute,
        fault: case.fault,
        ..RouterConfig::default()
    };
    let budget = case.budget.max(case.limit);
    let mut c = Cluster::new(case.nodes, config);
    let mut waiting: Vec<Batch> = Vec::new();
    let push_all = |c: &mut Cluster, waiting: &mut Vec<Batch>| {
        for b in waiting.iter_mut() {
            match c.r.push(b, c.now) {
                Ok(()) => prop_assert!(b.is_empty()),
                Err(PushError::Overload) => prop_assert!(!b.is_empty()),
                Err(PushError::ShuttingDown) => {}
            }
        }
        waiting.retain(|b| !b.is_empty());
        Ok(())
    };
    for op in &case.ops {
        match *op {
            Op::Push(n) => {
                waiting.push(c.batch(n));
                push_all(&mut c, &mut waiting)?;
            }
            Op::Respond => {
                c.collect();
                c.respond();
            }
            Op::SetMode(n, m) => c.nodes[n].mode = m,
            Op::Break(n) => {
                c.collect();
                let block = c.nodes[n].in_flight.take().map(|r| r.block);
                c.r.handle_node_event(
                    n,
                    NodeEvent::Failed {
                        block,
                        reason: FailReason::Connection,
                    },
                    c.now,
                );
            }
            Op::Reconnect(n) => {
                if c.nodes[n].mode != Mode::Down {
                    c.r.handle_node_event(n, NodeEvent::Ready { legacy: false }, c.now);
                }
            }
            Op::Advance(ms) => {
                c.advance_ms(ms);
                push_all(&mut c, &mut waiting)?;
            }
        }
        c.collect();
        prop_assert!(
            c.r.buffered_bytes() <= budget,
            "{} > {}",
            c.r.buffered_bytes(),
            budget
        );
    }

    // Heal everything; stalled requests get their answer.
    for i in 0..case.nodes {
        c.nodes[i].mode = Mode::Up;
        c.r.handle_node_event(i, NodeEvent::Ready { legacy: false }, c.now);
    }
    if case.shutdown {
        c.r.begin_shutdown(c.now);
        c.settle();
    } else {
        for _ in 0..2_000 {
            c.advance_ms(1_000);
            push_all(&mut c, &mut waiting)?;
            if waiting.is_empty() && c.r.is_drained() && !c.r.node_gauges(0).is_read_only {
                break;
            }
        }
        c.advance_ms(40_000); // let read-only nodes be probed back
        prop_assert!(
            waiting.is_empty(),
            "rows still refused with every node healthy"
        );
        for i in 0..case.nodes {
            prop_assert!(c.r.is_ready(i), "node {} not ready after healing", i);
        }
    }
    prop_assert!(c.r.is_drained(), "rows left behind");
    prop_assert_eq!(c.r.buffered_bytes(), 0);

    let left: u64 = waiting.iter().map(|b| b.rows()).sum();
    let accepted = c.pushed - left;
    let (copies, dup) = c.copies();
    prop_assert!(!dup, "a node stored a row twice");
    let s = c.r.stats();
    prop_assert_eq!(
        copies.len() as u64 + s.rows_dropped_total(),
        accepted,
        "stored + dropped != accepted"
    );
    let rf = case.rf.clamp(1, case.nodes);
    let short: u64 = copies.values().filter(|&&k| k < rf).count() as u64;
    prop_assert!(copies.values().all(|&k| k <= rf));
    prop_assert!(
        short <= s.rows_incompletely_replicated_total,
        "{} rows under-replicated but {} counted",
        short,
        s.rows_incompletely_replicated_total
    );
    let sent: u64 = s.nodes.iter().map(|n| n.rows_sent_total).sum();
    prop_assert_eq!(sent, copies.values().map(|&k| k as u64).sum::<u64>());
    let pushed: u64 = s.nodes.iter().map(|n| n.rows_pushed_total).sum();
    prop_assert_eq!(pushed, accepted);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn rows_are_never_lost_or_duplicated_except_as_counted(case in case()) {
        run(&case)?;
    }
}

#[test]
fn the_checks_catch_each_deliberate_bug() {
    for (fault, rf) in [
        (RouterFault::DropOneBlock, 1),
        (RouterFault::SkipReplica, 2),
        (RouterFault::DuplicateOneBlock, 1),
    ] {
        let case = Case {
            nodes: 3,
            rf,
            limit: 100_000,
            budget: 1 << 20,
            drop_on_overload: false,
            no_reroute: false,
            shutdown: false,
            ops: vec![Op::Push(40), Op::Advance(200), Op::Respond, Op::Push(40)],
            fault: Some(fault),
        };
        assert!(run(&case).is_err(), "{fault:?} went unnoticed");
        let healthy = Case {
            fault: None,
            ..case
        };
        run(&healthy).unwrap();
    }
}
