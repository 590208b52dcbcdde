//! `auth.sigv4` of the http action: each request is signed with Signature V4 as AWS IoT signs
//! it (`Authorization`, `X-Amz-Date` and `x-amz-content-sha256`), for the configured signing
//! region and service name. AWS signs with the role's temporary credentials; this server signs
//! with its admin credentials (the role ARN is checked and kept, as AWS's shape requires it).

use std::time::SystemTime;

use fleetcore_core::sigv4::{self, Credentials};
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `x-amz-content-sha256` header: the hex SHA-256 of the body, signed with the rest.
const CONTENT_SHA256: HeaderName = HeaderName::from_static("x-amz-content-sha256");

/// How requests of one http action are signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SigV4Auth {
    /// `signingRegion`.
    pub region: String,
    /// `serviceName`, e.g. `execute-api`.
    pub service: String,
    /// `roleArn`.
    pub role_arn: String,
}

impl SigV4Auth {
    /// Parses the value of `auth` (`{"sigv4": {"signingRegion", "serviceName", "roleArn"}}`).
    pub(super) fn parse(auth: &Value) -> Result<SigV4Auth, String> {
        let Some(sigv4) = auth.as_object().and_then(|a| {
            (a.len() == 1)
                .then(|| a.get("sigv4"))
                .flatten()
                .and_then(Value::as_object)
        }) else {
            return Err(
                "http.auth must be {\"sigv4\": {\"signingRegion\", \"serviceName\", \"roleArn\"}}"
                    .into(),
            );
        };
        let field = |name: &str| -> Result<String, String> {
            match sigv4.get(name).and_then(Value::as_str) {
                Some(text) if !text.trim().is_empty() => Ok(text.to_string()),
                _ => Err(format!(
                    "http.auth.sigv4.{name} is required (a non-empty string)"
                )),
            }
        };
        let auth = SigV4Auth {
            region: field("signingRegion")?,
            service: field("serviceName")?,
            role_arn: field("roleArn")?,
        };
        if !auth.role_arn.starts_with("arn:") || !auth.role_arn.contains(":role/") {
            return Err(format!(
                "http.auth.sigv4.roleArn {:?} is not an IAM role ARN",
                auth.role_arn
            ));
        }
        for (name, value) in [
            ("signingRegion", &auth.region),
            ("serviceName", &auth.service),
        ] {
            if !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return Err(format!(
                    "http.auth.sigv4.{name} {value:?} is not a valid name"
                ));
            }
        }
        Ok(auth)
    }

    /// Signs `request` (its body is `body`) with `credentials` at `now`.
    pub(super) fn sign(
        &self,
        credentials: &Credentials,
        request: &mut reqwest::Request,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), String> {
        let url = request.url();
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => return Err(format!("{url} has no host to sign")),
        };
        let path_and_query = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        let payload_hash = sigv4::hex(&Sha256::digest(body));
        let headers = request.headers_mut();
        headers.insert(
            CONTENT_SHA256,
            HeaderValue::from_str(&payload_hash).map_err(|e| e.to_string())?,
        );
        sigv4::sign_hashed(
            credentials,
            &self.region,
            &self.service,
            "POST",
            &path_and_query,
            &host,
            headers,
            &payload_hash,
            now,
        )
        .map_err(|e| format!("signing the request: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_aws_shape_parses_and_anything_else_is_refused_with_a_reason() {
        let ok = SigV4Auth::parse(&json!({"sigv4": {
            "signingRegion": "eu-west-1", "serviceName": "execute-api",
            "roleArn": "arn:aws:iam::123456789012:role/rules"}}))
        .expect("valid");
        assert_eq!(
            (ok.region.as_str(), ok.service.as_str()),
            ("eu-west-1", "execute-api")
        );
        for (auth, why) in [
            (json!({"basic": {}}), "sigv4"),
            (
                json!({"sigv4": {"serviceName": "s", "roleArn": "arn:aws:iam::1:role/r"}}),
                "signingRegion",
            ),
            (
                json!({"sigv4": {"signingRegion": "r", "roleArn": "arn:aws:iam::1:role/r"}}),
                "serviceName",
            ),
            (
                json!({"sigv4": {"signingRegion": "r", "serviceName": "s"}}),
                "roleArn",
            ),
            (
                json!({"sigv4": {"signingRegion": "r", "serviceName": "s", "roleArn": "role"}}),
                "IAM role",
            ),
            (
                json!({"sigv4": {"signingRegion": "r/x", "serviceName": "s", "roleArn": "arn:aws:iam::1:role/r"}}),
                "signingRegion",
            ),
        ] {
            let error = SigV4Auth::parse(&auth).expect_err("refused");
            assert!(error.contains(why), "{auth}: {error}");
        }
    }

    #[test]
    fn signing_adds_the_three_headers_over_host_and_body() {
        let auth = SigV4Auth {
            region: "eu-west-1".into(),
            service: "execute-api".into(),
            role_arn: "arn:aws:iam::1:role/r".into(),
        };
        let credentials = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "secret".into(),
        };
        let url = reqwest::Url::parse("https://api.test:8443/in?b=2&a=1").expect("url");
        let mut request = reqwest::Request::new(reqwest::Method::POST, url);
        let now = sigv4::parse_amz_date("20260101T000000Z").expect("date");
        auth.sign(&credentials, &mut request, b"{}", now)
            .expect("signed");
        let headers = request.headers();
        assert_eq!(headers["host"], "api.test:8443");
        assert_eq!(headers["x-amz-date"], "20260101T000000Z");
        assert_eq!(
            headers["x-amz-content-sha256"],
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        let authorization = headers["authorization"].to_str().expect("ascii");
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKID/20260101/eu-west-1/execute-api/aws4_request, \
                 SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="
            ),
            "{authorization}"
        );
    }
}
