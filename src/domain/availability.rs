//! A practitioner's weekly availability and the bookable slots it gives, with the rules that
//! need no I/O: validation of the weekly hours, and slots computed in the schedule's own IANA
//! timezone (so that a 09:00 slot stays at 09:00 local time across daylight-saving changes).

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;

use super::{OrgId, UserId};
use crate::error::{AppError, AppResult};

/// The most intervals a weekly schedule may hold (a week of quarter-hour blocks is far more
/// than any practice needs; the bound keeps slot computation small).
pub const MAX_INTERVALS: usize = 70;
/// The shortest slot, in minutes.
pub const MIN_SLOT_MINUTES: i32 = 5;
/// The longest slot, in minutes (the longest appointment).
pub const MAX_SLOT_MINUTES: i32 = 480;
/// The widest range `availableSlots` answers for, in days.
pub const MAX_RANGE_DAYS: i64 = 31;

/// One interval of a weekday in which the practitioner takes appointments, in local wall time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WeeklyInterval {
    /// The day of the week.
    pub weekday: Weekday,
    /// The local start.
    pub start: NaiveTime,
    /// The local end (after `start`, the same day).
    pub end: NaiveTime,
}

/// A practitioner's weekly schedule in one organisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Availability {
    /// The organisation.
    pub org_id: OrgId,
    /// The practitioner.
    pub practitioner_id: UserId,
    /// The intervals, sorted by weekday and start, none overlapping another of its day.
    pub weekly: Vec<WeeklyInterval>,
    /// The IANA timezone the intervals are in.
    pub timezone: Tz,
    /// The length of each slot, in minutes.
    pub slot_minutes: i32,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
}

/// A bookable slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Start.
    pub starts_at: DateTime<Utc>,
    /// End.
    pub ends_at: DateTime<Utc>,
}

