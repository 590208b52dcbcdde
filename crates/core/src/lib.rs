//! Shared foundations of fleetcore: the storage trait every capability persists through (with its
//! embedded implementation) and the traits through which capabilities reach each other.

pub mod access;
pub mod arn;
pub mod auth;
pub mod events;
pub mod invoke;
pub mod notify;
pub mod store;

pub use arn::{AccountContext, Arn, ArnError};
pub use events::{InputError, InputFuture, InputMessage, InputSink};
pub use invoke::{FunctionInvoker, InvokeError, InvokeFuture, InvokeOutput};
pub use notify::{Notification, NotifyError, NotifyFuture, TopicPublisher};
pub use store::{KvStore, RedbStore, StoreError, WriteBatch};
