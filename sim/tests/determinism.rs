//! One seed gives one trace: the same seed run twice produces the same event-trace hash, and a
//! different seed a different one.

use shardgate_sim::{run, FaultLevel, Overrides, SimConfig};

#[test]
fn same_seed_same_trace() {
    let o = Overrides {
        faults: Some(FaultLevel::Heavy),
        nodes: Some(4),
        ..Overrides::default()
    };
    let config = SimConfig::from_seed(42, &o);
    let a = run(&config).unwrap_or_else(|v| panic!("{v}"));
    let b = run(&config).unwrap_or_else(|v| panic!("{v}"));
    assert_eq!(a, b, "two runs of seed 42 differ");
    assert!(a.rows_accepted > 0 && a.events > 100, "{a}");
    let c = run(&SimConfig::from_seed(43, &o)).unwrap_or_else(|v| panic!("{v}"));
    assert_ne!(a.trace, c.trace);
}
