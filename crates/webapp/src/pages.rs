//! Server-rendered pages (maud escapes every interpolated value). No JavaScript: everything
//! works with plain links and forms, and the CSP forbids scripts anyway.

use axum::http::header;
use axum::response::IntoResponse;
use maud::{DOCTYPE, Markup, html};

const STYLESHEET: &str = include_str!("app.css");

pub(crate) async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLESHEET,
    )
}

/// The frame of every page; `signed_in` carries the operator's CSRF token for the sign-out form.
pub(crate) fn layout(title: &str, signed_in: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (title) " · wxvault" }
                link rel="stylesheet" href="/static/app.css";
            }
            body {
                header.top {
                    span.brand { "wxvault" }
                    @if let Some(csrf) = signed_in {
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button.link id="logout" type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page saying what went wrong and what to do.
pub(crate) fn problem(title: &str, problem: &str, fix: &str) -> Markup {
    layout(
        title,
        None,
        html! {
            section.card.bad {
                h1 id="result" { (title) }
                p id="problem" { (problem) }
                p id="fix" { (fix) }
            }
        },
    )
}

/// Formats epoch milliseconds as UTC `YYYY-MM-DD HH:MM`.
pub(crate) fn when(ms: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "?".into())
}

/// An RFC 3339 time as [`when`] shows times; unparsable text is shown as it is.
pub(crate) fn when_rfc3339(text: &str) -> String {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| when(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)))
        .unwrap_or_else(|_| text.to_string())
}

/// "in 3 days", "5 h ago", "in 40 min".
pub(crate) fn relative(now_ms: i64, at_ms: i64) -> String {
    let d = at_ms - now_ms;
    let abs = d.unsigned_abs() / 1000;
    let span = if abs >= 2 * 86_400 {
        format!("{} days", abs / 86_400)
    } else if abs >= 2 * 3600 {
        format!("{} h", abs / 3600)
    } else if abs >= 60 {
        format!("{} min", abs / 60)
    } else {
        return "now".into();
    };
    if d >= 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}
