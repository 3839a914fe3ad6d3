//! PocketBase's cron syntax (`tools/cron`), ported exactly, so that `backups.cron` accepts
//! and refuses the same expressions and fires at the same minutes.
//!
//! An expression is one of the macros (`@yearly @annually @monthly @weekly @daily @midnight
//! @hourly`) or five fields separated by single spaces: minute (0-59), hour (0-23), day of
//! the month (1-31), month (1-12), day of the week (0-6, Sunday 0). A field is a comma list
//! of `*`, `N`, `A-B`, `*/n` or `A-B/n`. Times are UTC; a minute is due when every field
//! matches (day of the month *and* day of the week, unlike Vixie cron).
//!
//! Why not a crate: the cron crates accept more than PocketBase does (seconds fields, `L`,
//! `W`, `#`, `?`, names, 7 for Sunday, repeated spaces) and word their errors differently;
//! an expression saved in PocketBase must mean the same here, and the port is 100 lines.

use time::OffsetDateTime;

/// A parsed expression: the allowed values of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
}

/// PocketBase's refusal of an expression; the text is PocketBase's, before its API
/// capitalises it and adds a full stop ([`CronError::sentence`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

impl CronError {
    /// The message as PocketBase's API answers it: first letter upper-cased, a final `.`.
    pub fn sentence(&self) -> String {
        let mut s = String::with_capacity(self.0.len() + 1);
        let mut chars = self.0.chars();
        if let Some(first) = chars.next() {
            s.extend(first.to_uppercase());
            s.push_str(chars.as_str());
        }
        if !s.ends_with('.') {
            s.push('.');
        }
        s
    }
}

const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

impl Schedule {
    /// Parses `expr` as PocketBase does.
    ///
    /// # Errors
    /// PocketBase's message for the first field that does not parse.
    pub fn parse(expr: &str) -> Result<Self, CronError> {
        let expr = MACROS
            .iter()
            .find(|(m, _)| *m == expr)
            .map_or(expr, |(_, e)| e);
        let fields: Vec<&str> = expr.split(' ').collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(CronError(
                "invalid cron expression - must be a valid macro or to have exactly 5 space separated segments".into(),
            ));
        };
        Ok(Self {
            minutes: field(minute, 0, 59)?,
            hours: field(hour, 0, 23)?,
            days: field(day, 1, 31)?,
            months: field(month, 1, 12)?,
            weekdays: field(weekday, 0, 6)?,
        })
    }

    /// Whether the minute that `t` falls in is due (UTC).
    pub fn is_due(&self, t: OffsetDateTime) -> bool {
        let t = t.to_offset(time::UtcOffset::UTC);
        let has = |set: u64, v: u8| set & (1 << v) != 0;
        has(self.minutes, t.minute())
            && has(self.hours, t.hour())
            && has(self.days, t.day())
            && has(self.months, u8::from(t.month()))
            && has(self.weekdays, t.weekday().number_days_from_sunday())
    }

    /// The first due minute strictly after `t`, within eight years (an expression such as
    /// `0 0 31 2 *` never fires: `None`).
    pub fn next_after(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let mut m = minute_start(t) + time::Duration::MINUTE;
        let end = m + time::Duration::days(8 * 366);
        while m < end {
            let day_ok = self.days & (1 << m.day()) != 0
                && self.months & (1 << u8::from(m.month())) != 0
                && self.weekdays & (1 << m.weekday().number_days_from_sunday()) != 0;
            if !day_ok {
                m = m.replace_time(time::Time::MIDNIGHT) + time::Duration::DAY;
                continue;
            }
            if self.hours & (1 << m.hour()) == 0 {
                m = m.replace_minute(0).expect("0 is a minute") + time::Duration::HOUR;
                continue;
            }
            if self.minutes & (1 << m.minute()) != 0 {
                return Some(m);
            }
            m += time::Duration::MINUTE;
        }
        None
    }
}

/// `t` with its seconds and below cut off, in UTC.
pub fn minute_start(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_time(time::Time::from_hms(t.hour(), t.minute(), 0).expect("a valid time"))
}

