//! The records kept in the store and the views the contract shows of them.
//!
//! One packet is one record (key `keys::packet`): its terms, its state and
//! its claims. Everything that moves money for a packet is a compare-and-set
//! of this record, so the record itself is the per-packet serialization point
//! and every claim is written atomically with the deduction that pays it.
//! Every CAS-updated record carries `version` (bumped on each write, so a
//! value never repeats and a value-comparing CAS cannot be fooled by ABA) and
//! `last_op` (who wrote this version, so a retry whose swap reported failure
//! can recognise its own write).

use crate::alloc::Kind;
use crate::money::Fen;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    AwaitingPayment,
    Active,
    Exhausted,
    Expired,
    Refunded,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::AwaitingPayment => "awaiting_payment",
            Status::Active => "active",
            Status::Exhausted => "exhausted",
            Status::Expired => "expired",
            Status::Refunded => "refunded",
        }
    }

    pub fn is_paid(self) -> bool {
        self != Status::AwaitingPayment
    }

    /// No money will ever move again, except wallet credits by settle.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Expired | Status::Refunded)
    }
}

/// One opened share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub user: String,
    pub amount_fen: Fen,
    /// 1-based order of the claim in its packet.
    pub seq: u32,
    pub claimed_at: Timestamp,
}

/// How opens serialize on a packet (chosen at wrap, fixed for its life).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each open is a compare-and-set of the packet record (live double-average).
    #[default]
    Cas,
    /// Shares are pre-allocated at wrap; an open takes the next share number
    /// from an `increment` cursor and claims that share's own record. No open
    /// contends with another on any record.
    Cursor,
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Strategy> {
        match s {
            "cas" => Some(Strategy::Cas),
            "cursor" => Some(Strategy::Cursor),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    pub id: String,
    pub version: u64,
    pub last_op: String,
    #[serde(default)]
    pub strategy: Strategy,

    // Terms, fixed at wrap.
    pub kind: Kind,
    pub sender: String,
    pub greeting: Option<String>,
    pub group_id: Option<String>,
    pub total_fen: Fen,
    pub count: u32,
    pub created_at: Timestamp,
    /// Secret per-packet seed for pre-allocated shares; never shown.
    pub seed: u64,

    // State.
    pub status: Status,
    pub payment_id: Option<String>,
    pub paid_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub remaining_fen: Fen,
    pub remaining_count: u32,
    pub claims: Vec<Claim>,
    pub refund_fen: Option<Fen>,
    pub refunded_at: Option<Timestamp>,

    // Settle progress, per credit: the seqs (share numbers) of the claims
    // that are in their receivers' wallets, sorted, and whether the refund is
    // in the sender's. A set, never a prefix: a cursor packet's claims land
    // in any share order, so a lower seq can appear after a higher one is
    // credited.
    #[serde(default)]
    pub settled: Vec<u32>,
    #[serde(default)]
    pub refund_settled: bool,
}

impl Packet {
    pub fn decode(bytes: &[u8]) -> Result<Packet, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("corrupt packet record: {e}"))
    }

    pub fn encode(&self) -> Vec<u8> {
        crate::json::to_vec(self)
    }

    pub fn claim_of(&self, user: &str) -> Option<&Claim> {
        self.claims.iter().find(|c| c.user == user)
    }

    pub fn claimed_fen(&self) -> Fen {
        Fen::sum(self.claims.iter().map(|c| c.amount_fen)).unwrap_or(Fen(u64::MAX))
    }

    /// What never changes once the packet is paid (`None` before payment).
    pub fn facts(&self) -> Option<PacketFacts> {
        Some(PacketFacts {
            strategy: self.strategy,
            count: self.count,
            expires_at: self.expires_at?,
            sender: self.sender.clone(),
        })
    }

    /// Expired by the clock, whether or not the sweep has run yet.
    pub fn is_past_expiry(&self, now: Timestamp) -> bool {
        now.has_reached(self.expires_at)
    }

    /// Whether the claim with this seq is recorded as credited.
    pub fn is_claim_settled(&self, seq: u32) -> bool {
        self.settled.binary_search(&seq).is_ok()
    }

    /// Every claim and the refund are credited.
    pub fn is_settled(&self) -> bool {
        self.claims.iter().all(|c| self.is_claim_settled(c.seq))
            && (self.refund_credit().is_none() || self.refund_settled)
    }

    /// The largest share, ties to the lowest seq; only once the packet is
    /// exhausted or expired, as the contract says.
    pub fn best_luck(&self, now: Timestamp) -> Option<&Claim> {
        let decided =
            matches!(self.status, Status::Exhausted | Status::Expired | Status::Refunded) || self.is_past_expiry(now);
        if !decided {
            return None;
        }
        // max_by_key keeps the last maximum, so compare (amount, Reverse(seq)).
        self.claims.iter().max_by_key(|c| (c.amount_fen, std::cmp::Reverse(c.seq)))
    }

    /// The money invariants of one packet; each broken one is named.
    /// claims + refund + remainder = total, one claim per user, every share
    /// >= 1 fen, seqs 1..n in order, shares + remaining shares = count.
    pub fn invariant_violations(&self) -> Vec<&'static str> {
        let mut broken = Vec::new();
        if !self.status.is_paid() {
            if !self.claims.is_empty() || self.refund_fen.is_some() {
                broken.push("money_moved_before_payment");
            }
            return broken;
        }
        let accounted = Fen::sum(
            self.claims.iter().map(|c| c.amount_fen).chain([self.refund_fen.unwrap_or_default(), self.remaining_fen]),
        );
        if accounted != Some(self.total_fen) {
            broken.push("sum_mismatch");
        }
        if self.claims.iter().any(|c| c.amount_fen.0 == 0) {
            broken.push("share_below_one_fen");
        }
        let seqs_ok = match self.strategy {
            Strategy::Cas => self.claims.iter().enumerate().all(|(i, c)| c.seq as usize == i + 1),
            // Share numbers: increasing, within the packet (a crash may leave a gap).
            Strategy::Cursor => {
                self.claims.windows(2).all(|w| w[0].seq < w[1].seq)
                    && self.claims.iter().all(|c| c.seq >= 1 && c.seq <= self.count)
            }
        };
        if !seqs_ok {
            broken.push("seq_out_of_order");
        }
        let mut users: Vec<&str> = self.claims.iter().map(|c| c.user.as_str()).collect();
        users.sort_unstable();
        if users.windows(2).any(|w| w[0] == w[1]) {
            broken.push("duplicate_claim");
        }
        let unclaimed = if self.status == Status::Refunded { 0 } else { self.remaining_count as usize };
        if self.claims.len() > self.count as usize
            || (self.status != Status::Refunded && self.claims.len() + unclaimed != self.count as usize)
        {
            broken.push("count_mismatch");
        }
        if self.kind == Kind::Fixed
            && self.claims.iter().any(|c| c.amount_fen.0 * u64::from(self.count) != self.total_fen.0)
        {
            broken.push("fixed_share_mismatch");
        }
        if self.status == Status::Exhausted && (self.remaining_count != 0 || self.remaining_fen.0 != 0) {
            broken.push("exhausted_with_money_left");
        }
        broken
    }

    /// The wallet credit a claim of this packet becomes.
    pub fn claim_credit(&self, claim: &Claim) -> WalletEntry {
        WalletEntry {
            kind: EntryKind::Claim,
            packet_id: self.id.clone(),
            amount_fen: claim.amount_fen,
            at: claim.claimed_at,
        }
    }

    /// The wallet credit the refund becomes, if there is one to credit.
    pub fn refund_credit(&self) -> Option<WalletEntry> {
        let amount = self.refund_fen.filter(|r| r.0 > 0)?;
        let at = self.refunded_at.or(self.expires_at).unwrap_or(self.created_at);
        Some(WalletEntry { kind: EntryKind::Refund, packet_id: self.id.clone(), amount_fen: amount, at })
    }

    pub fn view(&self, now: Timestamp) -> PacketView {
        PacketView {
            id: self.id.clone(),
            kind: self.kind.as_str(),
            sender: self.sender.clone(),
            greeting: self.greeting.clone(),
            group_id: self.group_id.clone(),
            total_fen: self.total_fen.0,
            count: self.count,
            status: self.status.as_str(),
            created_at: self.created_at.to_rfc3339(),
            paid_at: self.paid_at.map(Timestamp::to_rfc3339),
            expires_at: self.expires_at.map(Timestamp::to_rfc3339),
            remaining_count: self.remaining_count,
            remaining_fen: self.remaining_fen.0,
            claims: self.claims.iter().map(Claim::view).collect(),
            best_luck: self.best_luck(now).map(|c| c.user.clone()),
            refund_fen: self.refund_fen.map(|f| f.0),
        }
    }
}

