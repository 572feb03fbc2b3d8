//! One simulation: the cluster a seed picks, the hosts on a turmoil network, the fault schedule
//! applied between steps, the settle phase, and the checkers at the end.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use rand::Rng;
use shardgate_core::gateway::GatewayConfig;
use shardgate_core::route::router::{RouterConfig, RouterFault};
use shardgate_core::route::{Placement, PlacementKind};
use shardgate_core::Time;

use crate::checkers::{self, Context};
use crate::client_host::{self, ClientParams};
pub use crate::faults::FaultLevel;
use crate::faults::{self, Cut, Fault, FaultKind};
use crate::gateway_host::{self, GatewayParams};
use crate::ledger::{Ledger, Shared};
use crate::rng::stream;
use crate::storage_host::{self, StorageParams, STORAGE_PORT};

/// The core's time: turmoil's simulated time since the start of the simulation.
pub fn now() -> Time {
    Time::from_micros(turmoil::sim_elapsed().unwrap_or_default().as_micros() as u64)
}

/// The tokio instant at which the core's time reaches `t` (at least a millisecond away, so a
/// deadline the core leaves in the past cannot spin the driver within one tick).
pub fn tokio_deadline(t: Time) -> tokio::time::Instant {
    let wait = t.saturating_since(now()).max(Duration::from_millis(1));
    tokio::time::Instant::now() + wait
}

/// What the command line narrows; everything else comes from the seed.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub faults: Option<FaultLevel>,
    pub nodes: Option<usize>,
    pub replication_factor: Option<usize>,
    /// A deliberately broken router (test-only knob), by name: "drop-one-block", "skip-replica".
    pub router_fault: Option<String>,
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub gateways: usize,
    pub clients: usize,
    pub series_per_client: usize,
    pub replication_factor: usize,
    pub faults: FaultLevel,
    pub drop_samples_on_overload: bool,
    pub disable_slowness_rerouting: bool,
    pub node_buffer_limit: usize,
    pub memory_budget: usize,
    /// Clients send during [0, load).
    pub load: Duration,
    /// Longest wait after the load for everything accepted to be acked.
    pub max_settle: Duration,
    pub tick: Duration,
    pub router_fault: Option<String>,
    /// Print every trace event to stderr.
    pub echo_trace: bool,
}

impl SimConfig {
    pub fn from_seed(seed: u64, o: &Overrides) -> SimConfig {
        let mut rng = stream(seed, "config");
        let nodes = o.nodes.unwrap_or_else(|| rng.gen_range(1..=8)).clamp(1, 8);
        let rf = [1, 1, 2, 3][rng.gen_range(0..4)];
        let faults = match rng.gen_range(0..10) {
            0..=1 => FaultLevel::None,
            2..=5 => FaultLevel::Light,
            _ => FaultLevel::Heavy,
        };
        let node_buffer_limit = [8 << 10, 32 << 10, 128 << 10][rng.gen_range(0..3)];
        SimConfig {
            seed,
            nodes,
            gateways: if rng.gen_bool(0.3) { 2 } else { 1 },
            clients: rng.gen_range(1..=4),
            series_per_client: rng.gen_range(5..=60),
            replication_factor: o.replication_factor.unwrap_or(rf).clamp(1, nodes),
            faults: o.faults.unwrap_or(faults),
            drop_samples_on_overload: rng.gen_bool(0.15),
            disable_slowness_rerouting: rng.gen_bool(0.5),
            node_buffer_limit,
            memory_budget: node_buffer_limit * rng.gen_range(1..=2 * nodes),
            load: Duration::from_secs(rng.gen_range(5..=15)),
            max_settle: Duration::from_secs(120),
            tick: Duration::from_millis(5),
            router_fault: o.router_fault.clone(),
            echo_trace: false,
        }
    }

    pub fn storage_nodes(&self) -> Vec<String> {
        (0..self.nodes)
            .map(|i| format!("node{i}:{STORAGE_PORT}"))
            .collect()
    }

    pub fn gateway_config(&self) -> GatewayConfig {
        let mut c = GatewayConfig::new(self.storage_nodes());
        c.router = RouterConfig {
            replication_factor: self.replication_factor,
            node_buffer_limit: self.node_buffer_limit,
            memory_budget: self.memory_budget,
            drop_samples_on_overload: self.drop_samples_on_overload,
            disable_slowness_rerouting: self.disable_slowness_rerouting,
            fault: router_fault(self.router_fault.as_deref()),
            ..RouterConfig::default()
        };
        c
    }

    /// The budget the checker holds the gateway to: the router raises a budget below one
    /// block's size to that size.
    pub fn effective_budget(&self) -> u64 {
        self.memory_budget.max(self.node_buffer_limit) as u64
    }
}

