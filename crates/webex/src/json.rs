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
