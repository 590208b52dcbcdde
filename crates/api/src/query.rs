//! The AWS Query protocol (SNS, and later CloudWatch): requests are `POST /` with an
//! `application/x-www-form-urlencoded` body naming the `Action` and `Version`, lists and maps
//! flattened into numbered members (`Tags.member.1.Key`, `Attributes.entry.1.key`); answers are
//! XML documents `<{Action}Response xmlns=..><{Action}Result>..</{Action}Result>
//! <ResponseMetadata><RequestId>..</RequestId></ResponseMetadata></{Action}Response>`, errors
//! the `ErrorResponse` document ([`crate::error`]).
//!
//! A service registers one handler per action on a [`QueryService`]; actions AWS has that the
//! service does not implement are answered UnknownOperationException (501) from the route
//! tables in `operations/`, anything else InvalidAction (400).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::context::RequestContext;
use crate::error::ApiError;

/// The decoded parameters of a Query request (or one numbered member of a list in it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams {
    values: BTreeMap<String, String>,
}

impl QueryParams {
    /// Decodes a form-urlencoded body; a repeated name keeps its last value.
    pub fn parse(body: &[u8]) -> QueryParams {
        QueryParams {
            values: form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    /// The parameters given as name/value pairs (tests, nested members).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> QueryParams {
        QueryParams {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// A parameter's value, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A parameter that must be given: otherwise 400 `MissingParameter` naming it.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| {
            ApiError::new(
                "MissingParameter",
                StatusCode::BAD_REQUEST,
                format!("The request must contain the parameter {name}."),
            )
        })
    }

    /// The numbered members `prefix.N.*` in the order of N, each with the names below it
    /// (`list("Tags.member")` gives one `QueryParams` per tag, with `Key` and `Value`).
    pub fn list(&self, prefix: &str) -> Vec<QueryParams> {
        let dotted = format!("{prefix}.");
        let mut members: BTreeMap<u32, QueryParams> = BTreeMap::new();
        for (name, value) in self.values.range(dotted.clone()..) {
            let Some(rest) = name.strip_prefix(&dotted) else {
                break;
            };
            let Some((index, field)) = rest.split_once('.') else {
                continue;
            };
            let Ok(index) = index.parse::<u32>() else {
                continue;
            };
            members
                .entry(index)
                .or_default()
                .values
                .insert(field.to_string(), value.clone());
        }
        members.into_values().collect()
    }

    /// The scalar members `prefix.N` in the order of N (`TopicArns.member.1`, ...).
    pub fn strings(&self, prefix: &str) -> Vec<String> {
        let dotted = format!("{prefix}.");
        let mut members: BTreeMap<u32, String> = BTreeMap::new();
        for (name, value) in self.values.range(dotted.clone()..) {
            let Some(rest) = name.strip_prefix(&dotted) else {
                break;
            };
            if let Ok(index) = rest.parse::<u32>() {
                members.insert(index, value.clone());
            }
        }
        members.into_values().collect()
    }

    /// A map flattened as `prefix.entry.N.{key_name,value_name}` (`Attributes.entry.1.key`).
    /// An entry without its key is a 400 `InvalidParameter`.
    pub fn map(
        &self,
        prefix: &str,
        key_name: &str,
        value_name: &str,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        let mut map = BTreeMap::new();
        for entry in self.list(&format!("{prefix}.entry")) {
            let key = entry.get(key_name).ok_or_else(|| {
                ApiError::new(
                    "InvalidParameter",
                    StatusCode::BAD_REQUEST,
                    format!("Invalid parameter: {prefix}: an entry has no {key_name}"),
                )
            })?;
            map.insert(
                key.to_string(),
                entry.get(value_name).unwrap_or_default().to_string(),
            );
        }
        Ok(map)
    }
}

/// A small XML writer for Query answers: elements with escaped text, nothing else.
#[derive(Debug, Clone, Default)]
pub struct Xml(String);

impl Xml {
    /// An empty document fragment.
    pub fn new() -> Xml {
        Xml(String::new())
    }

    /// Opens `<name>`.
    pub fn open(&mut self, name: &str) -> &mut Xml {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
        self
    }

    /// Closes `</name>`.
    pub fn close(&mut self, name: &str) -> &mut Xml {
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
        self
    }

