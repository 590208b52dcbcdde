//! fleetcore's infrastructure as code: Terraform-syntax `.tf` files (the AWS provider's
//! resource types fleetcore serves) planned, applied and destroyed through the server's HTTP
//! API, with a state file beside the configuration.

pub mod api;
pub mod config;
pub mod engine;
pub mod error;
pub mod eval;
pub mod graph;
pub mod plan;
pub mod refs;
pub mod resources;
pub mod schema;
pub mod source;
pub mod state;

pub use api::{Api, ApiError, HttpRequest, HttpResponse, Transport};
pub use config::{VarInputs, parse_var};
pub use engine::{Plan, Refreshed, Stack, destroy};
pub use error::StackError;
pub use state::State;