impl Claim {
    pub fn view(&self) -> ClaimView {
        ClaimView {
            user: self.user.clone(),
            amount_fen: self.amount_fen.0,
            seq: self.seq,
            claimed_at: self.claimed_at.to_rfc3339(),
        }
    }
}

/// The packet view of the contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketView {
    pub id: String,
    pub kind: &'static str,
    pub sender: String,
    pub greeting: Option<String>,
    pub group_id: Option<String>,
    pub total_fen: u64,
    pub count: u32,
    pub status: &'static str,
    pub created_at: String,
    pub paid_at: Option<String>,
    pub expires_at: Option<String>,
    pub remaining_count: u32,
    pub remaining_fen: u64,
    pub claims: Vec<ClaimView>,
    pub best_luck: Option<String>,
    pub refund_fen: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimView {
    pub user: String,
    pub amount_fen: u64,
    pub seq: u32,
    pub claimed_at: String,
}

/// The wrap idempotency record: which packet a (sender, request_id) made,
/// and the terms it was made with, to tell a replay from a conflict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrapRecord {
    pub packet_id: String,
    pub terms: WrapTerms,
}

/// What a wrap request asks for; two requests are "the same body" when their
/// terms are equal (unknown fields are ignored by the contract).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrapTerms {
    pub kind: Kind,
    pub total_fen: Fen,
    pub count: u32,
    pub greeting: Option<String>,
    pub group_id: Option<String>,
}

