//! Properties of rendezvous placement (sharding-and-replication.md §3).

use proptest::prelude::*;
use shardgate_core::route::{NodeSet, Placement, PlacementKind};

fn names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set("[a-z0-9.]{1,12}(:[0-9]{2,5})?", 1..12)
        .prop_map(|s| s.into_iter().collect())
}

proptest! {
    #[test]
    fn placement_ignores_the_order_of_storage_node_flags(
        nodes in names(),
        seed in any::<u64>(),
        hashes in prop::collection::vec(any::<u64>(), 1..200),
        rot in any::<usize>(),
    ) {
        let mut shuffled = nodes.clone();
        shuffled.reverse();
        let len = shuffled.len();
        shuffled.rotate_left(rot % len);
        let a = Placement::new(&nodes, PlacementKind::Rendezvous, seed);
        let b = Placement::new(&shuffled, PlacementKind::Rendezvous, seed);
        for h in hashes {
            prop_assert_eq!(&a.nodes()[a.primary(h)], &b.nodes()[b.primary(h)]);
        }
    }

    #[test]
    fn adding_a_node_moves_about_one_share_and_only_onto_the_new_node(
        nodes in names(),
        extra in "[A-Z]{3,8}",
        seed in any::<u64>(),
    ) {
        let before = Placement::new(&nodes, PlacementKind::Rendezvous, seed);
        let mut grown = nodes.clone();
        grown.push(extra.clone());
        let after = Placement::new(&grown, PlacementKind::Rendezvous, seed);
        let samples = 4000u64;
        let mut moved = 0u64;
        for k in 0..samples {
            let h = shardgate_core::route::series_hash(&k.to_le_bytes());
            let old = &before.nodes()[before.primary(h)];
            let new = &after.nodes()[after.primary(h)];
            if old != new {
                moved += 1;
                prop_assert_eq!(new, &extra, "a series moved between two old nodes");
            }
        }
        let want = samples as f64 / (nodes.len() + 1) as f64;
        let moved = moved as f64;
        // Binomial spread over 4000 samples stays well inside ±35 % (and ±60 for small shares).
        prop_assert!((moved - want).abs() <= (want * 0.35).max(60.0), "moved {} want {}", moved, want);
    }

    #[test]
    fn select_never_picks_an_excluded_node_unless_all_are(
        nodes in names(),
        h in any::<u64>(),
        excluded in prop::collection::vec(any::<bool>(), 12),
    ) {
        let p = Placement::new(&nodes, PlacementKind::Rendezvous, 0);
        let mut set = NodeSet::new(p.len());
        for (i, &x) in excluded.iter().take(p.len()).enumerate() {
            if x { set.insert(i); }
        }
        let t = p.select(h, &set);
        prop_assert!(t < p.len());
        if set.count() < p.len() && p.len() > 1 {
            prop_assert!(!set.contains(t));
        }
        if set.count() == 0 {
            prop_assert_eq!(t, p.primary(h));
        }
    }
}