/// One field: PocketBase's `parseCronSegment`, with its checks in its order.
fn field(segment: &str, min: i64, max: i64) -> Result<u64, CronError> {
    let mut slots = 0u64;
    for part in segment.split(',') {
        let step_parts: Vec<&str> = part.split('/').collect();
        let step = match step_parts[..] {
            [_] => 1,
            [_, step] => {
                let step = atoi(step)?;
                if step < 1 || step > max {
                    return Err(CronError(format!(
                        "invalid segment step boundary - the step must be between 1 and the {max}"
                    )));
                }
                step
            }
            _ => {
                return Err(CronError(
                    "invalid segment step format - must be in the format */n or 1-30/n".into(),
                ));
            }
        };
        let (from, to) = if step_parts[0] == "*" {
            (min, max)
        } else {
            let range: Vec<&str> = step_parts[0].split('-').collect();
            match range[..] {
                [single] => {
                    if step != 1 {
                        return Err(CronError(
                            "invalid segment step - step > 1 could be used only with the wildcard or range format".into(),
                        ));
                    }
                    let v = atoi(single)?;
                    if v < min || v > max {
                        return Err(CronError(
                            "invalid segment value - must be between the min and max of the segment".into(),
                        ));
                    }
                    (v, v)
                }
                [a, b] => {
                    let a = atoi(a)?;
                    if a < min || a > max {
                        return Err(CronError(format!(
                            "invalid segment range minimum - must be between {min} and {max}"
                        )));
                    }
                    let b = atoi(b)?;
                    if b < a || b > max {
                        return Err(CronError(format!(
                            "invalid segment range maximum - must be between {a} and {max}"
                        )));
                    }
                    (a, b)
                }
                _ => {
                    return Err(CronError(
                        "invalid segment range format - the range must have 1 or 2 parts".into(),
                    ));
                }
            }
        };
        let mut v = from;
        while v <= to {
            slots |= 1 << v;
            v += step;
        }
    }
    Ok(slots)
}

