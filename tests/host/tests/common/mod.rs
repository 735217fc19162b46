//! The end-to-end harness: builds the components (as `hongbao-host build`
//! does), starts the real `hongbao-host` binary on a free loopback port with
//! its own state, and talks the HTTP contract to it.
#![allow(dead_code)]

use hongbao_host::client::{Client, Reply};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub const AUTH: &str = "e2e-auth-secret";
pub const PAYMENT: &str = "e2e-payment-secret";
pub const ADMIN: &str = "e2e-admin-token";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn app_manifest() -> PathBuf {
    root().join("spin.toml")
}

/// Builds every component of `manifest` once per test binary.
pub fn ensure_built(manifest: &Path) {
    static BUILT: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if !built.iter().any(|m| m == manifest) {
        let m = hongbao_host::manifest::Manifest::load(manifest).unwrap();
        hongbao_host::build::build_all(&m, true).expect("components build");
        built.push(manifest.to_owned());
    }
}

/// A scratch directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hongbao-e2e-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How to start a host.
pub struct HostSpec {
    pub manifest: PathBuf,
    /// `None`: `--memory`.
    pub state_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
}

impl HostSpec {
    pub fn app() -> HostSpec {
        HostSpec {
            manifest: app_manifest(),
            state_dir: None,
            env: vec![
                ("SPIN_VARIABLE_AUTH_SECRET".into(), AUTH.into()),
                ("SPIN_VARIABLE_PAYMENT_SECRET".into(), PAYMENT.into()),
                ("SPIN_VARIABLE_ADMIN_TOKEN".into(), ADMIN.into()),
            ],
            args: vec![],
        }
    }

    pub fn var(mut self, name: &str, value: &str) -> HostSpec {
        self.env.push((format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()), value.into()));
        self
    }

    pub fn durable(mut self, dir: &Path) -> HostSpec {
        self.state_dir = Some(dir.to_owned());
        self
    }

    pub fn arg(mut self, arg: &str) -> HostSpec {
        self.args.push(arg.into());
        self
    }
}

/// A running `hongbao-host up` process; killed when dropped.
pub struct HostProcess {
    child: Child,
    pub addr: SocketAddr,
    pub log: std::sync::Arc<Mutex<Vec<String>>>,
}

impl HostProcess {
    pub fn start(spec: &HostSpec) -> HostProcess {
        ensure_built(&spec.manifest);
        let mut command = Command::new(env!("CARGO_BIN_EXE_hongbao-host"));
        command.arg("-f").arg(&spec.manifest).args(["up", "--listen", "127.0.0.1:0"]);
        match &spec.state_dir {
            Some(dir) => command.arg("--state-dir").arg(dir),
            None => command.arg("--memory"),
        };
        command.args(&spec.args).envs(spec.env.iter().cloned()).env("RUST_BACKTRACE", "0");
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("hongbao-host starts");
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let err_log = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                err_log.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("hongbao-host exited before listening: {:?}", log.lock().unwrap());
            }
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                break addr.parse().unwrap();
            }
        };
        std::thread::spawn(move || for _ in stdout.lines() {});
        HostProcess { child, addr, log }
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        self.child.wait().unwrap()
    }

    pub fn log_contains(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn bearer(user: &str) -> String {
    format!("Bearer {}", hongbao::auth::sign_user_token(AUTH, user, hongbao::Timestamp(now() + 3600)))
}

/// The contract, one call per operation, over one connection.
pub struct Api {
    pub client: Client,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api { client: Client::new(addr) }
    }

    pub async fn wrap(&mut self, user: &str, body: Value) -> Reply {
        self.client.post("/v1/packets", &[("authorization", &bearer(user))], body.to_string()).await.unwrap()
    }

    /// Wraps and pays a packet; returns its id.
    pub async fn paid_packet(&mut self, sender: &str, kind: &str, total: u64, count: u32) -> String {
        let rid = format!("r-{}-{}", now(), rand_suffix());
        let wrapped =
            self.wrap(sender, json!({"request_id": rid, "kind": kind, "total_fen": total, "count": count})).await;
        assert_eq!(wrapped.status, 201, "{:?}", wrapped.json());
        let id = wrapped.json()["id"].as_str().unwrap().to_owned();
        let paid = self.pay(&id, &format!("pay-{id}"), total).await;
        assert_eq!(paid.status, 200, "{:?}", paid.json());
        id
    }

    pub async fn pay(&mut self, id: &str, payment_id: &str, amount: u64) -> Reply {
        let body =
            json!({"packet_id": id, "payment_id": payment_id, "amount_fen": amount, "status": "success"}).to_string();
        let signature = hongbao::auth::sign_payment(PAYMENT, body.as_bytes());
        self.client
            .post(&format!("/v1/packets/{id}/payment"), &[("x-payment-signature", &signature)], body)
            .await
            .unwrap()
    }

    pub async fn grab(&mut self, id: &str, user: &str) -> Reply {
        self.client.post(&format!("/v1/packets/{id}/grab"), &[("authorization", &bearer(user))], "").await.unwrap()
    }

    pub async fn open(&mut self, id: &str, user: &str, ticket: &str) -> Reply {
        let body = json!({"ticket": ticket}).to_string();
        self.client.post(&format!("/v1/packets/{id}/open"), &[("authorization", &bearer(user))], body).await.unwrap()
    }

    pub async fn query(&mut self, id: &str, user: &str) -> Reply {
        self.client.get(&format!("/v1/packets/{id}"), &[("authorization", &bearer(user))]).await.unwrap()
    }

    pub async fn user(&mut self, what: &str, user: &str) -> Reply {
        self.client.get(&format!("/v1/users/me/{what}"), &[("authorization", &bearer(user))]).await.unwrap()
    }

    pub async fn admin(&mut self, method: &str, path: &str) -> Reply {
        let auth = format!("Bearer {ADMIN}");
        self.client.send(method, path, &[("authorization", &auth)], "").await.unwrap()
    }
}

