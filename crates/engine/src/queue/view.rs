//! The queue as `wxvault queue`, `status` and the dashboard show it.

use super::PLANNER;
use crate::error::EngineError;
use crate::sync::Engine;

/// The queue as `wxvault queue` and `status` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueView {
    #[serde(flatten)]
    pub queue: vault::QueueStatus,
    /// Org leases (`sync` scope: which process is harvesting which org; `backfill:<from>`:
    /// which process runs which backfill chunk; `refresh`: a token refresh in flight).
    pub leases: Vec<LeaseView>,
    /// The planner: who holds it and when it last planned.
    pub planner: Option<vault::Singleton>,
    /// Org names by database id, for the jobs above.
    pub org_names: std::collections::BTreeMap<i64, String>,
}

/// One org lease with the org's name.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseView {
    pub org: String,
    #[serde(flatten)]
    pub lease: vault::Lease,
}

impl Engine {
    /// The queue, leases and planner as stored now.
    ///
    /// # Errors
    /// Database failures.
    pub async fn queue_view(&self) -> Result<QueueView, EngineError> {
        let now = self.clock.now_ms();
        let org_names: std::collections::BTreeMap<i64, String> = self
            .vault
            .orgs()
            .await?
            .into_iter()
            .map(|o| (o.id, o.name))
            .collect();
        let leases = self
            .vault
            .leases()
            .await?
            .into_iter()
            .map(|lease| LeaseView {
                org: org_names.get(&lease.org).cloned().unwrap_or_default(),
                lease,
            })
            .collect();
        Ok(QueueView {
            queue: self.vault.queue_status(now).await?,
            leases,
            planner: self.vault.singleton(PLANNER).await?,
            org_names,
        })
    }
}
