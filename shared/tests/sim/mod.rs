//! A deterministic simulator ("VOPR") of the whole HTTP surface.
//!
//! One seed is one randomized history, reproducible bit for bit: senders wrap
//! packets, the payment system pays them (retrying every unanswered callback),
//! an attacker replays signed callbacks, users grab and open, the admin runs
//! expire and settle, all concurrently and through `hongbao::http::serve`.
//!
//! How it stays deterministic with real threads: every in-flight request runs
//! on its own worker thread, but its store is a wrapper whose every call first
//! waits for the baton. Exactly one thread (the scheduler or one worker) runs
//! at any time, and the scheduler decides, from the seed alone, which request
//! makes its next store calls, which new request starts, and when the clock
//! moves. Faults (failed calls, lying or spurious swaps, crashes) are drawn
//! per call from a per-request generator the scheduler seeds.
//!
//! After every request the model checks what the store holds against what
//! every client was told; at the end it drains everything, moves the clock far
//! past every expiry, sweeps without faults and audits wallets and
//! reconciliation; then, past the retention, purges every day and audits
//! again. The first broken invariant ends the run.

#![allow(dead_code)]

use hongbao::alloc::{Entropy, SplitMix64, uniform};
use hongbao::auth;
use hongbao::config::OpenStrategy;
use hongbao::http::{self, Endpoint, Request, Response};
use hongbao::keys;
use hongbao::ops::PlacementCache;
use hongbao::record::{Packet, Share, Strategy};
use hongbao::store::memory::{CasSemantics, MemoryCas, MemoryStore};
use hongbao::store::{KeyPage, Store, StoreError, SwapError, all_keys};
use hongbao::time::Day;
use hongbao::{Config, Env, PacketId, Timestamp};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Every endpoint of the contract, served by one "component".
pub const ALL_ENDPOINTS: u32 = http::endpoints(&Endpoint::ALL);

const AUTH_SECRET: &str = "test-auth-secret";
const PAYMENT_SECRET: &str = "test-payment-secret";
const ADMIN: &str = "Bearer test-admin-token";
/// 2026-11-22T00:00:00Z; each seed starts shortly before some later midnight.
const BASE_MIDNIGHT: i64 = 1_795_305_600;
const DAY: i64 = 86_400;
/// The main phase stops making big clock jumps after this long, so every
/// packet stays inside the sweeps' 31 hot days until the final audit.
const MAX_SPAN: i64 = 3 * DAY;

// ---------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------

/// A seeded generator: every decision of a run is drawn from one of these.
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(SplitMix64(seed))
    }

    pub fn next(&mut self) -> u64 {
        Entropy::next_u64(&mut self.0)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        uniform(&mut self.0, lo, hi)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.range(0, n as u64 - 1) as usize
    }

    /// True with probability `per_million` / 1,000,000.
    pub fn chance(&mut self, per_million: u32) -> bool {
        self.range(0, 999_999) < u64::from(per_million)
    }

    pub fn percent(&mut self, p: u32) -> bool {
        self.chance(p * 10_000)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An index drawn by weight; `None` if every weight is 0.
    pub fn weighted(&mut self, weights: &[u32]) -> Option<usize> {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return None;
        }
        let mut roll = self.range(0, total - 1);
        for (i, &w) in weights.iter().enumerate() {
            if roll < u64::from(w) {
                return Some(i);
            }
            roll -= u64::from(w);
        }
        unreachable!("roll below total")
    }
}

/// FNV-1a, to fold a history into one comparable number.
fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

// ---------------------------------------------------------------------------
// The plan: everything a seed fixes before the history starts
// ---------------------------------------------------------------------------

/// Probabilities per store call, in parts per million.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultRates {
    /// The call fails without effect.
    pub fail: u32,
    /// The process dies before the call: it and every later call fail.
    pub crash: u32,
    /// A swap writes, then reports `CasFailed` (Spin 4's Redis store).
    pub lie: u32,
    /// A swap reports `CasFailed` without writing.
    pub spurious: u32,
}

/// One SET's store down for a stretch of the history: every call of a
/// request started then that touches the SET's keys fails without effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    pub set: u32,
    pub from_step: usize,
    pub until_step: usize,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    pub semantics: CasSemantics,
    pub open_strategy: OpenStrategy,
    pub ttl: i64,
    pub users: usize,
    pub max_packets: usize,
    pub max_in_flight: usize,
    pub steps: usize,
    pub faults: FaultRates,
    pub outage: Option<Outage>,
    /// Whether an attacker replays signed callbacks to other packets.
    pub attacker: bool,
    pub start: Timestamp,
}

impl Plan {
    /// The seed's world, drawn from its own stream (so the history's stream
    /// does not shift when the plan's draws change).
    pub fn new(seed: u64, options: &Options) -> Plan {
        let mut r = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA076_1D64_78BD_642F);
        let coin = r.below(2);
        let semantics =
            options.semantics.unwrap_or(if coin == 0 { CasSemantics::Strict } else { CasSemantics::SpinSqlite });
        let open_strategy = match r.below(20) {
            0..=6 => OpenStrategy::Auto,
            7..=11 => OpenStrategy::Fixed(Strategy::Cas),
            _ => OpenStrategy::Fixed(Strategy::Cursor),
        };
        let ttl = *r.pick(&[60, 120, 300, 600, 1800, 3600]);
        let users = r.range(5, 40) as usize;
        let max_packets = r.range(4, 16) as usize;
        let max_in_flight = r.range(3, 8) as usize;
        let steps = r.range(300, 1200) as usize;
        // A quarter of the seeds run without faults: some bugs need a clean run.
        let faults = if r.below(4) == 0 {
            FaultRates::default()
        } else {
            FaultRates {
                fail: r.range(0, 5_000) as u32,
                crash: r.range(0, 3_000) as u32,
                lie: r.range(0, 50_000) as u32,
                spurious: r.range(0, 50_000) as u32,
            }
        };
        // Half the seeds without the attacker: their histories can reach
        // the bugs an accepted forgery would otherwise hide.
        let attacker = r.percent(50);
        let attacker = options.attacker.unwrap_or(attacker);
        let midnight = BASE_MIDNIGHT + r.range(1, 365) as i64 * DAY;
        let start = Timestamp(midnight - r.range(60, 1800) as i64);
        // Half the seeds lose a SET's store for a while (drawn last, so the
        // draws above stay what they were).
        let down = r.percent(50);
        let from_step = r.range(0, steps as u64 / 2) as usize;
        let until_step = from_step + r.range(steps as u64 / 10, steps as u64 / 3) as usize;
        let set = r.below(hongbao::id::SETS as usize) as u32;
        let outage = options.outage.unwrap_or(down).then_some(Outage { set, from_step, until_step });
        Plan {
            seed,
            semantics,
            open_strategy,
            ttl,
            users,
            max_packets,
            max_in_flight,
            steps,
            faults,
            outage,
            attacker,
            start,
        }
    }

    pub fn config(&self) -> Config {
        let mut config = Config::for_tests();
        config.packet_ttl_seconds = self.ttl;
        config.open_strategy = self.open_strategy;
        // Room for packets of 100+ shares, which `auto` opens with the cursor.
        config.max_count = 120;
        config
    }

    pub fn summary(&self) -> String {
        let semantics = match self.semantics {
            CasSemantics::Strict => "strict",
            CasSemantics::SpinSqlite => "spin-sqlite",
        };
        let strategy = match self.open_strategy {
            OpenStrategy::Auto => "auto",
            OpenStrategy::Fixed(Strategy::Cas) => "cas",
            OpenStrategy::Fixed(Strategy::Cursor) => "cursor",
        };
        let f = self.faults;
        format!(
            "seed {}: {semantics} store, open_strategy {strategy}, ttl {}s, {} users, <= {} packets, <= {} in flight, {} steps, faults ppm fail={} crash={} lie={} spurious={}, {}, attacker {}, start {}",
            self.seed,
            self.ttl,
            self.users,
            self.max_packets,
            self.max_in_flight,
            self.steps,
            f.fail,
            f.crash,
            f.lie,
            f.spurious,
            match self.outage {
                Some(o) => format!("SET {} down in steps {}..{}", o.set, o.from_step, o.until_step),
                None => "no outage".into(),
            },
            if self.attacker { "on" } else { "off" },
            self.start.to_rfc3339()
        )
    }
}

// ---------------------------------------------------------------------------
// The baton: one thread runs at a time, the scheduler decides which
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Turn {
    Scheduler,
    Worker(usize),
}

/// What one request thread is asked to do.
struct Job {
    call: HttpCall,
    fault_seed: u64,
    rates: FaultRates,
    /// The SET whose store is down for this request.
    down_set: Option<u32>,
    verbose: bool,
}

/// What a finished request thread hands back.
struct Done {
    /// `Err`: the operation panicked (with the message).
    response: Result<Response, String>,
    calls: u32,
    crashed: bool,
    faulted: bool,
    hash: u64,
}

#[derive(Default)]
struct Slot {
    job: Option<Job>,
    /// Store calls the worker may make before parking again.
    budget: u32,
    events: Vec<CallEvent>,
    done: Option<Done>,
    quit: bool,
}

struct Shared {
    turn: Turn,
    slots: Vec<Slot>,
}

struct Baton {
    shared: Mutex<Shared>,
    scheduler: Condvar,
    workers: Vec<Condvar>,
}

