//! Every key the service writes, in one place. The layout (documented in
//! `shared/README.md`) follows the seeds' two-dimensional sharding:
//! `s{SET}/db_{xx}.t_{y}_{dd}/...` for everything that belongs to one packet
//! (SET by packet id, day-table by creation day of month, 01..31), and
//! `u{uu}/{user}/...` for user-centric records.
//!
//! Two kinds of key never mix: counters (only ever touched by `increment`,
//! and read with `increment(key, 0)`) end in `/len` or `/n`; every other key
//! is a value written by `set` or compare-and-set. Spin's SQLite store panics
//! when `increment` meets a key written by `set`, so the suffixes keep the
//! families apart by construction.

use crate::id::{PacketId, fnv1a};
use crate::time::Day;
use sha2::{Digest, Sha256};

/// The day-table a packet lives in: `s{SET}/db_{xx}.t_{y}_{dd}`.
pub fn table(id: &PacketId) -> String {
    in_table(id, &[])
}

/// `table(id)` followed by `parts`. Keys are built on every request (an open
/// builds about ten), so they are copied straight out of the validated id
/// (`YYYYMMDD` + shard `HHH`: SET = H1, db = H1H2, table = H3, dd = the day)
/// instead of parsing it back into numbers and formatting them again.
fn in_table(id: &PacketId, parts: &[&str]) -> String {
    let s = id.as_str();
    concat(
        ["s", &s[8..9], "/db_", &s[8..10], ".t_", &s[10..11], "_", &s[6..8]].into_iter().chain(parts.iter().copied()),
    )
}

/// The pieces joined, allocated once.
fn concat<'a>(pieces: impl Iterator<Item = &'a str> + Clone) -> String {
    let mut key = String::with_capacity(pieces.clone().map(str::len).sum());
    pieces.for_each(|p| key.push_str(p));
    key
}

/// The SET a key belongs to: `Some(n)` for every key of SET n's packets and
/// indexes (`s{n}/...`), `None` for the user-centric and payment keys. A
/// deployment may keep each SET in a store of its own (`KvLayout::PerSet`).
pub fn set_of(key: &str) -> Option<u32> {
    match key.as_bytes() {
        [b's', digit @ b'0'..=b'9', b'/', ..] => Some(u32::from(digit - b'0')),
        _ => None,
    }
}

/// The packet record (CAS-updated, carries `version`).
pub fn packet(id: &PacketId) -> String {
    in_table(id, &["/p/", id.as_str()])
}

/// Admission counter of one packet for one time window (counter).
pub fn admission(id: &PacketId, window: i64) -> String {
    in_table(id, &["/adm/", id.as_str(), "/", &window.to_string(), "/n"])
}

/// Election counter deciding which settle run reports a credit (counter).
/// `item` is `c{seq}` for a claim or `refund`.
pub fn credit_election(id: &PacketId, item: &str) -> String {
    format!("{}/cr/{}/{}/n", table(id), id, item)
}

/// Pre-allocated share `k` (1-based) of a cursor-strategy packet (value, CAS:
/// created `free` at wrap, then `claimed` by one open or `sealed` by expiry).
pub fn share(id: &PacketId, k: u32) -> String {
    in_table(id, &["/sh/", id.as_str(), "/s", &k.to_string()])
}

/// The cursor handing out share numbers of a cursor-strategy packet (counter).
pub fn cursor(id: &PacketId) -> String {
    in_table(id, &["/sh/", id.as_str(), "/cursor/n"])
}

/// Which share a user claimed in a cursor-strategy packet (value: `k`).
pub fn share_of(id: &PacketId, user: &str) -> String {
    in_table(id, &["/sh/", id.as_str(), "/u.", user])
}

/// Create-once marker of a user's first open of a cursor-strategy packet (counter).
pub fn open_marker(id: &PacketId, user: &str) -> String {
    in_table(id, &["/sh/", id.as_str(), "/u.", user, "/n"])
}

/// The per-SET, per-creation-day index of packets wrapped that day: a list
/// (see `List`). Reconcile reads it.
pub fn day_index(set: u32, day: Day) -> List {
    List(format!("s{}/ix/{}", set, day.compact()))
}

/// Set once the expiry sweep has dropped the shares of that day index's
/// packets that were never paid (a mark, written by `set`).
pub fn day_index_cleaned(set: u32, day: Day) -> String {
    format!("s{}/ix/{}/cleaned", set, day.compact())
}

