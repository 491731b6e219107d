//! Unit tests of per-subscription staging tables: snapshot rows staged in a table laid
//! out like the server state, renamed into place by the set-based join, read back row by
//! row otherwise, and dropped whenever the subscription starts over or leaves.

use super::test_support::*;
use super::*;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER)";

fn store() -> (tempfile::TempDir, LocalStore, SubId) {
    let (dir, mut store) = open(SCHEMA);
    let s = store
        .add_sub("SELECT id, a FROM t", &Params::new())
        .unwrap();
    store
        .describe_sub(s, "t", &["id".to_string(), "a".to_string()])
        .unwrap();
    (dir, store, s)
}

fn row(key: i64, a: &str) -> StagedItem {
    let event = RowEvent::Insert {
        key: int(key),
        row: vec![int(key), text(a)],
    };
    (SubId(0), None, "t".to_string(), event)
}

type StagedItem = (SubId, Option<SyncId>, String, RowEvent);

fn stage(store: &mut LocalStore, sub: SubId, rows: Vec<StagedItem>) {
    let items: Vec<StagedItem> = rows
        .into_iter()
        .map(|(_, s, t, e)| (sub, s, t, e))
        .collect();
    store.stage_many(&items).unwrap();
}

fn has_stage_table(store: &LocalStore, sub: SubId) -> bool {
    let name = format!("_sluice_stage_{}", sub.0);
    !select(
        store,
        &format!("SELECT 1 FROM sqlite_schema WHERE name = '{name}'"),
    )
    .is_empty()
}

fn visible(store: &LocalStore) -> Rows {
    select(store, "SELECT * FROM t ORDER BY id")
}

#[test]
fn snapshot_rows_stage_in_the_subscriptions_table_and_become_the_server_state() {
    let (_dir, mut store, s) = store();
    store.stage_clear(s).unwrap();
    stage(&mut store, s, vec![row(2, "two"), row(1, "one")]);
    // A key staged twice keeps its last row.
    stage(&mut store, s, vec![row(2, "two'")]);
    assert!(has_stage_table(&store, s));
    assert_eq!(
        select(&store, "SELECT count(*) FROM _sluice_stage_rows"),
        vec![vec![int(0)]],
        "nothing in the shared staging table"
    );
    let applied = store
        .join(&[(s, JoinKind::Bootstrap, SyncId(3))], SyncId(3))
        .unwrap();
    assert!(!has_stage_table(&store, s), "renamed into the server state");
    let expected = vec![
        vec![int(1), text("one"), Value::Null],
        vec![int(2), text("two'"), Value::Null],
    ];
    assert_eq!(visible(&store), expected);
    assert_eq!(
        select(&store, "SELECT * FROM _sluice_srv_t ORDER BY id"),
        expected
    );
    assert_eq!(applied.rows.len(), 2);
    // The renamed table is the server state from now on: live changes land in it.
    let update = RowEvent::Update {
        key: int(1),
        row: vec![int(1), text("one'")],
    };
    store
        .apply_live(SyncId(4), &[(s, "t".into(), update)])
        .unwrap();
    assert_eq!(
        select(&store, "SELECT a FROM _sluice_srv_t WHERE id = 1"),
        vec![vec![text("one'")]]
    );
    assert_eq!(
        select(&store, "SELECT a FROM t WHERE id = 1"),
        vec![vec![text("one'")]]
    );
}

#[test]
fn rows_staged_in_the_subscriptions_table_join_row_by_row_beside_a_pending_write() {
    let (_dir, mut store, s) = store();
    store.stage_clear(s).unwrap();
    stage(&mut store, s, vec![row(1, "one"), row(2, "two")]);
    let update = Mutation::Update {
        table: "t".into(),
        key: int(2),
        set: vec![("b".into(), int(22))],
    };
    store.enqueue(vec![update], vec![]).unwrap();
    store
        .join(&[(s, JoinKind::Bootstrap, SyncId(3))], SyncId(3))
        .unwrap();
    assert!(!has_stage_table(&store, s));
    assert_eq!(
        visible(&store),
        vec![
            vec![int(1), text("one"), Value::Null],
            vec![int(2), text("two"), int(22)],
        ],
        "the pending update on top of the staged row"
    );
    assert_eq!(
        select(&store, "SELECT count(*) FROM _sluice_cover"),
        vec![vec![int(2)]],
        "covered row by row"
    );
}

#[test]
fn a_staging_table_left_behind_by_a_schema_change_joins_row_by_row() {
    let (_dir, mut store, s) = store();
    store.stage_clear(s).unwrap();
    stage(&mut store, s, vec![row(1, "one")]);
    // The table gained a column while the snapshot was staged.
    let wider = "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER, c TEXT)";
    store.adopt_schema(wider).unwrap();
    store
        .join(&[(s, JoinKind::Bootstrap, SyncId(3))], SyncId(3))
        .unwrap();
    assert!(!has_stage_table(&store, s));
    assert_eq!(
        visible(&store),
        vec![vec![int(1), text("one"), Value::Null, Value::Null]]
    );
}

#[test]
fn starting_over_or_leaving_drops_the_staging_table() {
    let (_dir, mut store, s) = store();
    store.stage_clear(s).unwrap();
    stage(&mut store, s, vec![row(1, "one")]);
    store.stage_clear(s).unwrap();
    assert!(!has_stage_table(&store, s));
    stage(&mut store, s, vec![row(2, "two")]);
    store
        .join(&[(s, JoinKind::Bootstrap, SyncId(3))], SyncId(3))
        .unwrap();
    assert_eq!(
        visible(&store),
        vec![vec![int(2), text("two"), Value::Null]],
        "only what was staged after starting over"
    );
    let other = store.add_sub("SELECT * FROM t", &Params::new()).unwrap();
    store
        .describe_sub(other, "t", &["id".to_string(), "a".to_string()])
        .unwrap();
    store.stage_clear(other).unwrap();
    stage(&mut store, other, vec![row(5, "five")]);
    assert!(has_stage_table(&store, other));
    store.remove_sub(other).unwrap();
    assert!(!has_stage_table(&store, other));
    assert_eq!(
        visible(&store),
        vec![vec![int(2), text("two"), Value::Null]]
    );
}

#[test]
fn a_join_leaves_its_pages_in_the_wal_until_the_checkpoint() {
    let (dir, mut store, s) = store();
    let file = dir.path().join("local.db");
    store.checkpoint().unwrap();
    let before = std::fs::metadata(&file).unwrap().len();
    store.stage_clear(s).unwrap();
    let rows: Vec<StagedItem> = (0..2000)
        .map(|i| row(i, "some text to fill pages"))
        .collect();
    stage(&mut store, s, rows);
    store
        .join(&[(s, JoinKind::Bootstrap, SyncId(3))], SyncId(3))
        .unwrap();
    assert_eq!(count(&store, "t"), 2000, "visible at once");
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        before,
        "nothing copied into the database file yet"
    );
    store.checkpoint().unwrap();
    assert!(std::fs::metadata(&file).unwrap().len() > before);
    assert_eq!(count(&store, "t"), 2000);
}