/// What the scheduler gets back when a worker parks or finishes.
struct Handback {
    events: Vec<CallEvent>,
    done: Option<Done>,
}

impl Baton {
    fn new(workers: usize) -> Baton {
        Baton {
            shared: Mutex::new(Shared {
                turn: Turn::Scheduler,
                slots: (0..workers).map(|_| Slot::default()).collect(),
            }),
            scheduler: Condvar::new(),
            workers: (0..workers).map(|_| Condvar::new()).collect(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Scheduler side: prepares worker `i`'s slot, lets it run, and waits
    /// until it parks before a store call or finishes its request.
    fn hand_to(&self, i: usize, prepare: impl FnOnce(&mut Slot)) -> Handback {
        let mut s = self.lock();
        prepare(&mut s.slots[i]);
        s.turn = Turn::Worker(i);
        self.workers[i].notify_one();
        while s.turn != Turn::Scheduler {
            s = self.scheduler.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        let slot = &mut s.slots[i];
        Handback { events: std::mem::take(&mut slot.events), done: slot.done.take() }
    }

    /// Worker side: waits for the next request (`None`: the run is over).
    fn next_job(&self, i: usize) -> Option<Job> {
        let mut s = self.lock();
        while s.turn != Turn::Worker(i) && !s.slots[i].quit {
            s = self.workers[i].wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        if s.slots[i].quit { None } else { s.slots[i].job.take() }
    }

    /// Worker side, before a store call: hands the turn back and waits for a
    /// new budget (`None`: the run is over, behave as if crashed).
    fn park(&self, i: usize, events: Vec<CallEvent>) -> Option<u32> {
        let mut s = self.lock();
        s.slots[i].events.extend(events);
        s.turn = Turn::Scheduler;
        self.scheduler.notify_one();
        while s.turn != Turn::Worker(i) && !s.slots[i].quit {
            s = self.workers[i].wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        if s.slots[i].quit { None } else { Some(s.slots[i].budget) }
    }

    fn finish(&self, i: usize, events: Vec<CallEvent>, done: Done) {
        let mut s = self.lock();
        s.slots[i].events.extend(events);
        s.slots[i].done = Some(done);
        s.turn = Turn::Scheduler;
        self.scheduler.notify_one();
    }

    fn quit_all(&self) {
        let mut s = self.lock();
        for slot in &mut s.slots {
            slot.quit = true;
        }
        for worker in &self.workers {
            worker.notify_one();
        }
    }
}

/// Ends the workers however the scheduler leaves (normally or by panic).
struct QuitOnDrop<'a>(&'a Baton);

impl Drop for QuitOnDrop<'_> {
    fn drop(&mut self) {
        self.0.quit_all();
    }
}

fn worker(baton: &Baton, i: usize, store: &MemoryStore, config: &Config) {
    while let Some(job) = baton.next_job(i) {
        let sim = SimStore { inner: store, baton, slot: i, state: RefCell::new(CallState::new(&job)) };
        let response = catch_unwind(AssertUnwindSafe(|| job.call.serve(&sim, config))).map_err(panic_message);
        let state = sim.state.into_inner();
        let done =
            Done { response, calls: state.calls, crashed: state.crashed, faulted: state.faulted, hash: state.hash };
        baton.finish(i, state.events, done);
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "non-string panic".into())
}

// ---------------------------------------------------------------------------
// The store wrapper: every call waits for the baton, then maybe a fault
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    Fail,
    Crash,
    Lie,
    Spurious,
    /// The call touches a SET whose store is down.
    Down,
}

/// A store call worth a trace line: a fault, or any call in verbose mode.
struct CallEvent {
    call: u32,
    op: &'static str,
    key: String,
    fault: Fault,
}

impl std::fmt::Display for CallEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.fault {
            Fault::None => return write!(f, "call {}: {} {}", self.call, self.op, self.key),
            Fault::Fail => "FAIL",
            Fault::Down => "SET DOWN",
            Fault::Crash => "CRASH",
            Fault::Lie => "LYING SWAP",
            Fault::Spurious => "SPURIOUS SWAP FAILURE",
        };
        write!(f, "{what} at call {} ({} {})", self.call, self.op, self.key)
    }
}

struct CallState {
    rng: Rng,
    rates: FaultRates,
    down_set: Option<u32>,
    verbose: bool,
    budget: u32,
    calls: u32,
    crashed: bool,
    faulted: bool,
    hash: u64,
    events: Vec<CallEvent>,
}

impl CallState {
    fn new(job: &Job) -> CallState {
        CallState {
            rng: Rng::new(job.fault_seed),
            rates: job.rates,
            down_set: job.down_set,
            verbose: job.verbose,
            budget: 0,
            calls: 0,
            crashed: false,
            faulted: false,
            hash: FNV_START,
            events: Vec::new(),
        }
    }

    fn roll(&mut self, op: &str) -> Fault {
        if self.rates == FaultRates::default() {
            return Fault::None;
        }
        let r = self.rates;
        if self.rng.chance(r.crash) {
            Fault::Crash
        } else if self.rng.chance(r.fail) {
            Fault::Fail
        } else if op == "swap" && self.rng.chance(r.lie) {
            Fault::Lie
        } else if op == "swap" && self.rng.chance(r.spurious) {
            Fault::Spurious
        } else {
            Fault::None
        }
    }
}

struct SimStore<'a> {
    inner: &'a MemoryStore,
    baton: &'a Baton,
    slot: usize,
    state: RefCell<CallState>,
}

/// The CAS handle, with its key kept for the trace.
struct SimCas {
    key: String,
    inner: MemoryCas,
}

impl SimStore<'_> {
    /// Whether any of `keys` is in the SET that is down for this request.
    fn touches_down<'k>(&self, mut keys: impl Iterator<Item = &'k str>) -> bool {
        let down = self.state.borrow().down_set;
        down.is_some_and(|set| keys.any(|key| keys::set_of(key) == Some(set)))
    }

    /// Waits for the scheduler's grant, then draws this call's fault.
    fn enter(&self, op: &'static str, key: &str) -> Result<Fault, StoreError> {
        let down = self.touches_down(std::iter::once(key));
        self.enter_with(op, key, down)
    }

    /// `enter`, the call failing as a dead store's would if `down`.
    fn enter_with(&self, op: &'static str, key: &str, down: bool) -> Result<Fault, StoreError> {
        let mut st = self.state.borrow_mut();
        if st.crashed {
            return Err(StoreError("the process died earlier in this request".into()));
        }
        if st.budget == 0 {
            let events = std::mem::take(&mut st.events);
            drop(st);
            let budget = self.baton.park(self.slot, events);
            st = self.state.borrow_mut();
            match budget {
                Some(b) => st.budget = b,
                None => {
                    st.crashed = true;
                    return Err(StoreError("simulation over".into()));
                }
            }
        }
        st.budget -= 1;
        st.calls += 1;
        st.hash = fnv(fnv(st.hash, op.as_bytes()), key.as_bytes());
        let fault = st.roll(op);
        let fault = if down && fault != Fault::Crash { Fault::Down } else { fault };
        if fault != Fault::None || st.verbose {
            let call = st.calls;
            st.events.push(CallEvent { call, op, key: key.to_owned(), fault });
        }
        match fault {
            Fault::Crash => {
                st.crashed = true;
                st.faulted = true;
                Err(StoreError(format!("injected crash before call {} ({op})", st.calls)))
            }
            Fault::Fail => {
                st.faulted = true;
                Err(StoreError(format!("injected failure of call {} ({op})", st.calls)))
            }
            Fault::Down => {
                st.faulted = true;
                Err(StoreError(format!("call {} ({op}): the SET's store is down", st.calls)))
            }
            Fault::None => Ok(fault),
            Fault::Lie | Fault::Spurious => {
                st.faulted = true;
                Ok(fault)
            }
        }
    }
}