pub fn rand_suffix() -> u64 {
    use rand::RngExt;
    rand::rng().random()
}

/// What one client ended with after grab → open, honouring 429s.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Claimed(Value),
    Exhausted,
}

/// A client's whole attempt at a packet: grab, open, and on 429 wait for
/// Retry-After and try again. Returns the outcome and how many 429s it saw.
pub async fn grab_and_open(api: &mut Api, id: &str, user: &str) -> anyhow::Result<(Outcome, u32)> {
    let mut busy = 0;
    loop {
        let grabbed =
            api.client.post(&format!("/v1/packets/{id}/grab"), &[("authorization", &bearer(user))], "").await?;
        match (grabbed.status, grabbed.code().as_deref()) {
            (200, _) => {}
            (429, _) => {
                busy += 1;
                wait_retry_after(&grabbed).await;
                continue;
            }
            (410, Some("exhausted")) => return Ok((Outcome::Exhausted, busy)),
            (409, Some("already_claimed")) => return Ok((Outcome::Claimed(grabbed.json()["claim"].clone()), busy)),
            other => anyhow::bail!("grab: unexpected {other:?} {}", String::from_utf8_lossy(&grabbed.body)),
        }
        let ticket = grabbed.json()["ticket"].as_str().unwrap().to_owned();
        loop {
            let body = json!({"ticket": ticket}).to_string();
            let opened =
                api.client.post(&format!("/v1/packets/{id}/open"), &[("authorization", &bearer(user))], body).await?;
            match (opened.status, opened.code().as_deref()) {
                (200, _) => return Ok((Outcome::Claimed(opened.json()["claim"].clone()), busy)),
                (429, _) => {
                    busy += 1;
                    wait_retry_after(&opened).await;
                }
                (410, Some("exhausted")) => return Ok((Outcome::Exhausted, busy)),
                other => anyhow::bail!("open: unexpected {other:?} {}", String::from_utf8_lossy(&opened.body)),
            }
        }
    }
}

async fn wait_retry_after(reply: &Reply) {
    let seconds: u64 = reply.header("retry-after").and_then(|v| v.parse().ok()).expect("429 carries Retry-After");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}

/// Where the contract suite runs: this project's host, the host playing
/// Spin 4.0.2's Redis store (`--kv-compat spin-redis`), or the real Spin
/// binary with its default SQLite store or with a Redis store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Host,
    HostAsSpinRedis,
    Spin,
    SpinRedis,
}

/// A running target; its processes are stopped when dropped.
pub struct Server {
    pub addr: SocketAddr,
    _host: Option<HostProcess>,
    _spin: Option<SpinProcess>,
    _redis: Option<RedisServer>,
}

