//! With every storage node healthy for the whole run, each row is stored exactly on the
//! reference replica set: the home node from the same `Placement` the golden vectors check,
//! and the R-1 nodes after it in index order. Slowness rerouting (§6.2, RF = 1 only) may move
//! rows off a healthy but slow node; when it is enabled, rows off their home are allowed up to
//! the router's count of rerouted rows, and every other row must sit at home.

use std::collections::BTreeSet;

use super::{Context, Finding};

pub const NAME: &str = "placement";

pub fn check(cx: &Context<'_>) -> Result<(), Finding> {
    if !cx.healthy {
        return Ok(());
    }
    let l = cx.ledger;
    let rerouted = l.counters().rerouted_rows;
    if !cx.slowness_rerouting && rerouted > 0 {
        return Err(Finding::new(
            NAME,
            format!("{rerouted} rows rerouted although every node stayed healthy"),
        ));
    }
    let mut off_home = 0u64;
    for (row, nodes) in &l.acked {
        let home = cx.placement.primary(row.series);
        let want: BTreeSet<usize> = cx.placement.replicas(home, cx.replication_factor).collect();
        if *nodes == want {
            continue;
        }
        off_home += 1;
        if !cx.slowness_rerouting || off_home > rerouted {
            return Err(Finding::new(
                NAME,
                format!(
                    "row {row:?} stored on {nodes:?}, reference placement says {want:?} \
                     ({off_home} rows off their home so far, {rerouted} counted as rerouted)"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::ledger::Ledger;

    #[test]
    fn rows_off_their_home_fail_only_in_healthy_runs() {
        let p = three_nodes();
        let mut l = Ledger::new(3, 1);
        let r = row(0xcc5991c92f00ca27, 1);
        let home = p.primary(r.series);
        accept(&mut l, r);
        ack(&mut l, r, home);
        let mut c = cx(&l, &p, 1);
        c.healthy = true;
        assert!(check(&c).is_ok());

        let mut l2 = Ledger::new(3, 1);
        accept(&mut l2, r);
        ack(&mut l2, r, (home + 1) % 3);
        let mut c = cx(&l2, &p, 1);
        assert!(check(&c).is_ok(), "faults excuse any placement");
        c.healthy = true;
        assert_eq!(check(&c).unwrap_err().invariant, NAME);
        // With R = 2 the next node is part of the reference set too.
        ack(&mut l, r, (home + 1) % 3);
        let mut c = cx(&l, &p, 2);
        c.healthy = true;
        assert!(check(&c).is_ok());
    }

    #[test]
    fn slowness_rerouting_excuses_only_counted_rows() {
        use crate::ledger::GatewayCounters;
        let p = three_nodes();
        let mut l = Ledger::new(3, 1);
        for ts in 0..2 {
            let r = row(0xcc5991c92f00ca27, ts);
            accept(&mut l, r);
            ack(&mut l, r, (p.primary(r.series) + 1) % 3);
        }
        counters(
            &mut l,
            GatewayCounters {
                rerouted_rows: 1,
                ..Default::default()
            },
        );
        let mut c = cx(&l, &p, 1);
        c.healthy = true;
        let f = check(&c).unwrap_err();
        assert!(f.detail.contains("rerouted although"), "{}", f.detail);
        c.slowness_rerouting = true;
        assert!(check(&c).is_err(), "two rows off home, one counted");
        counters(
            &mut l,
            GatewayCounters {
                rerouted_rows: 2,
                ..Default::default()
            },
        );
        let mut c = cx(&l, &p, 1);
        c.healthy = true;
        c.slowness_rerouting = true;
        assert!(check(&c).is_ok());
    }
}
