//! A session's permissions: the rules bound with its verified claims, once, at the
//! handshake. Answers "which shape may this subscription really have", "which fetched
//! rows and columns may it see" and "may it write this row".
//!
//! Pure: predicates are evaluated in memory; the store calls [`Policy`] as a
//! [`WriteGuard`] inside the transaction that writes the row.

use std::collections::HashMap;
use std::sync::Arc;

use sqlparser::tokenizer::Token;

use super::claims::Claims;
use super::rules::{Grant, Op, Rules};
use crate::query::{
    tokenize, Param, ParamUse, Params, Pos, Pred, QueryError, QueryErrorKind, Shape, Template,
};
use crate::schema::{Schema, Table};
use crate::store::WriteGuard;
use crate::value::Value;
use crate::vocab::Mutation;

mod visible;
mod write;

/// An operation the caller may not do; the message says which and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("permission denied: {0}")]
pub struct Denied(pub String);

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    #[error(transparent)]
    /// The subscription does not compile.
    Query(#[from] QueryError),
    #[error(transparent)]
    /// The subscription compiles but asks for what the caller may not read.
    Denied(#[from] Denied),
}

/// One grant of the rules bound for one session.
#[derive(Debug)]
struct BoundGrant {
    /// The predicate the row (for an update: the old and the new row) must satisfy.
    filter: Pred,
    /// The only columns an insert or update may set; `None`: any.
    columns: Option<Vec<usize>>,
    /// The columns an update must leave unchanged.
    keep: Vec<usize>,
}

/// The rules of one table for one session.
#[derive(Debug)]
struct BoundTable {
    table: Arc<Table>,
    /// Per op, the predicate a row must satisfy (the grants' predicates ORed); `None`: the
    /// op is not allowed.
    ops: [Option<Pred>; 4],
    /// Per op, the grants: inserts and updates are checked against each in turn.
    grants: [Vec<BoundGrant>; 4],
    hidden: Vec<usize>,
}

/// What a subscription becomes under a policy.
#[derive(Debug, Clone)]
pub struct Effective {
    /// The subscription ANDed with the read rule, projected to readable columns.
    pub shape: Shape,
    /// The subscription's own predicate, without the rule: a row that leaves `shape`
    /// but still satisfies `base` left because it is no longer permitted. `None` when no
    /// rules apply.
    pub base: Option<Arc<Pred>>,
}

/// What a caller may read of one table.
#[derive(Debug)]
pub struct ReadAccess<'a> {
    /// The read rule as a predicate on the table's rows (TRUE when every row is readable).
    pub filter: &'a Pred,
    /// Readable column indexes, in table order; `None` for all.
    pub columns: Option<Vec<usize>>,
}

/// A session's bound rules. `None` rules ([`Policy::open`]) allow everything.
#[derive(Debug)]
pub struct Policy {
    /// `None`: no rules file, everything open.
    tables: Option<HashMap<String, BoundTable>>,
    params: Params,
    sub: Option<String>,
}

impl Policy {
    /// No rules: every table readable and writable in full (the `--no-auth` default).
    pub fn open(claims: &Claims) -> Policy {
        Policy {
            tables: None,
            params: claims.params(),
            sub: claims.sub.clone(),
        }
    }

    /// Binds `rules` with `claims`. A claim a rule needs but the token lacks binds as
    /// NULL (so a comparison with it is never true); a single value where a rule wants a
    /// list becomes a one-element list, a list where it wants a value becomes NULL.
    pub fn bind(rules: &Rules, claims: &Claims) -> Policy {
        let params = claims.params();
        let mut tables = HashMap::new();
        for (name, t) in &rules.tables {
            let grants: [Vec<BoundGrant>; 4] = Op::ALL.map(|op| {
                t.ops[op.index()]
                    .iter()
                    .filter_map(|grant| bind_grant(grant, &params))
                    .collect()
            });
            tables.insert(
                name.clone(),
                BoundTable {
                    table: t.table.clone(),
                    ops: Op::ALL.map(|op| any_of(&grants[op.index()])),
                    grants,
                    hidden: t.hidden.clone(),
                },
            );
        }
        Policy {
            tables: Some(tables),
            params,
            sub: claims.sub.clone(),
        }
    }

    /// The user the session belongs to.
    pub fn user(&self) -> Option<&str> {
        self.sub.as_deref()
    }

    /// Whether rules apply at all.
    pub fn is_restricted(&self) -> bool {
        self.tables.is_some()
    }

    fn table(&self, name: &str) -> Option<&BoundTable> {
        self.tables.as_ref()?.get(&name.to_ascii_lowercase())
    }

