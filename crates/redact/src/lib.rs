//! The one place that decides what of a URL may appear in a message.
//!
//! URLs reach error messages and logs from many places (the configuration, the state database,
//! the object store, the notification webhook), and any of them may carry a credential: a
//! password in the userinfo (`postgres://u:secret@host/db`) or a token in the query string
//! (`https://hooks.example.com/x?token=…`). Every message that can contain a URL goes through
//! [`redact_url`] (one URL) or [`redact_urls_in`] (free text such as a driver's error message).
//!
//! The rule is deliberately blunt: the whole userinfo (user name included) and the whole query
//! string and fragment are replaced by `***`. The scheme, host, port and path stay, which is what
//! an operator needs to see which setting is wrong.

/// What replaces a hidden part.
pub const HIDDEN: &str = "***";

/// Returns `url` with its userinfo, query string and fragment replaced by `***`.
///
/// Works on text that is not a valid URL too (a value the configuration rejected): without a
/// `scheme://`, anything before an `@` that comes before the first `/` is treated as userinfo.
pub fn redact_url(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let (head, rest) = url.split_at(authority_start);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = String::with_capacity(url.len());
    out.push_str(head);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str(HIDDEN);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    match tail.find(['?', '#']) {
        Some(q) => {
            out.push_str(&tail[..q]);
            out.push_str(&tail[q..=q]);
            out.push_str(HIDDEN);
        }
        None => out.push_str(tail),
    }
    out
}

/// Redacts every `scheme://…` URL found in free text (e.g. an error message from a database
/// driver or an HTTP client) with [`redact_url`]. A URL ends at whitespace or at a quote, bracket
/// or angle bracket, so the text around it is kept.
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        // The scheme: the letters, digits, `+`, `-` and `.` just before `://`.
        let scheme_start = rest[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[sep..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ')' | ']' | '>'))
            .map_or(rest.len(), |i| sep + i);
        out.push_str(&rest[..scheme_start]);
        out.push_str(&redact_url(&rest[scheme_start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_userinfo_query_and_fragment() {
        assert_eq!(
            redact_url("postgres://u:hunter2@h/db"),
            "postgres://***@h/db"
        );
        assert_eq!(
            redact_url("postgres://u@db:5432/x?password=s3cret&sslmode=require"),
            "postgres://***@db:5432/x?***"
        );
        assert_eq!(
            redact_url("https://hooks.example.com/notify?token=abc#frag"),
            "https://hooks.example.com/notify?***"
        );
        assert_eq!(redact_url("https://h/p#tok"), "https://h/p#***");
        assert_eq!(redact_url("https://a:b@h?x=1"), "https://***@h?***");
        assert_eq!(redact_url("u:hunter2@h/db"), "***@h/db");
    }

    #[test]
    fn leaves_urls_without_secrets_alone() {
        for u in [
            "sqlite:///var/x.db",
            "sqlite::memory:",
            "sqlite://./wxvault-data/wxvault.db",
            "s3://bucket/prefix",
            "https://webexapis.com/v1/people",
            "not a url",
            "",
        ] {
            assert_eq!(redact_url(u), u);
        }
    }

    #[test]
    fn finds_urls_in_text() {
        assert_eq!(
            redact_urls_in(
                "error sending request for url (https://u:pw@hooks.example.com/x?token=abc): refused"
            ),
            "error sending request for url (https://***@hooks.example.com/x?***): refused"
        );
        assert_eq!(
            redact_urls_in("1 | url = \"postgres://u:hunter2@h/db\"\n  |       ^"),
            "1 | url = \"postgres://***@h/db\"\n  |       ^"
        );
        assert_eq!(redact_urls_in("no url here"), "no url here");
        assert_eq!(
            redact_urls_in("a http://h/?q=1 b https://x:y@z c"),
            "a http://h/?*** b https://***@z c"
        );
    }
}
