//! Which stream a request names: `StreamName`, or `StreamARN`
//! (`arn:aws:kinesis:<region>:<account>:stream/<name>`), or both if they agree.

use super::errors::{invalid_argument, not_found};
use crate::context::RequestContext;
use crate::error::ApiError;

/// The ARN of stream `name`.
pub fn arn(ctx: &RequestContext, name: &str) -> String {
    format!(
        "arn:aws:kinesis:{}:{}:stream/{name}",
        ctx.region, ctx.account_id
    )
}

/// The stream name a request names with `name` and/or `arn`.
pub fn stream_name(
    ctx: &RequestContext,
    name: Option<&str>,
    arn: Option<&str>,
) -> Result<String, ApiError> {
    let from_arn = arn.map(|arn| name_of_arn(ctx, arn)).transpose()?;
    let name = match (name, from_arn) {
        (Some(name), Some(from_arn)) if name != from_arn => Err(invalid_argument(format!(
            "StreamName {name} and StreamARN name different streams."
        ))),
        (Some(name), _) => Ok(name.to_string()),
        (None, Some(from_arn)) => Ok(from_arn),
        (None, None) => Err(invalid_argument(
            "Either StreamName or StreamARN must be given.",
        )),
    }?;
    if fleetcore_stream::is_internal_stream(&name) {
        // fleetcore's own streams (delivery-stream buffers) are not the Kinesis API's to touch.
        return Err(not_found(format!(
            "Stream {name} under account {} not found.",
            ctx.account_id
        )));
    }
    Ok(name)
}

fn name_of_arn(ctx: &RequestContext, arn: &str) -> Result<String, ApiError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return Err(invalid_argument(format!("{arn:?} is not a stream ARN.")));
    };
    let name = resource.strip_prefix("stream/").unwrap_or_default();
    if prefix != "arn" || partition.is_empty() || service != "kinesis" || name.is_empty() {
        return Err(invalid_argument(format!("{arn:?} is not a stream ARN.")));
    }
    if region != ctx.region || account != ctx.account_id {
        return Err(not_found(format!(
            "Stream {name} under account {account} in {region} not found."
        )));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::new_request_id;
    use crate::error::Protocol;

    fn ctx() -> RequestContext {
        RequestContext {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            service: "kinesis".into(),
            request_id: new_request_id(),
            protocol: Protocol::Json11,
            access_key_id: "A".into(),
        }
    }

    #[test]
    fn names_come_from_either_field() {
        let c = ctx();
        let a = arn(&c, "s1");
        assert_eq!(stream_name(&c, Some("s1"), None).expect("name"), "s1");
        assert_eq!(stream_name(&c, None, Some(&a)).expect("arn"), "s1");
        assert_eq!(stream_name(&c, Some("s1"), Some(&a)).expect("both"), "s1");
        let err = stream_name(&c, Some("s2"), Some(&a)).expect_err("mismatch");
        assert_eq!(err.code, "InvalidArgumentException");
        let err = stream_name(&c, None, None).expect_err("neither");
        assert_eq!(err.code, "InvalidArgumentException");
        for bad in [
            "",
            "arn:aws:kinesis",
            "arn:aws:s3:us-east-1:000000000000:stream/x",
            "arn:aws:kinesis:us-east-1:000000000000:table/x",
        ] {
            let err = stream_name(&c, None, Some(bad)).expect_err(bad);
            assert_eq!(err.code, "InvalidArgumentException", "{bad}");
        }
        let other = "arn:aws:kinesis:eu-west-1:000000000000:stream/s1";
        assert_eq!(
            stream_name(&c, None, Some(other)).expect_err("region").code,
            "ResourceNotFoundException"
        );
    }

    #[test]
    fn internal_streams_are_not_found() {
        let c = ctx();
        let err = stream_name(&c, Some("__firehose.x"), None).expect_err("internal");
        assert_eq!(err.code, "ResourceNotFoundException");
        let a = arn(&c, "__firehose.x");
        let err = stream_name(&c, None, Some(&a)).expect_err("internal arn");
        assert_eq!(err.code, "ResourceNotFoundException");
    }
}
