//! No row acked by storage is counted as lost: the gateway's drop counters never cover more
//! rows than it really failed to deliver. A row whose success reply reached the gateway must
//! not also be counted as dropped. (A reply lost with its connection leaves the gateway no way
//! to know, so only replies the gateway read are held against it.)

use super::{Context, Finding};

pub const NAME: &str = "accounting";

pub fn check(cx: &Context<'_>) -> Result<(), Finding> {
    let l = cx.ledger;
    let delivered = l.delivered_acks();
    // A row taken twice (a client retried a request the gateway had partly taken) can be
    // delivered once and dropped once; one delivered ack covers one of its instances.
    let undelivered: u64 = l
        .accepted
        .iter()
        .map(|(r, &k)| u64::from(k) - u64::from(delivered.contains(r)))
        .sum();
    let c = l.counters();
    if c.dropped() > undelivered {
        return Err(Finding::new(
            NAME,
            format!(
                "gateway counted {} rows dropped ({} on overload, {} on shutdown) but only {undelivered} accepted rows \
                 lack an ack the gateway received",
                c.dropped(),
                c.dropped_on_overload,
                c.dropped_on_shutdown
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::ledger::{ConnKey, GatewayCounters, Ledger};

    #[test]
    fn drops_cannot_cover_delivered_rows() {
        let p = three_nodes();
        let mut l = Ledger::new(3, 1);
        let conn: ConnKey = (
            "10.0.0.1:50000".parse().unwrap(),
            "10.0.0.2:8400".parse().unwrap(),
        );
        accept(&mut l, row(1, 1));
        accept(&mut l, row(1, 2));
        l.acks_by_conn
            .insert(conn, vec![(8, vec![row(1, 1)]), (16, vec![row(1, 2)])]);
        l.received.insert(conn, 8);
        counters(
            &mut l,
            GatewayCounters {
                dropped_on_overload: 1,
                ..Default::default()
            },
        );
        assert!(
            check(&cx(&l, &p, 1)).is_ok(),
            "the second ack never reached the gateway"
        );
        l.received.insert(conn, 16);
        assert_eq!(check(&cx(&l, &p, 1)).unwrap_err().invariant, NAME);
    }
}
