//! A minimal HTTP/1.1 client over one keep-alive connection: what the
//! end-to-end tests, the `--tick` sweeper and the benchmark use to talk to a
//! host on loopback.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use std::net::SocketAddr;
use tokio::net::TcpStream;

pub struct Client {
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
        Client { addr, sender: None }
    }

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

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply> {
        let mut builder = http::Request::builder().method(method).uri(path).header("host", self.addr.to_string());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let body: Bytes = body.into();
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

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Reply> {
        self.send("GET", path, headers, Bytes::new()).await
    }

    pub async fn post(&mut self, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Result<Reply> {
        self.send("POST", path, headers, body).await
    }
}
