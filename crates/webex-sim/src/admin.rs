//! Webex admin APIs on `webexapis.com`: `DELETE /v1/authorizations` (webex-api.md §1.7).
//!
//! Errors come in the Webex router shape (§1.6 shape B). Real Webex also wants the
//! `identity:tokens_write` scope and a Full, User or Device admin; the simulator only
//! requires a valid access token of the org it acts on.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderMap, StatusCode, header};

use crate::http::{injected_5xx, latency, parse_pairs, router_error, too_many};
use crate::state::{BearerError, Shared, lock};

const MALFORMED: &str =
    "The request could not be understood by the server due to malformed syntax.";
const UNAUTHORIZED: &str =
    "The request requires a valid access token set in the Authorization request header.";
const FORBIDDEN: &str = "The server understood the request, but refused to fulfill it because the access token is missing required scopes or the user is missing required roles or licenses.";

/// The org UUID (lowercase) from a bare UUID or a Webex REST id, i.e. base64 of
/// `ciscospark://<region>/ORGANIZATION/<uuid>` (padded or not, standard or URL-safe alphabet).
pub(crate) fn org_uuid(id: &str) -> Option<String> {
    let id = id.trim();
    if let Ok(u) = uuid::Uuid::try_parse(id) {
        return (id.len() == 36).then(|| u.to_string());
    }
    let unpadded = id.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(unpadded)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(unpadded))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let rest = text.strip_prefix("ciscospark://")?;
    let mut segs = rest.split('/');
    let _region = segs.next()?;
    if segs.next()? != "ORGANIZATION" {
        return None;
    }
    let uuid = segs.next()?;
    if segs.next().is_some() || uuid.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(uuid).ok().map(|u| u.to_string())
}

/// `DELETE /v1/authorizations?clientId=…[&orgId=…]`: revokes every grant (refresh and
/// access tokens) of that integration in that org; 204. `orgId` defaults to the caller's org.
pub(crate) async fn delete_authorizations(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    shared.count("authorizations");
    latency(&shared).await;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty())
        .map(|(_, t)| t.trim().to_owned());
    let unauthorized = || {
        router_error(
            &shared,
            StatusCode::UNAUTHORIZED,
            UNAUTHORIZED,
            UNAUTHORIZED,
        )
    };
    let Some(token) = token else {
        return unauthorized();
    };
    let bearer = match lock(&shared.auth).bearer(&token, shared.now_ms()) {
        Ok(b) => b,
        Err(BearerError::Unknown | BearerError::Expired | BearerError::Revoked) => {
            return unauthorized();
        }
    };
    if let Err(secs) = shared.rate_check(&bearer.client_id) {
        return too_many(&shared, &bearer.client_id, secs);
    }
    let faults = shared.faults();
    if shared.roll(faults.rate_429_rate) {
        let secs = 1 + shared.pick_index(5);
        return too_many(&shared, &bearer.client_id, secs);
    }
    if shared.roll(faults.error_5xx_rate) {
        return injected_5xx(&shared);
    }
    let p = parse_pairs(q.as_deref());
    let Some(client_id) = p
        .get("clientId")
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
    else {
        return router_error(
            &shared,
            StatusCode::BAD_REQUEST,
            MALFORMED,
            "clientId is required.",
        );
    };
    let org_id = match p.get("orgId").map(|o| o.trim()).filter(|o| !o.is_empty()) {
        None => bearer.org_id.clone(),
        Some(raw) => match org_uuid(raw) {
            Some(uuid) => uuid,
            None => {
                return router_error(
                    &shared,
                    StatusCode::BAD_REQUEST,
                    MALFORMED,
                    "orgId is invalid.",
                );
            }
        },
    };
    if org_id != bearer.org_id {
        return router_error(
            &shared,
            StatusCode::FORBIDDEN,
            FORBIDDEN,
            "The access token does not belong to the organization named by orgId.",
        );
    }
    let revoked = lock(&shared.auth).revoke_client_org(client_id, &org_id);
    tracing::info!(
        client_id,
        org_id,
        revoked,
        "webex-sim: authorizations revoked"
    );
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_uuid_accepts_bare_and_rest_ids() {
        let uuid = "1eb65fdf-9643-417f-9974-ad72cae0e10f";
        assert_eq!(org_uuid(uuid).as_deref(), Some(uuid));
        assert_eq!(org_uuid(&uuid.to_uppercase()).as_deref(), Some(uuid));
        let rest = base64::engine::general_purpose::STANDARD
            .encode(format!("ciscospark://us/ORGANIZATION/{uuid}"));
        assert_eq!(org_uuid(&rest).as_deref(), Some(uuid));
        assert_eq!(org_uuid(rest.trim_end_matches('=')).as_deref(), Some(uuid));
        let person = base64::engine::general_purpose::STANDARD
            .encode(format!("ciscospark://us/PEOPLE/{uuid}"));
        assert_eq!(org_uuid(&person), None);
        assert_eq!(org_uuid("1eb65fdf9643417f9974ad72cae0e10f"), None);
        assert_eq!(org_uuid("not an id!"), None);
        assert_eq!(org_uuid(""), None);
    }
}
