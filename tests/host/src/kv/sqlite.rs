//! The durable journal: Spin's own SQLite table
//! (`spin_key_value(store, key, value)`, default file `.spin/sqlite_key_value.db`),
//! so `spin up` and `hongbao-host up` can share data. WAL mode with
//! `synchronous = FULL`: a commit is on disk when it returns.
//!
//! Group commit: request threads push mutations (in sequence order) and wait;
//! one writer thread takes everything queued, writes it in one transaction
//! (only the last write of each key in the batch), commits once, and wakes
//! every waiter whose sequence number is now durable. Under load one fsync
//! covers many requests, which is where the throughput comes from.
//!
//! Checkpoints (copying the WAL back into the database file) run on a
//! second thread and connection, not inside the writer's commits: SQLite's
//! automatic checkpoint stalled every 1,000th page's commit, and with it
//! every request waiting on that commit. Should the WAL outgrow
//! `WAL_LIMIT_FRAMES` anyway, the writer checkpoints it itself.

use super::{KvError, Mutation, Ticket};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::watch;

pub const SPIN_DB_FILE: &str = "sqlite_key_value.db";

struct Queue {
    pending: Vec<Mutation>,
    failed: Option<String>,
    closing: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    durable: watch::Sender<u64>,
    commits: AtomicU64,
    /// Frames in the WAL at the last checkpoint (its own report).
    wal_frames: AtomicI64,
    /// Commits the database file holds by itself: those before the last
    /// checkpointer round that copied the whole WAL back.
    copied_back: watch::Sender<u64>,
    /// Set on drop: the checkpointer's last round.
    stop: Mutex<bool>,
    tick: Condvar,
}

pub struct Journal {
    path: PathBuf,
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// How often the checkpointer copies the WAL back (when there were commits).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(20);
/// A WAL this long (~160 MiB of 4 KiB pages) means the checkpointer is not
/// keeping up: the writer then checkpoints and rewinds it itself.
pub const WAL_LIMIT_FRAMES: i64 = 40_000;

/// `PRAGMA wal_checkpoint(MODE)`, noting the WAL's length it reports.
/// Whether it copied every frame back. A failure is logged; the next round
/// tries again.
fn checkpoint(conn: &Connection, mode: &str, shared: &Shared) -> bool {
    let frames = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    match frames {
        Ok((busy, frames, copied)) => {
            shared.wal_frames.store(frames, Ordering::Relaxed);
            busy == 0 && copied == frames
        }
        Err(e) => {
            eprintln!("hongbao-host: key-value checkpoint failed (retried): {e}");
            false
        }
    }
}

fn open(path: &Path) -> Result<Connection, KvError> {
    let err = |e: rusqlite::Error| KvError(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| KvError(format!("{}: {e}", dir.display())))?;
    }
    let conn = Connection::open(path).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
    // Spin's schema, verbatim in meaning (crates/key-value-spin).
    conn.execute(
        "CREATE TABLE IF NOT EXISTS spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (store, key))",
        [],
    )
    .map_err(err)?;
    Ok(conn)
}

