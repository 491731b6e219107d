//! The application schema: `CREATE TABLE` (and `CREATE INDEX`) files parsed with
//! sqlparser into tables, columns, affinities and primary keys, plus the schema version.
//!
//! Pure apart from [`Schema::load_dir`], which reads the files. Used by every other
//! layer; depends only on [`crate::value`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlparser::ast::{ColumnOption, DataType, ObjectName, Statement, TableConstraint};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;

use crate::value::Affinity;

/// Prefix reserved for sluice's own tables in every database it manages.
pub const RESERVED_PREFIX: &str = "_sluice";

/// Errors found while loading a schema; each names the file, and the table and column
/// where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    #[error("{file}: cannot read: {source}")]
    /// A schema file could not be read.
    Io {
        /// The file.
        file: PathBuf,
        #[source]
        /// The operating system's error.
        source: std::io::Error,
    },
    #[error("{file}: SQL syntax error: {message}")]
    /// A file is not valid SQL.
    Syntax {
        /// The file.
        file: PathBuf,
        /// The SQL parser's message.
        message: String,
    },
    #[error("{file}: {message}")]
    /// A statement other than CREATE TABLE / CREATE INDEX, or a feature sluice does not
    /// support.
    Unsupported {
        /// The file.
        file: PathBuf,
        /// What is not supported.
        message: String,
    },
    #[error("{file}: table {table}: {message}")]
    /// A table definition is invalid (no columns, no single-column primary key, ...).
    Table {
        /// The file.
        file: PathBuf,
        /// The table.
        table: String,
        /// What is wrong.
        message: String,
    },
    #[error("{file}: table {table}, column {column}: {message}")]
    /// A column definition is invalid.
    Column {
        /// The file.
        file: PathBuf,
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
    #[error("{dir}: no .sql files with CREATE TABLE statements")]
    /// The schema folder holds no table.
    Empty {
        /// The folder.
        dir: PathBuf,
    },
}

/// A stable hash of the normalized schema. Clients and servers compare it at handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SchemaVersion(pub u64);

impl fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// The column's name as declared.
    pub name: String,
    /// The declared type as written (upper-cased), empty when none was given.
    pub declared_type: String,
    /// The type affinity derived from the declared type.
    pub affinity: Affinity,
    /// Whether the column is declared NOT NULL.
    pub not_null: bool,
    /// The DEFAULT expression as SQL text, when the column has one.
    pub default: Option<String>,
}

/// A secondary index declared in the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// The index's name.
    pub name: String,
    /// Its columns, in order.
    pub columns: Vec<String>,
    /// Whether it is a UNIQUE index.
    pub unique: bool,
}

/// One table: its columns in declaration order and its single-column primary key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// The table's name as declared.
    pub name: String,
    /// The columns in declaration order.
    pub columns: Vec<Column>,
    /// Index into `columns` of the primary key column.
    pub pk: usize,
    /// Table-level CHECK and UNIQUE constraints as SQL text, kept in the generated DDL.
    pub constraints: Vec<String>,
    /// Secondary indexes declared with `CREATE INDEX`.
    pub indexes: Vec<Index>,
}

impl Table {
    /// The column index of `name`, compared case-insensitively as SQLite does.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        // Names are unique ignoring case; most are given as declared, found by the
        // cheaper exact comparison.
        let columns = &self.columns;
        columns.iter().position(|c| c.name == name).or_else(|| {
            columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(name))
        })
    }

    /// The primary key column.
    pub fn pk_column(&self) -> &Column {
        &self.columns[self.pk]
    }

    /// `CREATE TABLE` text for this table, with every identifier quoted.
    pub fn create_sql(&self) -> String {
        let mut parts: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut def = quote_ident(&c.name);
                if !c.declared_type.is_empty() {
                    def.push(' ');
                    def.push_str(&c.declared_type);
                }
                if i == self.pk {
                    def.push_str(" PRIMARY KEY");
                }
                if c.not_null || i == self.pk {
                    def.push_str(" NOT NULL");
                }
                if let Some(d) = &c.default {
                    def.push_str(&format!(" DEFAULT ({d})"));
                }
                def
            })
            .collect();
        parts.extend(self.constraints.iter().cloned());
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            quote_ident(&self.name),
            parts.join(", ")
        )
    }

    /// `CREATE INDEX` statements for the declared indexes.
    pub fn index_sql(&self) -> Vec<String> {
        self.indexes
            .iter()
            .map(|ix| {
                let cols: Vec<String> = ix.columns.iter().map(|c| quote_ident(c)).collect();
                format!(
                    "CREATE {}INDEX IF NOT EXISTS {} ON {} ({})",
                    if ix.unique { "UNIQUE " } else { "" },
                    quote_ident(&ix.name),
                    quote_ident(&self.name),
                    cols.join(", ")
                )
            })
            .collect()
    }

    /// Normalized text of the table's structure (what the version hash covers).
    fn normalized(&self) -> String {
        let mut out = format!("table {} pk {}", self.name, self.columns[self.pk].name);
        for c in &self.columns {
            out.push_str(&format!(
                "|{} {} {} {}",
                c.name,
                c.declared_type,
                if c.not_null { "notnull" } else { "null" },
                c.default.as_deref().unwrap_or("-")
            ));
        }
        for c in &self.constraints {
            out.push_str(&format!("|{c}"));
        }
        out
    }

    /// A stable hash of this table's structure, for per-table schema comparison.
    pub fn version(&self) -> u64 {
        hash64(&self.normalized())
    }
}

