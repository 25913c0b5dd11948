//! Finding the unfinished S3 multipart uploads of one key, for an upload whose id a crash kept
//! from being recorded.
//!
//! A large upload's marker is written before the upload is created and rewritten with the
//! store's upload id right after (see `upload`). A process killed between the two leaves an
//! upload its marker cannot name; S3's `ListMultipartUploads` finds it by key, so the sweep can
//! abort it. object_store has no call for that listing, so this one request is built here,
//! signed by object_store's own SigV4 signer ([`AwsAuthorizer`]) with the store's credentials
//! and sent through object_store's HTTP client with the archive's client options.

use object_store::ClientOptions;
use object_store::aws::AwsCredentialProvider;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::path::Path;
use serde::Deserialize;
use std::time::SystemTime;

/// At most this many listing pages are read for one key (each holds up to 1,000 uploads; one
/// key has at most a few).
const MAX_PAGES: usize = 10;

/// What a listing found.
#[derive(Debug)]
pub(crate) enum Listing {
    /// The key's unfinished uploads.
    Found(Vec<Unfinished>),
    /// The store does not list unfinished uploads here: `AccessDenied` (the policy lacks
    /// `s3:ListBucketMultipartUploads`), or an S3-compatible store without the call
    /// (`NotImplemented`, `MethodNotAllowed`, `InvalidRequest`, `InvalidArgument`, 405, 501).
    /// Asking again will not help.
    Refused(String),
}

/// One unfinished upload.
#[derive(Debug)]
pub(crate) struct Unfinished {
    pub id: String,
    /// When the store created it, if it said so readably.
    pub initiated: Option<SystemTime>,
}

/// Lists a bucket's unfinished multipart uploads by key.
pub(crate) struct S3Uploads {
    client: HttpClient,
    bucket_endpoint: String,
    region: String,
    credentials: AwsCredentialProvider,
}

/// The parts of a `ListMultipartUploadsResult` used here.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListResult {
    #[serde(default, rename = "Upload")]
    uploads: Vec<Upload>,
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Upload {
    key: String,
    upload_id: String,
    initiated: Option<String>,
}

impl Upload {
    fn unfinished(self) -> Unfinished {
        let initiated = self.initiated.as_deref().and_then(|t| {
            time::OffsetDateTime::parse(t.trim(), &time::format_description::well_known::Rfc3339)
                .ok()
                .map(SystemTime::from)
        });
        Unfinished {
            id: self.upload_id,
            initiated,
        }
    }
}

fn generic(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3",
        source: source.into(),
    }
}

