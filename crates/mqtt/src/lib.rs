//! MQTT for fleetcore: the 3.1.1 + 5.0 codec, topic matching, sessions, the router and the
//! network transports.

pub mod broker;
pub mod protocol;
pub mod topic;
pub mod topic_tree;