impl Store for SimStore<'_> {
    type Cas = SimCas;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.enter("get", key)?;
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.enter("set", key)?;
        self.inner.set(key, value)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.enter("delete", key)?;
        self.inner.delete(key)
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.enter("exists", key)?;
        self.inner.exists(key)
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let down = self.touches_down(keys.iter().map(String::as_str));
        self.enter_with("get_many", &format!("{} keys from {}", keys.len(), keys.first().map_or("-", |k| k)), down)?;
        self.inner.get_many(keys)
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let first = entries.first().map_or("-", |(k, _)| k);
        let down = self.touches_down(entries.iter().map(|(k, _)| k.as_str()));
        self.enter_with("set_many", &format!("{} keys from {first}", entries.len()), down)?;
        self.inner.set_many(entries)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.enter("increment", key)?;
        self.inner.increment(key, delta)
    }

    fn cas(&self, key: &str) -> Result<SimCas, StoreError> {
        self.enter("cas", key)?;
        Ok(SimCas { key: key.to_owned(), inner: self.inner.cas(key)? })
    }

    fn current(&self, cas: &SimCas) -> Result<Option<Vec<u8>>, StoreError> {
        self.enter("current", &cas.key)?;
        self.inner.current(&cas.inner)
    }

    fn swap(&self, cas: SimCas, value: &[u8]) -> Result<(), SwapError> {
        match self.enter("swap", &cas.key)? {
            Fault::Spurious => Err(SwapError::CasFailed),
            Fault::Lie => {
                self.inner.swap(cas.inner, value)?;
                Err(SwapError::CasFailed)
            }
            _ => self.inner.swap(cas.inner, value),
        }
    }

    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, StoreError> {
        self.enter_with("list_keys", cursor.unwrap_or("-"), false)?;
        self.inner.list_keys(cursor)
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// One HTTP request as a client sends it, with the server's clock and seed.
#[derive(Clone, Debug)]
struct HttpCall {
    method: &'static str,
    path: String,
    query: Option<String>,
    authorization: Option<String>,
    signature: Option<String>,
    body: Vec<u8>,
    now: Timestamp,
    entropy: u64,
}

impl HttpCall {
    fn serve<S: Store>(&self, store: &S, config: &Config) -> Response {
        let header = |name: &str| match name {
            "authorization" => self.authorization.clone(),
            "x-payment-signature" => self.signature.clone(),
            _ => None,
        };
        let request = Request {
            method: self.method,
            path: &self.path,
            query: self.query.as_deref(),
            header: &header,
            body: &self.body,
        };
        let env = Env::new(self.now, Box::new(SplitMix64(self.entropy)), |_| {});
        http::serve::<ALL_ENDPOINTS, S>(store, None, Ok(config), env, &PlacementCache::new(), &request)
    }
}

/// What a request is for, in the model's terms (indexes into its tables).
#[derive(Clone, Debug)]
enum ReqKind {
    Wrap {
        intent: usize,
    },
    Pay {
        payment: usize,
    },
    /// The attacker replays `payment`'s signed body to another packet.
    Forged {
        payment: usize,
        target: usize,
    },
    /// The attacker signs a callback with the wrong key.
    BadSignature {
        packet: usize,
    },
    Grab {
        user: usize,
        packet: usize,
    },
    Open {
        user: usize,
        packet: usize,
        ticket: String,
    },
    Query {
        user: usize,
        packet: usize,
    },
    Wallet {
        user: usize,
    },
    Expire,
    Settle,
}

/// What a client can do next (`World::choose` weighs them).
#[derive(Clone, Copy, Debug)]
enum Action {
    NewWrap,
    RetryWrap,
    ReplayWrap,
    Pay,
    DuplicatePay,
    Forge,
    BadSignature,
    Grab,
    Open,
    Query,
    Wallet,
    Expire,
    Settle,
}

struct InFlight {
    id: u64,
    kind: ReqKind,
    desc: String,
}

// ---------------------------------------------------------------------------
// The model: what every client did and was told
// ---------------------------------------------------------------------------

struct User {
    name: String,
    authorization: String,
    /// A grab or open is in flight: a client's opens never overlap.
    opening: bool,
}

/// A sender's wrap request (replays reuse it: same request_id, same body).
struct WrapIntent {
    sender: usize,
    request_id: String,
    body: Vec<u8>,
    label: String,
    total: u64,
    count: u32,
    packet: Option<usize>,
    /// The last attempt got no answer and the client will send it again.
    retry: bool,
    in_flight: u32,
}

struct PacketModel {
    id: PacketId,
    sender: usize,
    total: u64,
    count: u32,
}

/// A payment the payment system made (money taken from the sender).
struct Payment {
    id: String,
    packet: usize,
    body: Vec<u8>,
    signature: String,
    /// The final answer the callback got; `None`: still retrying.
    answer: Option<u16>,
    /// When the first 200 came (the packet expires at most a TTL later).
    answered_at: Timestamp,
    /// Deliveries under way (a duplicate may overlap the first).
    in_flight: u32,
}

/// One user's dealings with one packet.
#[derive(Default)]
struct Holding {
    ticket: Option<String>,
    /// The claim the user was told they hold (open 200 or grab 409).
    told: Option<(u64, u64)>,
    last_open: LastOpen,
    /// An open of this user got no answer (or a 503): it may have claimed.
    uncertain: bool,
}

/// The answer to the user's latest open of the packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum LastOpen {
    #[default]
    None,
    Claimed,
    /// 429 or 410: nothing was claimed, and no later open was made.
    Refused(u16),
    /// No answer, or 503: unknown.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

fn violation(invariant: &'static str, detail: impl Into<String>) -> Violation {
    Violation { invariant, detail: detail.into() }
}

// ---------------------------------------------------------------------------
// Running a seed
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Force the store semantics (otherwise the seed picks).
    pub semantics: Option<CasSemantics>,
    /// Stop the main phase after this many steps (for shrinking).
    pub max_steps: Option<usize>,
    /// Trace every store call, not only faults.
    pub verbose: bool,
    /// Force the attacker on or off (otherwise the seed picks).
    pub attacker: Option<bool>,
    /// Force a SET's outage on or off (otherwise the seed picks).
    pub outage: Option<bool>,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub plan: Plan,
    /// Main-phase steps taken (the step a violation was found at, if then).
    pub steps: usize,
    pub trace: Vec<String>,
    pub violation: Option<Violation>,
    /// History and final store contents folded together.
    pub digest: u64,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        self.violation.is_some()
    }

    pub fn report(&self) -> String {
        let mut out = format!("{}\n", self.plan.summary());
        for line in &self.trace {
            out.push_str(line);
            out.push('\n');
        }
        let Some(v) = &self.violation else {
            return out + &format!("seed {} passed ({} steps)\n", self.plan.seed, self.steps);
        };
        let verdict =
            format!("seed {} FAILED after {} steps: {}: {}\n", self.plan.seed, self.steps, v.invariant, v.detail);
        out.push_str(&verdict);
        let focus = self.focus(v);
        if !focus.is_empty() {
            out.push_str("\nthe same history, only the lines about the packets named above and the sweeps:\n");
            for line in focus {
                out.push_str(line);
                out.push('\n');
            }
            out.push_str(&verdict);
        }
        out
    }

    /// Trace lines mentioning a packet label (`P3`) the violation names,
    /// or a sweep: usually the whole story of a failure.
    fn focus(&self, v: &Violation) -> Vec<&str> {
        let labels: BTreeSet<&str> = words(&v.detail).filter(|w| is_label(w)).collect();
        if labels.is_empty() {
            return Vec::new();
        }
        self.trace
            .iter()
            .filter(|line| words(line).any(|w| labels.contains(w) || w == "settle" || w == "expire"))
            .map(String::as_str)
            .collect()
    }
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
}

/// `P` followed by digits: a packet of the model.
fn is_label(word: &str) -> bool {
    word.len() > 1 && word.starts_with('P') && word[1..].bytes().all(|b| b.is_ascii_digit())
}

/// Runs one seed's whole history and audit.
pub fn run(seed: u64, options: Options) -> Outcome {
    let plan = Plan::new(seed, &options);
    let store = MemoryStore::with_semantics(plan.semantics);
    let config = plan.config();
    let baton = Baton::new(plan.max_in_flight);
    std::thread::scope(|scope| {
        for i in 0..plan.max_in_flight {
            let (baton, store, config) = (&baton, &store, &config);
            scope.spawn(move || worker(baton, i, store, config));
        }
        let _quit = QuitOnDrop(&baton);
        let mut world = World::new(plan.clone(), options, &store, &config, &baton);
        let result = world.main_phase().and_then(|()| world.final_phase());
        let digest = fnv(world.digest, &store_digest(&store).to_le_bytes());
        Outcome { plan, steps: world.step, trace: world.trace, violation: result.err(), digest }
    })
}

/// Replays a failing seed with ever fewer main-phase steps (binary search)
/// and returns the shortest run that still breaks the same invariant.
pub fn minimize(failing: &Outcome, options: Options) -> Outcome {
    let Some(want) = &failing.violation else { return failing.clone() };
    let fails = |steps: usize| {
        let o = run(failing.plan.seed, Options { max_steps: Some(steps), ..options });
        let same = o.violation.as_ref().is_some_and(|v| v.invariant == want.invariant);
        same.then_some(o)
    };
    let (mut lo, mut hi) = (0, failing.steps);
    let mut best = failing.clone();
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match fails(mid) {
            Some(o) => {
                hi = mid;
                best = o;
            }
            None => lo = mid + 1,
        }
    }
    best
}

/// Folds every value in the store (sorted keys) into one number.
fn store_digest(store: &MemoryStore) -> u64 {
    let mut hash = FNV_START;
    for key in store.value_keys() {
        hash = fnv(hash, key.as_bytes());
        if let Ok(Some(value)) = store.get(&key) {
            hash = fnv(hash, &value);
        }
    }
    hash
}

struct World<'a> {
    plan: Plan,
    options: Options,
    rng: Rng,
    store: &'a MemoryStore,
    config: &'a Config,
    baton: &'a Baton,
    now: Timestamp,
    step: usize,
    next_request: u64,
    trace: Vec<String>,
    digest: u64,
    faults_on: bool,
    users: Vec<User>,
    intents: Vec<WrapIntent>,
    packets: Vec<PacketModel>,
    by_id: BTreeMap<String, usize>,
    payments: Vec<Payment>,
    /// Keyed (packet, user), so one packet's holdings are one range.
    holdings: BTreeMap<(usize, usize), Holding>,
    slots: Vec<Option<InFlight>>,
    admin_in_flight: usize,
    /// What answered sweeps reported, against what can really be owed.
    reported_credited_fen: u64,
    reported_refund_fen: u64,
}

