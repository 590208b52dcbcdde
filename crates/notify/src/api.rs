//! The `sns` service (AWS Query protocol, signing name `sns`): topics, subscriptions,
//! attributes, tags, Publish and PublishBatch, so boto3's `sns` client works unchanged. Every
//! other SNS action (SMS, platform applications, data protection) is answered
//! UnknownOperationException by the protocol layer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use fleetcore_api::query::{QueryParams, QueryResult, QueryService, Xml};
use fleetcore_api::{ApiError, RequestContext};

use crate::error::NotifyServiceError;
use crate::message::{MessageAttribute, Published};
use crate::model::Status;
use crate::service::Notify;

/// The XML namespace of SNS answers.
const NAMESPACE: &str = "http://sns.amazonaws.com/doc/2010-03-31/";
/// Items per page of the listings (SNS's page size).
const PAGE: usize = 100;
/// Entries one PublishBatch may carry.
const MAX_BATCH: usize = 10;

/// The service's router, for `ControlPlane::service("sns", ...)`.
pub fn routes(notify: Arc<Notify>) -> Router {
    QueryService::new(NAMESPACE, notify)
        .action("CreateTopic", create_topic)
        .action("DeleteTopic", delete_topic)
        .action("ListTopics", list_topics)
        .action("GetTopicAttributes", get_topic_attributes)
        .action("SetTopicAttributes", set_topic_attributes)
        .action("Subscribe", subscribe)
        .action("ConfirmSubscription", confirm_subscription)
        .action("Unsubscribe", unsubscribe)
        .action("ListSubscriptions", list_subscriptions)
        .action("ListSubscriptionsByTopic", list_subscriptions_by_topic)
        .action("GetSubscriptionAttributes", get_subscription_attributes)
        .action("SetSubscriptionAttributes", set_subscription_attributes)
        .action("Publish", publish)
        .action("PublishBatch", publish_batch)
        .action("TagResource", tag_resource)
        .action("UntagResource", untag_resource)
        .action("ListTagsForResource", list_tags_for_resource)
        .into_router()
}

/// The one place service errors become SNS's error codes and statuses.
pub fn api_error(error: NotifyServiceError) -> ApiError {
    match error {
        NotifyServiceError::NotFound(message) => {
            ApiError::new("NotFound", StatusCode::NOT_FOUND, message)
        }
        error @ NotifyServiceError::InvalidParameter(_) => ApiError::new(
            "InvalidParameter",
            StatusCode::BAD_REQUEST,
            error.to_string(),
        ),
        NotifyServiceError::Internal(message) => {
            ApiError::new("InternalError", StatusCode::INTERNAL_SERVER_ERROR, message)
        }
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    api_error(NotifyServiceError::invalid(message))
}

/// A topic ARN parameter: an `sns` ARN, or `InvalidParameter`.
fn topic_arn<'a>(params: &'a QueryParams, name: &str) -> Result<&'a str, ApiError> {
    let arn = params.required(name)?;
    match fleetcore_core::Arn::parse(arn) {
        Ok(parsed) if parsed.service == "sns" => Ok(arn),
        _ => Err(invalid(format!("{name}: not a topic ARN"))),
    }
}

async fn create_topic(notify: Arc<Notify>, _: RequestContext, params: QueryParams) -> QueryResult {
    let name = params.required("Name")?;
    let attributes = params.map("Attributes", "key", "value")?;
    let tags = tags(&params)?;
    if params.get("DataProtectionPolicy").is_some() {
        return Err(invalid(
            "DataProtectionPolicy: not supported by this server",
        ));
    }
    let topic = notify
        .registry()
        .create_topic(name, attributes, tags)
        .map_err(api_error)?;
    let mut xml = Xml::new();
    xml.element("TopicArn", &topic.arn);
    Ok(xml)
}

async fn delete_topic(notify: Arc<Notify>, _: RequestContext, params: QueryParams) -> QueryResult {
    notify
        .delete_topic(topic_arn(&params, "TopicArn")?)
        .map_err(api_error)?;
    Ok(Xml::new())
}

async fn list_topics(notify: Arc<Notify>, _: RequestContext, params: QueryParams) -> QueryResult {
    let (arns, next) = notify.registry().list_topics(params.get("NextToken"), PAGE);
    let mut xml = Xml::new();
    xml.open("Topics");
    for arn in &arns {
        xml.open("member").element("TopicArn", arn).close("member");
    }
    xml.close("Topics").optional("NextToken", next.as_deref());
    Ok(xml)
}

