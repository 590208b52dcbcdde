//! Amazon Resource Names in the AWS form (`arn:aws:iot:{region}:{account}:{resource}`), so
//! clients that store, compare or parse ARNs work unchanged; and the region and account id
//! every capability stamps into the ARNs it hands out.

use std::fmt;
use std::str::FromStr;

/// The partition fleetcore writes into the ARNs it makes.
pub const PARTITION: &str = "aws";

/// The region and account id of this installation (configuration, not per request).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountContext {
    /// The region, e.g. `us-east-1`.
    pub region: String,
    /// The 12-digit account id, e.g. `000000000000`.
    pub account_id: String,
}

impl AccountContext {
    /// The context for `region` and `account_id`.
    pub fn new(region: impl Into<String>, account_id: impl Into<String>) -> AccountContext {
        AccountContext {
            region: region.into(),
            account_id: account_id.into(),
        }
    }

    /// The ARN of `resource` (e.g. `thing/sensor-1`) of `service` in this account and region.
    pub fn arn(&self, service: &str, resource: impl Into<String>) -> Arn {
        Arn::new(service, &self.region, &self.account_id, resource)
    }

    /// The ARN of an IoT resource, e.g. `iot_arn("thing/sensor-1")`.
    pub fn iot_arn(&self, resource: impl Into<String>) -> Arn {
        self.arn("iot", resource)
    }
}

/// An ARN: `arn:{partition}:{service}:{region}:{account_id}:{resource}`.
///
/// `resource` is kept as written (`thing/name`, `cert/abc`, `topic/a/b`, `all/registered-things`);
/// it may itself contain `:` and `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arn {
    /// `aws` for the ARNs fleetcore makes; parsing keeps whatever partition was given.
    pub partition: String,
    /// The service namespace, e.g. `iot`, `kinesis`.
    pub service: String,
    /// The region; empty for global resources.
    pub region: String,
    /// The account id; empty for resources without one.
    pub account_id: String,
    /// Everything after the fifth `:`.
    pub resource: String,
}

/// Why a string is not an ARN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArnError {
    /// It does not start with `arn:`.
    #[error("`{0}` is not an ARN: it must start with `arn:`")]
    NoPrefix(String),
    /// It has fewer than six `:`-separated parts.
    #[error("`{0}` is not an ARN: expected arn:partition:service:region:account-id:resource")]
    TooFewParts(String),
    /// A part that must not be empty is.
    #[error("`{arn}` is not an ARN: its {part} is empty")]
    EmptyPart {
        /// The text given.
        arn: String,
        /// Which part: `partition`, `service` or `resource`.
        part: &'static str,
    },
}

impl Arn {
    /// An ARN in the `aws` partition.
    pub fn new(service: &str, region: &str, account_id: &str, resource: impl Into<String>) -> Arn {
        Arn {
            partition: PARTITION.to_string(),
            service: service.to_string(),
            region: region.to_string(),
            account_id: account_id.to_string(),
            resource: resource.into(),
        }
    }

    /// An `iot` ARN: `arn:aws:iot:{region}:{account_id}:{resource}`.
    pub fn iot(region: &str, account_id: &str, resource: impl Into<String>) -> Arn {
        Arn::new("iot", region, account_id, resource)
    }

    /// Parses `arn:partition:service:region:account-id:resource`.
    pub fn parse(text: &str) -> Result<Arn, ArnError> {
        let rest = text
            .strip_prefix("arn:")
            .ok_or_else(|| ArnError::NoPrefix(text.to_string()))?;
        let mut parts = rest.splitn(5, ':');
        let mut next = || {
            parts
                .next()
                .ok_or_else(|| ArnError::TooFewParts(text.to_string()))
        };
        let (partition, service, region, account_id, resource) =
            (next()?, next()?, next()?, next()?, next()?);
        for (part, value) in [
            ("partition", partition),
            ("service", service),
            ("resource", resource),
        ] {
            if value.is_empty() {
                return Err(ArnError::EmptyPart {
                    arn: text.to_string(),
                    part,
                });
            }
        }
        Ok(Arn {
            partition: partition.to_string(),
            service: service.to_string(),
            region: region.to_string(),
            account_id: account_id.to_string(),
            resource: resource.to_string(),
        })
    }