impl Target {
    /// Starts `spec` on this target. `None` when the target is real Spin and
    /// no Spin binary is available (after one line saying how to enable it).
    pub fn start(self, spec: HostSpec) -> Option<Server> {
        // Spin 4.0.2's Redis get-many fails: read one key at a time there.
        let spec = match self {
            Target::HostAsSpinRedis | Target::SpinRedis => spec.var("kv_batch_reads", "false"),
            Target::Host | Target::Spin => spec,
        };
        match self {
            Target::Host | Target::HostAsSpinRedis => {
                let spec = if self == Target::Host { spec } else { spec.arg("--kv-compat").arg("spin-redis") };
                let host = HostProcess::start(&spec);
                Some(Server { addr: host.addr, _host: Some(host), _spin: None, _redis: None })
            }
            Target::Spin | Target::SpinRedis => {
                let bin = spin_binary_or_skip()?;
                let redis = (self == Target::SpinRedis).then(RedisServer::start);
                let spin = SpinProcess::start(&bin, &spec, redis.as_ref());
                Some(Server { addr: spin.addr, _host: None, _spin: Some(spin), _redis: redis })
            }
        }
    }
}

/// `SPIN_BIN`, else `spin` on PATH.
pub fn spin_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("SPIN_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        let bin = if bin.is_relative() { root().join(bin) } else { bin };
        return bin.exists().then_some(bin);
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join("spin")).find(|p| p.is_file())
}

/// The Spin binary, or `None` after one line saying how to enable the
/// tests that need it.
pub fn spin_binary_or_skip() -> Option<PathBuf> {
    let bin = spin_binary();
    if bin.is_none() {
        eprintln!(
            "skipped on real Spin: no Spin binary (set SPIN_BIN, e.g. SPIN_BIN=../shared/bin/spin, or put spin on PATH)"
        );
    }
    bin
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Reads a child's output into a shared log, line by line.
fn collect(log: &std::sync::Arc<Mutex<Vec<String>>>, out: impl std::io::Read + Send + 'static) {
    let log = std::sync::Arc::clone(log);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            log.lock().unwrap().push(line);
        }
    });
}

/// A `spin up` process serving `spec`'s manifest from `spec`'s state
/// directory, or one of its own (and a Redis store when given one); killed
/// when dropped.
pub struct SpinProcess {
    child: Child,
    pub addr: SocketAddr,
    pub log: std::sync::Arc<Mutex<Vec<String>>>,
    _state: Option<TempDir>,
}

impl SpinProcess {
    pub fn start(bin: &Path, spec: &HostSpec, redis: Option<&RedisServer>) -> SpinProcess {
        ensure_built(&spec.manifest);
        let own_state = spec.state_dir.is_none().then(|| TempDir::new("spin"));
        let state_dir = spec.state_dir.clone().unwrap_or_else(|| own_state.as_ref().unwrap().0.clone());
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut command = Command::new(bin);
        command.arg("up").arg("-f").arg(&spec.manifest).arg("--listen").arg(addr.to_string());
        command.arg("--state-dir").arg(&state_dir);
        if let Some(redis) = redis {
            let config = state_dir.join("runtime-config.toml");
            let text = format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://{}\"\n", redis.addr);
            std::fs::write(&config, text).unwrap();
            command.arg("--runtime-config-file").arg(config);
        }
        command.envs(spec.env.iter().cloned()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // `spin up` runs the trigger as a child process: a group of their
        // own lets Drop stop both.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().expect("spin starts");
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        collect(&log, child.stdout.take().unwrap());
        collect(&log, child.stderr.take().unwrap());
        let mut spin = SpinProcess { child, addr, log, _state: own_state };
        spin.wait_until_serving();
        spin
    }

    /// Spin compiles every component before it listens: poll /healthz.
    fn wait_until_serving(&mut self) {
        let started = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("spin up exited ({status}): {:?}", self.log.lock().unwrap());
            }
            if let Ok(mut stream) = std::net::TcpStream::connect(self.addr) {
                use std::io::{Read, Write};
                let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "spin up never served: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SpinProcess {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// A `redis-server` of this test's own on a free loopback port, keeping
/// nothing on disk; stopped when dropped.
pub struct RedisServer {
    child: Child,
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = TempDir::new("redis");
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (apt-get install redis-server)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = std::time::Instant::now();
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
                use std::io::{Read, Write};
                let mut pong = [0; 7];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut pong).is_ok()
                    && &pong == b"+PONG\r\n"
                {
                    break;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("redis-server exited: {status}");
            }
            assert!(started.elapsed() < Duration::from_secs(30), "redis-server never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisServer { child, addr, _dir: dir }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
