//! `shardgate-sim --seed N` runs one simulation; `--seeds A..B` runs a range. Any invariant
//! violation prints the seed, the invariant and the last events, and exits non-zero.

use std::process::ExitCode;

use shardgate_sim::{run, FaultLevel, Overrides, SimConfig};

const USAGE: &str =
    "usage: shardgate-sim (--seed N | --seeds A..B) [--faults none|light|heavy] [--nodes K] \
                     [--rf R] [--router-fault drop-one-block|skip-replica] [-v] [--trace]";

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<ExitCode, String> {
    let mut seeds: Option<std::ops::Range<u64>> = None;
    let mut o = Overrides::default();
    let mut verbose = false;
    let mut echo = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--seed" => {
                let s: u64 = val()?.parse().map_err(|e| format!("--seed: {e}"))?;
                seeds = Some(s..s + 1);
            }
            "--seeds" => {
                let v = val()?;
                let (a, b) = v.split_once("..").ok_or("--seeds wants A..B")?;
                let a: u64 = a.parse().map_err(|e| format!("--seeds: {e}"))?;
                let b: u64 = b.parse().map_err(|e| format!("--seeds: {e}"))?;
                seeds = Some(a..b);
            }
            "--faults" => o.faults = Some(val()?.parse::<FaultLevel>()?),
            "--nodes" => {
                let n: usize = val()?.parse().map_err(|e| format!("--nodes: {e}"))?;
                if !(1..=8).contains(&n) {
                    return Err("--nodes must be 1 to 8".into());
                }
                o.nodes = Some(n);
            }
            "--rf" => {
                o.replication_factor = Some(val()?.parse().map_err(|e| format!("--rf: {e}"))?)
            }
            "--router-fault" => o.router_fault = Some(val()?),
            "-v" | "--verbose" => verbose = true,
            "--trace" => echo = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let seeds = seeds.ok_or("give --seed or --seeds")?;
    let single = seeds.end - seeds.start == 1;
    let (mut passed, mut steps, mut rows) = (0u64, 0u64, 0u64);
    let started = std::time::Instant::now();
    for seed in seeds.clone() {
        let mut config = SimConfig::from_seed(seed, &o);
        config.echo_trace = echo;
        if verbose {
            eprintln!("{config:?}");
        }
        match run(&config) {
            Ok(s) => {
                passed += 1;
                steps += s.steps;
                rows += s.rows_accepted;
                if single || verbose {
                    println!("{s}");
                }
            }
            Err(v) => {
                println!("{v}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    if !single {
        println!(
            "seeds={}..{} passed={passed} steps={steps} rows_accepted={rows} elapsed={:.1}s",
            seeds.start,
            seeds.end,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}
