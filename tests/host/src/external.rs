//! The processes this host is measured and tested beside: the real `spin up`
//! serving the same manifest (with its default SQLite store or a Redis
//! store), a `redis-server` of our own on a free loopback port, and scratch
//! directories. The bench and the end-to-end tests both start them from here.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A scratch directory under the system's temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> std::io::Result<TempDir> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hongbao-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback address (bound, read, released) for a server that takes
/// its port on the command line.
pub fn free_loopback_addr() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// The Spin CLI to use: `SPIN_BIN` (relative to `base` when relative), else
/// `spin` on PATH; `None` when neither names an existing file.
pub fn spin_binary(base: &Path) -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("SPIN_BIN").filter(|b| !b.is_empty()) {
        let bin = base.join(bin);
        return bin.is_file().then_some(bin);
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join("spin")).find(|p| p.is_file())
}

/// The line that says how to enable what needs a Spin binary.
pub const NO_SPIN: &str = "no Spin binary (set SPIN_BIN, e.g. SPIN_BIN=../shared/bin/spin, or put spin on PATH)";

/// Lines a child process wrote, kept for error messages and tests.
pub type Log = Arc<Mutex<Vec<String>>>;

/// Reads a child's output into `log`, line by line, on a thread of its own.
pub fn collect(log: &Log, out: impl Read + Send + 'static) {
    let log = Arc::clone(log);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
}

/// Does `addr` answer `GET /healthz` with 200?
fn healthz_answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: hongbao\r\nconnection: close\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// How to start `spin up`.
pub struct SpinConfig<'a> {
    pub bin: &'a Path,
    pub manifest: &'a Path,
    /// Spin's state directory (its SQLite store lives there); `None`: a
    /// scratch directory of its own.
    pub state_dir: Option<&'a Path>,
    /// Environment, e.g. `SPIN_VARIABLE_<NAME>` application variables.
    pub env: &'a [(String, String)],
    /// Serve the `default` store from this Redis instead of SQLite (a
    /// runtime config written into the state directory).
    pub redis: Option<SocketAddr>,
}

/// A running `spin up`, in a process group of its own (it runs its trigger
/// as a child process), killed as a group when dropped.
pub struct SpinUp {
    child: Child,
    pub addr: SocketAddr,
    pub log: Log,
    _scratch: Option<TempDir>,
}

