//! The permission rules file: per table, which rows a caller may read, insert, update and
//! delete, which columns an insert or update may set, which columns an update must leave
//! unchanged, and which columns are never sent.
//!
//! The format is a few SQL-like statements, each ending with `;`, with `--` comments:
//!
//! ```text
//! -- Issues: members of the issue's team read them and edit a few columns; the creator
//! -- deletes.
//! ALLOW READ, INSERT ON issues WHERE team_id IN :auth.teams;
//! ALLOW UPDATE (title, status, priority) ON issues WHERE team_id IN :auth.teams;
//! ALLOW UPDATE ON issues KEEP (creator_id, team_id) WHERE creator_id = :auth.sub;
//! ALLOW DELETE ON issues WHERE creator_id = :auth.sub;
//! ALLOW READ ON rooms;                 -- no WHERE: every caller
//! HIDE users.password_hash;            -- never sent, never client-writable
//! ```
//!
//! - `ALLOW op [(column, ...)][, op...] ON table [KEEP (column, ...)] [WHERE predicate]`,
//!   op one of `READ`, `INSERT`, `UPDATE`, `DELETE`, `WRITE` (the last three) or `ALL`.
//!   The predicate is a subscription WHERE clause; its parameters must be `:auth.sub` or
//!   `:auth.<claim>`.
//! - A column list after `INSERT` or `UPDATE` names the only columns that operation may
//!   set (an insert may always give the primary key; an update never can). Without one,
//!   every column that is not hidden.
//! - `KEEP (column, ...)` applies to the statement's `UPDATE`: each of those columns must
//!   have the same value (same storage class, NULL stays NULL) after the update as before.
//! - Each `ALLOW` grants its operations on its own, and several for the same table and op
//!   are alternatives: a read or delete needs one whose predicate holds on the row; an
//!   insert needs one whose predicate holds on the new row and whose column list has
//!   every column the insert gives; an update needs one whose predicate holds on the old
//!   *and* the new row, whose column list has every column the update sets and whose
//!   `KEEP` columns are unchanged. Grants never add up: two statements allow nothing that
//!   neither allows alone.
//! - `HIDE table.column[, table.column...]`: columns a client can neither read, filter
//!   on nor write. The primary key cannot be hidden.
//! - A table with no `ALLOW` for an op is closed for it.
//!
//! The file is read with the subscription language's tokenizer, so strings, quoted names
//! and comments follow the same rules as in a subscription. Everything is validated when
//! the file is loaded; an error names the file, line and column of the offending token.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlparser::tokenizer::{Location, Token};

use crate::query::{ident_sql, tokenize, ParamUse, Pos, QueryError, Template};
use crate::schema::{Schema, Table};

/// The operations a rule can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Op {
    /// Reading rows: subscriptions and fetches.
    Read,
    /// Inserting rows.
    Insert,
    /// Updating rows.
    Update,
    /// Deleting rows.
    Delete,
}

impl Op {
    /// Every operation, in index order.
    pub const ALL: [Op; 4] = [Op::Read, Op::Insert, Op::Update, Op::Delete];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The operation's lower-case name, as in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// An error in the rules file, or reading it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    #[error("{}:{}:{}: {message}", file.display(), pos.line, pos.column)]
    /// The file's content is wrong at `pos`.
    Invalid {
        /// The rules file.
        file: PathBuf,
        /// Where the offending token starts.
        pos: Pos,
        /// What is wrong.
        message: String,
    },
    #[error("cannot read rules file {}: {source}", file.display())]
    /// The file could not be read.
    Io {
        /// The rules file.
        file: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// What one `ALLOW` statement grants for one op on one table.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// The WHERE predicate with the uses of its parameters; `None`: every row.
    pub filter: Option<(Template, Vec<ParamUse>)>,
    /// Insert and update: the only columns it may set (column indexes, sorted); `None`:
    /// every column.
    pub columns: Option<Vec<usize>>,
    /// Update: the columns that must keep their value (column indexes, sorted).
    pub keep: Vec<usize>,
}

/// The rules of one table.
#[derive(Debug, Clone)]
pub(crate) struct TableRules {
    pub table: Arc<Table>,
    /// Per op, its grants (alternatives); empty: the op is closed.
    pub ops: [Vec<Grant>; 4],
    /// Hidden column indexes, sorted.
    pub hidden: Vec<usize>,
}

/// Validated permission rules for a schema.
#[derive(Debug, Clone)]
pub struct Rules {
    /// By lower-cased table name; tables absent here are closed.
    pub(crate) tables: BTreeMap<String, TableRules>,
    file: PathBuf,
}

impl Rules {
    /// Reads and validates a rules file: one read of the file, then [`Rules::parse`].
    /// Errors: [`RulesError::Io`] when it cannot be read, else as [`Rules::parse`].
    pub fn load(schema: &Schema, file: &Path) -> Result<Rules, RulesError> {
        let text = std::fs::read_to_string(file).map_err(|source| RulesError::Io {
            file: file.to_path_buf(),
            source,
        })?;
        Rules::parse(schema, file, &text)
    }

