//! `-maxConcurrentInserts` with `-insert.maxQueueDuration` (spec: formats/common.md §8).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Timer;
use event_listener::Event;
use futures_lite::future;

pub struct Limiter {
    capacity: usize,
    current: AtomicUsize,
    freed: Event,
    /// `vm_concurrent_insert_limit_reached_total`: takes that had to queue.
    reached: AtomicU64,
    /// `vm_concurrent_insert_limit_timeout_total`: takes that gave up.
    timeouts: AtomicU64,
}

/// No slot came free within `-insert.maxQueueDuration`; HTTP answers 503.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotTimeout {
    pub capacity: usize,
    pub max_wait: Duration,
}

impl std::fmt::Display for SlotTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot handle more than {} concurrent inserts during {:?}; possible solutions: increase -insert.maxQueueDuration, increase -maxConcurrentInserts, add more vminsert instances",
            self.capacity, self.max_wait
        )
    }
}

impl std::error::Error for SlotTimeout {}

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
            reached: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn current(&self) -> usize {
        self.current.load(Ordering::SeqCst)
    }

    /// `vm_concurrent_insert_limit_reached_total`.
    pub fn limit_reached_total(&self) -> u64 {
        self.reached.load(Ordering::Relaxed)
    }

    /// `vm_concurrent_insert_limit_timeout_total`.
    pub fn limit_timeout_total(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
    }

    /// Take a slot, waiting at most `max_wait`, and count the wait on `/metrics`.
    pub async fn take(self: &Arc<Self>, max_wait: Duration) -> Result<Slot, SlotTimeout> {
        match self.acquire(Instant::now() + max_wait).await {
            Ok((slot, waited)) => {
                if waited {
                    self.reached.fetch_add(1, Ordering::Relaxed);
                }
                Ok(slot)
            }
            Err(()) => {
                self.reached.fetch_add(1, Ordering::Relaxed);
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(SlotTimeout {
                    capacity: self.capacity,
                    max_wait,
                })
            }
        }
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

/// A streaming request's hold on an insert slot (formats/common.md §8). It gives the slot back
/// while it waits on the client's socket and takes it again before parsing or pushing, so a
/// client that stalls or trickles holds no slot while idle. Each take waits at most
/// `-insert.maxQueueDuration` from the moment it starts.
pub struct Turn {
    limiter: Arc<Limiter>,
    max_wait: Duration,
    slot: Option<Slot>,
}

impl Turn {
    /// A turn that holds nothing yet.
    pub fn new(limiter: &Arc<Limiter>, max_wait: Duration) -> Turn {
        Turn {
            limiter: limiter.clone(),
            max_wait,
            slot: None,
        }
    }

    /// Hold a slot (a no-op while one is held).
    pub async fn hold(&mut self) -> Result<(), SlotTimeout> {
        if self.slot.is_none() {
            self.slot = Some(self.limiter.take(self.max_wait).await?);
        }
        Ok(())
    }

    /// Give the slot back, before a read that may block on the client.
    pub fn release(&mut self) {
        self.slot = None;
    }

    pub fn is_held(&self) -> bool {
        self.slot.is_some()
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

    #[test]
    fn a_turn_gives_its_slot_back_and_counts_waits() {
        smol::block_on(async {
            let l = Limiter::new(1);
            let mut turn = Turn::new(&l, Duration::from_millis(30));
            turn.hold().await.unwrap();
            turn.hold().await.unwrap();
            assert_eq!(l.current(), 1, "holding twice takes one slot");
            let mut other = Turn::new(&l, Duration::from_millis(30));
            let err = other.hold().await.unwrap_err();
            assert!(err
                .to_string()
                .contains("cannot handle more than 1 concurrent inserts"));
            assert_eq!((l.limit_reached_total(), l.limit_timeout_total()), (1, 1));
            turn.release();
            assert!(!turn.is_held());
            assert_eq!(l.current(), 0);
            other.hold().await.unwrap();
            assert!(other.is_held());
            assert_eq!(l.limit_timeout_total(), 1);
            drop(other);
            assert_eq!(l.current(), 0);
        });
    }
}
