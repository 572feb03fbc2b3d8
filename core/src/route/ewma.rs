//! The link-saturation average behind slowness rerouting (sharding-and-replication.md §6.2).

/// A variable exponentially weighted moving average with a warm-up: the first
/// [`Saturation::WARMUP`] samples are only summed, their mean seeds the average, and until then
/// the value reads 0 ("not warmed up"), which keeps a freshly started node out of the
/// comparison instead of letting one lucky sample make it look idle or saturated.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Saturation {
    value: f64,
    samples: u32,
}

impl Saturation {
    pub const WARMUP: u32 = 10;
    /// Age 180 samples: α = 2 / (180 + 1).
    const DECAY: f64 = 2.0 / 181.0;

    pub fn add(&mut self, sample: f64) {
        let sample = if sample.is_finite() { sample } else { 1.0 };
        if self.samples < Self::WARMUP {
            self.samples += 1;
            self.value += sample;
            return;
        }
        if self.samples == Self::WARMUP {
            self.samples += 1;
            self.value /= f64::from(Self::WARMUP);
        }
        self.value = self.value * (1.0 - Self::DECAY) + sample * Self::DECAY;
    }

    /// The average, or 0 while warming up.
    pub fn value(&self) -> f64 {
        if self.samples <= Self::WARMUP {
            0.0
        } else {
            self.value
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_until_eleven_samples_then_seeded_by_the_mean() {
        let mut s = Saturation::default();
        for i in 0..10 {
            s.add(f64::from(i) / 10.0);
            assert_eq!(s.value(), 0.0);
        }
        s.add(1.0);
        let mean = 0.45;
        let want = mean * (1.0 - 2.0 / 181.0) + 2.0 / 181.0;
        assert!((s.value() - want).abs() < 1e-12, "{}", s.value());
        for _ in 0..2000 {
            s.add(0.2);
        }
        assert!((s.value() - 0.2).abs() < 1e-3);
    }
}
