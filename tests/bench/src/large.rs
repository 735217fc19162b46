//! A day of a busy SET on disk: a durable store of millions of keys, served
//! by a `hongbao-host up` process of its own, whose resident set is read
//! from /proc while many packets are opened on top. The store's cache
//! budget, not the table's size, should bound it (issue 24's 512 MiB for
//! 5 million keys).

use crate::bench::{self, Many, Server, Strategy, progress};
use crate::child::HostChild;
use anyhow::Result;
use hongbao_host::external::TempDir;
use hongbao_host::kv::sqlite::{SPIN_DB_FILE, bulk_load};
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

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

/// Builds the store, serves it from a `hongbao-host up` beside this binary,
/// opens `packets` packets of ten shares through it, audits its books and
/// reads its memory. `None` (with a line saying so) without that binary.
pub async fn run(manifest: &Path, keys: u64, packets: usize) -> Result<Option<LargeStore>> {
    let Some(binary) = HostChild::binary()? else {
        progress("large store: skipped (no hongbao-host beside the bench: build it with the bench)");
        return Ok(None);
    };
    let state = TempDir::new("bench-large")?;
    let db = state.0.join(SPIN_DB_FILE);
    progress(format!("large store: writing {keys} keys into {}", db.display()));
    let written = tokio::task::block_in_place(|| bulk_load(&db, rows(keys))).map_err(|e| anyhow::anyhow!(e.0))?;
    let file_bytes = std::fs::metadata(&db)?.len();
    let args: Vec<OsString> =
        vec!["--kv-cache-mib".into(), CACHE_MIB.to_string().into(), "--state-dir".into(), state.0.clone().into()];
    let envs = bench::variables(Strategy::Auto);
    let host = tokio::task::block_in_place(|| HostChild::start(&binary, manifest, &args, &envs))?;
    let ready_after = host.ready_after;
    progress(format!("  {written} keys, {} MiB on disk, serving after {ready_after:.1?}", file_bytes >> 20));
    let many = bench::many(Server { addrs: &[host.addr], hosts: &[], redis: None }, packets, 64).await?;
    bench::books(host.addr).await?;
    let (rss_peak, rss_after) = host.resident()?;
    progress(format!(
        "  {:.0} opens/s; resident set {} MiB at most, {} MiB after (cache budget {CACHE_MIB} MiB)",
        many.opens_per_s,
        rss_peak >> 20,
        rss_after >> 20
    ));
    Ok(Some(LargeStore { keys: written, file_bytes, ready_after, many, rss_peak, rss_after, cache_mib: CACHE_MIB }))
}
