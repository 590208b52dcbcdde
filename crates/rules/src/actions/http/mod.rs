//! `http`: POSTs the rule's output to an `https://` URL (a template) with the configured
//! headers (their values are templates), through the server's pooled [`HttpsClient`]: the
//! lane keeps the client's concurrency of requests in flight, each on a kept-alive connection
//! (or an HTTP/2 stream), and refills a slot as soon as any answer comes. As on AWS, the URL
//! must start with the confirmation URL of an ENABLED topic rule destination. With
//! `auth.sigv4` each request is signed with Signature V4 (see [`SigV4Auth`]). A 2xx answer is
//! success; anything else, or no answer, a failure (retried, then the error action). With
//! `enableBatching` messages go out in batches, as JSON arrays (see [`batch`]).

mod batch;

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::join_all;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use self::batch::{BatchConfig, Batcher};
use super::https::{HttpsClient, check_https, header, post_request};
use super::sigv4_auth::SigV4Auth;
use super::{Action, ActionSpec, Destinations, Members, Pipelining, Prepared};
use crate::destinations::TopicRuleDestinations;
use crate::sql::Template;

/// Most headers an http action may set (AWS: 100).
const MAX_HEADERS: usize = 100;

/// The members of an http action.
pub(super) struct HttpSpec {
    /// `[url, header values...]`.
    templates: Vec<Template>,
    header_names: Vec<HeaderName>,
    auth: Option<SigV4Auth>,
    /// `enableBatching` with its `batchConfig` (then the last template is `${topic()}`).
    batching: Option<BatchConfig>,
}

/// The literal part of a URL template before its first `${`: what can be checked at create time.
fn literal_prefix(text: &str) -> &str {
    text.find("${").map_or(text, |i| &text[..i])
}

/// Checks what can be known of a (templated) URL at create time: `https://` and a host.
fn check_url_template(members: &Members<'_>, field: &str, text: &str) -> Result<(), String> {
    let prefix = literal_prefix(text);
    if !prefix.starts_with("https://") {
        return Err(format!(
            "http.{field} must be an https:// URL (AWS IoT sends only over TLS), not {text:?}"
        ));
    }
    if prefix.len() == text.len() {
        check_https(text).map_err(|e| format!("{}.{field}: {e}", members.kind()))?;
    }
    Ok(())
}

impl ActionSpec for HttpSpec {
    const KIND: &'static str = "http";

    fn parse(members: &Members<'_>) -> Result<HttpSpec, String> {
        let url = members.required_str("url")?;
        check_url_template(members, "url", url)?;
        if let Some(confirmation) = members.str("confirmationUrl")? {
            check_url_template(members, "confirmationUrl", confirmation)?;
            // AWS: the confirmation URL must be a prefix of the endpoint URL.
            if !url.starts_with(confirmation) {
                return Err(format!(
                    "http.confirmationUrl {confirmation:?} must be a prefix of http.url {url:?}"
                ));
            }
        }
        let auth = members.get("auth").map(SigV4Auth::parse).transpose()?;
        let batching = BatchConfig::parse(members)?;
        let mut templates = vec![members.compile("url", url)?];
        let mut header_names = Vec::new();
        let headers = match members.get("headers") {
            None => &[][..],
            Some(serde_json::Value::Array(headers)) => headers.as_slice(),
            Some(_) => return Err("http.headers must be a list of {key, value}".into()),
        };
        if headers.len() > MAX_HEADERS {
            return Err(format!("http.headers has more than {MAX_HEADERS} entries"));
        }
        for (i, entry) in headers.iter().enumerate() {
            let (Some(key), Some(value)) = (
                entry.get("key").and_then(serde_json::Value::as_str),
                entry.get("value").and_then(serde_json::Value::as_str),
            ) else {
                return Err(format!("http.headers[{i}] needs a string key and value"));
            };
            // The name is fixed; check it now (the value is checked once expanded).
            let (name, _) = header(key, "").map_err(|e| format!("http.headers[{i}]: {e}"))?;
            header_names.push(name);
            templates.push(members.compile(&format!("headers[{i}].value"), value)?);
        }
        if batching.is_some() {
            // A batch holds messages of one topic (unless batchAcrossTopics).
            templates.push(members.compile("url", "${topic()}")?);
        }
        Ok(HttpSpec {
            templates,
            header_names,
            auth,
            batching,
        })
    }

