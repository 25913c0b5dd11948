//! RFC 8288 `Link` header parsing, for paging on webexapis.com (webex-api.md §3.8).
//!
//! Written here rather than taken from a crate because it is small and the cases that matter
//! are exactly the ones a naive `split(',')` gets wrong: several links in one header value,
//! several `Link` headers, commas and semicolons inside `<…>` or quoted strings, quoted or bare
//! `rel` values, and space-separated relation lists (`rel="next last"`).

use reqwest::header::{HeaderMap, LINK};

/// One link of a `Link` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    /// The URI reference between `<` and `>` (possibly relative).
    pub target: String,
    /// The relation types of its first `rel` parameter, lowercased.
    pub rels: Vec<String>,
}

/// The target of the first link with relation `next` among every `Link` header of a response.
pub(crate) fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse)
        .find(|l| l.rels.iter().any(|r| r == "next"))
        .map(|l| l.target)
}

/// Parses one `Link` header value into its links. Malformed parts are skipped, never fatal.
pub(crate) fn parse(value: &str) -> Vec<Link> {
    let mut p = Parser {
        s: value.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        p.skip(|b| b.is_ascii_whitespace() || b == b',');
        if p.at_end() {
            return out;
        }
        if p.peek() != Some(b'<') {
            p.recover();
            continue;
        }
        p.i += 1;
        let start = p.i;
        while p.peek().is_some_and(|b| b != b'>') {
            p.i += 1;
        }
        if p.at_end() {
            return out;
        }
        let target = value[start..p.i].trim().to_owned();
        p.i += 1;
        let mut rels: Option<Vec<String>> = None;
        loop {
            p.skip(|b| b.is_ascii_whitespace());
            match p.peek() {
                Some(b';') => {
                    p.i += 1;
                    let (name, val) = p.param();
                    if rels.is_none() && name.eq_ignore_ascii_case("rel") {
                        // Only the first rel parameter counts (RFC 8288 §3.3).
                        rels = Some(
                            val.unwrap_or_default()
                                .split_ascii_whitespace()
                                .map(str::to_ascii_lowercase)
                                .collect(),
                        );
                    }
                }
                Some(b',') | None => break,
                Some(_) => {
                    p.recover();
                    break;
                }
            }
        }
        out.push(Link {
            target,
            rels: rels.unwrap_or_default(),
        });
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
    }

    /// Skips to the next top-level comma, stepping over quoted strings and `<…>`.
    fn recover(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b',' => return,
                b'"' => {
                    self.quoted();
                    continue;
                }
                b'<' => {
                    while self.peek().is_some_and(|b| b != b'>') {
                        self.i += 1;
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
    }

    /// A `name[=value]` parameter after its `;`.
    fn param(&mut self) -> (String, Option<String>) {
        self.skip(|b| b.is_ascii_whitespace());
        let name = self.token();
        self.skip(|b| b.is_ascii_whitespace());
        if self.peek() != Some(b'=') {
            return (name, None);
        }
        self.i += 1;
        self.skip(|b| b.is_ascii_whitespace());
        let value = if self.peek() == Some(b'"') {
            self.quoted()
        } else {
            self.token()
        };
        (name, Some(value))
    }

    fn token(&mut self) -> String {
        let start = self.i;
        self.skip(|b| !(b.is_ascii_whitespace() || matches!(b, b';' | b',' | b'=' | b'"')));
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    /// A quoted string starting at the current `"`, with `\` escapes; ends after the closing quote.
    fn quoted(&mut self) -> String {
        let mut out = Vec::new();
        self.i += 1;
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rels(v: &str) -> Vec<(String, Vec<String>)> {
        parse(v).into_iter().map(|l| (l.target, l.rels)).collect()
    }

    #[test]
    fn webex_example_and_variants() {
        let v = r#"<https://webexapis.com/v1/people?displayName=Harold&max=10&before&after=Y2lz>; rel="next""#;
        assert_eq!(
            rels(v),
            [(
                "https://webexapis.com/v1/people?displayName=Harold&max=10&before&after=Y2lz"
                    .to_owned(),
                vec!["next".to_owned()]
            )]
        );
        let many = r#"<https://a/x?p=1,2;3>; rel=first, <https://a/x?c=9>;title="a, b; c";rel="NEXT last", <https://a/p>; rel=prev"#;
        let got = rels(many);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, "https://a/x?p=1,2;3");
        assert_eq!(got[1].0, "https://a/x?c=9");
        assert_eq!(got[1].1, ["next", "last"]);
        assert_eq!(got[2].1, ["prev"]);
        // Only the first rel counts; garbage between links is skipped.
        let odd = r#"junk "with, comma", <https://a/1>; rel="prev"; rel="next", <https://a/2> ; rel = next ,"#;
        let got = rels(odd);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].1, ["prev"]);
        assert_eq!(got[1], ("https://a/2".to_owned(), vec!["next".to_owned()]));
        assert!(parse("").is_empty());
        assert!(parse("<unterminated").is_empty());
        assert_eq!(rels("<https://a/3>"), [("https://a/3".to_owned(), vec![])]);
    }

    #[test]
    fn next_across_several_headers() {
        let mut h = HeaderMap::new();
        h.append(LINK, r#"<https://a/first>; rel="first""#.parse().unwrap());
        h.append(LINK, r#"<https://a/n>; rel="next""#.parse().unwrap());
        assert_eq!(next_link(&h).as_deref(), Some("https://a/n"));
        assert_eq!(next_link(&HeaderMap::new()), None);
    }
}
