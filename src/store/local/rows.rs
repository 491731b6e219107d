//! Row-level plumbing of the local store: reading and writing the server-state and
//! visible tables, coverage checks, per-row versions, and the rebase of a row (server
//! state plus pending local transactions). Every function runs inside the caller's
//! transaction.
//!
//! Private to the local store; depends only on the schema, values and the vocabulary.

use std::collections::BTreeMap;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::{whole, Applied, Pending};
use crate::schema::{quote_ident, Schema, Table};
use crate::store::convert::read_row;
use crate::store::error::StoreError;
use crate::value::Value;
use crate::vocab::{Mutation, RowEvent, SubId, SyncId};

pub(super) fn shadow(table: &str) -> String {
    quote_ident(&format!("_sluice_srv_{table}"))
}

pub(super) fn local_ddl(table: &Table, name: &str) -> String {
    let cols: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut def = format!("{} {}", quote_ident(&c.name), c.declared_type);
            if i == table.pk {
                def.push_str(" PRIMARY KEY");
            }
            def
        })
        .collect();
    format!("CREATE TABLE IF NOT EXISTS {name} ({})", cols.join(", "))
}

pub(super) fn key_of_insert(table: &Table, values: &[(String, Value)]) -> Option<Value> {
    let pk = &table.pk_column().name;
    values
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(pk))
        .map(|(_, v)| v.clone())
}

/// The table and key a mutation touches.
pub(super) fn target(schema: &Schema, m: &Mutation) -> Option<(Arc<Table>, Value)> {
    let table = schema.table(m.table())?.clone();
    let key = match m {
        Mutation::Insert { values, .. } => key_of_insert(&table, values)?,
        Mutation::Update { key, .. } | Mutation::Delete { key, .. } => key.clone(),
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    Some((table, key))
}

pub(super) fn same_key(a: &Value, b: &Value) -> bool {
    a.sqlite_cmp(b).is_eq()
}

pub(super) fn set_cut(conn: &Connection, cut: SyncId) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO _sluice_meta (name, value) VALUES ('cut', ?1)
         ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
        [cut.0 as i64],
    )?;
    Ok(())
}

pub(super) fn sub_columns(conn: &Connection) -> Result<BTreeMap<SubId, Vec<String>>, StoreError> {
    let mut stmt = conn.prepare("SELECT id, columns FROM _sluice_subs")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))
    })?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (id, cols) = row?;
        if let Some(c) = cols {
            out.insert(SubId(id as u64), postcard::from_bytes(&c)?);
        }
    }
    Ok(out)
}

/// Whether a holder covers the row: by a coverage row, or by covering its table whole
/// (see `whole`) while the server state holds it.
pub(super) fn covered(conn: &Connection, table: &Table, key: &Value) -> Result<bool, StoreError> {
    let by_row = conn
        .prepare_cached("SELECT 1 FROM _sluice_cover WHERE table_name = ?1 AND key = ?2 LIMIT 1")?
        .query_row(params![table.name, key], |_| Ok(()))
        .optional()?
        .is_some();
    if by_row {
        return Ok(true);
    }
    Ok(whole::holder(conn, &table.name)?.is_some() && whole::holds(conn, table, key)?)
}

pub(super) fn read_one(
    conn: &Connection,
    name: &str,
    table: &Table,
    key: &Value,
) -> Result<Option<Vec<Value>>, StoreError> {
    let sql = format!(
        "SELECT * FROM {name} WHERE {} = ?1",
        quote_ident(&table.pk_column().name)
    );
    let width = table.columns.len();
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([key], |r| read_row(r, width))
        .optional()?)
}

pub(super) fn delete_shadow(
    conn: &Connection,
    table: &Table,
    key: &Value,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM _sluice_rowver WHERE table_name = ?1 AND key = ?2")?
        .execute(params![table.name, key])?;
    conn.prepare_cached(&format!(
        "DELETE FROM {} WHERE {} = ?1",
        shadow(&table.name),
        quote_ident(&table.pk_column().name)
    ))?
    .execute([key])?;
    Ok(())
}

