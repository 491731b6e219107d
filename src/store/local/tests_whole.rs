//! Unit tests of whole-table coverage: the one row a set-based bootstrap leaves for its
//! table instead of a coverage and a version row per key, the sole holder's live changes
//! on top of it, and what turns it back into rows (another holder, a pin, a release).

use super::test_support::*;
use super::*;
use crate::vocab::MoveOut;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER)";

/// A store holding subscription `s` on `t` (columns id, a), joined set-based at sync id 5
/// with rows 1..=3.
fn whole_store() -> (tempfile::TempDir, LocalStore, SubId) {
    let (dir, mut store) = open(SCHEMA);
    let s = sub(&mut store, "t", &["id", "a"]);
    stage_snapshot(
        &mut store,
        s,
        "t",
        (1..=3)
            .map(|i| vec![int(i), text(&format!("a{i}"))])
            .collect(),
    );
    store
        .join(&[(s, JoinKind::Bootstrap, SyncId(5))], SyncId(5))
        .unwrap();
    (dir, store, s)
}

fn visible(store: &LocalStore) -> Rows {
    select(store, "SELECT id, a, b FROM t ORDER BY id")
}

#[test]
fn a_set_based_join_covers_its_table_with_one_row() {
    let (_dir, store, s) = whole_store();
    assert_eq!(count(&store, "_sluice_cover"), 0);
    assert_eq!(count(&store, "_sluice_rowver"), 0);
    assert_eq!(
        select(
            &store,
            "SELECT table_name, holder, sync FROM _sluice_cover_table"
        ),
        vec![vec![text("t"), int(s.0 as i64), int(5)]]
    );
    let reader = store.reader().unwrap();
    for key in 1..=3 {
        assert!(store.is_covered("t", &int(key)).unwrap());
        assert!(reader.is_covered("t", &int(key)).unwrap());
    }
    assert!(!store.is_covered("t", &int(4)).unwrap());
    assert!(!reader.is_covered("t", &int(4)).unwrap());
}

#[test]
fn the_sole_holders_live_changes_keep_the_table_whole() {
    let (_dir, mut store, s) = whole_store();
    let upsert = |key: i64, a: &str| RowEvent::Update {
        key: int(key),
        row: vec![int(key), text(a)],
    };
    let gone = RowEvent::Delete {
        key: int(2),
        reason: MoveOut::MovedOut,
    };
    store
        .apply_live(SyncId(6), &[(s, "t".into(), upsert(4, "a4"))])
        .unwrap();
    let applied = store
        .apply_live(
            SyncId(7),
            &[(s, "t".into(), upsert(1, "a1'")), (s, "t".into(), gone)],
        )
        .unwrap();
    assert_eq!(applied.rows.len(), 2);
    assert_eq!(
        visible(&store),
        vec![
            vec![int(1), text("a1'"), Value::Null],
            vec![int(3), text("a3"), Value::Null],
            vec![int(4), text("a4"), Value::Null],
        ]
    );
    assert_eq!(
        select(&store, "SELECT id FROM _sluice_srv_t ORDER BY id"),
        vec![vec![int(1)], vec![int(3)], vec![int(4)]],
        "the moved-out row left the server state"
    );
    assert!(!store.is_covered("t", &int(2)).unwrap());
    assert!(store.is_covered("t", &int(4)).unwrap());
    assert_eq!(count(&store, "_sluice_cover"), 0, "still covered whole");
    assert_eq!(
        select(&store, "SELECT key, sync FROM _sluice_rowver ORDER BY key"),
        vec![vec![int(1), int(7)], vec![int(4), int(6)]],
        "changed rows carry their own version"
    );
    // A stale event (older than the snapshot) does not take a row back in time.
    store
        .apply_live(SyncId(4), &[(s, "t".into(), upsert(3, "stale"))])
        .unwrap();
    assert_eq!(
        select(&store, "SELECT a FROM t WHERE id = 3"),
        vec![vec![text("a3")]]
    );
}

