//! The HTTPS client of the actions that call out (http, openSearch): one pooled client per
//! server, so connections (and their TLS sessions) are kept alive and reused across messages
//! and rules. TLS is rustls with the `ring` provider; the trust store is the system's roots
//! plus an optional configured CA file (a private CA, or a test CA). Only `https://` URLs are
//! accepted, as AWS IoT does. No proxy from the environment is used and redirects are not
//! followed: an answer other than 2xx is the destination's answer, and a failure.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetcore_core::sigv4::Credentials;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

/// How the HTTPS client of rule actions connects.
#[derive(Debug, Clone)]
pub struct HttpsConfig {
    /// A PEM file of CA certificates trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// How long one request may take, connecting included.
    pub request_timeout: Duration,
    /// The credentials requests of actions with `auth.sigv4` are signed with (the server's
    /// admin credentials); such actions fail without them.
    pub signing_credentials: Option<Arc<Credentials>>,
    /// Requests one action has in flight at once (each on its own pooled connection over
    /// HTTP/1.1; streams of one connection when the endpoint offers HTTP/2).
    pub max_concurrent_requests: usize,
}

impl Default for HttpsConfig {
    fn default() -> HttpsConfig {
        HttpsConfig {
            ca_file: None,
            signing_credentials: None,
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 64,
        }
    }
}

/// Why the HTTPS client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// The CA file could not be read.
    #[error("reading the rules HTTPS CA file {path}: {source}")]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("the rules HTTPS CA file {path} holds no PEM certificate: {message}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The TLS client could not be set up.
    #[error("building the rules HTTPS client: {0}")]
    Build(String),
}

/// One answer: status and body.
pub(crate) struct Answer {
    /// The HTTP status.
    pub status: reqwest::StatusCode,
    /// The body, read whole.
    pub body: Bytes,
}

/// The pooled HTTPS client of rule actions. Cheap to clone: clones share the pool.
#[derive(Debug, Clone)]
pub struct HttpsClient {
    client: reqwest::Client,
    signing_credentials: Option<Arc<Credentials>>,
    max_concurrent_requests: usize,
}

impl HttpsClient {
    /// Builds the client: system roots plus the configured CA, keep-alive pooling.
    pub fn new(config: &HttpsConfig) -> Result<HttpsClient, HttpsError> {
        let max_concurrent_requests = config.max_concurrent_requests.max(1);
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(true)
            .https_only(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout)
            .pool_max_idle_per_host(max_concurrent_requests)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|source| HttpsError::ReadCa {
                path: path.clone(),
                source,
            })?;
            let certificates =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| HttpsError::BadCa {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            if certificates.is_empty() {
                return Err(HttpsError::BadCa {
                    path: path.clone(),
                    message: "no certificate found".into(),
                });
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder
            .build()
            .map_err(|e| HttpsError::Build(e.to_string()))?;
        Ok(HttpsClient {
            client,
            signing_credentials: config.signing_credentials.clone(),
            max_concurrent_requests,
        })
    }

    /// POSTs `body` to `url` (checked by [`check_https`]) with `headers`; the answer, or why
    /// there is none.
    pub(crate) async fn post(
        &self,
        url: reqwest::Url,
        content_type: &'static str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, String> {
        self.send(post_request(url, content_type, headers, body))
            .await
    }

    /// Sends a request made by [`post_request`] (and perhaps signed since); the answer, or why
    /// there is none.
    pub(crate) async fn send(&self, request: reqwest::Request) -> Result<Answer, String> {
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| describe(&e))?;
        Ok(Answer { status, body })
    }

    /// The credentials to sign requests with, if the server gave any.
    pub(crate) fn signing_credentials(&self) -> Option<&Credentials> {
        self.signing_credentials.as_deref()
    }

    /// Requests one action may have in flight at once.
    pub(crate) fn max_concurrent_requests(&self) -> usize {
        self.max_concurrent_requests
    }
}

/// A POST of `body` to `url` with `headers` and the content type, ready to send.
pub(crate) fn post_request(
    url: reqwest::Url,
    content_type: &'static str,
    mut headers: HeaderMap,
    body: Bytes,
) -> reqwest::Request {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    let mut request = reqwest::Request::new(reqwest::Method::POST, url);
    *request.headers_mut() = headers;
    *request.body_mut() = Some(body.into());
    request
}

/// Refuses anything but an `https://` URL with a host.
pub(crate) fn check_https(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if parsed.scheme() != "https" {
        return Err(format!("{url:?} is not an https:// URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(parsed)
}

/// A header built from a name and a value given by the user.
pub(crate) fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid HTTP header name"))?;
    let value = HeaderValue::from_str(value)
        .map_err(|_| format!("the value of header {name} is not a valid HTTP header value"))?;
    Ok((name, value))
}

/// A request error with its cause chain (reqwest's own message alone says only "error
/// sending request").
fn describe(error: &reqwest::Error) -> String {
    let url = error.url().map_or("", reqwest::Url::as_str);
    if error.is_timeout() {
        format!("POST {url}: no answer in time")
    } else {
        format!(
            "POST {url}: {}",
            fleetcore_core::error_text::with_causes(error)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_with_a_host() {
        assert!(check_https("https://example.test/x").is_ok());
        assert!(check_https("http://example.test/x").is_err());
        assert!(check_https("ftp://example.test").is_err());
        assert!(check_https("not a url").is_err());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_refused() {
        let missing = HttpsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..HttpsConfig::default()
        };
        assert!(matches!(
            HttpsClient::new(&missing),
            Err(HttpsError::ReadCa { .. })
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let config = HttpsConfig {
            ca_file: Some(empty),
            ..HttpsConfig::default()
        };
        assert!(matches!(
            HttpsClient::new(&config),
            Err(HttpsError::BadCa { .. })
        ));
    }
}
