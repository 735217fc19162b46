//! A day of a busy SET on disk: a durable store of millions of keys, served
//! by a `hongbao-host up` process of its own, whose resident set is read
//! from /proc while many packets are opened on top. The store's cache
//! budget, not the table's size, should bound it (issue 24's 512 MiB for
//! 5 million keys).

use crate::bench::{self, Many, Server, Strategy, progress};
use anyhow::{Context, Result, bail};
use hongbao_host::external::TempDir;
use hongbao_host::kv::sqlite::{SPIN_DB_FILE, bulk_load};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The resident set a store of `LARGE_KEYS` keys may use, in bytes.
pub const RSS_TARGET: u64 = 512 << 20;
/// The keys of the full run (about a day of a busy SET).
pub const LARGE_KEYS: u64 = 5_000_000;
/// The cache budget the host is started with (`--kv-cache-mib`, its default).
const CACHE_MIB: usize = hongbao_host::kv::DEFAULT_CACHE_BYTES >> 20;

#[derive(Debug, Clone)]
pub struct LargeStore {
    pub keys: u64,
    pub file_bytes: u64,
    /// From starting the process to its first "listening on".
    pub ready_after: Duration,
    pub many: Many,
    /// VmHWM and VmRSS of the host process after the load and the audit.
    pub rss_peak: u64,
    pub rss_after: u64,
    pub cache_mib: usize,
}

/// The rows: per old packet, one record of ~700 bytes and nine small rows
/// (shares, markers, a counter), as a packet of ten shares leaves them.
fn rows(keys: u64) -> impl Iterator<Item = (String, String, Vec<u8>)> {
    (0..keys).map(|i| {
        let (packet, part) = (i / 10, i % 10);
        let set = packet % 10;
        let key = format!("s{set}/db_{set}0.t_0_01/p/old{packet:08}/{part}");
        let value = if part == 0 { vec![b'r'; 700] } else { vec![b'x'; 16] };
        ("default".to_owned(), key, value)
    })
}

/// `VmHWM` and `VmRSS` of process `pid`, in bytes.
fn resident(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} in status"))?;
        let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse()?;
        Ok(kib * 1024)
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

/// Builds the store, serves it from a `hongbao-host up` beside this binary,
/// opens `packets` packets of ten shares through it, audits its books and
/// reads its memory. `None` (with a line saying so) without that binary.
pub async fn run(manifest: &Path, keys: u64, packets: usize) -> Result<Option<LargeStore>> {
    let host = std::env::current_exe()?.with_file_name("hongbao-host");
    if !host.is_file() {
        progress(format!("large store: skipped (no {}: build it with the bench)", host.display()));
        return Ok(None);
    }
    let state = TempDir::new("bench-large")?;
    let db = state.0.join(SPIN_DB_FILE);
    progress(format!("large store: writing {keys} keys into {}", db.display()));
    let written = tokio::task::block_in_place(|| bulk_load(&db, rows(keys))).map_err(|e| anyhow::anyhow!(e.0))?;
    let file_bytes = std::fs::metadata(&db)?.len();
    let started = Instant::now();
    let mut child = Command::new(&host)
        .arg("-f")
        .arg(manifest)
        .args(["up", "--listen", "127.0.0.1:0", "--kv-cache-mib", &CACHE_MIB.to_string(), "--state-dir"])
        .arg(&state.0)
        .envs(bench::variables(Strategy::Auto))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", host.display()))?;
    let pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().context("the host's stdout")?);
    let addr = tokio::task::block_in_place(|| -> Result<std::net::SocketAddr> {
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line)? == 0 {
                bail!("hongbao-host exited before listening");
            }
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                return Ok(addr.parse()?);
            }
        }
    });
    let ready_after = started.elapsed();
    std::thread::spawn(move || for _ in stdout.lines() {});
    let measured = async {
        let addr = addr?;
        progress(format!("  {written} keys, {} MiB on disk, serving after {ready_after:.1?}", file_bytes >> 20));
        let many = bench::many(Server { addrs: &[addr], hosts: &[], redis: None }, packets, 64).await?;
        bench::books(addr).await?;
        let (rss_peak, rss_after) = resident(pid)?;
        progress(format!(
            "  {:.0} opens/s; resident set {} MiB at most, {} MiB after (cache budget {CACHE_MIB} MiB)",
            many.opens_per_s,
            rss_peak >> 20,
            rss_after >> 20
        ));
        Ok(LargeStore { keys: written, file_bytes, ready_after, many, rss_peak, rss_after, cache_mib: CACHE_MIB })
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    measured.map(Some)
}
