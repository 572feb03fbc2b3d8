//! Every row a gateway accepted is acked by at least one storage node once the faults heal,
//! unless the gateway counted it as dropped under a configured policy; and no storage node
//! acks a row nobody accepted.

use super::{examples, Context, Finding};

pub const NAME: &str = "delivery";

pub fn check(cx: &Context<'_>) -> Result<(), Finding> {
    let l = cx.ledger;
    let phantom: Vec<_> = l
        .acked
        .keys()
        .filter(|r| !l.accepted.contains_key(r))
        .collect();
    if !phantom.is_empty() {
        return Err(Finding::new(
            NAME,
            format!(
                "{} rows acked by storage were never accepted by a gateway, e.g. {}",
                phantom.len(),
                examples(phantom.into_iter())
            ),
        ));
    }
    let missing: Vec<_> = l
        .accepted
        .keys()
        .filter(|r| !l.acked.contains_key(r))
        .collect();
    let dropped = l.counters().dropped();
    if missing.len() as u64 > dropped {
        return Err(Finding::new(
            NAME,
            format!(
                "{} accepted rows were never acked, but only {dropped} were counted as dropped; e.g. {}",
                missing.len(),
                examples(missing.into_iter())
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
    fn unacked_rows_need_a_counted_drop() {
        let p = three_nodes();
        let mut l = Ledger::new(3, 1);
        accept(&mut l, row(1, 1));
        accept(&mut l, row(1, 2));
        ack(&mut l, row(1, 1), 0);
        assert_eq!(check(&cx(&l, &p, 1)).unwrap_err().invariant, NAME);
        counters(
            &mut l,
            GatewayCounters {
                dropped_on_shutdown: 1,
                ..Default::default()
            },
        );
        assert!(check(&cx(&l, &p, 1)).is_ok());
    }

    #[test]
    fn phantom_rows_fail() {
        let p = three_nodes();
        let mut l = Ledger::new(3, 1);
        ack(&mut l, row(9, 9), 1);
        let f = check(&cx(&l, &p, 1)).unwrap_err();
        assert!(f.detail.contains("never accepted"), "{}", f.detail);
    }
}