impl<'a> World<'a> {
    fn new(plan: Plan, options: Options, store: &'a MemoryStore, config: &'a Config, baton: &'a Baton) -> Self {
        let exp = Timestamp(plan.start.0 + 60 * DAY);
        let users = (0..plan.users)
            .map(|i| {
                let name = format!("u{i}");
                let authorization = format!("Bearer {}", auth::sign_user_token(AUTH_SECRET, &name, exp));
                User { name, authorization, opening: false }
            })
            .collect();
        World {
            rng: Rng::new(plan.seed),
            now: plan.start,
            slots: (0..plan.max_in_flight).map(|_| None).collect(),
            plan,
            options,
            store,
            config,
            baton,
            step: 0,
            next_request: 1,
            trace: Vec::new(),
            digest: FNV_START,
            faults_on: true,
            users,
            intents: Vec::new(),
            packets: Vec::new(),
            by_id: BTreeMap::new(),
            payments: Vec::new(),
            holdings: BTreeMap::new(),
            admin_in_flight: 0,
            reported_credited_fen: 0,
            reported_refund_fen: 0,
        }
    }

    fn log(&mut self, line: String) {
        let t = self.now.0 - self.plan.start.0;
        self.trace.push(format!("#{} t=+{t}s {line}", self.step));
    }

    // -- the main phase ----------------------------------------------------

    fn main_phase(&mut self) -> Result<(), Violation> {
        let steps = self.options.max_steps.map_or(self.plan.steps, |cap| cap.min(self.plan.steps));
        while self.step < steps {
            self.step += 1;
            let in_flight = self.in_flight();
            let roll = self.rng.below(100);
            if !in_flight.is_empty() && roll < 60 {
                let slot = *self.rng.pick(&in_flight);
                let budget = self.budget(slot);
                self.advance(slot, budget)?;
            } else if roll < 94 && in_flight.len() < self.plan.max_in_flight {
                if let Some(kind) = self.choose() {
                    self.start(kind)?;
                }
            } else {
                self.tick();
            }
        }
        Ok(())
    }

    fn in_flight(&self) -> Vec<usize> {
        (0..self.slots.len()).filter(|&i| self.slots[i].is_some()).collect()
    }

    /// How many store calls a request may make in one go: mostly one, so
    /// any interleaving is possible, sometimes a run. Sweeps make ~330 calls
    /// (31 days x 10 SETs of index reads), so they get longer runs; else a
    /// seed would see one or two of them, and few packets passed mid-open.
    fn budget(&mut self, slot: usize) -> u32 {
        let sweep = matches!(self.slots[slot].as_ref().map(|f| &f.kind), Some(ReqKind::Expire | ReqKind::Settle));
        let roll = self.rng.below(10);
        if sweep {
            if roll < 3 { 1 } else { self.rng.range(8, 64) as u32 }
        } else {
            match roll {
                0..=4 => 1,
                5..=7 => self.rng.range(2, 4) as u32,
                _ => self.rng.range(5, 32) as u32,
            }
        }
    }

    /// Moves the clock: mostly seconds (a grab ticket lives 60 s), sometimes
    /// tens of seconds, rarely past a TTL.
    fn tick(&mut self) {
        let ttl = self.plan.ttl as u64;
        let seconds = match self.rng.below(100) {
            0..=84 => self.rng.range(1, 3),
            85..=97 => self.rng.range(5, 30),
            _ if self.now.0 - self.plan.start.0 < MAX_SPAN => self.rng.range(ttl / 2, ttl * 3 / 2),
            _ => self.rng.range(1, 3),
        };
        self.now = self.now.plus_seconds(seconds as i64);
        if seconds >= 60 {
            self.log(format!("clock +{seconds}s"));
        }
    }

    // -- starting requests ---------------------------------------------------

    /// Picks the next request a client makes, by weight.
    fn choose(&mut self) -> Option<ReqKind> {
        let idle_users: Vec<usize> = (0..self.users.len()).filter(|&u| !self.users[u].opening).collect();
        let openable: Vec<(usize, usize)> = self
            .holdings
            .iter()
            .filter(|((_, u), h)| h.ticket.is_some() && !self.users[*u].opening)
            .map(|(&(p, u), _)| (p, u))
            .collect();
        let retry_wraps: Vec<usize> =
            (0..self.intents.len()).filter(|&i| self.intents[i].retry && self.intents[i].in_flight == 0).collect();
        // Replays of a wrap: after its answer, or a double submit while in flight.
        let replays: Vec<usize> = (0..self.intents.len())
            .filter(|&i| self.intents[i].packet.is_some() || self.intents[i].in_flight > 0)
            .collect();
        let due_payments: Vec<usize> = (0..self.payments.len())
            .filter(|&p| self.payments[p].answer.is_none() && self.payments[p].in_flight == 0)
            .collect();
        // Duplicates: of a callback answered 200, or of one still in flight
        // (the payment system timed out waiting).
        let duplicates: Vec<usize> = (0..self.payments.len())
            .filter(|&p| self.payments[p].answer == Some(200) || self.payments[p].in_flight > 0)
            .collect();
        let forgeable = if self.plan.attacker { self.forgeable() } else { Vec::new() };
        let packets = !self.packets.is_empty();
        let admin = self.admin_in_flight < 3;
        let when = |possible: bool, weight: u32| if possible { weight } else { 0 };
        let options = [
            (Action::NewWrap, when(self.intents.len() < self.plan.max_packets, 3)),
            (Action::RetryWrap, when(!retry_wraps.is_empty(), 4)),
            (Action::ReplayWrap, when(!replays.is_empty(), 1)),
            (Action::Pay, when(!due_payments.is_empty(), 6)),
            (Action::DuplicatePay, when(!duplicates.is_empty(), 1)),
            (Action::Forge, when(!forgeable.is_empty(), 2)),
            (Action::BadSignature, when(packets && self.plan.attacker, 1)),
            (Action::Grab, when(packets && !idle_users.is_empty(), 8)),
            (Action::Open, when(!openable.is_empty(), 12)),
            (Action::Query, when(packets, 1)),
            (Action::Wallet, 1),
            (Action::Expire, when(admin, 2)),
            (Action::Settle, when(admin, 4)),
        ];
        let chosen = options[self.rng.weighted(&options.map(|(_, w)| w))?].0;
        Some(match chosen {
            Action::NewWrap => ReqKind::Wrap { intent: self.new_intent() },
            Action::RetryWrap => ReqKind::Wrap { intent: *self.rng.pick(&retry_wraps) },
            Action::ReplayWrap => ReqKind::Wrap { intent: *self.rng.pick(&replays) },
            Action::Pay => ReqKind::Pay { payment: *self.rng.pick(&due_payments) },
            Action::DuplicatePay => ReqKind::Pay { payment: *self.rng.pick(&duplicates) },
            Action::Forge => {
                let (payment, target) = *self.rng.pick(&forgeable);
                ReqKind::Forged { payment, target }
            }
            Action::BadSignature => ReqKind::BadSignature { packet: self.rng.below(self.packets.len()) },
            Action::Grab => ReqKind::Grab { user: *self.rng.pick(&idle_users), packet: self.grab_target() },
            Action::Open => {
                let (packet, user) = *self.rng.pick(&openable);
                let ticket = self.holdings[&(packet, user)].ticket.clone().expect("openable");
                ReqKind::Open { user, packet, ticket }
            }
            Action::Query => {
                ReqKind::Query { user: self.rng.below(self.users.len()), packet: self.rng.below(self.packets.len()) }
            }
            Action::Wallet => ReqKind::Wallet { user: self.rng.below(self.users.len()) },
            Action::Expire => ReqKind::Expire,
            Action::Settle => ReqKind::Settle,
        })
    }

    /// (payment, other packet of the same total): the attacker's replays.
    /// Packets the payment system has not (yet) paid come first: there a
    /// replay that is wrongly accepted activates a packet nobody paid for.
    fn forgeable(&self) -> Vec<(usize, usize)> {
        let unpaid = |p: usize| !self.payments.iter().any(|x| x.packet == p && x.answer == Some(200));
        let mut pairs = Vec::new();
        for (i, payment) in self.payments.iter().enumerate().filter(|(_, x)| x.answer.is_some() || x.in_flight > 0) {
            let total = self.packets[payment.packet].total;
            for (p, packet) in self.packets.iter().enumerate() {
                if p != payment.packet && packet.total == total && unpaid(p) {
                    pairs.push((i, p));
                }
            }
        }
        pairs
    }

    /// Mostly packets the payment system was told are paid and that are
    /// still young, the newest most often: users crowd onto a fresh packet,
    /// as in a group chat.
    fn grab_target(&mut self) -> usize {
        let fresh: Vec<usize> = self
            .payments
            .iter()
            .filter(|x| x.answer == Some(200) && x.answered_at.0 + self.plan.ttl > self.now.0)
            .map(|x| x.packet)
            .collect();
        if fresh.is_empty() || self.rng.percent(15) {
            return self.rng.below(self.packets.len());
        }
        let newest = &fresh[fresh.len().saturating_sub(2)..];
        if self.rng.percent(60) { *self.rng.pick(newest) } else { *self.rng.pick(&fresh) }
    }

