//! The small RSQL subset the WxCC user list accepts (webex-api.md §2.6):
//! `field==v`, `field!=v`, `field=in=(a,b)`, `field=out=(a,b)`, joined with
//! `;` (and) and `,` (or, binding looser). Values may be quoted.

/// A filter that could not be parsed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct RsqlError(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    In,
    Out,
}

#[derive(Debug, Clone)]
struct Cmp {
    field: String,
    op: Op,
    values: Vec<String>,
}

/// OR of AND-groups of comparisons.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    any_of: Vec<Vec<Cmp>>,
}

impl Filter {
    /// Evaluates the filter; `get` returns a field's value, `None` if unknown.
    pub(crate) fn matches(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        self.any_of.iter().any(|group| {
            group.iter().all(|c| {
                let Some(v) = get(&c.field) else {
                    return false;
                };
                let hit = c.values.contains(&v);
                match c.op {
                    Op::Eq | Op::In => hit,
                    Op::Ne | Op::Out => !hit,
                }
            })
        })
    }

    /// Field names the filter refers to.
    pub(crate) fn fields(&self) -> Vec<&str> {
        self.any_of
            .iter()
            .flatten()
            .map(|c| c.field.as_str())
            .collect()
    }
}

/// Splits at top-level occurrences of `sep` (outside quotes and parentheses).
fn split_top(s: &str, sep: char) -> Result<Vec<&str>, RsqlError> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<char>, 0usize);
    for (i, ch) in s.char_indices() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(ch),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth < 0 {
                    return Err(RsqlError("unbalanced ')'".into()));
                }
            }
            (None, c) if c == sep && depth == 0 => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if quote.is_some() || depth != 0 {
        return Err(RsqlError("unterminated quote or parenthesis".into()));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn unquote(v: &str) -> Result<String, RsqlError> {
    let v = v.trim();
    if v.is_empty() {
        return Err(RsqlError("empty value".into()));
    }
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q) {
            return inner
                .strip_suffix(q)
                .map(str::to_owned)
                .ok_or_else(|| RsqlError(format!("bad quoting in {v}")));
        }
    }
    Ok(v.to_owned())
}

fn parse_cmp(s: &str) -> Result<Cmp, RsqlError> {
    let s = s.trim();
    let pos = s
        .find(['=', '!'])
        .ok_or_else(|| RsqlError(format!("no operator in {s:?}")))?;
    let field = s[..pos].trim();
    if field.is_empty() || !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
        return Err(RsqlError(format!("bad field name in {s:?}")));
    }
    let rest = &s[pos..];
    let (op, arg) = if let Some(a) = rest.strip_prefix("==") {
        (Op::Eq, a)
    } else if let Some(a) = rest.strip_prefix("!=") {
        (Op::Ne, a)
    } else if let Some(a) = rest.strip_prefix("=in=") {
        (Op::In, a)
    } else if let Some(a) = rest.strip_prefix("=out=") {
        (Op::Out, a)
    } else {
        return Err(RsqlError(format!("unsupported operator in {s:?}")));
    };
    let values = match op {
        Op::Eq | Op::Ne => vec![unquote(arg)?],
        Op::In | Op::Out => {
            let inner = arg
                .trim()
                .strip_prefix('(')
                .and_then(|a| a.strip_suffix(')'))
                .ok_or_else(|| RsqlError(format!("=in=/=out= needs (..) in {s:?}")))?;
            split_top(inner, ',')?
                .into_iter()
                .map(unquote)
                .collect::<Result<_, _>>()?
        }
    };
    Ok(Cmp {
        field: field.to_owned(),
        op,
        values,
    })
}

/// Parses an RSQL expression.
pub(crate) fn parse(s: &str) -> Result<Filter, RsqlError> {
    let any_of = split_top(s, ',')?
        .into_iter()
        .map(|g| split_top(g, ';')?.into_iter().map(parse_cmp).collect())
        .collect::<Result<_, _>>()?;
    Ok(Filter { any_of })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(f: &str) -> Option<String> {
        match f {
            "id" => Some("a1".into()),
            "ciUserId" => Some("c9".into()),
            _ => None,
        }
    }

    #[test]
    fn in_and_eq() {
        assert!(parse(r#"ciUserId=in=("c1","c9")"#).unwrap().matches(&get));
        assert!(!parse(r#"ciUserId=in=("c1")"#).unwrap().matches(&get));
        assert!(parse(r#"id=="a1";ciUserId!=c2"#).unwrap().matches(&get));
        assert!(parse(r#"id==zz,ciUserId==c9"#).unwrap().matches(&get));
        assert!(parse("id=out=(x,y)").unwrap().matches(&get));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["id", "id=~x", r#"id=in=("a""#, "id==", "=in=(a)", "(id==a"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
