//! `type = "timestamp"`: every textual date-time the supported legacy databases produce, and
//! epoch milliseconds, turned into one RFC 3339 form in UTC.
//!
//! PostgreSQL sends `timestamp` and `timestamptz` as text (`2027-01-21 09:47:00+00`,
//! `2027-01-21 09:47:00.123456+05:30`, `infinity`), SQLite keeps whatever the application wrote
//! (`2027-01-21 09:47:00.123`, ISO 8601 with a `T`, a date, epoch milliseconds). Parsing is
//! jiff's (RFC 3339 and ISO 8601, a space or `T` between date and time, offsets as `Z`, `+00`,
//! `+05:30` or `+00:53:28`); what is added here is what those databases do beyond it.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde_json::Value as Json;

/// The forms accepted, for error messages.
const ACCEPTED: &str = "accepted: an ISO 8601 / RFC 3339 date-time with or without an offset \
     (2027-01-21T09:47:00Z, 2027-01-21 09:47:00+00, 2027-01-21 09:47:00.123456+05:30; \
     without an offset it is taken as UTC), a date (2027-01-21, its midnight UTC), \
     or epoch milliseconds (a number, or text of 11 digits or more)";

/// A date-time text → RFC 3339 in UTC.
pub(super) fn from_text(text: &str) -> Result<Json, String> {
    parse(text).and_then(|t| format(t).ok_or_else(|| before_year_one(text)))
}

/// Epoch milliseconds → RFC 3339 in UTC.
pub(super) fn from_millis(millis: i64) -> Result<Json, String> {
    let t = Timestamp::from_millisecond(millis)
        .map_err(|_| format!("{millis} is out of range for epoch milliseconds"))?;
    format(t).ok_or_else(|| before_year_one(&millis.to_string()))
}

fn before_year_one(text: &str) -> String {
    format!("{text:?} is before the year 1, which RFC 3339 cannot express")
}

/// 0001-01-01T00:00:00Z: RFC 3339 writes years with four digits, and no earlier one.
const YEAR_ONE: i64 = -62_135_596_800;

fn parse(text: &str) -> Result<Timestamp, String> {
    let t = text.trim();
    if t.trim_start_matches(['+', '-'])
        .eq_ignore_ascii_case("infinity")
    {
        return Err(format!(
            "{text:?} is PostgreSQL's {t}, which no date-time can express; \
             map the column without type = \"timestamp\", or exclude such rows with `when`"
        ));
    }
    if t.ends_with(" BC") {
        return Err(before_year_one(text));
    }
    // Epoch milliseconds as text. Fewer than 11 digits is more likely something else (ISO
    // 8601's basic YYYYMMDD, parsed below, or epoch seconds, refused) than a moment before
    // March 1973.
    let digits = t.strip_prefix('-').unwrap_or(t);
    if digits.len() >= 11 && digits.bytes().all(|b| b.is_ascii_digit()) {
        let millis = t
            .parse::<i64>()
            .map_err(|_| format!("{text:?} is out of range for epoch milliseconds"))?;
        return Timestamp::from_millisecond(millis)
            .map_err(|_| format!("{text:?} is out of range for epoch milliseconds"));
    }
    if let Ok(timestamp) = t.parse::<Timestamp>() {
        return Ok(timestamp);
    }
    // No offset: a PostgreSQL `timestamp`, a SQLite date-time or a date, taken as UTC.
    t.parse::<DateTime>()
        .ok()
        .and_then(|civil| civil.to_zoned(TimeZone::UTC).ok())
        .map(|zoned| zoned.timestamp())
        .ok_or_else(|| format!("{text:?} is not a date-time; {ACCEPTED}"))
}

