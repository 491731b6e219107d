//! Unit tests of the join: the set-based path for a snapshot nothing else touches, when
//! it falls back to the per-row path, and the rows and columns either leaves.

use super::rows::sub_columns;
use super::test_support::*;
use super::*;
use crate::vocab::MoveOut;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER, c REAL, d BLOB);
CREATE TABLE u (id TEXT PRIMARY KEY, v INTEGER)";

fn store() -> (tempfile::TempDir, LocalStore) {
    open(SCHEMA)
}

/// Whether the join would take the set-based path for `sub`'s staged snapshot at `w`
/// (decided in a transaction that is rolled back).
fn set_based(store: &mut LocalStore, sub: SubId, w: SyncId) -> bool {
    let pending = store.pending_tables();
    let columns = sub_columns(&store.conn).unwrap().remove(&sub).unwrap();
    let schema = store.schema.clone();
    let tx = store.conn.transaction().unwrap();
    let mut applied = Applied::default();
    bulk::join_snapshot(&tx, &schema, sub, &columns, w, &pending, &mut applied).unwrap()
}

fn bootstrap(store: &mut LocalStore, sub: SubId, w: u64) -> Applied {
    let cut = store.cut().unwrap().max(SyncId(w));
    store
        .join(&[(sub, JoinKind::Bootstrap, SyncId(w))], cut)
        .unwrap()
}

/// The visible rows of `t`, the server state of `t`, and `t`'s coverage as (key, holder).
fn state(store: &LocalStore) -> (Rows, Rows, Rows) {
    (
        select(store, "SELECT * FROM t ORDER BY id"),
        select(store, "SELECT * FROM _sluice_srv_t ORDER BY id"),
        select(store, COVERAGE),
    )
}

/// `t`'s coverage as (key, holder): by row, and by covering the table whole.
const COVERAGE: &str = "SELECT key, holder FROM _sluice_cover WHERE table_name = 't'
    UNION ALL SELECT s.id, w.holder FROM _sluice_cover_table w, _sluice_srv_t s
    WHERE w.table_name = 't' ORDER BY 1, 2";

/// Each server-state row of `t` with its version, as (key, sync): its own version row,
/// or its table's whole coverage's.
const VERSIONS: &str = "SELECT s.id, coalesce(v.sync, w.sync) FROM _sluice_srv_t s
    LEFT JOIN _sluice_rowver v ON v.table_name = 't' AND v.key = s.id
    LEFT JOIN _sluice_cover_table w ON w.table_name = 't' ORDER BY 1";

fn staged_count(store: &LocalStore) -> i64 {
    let n = select(
        store,
        "SELECT (SELECT count(*) FROM _sluice_stage_rows) + (SELECT count(*) FROM _sluice_stage)",
    );
    match n[0][0] {
        Value::Integer(n) => n,
        _ => unreachable!(),
    }
}

#[test]
fn a_fresh_snapshot_joins_set_based_with_exactly_its_columns() {
    let (_dir, mut store) = store();
    let s = sub(&mut store, "t", &["id", "a", "c", "d"]);
    let blob = Value::Blob(vec![0, 1, 255]);
    stage_snapshot(
        &mut store,
        s,
        "t",
        vec![
            vec![int(1), text("one"), Value::Real(1.5), blob.clone()],
            vec![int(2), Value::Null, Value::Real(-2.0), Value::Null],
        ],
    );
    assert!(set_based(&mut store, s, SyncId(7)));
    let applied = bootstrap(&mut store, s, 7);
    let expected = vec![
        vec![int(1), text("one"), Value::Null, Value::Real(1.5), blob],
        vec![
            int(2),
            Value::Null,
            Value::Null,
            Value::Real(-2.0),
            Value::Null,
        ],
    ];
    let (visible, server, cover) = state(&store);
    assert_eq!(visible, expected, "b is carried by no holder: NULL");
    assert_eq!(server, expected);
    let holder = int(s.0 as i64);
    assert_eq!(
        cover,
        vec![vec![int(1), holder.clone()], vec![int(2), holder]]
    );
    assert_eq!(
        select(&store, VERSIONS),
        vec![vec![int(1), int(7)], vec![int(2), int(7)]]
    );
    assert_eq!(staged_count(&store), 0, "staging emptied in the join");
    assert_eq!(applied.tables, BTreeSet::from(["t".to_string()]));
    assert_eq!(applied.rows.len(), 2);
    assert_eq!(applied.subs, BTreeSet::from([s]));
    assert!(store.subs().unwrap()[0].joined);
    assert_eq!(store.cut().unwrap(), SyncId(7));
}

