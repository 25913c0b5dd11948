//! The WxCC regions wxvault knows (`api.wxcc-{region}.cisco.com`), shared by the CLI's
//! `--region` checks and the web app's region pickers so both accept the same list.

/// Region code and the name shown to people picking one.
pub const KNOWN_REGIONS: &[(&str, &str)] = &[
    ("us1", "United States (us1)"),
    ("eu1", "Europe – United Kingdom (eu1)"),
    ("eu2", "Europe – Germany (eu2)"),
    ("anz1", "Australia and New Zealand (anz1)"),
    ("ca1", "Canada (ca1)"),
    ("jp1", "Japan (jp1)"),
    ("sg1", "Singapore (sg1)"),
    ("in1", "India (in1)"),
];

/// True when `code` is one of [`KNOWN_REGIONS`].
pub fn is_known(code: &str) -> bool {
    KNOWN_REGIONS.iter().any(|(c, _)| *c == code)
}

/// Checks a region given on the command line and returns it trimmed.
///
/// A known region always passes. With `allow_unlisted` (the CLI's `--region-unlisted`) a code
/// missing from the list passes too, as long as it has the shape of one (lower-case letters and
/// digits), so a region Webex opened after this release can be used on purpose.
///
/// # Errors
/// A message naming the flag, the known regions and `--region-unlisted`.
pub fn check(code: &str, allow_unlisted: bool) -> Result<String, String> {
    let code = code.trim();
    if is_known(code) {
        return Ok(code.to_string());
    }
    let shaped = !code.is_empty()
        && code.len() <= 16
        && code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if allow_unlisted && shaped {
        return Ok(code.to_string());
    }
    let known = KNOWN_REGIONS
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ");
    if allow_unlisted {
        Err(format!(
            "--region {code:?} is not a region code (lower-case letters and digits, like us1 or anz1)"
        ))
    } else {
        Err(format!(
            "--region {code:?} is not a WxCC region wxvault knows ({known}); if Webex has opened a new region, pass --region-unlisted to use it on purpose"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_unlisted_and_garbage() {
        assert_eq!(check(" eu2 ", false).unwrap(), "eu2");
        let e = check("mars", false).unwrap_err();
        assert!(e.contains("mars") && e.contains("--region-unlisted") && e.contains("us1"));
        assert_eq!(check("mars1", true).unwrap(), "mars1");
        assert!(check("Mars 1", true).is_err());
        assert!(check("", true).is_err());
    }
}
