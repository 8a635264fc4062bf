//! When a check runs: a classic five-field crontab line or a fixed interval.
//!
//! Crontab lines go through croner configured for vixie-cron semantics: exactly five fields
//! (no seconds, no year), Sunday as 0 or 7, and day-of-month OR day-of-week when both are
//! restricted (crontab(5): "the command will be run when either field matches"). The `cron`
//! crate would need a seconds field and ANDs the two day fields, so `0 0 1 * 1` would silently
//! mean "the 1st, if it is a Monday".

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeZone};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A parsed schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// A crontab line, evaluated in local time.
    Cron { line: String, cron: Box<Cron> },
    /// Every fixed interval, counted from the previous run.
    Every(Duration),
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Schedule::Cron { line: a, .. }, Schedule::Cron { line: b, .. }) => a == b,
            (Schedule::Every(a), Schedule::Every(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron { line, .. } => write!(f, "cron `{line}`"),
            Schedule::Every(d) => write!(f, "every {d:?}"),
        }
    }
}

impl Schedule {
    /// Parses a five-field crontab line; the error says what is wrong with it.
    pub fn cron(line: &str) -> Result<Self, String> {
        let fields = line.split_whitespace().count();
        // @hourly and friends are single words that croner expands itself.
        if fields != 5 && !(fields == 1 && line.trim_start().starts_with('@')) {
            return Err(format!(
                "`{line}` has {fields} field(s); a crontab line has 5: minute hour day-of-month month day-of-week"
            ));
        }
        let parser =
            CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).dom_and_dow(false).build();
        let cron = parser.parse(line).map_err(|e| format!("`{line}` is not a valid crontab line: {e}"))?;
        Ok(Schedule::Cron { line: line.trim().to_string(), cron: Box::new(cron) })
    }

    /// The next run strictly after `now` (for `Every`, `now + interval`). `None` only for a
    /// crontab line that never matches again (such as `0 0 30 2 *`).
    pub fn next_after<Tz: TimeZone>(&self, now: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        match self {
            Schedule::Cron { cron, .. } => cron.find_next_occurrence(now, false).ok(),
            Schedule::Every(d) => chrono::Duration::from_std(*d).ok().map(|d| now.clone() + d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveDate, Timelike, Utc};

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.from_utc_datetime(&NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_opt(h, mi, 0).unwrap())
    }

    fn next(line: &str, from: DateTime<Utc>) -> DateTime<Utc> {
        Schedule::cron(line).unwrap().next_after(&from).unwrap()
    }

    #[test]
    fn every_minute_line_runs_on_the_next_minute() {
        assert_eq!(next("*/1 * * * *", at(2024, 3, 5, 10, 7)), at(2024, 3, 5, 10, 8));
        assert_eq!(next("*/15 * * * *", at(2024, 3, 5, 10, 7)), at(2024, 3, 5, 10, 15));
    }

    #[test]
    fn sunday_is_0_and_7() {
        // 2024-03-05 is a Tuesday; the next Sunday is 2024-03-10.
        for line in ["30 4 * * 0", "30 4 * * 7", "30 4 * * sun"] {
            let n = next(line, at(2024, 3, 5, 10, 7));
            assert_eq!(n, at(2024, 3, 10, 4, 30), "{line}");
            assert_eq!(n.weekday(), chrono::Weekday::Sun);
        }
    }

    #[test]
    fn day_of_month_or_day_of_week_as_crontab_5_says() {
        // "0 0 1 * 1": midnight on the 1st OR on any Monday. From Tue 2024-03-05 the next is
        // Monday 2024-03-11 — with AND semantics it would be Monday 2024-04-01.
        assert_eq!(next("0 0 1 * 1", at(2024, 3, 5, 10, 7)), at(2024, 3, 11, 0, 0));
        // "0 0 1 * 3" from Thu 2024-06-27: the 1st of July (a Monday) comes before the next
        // Wednesday; AND semantics would wait for a Wednesday the 1st (2025-01-01).
        assert_eq!(next("0 0 1 * 3", at(2024, 6, 27, 12, 0)), at(2024, 7, 1, 0, 0));
        // A restricted day-of-month with `*` day-of-week is the day-of-month alone.
        assert_eq!(next("0 12 15 * *", at(2024, 3, 5, 10, 7)), at(2024, 3, 15, 12, 0));
    }

    #[test]
    fn minute_and_hour_fields_are_not_seconds() {
        let n = next("5 3 * * *", at(2024, 3, 5, 10, 7));
        assert_eq!((n.day(), n.hour(), n.minute(), n.second()), (6, 3, 5, 0));
    }

    #[test]
    fn bad_lines_are_rejected_with_the_reason() {
        let six = Schedule::cron("0 */1 * * * *").unwrap_err();
        assert!(six.contains("6 field(s)"), "{six}");
        assert!(Schedule::cron("61 * * * *").unwrap_err().contains("`61 * * * *`"));
        assert!(Schedule::cron("* * *").unwrap_err().contains("3 field(s)"));
        assert!(Schedule::cron("* * * * 8").is_err());
        assert!(Schedule::cron("a b c d e").is_err());
    }

    #[test]
    fn every_adds_the_interval() {
        let s = Schedule::Every(Duration::from_secs(30));
        assert_eq!(
            s.next_after(&at(2024, 3, 5, 10, 7)).unwrap(),
            at(2024, 3, 5, 10, 7) + chrono::Duration::seconds(30)
        );
    }
}
