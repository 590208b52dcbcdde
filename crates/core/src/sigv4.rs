//! AWS Signature Version 4, the part shared by signers and verifiers: the canonical request,
//! the string to sign, the derived key and signing itself. The API's verifier
//! (`fleetcore_api::sigv4`) checks incoming requests with it; the CLI and the rules engine's
//! `http` action (with `auth.sigv4`) sign outgoing ones.
//!
//! The canonical request follows what the AWS SDKs do for every service fleetcore speaks (none
//! of them is S3): the path as received (already percent-encoded) is normalised (dot segments and
//! repeated slashes removed) and percent-encoded *again*, so `/topics/devices%2Fd1` is signed as
//! `/topics/devices%252Fd1`; the query is decoded and re-encoded per RFC 3986 and sorted by key,
//! then value; header values are trimmed with inner runs of spaces collapsed; the payload hash is
//! the SHA-256 of the body.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

/// Why a request could not be signed (or canonicalised).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// A header named in the signed headers is not in the request.
    #[error("The signed header '{0}' is missing from the request.")]
    MissingSignedHeader(String),
    /// A value the signature puts in a header is not a valid header value.
    #[error("`{0}` is not a valid header value")]
    InvalidHeaderValue(String),
}

/// The signing algorithm.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The HTTP/2 pseudo-header naming the request's authority, which a signature may cover in
/// place of `host`.
pub const AUTHORITY: &str = ":authority";

/// The last component of every credential scope.
pub const TERMINATOR: &str = "aws4_request";

/// Headers a signer leaves out (hop-by-hop, or changed by proxies and HTTP clients), as botocore.
const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
];

/// HMAC with SHA-256, the MAC of Signature V4.
pub type HmacSha256 = Hmac<Sha256>;

