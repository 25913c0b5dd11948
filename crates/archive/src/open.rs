//! Opening a backend from a [`StorageConfig`]: `file://`, `s3://`, `gs://`, `az://`.
//!
//! Every cloud backend is an `object_store` client built from its cloud's environment
//! conventions (`from_env()`), with `endpoint` / `region` / `allow_http` from the configuration
//! on top for S3-compatible stores and emulators. Messages never carry credentials: a store's
//! own `Debug` may, so only a hand-built description is kept.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3CopyIfNotExists};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore};

use crate::config::{MAX_MULTIPART_THRESHOLD, MIN_MULTIPART_THRESHOLD};
use crate::s3_uploads::S3Uploads;
use crate::{ArchiveError, Sse, StorageConfig};

/// A backend ready for [`crate::Archive`].
pub(crate) struct Opened {
    /// The store, seen from the archive root (prefix applied).
    pub store: Arc<dyn ObjectStore>,
    /// Multipart uploads with an upload id that a marker can record (cloud stores).
    pub multipart: Option<Multipart>,
    /// `scheme://bucket/prefix (endpoint …)`, without credentials.
    pub description: String,
    /// Root folder of a `file://` archive.
    pub local_root: Option<PathBuf>,
}

/// The raw (unprefixed) multipart interface of a cloud store plus the archive's prefix.
#[derive(Clone)]
pub(crate) struct Multipart {
    pub store: Arc<dyn MultipartStore>,
    pub prefix: Option<Path>,
    /// The raw store of an Azure archive, whose uploads are aborted by committing an empty
    /// block list and deleting the blob (see `upload::abort_upload`); `None` elsewhere.
    pub azure_objects: Option<Arc<dyn ObjectStore>>,
    /// S3's listing of unfinished uploads, which finds an upload whose id its marker never
    /// received (see `sweep::upload_ids`); `None` elsewhere.
    pub s3_uploads: Option<Arc<S3Uploads>>,
}

impl Multipart {
    /// `path` (relative to the archive root) as the store sees it.
    pub fn full(&self, path: &Path) -> Path {
        match &self.prefix {
            Some(prefix) => prefix.parts().chain(path.parts()).collect(),
            None => path.clone(),
        }
    }
}

/// Explicit S3 credentials (config-provided credentials, tests).
pub(crate) struct Keys<'a> {
    pub access_key: &'a str,
    pub secret_key: &'a str,
}

pub(crate) fn check_threshold(cfg: &StorageConfig) -> Result<(), ArchiveError> {
    if !(MIN_MULTIPART_THRESHOLD..=MAX_MULTIPART_THRESHOLD).contains(&cfg.multipart_threshold) {
        return Err(ArchiveError::config(
            "multipart_threshold",
            format!(
                "{} bytes is outside {MIN_MULTIPART_THRESHOLD}..={MAX_MULTIPART_THRESHOLD} (1 MiB to 64 MiB)",
                cfg.multipart_threshold
            ),
        ));
    }
    if cfg.sse.is_some() && !cfg.url.trim().starts_with("s3://") {
        return Err(ArchiveError::config(
            "sse",
            "server-side encryption settings apply to s3:// archives only; remove `sse` \
             (Google Cloud Storage and Azure encrypt at rest by default)",
        ));
    }
    Ok(())
}

pub(crate) fn open_local(path: &FsPath) -> Result<Opened, ArchiveError> {
    if path.as_os_str().is_empty() {
        return Err(ArchiveError::config("url", "the archive path is empty"));
    }
    std::fs::create_dir_all(path).map_err(|e| {
        ArchiveError::config(
            "url",
            format!("cannot create archive folder {}: {e}", path.display()),
        )
    })?;
    let root: PathBuf = std::fs::canonicalize(path).map_err(|e| {
        ArchiveError::config(
            "url",
            format!("cannot resolve archive folder {}: {e}", path.display()),
        )
    })?;
    let store = LocalFileSystem::new_with_prefix(&root).map_err(|e| {
        ArchiveError::config(
            "url",
            format!("cannot use archive folder {}: {e}", root.display()),
        )
    })?;
    Ok(Opened {
        store: Arc::new(store),
        multipart: None,
        description: format!("file://{}", root.display()),
        local_root: Some(root),
    })
}

