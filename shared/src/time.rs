//! Time as the contract speaks it: unix seconds inside, RFC 3339 UTC outside,
//! and calendar days (UTC) for the day-tables and the user records.
//! Small and dependency-free on purpose: only the proleptic Gregorian calendar.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Seconds since the unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

/// A calendar day in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

const SECONDS_PER_DAY: i64 = 86_400;

impl Timestamp {
    /// Whether this moment is at or past `deadline` (never, without one).
    pub fn has_reached(self, deadline: Option<Timestamp>) -> bool {
        deadline.is_some_and(|at| self >= at)
    }

    pub fn day(self) -> Day {
        Day::from_days_since_epoch(self.0.div_euclid(SECONDS_PER_DAY))
    }

    pub fn plus_seconds(self, s: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(s))
    }

    /// `2026-11-22T08:00:00Z`.
    pub fn to_rfc3339(self) -> String {
        let day = self.day();
        let secs = self.0.rem_euclid(SECONDS_PER_DAY);
        format!("{}T{:02}:{:02}:{:02}Z", day, secs / 3600, secs / 60 % 60, secs % 60)
    }
}

impl Day {
    /// Days since 1970-01-01 to a civil date (the inverse of `days_since_epoch`).
    /// Works in 400-year eras, each of which has exactly 146,097 days.
    pub fn from_days_since_epoch(days: i64) -> Day {
        let z = days + 719_468; // shift the epoch to 0000-03-01
        let era = z.div_euclid(146_097);
        let day_of_era = z.rem_euclid(146_097);
        let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
        let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 } as u32;
        let year = (year_of_era + era * 400 + i64::from(month <= 2)) as i32;
        Day { year, month, day }
    }

    pub fn days_since_epoch(self) -> i64 {
        let year = i64::from(self.year) - i64::from(self.month <= 2);
        let era = year.div_euclid(400);
        let year_of_era = year.rem_euclid(400);
        let month_from_march = (i64::from(self.month) + 9) % 12;
        let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(self.day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    pub fn start(self) -> Timestamp {
        Timestamp(self.days_since_epoch() * SECONDS_PER_DAY)
    }

    pub fn minus_days(self, n: i64) -> Day {
        Day::from_days_since_epoch(self.days_since_epoch() - n)
    }

    /// `YYYYMMDD`, the form used inside ids and keys.
    pub fn compact(self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }

    /// Parses `YYYYMMDD`; rejects impossible dates.
    pub fn parse_compact(s: &str) -> Option<Day> {
        if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Day::checked(s[0..4].parse().ok()?, s[4..6].parse().ok()?, s[6..8].parse().ok()?)
    }

    /// Parses `YYYY-MM-DD` (the contract's `day` query parameter).
    pub fn parse_iso(s: &str) -> Option<Day> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        Day::parse_compact(&format!("{}{}{}", &s[0..4], &s[5..7], &s[8..10]))
    }

    fn checked(year: i32, month: u32, day: u32) -> Option<Day> {
        let candidate = Day { year, month, day };
        let valid = (1..=12).contains(&month)
            && day >= 1
            && Day::from_days_since_epoch(candidate.days_since_epoch()) == candidate;
        valid.then_some(candidate)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(1_795_305_600 + 8 * 3600).to_rfc3339(), "2026-11-22T08:00:00Z");
        assert_eq!(Timestamp(951_782_399).to_rfc3339(), "2000-02-28T23:59:59Z");
        assert_eq!(Timestamp(-1).to_rfc3339(), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn day_round_trips_over_four_centuries() {
        for days in -200_000..200_000i64 {
            let d = Day::from_days_since_epoch(days);
            assert_eq!(d.days_since_epoch(), days, "{d}");
        }
    }

    #[test]
    fn parses_only_real_dates() {
        assert_eq!(Day::parse_iso("2024-02-29"), Some(Day { year: 2024, month: 2, day: 29 }));
        assert_eq!(Day::parse_iso("2026-02-29"), None);
        assert_eq!(Day::parse_iso("2026-13-01"), None);
        assert_eq!(Day::parse_iso("2026-1-01"), None);
        assert_eq!(Day::parse_compact("20261122"), Some(Day { year: 2026, month: 11, day: 22 }));
        assert_eq!(Day::parse_compact("2026112a"), None);
    }
}
