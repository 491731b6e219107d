//! Unit tests of the local store.

use super::*;
use crate::vocab::{MoveOut, WriteOutcome};

fn store() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::parse("t.sql", "CREATE TABLE t (id TEXT PRIMARY KEY, v INTEGER)").unwrap();
    let store = LocalStore::open(&dir.path().join("local.db"), Some(schema)).unwrap();
    (dir, store)
}

fn row(id: &str, v: i64) -> RowEvent {
    RowEvent::Update {
        key: Value::Text(id.into()),
        row: vec![Value::Text(id.into()), Value::Integer(v)],
    }
}

#[test]
fn an_older_snapshot_never_regresses_a_shared_row() {
    let (_dir, mut store) = store();
    let cols = vec!["id".to_string(), "v".to_string()];
    let a = store.add_sub("SELECT * FROM t", &Params::new()).unwrap();
    let b = store
        .add_sub("SELECT * FROM t WHERE v > 0", &Params::new())
        .unwrap();
    store.describe_sub(a, "t", &cols).unwrap();
    store.describe_sub(b, "t", &cols).unwrap();
    store
        .apply_live(SyncId(5), &[(a, "t".into(), row("x", 2))])
        .unwrap();
    // b's snapshot was taken at 3, before the change at 5 it never heard of.
    store.stage(b, None, "t", &row("x", 1)).unwrap();
    store
        .join(&[(b, JoinKind::Bootstrap, SyncId(3))], SyncId(5))
        .unwrap();
    let key = Value::Text("x".into());
    assert_eq!(store.row("t", &key).unwrap().unwrap()[1], Value::Integer(2));
    // Coverage by b still counts: the row survives a's move-out.
    let gone = RowEvent::Delete {
        key: key.clone(),
        reason: crate::vocab::MoveOut::MovedOut,
    };
    store
        .apply_live(SyncId(6), &[(a, "t".into(), gone)])
        .unwrap();
    assert!(store.is_covered("t", &key).unwrap());
}

#[test]
fn rejected_transactions_roll_back_and_committed_ones_wait_for_the_cut() {
    let (_dir, mut store) = store();
    let insert = Mutation::Insert {
        table: "t".into(),
        values: vec![
            ("id".into(), Value::Text("n".into())),
            ("v".into(), Value::Integer(1)),
        ],
    };
    let (seq, applied) = store.enqueue(vec![insert.clone()], vec![]).unwrap();
    assert_eq!(applied.rows.len(), 1);
    let key = Value::Text("n".into());
    assert!(store.row("t", &key).unwrap().is_some(), "optimistic");
    let rejected = WriteOutcome::Rejected {
        code: crate::store::RejectCode::Invalid,
        message: "no".into(),
    };
    store.resolve(seq, &rejected).unwrap();
    assert!(store.row("t", &key).unwrap().is_none(), "rolled back");
    let (seq, _) = store.enqueue(vec![insert], vec![]).unwrap();
    store
        .resolve(seq, &WriteOutcome::Committed { sync_id: SyncId(9) })
        .unwrap();
    assert_eq!(store.pending().len(), 1, "kept until the cut reaches 9");
    store.apply_live(SyncId(9), &[]).unwrap();
    assert!(store.pending().is_empty());
    assert!(
        store.row("t", &key).unwrap().is_none(),
        "no subscription covers it"
    );
}

/// The race behind an optimistic row that vanished: the live transaction of the client's
/// own write arrives while the only subscription that covers the row is still staging,
/// so its event is staged and the cut moves past the write before the row is in the
/// view. The committed write must stay visible until the subscription joins.
#[test]
fn a_committed_write_stays_visible_until_its_staged_subscription_joins() {
    let (_dir, mut store) = store();
    let cols = vec!["id".to_string(), "v".to_string()];
    let sub = store.add_sub("SELECT * FROM t", &Params::new()).unwrap();
    store.describe_sub(sub, "t", &cols).unwrap();
    let key = Value::Text("x".into());
    let insert = Mutation::Insert {
        table: "t".into(),
        values: vec![("id".into(), key.clone()), ("v".into(), Value::Integer(1))],
    };
    let (seq, _) = store.enqueue(vec![insert], vec![]).unwrap();
    store.stage_clear(sub).unwrap();
    // The write's own transaction: its event waits with the staged subscription, and a
    // transaction with nothing joined to apply still moves the cut.
    let event = RowEvent::Insert {
        key: key.clone(),
        row: vec![key.clone(), Value::Integer(1)],
    };
    store.stage(sub, Some(SyncId(1)), "t", &event).unwrap();
    store.apply_live(SyncId(1), &[]).unwrap();
    store
        .resolve(seq, &WriteOutcome::Committed { sync_id: SyncId(1) })
        .unwrap();
    assert_eq!(
        store.pending().len(),
        1,
        "held while the subscription stages"
    );
    assert!(store.row("t", &key).unwrap().is_some(), "never blinks out");
    store
        .join(&[(sub, JoinKind::Bootstrap, SyncId(0))], SyncId(1))
        .unwrap();
    assert!(
        store.pending().is_empty(),
        "dropped once the server state holds it"
    );
    assert_eq!(
        store.row("t", &key).unwrap(),
        Some(vec![key.clone(), Value::Integer(1)])
    );
}

