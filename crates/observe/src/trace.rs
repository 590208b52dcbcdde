//! OpenTelemetry export of traces: the spans capabilities open under
//! [`fleetcore_core::trace::TARGET`] (API requests, sampled messages through the broker, rule
//! action deliveries, function invocations) are sent to the OTLP/HTTP receiver of the metrics
//! exporter as JSON `ExportTraceServiceRequest`s (`POST <endpoint>/v1/traces`).
//!
//! [`TraceLayer`] gives each span W3C ids (a 16-byte trace id shared with its parent span or
//! taken from a `traceparent` field, an 8-byte span id), collects its fields as attributes and,
//! when it closes, hands it to a bounded queue ([`QUEUE_DEPTH`]); when the queue is full the
//! span is dropped and counted (`fleetcore_observe_otlp_spans_dropped_total`): tracing never
//! slows the traced work. [`start`] sends what is queued every [`FLUSH_EVERY`] or as soon as
//! [`BATCH`] spans wait. Until [`start`] runs (no endpoint configured), the layer keeps nothing.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetcore_core::sigv4::hex;
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::otlp::OtlpConfig;

/// Finished spans waiting for the exporter before new ones are dropped.
pub const QUEUE_DEPTH: usize = 4096;
/// Most spans in one export request.
pub const BATCH: usize = 512;
/// Longest time a finished span waits to be sent.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

static QUEUE: OnceLock<mpsc::Sender<FinishedSpan>> = OnceLock::new();

/// An attribute value as OTLP types it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    /// `stringValue`.
    Str(String),
    /// `intValue`.
    Int(i64),
    /// `doubleValue`.
    Double(f64),
    /// `boolValue`.
    Bool(bool),
}

/// A closed span, ready to export.
#[derive(Debug, Clone)]
pub struct FinishedSpan {
    /// W3C trace id.
    pub trace_id: [u8; 16],
    /// W3C span id.
    pub span_id: [u8; 8],
    /// The parent's span id, if any.
    pub parent_span_id: Option<[u8; 8]>,
    /// The span's name (`aws.request`, `mqtt.publish`, ...).
    pub name: &'static str,
    /// OTLP span kind: 1 internal, 2 server, 3 client.
    pub kind: u8,
    /// When it opened.
    pub start: SystemTime,
    /// When it closed.
    pub end: SystemTime,
    /// Its fields, except the `otel.*` and `traceparent` ones.
    pub attributes: Vec<(&'static str, AttributeValue)>,
    /// `Some(message)` when `otel.status_code` said `error`; OTLP status 2, else 0 (unset) or
    /// 1 (ok).
    pub status: (u8, Option<String>),
}

/// What the layer keeps in a span's extensions while it is open.
struct OpenSpan {
    span: FinishedSpan,
}

impl Visit for OpenSpan {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), AttributeValue::Str(value.to_string()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), AttributeValue::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(
            field.name(),
            AttributeValue::Int(i64::try_from(value).unwrap_or(i64::MAX)),
        );
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field.name(), AttributeValue::Double(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), AttributeValue::Bool(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.set(field.name(), AttributeValue::Str(format!("{value:?}")));
    }
}

impl OpenSpan {
    fn set(&mut self, name: &'static str, value: AttributeValue) {
        let text = || match &value {
            AttributeValue::Str(s) => s.clone(),
            other => format!("{other:?}"),
        };
        match name {
            "otel.kind" => {
                self.span.kind = match text().as_str() {
                    "server" => 2,
                    "client" => 3,
                    "producer" => 4,
                    "consumer" => 5,
                    _ => 1,
                }
            }
            "otel.status_code" => {
                self.span.status.0 = match text().to_ascii_lowercase().as_str() {
                    "ok" => 1,
                    "error" => 2,
                    _ => 0,
                }
            }
            "otel.status_message" => self.span.status.1 = Some(text()),
            "traceparent" => {
                // Only before the span has a parent of its own in this process.
                if self.span.parent_span_id.is_none()
                    && let Some((trace_id, parent)) = parse_traceparent(&text())
                {
                    self.span.trace_id = trace_id;
                    self.span.parent_span_id = Some(parent);
                }
            }
            _ => match self.span.attributes.iter_mut().find(|(k, _)| *k == name) {
                Some(slot) => slot.1 = value,
                None => self.span.attributes.push((name, value)),
            },
        }
    }
}

/// The trace id and parent span id of a W3C `traceparent` header value
/// (`00-<32 hex>-<16 hex>-<2 hex>`); `None` when malformed or all zero.
pub fn parse_traceparent(value: &str) -> Option<([u8; 16], [u8; 8])> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || flags.len() != 2 {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    unhex(trace, &mut trace_id)?;
    unhex(parent, &mut span_id)?;
    (trace_id != [0; 16] && span_id != [0; 8]).then_some((trace_id, span_id))
}

