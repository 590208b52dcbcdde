//! `PgStore` against a real PostgreSQL started per test: the `KvStore` contract (as the redb store
//! keeps it), migrations run once by any number of nodes, and other nodes' changes heard within
//! a second.

mod support;

use std::time::Duration;

use fleetcore_core::{KvStore, WriteBatch};
use fleetcore_postgres::{Change, ChangeFeed, PgStore, PgStoreConfig, SCHEMA_VERSION};
use support::Postgres;

fn node(pg: &Postgres, id: &str) -> (PgStore, ChangeFeed) {
    let mut config = PgStoreConfig::new(&pg.url, id);
    config.watched = vec!["iot_"];
    PgStore::connect(config).expect("connect to PostgreSQL")
}

#[test]
fn keeps_the_kv_store_contract() {
    let Some(pg) = Postgres::start() else { return };
    let (s, _feed) = node(&pg, "a");
    assert_eq!(s.get("t", b"k").expect("get"), None);
    assert!(s.scan_prefix("t", b"").expect("scan").is_empty());

    let mut b = WriteBatch::new();
    b.put("t", b"a/1".to_vec(), b"1".to_vec());
    b.put("t", b"a/2".to_vec(), b"2".to_vec());
    b.put("t", b"a\xff".to_vec(), b"ff".to_vec());
    b.put("t", b"b/1".to_vec(), b"3".to_vec());
    b.put("u", b"a/1".to_vec(), b"other table".to_vec());
    b.put("t", b"a/1".to_vec(), b"1 again".to_vec());
    s.apply(b).expect("apply");
    assert_eq!(s.get("t", b"a/1").expect("get"), Some(b"1 again".to_vec()));
    let scanned = s.scan_prefix("t", b"a").expect("scan");
    let keys: Vec<&[u8]> = scanned.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, vec![&b"a/1"[..], b"a/2", b"a\xff"], "in byte order");
    assert_eq!(
        s.scan_prefix("t", b"a\xff")
            .expect("scan all-ff prefix")
            .len(),
        1
    );

    let mut b = WriteBatch::new();
    b.delete_prefix("t", b"a/".to_vec());
    b.delete("t", b"missing".to_vec());
    b.delete_prefix("t", b"a\xff".to_vec());
    s.apply(b).expect("apply");
    assert_eq!(
        s.scan_prefix("t", b"").expect("scan"),
        vec![(b"b/1".to_vec(), b"3".to_vec())]
    );
    assert_eq!(
        s.get("u", b"a/1").expect("get"),
        Some(b"other table".to_vec())
    );

    // Another node (a second store) sees the same state: it is in the database, not in memory.
    let (other, _feed) = node(&pg, "b");
    assert_eq!(other.get("t", b"b/1").expect("get"), Some(b"3".to_vec()));
}

#[test]
fn compare_and_set_lets_exactly_one_of_racing_nodes_win() {
    let Some(pg) = Postgres::start() else { return };
    let (a, _fa) = node(&pg, "a");
    let (b, _fb) = node(&pg, "b");
    assert!(
        a.compare_and_set("owner", b"dev", None, b"a".to_vec())
            .expect("cas")
    );
    assert!(
        !b.compare_and_set("owner", b"dev", None, b"b".to_vec())
            .expect("cas")
    );
    assert!(
        !b.compare_and_set("owner", b"dev", Some(b"x"), b"b".to_vec())
            .expect("cas")
    );
    // Both nodes swap from the same value at once: one wins, the other sees it lost.
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    for round in 0..20u8 {
        let current = a.get("owner", b"dev").expect("get").expect("owned");
        let racers: Vec<_> = [(&a, b'a'), (&b, b'b')]
            .into_iter()
            .map(|(store, id)| {
                let (store, current) = (std::sync::Arc::clone(store), current.clone());
                std::thread::spawn(move || {
                    store
                        .compare_and_set("owner", b"dev", Some(&current), vec![id, round])
                        .expect("cas")
                })
            })
            .collect();
        let won: Vec<bool> = racers
            .into_iter()
            .map(|t| t.join().expect("join"))
            .collect();
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: {won:?}"
        );
    }
}

#[test]
fn nodes_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let Some(pg) = Postgres::start() else { return };
    let starts: Vec<_> = (0..3)
        .map(|i| {
            let url = pg.url.clone();
            std::thread::spawn(move || {
                let mut c = PgStoreConfig::new(url, format!("n{i}"));
                c.watched = vec!["iot_"];
                PgStore::connect(c).map(|_| ())
            })
        })
        .collect();
    for s in starts {
        s.join().expect("thread").expect("connect and migrate");
    }
    let (s, _feed) = node(&pg, "x");
    // The schema table is not a KvStore table; read it with psql-equivalent SQL through a raw
    // client to check exactly one row per version.
    drop(s);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        let rows = client
            .query("SELECT version FROM fleetcore_schema ORDER BY version", &[])
            .await
            .expect("query");
        let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
        client
            .execute(
                "INSERT INTO fleetcore_schema (version) VALUES ($1)",
                &[&(SCHEMA_VERSION + 1)],
            )
            .await
            .expect("pretend a newer build migrated");
    });
    let err = PgStore::connect(PgStoreConfig::new(&pg.url, "old")).expect_err("refused");
    assert!(err.to_string().contains("newer"), "{err}");
}