/// Applies one server event of subscription `sub`, describing the row as of sync id
/// `version`, to the server state and coverage. Row content never goes back in time: a
/// row shared by several subscriptions may hear of a newer state through one of them
/// before an older snapshot of another joins. Returns whether the content was written.
pub(super) fn apply_event(
    conn: &Connection,
    table: &Table,
    sub: SubId,
    columns: &[String],
    event: &RowEvent,
    version: SyncId,
) -> Result<bool, StoreError> {
    let holder = sub;
    // The table's one holder, when it covers the table whole (see `whole`).
    let whole = whole::holder(conn, &table.name)?;
    let own = whole.filter(|(h, _)| *h == holder);
    match event {
        RowEvent::Insert { key, row } | RowEvent::Update { key, row } => {
            if let Some((_, floor)) = own {
                // Covered by the table's coverage once written; a row without a version
                // row of its own is at the snapshot's version.
                if version < floor && whole::holds(conn, table, key)? {
                    return Ok(false);
                }
            } else {
                if whole.is_some() {
                    // Another holder shares the table from now on.
                    whole::materialize(conn, table)?;
                }
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO _sluice_cover (table_name, key, holder)
                     VALUES (?1, ?2, ?3)",
                )?
                .execute(params![table.name, key, holder])?;
            }
            // A version row exists exactly while the server-state row does.
            let fresh = conn
                .prepare_cached(
                    "INSERT INTO _sluice_rowver (table_name, key, sync) VALUES (?1, ?2, ?3)
                     ON CONFLICT (table_name, key) DO UPDATE SET sync = excluded.sync
                     WHERE sync <= excluded.sync",
                )?
                .execute(params![table.name, key, version.0 as i64])?;
            if fresh == 0 {
                return Ok(false);
            }
            upsert_row(conn, &shadow(&table.name), table, columns, key, row)?;
            Ok(true)
        }
        RowEvent::Delete { key, .. } if own.is_some() => {
            // The row leaves the server state with its only holder's coverage.
            delete_shadow(conn, table, key)?;
            Ok(false)
        }
        RowEvent::Delete { key, .. } => {
            let released = conn
                .prepare_cached(
                    "DELETE FROM _sluice_cover WHERE table_name = ?1 AND key = ?2 AND holder = ?3",
                )?
                .execute(params![table.name, key, holder])?;
            if released > 0 {
                forget_uncovered_columns(conn, table, key)?;
            }
            Ok(false)
        }
    }
}

/// After a holder let go of a row that others still hold: the columns none of them
/// carries would otherwise keep the released holder's last values, a state the server no
/// longer vouches for (a narrower subscription's updates never refresh them). They become
/// NULL in the server state. A holder whose columns are unknown (a batch-loader pin, or
/// a subscription not described yet) counts as carrying every column.
pub(super) fn forget_uncovered_columns(
    conn: &Connection,
    table: &Table,
    key: &Value,
) -> Result<(), StoreError> {
    let mut carried = vec![false; table.columns.len()];
    carried[table.pk] = true;
    let mut any = false;
    {
        let mut stmt = conn.prepare_cached(
            "SELECT s.columns FROM _sluice_cover c LEFT JOIN _sluice_subs s ON s.id = c.holder
             WHERE c.table_name = ?1 AND c.key = ?2",
        )?;
        let mut rows = stmt.query(params![table.name, key])?;
        while let Some(r) = rows.next()? {
            any = true;
            let columns: Option<Vec<String>> = match r.get::<_, Option<Vec<u8>>>(0)? {
                Some(blob) => Some(postcard::from_bytes(&blob)?),
                None => None,
            };
            match columns {
                Some(names) => {
                    for name in names {
                        if let Some(i) = table.column_index(&name) {
                            carried[i] = true;
                        }
                    }
                }
                None => return Ok(()),
            }
        }
    }
    if !any || carried.iter().all(|&c| c) {
        return Ok(());
    }
    let sets: Vec<String> = table
        .columns
        .iter()
        .zip(&carried)
        .filter(|(_, &c)| !c)
        .map(|(c, _)| format!("{} = NULL", quote_ident(&c.name)))
        .collect();
    conn.prepare_cached(&format!(
        "UPDATE {} SET {} WHERE {} = ?1",
        shadow(&table.name),
        sets.join(", "),
        quote_ident(&table.pk_column().name)
    ))?
    .execute([key])?;
    Ok(())
}

