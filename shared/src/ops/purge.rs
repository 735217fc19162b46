//! The retention purge: the keys of a day's packets deleted once the day is
//! past the retention and its books are closed, its reconciliation report
//! kept under a key of its own.

use super::{ReconcileReport, Service};
use crate::error::Error;
use crate::keys;
use crate::store::Store;
use crate::time::Day;
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PurgeReport {
    pub day: String,
    /// Keys this call deleted (a rerun deletes what a crash left).
    pub deleted_keys: u64,
    /// The day's reconciliation, as kept.
    pub report: ReconcileReport,
}

impl<S: Store> Service<'_, S> {
    /// Deletes every key of the packets created on `day` (`keys::of_day`),
    /// which must be more than `retention_days` old, with every packet
    /// finished (refunded or emptied, every claim and refund credited) and
    /// reconcile clean; else 409 `day_not_closed` and nothing is deleted.
    ///
    /// Store calls, and what a crash after each leaves:
    /// 1. `get` the kept report: present when an earlier purge got past 3
    ///    (then the retention is not checked again: a raised one must not
    ///    strand a half-purged day).
    /// 2. Reconcile's reads, then `get` the kept report again: a concurrent
    ///    purge may have kept it and begun deleting what step 2 read, so
    ///    that one is the answer, whatever step 2 found.
    /// 3. `set` the kept report: from here on reconcile answers it, and a
    ///    rerun skips to 4 however much of the day is already gone.
    /// 4. `list_keys`, then one `delete` per key of the day, packet records
    ///    first (a query finds a whole packet or none): a crash leaves some
    ///    keys, which the next run deletes.
    ///
    /// No other operation writes to such a day: the sweeps look back
    /// `HOT_DAYS` (never more than the retention), tickets of such packets
    /// have long expired, and grab counts no admission for them.
    pub fn purge(&mut self, day: Day) -> Result<PurgeReport, Error> {
        let report = match self.kept_report(day)? {
            // Begun already: finish it, whatever the retention says now.
            Some(kept) => kept,
            None => {
                let newest = self.newest_purgeable_day();
                if day > newest {
                    return Err(Error::InvalidArgument(format!(
                        "day: packets are kept for {} days, so {newest} is the newest day that may be purged",
                        self.config.retention_days
                    )));
                }
                self.keep_report(day)?
            }
        };
        // A set: a Redis SCAN may list a key twice.
        let doomed: BTreeSet<String> = self.store.list_keys()?.into_iter().filter(|k| keys::of_day(k, day)).collect();
        let (records, rest): (Vec<&String>, Vec<&String>) = doomed.iter().partition(|key| keys::is_packet_record(key));
        for key in records.into_iter().chain(rest) {
            self.store.delete(key)?;
        }
        Ok(PurgeReport { day: day.to_string(), deleted_keys: doomed.len() as u64, report })
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
