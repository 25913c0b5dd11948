//! Set-up shared by the distributed-correctness tests: one state database per backend, and
//! "processes" that share nothing but that database and the simulator.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use engine::budget::{BudgetPolicy, DbBudget};
use engine::tokens::{OrgTokens, REFRESH_LEASE_TTL};
use engine::{FnClock, SharedClock};
use secrecy::{ExposeSecret, SecretString};
use vault::testing::{TempPostgres, random_keyring};
use vault::{Keyring, NewOrg, Org, TokenUpdate, Vault};
use webex::TokenProvider;
use webex::http::{RateGates, RetryPolicy};
use webex::oauth::OAuthClient;
use webex::wxcc::WxccClient;
use webex_sim::{SimClient, SimServer};

/// One backend under test: a SQLite file, or a fresh PostgreSQL database.
pub struct Backend {
    pub url: String,
    pub keyring: Keyring,
    _pg: Option<TempPostgres>,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    pub fn name(&self) -> &'static str {
        if self.url.starts_with("sqlite") {
            "sqlite"
        } else {
            "postgres"
        }
    }

    /// A new handle with its own connection pool, as another process would open it.
    pub async fn open(&self) -> Vault {
        Vault::open(&self.url, self.keyring.clone())
            .await
            .expect("open the state database")
    }
}

/// A SQLite file always; PostgreSQL when reachable (mandatory with WXVAULT_REQUIRE_PG).
pub async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let mut out = vec![Backend {
        url,
        keyring: random_keyring(),
        _pg: None,
        _dir: Some(dir),
    }];
    if let Some(pg) = TempPostgres::create().await {
        out.push(Backend {
            url: pg.url().to_owned(),
            keyring: random_keyring(),
            _pg: Some(pg),
            _dir: None,
        });
    }
    out
}

/// Registers the simulator's first org under the demo integration with a fresh grant.
pub async fn add_org(vault: &Vault, sim: &SimServer) -> Org {
    let handle = sim.handle();
    let org_id = handle.orgs()[0].org_id.clone();
    let grant = handle.issue_grant(SimClient::DEMO_CLIENT_ID, &org_id, &["cjp:config_read"]);
    let now = handle.now_ms();
    let secret = |s: &str| Some(SecretString::from(s.to_owned()));
    vault
        .add_org(NewOrg {
            name: "acme".into(),
            org_id,
            region: "us1".into(),
            client_id: SimClient::DEMO_CLIENT_ID.into(),
            client_secret: SecretString::from(SimClient::DEMO_CLIENT_SECRET.to_owned()),
            client_auth: "form".into(),
            sources: vec!["wxcc".into()],
            tokens: TokenUpdate {
                access_token: secret(&grant.access_token),
                access_expires_at_ms: Some(now + grant.expires_in as i64 * 1_000),
                refresh_token: secret(&grant.refresh_token),
                refresh_expires_at_ms: Some(now + grant.refresh_token_expires_in as i64 * 1_000),
                scopes: Some("cjp:config_read".into()),
                refreshed_at_ms: Some(now),
            },
        })
        .await
        .expect("add org")
}

/// One wxvault "process": its own vault handle (own pool), token manager and rate gates,
/// sharing only the database with the others.
pub struct Process {
    pub tokens: Arc<OrgTokens>,
    pub client: WxccClient,
    /// This process's handle on the state database (closing it cuts only this process off).
    pub vault: Vault,
    /// The shared budget its rate gates draw from.
    pub budget: Arc<DbBudget>,
}

impl Process {
    pub async fn start(
        backend: &Backend,
        sim: &SimServer,
        org: &Org,
        policy: BudgetPolicy,
    ) -> Self {
        Self::start_with_lease_ttl(backend, sim, org, policy, REFRESH_LEASE_TTL).await
    }

    /// [`Self::start`] with a `token_refresh` lease of `lease_ttl` instead of the default.
    pub async fn start_with_lease_ttl(
        backend: &Backend,
        sim: &SimServer,
        org: &Org,
        policy: BudgetPolicy,
        lease_ttl: Duration,
    ) -> Self {
        let vault = backend.open().await;
        let handle = sim.handle();
        let clock: SharedClock = Arc::new(FnClock(move || handle.now_ms()));
        let http = webex::http::build_client();
        let retry = RetryPolicy::default();
        let budget = Arc::new(DbBudget::new(vault.clone(), policy));
        let gates = RateGates::default().with_budget(budget.clone());
        let oauth =
            OAuthClient::new(http.clone(), sim.base_url(), retry.clone()).with_gates(gates.clone());
        let tokens =
            OrgTokens::load_with_lease_ttl(vault.clone(), oauth, org.clone(), clock, lease_ttl)
                .await
                .expect("load tokens");
        let provider: Arc<dyn TokenProvider> = tokens.clone();
        let client = WxccClient::new(
            http,
            sim.base_url(),
            org.org_id.clone(),
            provider,
            gates.gate(&org.client_id),
            retry,
        );
        Process {
            tokens,
            client,
            vault,
            budget,
        }
    }

    /// One API request (a page of tasks), through the token manager and the rate gate.
    pub async fn call(&self, now_ms: i64) -> Result<(), webex::Error> {
        self.client
            .tasks_page(now_ms - 3_600_000, now_ms, 10)
            .await
            .map(|_| ())
    }
}

/// The org's tokens as stored now: (access, refresh).
pub async fn stored_tokens(vault: &Vault, org: &Org) -> (String, String) {
    let org = vault
        .org_by_id(org.id)
        .await
        .unwrap()
        .expect("org still there");
    let secrets = vault.org_secrets(&org).await.unwrap();
    let plain = |s: Option<SecretString>| s.expect("token stored").expose_secret().to_owned();
    (plain(secrets.access_token), plain(secrets.refresh_token))
}

/// How many token requests (`POST /v1/access_token`) the simulator has received.
pub fn token_requests(sim: &SimServer) -> u64 {
    sim.handle()
        .stats()
        .by_endpoint
        .get("access_token")
        .copied()
        .unwrap_or(0)
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; whether it held. For waiting on
/// a condition (never on time) without hanging a failing test.
pub async fn wait_until<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
