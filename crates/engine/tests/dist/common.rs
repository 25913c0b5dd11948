//! Set-up shared by the distributed-correctness tests: one state database per backend, and
//! "processes" that share nothing but that database and the simulator.

use std::sync::Arc;

use engine::budget::{BudgetPolicy, DbBudget};
use engine::tokens::OrgTokens;
use engine::{FnClock, SharedClock};
use secrecy::SecretString;
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
}

impl Process {
    pub async fn start(
        backend: &Backend,
        sim: &SimServer,
        org: &Org,
        policy: BudgetPolicy,
    ) -> Self {
        let vault = backend.open().await;
        let handle = sim.handle();
        let clock: SharedClock = Arc::new(FnClock(move || handle.now_ms()));
        let http = webex::http::build_client();
        let retry = RetryPolicy::default();
        let gates =
            RateGates::default().with_budget(Arc::new(DbBudget::new(vault.clone(), policy)));
        let oauth =
            OAuthClient::new(http.clone(), sim.base_url(), retry.clone()).with_gates(gates.clone());
        let tokens = OrgTokens::load(vault, oauth, org.clone(), clock)
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
        Process { tokens, client }
    }

    /// One API request (a page of tasks), through the token manager and the rate gate.
    pub async fn call(&self, now_ms: i64) -> Result<(), webex::Error> {
        self.client
            .tasks_page(now_ms - 3_600_000, now_ms, 10)
            .await
            .map(|_| ())
    }
}
