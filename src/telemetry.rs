//! Telemetry: the log subscriber (json | pretty) and the Prometheus metrics every request
//! updates. Other modules register their own metrics into the same `Registry`.

use std::fmt;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global log subscriber. `RUST_LOG`, when set, wins over `log.level`.
/// Returns false when a subscriber was already installed (tests start many servers).
pub fn init_logging(cfg: &LogConfig) -> bool {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // A log line that cannot be written (stderr's reader gone: a log shipper that died) is
    // dropped. tracing-subscriber's default reports it with `eprintln!`, which panics on that
    // same closed stderr, in the thread that logged: a worker, a request.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
            .is_ok(),
        LogFormat::Pretty => builder.try_init().is_ok(),
    }
}

/// Which part of samlgate answered: keeps label cardinality fixed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `saml`, `proxy`, `public`, `auth`, `admin`
    pub route: &'static str,
    /// `1xx` … `5xx`
    pub status: &'static str,
}

/// Labels of upstream errors.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `connect`, `timeout`, `other`
    pub kind: &'static str,
}

/// Route-class label without status (histograms).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOnly {
    /// `saml`, `proxy`, `public`, `auth`
    pub route: &'static str,
}

/// The request-level metrics of the gateway listener.
pub struct Metrics {
    /// `samlgate_requests_total{route,status}`
    pub requests: Family<RouteLabels, Counter>,
    /// `samlgate_request_duration_seconds{route}`
    pub latency: Family<RouteOnly, Histogram>,
    /// `samlgate_requests_in_flight`
    pub in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// `samlgate_upstream_errors_total{kind}`
    pub upstream_errors: Family<KindLabels, Counter>,
    /// `samlgate_connections_open`
    pub connections: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// The series of the proxied routes, looked up once: every forwarded request updates them.
    hot: [(&'static str, RouteSeries); 2],
}

/// The counters (one per status class) and the histogram of one route.
struct RouteSeries {
    requests: [Counter; 5],
    latency: Histogram,
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn route_series(
    requests: &Family<RouteLabels, Counter>,
    latency: &Family<RouteOnly, Histogram>,
    route: &'static str,
) -> RouteSeries {
    RouteSeries {
        requests: STATUS_CLASSES.map(|status| {
            requests
                .get_or_create(&RouteLabels { route, status })
                .clone()
        }),
        latency: latency.get_or_create(&RouteOnly { route }).clone(),
    }
}

impl Metrics {
    /// Creates the metrics and registers them (plus `samlgate_build_info`, always 1).
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::default();
        let latency: Family<RouteOnly, Histogram> = Family::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
        });
        let hot =
            ["proxy", "public"].map(|route| (route, route_series(&requests, &latency, route)));
        let m = Metrics {
            requests,
            latency,
            in_flight: Gauge::default(),
            upstream_errors: Family::default(),
            connections: Gauge::default(),
            hot,
        };
        registry.register(
            "samlgate_requests",
            "Requests answered, by route class and status class",
            m.requests.clone(),
        );
        registry.register(
            "samlgate_request_duration_seconds",
            "Time to the response head",
            m.latency.clone(),
        );
        registry.register(
            "samlgate_requests_in_flight",
            "Requests being handled",
            m.in_flight.clone(),
        );
        registry.register(
            "samlgate_upstream_errors",
            "Upstream failures by kind",
            m.upstream_errors.clone(),
        );
        registry.register(
            "samlgate_connections_open",
            "Open client connections",
            m.connections.clone(),
        );
        // A gauge of 1 rather than an OpenMetrics `info` metric, which the classic text format
        // (and its parsers) do not know.
        let build = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register("samlgate_build_info", "Build information", build);
        m
    }

    /// Counts a request in flight until the guard is dropped: when it is answered, or when
    /// hyper drops the request (client gone, stream reset, shutdown grace over).
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// Records one answered request.
    pub fn observe(&self, route: &'static str, status: http::StatusCode, elapsed: Duration) {
        let class = match status.as_u16() {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        if let Some((_, series)) = self.hot.iter().find(|(r, _)| *r == route) {
            series.requests[class].inc();
            series.latency.observe(elapsed.as_secs_f64());
            return;
        }
        let status = STATUS_CLASSES[class];
        self.requests
            .get_or_create(&RouteLabels { route, status })
            .inc();
        self.latency
            .get_or_create(&RouteOnly { route })
            .observe(elapsed.as_secs_f64());
    }
}

/// A request in flight (see [`Metrics::in_flight`]).
pub struct InFlight<'a>(&'a Gauge<i64, std::sync::atomic::AtomicI64>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The content type of OpenMetrics 1.0 text.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the classic Prometheus text format.
const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The registry as the client asked for it: OpenMetrics 1.0 when its `Accept` names it (as
/// Prometheus's does), else the classic Prometheus text format 0.0.4, which every scraper
/// reads. Returns the text and its content type.
pub fn encode_metrics(
    registry: &Registry,
    accept: &str,
) -> Result<(String, &'static str), fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    if accept.contains("application/openmetrics-text") {
        Ok((out, OPENMETRICS))
    } else {
        Ok((openmetrics_to_text_004(&out), TEXT_004))
    }
}

/// OpenMetrics text as the classic format: a counter family is named by its samples
/// (`x_total`, where OpenMetrics names it `x`), and the `# UNIT` and `# EOF` lines go.
fn openmetrics_to_text_004(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|kw| {
            let rest = line.strip_prefix(kw)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{kw}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