/// What the cloud would refuse in a GCS bucket or Azure container name, caught here so that a
/// misspelt name is one clear configuration error instead of a 400 answered to every request
/// (and retried as a store failure).
///
/// Azure containers: 3 to 63 lowercase letters, digits and single hyphens, starting and ending
/// with a letter or digit. GCS buckets: 3 to 63 lowercase letters, digits, `-`, `_` and `.`
/// (up to 222 with dots), starting and ending with a letter or digit; `_` is valid on GCS.
fn cloud_name_problem(scheme: &str, name: &str) -> Option<&'static str> {
    let max = match scheme {
        "az" => 63,
        "gs" if name.contains('.') => 222,
        "gs" => 63,
        _ => return None,
    };
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Some("uppercase letters are not allowed; use lowercase");
    }
    if scheme == "az" && name.contains(['_', '.']) {
        return Some("Azure container names allow only lowercase letters, digits and '-'");
    }
    if scheme == "az" && name.contains("--") {
        return Some("Azure container names cannot contain consecutive hyphens");
    }
    if name.len() < 3 || name.len() > max {
        return Some("the name must be 3 to 63 characters long");
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Some("the name must start and end with a letter or a digit");
    }
    None
}

/// Splits `bucket[/prefix]`, checking both.
fn bucket_and_prefix<'a>(
    scheme: &str,
    rest: &'a str,
) -> Result<(&'a str, Option<Path>), ArchiveError> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let word = if scheme == "az" {
        "container"
    } else {
        "bucket"
    };
    if bucket.is_empty()
        || !bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(ArchiveError::config(
            "url",
            format!(
                "invalid {word} name {bucket:?}; expected {scheme}://{}[/PREFIX]",
                word.to_uppercase()
            ),
        ));
    }
    if let Some(why) = cloud_name_problem(scheme, bucket) {
        return Err(ArchiveError::config(
            "url",
            format!("invalid {word} name {bucket:?}: {why}"),
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        return Ok((bucket, None));
    }
    let valid = Path::parse(prefix)
        .ok()
        .filter(|p| p.parts().all(|part| !part.as_ref().starts_with('.')));
    let path = valid.ok_or_else(|| {
        ArchiveError::config(
            "url",
            format!("invalid prefix {prefix:?}: no empty, '.' or '..' segments"),
        )
    })?;
    Ok((bucket, Some(path)))
}

/// The configured endpoint, checked against `allow_http`, and its display form (no userinfo,
/// no query).
fn endpoint(cfg: &StorageConfig) -> Result<Option<(String, String)>, ArchiveError> {
    let Some(endpoint) = cfg
        .endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    else {
        return Ok(None);
    };
    let mut parsed = url::Url::parse(endpoint).map_err(|e| {
        ArchiveError::config(
            "endpoint",
            format!("not a URL ({e}); expected e.g. https://s3.example.com"),
        )
    })?;
    match parsed.scheme() {
        "https" => {}
        "http" if cfg.allow_http => {}
        "http" => {
            return Err(ArchiveError::config(
                "endpoint",
                "plain-HTTP endpoint; set allow_http = true (local test stores only) or use https",
            ));
        }
        other => {
            return Err(ArchiveError::config(
                "endpoint",
                format!("unsupported scheme {other:?}; use https (or http with allow_http)"),
            ));
        }
    }
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    let shown = redact::redact_url(parsed.as_str().trim_end_matches('/'));
    Ok(Some((endpoint.trim_end_matches('/').to_owned(), shown)))
}

/// Wraps a built cloud store: prefix view for objects, raw store for multipart.
fn cloud<T: ObjectStore + MultipartStore>(
    store: T,
    scheme: &str,
    bucket: &str,
    prefix: Option<Path>,
    endpoint_shown: Option<String>,
) -> Opened {
    let store = Arc::new(store);
    let objects: Arc<dyn ObjectStore> = store.clone();
    let mut description = format!("{scheme}://{bucket}");
    let view: Arc<dyn ObjectStore> = match &prefix {
        Some(p) => {
            description.push('/');
            description.push_str(p.as_ref());
            Arc::new(PrefixStore::new(objects, p.clone()))
        }
        None => objects,
    };
    if let Some(endpoint) = endpoint_shown {
        description.push_str(&format!(" (endpoint {endpoint})"));
    }
    Opened {
        store: view,
        multipart: Some(Multipart {
            azure_objects: (scheme == "az").then(|| Arc::clone(&store) as Arc<dyn ObjectStore>),
            s3_uploads: None,
            store,
            prefix,
        }),
        description,
        local_root: None,
    }
}

/// HTTP client options for every cloud store. object_store's default 30 s per request would cap
/// a single put of up to the multipart threshold, an 8 MiB part or a server-side copy of a large
/// recording on a slow link; a request may take up to [`REQUEST_TIMEOUT`], while connecting
/// must still succeed within [`CONNECT_TIMEOUT`] so that an unreachable store fails fast.
fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(CONNECT_TIMEOUT)
}

