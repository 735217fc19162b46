//! A minimal HTTP/1.1 client over one keep-alive connection, and the
//! contract's client side built on it: what the end-to-end tests, the
//! `--tick` sweeper and the bench (`hongbao-bench`) use to talk to a server
//! on loopback (this host or `spin up`).

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

pub struct Client {
    /// One connection per host; requests take turns (`spread`).
    hosts: Vec<Connection>,
    next: usize,
}

struct Connection {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The contract's error code, if this is an error body.
    pub fn code(&self) -> Option<String> {
        self.json()["error"]["code"].as_str().map(str::to_owned)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client::spread(&[addr])
    }

    /// A client of several hosts serving one dataset: each request goes to
    /// the next host in turn, as a load balancer would send them.
    pub fn spread(addrs: &[SocketAddr]) -> Client {
        assert!(!addrs.is_empty(), "a client needs a host");
        Client { hosts: addrs.iter().map(|&addr| Connection { addr, sender: None }).collect(), next: 0 }
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply> {
        let host = self.next % self.hosts.len();
        self.next = self.next.wrapping_add(1);
        self.hosts[host].send(method, path, headers, body.into()).await
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Reply> {
        self.send("GET", path, headers, Bytes::new()).await
    }

    pub async fn post(&mut self, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Result<Reply> {
        self.send("POST", path, headers, body).await
    }
}

impl Connection {
    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(self.addr).await.with_context(|| format!("connecting to {}", self.addr))?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("connected"))
    }

    async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: Bytes) -> Result<Reply> {
        let mut builder = http::Request::builder().method(method).uri(path).header("host", self.addr.to_string());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if !body.is_empty() {
            builder = builder.header("content-type", "application/json");
        }
        let request = builder.body(Full::new(body))?;
        let response = match self.try_send(request.clone()).await? {
            Ok(r) => r,
            // The server closed the connection before our request went out (it
            // may, e.g. after answering 413 without reading a body): the request
            // was not sent, so sending it on a new connection is safe.
            Err(e) if e.is_canceled() || e.is_closed() => {
                self.sender = None;
                self.try_send(request).await?.inspect_err(|_| self.sender = None)?
            }
            Err(e) => {
                self.sender = None;
                return Err(e.into());
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
    }

    /// Connection errors are errors; what hyper says about the request is the inner result.
    async fn try_send(
        &mut self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<Result<hyper::Response<hyper::body::Incoming>, hyper::Error>> {
        let sender = self.connect().await?;
        if let Err(e) = sender.ready().await {
            return Ok(Err(e));
        }
        Ok(sender.send_request(request).await)
    }
}

/// The secrets a client of the contract signs with: user tokens
/// (`auth_secret`) and payment callbacks (`payment_secret`).
#[derive(Debug, Clone, Copy)]
pub struct Secrets<'a> {
    pub auth: &'a str,
    pub payment: &'a str,
}

/// The `authorization` header of `user`, with a token valid for an hour.
pub fn bearer(auth_secret: &str, user: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    format!("Bearer {}", hongbao::auth::sign_user_token(auth_secret, user, hongbao::Timestamp(now + 3600)))
}

/// A packet wrapped and paid, as its wrap answer described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paid {
    pub id: String,
    pub total_fen: u64,
    pub count: u32,
}

/// Wraps a packet as `sender` and pays it with a signed callback; an
/// answer other than 201 then 200, or a wrap answer that does not hold what
/// was asked, is an error.
pub async fn paid_packet(
    client: &mut Client,
    secrets: Secrets<'_>,
    sender: &str,
    kind: &str,
    total_fen: u64,
    count: u32,
) -> Result<Paid> {
    let request_id = format!("r-{:016x}", rand::random::<u64>());
    let body = json!({"request_id": request_id, "kind": kind, "total_fen": total_fen, "count": count}).to_string();
    // Wrap and payment are idempotent (request_id, payment_id): a 429 or 503
    // (Spin's SQLite store answers "database is locked" under load) is sent
    // again after its Retry-After, and a wrap that had written answers 200.
    let authorization = bearer(secrets.auth, sender);
    let wrapped =
        final_answer(client, "POST", "/v1/packets", &[("authorization", &authorization)], Bytes::from(body)).await?;
    ensure!(
        wrapped.status == 201 || wrapped.status == 200,
        "wrap: {} {}",
        wrapped.status,
        String::from_utf8_lossy(&wrapped.body)
    );
    #[derive(Deserialize)]
    struct Wrapped {
        id: String,
        total_fen: u64,
        count: u32,
    }
    let view: Wrapped = serde_json::from_slice(&wrapped.body).context("wrap answer")?;
    let packet = Paid { id: view.id, total_fen: view.total_fen, count: view.count };
    ensure!((packet.total_fen, packet.count) == (total_fen, count), "wrap answered {packet:?}, not what was asked");
    let (path, signature, payment) = payment_callback(secrets.payment, &packet.id, total_fen);
    let paid =
        final_answer(client, "POST", &path, &[("x-payment-signature", &signature)], Bytes::from(payment)).await?;
    ensure!(paid.status == 200, "pay: {} {}", paid.status, String::from_utf8_lossy(&paid.body));
    Ok(packet)
}

/// The payment system's signed callback paying packet `id` for `amount_fen`
/// (payment_id `pay-{id}`): its path, `x-payment-signature` and body.
pub fn payment_callback(payment_secret: &str, id: &str, amount_fen: u64) -> (String, String, String) {
    let body =
        json!({"packet_id": id, "payment_id": format!("pay-{id}"), "amount_fen": amount_fen, "status": "success"})
            .to_string();
    let signature = hongbao::auth::sign_payment(payment_secret, body.as_bytes());
    (format!("/v1/packets/{id}/payment"), signature, body)
}

/// What one user ended with after grab → open.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The claim the server answered with (its JSON, as sent).
    Claimed(Value),
    Exhausted,
}