#[test]
fn live_changes_staged_after_the_snapshot_apply_on_top_of_the_set_based_join() {
    let (_dir, mut store) = store();
    let s = sub(&mut store, "t", &["id", "a"]);
    stage_snapshot(
        &mut store,
        s,
        "t",
        vec![vec![int(1), text("one")], vec![int(2), text("two")]],
    );
    let update = |a: &str| RowEvent::Update {
        key: int(1),
        row: vec![int(1), text(a)],
    };
    let gone = RowEvent::Delete {
        key: int(2),
        reason: MoveOut::Deleted,
    };
    // At 4 the snapshot (read at 5) already holds it; 6 and 7 come after.
    store
        .stage(s, Some(SyncId(4)), "t", &update("old"))
        .unwrap();
    store
        .stage(s, Some(SyncId(6)), "t", &update("new"))
        .unwrap();
    store.stage(s, Some(SyncId(7)), "t", &gone).unwrap();
    assert!(set_based(&mut store, s, SyncId(5)));
    bootstrap(&mut store, s, 5);
    let (visible, server, _) = state(&store);
    let expected = vec![vec![
        int(1),
        text("new"),
        Value::Null,
        Value::Null,
        Value::Null,
    ]];
    assert_eq!(visible, expected);
    assert_eq!(server, expected);
    assert!(!store.is_covered("t", &int(2)).unwrap());
    assert_eq!(staged_count(&store), 0);
}

#[test]
fn a_rebootstrap_replaces_its_old_coverage_and_drops_columns_it_no_longer_carries() {
    let (_dir, mut store) = store();
    let s = sub(&mut store, "t", &["id", "a", "b"]);
    stage_snapshot(
        &mut store,
        s,
        "t",
        (1..=3)
            .map(|i| vec![int(i), text(&format!("a{i}")), int(10 * i)])
            .collect(),
    );
    bootstrap(&mut store, s, 5);
    // Its projection narrowed; row 2 changed, 1 and 3 left, 4 came.
    let columns = vec!["id".to_string(), "a".to_string()];
    store.describe_sub(s, "t", &columns).unwrap();
    stage_snapshot(
        &mut store,
        s,
        "t",
        vec![vec![int(2), text("a2'")], vec![int(4), text("a4")]],
    );
    assert!(set_based(&mut store, s, SyncId(9)), "the only holder");
    let applied = bootstrap(&mut store, s, 9);
    let expected = vec![
        vec![int(2), text("a2'"), Value::Null, Value::Null, Value::Null],
        vec![int(4), text("a4"), Value::Null, Value::Null, Value::Null],
    ];
    let (visible, server, cover) = state(&store);
    assert_eq!(visible, expected, "no stale b survives");
    assert_eq!(server, expected);
    assert_eq!(cover.len(), 2);
    assert_eq!(
        select(&store, VERSIONS),
        vec![vec![int(2), int(9)], vec![int(4), int(9)]]
    );
    let keys: Vec<Value> = applied.rows.iter().map(|(_, k)| k.0.clone()).collect();
    assert_eq!(
        keys,
        vec![int(1), int(2), int(3), int(4)],
        "left rows notified"
    );
}

