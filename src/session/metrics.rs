//! Session metrics: sessions created and destroyed, store latency and errors by backend (and
//! Redis's refusals among them), and
//! the Redis store's local-tier hits and misses.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `backend` label: `memory` or `redis`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// `memory` or `redis`.
    pub backend: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~0.8 s: memory hits land in the first bucket, Redis round trips in the middle,
    // timeouts (250 ms default) near the top.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 15))
}

/// Every session metric; clones share the same counters.
#[derive(Clone, Debug)]
pub struct SessionMetrics {
    /// Sessions created (successful logins).
    pub created: Counter,
    /// Sessions destroyed (logout, IdP logout, expiry noticed on load).
    pub destroyed: Counter,
    /// Store operation latency in seconds, by backend.
    pub store_latency: Family<BackendLabels, Histogram, fn() -> Histogram>,
    /// Store operations that failed or timed out, by backend.
    pub store_errors: Family<BackendLabels, Counter>,
    /// Of those, the commands Redis answered with an error reply (`OOM`, `READONLY`…): Redis
    /// was up but refused them.
    pub store_refusals: Counter,
    /// Sessions served from the Redis store's in-process tier.
    pub local_hits: Counter,
    /// Session lookups the in-process tier could not answer (went to Redis).
    pub local_misses: Counter,
    /// Live sessions the memory store pushed out because `session.max_entries` was reached:
    /// their users must sign in again.
    pub evicted: Counter,
}

impl Default for SessionMetrics {
    fn default() -> Self {
        Self {
            created: Counter::default(),
            destroyed: Counter::default(),
            store_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            store_errors: Family::default(),
            store_refusals: Counter::default(),
            local_hits: Counter::default(),
            local_misses: Counter::default(),
            evicted: Counter::default(),
        }
    }
}

impl SessionMetrics {
    /// Adds every metric to `registry` (names get the registry's prefix, if any).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "samlgate_sessions_created",
            "Sessions created",
            self.created.clone(),
        );
        registry.register(
            "samlgate_sessions_destroyed",
            "Sessions destroyed (logout, IdP logout, expiry)",
            self.destroyed.clone(),
        );
        registry.register(
            "samlgate_session_store_duration_seconds",
            "Session store operation latency",
            self.store_latency.clone(),
        );
        registry.register(
            "samlgate_session_store_errors",
            "Session store operations that failed or timed out",
            self.store_errors.clone(),
        );
        registry.register(
            "samlgate_session_store_refusals",
            "Session store commands Redis answered with an error (OOM, READONLY...): up, but refusing",
            self.store_refusals.clone(),
        );
        registry.register(
            "samlgate_session_local_tier_hits",
            "Session lookups answered by the Redis store's in-process tier",
            self.local_hits.clone(),
        );
        registry.register(
            "samlgate_session_local_tier_misses",
            "Session lookups that went to Redis",
            self.local_misses.clone(),
        );
        registry.register(
            "samlgate_sessions_evicted",
            "Live sessions the memory store pushed out at session.max_entries (users must sign in again)",
            self.evicted.clone(),
        );
    }

    /// The latency histogram of one backend (looked up once, then used without the family lock).
    pub(crate) fn latency(&self, backend: &'static str) -> Histogram {
        self.store_latency
            .get_or_create(&BackendLabels { backend })
            .clone()
    }

    /// The error counter of one backend.
    pub(crate) fn errors(&self, backend: &'static str) -> Counter {
        self.store_errors
            .get_or_create(&BackendLabels { backend })
            .clone()
    }
}