/// One user's whole attempt at a packet, as [`grab_and_open`] saw it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: Outcome,
    /// `429` answers honoured.
    pub busy: u32,
    /// Grabs and opens sent.
    pub requests: u32,
    /// The latency of each open answered 200 or 410 (at most one).
    pub opens: Vec<Duration>,
}

/// A client's attempt at packet `id` as the user of `authorization`: grab,
/// open, and on `429` wait for its Retry-After and send again. Ends with the
/// claim (also when the grab says `already_claimed`) or `exhausted`; any
/// other answer is an error.
pub async fn grab_and_open(client: &mut Client, authorization: &str, id: &str) -> Result<Attempt> {
    let auth = [("authorization", authorization)];
    let mut attempt = Attempt { outcome: Outcome::Exhausted, busy: 0, requests: 0, opens: Vec::new() };
    loop {
        attempt.requests += 1;
        let grabbed = client.post(&format!("/v1/packets/{id}/grab"), &auth, "").await?;
        match (grabbed.status, grabbed.code().as_deref()) {
            (200, _) => {}
            (429, _) => {
                attempt.busy += 1;
                wait_retry_after(&grabbed).await?;
                continue;
            }
            (410, Some("exhausted")) => return Ok(attempt),
            (409, Some("already_claimed")) => {
                attempt.outcome = Outcome::Claimed(grabbed.json()["claim"].clone());
                return Ok(attempt);
            }
            other => bail!("grab answered {other:?}: {}", String::from_utf8_lossy(&grabbed.body)),
        }
        let ticket = grabbed.json()["ticket"].as_str().context("grab answer without a ticket")?.to_owned();
        let body = json!({ "ticket": ticket }).to_string();
        loop {
            attempt.requests += 1;
            let started = Instant::now();
            let opened = client.post(&format!("/v1/packets/{id}/open"), &auth, body.clone()).await?;
            match (opened.status, opened.code().as_deref()) {
                (200, _) => {
                    attempt.opens.push(started.elapsed());
                    attempt.outcome = Outcome::Claimed(opened.json()["claim"].clone());
                    return Ok(attempt);
                }
                (429, _) => {
                    attempt.busy += 1;
                    wait_retry_after(&opened).await?;
                }
                (410, Some("exhausted")) => {
                    attempt.opens.push(started.elapsed());
                    return Ok(attempt);
                }
                other => bail!("open answered {other:?}: {}", String::from_utf8_lossy(&opened.body)),
            }
        }
    }
}