/// An access key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key id (sent in the clear in every request).
    pub access_key_id: String,
    /// The secret access key (never sent).
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The credential scope of a signature: `<date>/<region>/<service>/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialScope {
    /// `yyyymmdd`.
    pub date: String,
    /// The region the client signed for.
    pub region: String,
    /// The signing name of the service, e.g. `iot`, `iotdata`, `kinesis`.
    pub service: String,
}

impl CredentialScope {
    /// `<date>/<region>/<service>/aws4_request`.
    pub fn to_scope_string(&self) -> String {
        format!(
            "{}/{}/{}/{TERMINATOR}",
            self.date, self.region, self.service
        )
    }
}

/// The parts of an HTTP request that a signature covers, as they came over the wire: `path`
/// and `query` still percent-encoded (never decoded before verification).
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The raw path, e.g. `/topics/devices%2Fd1`.
    pub path: &'a str,
    /// The raw query without `?` (empty when none).
    pub query: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The request target's authority (`host:port`): over HTTP/2 it comes as the `:authority`
    /// pseudo-header, not a `Host` header, and some SDKs (the JavaScript v3 Kinesis client)
    /// sign it under that name.
    pub authority: Option<&'a str>,
}

impl<'a> From<&'a http::request::Parts> for SignedRequest<'a> {
    fn from(parts: &'a http::request::Parts) -> SignedRequest<'a> {
        SignedRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            authority: parts.uri.authority().map(http::uri::Authority::as_str),
        }
    }
}

/// Signs a request: sets `x-amz-date`, `host` (from `host` when absent) and `authorization`.
/// Every header already present is signed except the hop-by-hop ones.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    credentials: &Credentials,
    region: &str,
    service: &str,
    method: &str,
    path_and_query: &str,
    host: &str,
    headers: &mut HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), SigningError> {
    let payload_hash = hex(&Sha256::digest(body));
    sign_hashed(
        credentials,
        region,
        service,
        method,
        path_and_query,
        host,
        headers,
        &payload_hash,
        now,
    )
}

/// [`sign`] for a body whose SHA-256 (lower-case hex) is `payload_hash`.
#[allow(clippy::too_many_arguments)]
pub fn sign_hashed(
    credentials: &Credentials,
    region: &str,
    service: &str,
    method: &str,
    path_and_query: &str,
    host: &str,
    headers: &mut HeaderMap,
    payload_hash: &str,
    now: SystemTime,
) -> Result<(), SigningError> {
    let header = |v: &str| {
        HeaderValue::from_str(v).map_err(|_| SigningError::InvalidHeaderValue(v.to_string()))
    };
    let timestamp = format_amz_date(now);
    headers.insert("x-amz-date", header(&timestamp)?);
    if !headers.contains_key(http::header::HOST) {
        headers.insert(http::header::HOST, header(host)?);
    }
    headers.remove(http::header::AUTHORIZATION);
    let mut signed: Vec<String> = headers
        .keys()
        .map(HeaderName::as_str)
        .filter(|n| !UNSIGNED_HEADERS.contains(n))
        .map(str::to_string)
        .collect();
    signed.sort();
    signed.dedup();
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let request = SignedRequest {
        method,
        path,
        query,
        headers,
        authority: None,
    };
    let scope = CredentialScope {
        date: timestamp[..8].to_string(),
        region: region.to_string(),
        service: service.to_string(),
    };
    let canonical = canonical_request(request, &signed, payload_hash)?;
    let to_sign = string_to_sign(&timestamp, &scope, &canonical);
    let key = signing_key(&credentials.secret_access_key, &scope);
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    let value = format!(
        "{ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={signature}",
        credentials.access_key_id,
        scope.to_scope_string(),
        signed.join(";")
    );
    headers.insert(http::header::AUTHORIZATION, header(&value)?);
    Ok(())
}

/// The canonical request: method, canonical URI, canonical query, canonical headers, signed
/// headers and payload hash, one per line.
pub fn canonical_request(
    request: SignedRequest<'_>,
    signed_headers: &[String],
    payload_hash: &str,
) -> Result<String, SigningError> {
    let mut out = String::with_capacity(256);
    out.push_str(request.method);
    out.push('\n');
    out.push_str(&canonical_uri(request.path));
    out.push('\n');
    out.push_str(&canonical_query(request.query));
    out.push('\n');
    for name in signed_headers {
        if name == AUTHORITY {
            // A pseudo-header is no `HeaderMap` entry; its value is the target's authority.
            let authority = request
                .authority
                .or_else(|| {
                    let host = request.headers.get(http::header::HOST)?;
                    host.to_str().ok()
                })
                .ok_or_else(|| SigningError::MissingSignedHeader(name.clone()))?;
            out.push_str(AUTHORITY);
            out.push(':');
            out.push_str(authority.trim());
            out.push('\n');
            continue;
        }
        let mut values = request.headers.get_all(name.as_str()).iter().peekable();
        if values.peek().is_none() {
            return Err(SigningError::MissingSignedHeader(name.clone()));
        }
        out.push_str(name);
        out.push(':');
        for (i, value) in values.enumerate() {
            if i > 0 {
                out.push(',');
            }
            let text = String::from_utf8_lossy(value.as_bytes());
            let mut words = text.split_ascii_whitespace();
            if let Some(first) = words.next() {
                out.push_str(first);
                for w in words {
                    out.push(' ');
                    out.push_str(w);
                }
            }
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    Ok(out)
}

/// The canonical URI: the raw path with dot segments and empty segments removed, then every
/// byte but unreserved characters and `/` percent-encoded (so `%2F` becomes `%252F`).
pub fn canonical_uri(raw_path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in raw_path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(raw_path.len() + 8);
    out.push('/');
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        uri_encode_into(&mut out, segment.as_bytes());
    }
    if raw_path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// The canonical query: each name and value percent-decoded then RFC 3986-encoded, sorted by
/// name then value, `name=value` joined with `&`.
pub fn canonical_query(raw_query: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let mut key = String::new();
            let mut value = String::new();
            uri_encode_into(&mut key, &percent_decode(k));
            uri_encode_into(&mut value, &percent_decode(v));
            (key, value)
        })
        .collect();
    pairs.sort();
    let mut out = String::with_capacity(raw_query.len() + 8);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// `AWS4-HMAC-SHA256\n<timestamp>\n<scope>\n<hex sha256 of the canonical request>`.
pub fn string_to_sign(timestamp: &str, scope: &CredentialScope, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{timestamp}\n{}\n{}",
        scope.to_scope_string(),
        hex(&Sha256::digest(canonical_request.as_bytes()))
    )
}

/// The key derived from the secret for one day, region and service.
pub fn signing_key(secret: &str, scope: &CredentialScope) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), scope.date.as_bytes());
    let k_region = hmac(&k_date, scope.region.as_bytes());
    let k_service = hmac(&k_region, scope.service.as_bytes());
    hmac(&k_service, TERMINATOR.as_bytes())
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Decodes hex (either case); `None` if it is not an even number of hex digits.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some((hex_value(pair[0])? << 4) | hex_value(pair[1])?))
        .collect()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn uri_encode_into(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(DIGITS[usize::from(b >> 4)] as char);
            out.push(DIGITS[usize::from(b & 0xf)] as char);
        }
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as it is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| hex_value(*b)),
                bytes.get(i + 2).and_then(|b| hex_value(*b)),
            )
        {
            out.push((h << 4) | l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// `yyyymmddThhmmssZ`.
pub fn format_amz_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Parses `yyyymmddThhmmssZ`.
pub fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    to_system_time(
        num(0..4)?,
        num(4..6)?,
        num(6..8)?,
        num(9..11)?,
        num(11..13)?,
        num(13..15)?,
    )
}

/// Parses an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let [_weekday, day, month, year, clock, "GMT"] = fields[..] else {
        return None;
    };
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let mut hms = clock.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, s) = (hms.next()??, hms.next()??, hms.next()??);
    to_system_time(year.parse().ok()?, month, day.parse().ok()?, h, mi, s)
}

fn to_system_time(y: i64, m: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<SystemTime> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (eras of 400 years, March-based years).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (m + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let d = day_of_year - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = year_of_era + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `get-vanilla` of AWS's published Signature V4 test suite.
    #[test]
    fn signs_the_suites_vanilla_get() {
        let credentials = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        };
        let now = parse_amz_date("20150830T123600Z").expect("date");
        let mut headers = HeaderMap::new();
        sign(
            &credentials,
            "us-east-1",
            "service",
            "GET",
            "/",
            "example.amazonaws.com",
            &mut headers,
            b"",
            now,
        )
        .expect("signed");
        assert_eq!(
            headers["authorization"],
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert_eq!(headers["x-amz-date"], "20150830T123600Z");
    }

    #[test]
    fn dates_round_trip() {
        let time = parse_amz_date("20240229T235959Z").expect("leap day");
        assert_eq!(format_amz_date(time), "20240229T235959Z");
        assert_eq!(parse_http_date("Thu, 29 Feb 2024 23:59:59 GMT"), Some(time));
        assert_eq!(parse_amz_date("2024-02-29T23:59:59Z"), None);
    }
}
