//! Percentile summaries of hdrhistogram histograms.

use hdrhistogram::Histogram;
use serde::Serialize;

/// The quantiles every percentile table shows, with their labels.
pub const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

/// A histogram that never fails to record (values past the range saturate).
#[derive(Clone, Debug)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        // 3 significant digits, auto-resizing: about 0.1% value error.
        Hist(Histogram::new(3).expect("3 significant figures is valid"))
    }
}

impl Hist {
    pub fn record(&mut self, v: u64) {
        // `record` grows the auto-resizing histogram; `saturating_record` would clamp at its
        // current top (2048 at first) instead. Saturate only past what it can ever track.
        if self.0.record(v).is_err() {
            self.0.saturating_record(v);
        }
    }
    pub fn count(&self) -> u64 {
        self.0.len()
    }
    pub fn summary(&self) -> Percentiles {
        let h = &self.0;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            p99_99: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }
}

/// Percentiles of a distribution, in the unit of what was recorded (the field using it says).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub p99_99: u64,
    pub max: u64,
}

impl Percentiles {
    /// The quantile values in [`QUANTILES`] order, then max.
    pub fn values(&self) -> [u64; 6] {
        [
            self.p50,
            self.p90,
            self.p99,
            self.p99_9,
            self.p99_99,
            self.max,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_values_are_kept_not_clamped() {
        let mut h = Hist::default();
        for v in [10, 2_000, 1_227_071, 3_600_000_000_000] {
            h.record(v);
        }
        let p = h.summary();
        assert_eq!(p.count, 4);
        // 3 significant digits.
        assert!((p.max as f64 / 3.6e12 - 1.0).abs() < 0.001, "max {}", p.max);
        assert!(p.p50 >= 1_990 && p.p50 <= 2_010, "p50 {}", p.p50);
    }
}