/// Waits as long as a retryable answer (`429`, `503`) says; one without
/// Retry-After breaks the contract.
pub async fn wait_retry_after(reply: &Reply) -> Result<()> {
    let seconds: u64 = reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("a {} without Retry-After", reply.status))?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    Ok(())
}

/// One run of `POST /v1/admin/settle`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Settled {
    pub credited: u64,
    pub credited_fen: u64,
    /// Packets this run could not finish (the next run retries them).
    pub errors: Vec<Value>,
    /// SETs whose store failed this run (the next run retries them).
    pub unreachable_sets: Vec<u32>,
}

/// `GET /v1/admin/reconcile?day=…`: every field the contract requires, none
/// defaulted.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Reconciliation {
    pub day: String,
    pub packets: u64,
    pub total_fen: u64,
    pub claimed_fen: u64,
    pub refunded_fen: u64,
    pub outstanding_fen: u64,
    pub credited_fen: u64,
    pub mismatches: Vec<Value>,
}

/// What [`settle_and_reconcile`] found: every settle run in order (the last
/// one credited nothing and failed nowhere), then the day's reconciliation.
#[derive(Debug, Clone)]
pub struct Books {
    pub settled: Vec<Settled>,
    pub report: Reconciliation,
}

/// The audit after a run: settle until a run credits nothing and reports no
/// error and no unreachable SET, then reconcile `day`; the books must show no mismatch and
/// credited = claimed + refunded (every claim and refund in a wallet).
/// Retryable answers (`429`, `503`) are sent again after their Retry-After.
pub async fn settle_and_reconcile(client: &mut Client, admin_token: &str, day: hongbao::Day) -> Result<Books> {
    // A run that skipped a SET or a packet (a store call failed) is run
    // again; on a store failing 2% of calls a clean run is rare (each of its
    // ~300 calls must succeed), so the bound is for a store that never heals.
    const MAX_SETTLE_RUNS: usize = 500;
    let auth = format!("Bearer {admin_token}");
    let mut settled = Vec::new();
    loop {
        let reply = final_answer(client, "POST", "/v1/admin/settle", &[("authorization", &auth)], Bytes::new()).await?;
        ensure!(reply.status == 200, "settle: {} {}", reply.status, String::from_utf8_lossy(&reply.body));
        let run: Settled = serde_json::from_slice(&reply.body).context("settle answer")?;
        let done = run.credited == 0 && run.errors.is_empty() && run.unreachable_sets.is_empty();
        settled.push(run);
        if done {
            break;
        }
        ensure!(settled.len() < MAX_SETTLE_RUNS, "settle still busy after {MAX_SETTLE_RUNS} runs: {settled:?}");
    }
    let path = format!("/v1/admin/reconcile?day={day}");
    let reply = final_answer(client, "GET", &path, &[("authorization", &auth)], Bytes::new()).await?;
    ensure!(reply.status == 200, "reconcile: {} {}", reply.status, String::from_utf8_lossy(&reply.body));
    let report: Reconciliation = serde_json::from_slice(&reply.body).context("reconcile answer")?;
    if !report.mismatches.is_empty() || report.credited_fen != report.claimed_fen + report.refunded_fen {
        bail!("INVARIANT VIOLATION in reconciliation: {report:?}");
    }
    Ok(Books { settled, report })
}

/// Sends until the answer is not a retryable one (a bounded number of times).
async fn final_answer(
    client: &mut Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Reply> {
    const MAX_TRIES: usize = 100;
    for _ in 0..MAX_TRIES {
        let reply = client.send(method, path, headers, body.clone()).await?;
        if reply.status != 429 && reply.status != 503 {
            return Ok(reply);
        }
        wait_retry_after(&reply).await?;
    }
    bail!("{method} {path}: still retryable after {MAX_TRIES} tries")
}