    /// Validates rules given as text; `file` is only used in error messages. Each
    /// predicate is compiled against the schema (linear in the text). Errors:
    /// [`RulesError::Invalid`] at the first offending token.
    pub fn parse(schema: &Schema, file: &Path, text: &str) -> Result<Rules, RulesError> {
        let mut rules = Rules {
            tables: BTreeMap::new(),
            file: file.to_path_buf(),
        };
        let statements = split_statements(text).map_err(|e| RulesError::Invalid {
            file: file.to_path_buf(),
            pos: e.pos,
            message: e.message,
        })?;
        for statement in statements {
            rules.statement(schema, &statement)?;
        }
        Ok(rules)
    }

    /// Where the rules came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Whether any rule allows `op` on `table` for some caller.
    pub fn allows_some(&self, table: &str, op: Op) -> bool {
        self.tables
            .get(&table.to_ascii_lowercase())
            .is_some_and(|t| !t.ops[op.index()].is_empty())
    }

    /// Names of the columns of `table` that are hidden.
    pub fn hidden_columns(&self, table: &str) -> Vec<&str> {
        match self.tables.get(&table.to_ascii_lowercase()) {
            None => Vec::new(),
            Some(t) => t
                .hidden
                .iter()
                .map(|&i| t.table.columns[i].name.as_str())
                .collect(),
        }
    }

    fn error<T>(&self, pos: Pos, message: impl Into<String>) -> Result<T, RulesError> {
        Err(RulesError::Invalid {
            file: self.file.clone(),
            pos,
            message: message.into(),
        })
    }

    fn entry(&mut self, table: &Arc<Table>) -> &mut TableRules {
        self.tables
            .entry(table.name.to_ascii_lowercase())
            .or_insert_with(|| TableRules {
                table: table.clone(),
                ops: Default::default(),
                hidden: Vec::new(),
            })
    }

    fn statement(&mut self, schema: &Schema, s: &Statement) -> Result<(), RulesError> {
        let words = &s.header;
        let Some(first) = words.first() else {
            return Ok(());
        };
        match first.text.to_ascii_uppercase().as_str() {
            "ALLOW" => self.allow(schema, s),
            "HIDE" => {
                if let Some(w) = &s.predicate {
                    return self.error(w.1, "HIDE takes no WHERE clause");
                }
                self.hide(schema, &words[1..], first.pos)
            }
            _ => self.error(
                first.pos,
                format!("expected ALLOW or HIDE, found `{}`", first.text),
            ),
        }
    }