/// A loaded schema: tables by lower-cased name, in a stable order.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    tables: BTreeMap<String, Arc<Table>>,
    version: SchemaVersion,
}

impl Schema {
    /// Loads every `*.sql` file of `dir`, in file-name order.
    pub fn load_dir(dir: &Path) -> Result<Schema, SchemaError> {
        let entries = std::fs::read_dir(dir).map_err(|source| SchemaError::Io {
            file: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        let mut sources = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| SchemaError::Io {
                file: file.clone(),
                source,
            })?;
            sources.push((file, text));
        }
        let schema = Schema::from_sources(sources.iter().map(|(f, t)| (f.as_path(), t.as_str())))?;
        if schema.tables.is_empty() {
            return Err(SchemaError::Empty {
                dir: dir.to_path_buf(),
            });
        }
        Ok(schema)
    }

    /// Parses one SQL text (named `file` in errors).
    pub fn parse(file: &str, sql: &str) -> Result<Schema, SchemaError> {
        Schema::from_sources([(Path::new(file), sql)])
    }

    fn from_sources<'a>(
        sources: impl IntoIterator<Item = (&'a Path, &'a str)>,
    ) -> Result<Schema, SchemaError> {
        let mut tables: BTreeMap<String, Table> = BTreeMap::new();
        let mut pending_indexes = Vec::new();
        for (file, sql) in sources {
            let statements =
                Parser::parse_sql(&SQLiteDialect {}, sql).map_err(|e| SchemaError::Syntax {
                    file: file.to_path_buf(),
                    message: e.to_string(),
                })?;
            for statement in statements {
                match statement {
                    Statement::CreateTable(create) => {
                        let table = table_from_ddl(file, &create)?;
                        let key = table.name.to_ascii_lowercase();
                        if tables.contains_key(&key) {
                            return Err(SchemaError::Table {
                                file: file.to_path_buf(),
                                table: table.name,
                                message: "defined twice".into(),
                            });
                        }
                        tables.insert(key, table);
                    }
                    Statement::CreateIndex(ix) => pending_indexes.push((file.to_path_buf(), ix)),
                    other => {
                        let text = other.to_string();
                        let head: String = text.chars().take(40).collect();
                        return Err(SchemaError::Unsupported {
                            file: file.to_path_buf(),
                            message: format!(
                                "only CREATE TABLE and CREATE INDEX are allowed, found `{head}`"
                            ),
                        });
                    }
                }
            }
        }
        for (file, ix) in pending_indexes {
            let table_name = object_name(&ix.table_name);
            let table = tables
                .get_mut(&table_name.to_ascii_lowercase())
                .ok_or_else(|| SchemaError::Table {
                    file: file.clone(),
                    table: table_name.clone(),
                    message: "CREATE INDEX on an unknown table".into(),
                })?;
            let mut columns = Vec::new();
            for col in &ix.columns {
                let name = col.column.expr.to_string().trim_matches('"').to_string();
                let idx = table
                    .column_index(&name)
                    .ok_or_else(|| SchemaError::Column {
                        file: file.clone(),
                        table: table.name.clone(),
                        column: name.clone(),
                        message: "CREATE INDEX names an unknown column".into(),
                    })?;
                columns.push(table.columns[idx].name.clone());
            }
            let name = ix
                .name
                .as_ref()
                .map(object_name)
                .unwrap_or_else(|| format!("{}_{}_idx", table.name, columns.join("_")));
            table.indexes.push(Index {
                name,
                columns,
                unique: ix.unique,
            });
        }
        let mut normalized = String::new();
        for table in tables.values() {
            normalized.push_str(&table.normalized());
            normalized.push('\n');
        }
        let version = SchemaVersion(hash64(&normalized));
        let tables = tables.into_iter().map(|(k, t)| (k, Arc::new(t))).collect();
        Ok(Schema { tables, version })
    }

    /// The schema version: a hash of the normalized schema. Constant time.
    pub fn version(&self) -> SchemaVersion {
        self.version
    }

    /// The table called `name`, compared case-insensitively.
    pub fn table(&self, name: &str) -> Option<&Arc<Table>> {
        // Names are mostly written in lower case already: no lowercased copy then.
        self.tables
            .get(name)
            .or_else(|| self.tables.get(&name.to_ascii_lowercase()))
    }

    /// Tables in name order.
    pub fn tables(&self) -> impl Iterator<Item = &Arc<Table>> {
        self.tables.values()
    }
}

