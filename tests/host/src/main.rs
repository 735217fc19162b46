//! `hongbao-host`: build and serve the app in spin.toml without Spin.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hongbao_host::{
    App, CompileCache, Compiled, ServeOptions, StoreChoice, build, client::Client, manifest::Manifest, serve,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "hongbao-host", about = "Runs hongbao's Spin components on wasmtime, the way `spin up` does")]
struct Cli {
    /// The application manifest.
    #[arg(short = 'f', long = "from", global = true, default_value = "spin.toml")]
    manifest: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every component's build command (like `spin build`).
    Build,
    /// Serve the application (like `spin up`).
    Up(Box<UpArgs>),
    /// Print a user JWT signed with SPIN_VARIABLE_AUTH_SECRET (for curl).
    Token {
        #[arg(long)]
        sub: String,
        /// Seconds until it expires.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// Print the x-payment-signature header value for a payment callback body, signed with
    /// SPIN_VARIABLE_PAYMENT_SECRET. The body must name its packet (contract v1.1):
    /// {"packet_id":"…","payment_id":"…","amount_fen":N,"status":"success"}.
    SignPayment { body: String },
}

#[derive(clap::Args)]
struct UpArgs {
    /// Build the components first.
    #[arg(long)]
    build: bool,
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Keep key-value data in memory only.
    #[arg(long, conflicts_with = "state_dir")]
    memory: bool,
    /// Directory of the durable store (default: .spin next to spin.toml, as Spin).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// MiB of entries the durable store keeps in RAM besides those not yet on disk; the rest
    /// are read from SQLite when asked for.
    #[arg(long, value_name = "MIB", default_value_t = hongbao_host::kv::DEFAULT_CACHE_BYTES >> 20)]
    kv_cache_mib: usize,
    /// Call the admin expire and settle endpoints every SECONDS (as a cron would).
    #[arg(long, value_name = "SECONDS")]
    tick: Option<u64>,
    #[arg(long, default_value_t = 128)]
    max_instance_reuse_count: usize,
    #[arg(long, default_value_t = 1)]
    max_instance_concurrent_reuse_count: usize,
    /// Seconds an idle instance is kept for reuse.
    #[arg(long, default_value_t = 1.0)]
    idle_instance_timeout: f64,
    /// Requests running in components at once; more wait in arrival order (0: no bound).
    #[arg(long, default_value_t = hongbao_host::DEFAULT_MAX_RUNNING_REQUESTS)]
    max_running_requests: usize,
    /// Inject store faults, for testing: `error=P` (a call fails, doing nothing),
    /// `cas_lie=P` (a swap writes but reports cas-failed), comma-separated.
    #[arg(long, value_name = "FAULTS")]
    faults: Option<String>,
    /// Keep compiled components in DIR (default: wasmtime-cache/ beside the Wasm). Not Spin's
    /// --cache-dir, which holds downloaded components.
    #[arg(long, value_name = "DIR", conflicts_with = "disable_cache")]
    compile_cache: Option<PathBuf>,
    /// Compile every component at every start (as `spin up --disable-cache`).
    #[arg(long)]
    disable_cache: bool,
    /// Make the store behave as another backend does: `spin-redis` (Spin 4.0.2's Redis
    /// store: every swap reports cas-failed, written or not; batch reads fail).
    #[arg(long, value_name = "BACKEND", value_parser = ["spin-redis"])]
    kv_compat: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (keep it off the public port).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Spin's runtime config: `[key_value_store.<label>]` with `type = "redis"` and `url`, or
    /// `type = "spin"` (the host's own store), as `spin up --runtime-config-file`.
    #[arg(long, value_name = "FILE")]
    runtime_config_file: Option<PathBuf>,
    /// For tests and development only: the components' wall clock reads Unix seconds
    /// (e.g. `1767225600`) from PATH on every call, so writing the file moves their time.
    /// `--tick`'s interval stays real; what is due is decided by the components, on this clock.
    #[arg(long, value_name = "PATH")]
    clock_file: Option<PathBuf>,
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn secret(name: &str) -> Result<String> {
    std::env::var(format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()))
        .with_context(|| format!("set SPIN_VARIABLE_{} (the application variable {name})", name.to_ascii_uppercase()))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Build => build::build_all(&Manifest::load(&cli.manifest)?, false),
        Command::Token { sub, ttl } => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
            println!(
                "{}",
                hongbao::auth::sign_user_token(&secret("auth_secret")?, &sub, hongbao::Timestamp(now + ttl))
            );
            Ok(())
        }
        Command::SignPayment { body } => {
            // Refuse what the service would refuse, before anyone sends it.
            let parsed = hongbao::api::parse_payment(body.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(hongbao::PacketId::parse(&parsed.packet_id).is_some(), "packet_id is not a packet id");
            println!("{}", hongbao::auth::sign_payment(&secret("payment_secret")?, body.as_bytes()));
            Ok(())
        }
        Command::Up(args) => {
            if args.build {
                build::build_all(&Manifest::load(&cli.manifest)?, false)?;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(up(cli.manifest, *args))
        }
    }
}

async fn up(manifest: PathBuf, args: UpArgs) -> Result<()> {
    let store = if args.memory {
        StoreChoice::Memory
    } else {
        let dir = manifest.parent().map(|d| d.join(".spin")).unwrap_or_else(|| PathBuf::from(".spin"));
        StoreChoice::Durable(args.state_dir.unwrap_or(dir))
    };
    let options = ServeOptions {
        max_instance_reuse_count: args.max_instance_reuse_count,
        max_instance_concurrent_reuse_count: args.max_instance_concurrent_reuse_count,
        idle_instance_timeout: Duration::from_secs_f64(args.idle_instance_timeout),
        request_timeout: None,
        max_running_requests: args.max_running_requests,
        wall_clock: args.clock_file.as_deref().map(hongbao_host::clock::FileClock::open).transpose()?,
        compile_cache: match (args.disable_cache, args.compile_cache) {
            (true, _) => CompileCache::Off,
            (false, Some(dir)) => CompileCache::Dir(dir),
            (false, None) => CompileCache::NextToWasm,
        },
        runtime_config: match &args.runtime_config_file {
            Some(path) => hongbao_host::runtime_config::RuntimeConfig::load(path)?,
            None => Default::default(),
        },
        kv_cache_bytes: args.kv_cache_mib << 20,
    };
    let app = App::load_with(&manifest, store, options, |k| std::env::var(k).ok())?;
    let faults = match &args.faults {
        Some(text) => Some(hongbao_host::kv::Faults::parse(text).map_err(|e| anyhow::anyhow!("--faults: {e}"))?),
        None => None,
    };
    let faults = match args.kv_compat.as_deref() {
        Some("spin-redis") => Some(faults.unwrap_or_else(hongbao_host::kv::Faults::none).spin_redis()),
        _ => faults,
    };
    if let Some(faults) = faults {
        eprintln!("hongbao-host: injecting store faults: {faults:?}");
        app.inject_faults(faults)?;
    }
    let admin_token = app.variable("admin_token").map(str::to_owned);
    eprintln!("hongbao-host: {} — store: {}", app.name(), app.store_location());
    for Compiled { component, took, cached } in app.compile_report() {
        eprintln!("  component {component}: {} in {took:.1?}", if *cached { "loaded from cache" } else { "compiled" });
    }
    let metrics = app.metrics();
    let running = serve(app, args.listen).await?;
    if let Some(addr) = args.metrics_listen {
        let bound = hongbao_host::metrics::serve(metrics, addr).await?;
        eprintln!("hongbao-host: metrics on http://{bound}/metrics");
    }
    eprintln!("hongbao-host: serving on http://{}", running.addr());
    for t in running.app().triggers() {
        eprintln!("  {:<28} -> {}", t.route, t.component);
    }
    // Line-oriented for scripts and tests that wait for readiness.
    println!("listening on {}", running.addr());

    if let (Some(seconds), Some(token)) = (args.tick, admin_token) {
        let addr = running.addr();
        tokio::spawn(tick(addr, token, Duration::from_secs(seconds.max(1))));
    }

    shutdown_signal().await;
    eprintln!("hongbao-host: shutting down");
    running.shutdown().await
}

/// The periodic refund sweep and wallet credit, over HTTP like any client.
async fn tick(addr: SocketAddr, token: String, every: Duration) {
    let mut client = Client::new(addr);
    let auth = format!("Bearer {token}");
    loop {
        tokio::time::sleep(every).await;
        for path in ["/v1/admin/expire", "/v1/admin/settle"] {
            match client.post(path, &[("authorization", &auth)], "").await {
                Ok(reply) if reply.status == 200 => {
                    let body = String::from_utf8_lossy(&reply.body).into_owned();
                    if !body.contains("\"refunded\":0") && !body.contains("\"credited\":0") {
                        eprintln!("hongbao-host: tick {path}: {body}");
                    }
                }
                Ok(reply) => {
                    eprintln!("hongbao-host: tick {path}: {} {}", reply.status, String::from_utf8_lossy(&reply.body))
                }
                Err(e) => eprintln!("hongbao-host: tick {path}: {e}"),
            }
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
