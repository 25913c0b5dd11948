//! One running app: the simulator, an engine on the simulator's clock, and `webapp::serve` on a
//! free port. `Browser` is a cookie-keeping client that follows redirects by hand.

use std::sync::Arc;
use std::time::Duration;

use engine::config::ServeConfig;
use engine::{Config, Engine, FnClock};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION};
use secrecy::{ExposeSecret as _, SecretString};
use vault::NewInvite;
use webex_sim::{DatasetSpec, SimClient, SimConfig, SimHandle, SimServer};

pub const MASTER_KEY: &str = "q6i6m5eV0k3Qbn2n1m7Yv9Q4c2l8Zt1uXw0aPz3sR5E=";
pub const PASSWORD: &str = "correct horse battery staple";
pub const VENDOR: &str = "Acme Analytics";

pub struct App {
    pub sim: SimServer,
    pub client: SimClient,
    pub engine: Arc<Engine>,
    pub base: String,
    /// The settings `serve` runs with (for an in-process router beside it).
    pub settings: webapp::Settings,
    /// The state database's URL (for poking at rows behind the app's back).
    pub db_url: String,
    /// Finished purge passes of the running app (wait on it, not on time).
    pub purge_passes: tokio::sync::watch::Receiver<u64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
    _pg: Option<vault::testing::TempPostgres>,
}

pub fn sim_config() -> SimConfig {
    SimConfig {
        dataset: DatasetSpec::small(),
        rate_limit_per_minute: None,
        realtime_clock: false,
        ..SimConfig::default()
    }
}

pub struct Options {
    pub sim: SimConfig,
    pub postgres: bool,
    pub public_url: Option<String>,
    pub with_integration: bool,
    pub limits: webapp::ConnectionLimits,
    pub purge_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sim: sim_config(),
            postgres: false,
            public_url: None,
            with_integration: true,
            limits: webapp::ConnectionLimits::default(),
            purge_every: webapp::PURGE_EVERY,
        }
    }
}

impl App {
    pub async fn start() -> App {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> App {
        let client = opts.sim.clients.first().cloned().expect("a sim client");
        let sim = SimServer::start(opts.sim, ([127, 0, 0, 1], 0).into())
            .await
            .expect("sim starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let pg = if opts.postgres {
            Some(
                vault::testing::TempPostgres::create()
                    .await
                    .expect("PostgreSQL is required for this test (WXVAULT_TEST_PG)"),
            )
        } else {
            None
        };
        let mut config = Config::default();
        config.database.url = match &pg {
            Some(pg) => pg.url().to_string(),
            None => format!("sqlite://{}/wxvault.db", dir.path().display()),
        };
        config.storage.url = format!("file://{}/archive", dir.path().display());
        let base = sim.base_url().to_string();
        config.webex.api_base = base.clone();
        config.wxcc.api_base = base;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let bound = listener.local_addr().expect("addr");
        let public_url = opts.public_url.clone();
        config.serve.public_url = Some(public_url.clone().unwrap_or(format!("http://{bound}")));
        let handle = sim.handle();
        let clock = Arc::new(FnClock(move || handle.now_ms()));
        let engine = Arc::new(
            Engine::open(config, Some(MASTER_KEY), clock)
                .await
                .expect("engine opens"),
        );
        let serve = ServeConfig {
            public_url,
            vendor_name: VENDOR.into(),
            operator_password_hash: Some(
                vault::hash_password(&SecretString::from(PASSWORD)).expect("hash"),
            ),
            client_id: opts.with_integration.then(|| client.client_id.clone()),
            ..ServeConfig::default()
        };
        let mut settings = webapp::Settings::from_config(
            &serve,
            bound,
            Some(SecretString::from(client.client_secret.clone())),
        )
        .expect("settings");
        settings.limits = opts.limits;
        settings.purge_every = opts.purge_every;
        let (purge_tx, purge_passes) = tokio::sync::watch::channel(0u64);
        settings.purge_passes = Some(purge_tx);
        let db_url = engine.config.database.url.clone();
        // Keep-alive passes are driven by tests themselves (`webapp::keep_alive_loop`).
        let every = Duration::from_secs(3600);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let engine = engine.clone();
            let settings = settings.clone();
            async move {
                webapp::serve(engine, settings, listener, every, async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
            }
        });
        App {
            sim,
            client,
            engine,
            base: format!("http://{bound}"),
            settings,
            db_url,
            purge_passes,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
            _pg: pg,
        }
    }

    pub fn handle(&self) -> SimHandle {
        self.sim.handle()
    }