    /// `<name>text</name>`, the text escaped.
    pub fn element(&mut self, name: &str, text: &str) -> &mut Xml {
        self.open(name);
        self.0.push_str(&quick_xml::escape::escape(text));
        self.close(name)
    }

    /// [`Xml::element`] when `text` is there.
    pub fn optional(&mut self, name: &str, text: Option<&str>) -> &mut Xml {
        if let Some(text) = text {
            self.element(name, text);
        }
        self
    }

    /// A map as Query answers carry it: `<name><entry><key/><value/></entry>...</name>`.
    pub fn entries<'a>(
        &mut self,
        name: &str,
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> &mut Xml {
        self.open(name);
        for (key, value) in entries {
            self.open("entry")
                .element("key", key)
                .element("value", value)
                .close("entry");
        }
        self.close(name)
    }

    /// Appends another fragment.
    pub fn append(&mut self, other: Xml) -> &mut Xml {
        self.0.push_str(&other.0);
        self
    }

    /// The text written so far.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// What an action handler answers: the inside of its `<{Action}Result>` element.
pub type QueryResult = Result<Xml, ApiError>;

type BoxedFuture = Pin<Box<dyn Future<Output = QueryResult> + Send>>;
type Handler<S> = Arc<dyn Fn(S, RequestContext, QueryParams) -> BoxedFuture + Send + Sync>;

/// A Query service: its XML namespace and one handler per action, over shared state `S`.
pub struct QueryService<S> {
    namespace: &'static str,
    state: S,
    actions: HashMap<&'static str, Handler<S>>,
}

impl<S: Clone + Send + Sync + 'static> QueryService<S> {
    /// A service answering in XML namespace `namespace` (e.g.
    /// `http://sns.amazonaws.com/doc/2010-03-31/`).
    pub fn new(namespace: &'static str, state: S) -> QueryService<S> {
        QueryService {
            namespace,
            state,
            actions: HashMap::new(),
        }
    }

