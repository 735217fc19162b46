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
use rusqlite::{Connection, params};
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
const WAL_LIMIT_FRAMES: i64 = 40_000;

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
        let (durable, _) = watch::channel(1);
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

    /// Every row, for loading the in-memory map at start.
    pub fn load(&self) -> Result<Vec<(String, String, Vec<u8>)>, KvError> {
        let conn = open(&self.path)?;
        let err = |e: rusqlite::Error| KvError(e.to_string());
        let mut stmt = conn.prepare("SELECT store, key, value FROM spin_key_value").map_err(err)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
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
    use super::super::Kv;
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
            let kv = Kv::durable(Journal::open(&path).unwrap()).unwrap();
            let t = kv.set("default", "a", b"1".to_vec()).unwrap();
            let (_, t2) = kv.increment("default", "n", 5).unwrap();
            kv.wait(t.max(t2)).await.unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        let n: Vec<u8> = conn
            .query_row("SELECT value FROM spin_key_value WHERE store='default' AND key='n'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 5i64.to_le_bytes().to_vec(), "counters are 8-byte little-endian, as in Spin");
        let kv = Kv::durable(Journal::open(&path).unwrap()).unwrap();
        assert_eq!(kv.get("default", "a").unwrap().0, Some(b"1".to_vec()));
        assert_eq!(kv.increment("default", "n", 1).unwrap().0, 6);
    }

    #[tokio::test]
    async fn checkpoints_copy_the_wal_back_without_the_writer() {
        let path = temp_db("checkpoint");
        let wal = path.with_file_name(format!("{SPIN_DB_FILE}-wal"));
        {
            let kv = Kv::durable(Journal::open(&path).unwrap()).unwrap();
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
        let kv = Arc::new(Kv::durable(Journal::open(&path).unwrap()).unwrap());
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
}
