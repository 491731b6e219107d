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

#[test]
fn a_server_transaction_with_pinned_rows_is_one_local_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.db");
    let schema = Schema::parse("t.sql", "CREATE TABLE t (id TEXT PRIMARY KEY, v INTEGER)").unwrap();
    let mut store = LocalStore::open(&path, Some(schema)).unwrap();
    let cols = vec!["id".to_string(), "v".to_string()];
    let sub = store.add_sub("SELECT * FROM t", &Params::new()).unwrap();
    store.describe_sub(sub, "t", &cols).unwrap();
    // An optimistic write the server committed at 7, the transaction this test applies.
    let insert = Mutation::Insert {
        table: "t".into(),
        values: vec![
            ("id".into(), Value::Text("w".into())),
            ("v".into(), Value::Integer(3)),
        ],
    };
    let (seq, _) = store.enqueue(vec![insert], vec![]).unwrap();
    store
        .resolve(seq, &WriteOutcome::Committed { sync_id: SyncId(7) })
        .unwrap();
    let live = vec![
        (sub, "t".to_string(), row("w", 3)),
        (sub, "t".into(), row("s", 1)),
    ];
    let pins = vec![(
        "t".to_string(),
        PinChange::Row(vec![Value::Text("p".into()), Value::Integer(2)]),
    )];
    let txn = ServerTxn {
        sync_id: SyncId(7),
        stage: &[],
        live: Some(&live),
        pins: &pins,
    };
    // A failure while writing the pinned part (a crash would do the same) must take the
    // subscription's part and the outbox's confirmation with it.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "CREATE TRIGGER fail_pins AFTER INSERT ON _sluice_cover WHEN NEW.key = 'p'
         BEGIN SELECT RAISE(ABORT, 'injected'); END",
    )
    .unwrap();
    assert!(store.apply_server_txn(txn).is_err());
    let s = Value::Text("s".into());
    assert!(store.row("t", &s).unwrap().is_none(), "no half transaction");
    assert_eq!(store.cut().unwrap(), SyncId::ZERO);
    assert_eq!(
        store.pending().len(),
        1,
        "the write waits for its server state"
    );
    assert!(store.row("t", &Value::Text("w".into())).unwrap().is_some());
    raw.execute_batch("DROP TRIGGER fail_pins").unwrap();
    let applied = store.apply_server_txn(txn).unwrap();
    assert_eq!(store.cut().unwrap(), SyncId(7));
    assert!(
        store.pending().is_empty(),
        "confirmed in the same transaction"
    );
    for (key, v) in [("s", 1), ("p", 2), ("w", 3)] {
        let key = Value::Text(key.into());
        assert_eq!(store.row("t", &key).unwrap().unwrap()[1], Value::Integer(v));
    }
    assert!(store.is_covered("t", &Value::Text("p".into())).unwrap());
    assert!(applied
        .rows
        .contains(&("t".to_string(), KeyOrd(Value::Text("p".into())))));
    // The pin's deletion releases the row in the next transaction.
    let gone = vec![("t".to_string(), PinChange::Gone(Value::Text("p".into())))];
    store
        .apply_server_txn(ServerTxn {
            sync_id: SyncId(8),
            stage: &[],
            live: Some(&[]),
            pins: &gone,
        })
        .unwrap();
    assert!(store.row("t", &Value::Text("p".into())).unwrap().is_none());
}

#[test]
fn a_reader_sees_the_last_committed_view_while_the_store_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.db");
    let schema = Schema::parse("t.sql", "CREATE TABLE t (id TEXT PRIMARY KEY, v INTEGER)").unwrap();
    let mut store = LocalStore::open(&path, Some(schema)).unwrap();
    let cols = vec!["id".to_string(), "v".to_string()];
    let sub = store.add_sub("SELECT * FROM t", &Params::new()).unwrap();
    store.describe_sub(sub, "t", &cols).unwrap();
    store
        .apply_live(SyncId(1), &[(sub, "t".into(), row("x", 1))])
        .unwrap();
    let reader = store.reader().unwrap();
    let x = Value::Text("x".into());
    // Another connection holds a write transaction open, as the store does during a
    // join: the reader neither waits for it nor sees its uncommitted rows.
    let mut raw = rusqlite::Connection::open(&path).unwrap();
    let tx = raw
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    tx.execute("UPDATE t SET v = 99 WHERE id = 'x'", [])
        .unwrap();
    assert_eq!(reader.row("t", &x).unwrap().unwrap()[1], Value::Integer(1));
    let (names, rows) = reader.query("SELECT v FROM t", &[]).unwrap();
    assert_eq!(
        (names, rows),
        (vec!["v".to_string()], vec![vec![Value::Integer(1)]])
    );
    tx.commit().unwrap();
    assert_eq!(reader.row("t", &x).unwrap().unwrap()[1], Value::Integer(99));
    // Reads stay reads, and the reader follows the schema the store adopts.
    assert!(matches!(
        reader.query("DELETE FROM t", &[]),
        Err(StoreError::Local(_))
    ));
    assert!(reader.row("u", &x).unwrap().is_none(), "unknown table");
    store
        .adopt_schema(
            "CREATE TABLE t (id TEXT PRIMARY KEY, v INTEGER);
             CREATE TABLE u (id TEXT PRIMARY KEY)",
        )
        .unwrap();
    raw.execute("INSERT INTO u (id) VALUES ('x')", []).unwrap();
    assert_eq!(reader.row("u", &x).unwrap(), Some(vec![x.clone()]));
    assert!(!reader.is_covered("u", &x).unwrap());
    assert!(reader.is_covered("t", &x).unwrap());
}

#[test]
fn an_in_memory_store_has_no_reader() {
    let schema = Schema::parse("t.sql", "CREATE TABLE t (id TEXT PRIMARY KEY)").unwrap();
    let store = LocalStore::open(Path::new(":memory:"), Some(schema)).unwrap();
    assert!(store.reader().is_err());
}

#[test]
fn subscription_ids_are_never_reused() {
    let (_dir, mut store) = store();
    let a = store.add_sub("SELECT * FROM t", &Params::new()).unwrap();
    store.remove_sub(a).unwrap();
    let b = store.add_sub("SELECT * FROM t", &Params::new()).unwrap();
    assert_ne!(a, b, "frames of the dropped one may still arrive");
    assert!(b > a);
}

#[test]
fn a_row_changed_twice_in_a_live_transaction_shows_its_final_state() {
    let (_dir, mut store) = store();
    let cols = vec!["id".to_string(), "v".to_string()];
    let sub = store
        .add_sub("SELECT * FROM t WHERE v > 5", &Params::new())
        .unwrap();
    store.describe_sub(sub, "t", &cols).unwrap();
    let key = Value::Text("x".into());
    // Pinned as of 7: the transaction's final state (v = 1).
    let pinned = vec![key.clone(), Value::Integer(1)];
    store.pin_rows("t", &[pinned], SyncId(7)).unwrap();
    // Transaction 7 moved the row into the subscription (v = 9), then out again (v = 1).
    let out = RowEvent::Delete {
        key: key.clone(),
        reason: MoveOut::MovedOut,
    };
    store
        .apply_live(
            SyncId(7),
            &[(sub, "t".into(), row("x", 9)), (sub, "t".into(), out)],
        )
        .unwrap();
    assert_eq!(store.row("t", &key).unwrap().unwrap()[1], Value::Integer(1));
}
