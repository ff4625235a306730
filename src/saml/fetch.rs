//! Fetch: IdP metadata from `saml.idp_metadata_url` (at start-up and on every refresh) and the
//! backup file that keeps the last good copy for a start-up without the network.
//!
//! The client is the proxy's kind (hyper-util legacy + hyper-rustls, webpki roots, http or
//! https). Redirects are not followed; the body is capped at [`MAX_METADATA_BYTES`]; the whole
//! fetch is bounded by a timeout. Whether the XML is acceptable (S1, `validUntil`) is decided
//! by the caller, which builds a new `Saml` from it.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use super::{Saml, SetupError};
use crate::config::SamlConfig;

/// Largest metadata document accepted, in bytes (one IdP, a few certificates).
pub const MAX_METADATA_BYTES: usize = 5 * 1024 * 1024;
/// Time limit of one fetch (connect, headers and body).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Why metadata could not be fetched. The URL is never echoed (it may carry a token).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connection, TLS or protocol failure.
    #[error("metadata fetch failed: {0}")]
    Transport(String),
    /// No complete answer within the time limit.
    #[error("metadata fetch timed out after {0:?}")]
    Timeout(Duration),
    /// A status other than 200 (redirects are not followed).
    #[error("metadata URL answered HTTP {0}")]
    Status(u16),
    /// Larger than [`MAX_METADATA_BYTES`].
    #[error("metadata larger than {MAX_METADATA_BYTES} bytes")]
    TooLarge,
    /// Not UTF-8.
    #[error("metadata is not UTF-8")]
    Encoding,
}

/// Fetches the IdP metadata URL and keeps the backup file.
#[derive(Clone, Debug)]
pub struct MetadataFetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    url: Uri,
    backup_file: Option<PathBuf>,
    timeout: Duration,
}

impl MetadataFetcher {
    /// A fetcher for `url`, writing good copies to `backup_file`.
    pub fn new(url: Uri, backup_file: Option<PathBuf>) -> Self {
        // No pooling: one fetch an hour.
        let client =
            crate::outbound::webpki_client(Duration::from_secs(5), 0, Duration::from_secs(1));
        Self {
            client,
            url,
            backup_file,
            timeout: FETCH_TIMEOUT,
        }
    }

    /// GETs the metadata: 200 and at most [`MAX_METADATA_BYTES`] of UTF-8.
    pub async fn fetch(&self) -> Result<String, FetchError> {
        tokio::time::timeout(self.timeout, self.fetch_inner())
            .await
            .map_err(|_| FetchError::Timeout(self.timeout))?
    }

    async fn fetch_inner(&self) -> Result<String, FetchError> {
        let req = Request::get(self.url.clone())
            .header(
                header::ACCEPT,
                "application/samlmetadata+xml, application/xml;q=0.9, */*;q=0.1",
            )
            .body(Empty::new())
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| FetchError::Transport(crate::outbound::error_chain(&e)))?;
        if resp.status() != http::StatusCode::OK {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let body = Limited::new(resp.into_body(), MAX_METADATA_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    FetchError::TooLarge
                } else {
                    FetchError::Transport(e.to_string())
                }
            })?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| FetchError::Encoding)
    }

    /// The backup copy, when a backup file is configured and exists.
    pub fn read_backup(&self) -> Option<std::io::Result<String>> {
        let path = self.backup_file.as_deref()?;
        match std::fs::read_to_string(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            other => Some(other),
        }
    }

    /// Replaces the backup copy atomically (a temporary file renamed over it).
    pub fn write_backup(&self, xml: &str) -> std::io::Result<()> {
        let Some(path) = self.backup_file.as_deref() else {
            return Ok(());
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, xml)?;
        std::fs::rename(&tmp, path)
    }
}

/// The error and its sources on one line (hyper-util's top-level message is terse).
/// Why a metadata refresh left the metadata in force unchanged.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The URL could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The fetched metadata was refused (no signing certificate, expired, malformed...).
    #[error("fetched IdP metadata refused: {0}")]
    Refused(#[from] SetupError),
}

/// A `Saml` from freshly fetched metadata, refused when it has no signing certificate (S1),
/// no HTTP-Redirect SSO endpoint, or a `validUntil` at or before `now`.
pub fn build_checked(cfg: &SamlConfig, xml: &str, now: DateTime<Utc>) -> Result<Saml, SetupError> {
    let saml = Saml::from_config_with_metadata(cfg, xml)?;
    saml.idp().check_valid_at(now)?;
    Ok(saml)
}
