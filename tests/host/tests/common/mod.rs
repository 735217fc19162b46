//! The end-to-end harness: builds the components (as `hongbao-host build`
//! does), starts the real `hongbao-host` binary on a free loopback port with
//! its own state, and talks the HTTP contract to it.
#![allow(dead_code)]

#[allow(unused_imports)] // each test binary uses some of them
pub use hongbao_host::client::Outcome;
use hongbao_host::client::{self, Client, Reply, Secrets};
use hongbao_host::external::{self, SpinConfig};
#[allow(unused_imports)] // each test binary uses some of them
pub use hongbao_host::external::{RedisServer, SpinUp, TempDir};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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

    /// The components' wall clock is `clock` (`--clock-file`).
    pub fn clock(self, clock: &Clock) -> HostSpec {
        self.arg("--clock-file").arg(clock.path.to_str().unwrap())
    }
}

/// A host's logical clock: the file behind `--clock-file`, set and moved by
/// the test. It starts at noon (UTC) of the day before today: in the past,
/// so tokens signed for the real time stay valid, and hours from a day's
/// boundary, so a test's packets share one day.
pub struct Clock {
    _dir: TempDir,
    path: PathBuf,
    now: AtomicI64,
}

impl Clock {
    pub fn new() -> Clock {
        let dir = TempDir::new("clock").unwrap();
        let path = dir.0.join("now");
        let noon_yesterday = hongbao::Timestamp(now()).day().minus_days(1).start().plus_seconds(12 * 3600).0;
        let clock = Clock { _dir: dir, path, now: AtomicI64::new(0) };
        clock.set(noon_yesterday);
        clock
    }

    pub fn now(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    /// The UTC day the components are in.
    pub fn day(&self) -> hongbao::Day {
        hongbao::Timestamp(self.now()).day()
    }

    pub fn set(&self, unix_seconds: i64) {
        hongbao_host::clock::write(&self.path, unix_seconds).unwrap();
        self.now.store(unix_seconds, Ordering::SeqCst);
    }

    pub fn advance(&self, seconds: i64) {
        self.set(self.now() + seconds);
    }

    /// From now on the clock also moves a second per real second (admission
    /// windows turn, so a 429's Retry-After finds a new one), until the
    /// returned task is aborted; the test may still move it on by hand.
    pub fn run_at_real_pace(clock: &Arc<Clock>) -> tokio::task::JoinHandle<()> {
        let clock = Arc::clone(clock);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                clock.advance(1);
            }
        })
    }
}

/// A running `hongbao-host up` process; killed when dropped.
pub struct HostProcess {
    child: Child,
    pub addr: SocketAddr,
    pub log: external::Log,
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
        let log = external::Log::default();
        external::collect(&log, child.stderr.take().unwrap());
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

    /// The first log line containing `text`, waited for: a thread reads the
    /// log, so a line may come a moment after the event it reports (a
    /// generous limit, so a slow machine is never the reason it fails).
    pub async fn log_line(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(text)) {
                return line.clone();
            }
            assert!(std::time::Instant::now() < deadline, "no log line with {text:?}: {:?}", self.log.lock().unwrap());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
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

pub const SECRETS: Secrets<'static> = Secrets { auth: AUTH, payment: PAYMENT };

pub fn bearer(user: &str) -> String {
    client::bearer(AUTH, user)
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
        client::paid_packet(&mut self.client, SECRETS, sender, kind, total, count).await.unwrap().id
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

/// A client's whole attempt at a packet (`client::grab_and_open`): the
/// outcome and how many 429s it saw.
pub async fn grab_and_open(api: &mut Api, id: &str, user: &str) -> anyhow::Result<(Outcome, u32)> {
    let attempt = client::grab_and_open(&mut api.client, &bearer(user), id).await?;
    Ok((attempt.outcome, attempt.busy))
}

/// Where the contract suite runs: this project's host, the host playing
/// Spin 4.0.2's Redis store (`--kv-compat spin-redis`), two hosts sharing
/// per-SET Redis servers, or the real Spin binary with its default SQLite
/// store or with a Redis store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Host,
    HostAsSpinRedis,
    TwoHostsOnRedis,
    Spin,
    SpinRedis,
}

/// A running target; its processes are stopped when dropped.
pub struct Server {
    /// The first host's address (the only one, but for `TwoHostsOnRedis`).
    pub addr: SocketAddr,
    pub addrs: Vec<SocketAddr>,
    _hosts: Vec<HostProcess>,
    _spin: Option<SpinUp>,
    _fleet: Option<RedisFleet>,
    _redis: Option<RedisServer>,
}

impl Server {
    fn of_hosts(hosts: Vec<HostProcess>, fleet: Option<RedisFleet>) -> Server {
        let addrs: Vec<SocketAddr> = hosts.iter().map(|h| h.addr).collect();
        Server { addr: addrs[0], addrs, _hosts: hosts, _spin: None, _fleet: fleet, _redis: None }
    }

    /// A client of the contract whose requests take turns over every host.
    pub fn api(&self) -> Api {
        Api { client: Client::spread(&self.addrs) }
    }

    /// The URLs of the Redis servers of `TwoHostsOnRedis` (else none).
    pub fn redis_urls(&self) -> Vec<String> {
        self._fleet.iter().flat_map(|fleet| fleet.servers.iter().map(RedisServer::url)).collect()
    }
}

/// Redis servers for the per-SET layout (spin.sets.toml), durable (AOF,
/// fsync on every write), and the runtime config that maps the labels to
/// them: by default SETs 0-4 on the first, SETs 5-9 and `users` on the second.
pub struct RedisFleet {
    pub servers: Vec<RedisServer>,
    pub runtime_config: PathBuf,
    _dir: TempDir,
}

impl RedisFleet {
    /// `None` (after a line saying so) where there is no redis-server.
    pub fn start() -> Option<RedisFleet> {
        RedisFleet::start_on(2, |label| usize::from(label >= 5))
    }