    /// The resource type: the resource up to its first `/` or `:` (`thing` in `thing/t1`), or
    /// the whole resource when it has neither.
    pub fn resource_type(&self) -> &str {
        self.resource
            .split_once(['/', ':'])
            .map_or(self.resource.as_str(), |(kind, _)| kind)
    }

    /// The resource id: what follows the resource type and its separator (`t1` in `thing/t1`,
    /// `a/b` in `topic/a/b`); `None` when the resource has no separator.
    pub fn resource_id(&self) -> Option<&str> {
        self.resource.split_once(['/', ':']).map(|(_, id)| id)
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:{}:{}:{}:{}",
            self.partition, self.service, self.region, self.account_id, self.resource
        )
    }
}

impl FromStr for Arn {
    type Err = ArnError;

    fn from_str(s: &str) -> Result<Arn, ArnError> {
        Arn::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_the_aws_form() {
        let account = AccountContext::new("eu-west-1", "123456789012");
        assert_eq!(
            account.iot_arn("thing/sensor-1").to_string(),
            "arn:aws:iot:eu-west-1:123456789012:thing/sensor-1"
        );
        assert_eq!(
            Arn::iot("us-east-1", "000000000000", "all/registered-things").to_string(),
            "arn:aws:iot:us-east-1:000000000000:all/registered-things"
        );
        assert_eq!(
            account.arn("kinesis", "stream/telemetry").to_string(),
            "arn:aws:kinesis:eu-west-1:123456789012:stream/telemetry"
        );
    }

    #[test]
    fn parses_what_it_formats_and_keeps_colons_and_slashes_in_the_resource() {
        for text in [
            "arn:aws:iot:us-east-1:000000000000:thing/sensor-1",
            "arn:aws:iot:us-east-1:000000000000:topic/devices/d1/telemetry",
            "arn:aws:iot:us-east-1:000000000000:cert/0123abcd",
            "arn:aws:s3:::bucket/key:with:colons",
            "arn:aws-cn:iam::123456789012:role/ops",
        ] {
            let arn = Arn::parse(text).expect(text);
            assert_eq!(arn.to_string(), text);
            assert_eq!(text.parse::<Arn>().expect("from_str"), arn);
        }
        let arn = Arn::parse("arn:aws:iot:us-east-1:000000000000:topic/devices/d1/telemetry")
            .expect("parse");
        assert_eq!(
            (
                arn.service.as_str(),
                arn.region.as_str(),
                arn.account_id.as_str()
            ),
            ("iot", "us-east-1", "000000000000")
        );
        assert_eq!(arn.resource_type(), "topic");
        assert_eq!(arn.resource_id(), Some("devices/d1/telemetry"));
        let arn = Arn::parse("arn:aws:s3:::bucket").expect("parse");
        assert_eq!((arn.resource_type(), arn.resource_id()), ("bucket", None));
        let arn = Arn::parse("arn:aws:iot:r:1:rule:name").expect("parse");
        assert_eq!(
            (arn.resource_type(), arn.resource_id()),
            ("rule", Some("name"))
        );
    }

    #[test]
    fn rejects_what_is_not_an_arn() {
        assert!(matches!(
            Arn::parse("thing/sensor-1"),
            Err(ArnError::NoPrefix(_))
        ));
        assert!(matches!(
            Arn::parse("arn:aws:iot:us-east-1"),
            Err(ArnError::TooFewParts(_))
        ));
        assert!(matches!(
            Arn::parse("arn:aws:iot:us-east-1:000000000000:"),
            Err(ArnError::EmptyPart {
                part: "resource",
                ..
            })
        ));
        assert!(matches!(
            Arn::parse("arn::iot:r:1:thing/t"),
            Err(ArnError::EmptyPart {
                part: "partition",
                ..
            })
        ));
        let err = Arn::parse("nope").expect_err("no prefix").to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