/// The deliberately broken router a test asks for by name.
pub fn router_fault(name: Option<&str>) -> Option<RouterFault> {
    match name? {
        "drop-one-block" => Some(RouterFault::DropOneBlock),
        "skip-replica" => Some(RouterFault::SkipReplica),
        "duplicate-one-block" => Some(RouterFault::DuplicateOneBlock),
        _ => None,
    }
}

/// The end of a passing run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    pub seed: u64,
    pub steps: u64,
    pub rows_accepted: u64,
    pub rows_acked: u64,
    pub rerouted: u64,
    pub dropped: u64,
    pub faults: usize,
    pub events: u64,
    pub trace: u64,
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed={} steps={} rows_accepted={} rows_acked={} rerouted={} trace={:016x}",
            self.seed, self.steps, self.rows_accepted, self.rows_acked, self.rerouted, self.trace
        )
    }
}

/// An invariant that did not hold, with what led up to it.
#[derive(Clone, Debug)]
pub struct Violation {
    pub seed: u64,
    pub invariant: String,
    pub detail: String,
    pub last_events: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "VIOLATION seed={} invariant={}",
            self.seed, self.invariant
        )?;
        writeln!(f, "  {}", self.detail)?;
        writeln!(f, "  last events:")?;
        for e in &self.last_events {
            writeln!(f, "    {e}")?;
        }
        write!(f, "  replay: shardgate-sim --seed {}", self.seed)
    }
}

/// Run one simulation. A panic anywhere (core or glue) is reported as a violation too.
pub fn run(config: &SimConfig) -> Result<RunSummary, Violation> {
    let ledger: Shared = Rc::new(RefCell::new(Ledger::new(config.nodes, config.gateways)));
    ledger.borrow_mut().trace.echo = config.echo_trace;
    let l2 = ledger.clone();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| simulate(config, &l2)));
    let l = ledger.borrow();
    let violation = |invariant: &str, detail: String| Violation {
        seed: config.seed,
        invariant: invariant.to_string(),
        detail,
        last_events: l.trace.last_events(),
    };
    let steps = match outcome {
        Ok(Ok(steps)) => steps,
        Ok(Err(e)) => return Err(violation("simulation", e)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(violation("panic", msg));
        }
    };
    if let Some(a) = l.anomalies.first() {
        return Err(violation(
            "protocol",
            format!("{} anomalies, first: {a}", l.anomalies.len()),
        ));
    }
    let placement = Placement::new(&config.storage_nodes(), PlacementKind::Rendezvous, 0);
    let faults = fault_schedule(config);
    let cx = Context {
        ledger: &l,
        placement: &placement,
        replication_factor: config.replication_factor,
        memory_budget: config.effective_budget(),
        healthy: faults.is_empty(),
        slowness_rerouting: !config.disable_slowness_rerouting && config.replication_factor <= 1,
    };
    checkers::check_all(&cx).map_err(|f| violation(f.invariant, f.detail))?;
    let counters = l.counters();
    Ok(RunSummary {
        seed: config.seed,
        steps,
        rows_accepted: l.accepted.len() as u64,
        rows_acked: l
            .accepted
            .keys()
            .filter(|r| l.acked.contains_key(r))
            .count() as u64,
        rerouted: counters.rerouted_rows,
        dropped: counters.dropped(),
        faults: faults.len(),
        events: l.trace.events(),
        trace: l.trace.hash(),
    })
}

pub fn fault_schedule(config: &SimConfig) -> Vec<Fault> {
    faults::schedule(
        &mut stream(config.seed, "faults"),
        config.faults,
        config.nodes,
        config.gateways,
        Duration::from_secs(1),
        config.load,
    )
}

fn node_name(i: usize) -> String {
    format!("node{i}")
}

fn gateway_name(i: usize) -> String {
    format!("gw{i}")
}

