//! AWS Signature Version 4: verifying the `Authorization: AWS4-HMAC-SHA256 ...` header of a
//! control-plane request against the configured credentials, with the canonicalisation and
//! signing core shared with the signers ([`fleetcore_core::sigv4`], re-exported here for the
//! CLI). An `x-amz-content-sha256` header must match the SHA-256 of the body.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

pub use fleetcore_core::sigv4::{
    ALGORITHM, CredentialScope, Credentials, HmacSha256, SignedRequest, SigningError, TERMINATOR,
    canonical_query, canonical_request, canonical_uri, format_amz_date, hex, hmac, parse_amz_date,
    parse_http_date, sign, sign_hashed, signing_key, string_to_sign, unhex,
};

use crate::error::{ApiError, Protocol};

/// How far the request's time may be from the server's, either way (AWS: 15 minutes).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Why a request's signature was not accepted. Each variant maps to the error AWS answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// No `Authorization` header: `MissingAuthenticationTokenException`.
    #[error("Missing Authentication Token")]
    Missing,
    /// The header is there but malformed: `IncompleteSignatureException`.
    #[error("{0}")]
    Incomplete(String),
    /// The access key id is not ours: `UnrecognizedClientException`.
    #[error("The security token included in the request is invalid.")]
    UnknownAccessKey,
    /// The request time is more than [`MAX_CLOCK_SKEW`] away: `InvalidSignatureException`.
    #[error("{0}")]
    Expired(String),
    /// The scope names another date or region, or the body hash header is wrong:
    /// `InvalidSignatureException`.
    #[error("{0}")]
    InvalidScope(String),
    /// The signature does not match: `InvalidSignatureException`. Carries what the server
    /// signed, as AWS reports it, so a client author can find the difference.
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\nThe Canonical String for this request should have been\n'{canonical_request}'\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n"
    )]
    SignatureMismatch {
        /// The canonical request the server computed.
        canonical_request: String,
        /// The string to sign the server computed.
        string_to_sign: String,
    },
}

impl SigV4Error {
    /// The AWS error code.
    pub fn code(&self) -> &'static str {
        match self {
            SigV4Error::Missing => "MissingAuthenticationTokenException",
            SigV4Error::Incomplete(_) => "IncompleteSignatureException",
            SigV4Error::UnknownAccessKey => "UnrecognizedClientException",
            SigV4Error::Expired(_)
            | SigV4Error::InvalidScope(_)
            | SigV4Error::SignatureMismatch { .. } => "InvalidSignatureException",
        }
    }

    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SigV4Error::Missing => "missing",
            SigV4Error::Incomplete(_) => "malformed",
            SigV4Error::UnknownAccessKey => "unknown_key",
            SigV4Error::Expired(_) => "expired",
            SigV4Error::InvalidScope(_) => "scope",
            SigV4Error::SignatureMismatch { .. } => "signature",
        }
    }

    /// The error response: 403 for REST-JSON services (as API Gateway-fronted AWS services
    /// answer), 400 for the RPC protocols (as Kinesis, Firehose and CloudWatch answer).
    pub fn into_api_error(self, protocol: Protocol) -> ApiError {
        let code = self.code();
        let error = ApiError::new(code, StatusCode::FORBIDDEN, self.to_string());
        match protocol {
            Protocol::RestJson => error,
            Protocol::Query => error.query(),
            protocol => ApiError {
                status: StatusCode::BAD_REQUEST,
                ..error.in_protocol(protocol)
            },
        }
    }
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id from `Credential`.
    pub access_key_id: String,
    /// The rest of `Credential`.
    pub scope: CredentialScope,
    /// Lower-case header names, in the order given.
    pub signed_headers: Vec<String>,
    /// The hex signature.
    pub signature: String,
}