/// What grab and open need of a paid packet that can never change
/// afterwards: how opens serialize, the share count, when it expires and who
/// sent it. Grab signs them into the ticket (`auth::issue_ticket`), so a
/// cursor open skips reading the packet record (status changes after payment
/// are either visible in the cursor and share records, or follow from
/// `expires_at`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketFacts {
    pub strategy: Strategy,
    pub count: u32,
    pub expires_at: Timestamp,
    pub sender: String,
}

/// A line of a user's received list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedItem {
    pub packet_id: String,
    pub sender: String,
    pub amount_fen: Fen,
    pub claimed_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Claim,
    Refund,
}

/// A settled wallet credit. Its identity is (packet_id, kind): a packet pays
/// one user at most one claim, and its sender at most one refund.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletEntry {
    pub kind: EntryKind,
    pub packet_id: String,
    pub amount_fen: Fen,
    pub at: Timestamp,
}

impl WalletEntry {
    /// The name of this entry in its wallet list (and its marker).
    pub fn name(&self) -> String {
        let kind = match self.kind {
            EntryKind::Claim => "claim",
            EntryKind::Refund => "refund",
        };
        format!("{}.{}", self.packet_id, kind)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareState {
    Free,
    Claimed,
    Sealed,
}

/// One pre-allocated share of a cursor-strategy packet (key `keys::share`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub k: u32,
    pub amount_fen: Fen,
    pub state: ShareState,
    pub user: Option<String>,
    pub at: Option<Timestamp>,
    pub version: u64,
    pub last_op: String,
}

impl Share {
    pub fn decode(bytes: &[u8]) -> Result<Share, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("corrupt share record: {e}"))
    }

    pub fn encode(&self) -> Vec<u8> {
        crate::json::to_vec(self)
    }

    /// The claim this share is, once claimed.
    pub fn claim(&self) -> Option<Claim> {
        match (self.state, &self.user, self.at) {
            (ShareState::Claimed, Some(user), Some(at)) => {
                Some(Claim { user: user.clone(), amount_fen: self.amount_fen, seq: self.k, claimed_at: at })
            }
            _ => None,
        }
    }
}
