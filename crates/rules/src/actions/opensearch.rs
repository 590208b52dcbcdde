//! `openSearch`: indexes the rule's output as a document in an OpenSearch domain over the
//! `_bulk` API, through the server's pooled [`HttpsClient`]: one bulk request per batch, and
//! each item's status in the bulk answer is its message's outcome (a mapping conflict fails
//! only the documents it concerns). `index` and `id` are templates; an id that expands to
//! nothing lets OpenSearch choose one. `type` is required by AWS's shape and checked, but not
//! sent: OpenSearch 2 has no mapping types. `endpoint` must be `https://`. No request signing
//! (the AWS action signs with its role; a self-hosted domain is reached with its TLS trust).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::https::{HttpsClient, check_https};
use super::{Action, ActionSpec, Destinations, Members, Pipelining, Prepared};
use crate::sql::Template;

/// Most bytes one bulk request carries; a larger batch is split (OpenSearch's default
/// `http.max_content_length` is 100 MB, AWS domains take 10 MiB on the smallest instances).
const MAX_BULK_BYTES: usize = 10 << 20;

/// The members of an openSearch action.
pub(super) struct OpenSearchSpec {
    bulk_url: reqwest::Url,
    /// `[index, id]`.
    templates: Vec<Template>,
}

impl ActionSpec for OpenSearchSpec {
    const KIND: &'static str = "openSearch";

    fn parse(members: &Members<'_>) -> Result<OpenSearchSpec, String> {
        let endpoint = members.required_str("endpoint")?;
        let parsed = check_https(endpoint).map_err(|e| format!("openSearch.endpoint: {e}"))?;
        if parsed.query().is_some() {
            return Err("openSearch.endpoint must not have a query".into());
        }
        members.required_str("type")?;
        let index = members.required_template("index")?;
        let id = members.required_template("id")?;
        let bulk_url = check_https(&format!("{}/_bulk", endpoint.trim_end_matches('/')))
            .map_err(|e| format!("openSearch.endpoint: {e}"))?;
        Ok(OpenSearchSpec {
            bulk_url,
            templates: vec![index, id],
        })
    }

    fn start(self, destinations: &Destinations) -> Result<Arc<dyn Action>, String> {
        Ok(Arc::new(OpenSearch {
            client: destinations.https.clone(),
            spec: self,
        }))
    }
}

/// The openSearch action.
struct OpenSearch {
    client: HttpsClient,
    spec: OpenSearchSpec,
}

/// Appends the bulk lines of one message (action line, document line), or says why it has
/// none.
fn bulk_lines(out: &mut Vec<u8>, item: &Prepared) -> Result<(), String> {
    let index = item.params.first().map_or("", String::as_str);
    let id = item.params.get(1).map_or("", String::as_str);
    if index.is_empty() {
        return Err("the index template expanded to nothing".into());
    }
    // The document must be one JSON object on one line; the rule output is compact JSON.
    let document: Value = serde_json::from_slice(&item.body)
        .map_err(|_| "the rule output is not JSON: OpenSearch indexes JSON documents")?;
    if !document.is_object() {
        return Err("the rule output is not a JSON object: OpenSearch indexes objects".into());
    }
    let action = if id.is_empty() {
        json!({"index": {"_index": index}})
    } else {
        json!({"index": {"_index": index, "_id": id}})
    };
    serde_json::to_writer(&mut *out, &action).map_err(|e| e.to_string())?;
    out.push(b'\n');
    if item.body.contains(&b'\n') {
        serde_json::to_writer(&mut *out, &document).map_err(|e| e.to_string())?;
    } else {
        out.extend_from_slice(&item.body);
    }
    out.push(b'\n');
    Ok(())
}