/// Writes the given columns of one row (inserting it, or updating just those columns),
/// in one statement. `columns` names `row`'s values; when they do not line up, `row` is
/// taken as the full row in table order.
pub(super) fn upsert_row(
    conn: &Connection,
    name: &str,
    table: &Table,
    columns: &[String],
    key: &Value,
    row: &[Value],
) -> Result<(), StoreError> {
    let all: Vec<String>;
    let names: &[String] = if columns.len() == row.len() {
        columns
    } else {
        all = table.columns.iter().map(|c| c.name.clone()).collect();
        &all
    };
    let pk = &table.pk_column().name;
    let mut cols: Vec<String> = Vec::with_capacity(names.len() + 1);
    let mut values: Vec<&Value> = Vec::with_capacity(names.len() + 1);
    for (n, v) in names.iter().zip(row) {
        if let Some(i) = table.column_index(n) {
            if i != table.pk {
                cols.push(quote_ident(&table.columns[i].name));
                values.push(v);
            }
        }
    }
    let updates: Vec<String> = cols.iter().map(|c| format!("{c} = excluded.{c}")).collect();
    cols.push(quote_ident(pk));
    values.push(key);
    let marks = vec!["?"; cols.len()].join(", ");
    let on_conflict = if updates.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    let sql = format!(
        "INSERT INTO {name} ({}) VALUES ({marks}) ON CONFLICT ({}) {on_conflict}",
        cols.join(", "),
        quote_ident(pk)
    );
    conn.prepare_cached(&sql)?
        .execute(rusqlite::params_from_iter(values))?;
    Ok(())
}

pub(super) fn write_row(
    conn: &Connection,
    name: &str,
    table: &Table,
    key: &Value,
    row: Option<&[Value]>,
) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "DELETE FROM {name} WHERE {} = ?1",
        quote_ident(&table.pk_column().name)
    ))?
    .execute([key])?;
    if let Some(row) = row {
        let marks = vec!["?"; row.len()].join(", ");
        conn.prepare_cached(&format!("INSERT INTO {name} VALUES ({marks})"))?
            .execute(rusqlite::params_from_iter(row.iter()))?;
    }
    Ok(())
}

/// Recomputes the visible row: server state (when covered) plus pending transactions.
/// Returns whether it changed.
pub(super) fn refresh(
    conn: &Connection,
    table: &Table,
    key: &Value,
    pending: &[Pending],
) -> Result<bool, StoreError> {
    let mut row = read_one(conn, &shadow(&table.name), table, key)?;
    for p in pending {
        for m in &p.mutations {
            if !m.table().eq_ignore_ascii_case(&table.name) {
                continue;
            }
            match m {
                Mutation::Insert { values, .. }
                    if key_of_insert(table, values).is_some_and(|k| same_key(&k, key)) =>
                {
                    let mut r = row
                        .take()
                        .unwrap_or_else(|| vec![Value::Null; table.columns.len()]);
                    for (c, v) in values {
                        if let Some(i) = table.column_index(c) {
                            r[i] = v.clone();
                        }
                    }
                    row = Some(r);
                }
                Mutation::Update { key: k, set, .. } if same_key(k, key) => {
                    if let Some(r) = row.as_mut() {
                        for (c, v) in set {
                            if let Some(i) = table.column_index(c) {
                                r[i] = v.clone();
                            }
                        }
                    }
                }
                Mutation::Delete { key: k, .. } if same_key(k, key) => row = None,
                _ => {}
            }
        }
    }
    let visible = quote_ident(&table.name);
    let before = read_one(conn, &visible, table, key)?;
    if before == row {
        return Ok(false);
    }
    write_row(conn, &visible, table, key, row.as_deref())?;
    Ok(true)
}

/// Refreshes every row a transaction touches.
pub(super) fn refresh_targets(
    conn: &Connection,
    schema: &Schema,
    txn: &Pending,
    pending: &[Pending],
) -> Result<Applied, StoreError> {
    let mut applied = Applied::default();
    for m in &txn.mutations {
        if let Some((table, key)) = target(schema, m) {
            if refresh(conn, &table, &key, pending)? {
                applied.row(&table.name, key);
            }
        }
    }
    Ok(applied)
}

/// After coverage of a row changed: drops its server state when nothing covers it any
/// more, then recomputes its visible row. Returns whether the visible row changed.
pub(super) fn settle(
    conn: &Connection,
    table: &Table,
    key: &Value,
    pending: &[Pending],
) -> Result<bool, StoreError> {
    if !covered(conn, table, key)? {
        delete_shadow(conn, table, key)?;
    }
    refresh(conn, table, key, pending)
}
