//! The `lambda` service (REST-JSON, signing name `lambda`) over the control plane: function
//! CRUD, Invoke, versions and aliases, permissions, concurrency, event source mappings. boto3's
//! `lambda` client and the aws CLI work unchanged.

mod functions;
mod invoke;
mod mappings;
mod shapes;
mod versions;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post, put};

use crate::esm::Mappings;
use crate::service::Functions;

/// Largest request body: a 50 MB zip in base64 plus the envelope.
pub const BODY_LIMIT: usize = 70 * 1024 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct LambdaState {
    /// The functions.
    pub functions: Arc<Functions>,
    /// The event source mappings.
    pub mappings: Arc<Mappings>,
}

/// The service's router, for `ControlPlane::service_with_body_limit("lambda", ..., BODY_LIMIT)`.
pub fn routes(state: LambdaState) -> Router {
    Router::new()
        .route(
            "/2015-03-31/functions",
            post(functions::create).get(functions::list),
        )
        .route(
            "/2015-03-31/functions/{name}",
            get(functions::get).delete(functions::delete),
        )
        .route(
            "/2015-03-31/functions/{name}/configuration",
            get(functions::get_configuration).put(functions::update_configuration),
        )
        .route(
            "/2015-03-31/functions/{name}/code",
            put(functions::update_code),
        )
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke::invoke),
        )
        .route(
            "/2015-03-31/functions/{name}/versions",
            post(versions::publish).get(versions::list),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases",
            post(versions::create_alias).get(versions::list_aliases),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases/{alias}",
            get(versions::get_alias)
                .put(versions::update_alias)
                .delete(versions::delete_alias),
        )
        .route(
            "/2015-03-31/functions/{name}/policy",
            post(versions::add_permission).get(versions::get_policy),
        )
        .route(
            "/2015-03-31/functions/{name}/policy/{sid}",
            axum::routing::delete(versions::remove_permission),
        )
        .route(
            "/2017-10-31/functions/{name}/concurrency",
            put(versions::put_concurrency).delete(versions::delete_concurrency),
        )
        .route(
            "/2019-09-30/functions/{name}/concurrency",
            get(versions::get_concurrency),
        )
        .route(
            "/2015-03-31/event-source-mappings",
            post(mappings::create).get(mappings::list),
        )
        .route(
            "/2015-03-31/event-source-mappings/",
            post(mappings::create).get(mappings::list),
        )
        .route(
            "/2015-03-31/event-source-mappings/{uuid}",
            get(mappings::get)
                .put(mappings::update)
                .delete(mappings::delete),
        )
        .with_state(state)
}
