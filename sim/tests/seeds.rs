//! A range of seeds over every fault mix with every invariant holding: 800 seeds, under a minute
//! in the release build CI uses, cut short (but at least 10 seeds) after four minutes in a slower
//! build. `SHARDGATE_SIM_SEEDS=A..B` picks another range, and the binary
//! (`cargo run --release -p shardgate-sim -- --seeds A..B`) is the way to run thousands.

use std::time::{Duration, Instant};

use shardgate_sim::{run, Overrides, SimConfig};

#[test]
fn seed_range_holds_every_invariant() {
    let range = std::env::var("SHARDGATE_SIM_SEEDS").ok();
    let (start, end) = range
        .as_deref()
        .and_then(|r| r.split_once(".."))
        .map(|(a, b)| (a.parse().expect("start"), b.parse().expect("end")))
        .unwrap_or((1000u64, 1800u64));
    let began = Instant::now();
    let budget = Duration::from_secs(240);
    let mut ran = 0;
    for seed in start..end {
        let config = SimConfig::from_seed(seed, &Overrides::default());
        if let Err(v) = run(&config) {
            panic!("{v}");
        }
        ran += 1;
        if began.elapsed() > budget {
            break;
        }
    }
    eprintln!("{ran} seeds passed in {:?}", began.elapsed());
    assert!(ran >= 10, "only {ran} seeds fit in the time budget");
}