fn schema_sql(schema: &Schema) -> String {
    let sql: Vec<String> = schema.tables().map(|t| t.create_sql()).collect();
    sql.join(";\n")
}

#[test]
fn adopting_the_same_schema_again_resets_nothing() {
    let (_dir, mut store) = store();
    let with_defaults = Schema::parse(
        "d.sql",
        "CREATE TABLE t (id TEXT PRIMARY KEY, v INTEGER NOT NULL DEFAULT 0, s TEXT DEFAULT 'x')",
    )
    .unwrap();
    store.adopt_schema(&schema_sql(&with_defaults)).unwrap();
    // Each round trip through the generated DDL must compare equal to the last.
    for _ in 0..3 {
        let again = schema_sql(store.schema());
        assert!(store.adopt_schema(&again).unwrap().is_empty());
    }
}

#[test]
fn an_added_not_null_column_shows_its_default_on_existing_rows() {
    let (_dir, mut store) = store();
    let cols = vec!["id".to_string(), "v".to_string()];
    let sub = store.add_sub("SELECT * FROM t", &Params::new()).unwrap();
    store.describe_sub(sub, "t", &cols).unwrap();
    store
        .apply_live(
            SyncId(1),
            &[(
                sub,
                "t".into(),
                RowEvent::Insert {
                    key: Value::Text("a".into()),
                    row: vec![Value::Text("a".into()), Value::Integer(1)],
                },
            )],
        )
        .unwrap();
    let added = Schema::parse(
        "v2.sql",
        "CREATE TABLE t (id TEXT PRIMARY KEY, v INTEGER, w INTEGER NOT NULL DEFAULT 7)",
    )
    .unwrap();
    let reset = store.adopt_schema(&schema_sql(&added)).unwrap();
    assert!(reset.is_empty(), "additive: the rows stay");
    let (_, rows) = store.query("SELECT id, v, w FROM t", &[]).unwrap();
    assert_eq!(
        rows,
        vec![vec![
            Value::Text("a".into()),
            Value::Integer(1),
            Value::Integer(7)
        ]]
    );
}

/// A live event can cross the app's `Unsubscribe` on its way: it must not cover the row
/// under the holder that is gone, or the row would never leave the view.
#[test]
fn an_event_for_a_dropped_subscription_covers_nothing() {
    let (_dir, mut store) = store();
    let cols = vec!["id".to_string(), "v".to_string()];
    let team = store.add_sub("SELECT * FROM t", &Params::new()).unwrap();
    let urgent = store
        .add_sub("SELECT * FROM t WHERE v >= 5", &Params::new())
        .unwrap();
    store.describe_sub(team, "t", &cols).unwrap();
    store.describe_sub(urgent, "t", &cols).unwrap();
    store
        .apply_live(
            SyncId(1),
            &[
                (team, "t".into(), row("a", 5)),
                (urgent, "t".into(), row("a", 5)),
            ],
        )
        .unwrap();
    store.remove_sub(team).unwrap();
    let key = Value::Text("a".into());
    assert!(
        store.row("t", &key).unwrap().is_some(),
        "urgent still covers it"
    );
    // The server had not seen the unsubscribe when it matched the next change.
    let gone = RowEvent::Delete {
        key: key.clone(),
        reason: crate::vocab::MoveOut::MovedOut,
    };
    store
        .apply_live(
            SyncId(2),
            &[(team, "t".into(), row("a", 1)), (urgent, "t".into(), gone)],
        )
        .unwrap();
    assert!(
        store.row("t", &key).unwrap().is_none(),
        "the row left the view"
    );
}

#[test]
fn a_database_behind_the_cut_or_another_database_means_starting_over() {
    let (_dir, mut store) = store();
    let cols = vec!["id".to_string(), "v".to_string()];
    let sub = store.add_sub("SELECT * FROM t", &Params::new()).unwrap();
    store.describe_sub(sub, "t", &cols).unwrap();
    assert!(
        !store.adopt_server("one", SyncId(0)).unwrap(),
        "first contact"
    );
    store.stage_clear(sub).unwrap();
    store
        .join(&[(sub, JoinKind::Bootstrap, SyncId(5))], SyncId(5))
        .unwrap();
    assert!(
        !store.adopt_server("one", SyncId(7)).unwrap(),
        "same, ahead"
    );
    assert_eq!(store.cut().unwrap(), SyncId(5));
    // Restored from a backup: same id, behind the cut.
    assert!(store.adopt_server("one", SyncId(3)).unwrap());
    assert_eq!(store.cut().unwrap(), SyncId::ZERO);
    assert!(!store.subs().unwrap()[0].joined, "bootstraps again");
    store.stage_clear(sub).unwrap();
    store
        .join(&[(sub, JoinKind::Bootstrap, SyncId(3))], SyncId(3))
        .unwrap();
    // Another database altogether.
    assert!(store.adopt_server("two", SyncId(9)).unwrap());
    assert_eq!(store.cut().unwrap(), SyncId::ZERO);
}

