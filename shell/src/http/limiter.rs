//! `-maxConcurrentInserts` with `-insert.maxQueueDuration` (spec: formats/common.md §8).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_io::Timer;
use event_listener::Event;
use futures_lite::future;

pub struct Limiter {
    capacity: usize,
    current: AtomicUsize,
    freed: Event,
}

/// A held insert slot; dropping it frees the slot.
pub struct Slot(Arc<Limiter>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::SeqCst);
        self.0.freed.notify(1);
    }
}

impl Limiter {
    pub fn new(capacity: usize) -> Arc<Limiter> {
        Arc::new(Limiter {
            capacity: capacity.max(1),
            current: AtomicUsize::new(0),
            freed: Event::new(),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn current(&self) -> usize {
        self.current.load(Ordering::SeqCst)
    }

    fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let mut cur = self.current.load(Ordering::SeqCst);
        while cur < self.capacity {
            match self
                .current
                .compare_exchange(cur, cur + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Some(Slot(self.clone())),
                Err(c) => cur = c,
            }
        }
        None
    }

    /// Take a slot, waiting until `deadline`. `Err(waited)` when none came in time; `waited`
    /// tells whether the request had to queue at all (for the limit-reached counter).
    pub async fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<(Slot, bool), ()> {
        if let Some(s) = self.try_take() {
            return Ok((s, false));
        }
        loop {
            let l = self.freed.listen();
            if let Some(s) = self.try_take() {
                return Ok((s, true));
            }
            let timed_out = future::or(
                async {
                    l.await;
                    false
                },
                async {
                    Timer::at(deadline).await;
                    true
                },
            )
            .await;
            if timed_out {
                return self.try_take().map(|s| (s, true)).ok_or(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn waits_for_a_slot_then_times_out() {
        smol::block_on(async {
            let l = Limiter::new(1);
            let (a, waited) = l.acquire(Instant::now()).await.unwrap();
            assert!(!waited);
            assert_eq!(l.current(), 1);
            let t0 = Instant::now();
            assert!(l.acquire(t0 + Duration::from_millis(50)).await.is_err());
            assert!(t0.elapsed() >= Duration::from_millis(50));
            let l2 = l.clone();
            let waiter = smol::spawn(async move {
                l2.acquire(Instant::now() + Duration::from_secs(5))
                    .await
                    .is_ok()
            });
            Timer::after(Duration::from_millis(20)).await;
            drop(a);
            assert!(waiter.await);
            assert_eq!(l.current(), 0);
        });
    }
}