    /// The read rule and readable columns of `table`.
    pub fn read(&self, table: &Table) -> Result<Option<ReadAccess<'_>>, Denied> {
        if self.tables.is_none() {
            return Ok(None);
        }
        let t = self
            .table(&table.name)
            .ok_or_else(|| Denied(format!("no rule allows reading `{}`", table.name)))?;
        let filter = t.ops[Op::Read.index()]
            .as_ref()
            .ok_or_else(|| Denied(format!("no rule allows reading `{}`", table.name)))?;
        let columns = (!t.hidden.is_empty()).then(|| {
            (0..t.table.columns.len())
                .filter(|i| !t.hidden.contains(i))
                .collect()
        });
        Ok(Some(ReadAccess { filter, columns }))
    }

    /// Compiles a subscription for this caller: `:auth.*` parameters come from the
    /// token (the client may not set them), hidden columns may be neither selected nor
    /// filtered on, and the table's read rule is ANDed in.
    pub fn subscription(
        &self,
        schema: &Schema,
        sql: &str,
        client_params: &Params,
    ) -> Result<Effective, SubscribeError> {
        self.compile(schema, sql, client_params, false)
    }

    /// [`Policy::subscription`] for a key-set shape the server builds from a session's
    /// pins: its key list may be longer than a client's IN list
    /// ([`crate::query::MAX_IN_LIST`]); the pins have their own bound.
    pub fn pinned(
        &self,
        schema: &Schema,
        sql: &str,
        params: &Params,
    ) -> Result<Effective, SubscribeError> {
        self.compile(schema, sql, params, true)
    }

    fn compile(
        &self,
        schema: &Schema,
        sql: &str,
        client_params: &Params,
        trusted_lists: bool,
    ) -> Result<Effective, SubscribeError> {
        if let Some(name) = client_params.names().find(|n| n.starts_with("auth.")) {
            return Err(Denied(format!(
                "parameter :{name} comes from the token; a client cannot set it"
            ))
            .into());
        }
        let template = Template::parse(schema, sql)?;
        let mut params = client_params.clone();
        params.extend(&self.params);
        let bound = if trusted_lists {
            template.bind_trusted(&params)?
        } else {
            template.bind(&params)?
        };
        let table = bound.table().clone();
        let Some(access) = self.read(&table)? else {
            return Ok(Effective {
                shape: bound,
                base: None,
            });
        };
        let hidden = &self
            .table(&table.name)
            .map(|t| t.hidden.clone())
            .unwrap_or_default();
        if let Some(cols) = bound.projection() {
            if let Some(&c) = cols.iter().find(|c| hidden.contains(c)) {
                return Err(hidden_error(&table, c, sql).into());
            }
        }
        for leaf in bound.filter().leaves() {
            if let Some(c) = leaf_column(leaf).filter(|c| hidden.contains(c)) {
                return Err(hidden_error(&table, c, sql).into());
            }
        }
        let order = bound.window().map(|w| w.order()).unwrap_or_default();
        if let Some(t) = order.iter().find(|t| hidden.contains(&t.col)) {
            return Err(hidden_error(&table, t.col, sql).into());
        }
        let projection = match bound.projection() {
            Some(cols) => Some(cols.to_vec()),
            None => access.columns.clone(),
        };
        let base = bound.filter().clone();
        let combined = Pred::And(vec![base.clone(), access.filter.clone()]);
        Ok(Effective {
            shape: Shape::windowed(table, projection, combined, bound.window().cloned()),
            base: Some(Arc::new(base)),
        })
    }

    /// Keeps the fetched rows the caller may read, projected to readable columns; returns
    /// them with the names of those columns.
    pub fn fetched(
        &self,
        table: &Table,
        rows: Vec<Vec<Value>>,
    ) -> Result<(Vec<Vec<Value>>, Vec<String>), Denied> {
        let names = |cols: Option<&[usize]>| -> Vec<String> {
            match cols {
                None => table.columns.iter().map(|c| c.name.clone()).collect(),
                Some(cols) => cols
                    .iter()
                    .map(|&c| table.columns[c].name.clone())
                    .collect(),
            }
        };
        match self.read(table)? {
            None => Ok((rows, names(None))),
            Some(access) => {
                let rows = rows
                    .into_iter()
                    .filter(|r| access.filter.matches(r))
                    .map(|r| match &access.columns {
                        None => r,
                        Some(cols) => cols.iter().map(|&c| r[c].clone()).collect(),
                    })
                    .collect();
                Ok((rows, names(access.columns.as_deref())))
            }
        }
    }
}

