//! Shared foundations of fleetcore: the storage trait every capability persists through (with its
//! embedded implementation), the traits through which capabilities reach each other, and
//! the Signature V4 core that both the API (verifying) and rule actions (signing) use.

pub mod access;
pub mod analytics;
pub mod arn;
pub mod auth;
pub mod cloudwatch;
pub mod error_text;
pub mod events;
pub mod invoke;
pub mod notify;
pub mod sigv4;
pub mod store;
pub mod trace;

pub use analytics::{ChannelError, ChannelFuture, ChannelMessage, ChannelSink, DeviceDirectory};
pub use arn::{AccountContext, Arn, ArnError};
pub use cloudwatch::{
    CloudWatchError, CloudWatchFuture, CloudWatchSink, InvocationLogSink, MetricValue,
};
pub use events::{InputError, InputFuture, InputMessage, InputSink};
pub use invoke::{FunctionInvoker, InvokeEachFuture, InvokeError, InvokeFuture, InvokeOutput};
pub use notify::{
    Channel, DirectFuture, DirectMessage, Notification, NotifyError, NotifyFuture, Recipient,
    RecipientNotifier, TopicPublisher,
};
pub use store::{KvStore, RedbStore, StoreError, WriteBatch};