/// The outcome of each item of a bulk answer, in order.
fn item_outcomes(body: &[u8], expected: usize) -> Result<Vec<Result<(), String>>, String> {
    let answer: Value =
        serde_json::from_slice(body).map_err(|e| format!("the bulk answer is not JSON: {e}"))?;
    let items = answer
        .get("items")
        .and_then(Value::as_array)
        .ok_or("the bulk answer has no items")?;
    if items.len() != expected {
        return Err(format!(
            "the bulk answer has {} items for {expected} documents",
            items.len()
        ));
    }
    Ok(items
        .iter()
        .map(|item| {
            let result = item
                .as_object()
                .and_then(|o| o.values().next())
                .ok_or("a bulk answer item names no operation")?;
            let status = result.get("status").and_then(Value::as_u64).unwrap_or(0);
            if (200..300).contains(&status) {
                return Ok(());
            }
            let error = result.get("error");
            let kind = error
                .and_then(|e| e.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("error");
            let reason = error
                .and_then(|e| e.get("reason"))
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            Err(format!(
                "OpenSearch refused the document ({status} {kind}): {reason}"
            ))
        })
        .collect())
}

impl OpenSearch {
    /// Sends one bulk request for `members` (indices into `items`), writing their outcomes.
    async fn bulk(&self, body: Vec<u8>, members: &[usize], outcomes: &mut [Result<(), String>]) {
        let url = &self.spec.bulk_url;
        let result = match self
            .client
            .post(
                url.clone(),
                "application/x-ndjson",
                HeaderMap::new(),
                Bytes::from(body),
            )
            .await
        {
            Ok(answer) if answer.status.is_success() => item_outcomes(&answer.body, members.len()),
            Ok(answer) => Err(format!(
                "POST {url} answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body[..answer.body.len().min(512)])
            )),
            Err(e) => Err(e),
        };
        match result {
            Ok(results) => {
                for (&i, r) in members.iter().zip(results) {
                    outcomes[i] = r;
                }
            }
            Err(e) => {
                for &i in members {
                    outcomes[i] = Err(e.clone());
                }
            }
        }
    }
}

#[async_trait]
impl Action for OpenSearch {
    fn name(&self) -> &'static str {
        "OpenSearchAction"
    }

    fn templates(&self) -> &[Template] {
        &self.spec.templates
    }

    /// Bulk requests of a few batches at once: the domain indexes one while the next travels.
    fn pipelining(&self) -> Pipelining {
        Pipelining {
            batch: usize::MAX,
            in_flight: 4,
        }
    }

    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
        let mut outcomes: Vec<Result<(), String>> = vec![Ok(()); items.len()];
        let mut body = Vec::new();
        let mut members = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let start = body.len();
            if let Err(e) = bulk_lines(&mut body, item) {
                body.truncate(start);
                outcomes[i] = Err(e);
                continue;
            }
            members.push(i);
            if body.len() >= MAX_BULK_BYTES {
                self.bulk(std::mem::take(&mut body), &members, &mut outcomes)
                    .await;
                members.clear();
            }
        }
        if !members.is_empty() {
            self.bulk(body, &members, &mut outcomes).await;
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::SqlVersion;

    fn item(body: &str, index: &str, id: &str) -> Prepared {
        Prepared {
            body: Bytes::from(body.to_string()),
            params: vec![index.into(), id.into()],
        }
    }

    #[test]
    fn bulk_lines_are_action_then_document() {
        let mut out = Vec::new();
        bulk_lines(&mut out, &item(r#"{"t":1}"#, "telemetry", "d1")).expect("ok");
        bulk_lines(&mut out, &item("{\"t\":\n2}", "telemetry", "")).expect("ok");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "{\"index\":{\"_id\":\"d1\",\"_index\":\"telemetry\"}}\n{\"t\":1}\n\
             {\"index\":{\"_index\":\"telemetry\"}}\n{\"t\":2}\n"
        );
        let mut out = Vec::new();
        assert!(bulk_lines(&mut out, &item("[1]", "i", "d")).is_err());
        assert!(bulk_lines(&mut out, &item("text", "i", "d")).is_err());
        assert!(bulk_lines(&mut out, &item("{}", "", "d")).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn each_bulk_item_is_its_message_outcome() {
        let answer = br#"{"took":3,"errors":true,"items":[
            {"index":{"_index":"t","_id":"1","status":201,"result":"created"}},
            {"index":{"_index":"t","_id":"2","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [t]"}}}
        ]}"#;
        let outcomes = item_outcomes(answer, 2).expect("parsed");
        assert!(outcomes[0].is_ok());
        let error = outcomes[1].clone().unwrap_err();
        assert!(error.contains("mapper_parsing_exception"), "{error}");
        assert!(item_outcomes(answer, 3).is_err());
        assert!(item_outcomes(b"<html>", 1).is_err());
    }

    #[test]
    fn members_are_checked() {
        let parse = |v: Value| {
            OpenSearchSpec::parse(&Members::new("openSearch", &v, SqlVersion::V2016_03_23))
        };
        let ok = parse(json!({"roleArn": "r", "endpoint": "https://search.test:9200/", "index": "t-${topic(2)}", "type": "_doc", "id": "${newuuid()}"}))
            .expect("valid");
        assert_eq!(ok.bulk_url.as_str(), "https://search.test:9200/_bulk");
        assert!(
            parse(
                json!({"endpoint": "http://search.test", "index": "t", "type": "_doc", "id": "i"})
            )
            .is_err()
        );
        assert!(
            parse(json!({"endpoint": "https://search.test", "type": "_doc", "id": "i"})).is_err()
        );
    }
}