    /// A new wrap request: small packets, totals from a short menu (so the
    /// attacker finds packets of equal totals), sometimes 100+ shares.
    fn new_intent(&mut self) -> usize {
        let sender = self.rng.below(self.users.len());
        let lucky = self.rng.percent(60);
        let (total, count) = if self.rng.percent(10) {
            let count = self.rng.range(100, 120) as u32;
            let total = if lucky { *self.rng.pick(&[1_200, 2_400]) } else { u64::from(count) * 10 };
            (total, count)
        } else {
            let total = *self.rng.pick(&[120, 240, 600, 1_200]);
            let count = if lucky { self.rng.range(1, 8) as u32 } else { *self.rng.pick(&[1, 2, 3, 4, 5, 6, 8]) };
            (total, count)
        };
        let kind = if lucky { "lucky" } else { "fixed" };
        let n = self.intents.len();
        let mut body = json!({"request_id": format!("req-{n}"), "kind": kind, "total_fen": total, "count": count});
        if self.rng.percent(30) {
            body["greeting"] = json!("恭喜发财");
        }
        self.intents.push(WrapIntent {
            sender,
            request_id: format!("req-{n}"),
            body: serde_json::to_vec(&body).expect("json"),
            label: format!("W{n} {kind} {total}/{count}"),
            total,
            count,
            packet: None,
            retry: false,
            in_flight: 0,
        });
        n
    }

    fn describe(&self, kind: &ReqKind) -> String {
        let u = |u: usize| &self.users[u].name;
        match kind {
            ReqKind::Wrap { intent } => {
                format!("wrap {} {}", u(self.intents[*intent].sender), self.intents[*intent].label)
            }
            ReqKind::Pay { payment } => format!("pay pay{payment} -> P{}", self.payments[*payment].packet),
            ReqKind::Forged { payment, target } => {
                format!("FORGE pay{payment} (signed for P{}) -> P{target}", self.payments[*payment].packet)
            }
            ReqKind::BadSignature { packet } => format!("bad-signature callback -> P{packet}"),
            ReqKind::Grab { user, packet } => format!("grab {} P{packet}", u(*user)),
            ReqKind::Open { user, packet, .. } => format!("open {} P{packet}", u(*user)),
            ReqKind::Query { user, packet } => format!("query {} P{packet}", u(*user)),
            ReqKind::Wallet { user } => format!("wallet {}", u(*user)),
            ReqKind::Expire => "expire".into(),
            ReqKind::Settle => "settle".into(),
        }
    }

    fn http_call(&mut self, kind: &ReqKind) -> HttpCall {
        let entropy = self.rng.next();
        let call = |method, path: String, authorization: Option<String>, body: Vec<u8>| HttpCall {
            method,
            path,
            query: None,
            authorization,
            signature: None,
            body,
            now: self.now,
            entropy,
        };
        let user = |u: usize| Some(self.users[u].authorization.clone());
        let packet = |p: usize| format!("/v1/packets/{}", self.packets[p].id.as_str());
        match kind {
            ReqKind::Wrap { intent } => {
                let i = &self.intents[*intent];
                call("POST", "/v1/packets".into(), user(i.sender), i.body.clone())
            }
            ReqKind::Pay { payment } => {
                let x = &self.payments[*payment];
                HttpCall {
                    signature: Some(x.signature.clone()),
                    ..call("POST", packet(x.packet) + "/payment", None, x.body.clone())
                }
            }
            ReqKind::Forged { payment, target } => {
                let x = &self.payments[*payment];
                HttpCall {
                    signature: Some(x.signature.clone()),
                    ..call("POST", packet(*target) + "/payment", None, x.body.clone())
                }
            }
            ReqKind::BadSignature { packet: p } => {
                let body = serde_json::to_vec(&json!({
                    "packet_id": self.packets[*p].id.as_str(),
                    "payment_id": format!("forged-{entropy:x}"),
                    "amount_fen": self.packets[*p].total,
                    "status": "success",
                }))
                .expect("json");
                let signature = auth::sign_payment("not-the-payment-secret", &body);
                HttpCall { signature: Some(signature), ..call("POST", packet(*p) + "/payment", None, body) }
            }
            ReqKind::Grab { user: u, packet: p } => call("POST", packet(*p) + "/grab", user(*u), Vec::new()),
            ReqKind::Open { user: u, packet: p, ticket } => {
                let body = serde_json::to_vec(&json!({ "ticket": ticket })).expect("json");
                call("POST", packet(*p) + "/open", user(*u), body)
            }
            ReqKind::Query { user: u, packet: p } => call("GET", packet(*p), user(*u), Vec::new()),
            ReqKind::Wallet { user: u } => call("GET", "/v1/users/me/wallet".into(), user(*u), Vec::new()),
            ReqKind::Expire => call("POST", "/v1/admin/expire".into(), Some(ADMIN.into()), Vec::new()),
            ReqKind::Settle => call("POST", "/v1/admin/settle".into(), Some(ADMIN.into()), Vec::new()),
        }
    }

    fn mark(&mut self, kind: &ReqKind, busy: bool) {
        match kind {
            ReqKind::Wrap { intent } if busy => self.intents[*intent].in_flight += 1,
            ReqKind::Wrap { intent } => self.intents[*intent].in_flight -= 1,
            ReqKind::Pay { payment } if busy => self.payments[*payment].in_flight += 1,
            ReqKind::Pay { payment } => self.payments[*payment].in_flight -= 1,
            ReqKind::Grab { user, .. } | ReqKind::Open { user, .. } => self.users[*user].opening = busy,
            ReqKind::Expire | ReqKind::Settle if busy => self.admin_in_flight += 1,
            ReqKind::Expire | ReqKind::Settle => self.admin_in_flight -= 1,
            _ => {}
        }
    }

    /// Starts a request on a free worker; it runs up to its first store call.
    fn start(&mut self, kind: ReqKind) -> Result<(), Violation> {
        let slot = self.slots.iter().position(Option::is_none).expect("a free slot");
        let id = self.next_request;
        self.next_request += 1;
        let call = self.http_call(&kind);
        let desc = self.describe(&kind);
        self.mark(&kind, true);
        self.log(format!("r{id} {desc}"));
        let rates = if self.faults_on { self.plan.faults } else { FaultRates::default() };
        let down_set = self
            .plan
            .outage
            .filter(|o| self.faults_on && (o.from_step..o.until_step).contains(&self.step))
            .map(|o| o.set);
        let job = Job { call, fault_seed: self.rng.next(), rates, down_set, verbose: self.options.verbose };
        self.slots[slot] = Some(InFlight { id, kind, desc });
        let back = self.baton.hand_to(slot, |s| {
            s.job = Some(job);
            s.budget = 0;
        });
        self.take_back(slot, back)
    }

    /// Lets an in-flight request make up to `budget` store calls.
    fn advance(&mut self, slot: usize, budget: u32) -> Result<(), Violation> {
        let back = self.baton.hand_to(slot, |s| s.budget = budget);
        self.take_back(slot, back)
    }

    fn take_back(&mut self, slot: usize, back: Handback) -> Result<(), Violation> {
        let flight = self.slots[slot].as_ref().expect("in flight");
        let prefix = format!("r{} {}", flight.id, flight.desc);
        for event in back.events {
            self.log(format!("{prefix}: {event}"));
        }
        match back.done {
            Some(done) => {
                let flight = self.slots[slot].take().expect("in flight");
                self.complete(flight, done)
            }
            None => Ok(()),
        }
    }

    // -- answers -------------------------------------------------------------

    fn complete(&mut self, flight: InFlight, done: Done) -> Result<(), Violation> {
        self.mark(&flight.kind, false);
        self.digest = fnv(fnv(self.digest, &flight.id.to_le_bytes()), &done.hash.to_le_bytes());
        let InFlight { id, kind, desc } = flight;
        let response = done.response.map_err(|panic| violation("panic", format!("r{id} {desc} panicked: {panic}")))?;
        self.digest = fnv(fnv(self.digest, &response.status.to_le_bytes()), &response.body);
        if done.crashed {
            self.log(format!("r{id} {desc} -> no answer (crashed at call {})", done.calls));
            self.on_lost(&kind);
            return Ok(());
        }
        let status = response.status;
        let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        let answered = match status {
            500 => Err(violation("internal_error", format!("r{id} {desc} answered 500: {body}"))),
            503 if !done.faulted => Err(violation(
                "unavailable_without_fault",
                format!("r{id} {desc} answered 503 with no injected fault: {body}"),
            )),
            503 => {
                self.on_lost(&kind);
                Ok(code(&body).to_owned())
            }
            _ => self.on_answer(&kind, status, &body),
        };
        let summary = match &answered {
            Ok(summary) => summary.clone(),
            Err(_) if status < 300 => body["status"].as_str().unwrap_or("").to_owned(),
            Err(_) => code(&body).to_owned(),
        };
        self.log(format!("r{id} {desc} -> {status} {summary}"));
        answered.map_err(|v| Violation { detail: format!("r{id} {desc}: {}", v.detail), ..v })?;
        self.check_touched(&kind)
    }

    /// The client got no answer (crash) or a 503: it may send it again.
    fn on_lost(&mut self, kind: &ReqKind) {
        match kind {
            ReqKind::Wrap { intent } => self.intents[*intent].retry = self.rng.percent(75),
            // The payment system keeps retrying: `answer` stays `None`.
            ReqKind::Pay { .. } => {}
            ReqKind::Open { user, packet, .. } => {
                let keep = self.rng.percent(70);
                let h = self.holdings.entry((*packet, *user)).or_default();
                h.last_open = LastOpen::Unknown;
                h.uncertain = true;
                if !keep {
                    h.ticket = None;
                }
            }
            _ => {}
        }
    }

