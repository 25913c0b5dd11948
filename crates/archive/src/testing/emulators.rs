//! Clients for the object-store emulators CI starts: Azurite (`WXVAULT_TEST_AZURITE`) and the
//! GCS emulator (`WXVAULT_TEST_GCS`). Without the variable a test skips with one printed line;
//! with `WXVAULT_REQUIRE_AZURITE` / `WXVAULT_REQUIRE_GCS` set (CI) it fails instead.

use crate::StorageConfig;

/// Reads the endpoint of an emulator that CI starts from `var`; `None` (with one printed line)
/// when it is unset, unless `require` is set too (CI), which makes a missing emulator a failure.
fn emulator_from_env(var: &str, require: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().trim_end_matches('/').to_owned()),
        _ if std::env::var_os(require).is_some() => {
            panic!("{require} is set but {var} is not: {what} must be running for this test")
        }
        _ => {
            eprintln!("{var} unset; {what} not available, skipping");
            None
        }
    }
}

/// A per-test bucket or container name.
pub fn unique_name(stem: &str) -> String {
    format!(
        "{stem}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// The Azurite blob service that CI starts (`WXVAULT_TEST_AZURITE`, the blob endpoint with the
/// account in the path, e.g. `http://127.0.0.1:10000/devstoreaccount1`).
#[derive(Debug, Clone)]
pub struct Azurite {
    endpoint: String,
}

impl Azurite {
    /// Azurite's built-in development account.
    pub const ACCOUNT: &'static str = "devstoreaccount1";
    /// The development account's key, published with Azurite (not a secret).
    pub const KEY: &'static str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    /// `None` when `WXVAULT_TEST_AZURITE` is unset (the test skips), unless
    /// `WXVAULT_REQUIRE_AZURITE` is set.
    ///
    /// # Panics
    /// When `WXVAULT_REQUIRE_AZURITE` is set and `WXVAULT_TEST_AZURITE` is not.
    pub fn from_env() -> Option<Azurite> {
        emulator_from_env("WXVAULT_TEST_AZURITE", "WXVAULT_REQUIRE_AZURITE", "Azurite")
            .map(|endpoint| Azurite { endpoint })
    }

    /// The blob endpoint, account included.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Creates a container (Create Container, signed with the account's shared key).
    ///
    /// # Panics
    /// When Azurite refuses or cannot be reached: a test environment problem.
    pub async fn create_container(&self, name: &str) {
        use base64::Engine as _;
        use hmac::{Hmac, Mac};
        let date = httpdate(std::time::SystemTime::now());
        let version = "2021-08-06";
        let url = url::Url::parse(&format!("{}/{name}?restype=container", self.endpoint))
            .expect("Azurite endpoint is a URL");
        // Shared Key string-to-sign: verb, eleven standard headers (all empty here), the
        // canonicalized x-ms- headers, then the canonicalized resource.
        let string_to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{}{}\nrestype:container",
            Self::ACCOUNT,
            url.path()
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(Self::KEY)
            .expect("account key is base64");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("hmac key");
        mac.update(string_to_sign.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let response = reqwest::Client::new()
            .put(url)
            .header("x-ms-date", date)
            .header("x-ms-version", version)
            .header("content-length", "0")
            .header(
                "authorization",
                format!("SharedKey {}:{signature}", Self::ACCOUNT),
            )
            .send()
            .await
            .expect("reach Azurite");
        let status = response.status();
        assert!(
            status.is_success(),
            "Azurite refused to create container {name}: {status} {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// A [`StorageConfig`] for `az://<container>[/<prefix>]` on this Azurite.
    pub fn storage_config(&self, container: &str, prefix: &str) -> StorageConfig {
        let prefix = prefix.trim_matches('/');
        let mut cfg = StorageConfig::new(if prefix.is_empty() {
            format!("az://{container}")
        } else {
            format!("az://{container}/{prefix}")
        });
        cfg.endpoint = Some(self.endpoint.clone());
        cfg.allow_http = true;
        cfg
    }

    /// Environment variables that give a `wxvault` process this Azurite's account.
    pub fn env(&self) -> [(&'static str, &'static str); 2] {
        [
            ("AZURE_STORAGE_ACCOUNT_NAME", Self::ACCOUNT),
            ("AZURE_STORAGE_ACCOUNT_KEY", Self::KEY),
        ]
    }
}

/// An RFC 7231 date (`Tue, 01 Dec 2026 13:05:01 GMT`).
fn httpdate(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.format(&format).expect("format HTTP date")
}

/// The GCS emulator that CI starts (`WXVAULT_TEST_GCS`, e.g. `http://127.0.0.1:4443`).
#[derive(Debug, Clone)]
pub struct Gcs {
    endpoint: String,
}

impl Gcs {
    /// `None` when `WXVAULT_TEST_GCS` is unset (the test skips), unless `WXVAULT_REQUIRE_GCS` is
    /// set.
    ///
    /// # Panics
    /// When `WXVAULT_REQUIRE_GCS` is set and `WXVAULT_TEST_GCS` is not.
    pub fn from_env() -> Option<Gcs> {
        emulator_from_env(
            "WXVAULT_TEST_GCS",
            "WXVAULT_REQUIRE_GCS",
            "the GCS emulator",
        )
        .map(|endpoint| Gcs { endpoint })
    }

    /// The emulator's base URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Creates a bucket through the JSON API.
    ///
    /// # Panics
    /// When the emulator refuses or cannot be reached.
    pub async fn create_bucket(&self, name: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/storage/v1/b?project=test", self.endpoint))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .expect("reach the GCS emulator");
        let status = response.status();
        assert!(
            status.is_success(),
            "the GCS emulator refused to create bucket {name}: {status} {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// Stores `bytes` at `name` in `bucket` through the JSON API's media upload (seeding objects
    /// for read-side tests).
    ///
    /// # Panics
    /// When the emulator refuses or cannot be reached.
    pub async fn seed(&self, bucket: &str, name: &str, bytes: Vec<u8>) {
        let response = reqwest::Client::new()
            .post(format!(
                "{}/upload/storage/v1/b/{bucket}/o?uploadType=media",
                self.endpoint
            ))
            .query(&[("name", name)])
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .expect("reach the GCS emulator");
        let status = response.status();
        assert!(
            status.is_success(),
            "the GCS emulator refused to store {name}: {status} {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// A [`StorageConfig`] for `gs://<bucket>[/<prefix>]` on this emulator.
    pub fn storage_config(&self, bucket: &str, prefix: &str) -> StorageConfig {
        let prefix = prefix.trim_matches('/');
        let mut cfg = StorageConfig::new(if prefix.is_empty() {
            format!("gs://{bucket}")
        } else {
            format!("gs://{bucket}/{prefix}")
        });
        cfg.endpoint = Some(self.endpoint.clone());
        cfg.allow_http = true;
        cfg
    }
}
