//! The web console on the HTTP port (`/console`): a page a person opens in a browser, signed in
//! with the admin access key id and secret ([`session`]). Its assets are embedded in the binary
//! (plain JS, SVG charts, no CDN); it reads read-only JSON endpoints under `/console/api/`:
//!
//! - `info`: the sampling resolution and the registered [`Section`]s;
//! - `metrics`: the platform's registry now (what `/metrics` renders), as JSON samples;
//! - `sections/{id}`: a capability's page (things, functions, streams, ...);
//! - `cloudwatch/{op}`: CloudWatch's read operations on the embedded store (GetMetricData for
//!   the charts, DescribeAlarms, ListDashboards / GetDashboard for the dashboards).
//!
//! Every endpoint but the sign-in page and the static assets answers 401 without a session.

pub mod section;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use fleetcore_api::query::QueryParams;
use fleetcore_api::{Protocol, RequestContext};
use serde_json::json;

pub use section::{Section, SectionFuture, Table};

use crate::{Observe, Render};
use session::Sessions;

const INDEX_HTML: &str = include_str!("assets/index.html");
const LOGIN_HTML: &str = include_str!("assets/login.html");
const CONSOLE_JS: &str = include_str!("assets/console.js");
const CONSOLE_CSS: &str = include_str!("assets/console.css");

/// What the console reads from.
pub struct Console {
    observe: Arc<Observe>,
    render: Render,
    sections: Vec<Arc<dyn Section>>,
    sessions: Sessions,
}

impl Console {
    /// A console over `observe` and the registry `render`, signed in with the admin
    /// credentials, with one page per section.
    pub fn new(
        observe: Arc<Observe>,
        render: Render,
        sections: Vec<Arc<dyn Section>>,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Arc<Console> {
        Arc::new(Console {
            observe,
            render,
            sections,
            sessions: Sessions::new(access_key_id, secret_access_key),
        })
    }

    fn context(&self) -> RequestContext {
        RequestContext {
            region: self.observe.config.region.clone(),
            account_id: self.observe.config.account_id.clone(),
            service: "monitoring".into(),
            request_id: String::new(),
            protocol: Protocol::Json11,
            access_key_id: String::new(),
        }
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        value.to_string(),
    )
        .into_response()
}

fn unauthorized() -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        json!({"message": "Sign in at /console/login first."}),
    )
}

fn login_page(status: StatusCode, message: &str) -> Response {
    let page = LOGIN_HTML.replace("{{message}}", message);
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

/// The console's routes, for `ControlPlane::public` (they check their own session).
pub fn routes(console: Arc<Console>) -> Router {
    let c = move || Arc::clone(&console);
    let (index, login, logout, info, metrics, section, cloudwatch) =
        (c(), c(), c(), c(), c(), c(), c());
    Router::new()
        .route(
            "/console",
            get(move |headers: HeaderMap| {
                let console = Arc::clone(&index);
                async move {
                    if console.sessions.signed_in(&headers) {
                        asset("text/html; charset=utf-8", INDEX_HTML)
                    } else {
                        Redirect::to("/console/login").into_response()
                    }
                }
            }),
        )
        .route(
            "/console/login",
            get(|| async { login_page(StatusCode::OK, "") }).post(move |body: Bytes| {
                let console = Arc::clone(&login);
                async move {
                    let form = QueryParams::parse(&body);
                    let key = form.get("access_key_id").unwrap_or_default().trim();
                    let secret = form.get("secret_access_key").unwrap_or_default().trim();
                    match console.sessions.sign_in(key, secret) {
                        Some(token) => (
                            [(header::SET_COOKIE, session::set_cookie(&token))],
                            Redirect::to("/console"),
                        )
                            .into_response(),
                        None => login_page(
                            StatusCode::UNAUTHORIZED,
                            "The access key id or the secret access key is not the admin's.",
                        ),
                    }
                }
            }),
        )
        .route(
            "/console/logout",
            post(move |headers: HeaderMap| {
                let console = Arc::clone(&logout);
                async move {
                    console.sessions.sign_out(&headers);
                    (
                        [(header::SET_COOKIE, session::clear_cookie())],
                        Redirect::to("/console/login"),
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/console/assets/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
        .route(
            "/console/assets/console.css",
            get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
        .route(
            "/console/api/info",
            get(move |headers: HeaderMap| {
                let console = Arc::clone(&info);
                async move {
                    if !console.sessions.signed_in(&headers) {
                        return unauthorized();
                    }
                    let sections: Vec<_> = console
                        .sections
                        .iter()
                        .map(|s| json!({"id": s.id(), "title": s.title()}))
                        .collect();
                    json_response(
                        StatusCode::OK,
                        json!({
                            "resolution": console.observe.store.retention().resolution,
                            "region": console.observe.config.region,
                            "sections": sections,
                        }),
                    )
                }
            }),
        )
        .route(
            "/console/api/metrics",
            get(move |headers: HeaderMap| {
                let console = Arc::clone(&metrics);
                async move {
                    if !console.sessions.signed_in(&headers) {
                        return unauthorized();
                    }
                    let samples: Vec<_> = crate::sampler::parse_exposition(&(console.render)())
                        .into_iter()
                        .map(|s| json!({"name": s.name, "labels": s.labels, "value": s.value}))
                        .collect();
                    json_response(StatusCode::OK, json!({ "samples": samples }))
                }
            }),
        )
        .route(
            "/console/api/sections/{id}",
            get(move |headers: HeaderMap, Path(id): Path<String>| {
                let console = Arc::clone(&section);
                async move {
                    if !console.sessions.signed_in(&headers) {
                        return unauthorized();
                    }
                    let Some(found) = console.sections.iter().find(|s| s.id() == id) else {
                        return json_response(
                            StatusCode::NOT_FOUND,
                            json!({"message": format!("No console section {id}.")}),
                        );
                    };
                    match found.read().await {
                        Ok(table) => json_response(StatusCode::OK, json!(table)),
                        Err(message) => json_response(
                            StatusCode::SERVICE_UNAVAILABLE,
                            json!({ "message": message }),
                        ),
                    }
                }
            }),
        )
        .route(
            "/console/api/cloudwatch/{op}",
            post(
                move |headers: HeaderMap, Path(op): Path<String>, body: Bytes| {
                    let console = Arc::clone(&cloudwatch);
                    async move {
                        if !console.sessions.signed_in(&headers) {
                            return unauthorized();
                        }
                        let ctx = console.context();
                        match crate::cloudwatch::read_only(&console.observe, &ctx, &op, &body).await
                        {
                            Ok(value) => json_response(StatusCode::OK, value),
                            Err(e) => json_response(
                                e.status,
                                json!({"code": e.code, "message": e.message}),
                            ),
                        }
                    }
                },
            ),
        )
}