    /// Serves `action` with `handler`.
    pub fn action<F, Fut>(mut self, action: &'static str, handler: F) -> QueryService<S>
    where
        F: Fn(S, RequestContext, QueryParams) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = QueryResult> + Send + 'static,
    {
        self.actions.insert(
            action,
            Arc::new(move |state, ctx, params| Box::pin(handler(state, ctx, params))),
        );
        self
    }

    /// The router for `ControlPlane::service`: `POST /` dispatched on `Action`.
    pub fn into_router(self) -> Router {
        let service = Arc::new(self);
        Router::new().route(
            "/",
            post(move |ctx: RequestContext, body: Bytes| {
                let service = Arc::clone(&service);
                async move { service.call(ctx, &body).await }
            }),
        )
    }

    async fn call(&self, ctx: RequestContext, body: &[u8]) -> Response {
        let params = QueryParams::parse(body);
        let Some(action) = params.get("Action").map(str::to_string) else {
            return ctx
                .error(ApiError::new(
                    "MissingAction",
                    StatusCode::BAD_REQUEST,
                    "The request must contain the parameter Action.",
                ))
                .into_response();
        };
        let Some(handler) = self.actions.get(action.as_str()) else {
            return ctx
                .error(unknown_action(&ctx.service, &action))
                .into_response();
        };
        match handler(self.state.clone(), ctx.clone(), params).await {
            Ok(result) => answer(self.namespace, &action, &ctx.request_id, result),
            Err(error) => ctx.error(error).into_response(),
        }
    }
}

/// The answer document of a successful `action`.
fn answer(namespace: &str, action: &str, request_id: &str, result: Xml) -> Response {
    let result = result.into_string();
    let mut xml = Xml::new();
    xml.0.push_str(&format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><{action}Response xmlns=\"{namespace}\">"
    ));
    if result.is_empty() {
        xml.0.push_str(&format!("<{action}Result/>"));
    } else {
        xml.open(&format!("{action}Result"));
        xml.0.push_str(&result);
        xml.close(&format!("{action}Result"));
    }
    xml.open("ResponseMetadata")
        .element("RequestId", request_id)
        .close("ResponseMetadata")
        .close(&format!("{action}Response"));
    let mut response = (StatusCode::OK, xml.into_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    response
}

/// The error for `action` of `service` that no handler serves: an action AWS has (in the
/// service's route table) is UnknownOperationException 501, anything else InvalidAction 400.
pub fn unknown_action(service: &str, action: &str) -> ApiError {
    if crate::operations::is_operation(service, action) {
        ApiError::new(
            "UnknownOperationException",
            StatusCode::NOT_IMPLEMENTED,
            format!("Operation {action} of service '{service}' is not implemented by this server."),
        )
    } else {
        ApiError::new(
            "InvalidAction",
            StatusCode::BAD_REQUEST,
            format!("{action} is not a valid action of service '{service}'."),
        )
    }
    .query()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_maps_and_nested_members() {
        let params = QueryParams::parse(
            b"Action=Publish&Version=2010-03-31&Message=a%20b%26c\
              &MessageAttributes.entry.2.Name=n2&MessageAttributes.entry.2.Value.DataType=Number\
              &MessageAttributes.entry.1.Name=n1&MessageAttributes.entry.1.Value.StringValue=v%3D1\
              &MessageAttributes.entry.10.Name=n10\
              &Attributes.entry.1.key=DisplayName&Attributes.entry.1.value=x\
              &Ids.member.2=b&Ids.member.1=a",
        );
        assert_eq!(params.get("Message"), Some("a b&c"));
        let attributes = params.list("MessageAttributes.entry");
        let names: Vec<_> = attributes.iter().map(|a| a.get("Name")).collect();
        assert_eq!(names, [Some("n1"), Some("n2"), Some("n10")]);
        assert_eq!(attributes[0].get("Value.StringValue"), Some("v=1"));
        assert_eq!(attributes[1].get("Value.DataType"), Some("Number"));
        let map = params.map("Attributes", "key", "value").expect("map");
        assert_eq!(map.get("DisplayName").map(String::as_str), Some("x"));
        assert_eq!(params.strings("Ids.member"), ["a", "b"]);
        assert!(params.list("Nothing").is_empty());
        let error = params.required("TopicArn").expect_err("missing");
        assert_eq!(error.code, "MissingParameter");
        let broken = QueryParams::parse(b"Attributes.entry.1.value=x");
        assert_eq!(
            broken
                .map("Attributes", "key", "value")
                .expect_err("no key")
                .code,
            "InvalidParameter"
        );
    }

    #[test]
    fn xml_is_escaped() {
        let mut xml = Xml::new();
        xml.element("A", "<&>\"'")
            .optional("B", None)
            .entries("C", [("k", "v")]);
        assert_eq!(
            xml.into_string(),
            "<A>&lt;&amp;&gt;&quot;&apos;</A><C><entry><key>k</key><value>v</value></entry></C>"
        );
    }

    #[tokio::test]
    async fn answers_wrap_the_result_and_the_request_id() {
        let response = answer("urn:x", "CreateTopic", "rid", {
            let mut xml = Xml::new();
            xml.element("TopicArn", "arn");
            xml
        });
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        assert_eq!(
            std::str::from_utf8(&body).expect("utf-8"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CreateTopicResponse xmlns=\"urn:x\">\
             <CreateTopicResult><TopicArn>arn</TopicArn></CreateTopicResult>\
             <ResponseMetadata><RequestId>rid</RequestId></ResponseMetadata></CreateTopicResponse>"
        );
        let empty = answer("urn:x", "DeleteTopic", "rid", Xml::new());
        let body = axum::body::to_bytes(empty.into_body(), 1 << 16)
            .await
            .expect("body");
        assert!(
            std::str::from_utf8(&body)
                .expect("utf-8")
                .contains("<DeleteTopicResult/>")
        );
    }

    #[test]
    fn unknown_actions_are_named_when_aws_has_them() {
        let known = unknown_action("sns", "CreatePlatformApplication");
        assert_eq!(
            (known.code, known.status),
            ("UnknownOperationException", StatusCode::NOT_IMPLEMENTED)
        );
        let unknown = unknown_action("sns", "FlyToTheMoon");
        assert_eq!(
            (unknown.code, unknown.status),
            ("InvalidAction", StatusCode::BAD_REQUEST)
        );
    }
}
