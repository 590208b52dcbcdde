//! `http` and `https`: POSTs the JSON envelope (or, with `RawMessageDelivery`, the bare
//! message) with SNS's headers (`x-amz-sns-message-type`, `-message-id`, `-topic-arn`,
//! `-subscription-arn`, `-rawdelivery`) over a pooled reqwest client (rustls with ring, the
//! system's roots plus the configured CA file, keep-alive, 15 s per request, no redirects, no
//! proxy from the environment). 2xx is delivered; no answer, 429 and 5xx are retried; any
//! other status is a permanent failure.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{CONTENT_TYPE, USER_AGENT};

use super::{Built, Context, Failure, Outgoing, ProtocolKind, Targets, Transport};
use crate::message::confirmation;
use crate::model::Subscription;

/// The `http` protocol.
pub(super) const HTTP: ProtocolKind = ProtocolKind {
    name: "http",
    needs_confirmation: true,
    check_endpoint: check_http,
    build,
    unavailable: "",
};

/// The `https` protocol.
pub(super) const HTTPS: ProtocolKind = ProtocolKind {
    name: "https",
    needs_confirmation: true,
    check_endpoint: check_https,
    build,
    unavailable: "",
};

fn check_http(endpoint: &str) -> Result<(), String> {
    check_url(endpoint, "http")
}

fn check_https(endpoint: &str) -> Result<(), String> {
    check_url(endpoint, "https")
}

fn check_url(endpoint: &str, scheme: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| format!("{endpoint:?}: {e}"))?;
    if url.scheme() != scheme {
        return Err(format!("{endpoint:?} is not an {scheme}:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{endpoint:?} has no host"));
    }
    Ok(())
}

fn build(targets: &Targets) -> Built {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(true)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true);
    if let Some(path) = &targets.https_ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("reading the HTTPS CA file {}: {e}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("the HTTPS CA file {}: {e}", path.display()))?;
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    let client = builder
        .build()
        .map_err(|e| format!("building the SNS HTTP client: {e}"))?;
    Ok(Some(Arc::new(Http { client })))
}

struct Http {
    client: reqwest::Client,
}

#[async_trait]
impl Transport for Http {
    async fn send(
        &self,
        subscription: &Subscription,
        outgoing: &Outgoing,
        context: &Context,
    ) -> Result<(), Failure> {
        let request = self
            .client
            .post(&subscription.endpoint)
            .header(CONTENT_TYPE, "text/plain; charset=UTF-8")
            .header(USER_AGENT, "Amazon Simple Notification Service Agent")
            .header("x-amz-sns-topic-arn", &subscription.topic_arn);
        let request = match outgoing {
            Outgoing::Confirmation => {
                let (message_id, envelope) = confirmation(
                    &subscription.topic_arn,
                    &subscription.token,
                    &context.signer,
                    &context.urls,
                );
                request
                    .header("x-amz-sns-message-type", "SubscriptionConfirmation")
                    .header("x-amz-sns-message-id", message_id)
                    .body(envelope.to_string())
            }
            Outgoing::Notification(published) => {
                let raw = subscription.raw();
                let body = if raw {
                    published.message_for(&subscription.protocol).to_string()
                } else {
                    published
                        .envelope(
                            &subscription.protocol,
                            &context.signer,
                            &context.urls,
                            &subscription.arn,
                            &subscription.token,
                        )
                        .to_string()
                };
                request
                    .header("x-amz-sns-message-type", "Notification")
                    .header("x-amz-sns-message-id", &published.message_id)
                    .header("x-amz-sns-subscription-arn", &subscription.arn)
                    .header("x-amz-sns-rawdelivery", if raw { "true" } else { "false" })
                    .body(body)
            }
        };
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Retry(describe(&subscription.endpoint, &e)))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.as_u16() == 429 || status.is_server_error() {
            Err(Failure::Retry(format!(
                "{}: HTTP {status}",
                subscription.endpoint
            )))
        } else {
            Err(Failure::Permanent(format!(
                "{}: HTTP {status}",
                subscription.endpoint
            )))
        }
    }
}

/// A request error with its cause chain (reqwest's own text says only "error sending request").
fn describe(url: &str, error: &reqwest::Error) -> String {
    format!(
        "POST {url}: {}",
        fleetcore_core::error_text::with_causes(error)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_match_their_scheme() {
        assert!(check_http("http://127.0.0.1:9/x").is_ok());
        assert!(check_http("https://h/x").is_err());
        assert!(check_https("https://h/x").is_ok());
        assert!(check_https("not a url").is_err());
    }
}
