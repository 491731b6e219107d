//! The write side of a policy: the store's [`WriteGuard`] (every row change checked
//! against the grants of its operation, column lists and `KEEP` included), and refusals
//! worded alike whether or not a row the caller cannot read exists.

use super::*;

/// The refusal of `op` on the row with primary key `key`: one wording for every refusal,
/// so that a refusal says nothing about whether a row the caller cannot read exists.
fn denial(op: Op, table: &Table, key: &Value, which: &str) -> String {
    Denied(format!("you may not {op} {}[{key}]{which}", table.name)).to_string()
}

impl Policy {
    /// The one refusal of an insert of `key` into `table`, whatever the reason (a table
    /// closed to inserts says so, whatever the row): the same words whether the rules
    /// refuse the row, a column of it, or a row the caller cannot read holds the key.
    fn insert_refusal(&self, table: &Table, key: &Value) -> String {
        let open = self
            .table(&table.name)
            .is_some_and(|t| !t.grants[Op::Insert.index()].is_empty());
        if open {
            denial(Op::Insert, table, key, "")
        } else {
            closed(Op::Insert, table)
        }
    }
}

/// The refusal of `op` on a table no rule opens for it.
fn closed(op: Op, table: &Table) -> String {
    Denied(format!(
        "no rule allows you to {op} rows of `{}`",
        table.name
    ))
    .to_string()
}

impl WriteGuard for Policy {
    fn readable(&self, table: &Table, row: &[Value], column: Option<usize>) -> bool {
        match self.read(table) {
            Err(_) => false,
            Ok(None) => true,
            Ok(Some(access)) => {
                access.filter.matches(row)
                    && column.is_none_or(|c| {
                        access.columns.as_ref().is_none_or(|cols| cols.contains(&c))
                    })
            }
        }
    }

    fn insert_denied(&self, table: &Table, row: &[Value]) -> String {
        self.insert_refusal(table, &row[table.pk])
    }

    fn check(
        &self,
        table: &Table,
        mutation: &Mutation,
        old: Option<&[Value]>,
        new: Option<&[Value]>,
    ) -> Result<(), String> {
        let op = match mutation {
            Mutation::Insert { .. } => Op::Insert,
            Mutation::Update { .. } => Op::Update,
            _ => Op::Delete,
        };
        let Some(t) = self.table(&table.name) else {
            return if self.tables.is_none() {
                Ok(())
            } else {
                Err(closed(op, table))
            };
        };
        let key = new.or(old).map_or(Value::Null, |r| r[table.pk].clone());
        let fail = |op: Op, which: &str| Err(denial(op, table, &key, which));
        let set: &[(String, Value)] = match mutation {
            Mutation::Insert { values, .. } => values,
            Mutation::Update { set, .. } => set,
            _ => &[],
        };
        if let Some((name, _)) = set.iter().find(|(name, _)| {
            table
                .column_index(name)
                .is_some_and(|i| t.hidden.contains(&i))
        }) {
            // An insert's refusal never names a column: it must read like the refusal of
            // an insert whose key is held by a row the caller cannot read.
            if op == Op::Insert {
                return Err(self.insert_refusal(table, &key));
            }
            return Err(
                Denied(format!("column {}.{name} is not writable", table.name)).to_string(),
            );
        }
        let grants = &t.grants[op.index()];
        if grants.is_empty() {
            return Err(closed(op, table));
        }
        let columns: Vec<usize> = set
            .iter()
            .filter_map(|(name, _)| table.column_index(name))
            .filter(|&i| !(op == Op::Insert && i == table.pk))
            .collect();
        match (mutation, old, new) {
            (Mutation::Insert { .. }, _, Some(new)) => {
                if !grants
                    .iter()
                    .any(|g| g.filter.matches(new) && g.settable(&columns).is_none())
                {
                    return fail(Op::Insert, "");
                }
            }
            (Mutation::Update { .. }, Some(old), Some(new)) => {
                let mut first = None;
                for g in grants.iter().filter(|g| g.filter.matches(old)) {
                    let refusal = g.settable(&columns).map(Refusal::Column).or_else(|| {
                        g.keep
                            .iter()
                            .find(|&&c| old[c] != new[c])
                            .map(|&c| Refusal::Kept(c))
                            .or((!g.filter.matches(new)).then_some(Refusal::State))
                    });
                    match refusal {
                        None => return Ok(()),
                        Some(r) => {
                            first.get_or_insert(r);
                        }
                    }
                }
                let column = |c: usize| &table.columns[c].name;
                return match first {
                    None => fail(Op::Update, ""),
                    Some(Refusal::Column(c)) => fail(Op::Update, &format!(".{}", column(c))),
                    Some(Refusal::Kept(c)) => Err(Denied(format!(
                        "you may not change {}[{key}].{}",
                        table.name,
                        column(c)
                    ))
                    .to_string()),
                    Some(Refusal::State) => fail(Op::Update, " into that state"),
                };
            }
            (Mutation::Delete { .. }, Some(old), _) => {
                if !t.ops[Op::Delete.index()]
                    .as_ref()
                    .is_some_and(|p| p.matches(old))
                {
                    return fail(Op::Delete, "");
                }
            }
            _ => return Err("permission check got an unexpected row change".to_string()),
        }
        Ok(())
    }
}

/// Why one grant does not allow an update.
enum Refusal {
    /// The update sets a column the grant does not list.
    Column(usize),
    /// The update changes a column the grant keeps.
    Kept(usize),
    /// The new row does not satisfy the grant's predicate.
    State,
}

impl BoundGrant {
    /// The first of `columns` this grant may not set, if any.
    fn settable(&self, columns: &[usize]) -> Option<usize> {
        let allowed = self.columns.as_ref()?;
        columns.iter().copied().find(|c| !allowed.contains(c))
    }
}
