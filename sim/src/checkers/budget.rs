//! Buffered bytes never exceed the configured memory budget. The gateway glue samples the
//! router's buffered-bytes gauge after every call into the core and keeps the maximum.

use super::{Context, Finding};

pub const NAME: &str = "budget";

pub fn check(cx: &Context<'_>) -> Result<(), Finding> {
    let (max, at) = cx.ledger.max_buffered;
    if max > cx.memory_budget {
        return Err(Finding::new(
            NAME,
            format!(
                "{max} bytes buffered at {at:?}, budget is {}",
                cx.memory_budget
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::ledger::Ledger;
    use std::time::Duration;

    #[test]
    fn over_budget_fails() {
        let p = three_nodes();
        let mut l = Ledger::new(3, 1);
        l.max_buffered = (1 << 20, Duration::from_secs(1));
        assert!(check(&cx(&l, &p, 1)).is_ok());
        l.max_buffered.0 += 1;
        assert_eq!(check(&cx(&l, &p, 1)).unwrap_err().invariant, NAME);
    }
}
