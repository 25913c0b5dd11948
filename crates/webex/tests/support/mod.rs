//! A tiny scripted HTTP server on 127.0.0.1:0 for exercising the client end to end.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use url::Url;
use webex::http::RetryPolicy;
use webex::{Error, ErrorClass, ExposeSecret, SecretString, TokenProvider};

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: tokio::time::Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
    pub fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
}

pub type Responder = Arc<dyn Fn(&Recorded, usize) -> Response + Send + Sync>;

#[derive(Clone)]
struct ServerState {
    log: Arc<Mutex<Vec<Recorded>>>,
    responder: Responder,
}

pub struct Server {
    pub base: Url,
    pub log: Arc<Mutex<Vec<Recorded>>>,
}

impl Server {
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }
    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }
    pub fn url(&self, path: &str) -> String {
        self.base.join(path).unwrap().to_string()
    }
}

async fn handle(State(st): State<ServerState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let rec = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect(),
        headers: parts.headers,
        body,
        at: tokio::time::Instant::now(),
    };
    let n = {
        let mut log = st.log.lock().unwrap();
        log.push(rec.clone());
        log.len() - 1
    };
    (st.responder)(&rec, n)
}

/// Starts a server answering every request with `responder(request, index)`.
pub async fn serve<F>(responder: F) -> Server
where
    F: Fn(&Recorded, usize) -> Response + Send + Sync + 'static,
{
    let log = Arc::new(Mutex::new(Vec::new()));
    let state = ServerState {
        log: log.clone(),
        responder: Arc::new(responder),
    };
    let app = axum::Router::new().fallback(handle).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        base: Url::parse(&format!("http://{addr}/")).unwrap(),
        log,
    }
}

pub fn json(status: u16, v: serde_json::Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

pub fn status_with(status: u16, headers: &[(&'static str, &str)], body: &str) -> Response {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::from(body.to_owned())).unwrap()
}

/// Millisecond-scale retry policy so failure paths stay fast.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        default_retry_after: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(2),
    }
}

/// A token provider that hands out `old` until refreshed, then `new`.
pub struct TestTokens {
    pub current: Mutex<String>,
    pub next: String,
    pub refreshes: AtomicU32,
    pub rejected: Mutex<Vec<String>>,
}

impl TestTokens {
    pub fn new(old: &str, new: &str) -> Arc<Self> {
        Arc::new(TestTokens {
            current: Mutex::new(old.to_owned()),
            next: new.to_owned(),
            refreshes: AtomicU32::new(0),
            rejected: Mutex::new(Vec::new()),
        })
    }
    pub fn refreshes(&self) -> u32 {
        self.refreshes.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl TokenProvider for TestTokens {
    async fn access_token(&self) -> Result<SecretString, Error> {
        Ok(SecretString::from(self.current.lock().unwrap().clone()))
    }
    async fn refresh_after_unauthorized(
        &self,
        rejected: &SecretString,
    ) -> Result<SecretString, Error> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        self.rejected
            .lock()
            .unwrap()
            .push(rejected.expose_secret().to_owned());
        let mut cur = self.current.lock().unwrap();
        *cur = self.next.clone();
        Ok(SecretString::from(cur.clone()))
    }
}

/// A provider whose refresh reports a dead grant.
pub struct DeadGrant;

#[async_trait::async_trait]
impl TokenProvider for DeadGrant {
    async fn access_token(&self) -> Result<SecretString, Error> {
        Ok(SecretString::from("tok"))
    }
    async fn refresh_after_unauthorized(&self, _: &SecretString) -> Result<SecretString, Error> {
        Err(Error::TokenSource {
            reason: "grant revoked".into(),
            class: ErrorClass::Reauth,
        })
    }
}