/// A server tells each caller only the columns it may know of: opening the store again
/// with the same app schema must not widen (and so reset) what the server narrowed.
#[test]
fn reopening_with_the_same_app_schema_keeps_the_servers_narrower_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.db");
    let app = |sql: &str| Schema::parse("app.sql", sql).unwrap();
    const WIDE: &str = "CREATE TABLE t (id TEXT PRIMARY KEY, secret TEXT, v INTEGER)";
    {
        let mut store = LocalStore::open(&path, Some(app(WIDE))).unwrap();
        let told = app("CREATE TABLE t (id TEXT PRIMARY KEY, v INTEGER)");
        store.adopt_schema(&schema_sql(&told)).unwrap();
        let sub = store.add_sub("SELECT * FROM t", &Params::new()).unwrap();
        store
            .describe_sub(sub, "t", &["id".to_string(), "v".to_string()])
            .unwrap();
        let key = Value::Text("a".into());
        let event = RowEvent::Insert {
            key: key.clone(),
            row: vec![key, Value::Integer(1)],
        };
        store
            .apply_live(SyncId(1), &[(sub, "t".into(), event)])
            .unwrap();
    }
    let expected = vec![vec![Value::Text("a".into()), Value::Integer(1)]];
    {
        let store = LocalStore::open(&path, Some(app(WIDE))).unwrap();
        let columns: Vec<&str> = store
            .schema()
            .table("t")
            .unwrap()
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["id", "v"], "the server's form is kept");
        assert_eq!(store.query("SELECT id, v FROM t", &[]).unwrap().1, expected);
    }
    // An upgraded app schema is the app's to adopt: it is new to this store.
    let store = LocalStore::open(
        &path,
        Some(app(&format!(
            "{WIDE}; CREATE TABLE u (id INTEGER PRIMARY KEY)"
        ))),
    )
    .unwrap();
    assert!(store.schema().table("u").is_some());
}

/// Two subscriptions hold a row, one with every column, one with two: when the wide one
/// lets go, the columns only it carried do not keep its last values (the narrow one's
/// updates would never refresh them); they become NULL.
#[test]
fn columns_only_a_released_wide_subscription_carried_do_not_go_stale() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::parse(
        "t.sql",
        "CREATE TABLE t (id TEXT PRIMARY KEY, v INTEGER, status TEXT)",
    )
    .unwrap();
    let mut store = LocalStore::open(&dir.path().join("local.db"), Some(schema)).unwrap();
    let wide = store.add_sub("SELECT * FROM t", &Params::new()).unwrap();
    let narrow = store
        .add_sub("SELECT id, v FROM t", &Params::new())
        .unwrap();
    let all: Vec<String> = ["id", "v", "status"].map(String::from).to_vec();
    store.describe_sub(wide, "t", &all).unwrap();
    store.describe_sub(narrow, "t", &all[..2]).unwrap();
    let key = Value::Text("a".into());
    let full = vec![key.clone(), Value::Integer(1), Value::Text("todo".into())];
    let events = [
        (
            wide,
            "t".into(),
            RowEvent::Insert {
                key: key.clone(),
                row: full,
            },
        ),
        (
            narrow,
            "t".into(),
            RowEvent::Insert {
                key: key.clone(),
                row: vec![key.clone(), Value::Integer(1)],
            },
        ),
    ];
    store.apply_live(SyncId(1), &events).unwrap();
    let visible = |store: &LocalStore| store.query("SELECT id, v, status FROM t", &[]).unwrap().1;
    assert_eq!(visible(&store)[0][2], Value::Text("todo".into()));
    // The row's status changed on the server, so it left the wide subscription's WHERE
    // (say `status = 'todo'`); the narrow one still holds it.
    let left = RowEvent::Delete {
        key: key.clone(),
        reason: MoveOut::MovedOut,
    };
    let update = RowEvent::Update {
        key: key.clone(),
        row: vec![key.clone(), Value::Integer(2)],
    };
    store
        .apply_live(
            SyncId(2),
            &[(wide, "t".into(), left), (narrow, "t".into(), update)],
        )
        .unwrap();
    assert_eq!(
        visible(&store),
        vec![vec![key.clone(), Value::Integer(2), Value::Null]],
        "not the stale 'todo'"
    );
    // Unsubscribing the narrow one's sibling never blanks what a remaining holder carries.
    store.remove_sub(wide).unwrap();
    assert_eq!(visible(&store)[0][1], Value::Integer(2));
}