    /// Records a final answer and checks it against the contract; returns a
    /// short summary for the trace.
    fn on_answer(&mut self, kind: &ReqKind, status: u16, body: &Value) -> Result<String, Violation> {
        let code = code(body).to_owned();
        let unexpected = || Err(violation("unexpected_status", format!("answered {status} {code}: {body}")));
        match kind {
            ReqKind::Wrap { intent } => match status {
                200 | 201 => self.on_wrapped(*intent, body),
                // Another request with this request_id is between its
                // election and its record: the client retries later.
                429 => {
                    self.on_lost(kind);
                    Ok(code)
                }
                409 if code != "idempotency_conflict" => {
                    self.intents[*intent].retry = false;
                    Ok(code)
                }
                409 => {
                    // The request id is spent: the client wraps again with a new one.
                    self.intents[*intent].retry = false;
                    if self.intents[*intent].packet.is_none() && self.intents.len() < self.plan.max_packets * 2 {
                        let n = self.intents.len();
                        let mut next = self.clone_intent(*intent, n);
                        next.retry = true;
                        self.intents.push(next);
                    }
                    Ok(code)
                }
                _ => unexpected(),
            },
            ReqKind::Pay { payment } => self.on_paid(*payment, status, body),
            ReqKind::Forged { payment, target } => match status {
                200 => Err(violation(
                    "forged_callback_accepted",
                    format!(
                        "the callback signed for P{} (payment_id {}) activated P{target}",
                        self.payments[*payment].packet, self.payments[*payment].id
                    ),
                )),
                409 | 410 | 422 => Ok(code),
                _ => unexpected(),
            },
            ReqKind::BadSignature { .. } => match status {
                401 => Ok(code),
                _ => unexpected(),
            },
            ReqKind::Grab { user, packet } => self.on_grabbed(*user, *packet, status, body),
            ReqKind::Open { user, packet, .. } => self.on_opened(*user, *packet, status, body),
            ReqKind::Query { .. } => match status {
                200 => Ok(body["status"].as_str().unwrap_or("?").to_owned()),
                _ => unexpected(),
            },
            ReqKind::Wallet { user } => match status {
                200 => self.on_wallet(*user, body).map(|n| format!("{n} entries")),
                _ => unexpected(),
            },
            ReqKind::Expire => match status {
                200 => {
                    self.reported_refund_fen += body["refund_fen"].as_u64().unwrap_or(0);
                    Ok(body.to_string())
                }
                _ => unexpected(),
            },
            ReqKind::Settle => match status {
                200 => {
                    self.reported_credited_fen += body["credited_fen"].as_u64().unwrap_or(0);
                    Ok(body.to_string())
                }
                _ => unexpected(),
            },
        }
    }

    fn clone_intent(&self, i: usize, n: usize) -> WrapIntent {
        let old = &self.intents[i];
        let mut body: Value = serde_json::from_slice(&old.body).expect("our json");
        body["request_id"] = json!(format!("req-{n}"));
        WrapIntent {
            sender: old.sender,
            request_id: format!("req-{n}"),
            body: serde_json::to_vec(&body).expect("json"),
            label: format!("W{n} {}", old.label.split_once(' ').map_or("", |(_, rest)| rest)),
            total: old.total,
            count: old.count,
            packet: None,
            retry: false,
            in_flight: 0,
        }
    }

    /// Wrap 201/200: the sender learns the packet; the payment system pays it
    /// (or, for some packets, never: they stay unpaid, the attacker's targets).
    fn on_wrapped(&mut self, intent: usize, body: &Value) -> Result<String, Violation> {
        let id = body["id"].as_str().and_then(PacketId::parse);
        let Some(id) = id else { return Err(violation("bad_wrap_answer", format!("no packet id in {body}"))) };
        let (total, count) = (self.intents[intent].total, self.intents[intent].count);
        if body["total_fen"].as_u64() != Some(total) || body["count"].as_u64() != Some(u64::from(count)) {
            return Err(violation("wrap_terms_changed", format!("asked {total}/{count}, got {body}")));
        }
        if let Some(known) = self.intents[intent].packet {
            let known_id = &self.packets[known].id;
            return if *known_id == id {
                Ok(format!("P{known} (replay)"))
            } else {
                Err(violation(
                    "idempotency_broken",
                    format!("request_id answered P{known} {known_id} before, now {id}"),
                ))
            };
        }
        if self.by_id.contains_key(id.as_str()) {
            return Err(violation("packet_id_reused", format!("{id} answered to two wrap requests")));
        }
        let p = self.packets.len();
        self.by_id.insert(id.as_str().to_owned(), p);
        self.packets.push(PacketModel { id: id.clone(), sender: self.intents[intent].sender, total, count });
        self.intents[intent].packet = Some(p);
        self.intents[intent].retry = false;
        if self.rng.percent(85) {
            self.new_payment(p);
        }
        Ok(format!("P{p} {id}"))
    }

    fn new_payment(&mut self, packet: usize) {
        let id = format!("pay-{:x}-{}", self.plan.seed, self.payments.len());
        let body = serde_json::to_vec(&json!({
            "packet_id": self.packets[packet].id.as_str(),
            "payment_id": id,
            "amount_fen": self.packets[packet].total,
            "status": "success",
        }))
        .expect("json");
        let signature = auth::sign_payment(PAYMENT_SECRET, &body);
        self.payments.push(Payment { id, packet, body, signature, answer: None, answered_at: self.now, in_flight: 0 });
    }

    fn on_paid(&mut self, payment: usize, status: u16, body: &Value) -> Result<String, Violation> {
        let code = code(body).to_owned();
        let earlier = self.payments[payment].answer;
        match status {
            // Busy: nothing happened, the payment system retries.
            429 => return Ok(code),
            200 => {
                if body["status"].as_str() == Some("awaiting_payment") {
                    return Err(violation("payment_not_applied", format!("200 but the packet is {body}")));
                }
            }
            // Already paid by another payment_id (a forged callback got there
            // first: caught by the packet check), or paid too late.
            409 | 410 if earlier != Some(200) => {}
            _ => return Err(violation("unexpected_status", format!("payment answered {status} {code}: {body}"))),
        }
        if earlier == Some(200) && status != 200 {
            return Err(violation("payment_replay_not_idempotent", format!("200 before, now {status} {code}")));
        }
        if earlier.is_none() {
            self.payments[payment].answered_at = self.now;
        }
        self.payments[payment].answer = Some(status);
        Ok(if status == 200 { body["status"].as_str().unwrap_or("?").to_owned() } else { code })
    }

    fn on_grabbed(&mut self, user: usize, packet: usize, status: u16, body: &Value) -> Result<String, Violation> {
        let code = code(body).to_owned();
        match status {
            200 => {
                let ticket = body["ticket"].as_str().map(str::to_owned);
                let abandon = self.rng.percent(10);
                let h = self.holdings.entry((packet, user)).or_default();
                if !abandon {
                    h.ticket = ticket;
                }
                Ok(format!("remaining={}", body["remaining_count"]))
            }
            409 if code == "already_claimed" => {
                let told = claim_of(&body["claim"], &self.users[user].name)?;
                self.tell(user, packet, told, "grab")?;
                Ok(format!("{code} seq={} amt={}", told.1, told.0))
            }
            409 | 410 | 429 => Ok(code),
            _ => Err(violation("unexpected_status", format!("answered {status} {code}: {body}"))),
        }
    }

    fn on_opened(&mut self, user: usize, packet: usize, status: u16, body: &Value) -> Result<String, Violation> {
        let code = code(body).to_owned();
        let keep = self.rng.percent(20);
        match status {
            200 => {
                let told = claim_of(&body["claim"], &self.users[user].name)?;
                self.tell(user, packet, told, "open")?;
                let h = self.holdings.entry((packet, user)).or_default();
                h.last_open = LastOpen::Claimed;
                if !keep {
                    h.ticket = None;
                }
                Ok(format!("seq={} amt={} remaining={}", told.1, told.0, body["remaining_count"]))
            }
            410 | 429 => {
                let h = self.holdings.entry((packet, user)).or_default();
                // 410 contradicts a claim the user was told of (opening again
                // answers the same claim); 429 does not: admission sheds
                // before any lookup, and "nothing was claimed" by this request.
                if let (410, Some((amount, seq))) = (status, h.told) {
                    return Err(violation(
                        "refused_after_claim",
                        format!(
                            "open answered {status} {code} although the user was told claim seq={seq} amt={amount}"
                        ),
                    ));
                }
                h.last_open = LastOpen::Refused(status);
                if status == 410 || !keep {
                    h.ticket = None;
                }
                Ok(code)
            }
            403 => {
                self.holdings.entry((packet, user)).or_default().ticket = None;
                Ok(code)
            }
            _ => Err(violation("unexpected_status", format!("answered {status} {code}: {body}"))),
        }
    }

    /// The user was told they hold claim `(amount, seq)`: it never changes.
    fn tell(&mut self, user: usize, packet: usize, told: (u64, u64), how: &str) -> Result<(), Violation> {
        let h = self.holdings.entry((packet, user)).or_default();
        match h.told {
            Some(before) if before != told => Err(violation(
                "claim_answer_changed",
                format!("{how} told seq={} amt={}, earlier seq={} amt={}", told.1, told.0, before.1, before.0),
            )),
            _ => {
                h.told = Some(told);
                Ok(())
            }
        }
    }