impl Authorization {
    /// Parses the header value.
    pub fn parse(value: &str) -> Result<Authorization, SigV4Error> {
        let value = value.trim();
        let (algorithm, rest) = value
            .split_once(|c: char| c.is_ascii_whitespace())
            .unwrap_or((value, ""));
        if algorithm != ALGORITHM {
            return Err(SigV4Error::Incomplete(format!(
                "Unsupported AWS 'algorithm': '{algorithm}'. Sign requests with {ALGORITHM} (Signature Version 4)."
            )));
        }
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, val)) = part.split_once('=') else {
                return Err(SigV4Error::Incomplete(format!(
                    "Invalid key=value pair (missing equal-sign) in Authorization header: '{part}'"
                )));
            };
            match key.trim() {
                "Credential" => credential = Some(val.trim()),
                "SignedHeaders" => signed_headers = Some(val.trim()),
                "Signature" => signature = Some(val.trim()),
                _ => {}
            }
        }
        let mut missing = String::new();
        for (name, v) in [
            ("Credential", credential),
            ("Signature", signature),
            ("SignedHeaders", signed_headers),
        ] {
            if v.is_none_or(str::is_empty) {
                let _ = write!(
                    missing,
                    "Authorization header requires '{name}' parameter. "
                );
            }
        }
        let (Some(credential), Some(signed_headers), Some(signature)) =
            (credential, signed_headers, signature)
        else {
            return Err(SigV4Error::Incomplete(format!(
                "{missing}Authorization={value}"
            )));
        };
        if !missing.is_empty() {
            // present but empty
            return Err(SigV4Error::Incomplete(format!(
                "{missing}Authorization={value}"
            )));
        }
        let fields: Vec<&str> = credential.split('/').collect();
        let [access_key_id, date, region, service, terminator] = fields[..] else {
            return Err(SigV4Error::Incomplete(format!(
                "Credential must have the form <access key id>/<yyyymmdd>/<region>/<service>/{TERMINATOR}, not '{credential}'."
            )));
        };
        if terminator != TERMINATOR {
            return Err(SigV4Error::Incomplete(format!(
                "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{terminator}'."
            )));
        }
        if access_key_id.is_empty() || region.is_empty() || service.is_empty() {
            return Err(SigV4Error::Incomplete(format!(
                "Credential has an empty part: '{credential}'."
            )));
        }
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SigV4Error::Incomplete(format!(
                "Credential date must be yyyymmdd, not '{date}'."
            )));
        }
        Ok(Authorization {
            access_key_id: access_key_id.to_string(),
            scope: CredentialScope {
                date: date.to_string(),
                region: region.to_string(),
                service: service.to_string(),
            },
            signed_headers: signed_headers
                .split(';')
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            signature: signature.to_string(),
        })
    }
}

/// A request whose headers passed every check that does not need the body; finish with
/// [`Verifier::verify_body`].
#[derive(Debug, Clone)]
pub struct PendingVerification {
    authorization: Authorization,
    timestamp: String,
}

impl PendingVerification {
    /// The verified access key id and scope (final only once the body is verified).
    pub fn authorization(&self) -> &Authorization {
        &self.authorization
    }
}

/// Verifies signatures against one access key pair.
#[derive(Debug, Clone)]
pub struct Verifier {
    credentials: Credentials,
    region: Option<String>,
    max_skew: Duration,
}

impl Verifier {
    /// A verifier for `credentials`, accepting any region in the scope.
    pub fn new(credentials: Credentials) -> Verifier {
        Verifier {
            credentials,
            region: None,
            max_skew: MAX_CLOCK_SKEW,
        }
    }

    /// Accepts only signatures scoped to `region`.
    pub fn with_region(mut self, region: impl Into<String>) -> Verifier {
        self.region = Some(region.into());
        self
    }