#[test]
fn a_snapshot_overlapping_another_holders_rows_joins_row_by_row() {
    let (_dir, mut store) = store();
    let wide = sub(&mut store, "t", &["id", "a", "b", "c", "d"]);
    stage_snapshot(
        &mut store,
        wide,
        "t",
        (1..=2)
            .map(|i| {
                let a = text(&format!("a{i}"));
                vec![int(i), a, int(i), Value::Real(0.5), Value::Null]
            })
            .collect(),
    );
    assert!(set_based(&mut store, wide, SyncId(5)));
    bootstrap(&mut store, wide, 5);
    let narrow = sub(&mut store, "t", &["id", "b"]);
    stage_snapshot(
        &mut store,
        narrow,
        "t",
        vec![vec![int(2), int(20)], vec![int(3), int(30)]],
    );
    assert!(!set_based(&mut store, narrow, SyncId(6)));
    bootstrap(&mut store, narrow, 6);
    let (visible, server, cover) = state(&store);
    let expected = vec![
        vec![int(1), text("a1"), int(1), Value::Real(0.5), Value::Null],
        vec![int(2), text("a2"), int(20), Value::Real(0.5), Value::Null],
        vec![int(3), Value::Null, int(30), Value::Null, Value::Null],
    ];
    assert_eq!(visible, expected);
    assert_eq!(server, expected);
    assert_eq!(cover.len(), 4, "row 2 covered by both");
    // The wide one leaves: row 2 keeps only what the narrow one carries.
    store.remove_sub(wide).unwrap();
    assert_eq!(
        select(&store, "SELECT * FROM t ORDER BY id"),
        vec![
            vec![int(2), Value::Null, int(20), Value::Null, Value::Null],
            vec![int(3), Value::Null, int(30), Value::Null, Value::Null],
        ]
    );
}

#[test]
fn a_rebootstrap_sharing_its_table_with_a_pin_releases_its_rows_one_by_one() {
    let (_dir, mut store) = store();
    let s = sub(&mut store, "t", &["id", "a"]);
    stage_snapshot(
        &mut store,
        s,
        "t",
        (1..=3)
            .map(|i| vec![int(i), text(&format!("a{i}"))])
            .collect(),
    );
    bootstrap(&mut store, s, 5);
    let pinned = vec![int(3), text("a3"), int(33), Value::Null, Value::Null];
    store
        .pin_rows("t", std::slice::from_ref(&pinned), SyncId(5))
        .unwrap();
    stage_snapshot(&mut store, s, "t", vec![vec![int(2), text("a2'")]]);
    assert!(
        !set_based(&mut store, s, SyncId(8)),
        "a pin covers rows of t"
    );
    bootstrap(&mut store, s, 8);
    let (visible, _, _) = state(&store);
    assert_eq!(
        visible,
        vec![
            vec![int(2), text("a2'"), Value::Null, Value::Null, Value::Null],
            pinned,
        ]
    );
}

#[test]
fn a_pending_write_on_the_table_keeps_the_per_row_join_and_stays_visible() {
    let (_dir, mut store) = store();
    let insert = |table: &str, key: Value| Mutation::Insert {
        table: table.into(),
        values: vec![("id".into(), key)],
    };
    // A write on another table does not stand in the way.
    store.enqueue(vec![insert("u", text("x"))], vec![]).unwrap();
    let s = sub(&mut store, "t", &["id", "a"]);
    stage_snapshot(&mut store, s, "t", vec![vec![int(1), text("one")]]);
    assert!(set_based(&mut store, s, SyncId(3)));
    store.enqueue(vec![insert("t", int(9))], vec![]).unwrap();
    assert!(!set_based(&mut store, s, SyncId(3)));
    bootstrap(&mut store, s, 3);
    let (visible, server, _) = state(&store);
    let null = || Value::Null;
    assert_eq!(
        visible,
        vec![
            vec![int(1), text("one"), null(), null(), null()],
            vec![int(9), null(), null(), null(), null()],
        ],
        "the pending insert stays on top"
    );
    assert_eq!(
        server,
        vec![vec![int(1), text("one"), null(), null(), null()]]
    );
}

#[test]
fn a_row_newer_than_the_snapshot_keeps_its_content() {
    let (_dir, mut store) = store();
    let s = sub(&mut store, "t", &["id", "a"]);
    stage_snapshot(&mut store, s, "t", vec![vec![int(1), text("at 5")]]);
    bootstrap(&mut store, s, 5);
    let newer = RowEvent::Update {
        key: int(1),
        row: vec![int(1), text("at 8")],
    };
    store
        .apply_live(SyncId(8), &[(s, "t".into(), newer)])
        .unwrap();
    stage_snapshot(&mut store, s, "t", vec![vec![int(1), text("at 7")]]);
    assert!(!set_based(&mut store, s, SyncId(7)));
    bootstrap(&mut store, s, 7);
    assert_eq!(select(&store, "SELECT a FROM t"), vec![vec![text("at 8")]]);
}