    /// Wallet entries are unique per (packet, kind).
    fn on_wallet(&mut self, user: usize, body: &Value) -> Result<usize, Violation> {
        wallet_entries(body)
            .map(|entries| entries.len())
            .map_err(|e| Violation { detail: format!("wallet of {}: {}", self.users[user].name, e.detail), ..e })
    }

    // -- invariants ------------------------------------------------------------

    fn check_touched(&mut self, kind: &ReqKind) -> Result<(), Violation> {
        match kind {
            ReqKind::Wrap { intent } => self.intents[*intent].packet.map_or(Ok(()), |p| self.check_packet(p)),
            ReqKind::Pay { payment } => self.check_packet(self.payments[*payment].packet),
            ReqKind::Forged { target: packet, .. }
            | ReqKind::BadSignature { packet }
            | ReqKind::Grab { packet, .. }
            | ReqKind::Open { packet, .. }
            | ReqKind::Query { packet, .. } => self.check_packet(*packet),
            ReqKind::Wallet { .. } => Ok(()),
            // Every packet, from the store only: the API view of each after
            // every sweep would cost more than the rest of the run.
            ReqKind::Expire | ReqKind::Settle => (0..self.packets.len()).try_for_each(|p| self.check_stored(p)),
        }
    }

    /// The packet record, with a live cursor packet's claims merged in from
    /// its shares (as the service's own view does).
    fn packet_now(&self, p: usize) -> Result<Packet, Violation> {
        let id = &self.packets[p].id;
        let bytes = self
            .store
            .get(&keys::packet(id))
            .map_err(|e| violation("store_error", format!("P{p}: {e:?}")))?
            .ok_or_else(|| violation("packet_lost", format!("P{p} {id} was answered to its sender but is gone")))?;
        let record = Packet::decode(&bytes).map_err(|e| violation("corrupt_record", format!("P{p}: {e}")))?;
        if record.strategy != Strategy::Cursor || !record.status.is_paid() || record.status.is_final() {
            return Ok(record);
        }
        let keys: Vec<String> = (1..=record.count).map(|k| keys::share(id, k)).collect();
        let values = self.store.get_many(&keys).map_err(|e| violation("store_error", format!("P{p}: {e:?}")))?;
        let mut shares = Vec::with_capacity(values.len());
        for (k, value) in values.into_iter().enumerate() {
            let bytes = value.ok_or_else(|| violation("share_lost", format!("P{p} share {}", k + 1)))?;
            shares.push(Share::decode(&bytes).map_err(|e| violation("corrupt_record", format!("P{p}: {e}")))?);
        }
        Ok(hongbao::state::collect(&record, &shares, "sim").unwrap_or(record))
    }

    /// Everything the store holds about packet `p` against the money rules,
    /// the payment system's records and what each user was told.
    fn check_packet(&mut self, p: usize) -> Result<(), Violation> {
        self.check_stored(p)?;
        self.check_view(p)
    }

    /// `check_packet` without the API view.
    fn check_stored(&self, p: usize) -> Result<(), Violation> {
        let packet = self.packet_now(p)?;
        let broken = packet.invariant_violations();
        if !broken.is_empty() {
            return Err(violation("packet_invariant", format!("P{p}: {broken:?}\n{}", describe_packet(&packet))));
        }
        self.check_payment(p, &packet)?;
        self.check_told(p, &packet)
    }

    /// A paid packet carries a payment the payment system made for it.
    fn check_payment(&self, p: usize, packet: &Packet) -> Result<(), Violation> {
        if !packet.status.is_paid() {
            return Ok(());
        }
        let paid_by = packet.payment_id.as_deref().unwrap_or("(none)");
        match self.payments.iter().find(|x| x.id == paid_by) {
            Some(x) if x.packet == p => Ok(()),
            Some(x) => Err(violation(
                "payment_not_for_packet",
                format!(
                    "P{p} is {} with payment_id {paid_by}, which the payment system made for P{} (nobody paid P{p})",
                    packet.status.as_str(),
                    x.packet
                ),
            )),
            None => Err(violation("payment_not_for_packet", format!("P{p} is paid by unknown payment_id {paid_by}"))),
        }
    }

    /// The packet as its sender sees it through the API adds up.
    fn check_view(&mut self, p: usize) -> Result<(), Violation> {
        let sender = self.packets[p].sender;
        let call = self.direct_call("GET", &format!("/v1/packets/{}", self.packets[p].id.as_str()), None, sender);
        let response = call.serve(self.store, self.config);
        let view: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        if response.status != 200 {
            return Err(violation("query_failed", format!("P{p} as its sender: {} {view}", response.status)));
        }
        if view["status"] == "awaiting_payment" {
            return Ok(());
        }
        let claims = view["claims"].as_array().cloned().unwrap_or_default();
        let claimed: u64 = claims.iter().map(|c| c["amount_fen"].as_u64().unwrap_or(0)).sum();
        let refund = view["refund_fen"].as_u64().unwrap_or(0);
        let remaining = view["remaining_fen"].as_u64().unwrap_or(0);
        let total = view["total_fen"].as_u64().unwrap_or(0);
        if claimed + refund + remaining != total {
            return Err(violation(
                "view_sum_mismatch",
                format!("P{p}: claims {claimed} + refund {refund} + remaining {remaining} != total {total}"),
            ));
        }
        let users: BTreeSet<&str> = claims.iter().filter_map(|c| c["user"].as_str()).collect();
        if users.len() != claims.len() || claims.iter().any(|c| c["amount_fen"].as_u64().unwrap_or(0) < 1) {
            return Err(violation("view_claims_invalid", format!("P{p}: {view}")));
        }
        Ok(())
    }

