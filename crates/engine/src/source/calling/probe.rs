//! The check run when an org with the Calling source is connected (webex-api.md §3.1): list one
//! page and ask for one recording's details, so a grant that can list but never download (admin
//! scope only, or Prevent Downloading) is reported at once instead of at the first sync.

use webex::calling::ListQuery;

use super::{CallingHarvest, SPEC};
use crate::error::OrgError;

/// How far back the check looks for a recording to ask details about (the list's limit).
const LOOKBACK_MS: i64 = 30 * 24 * 60 * 60 * 1000;

impl CallingHarvest {
    /// One list page of the last 30 days and the details of its newest recording.
    ///
    /// # Errors
    /// The listing's or details' error; [`OrgError::NotPermitted`] when the details carry no
    /// download link.
    pub(super) async fn probe_grant(&self) -> Result<String, OrgError> {
        let now = self.run.clock.now_ms();
        let service_type = self
            .run
            .config
            .calling
            .service_types
            .first()
            .cloned()
            .unwrap_or_else(|| "calling".to_owned());
        let query = ListQuery {
            from_ms: now - LOOKBACK_MS,
            to_ms: now,
            service_type,
            status: "available".to_owned(),
        };
        let listing = self.client.list_first_page(&query).await?;
        let Some(first) = listing.items.first() else {
            return Ok(
                "Webex lists the org's Calling recordings; none in the last 30 days to check the download permission on (the first sync will)"
                    .to_owned(),
            );
        };
        let details = self.client.details(&first.id).await?;
        if details.audio_link.is_some() {
            return Ok(format!(
                "Webex lists the org's Calling recordings and gives download links ({} listed on the first page)",
                listing.items.len()
            ));
        }
        let scopes = self.run.tokens.org().await.scopes.unwrap_or_default();
        let message = if scopes
            .split_whitespace()
            .any(|s| s == webex::CALLING_COMPLIANCE_SCOPE)
        {
            format!(
                "Webex lists the recordings but gives no download link, although the grant has {}: Prevent Downloading is on for the org or its users; an administrator must turn it off in Control Hub (Services › Calling › Call Recording)",
                webex::CALLING_COMPLIANCE_SCOPE
            )
        } else {
            format!(
                "the grant lists recordings but Webex gives download links only to compliance officers, and it lacks {scope}. Fix: have a user with the Compliance Officer role in Control Hub reconnect the org so the grant carries {scope}",
                scope = webex::CALLING_COMPLIANCE_SCOPE
            )
        };
        Err(OrgError::NotPermitted {
            source_label: SPEC.label,
            message,
        })
    }
}