    fn allow(&mut self, schema: &Schema, s: &Statement) -> Result<(), RulesError> {
        let words = &s.header;
        // Each op, with the column list written after it.
        let mut ops: Vec<(Op, Option<&[Word]>)> = Vec::new();
        let mut i = 1;
        loop {
            let Some(w) = words.get(i) else {
                return self.error(end_of(words), "expected an operation (READ, INSERT, ...)");
            };
            let named: &[Op] = match w.text.to_ascii_uppercase().as_str() {
                "READ" => &[Op::Read],
                "INSERT" => &[Op::Insert],
                "UPDATE" => &[Op::Update],
                "DELETE" => &[Op::Delete],
                "WRITE" => &[Op::Insert, Op::Update, Op::Delete],
                "ALL" => &Op::ALL,
                _ => {
                    return self.error(
                        w.pos,
                        format!(
                            "expected READ, INSERT, UPDATE, DELETE, WRITE or ALL, found `{}`",
                            w.text
                        ),
                    )
                }
            };
            i += 1;
            let mut columns = None;
            if let Some(open) = words.get(i).filter(|o| o.text == "(") {
                if !matches!(named, [Op::Insert] | [Op::Update]) {
                    return self.error(
                        open.pos,
                        format!(
                            "a column list may follow INSERT or UPDATE only, not {}",
                            w.text.to_ascii_uppercase()
                        ),
                    );
                }
                let (list, next) = self.column_list(words, i)?;
                columns = Some(list);
                i = next;
            }
            ops.extend(named.iter().map(|&op| (op, columns)));
            match words.get(i) {
                Some(w) if w.text == "," => i += 1,
                _ => break,
            }
        }
        match words.get(i) {
            Some(w) if w.text.eq_ignore_ascii_case("ON") => i += 1,
            Some(w) => return self.error(w.pos, format!("expected ON, found `{}`", w.text)),
            None => return self.error(end_of(words), "expected ON table"),
        }
        let Some(name) = words.get(i) else {
            return self.error(end_of(words), "expected a table name after ON");
        };
        let table = match schema.table(name.unquoted()) {
            Some(t) => t.clone(),
            None => return self.error(name.pos, format!("unknown table `{}`", name.unquoted())),
        };
        i += 1;
        let mut keep = Vec::new();
        let kept = words.get(i).is_some_and(|w| w.is_keyword("KEEP"));
        if let Some(w) = words.get(i).filter(|_| kept) {
            if !ops.iter().any(|(op, _)| *op == Op::Update) {
                return self.error(
                    w.pos,
                    "KEEP applies to updates, and this statement allows no UPDATE",
                );
            }
            match words.get(i + 1) {
                Some(open) if open.text == "(" => {}
                Some(other) => {
                    return self.error(other.pos, format!("expected `(`, found `{}`", other.text))
                }
                None => return self.error(w.end, "expected `(` and the columns to keep"),
            }
            let (list, next) = self.column_list(words, i + 1)?;
            keep = self.resolve(&table, list)?;
            i = next;
        }
        if let Some(extra) = words.get(i) {
            let expected = if !kept && ops.iter().any(|(op, _)| *op == Op::Update) {
                "expected KEEP, WHERE or `;`"
            } else {
                "expected WHERE or `;`"
            };
            return self.error(extra.pos, format!("{expected}, found `{}`", extra.text));
        }
        let filter = match &s.predicate {
            None => None,
            Some((text, pos)) => Some(self.predicate(schema, &table, text, *pos)?),
        };
        let mut grants = Vec::new();
        for (op, columns) in ops {
            let columns = match columns {
                None => None,
                Some(list) => Some(self.resolve(&table, list)?),
            };
            let keep = if op == Op::Update {
                keep.clone()
            } else {
                Vec::new()
            };
            grants.push((
                op,
                Grant {
                    filter: filter.clone(),
                    columns,
                    keep,
                },
            ));
        }
        let entry = self.entry(&table);
        for (op, grant) in grants {
            entry.ops[op.index()].push(grant);
        }
        Ok(())
    }

    /// Reads `( name [, name...] )` starting at the `(` at `open`: the names, and the index
    /// just past the `)`.
    fn column_list<'w>(
        &self,
        words: &'w [Word],
        open: usize,
    ) -> Result<(&'w [Word], usize), RulesError> {
        let mut i = open + 1;
        loop {
            match words.get(i) {
                Some(w) if w.is_name => i += 1,
                Some(w) => {
                    return self.error(w.pos, format!("expected a column name, found `{}`", w.text))
                }
                None => return self.error(end_of(words), "expected a column name"),
            }
            match words.get(i) {
                Some(w) if w.text == "," => i += 1,
                Some(w) if w.text == ")" => {
                    // Every other word of the list is a name.
                    return Ok((&words[open + 1..i], i + 1));
                }
                Some(w) => {
                    return self.error(w.pos, format!("expected `,` or `)`, found `{}`", w.text))
                }
                None => return self.error(end_of(words), "expected `)`"),
            }
        }
    }