    /// The checks that need no body: header syntax, access key, scope date and region, clock
    /// skew. Cheap, so unauthenticated requests are refused before their body is read.
    pub fn check_headers(
        &self,
        request: SignedRequest<'_>,
        now: SystemTime,
    ) -> Result<PendingVerification, SigV4Error> {
        let headers = request.headers;
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            if query_has(request.query, "X-Amz-Signature") {
                return Err(SigV4Error::Incomplete(
                    "Presigned URLs (X-Amz-Signature in the query) are not supported; sign with the Authorization header."
                        .into(),
                ));
            }
            return Err(SigV4Error::Missing);
        };
        let value = value.to_str().map_err(|_| {
            SigV4Error::Incomplete("The Authorization header is not valid ASCII.".into())
        })?;
        let authorization = Authorization::parse(value)?;
        if authorization.access_key_id != self.credentials.access_key_id {
            return Err(SigV4Error::UnknownAccessKey);
        }
        // Over HTTP/2 the host is the `:authority` pseudo-header, which AWS accepts signed instead.
        if !authorization
            .signed_headers
            .iter()
            .any(|h| h == "host" || h == fleetcore_core::sigv4::AUTHORITY)
        {
            return Err(SigV4Error::Incomplete(
                "'Host' must be a 'SignedHeader' in the AWS Authorization.".into(),
            ));
        }
        let (time, timestamp, source) = request_time(headers)?;
        if authorization.scope.date != timestamp[..8] {
            return Err(SigV4Error::InvalidScope(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{source}'.",
                authorization.scope.date,
                &timestamp[..8]
            )));
        }
        if let Some(region) = &self.region
            && authorization.scope.region != *region
        {
            return Err(SigV4Error::InvalidScope(format!(
                "Credential should be scoped to a valid region, not '{}'. This server's region is '{region}'.",
                authorization.scope.region
            )));
        }
        let skew_minutes = self.max_skew.as_secs() / 60;
        if time + self.max_skew < now {
            return Err(SigV4Error::Expired(format!(
                "Signature expired: {timestamp} is now earlier than {} ({} - {skew_minutes} min.)",
                format_amz_date(now - self.max_skew),
                format_amz_date(now)
            )));
        }
        if time > now + self.max_skew {
            return Err(SigV4Error::Expired(format!(
                "Signature not yet current: {timestamp} is still later than {} ({} + {skew_minutes} min.)",
                format_amz_date(now + self.max_skew),
                format_amz_date(now)
            )));
        }
        Ok(PendingVerification {
            authorization,
            timestamp,
        })
    }

    /// Checks the signature itself over the request and its body.
    pub fn verify_body(
        &self,
        pending: &PendingVerification,
        request: SignedRequest<'_>,
        body: &[u8],
    ) -> Result<(), SigV4Error> {
        let auth = &pending.authorization;
        let payload_hash = hex(&Sha256::digest(body));
        if let Some(claimed) = request.headers.get("x-amz-content-sha256")
            && !claimed
                .as_bytes()
                .eq_ignore_ascii_case(payload_hash.as_bytes())
        {
            return Err(SigV4Error::InvalidScope(
                "The provided 'x-amz-content-sha256' header does not match what was computed."
                    .into(),
            ));
        }
        let canonical = canonical_request(request, &auth.signed_headers, &payload_hash)
            .map_err(|e| SigV4Error::InvalidScope(e.to_string()))?;
        let string_to_sign = string_to_sign(&pending.timestamp, &auth.scope, &canonical);
        let key = signing_key(&self.credentials.secret_access_key, &auth.scope);
        let mismatch = || SigV4Error::SignatureMismatch {
            canonical_request: canonical.clone(),
            string_to_sign: string_to_sign.clone(),
        };
        let provided = unhex(&auth.signature).ok_or_else(mismatch)?;
        let mut mac = HmacSha256::new_from_slice(&key).map_err(|_| mismatch())?;
        mac.update(string_to_sign.as_bytes());
        // Constant time: the comparison does not tell how many leading bytes were right.
        mac.verify_slice(&provided).map_err(|_| mismatch())
    }

    /// [`Verifier::check_headers`] then [`Verifier::verify_body`]; returns the verified
    /// authorization (access key and scope).
    pub fn verify(
        &self,
        request: SignedRequest<'_>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Authorization, SigV4Error> {
        let pending = self.check_headers(request, now)?;
        self.verify_body(&pending, request, body)?;
        Ok(pending.authorization)
    }
}

fn query_has(query: &str, name: &str) -> bool {
    query
        .split('&')
        .any(|p| p.split_once('=').map_or(p, |(k, _)| k) == name)
}

