//! Which faults a seed injects, and when. The schedule is drawn from the "faults" stream up
//! front, so the whole run is fixed by the seed before the first step.

use std::time::Duration;

use rand::Rng;

use crate::rng::SimRng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultLevel {
    None,
    Light,
    Heavy,
}

impl std::str::FromStr for FaultLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(FaultLevel::None),
            "light" => Ok(FaultLevel::Light),
            "heavy" => Ok(FaultLevel::Heavy),
            o => Err(format!(
                "unknown fault mix {o:?}; want none, light or heavy"
            )),
        }
    }
}

/// How a partition between a gateway and a storage node behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Both ways, segments held and delivered on repair (a short outage TCP rides out).
    Hold,
    /// Both ways, segments lost: the connection is dead once the link heals.
    Both,
    /// Gateway → node segments lost.
    ToNode,
    /// Node → gateway segments lost (blocks arrive, replies do not).
    FromNode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The node's software stops (its unsynced log is lost) and restarts at the end.
    Crash { node: usize },
    Partition {
        node: usize,
        gateway: usize,
        cut: Cut,
    },
    /// Fixed extra latency on a gateway–node link.
    Latency {
        node: usize,
        gateway: usize,
        latency: Duration,
    },
    /// The node delays every reply.
    SlowAcks { node: usize, delay: Duration },
    /// The node answers "read-only" and stores nothing.
    ReadOnly { node: usize },
    /// The node closes the connection instead of replying to its next blocks.
    DropBeforeAck { node: usize, blocks: u32 },
    /// The gateway's connection is cut halfway through writing its next blocks.
    CutMidBlock { node: usize, blocks: u32 },
    /// The gateway drains, stops and starts again with a fresh core.
    GatewayRestart { gateway: usize },
}

impl FaultKind {
    /// The storage node this fault makes unable to take data while it lasts, if any.
    pub fn node_down(&self) -> Option<usize> {
        match *self {
            FaultKind::Crash { node }
            | FaultKind::ReadOnly { node }
            | FaultKind::Partition { node, .. } => Some(node),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub start: Duration,
    pub end: Duration,
    pub kind: FaultKind,
}

/// Draw the faults of one run: all start after `warmup` and end by `heal`.
pub fn schedule(
    rng: &mut SimRng,
    level: FaultLevel,
    nodes: usize,
    gateways: usize,
    warmup: Duration,
    heal: Duration,
) -> Vec<Fault> {
    let (count, max_len) = match level {
        FaultLevel::None => return Vec::new(),
        FaultLevel::Light => (rng.gen_range(1..=3), Duration::from_secs(3)),
        FaultLevel::Heavy => (rng.gen_range(4..=12), Duration::from_secs(8)),
    };
    let span = heal.saturating_sub(warmup).as_millis() as u64;
    let mut out = Vec::new();
    for _ in 0..count {
        let node = rng.gen_range(0..nodes);
        let gateway = rng.gen_range(0..gateways);
        let pick = if level == FaultLevel::Light {
            rng.gen_range(0..5)
        } else {
            rng.gen_range(0..9)
        };
        let kind = match pick {
            0 => FaultKind::Crash { node },
            1 => FaultKind::Partition {
                node,
                gateway,
                cut: Cut::Hold,
            },
            2 => FaultKind::Latency {
                node,
                gateway,
                latency: Duration::from_millis(rng.gen_range(20..400)),
            },
            3 => FaultKind::SlowAcks {
                node,
                delay: Duration::from_millis(rng.gen_range(50..1500)),
            },
            4 => FaultKind::ReadOnly { node },
            5 => FaultKind::Partition {
                node,
                gateway,
                cut: [Cut::Both, Cut::ToNode, Cut::FromNode][rng.gen_range(0..3)],
            },
            6 => FaultKind::DropBeforeAck {
                node,
                blocks: rng.gen_range(1..4),
            },
            7 => FaultKind::CutMidBlock {
                node,
                blocks: rng.gen_range(1..4),
            },
            _ => FaultKind::GatewayRestart { gateway },
        };
        let len = rng.gen_range(200..=max_len.as_millis() as u64);
        let start = rng.gen_range(0..span.saturating_sub(len).max(1));
        let start = warmup + Duration::from_millis(start);
        let end = (start + Duration::from_millis(len)).min(heal);
        out.push(Fault { start, end, kind });
    }
    if level == FaultLevel::Light {
        // Light: never two nodes unavailable at once.
        let mut kept: Vec<Fault> = Vec::new();
        for f in out {
            let clash = f.kind.node_down().is_some()
                && kept
                    .iter()
                    .any(|k| k.kind.node_down().is_some() && k.start < f.end && f.start < k.end);
            if !clash {
                kept.push(f);
            }
        }
        out = kept;
    }
    out.sort_by_key(|f| (f.start, f.end));
    out
}

/// Most storage nodes unavailable at the same moment under `faults`.
pub fn max_nodes_down(faults: &[Fault]) -> usize {
    let mut best = 0;
    for f in faults {
        let mut down: Vec<usize> = faults
            .iter()
            .filter(|g| g.start <= f.start && f.start < g.end)
            .filter_map(|g| g.kind.node_down())
            .collect();
        down.sort_unstable();
        down.dedup();
        best = best.max(down.len());
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;

    #[test]
    fn schedule_is_fixed_by_the_seed_and_heals_in_time() {
        let (w, h) = (Duration::from_secs(1), Duration::from_secs(20));
        let a = schedule(&mut stream(3, "faults"), FaultLevel::Heavy, 4, 2, w, h);
        let b = schedule(&mut stream(3, "faults"), FaultLevel::Heavy, 4, 2, w, h);
        assert_eq!(a, b);
        assert!(a.len() >= 4);
        assert!(a
            .iter()
            .all(|f| f.start >= w && f.end <= h && f.start <= f.end));
        assert!(schedule(&mut stream(3, "faults"), FaultLevel::None, 4, 2, w, h).is_empty());
    }

    #[test]
    fn light_faults_keep_one_node_down_at_most() {
        let (w, h) = (Duration::from_secs(1), Duration::from_secs(6));
        for seed in 0..200 {
            let f = schedule(&mut stream(seed, "faults"), FaultLevel::Light, 3, 1, w, h);
            assert!(max_nodes_down(&f) <= 1, "seed {seed}: {f:?}");
        }
    }

    #[test]
    fn max_nodes_down_counts_overlaps() {
        let s = Duration::from_secs;
        let f = |a, b, node| Fault {
            start: s(a),
            end: s(b),
            kind: FaultKind::Crash { node },
        };
        assert_eq!(max_nodes_down(&[f(1, 5, 0), f(2, 3, 1), f(6, 7, 2)]), 2);
        assert_eq!(max_nodes_down(&[f(1, 2, 0), f(2, 3, 1)]), 1);
    }
}
