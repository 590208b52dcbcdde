//! IoT Events for fleetcore: inputs, detector models and their detectors (one state machine per
//! key value, with variables and timers that survive a crash), and the `iotevents` /
//! `iotevents-data` services over the control plane.
//!
//! ```text
//! let events = Events::start(store, targets, account, EventsConfig::default())?;
//! control_plane.service("iotevents", api::control_routes(events.clone()))
//!              .service("ioteventsdata", api::data_routes(events));
//! ```

pub mod actions;
pub mod alarm;
pub mod api;
mod engine;
mod error;
pub mod expr;
pub mod model;

pub use actions::{MqttPublisher, RecordFuture, RecordSink, Targets};
pub use engine::{Events, EventsConfig, Instance, LatenessObserver};
pub use error::EventsError;
