//! `firehose{deliveryStreamName, separator, payload}`: puts a record into a delivery stream
//! of this server's archive (the same archive the rules `firehose` action writes to).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value as Json;

use super::payload::Payload;
use super::{DetectorAction, Effect, RecordSink, Run, Targets, needs, required_str};
use crate::expr::Expr;

struct Firehose {
    sink: Arc<dyn RecordSink>,
    stream: String,
    separator: &'static str,
    payload: Payload,
}

pub(super) fn build(members: &Json, targets: &Targets) -> Result<Box<dyn DetectorAction>, String> {
    let separator = match members.get("separator").and_then(Json::as_str) {
        None => "",
        Some("\n") => "\n",
        Some("\t") => "\t",
        Some("\r\n") => "\r\n",
        Some(",") => ",",
        Some(other) => {
            return Err(format!(
                "separator must be \\n, \\t, \\r\\n or a comma, not {other:?}"
            ));
        }
    };
    Ok(Box::new(Firehose {
        sink: needs(&targets.firehose, "delivery streams")?,
        stream: required_str(members, "deliveryStreamName")?.to_string(),
        separator,
        payload: Payload::parse(members)?,
    }))
}

impl DetectorAction for Firehose {
    fn expressions(&self) -> Vec<&Expr> {
        self.payload.expressions()
    }

    fn run(&self, run: &mut Run<'_>) {
        let mut record = self.payload.render(run);
        record.push_str(self.separator);
        let sink = Arc::clone(&self.sink);
        let stream = self.stream.clone();
        run.effects.push(Effect {
            action: "firehose",
            call: Box::pin(async move { sink.put_record(&stream, Bytes::from(record)).await }),
        });
    }
}
