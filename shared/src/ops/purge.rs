//! The retention purge: the keys of a day's packets deleted once the day is
//! past the retention and its books are closed, its reconciliation report
//! kept under a key of its own.

use super::{ReconcileReport, Service};
use crate::auth;
use crate::error::Error;
use crate::keys;
use crate::store::Store;
use crate::time::Day;
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PurgeReport {
    pub day: String,
    /// Keys this call deleted (a rerun deletes what a crash left; a store
    /// that lists a key twice, or a concurrent purge, may count one again).
    pub deleted_keys: u64,
    /// The day's reconciliation, as kept.
    pub report: ReconcileReport,
    /// Where the next call goes on (`?cursor=`); `None` once the day's keys
    /// are gone.
    pub next_cursor: Option<String>,
}

/// Where a purge goes on: its day and the store's cursor, as
/// `YYYYMMDD.{cursor}` signed with the admin token (`auth::sign_cursor`):
/// opaque to clients, URL-safe whatever the store's cursor holds, and never
/// one a client made up (which a store might take for a place to go on from).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PurgeCursor {
    day: Day,
    store: String,
}

impl PurgeCursor {
    fn encode(&self, admin_token: &str) -> String {
        auth::sign_cursor(admin_token, &format!("{}.{}", self.day.compact(), self.store))
    }

    fn decode(admin_token: &str, text: &str) -> Result<PurgeCursor, Error> {
        let bad = || Error::InvalidArgument("cursor: not one this purge handed out".into());
        let text = auth::verify_cursor(admin_token, text).ok_or_else(bad)?;
        let (day, store) = text.split_once('.').ok_or_else(bad)?;
        Ok(PurgeCursor { day: Day::parse_compact(day).ok_or_else(bad)?, store: store.to_owned() })
    }
}

impl<S: Store> Service<'_, S> {
    /// Deletes every key of the packets created on `day` (`keys::of_day`),
    /// which must be more than `retention_days` old, with every packet
    /// finished (refunded or emptied, every claim and refund credited) and
    /// reconcile clean; else 409 `day_not_closed` and nothing is deleted.
    /// Without `day` or `cursor`: the newest day past the retention.
    ///
    /// One call lists about `config.purge_keys_per_call` keys (a page more
    /// at most) and answers `next_cursor` while keys may be left; the
    /// caller goes on with it until it is `None` (a cursor names its day).
    ///
    /// Store calls, and what a crash after each leaves:
    /// 1. `get` the kept report: present when an earlier purge got past 3
    ///    (then the retention is not checked again: a raised one must not
    ///    strand a half-purged day). A cursor requires it.
    /// 2. Reconcile's reads, then `get` the kept report again: a concurrent
    ///    purge may have kept it and begun deleting what step 2 read, so
    ///    that one is the answer, whatever step 2 found.
    /// 3. `set` the kept report: from here on reconcile answers it, and a
    ///    rerun skips to 4 however much of the day is already gone.
    /// 4. `list_keys` page by page and one `delete` per key of the day. A
    ///    crash leaves keys, which a rerun from the start or from any cursor
    ///    handed out before deletes. Meanwhile a query finds a packet whole
    ///    or not at all: every packet here is final, and a final record is
    ///    answered without its shares.
    ///
    /// No other operation writes to such a day: the sweeps look back
    /// `HOT_DAYS` (never more than the retention), tickets of such packets
    /// have long expired, and grab counts no admission for them.
    pub fn purge(&mut self, day: Option<Day>, cursor: Option<&str>) -> Result<PurgeReport, Error> {
        let admin_token = self.config.admin_token()?;
        let (day, report, mut at) = match cursor.map(|c| PurgeCursor::decode(admin_token, c)).transpose()? {
            Some(at) => {
                if day.is_some_and(|day| day != at.day) {
                    return Err(Error::InvalidArgument(format!("cursor: it goes on with the purge of {}", at.day)));
                }
                let report = self
                    .kept_report(at.day)?
                    .ok_or_else(|| Error::InvalidArgument(format!("cursor: the purge of {} has not begun", at.day)))?;
                (at.day, report, Some(at.store))
            }
            None => {
                let day = day.unwrap_or_else(|| self.newest_purgeable_day());
                (day, self.begin_purge(day)?, None)
            }
        };
        let mut listed = 0;
        let mut deleted_keys = 0;
        while listed < self.config.purge_keys_per_call {
            let page = self.store.list_keys(at.as_deref())?;
            // (An empty page counts, so a call ends even on a store that
            // hands out empty pages.)
            listed += page.keys.len().max(1);
            // A set: a Redis SCAN may list a key twice.
            let doomed: BTreeSet<&String> = page.keys.iter().filter(|key| keys::of_day(key, day)).collect();
            for key in doomed {
                self.store.delete(key)?;
                deleted_keys += 1;
            }
            at = page.cursor;
            if at.is_none() {
                break;
            }
        }
        let next_cursor = at.map(|store| PurgeCursor { day, store }.encode(admin_token));
        Ok(PurgeReport { day: day.to_string(), deleted_keys, report, next_cursor })
    }

    /// Steps 1-3: the kept report, checking and keeping it if the purge of
    /// `day` has not begun.
    fn begin_purge(&self, day: Day) -> Result<ReconcileReport, Error> {
        if let Some(kept) = self.kept_report(day)? {
            // Begun already: finish it, whatever the retention says now.
            return Ok(kept);
        }
        let newest = self.newest_purgeable_day();
        if day > newest {
            return Err(Error::InvalidArgument(format!(
                "day: packets are kept for {} days, so {newest} is the newest day that may be purged",
                self.config.retention_days
            )));
        }
        self.keep_report(day)
    }

    /// The newest day past the retention: `retention_days` whole days lie
    /// between it and today.
    pub fn newest_purgeable_day(&self) -> Day {
        self.env.now.day().minus_days(self.config.retention_days + 1)
    }

    /// Reconciles `day`, checks its books are closed, and keeps the report.
    fn keep_report(&self, day: Day) -> Result<ReconcileReport, Error> {
        let computed = self.reconcile_records(day);
        if let Some(kept) = self.kept_report(day)? {
            return Ok(kept);
        }
        let mut report = computed?;
        if report.unfinished > 0 || report.outstanding_fen > 0 || !report.mismatches.is_empty() {
            return Err(Error::DayNotClosed(format!(
                "{day} has {} unfinished packets, {} fen outstanding and {} mismatches: settle and reconcile it first",
                report.unfinished,
                report.outstanding_fen,
                report.mismatches.len()
            )));
        }
        report.purged = true;
        self.store.set(&keys::kept_report(day), &crate::json::to_vec(&report))?;
        Ok(report)
    }
}