/// Upper bound of one store request (a put, a part, a copy, a listing page).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Upper bound of establishing a connection to the store.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn build_error(what: &str, e: object_store::Error) -> ArchiveError {
    ArchiveError::config(what, redact::redact_urls_in(&e.to_string()))
}

pub(crate) fn open_s3(
    cfg: &StorageConfig,
    rest: &str,
    keys: Option<Keys<'_>>,
) -> Result<Opened, ArchiveError> {
    let (bucket, prefix) = bucket_and_prefix("s3", rest)?;
    let mut builder = match &keys {
        Some(k) => AmazonS3Builder::new()
            .with_access_key_id(k.access_key)
            .with_secret_access_key(k.secret_key),
        None => AmazonS3Builder::from_env(),
    };
    builder = builder
        .with_bucket_name(bucket)
        .with_client_options(client_options());
    let endpoint = endpoint(cfg)?;
    if let Some((url, _)) = &endpoint {
        builder = builder.with_endpoint(url);
    }
    if cfg.allow_http {
        builder = builder.with_allow_http(true);
    }
    if let Some(region) = cfg.region.as_deref().filter(|r| !r.is_empty()) {
        builder = builder.with_region(region);
    } else if keys.is_some()
        && let Some(region) = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|r| !r.is_empty()))
    {
        builder = builder.with_region(region);
    }
    // Native S3 (and stores that implement conditional writes) provide copy-if-not-exists
    // through a multipart copy completed with `If-None-Match: *`. An explicit
    // AWS_COPY_IF_NOT_EXISTS (e.g. R2's header mode) wins when credentials come from the
    // environment. Single puts use `If-None-Match: *` (object_store's default conditional put).
    if keys.is_some() || std::env::var_os("AWS_COPY_IF_NOT_EXISTS").is_none() {
        builder = builder.with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
    }
    match &cfg.sse {
        None => {}
        Some(Sse::S3) => {
            let sse: AmazonS3ConfigKey = "aws_server_side_encryption"
                .parse()
                .expect("object_store knows its SSE key");
            builder = builder.with_config(sse, "AES256");
        }
        Some(Sse::Kms { key_id }) => {
            if key_id.trim().is_empty() {
                return Err(ArchiveError::config(
                    "sse_kms_key_id",
                    "is empty; name the KMS key (id, ARN or alias) used with sse = \"kms\"",
                ));
            }
            builder = builder.with_sse_kms_encryption(key_id.trim());
        }
    }
    let s3 = builder.clone().build().map_err(|e| build_error("s3", e))?;
    let uploads = S3Uploads::new(
        &builder,
        &s3,
        &client_options().with_allow_http(cfg.allow_http),
    )
    .map_err(|e| build_error("s3", e))?;
    let mut opened = cloud(s3, "s3", bucket, prefix, endpoint.map(|e| e.1));
    if let Some(mp) = &mut opened.multipart {
        mp.s3_uploads = uploads.map(Arc::new);
    }
    Ok(opened)
}

