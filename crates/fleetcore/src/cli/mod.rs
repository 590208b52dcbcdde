//! Command-line conveniences over the control plane: `fleetcore thing ...` and
//! `fleetcore cert ...`. Each is a few signed calls to the same HTTP API boto3 uses.

mod cert;
pub(crate) mod client;
mod thing;

pub use cert::CertCommand;
pub use thing::ThingCommand;