fn bind_grant(grant: &Grant, claims: &Params) -> Option<BoundGrant> {
    let filter = match &grant.filter {
        None => Pred::TRUE,
        Some((template, uses)) => {
            // Validation at load time rules out binding errors; a grant that still fails
            // to bind allows nothing.
            let shape = template.bind_trusted(&coerce(uses, claims)).ok()?;
            shape.filter().clone()
        }
    };
    Some(BoundGrant {
        filter,
        columns: grant.columns.clone(),
        keep: grant.keep.clone(),
    })
}

/// The grants' predicates ORed; `None` when there are none.
fn any_of(grants: &[BoundGrant]) -> Option<Pred> {
    if grants.iter().any(|g| g.filter.is_true()) {
        return Some(Pred::TRUE);
    }
    let mut alternatives: Vec<Pred> = grants.iter().map(|g| g.filter.clone()).collect();
    match alternatives.len() {
        0 => None,
        1 => alternatives.pop(),
        _ => Some(Pred::Or(alternatives)),
    }
}

/// The parameters one rule needs, shaped the way it uses them.
fn coerce(uses: &[ParamUse], claims: &Params) -> Params {
    let mut params = Params::new();
    for u in uses {
        let param = match (u.list, claims.get(&u.name)) {
            (true, Some(Param::List(values))) => Param::List(values.clone()),
            (true, Some(Param::Value(v))) => Param::List(vec![v.clone()]),
            (true, None) => Param::List(vec![Value::Null]),
            (false, Some(Param::Value(v))) => Param::Value(v.clone()),
            (false, _) => Param::Value(Value::Null),
        };
        params.insert(&u.name, param);
    }
    params
}

fn leaf_column(leaf: &Pred) -> Option<usize> {
    match leaf {
        Pred::Cmp { col, .. }
        | Pred::In { col, .. }
        | Pred::Like { col, .. }
        | Pred::Glob { col, .. }
        | Pred::Truth { col, .. } => Some(*col),
        Pred::And(_) | Pred::Or(_) => None,
    }
}