/// Go's `strconv.Atoi`, with its error texts.
fn atoi(s: &str) -> Result<i64, CronError> {
    use std::num::IntErrorKind;
    s.parse::<i64>().map_err(|e| {
        let why = match e.kind() {
            IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => "value out of range",
            _ => "invalid syntax",
        };
        CronError(format!("strconv.Atoi: parsing {s:?}: {why}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// Every expression here was sent to PocketBase 0.40.6's `PATCH /api/settings`; the
    /// second column is its answer (`OK` or the message of `data.backups.cron`).
    const POCKETBASE: &[(&str, &str)] = &[
        ("x * * * *", r#"Strconv.Atoi: parsing "x": invalid syntax."#),
        (
            "1-x * * * *",
            r#"Strconv.Atoi: parsing "x": invalid syntax."#,
        ),
        (
            "*/0 * * * *",
            "Invalid segment step boundary - the step must be between 1 and the 59.",
        ),
        (
            "5/2 * * * *",
            "Invalid segment step - step > 1 could be used only with the wildcard or range format.",
        ),
        (
            "1-2-3 * * * *",
            "Invalid segment range format - the range must have 1 or 2 parts.",
        ),
        (
            "1/2/3 * * * *",
            "Invalid segment step format - must be in the format */n or 1-30/n.",
        ),
        (
            "60 * * * *",
            "Invalid segment value - must be between the min and max of the segment.",
        ),
        (
            "* 24 * * *",
            "Invalid segment value - must be between the min and max of the segment.",
        ),
        (
            "* * 0 * *",
            "Invalid segment value - must be between the min and max of the segment.",
        ),
        (
            "* * * 13 *",
            "Invalid segment value - must be between the min and max of the segment.",
        ),
        (
            "* * * * 7",
            "Invalid segment value - must be between the min and max of the segment.",
        ),
        (
            "5-1 * * * *",
            "Invalid segment range maximum - must be between 5 and 59.",
        ),
        ("+5 * * * *", "OK"),
        ("-5 * * * *", r#"Strconv.Atoi: parsing "": invalid syntax."#),
        ("05 * * * *", "OK"),
        (
            "*  * * * *",
            "Invalid cron expression - must be a valid macro or to have exactly 5 space separated segments.",
        ),
        (
            " * * * * *",
            "Invalid cron expression - must be a valid macro or to have exactly 5 space separated segments.",
        ),
        (
            "* * * * * *",
            "Invalid cron expression - must be a valid macro or to have exactly 5 space separated segments.",
        ),
        (
            "1,,2 * * * *",
            r#"Strconv.Atoi: parsing "": invalid syntax."#,
        ),
        ("*/5,1-3/2 * * * *", "OK"),
        (
            "@every 1m",
            "Invalid cron expression - must be a valid macro or to have exactly 5 space separated segments.",
        ),
        (
            "@HOURLY",
            "Invalid cron expression - must be a valid macro or to have exactly 5 space separated segments.",
        ),
        (
            "99999999999999999999 * * * *",
            r#"Strconv.Atoi: parsing "99999999999999999999": value out of range."#,
        ),
        (
            "*/x * * * *",
            r#"Strconv.Atoi: parsing "x": invalid syntax."#,
        ),
        (
            "70-80 * * * *",
            "Invalid segment range minimum - must be between 0 and 59.",
        ),
        (
            "1-70 * * * *",
            "Invalid segment range maximum - must be between 1 and 59.",
        ),
        (
            "@daily ",
            "Invalid cron expression - must be a valid macro or to have exactly 5 space separated segments.",
        ),
        (
            "* * * * 0-7",
            "Invalid segment range maximum - must be between 0 and 6.",
        ),
        ("1-59/59 * * * *", "OK"),
        ("*/59 * * * *", "OK"),
        (
            "* */24 * * *",
            "Invalid segment step boundary - the step must be between 1 and the 23.",
        ),
        ("*/23 * * * *", "OK"),
        (
            "bad",
            "Invalid cron expression - must be a valid macro or to have exactly 5 space separated segments.",
        ),
        ("@hourly", "OK"),
    ];

    #[test]
    fn accepts_and_refuses_what_pocketbase_does_with_its_messages() {
        for (expr, want) in POCKETBASE {
            let got = match Schedule::parse(expr) {
                Ok(_) => "OK".to_string(),
                Err(e) => e.sentence(),
            };
            assert_eq!(&got, want, "{expr:?}");
        }
    }

    #[test]
    fn macros_and_fields_fire_at_the_right_minutes() {
        let daily = Schedule::parse("@daily").unwrap();
        assert!(daily.is_due(datetime!(2026-12-01 00:00:59 UTC)));
        assert!(!daily.is_due(datetime!(2026-12-01 00:01:00 UTC)));
        assert_eq!(
            daily.next_after(datetime!(2026-12-01 00:00:00 UTC)),
            Some(datetime!(2026-12-02 00:00:00 UTC))
        );
        let s = Schedule::parse("*/15 9-17 * * 1-5").unwrap();
        // 2026-12-05 is a Saturday: the next due minute is Monday 09:00.
        assert_eq!(
            s.next_after(datetime!(2026-12-04 17:45:00 UTC)),
            Some(datetime!(2026-12-07 09:00:00 UTC))
        );
        assert_eq!(
            s.next_after(datetime!(2026-12-07 09:00:30 UTC)),
            Some(datetime!(2026-12-07 09:15:00 UTC))
        );
        // Day of the month and day of the week must both match (PocketBase, not Vixie):
        // the 13th that is a Friday.
        let friday13 = Schedule::parse("0 12 13 * 5").unwrap();
        assert_eq!(
            friday13.next_after(datetime!(2026-12-01 00:00:00 UTC)),
            Some(datetime!(2027-08-13 12:00:00 UTC))
        );
        assert_eq!(
            Schedule::parse("0 0 31 2 *")
                .unwrap()
                .next_after(datetime!(2026-01-01 00:00:00 UTC)),
            None
        );
        // Times are UTC whatever the offset of the time given.
        let t = datetime!(2026-12-01 02:00:00 +02:00);
        assert!(daily.is_due(t));
    }
}