#[test]
fn snapshot_rows_staged_as_encoded_events_join_row_by_row_after_a_reopen() {
    let (dir, mut store) = store();
    let s = sub(&mut store, "t", &["id", "a"]);
    stage_snapshot(&mut store, s, "t", vec![vec![int(1), text("typed")]]);
    // A snapshot row as an earlier version of the store staged it: an encoded event.
    let event = RowEvent::Insert {
        key: int(2),
        row: vec![int(2), text("encoded")],
    };
    store
        .conn
        .execute(
            "INSERT INTO _sluice_stage (sub, sync_id, table_name, event) VALUES (?1, NULL, 't', ?2)",
            params![s, postcard::to_allocvec(&event).unwrap()],
        )
        .unwrap();
    drop(store);
    let mut store = LocalStore::open(&dir.path().join("local.db"), None).unwrap();
    assert!(!set_based(&mut store, s, SyncId(4)));
    bootstrap(&mut store, s, 4);
    assert_eq!(
        select(&store, "SELECT id, a FROM t ORDER BY id"),
        vec![vec![int(1), text("typed")], vec![int(2), text("encoded")]]
    );
    assert_eq!(staged_count(&store), 0);
}

#[test]
fn staging_widens_for_wider_rows_and_keeps_its_width_across_a_reopen() {
    let (dir, mut store) = store();
    // Subscriptions not described yet: their rows have no staging table of their own
    // and go to the shared one.
    let undescribed = |store: &mut LocalStore, table: &str| {
        let sql = format!("SELECT * FROM {table}");
        store.add_sub(&sql, &Params::new()).unwrap()
    };
    let narrow = undescribed(&mut store, "u");
    stage_snapshot(&mut store, narrow, "u", vec![vec![text("k"), int(1)]]);
    let wide = undescribed(&mut store, "t");
    let row = vec![
        int(1),
        text("a"),
        int(2),
        Value::Real(3.0),
        Value::Blob(vec![4]),
    ];
    stage_snapshot(&mut store, wide, "t", vec![row.clone()]);
    drop(store);
    let mut store = LocalStore::open(&dir.path().join("local.db"), None).unwrap();
    assert_eq!(stage::stage_width(&store.conn).unwrap(), 5);
    let more = vec![int(2), text("b"), int(3), Value::Real(4.0), Value::Null];
    store
        .stage_many(&[(
            wide,
            None,
            "t".into(),
            RowEvent::Insert {
                key: int(2),
                row: more.clone(),
            },
        )])
        .unwrap();
    store
        .join(
            &[
                (narrow, JoinKind::Bootstrap, SyncId(3)),
                (wide, JoinKind::Bootstrap, SyncId(3)),
            ],
            SyncId(3),
        )
        .unwrap();
    assert_eq!(
        select(&store, "SELECT * FROM t ORDER BY id"),
        vec![row, more]
    );
    assert_eq!(
        select(&store, "SELECT * FROM u"),
        vec![vec![text("k"), int(1)]]
    );
    assert_eq!(staged_count(&store), 0);
}

#[test]
fn a_failed_staging_transaction_takes_its_new_columns_with_it() {
    let (_dir, mut store) = store();
    let s = sub(&mut store, "t", &["id", "a", "b", "c", "d"]);
    let wide = |key: Value| {
        let event = RowEvent::Insert {
            key,
            row: vec![int(1); 7],
        };
        (s, None, "t".to_string(), event)
    };
    // A key may not be NULL: the insert fails after the columns were added.
    assert!(store.stage_many(&[wide(Value::Null)]).is_err());
    assert_eq!(stage::stage_width(&store.conn).unwrap(), 0);
    store.stage_many(&[wide(int(1))]).unwrap();
    assert_eq!(stage::stage_width(&store.conn).unwrap(), 7);
    store.stage_clear(s).unwrap();
    assert_eq!(staged_count(&store), 0);
}
