//! A small client of fleetcore's own control plane for the CLI: requests signed with SigV4 by
//! the same code the server verifies with, sent over HTTP/1.1 with hyper.

use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use fleetcore_api::sigv4::{self, Credentials};
use fleetcore_identity::AdminCredentials;
use http_body_util::{BodyExt, Full};
use hyper::http::{HeaderMap, HeaderValue, Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// Where the control plane is and who we are to it.
#[derive(clap::Args, Debug, Clone)]
pub struct EndpointArgs {
    /// The HTTP address of the fleetcore server (its --http).
    #[arg(
        long,
        env = "FLEETCORE_ENDPOINT",
        default_value = "127.0.0.1:8080",
        value_name = "HOST:PORT"
    )]
    pub endpoint: String,
    /// Data folder whose `credentials` file (profile fleetcore) signs the requests.
    #[arg(
        long,
        env = "FLEETCORE_DATA_DIR",
        default_value = "fleetcore-data",
        value_name = "DIR"
    )]
    pub data_dir: std::path::PathBuf,
    /// Region of the signature scope.
    #[arg(long, env = "FLEETCORE_REGION", default_value = "us-east-1")]
    pub region: String,
}

/// A signed-request client of one fleetcore server.
pub struct ApiClient {
    endpoint: String,
    region: String,
    credentials: Credentials,
}

impl ApiClient {
    /// Reads the credentials file of `args.data_dir` (or FLEETCORE_ACCESS_KEY_ID /
    /// FLEETCORE_SECRET_ACCESS_KEY when both are set).
    pub fn new(args: &EndpointArgs) -> anyhow::Result<ApiClient> {
        let credentials = match (
            std::env::var("FLEETCORE_ACCESS_KEY_ID"),
            std::env::var("FLEETCORE_SECRET_ACCESS_KEY"),
        ) {
            (Ok(access_key_id), Ok(secret_access_key)) => Credentials {
                access_key_id,
                secret_access_key,
            },
            _ => read_credentials(&args.data_dir)?,
        };
        Ok(ApiClient::with_credentials(
            &args.endpoint,
            &args.region,
            credentials,
        ))
    }

    /// A client of the server at `endpoint` (`host:port` or `http://host:port`) signing with
    /// `credentials` for `region`.
    pub fn with_credentials(endpoint: &str, region: &str, credentials: Credentials) -> ApiClient {
        let endpoint = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        ApiClient {
            endpoint,
            region: region.to_string(),
            credentials,
        }
    }

    /// The server's HTTP address (`host:port`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The credentials requests are signed with.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// GETs an unauthenticated path of the server (e.g. `/ca.pem`) as text.
    pub async fn get_public(&self, path: &str) -> anyhow::Result<String> {
        let stream = TcpStream::connect(&self.endpoint)
            .await
            .with_context(|| format!("connecting to the fleetcore server at {}", self.endpoint))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header("host", &self.endpoint)
            .body(Full::new(Bytes::new()))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("GET {path}: HTTP {}", status.as_u16());
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Calls one REST-JSON operation of `service`; returns the JSON answer (or `Null` for an
    /// empty body). An AWS error becomes an error naming its code and message.
    pub async fn call(
        &self,
        service: &str,
        method: Method,
        path_and_query: &str,
        extra_headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut headers = HeaderMap::new();
        for (name, value) in extra_headers {
            headers.insert(
                hyper::http::HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
        if !body.is_empty() {
            headers.insert("content-type", HeaderValue::from_static("application/json"));
        }
        let response = self
            .send(service, method, path_and_query, headers, body)
            .await?;
        let status = response.status;
        let error_type = response.error_type;
        let bytes = response.body;
        let json: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if !status.is_success() {
            let message = json
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)");
            bail!(
                "{} ({}): {message}",
                error_type.as_deref().unwrap_or("error"),
                status.as_u16()
            );
        }
        Ok(json)
    }

    /// Signs and sends one request; the answer whatever its status (an error only when no
    /// answer came).
    pub async fn send(
        &self,
        service: &str,
        method: Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: Vec<u8>,
    ) -> anyhow::Result<RawResponse> {
        sigv4::sign(
            &self.credentials,
            &self.region,
            service,
            method.as_str(),
            path_and_query,
            &self.endpoint,
            &mut headers,
            &body,
            SystemTime::now(),
        )
        .map_err(|e| anyhow!("signing the request: {e}"))?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path_and_query)
            .body(Full::new(Bytes::from(body)))?;
        *request.headers_mut() = headers;

        let stream = TcpStream::connect(&self.endpoint).await.with_context(|| {
            format!(
                "connecting to the fleetcore server at {} (is it running? see --endpoint)",
                self.endpoint
            )
        })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("{method} {path_and_query}"))?;
        let status = response.status();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.into_body().collect().await?.to_bytes();
        Ok(RawResponse {
            status,
            error_type,
            body,
        })
    }
}

/// A signed request's answer, as it came.
pub struct RawResponse {
    /// The HTTP status.
    pub status: hyper::http::StatusCode,
    /// The `x-amzn-errortype` header, when given.
    pub error_type: Option<String>,
    /// The body.
    pub body: Bytes,
}

fn read_credentials(data_dir: &Path) -> anyhow::Result<Credentials> {
    let path = fleetcore_identity::credentials::credentials_path(data_dir);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (give --data-dir of the server, or set FLEETCORE_ACCESS_KEY_ID and FLEETCORE_SECRET_ACCESS_KEY)",
            path.display()
        )
    })?;
    let c = AdminCredentials::parse(&text)
        .with_context(|| format!("{} has no [fleetcore] profile", path.display()))?;
    Ok(Credentials {
        access_key_id: c.access_key_id,
        secret_access_key: c.secret_access_key,
    })
}

/// Percent-encodes one path label the way AWS SDKs do (one copy, in the stack crate).
pub use fleetcore_stack::api::label;
