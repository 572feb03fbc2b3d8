//! The checkers can fail: a deliberately broken router is caught by the checker made for it,
//! and the report names the seed.

use shardgate_sim::{run, FaultLevel, Overrides, SimConfig};

fn first_violation(fault: &str, rf: usize) -> shardgate_sim::Violation {
    let o = Overrides {
        faults: Some(FaultLevel::None),
        nodes: Some(3),
        replication_factor: Some(rf),
        router_fault: Some(fault.to_string()),
    };
    for seed in 0..20 {
        if let Err(v) = run(&SimConfig::from_seed(seed, &o)) {
            return v;
        }
    }
    panic!("router fault {fault} went unnoticed for 20 seeds");
}

#[test]
fn dropped_block_is_caught_by_delivery() {
    let v = first_violation("drop-one-block", 1);
    assert_eq!(v.invariant, "delivery", "{v}");
    assert!(v.to_string().contains(&format!("seed={}", v.seed)));
}

#[test]
fn skipped_replica_is_caught_by_replication() {
    let v = first_violation("skip-replica", 2);
    assert_eq!(v.invariant, "replication", "{v}");
    assert!(v.to_string().contains("replay: shardgate-sim --seed"));
}

#[test]
fn healthy_router_passes_the_same_seeds() {
    let o = Overrides {
        faults: Some(FaultLevel::None),
        nodes: Some(3),
        replication_factor: Some(2),
        router_fault: None,
    };
    for seed in 0..3 {
        run(&SimConfig::from_seed(seed, &o)).unwrap_or_else(|v| panic!("{v}"));
    }
}
