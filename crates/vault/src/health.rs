//! Readiness of the state database, for `/readyz` and the workers' health endpoint.

use crate::{Vault, VaultError};

impl Vault {
    /// Checks that the database answers: one connection from the pool and a read of the
    /// one-row `key_state` table. Reading a wxvault table rather than `SELECT 1` also proves the
    /// schema is there and, on SQLite, that the file can be read.
    ///
    /// The call is not bounded in time beyond the pool's acquire timeout; callers that must
    /// answer promptly (a readiness probe) wrap it in their own timeout.
    ///
    /// # Errors
    /// [`VaultError::Db`] when no connection can be had or the query fails;
    /// [`VaultError::is_transient`] tells an unreachable server from a broken schema.
    pub async fn ping(&self) -> Result<(), VaultError> {
        sqlx::query("SELECT newest_version FROM key_state WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(VaultError::db("checking that the state database answers"))?;
        Ok(())
    }
}