    /// The indexes of the columns named in a list read by [`Rules::column_list`] (names
    /// and commas), sorted.
    fn resolve(&self, table: &Table, list: &[Word]) -> Result<Vec<usize>, RulesError> {
        let mut columns = Vec::new();
        for w in list.iter().step_by(2) {
            let Some(index) = table.column_index(w.unquoted()) else {
                return self.error(
                    w.pos,
                    format!(
                        "unknown column `{}` in table `{}`",
                        w.unquoted(),
                        table.name
                    ),
                );
            };
            columns.push(index);
        }
        columns.sort_unstable();
        columns.dedup();
        Ok(columns)
    }

    /// Validates a WHERE predicate as a subscription on `table`, mapping error positions
    /// back into the file.
    fn predicate(
        &self,
        schema: &Schema,
        table: &Table,
        text: &str,
        at: Pos,
    ) -> Result<(Template, Vec<ParamUse>), RulesError> {
        let prefix = format!("SELECT * FROM {} WHERE ", ident_sql(&table.name));
        let sql = format!("{prefix}{text}");
        let map = |p: Pos| -> Pos {
            let prefix_cols = prefix.chars().count() as u64;
            if p.line <= 1 {
                Pos {
                    line: at.line,
                    column: at.column + p.column.saturating_sub(prefix_cols + 1),
                }
            } else {
                Pos {
                    line: at.line + p.line - 1,
                    column: p.column,
                }
            }
        };
        let template = match Template::parse(schema, &sql) {
            Ok(t) => t,
            Err(e) => return self.error(map(e.pos), e.message),
        };
        let uses = template.parameter_uses();
        for u in &uses {
            let claim = u.name.strip_prefix("auth.");
            if claim.is_none_or(|c| c.is_empty()) {
                return self.error(
                    map(u.pos),
                    format!(
                        "rules may only use :auth.sub and :auth.<claim> parameters, not :{}",
                        u.name
                    ),
                );
            }
            if uses.iter().any(|o| o.name == u.name && o.list != u.list) {
                return self.error(
                    map(u.pos),
                    format!(
                        ":{} is used both as a list (IN :{0}) and as a single value",
                        u.name
                    ),
                );
            }
        }
        Ok((template, uses))
    }

