//! `iotAnalytics`: stores the rule's output in an analytics channel through core's
//! `ChannelSink` seam (implemented by the analytics capability, wired by the binary). The
//! channel is `channelName`, or the name in `channelArn` (`arn:...:channel/<name>`); in
//! `batchMode` the output must be a JSON array and each element is one message. A message
//! counts as delivered once the channel has it on disk; an unknown channel or an output that
//! is not a JSON object fails it (the errorAction fires).

use std::sync::Arc;

use async_trait::async_trait;
use fleetcore_core::{ChannelMessage, ChannelSink};
use serde_json::Value;

use super::{Action, ActionSpec, Destinations, Members, Prepared};
use crate::sql::Template;

/// The members of an iotAnalytics action.
pub(super) struct IotAnalyticsSpec {
    channel: String,
    batch_mode: bool,
}

impl ActionSpec for IotAnalyticsSpec {
    const KIND: &'static str = "iotAnalytics";

    fn parse(members: &Members<'_>) -> Result<IotAnalyticsSpec, String> {
        let channel = match (members.str("channelName")?, members.str("channelArn")?) {
            (Some(name), _) if !name.is_empty() => name.to_string(),
            (_, Some(arn)) => arn
                .split_once(":channel/")
                .map(|(_, name)| name.to_string())
                .filter(|name| !name.is_empty())
                .ok_or_else(|| format!("channelArn {arn} does not name a channel"))?,
            _ => return Err("iotAnalytics needs channelName or channelArn".into()),
        };
        Ok(IotAnalyticsSpec {
            channel,
            batch_mode: members.bool("batchMode", false)?,
        })
    }

    fn start(self, destinations: &Destinations) -> Result<Arc<dyn Action>, String> {
        let channels = destinations
            .analytics
            .clone()
            .ok_or_else(|| "this server runs no analytics channels".to_string())?;
        Ok(Arc::new(IotAnalytics {
            channels,
            spec: self,
        }))
    }
}

/// The iotAnalytics action.
struct IotAnalytics {
    channels: Arc<dyn ChannelSink>,
    spec: IotAnalyticsSpec,
}

impl IotAnalytics {
    /// The messages of one rule output.
    fn messages(&self, item: &Prepared) -> Result<Vec<ChannelMessage>, String> {
        if !self.spec.batch_mode {
            return Ok(vec![ChannelMessage {
                message_id: "0".into(),
                payload: item.body.to_vec(),
            }]);
        }
        match serde_json::from_slice::<Value>(&item.body) {
            Ok(Value::Array(elements)) if !elements.is_empty() && elements.len() <= 100 => {
                Ok(elements
                    .iter()
                    .enumerate()
                    .map(|(n, e)| ChannelMessage {
                        message_id: n.to_string(),
                        payload: e.to_string().into_bytes(),
                    })
                    .collect())
            }
            _ => Err(
                "batchMode needs the rule output to be a JSON array of 1 to 100 messages".into(),
            ),
        }
    }
}

#[async_trait]
impl Action for IotAnalytics {
    fn name(&self) -> &'static str {
        "IotAnalyticsAction"
    }

    fn resource(&self, _params: &[String]) -> String {
        self.spec.channel.clone()
    }

    fn templates(&self) -> &[Template] {
        &[]
    }

    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
        let mut outcomes = Vec::with_capacity(items.len());
        let mut messages = Vec::new();
        // Which messages belong to which item, so one put serves the whole batch.
        let mut spans = Vec::with_capacity(items.len());
        for item in items {
            match self.messages(item) {
                Ok(batch) => {
                    spans.push(Ok(messages.len()..messages.len() + batch.len()));
                    messages.extend(batch);
                }
                Err(e) => spans.push(Err(e)),
            }
        }
        let results = if messages.is_empty() {
            Vec::new()
        } else {
            self.channels.put(&self.spec.channel, messages).await
        };
        for span in spans {
            outcomes.push(span.and_then(|range| {
                match results
                    .get(range)
                    .map(|r| r.iter().find_map(|o| o.as_ref().err()))
                {
                    Some(None) => Ok(()),
                    Some(Some(e)) => Err(e.to_string()),
                    None => Err("the channel answered fewer outcomes than messages".into()),
                }
            }));
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::SqlVersion;
    use serde_json::json;

    #[test]
    fn takes_the_channel_from_its_name_or_arn() {
        let parse = |v: Value| {
            IotAnalyticsSpec::parse(&Members::new("iotAnalytics", &v, SqlVersion::default()))
        };
        assert_eq!(parse(json!({"channelName": "c1"})).unwrap().channel, "c1");
        let arn = json!({"channelArn": "arn:aws:iotanalytics:us-east-1:000000000000:channel/c2"});
        assert_eq!(parse(arn).unwrap().channel, "c2");
        assert!(
            parse(json!({"channelArn": "arn:aws:iotanalytics:us-east-1:0:datastore/x"})).is_err()
        );
        assert!(parse(json!({})).is_err());
    }
}
