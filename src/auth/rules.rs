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
mod tests;