    fn hide(&mut self, schema: &Schema, words: &[Word], at: Pos) -> Result<(), RulesError> {
        let mut i = 0;
        loop {
            let (Some(t), Some(dot), Some(c)) = (words.get(i), words.get(i + 1), words.get(i + 2))
            else {
                let pos = words.get(i).map_or(end_of_or(words, at), |w| w.pos);
                return self.error(pos, "expected table.column");
            };
            if dot.text != "." {
                return self.error(dot.pos, format!("expected `.`, found `{}`", dot.text));
            }
            let table = match schema.table(t.unquoted()) {
                Some(table) => table.clone(),
                None => return self.error(t.pos, format!("unknown table `{}`", t.unquoted())),
            };
            let Some(index) = table.column_index(c.unquoted()) else {
                return self.error(
                    c.pos,
                    format!(
                        "unknown column `{}` in table `{}`",
                        c.unquoted(),
                        table.name
                    ),
                );
            };
            if index == table.pk {
                return self.error(
                    c.pos,
                    format!(
                        "the primary key {}.{} cannot be hidden",
                        table.name,
                        c.unquoted()
                    ),
                );
            }
            let entry = self.entry(&table);
            if !entry.hidden.contains(&index) {
                entry.hidden.push(index);
                entry.hidden.sort_unstable();
            }
            i += 3;
            match words.get(i) {
                None => return Ok(()),
                Some(w) if w.text == "," => i += 1,
                Some(w) => {
                    return self.error(w.pos, format!("expected `,` or `;`, found `{}`", w.text))
                }
            }
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A header token: a word, a quoted identifier, or a punctuation token.
#[derive(Debug, Clone)]
struct Word {
    /// As written (a quoted identifier with its quotes), for error messages.
    text: String,
    /// A word's name without quotes; otherwise the same as `text`.
    name: String,
    /// Whether the token is a word or a quoted identifier (not punctuation or a literal).
    is_name: bool,
    pos: Pos,
    /// Just past the token's last character.
    end: Pos,
}

impl Word {
    fn unquoted(&self) -> &str {
        &self.name
    }

    /// Whether the token is the unquoted keyword `keyword`.
    fn is_keyword(&self, keyword: &str) -> bool {
        self.is_name && self.name == self.text && self.text.eq_ignore_ascii_case(keyword)
    }
}

fn end_of(words: &[Word]) -> Pos {
    end_of_or(words, Pos::START)
}

fn end_of_or(words: &[Word], default: Pos) -> Pos {
    words.last().map_or(default, |w| w.end)
}

/// A statement: header tokens up to WHERE, and the predicate text with its position.
#[derive(Debug)]
struct Statement {
    header: Vec<Word>,
    predicate: Option<(String, Pos)>,
}

/// Splits the file into statements at `;` tokens (never inside strings, quoted names or
/// comments), with the query tokenizer. A predicate is kept as the text between `WHERE`
/// and `;`, so that positions in it map back into the file.
fn split_statements(text: &str) -> Result<Vec<Statement>, QueryError> {
    let tokens = tokenize(text)?;
    let lines = LineStarts::new(text);
    let mut out = Vec::new();
    let mut header = Vec::new();
    // Byte offset and position just after `WHERE`.
    let mut predicate: Option<(usize, Pos)> = None;
    let mut finish = |header: &mut Vec<Word>, predicate: Option<(usize, Pos)>, end: usize| {
        let predicate = predicate.map(|(start, pos)| (text[start..end].to_string(), pos));
        if !header.is_empty() || predicate.is_some() {
            out.push(Statement {
                header: std::mem::take(header),
                predicate,
            });
        }
    };
    for t in &tokens {
        match &t.token {
            Token::Whitespace(_) => {}
            Token::SemiColon => {
                finish(&mut header, predicate.take(), lines.offset(t.span.start));
            }
            _ if predicate.is_some() => {}
            Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("WHERE") => {
                predicate = Some((lines.offset(t.span.end), Pos::from_location(t.span.end)));
            }
            other => {
                let text = other.to_string();
                let (name, is_name) = match other {
                    Token::Word(w) => (w.value.clone(), true),
                    _ => (text.clone(), false),
                };
                header.push(Word {
                    text,
                    name,
                    is_name,
                    pos: Pos::from_location(t.span.start),
                    end: Pos::from_location(t.span.end),
                });
            }
        }
    }
    finish(&mut header, predicate, text.len());
    Ok(out)
}

/// Byte offsets of line starts, to turn a token's line and column into a text offset.
struct LineStarts<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineStarts<'a> {
    fn new(text: &'a str) -> LineStarts<'a> {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineStarts { text, starts }
    }

    /// The byte offset of a 1-based line and character column (the end of the text when
    /// past it).
    fn offset(&self, at: Location) -> usize {
        let Some(&start) = usize::try_from(at.line)
            .ok()
            .and_then(|l| self.starts.get(l.saturating_sub(1)))
        else {
            return self.text.len();
        };
        let skip = usize::try_from(at.column.saturating_sub(1)).unwrap_or(usize::MAX);
        self.text[start..]
            .char_indices()
            .nth(skip)
            .map_or(self.text.len(), |(i, _)| start + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::parse(
            "test",
            "CREATE TABLE issues (id TEXT PRIMARY KEY, team_id TEXT, creator_id TEXT, \
             title TEXT);\n\
             CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT, password_hash TEXT);",
        )
        .unwrap()
    }

    fn parse(text: &str) -> Result<Rules, RulesError> {
        Rules::parse(&schema(), Path::new("access.rules"), text)
    }

    fn error_at(text: &str) -> (u64, u64, String) {
        match parse(text) {
            Err(RulesError::Invalid { pos, message, .. }) => (pos.line, pos.column, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn parses_allow_and_hide() {
        let rules = parse(
            "-- issues\n\
             ALLOW READ, WRITE ON issues WHERE team_id IN :auth.teams; -- members\n\
             ALLOW DELETE ON issues WHERE creator_id = :auth.sub;\n\
             ALLOW READ ON users;\n\
             HIDE users.password_hash;",
        )
        .unwrap();
        let issues = &rules.tables["issues"];
        assert_eq!(issues.ops[Op::Read.index()].len(), 1);
        assert_eq!(issues.ops[Op::Delete.index()].len(), 2);
        assert!(issues.ops[Op::Delete.index()]
            .iter()
            .all(|g| g.filter.is_some() && g.columns.is_none() && g.keep.is_empty()));
        let users = &rules.tables["users"];
        assert!(matches!(&users.ops[0][..], [g] if g.filter.is_none()));
        assert!(users.ops[1].is_empty());
        assert_eq!(rules.hidden_columns("users"), vec!["password_hash"]);
        assert!(rules.allows_some("issues", Op::Insert));
        assert!(!rules.allows_some("users", Op::Insert));
        assert!(!rules.allows_some("nothing", Op::Read));
    }

    #[test]
    fn column_lists_and_keep() {
        let rules = parse(
            "ALLOW READ, UPDATE (title, \"team_id\") ON issues KEEP (creator_id) \
             WHERE team_id IN :auth.teams;\n\
             ALLOW INSERT (Title), DELETE ON issues WHERE creator_id = :auth.sub;\n\
             ALLOW UPDATE ON users KEEP (name, name);",
        )
        .unwrap();
        let issues = &rules.tables["issues"];
        let grant = |op: Op| &issues.ops[op.index()][0];
        // Column indexes: id 0, team_id 1, creator_id 2, title 3.
        assert_eq!(grant(Op::Update).columns, Some(vec![1, 3]));
        assert_eq!(grant(Op::Update).keep, vec![2]);
        assert_eq!(grant(Op::Read).columns, None);
        assert!(grant(Op::Read).keep.is_empty());
        assert_eq!(grant(Op::Insert).columns, Some(vec![3]));
        assert!(grant(Op::Insert).keep.is_empty());
        assert!(grant(Op::Delete).keep.is_empty() && grant(Op::Delete).columns.is_none());
        let users = &rules.tables["users"].ops[Op::Update.index()][0];
        assert_eq!((users.columns.clone(), users.keep.clone()), (None, vec![1]));
    }

    #[test]
    fn column_list_errors_point_at_the_token() {
        let (line, column, message) =
            error_at("ALLOW READ ON users;\nALLOW UPDATE (title, nope) ON issues;");
        assert_eq!((line, column), (2, 22), "{message}");
        assert!(message.contains("unknown column `nope`"), "{message}");
        let (_, column, message) = error_at("ALLOW READ (title) ON issues;");
        assert_eq!(column, 12);
        assert!(message.contains("INSERT or UPDATE only"), "{message}");
        let (_, column, message) = error_at("ALLOW WRITE (title) ON issues;");
        assert_eq!(column, 13);
        assert!(message.contains("not WRITE"), "{message}");
        let (_, column, message) = error_at("ALLOW UPDATE () ON issues;");
        assert_eq!(column, 15);
        assert!(message.contains("column name"), "{message}");
        let (_, column, message) = error_at("ALLOW UPDATE (title status) ON issues;");
        assert_eq!(column, 21);
        assert!(message.contains("found `status`"), "{message}");
        let (_, column, message) = error_at("ALLOW UPDATE (title, 'x') ON issues;");
        assert_eq!(column, 22);
        assert!(message.contains("column name"), "{message}");
        let (_, column, message) = error_at("ALLOW UPDATE (title ON issues;");
        assert_eq!(column, 21);
        assert!(message.contains("found `ON`"), "{message}");
        let (line, column, message) =
            error_at("ALLOW UPDATE ON issues\n  KEEP (creator_id, nope)\n  WHERE team_id = 'a';");
        assert_eq!((line, column), (2, 21), "{message}");
        assert!(message.contains("unknown column `nope`"), "{message}");
        let (_, column, message) = error_at("ALLOW READ, DELETE ON issues KEEP (title);");
        assert_eq!(column, 30);
        assert!(message.contains("no UPDATE"), "{message}");
        let (_, column, message) = error_at("ALLOW UPDATE ON issues KEEP title;");
        assert_eq!(column, 29);
        assert!(message.contains("expected `(`"), "{message}");
        let (_, column, message) = error_at("ALLOW UPDATE ON issues KEEP;");
        assert_eq!(column, 28);
        assert!(message.contains("expected `(`"), "{message}");
        let (_, column, message) = error_at("ALLOW UPDATE ON issues KEPT (title);");
        assert_eq!(column, 24);
        assert!(message.contains("expected KEEP, WHERE or `;`"), "{message}");
        let (_, column, message) = error_at("ALLOW UPDATE ON issues KEEP (title) x;");
        assert_eq!(column, 37);
        assert!(message.contains("expected WHERE or `;`"), "{message}");
        // The predicate after a column list and KEEP still maps into the file.
        let (line, column, message) = error_at(
            "ALLOW UPDATE (title) ON issues KEEP (team_id) WHERE\n  team_id = 'a' AND bad = 1;",
        );
        assert_eq!((line, column), (2, 21), "{message}");
    }

    #[test]
    fn semicolons_in_strings_and_comments_do_not_split() {
        let rules =
            parse("ALLOW READ ON issues WHERE title = 'a;b' -- not; the end\n  OR team_id = 'x';")
                .unwrap();
        assert!(!rules.tables["issues"].ops[0].is_empty());
    }

    #[test]
    fn errors_point_into_the_file() {
        let (line, column, message) = error_at("\nALLOW READ ON issues WHERE nope = 1;");
        assert_eq!((line, column), (2, 28), "{message}");
        assert!(message.contains("unknown column `nope`"), "{message}");
        let (line, column, _) =
            error_at("ALLOW READ ON issues WHERE\n  team_id = 'a' AND\n  bad = 1;");
        assert_eq!((line, column), (3, 3));
        let (line, column, message) = error_at("ALLOW READ ON issues WHERE team_id = :team;");
        assert_eq!((line, column), (1, 38), "{message}");
        assert!(message.contains(":team"), "{message}");
        let (_, column, message) = error_at("ALLOW READ ON nope;");
        assert_eq!(column, 15);
        assert!(message.contains("unknown table"), "{message}");
        let (_, column, message) = error_at("ALLOW LOOK ON issues;");
        assert_eq!(column, 7);
        assert!(message.contains("LOOK"), "{message}");
        let (_, column, message) = error_at("HIDE users.id;");
        assert_eq!(column, 12);
        assert!(message.contains("primary key"), "{message}");
        let (_, column, _) = error_at("HIDE users.nope;");
        assert_eq!(column, 12);
        let (_, _, message) = error_at("GRANT READ ON users;");
        assert!(message.contains("ALLOW or HIDE"), "{message}");
        let (_, _, message) =
            error_at("ALLOW READ ON issues WHERE team_id IN :auth.t OR creator_id = :auth.t;");
        assert!(message.contains("both as a list"), "{message}");
        let (_, _, message) = error_at("ALLOW READ ON issues WHERE 1 = 1;");
        assert!(message.contains("constant"), "{message}");
    }

    #[test]
    fn quoted_names_comments_and_tokenizer_errors() {
        let rules = parse(
            "ALLOW READ ON \"issues\" -- the table\n WHERE\n  title = 'a''; --' ;\n\
             HIDE \"users\".password_hash, users.\"name\";",
        )
        .unwrap();
        assert!(!rules.tables["issues"].ops[0].is_empty());
        assert_eq!(rules.hidden_columns("users"), vec!["name", "password_hash"]);
        let (line, column, message) = error_at("ALLOW READ ON issues WHERE\n  title = 'open;");
        assert_eq!((line, column), (2, 11), "{message}");
        let (line, column, message) = error_at("ALLOW READ ON \"nope\" WHERE\n\tnope = 1;");
        assert_eq!((line, column), (1, 15), "{message}");
        let (_, column, message) = error_at("ALLOW READ ON issues x;");
        assert_eq!(column, 22);
        assert!(message.contains("found `x`"), "{message}");
        let (_, column, message) = error_at("ALLOW READ ON issues\t\tWHERE nope = 1;");
        assert_eq!(column, 29, "{message}");
    }

    #[test]
    fn error_display_names_the_file() {
        let e = parse("ALLOW READ ON nope;").unwrap_err();
        assert_eq!(e.to_string(), "access.rules:1:15: unknown table `nope`");
    }
}
