//! `http`: POSTs the rule's output to a URL (a template) with the configured headers (their
//! values are templates). A 2xx answer is success, anything else a failure. Plain `http://`
//! only: this server has no TLS client for rule destinations yet, so an action with an
//! `https://` URL fails every message with that reason (the error action fires).

use std::time::Duration;

use async_trait::async_trait;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::{Action, Prepared, required_str};
use crate::sql::{SqlVersion, Template};

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The http action.
pub(super) struct Http {
    /// `[url, header values...]`.
    templates: Vec<Template>,
    header_names: Vec<String>,
}

/// Checks the URL of an http action: `http://host[:port]/...` (no TLS client yet).
fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Err(
            "http.url: https:// destinations are not supported yet (this server has no TLS client for rule actions); use http://"
                .into(),
        );
    }
    if !url.starts_with("http://") {
        return Err(format!("http.url must start with http://, not {url:?}"));
    }
    Ok(())
}

impl Http {
    pub(super) fn build(members: &Value, version: SqlVersion) -> Result<Http, String> {
        let url = required_str(members, "http", "url")?;
        check_url(url)?;
        let mut templates =
            vec![Template::compile(url, version).map_err(|e| format!("http.url: {e}"))?];
        let mut header_names = Vec::new();
        for header in members
            .get("headers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(key), Some(value)) = (
                header.get("key").and_then(Value::as_str),
                header.get("value").and_then(Value::as_str),
            ) else {
                return Err("http.headers[] needs key and value".into());
            };
            header_names.push(key.to_string());
            templates
                .push(Template::compile(value, version).map_err(|e| format!("http.headers: {e}"))?);
        }
        Ok(Http {
            templates,
            header_names,
        })
    }

    async fn post(&self, item: &Prepared) -> Result<(), String> {
        let url: hyper::Uri = item
            .params
            .first()
            .map_or("", String::as_str)
            .parse()
            .map_err(|e| format!("invalid URL: {e}"))?;
        if url.scheme_str() != Some("http") {
            return Err(format!("{url} is not an http:// URL"));
        }
        let host = url.host().ok_or("the URL has no host")?.to_string();
        let port = url.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {host}:{port}: {e}"))?;
        let driver = tokio::spawn(connection);
        let authority = url
            .authority()
            .map_or(host.clone(), |a| a.as_str().to_string());
        let mut request = Request::post(url.path_and_query().map_or("/", |p| p.as_str()))
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in self.header_names.iter().zip(&item.params[1..]) {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(item.body.clone()))
            .map_err(|e| format!("building the request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = response.status();
        // Read the answer so the connection ends cleanly; its content does not matter.
        let _ = response.into_body().collect().await.map(|b| b.to_bytes());
        driver.abort();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("POST {url} answered {status}"))
        }
    }
}

#[async_trait]
impl Action for Http {
    fn name(&self) -> &'static str {
        "HttpAction"
    }

    fn resource(&self, params: &[String]) -> String {
        params.first().cloned().unwrap_or_default()
    }

    fn templates(&self) -> &[Template] {
        &self.templates
    }

    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            outcomes.push(
                match tokio::time::timeout(REQUEST_TIMEOUT, self.post(item)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
                },
            );
        }
        outcomes
    }
}
