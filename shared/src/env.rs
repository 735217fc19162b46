//! What an operation needs from its surroundings besides the store: the time
//! of the request, a random source, and a way to pause between CAS retries.
//! Passed in, never reached for, so every operation is reproducible in tests.

use crate::alloc::{Entropy, uniform};
use crate::time::Timestamp;
use std::time::Duration;

/// Attempts of one compare-and-set loop before giving up with 429 `busy`.
pub const MAX_CAS_ATTEMPTS: u32 = 64;
const BACKOFF_BASE_MICROS: u64 = 50;
const BACKOFF_CAP_MICROS: u64 = 5_000;

pub struct Env {
    pub now: Timestamp,
    pub entropy: Box<dyn Entropy>,
    pub pause: fn(Duration),
}

impl Env {
    pub fn new(now: Timestamp, entropy: Box<dyn Entropy>, pause: fn(Duration)) -> Env {
        Env { now, entropy, pause }
    }

    /// Full-jitter exponential backoff: a uniform pause in
    /// `[0, min(cap, base * 2^attempt)]`, so contenders spread out instead of
    /// colliding again in lockstep.
    pub fn backoff(&mut self, attempt: u32) {
        let ceiling = BACKOFF_BASE_MICROS.saturating_mul(1 << attempt.min(20)).min(BACKOFF_CAP_MICROS);
        let micros = uniform(self.entropy.as_mut(), 0, ceiling);
        (self.pause)(Duration::from_micros(micros));
    }

    pub fn random(&mut self) -> u64 {
        self.entropy.next_u64()
    }
}