/// Build the world and step it to the end; returns the number of steps.
fn simulate(config: &SimConfig, ledger: &Shared) -> Result<u64, String> {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(config.load + config.max_settle + Duration::from_secs(10))
        .tick_duration(config.tick)
        .min_message_latency(Duration::from_micros(200))
        .max_message_latency(Duration::from_millis(3))
        .tcp_capacity(1 << 16)
        .build_with_rng(Box::new(stream(config.seed, "net")));

    let mut rng = stream(config.seed, "storage");
    for i in 0..config.nodes {
        let p = StorageParams {
            node: i,
            name: node_name(i).into(),
            sync_interval: Duration::from_millis(rng.gen_range(20..500)),
        };
        let l = ledger.clone();
        sim.host(node_name(i), move || {
            storage_host::run(l.clone(), p.clone())
        });
    }
    for i in 0..config.gateways {
        let p = GatewayParams {
            index: i,
            name: gateway_name(i).into(),
            config: config.gateway_config(),
        };
        let l = ledger.clone();
        sim.host(gateway_name(i), move || {
            gateway_host::run(l.clone(), p.clone())
        });
    }
    for i in 0..config.clients {
        let p = ClientParams {
            index: i,
            seed: config.seed,
            gateways: (0..config.gateways).map(gateway_name).collect(),
            load_until: config.load,
            series: config.series_per_client,
        };
        let l = ledger.clone();
        sim.client(format!("client{i}"), client_host::run(l, p));
    }

    // Fault starts and ends, in time order (ends first at equal times, by schedule order).
    let schedule = fault_schedule(config);
    let mut edges: Vec<(Duration, bool, usize)> = Vec::new();
    for (i, f) in schedule.iter().enumerate() {
        edges.push((f.start, true, i));
        edges.push((f.end, false, i));
    }
    edges.sort_by_key(|&(t, start, i)| (t, start, i));
    let mut next_edge = 0;

    let mut steps = 0u64;
    let mut clients_done = false;
    let deadline = config.load + config.max_settle;
    loop {
        let done = sim.step().map_err(|e| format!("host failed: {e}"))?;
        steps += 1;
        clients_done |= done;
        let t = sim.elapsed();
        while next_edge < edges.len() && edges[next_edge].0 <= t {
            let (_, start, i) = edges[next_edge];
            apply(&mut sim, ledger, &schedule[i], start);
            next_edge += 1;
        }
        if clients_done && next_edge == edges.len() && steps & 15 == 0 && settled(ledger) {
            break;
        }
        if t >= deadline {
            break;
        }
    }
    let mut l = ledger.borrow_mut();
    l.load_done = true;
    l.event_at(
        sim.elapsed(),
        "world",
        format_args!("end after {steps} steps"),
    );
    Ok(steps)
}

/// Everything accepted is acked or counted as dropped, and nothing is buffered.
fn settled(ledger: &Shared) -> bool {
    let l = ledger.borrow();
    let c = l.counters();
    let unacked = l
        .accepted
        .keys()
        .filter(|r| !l.acked.contains_key(r))
        .count() as u64;
    unacked <= c.dropped()
        && c.buffered_bytes == 0
        && l.current_gateways.values().all(|g| g.buffered_bytes == 0)
        && !l.restart_gateway.iter().any(|&r| r)
}

fn apply(sim: &mut turmoil::Sim<'_>, ledger: &Shared, f: &Fault, start: bool) {
    let mut l = ledger.borrow_mut();
    l.event_at(
        sim.elapsed(),
        "faults",
        format_args!("{} {:?}", if start { "start" } else { "end" }, f.kind),
    );
    match f.kind {
        FaultKind::Crash { node } => {
            if start {
                if !l.node_faults[node].crashed {
                    sim.crash(node_name(node));
                    l.node_faults[node].crashed = true;
                    let lost = l.logs[node].crash() as u64;
                    l.lost_in_crash += lost;
                }
            } else if l.node_faults[node].crashed {
                l.node_faults[node].crashed = false;
                drop(l);
                sim.bounce(node_name(node));
            }
        }
        FaultKind::Partition { node, gateway, cut } => {
            let (n, g) = (node_name(node), gateway_name(gateway));
            match (cut, start) {
                (Cut::Hold, true) => sim.hold(g, n),
                (Cut::Hold, false) => sim.release(g, n),
                (Cut::Both, true) => sim.partition(g, n),
                (Cut::ToNode, true) => sim.partition_oneway(g, n),
                (Cut::FromNode, true) => sim.partition_oneway(n, g),
                (_, false) => {
                    sim.repair(g, n);
                    // Segments were lost: those connections are dead, as TCP's user timeout
                    // would have found. The node closes its side; the gateway sees the reset.
                    l.node_faults[node].reset_epoch += 1;
                }
            }
        }
        FaultKind::Latency {
            node,
            gateway,
            latency,
        } => {
            let (n, g) = (node_name(node), gateway_name(gateway));
            if start {
                sim.set_link_latency(g, n, latency);
            } else {
                sim.set_link_latency(g, n, Duration::from_millis(1));
            }
        }
        FaultKind::SlowAcks { node, delay } => {
            l.node_faults[node].slow_ack = if start { delay } else { Duration::ZERO };
        }
        FaultKind::ReadOnly { node } => l.node_faults[node].read_only = start,
        FaultKind::DropBeforeAck { node, blocks } => {
            l.node_faults[node].drop_before_ack = if start { blocks } else { 0 };
        }
        FaultKind::CutMidBlock { node, blocks } => {
            l.node_faults[node].cut_mid_block = if start { blocks } else { 0 };
        }
        FaultKind::GatewayRestart { gateway } => {
            if start {
                l.restart_gateway[gateway] = true;
            }
        }
    }
}
