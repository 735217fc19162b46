//! The user-centric records: what a user sent and received on a day, and
//! their wallet (零钱 credits settled by this service). All are append-only
//! lists (see `store::lists`); readers drop duplicates by item name.

use super::Service;
use crate::error::Error;
use crate::id::PacketId;
use crate::keys;
use crate::record::{EntryKind, Packet, ReceivedItem, WalletEntry};
use crate::store::{Store, get_all, lists};
use crate::time::Day;
use serde::Serialize;
use std::collections::HashSet;

#[derive(Debug, Serialize)]
pub struct SentView {
    pub day: String,
    pub items: Vec<SentItemView>,
}

#[derive(Debug, Serialize)]
pub struct SentItemView {
    pub packet_id: String,
    pub total_fen: u64,
    pub count: u32,
    pub created_at: String,
    pub status: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ReceivedView {
    pub day: String,
    pub items: Vec<ReceivedItemView>,
}

#[derive(Debug, Serialize)]
pub struct ReceivedItemView {
    pub packet_id: String,
    pub sender: String,
    pub amount_fen: u64,
    pub claimed_at: String,
}

#[derive(Debug, Serialize)]
pub struct WalletView {
    pub balance_fen: u64,
    pub entries: Vec<WalletEntryView>,
}

#[derive(Debug, Serialize)]
pub struct WalletEntryView {
    pub kind: &'static str,
    pub packet_id: String,
    pub amount_fen: u64,
    pub at: String,
}

impl<S: Store> Service<'_, S> {
    /// Packets `user` sent that were created on `day`, newest first, with
    /// their current status (read from the packet records).
    pub fn sent(&self, user: &str, day: Day) -> Result<SentView, Error> {
        let mut seen = HashSet::new();
        let ids: Vec<PacketId> = lists::read(self.store, &keys::sent(user, day))?
            .into_iter()
            .filter_map(|bytes| String::from_utf8(bytes).ok())
            .filter(|id| seen.insert(id.clone()))
            .filter_map(|id| PacketId::parse(&id))
            .collect();
        let keys: Vec<String> = ids.iter().map(keys::packet).collect();
        let mut packets: Vec<Packet> = get_all(self.store, &keys)?
            .into_iter()
            .flatten()
            .map(|bytes| Packet::decode(&bytes).map_err(Error::Internal))
            .collect::<Result<_, _>>()?;
        packets.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        Ok(SentView {
            day: day.to_string(),
            items: packets
                .iter()
                .map(|p| SentItemView {
                    packet_id: p.id.clone(),
                    total_fen: p.total_fen.0,
                    count: p.count,
                    created_at: p.created_at.to_rfc3339(),
                    status: p.status.as_str(),
                })
                .collect(),
        })
    }

    /// Shares `user` received on `day`, newest first.
    pub fn received(&self, user: &str, day: Day) -> Result<ReceivedView, Error> {
        let mut seen = HashSet::new();
        let mut items: Vec<ReceivedItem> = lists::read(self.store, &keys::received(user, day))?
            .into_iter()
            .filter_map(|bytes| serde_json::from_slice::<ReceivedItem>(&bytes).ok())
            .filter(|item| seen.insert(item.packet_id.clone()))
            .collect();
        items.sort_by(|a, b| b.claimed_at.cmp(&a.claimed_at).then_with(|| b.packet_id.cmp(&a.packet_id)));
        Ok(ReceivedView {
            day: day.to_string(),
            items: items
                .into_iter()
                .map(|i| ReceivedItemView {
                    packet_id: i.packet_id,
                    sender: i.sender,
                    amount_fen: i.amount_fen.0,
                    claimed_at: i.claimed_at.to_rfc3339(),
                })
                .collect(),
        })
    }

    /// The settled credits of `user`, newest first, and their sum.
    pub fn wallet(&self, user: &str) -> Result<WalletView, Error> {
        let entries = self.wallet_entries(user)?;
        let balance = entries.iter().try_fold(0u64, |sum, e| sum.checked_add(e.amount_fen.0));
        let balance = balance.ok_or_else(|| Error::Internal("wallet balance overflows".into()))?;
        Ok(WalletView {
            balance_fen: balance,
            entries: entries
                .into_iter()
                .map(|e| WalletEntryView {
                    kind: match e.kind {
                        EntryKind::Claim => "claim",
                        EntryKind::Refund => "refund",
                    },
                    packet_id: e.packet_id,
                    amount_fen: e.amount_fen.0,
                    at: e.at.to_rfc3339(),
                })
                .collect(),
        })
    }

    /// Wallet entries, each (packet, kind) once, newest first: every day the
    /// user has entries on, then each day's list.
    pub fn wallet_entries(&self, user: &str) -> Result<Vec<WalletEntry>, Error> {
        let mut days: Vec<Day> = lists::read(self.store, &keys::wallet_days(user))?
            .into_iter()
            .filter_map(|bytes| Day::parse_compact(std::str::from_utf8(&bytes).ok()?))
            .collect();
        days.sort_unstable();
        days.dedup();
        let mut seen = HashSet::new();
        let mut entries = Vec::new();
        for day in days {
            for bytes in lists::read(self.store, &keys::wallet(user, day))? {
                if let Ok(entry) = serde_json::from_slice::<WalletEntry>(&bytes)
                    && seen.insert(entry.name())
                {
                    entries.push(entry);
                }
            }
        }
        entries.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.name().cmp(&a.name())));
        Ok(entries)
    }
}