impl S3Uploads {
    /// The lister of the bucket `builder` is configured for, with `store`'s credentials. The
    /// bucket's address follows object_store's own rule (endpoint plus bucket, or the endpoint
    /// itself for virtual-hosted requests, or AWS's regional address). `None` for an S3
    /// Express directory bucket (`…--x-s3`), whose zonal endpoint and session credentials
    /// object_store keeps to itself.
    ///
    /// # Errors
    /// object_store's error when no HTTP client can be built from `options`.
    pub fn new(
        builder: &AmazonS3Builder,
        store: &AmazonS3,
        options: &ClientOptions,
    ) -> object_store::Result<Option<Self>> {
        let value = |key| builder.get_config_value(&key).filter(|v| !v.is_empty());
        let bucket = value(AmazonS3ConfigKey::Bucket).unwrap_or_default();
        if bucket.ends_with("--x-s3") {
            return Ok(None);
        }
        let region = value(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".to_owned());
        // object_store's reading of a boolean setting.
        let virtual_hosted = value(AmazonS3ConfigKey::VirtualHostedStyleRequest).is_some_and(|v| {
            ["true", "1", "yes", "on", "y"]
                .iter()
                .any(|t| v.trim().eq_ignore_ascii_case(t))
        });
        let bucket_endpoint = match (value(AmazonS3ConfigKey::Endpoint), virtual_hosted) {
            (Some(endpoint), true) => endpoint,
            (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        Ok(Some(S3Uploads {
            client: ReqwestConnector::default().connect(options)?,
            bucket_endpoint,
            region,
            credentials: store.credentials().clone(),
        }))
    }

    /// The unfinished uploads to exactly `key` (as the store sees it).
    ///
    /// # Errors
    /// object_store's error when the credentials cannot be had, the request fails, the store
    /// answers with an error status other than a refusal (see [`Listing::Refused`]), with an
    /// answer that is not a listing, or with more pages than one key can fill.
    pub async fn ids(&self, key: &Path) -> object_store::Result<Listing> {
        let mut found = Vec::new();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..MAX_PAGES {
            let page = match self.page(key, markers.as_ref()).await? {
                Page::Listed(page) => page,
                Page::Refused(why) => return Ok(Listing::Refused(why)),
            };
            found.extend(
                page.uploads
                    .into_iter()
                    .filter(|u| u.key == key.as_ref())
                    .map(Upload::unfinished),
            );
            if !page.is_truncated {
                return Ok(Listing::Found(found));
            }
            match (page.next_key_marker, page.next_upload_id_marker) {
                (Some(k), Some(u)) => markers = Some((k, u)),
                _ => return Err(generic("a truncated listing without markers to go on")),
            }
        }
        Err(generic(format!(
            "more than {MAX_PAGES} pages of unfinished uploads for one key"
        )))
    }

    async fn page(
        &self,
        key: &Path,
        markers: Option<&(String, String)>,
    ) -> object_store::Result<Page> {
        let mut url = url::Url::parse(&self.bucket_endpoint)
            .map_err(|e| generic(format!("bucket address: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_key_only("uploads")
                .append_pair("prefix", key.as_ref());
            if let Some((key_marker, upload_marker)) = markers {
                query
                    .append_pair("key-marker", key_marker)
                    .append_pair("upload-id-marker", upload_marker);
            }
        }
        let mut request = http::Request::builder()
            .method(http::Method::GET)
            .uri(url.as_str())
            .body(HttpRequestBody::empty())
            .map_err(generic)?;
        let credential = self.credentials.get_credential().await?;
        AwsAuthorizer::new(&credential, "s3", &self.region).authorize(&mut request, None);
        let response = self.client.execute(request).await.map_err(generic)?;
        let status = response.status();
        let body = response.into_body().bytes().await.map_err(generic)?;
        let text = String::from_utf8_lossy(&body);
        if status.is_success() {
            return quick_xml::de::from_str(&text)
                .map(Page::Listed)
                .map_err(|e| generic(format!("listing of unfinished multipart uploads: {e}")));
        }
        // Only the error's code and message: an S3 error document may echo request details
        // (a session token's start, for one).
        let error: ErrorDocument = quick_xml::de::from_str(&text).unwrap_or_default();
        let why = format!(
            "{status} {} {}",
            error.code.as_deref().unwrap_or_default(),
            error.message.as_deref().unwrap_or_default()
        );
        let why = why.trim().to_owned();
        // A refusal that lasts: the permission is missing, or the store has no such call.
        // Anything else (an expired token, a timeout, a missing bucket) may pass.
        let lasting = matches!(
            error.code.as_deref(),
            Some(
                "AccessDenied"
                    | "NotImplemented"
                    | "MethodNotAllowed"
                    | "InvalidArgument"
                    | "InvalidRequest"
            )
        ) || matches!(status.as_u16(), 405 | 501);
        if lasting {
            Ok(Page::Refused(why))
        } else {
            Err(generic(format!(
                "listing unfinished multipart uploads answered {why}"
            )))
        }
    }
}

/// One answer to a listing request.
enum Page {
    Listed(ListResult),
    Refused(String),
}

/// The parts of an S3 error document used here.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorDocument {
    code: Option<String>,
    message: Option<String>,
}