/// The per-SET, per-creation-day index of packets whose payment was
/// accepted: what the sweeps walk, so unpaid packets never slow them.
pub fn paid_index(set: u32, day: Day) -> List {
    List(format!("s{}/paid/{}", set, day.compact()))
}

/// Where a sweep may start in a paid index (a monotone hint, written by `set`).
pub fn paid_index_low(set: u32, day: Day) -> String {
    format!("s{}/paid/{}/low", set, day.compact())
}

/// Which packet a payment_id pays: the sum of the codes of the packets
/// that claimed it (counter; see `ops::packet::bind_payment`). The id is
/// hashed, as payment system text.
pub fn payment_binding(payment_id: &str) -> String {
    format!("pay/{}/n", short_hash(payment_id))
}

/// A user's wraps of `day` not yet paid (counter): bounds unpaid packets.
pub fn unpaid(sender: &str, day: Day) -> String {
    format!("{}/unpaid/{}/n", user(sender), day.compact())
}

/// Election counter: the payment that counts 1 takes the packet off its
/// sender's unpaid count, exactly once (counter).
pub fn unpaid_release(id: &PacketId) -> String {
    in_table(id, &["/rel/", id.as_str(), "/n"])
}

/// Per-(packet, user) admission counter of one time window (counter).
pub fn user_admission(id: &PacketId, user: &str, window: i64) -> String {
    in_table(id, &["/adm/", id.as_str(), "/u.", user, "/", &window.to_string(), "/n"])
}

/// The placement log: every drain and restore of a SET, in order (see
/// `ops::placement`). Not a SET's key: it stays reachable when a SET is down.
pub fn placement_log() -> List {
    List("ctl/placement".into())
}

/// Reconcile's report of `day`, kept when the purge deleted the day's
/// packets (value, JSON of `ReconcileReport`).
pub fn kept_report(day: Day) -> String {
    format!("report/{}", day.compact())
}

/// Whether `key` holds nothing but the state of packets created on `day`,
/// which the purge deletes: their day-table keys (record, shares, cursor,
/// admission counters, per-user markers, credit elections), the day's SET
/// indexes, and the senders' unpaid counts and sent lists of that day. A
/// user's received list and wallet are their history and stay, and so do
/// payment bindings (a payment_id pays one packet ever).
pub fn of_day(key: &str, day: Day) -> bool {
    let day = day.compact();
    let mut parts = key.split('/');
    let (Some(first), Some(second), Some(third), fourth) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let set = set_of(key).is_some();
    let user_shard = first.len() == 3 && first.starts_with('u') && first[1..].bytes().all(|b| b.is_ascii_digit());
    match (second, third) {
        // s{n}/db_xx.t_y_dd/{family}/{packet id}/...
        (table, "p" | "adm" | "cr" | "sh" | "rel") if set && table.starts_with("db_") => {
            fourth.is_some_and(|id| id.starts_with(&day))
        }
        // s{n}/ix/{day}..., s{n}/paid/{day}...
        ("ix" | "paid", d) if set => d == day,
        // u{uu}/{user}/unpaid/{day}/n, u{uu}/{user}/sent/{day}/...
        (_, "unpaid" | "sent") if user_shard => fourth == Some(&day),
        _ => false,
    }
}

/// Hex of the first 16 bytes of SHA-256: client text made key-safe.
fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
}

/// All user-centric keys start here: `u{uu}/{user}` (uu = user hash % 100).
pub fn user(user: &str) -> String {
    let uu = fnv1a(user.as_bytes()) % 100;
    let mut key = String::with_capacity(5 + user.len());
    key.push('u');
    key.push(char::from(b'0' + (uu / 10) as u8));
    key.push(char::from(b'0' + (uu % 10) as u8));
    key.push('/');
    key.push_str(user);
    key
}

/// The wrap idempotency record of (sender, request_id). The request id is
/// hashed: it is arbitrary client text and must not be able to forge a
/// key of another family.
pub fn wrap_request(sender: &str, request_id: &str) -> String {
    format!("{}/wrap/{}", user(sender), short_hash(request_id))
}

/// Election counter for the wrap idempotency record (counter).
pub fn wrap_election(sender: &str, request_id: &str) -> String {
    format!("{}/n", wrap_request(sender, request_id))
}