    /// SETs 0-4 on the first server, SETs 5-9 on the second, `users` on a
    /// third, so either SET group can die alone; a fourth server replicates
    /// the second (`replicaof`) and is the 5-9 replica labels' store.
    pub fn start_apart() -> Option<RedisFleet> {
        RedisFleet::start_on(3, |label| match label {
            0..5 => 0,
            5..10 => 1,
            _ => 2,
        })
        .map(|mut fleet| {
            let replica = RedisServer::start_replica_of(&fleet.servers[1]).unwrap();
            fleet.write_runtime_config(|label, replica_label| match (label, replica_label) {
                (5..10, true) => replica.url(),
                (0..5, _) => fleet.servers[0].url(),
                (5..10, false) => fleet.servers[1].url(),
                _ => fleet.servers[2].url(),
            });
            fleet.servers.push(replica);
            fleet
        })
    }

    /// `servers` servers, the per-SET layout's label `i` (and its replica
    /// label) on `server_of(i)`.
    fn start_on(servers: usize, server_of: impl Fn(usize) -> usize) -> Option<RedisFleet> {
        if !RedisServer::available() {
            eprintln!("skipped on Redis: no redis-server binary (apt-get install redis-server)");
            return None;
        }
        let servers: Vec<RedisServer> = (0..servers).map(|_| RedisServer::start_durable().unwrap()).collect();
        let dir = TempDir::new("fleet").unwrap();
        let runtime_config = dir.0.join("runtime-config.toml");
        let fleet = RedisFleet { servers, runtime_config, _dir: dir };
        fleet.write_runtime_config(|label, _| fleet.servers[server_of(label)].url());
        Some(fleet)
    }

    /// The runtime config: label `i` of the per-SET layout (or its replica
    /// label, when the flag says so) on the Redis at `url_of(i, replica)`.
    fn write_runtime_config(&self, url_of: impl Fn(usize, bool) -> String) {
        let layout = hongbao::config::KvLayout::PerSet;
        let mut text = String::new();
        for (replica, labels) in [(false, layout.labels()), (true, layout.replica_labels())] {
            for (i, label) in labels.iter().enumerate() {
                let url = url_of(i, replica);
                text.push_str(&format!("[key_value_store.{label}]\ntype = \"redis\"\nurl = \"{url}\"\n\n"));
            }
        }
        std::fs::write(&self.runtime_config, text).unwrap();
    }

    /// `spec` on the per-SET manifest, served from this fleet.
    pub fn host_spec(&self, spec: HostSpec) -> HostSpec {
        HostSpec { manifest: root().join("spin.sets.toml"), ..spec }
            .arg("--runtime-config-file")
            .arg(self.runtime_config.to_str().unwrap())
    }
}

impl Target {
    /// Starts `spec` on this target. `None` when the target is real Spin and
    /// no Spin binary is available (after one line saying how to enable it).
    pub fn start(self, spec: HostSpec) -> Option<Server> {
        // Spin 4.0.2's Redis get-many fails: read one key at a time there.
        let spec = match self {
            Target::HostAsSpinRedis | Target::SpinRedis => spec.var("kv_batch_reads", "false"),
            Target::Host | Target::TwoHostsOnRedis | Target::Spin => spec,
        };
        match self {
            Target::Host | Target::HostAsSpinRedis => {
                let spec = if self == Target::Host { spec } else { spec.arg("--kv-compat").arg("spin-redis") };
                Some(Server::of_hosts(vec![HostProcess::start(&spec)], None))
            }
            Target::TwoHostsOnRedis => {
                let fleet = RedisFleet::start()?;
                let spec = fleet.host_spec(spec);
                let hosts = vec![HostProcess::start(&spec), HostProcess::start(&spec)];
                Some(Server::of_hosts(hosts, Some(fleet)))
            }
            Target::Spin | Target::SpinRedis => {
                let bin = spin_binary_or_skip()?;
                let redis = (self == Target::SpinRedis).then(|| RedisServer::start().expect("redis-server starts"));
                let spin = spin_up(&bin, &spec, redis.as_ref());
                Some(Server {
                    addr: spin.addr,
                    addrs: vec![spin.addr],
                    _hosts: Vec::new(),
                    _spin: Some(spin),
                    _fleet: None,
                    _redis: redis,
                })
            }
        }
    }
}

/// `SPIN_BIN` (relative to the repository), else `spin` on PATH.
pub fn spin_binary() -> Option<PathBuf> {
    external::spin_binary(&root())
}

/// The Spin binary, or `None` after one line saying how to enable the
/// tests that need it.
pub fn spin_binary_or_skip() -> Option<PathBuf> {
    let bin = spin_binary();
    if bin.is_none() {
        eprintln!("skipped on real Spin: {}", external::NO_SPIN);
    }
    bin
}

/// `spin up` serving `spec`'s manifest from `spec`'s state directory, or
/// one of its own (and from `redis` when given one).
pub fn spin_up(bin: &Path, spec: &HostSpec, redis: Option<&RedisServer>) -> SpinUp {
    ensure_built(&spec.manifest);
    let config = SpinConfig {
        bin,
        manifest: &spec.manifest,
        state_dir: spec.state_dir.as_deref(),
        env: &spec.env,
        redis: redis.map(|r| r.addr),
    };
    SpinUp::start(&config).expect("spin up serves")
}
