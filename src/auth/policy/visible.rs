//! What a caller is told of the schema: the tables it may read or write, without their
//! hidden columns.

use super::{BoundTable, Policy};
use crate::schema::{Schema, Table};

impl Policy {
    /// The schema as this caller may know it, as `CREATE TABLE` text: without rules, every
    /// table; with rules, the tables some rule lets the caller read or write (a client
    /// must know a write-only table's columns to write it), each without its hidden
    /// columns and without the table constraints that name one. A closed table and a
    /// hidden column are not mentioned at all.
    pub fn visible_schema(&self, schema: &Schema) -> String {
        let tables: Vec<String> = schema
            .tables()
            .filter_map(|table| match &self.tables {
                None => Some(table.create_sql()),
                Some(_) => {
                    let bound = self.table(&table.name)?;
                    bound
                        .ops
                        .iter()
                        .any(Option::is_some)
                        .then(|| visible_table(table, bound).create_sql())
                }
            })
            .collect();
        tables.join(";\n")
    }
}

/// `table` without the columns `bound` hides.
fn visible_table(table: &Table, bound: &BoundTable) -> Table {
    if bound.hidden.is_empty() {
        return table.clone();
    }
    let hidden: Vec<&str> = bound
        .hidden
        .iter()
        .map(|&i| table.columns[i].name.as_str())
        .collect();
    let columns: Vec<_> = (0..table.columns.len())
        .filter(|i| !bound.hidden.contains(i))
        .map(|i| table.columns[i].clone())
        .collect();
    // The primary key is never hidden (the rules refuse it), so it is found again.
    let pk_name = &table.columns[table.pk].name;
    let pk = columns
        .iter()
        .position(|c| &c.name == pk_name)
        .unwrap_or_default();
    Table {
        name: table.name.clone(),
        columns,
        pk,
        constraints: table
            .constraints
            .iter()
            .filter(|c| !hidden.iter().any(|h| mentions(c, h)))
            .cloned()
            .collect(),
        indexes: table
            .indexes
            .iter()
            .filter(|ix| {
                !ix.columns
                    .iter()
                    .any(|c| hidden.iter().any(|h| c.eq_ignore_ascii_case(h)))
            })
            .cloned()
            .collect(),
    }
}

/// Whether SQL text mentions the identifier `name` as a whole word (case-insensitive).
/// Errs on the side of "yes": a constraint that might name a hidden column is left out.
fn mentions(sql: &str, name: &str) -> bool {
    let (text, name) = (sql.to_ascii_lowercase(), name.to_ascii_lowercase());
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii();
    text.match_indices(&name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::Claims;
    use crate::auth::rules::Rules;

    const SCHEMA: &str = "
        CREATE TABLE users (id TEXT PRIMARY KEY, password_hash TEXT, name TEXT,
            CHECK (length(password_hash) > 0), CHECK (name <> ''));
        CREATE INDEX users_hash ON users (password_hash);
        CREATE TABLE audit (id INTEGER PRIMARY KEY, note TEXT);
        CREATE TABLE secrets (id INTEGER PRIMARY KEY, value TEXT);
    ";

    fn policy(rules: &str, schema: &Schema) -> Policy {
        let rules = Rules::parse(schema, std::path::Path::new("test.rules"), rules).unwrap();
        Policy::bind(&rules, &Claims::default())
    }

    #[test]
    fn closed_tables_and_hidden_columns_are_not_mentioned() {
        let schema = Schema::parse("test", SCHEMA).unwrap();
        let p = policy(
            "ALLOW READ ON users; HIDE users.password_hash; ALLOW INSERT ON audit;",
            &schema,
        );
        let text = p.visible_schema(&schema);
        let seen = Schema::parse("visible", &text).unwrap();
        let names: Vec<&str> = seen.tables().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["audit", "users"], "{text}");
        assert!(
            !text.to_ascii_lowercase().contains("password_hash"),
            "{text}"
        );
        assert!(!text.contains("secrets"), "{text}");
        let users = seen.table("users").unwrap();
        let columns: Vec<&str> = users.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(columns, ["id", "name"]);
        assert_eq!(users.columns[users.pk].name, "id");
        assert!(text.contains("CHECK (name <> '')"), "{text}");
    }

    #[test]
    fn without_rules_the_whole_schema_is_told() {
        let schema = Schema::parse("test", SCHEMA).unwrap();
        let open = Policy::open(&Claims::default());
        let text = open.visible_schema(&schema);
        let all: Vec<String> = schema.tables().map(|t| t.create_sql()).collect();
        assert_eq!(text, all.join(";\n"));
    }

    #[test]
    fn mentions_matches_whole_identifiers_only() {
        assert!(mentions("CHECK (Password_Hash <> '')", "password_hash"));
        assert!(mentions("UNIQUE(a,b)", "b"));
        assert!(!mentions("CHECK (password_hash_v2 > 0)", "password_hash"));
        assert!(!mentions("CHECK (name <> '')", "nam"));
    }
}