/// Packets a user sent, by the packet's creation day.
pub fn sent(sender: &str, day: Day) -> List {
    List(format!("{}/sent/{}", user(sender), day.compact()))
}

/// Shares a user received, by the day of the claim.
pub fn received(receiver: &str, day: Day) -> List {
    List(format!("{}/recv/{}", user(receiver), day.compact()))
}

/// A user's settled wallet entries dated `day` (the day of the claim or refund).
pub fn wallet(owner: &str, day: Day) -> List {
    List(format!("{}/wallet/{}", user(owner), day.compact()))
}

/// The days on which a user has wallet entries (items are `YYYYMMDD`), so the
/// all-time ledger can be read without scanning every possible day.
pub fn wallet_days(owner: &str) -> List {
    List(format!("{}/walletdays", user(owner)))
}

/// An append-only list in the store without compare-and-set: a length counter
/// hands out slots, each item lives in its own slot, and a marker per item
/// name makes appends idempotent (see `store::lists`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct List(pub String);

impl List {
    pub fn len_key(&self) -> String {
        self.with(&["/len"])
    }

    pub fn slot(&self, k: i64) -> String {
        self.with(&["/", &k.to_string()])
    }

    pub fn marker(&self, name: &str) -> String {
        self.with(&["/m/", name])
    }