async fn next_change(feed: &mut ChangeFeed) -> Change {
    tokio::time::timeout(Duration::from_secs(1), feed.recv())
        .await
        .expect("a change within a second")
        .expect("feed open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_nodes_hear_of_watched_changes_within_a_second() {
    let Some(pg) = Postgres::start() else { return };
    let (a, mut feed_a) = tokio::task::block_in_place(|| node(&pg, "a"));
    let (b, mut feed_b) = tokio::task::block_in_place(|| node(&pg, "b"));
    // Listening starts with a full refresh: what happened before is unknown.
    assert_eq!(next_change(&mut feed_a).await, Change::Everything);
    assert_eq!(next_change(&mut feed_b).await, Change::Everything);

    let mut batch = WriteBatch::new();
    batch.put("iot_cert", b"c1".to_vec(), b"REVOKED".to_vec());
    batch.put("broker_session", b"s".to_vec(), b"unwatched".to_vec());
    batch.delete_prefix("iot_policy", b"p/".to_vec());
    tokio::task::block_in_place(|| a.apply(batch)).expect("apply");
    assert_eq!(
        next_change(&mut feed_b).await,
        Change::Key {
            table: "iot_cert".into(),
            key: b"c1".to_vec()
        }
    );
    assert_eq!(
        next_change(&mut feed_b).await,
        Change::Prefix {
            table: "iot_policy".into(),
            prefix: b"p/".to_vec()
        }
    );
    // Node b's own write reaches a, not b itself; a's write never came back to a.
    let mut batch = WriteBatch::new();
    batch.put("iot_thing", b"t".to_vec(), b"{}".to_vec());
    tokio::task::block_in_place(|| b.apply(batch)).expect("apply");
    assert_eq!(
        next_change(&mut feed_a).await,
        Change::Key {
            table: "iot_thing".into(),
            key: b"t".to_vec()
        }
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), feed_b.recv())
            .await
            .is_err(),
        "a node does not hear its own changes, nor unwatched ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compare_and_set_that_writes_a_watched_table_is_announced() {
    let Some(pg) = Postgres::start() else { return };
    let (a, _feed_a) = tokio::task::block_in_place(|| node(&pg, "a"));
    let (_b, mut feed_b) = tokio::task::block_in_place(|| node(&pg, "b"));
    assert_eq!(next_change(&mut feed_b).await, Change::Everything);
    let cas = |expected: Option<&'static [u8]>, new: &[u8]| {
        tokio::task::block_in_place(|| a.compare_and_set("iot_x", b"k", expected, new.to_vec()))
            .expect("compare and set")
    };
    assert!(cas(None, b"1"));
    let written = Change::Key {
        table: "iot_x".into(),
        key: b"k".to_vec(),
    };
    assert_eq!(next_change(&mut feed_b).await, written);
    // A lost compare-and-set wrote nothing and announces nothing; a won one is announced.
    assert!(!cas(Some(b"0"), b"2"));
    assert!(cas(Some(b"1"), b"2"));
    assert_eq!(next_change(&mut feed_b).await, written);
    assert!(
        tokio::task::block_in_place(|| a.compare_and_set("unwatched", b"k", None, b"v".to_vec()))
            .expect("compare and set")
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), feed_b.recv())
            .await
            .is_err(),
        "nothing more: the lost one and the unwatched table are not announced"
    );
    assert_eq!(
        tokio::task::block_in_place(|| a.get("iot_x", b"k")).expect("get"),
        Some(b"2".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_clearly_while_postgres_is_down_and_recover_with_a_full_refresh() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let (a, _feed_a) = tokio::task::block_in_place(|| node(&pg, "a"));
    let (_b, mut feed_b) = tokio::task::block_in_place(|| node(&pg, "b"));
    assert_eq!(next_change(&mut feed_b).await, Change::Everything);
    let mut batch = WriteBatch::new();
    batch.put("iot_thing", b"before".to_vec(), b"1".to_vec());
    tokio::task::block_in_place(|| a.apply(batch)).expect("apply");
    assert!(matches!(next_change(&mut feed_b).await, Change::Key { .. }));

    pg.kill();
    let err = tokio::task::block_in_place(|| a.get("iot_thing", b"before")).expect_err("down");
    assert!(err.to_string().contains("store get failed"), "{err}");
    let mut batch = WriteBatch::new();
    batch.put("iot_thing", b"during".to_vec(), b"2".to_vec());
    tokio::task::block_in_place(|| a.apply(batch)).expect_err("no commit while down");

    pg.start_again();
    // The pool reconnects on the next request; nothing written while down was kept.
    let value = tokio::task::block_in_place(|| a.get("iot_thing", b"before")).expect("back");
    assert_eq!(value, Some(b"1".to_vec()));
    assert_eq!(
        tokio::task::block_in_place(|| a.get("iot_thing", b"during")).expect("get"),
        None
    );
    // The listener is back too: b is told to refresh everything (it may have missed changes),
    // then hears new ones.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let change = tokio::time::timeout_at(deadline, feed_b.recv())
            .await
            .expect("a refresh after the reconnect")
            .expect("feed open");
        if change == Change::Everything {
            break;
        }
    }
    let mut batch = WriteBatch::new();
    batch.put("iot_thing", b"after".to_vec(), b"3".to_vec());
    tokio::task::block_in_place(|| a.apply(batch)).expect("apply");
    assert_eq!(
        next_change(&mut feed_b).await,
        Change::Key {
            table: "iot_thing".into(),
            key: b"after".to_vec()
        }
    );
}
