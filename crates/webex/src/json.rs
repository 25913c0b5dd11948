//! Tolerant field readers for Webex JSON, where numbers arrive as strings and "required"
//! fields go missing (webex-api.md §2.3, §2.4).

use serde_json::Value;

/// An epoch-milliseconds value given as a number, a numeric string, or an integral float.
pub(crate) fn epoch_ms(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                .map(|f| f as i64)
        }),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e18)
                    .map(|f| f as i64)
            })
        }
        _ => None,
    }
}

/// A non-empty string; numbers are rendered as strings (ids sometimes arrive numeric).
pub(crate) fn string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A boolean, also accepting `"true"`/`"false"`; `null` and anything else is unknown.
pub(crate) fn boolean(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// An ISO 8601 time as epoch milliseconds: RFC 3339 with any offset and fraction, or without
/// an offset (read as UTC, the Calling API's default `timezone`). Epoch-millisecond numbers
/// are accepted too. `None` for anything else.
pub(crate) fn iso_ms(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => parse_iso_ms(s.trim()),
        Value::Number(_) => epoch_ms(Some(v)),
        _ => None,
    }
}

fn parse_iso_ms(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    const NAIVE: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    let at = time::OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| time::PrimitiveDateTime::parse(s, NAIVE).map(|p| p.assume_utc()))
        .ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Epoch milliseconds as ISO 8601 UTC with milliseconds (`2024-10-04T16:24:25.000Z`), the
/// form the Calling API takes in `from`/`to`. `None` outside the years 0000–9999.
pub(crate) fn iso_from_ms(ms: i64) -> Option<String> {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    if !(0..=9999).contains(&at.year()) {
        return None;
    }
    at.format(FORMAT).ok()
}

/// A short description of a JSON value's type, for error messages that must not echo values.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn epoch_accepts_number_string_and_integral_float() {
        assert_eq!(
            epoch_ms(Some(&json!(1591702170000_i64))),
            Some(1591702170000)
        );
        assert_eq!(epoch_ms(Some(&json!("1661785612510"))), Some(1661785612510));
        assert_eq!(
            epoch_ms(Some(&json!(" 1661785612510 "))),
            Some(1661785612510)
        );
        assert_eq!(epoch_ms(Some(&json!(1.6617856e12))), Some(1661785600000));
        assert_eq!(epoch_ms(Some(&json!("1.5"))), None);
        assert_eq!(epoch_ms(Some(&json!("yesterday"))), None);
        assert_eq!(epoch_ms(Some(&json!(null))), None);
        assert_eq!(epoch_ms(None), None);
    }

    #[test]
    fn iso_times_both_ways() {
        assert_eq!(
            iso_ms(&json!("2024-10-04T16:24:25Z")),
            Some(1_728_059_065_000)
        );
        assert_eq!(
            iso_ms(&json!("2024-10-04T16:24:25.5Z")),
            Some(1_728_059_065_500)
        );
        assert_eq!(
            iso_ms(&json!("2024-10-04T18:24:25.123+02:00")),
            Some(1_728_059_065_123)
        );
        assert_eq!(
            iso_ms(&json!("2024-10-04T16:24:25")),
            Some(1_728_059_065_000)
        );
        assert_eq!(
            iso_ms(&json!(1_728_059_065_000_i64)),
            Some(1_728_059_065_000)
        );
        assert_eq!(iso_ms(&json!("yesterday")), None);
        assert_eq!(iso_ms(&json!(true)), None);
        assert_eq!(
            iso_from_ms(1_728_059_065_123).as_deref(),
            Some("2024-10-04T16:24:25.123Z")
        );
        assert_eq!(iso_from_ms(0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(iso_from_ms(i64::MAX), None);
    }

    #[test]
    fn strings_and_booleans() {
        assert_eq!(string(Some(&json!("a"))), Some("a".into()));
        assert_eq!(string(Some(&json!(12))), Some("12".into()));
        assert_eq!(string(Some(&json!(""))), None);
        assert_eq!(string(Some(&json!({}))), None);
        assert_eq!(boolean(Some(&json!(true))), Some(true));
        assert_eq!(boolean(Some(&json!("FALSE"))), Some(false));
        assert_eq!(boolean(Some(&json!(null))), None);
    }
}
