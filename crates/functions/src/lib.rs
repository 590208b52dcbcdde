//! Functions: Lambda-compatible user code for fleetcore.
//!
//! - `python3.x` and `nodejs*` functions run in pools of warm worker processes that fetch
//!   invocations over the documented Lambda Runtime API, through runtime interface clients this
//!   crate ships (`bootstrap/`); `provided*` functions run their own `bootstrap` the same way.
//! - WebAssembly modules run in process with wasmi ([`runtime::wasm`] documents the ABI).
//! - The `lambda` service API ([`api::routes`]) and Kinesis event source mappings ([`esm`]).
//! - [`Functions`] implements `fleetcore_core::FunctionInvoker`, the seam the rules engine's
//!   `lambda` action calls through.

pub mod api;
mod clock;
mod code;
mod error;
pub mod esm;
mod event_queue;
mod logs;
pub mod model;
pub mod runtime;
mod service;
mod targets;

pub use error::FunctionsError;
pub use esm::{Mappings, TABLE as EVENT_SOURCE_MAPPINGS_TABLE};
pub use service::{Functions, FunctionsConfig, Invoked, TABLE as FUNCTIONS_TABLE};