#[test]
fn another_holder_turns_the_coverage_into_rows_and_each_release_keeps_the_others() {
    let (_dir, mut store, s) = whole_store();
    let o = sub(&mut store, "t", &["id", "b"]);
    stage_snapshot(
        &mut store,
        o,
        "t",
        vec![vec![int(3), int(30)], vec![int(4), int(40)]],
    );
    store
        .join(&[(o, JoinKind::Bootstrap, SyncId(6))], SyncId(6))
        .unwrap();
    assert_eq!(count(&store, "_sluice_cover_table"), 0);
    let holders = select(
        &store,
        "SELECT key, holder FROM _sluice_cover ORDER BY 1, 2",
    );
    let (s_id, o_id) = (int(s.0 as i64), int(o.0 as i64));
    assert_eq!(
        holders,
        vec![
            vec![int(1), s_id.clone()],
            vec![int(2), s_id.clone()],
            vec![int(3), s_id.clone()],
            vec![int(3), o_id.clone()],
            vec![int(4), o_id],
        ]
    );
    assert_eq!(
        select(&store, "SELECT key, sync FROM _sluice_rowver ORDER BY key"),
        vec![
            vec![int(1), int(5)],
            vec![int(2), int(5)],
            vec![int(3), int(6)],
            vec![int(4), int(6)],
        ]
    );
    store.remove_sub(s).unwrap();
    assert_eq!(
        visible(&store),
        vec![
            vec![int(3), Value::Null, int(30)],
            vec![int(4), Value::Null, int(40)],
        ],
        "exactly the other holder's rows, with only its columns"
    );
}

#[test]
fn a_pin_on_a_whole_table_survives_its_holders_release() {
    let (_dir, mut store, s) = whole_store();
    let pinned = vec![int(2), text("a2"), int(22)];
    store
        .pin_rows("t", std::slice::from_ref(&pinned), SyncId(5))
        .unwrap();
    assert_eq!(count(&store, "_sluice_cover_table"), 0);
    let applied = store.remove_sub(s).unwrap();
    assert_eq!(visible(&store), vec![pinned]);
    let keys: Vec<Value> = applied.rows.iter().map(|(_, k)| k.0.clone()).collect();
    assert_eq!(keys, vec![int(1), int(3)]);
}

#[test]
fn releasing_the_sole_holder_empties_the_table_but_for_pending_writes() {
    let (_dir, mut store, s) = whole_store();
    let insert = Mutation::Insert {
        table: "t".into(),
        values: vec![("id".into(), int(9)), ("a".into(), text("mine"))],
    };
    let update = Mutation::Update {
        table: "t".into(),
        key: int(1),
        set: vec![("b".into(), int(11))],
    };
    store.enqueue(vec![insert, update], vec![]).unwrap();
    assert_eq!(
        select(&store, "SELECT id, b FROM t WHERE id IN (1, 9) ORDER BY id"),
        vec![vec![int(1), int(11)], vec![int(9), Value::Null]]
    );
    let applied = store.remove_sub(s).unwrap();
    let keys: Vec<Value> = applied.rows.iter().map(|(_, k)| k.0.clone()).collect();
    assert_eq!(keys, vec![int(1), int(2), int(3)], "row 9 did not change");
    assert_eq!(
        visible(&store),
        vec![vec![int(9), text("mine"), Value::Null]],
        "the pending insert stays; the update has no row left to change"
    );
    assert_eq!(count(&store, "_sluice_srv_t"), 0);
    assert_eq!(count(&store, "_sluice_cover_table"), 0);
    assert_eq!(count(&store, "_sluice_rowver"), 0);
}

#[test]
fn a_rebootstrap_keeps_the_table_whole_and_a_new_server_resets_its_version() {
    let (_dir, mut store, s) = whole_store();
    stage_snapshot(&mut store, s, "t", vec![vec![int(7), text("a7")]]);
    store
        .join(&[(s, JoinKind::Bootstrap, SyncId(9))], SyncId(9))
        .unwrap();
    assert_eq!(visible(&store), vec![vec![int(7), text("a7"), Value::Null]]);
    assert_eq!(
        select(&store, "SELECT holder, sync FROM _sluice_cover_table"),
        vec![vec![int(s.0 as i64), int(9)]]
    );
    // Another server database: every version is forgotten, the next snapshot replaces.
    assert!(store.adopt_server("other", SyncId(2)).unwrap());
    assert_eq!(
        select(&store, "SELECT sync FROM _sluice_cover_table"),
        vec![vec![int(0)]]
    );
    stage_snapshot(&mut store, s, "t", vec![vec![int(7), text("a7 at 2")]]);
    store
        .join(&[(s, JoinKind::Bootstrap, SyncId(2))], SyncId(2))
        .unwrap();
    assert_eq!(
        visible(&store),
        vec![vec![int(7), text("a7 at 2"), Value::Null]]
    );
}
