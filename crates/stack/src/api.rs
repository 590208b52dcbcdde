//! The HTTP API as the resources use it: a [`Transport`] the caller provides (signing and
//! sending, in the binary with the CLI's hyper client) and the three AWS protocols fleetcore
//! speaks on top of it — REST-JSON, JSON 1.0/1.1 with `X-Amz-Target`, and Query (SNS).

use std::sync::Arc;

use http::Method;
use serde_json::Value;

/// One request to the control plane, before signing.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// The signing name of the service (`iot`, `kinesis`, `sns`, ...).
    pub service: &'static str,
    /// The HTTP method.
    pub method: Method,
    /// The path and query, percent-encoded.
    pub path_and_query: String,
    /// Extra headers (content type, target).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The server's answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The HTTP status.
    pub status: u16,
    /// The `x-amzn-errortype` header, when given.
    pub error_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// Signs and sends requests to one server.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    /// Sends one request; an error only when no answer came (connection refused, ...).
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, String>;
}

/// An operation the server refused or could not be reached for.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {code} ({status}): {message}")]
pub struct ApiError {
    /// The operation, e.g. `CreateStream`.
    pub operation: String,
    /// The AWS error code, e.g. `ResourceNotFoundException` (`ConnectionError` when no answer).
    pub code: String,
    /// The HTTP status (0 when no answer).
    pub status: u16,
    /// The server's message.
    pub message: String,
}

impl ApiError {
    /// Whether the server says the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status == 404 || self.code.contains("NotFound")
    }
}

/// The control plane of one server, spoken in each service's protocol.
#[derive(Clone)]
pub struct Api {
    transport: Arc<dyn Transport>,
}

impl Api {
    /// Speaks through `transport`.
    pub fn new(transport: Arc<dyn Transport>) -> Api {
        Api { transport }
    }

    /// A REST-JSON operation: `method path` with an optional JSON body; the JSON answer (`Null`
    /// when empty).
    pub async fn rest(
        &self,
        service: &'static str,
        operation: &str,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        self.rest_with(service, operation, method, path_and_query, Vec::new(), body)
            .await
    }

    /// [`Api::rest`] with extra headers (e.g. `x-amzn-principal`).
    pub async fn rest_with(
        &self,
        service: &'static str,
        operation: &str,
        method: Method,
        path_and_query: &str,
        mut headers: Vec<(&'static str, String)>,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let body = match body {
            Some(body) => {
                headers.push(("content-type", "application/json".to_string()));
                body.to_string().into_bytes()
            }
            None => Vec::new(),
        };
        let request = HttpRequest {
            service,
            method,
            path_and_query: path_and_query.to_string(),
            headers,
            body,
        };
        self.json_answer(operation, request).await
    }

    /// A JSON 1.0/1.1 operation: `POST /` with `X-Amz-Target: {target_prefix}.{operation}`.
    pub async fn json_rpc(
        &self,
        service: &'static str,
        target_prefix: &str,
        json_version: &str,
        operation: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let request = HttpRequest {
            service,
            method: Method::POST,
            path_and_query: "/".to_string(),
            headers: vec![
                (
                    "content-type",
                    format!("application/x-amz-json-{json_version}"),
                ),
                ("x-amz-target", format!("{target_prefix}.{operation}")),
            ],
            body: body.to_string().into_bytes(),
        };
        self.json_answer(operation, request).await
    }

    /// A Query operation (`Action=...&Version=...` form); the XML answer as text.
    pub async fn query(
        &self,
        service: &'static str,
        action: &str,
        version: &str,
        params: &[(String, String)],
    ) -> Result<String, ApiError> {
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", action);
            form.append_pair("Version", version);
            for (k, v) in params {
                form.append_pair(k, v);
            }
            form.finish().into_bytes()
        };
        let request = HttpRequest {
            service,
            method: Method::POST,
            path_and_query: "/".to_string(),
            headers: vec![(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            )],
            body,
        };
        let response = self.send(action, request).await?;
        let text = String::from_utf8_lossy(&response.body).into_owned();
        if (200..300).contains(&response.status) {
            return Ok(text);
        }
        Err(ApiError {
            operation: action.to_string(),
            code: xml_text(&text, "Code").unwrap_or_else(|| "Error".to_string()),
            status: response.status,
            message: xml_text(&text, "Message").unwrap_or(text),
        })
    }

    async fn send(&self, operation: &str, request: HttpRequest) -> Result<HttpResponse, ApiError> {
        self.transport
            .send(request)
            .await
            .map_err(|message| ApiError {
                operation: operation.to_string(),
                code: "ConnectionError".to_string(),
                status: 0,
                message,
            })
    }

    async fn json_answer(&self, operation: &str, request: HttpRequest) -> Result<Value, ApiError> {
        let response = self.send(operation, request).await?;
        let json: Value = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&response.body).into_owned())
            })
        };
        if (200..300).contains(&response.status) {
            return Ok(json);
        }
        let code = response
            .error_type
            .or_else(|| {
                json.get("__type")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .or_else(|| json.get("code").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "Error".to_string());
        // `aws.protocoltests#Code:http://...` and `com.amazon...#Code` both name the code.
        let code = code.split(':').next().unwrap_or_default();
        let code = code.rsplit('#').next().unwrap_or_default().to_string();
        let message = ["message", "Message", "errorMessage"]
            .iter()
            .find_map(|k| json.get(*k).and_then(Value::as_str))
            .map(str::to_string)
            .unwrap_or_else(|| json.to_string());
        Err(ApiError {
            operation: operation.to_string(),
            code,
            status: response.status,
            message,
        })
    }
}

/// The text of the first `<tag>` element of an XML document (unescaped).
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    xml_texts(xml, tag).into_iter().next()
}

/// The texts of every `<tag>` element of an XML document, in order (unescaped).
pub fn xml_texts(xml: &str, tag: &str) -> Vec<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let mut inside = false;
    let mut text = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(start)) if start.local_name().as_ref() == tag.as_bytes() => {
                inside = true;
                text.clear();
            }
            Ok(Event::Text(t)) if inside => {
                if let Ok(t) = t.decode() {
                    text.push_str(&quick_xml::escape::unescape(&t).unwrap_or_default());
                }
            }
            Ok(Event::GeneralRef(r)) if inside => {
                let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                let entity = format!("&{name};");
                text.push_str(&quick_xml::escape::unescape(&entity).unwrap_or_default());
            }
            Ok(Event::End(end)) if inside && end.local_name().as_ref() == tag.as_bytes() => {
                inside = false;
                out.push(std::mem::take(&mut text));
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

/// Percent-encodes one path label the way AWS SDKs do (everything but unreserved characters).
pub fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_percent_encoded_like_the_sdks() {
        assert_eq!(label("dev-1_a.b~"), "dev-1_a.b~");
        assert_eq!(label("a/b c:d"), "a%2Fb%20c%3Ad");
    }

    #[test]
    fn xml_texts_are_unescaped() {
        let xml = "<R><A>x &amp; y</A><B>1</B><A>&lt;z&gt;</A></R>";
        assert_eq!(xml_texts(xml, "A"), ["x & y", "<z>"]);
        assert_eq!(xml_text(xml, "B").as_deref(), Some("1"));
        assert_eq!(xml_text(xml, "C"), None);
    }
}
