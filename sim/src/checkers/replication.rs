//! With replication factor R, every accepted row lands on R distinct storage nodes, or the
//! gateway counts it as incompletely replicated (or as dropped on shutdown, whose final pass
//! may leave a block with fewer copies).

use super::{examples, Context, Finding};

pub const NAME: &str = "replication";

pub fn check(cx: &Context<'_>) -> Result<(), Finding> {
    let n = cx.placement.len().max(1);
    let r = cx.replication_factor.clamp(1, n);
    if r == 1 {
        return Ok(());
    }
    let l = cx.ledger;
    let short: Vec<_> = l
        .accepted
        .keys()
        .filter_map(|row| {
            let copies = l.acked.get(row).map_or(0, |s| s.len());
            (copies > 0 && copies < r).then_some((row, copies))
        })
        .collect();
    let c = l.counters();
    let allowed = c.incompletely_replicated + c.dropped_on_shutdown;
    if short.len() as u64 > allowed {
        return Err(Finding::new(
            NAME,
            format!(
                "{} rows have fewer than {r} distinct copies but only {} were counted as incompletely replicated \
                 (+{} dropped on shutdown); e.g. {}",
                short.len(),
                c.incompletely_replicated,
                c.dropped_on_shutdown,
                examples(short.iter())
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::ledger::{GatewayCounters, Ledger};

    #[test]
    fn a_missing_copy_must_be_counted() {
        let p = three_nodes();
        let mut l = Ledger::new(3, 1);
        accept(&mut l, row(1, 1));
        ack(&mut l, row(1, 1), 0);
        ack(&mut l, row(1, 1), 0);
        assert!(check(&cx(&l, &p, 1)).is_ok(), "R=1 needs one copy");
        assert_eq!(check(&cx(&l, &p, 2)).unwrap_err().invariant, NAME);
        ack(&mut l, row(1, 1), 2);
        assert!(check(&cx(&l, &p, 2)).is_ok());
        assert!(check(&cx(&l, &p, 3)).is_err());
        counters(
            &mut l,
            GatewayCounters {
                incompletely_replicated: 1,
                ..Default::default()
            },
        );
        assert!(check(&cx(&l, &p, 3)).is_ok());
    }

    #[test]
    fn factor_is_clamped_to_the_node_count() {
        let p = three_nodes();
        let mut l = Ledger::new(3, 1);
        accept(&mut l, row(1, 1));
        for n in 0..3 {
            ack(&mut l, row(1, 1), n);
        }
        assert!(check(&cx(&l, &p, 5)).is_ok());
    }
}
