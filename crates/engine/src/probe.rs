//! The check run right after an org is connected or its sources change: each source makes a
//! call or two with the org's grant (`Source::probe`), so a grant that cannot do what a source
//! needs (a missing role, Prevent Downloading) is reported then, not at the first sync.

use vault::Org;

use crate::Engine;
use crate::error::{EngineError, OrgError};
use crate::sync::org_sources;
use crate::tokens::OrgTokens;

/// What one source's check found.
#[derive(Debug)]
pub struct ProbeResult {
    /// The source's name.
    pub source: String,
    /// What was checked and seen, or why the grant cannot serve the source.
    pub outcome: Result<String, OrgError>,
}

impl Engine {
    /// Checks each of `org`'s sources with its grant.
    ///
    /// # Errors
    /// When the org's secrets cannot be read; each source's own problem is in its result.
    pub async fn probe_org(&self, org: &Org) -> Result<Vec<ProbeResult>, EngineError> {
        let oauth = self.oauth()?;
        let tokens =
            OrgTokens::load(self.vault.clone(), oauth, org.clone(), self.clock.clone()).await?;
        let run = self.org_run(org, tokens);
        let mut out = Vec::new();
        for name in org_sources(org) {
            let outcome = match crate::source::spec(&name) {
                None => Err(OrgError::Config(format!("unknown source {name:?}"))),
                Some(spec) => match (spec.start)(run.clone()) {
                    Ok(source) => source.probe().await,
                    Err(e) => Err(e),
                },
            };
            out.push(ProbeResult {
                source: name,
                outcome,
            });
        }
        Ok(out)
    }
}