async fn get_topic_attributes(
    notify: Arc<Notify>,
    ctx: RequestContext,
    params: QueryParams,
) -> QueryResult {
    let topic = notify
        .registry()
        .topic(topic_arn(&params, "TopicArn")?)
        .map_err(api_error)?;
    let (confirmed, pending) = notify.registry().subscription_counts(&topic.arn);
    let mut attributes: BTreeMap<String, String> = BTreeMap::from([
        ("TopicArn".into(), topic.arn.clone()),
        ("Owner".into(), ctx.account_id.clone()),
        ("DisplayName".into(), String::new()),
        ("SignatureVersion".into(), "2".into()),
        ("SubscriptionsConfirmed".into(), confirmed.to_string()),
        ("SubscriptionsPending".into(), pending.to_string()),
        ("SubscriptionsDeleted".into(), "0".into()),
        ("Policy".into(), default_policy(&topic.arn, &ctx.account_id)),
    ]);
    attributes.extend(topic.attributes);
    let mut xml = Xml::new();
    xml.entries(
        "Attributes",
        attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    Ok(xml)
}

/// The policy AWS gives a new topic: its owner may do everything.
fn default_policy(arn: &str, account: &str) -> String {
    serde_json::json!({
        "Version": "2008-10-17",
        "Id": "__default_policy_ID",
        "Statement": [{
            "Sid": "__default_statement_ID",
            "Effect": "Allow",
            "Principal": {"AWS": "*"},
            "Action": ["SNS:GetTopicAttributes", "SNS:SetTopicAttributes", "SNS:AddPermission",
                       "SNS:RemovePermission", "SNS:DeleteTopic", "SNS:Subscribe",
                       "SNS:ListSubscriptionsByTopic", "SNS:Publish"],
            "Resource": arn,
            "Condition": {"StringEquals": {"AWS:SourceOwner": account}},
        }],
    })
    .to_string()
}

async fn set_topic_attributes(
    notify: Arc<Notify>,
    _: RequestContext,
    params: QueryParams,
) -> QueryResult {
    let arn = topic_arn(&params, "TopicArn")?;
    let name = params.required("AttributeName")?;
    let value = params.get("AttributeValue").unwrap_or_default();
    notify
        .registry()
        .set_topic_attribute(arn, name, value)
        .map_err(api_error)?;
    Ok(Xml::new())
}

async fn subscribe(notify: Arc<Notify>, _: RequestContext, params: QueryParams) -> QueryResult {
    let arn = topic_arn(&params, "TopicArn")?;
    let protocol = params.required("Protocol")?;
    let endpoint = params
        .get("Endpoint")
        .ok_or_else(|| invalid("Endpoint: required for this server's protocols"))?;
    let attributes = params.map("Attributes", "key", "value")?;
    let subscription = notify
        .subscribe(arn, protocol, endpoint, attributes)
        .map_err(api_error)?;
    let return_arn = params
        .get("ReturnSubscriptionArn")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let shown = if subscription.status == Status::Pending && !return_arn {
        "pending confirmation"
    } else {
        subscription.arn.as_str()
    };
    let mut xml = Xml::new();
    xml.element("SubscriptionArn", shown);
    Ok(xml)
}

async fn confirm_subscription(
    notify: Arc<Notify>,
    _: RequestContext,
    params: QueryParams,
) -> QueryResult {
    let arn = topic_arn(&params, "TopicArn")?;
    let token = params.required("Token")?;
    let subscription = notify.confirm(arn, token).map_err(|e| match e {
        NotifyServiceError::InvalidParameter(_) => invalid("Invalid token"),
        other => api_error(other),
    })?;
    let mut xml = Xml::new();
    xml.element("SubscriptionArn", &subscription.arn);
    Ok(xml)
}

async fn unsubscribe(notify: Arc<Notify>, _: RequestContext, params: QueryParams) -> QueryResult {
    notify
        .unsubscribe(params.required("SubscriptionArn")?)
        .map_err(api_error)?;
    Ok(Xml::new())
}

async fn list_subscriptions(
    notify: Arc<Notify>,
    ctx: RequestContext,
    params: QueryParams,
) -> QueryResult {
    subscriptions_page(&notify, &ctx, None, params.get("NextToken"))
}

async fn list_subscriptions_by_topic(
    notify: Arc<Notify>,
    ctx: RequestContext,
    params: QueryParams,
) -> QueryResult {
    let arn = topic_arn(&params, "TopicArn")?;
    subscriptions_page(&notify, &ctx, Some(arn), params.get("NextToken"))
}

fn subscriptions_page(
    notify: &Notify,
    ctx: &RequestContext,
    topic: Option<&str>,
    after: Option<&str>,
) -> QueryResult {
    let (subscriptions, next) = notify
        .registry()
        .list_subscriptions(topic, after, PAGE)
        .map_err(api_error)?;
    let mut xml = Xml::new();
    xml.open("Subscriptions");
    for s in &subscriptions {
        let arn = match s.status {
            Status::Pending => "PendingConfirmation",
            Status::Confirmed => s.arn.as_str(),
        };
        xml.open("member")
            .element("SubscriptionArn", arn)
            .element("Owner", &ctx.account_id)
            .element("Protocol", &s.protocol)
            .element("Endpoint", &s.endpoint)
            .element("TopicArn", &s.topic_arn)
            .close("member");
    }
    xml.close("Subscriptions")
        .optional("NextToken", next.as_deref());
    Ok(xml)
}

async fn get_subscription_attributes(
    notify: Arc<Notify>,
    ctx: RequestContext,
    params: QueryParams,
) -> QueryResult {
    let s = notify
        .registry()
        .subscription(params.required("SubscriptionArn")?)
        .map_err(api_error)?;
    let pending = (s.status == Status::Pending).to_string();
    let mut attributes: BTreeMap<String, String> = BTreeMap::from([
        ("SubscriptionArn".into(), s.arn.clone()),
        ("TopicArn".into(), s.topic_arn.clone()),
        ("Owner".into(), ctx.account_id.clone()),
        ("Protocol".into(), s.protocol.clone()),
        ("Endpoint".into(), s.endpoint.clone()),
        ("PendingConfirmation".into(), pending),
        ("ConfirmationWasAuthenticated".into(), "false".into()),
        ("RawMessageDelivery".into(), "false".into()),
    ]);
    attributes.extend(s.attributes.clone());
    if attributes.contains_key(crate::model::FILTER_POLICY) {
        attributes
            .entry(crate::model::FILTER_POLICY_SCOPE.into())
            .or_insert_with(|| "MessageAttributes".into());
    }
    let mut xml = Xml::new();
    xml.entries(
        "Attributes",
        attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    Ok(xml)
}

async fn set_subscription_attributes(
    notify: Arc<Notify>,
    _: RequestContext,
    params: QueryParams,
) -> QueryResult {
    let arn = params.required("SubscriptionArn")?;
    let name = params.required("AttributeName")?;
    let value = params.get("AttributeValue").unwrap_or_default();
    notify
        .registry()
        .set_subscription_attribute(arn, name, value)
        .map_err(api_error)?;
    Ok(Xml::new())
}

/// The message of a Publish or of one PublishBatch entry.
fn message(topic: &str, params: &QueryParams) -> Result<Published, ApiError> {
    if params.get("MessageGroupId").is_some() || params.get("MessageDeduplicationId").is_some() {
        return Err(invalid(
            "MessageGroupId: FIFO topics are not supported by this server",
        ));
    }
    let mut attributes = BTreeMap::new();
    for entry in params.list("MessageAttributes.entry") {
        let name = entry
            .get("Name")
            .ok_or_else(|| invalid("MessageAttributes: an entry has no Name"))?;
        let data_type = entry.get("Value.DataType").ok_or_else(|| {
            invalid(format!(
                "The message attribute '{name}' must contain a DataType"
            ))
        })?;
        let value = entry
            .get("Value.StringValue")
            .or_else(|| entry.get("Value.BinaryValue"))
            .ok_or_else(|| {
                invalid(format!(
                    "The message attribute '{name}' must contain a non-empty value"
                ))
            })?;
        let attribute =
            MessageAttribute::new(name, data_type, value.to_string()).map_err(api_error)?;
        attributes.insert(name.to_string(), attribute);
    }
    Published::new(
        topic,
        params.required("Message")?,
        params.get("Subject"),
        params.get("MessageStructure"),
        attributes,
    )
    .map_err(api_error)
}

async fn publish(notify: Arc<Notify>, _: RequestContext, params: QueryParams) -> QueryResult {
    if params.get("PhoneNumber").is_some() {
        return Err(invalid("PhoneNumber: SMS is not supported by this server"));
    }
    let topic = if params.get("TopicArn").is_some() {
        topic_arn(&params, "TopicArn")?
    } else if params.get("TargetArn").is_some() {
        topic_arn(&params, "TargetArn")?
    } else {
        return Err(invalid("TopicArn or TargetArn: one is required"));
    };
    let message_id = notify
        .publish(message(topic, &params)?)
        .map_err(api_error)?;
    let mut xml = Xml::new();
    xml.element("MessageId", &message_id);
    Ok(xml)
}

async fn publish_batch(notify: Arc<Notify>, _: RequestContext, params: QueryParams) -> QueryResult {
    let topic = topic_arn(&params, "TopicArn")?;
    let entries = params.list("PublishBatchRequestEntries.member");
    let batch_error = |code: &'static str, message: &str| {
        ApiError::new(code, StatusCode::BAD_REQUEST, message.to_string())
    };
    if entries.is_empty() {
        return Err(batch_error(
            "EmptyBatchRequest",
            "The batch request doesn't contain any entries",
        ));
    }
    if entries.len() > MAX_BATCH {
        return Err(batch_error(
            "TooManyEntriesInBatchRequest",
            "The batch request contains more entries than permissible",
        ));
    }
    let mut ids = std::collections::BTreeSet::new();
    for entry in &entries {
        let id = entry.required("Id")?;
        if !ids.insert(id) {
            return Err(batch_error(
                "BatchEntryIdsNotDistinct",
                "Two or more batch entries in the request have the same Id",
            ));
        }
    }
    notify.registry().topic(topic).map_err(api_error)?;
    let mut successful = Xml::new();
    let mut failed = Xml::new();
    for entry in &entries {
        let id = entry.get("Id").unwrap_or_default();
        match message(topic, entry).and_then(|m| notify.publish(m).map_err(api_error)) {
            Ok(message_id) => {
                successful
                    .open("member")
                    .element("Id", id)
                    .element("MessageId", &message_id)
                    .close("member");
            }
            Err(error) => {
                failed
                    .open("member")
                    .element("Id", id)
                    .element("Code", error.code)
                    .element("Message", &error.message)
                    .element(
                        "SenderFault",
                        &(!error.status.is_server_error()).to_string(),
                    )
                    .close("member");
            }
        }
    }
    let mut xml = Xml::new();
    xml.open("Successful")
        .append(successful)
        .close("Successful")
        .open("Failed")
        .append(failed)
        .close("Failed");
    Ok(xml)
}

/// `Tags.member.N.Key/Value`.
fn tags(params: &QueryParams) -> Result<BTreeMap<String, String>, ApiError> {
    let mut tags = BTreeMap::new();
    for member in params.list("Tags.member") {
        let key = member
            .get("Key")
            .filter(|k| !k.is_empty() && k.len() <= 128)
            .ok_or_else(|| invalid("Tags: every tag needs a Key of 1 to 128 characters"))?;
        let value = member.get("Value").unwrap_or_default();
        if value.len() > 256 {
            return Err(invalid("Tags: a Value has at most 256 characters"));
        }
        tags.insert(key.to_string(), value.to_string());
    }
    Ok(tags)
}

/// The topic a tagging call names, or `ResourceNotFound`.
fn tagged_topic<'a>(notify: &Notify, params: &'a QueryParams) -> Result<&'a str, ApiError> {
    let arn = params.required("ResourceArn")?;
    notify.registry().topic(arn).map_err(|_| {
        ApiError::new(
            "ResourceNotFound",
            StatusCode::NOT_FOUND,
            "Resource does not exist",
        )
    })?;
    Ok(arn)
}

async fn tag_resource(notify: Arc<Notify>, _: RequestContext, params: QueryParams) -> QueryResult {
    let arn = tagged_topic(&notify, &params)?;
    notify
        .registry()
        .tag(arn, tags(&params)?)
        .map_err(api_error)?;
    Ok(Xml::new())
}

async fn untag_resource(
    notify: Arc<Notify>,
    _: RequestContext,
    params: QueryParams,
) -> QueryResult {
    let arn = tagged_topic(&notify, &params)?;
    notify
        .registry()
        .untag(arn, &params.strings("TagKeys.member"))
        .map_err(api_error)?;
    Ok(Xml::new())
}

async fn list_tags_for_resource(
    notify: Arc<Notify>,
    _: RequestContext,
    params: QueryParams,
) -> QueryResult {
    let arn = tagged_topic(&notify, &params)?;
    let topic = notify.registry().topic(arn).map_err(api_error)?;
    let mut xml = Xml::new();
    xml.open("Tags");
    for (key, value) in &topic.tags {
        xml.open("member")
            .element("Key", key)
            .element("Value", value)
            .close("member");
    }
    xml.close("Tags");
    Ok(xml)
}