fn hash64(text: &str) -> u64 {
    let digest = Sha256::digest(text.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"))
}

/// Quotes an identifier for SQLite with double quotes.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn object_name(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|part| part.as_ident().map(|i| i.value.clone()))
        .unwrap_or_else(|| name.to_string())
}

fn table_from_ddl(file: &Path, create: &sqlparser::ast::CreateTable) -> Result<Table, SchemaError> {
    let table_name = object_name(&create.name);
    let table_err = |message: String| SchemaError::Table {
        file: file.to_path_buf(),
        table: table_name.clone(),
        message,
    };
    if table_name.to_ascii_lowercase().starts_with(RESERVED_PREFIX) {
        return Err(table_err(format!(
            "names starting with {RESERVED_PREFIX} are reserved"
        )));
    }
    if create.query.is_some() {
        return Err(table_err(
            "CREATE TABLE ... AS SELECT is not supported".into(),
        ));
    }
    let mut columns = Vec::new();
    let mut pk_columns: Vec<String> = Vec::new();
    for def in &create.columns {
        let name = def.name.value.clone();
        let col_err = |message: &str| SchemaError::Column {
            file: file.to_path_buf(),
            table: table_name.clone(),
            column: name.clone(),
            message: message.to_string(),
        };
        if columns
            .iter()
            .any(|c: &Column| c.name.eq_ignore_ascii_case(&name))
        {
            return Err(col_err("defined twice"));
        }
        let declared_type = match &def.data_type {
            DataType::Unspecified => String::new(),
            other => other.to_string().to_ascii_uppercase(),
        };
        let mut column = Column {
            name: name.clone(),
            affinity: Affinity::from_declared_type(&declared_type),
            declared_type,
            not_null: false,
            default: None,
        };
        for option in &def.options {
            match &option.option {
                ColumnOption::Null => {}
                ColumnOption::NotNull => column.not_null = true,
                ColumnOption::Default(expr) => column.default = Some(default_text(expr)),
                ColumnOption::Unique {
                    is_primary: true, ..
                } => pk_columns.push(name.clone()),
                ColumnOption::Unique {
                    is_primary: false, ..
                } => {}
                ColumnOption::ForeignKey { .. } => {}
                ColumnOption::Check(_) => {}
                ColumnOption::Collation(c) => {
                    if !object_name(c).eq_ignore_ascii_case("binary") {
                        return Err(col_err(
                            "only BINARY collation is supported (subscriptions compare text \
                             byte by byte)",
                        ));
                    }
                }
                ColumnOption::DialectSpecific(tokens) => {
                    let text: String = tokens.iter().map(|t| t.to_string()).collect();
                    if !text.eq_ignore_ascii_case("AUTOINCREMENT") {
                        return Err(col_err(&format!("unsupported column option `{text}`")));
                    }
                }
                other => return Err(col_err(&format!("unsupported column option `{other}`"))),
            }
        }
        columns.push(column);
    }
    let mut constraints = Vec::new();
    for constraint in &create.constraints {
        match constraint {
            TableConstraint::PrimaryKey { columns: cols, .. } => {
                for c in cols {
                    pk_columns.push(c.column.expr.to_string().trim_matches('"').to_string());
                }
            }
            TableConstraint::ForeignKey { .. } => {}
            other => constraints.push(other.to_string()),
        }
    }
    if columns.is_empty() {
        return Err(table_err("has no columns".into()));
    }
    let pk_name = match pk_columns.as_slice() {
        [one] => one.clone(),
        [] => return Err(table_err("needs a single-column PRIMARY KEY".into())),
        _ => {
            return Err(table_err(format!(
                "has a composite primary key ({}); sluice needs a single-column one",
                pk_columns.join(", ")
            )))
        }
    };
    let pk = columns
        .iter()
        .position(|c| c.name.eq_ignore_ascii_case(&pk_name))
        .ok_or_else(|| table_err(format!("PRIMARY KEY names unknown column {pk_name}")))?;
    if !matches!(columns[pk].affinity, Affinity::Integer | Affinity::Text) {
        return Err(SchemaError::Column {
            file: file.to_path_buf(),
            table: table_name.clone(),
            column: columns[pk].name.clone(),
            message: format!(
                "the primary key must be INTEGER or TEXT, not {}",
                if columns[pk].declared_type.is_empty() {
                    "untyped"
                } else {
                    &columns[pk].declared_type
                }
            ),
        });
    }
    columns[pk].not_null = true;
    Ok(Table {
        name: table_name,
        columns,
        pk,
        constraints,
        indexes: Vec::new(),
    })
}

