//! The store's write path (events stored as chunks) against what the API reads back.

use super::*;

fn store() -> (tempfile::TempDir, LogStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LogStore::open(dir.path(), "us-east-1", "000000000000").expect("open");
    (dir, store)
}

fn events(pairs: &[(i64, &str)]) -> Vec<InputEvent> {
    pairs
        .iter()
        .map(|&(timestamp, message)| InputEvent {
            timestamp,
            message: message.to_string(),
        })
        .collect()
}

fn messages(events: &[StoredEvent]) -> Vec<&str> {
    events.iter().map(|e| e.message.as_str()).collect()
}

fn get(store: &LogStore, body: Json) -> Json {
    store
        .get_events(serde_json::from_value(body).expect("input"))
        .expect("GetLogEvents")
}

fn texts(page: &Json) -> Vec<&str> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["message"].as_str().expect("message"))
        .collect()
}

#[test]
fn puts_of_overlapping_times_read_back_in_time_order() {
    let (_dir, store) = store();
    let t = now_ms() - 3_600_000;
    store.create_group("g", None).expect("group");
    store.create_stream("g", "s").expect("stream");
    store
        .put("g", "s", &events(&[(t, "a"), (t + 20, "c"), (t + 40, "e")]))
        .expect("put");
    // A later put of events in between: its chunk overlaps the first one's times.
    store
        .put(
            "g",
            "s",
            &events(&[(t + 10, "b"), (t + 20, "d"), (t + 50, "f")]),
        )
        .expect("put");
    let all = store
        .stream_events("g", "s", i64::MIN, i64::MAX)
        .expect("read");
    assert_eq!(messages(&all), ["a", "b", "c", "d", "e", "f"]);
    // Same timestamp: stored order (the sequence) decides.
    assert!(all[2].seq < all[3].seq);
    let window = store.stream_events("g", "s", t + 10, t + 40).expect("read");
    assert_eq!(messages(&window), ["b", "c", "d"]);
    // Pages forward and back over both chunks.
    let first = get(
        &store,
        json!({"logGroupName": "g", "logStreamName": "s", "startFromHead": true, "limit": 4}),
    );
    assert_eq!(texts(&first), ["a", "b", "c", "d"]);
    let next = get(
        &store,
        json!({"logGroupName": "g", "logStreamName": "s", "limit": 4,
               "nextToken": first["nextForwardToken"]}),
    );
    assert_eq!(texts(&next), ["e", "f"]);
    let back = get(
        &store,
        json!({"logGroupName": "g", "logStreamName": "s", "limit": 3,
               "nextToken": next["nextBackwardToken"]}),
    );
    assert_eq!(texts(&back), ["b", "c", "d"]);
    let filtered = store
        .filter_events(
            serde_json::from_value(json!({"logGroupName": "g", "filterPattern": "?b ?e"}))
                .expect("input"),
        )
        .expect("FilterLogEvents");
    assert_eq!(texts(&filtered), ["b", "e"]);
}

#[test]
fn a_range_finds_events_of_a_chunk_that_starts_before_it() {
    let (_dir, store) = store();
    let t = now_ms() - 20 * 3_600_000;
    store.create_group("g", None).expect("group");
    store.create_stream("g", "s").expect("stream");
    // One put: one chunk from t to t + 10 h.
    store
        .put(
            "g",
            "s",
            &events(&[
                (t, "early"),
                (t + 5 * 3_600_000, "mid"),
                (t + 10 * 3_600_000, "late"),
            ]),
        )
        .expect("put");
    let found = store
        .stream_events("g", "s", t + 3_600_000, t + 6 * 3_600_000)
        .expect("read");
    assert_eq!(messages(&found), ["mid"]);
    let page = get(
        &store,
        json!({"logGroupName": "g", "logStreamName": "s", "startTime": t + 1, "startFromHead": true}),
    );
    assert_eq!(texts(&page), ["mid", "late"]);
}

#[test]
fn expiry_drops_old_events_and_keeps_the_newer_part_of_a_chunk() {
    let (_dir, store) = store();
    let now = now_ms();
    let day = 86_400_000;
    store.create_group("g", None).expect("group");
    store.create_stream("g", "s").expect("stream");
    store
        .put(
            "g",
            "s",
            &events(&[(now - 3 * day, "old1"), (now - 3 * day + 5, "old2")]),
        )
        .expect("put");
    // A chunk across the cutoff (now - 1 day).
    store
        .put(
            "g",
            "s",
            &events(&[
                (now - day - 10, "old3"),
                (now - day + 10, "new1"),
                (now - day + 20, "new2"),
            ]),
        )
        .expect("put");
    let before = store
        .stream_events("g", "s", i64::MIN, i64::MAX)
        .expect("read");
    store.set_retention("g", Some(1)).expect("retention");
    assert_eq!(store.expire(now).expect("expire"), 3);
    let after = store
        .stream_events("g", "s", i64::MIN, i64::MAX)
        .expect("read");
    assert_eq!(messages(&after), ["new1", "new2"]);
    // The kept events keep their identity (timestamp and sequence): tokens stay valid.
    assert_eq!(after[..], before[3..]);
    assert_eq!(store.expire(now).expect("expire again"), 0);
}

