//! What a fleet of hosts tells Prometheus (`up --metrics-listen ADDR`, off
//! the public port): requests and their latency per route and status, 429s,
//! store calls and compare-and-set retries per component, instances created,
//! and errors per Redis store label. Encoded by the `prometheus-client`
//! crate in the OpenMetrics text format.

use anyhow::{Context, Result};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    /// The manifest's route pattern (`/v1/packets/:id/open`).
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabel {
    pub component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabel {
    pub store: String,
}

type Latency = Family<RouteLabel, Histogram, fn() -> Histogram>;

/// Every metric of one host.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    latency: Latency,
    busy: Family<RouteLabel, Counter>,
    store_calls: Family<ComponentLabel, Counter>,
    cas_retries: Family<ComponentLabel, Counter>,
    instances: Family<ComponentLabel, Counter>,
    redis_errors: Family<StoreLabel, Counter>,
}

/// 0.25 ms to ~4 s, doubling: an open takes about a millisecond here.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hongbao");
        let requests = Family::<RouteStatus, Counter>::default();
        let latency: Latency = Family::new_with_constructor(latency_histogram);
        let busy = Family::<RouteLabel, Counter>::default();
        let store_calls = Family::<ComponentLabel, Counter>::default();
        let cas_retries = Family::<ComponentLabel, Counter>::default();
        let instances = Family::<ComponentLabel, Counter>::default();
        let redis_errors = Family::<StoreLabel, Counter>::default();
        registry.register("requests", "HTTP requests answered, by route and status", requests.clone());
        registry.register(
            "request_duration_seconds",
            "time from the request to its response being ready, by route",
            latency.clone(),
        );
        registry.register("busy_responses", "429 busy answers, by route", busy.clone());
        registry.register("store_calls", "key-value calls made by components", store_calls.clone());
        registry.register(
            "cas_retries",
            "compare-and-set swaps answered cas-failed (each costs the component a retry)",
            cas_retries.clone(),
        );
        registry.register("instances_created", "component instances created", instances.clone());
        registry.register("redis_errors", "failed calls to a Redis store, by store label", redis_errors.clone());
        Metrics { registry, requests, latency, busy, store_calls, cas_retries, instances, redis_errors }
    }

    /// One answered request.
    pub fn answered(&self, route: &str, status: u16, took: std::time::Duration) {
        self.requests.get_or_create(&RouteStatus { route: route.to_owned(), status }).inc();
        let route = RouteLabel { route: route.to_owned() };
        self.latency.get_or_create(&route).observe(took.as_secs_f64());
        if status == 429 {
            self.busy.get_or_create(&route).inc();
        }
    }

    /// The counters a component's key-value calls move (store calls, retries).
    pub fn store_counters(&self, component: &str) -> (Counter, Counter) {
        let label = ComponentLabel { component: component.to_owned() };
        (self.store_calls.get_or_create(&label).clone(), self.cas_retries.get_or_create(&label).clone())
    }

    pub fn instances_counter(&self, component: &str) -> Counter {
        self.instances.get_or_create(&ComponentLabel { component: component.to_owned() }).clone()
    }

    pub fn redis_error_counter(&self, store: &str) -> Counter {
        self.redis_errors.get_or_create(&StoreLabel { store: store.to_owned() }).clone()
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

/// Serves `GET /metrics` on `addr` until the process ends; returns the bound address.
pub async fn serve(metrics: Arc<Metrics>, addr: SocketAddr) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding --metrics-listen {addr}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let metrics = Arc::clone(&metrics);
                    async move {
                        let (status, body) = match req.uri().path() {
                            "/metrics" => (200, metrics.encode()),
                            _ => (404, String::new()),
                        };
                        hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
                            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    }
                });
                let io = wasmtime_wasi_http::io::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_text_format() {
        let metrics = Metrics::new();
        metrics.answered("/v1/packets/:id/open", 200, std::time::Duration::from_millis(2));
        metrics.answered("/v1/packets/:id/open", 429, std::time::Duration::from_millis(1));
        let (calls, retries) = metrics.store_counters("open");
        calls.inc_by(7);
        retries.inc();
        metrics.redis_error_counter("set3").inc();
        let text = metrics.encode();
        for line in [
            "hongbao_requests_total{route=\"/v1/packets/:id/open\",status=\"429\"} 1",
            "hongbao_busy_responses_total{route=\"/v1/packets/:id/open\"} 1",
            "hongbao_store_calls_total{component=\"open\"} 7",
            "hongbao_cas_retries_total{component=\"open\"} 1",
            "hongbao_redis_errors_total{store=\"set3\"} 1",
            "hongbao_request_duration_seconds_count{route=\"/v1/packets/:id/open\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