pub(crate) fn open_gcs(cfg: &StorageConfig, rest: &str) -> Result<Opened, ArchiveError> {
    let (bucket, prefix) = bucket_and_prefix("gs", rest)?;
    let endpoint = endpoint(cfg)?;
    let builder = match &endpoint {
        None => GoogleCloudStorageBuilder::from_env(),
        // object_store takes a GCS base URL only from a service-account key. An emulator (plain
        // HTTP or a loopback address) gets one that also turns OAuth off: emulators accept any
        // or no token. Any other endpoint is a real GCS-compatible service and keeps OAuth: the
        // base URL goes into the service-account key from the environment.
        Some((url, _)) if is_emulator(url) => {
            let key = serde_json::json!({
                "private_key": "",
                "private_key_id": "",
                "client_email": "",
                "gcs_base_url": url,
                "disable_oauth": true,
            });
            GoogleCloudStorageBuilder::new().with_service_account_key(key.to_string())
        }
        Some((url, _)) => {
            let key = gcs_key_with_base_url(url)?;
            GoogleCloudStorageBuilder::from_env().with_service_account_key(key)
        }
    };
    let gcs = builder
        .with_bucket_name(bucket)
        // Plain HTTP (an emulator) only when the configuration allows it.
        .with_client_options(client_options().with_allow_http(cfg.allow_http))
        .build()
        .map_err(|e| build_error("gcs", e))?;
    Ok(cloud(gcs, "gs", bucket, prefix, endpoint.map(|e| e.1)))
}

pub(crate) fn open_azure(
    cfg: &StorageConfig,
    rest: &str,
    key: Option<(&str, &str)>,
) -> Result<Opened, ArchiveError> {
    let (container, prefix) = bucket_and_prefix("az", rest)?;
    let builder = match key {
        Some((account, key)) => MicrosoftAzureBuilder::new()
            .with_account(account)
            .with_access_key(key),
        None => MicrosoftAzureBuilder::from_env(),
    };
    let mut builder = builder
        .with_container_name(container)
        .with_client_options(client_options());
    let endpoint = endpoint(cfg)?;
    if let Some((url, _)) = &endpoint {
        builder = builder.with_endpoint(url.clone());
    }
    if cfg.allow_http {
        builder = builder.with_allow_http(true);
    }
    let azure = builder.build().map_err(|e| build_error("azure", e))?;
    Ok(cloud(azure, "az", container, prefix, endpoint.map(|e| e.1)))
}

/// A plain-HTTP endpoint or one on a loopback address: a local emulator, never a real cloud.
fn is_emulator(endpoint: &str) -> bool {
    let Ok(url) = url::Url::parse(endpoint) else {
        return false;
    };
    url.scheme() == "http"
        || match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        }
}