#[test]
fn append_all_creates_groups_and_streams_and_stores_every_line() {
    let (_dir, store) = store();
    let t = now_ms();
    store
        .append_all(vec![
            Appended {
                group: "/aws/lambda/f",
                stream: "x",
                // Out of order: stored in time order.
                events: vec![(t + 1, "START\n"), (t, "first\n")],
            },
            Appended {
                group: "/aws/lambda/f",
                stream: "y",
                events: vec![(t, "other\n")],
            },
            Appended {
                group: "/aws/lambda/f",
                stream: "x",
                events: vec![(t + 2, "END\n")],
            },
        ])
        .expect("append");
    let x = store
        .stream_events("/aws/lambda/f", "x", i64::MIN, i64::MAX)
        .expect("x");
    assert_eq!(messages(&x), ["first\n", "START\n", "END\n"]);
    let y = store
        .stream_events("/aws/lambda/f", "y", i64::MIN, i64::MAX)
        .expect("y");
    assert_eq!(messages(&y), ["other\n"]);
    let streams = store
        .describe_streams("/aws/lambda/f", None, false, false)
        .expect("describe");
    assert_eq!(streams["logStreams"][0]["storedBytes"], 6 + 6 + 4);
    assert_eq!(streams["logStreams"][0]["firstEventTimestamp"], t);
    assert_eq!(streams["logStreams"][0]["lastEventTimestamp"], t + 2);
    // Events PutLogEvents would refuse are left out, the rest stored.
    store
        .append(
            "/aws/lambda/f",
            "y",
            &events(&[(t - 15 * 86_400_000, "too old"), (t, "ok")]),
        )
        .expect("append");
    let y = store
        .stream_events("/aws/lambda/f", "y", i64::MIN, i64::MAX)
        .expect("y");
    assert_eq!(messages(&y), ["other\n", "ok"]);
}

#[test]
fn a_store_of_one_row_per_event_is_converted_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = now_ms();
    {
        // The layout before chunks, written by hand.
        let db = Database::create(dir.path().join("logs.redb")).expect("db");
        let txn = db.begin_write().expect("txn");
        {
            let mut groups = txn.open_table(GROUPS).expect("groups");
            groups
                .insert(
                    "g",
                    json!({"created": t, "retention": null})
                        .to_string()
                        .as_bytes(),
                )
                .expect("group");
            let mut streams = txn.open_table(STREAMS).expect("streams");
            for s in ["s1", "s2"] {
                let record = json!({"created": t, "bytes": 4, "first": t, "last": t + 1});
                streams
                    .insert(("g", s), record.to_string().as_bytes())
                    .expect("stream");
            }
            let mut old = txn.open_table(EVENTS).expect("events");
            // s1: one put of two events (seq 10, 11), then one of another time (seq 40).
            for (s, ts, seq, m, i) in [
                ("s1", t, 10, "a", t),
                ("s1", t, 11, "b", t),
                ("s1", t + 1, 40, "c", t + 9),
                ("s2", t, 12, "z", t),
            ] {
                old.insert(
                    ("g", s, ts, seq),
                    json!({"m": m, "i": i}).to_string().as_bytes(),
                )
                .expect("event");
            }
        }
        txn.commit().expect("commit");
    }
    let store = LogStore::open(dir.path(), "us-east-1", "000000000000").expect("open");
    let s1 = store
        .stream_events("g", "s1", i64::MIN, i64::MAX)
        .expect("s1");
    let got: Vec<_> = s1
        .iter()
        .map(|e| (e.timestamp, e.seq, e.ingestion, e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [(t, 10, t, "a"), (t, 11, t, "b"), (t + 1, 40, t + 9, "c")]
    );
    let s2 = store
        .stream_events("g", "s2", i64::MIN, i64::MAX)
        .expect("s2");
    assert_eq!(messages(&s2), ["z"]);
    let txn = store.db.begin_read().expect("read");
    assert!(
        !txn.list_tables()
            .expect("tables")
            .any(|t| t.name() == EVENTS.name()),
        "the old table is gone"
    );
}