    /// Calls the simulator's token endpoint has answered (code exchanges and refreshes).
    pub fn token_calls(&self) -> u64 {
        self.handle()
            .stats()
            .by_endpoint
            .get("access_token")
            .copied()
            .unwrap_or(0)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An invite made through the vault (as `wxvault invite create` does); returns its link.
    pub async fn invite(&self, org: &str, region: Option<&str>, ttl_ms: i64) -> String {
        let issued = self
            .engine
            .vault
            .create_invite(
                NewInvite {
                    org_name: org.into(),
                    sources: vec!["wxcc".into()],
                    created_by: "test".into(),
                    ttl_ms,
                    client_id: None,
                    region: region.map(str::to_string),
                },
                self.handle().now_ms(),
            )
            .await
            .expect("invite");
        self.url(&format!("/connect?invite={}", issued.token.expose_secret()))
    }

    /// A raw connection to the state database (SQLite or PostgreSQL).
    pub async fn raw_db(&self) -> sqlx::AnyConnection {
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        sqlx::AnyConnection::connect(&self.db_url)
            .await
            .expect("raw database connection")
    }

    /// Rows of `table` matching `filter`, counted behind the app's back.
    pub async fn count(&self, table: &str, filter: &str) -> i64 {
        let mut db = self.raw_db().await;
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE {filter}"))
            .fetch_one(&mut db)
            .await
            .expect("count")
    }

    /// Runs one statement on the state database behind the app's back.
    pub async fn execute(&self, sql: &str) {
        let mut db = self.raw_db().await;
        sqlx::query(sql).execute(&mut db).await.expect(sql);
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

pub const HOUR: i64 = 3_600_000;

/// A browser: keeps cookies, does not follow redirects, records every page body it saw.
pub struct Browser {
    pub http: reqwest::Client,
    pub seen: Vec<String>,
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> String {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no Location on a {} page: {}", self.status, self.body))
            .to_string()
    }

    /// The value of the form field `name` on this page.
    pub fn field(&self, name: &str) -> String {
        let needle = format!("name=\"{name}\" value=\"");
        let at = self
            .body
            .find(&needle)
            .unwrap_or_else(|| panic!("no field {name} on the page: {}", self.body))
            + needle.len();
        let end = self.body[at..].find('"').expect("closing quote");
        self.body[at..at + end].to_string()
    }

    /// The authorize URL a hand-off page moves the browser on to (meta refresh and link).
    pub fn to_webex(&self) -> String {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        let link = self.attr("to-webex", "href");
        assert!(
            self.body.contains(&format!(
                "http-equiv=\"refresh\" content=\"0;url={}\"",
                link.replace('&', "&amp;")
            )),
            "the page moves on by itself: {}",
            self.body
        );
        link
    }

    /// Attribute `attr` of the element with id `id`.
    pub fn attr(&self, id: &str, attr: &str) -> String {
        let at = self
            .body
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no #{id} on the page: {}", self.body));
        let rest = &self.body[at..];
        let needle = format!("{attr}=\"");
        let start = rest.find(&needle).expect("attribute") + needle.len();
        let end = rest[start..].find('"').expect("closing quote");
        rest[start..start + end].replace("&amp;", "&")
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            seen: Vec::new(),
        }
    }

    async fn page(&mut self, resp: reqwest::Response) -> Page {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.expect("body");
        self.seen.push(body.clone());
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, url: &str) -> Page {
        let resp = self.http.get(url).send().await.expect("GET");
        self.page(resp).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let resp = self.http.post(url).form(form).send().await.expect("POST");
        self.page(resp).await
    }

    pub async fn post_with(
        &mut self,
        url: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut req = self.http.post(url).form(form);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("POST");
        self.page(resp).await
    }

    /// Opens an invite link and clicks "Connect with Webex": returns the authorize URL the app
    /// sent the browser to.
    pub async fn start_connect(&mut self, app: &App, link: &str) -> String {
        let opened = self.get(link).await;
        assert_eq!(opened.status, StatusCode::SEE_OTHER, "{}", opened.body);
        assert_eq!(
            opened.location(),
            "/connect",
            "the token leaves the address bar"
        );
        let page = self.get(&app.url("/connect")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.body.contains("Connect with Webex"), "{}", page.body);
        let csrf = page.field("csrf");
        let started = self
            .post(
                &app.url("/connect/start"),
                &[("csrf", &csrf), ("region", "us1")],
            )
            .await;
        started.to_webex()
    }

    /// Opens an invite link, consents at the simulator: returns the callback URL Webex sent
    /// the browser back to (not yet visited).
    pub async fn consent(&mut self, app: &App, link: &str) -> String {
        let authorize = self.start_connect(app, link).await;
        assert!(
            authorize.starts_with(&app.sim.base_url().to_string()),
            "{authorize}"
        );
        let answer = self.get(&authorize).await;
        assert!(answer.status.is_redirection(), "{}", answer.body);
        let back = answer.location();
        assert!(back.starts_with(&app.url("/oauth/callback")), "{back}");
        back
    }

    /// The whole connect flow; returns the success page.
    pub async fn connect(&mut self, app: &App, link: &str) -> Page {
        let back = self.consent(app, link).await;
        self.get(&back).await
    }

    /// Signs in as the operator.
    pub async fn sign_in(&mut self, app: &App) -> Page {
        let page = self
            .post(&app.url("/login"), &[("password", PASSWORD)])
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        assert_eq!(page.location(), "/");
        page
    }
}

/// The query value `key` of a URL.
pub fn query(url: &str, key: &str) -> String {
    url::Url::parse(url)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {key} in {url}"))
}

/// `url` with query `key` replaced by `value`.
pub fn with_query(url: &str, key: &str, value: &str) -> String {
    let mut u = url::Url::parse(url).expect("url");
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == key {
                value.to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}
