//! AWS-shaped errors. Every handler returns [`ApiError`]; this one place turns it into the
//! response AWS SDKs parse: rest-json services get the `x-amzn-ErrorType` header and a
//! `{"message": ...}` body, JSON 1.1 services (Kinesis, Firehose) get `{"__type": ...}`, Query
//! services (SNS) get `<ErrorResponse><Error><Type/><Code/><Message/></Error>` in XML.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Which wire protocol the failing request used (decides the error body's shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// REST-JSON: iot, iot-data, iotanalytics, iotevents.
    #[default]
    RestJson,
    /// JSON 1.1: kinesis, firehose.
    Json11,
    /// AWS Query: form-encoded requests, XML answers (sns).
    Query,
}

/// An error as AWS reports it: an error code (the exception name SDKs raise), an HTTP status,
/// a message, and optional extra members (`resourceId`, `resourceArn`, ...).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The AWS error code, e.g. `ResourceNotFoundException`.
    pub code: &'static str,
    /// The HTTP status.
    pub status: StatusCode,
    /// A sentence for a person.
    pub message: String,
    /// Extra members of the error shape.
    pub fields: Map<String, Value>,
    /// The body shape.
    pub protocol: Protocol,
}

impl ApiError {
    /// An error with `code`, `status` and `message`.
    pub fn new(code: &'static str, status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            status,
            message: message.into(),
            fields: Map::new(),
            protocol: Protocol::RestJson,
        }
    }

    /// Adds a member to the error shape.
    pub fn with_field(mut self, name: &str, value: impl Into<Value>) -> ApiError {
        self.fields.insert(name.to_string(), value.into());
        self
    }

    /// Switches the body to the JSON 1.1 shape.
    pub fn json11(mut self) -> ApiError {
        self.protocol = Protocol::Json11;
        self
    }

    /// Switches the body to the AWS Query (XML) shape.
    pub fn query(mut self) -> ApiError {
        self.protocol = Protocol::Query;
        self
    }

    /// The same error in `protocol`'s shape.
    pub fn shaped(mut self, protocol: Protocol) -> ApiError {
        self.protocol = protocol;
        self
    }

    /// 400 `InvalidRequestException`.
    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new("InvalidRequestException", StatusCode::BAD_REQUEST, message)
    }

    /// 404 `ResourceNotFoundException`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new("ResourceNotFoundException", StatusCode::NOT_FOUND, message)
    }

    /// 409 `ResourceAlreadyExistsException` with the existing resource's id and ARN.
    pub fn already_exists(message: impl Into<String>, id: &str, arn: &str) -> ApiError {
        ApiError::new(
            "ResourceAlreadyExistsException",
            StatusCode::CONFLICT,
            message,
        )
        .with_field("resourceId", id)
        .with_field("resourceArn", arn)
    }

    /// 409 `ConflictException`.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new("ConflictException", StatusCode::CONFLICT, message)
    }

    /// 500 `InternalFailureException`, for failures that are the server's fault (store errors).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(
            "InternalFailureException",
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.protocol == Protocol::Query {
            return query_error(self);
        }
        let mut body = self.fields;
        body.insert("message".into(), json!(self.message));
        let content_type = match self.protocol {
            Protocol::RestJson => "application/json",
            Protocol::Json11 => {
                body.insert("__type".into(), json!(self.code));
                "application/x-amz-json-1.1"
            }
            Protocol::Query => "text/xml",
        };
        let mut response = (self.status, Value::Object(body).to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert("x-amzn-errortype", HeaderValue::from_static(self.code));
        response
    }
}

/// The AWS Query error document: `Sender` for client errors, `Receiver` for the server's own.
fn query_error(error: ApiError) -> Response {
    let kind = if error.status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    let mut xml = crate::query::Xml::new();
    xml.open("ErrorResponse")
        .open("Error")
        .element("Type", kind)
        .element("Code", error.code)
        .element("Message", &error.message)
        .close("Error");
    if let Some(id) = error.fields.get("RequestId").and_then(Value::as_str) {
        xml.element("RequestId", id);
    }
    xml.close("ErrorResponse");
    let mut response = (error.status, xml.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    headers.insert("x-amzn-errortype", HeaderValue::from_static(error.code));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rest_json_errors_carry_the_code_header_and_message() {
        let r = ApiError::already_exists("thing t exists", "t", "arn:aws:iot:r:1:thing/t")
            .into_response();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(
            r.headers()["x-amzn-errortype"],
            "ResourceAlreadyExistsException"
        );
        let body = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .expect("body");
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["message"], "thing t exists");
        assert_eq!(v["resourceId"], "t");
    }

    #[tokio::test]
    async fn query_errors_are_xml_documents() {
        let r = ApiError::new(
            "NotFound",
            StatusCode::NOT_FOUND,
            "Topic <t> does not exist",
        )
        .with_field("RequestId", "r-1")
        .query()
        .into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/xml");
        let body = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .expect("body");
        assert_eq!(
            std::str::from_utf8(&body).expect("utf-8"),
            "<ErrorResponse><Error><Type>Sender</Type><Code>NotFound</Code>\
             <Message>Topic &lt;t&gt; does not exist</Message></Error>\
             <RequestId>r-1</RequestId></ErrorResponse>"
        );
    }

    #[tokio::test]
    async fn json11_errors_carry_type() {
        let r = ApiError::not_found("no stream").json11().into_response();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .expect("body");
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["__type"], "ResourceNotFoundException");
    }
}