impl Slot {
    /// Whether the slot overlaps `[from, until)`.
    pub fn overlaps(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> bool {
        self.starts_at < until && from < self.ends_at
    }
}

/// Reads an IANA timezone name (`Europe/Berlin`), naming `field` when it is none.
pub fn timezone(raw: &str, field: &str) -> AppResult<Tz> {
    raw.trim()
        .parse::<Tz>()
        .map_err(|_| AppError::bad_input(field, "must be an IANA timezone such as Europe/Berlin"))
}

/// Reads a local time written `HH:MM` (24-hour, two digits each).
pub fn local_time(raw: &str, field: &str) -> AppResult<NaiveTime> {
    let bad = || AppError::bad_input(field, "must be a time written HH:MM (00:00 to 23:59)");
    let bytes = raw.as_bytes();
    if bytes.len() != 5 || bytes[2] != b':' {
        return Err(bad());
    }
    NaiveTime::parse_from_str(raw, "%H:%M").map_err(|_| bad())
}

/// Validates a slot length.
pub fn slot_minutes(minutes: i32, field: &str) -> AppResult<i32> {
    if (MIN_SLOT_MINUTES..=MAX_SLOT_MINUTES).contains(&minutes) {
        Ok(minutes)
    } else {
        Err(AppError::bad_input(
            field,
            format!("must be between {MIN_SLOT_MINUTES} and {MAX_SLOT_MINUTES}"),
        ))
    }
}

/// Checks weekly intervals (each `start < end`, at most [`MAX_INTERVALS`], none overlapping
/// another of its weekday) and sorts them; `field` names the list (`input.weekly`), and an
/// error names the item at fault (`input.weekly[2].end`).
pub fn weekly(mut intervals: Vec<WeeklyInterval>, field: &str) -> AppResult<Vec<WeeklyInterval>> {
    if intervals.len() > MAX_INTERVALS {
        return Err(AppError::bad_input(
            field,
            format!("at most {MAX_INTERVALS} intervals"),
        ));
    }
    for (i, interval) in intervals.iter().enumerate() {
        if interval.start >= interval.end {
            return Err(AppError::bad_input(
                format!("{field}[{i}].end"),
                "must be after start",
            ));
        }
    }
    let order = |w: &WeeklyInterval| (w.weekday.num_days_from_monday(), w.start);
    let mut indexed: Vec<(usize, WeeklyInterval)> = intervals.iter().copied().enumerate().collect();
    indexed.sort_by_key(|(_, w)| order(w));
    for pair in indexed.windows(2) {
        let ((_, a), (j, b)) = (pair[0], pair[1]);
        if a.weekday == b.weekday && b.start < a.end {
            return Err(AppError::bad_input(
                format!("{field}[{j}].start"),
                "overlaps another interval of the same weekday",
            ));
        }
    }
    intervals.sort_by_key(order);
    Ok(intervals)
}

/// The first instant at or after the local wall time `local` in `tz`: the earlier of two in a
/// repeated hour, and the first valid time after a skipped one (a spring-forward gap).
fn resolve(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    // Gaps are at most a few hours: 16 quarter-hour steps cover every zone's.
    let mut t = local;
    for _ in 0..16 {
        match tz.from_local_datetime(&t) {
            LocalResult::Single(at) => return Some(at.with_timezone(&Utc)),
            LocalResult::Ambiguous(earlier, _) => return Some(earlier.with_timezone(&Utc)),
            LocalResult::None => t += Duration::minutes(15),
        }
    }
    None
}

impl Availability {
    /// The schedule's slots starting in `[from, to)`, in order, before any appointment is taken
    /// out. Each interval of each local day is cut into slots of `slot_minutes` from its start;
    /// a slot ends within its interval. `to - from` is bounded by the caller.
    pub fn slots(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Slot> {
        let length = Duration::minutes(i64::from(self.slot_minutes));
        let first: NaiveDate = from.with_timezone(&self.timezone).date_naive() - Duration::days(1);
        let last: NaiveDate = to.with_timezone(&self.timezone).date_naive() + Duration::days(1);
        let mut out = Vec::new();
        let mut day = first;
        while day <= last {
            for interval in self.weekly.iter().filter(|w| w.weekday == day.weekday()) {
                let (Some(start), Some(end)) = (
                    resolve(self.timezone, day.and_time(interval.start)),
                    resolve(self.timezone, day.and_time(interval.end)),
                ) else {
                    continue;
                };
                let mut at = start;
                while at + length <= end {
                    if at >= from && at < to {
                        out.push(Slot {
                            starts_at: at,
                            ends_at: at + length,
                        });
                    }
                    at += length;
                }
            }
            day += Duration::days(1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(raw: &str) -> NaiveTime {
        local_time(raw, "t").expect("time")
    }

    fn schedule(tz: &str, weekly: Vec<WeeklyInterval>, minutes: i32) -> Availability {
        Availability {
            org_id: OrgId::new(),
            practitioner_id: UserId::new(),
            weekly,
            timezone: timezone(tz, "tz").expect("tz"),
            slot_minutes: minutes,
            updated_at: Utc::now(),
        }
    }

    fn field_of(e: AppError) -> Option<String> {
        match e {
            AppError::BadUserInput { field, .. } => field,
            _ => None,
        }
    }

    fn utc(raw: &str) -> DateTime<Utc> {
        raw.parse().expect("instant")
    }

    #[test]
    fn a_nine_oclock_slot_in_berlin_moves_in_utc_when_summer_time_starts() {
        let a = schedule(
            "Europe/Berlin",
            vec![WeeklyInterval {
                weekday: Weekday::Fri,
                start: t("09:00"),
                end: t("10:00"),
            }],
            30,
        );
        // 2027-03-26 is a Friday in winter time, 2027-04-02 one in summer time.
        let slots = a.slots(utc("2027-03-22T00:00:00Z"), utc("2027-04-05T00:00:00Z"));
        let starts: Vec<String> = slots.iter().map(|s| s.starts_at.to_rfc3339()).collect();
        assert_eq!(
            starts,
            [
                "2027-03-26T08:00:00+00:00",
                "2027-03-26T08:30:00+00:00",
                "2027-04-02T07:00:00+00:00",
                "2027-04-02T07:30:00+00:00",
            ]
        );
        assert!(
            slots
                .iter()
                .all(|s| s.ends_at - s.starts_at == Duration::minutes(30))
        );
    }

    #[test]
    fn an_interval_starting_in_the_skipped_hour_starts_when_the_clock_resumes() {
        let a = schedule(
            "Europe/Berlin",
            vec![WeeklyInterval {
                weekday: Weekday::Sun,
                start: t("02:30"),
                end: t("04:00"),
            }],
            30,
        );
        // 2027-03-28: clocks go from 02:00 to 03:00; 02:30 does not exist, 03:00 is 01:00Z.
        let slots = a.slots(utc("2027-03-28T00:00:00Z"), utc("2027-03-29T00:00:00Z"));
        let starts: Vec<String> = slots.iter().map(|s| s.starts_at.to_rfc3339()).collect();
        assert_eq!(
            starts,
            ["2027-03-28T01:00:00+00:00", "2027-03-28T01:30:00+00:00"]
        );
    }

    #[test]
    fn only_slots_starting_inside_the_range_are_given_and_a_slot_fits_its_interval() {
        let a = schedule(
            "UTC",
            vec![WeeklyInterval {
                weekday: Weekday::Mon,
                start: t("09:00"),
                end: t("10:40"),
            }],
            30,
        );
        // 2027-03-01 is a Monday; 10:30 to 11:00 would end after the interval.
        let slots = a.slots(utc("2027-03-01T09:30:00Z"), utc("2027-03-01T10:30:00Z"));
        let starts: Vec<String> = slots.iter().map(|s| s.starts_at.to_rfc3339()).collect();
        assert_eq!(
            starts,
            ["2027-03-01T09:30:00+00:00", "2027-03-01T10:00:00+00:00"]
        );
    }

    #[test]
    fn overlapping_intervals_of_one_weekday_are_refused_naming_the_later_one() {
        let w = |day, s, e| WeeklyInterval {
            weekday: day,
            start: t(s),
            end: t(e),
        };
        let err = weekly(
            vec![
                w(Weekday::Tue, "13:00", "17:00"),
                w(Weekday::Mon, "09:00", "12:00"),
                w(Weekday::Tue, "09:00", "13:30"),
            ],
            "input.weekly",
        )
        .expect_err("overlap");
        assert_eq!(field_of(err).as_deref(), Some("input.weekly[0].start"));
        let ok = weekly(
            vec![
                w(Weekday::Tue, "13:00", "17:00"),
                w(Weekday::Mon, "09:00", "12:00"),
                w(Weekday::Tue, "09:00", "13:00"),
            ],
            "input.weekly",
        )
        .expect("touching intervals are fine");
        assert_eq!(ok[0].weekday, Weekday::Mon);
        assert_eq!(ok[2].start, t("13:00"));
        let err = weekly(vec![w(Weekday::Wed, "10:00", "10:00")], "input.weekly")
            .expect_err("empty interval");
        assert_eq!(field_of(err).as_deref(), Some("input.weekly[0].end"));
    }

    #[test]
    fn times_must_be_written_hh_mm_and_timezones_must_be_iana_names() {
        for bad in ["9:00", "24:00", "09:60", "09:00:00", "0900", "", "ab:cd"] {
            assert!(local_time(bad, "start").is_err(), "{bad}");
        }
        assert_eq!(
            t("23:59"),
            NaiveTime::from_hms_opt(23, 59, 0).expect("time")
        );
        assert!(timezone("Mars/Olympus", "timezone").is_err());
        assert!(timezone("Europe/Berlin", "timezone").is_ok());
        assert!(slot_minutes(4, "slotMinutes").is_err());
        assert!(slot_minutes(481, "slotMinutes").is_err());
    }
}
