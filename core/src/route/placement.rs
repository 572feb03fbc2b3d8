//! Which storage node a series belongs to (spec: sharding-and-replication.md §2–§3).
//!
//! Two selections exist. Rendezvous (highest random weight) is what vminsert has done since
//! v1.73 and is the default. Jump consistent hash is what vminsert ≤ v1.72 did; operators who
//! replace such a vminsert in a cluster that still has old ones pick it with
//! `-storageNode.placement=jump` so that both send a series to the same node.

use xxhash_rust::xxh64::xxh64;

/// XOR-ed onto every series hash by a vminsert that is the lower level of a multi-level cluster
/// (one with `-clusternativeListenAddr` set), so that the two levels do not shard alike.
pub const LOWER_LEVEL_SEED: u64 = 0xabcd_ef01_2345_6789;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementKind {
    /// Rendezvous hashing over the storage nodes sorted bytewise: today's vminsert.
    Rendezvous,
    /// Jump consistent hash over the storage nodes in command-line order: vminsert ≤ v1.72.
    Jump,
}

impl std::str::FromStr for PlacementKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rendezvous" => Ok(PlacementKind::Rendezvous),
            "jump" => Ok(PlacementKind::Jump),
            other => Err(format!(
                "unknown placement {other:?}; want rendezvous or jump"
            )),
        }
    }
}

/// The storage nodes in index order and how to pick one for a series hash.
#[derive(Clone, Debug)]
pub struct Placement {
    kind: PlacementKind,
    nodes: Vec<String>,
    node_hashes: Vec<u64>,
    seed: u64,
}

impl Placement {
    /// `storage_nodes` are the `-storageNode` strings exactly as given: they are hashed as
    /// written (before any default port is added), so `10.0.0.3` and `10.0.0.3:8400` differ.
    pub fn new(storage_nodes: &[String], kind: PlacementKind, seed: u64) -> Placement {
        let mut nodes = storage_nodes.to_vec();
        if kind == PlacementKind::Rendezvous {
            nodes.sort();
        }
        let node_hashes = nodes.iter().map(|n| xxh64(n.as_bytes(), 0)).collect();
        Placement {
            kind,
            nodes,
            node_hashes,
            seed,
        }
    }

    pub fn kind(&self) -> PlacementKind {
        self.kind
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Number of storage nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The storage nodes in index order: node `i` everywhere else is `nodes()[i]`.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The home node of a series hash: where its rows go while that node is healthy.
    pub fn primary(&self, hash: u64) -> usize {
        if self.nodes.len() <= 1 {
            return 0;
        }
        match self.kind {
            PlacementKind::Rendezvous => self.rendezvous(hash, &NodeSet::new(self.len())),
            PlacementKind::Jump => jump_hash(hash ^ self.seed, self.nodes.len()),
        }
    }

    /// The node for `hash` among those not in `exclude`. When every node is excluded the
    /// exclusions are ignored, as vminsert does.
    pub fn select(&self, hash: u64, exclude: &NodeSet) -> usize {
        let n = self.nodes.len();
        if n <= 1 {
            return 0;
        }
        let none = NodeSet::new(n);
        let exclude = if exclude.count() >= n { &none } else { exclude };
        match self.kind {
            PlacementKind::Rendezvous => self.rendezvous(hash, exclude),
            // Jump hash has no notion of exclusion; walking forward from the home node keeps
            // a series' reroute target stable while the set of unhealthy nodes is.
            PlacementKind::Jump => {
                let home = jump_hash(hash ^ self.seed, n);
                (0..n)
                    .map(|k| (home + k) % n)
                    .find(|&i| !exclude.contains(i))
                    .unwrap_or(home)
            }
        }
    }

    fn rendezvous(&self, hash: u64, exclude: &NodeSet) -> usize {
        let h = hash ^ self.seed;
        let mut best = 0u64;
        let mut idx = 0usize;
        for (i, &nh) in self.node_hashes.iter().enumerate() {
            if exclude.contains(i) {
                continue;
            }
            let score = mix(nh ^ h);
            // Strictly greater: ties go to the lower index, as in vminsert.
            if score > best {
                best = score;
                idx = i;
            }
        }
        idx
    }

    /// The nodes that hold the copies of a series whose home is `primary`: the home node and
    /// the ones following it in index order. `replication_factor` is clamped to `1..=N`.
    pub fn replicas(
        &self,
        primary: usize,
        replication_factor: usize,
    ) -> impl Iterator<Item = usize> {
        let n = self.nodes.len().max(1);
        let rf = replication_factor.clamp(1, n);
        (0..rf).map(move |k| (primary + k) % n)
    }
}

/// The hash of a shard key (the series key or a raw metric name).
pub fn series_hash(key: &[u8]) -> u64 {
    xxh64(key, 0)
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Lamping and Veach's jump consistent hash: the bucket in `0..buckets` for `key`.
pub fn jump_hash(mut key: u64, buckets: usize) -> usize {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as usize
}

/// A set of node indexes, for exclusions while rerouting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSet {
    bits: Vec<u64>,
    count: usize,
}

impl NodeSet {
    pub fn new(nodes: usize) -> NodeSet {
        NodeSet {
            bits: vec![0; nodes.div_ceil(64)],
            count: 0,
        }
    }