    fn start(self, destinations: &Destinations) -> Result<Arc<dyn Action>, String> {
        // A URL without substitutions is parsed and checked once, not per message.
        let fixed_url = match self.templates.first().and_then(Template::literal) {
            Some(url) => Some(check_https(url)?),
            None => None,
        };
        if self.auth.is_some() && destinations.https.signing_credentials().is_none() {
            return Err("http.auth.sigv4: this server has no credentials to sign with".into());
        }
        let batcher = self.batching.clone().map(|c| Arc::new(Batcher::new(c)));
        Ok(Arc::new(Http {
            sender: Arc::new(Sender {
                client: destinations.https.clone(),
                allowed: Arc::clone(&destinations.topic_rule_destinations),
                fixed_url,
                spec: self,
            }),
            batcher,
        }))
    }
}

/// The http action.
struct Http {
    sender: Arc<Sender>,
    /// The open batches, with `enableBatching`.
    batcher: Option<Arc<Batcher>>,
}

/// What POSTs one request of an http action.
struct Sender {
    client: HttpsClient,
    allowed: Arc<TopicRuleDestinations>,
    /// The URL, when its template has no substitution.
    fixed_url: Option<reqwest::Url>,
    spec: HttpSpec,
}

impl Sender {
    /// POSTs `body` with the expanded `params` (URL, then header values).
    async fn post(&self, params: &[String], body: Bytes) -> Result<(), String> {
        let url = params.first().map_or("", String::as_str);
        self.allowed.allows(url)?;
        let parsed = match &self.fixed_url {
            Some(fixed) => fixed.clone(),
            None => check_https(url)?,
        };
        let mut headers = HeaderMap::with_capacity(self.spec.header_names.len() + 1);
        for (name, value) in self
            .spec
            .header_names
            .iter()
            .zip(params.get(1..).unwrap_or(&[]))
        {
            let value = HeaderValue::from_str(value).map_err(|_| {
                format!("the value of header {name} is not a valid HTTP header value")
            })?;
            headers.append(name.clone(), value);
        }
        let mut request = post_request(parsed, "application/json", headers, body.clone());
        if let (Some(auth), Some(credentials)) =
            (&self.spec.auth, self.client.signing_credentials())
        {
            auth.sign(credentials, &mut request, &body, SystemTime::now())?;
        }
        let answer = self.client.send(request).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(format!("POST {url} answered {}", answer.status))
        }
    }
}

#[async_trait]
impl Action for Http {
    fn name(&self) -> &'static str {
        "HttpAction"
    }

    fn templates(&self) -> &[Template] {
        &self.sender.spec.templates
    }

    /// One request per call (batched: a batch's worth of messages per call), the client's
    /// concurrency in flight: the lane refills a slot as soon as any answer comes, in whatever
    /// order.
    fn pipelining(&self) -> Pipelining {
        Pipelining {
            batch: self.batcher.as_ref().map_or(1, |b| b.config().max_messages),
            in_flight: self.sender.client.max_concurrent_requests(),
        }
    }

    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
        match &self.batcher {
            Some(batcher) => batcher.deliver(&self.sender, items).await,
            None => {
                join_all(
                    items
                        .iter()
                        .map(|item| self.sender.post(&item.params, item.body.clone())),
                )
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sql::SqlVersion;

    fn parse(members: serde_json::Value) -> Result<HttpSpec, String> {
        HttpSpec::parse(&Members::new("http", &members, SqlVersion::V2016_03_23))
    }

    #[test]
    fn https_urls_with_templated_headers_parse() {
        let spec = parse(json!({
            "url": "https://example.test/in/${topic()}",
            "confirmationUrl": "https://example.test/",
            "headers": [{"key": "x-device", "value": "${clientid()}"}]
        }))
        .expect("valid");
        assert_eq!(spec.templates.len(), 2);
        assert_eq!(spec.header_names, ["x-device"]);
    }

    #[test]
    fn refusals_say_why() {
        for (members, why) in [
            (json!({"url": "http://example.test/"}), "https://"),
            (json!({"url": "${topic()}"}), "https://"),
            (json!({"url": "https://"}), "host"),
            (
                json!({"url": "https://a.test/x", "confirmationUrl": "https://b.test/"}),
                "prefix",
            ),
            (
                json!({"url": "https://a.test/", "headers": [{"key": "bad header", "value": "v"}]}),
                "header name",
            ),
            (
                json!({"url": "https://a.test/", "headers": [{"key": "k"}]}),
                "key and value",
            ),
            (
                json!({"url": "https://a.test/", "auth": {"sigv4": {}}}),
                "signingRegion",
            ),
            (json!({"url": "https://a.test/${"}), "http.url"),
        ] {
            let error = parse(members.clone()).err().unwrap_or_default();
            assert!(error.contains(why), "{members}: {error:?}");
        }
    }
}