fn unhex(text: &str, out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(())
}

fn random_ids() -> ([u8; 16], [u8; 8]) {
    let mut bytes = [0u8; 24];
    // The OS source does not fail on a supported system; a zero id would be invalid, so fall
    // back to the clock rather than export one.
    if getrandom::fill(&mut bytes).is_err() || bytes[..16] == [0; 16] || bytes[16..] == [0; 8] {
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos())
            | 1;
        bytes[..16].copy_from_slice(&clock.to_le_bytes());
        bytes[16..].copy_from_slice(&(clock as u64).rotate_left(17).to_le_bytes());
    }
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    trace_id.copy_from_slice(&bytes[..16]);
    span_id.copy_from_slice(&bytes[16..]);
    (trace_id, span_id)
}

/// A tracing layer that turns spans into OTLP spans (install it with a filter on
/// [`fleetcore_core::trace::TARGET`]).
#[derive(Debug, Default)]
pub struct TraceLayer;

impl<S> tracing_subscriber::Layer<S> for TraceLayer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if QUEUE.get().is_none() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let (mut trace_id, span_id) = random_ids();
        let mut parent_span_id = None;
        if let Some(parent) = span.parent()
            && let Some(open) = parent.extensions().get::<OpenSpan>()
        {
            trace_id = open.span.trace_id;
            parent_span_id = Some(open.span.span_id);
        }
        let mut open = OpenSpan {
            span: FinishedSpan {
                trace_id,
                span_id,
                parent_span_id,
                name: attrs.metadata().name(),
                kind: 1,
                start: SystemTime::now(),
                end: SystemTime::now(),
                attributes: Vec::new(),
                status: (0, None),
            },
        };
        attrs.record(&mut open);
        span.extensions_mut().insert(open);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(open) = span.extensions_mut().get_mut::<OpenSpan>()
        {
            values.record(open);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(queue) = QUEUE.get() else { return };
        let Some(span) = ctx.span(&id) else { return };
        let Some(open) = span.extensions_mut().remove::<OpenSpan>() else {
            return;
        };
        let mut finished = open.span;
        finished.end = SystemTime::now();
        if queue.try_send(finished).is_err() {
            metrics::counter!("fleetcore_observe_otlp_spans_dropped_total").increment(1);
        }
    }
}

fn nanos(at: SystemTime) -> String {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

fn attribute(key: &str, value: &AttributeValue) -> Json {
    let value = match value {
        AttributeValue::Str(s) => json!({"stringValue": s}),
        // OTLP JSON carries 64-bit integers as strings.
        AttributeValue::Int(i) => json!({"intValue": i.to_string()}),
        AttributeValue::Double(d) => json!({"doubleValue": d}),
        AttributeValue::Bool(b) => json!({"boolValue": b}),
    };
    json!({"key": key, "value": value})
}

/// The `ExportTraceServiceRequest` of `spans`.
pub fn request(spans: &[FinishedSpan], config: &OtlpConfig) -> Json {
    let spans: Vec<Json> = spans
        .iter()
        .map(|s| {
            let mut span = json!({
                "traceId": hex(&s.trace_id),
                "spanId": hex(&s.span_id),
                "name": s.name,
                "kind": s.kind,
                "startTimeUnixNano": nanos(s.start),
                "endTimeUnixNano": nanos(s.end),
                "attributes": s.attributes.iter().map(|(k, v)| attribute(k, v)).collect::<Vec<_>>(),
                "status": match &s.status {
                    (code, Some(message)) => json!({"code": code, "message": message}),
                    (code, None) => json!({"code": code}),
                },
            });
            if let Some(parent) = s.parent_span_id {
                span["parentSpanId"] = json!(hex(&parent));
            }
            span
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": crate::otlp::resource_attributes(config)},
        "scopeSpans": [{"scope": {"name": "fleetcore"}, "spans": spans}],
    }]})
}

