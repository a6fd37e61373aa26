//! A histogram of durations whose `observe` is three relaxed atomic additions.
//! prometheus-client's `Histogram` takes a lock on every observation, which every
//! request of the token route paid for (and contended for across cores).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Cheap to clone: clones share the counts.
#[derive(Debug, Clone)]
pub struct AtomicHistogram(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Upper bounds in seconds, ascending; a last bucket catches the rest (+Inf).
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative), one more than `bounds`.
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    /// In nanoseconds: an integer can be added atomically.
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self(Arc::new(Inner {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, elapsed: Duration) {
        let inner = &self.0;
        let secs = elapsed.as_secs_f64();
        let bucket = inner.bounds.partition_point(|bound| *bound < secs);
        inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        inner.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &self.0;
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(inner.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        // Read apart from the buckets: a scrape during traffic may see a count one
        // or two off their total, as with any lock-free histogram.
        let count = inner.count.load(Ordering::Relaxed);
        let sum = inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_render_like_a_histogram() {
        static BOUNDS: [f64; 2] = [0.001, 0.01];
        let histogram = AtomicHistogram::new(&BOUNDS);
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(1)); // on a bound: that bucket
        histogram.observe(Duration::from_millis(5));
        histogram.observe(Duration::from_secs(2));
        let mut registry = Registry::default();
        registry.register("d", "durations", histogram.clone());
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("# TYPE d histogram"), "{text}");
        assert!(text.contains("d_bucket{le=\"0.001\"} 2"), "{text}");
        assert!(text.contains("d_bucket{le=\"0.01\"} 3"), "{text}");
        assert!(text.contains("d_bucket{le=\"+Inf\"} 4"), "{text}");
        assert!(text.contains("d_count 4"), "{text}");
        assert!(text.contains("d_sum 2.0065"), "{text}");
    }
}