impl Journal {
    /// Opens (creating if needed) the database and starts the writer thread.
    pub fn open(path: &Path) -> Result<Journal, KvError> {
        let conn = open(path)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(|e| KvError(e.to_string()))?;
        let checkpoints = open(path)?;
        // Nothing is durable yet: the store's first write is sequence number 1.
        let (durable, _) = watch::channel(0);
        let (copied_back, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue { pending: Vec::new(), failed: None, closing: false }),
            wake: Condvar::new(),
            durable,
            commits: Default::default(),
            wal_frames: AtomicI64::new(0),
            copied_back,
            stop: Mutex::new(false),
            tick: Condvar::new(),
        });
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("kv-journal".into())
            .spawn(move || write_loop(conn, &writer_shared))
            .map_err(|e| KvError(format!("starting the journal writer: {e}")))?;
        let checkpoint_shared = Arc::clone(&shared);
        let checkpointer = std::thread::Builder::new()
            .name("kv-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoints, &checkpoint_shared))
            .map_err(|e| KvError(format!("starting the journal checkpointer: {e}")))?;
        Ok(Journal {
            path: path.to_owned(),
            shared,
            writer: Mutex::new(Some(writer)),
            checkpointer: Mutex::new(Some(checkpointer)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A connection of its own for the store's cache misses.
    pub fn reader(&self) -> Result<Reader, KvError> {
        let conn = open(&self.path)?;
        conn.pragma_update(None, "cache_size", READER_CACHE_KIB).map_err(|e| KvError(e.to_string()))?;
        Ok(Reader { conn })
    }

    /// The highest sequence number committed (everything up to it is on disk).
    pub fn durable(&self) -> u64 {
        *self.shared.durable.borrow()
    }

    /// Queues a mutation; called with the map locked, so in sequence order.
    pub fn push(&self, mutation: Mutation) {
        let mut queue = self.shared.queue.lock().unwrap();
        queue.pending.push(mutation);
        self.shared.wake.notify_one();
    }

    /// Fails every operation once a commit has failed: the map may then hold
    /// writes the disk does not, so the process must stop serving them.
    pub fn check(&self) -> Result<(), KvError> {
        match &self.shared.queue.lock().unwrap().failed {
            Some(why) => Err(KvError(format!("store failed: {why}"))),
            None => Ok(()),
        }
    }

    pub async fn wait(&self, ticket: Ticket) -> Result<(), KvError> {
        let mut rx = self.shared.durable.subscribe();
        if *rx.borrow() >= ticket.0 {
            return Ok(());
        }
        loop {
            self.check()?;
            if *rx.borrow_and_update() >= ticket.0 {
                return Ok(());
            }
            if rx.changed().await.is_err() {
                return Err(KvError("the journal writer stopped".into()));
            }
        }
    }

    pub fn wait_blocking(&self, ticket: Ticket) -> Result<(), KvError> {
        loop {
            self.check()?;
            if *self.shared.durable.borrow() >= ticket.0 {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Transactions committed so far.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Waits until the database file by itself, without its WAL, holds the
    /// first `commits` transactions (a checkpointer round copied them back).
    pub async fn copied_back(&self, commits: u64) {
        let mut copied = self.shared.copied_back.subscribe();
        let _ = copied.wait_for(|&copied| copied >= commits).await;
    }
}

/// Writes `rows` (label, key, value) straight into the table at `path`, in
/// one transaction, without the journal: for building a large store to
/// measure (the bench), never while a store is open on it.
pub fn bulk_load(path: &Path, rows: impl Iterator<Item = (String, String, Vec<u8>)>) -> Result<u64, KvError> {
    let err = |e: rusqlite::Error| KvError(format!("{}: {e}", path.display()));
    let mut conn = open(path)?;
    conn.pragma_update(None, "synchronous", "OFF").map_err(err)?;
    let tx = conn.transaction().map_err(err)?;
    let mut written = 0;
    {
        let mut insert =
            tx.prepare("INSERT OR REPLACE INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)").map_err(err)?;
        for (label, key, value) in rows {
            insert.execute(params![label, key, value]).map_err(err)?;
            written += 1;
        }
    }
    tx.commit().map_err(err)?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").map_err(err)?;
    Ok(written)
}

/// SQLite's page cache for misses, in KiB as its `cache_size` pragma takes
/// them (negative): enough for the table's inner B-tree pages, which every
/// lookup walks, at a size that keeps the process's footprint bounded.
const READER_CACHE_KIB: i64 = -16 * 1024;

/// Reads rows one key at a time (each query its own read transaction, so it
/// sees every commit made before it began).
pub struct Reader {
    conn: Connection,
}

impl Reader {
    pub fn get(&mut self, label: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let err = |e: rusqlite::Error| KvError(format!("reading {key}: {e}"));
        let mut stmt =
            self.conn.prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2").map_err(err)?;
        stmt.query_row(params![label, key], |r| r.get(0)).optional().map_err(err)
    }

    /// Up to `limit` keys of `label` after `after`, in key order (a range
    /// of the primary key's index).
    pub fn keys_after(&mut self, label: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, KvError> {
        let err = |e: rusqlite::Error| KvError(format!("listing {label}: {e}"));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = match after {
            Some(_) => self
                .conn
                .prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1 AND key > ?2 ORDER BY key LIMIT ?3"),
            None => self.conn.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1 ORDER BY key LIMIT ?3"),
        }
        .map_err(err)?;
        let rows = stmt.query_map(params![label, after.unwrap_or(""), limit], |r| r.get(0)).map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.shared.queue.lock().unwrap().closing = true;
        self.shared.wake.notify_one();
        if let Some(writer) = self.writer.lock().unwrap().take() {
            let _ = writer.join();
        }
        *self.shared.stop.lock().unwrap() = true;
        self.shared.tick.notify_one();
        if let Some(checkpointer) = self.checkpointer.lock().unwrap().take() {
            let _ = checkpointer.join();
        }
    }
}

/// Copies the WAL back into the database file every `CHECKPOINT_EVERY` that
/// saw commits, without blocking the writer (PASSIVE); once a checkpoint has
/// copied everything, the writer's next commit rewinds the WAL.
fn checkpoint_loop(conn: Connection, shared: &Shared) {
    let mut seen = 0;
    loop {
        let stopping = {
            let stop = shared.stop.lock().unwrap();
            let (stop, _) = shared.tick.wait_timeout_while(stop, CHECKPOINT_EVERY, |stop| !*stop).unwrap();
            *stop
        };
        let commits = shared.commits.load(Ordering::Relaxed);
        if commits != seen || stopping {
            seen = commits;
            if checkpoint(&conn, if stopping { "TRUNCATE" } else { "PASSIVE" }, shared) {
                shared.copied_back.send_replace(commits);
            }
        }
        if stopping {
            return;
        }
    }
}

fn write_loop(mut conn: Connection, shared: &Shared) {
    loop {
        let batch = {
            let mut queue = shared.queue.lock().unwrap();
            while queue.pending.is_empty() && !queue.closing {
                queue = shared.wake.wait(queue).unwrap();
            }
            if queue.pending.is_empty() {
                return;
            }
            std::mem::take(&mut queue.pending)
        };
        let newest = batch.last().map_or(0, |m| m.seq);
        match commit(&mut conn, batch) {
            Ok(()) => {
                shared.commits.fetch_add(1, Ordering::Relaxed);
                shared.durable.send_replace(newest);
                if shared.wal_frames.load(Ordering::Relaxed) > WAL_LIMIT_FRAMES {
                    // RESTART waits out the checkpointer's round, copies
                    // everything back and rewinds the WAL.
                    checkpoint(&conn, "RESTART", shared);
                }
            }
            Err(e) => {
                eprintln!("hongbao-host: key-value commit failed, the store is now read-only-failed: {e}");
                shared.queue.lock().unwrap().failed = Some(e.to_string());
                // Wake waiters so they observe the failure.
                shared.durable.send_modify(|_| {});
                return;
            }
        }
    }
}

fn commit(conn: &mut Connection, batch: Vec<Mutation>) -> rusqlite::Result<()> {
    // Only the last write of each key in the batch reaches the disk.
    let mut last: HashMap<(String, String), Option<Vec<u8>>> = HashMap::with_capacity(batch.len());
    for m in batch {
        last.insert((m.label, m.key), m.value);
    }
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3) ON CONFLICT(store, key) DO UPDATE SET value = ?3",
        )?;
        let mut delete = tx.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?;
        for ((label, key), value) in &last {
            match value {
                Some(v) => upsert.execute(params![label, key, v])?,
                None => delete.execute(params![label, key])?,
            };
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::super::{Kv, LIST_PAGE};
    use super::*;

    fn temp_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hongbao-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join(SPIN_DB_FILE)
    }

    #[tokio::test]
    async fn writes_survive_a_reopen_in_spins_layout() {
        let path = temp_db("reopen");
        {
            let kv = Kv::durable(Journal::open(&path).unwrap(), super::super::DEFAULT_CACHE_BYTES).unwrap();
            let t = kv.set("default", "a", b"1".to_vec()).unwrap();
            let (_, t2) = kv.increment("default", "n", 5).unwrap();
            kv.wait(t.max(t2)).await.unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        let n: Vec<u8> = conn
            .query_row("SELECT value FROM spin_key_value WHERE store='default' AND key='n'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 5i64.to_le_bytes().to_vec(), "counters are 8-byte little-endian, as in Spin");
        let kv = Kv::durable(Journal::open(&path).unwrap(), super::super::DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(kv.get("default", "a").unwrap().0, Some(b"1".to_vec()));
        assert_eq!(kv.increment("default", "n", 1).unwrap().0, 6);
    }

    #[tokio::test]
    async fn checkpoints_copy_the_wal_back_without_the_writer() {
        let path = temp_db("checkpoint");
        let wal = path.with_file_name(format!("{SPIN_DB_FILE}-wal"));
        {
            let kv = Kv::durable(Journal::open(&path).unwrap(), super::super::DEFAULT_CACHE_BYTES).unwrap();
            for i in 0..300 {
                let t = kv.set("default", &format!("k{i}"), vec![7; 100]).unwrap();
                kv.wait(t).await.unwrap();
            }
            // The checkpointer's rounds copy the pages back while the store
            // is open (300 small commits are far below SQLite's automatic
            // checkpoint, which the writer no longer runs anyway): the
            // database file alone, without its WAL, holds every row.
            let journal = kv.journal.as_ref().unwrap();
            let copied = journal.copied_back(journal.commits());
            tokio::time::timeout(std::time::Duration::from_secs(60), copied).await.expect("a checkpoint round ran");
            let alone = path.with_file_name("alone.db");
            std::fs::copy(&path, &alone).unwrap();
            let conn = Connection::open(&alone).unwrap();
            let rows: i64 = conn.query_row("SELECT count(*) FROM spin_key_value", [], |r| r.get(0)).unwrap();
            assert_eq!(rows, 300);
        }
        // Closing truncates the WAL: everything is in the database file.
        assert_eq!(std::fs::metadata(&wal).map_or(0, |m| m.len()), 0);
        let conn = Connection::open(&path).unwrap();
        let rows: i64 = conn.query_row("SELECT count(*) FROM spin_key_value", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 300);
    }

    #[tokio::test]
    async fn many_waiters_share_commits() {
        let path = temp_db("group");
        let kv = Arc::new(Kv::durable(Journal::open(&path).unwrap(), super::super::DEFAULT_CACHE_BYTES).unwrap());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let kv = Arc::clone(&kv);
            tasks.push(tokio::spawn(async move {
                let t = kv.set("default", &format!("k{i}"), vec![1]).unwrap();
                kv.wait(t).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let commits = kv.journal.as_ref().unwrap().commits();
        assert!((1..200).contains(&commits), "{commits} commits for 200 writes");
    }

    #[tokio::test]
    async fn keys_are_listed_from_disk_in_pages_including_writes_not_yet_on_it() {
        let (kv, _) = small_cache("pages", 50);
        let keys: Vec<String> = (0..2_500).map(|i| format!("k{i:05}")).collect();
        for key in &keys {
            kv.set("default", key, vec![1]).unwrap();
        }
        kv.set("other", "k00001x", vec![1]).unwrap();
        // Deleted and written just now: the listing waits for the disk.
        kv.delete("default", "k00007").unwrap();
        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let page = kv.list_keys("default", cursor.as_deref()).await.unwrap();
            cursor = page.cursor.clone();
            pages.push(page.keys);
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [LIST_PAGE, LIST_PAGE, 499]);
        let listed: Vec<String> = pages.concat();
        let expected: Vec<String> = keys.iter().filter(|k| *k != "k00007").cloned().collect();
        assert_eq!(listed, expected, "in key order, each once, one label's");
    }

    /// A durable store with room for about `entries` small entries.
    fn small_cache(name: &str, entries: usize) -> (Kv, PathBuf) {
        let path = temp_db(name);
        (Kv::durable(Journal::open(&path).unwrap(), entries * 128).unwrap(), path)
    }

    /// Writes `n` filler keys and waits for them: older entries, on disk now, get evicted.
    async fn flood(kv: &Kv, n: usize) {
        let mut last = Ticket(0);
        for i in 0..n {
            last = kv.set("default", &format!("filler{i}"), vec![0; 16]).unwrap();
        }
        kv.wait(last).await.unwrap();
        // Once they are durable, the next write may evict them too.
        let t = kv.set("default", "filler-last", vec![0; 16]).unwrap();
        kv.wait(t).await.unwrap();
    }

    #[tokio::test]
    async fn a_small_cache_reads_evicted_entries_back_from_disk() {
        let (kv, _) = small_cache("evict", 50);
        let mut last = Ticket(0);
        for i in 0..500 {
            last = kv.set("default", &format!("k{i}"), format!("v{i}").into_bytes()).unwrap();
        }
        let (_, counted) = kv.increment("default", "n", 7).unwrap();
        kv.wait(last.max(counted)).await.unwrap();
        flood(&kv, 200).await;
        assert!(kv.cached_bytes() <= 50 * 128 + 200, "{} bytes cached", kv.cached_bytes());
        for i in 0..500 {
            assert_eq!(kv.get("default", &format!("k{i}")).unwrap().0, Some(format!("v{i}").into_bytes()));
        }
        assert_eq!(kv.increment("default", "n", 1).unwrap().0, 8, "a counter read back counts on");
        assert_eq!(kv.get("default", "never").unwrap().0, None);
        assert!(!kv.exists("default", "never").unwrap().0);
        // A delete hides the row at once, durable or not, evicted or not.
        kv.delete("default", "k3").unwrap();
        assert_eq!(kv.get("default", "k3").unwrap().0, None);
        flood(&kv, 200).await;
        assert_eq!(kv.get("default", "k3").unwrap().0, None);
        let keys = kv.list_keys("default", None).await.unwrap();
        assert_eq!(keys.cursor, None);
        assert_eq!(keys.keys.iter().filter(|k| k.starts_with('k')).count(), 499, "every write, durable first");
        assert!(!keys.keys.contains(&"k3".to_string()));
    }

    #[tokio::test]
    async fn a_swap_over_an_eviction_fails_and_never_hides_a_write() {
        let (kv, _) = small_cache("evict-swap", 20);
        let t = kv.set("default", "k", b"a".to_vec()).unwrap();
        kv.wait(t).await.unwrap();
        // Evicted and read back between current() and swap: it fails
        // (the caller reads again), even though nothing changed.
        let (_, seen, _) = kv.current("default", "k").unwrap();
        flood(&kv, 100).await;
        assert!(kv.swap("default", "k", seen, b"b".to_vec()).unwrap().is_err());
        // A write in between, then an eviction: it fails too.
        let (_, seen, _) = kv.current("default", "k").unwrap();
        let t = kv.set("default", "k", b"c".to_vec()).unwrap();
        kv.wait(t).await.unwrap();
        flood(&kv, 100).await;
        assert!(kv.swap("default", "k", seen, b"d".to_vec()).unwrap().is_err());
        assert_eq!(kv.get("default", "k").unwrap().0, Some(b"c".to_vec()));
        // Read again, it goes through.
        let (_, seen, _) = kv.current("default", "k").unwrap();
        let t = kv.swap("default", "k", seen, b"e".to_vec()).unwrap().expect("nothing changed");
        kv.wait(t).await.unwrap();
        flood(&kv, 100).await;
        assert_eq!(kv.get("default", "k").unwrap().0, Some(b"e".to_vec()));
    }

    #[tokio::test]
    async fn compare_and_set_loses_no_update_while_the_cache_churns() {
        let (kv, path) = small_cache("evict-race", 30);
        let kv = Arc::new(kv);
        let mut tasks = Vec::new();
        for worker in 0..8 {
            let kv = Arc::clone(&kv);
            tasks.push(tokio::spawn(async move {
                for round in 0..150 {
                    let key = format!("acc{}", round % 4);
                    loop {
                        let (value, seen, _) = kv.current("default", &key).unwrap();
                        let n: u64 = value.map_or(0, |v| String::from_utf8(v).unwrap().parse().unwrap());
                        if let Ok(t) = kv.swap("default", &key, seen, (n + 1).to_string().into_bytes()).unwrap() {
                            kv.wait(t).await.unwrap();
                            break;
                        }
                    }
                    // Churn: enough other keys that the accounts are evicted now and then.
                    let t = kv.set("default", &format!("w{worker}-{round}"), vec![1; 32]).unwrap();
                    kv.wait(t).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let read = |kv: &Kv| -> u64 {
            (0..4)
                .map(|i| {
                    let v = kv.get("default", &format!("acc{i}")).unwrap().0.unwrap();
                    String::from_utf8(v).unwrap().parse::<u64>().unwrap()
                })
                .sum()
        };
        assert_eq!(read(&kv), 8 * 150);
        drop(kv);
        assert_eq!(read(&Kv::durable(Journal::open(&path).unwrap(), 1 << 20).unwrap()), 8 * 150, "and on disk");
    }

    #[tokio::test]
    async fn writes_not_yet_on_disk_are_never_evicted() {
        let (kv, path) = small_cache("pinned", 20);
        let t = kv.set("default", "k", b"old".to_vec()).unwrap();
        kv.wait(t).await.unwrap();
        // Another connection holds SQLite's write lock: the journal's next
        // commit waits (its busy timeout), so what follows is not on disk.
        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let pending = kv.set("default", "k", b"new".to_vec()).unwrap();
        for i in 0..200 {
            kv.set("default", &format!("later{i}"), vec![2; 16]).unwrap();
        }
        assert!(kv.journal.as_ref().unwrap().durable() < pending.0, "the commit is held up");
        assert!(kv.cached_bytes() > 20 * 128, "over budget rather than forgetting a write");
        assert_eq!(kv.get("default", "k").unwrap().0, Some(b"new".to_vec()), "not the disk's old row");
        blocker.execute_batch("ROLLBACK").unwrap();
        kv.wait(pending).await.unwrap();
        flood(&kv, 100).await;
        assert_eq!(kv.get("default", "k").unwrap().0, Some(b"new".to_vec()));
    }

    #[tokio::test]
    async fn a_new_stores_first_write_waits_for_its_commit() {
        let path = temp_db("first");
        let kv = Kv::durable(Journal::open(&path).unwrap(), 0).unwrap();
        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let first = kv.set("default", "k", b"v".to_vec()).unwrap();
        assert!(kv.journal.as_ref().unwrap().durable() < first.0, "not committed, so not durable");
        let early = tokio::time::timeout(std::time::Duration::from_millis(300), kv.wait(first)).await;
        assert!(early.is_err(), "a wait returned before the commit could happen");
        // Not on disk, so not evicted: read back, it would be absent.
        kv.get("default", "other").unwrap();
        assert_eq!(kv.get("default", "k").unwrap().0, Some(b"v".to_vec()));
        blocker.execute_batch("ROLLBACK").unwrap();
        kv.wait(first).await.unwrap();
    }
}