/// The request time from `x-amz-date` (ISO 8601 basic) or else `date` (RFC 7231), with its
/// `yyyymmddThhmmssZ` form and the header it came from.
fn request_time(headers: &HeaderMap) -> Result<(SystemTime, String, &'static str), SigV4Error> {
    if let Some(v) = headers.get("x-amz-date") {
        let text = v.to_str().unwrap_or("");
        let time = parse_amz_date(text).ok_or_else(|| {
            SigV4Error::Incomplete(format!(
                "Date must be in ISO-8601 'basic format'. Got '{text}'. See http://en.wikipedia.org/wiki/ISO_8601"
            ))
        })?;
        return Ok((time, format_amz_date(time), "x-amz-date"));
    }
    if let Some(v) = headers.get(axum::http::header::DATE) {
        let text = v.to_str().unwrap_or("");
        let time = parse_http_date(text).ok_or_else(|| {
            SigV4Error::Incomplete(format!(
                "The Date header must be an RFC 7231 date, e.g. 'Sun, 06 Nov 1994 08:49:37 GMT'. Got '{text}'."
            ))
        })?;
        return Ok((time, format_amz_date(time), "date"));
    }
    Err(SigV4Error::Incomplete(
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use axum::http::request::Parts;
    use axum::http::{HeaderName, HeaderValue};

    use super::*;

    /// The credentials, region and service of AWS's published Signature V4 test suite.
    fn suite_verifier() -> Verifier {
        Verifier::new(Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        })
        .with_region("us-east-1")
    }

    fn suite_time() -> SystemTime {
        parse_amz_date("20150830T123600Z").expect("date")
    }

    /// A raw request of the suite (`.sreq`): request line, headers, blank line, body. Kept as
    /// text because some paths (spaces, UTF-8) are not valid `http::Uri`s.
    struct RawRequest {
        method: String,
        path: String,
        query: String,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    fn parse_raw(text: &str) -> RawRequest {
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let request_line = lines.next().expect("request line");
        let method_end = request_line.find(' ').expect("method");
        let target_end = request_line.rfind(" HTTP/").expect("version");
        let target = &request_line[method_end + 1..target_end];
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut headers = HeaderMap::new();
        for line in lines {
            let (name, value) = line.split_once(':').expect("header");
            headers.append(
                HeaderName::from_bytes(name.trim().as_bytes()).expect("name"),
                HeaderValue::from_bytes(value.trim().as_bytes()).expect("value"),
            );
        }
        RawRequest {
            method: request_line[..method_end].to_string(),
            path: path.to_string(),
            query: query.to_string(),
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    impl RawRequest {
        fn view(&self) -> SignedRequest<'_> {
            SignedRequest {
                method: &self.method,
                path: &self.path,
                query: &self.query,
                headers: &self.headers,
                authority: None,
            }
        }
    }

    const AUTH_PREFIX: &str =
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, ";

    /// (name, request without Authorization, signed headers, signature) from AWS's Signature
    /// Version 4 test suite (the `.sreq` and `.authz` files).
    const SUITE: &[(&str, &str, &str, &str)] = &[
        (
            "get-vanilla",
            "GET / HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            "host;x-amz-date",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "get-vanilla-query-order-key-case",
            "GET /?Param2=value2&Param1=value1 HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            "host;x-amz-date",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        (
            "get-vanilla-query-order-key",
            "GET /?Param1=value2&Param1=Value1 HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            "host;x-amz-date",
            "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1",
        ),
        (
            "get-vanilla-query-order-value",
            "GET /?Param1=value2&Param1=value1 HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            "host;x-amz-date",
            "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694",
        ),
        (
            "get-vanilla-empty-query-key",
            "GET /?Param1=value1 HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            "host;x-amz-date",
            "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb",
        ),
        (
            "get-vanilla-query-unreserved",
            "GET /?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            "host;x-amz-date",
            "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
        ),
        (
            "get-vanilla-utf8-query",
            "GET /?\u{1234}=bar HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            "host;x-amz-date",
            "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
        ),
        (
            "get-unreserved",
            "GET /-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            "host;x-amz-date",
            "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
        ),
        (
            "get-utf8",
            "GET /\u{1234} HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            "host;x-amz-date",
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        ),
        (
            "get-header-key-duplicate",
            "GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value2\nMy-Header1:value2\nMy-Header1:value1\nX-Amz-Date:20150830T123600Z",
            "host;my-header1;x-amz-date",
            "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
        ),
        (
            "get-header-value-order",
            "GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value4\nMy-Header1:value1\nMy-Header1:value3\nMy-Header1:value2\nX-Amz-Date:20150830T123600Z",
            "host;my-header1;x-amz-date",
            "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
        ),
        (
            "get-header-value-trim",
            "GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1: value1\nMy-Header2: \"a   b   c\"\nX-Amz-Date:20150830T123600Z",
            "host;my-header1;my-header2;x-amz-date",
            "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        ),
        (
            "post-vanilla",
            "POST / HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            "host;x-amz-date",
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        (
            "post-vanilla-empty-query-value",
            "POST /?Param1=value1 HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            "host;x-amz-date",
            "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
        ),
        (
            "post-header-key-sort",
            "POST / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value1\nX-Amz-Date:20150830T123600Z",
            "host;my-header1;x-amz-date",
            "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
        ),
        (
            "post-header-value-case",
            "POST / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:VALUE1\nX-Amz-Date:20150830T123600Z",
            "host;my-header1;x-amz-date",
            "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
        ),
        (
            "post-x-www-form-urlencoded",
            "POST / HTTP/1.1\nContent-Type:application/x-www-form-urlencoded\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z\n\nParam1=value1",
            "content-type;host;x-amz-date",
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
        ),
        (
            "post-x-www-form-urlencoded-parameters",
            "POST / HTTP/1.1\nContent-Type:application/x-www-form-urlencoded; charset=utf8\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z\n\nParam1=value1",
            "content-type;host;x-amz-date",
            "1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe",
        ),
        (
            "post-sts-header-before",
            "POST / HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z\nX-Amz-Security-Token:AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==",
            "host;x-amz-date;x-amz-security-token",
            "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead",
        ),
        // normalize-path/
        (
            "get-relative-relative",
            "GET /example1/example2/../.. HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            "host;x-amz-date",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "get-slash-dot-slash",
            "GET /./ HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            "host;x-amz-date",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "get-slash-pointless-dot",
            "GET /./example HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            "host;x-amz-date",
            "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5",
        ),
        (
            "get-slashes",
            "GET //example// HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            "host;x-amz-date",
            "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
        ),
        (
            "get-space",
            "GET /example space/ HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z",
            "host;x-amz-date",
            "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
        ),
    ];

    fn with_authorization(raw: &mut RawRequest, signed: &str, signature: &str) {
        let value = format!("{AUTH_PREFIX}SignedHeaders={signed}, Signature={signature}");
        raw.headers.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_str(&value).expect("value"),
        );
    }

    #[test]
    fn aws_test_suite_signatures_verify() {
        let verifier = suite_verifier();
        for (name, request, signed, signature) in SUITE {
            let mut raw = parse_raw(request);
            with_authorization(&mut raw, signed, signature);
            let body = raw.body.clone();
            let auth = verifier
                .verify(raw.view(), &body, suite_time())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(auth.scope.service, "service", "{name}");
        }
    }

    #[test]
    fn aws_test_suite_signatures_fail_when_anything_changes() {
        let verifier = suite_verifier();
        for (name, request, signed, signature) in SUITE {
            // a different signature
            let mut raw = parse_raw(request);
            let mut wrong = signature.to_string();
            wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
            with_authorization(&mut raw, signed, &wrong);
            let err = verifier
                .verify(raw.view(), &raw.body.clone(), suite_time())
                .expect_err(name);
            assert_eq!(err.code(), "InvalidSignatureException", "{name}");
            // the right signature over a different body
            let mut raw = parse_raw(request);
            with_authorization(&mut raw, signed, signature);
            let err = verifier
                .verify(raw.view(), b"tampered", suite_time())
                .expect_err(name);
            assert!(
                matches!(err, SigV4Error::SignatureMismatch { .. }),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn canonical_request_matches_the_suite_text() {
        // get-vanilla-query-order-key.creq and post-x-www-form-urlencoded-parameters.creq
        let raw = parse_raw(SUITE[2].1);
        let creq = canonical_request(
            raw.view(),
            &["host".into(), "x-amz-date".into()],
            &hex(&Sha256::digest(b"")),
        )
        .expect("creq");
        assert_eq!(
            creq,
            "GET\n/\nParam1=Value1&Param1=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let raw = parse_raw(SUITE[17].1);
        let creq = canonical_request(
            raw.view(),
            &["content-type".into(), "host".into(), "x-amz-date".into()],
            &hex(&Sha256::digest(&raw.body)),
        )
        .expect("creq");
        assert_eq!(
            creq,
            "POST\n/\n\ncontent-type:application/x-www-form-urlencoded; charset=utf8\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        );
    }

    /// Requests as boto3 1.42 (botocore 1.42.97) sent them, captured with a `before-send` hook
    /// (clock frozen at 2026-11-26T12:00:00Z): the percent-encoded topic label of iot-data
    /// Publish is signed encoded twice, the query as sent.
    #[test]
    fn verifies_requests_captured_from_boto3() {
        let verifier = Verifier::new(Credentials {
            access_key_id: "FCKIEXAMPLEEXAMPLE00".into(),
            secret_access_key: "fleetcoreExampleSecretKey0123456789abcd".into(),
        })
        .with_region("us-east-1");
        let now = parse_amz_date("20261126T120005Z").expect("date");
        let captured: &[(&str, &str, &str, &[u8], &str)] = &[
            (
                "POST",
                "/topics/devices%2Fd1%2Ftelemetry?qos=1",
                "iotdata",
                br#"{"t":21.5}"#,
                "f94464fe0f2e7ce59a8b41774aaf51c9efe7193916f88655a182624e42d4be13",
            ),
            (
                "GET",
                "/endpoint?endpointType=iot%3AData-ATS",
                "iot",
                b"",
                "06c3786fcfd050f1ccaa0f2be8c6aee9a3cf556a205465753ee824aa8f27b656",
            ),
            (
                "GET",
                "/things?attributeName=a%20b&attributeValue=x%2Fy%2Bz&maxResults=5",
                "iot",
                b"",
                "025bee5c20c00901524e73a08ea57d0b47f49adf3407df6dafa05bdd45feda31",
            ),
        ];
        for (method, target, service, body, signature) in captured {
            let auth = format!(
                "AWS4-HMAC-SHA256 Credential=FCKIEXAMPLEEXAMPLE00/20261126/us-east-1/{service}/aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}"
            );
            let request = axum::http::Request::builder()
                .method(*method)
                .uri(*target)
                .header("host", "127.0.0.1:8080")
                .header("x-amz-date", "20261126T120000Z")
                .header("authorization", auth)
                .header("user-agent", "Boto3/1.42.97 Botocore/1.42.97")
                .header("content-length", body.len())
                .body(())
                .expect("request");
            let (parts, ()) = request.into_parts();
            let verified = verifier
                .verify(SignedRequest::from(&parts), body, now)
                .unwrap_or_else(|e| panic!("{target}: {e}"));
            assert_eq!(verified.scope.service, *service);
        }
        assert_eq!(
            canonical_uri("/topics/devices%2Fd1%2Ftelemetry"),
            "/topics/devices%252Fd1%252Ftelemetry"
        );
    }

    fn admin() -> Credentials {
        Credentials {
            access_key_id: "FCKI2345ABCDEFGHIJKL".into(),
            secret_access_key: "s3cr3t/with+chars".into(),
        }
    }

    fn signed_parts(
        method: &str,
        target: &str,
        body: &[u8],
        at: SystemTime,
        service: &str,
    ) -> Parts {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "x-amz-target",
            HeaderValue::from_static("Kinesis_20131202.ListStreams"),
        );
        sign(
            &admin(),
            "us-east-1",
            service,
            method,
            target,
            "127.0.0.1:8080",
            &mut headers,
            body,
            at,
        )
        .expect("sign");
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(target)
            .body(())
            .expect("request");
        *request.headers_mut() = headers;
        request.into_parts().0
    }

    /// A Kinesis PutRecord as the AWS SDK for JavaScript v3 (client-kinesis 3.1142) sends it over
    /// HTTP/2, its default for Kinesis: the host is the `:authority` pseudo-header (the URI's
    /// authority to the server, no `Host` header), and the SDK signs it under that name.
    #[test]
    fn an_http2_request_signed_with_its_authority_verifies() {
        let credentials = Credentials {
            access_key_id: "FCKITESTTESTTESTTEST".into(),
            secret_access_key: "test-secret".into(),
        };
        let verifier = Verifier::new(credentials).with_region("us-east-1");
        let body = br#"{"Data":"eA==","StreamName":"s","PartitionKey":"k"}"#;
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "Kinesis_20131202.PutRecord"),
            ("content-length", "51"),
            ("x-amz-user-agent", "aws-sdk-js/3.1142.0"),
            (
                "amz-sdk-invocation-id",
                "3f710d15-9425-44f3-9e90-77d8486939ec",
            ),
            ("amz-sdk-request", "attempt=1; max=1"),
            ("x-amz-date", "20261207T125438Z"),
            (
                "x-amz-content-sha256",
                "c369021b7747cbd39f188c21a09c81b8da917c4244b8cccd90d2043f28d5da60",
            ),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=FCKITESTTESTTESTTEST/20261207/us-east-1/kinesis/aws4_request, \
                 SignedHeaders=:authority;amz-sdk-invocation-id;amz-sdk-request;content-length;\
                 content-type;x-amz-content-sha256;x-amz-date;x-amz-target;x-amz-user-agent, \
                 Signature=dba02c400befb774fc645e484e4503a38f33e95733d143d9b807914ad8b37a70",
            ),
        ];
        let parts = |uri: &str| {
            let mut request = axum::http::Request::builder()
                .method("POST")
                .version(axum::http::Version::HTTP_2)
                .uri(uri);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.body(()).expect("request").into_parts().0
        };
        let now = parse_amz_date("20261207T125440Z").expect("date");
        let sent = parts("http://127.0.0.1:22080/");
        let authorization = verifier
            .verify(SignedRequest::from(&sent), body, now)
            .expect("verified");
        assert_eq!(authorization.scope.service, "kinesis");
        // The same request for another authority is refused: the authority is signed.
        let moved = parts("http://127.0.0.1:22081/");
        assert!(matches!(
            verifier.verify(SignedRequest::from(&moved), body, now),
            Err(SigV4Error::SignatureMismatch { .. })
        ));
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let verifier = Verifier::new(admin()).with_region("us-east-1");
        let now = parse_amz_date("20261126T120000Z").expect("date");
        for (method, target, body) in [
            ("GET", "/things?maxResults=5&nextToken=a%2Bb%3D", &b""[..]),
            (
                "POST",
                "/topics/devices%2Fd1%2F%24x?qos=1",
                b"\x00\x01payload",
            ),
            ("PUT", "/things/t%201/principals", b"{}"),
            ("POST", "/", br#"{"Limit":10}"#),
        ] {
            let parts = signed_parts(method, target, body, now, "iot");
            let auth = verifier
                .verify(SignedRequest::from(&parts), body, now)
                .unwrap_or_else(|e| panic!("{target}: {e}"));
            assert_eq!(auth.scope.service, "iot");
            assert_eq!(auth.access_key_id, "FCKI2345ABCDEFGHIJKL");
            assert!(
                auth.signed_headers.contains(&"x-amz-target".to_string()),
                "{:?}",
                auth.signed_headers
            );
        }
    }

    #[test]
    fn refuses_missing_unknown_stale_and_tampered_requests() {
        let verifier = Verifier::new(admin()).with_region("us-east-1");
        let now = parse_amz_date("20261126T120000Z").expect("date");
        let body = br#"{"a":1}"#;

        let parts = axum::http::Request::builder()
            .uri("/endpoint")
            .header("host", "h")
            .body(())
            .expect("request")
            .into_parts()
            .0;
        let err = verifier
            .verify(SignedRequest::from(&parts), b"", now)
            .expect_err("unsigned");
        assert_eq!(err, SigV4Error::Missing);
        assert_eq!(err.code(), "MissingAuthenticationTokenException");

        let other = Credentials {
            access_key_id: "FCKIOTHER".into(),
            ..admin()
        };
        let err = Verifier::new(other)
            .verify(
                SignedRequest::from(&signed_parts("POST", "/x", body, now, "iot")),
                body,
                now,
            )
            .expect_err("unknown key");
        assert_eq!(err.code(), "UnrecognizedClientException");

        let wrong_secret = Credentials {
            secret_access_key: "nope".into(),
            ..admin()
        };
        let err = Verifier::new(wrong_secret)
            .verify(
                SignedRequest::from(&signed_parts("POST", "/x", body, now, "iot")),
                body,
                now,
            )
            .expect_err("wrong secret");
        assert!(matches!(err, SigV4Error::SignatureMismatch { .. }));
        assert!(err.to_string().starts_with(
            "The request signature we calculated does not match the signature you provided."
        ));

        let stale = now - Duration::from_secs(20 * 60);
        let err = verifier
            .verify(
                SignedRequest::from(&signed_parts("POST", "/x", body, stale, "iot")),
                body,
                now,
            )
            .expect_err("stale");
        assert_eq!(err.code(), "InvalidSignatureException");
        assert_eq!(
            err.to_string(),
            "Signature expired: 20261126T114000Z is now earlier than 20261126T114500Z (20261126T120000Z - 15 min.)"
        );
        let future = now + Duration::from_secs(16 * 60);
        let err = verifier
            .verify(
                SignedRequest::from(&signed_parts("POST", "/x", body, future, "iot")),
                body,
                now,
            )
            .expect_err("future");
        assert!(
            err.to_string().starts_with("Signature not yet current"),
            "{err}"
        );
        let within = now - Duration::from_secs(14 * 60);
        verifier
            .verify(
                SignedRequest::from(&signed_parts("POST", "/x", body, within, "iot")),
                body,
                now,
            )
            .expect("14 minutes old is fine");

        // a different method or path than was signed
        let mut parts = signed_parts("POST", "/x?a=1", body, now, "iot");
        parts.uri = "/x?a=2".parse().expect("uri");
        let err = verifier
            .verify(SignedRequest::from(&parts), body, now)
            .expect_err("query changed");
        assert!(matches!(err, SigV4Error::SignatureMismatch { .. }));
        let mut parts = signed_parts("POST", "/x", body, now, "iot");
        parts.method = axum::http::Method::PUT;
        assert!(
            verifier
                .verify(SignedRequest::from(&parts), body, now)
                .is_err()
        );
        // a signed header changed
        let mut parts = signed_parts("POST", "/x", body, now, "iot");
        parts.headers.insert(
            "x-amz-target",
            HeaderValue::from_static("Kinesis_20131202.DeleteStream"),
        );
        assert!(
            verifier
                .verify(SignedRequest::from(&parts), body, now)
                .is_err()
        );
        // a wrong payload hash header
        let mut parts = signed_parts("POST", "/x", body, now, "iot");
        parts.headers.insert(
            "x-amz-content-sha256",
            HeaderValue::from_static("UNSIGNED-PAYLOAD"),
        );
        assert_eq!(
            verifier
                .verify(SignedRequest::from(&parts), body, now)
                .expect_err("hash")
                .code(),
            "InvalidSignatureException"
        );
        // another region
        let err = Verifier::new(admin())
            .with_region("eu-west-1")
            .verify(
                SignedRequest::from(&signed_parts("POST", "/x", body, now, "iot")),
                body,
                now,
            )
            .expect_err("region");
        assert!(err.to_string().contains("eu-west-1"), "{err}");
    }

    #[test]
    fn malformed_authorization_headers_are_incomplete_signatures() {
        for value in [
            "Bearer abc",
            "AWS AKID:signature",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256 Credential=FCKI/20261126/us-east-1/iot/aws4_request",
            "AWS4-HMAC-SHA256 Credential=FCKI/20261126/us-east-1/iot/aws4_request, SignedHeaders=host, Signature",
            "AWS4-HMAC-SHA256 Credential=FCKI/20261126/us-east-1/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=FCKI/20261126/us-east-1/iot/aws5_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=FCKI/2026-11-26/us-east-1/iot/aws4_request, SignedHeaders=host, Signature=00",
        ] {
            let err = Authorization::parse(value).expect_err(value);
            assert_eq!(err.code(), "IncompleteSignatureException", "{value}");
        }
        let err = Authorization::parse(
            "AWS4-HMAC-SHA256 Credential=FCKI/20261126/us-east-1/iot/aws4_request",
        )
        .expect_err("missing parts");
        assert!(
            err.to_string()
                .contains("Authorization header requires 'Signature' parameter."),
            "{err}"
        );
        let ok = Authorization::parse(
            "AWS4-HMAC-SHA256 Credential=FCKI/20261126/us-east-1/iot/aws4_request,SignedHeaders=Host;X-Amz-Date,Signature=ab",
        )
        .expect("compact form");
        assert_eq!(ok.signed_headers, ["host", "x-amz-date"]);
        assert_eq!(ok.scope.region, "us-east-1");
    }

    #[test]
    fn the_date_header_is_accepted_when_there_is_no_x_amz_date() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "date",
            HeaderValue::from_static("Sun, 30 Aug 2015 12:36:00 GMT"),
        );
        let (time, stamp, source) = request_time(&headers).expect("date");
        assert_eq!((stamp.as_str(), source), ("20150830T123600Z", "date"));
        assert_eq!(time, suite_time());
        headers.insert("x-amz-date", HeaderValue::from_static("2015-08-30"));
        assert_eq!(
            request_time(&headers).expect_err("bad").code(),
            "IncompleteSignatureException"
        );
        assert!(request_time(&HeaderMap::new()).is_err());
    }

    #[test]
    fn dates_round_trip_through_the_civil_calendar() {
        for stamp in [
            "19700101T000000Z",
            "20000229T235959Z",
            "20150830T123600Z",
            "21000301T000000Z",
            "20261231T120000Z",
        ] {
            let t = parse_amz_date(stamp).expect(stamp);
            assert_eq!(format_amz_date(t), stamp);
        }
        assert_eq!(
            parse_amz_date("20150830T123600Z")
                .expect("date")
                .duration_since(UNIX_EPOCH)
                .expect("after epoch")
                .as_secs(),
            1_440_938_160
        );
        for bad in [
            "20151330T000000Z",
            "2015083T123600Z",
            "20150830 123600Z",
            "2015083xT12360Z",
        ] {
            assert!(parse_amz_date(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn canonical_uri_and_query_follow_the_sdks() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/a/b/"), "/a/b/");
        assert_eq!(canonical_uri("/a//b/./c/../d"), "/a/b/d");
        assert_eq!(canonical_uri("/%24LATEST"), "/%2524LATEST");
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("flag&x=a+b"), "flag=&x=a%2Bb");
        assert_eq!(canonical_query("k=%7e%2f%zz"), "k=~%2F%25zz");
    }

    #[test]
    fn auth_errors_take_the_protocol_shape() {
        let rest = SigV4Error::Missing.into_api_error(Protocol::RestJson);
        assert_eq!(rest.status, StatusCode::FORBIDDEN);
        assert_eq!(rest.code, "MissingAuthenticationTokenException");
        let json = SigV4Error::UnknownAccessKey.into_api_error(Protocol::Json11);
        assert_eq!(json.status, StatusCode::BAD_REQUEST);
        assert_eq!(json.protocol, Protocol::Json11);
    }
}
