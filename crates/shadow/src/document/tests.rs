use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::request::parse_update;

fn update(doc: &mut ShadowDocument, payload: Value, ts: u64) -> Result<Applied, ShadowError> {
    let request =
        parse_update(payload.to_string().as_bytes(), &Limits::default()).map_err(|r| r.error)?;
    doc.apply(&request, ts, &Limits::default())
}

#[test]
fn merge_is_nested_null_deletes_and_arrays_replace() {
    let mut doc = ShadowDocument::default();
    update(
        &mut doc,
        json!({"state": {"desired": {"a": {"b": 1, "c": 2}, "list": [1, 2, 3], "x": 1}}}),
        10,
    )
    .expect("first");
    assert_eq!(doc.version, 1);
    update(
        &mut doc,
        json!({"state": {"desired": {"a": {"b": null}, "list": [9], "x": null}}}),
        20,
    )
    .expect("second");
    assert_eq!(doc.version, 2);
    assert_eq!(
        Value::Object(doc.desired.state.clone()),
        json!({"a": {"c": 2}, "list": [9]})
    );
    assert_eq!(
        Value::Object(doc.desired.metadata.clone()),
        json!({"a": {"c": {"timestamp": 10}}, "list": [{"timestamp": 20}]})
    );
    // deleting the last key of an object removes the object; an emptied section disappears
    update(
        &mut doc,
        json!({"state": {"desired": {"a": {"c": null}, "list": null}}}),
        30,
    )
    .expect("third");
    assert!(doc.desired.state.is_empty() && doc.desired.metadata.is_empty());
    assert_eq!(doc.state_json(true), json!({}));
}

#[test]
fn section_and_state_null_clear() {
    let mut doc = ShadowDocument::default();
    update(
        &mut doc,
        json!({"state": {"desired": {"a": 1}, "reported": {"a": 2}}}),
        1,
    )
    .expect("set");
    update(&mut doc, json!({"state": {"desired": null}}), 2).expect("clear desired");
    assert!(doc.desired.state.is_empty());
    assert_eq!(doc.reported.state.get("a"), Some(&json!(2)));
    update(&mut doc, json!({"state": null}), 3).expect("clear all");
    assert!(doc.reported.state.is_empty());
    assert_eq!(doc.version, 3);
}

#[test]
fn delta_is_desired_that_differs_nested() {
    let mut doc = ShadowDocument::default();
    update(
        &mut doc,
        json!({"state": {
            "desired": {"color": "green", "cfg": {"a": 1, "b": 2}, "list": [1, 2], "same": 5},
            "reported": {"color": "red", "cfg": {"a": 1, "b": 3}, "list": [1, 2], "same": 5, "only_reported": 1}
        }}),
        7,
    )
    .expect("set");
    let delta = doc.delta();
    assert_eq!(
        Value::Object(delta.clone()),
        json!({"color": "green", "cfg": {"b": 2}})
    );
    assert_eq!(
        Value::Object(doc.delta_metadata(&delta)),
        json!({"color": {"timestamp": 7}, "cfg": {"b": {"timestamp": 7}}})
    );
}

#[test]
fn touched_metadata_covers_exactly_the_request() {
    let mut doc = ShadowDocument::default();
    let applied = update(
        &mut doc,
        json!({"state": {"reported": {"t": 21, "gone": null, "n": {"x": [1, {"y": 2}]}}}}),
        42,
    )
    .expect("set");
    assert_eq!(
        applied.touched,
        json!({"reported": {"t": {"timestamp": 42}, "gone": {"timestamp": 42},
            "n": {"x": [{"timestamp": 42}, {"y": {"timestamp": 42}}]}}})
    );
}

#[test]
fn limits_refuse_without_counting_a_version() {
    let limits = Limits {
        max_state_bytes: 64,
        max_depth: 6,
    };
    let doc = ShadowDocument::default();
    let big = json!({"state": {"desired": {"k": "x".repeat(100)}}}).to_string();
    let request = parse_update(big.as_bytes(), &limits).expect("parses");
    let mut working = doc.clone();
    let err = working.apply(&request, 1, &limits).expect_err("too large");
    assert_eq!(err.code(), 413);
    assert_eq!(working.version, 0, "a refused update does not count");
    assert_eq!(depth(&json!({"a": {"b": [{"c": 1}]}})), 3);
}

// -- properties ---------------------------------------------------------------------------------

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (0i64..4).prop_map(Value::from),
        "[a-c]{0,2}".prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Object> {
    prop::collection::btree_map("[a-d]", value(), 0..4).prop_map(|m| m.into_iter().collect())
}

/// The reference semantics, written independently of `merge`: RFC 7386 JSON merge patch,
/// then empty objects pruned.
fn reference_merge(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = match target {
                Value::Object(t) => t.clone(),
                _ => Object::new(),
            };
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = reference_merge(out.get(k).unwrap_or(&Value::Null), v);
                    if merged.as_object().is_some_and(Object::is_empty) {
                        out.remove(k);
                    } else {
                        out.insert(k.clone(), merged);
                    }
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// Metadata mirrors state: same keys at every object level.
fn mirrors(state: &Object, metadata: &Object) -> bool {
    state.len() == metadata.len()
        && state.iter().all(|(k, v)| match (v, metadata.get(k)) {
            (Value::Object(s), Some(Value::Object(m))) => mirrors(s, m),
            (Value::Array(a), Some(Value::Array(m))) => a.len() == m.len(),
            (_, Some(Value::Object(m))) => m.contains_key("timestamp"),
            _ => false,
        })
}

proptest! {
    #[test]
    fn merge_matches_the_reference(start in object(), patch in object()) {
        let mut state = Object::new();
        let mut metadata = Object::new();
        merge(&mut state, &mut metadata, &start, 1);
        let expected_start = reference_merge(&Value::Object(Object::new()), &Value::Object(start));
        prop_assert_eq!(Value::Object(state.clone()), expected_start.clone());
        merge(&mut state, &mut metadata, &patch, 2);
        let expected = reference_merge(&expected_start, &Value::Object(patch));
        prop_assert_eq!(Value::Object(state.clone()), expected);
        prop_assert!(mirrors(&state, &metadata), "state {:?} metadata {:?}", state, metadata);
    }

    #[test]
    fn merge_leaves_no_top_level_nulls(patch in object()) {
        let mut state = Object::new();
        let mut metadata = Object::new();
        merge(&mut state, &mut metadata, &patch, 1);
        // nulls inside arrays are data; nulls and empty objects as object members are not kept
        let only_objects = |v: &Value| match v { Value::Object(m) => m.values().all(|x| !x.is_null()), _ => true };
        prop_assert!(state.values().all(|v| !v.is_null() && only_objects(v)));
    }

    #[test]
    fn delta_is_empty_iff_reported_covers_desired(desired in object(), reported in object()) {
        let mut d = Object::new();
        let mut r = Object::new();
        merge(&mut d, &mut Object::new(), &desired, 1);
        merge(&mut r, &mut Object::new(), &reported, 1);
        let delta = delta(&d, &r);
        // after reporting the delta, nothing is left
        let mut synced = r.clone();
        merge(&mut synced, &mut Object::new(), &delta, 2);
        prop_assert!(super::delta(&d, &synced).is_empty(), "d {:?} synced {:?}", d, synced);
        // every delta key is a desired key
        prop_assert!(delta.keys().all(|k| d.contains_key(k)));
        // reporting exactly the desired state leaves no delta
        let mut same = Object::new();
        merge(&mut same, &mut Object::new(), &d, 3);
        prop_assert!(super::delta(&d, &same).is_empty());
    }
}