/// The text of a DEFAULT expression without its enclosing parentheses, so that
/// `create_sql` (which writes `DEFAULT (text)`) parsed again gives the same text: a
/// schema that travels from server to client and back compares equal to itself.
fn default_text(expr: &sqlparser::ast::Expr) -> String {
    let mut expr = expr;
    while let sqlparser::ast::Expr::Nested(inner) = expr {
        expr = inner;
    }
    expr.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_columns_affinities_and_primary_key() {
        let schema = Schema::parse(
            "t.sql",
            "CREATE TABLE issues (id TEXT PRIMARY KEY, title TEXT NOT NULL, \
             priority INTEGER DEFAULT 0, estimate REAL, extra);
             CREATE INDEX issues_priority ON issues (priority);",
        )
        .unwrap();
        let t = schema.table("ISSUES").unwrap();
        assert_eq!(t.pk_column().name, "id");
        assert!(t.columns[1].not_null);
        assert_eq!(t.columns[2].affinity, Affinity::Integer);
        assert_eq!(t.columns[2].default.as_deref(), Some("0"));
        // The generated DDL parses back to the same columns (defaults included).
        let again = Schema::parse("again.sql", &t.create_sql()).unwrap();
        assert_eq!(again.table("issues").unwrap().columns, t.columns);
        assert_eq!(t.columns[3].affinity, Affinity::Real);
        assert_eq!(t.columns[4].affinity, Affinity::Blob);
        assert_eq!(t.indexes[0].columns, vec!["priority".to_string()]);
        assert_eq!(t.column_index("Title"), Some(1));
    }

    #[test]
    fn table_level_primary_key_is_accepted() {
        let s = Schema::parse(
            "t.sql",
            "CREATE TABLE a (k INTEGER, v TEXT, PRIMARY KEY (k))",
        );
        assert_eq!(s.unwrap().table("a").unwrap().pk, 0);
    }

    #[test]
    fn version_is_stable_and_changes_with_structure() {
        let a = Schema::parse("a.sql", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)").unwrap();
        let b = Schema::parse("b.sql", "create table t (id integer primary key, v text)").unwrap();
        let c = Schema::parse("c.sql", "CREATE TABLE t (id INTEGER PRIMARY KEY, v INT)").unwrap();
        assert_eq!(a.version(), b.version());
        assert_ne!(a.version(), c.version());
    }

    #[test]
    fn errors_name_file_table_and_column() {
        let no_pk = Schema::parse("x.sql", "CREATE TABLE t (a INTEGER)").unwrap_err();
        assert_eq!(
            no_pk.to_string(),
            "x.sql: table t: needs a single-column PRIMARY KEY"
        );
        let composite = Schema::parse("x.sql", "CREATE TABLE t (a INT, b INT, PRIMARY KEY (a, b))");
        assert!(composite
            .unwrap_err()
            .to_string()
            .contains("composite primary key"));
        let real_pk = Schema::parse("x.sql", "CREATE TABLE t (a REAL PRIMARY KEY)").unwrap_err();
        assert_eq!(
            real_pk.to_string(),
            "x.sql: table t, column a: the primary key must be INTEGER or TEXT, not REAL"
        );
        let nocase = Schema::parse(
            "x.sql",
            "CREATE TABLE t (a INT PRIMARY KEY, b TEXT COLLATE NOCASE)",
        );
        assert!(nocase
            .unwrap_err()
            .to_string()
            .contains("column b: only BINARY"));
        let view = Schema::parse("x.sql", "CREATE VIEW v AS SELECT 1").unwrap_err();
        assert!(view.to_string().contains("only CREATE TABLE"));
        let syntax = Schema::parse("x.sql", "CREATE TABLE (").unwrap_err();
        assert!(syntax.to_string().starts_with("x.sql: SQL syntax error"));
    }

    #[test]
    fn generated_ddl_is_valid_sqlite() {
        let s = Schema::parse(
            "t.sql",
            "CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER NOT NULL DEFAULT 3, UNIQUE (n))",
        )
        .unwrap();
        let sql = s.table("t").unwrap().create_sql();
        assert_eq!(
            sql,
            "CREATE TABLE IF NOT EXISTS \"t\" (\"id\" TEXT PRIMARY KEY NOT NULL, \
             \"n\" INTEGER NOT NULL DEFAULT (3), UNIQUE (n))"
        );
    }
}
