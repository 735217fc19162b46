//! Packet ids. An id is opaque to clients but carries what every function
//! needs to route a request with no lookup: the creation day (which
//! day-table) and a three-digit shard (which SET, db and table).
//!
//! Layout, 27 ASCII characters: `YYYYMMDD` + `HHH` + 16 random base32 chars.
//! `HHH` is a hash of the random part (the seeds' "last three digits of the
//! id's hash"), so a mistyped or forged id is recognised as malformed without
//! touching the store.

use crate::alloc::Entropy;
use crate::time::Day;
use std::fmt;

/// Number of SETs. The shard's hundreds digit picks the SET, so there are ten,
/// each holding ten dbs (`db_xx`) of ten tables (`t_y`).
pub const SETS: u32 = 10;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const RANDOM_LEN: usize = 16;
pub const ID_LEN: usize = 8 + 3 + RANDOM_LEN;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId(String);

impl PacketId {
    /// A fresh id created on `day`. 80 random bits: ids are never reused, so
    /// a new packet's keys are uncontended and may be written with plain `set`.
    pub fn generate(day: Day, entropy: &mut dyn Entropy) -> PacketId {
        let mut random = String::with_capacity(RANDOM_LEN);
        let mut bits = 0u64;
        for i in 0..RANDOM_LEN {
            if i % 12 == 0 {
                bits = entropy.next_u64();
            }
            random.push(ALPHABET[(bits & 31) as usize] as char);
            bits >>= 5;
        }
        let shard = shard_of(&random);
        PacketId(format!("{}{:03}{}", day.compact(), shard, random))
    }

    /// A fresh id created on `day` whose SET `wanted` accepts: the random
    /// part is drawn again until it hashes into such a SET (the id stays
    /// self-checking, and its SET is still derived from it). `None` after
    /// `MAX_DRAWS` misses, which with any SET wanted happens with a
    /// probability below 10^-45.
    pub fn generate_where(day: Day, entropy: &mut dyn Entropy, wanted: impl Fn(u32) -> bool) -> Option<PacketId> {
        const MAX_DRAWS: usize = 1_000;
        (0..MAX_DRAWS).map(|_| PacketId::generate(day, entropy)).find(|id| wanted(id.set()))
    }

    /// Accepts only well-formed ids whose shard matches their random part.
    pub fn parse(s: &str) -> Option<PacketId> {
        if s.len() != ID_LEN || !s.is_ascii() {
            return None;
        }
        Day::parse_compact(&s[..8])?;
        let shard: u32 = s[8..11].parse().ok().filter(|_| s[8..11].bytes().all(|b| b.is_ascii_digit()))?;
        let random = &s[11..];
        if !random.bytes().all(|b| ALPHABET.contains(&b)) || shard_of(random) != shard {
            return None;
        }
        Some(PacketId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn day(&self) -> Day {
        Day::parse_compact(&self.0[..8]).expect("validated at construction")
    }

    /// 000..999.
    pub fn shard(&self) -> u32 {
        self.0[8..11].parse().expect("validated at construction")
    }

    /// The SET (0..SETS) every request for this packet sticks to.
    pub fn set(&self) -> u32 {
        self.shard() / 100
    }

    /// `db_xx`: the first two digits of the shard.
    pub fn db(&self) -> u32 {
        self.shard() / 10
    }

    /// `t_y`: the last digit of the shard.
    pub fn table(&self) -> u32 {
        self.shard() % 10
    }
}

impl fmt::Display for PacketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// FNV-1a, 64 bit: stable forever, cheap, good enough to spread shards.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn shard_of(random: &str) -> u32 {
    (fnv1a(random.as_bytes()) % 1000) as u32
}

/// A user id as the contract allows it: 1–64 chars of `[A-Za-z0-9_-]`.
pub fn valid_user(user: &str) -> bool {
    (1..=64).contains(&user.len()) && user.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::SplitMix64;

    fn day() -> Day {
        Day { year: 2026, month: 11, day: 22 }
    }

    #[test]
    fn generated_ids_parse_back_with_their_day_and_set() {
        let mut rng = SplitMix64(9);
        for _ in 0..1_000 {
            let id = PacketId::generate(day(), &mut rng);
            let parsed = PacketId::parse(id.as_str()).expect("own ids parse");
            assert_eq!(parsed, id);
            assert_eq!(id.day(), day());
            assert!(id.set() < SETS);
            assert_eq!(id.db() / 10, id.set());
            assert_eq!(id.shard(), id.db() * 10 + id.table());
        }
    }

    #[test]
    fn shards_spread_over_every_set() {
        let mut rng = SplitMix64(11);
        let mut per_set = [0u32; SETS as usize];
        for _ in 0..10_000 {
            per_set[PacketId::generate(day(), &mut rng).set() as usize] += 1;
        }
        assert!(per_set.iter().all(|&n| (800..1_200).contains(&n)), "{per_set:?}");
    }

    #[test]
    fn malformed_or_tampered_ids_are_rejected() {
        let mut rng = SplitMix64(5);
        let id = PacketId::generate(day(), &mut rng);
        let text = id.to_string();
        assert!(PacketId::parse("").is_none());
        assert!(PacketId::parse("nope").is_none());
        assert!(PacketId::parse(&text[1..]).is_none());
        // A changed random char whose hash lands in another shard is caught.
        let last = text.as_bytes()[ID_LEN - 1];
        let forged = ALPHABET
            .iter()
            .map(|&c| format!("{}{}", &text[..ID_LEN - 1], c as char))
            .find(|f| f.as_bytes()[ID_LEN - 1] != last && shard_of(&f[11..]) != id.shard())
            .expect("some char changes the shard");
        assert!(PacketId::parse(&forged).is_none());
        // Impossible date, non-digit shard, char outside the alphabet.
        assert!(PacketId::parse(&format!("20261340{}", &text[8..])).is_none());
        assert!(PacketId::parse(&format!("{}x{}", &text[..8], &text[9..])).is_none());
        assert!(PacketId::parse(&format!("{}u", &text[..ID_LEN - 1])).is_none());
    }

    #[test]
    fn user_ids() {
        assert!(valid_user("alice_01-X"));
        assert!(!valid_user(""));
        assert!(!valid_user(&"a".repeat(65)));
        assert!(!valid_user("a/b"));
        assert!(!valid_user("ä"));
    }
}
