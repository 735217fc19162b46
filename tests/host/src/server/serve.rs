//! The server: the accept loop, the request path from routing to the
//! response (`handle`, then `run_component`), per-component timings, and
//! shutdown.

use super::App;
use super::body::{self, Body};
use super::instance::ComponentState;
use super::permits::{Permit, Permits};
use super::spin_headers::with_spin_headers;
use crate::kv::stores::Stores;
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use hyper::body::Incoming;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use wasmtime_wasi_http::handler::{Proxy, ProxyHandler};
use wasmtime_wasi_http::p3;

struct Shared {
    app: App,
    next_request: AtomicU64,
    in_flight: AtomicUsize,
    permits: Permits,
    /// Per component, for the benchmark.
    timings: HashMap<String, Tally>,
}

/// Requests answered and their total time, as in `ComponentTiming`.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    nanos: AtomicU64,
}

/// One component's requests since start, and their mean time in the host
/// from the request body being read to the response being ready (waiting
/// for a permit, running, reading its body and waiting for durability;
/// routing and the network excluded).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ComponentTiming {
    pub component: String,
    /// Answered, failures (500) included.
    pub requests: u64,
    pub mean: Duration,
}

/// A running server.
pub struct Running {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn app(&self) -> &App {
        &self.shared.app
    }

    /// Every component's timing since start, by component id.
    pub fn timings(&self) -> Vec<ComponentTiming> {
        let mut all: Vec<_> = self
            .shared
            .timings
            .iter()
            .map(|(component, tally)| {
                let requests = tally.requests.load(Ordering::Relaxed);
                let mean = Duration::from_nanos(tally.nanos.load(Ordering::Relaxed) / requests.max(1));
                ComponentTiming { component: component.clone(), requests, mean }
            })
            .collect();
        all.sort();
        all
    }

    /// Stops accepting, waits (up to 10 s) for requests in flight, and makes
    /// sure every write is on disk.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(true);
        let _ = self.accept_loop.await;
        for _ in 0..1000 {
            if self.shared.in_flight.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.shared.app.stores.flush().map_err(|e| anyhow!(e.0))
    }
}

/// Binds `addr` and serves `app` until `shutdown`.
pub async fn serve(app: App, addr: SocketAddr) -> Result<Running> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    let timings = app.handlers.keys().map(|k| (k.clone(), Tally::default())).collect();
    let permits = Permits::new(app.options.max_running_requests);
    let shared =
        Arc::new(Shared { app, next_request: AtomicU64::new(1), in_flight: AtomicUsize::new(0), permits, timings });
    let (stop, mut stopped) = watch::channel(false);
    let accept_shared = Arc::clone(&shared);
    let accept_loop = tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        eprintln!("hongbao-host: accept failed: {e}");
                        continue;
                    }
                },
                _ = stopped.changed() => return,
            };
            let _ = stream.set_nodelay(true);
            let shared = Arc::clone(&accept_shared);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let shared = Arc::clone(&shared);
                    async move { Ok::<_, std::convert::Infallible>(handle(shared, req, peer).await) }
                });
                let io = wasmtime_wasi_http::io::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, service).await;
            });
        }
    });
    Ok(Running { addr, shared, stop, accept_loop })
}

fn plain(status: u16, text: &'static str) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(status)
        .body(body::full(Bytes::from_static(text.as_bytes())))
        .expect("valid response")
}

/// Decrements the in-flight count when the request is answered.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(shared: Arc<Shared>, req: hyper::Request<Incoming>, client: SocketAddr) -> hyper::Response<Body> {
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight(&shared.in_flight);
    let path = req.uri().path().to_owned();
    // Spin answers these itself, before routing.
    if let Some(what) = path.strip_prefix("/.well-known/spin/") {
        return if what == "health" { plain(200, "OK") } else { plain(404, "") };
    }
    let Some(route) = shared.app.router.route(&path) else {
        return plain(404, "");
    };
    let component = route.component.to_owned();
    let route_pattern = route.raw_route.to_owned();
    let request = with_spin_headers(req, &route, client);
    let Some(request) = body::buffer_small_body(request).await else {
        return plain(400, "request body broken off\n");
    };
    let handler = shared.app.handlers[&component].clone();
    let request_id = shared.next_request.fetch_add(1, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let permit = shared.permits.acquire().await;
    let outcome = run_component(&handler, Arc::clone(&shared.app.stores), request, permit).await;
    if let Some(tally) = shared.timings.get(&component) {
        tally.requests.fetch_add(1, Ordering::Relaxed);
        tally.nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
    let response = match outcome {
        Ok(response) => response,
        Err(e) => {
            eprintln!("hongbao-host: request {request_id} to [{component}] {path} failed: {e:?}");
            plain(500, "internal error\n")
        }
    };
    shared.app.metrics.answered(&route_pattern, response.status().as_u16(), started.elapsed());
    response
}

/// Hands the request to a component instance and waits for its response.
/// The instance (and the running-requests `permit`) is given back as soon
/// as the component has written its body, which is read here into memory;
/// then everything the request read or wrote in the key-value store is made
/// durable (one wait, however many calls it made) before the response
/// leaves. A commit therefore holds neither an instance nor a permit.
async fn run_component(
    handler: &ProxyHandler<ComponentState>,
    stores: Arc<Stores>,
    request: hyper::Request<Body>,
    permit: Permit,
) -> Result<hyper::Response<Body>> {
    let (tx, rx) = oneshot::channel::<Result<(hyper::Response<Body>, crate::kv::Ticket)>>();
    handler.spawn(
        None,
        Box::new(move |accessor, proxy| {
            Box::pin(async move {
                let Proxy::P3(service) = proxy;
                let answer = async {
                    let (request, request_done) = p3::Request::from_http(request);
                    accessor.with(|mut store| store.data_mut().observed = 0);
                    let response = match service.handle(accessor, request).await? {
                        Ok(response) => response,
                        Err(code) => bail!("the component answered with error code {code:?}"),
                    };
                    let observed = accessor.with(|mut store| store.data_mut().observed);
                    let response = accessor
                        .with(|mut store| response.into_http(&mut store, request_done))
                        .map_err(anyhow::Error::from)?;
                    Ok((response, crate::kv::Ticket(observed)))
                }
                .await;
                match answer {
                    Ok((response, ticket)) => {
                        // The guest writes the body through this task's event
                        // loop, so the task lives until the body is taken.
                        let (done_tx, done_rx) = oneshot::channel::<()>();
                        let response = response.map(|body| body::notify_on_drop(body, done_tx));
                        if tx.send(Ok((response, ticket))).is_ok() {
                            let _ = done_rx.await;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
                // The instance is free for the next request now.
                drop(permit);
            })
        }),
    );
    let (response, ticket) = rx.await.map_err(|_| anyhow!("the component instance died before answering (trap)"))??;
    let (parts, body) = response.into_parts();
    let body = body::read_response_body(body).await?;
    stores.wait(ticket).await.map_err(|e| anyhow!("store: {e}"))?;
    Ok(hyper::Response::from_parts(parts, body))
}