/// The service-account key from the environment (`GOOGLE_SERVICE_ACCOUNT_KEY`, or the file
/// named by `GOOGLE_SERVICE_ACCOUNT` / `GOOGLE_APPLICATION_CREDENTIALS`) with `gcs_base_url` set
/// to `endpoint`: the only way object_store accepts a GCS base URL with OAuth still on.
fn gcs_key_with_base_url(endpoint: &str) -> Result<String, ArchiveError> {
    let missing = || {
        ArchiveError::config(
            "endpoint",
            "a non-emulator gs:// endpoint needs a service-account key in \
             GOOGLE_SERVICE_ACCOUNT_KEY, or a key file named by GOOGLE_SERVICE_ACCOUNT or \
             GOOGLE_APPLICATION_CREDENTIALS; remove `endpoint` to use Google Cloud Storage itself",
        )
    };
    let text = match std::env::var("GOOGLE_SERVICE_ACCOUNT_KEY") {
        Ok(key) if !key.trim().is_empty() => key,
        _ => {
            let file = ["GOOGLE_SERVICE_ACCOUNT", "GOOGLE_APPLICATION_CREDENTIALS"]
                .iter()
                .find_map(|v| std::env::var_os(v).filter(|f| !f.is_empty()))
                .ok_or_else(missing)?;
            std::fs::read_to_string(&file).map_err(|e| {
                ArchiveError::config(
                    "endpoint",
                    format!(
                        "cannot read the service-account key file {}: {e}",
                        std::path::Path::new(&file).display()
                    ),
                )
            })?
        }
    };
    // Never echo the key's contents: only say that it is not a service-account key.
    let mut key: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .ok()
        .filter(|k: &serde_json::Map<String, serde_json::Value>| k.contains_key("private_key"))
        .ok_or_else(|| {
            ArchiveError::config(
                "endpoint",
                "the Google credentials found are not a service-account key (JSON with \
                 private_key); a non-emulator gs:// endpoint needs one",
            )
        })?;
    key.insert("gcs_base_url".into(), endpoint.into());
    Ok(serde_json::Value::Object(key).to_string())
}

pub(crate) fn check_scheme(url: &str) -> Result<(), ArchiveError> {
    Err(ArchiveError::config(
        "url",
        format!(
            "unsupported scheme in {:?}; use file://PATH, a bare path, s3://BUCKET/PREFIX, \
             gs://BUCKET/PREFIX or az://CONTAINER/PREFIX",
            redact::redact_url(url)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_names_the_clouds_would_refuse_are_config_errors() {
        for (url, bad) in [
            ("az://Archive", true),
            ("az://my_container", true),
            ("az://a--b", true),
            ("az://ab", true),
            ("az://-abc", true),
            ("az://recordings-2024", false),
            ("gs://Recordings", true),
            ("gs://rec_ordings", false),
            ("gs://rec.ordings.example.com", false),
            ("gs://abc-", true),
        ] {
            let cfg = StorageConfig::new(url);
            let opened = crate::Archive::open(&cfg);
            match opened {
                Err(ArchiveError::Config { what, detail }) if bad => {
                    assert_eq!(what, "url", "{url}: {detail}");
                    assert!(detail.contains("name"), "{url}: {detail}");
                }
                Err(ArchiveError::Config { detail, .. }) => {
                    assert!(
                        !detail.contains("invalid container name"),
                        "{url}: {detail}"
                    );
                    assert!(!detail.contains("invalid bucket name"), "{url}: {detail}");
                }
                Ok(_) => assert!(!bad, "{url} was accepted"),
                Err(other) => panic!("{url}: {other}"),
            }
        }
    }

    #[test]
    fn only_plain_http_or_loopback_gcs_endpoints_skip_oauth() {
        assert!(is_emulator("http://gcs.example.com:4443"));
        assert!(is_emulator("https://127.0.0.1:4443"));
        assert!(is_emulator("https://localhost:4443"));
        assert!(is_emulator("https://[::1]:4443"));
        assert!(!is_emulator("https://storage.example.com"));
        assert!(!is_emulator("https://10.0.0.5"));
    }

    #[test]
    fn cloud_clients_allow_long_writes_but_connect_fast() {
        assert!(REQUEST_TIMEOUT >= Duration::from_secs(600));
        assert!(CONNECT_TIMEOUT <= Duration::from_secs(30));
        // The options build into a client (the timeouts are accepted).
        let cfg = StorageConfig::new("s3://bucket/p");
        crate::Archive::open_s3_with_keys(&cfg, "k", "s").unwrap();
    }
}