    pub fn insert(&mut self, i: usize) {
        let (w, b) = (i / 64, i % 64);
        if w >= self.bits.len() {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & (1 << b) == 0 {
            self.bits[w] |= 1 << b;
            self.count += 1;
        }
    }

    pub fn contains(&self, i: usize) -> bool {
        self.bits
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn clear(&mut self) {
        self.bits.iter_mut().for_each(|w| *w = 0);
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const THREE: [&str; 3] = ["10.0.0.1:8400", "10.0.0.2:8400", "10.0.0.3:8400"];

    #[test]
    fn node_hashes_match_spec() {
        assert_eq!(xxh64(b"", 0), 0xef46db3751d8e999);
        assert_eq!(xxh64(b"10.0.0.1:8400", 0), 0x1bff2368e6d4071c);
        assert_eq!(xxh64(b"10.0.0.3", 0), 0x8dd2078ad41e35d0);
    }

    #[test]
    fn example_a_text_import() {
        let key = unhex("00000000 00000000 0000 0002 7570 0003 6a6f62 0004 6e6f6465 0008 696e7374616e6365 000a 686f7374313a39313030");
        let h = series_hash(&key);
        assert_eq!(h, 0xcc5991c92f00ca27);
        assert_eq!(mix(0x1bff2368e6d4071c ^ h), 0x3267fe606be12d1e);
        let p = Placement::new(&nodes(&THREE), PlacementKind::Rendezvous, 0);
        assert_eq!(p.primary(h), 1);
        assert_eq!(p.replicas(1, 3).collect::<Vec<_>>(), vec![1, 2, 0]);
        let mut down = NodeSet::new(3);
        down.insert(1);
        assert_eq!(p.select(h, &down), 2, "example E: rerouted to node 2");
    }

    #[test]
    fn example_c_lower_level_seed() {
        let key = unhex("00000003 00000001 0000 0016 6e6f64655f6370755f7365636f6e64735f746f74616c 0003 637075 0001 30 0004 6d6f6465 0004 69646c65 0008 696e7374616e6365 000a 686f7374373a39313030 0003 6a6f62 0004 6e6f6465");
        let h = series_hash(&key);
        assert_eq!(h, 0x78660c27b15e7357);
        assert_eq!(
            Placement::new(&nodes(&THREE), PlacementKind::Rendezvous, 0).primary(h),
            1
        );
        assert_eq!(
            Placement::new(&nodes(&THREE), PlacementKind::Rendezvous, LOWER_LEVEL_SEED).primary(h),
            0
        );
    }

    #[test]
    fn example_d_port_spelling_and_sorting() {
        let h = 0x7a056b438046cf1c;
        assert_eq!(
            Placement::new(&nodes(&THREE), PlacementKind::Rendezvous, 0).primary(h),
            2
        );
        let p = Placement::new(
            &nodes(&["10.0.0.3", "10.0.0.1:8400", "10.0.0.2:8400"]),
            PlacementKind::Rendezvous,
            0,
        );
        assert_eq!(p.nodes()[2], "10.0.0.3");
        assert_eq!(p.primary(h), 1);
    }

    #[test]
    fn all_excluded_means_none_excluded() {
        let p = Placement::new(&nodes(&THREE), PlacementKind::Rendezvous, 0);
        let mut all = NodeSet::new(3);
        (0..3).for_each(|i| all.insert(i));
        assert_eq!(p.select(0xcc5991c92f00ca27, &all), 1);
    }

    #[test]
    fn jump_hash_edges_and_spread() {
        // Key 0 jumps straight past any bucket count from bucket 0; one bucket is always 0.
        assert_eq!(jump_hash(0, 7), 0);
        assert_eq!(jump_hash(u64::MAX, 1), 0);
        let spread: Vec<usize> = (0..1000u64)
            .map(|k| jump_hash(xxh64(&k.to_be_bytes(), 0), 10))
            .collect();
        for b in 0..10 {
            let c = spread.iter().filter(|&&x| x == b).count();
            assert!((50..150).contains(&c), "bucket {b} got {c}");
        }
    }
}