    /// What users were told about their claims is what the store holds.
    fn check_told(&self, p: usize, packet: &Packet) -> Result<(), Violation> {
        for (&(_, u), h) in self.holdings.range((p, 0)..(p + 1, 0)) {
            let name = &self.users[u].name;
            let held = packet.claim_of(name).map(|c| (c.amount_fen.0, u64::from(c.seq)));
            match (h.told, h.last_open, held) {
                (Some(told), _, held) if held != Some(told) => {
                    return Err(violation(
                        "told_claim_missing",
                        format!("{name} was told P{p} seq={} amt={}, the store holds {held:?}", told.1, told.0),
                    ));
                }
                // A 410 proves the user holds nothing (an earlier attempt that
                // claimed would be answered again); a 429 only if no earlier
                // attempt's outcome is unknown.
                (None, LastOpen::Refused(status), Some((amount, seq))) if status == 410 || !h.uncertain => {
                    return Err(violation(
                        "claim_after_refusal",
                        format!("{name}'s last open of P{p} answered {status}, yet they hold seq={seq} amt={amount}"),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A request served on the scheduler's thread on the plain store (checks
    /// and the fault-free final phase).
    fn direct_call(&self, method: &'static str, path: &str, query: Option<String>, user: usize) -> HttpCall {
        HttpCall {
            method,
            path: path.to_owned(),
            query,
            authorization: Some(self.users[user].authorization.clone()),
            signature: None,
            body: Vec::new(),
            now: self.now,
            entropy: 0,
        }
    }

    // -- the final phase ---------------------------------------------------------

    /// Lets every request finish, delivers every payment the payment system
    /// still owes an answer, then moves the clock far past every expiry and
    /// sweeps without faults; then audits everything.
    fn final_phase(&mut self) -> Result<(), Violation> {
        self.faults_on = false;
        self.log("final phase: draining, no new faults".into());
        while !self.in_flight().is_empty() {
            let in_flight = self.in_flight();
            let slot = *self.rng.pick(&in_flight);
            self.advance(slot, 64)?;
        }
        // Whatever crashed or failed before, a retry on a healthy store
        // gets a final answer: nothing leaves a payment stranded.
        let due: Vec<usize> = (0..self.payments.len()).filter(|&x| self.payments[x].answer.is_none()).collect();
        for payment in due {
            self.run_direct(ReqKind::Pay { payment })?;
        }
        if let Some(x) = self.payments.iter().position(|x| x.answer.is_none()) {
            return Err(violation("payment_never_answered", format!("pay{x} got no final answer on a healthy store")));
        }
        for round in 0..6 {
            if round < 4 {
                self.now = self.now.plus_seconds(4 * DAY + self.rng.range(0, 6 * 3600) as i64);
            }
            self.run_direct(ReqKind::Expire)?;
            self.run_direct(ReqKind::Settle)?;
        }
        self.audit()?;
        self.purge_phase()
    }

    /// Past the retention of the last day, purges every day of the history
    /// (fault-free, through HTTP): each day's reconciliation is kept as it
    /// was, no key of a day's packets is left, and every wallet still holds
    /// exactly what it is owed.
    fn purge_phase(&mut self) -> Result<(), Violation> {
        let packets: Vec<Packet> = (0..self.packets.len()).map(|p| self.packet_now(p)).collect::<Result<_, _>>()?;
        let first = self.plan.start.day().days_since_epoch();
        let last = self.now.day().days_since_epoch();
        let days: Vec<Day> = (first..=last).map(Day::from_days_since_epoch).collect();
        let admin = |sim: &Self, method, path: &str, day: Day| {
            let call = HttpCall {
                authorization: Some(ADMIN.into()),
                ..sim.direct_call(method, path, Some(format!("day={day}")), 0)
            };
            let response = call.serve(sim.store, sim.config);
            (response.status, serde_json::from_slice::<Value>(&response.body).unwrap_or(Value::Null))
        };
        let before: Vec<(u16, Value)> =
            days.iter().map(|&day| admin(self, "GET", "/v1/admin/reconcile", day)).collect();
        self.now = Day::from_days_since_epoch(last + self.config.retention_days + 1).start();
        self.log(format!("purge phase: {} days at {}", days.len(), self.now.to_rfc3339()));
        for (&day, (_, mut kept)) in days.iter().zip(before) {
            let (status, purged) = admin(self, "POST", "/v1/admin/purge", day);
            kept["purged"] = json!(true);
            if status != 200 || purged["report"] != kept {
                return Err(violation("purge_failed", format!("{day}: {status} {purged}, reconciled {kept}")));
            }
            let (_, after) = admin(self, "GET", "/v1/admin/reconcile", day);
            if after != kept {
                return Err(violation("purge_lost_report", format!("{day}: {after}, reconciled {kept}")));
            }
            let left: Vec<String> =
                all_keys(self.store).unwrap_or_default().into_iter().filter(|k| keys::of_day(k, day)).collect();
            if !left.is_empty() {
                return Err(violation("purge_left_keys", format!("{day}: {left:?}")));
            }
        }
        self.audit_wallets(&packets)
    }

    /// Serves a request on this thread, fault-free, with the usual bookkeeping.
    fn run_direct(&mut self, kind: ReqKind) -> Result<(), Violation> {
        let id = self.next_request;
        self.next_request += 1;
        let call = self.http_call(&kind);
        let desc = self.describe(&kind);
        self.mark(&kind, true);
        self.log(format!("r{id} {desc}"));
        let response = catch_unwind(AssertUnwindSafe(|| call.serve(self.store, self.config))).map_err(panic_message);
        let done = Done { response, calls: 0, crashed: false, faulted: false, hash: 0 };
        self.complete(InFlight { id, kind, desc }, done)
    }

    /// The books after everything settled.
    fn audit(&mut self) -> Result<(), Violation> {
        self.log("audit".into());
        let mut packets = Vec::with_capacity(self.packets.len());
        for p in 0..self.packets.len() {
            self.check_packet(p)?;
            let packet = self.packet_now(p)?;
            if packet.status.is_paid() && !packet.status.is_final() {
                return Err(violation("unfinished_packet", format!("P{p} is still {}", packet.status.as_str())));
            }
            packets.push(packet);
        }
        // Every audit runs, so one report shows a bug from all sides (a
        // missing credit is also a reconciliation mismatch).
        let findings: Vec<Violation> = [
            self.audit_payments(&packets),
            self.audit_wallets(&packets),
            self.audit_reconcile(),
            self.audit_reports(&packets),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect();
        let Some(first) = findings.first() else { return Ok(()) };
        let also: Vec<String> = findings[1..].iter().map(|v| format!("; also {}: {}", v.invariant, v.detail)).collect();
        Err(violation(first.invariant, format!("{}{}", first.detail, also.concat())))
    }

    /// Sweeps never report more than can be owed (each credit and refund
    /// is reported by one run at most).
    fn audit_reports(&self, packets: &[Packet]) -> Result<(), Violation> {
        let owed: u64 = packets.iter().map(|p| p.claimed_fen().0 + p.refund_fen.unwrap_or_default().0).sum();
        let refunds: u64 = packets.iter().map(|p| p.refund_fen.unwrap_or_default().0).sum();
        if self.reported_credited_fen > owed || self.reported_refund_fen > refunds {
            return Err(violation(
                "over_reported",
                format!(
                    "settle reported {} fen credited of {owed} owed; expire reported {} fen refunded of {refunds}",
                    self.reported_credited_fen, self.reported_refund_fen
                ),
            ));
        }
        Ok(())
    }

    /// Each payment_id activated at most one packet.
    fn audit_payments(&self, packets: &[Packet]) -> Result<(), Violation> {
        let mut activated: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (p, packet) in packets.iter().enumerate() {
            if let (true, Some(id)) = (packet.status.is_paid(), packet.payment_id.as_deref()) {
                activated.entry(id).or_default().push(p);
            }
        }
        match activated.iter().find(|(_, ps)| ps.len() > 1) {
            Some((id, ps)) => Err(violation("payment_reused", format!("payment_id {id} activated packets {ps:?}"))),
            None => Ok(()),
        }
    }

    /// Every claim in its receiver's wallet and every refund in its sender's,
    /// exactly once, with the right amount, and nothing else.
    fn audit_wallets(&mut self, packets: &[Packet]) -> Result<(), Violation> {
        let mut owed: BTreeMap<(String, String, &'static str), u64> = BTreeMap::new();
        for packet in packets.iter().filter(|p| p.status.is_paid()) {
            for claim in &packet.claims {
                owed.insert((claim.user.clone(), packet.id.clone(), "claim"), claim.amount_fen.0);
            }
            if let Some(refund) = packet.refund_fen.filter(|r| r.0 > 0) {
                owed.insert((packet.sender.clone(), packet.id.clone(), "refund"), refund.0);
            }
        }
        let mut credited = BTreeMap::new();
        for u in 0..self.users.len() {
            let response = self.direct_call("GET", "/v1/users/me/wallet", None, u).serve(self.store, self.config);
            let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
            let name = self.users[u].name.clone();
            if response.status != 200 {
                return Err(violation("wallet_failed", format!("{name}: {} {body}", response.status)));
            }
            let entries = wallet_entries(&body)
                .map_err(|e| Violation { detail: format!("wallet of {name}: {}", e.detail), ..e })?;
            for (packet, kind, amount) in entries {
                credited.insert((name.clone(), packet, kind), amount);
            }
        }
        for (key, amount) in &owed {
            let label = self.by_id.get(&key.1).map_or("?".into(), |p| format!("P{p}"));
            match credited.get(key) {
                Some(got) if got == amount => {}
                Some(got) => {
                    return Err(violation(
                        "credit_amount_mismatch",
                        format!("{} of {label} to {}: {amount} fen owed, {got} credited", key.2, key.0),
                    ));
                }
                None => {
                    return Err(violation(
                        "credit_missing",
                        format!("{} of {label} ({amount} fen) is not in {}'s wallet", key.2, key.0),
                    ));
                }
            }
        }
        if let Some((key, amount)) = credited.iter().find(|(key, _)| !owed.contains_key(*key)) {
            return Err(violation("unexpected_credit", format!("{} has {amount} fen {} of {}", key.0, key.2, key.1)));
        }
        Ok(())
    }

    /// Reconciliation of every day the history touched reports no mismatch.
    fn audit_reconcile(&mut self) -> Result<(), Violation> {
        let first = self.plan.start.day().days_since_epoch();
        let last = self.now.day().days_since_epoch();
        for day in first..=last {
            let day = Day::from_days_since_epoch(day);
            let call = HttpCall {
                authorization: Some(ADMIN.into()),
                ..self.direct_call("GET", "/v1/admin/reconcile", Some(format!("day={day}")), 0)
            };
            let response = call.serve(self.store, self.config);
            let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
            if response.status != 200 {
                return Err(violation("reconcile_failed", format!("{day}: {} {body}", response.status)));
            }
            let mismatches = body["mismatches"].as_array().cloned().unwrap_or_default();
            if !mismatches.is_empty() {
                let named: Vec<String> = mismatches
                    .iter()
                    .map(|m| {
                        let id = m["packet_id"].as_str().unwrap_or("?");
                        let label = self.by_id.get(id).map_or(id.to_owned(), |p| format!("P{p}"));
                        format!("{label}: {}", m["reason"].as_str().unwrap_or("?"))
                    })
                    .collect();
                return Err(violation("reconcile_mismatch", format!("{day}: {}", named.join(", "))));
            }
        }
        Ok(())
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// `(amount, seq)` of a claim view, which must be `user`'s.
fn claim_of(claim: &Value, user: &str) -> Result<(u64, u64), Violation> {
    match (claim["user"].as_str(), claim["amount_fen"].as_u64(), claim["seq"].as_u64()) {
        (Some(u), Some(amount), Some(seq)) if u == user && amount >= 1 => Ok((amount, seq)),
        _ => Err(violation("bad_claim_answer", format!("{user} was answered the claim {claim}"))),
    }
}

/// A wallet view's entries as (packet_id, kind, amount); each (packet, kind) once.
fn wallet_entries(body: &Value) -> Result<Vec<(String, &'static str, u64)>, Violation> {
    let mut seen = BTreeSet::new();
    let mut entries = Vec::new();
    for e in body["entries"].as_array().cloned().unwrap_or_default() {
        let kind = match e["kind"].as_str() {
            Some("claim") => "claim",
            Some("refund") => "refund",
            _ => return Err(violation("bad_wallet_entry", e.to_string())),
        };
        let packet = e["packet_id"].as_str().unwrap_or("").to_owned();
        if !seen.insert((packet.clone(), kind)) {
            return Err(violation("duplicate_credit", format!("{kind} of {packet} appears twice")));
        }
        entries.push((packet, kind, e["amount_fen"].as_u64().unwrap_or(0)));
    }
    let sum: u64 = entries.iter().map(|e| e.2).sum();
    if body["balance_fen"].as_u64() != Some(sum) {
        return Err(violation("wallet_balance_mismatch", format!("balance {} != sum {sum}", body["balance_fen"])));
    }
    Ok(entries)
}

fn describe_packet(p: &Packet) -> String {
    format!("  record: {}", String::from_utf8_lossy(&p.encode()))
}
