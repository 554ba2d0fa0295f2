//! The operator's Prometheus metrics: reconciles, errors, durations, and
//! whether this replica leads (runs the controllers).

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Reconcile metrics, labelled by controller (`sourcemount`, `stream`).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    failures: IntCounterVec,
    duration: HistogramVec,
    leading: IntGauge,
}

impl Metrics {
    /// Registers the metrics in a new registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "streammachine_operator_reconciles_total",
                "Reconciles run, by controller.",
            ),
            &["controller"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "streammachine_operator_reconcile_errors_total",
                "Reconciles that failed (and were retried), by controller and error category (transient, rejected, internal).",
            ),
            &["controller", "error"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "streammachine_operator_reconcile_duration_seconds",
                "Time a reconcile took, by controller.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["controller"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        let leading = IntGauge::new(
            "streammachine_operator_leading",
            "1 while this replica runs the controllers (holds the Lease), else 0.",
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(leading.clone()))?;
        Ok(Metrics {
            registry,
            reconciles,
            failures,
            duration,
            leading,
        })
    }

    /// Counts one reconcile of `controller`, failed with `error` (its
    /// category) or not.
    pub fn observe(&self, controller: &str, took: Duration, error: Option<&str>) {
        self.reconciles.with_label_values(&[controller]).inc();
        if let Some(error) = error {
            self.failures.with_label_values(&[controller, error]).inc();
        }
        self.duration
            .with_label_values(&[controller])
            .observe(took.as_secs_f64());
    }

    /// Whether this replica runs the controllers.
    pub fn set_leading(&self, leading: bool) {
        self.leading.set(i64::from(leading));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let m = Metrics::new().unwrap();
        m.observe("stream", Duration::from_millis(20), None);
        m.observe("stream", Duration::from_millis(20), Some("rejected"));
        let text = m.render();
        assert!(
            text.contains("streammachine_operator_reconciles_total{controller=\"stream\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "streammachine_operator_reconcile_errors_total{controller=\"stream\",error=\"rejected\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "streammachine_operator_reconcile_duration_seconds_count{controller=\"stream\"} 2"
            ),
            "{text}"
        );
    }
}