/// Starts exporting the spans [`TraceLayer`] finishes to `config.endpoint`'s `/v1/traces`. A
/// failed export is logged and counted (`fleetcore_observe_otlp_trace_export_failures_total`)
/// and its spans are given up (traces are samples: resending would only delay the next ones).
pub fn start(config: OtlpConfig) -> Option<JoinHandle<()>> {
    let (queue, mut spans) = mpsc::channel(QUEUE_DEPTH);
    if QUEUE.set(queue).is_err() {
        tracing::warn!("the OTLP trace exporter is already running");
        return None;
    }
    Some(tokio::spawn(async move {
        let url = format!("{}/v1/traces", config.endpoint.trim_end_matches('/'));
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "the OTLP trace exporter cannot build its HTTP client");
                return;
            }
        };
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let Some(first) = spans.recv().await else {
                return;
            };
            batch.push(first);
            let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(deadline, spans.recv()).await {
                    Ok(Some(span)) => batch.push(span),
                    Ok(None) | Err(_) => break,
                }
            }
            let body = request(&batch, &config);
            batch.clear();
            let sent = client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
                .send()
                .await
                .and_then(reqwest::Response::error_for_status);
            if let Err(error) = sent {
                metrics::counter!("fleetcore_observe_otlp_trace_export_failures_total")
                    .increment(1);
                tracing::warn!(%error, %url, "OTLP trace export failed");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_per_w3c() {
        let (trace, parent) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .expect("valid");
        assert_eq!(hex(&trace), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&parent), "00f067aa0ba902b7");
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn spans_encode_as_otlp_json() {
        let at = UNIX_EPOCH + Duration::from_millis(1500);
        let span = FinishedSpan {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: Some([3; 8]),
            name: "aws.request",
            kind: 2,
            start: at,
            end: at + Duration::from_millis(2),
            attributes: vec![
                ("rpc.method", AttributeValue::Str("ListThings".into())),
                ("http.response.status_code", AttributeValue::Int(200)),
            ],
            status: (2, Some("boom".into())),
        };
        let config = OtlpConfig {
            endpoint: "http://x".into(),
            interval: Duration::from_secs(1),
            instance: "i".into(),
        };
        let body = request(&[span], &config);
        let s = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "01".repeat(16));
        assert_eq!(s["spanId"], "02".repeat(8));
        assert_eq!(s["parentSpanId"], "03".repeat(8));
        assert_eq!(s["startTimeUnixNano"], "1500000000");
        assert_eq!(s["endTimeUnixNano"], "1502000000");
        assert_eq!(s["kind"], 2);
        assert_eq!(s["attributes"][1]["value"]["intValue"], "200");
        assert_eq!(s["status"]["code"], 2);
        assert_eq!(s["status"]["message"], "boom");
        let resource = &body["resourceSpans"][0]["resource"]["attributes"][0];
        assert_eq!(resource["value"]["stringValue"], "fleetcore");
    }

    #[test]
    fn the_layer_links_children_to_parents_and_queues_closed_spans() {
        use tracing_subscriber::layer::SubscriberExt;
        let (queue, mut finished) = mpsc::channel(16);
        assert!(
            QUEUE.set(queue).is_ok(),
            "only this test installs the queue"
        );
        let subscriber = tracing_subscriber::registry().with(TraceLayer);
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::trace_span!(
                target: fleetcore_core::trace::TARGET,
                "aws.request",
                otel.kind = "server",
                traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                http.response.status_code = tracing::field::Empty,
            );
            let _in_request = request.enter();
            let invoke = tracing::trace_span!(
                target: fleetcore_core::trace::TARGET,
                "function.invoke",
                otel.status_code = "error",
            );
            drop(invoke);
            request.record("http.response.status_code", 502u64);
        });
        let invoke = finished.try_recv().expect("the child closes first");
        let request = finished.try_recv().expect("then the request");
        assert_eq!(
            (invoke.name, request.name),
            ("function.invoke", "aws.request")
        );
        assert_eq!(hex(&request.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            request.parent_span_id,
            Some([0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert_eq!(invoke.trace_id, request.trace_id);
        assert_eq!(invoke.parent_span_id, Some(request.span_id));
        assert_ne!(invoke.span_id, request.span_id);
        assert_eq!((request.kind, invoke.status.0), (2, 2));
        assert_eq!(
            request.attributes,
            vec![("http.response.status_code", AttributeValue::Int(502))]
        );
        assert!(request.end >= request.start);
    }

    #[test]
    fn otel_fields_set_kind_status_and_parent() {
        let (trace_id, span_id) = random_ids();
        assert_ne!(trace_id, [0; 16]);
        let mut open = OpenSpan {
            span: FinishedSpan {
                trace_id,
                span_id,
                parent_span_id: None,
                name: "x",
                kind: 1,
                start: UNIX_EPOCH,
                end: UNIX_EPOCH,
                attributes: Vec::new(),
                status: (0, None),
            },
        };
        open.set("otel.kind", AttributeValue::Str("client".into()));
        open.set("otel.status_code", AttributeValue::Str("error".into()));
        open.set(
            "traceparent",
            AttributeValue::Str("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        );
        open.set("a", AttributeValue::Int(1));
        open.set("a", AttributeValue::Int(2));
        assert_eq!(open.span.kind, 3);
        assert_eq!(open.span.status.0, 2);
        assert_eq!(hex(&open.span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            open.span.parent_span_id,
            Some([0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert_eq!(open.span.attributes, vec![("a", AttributeValue::Int(2))]);
    }
}
