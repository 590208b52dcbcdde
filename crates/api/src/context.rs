//! What the dispatcher tells every service handler about the request it verified.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use fleetcore_core::{AccountContext, Arn};

use crate::error::{ApiError, Protocol};

/// The verified caller and the installation's region and account, inserted by the dispatcher
/// as a request extension. Handlers take it as an argument (`ctx: RequestContext`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The configured region (signatures scoped to another region are refused).
    pub region: String,
    /// The configured account id.
    pub account_id: String,
    /// The service the request was routed to: its signing name (`iot`, `iotdata`, `kinesis`).
    pub service: String,
    /// The id sent back in `x-amzn-RequestId`; put it in logs about this request.
    pub request_id: String,
    /// The wire protocol of the request, which decides the error shape.
    pub protocol: Protocol,
    /// The access key id that signed the request.
    pub access_key_id: String,
}

impl RequestContext {
    /// The region and account id as the capabilities take them.
    pub fn account(&self) -> AccountContext {
        AccountContext::new(&self.region, &self.account_id)
    }

    /// `arn:aws:iot:{region}:{account}:{resource}`.
    pub fn iot_arn(&self, resource: impl Into<String>) -> Arn {
        Arn::iot(&self.region, &self.account_id, resource)
    }

    /// An error in this request's protocol shape (JSON 1.1 services get `__type`, Query
    /// services an XML document carrying the request id).
    pub fn error(&self, error: ApiError) -> ApiError {
        match self.protocol {
            Protocol::RestJson => error,
            Protocol::Json11 => error.json11(),
            Protocol::Query => error
                .with_field("RequestId", self.request_id.as_str())
                .query(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .ok_or_else(|| {
                ApiError::internal("this route is not behind the control-plane dispatcher")
            })
    }
}

/// A new request id in the UUID text form AWS uses (random per process, unique per request).
pub fn new_request_id() -> String {
    static SEED: OnceLock<(u64, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (a, b) = *SEED.get_or_init(|| {
        let random = std::collections::hash_map::RandomState::new();
        let mut h1 = random.build_hasher();
        h1.write_u64(1);
        let mut h2 = random.build_hasher();
        h2.write_u64(2);
        (h1.finish(), h2.finish())
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let hi = mix(a ^ n);
    let lo = mix(b.wrapping_add(n));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0x0fff,
        ((lo >> 48) & 0x3fff) | 0x8000,
        lo & 0xffff_ffff_ffff
    )
}

/// SplitMix64's finaliser: spreads a counter over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_look_like_uuids_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn context_makes_arns_and_shapes_errors() {
        let ctx = RequestContext {
            region: "eu-west-1".into(),
            account_id: "123456789012".into(),
            service: "kinesis".into(),
            request_id: new_request_id(),
            protocol: Protocol::Json11,
            access_key_id: "FCKI".into(),
        };
        assert_eq!(
            ctx.iot_arn("thing/t1").to_string(),
            "arn:aws:iot:eu-west-1:123456789012:thing/t1"
        );
        assert_eq!(
            ctx.account(),
            AccountContext::new("eu-west-1", "123456789012")
        );
        assert_eq!(
            ctx.error(ApiError::not_found("x")).protocol,
            Protocol::Json11
        );
    }
}