/// The error for a hidden column, at its first mention in the subscription text.
fn hidden_error(table: &Table, col: usize, sql: &str) -> Denied {
    let name = &table.columns[col].name;
    let pos = tokenize(sql)
        .ok()
        .and_then(|tokens| {
            tokens.into_iter().find_map(|t| match &t.token {
                Token::Word(w) if w.value.eq_ignore_ascii_case(name) => Some(Pos {
                    line: t.span.start.line.max(1),
                    column: t.span.start.column.max(1),
                }),
                _ => None,
            })
        })
        .unwrap_or(Pos::START);
    let e = QueryError::new(
        QueryErrorKind::HiddenColumn,
        format!("column `{name}` of `{}` is hidden from clients", table.name),
        pos,
    );
    Denied(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    fn schema() -> Schema {
        Schema::parse(
            "test",
            "CREATE TABLE issues (id TEXT PRIMARY KEY, team_id TEXT, creator_id TEXT, \
             title TEXT);\n\
             CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT, password_hash TEXT);\n\
             CREATE TABLE secrets (id TEXT PRIMARY KEY);",
        )
        .unwrap()
    }

    fn rules(schema: &Schema) -> Rules {
        Rules::parse(
            schema,
            Path::new("t.rules"),
            "ALLOW READ, INSERT, UPDATE ON issues WHERE team_id IN :auth.teams;\n\
             ALLOW DELETE ON issues WHERE creator_id = :auth.sub;\n\
             ALLOW READ ON users; HIDE users.password_hash;",
        )
        .unwrap()
    }

    fn alice() -> Claims {
        Claims::for_user("alice")
            .with("teams", json!(["T1", "T2"]))
            .unwrap()
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn issue(id: &str, team: &str, creator: &str) -> Vec<Value> {
        vec![text(id), text(team), text(creator), text("t")]
    }

    #[test]
    fn subscriptions_get_the_read_rule() {
        let schema = schema();
        let policy = Policy::bind(&rules(&schema), &alice());
        let e = policy
            .subscription(
                &schema,
                "SELECT * FROM issues WHERE team_id = 'T1' OR team_id IS NULL",
                &Params::new(),
            )
            .unwrap();
        assert!(e.shape.matches(&issue("1", "T1", "x")));
        assert!(!e.shape.matches(&issue("2", "T3", "x")));
        assert!(!e
            .shape
            .matches(&[text("3"), Value::Null, text("x"), text("t")]));
        // The same subscription from another member of the same teams shares the shape.
        let bob = Claims::for_user("bob")
            .with("teams", json!(["T2", "T1"]))
            .unwrap();
        let other = Policy::bind(&rules(&schema), &bob)
            .subscription(
                &schema,
                "SELECT * FROM issues WHERE team_id = 'T1' OR team_id IS NULL",
                &Params::new(),
            )
            .unwrap();
        assert_eq!(e.shape.id(), other.shape.id());
    }

    #[test]
    fn closed_tables_hidden_columns_and_smuggled_params_are_refused() {
        let schema = schema();
        let policy = Policy::bind(&rules(&schema), &alice());
        let refuse = |sql: &str, params: &Params| {
            policy
                .subscription(&schema, sql, params)
                .unwrap_err()
                .to_string()
        };
        assert!(refuse("SELECT * FROM secrets", &Params::new()).contains("no rule allows reading"));
        let m = refuse(
            "SELECT id FROM users WHERE password_hash = 'x'",
            &Params::new(),
        );
        assert!(
            m.contains("password_hash") && m.contains("column 28"),
            "{m}"
        );
        let m = refuse("SELECT id, password_hash FROM users", &Params::new());
        assert!(m.contains("password_hash"), "{m}");
        let smuggled = Params::new().list("auth.teams", vec![text("T9")]);
        assert!(refuse("SELECT * FROM issues", &smuggled).contains(":auth.teams"));
        let star = policy
            .subscription(&schema, "SELECT * FROM users", &Params::new())
            .unwrap();
        assert_eq!(star.shape.column_names(), vec!["id", "name"]);
    }

    #[test]
    fn write_checks_follow_the_rules() {
        let schema = schema();
        let policy = Policy::bind(&rules(&schema), &alice());
        let issues = schema.table("issues").unwrap();
        let ins = Mutation::Insert {
            table: "issues".into(),
            values: vec![],
        };
        let upd = Mutation::Update {
            table: "issues".into(),
            key: text("1"),
            set: vec![],
        };
        let del = Mutation::Delete {
            table: "issues".into(),
            key: text("1"),
        };
        assert!(policy
            .check(issues, &ins, None, Some(&issue("1", "T1", "bob")))
            .is_ok());
        assert!(policy
            .check(issues, &ins, None, Some(&issue("1", "T3", "bob")))
            .is_err());
        let (a, b) = (issue("1", "T1", "bob"), issue("1", "T3", "bob"));
        assert!(policy.check(issues, &upd, Some(&a), Some(&a)).is_ok());
        assert!(policy.check(issues, &upd, Some(&a), Some(&b)).is_err());
        assert!(policy.check(issues, &upd, Some(&b), Some(&a)).is_err());
        assert!(policy
            .check(issues, &del, Some(&issue("1", "T9", "alice")), None)
            .is_ok());
        assert!(policy.check(issues, &del, Some(&a), None).is_err());
        let users = schema.table("users").unwrap();
        let set_hash = Mutation::Update {
            table: "users".into(),
            key: text("u"),
            set: vec![("password_hash".into(), text("x"))],
        };
        let row = vec![text("u"), text("n"), text("h")];
        let m = policy
            .check(users, &set_hash, Some(&row), Some(&row))
            .unwrap_err();
        assert!(m.contains("not writable"), "{m}");
        // Open policy: anything goes.
        assert!(Policy::open(&alice())
            .check(issues, &del, Some(&a), None)
            .is_ok());
    }

    #[test]
    fn column_lists_and_kept_columns_limit_updates_and_inserts() {
        let schema = schema();
        let rules = Rules::parse(
            &schema,
            Path::new("t.rules"),
            "ALLOW UPDATE (title) ON issues WHERE team_id IN :auth.teams;\n\
             ALLOW UPDATE ON issues KEEP (creator_id) WHERE creator_id = :auth.sub;\n\
             ALLOW INSERT (team_id, title) ON issues WHERE team_id IN :auth.teams;",
        )
        .unwrap();
        let policy = Policy::bind(&rules, &alice());
        let issues = schema.table("issues").unwrap();
        let update = |row: &[Value], column: &str, value: Value| {
            let index = issues.column_index(column).unwrap();
            let mut new = row.to_vec();
            new[index] = value.clone();
            let m = Mutation::Update {
                table: "issues".into(),
                key: row[0].clone(),
                set: vec![(column.into(), value)],
            };
            policy.check(issues, &m, Some(row), Some(&new))
        };
        let bobs = issue("b", "T1", "bob");
        let mine = issue("m", "T1", "alice");
        // A member edits a listed column of anyone's issue in their teams.
        assert!(update(&bobs, "title", text("x")).is_ok());
        // The takeover: rewriting the creator of someone else's issue names the column.
        let m = update(&bobs, "creator_id", text("alice")).unwrap_err();
        assert_eq!(
            m,
            "permission denied: you may not update issues['b'].creator_id"
        );
        // Grants never add up: the first allows the title on any team issue, the second
        // any column of one's own issue but the creator; neither allows this alone.
        let m = update(&mine, "creator_id", text("carol")).unwrap_err();
        assert!(m.contains("issues['m'].creator_id"), "{m}");
        // Setting a kept column to its own value changes nothing, so it is allowed.
        assert!(update(&mine, "creator_id", text("alice")).is_ok());
        assert!(update(&mine, "team_id", text("T2")).is_ok());
        // Neither grant holds on the old row: the plain refusal.
        let far = issue("f", "T9", "bob");
        let m = update(&far, "title", text("x")).unwrap_err();
        assert_eq!(m, "permission denied: you may not update issues['f']");
        // Only KEEP stands in the way: the message says the column must keep its value.
        let keep_only = Rules::parse(
            &schema,
            Path::new("t.rules"),
            "ALLOW UPDATE ON issues KEEP (creator_id, team_id) WHERE team_id IN :auth.teams;",
        )
        .unwrap();
        let policy = Policy::bind(&keep_only, &alice());
        let row = issue("b", "T1", "bob");
        let mut new = row.clone();
        new[2] = text("alice");
        let m = Mutation::Update {
            table: "issues".into(),
            key: text("b"),
            set: vec![("creator_id".into(), text("alice"))],
        };
        let refused = policy
            .check(issues, &m, Some(&row), Some(&new))
            .unwrap_err();
        assert_eq!(
            refused,
            "permission denied: you may not change issues['b'].creator_id"
        );
        // Inserts: only listed columns (and the key); the refusal names no column.
        let policy = Policy::bind(&rules, &alice());
        let insert = |names: &[&str]| Mutation::Insert {
            table: "issues".into(),
            values: names.iter().map(|n| (n.to_string(), text("T1"))).collect(),
        };
        let row = [text("n"), text("T1"), Value::Null, text("T1")];
        assert!(policy
            .check(
                issues,
                &insert(&["id", "team_id", "title"]),
                None,
                Some(&row)
            )
            .is_ok());
        let m = policy
            .check(
                issues,
                &insert(&["id", "team_id", "creator_id"]),
                None,
                Some(&row),
            )
            .unwrap_err();
        assert_eq!(m, policy.insert_denied(issues, &row));
        assert_eq!(m, "permission denied: you may not insert issues['n']");
        // A table closed to inserts answers alike for a free key and a held one.
        let users = schema.table("users").unwrap();
        let user = [text("u"), text("n"), Value::Null];
        let free = Mutation::Insert {
            table: "users".into(),
            values: vec![("id".into(), text("u"))],
        };
        let m = policy.check(users, &free, None, Some(&user)).unwrap_err();
        assert_eq!(m, policy.insert_denied(users, &user));
    }

    #[test]
    fn missing_claims_bind_as_null() {
        let schema = schema();
        let anonymous = Policy::bind(&rules(&schema), &Claims::default());
        let issues = schema.table("issues").unwrap();
        let access = anonymous.read(issues).unwrap().unwrap();
        assert!(!access.filter.matches(&issue("1", "T1", "x")));
        let del = Mutation::Delete {
            table: "issues".into(),
            key: text("1"),
        };
        assert!(anonymous
            .check(
                issues,
                &del,
                Some(&[text("1"), text("T1"), Value::Null, text("t")]),
                None
            )
            .is_err());
        // A single team given as a string still works with IN.
        let one = Claims::for_user("c").with("teams", json!("T1")).unwrap();
        let access_policy = Policy::bind(&rules(&schema), &one);
        let access = access_policy.read(issues).unwrap().unwrap();
        assert!(access.filter.matches(&issue("1", "T1", "x")));
    }

    #[test]
    fn fetched_rows_are_filtered_and_projected() {
        let schema = schema();
        let policy = Policy::bind(&rules(&schema), &alice());
        let users = schema.table("users").unwrap();
        let (rows, cols) = policy
            .fetched(users, vec![vec![text("u"), text("n"), text("secret")]])
            .unwrap();
        assert_eq!(cols, vec!["id", "name"]);
        assert_eq!(rows, vec![vec![text("u"), text("n")]]);
        let issues = schema.table("issues").unwrap();
        let (rows, _) = policy
            .fetched(issues, vec![issue("1", "T1", "x"), issue("2", "T5", "x")])
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert!(policy
            .fetched(schema.table("secrets").unwrap(), vec![])
            .is_err());
    }
}