impl SpinUp {
    /// Starts Spin and waits until it answers `/healthz` (it compiles every
    /// component before it listens: up to three minutes on a slow machine).
    /// Blocks the calling thread while it waits.
    pub fn start(config: &SpinConfig) -> Result<SpinUp> {
        let scratch = match config.state_dir {
            Some(_) => None,
            None => Some(TempDir::new("spin")?),
        };
        let state_dir = config.state_dir.map(Path::to_owned).unwrap_or_else(|| scratch.as_ref().unwrap().0.clone());
        let addr = free_loopback_addr()?;
        let mut command = Command::new(config.bin);
        command.arg("up").arg("-f").arg(config.manifest).arg("--listen").arg(addr.to_string());
        command.arg("--state-dir").arg(&state_dir);
        if let Some(redis) = config.redis {
            let runtime_config = state_dir.join("runtime-config.toml");
            let text = format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://{redis}\"\n");
            std::fs::write(&runtime_config, text)?;
            command.arg("--runtime-config-file").arg(runtime_config);
        }
        command.envs(config.env.iter().cloned()).stdout(Stdio::piped()).stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().with_context(|| format!("starting {}", config.bin.display()))?;
        let log = Log::default();
        collect(&log, child.stdout.take().context("spin's stdout")?);
        collect(&log, child.stderr.take().context("spin's stderr")?);
        let mut spin = SpinUp { child, addr, log, _scratch: scratch };
        let started = Instant::now();
        while !healthz_answers(addr) {
            if let Some(status) = spin.child.try_wait()? {
                bail!("spin up exited ({status}): {:?}", spin.log_lines());
            }
            if started.elapsed() > Duration::from_secs(180) {
                bail!("spin up never served /healthz: {:?}", spin.log_lines());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(spin)
    }

    /// The process id of `spin up` (its group's id too).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for SpinUp {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// A `redis-server` of our own on a free loopback port; stopped when
/// dropped. By default it keeps nothing on disk; `start_durable` keeps an
/// append-only file synced on every write, so `kill_and_restart` loses
/// nothing it acknowledged.
pub struct RedisServer {
    child: Child,
    pub addr: SocketAddr,
    durable: bool,
    dir: TempDir,
}

impl RedisServer {
    /// Starts it and waits until it answers PING (blocks the calling thread).
    pub fn start() -> Result<RedisServer> {
        RedisServer::launch(TempDir::new("redis")?, free_loopback_addr()?, false)
    }

    /// As `start`, with `appendonly yes` and `appendfsync always`.
    pub fn start_durable() -> Result<RedisServer> {
        RedisServer::launch(TempDir::new("redis")?, free_loopback_addr()?, true)
    }

    /// A replica of `primary` (`replicaof`, not durable itself): it serves
    /// reads, refuses writes, and keeps serving what it has when the
    /// primary dies.
    pub fn start_replica_of(primary: &RedisServer) -> Result<RedisServer> {
        let replicaof = format!("127.0.0.1 {}", primary.addr.port());
        RedisServer::launch_with(
            TempDir::new("redis-replica")?,
            free_loopback_addr()?,
            false,
            &["--replicaof", &replicaof],
        )
    }

    /// Whether the replica has everything its primary has written so far
    /// (its link is up and its replication offset is the primary's).
    pub fn caught_up_with(&self, primary: &RedisServer) -> bool {
        let field = |server: &RedisServer, name: &str| -> Option<String> {
            let mut connection = redis::Client::open(server.url()).ok()?.get_connection().ok()?;
            let info: String = redis::cmd("INFO").arg("replication").query(&mut connection).ok()?;
            info.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned())
        };
        field(self, "master_link_status:").as_deref() == Some("up")
            && field(self, "slave_repl_offset:").is_some_and(|o| field(primary, "master_repl_offset:") == Some(o))
    }

    /// Whether a `redis-server` binary is on PATH (tests that need one skip
    /// with a line saying so where there is none).
    pub fn available() -> bool {
        Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    /// The server's process id (for its CPU time in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `redis://` and its address, as a runtime config names it.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn launch(dir: TempDir, addr: SocketAddr, durable: bool) -> Result<RedisServer> {
        RedisServer::launch_with(dir, addr, durable, &[])
    }

    fn launch_with(dir: TempDir, addr: SocketAddr, durable: bool, extra: &[&str]) -> Result<RedisServer> {
        let aof = if durable { "yes" } else { "no" };
        let child = Command::new("redis-server")
            .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", aof, "--appendfsync", "always"])
            .args(extra)
            .arg("--dir")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (apt-get install redis-server)")?;
        let mut redis = RedisServer { child, addr, durable, dir };
        let started = Instant::now();
        while !redis.answers_ping() {
            if let Some(status) = redis.child.try_wait()? {
                bail!("redis-server exited: {status}");
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("redis-server never answered PING");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }

    /// SIGKILL, then the same server again on the same port and directory
    /// (reloading its append-only file, when durable).
    pub fn kill_and_restart(&mut self) -> Result<()> {
        self.kill();
        self.restart()
    }

    /// SIGKILL: the server is down until `restart`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The killed server again on the same port and directory (reloading
    /// its append-only file, when durable).
    pub fn restart(&mut self) -> Result<()> {
        let dir = std::mem::replace(&mut self.dir, TempDir(PathBuf::new()));
        let restarted = RedisServer::launch(dir, self.addr, self.durable)?;
        // The old value holds the dead child and an empty path: dropping it
        // removes nothing.
        drop(std::mem::replace(self, restarted));
        Ok(())
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(self.addr) else {
            return false;
        };
        let mut pong = [0; 7];
        stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut pong).is_ok() && &pong == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