    fn with(&self, parts: &[&str]) -> String {
        concat(std::iter::once(self.0.as_str()).chain(parts.iter().copied()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::SplitMix64;

    #[test]
    fn packet_keys_encode_set_and_day_table() {
        let day = Day { year: 2026, month: 11, day: 7 };
        let id = PacketId::generate(day, &mut SplitMix64(1));
        let key = packet(&id);
        let expected_prefix = format!("s{}/db_{:02}.t_{}_07/", id.set(), id.db(), id.table());
        assert!(key.starts_with(&expected_prefix), "{key}");
        assert!(key.ends_with(id.as_str()));
    }

    #[test]
    fn keys_copied_from_the_id_match_the_numeric_layout() {
        let mut rng = SplitMix64(3);
        for d in 1..=31 {
            let day = Day { year: 2026, month: 12, day: d };
            for _ in 0..50 {
                let id = PacketId::generate(day, &mut rng);
                let table = format!("s{}/db_{:02}.t_{}_{:02}", id.set(), id.db(), id.table(), id.day().day);
                assert_eq!(packet(&id), format!("{table}/p/{id}"));
                assert_eq!(admission(&id, -7), format!("{table}/adm/{id}/-7/n"));
                assert_eq!(share(&id, 12), format!("{table}/sh/{id}/s12"));
                assert_eq!(cursor(&id), format!("{table}/sh/{id}/cursor/n"));
                assert_eq!(open_marker(&id, "bob"), format!("{}/n", share_of(&id, "bob")));
                assert_eq!(share_of(&id, "bob"), format!("{table}/sh/{id}/u.bob"));
            }
        }
        let list = received("bob", Day { year: 2026, month: 2, day: 3 });
        assert_eq!(list.len_key(), format!("{}/len", list.0));
        assert_eq!(list.slot(42), format!("{}/42", list.0));
        assert_eq!(list.marker("p.c1"), format!("{}/m/p.c1", list.0));
        for name in ["alice", "bob", "x", "user_with-64-chars"] {
            assert_eq!(user(name), format!("u{:02}/{name}", fnv1a(name.as_bytes()) % 100));
        }
    }

    #[test]
    fn every_packet_key_names_its_packets_set_and_no_user_key_names_one() {
        let day = Day { year: 2026, month: 12, day: 7 };
        let mut rng = SplitMix64(9);
        for _ in 0..200 {
            let id = PacketId::generate(day, &mut rng);
            let set = Some(id.set());
            for key in [
                packet(&id),
                admission(&id, 3),
                user_admission(&id, "bob", 3),
                credit_election(&id, "refund"),
                share(&id, 1),
                cursor(&id),
                share_of(&id, "s1/"),
                open_marker(&id, "bob"),
                unpaid_release(&id),
                day_index(id.set(), day).slot(1),
                day_index_cleaned(id.set(), day),
                paid_index(id.set(), day).len_key(),
                paid_index_low(id.set(), day),
            ] {
                assert_eq!(set_of(&key), set, "{key}");
            }
        }
        for name in ["s1", "s1/x", "alice"] {
            for key in [user(name), wrap_request(name, "r"), sent(name, day).len_key(), wallet_days(name).slot(0)] {
                assert_eq!(set_of(&key), None, "{key}");
            }
        }
        assert_eq!(set_of(&payment_binding("s1/")), None);
    }

    #[test]
    fn counters_and_values_never_share_a_key() {
        let day = Day { year: 2026, month: 1, day: 31 };
        let id = PacketId::generate(day, &mut SplitMix64(2));
        let counters = [
            admission(&id, 5),
            credit_election(&id, "c1"),
            day_index(1, day).len_key(),
            wrap_election("bob", "r1"),
            sent("bob", day).len_key(),
            wallet("bob", day).len_key(),
            wallet_days("bob").len_key(),
            cursor(&id),
            open_marker(&id, "n"),
            paid_index(1, day).len_key(),
            payment_binding("p/n"),
            unpaid("bob", day),
            unpaid_release(&id),
            user_admission(&id, "bob", 7),
        ];
        for c in &counters {
            assert!(c.ends_with("/n") || c.ends_with("/len"), "{c}");
        }
        // Value keys never end like counters, whatever the client sends.
        let values = [
            packet(&id),
            wrap_request("bob", "x/n"),
            wrap_request("bob", "x/len"),
            day_index(1, day).slot(3),
            paid_index_low(1, day),
            day_index_cleaned(1, day),
            paid_index(1, day).slot(2),
            wallet("bob", day).marker("p.c1"),
            wallet_days("bob").slot(1),
            share(&id, 7),
            share_of(&id, "n"),
        ];
        for v in &values {
            assert!(!v.ends_with("/n") && !v.ends_with("/len"), "{v}");
        }
    }

    #[test]
    fn of_day_names_every_key_of_a_days_packets_and_nothing_else() {
        let day = Day { year: 2026, month: 11, day: 7 };
        let next_month = Day { year: 2026, month: 12, day: 7 };
        let mut rng = SplitMix64(5);
        for _ in 0..100 {
            let id = PacketId::generate(day, &mut rng);
            // Same SET, db and table (the dd repeats every month): kept.
            let later = PacketId::parse(&format!("{}{}", next_month.compact(), &id.as_str()[8..])).unwrap();
            let of = |id: &PacketId| {
                [
                    packet(id),
                    admission(id, 1_794_000_000),
                    user_admission(id, "bob", 179_400_000),
                    credit_election(id, "c1"),
                    credit_election(id, "refund"),
                    share(id, 3),
                    cursor(id),
                    share_of(id, "bob"),
                    open_marker(id, "bob"),
                    unpaid_release(id),
                ]
            };
            for key in of(&id) {
                assert!(of_day(&key, day), "{key}");
                assert!(!of_day(&key, next_month), "{key}");
            }
            for key in of(&later) {
                assert!(!of_day(&key, day), "{key}");
            }
        }
        let set = 3;
        let indexes = |d: Day| {
            [
                day_index(set, d).len_key(),
                day_index(set, d).slot(4),
                day_index(set, d).marker("x"),
                day_index_cleaned(set, d),
                paid_index(set, d).slot(1),
                paid_index_low(set, d),
                unpaid("bob", d),
                sent("bob", d).len_key(),
                sent("bob", d).slot(2),
            ]
        };
        for key in indexes(day) {
            assert!(of_day(&key, day), "{key}");
        }
        for key in indexes(next_month).into_iter().chain(indexes(day.minus_days(1))) {
            assert!(!of_day(&key, day), "{key}");
        }
        for key in [
            received("bob", day).slot(1),
            wallet("bob", day).len_key(),
            wallet("bob", day).marker("p.c1"),
            wallet_days("bob").slot(1),
            wrap_request("bob", "20261107"),
            payment_binding("20261107"),
            kept_report(day),
            user("20261107"),
        ] {
            assert!(!of_day(&key, day), "{key}");
        }
    }

    #[test]
    fn user_keys_are_sharded_by_user() {
        assert!(user("alice").starts_with('u'));
        assert_eq!(user("alice"), user("alice"));
        assert!(received("alice", Day { year: 2026, month: 2, day: 3 }).0.ends_with("/alice/recv/20260203"));
    }
}