/// RFC 3339 in UTC with milliseconds, or with micro- or nanoseconds when the value has them,
/// so nothing the legacy database stored is cut off; `None` before the year 1.
fn format(t: Timestamp) -> Option<Json> {
    // `as_second` rounds toward zero: the last second before the year 1 has YEAR_ONE too.
    if t.as_second() < YEAR_ONE || (t.as_second() == YEAR_ONE && t.subsec_nanosecond() < 0) {
        return None;
    }
    let nanos = t.subsec_nanosecond().unsigned_abs();
    let pattern = if nanos.is_multiple_of(1_000_000) {
        "%Y-%m-%dT%H:%M:%S%.3fZ"
    } else if nanos.is_multiple_of(1_000) {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%S%.9fZ"
    };
    Some(Json::String(t.strftime(pattern).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> Result<String, String> {
        from_text(text).map(|json| json.as_str().unwrap_or_default().to_owned())
    }

    #[test]
    fn postgres_timestamptz_text_in_any_offset_becomes_utc() {
        let want = Ok("2027-01-21T09:47:00.000Z".to_owned());
        assert_eq!(utc("2027-01-21 09:47:00+00"), want);
        assert_eq!(utc("2027-01-21 15:17:00+05:30"), want);
        assert_eq!(utc("2027-01-21 04:47:00-05"), want);
        assert_eq!(utc("2027-01-21 10:40:28+00:53:28"), want);
        assert_eq!(
            utc("2027-01-21 09:47:00.123456+00"),
            Ok("2027-01-21T09:47:00.123456Z".to_owned())
        );
        assert_eq!(
            utc("2027-01-21 09:47:00.5+01"),
            Ok("2027-01-21T08:47:00.500Z".to_owned())
        );
    }

    #[test]
    fn text_without_an_offset_is_utc() {
        let want = Ok("2027-01-21T09:47:00.000Z".to_owned());
        // PostgreSQL `timestamp`, SQLite's datetime(), ISO 8601 with a T.
        assert_eq!(utc("2027-01-21 09:47:00"), want);
        assert_eq!(utc("2027-01-21T09:47:00"), want);
        assert_eq!(utc("2027-01-21 09:47"), want);
        assert_eq!(
            utc("2027-01-21 09:47:00.120"),
            Ok("2027-01-21T09:47:00.120Z".to_owned())
        );
        assert_eq!(utc("2027-01-21T09:47:00.000Z"), want);
        assert_eq!(utc("2027-01-21"), Ok("2027-01-21T00:00:00.000Z".to_owned()));
        // ISO 8601's basic form, not epoch milliseconds.
        assert_eq!(utc("20270121"), Ok("2027-01-21T00:00:00.000Z".to_owned()));
    }

    #[test]
    fn epoch_millis_as_numbers_or_text() {
        let want = Ok(Json::String("2026-11-22T10:00:00.000Z".into()));
        assert_eq!(from_millis(1_795_341_600_000), want);
        assert_eq!(from_text("1795341600000"), want);
        assert_eq!(
            from_millis(-5),
            Ok(Json::String("1969-12-31T23:59:59.995Z".into()))
        );
        assert!(from_millis(i64::MAX).is_err());
    }

    #[test]
    fn values_no_date_time_can_express_are_refused_with_the_reason() {
        for infinite in ["infinity", "-infinity"] {
            let err = utc(infinite).expect_err(infinite);
            assert!(
                err.contains("PostgreSQL's") && err.contains("infinity"),
                "{err}"
            );
        }
        let err = utc("0044-03-15 00:00:00+00 BC").expect_err("BC");
        assert!(err.contains("before the year 1"), "{err}");
        // Found by tests/props: epoch milliseconds and offsets before the year 1 came out as
        // `-000001-12-31T…`, which no RFC 3339 reader takes.
        let millis = YEAR_ONE * 1000;
        assert_eq!(
            from_millis(millis),
            Ok(Json::String("0001-01-01T00:00:00.000Z".into()))
        );
        let err = from_millis(millis - 1).expect_err("year 0");
        assert!(err.contains("before the year 1"), "{err}");
        let err = utc("0001-01-01 00:30:00+01").expect_err("year 0 in UTC");
        assert!(err.contains("before the year 1"), "{err}");
        // Epoch seconds as text are not taken for epoch milliseconds.
        for wrong in [
            "yesterday",
            "2027-13-01 00:00:00",
            "21/01/2027",
            "",
            "1800524820",
        ] {
            let err = utc(wrong).expect_err(wrong);
            assert!(
                err.contains("accepted:") && err.contains("2027-01-21 09:47:00+00"),
                "{err}"
            );
        }
    }
}
