//! Binding: a [`Template`] plus parameter values -> a normalized [`Shape`].
//!
//! NOT is pushed down to the leaves (negation normal form, valid in SQL's three-valued
//! logic), BETWEEN becomes two comparisons, and every literal is converted by the
//! column's affinity once, here, so evaluation never needs to know about affinity.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::error::{snippet, Pos, QueryError, QueryErrorKind};
use super::limits::{MAX_IN_LIST, MAX_PATTERN_BYTES};
use super::parse::{ColRef, InList, Node, Operand, Template};
use super::pred::{CmpOp, Pred, PARAM_MARKER};
use super::render::ident_sql;
use super::window::{window_text, Limit, Window};
use crate::schema::Table;
use crate::value::Value;

/// The value bound to a named parameter.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Param {
    /// A single value (`:name`).
    Value(Value),
    /// A list of values (`IN :name`).
    List(Vec<Value>),
}

/// Named parameter values for binding (`:team`, `:auth.teams`); names without the colon.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Params(BTreeMap<String, Param>);

impl Params {
    /// No parameters.
    pub fn new() -> Params {
        Params::default()
    }

    /// Binds `name` to a single value.
    pub fn value(mut self, name: &str, value: Value) -> Params {
        self.0.insert(
            name.trim_start_matches(':').to_string(),
            Param::Value(value),
        );
        self
    }

    /// Binds `name` to a list (for `IN :name`).
    pub fn list(mut self, name: &str, values: Vec<Value>) -> Params {
        self.0.insert(
            name.trim_start_matches(':').to_string(),
            Param::List(values),
        );
        self
    }

    /// Binds `name` (a leading `:` is ignored) to `param`, replacing an earlier value.
    pub fn insert(&mut self, name: &str, param: Param) {
        self.0
            .insert(name.trim_start_matches(':').to_string(), param);
    }

    /// The value bound to `name` (without the colon), if any. Logarithmic in the count.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.0.get(name)
    }

    /// The bound names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Adds every binding of `other`, replacing values bound under the same names.
    pub fn extend(&mut self, other: &Params) {
        for (k, v) in &other.0 {
            self.0.insert(k.clone(), v.clone());
        }
    }
}

/// Stable identity of a shape: a hash of its normalized text.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ShapeId(pub u64);

impl fmt::Display for ShapeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A compiled, normalized subscription: which table, which columns, which rows.
#[derive(Debug, Clone)]
pub struct Shape {
    table: Arc<Table>,
    projection: Option<Vec<usize>>,
    filter: Pred,
    window: Option<Window>,
    text: String,
    id: ShapeId,
}

impl PartialEq for Shape {
    fn eq(&self, other: &Shape) -> bool {
        self.text == other.text
    }
}

impl Shape {
    /// Builds a shape from parts (used by binding and by rule combination).
    pub fn new(table: Arc<Table>, projection: Option<Vec<usize>>, filter: Pred) -> Shape {
        Shape::windowed(table, projection, filter, None)
    }

    /// Builds a shape from parts, a window (`ORDER BY ... LIMIT n`) included; the
    /// window's order columns join the projection.
    pub fn windowed(
        table: Arc<Table>,
        projection: Option<Vec<usize>>,
        filter: Pred,
        window: Option<Window>,
    ) -> Shape {
        let projection = match (&window, projection) {
            (Some(w), Some(mut cols)) => {
                for t in w.order() {
                    if !cols.contains(&t.col) {
                        cols.push(t.col);
                    }
                }
                cols.sort_unstable();
                (cols.len() < table.columns.len()).then_some(cols)
            }
            (_, projection) => projection,
        };
        let filter = filter.normalize(&table);
        let mut text = shape_text(&table, projection.as_deref(), &filter);
        if let Some(w) = &window {
            text.push(' ');
            text.push_str(&window_text(&table, w));
        }
        let digest = Sha256::digest(text.as_bytes());
        let id = ShapeId(u64::from_be_bytes(
            digest[..8].try_into().expect("32-byte digest"),
        ));
        Shape {
            table,
            projection,
            filter,
            window,
            text,
            id,
        }
    }

    /// The window (`ORDER BY ... LIMIT n`), when the shape is one.
    pub fn window(&self) -> Option<&Window> {
        self.window.as_ref()
    }

    /// The same shape with the window's limit changed (a resize); `None` when the shape
    /// is no window.
    pub fn with_limit(&self, limit: u64) -> Option<Shape> {
        let window = self.window.as_ref()?.with_limit(limit);
        Some(Shape::windowed(
            self.table.clone(),
            self.projection.clone(),
            self.filter.clone(),
            Some(window),
        ))
    }

    /// The shape's identity: a hash of its normalized text, equal for equivalent subscriptions.
    pub fn id(&self) -> ShapeId {
        self.id
    }

    /// The table the shape selects from.
    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// The compiled predicate in negation normal form (the permission rule included).
    pub fn filter(&self) -> &Pred {
        &self.filter
    }

    /// Selected column indexes in table order, `None` for all columns.
    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }

    /// The normalized text; it parses back to this same shape.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a full row of the table belongs to the shape.
    pub fn matches(&self, row: &[Value]) -> bool {
        self.filter.matches(row)
    }

    /// The projected values of a full row, in projection order.
    pub fn project(&self, row: &[Value]) -> Vec<Value> {
        match &self.projection {
            None => row.to_vec(),
            Some(cols) => cols.iter().map(|&c| row[c].clone()).collect(),
        }
    }

    /// Names of the projected columns.
    pub fn column_names(&self) -> Vec<&str> {
        match &self.projection {
            None => self.table.columns.iter().map(|c| c.name.as_str()).collect(),
            Some(cols) => cols
                .iter()
                .map(|&c| self.table.columns[c].name.as_str())
                .collect(),
        }
    }
}

fn shape_text(table: &Table, projection: Option<&[usize]>, filter: &Pred) -> String {
    let cols = match projection {
        None => "*".to_string(),
        Some(cols) => cols
            .iter()
            .map(|&c| ident_sql(&table.columns[c].name))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut text = format!("SELECT {cols} FROM {}", ident_sql(&table.name));
    if !filter.is_true() {
        text.push_str(" WHERE ");
        text.push_str(&filter.to_sql(table));
    }
    text
}

impl Template {
    /// Binds parameters and normalizes: the shape a subscription stands for. Costs a
    /// copy of the tree plus a sort of each AND/OR group and IN list. Errors: an unbound
    /// parameter, a list where a value is needed or the reverse, a list longer than
    /// [`MAX_IN_LIST`] (refused before any value is converted), or a pattern longer than
    /// [`MAX_PATTERN_BYTES`].
    pub fn bind(&self, params: &Params) -> Result<Shape, QueryError> {
        self.bind_with(params, MAX_IN_LIST)
    }

    /// [`Template::bind`] for lists the server built itself, not a client: the claims of
    /// a verified token and the key sets of a session's pins (bounded by their own
    /// limits). A bound list may be longer than [`MAX_IN_LIST`]; every other check holds.
    pub fn bind_trusted(&self, params: &Params) -> Result<Shape, QueryError> {
        self.bind_with(params, usize::MAX)
    }

    fn bind_with(&self, params: &Params, max_list: usize) -> Result<Shape, QueryError> {
        let binder = Binder {
            table: &self.table,
            params: Some(params),
            max_list,
        };
        let filter = match &self.filter {
            None => Pred::TRUE,
            Some(node) => binder.pred(node, false)?,
        };
        let window = self.window.as_ref().map(|w| w.bind(params)).transpose()?;
        Ok(Shape::windowed(
            self.table.clone(),
            self.projection.clone(),
            filter,
            window,
        ))
    }

    /// The normalized text with parameters left as `:name` (what `sluice check` prints).
    pub fn normalized_text(&self) -> String {
        let binder = Binder {
            table: &self.table,
            params: None,
            max_list: MAX_IN_LIST,
        };
        let filter = match &self.filter {
            None => Pred::TRUE,
            Some(node) => binder
                .pred(node, false)
                .expect("symbolic binding cannot fail"),
        };
        let shape = Shape::new(self.table.clone(), self.projection.clone(), filter);
        let mut text = unmark_params(&shape.text);
        if let Some(w) = &self.window {
            text.push(' ');
            text.push_str(&w.text(&self.table));
        }
        text
    }

    /// Names of the parameters the template uses.
    pub fn parameters(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Some(node) = &self.filter {
            collect_params(node, &mut names);
        }
        if let Some(Limit::Param { name, .. }) = self.window.as_ref().map(|w| &w.limit) {
            names.push(name.clone());
        }
        names.sort();
        names.dedup();
        names
    }
}

/// One use of a parameter in a template: its name, whether it stands for a list
/// (`IN :name`) or a single value, and where it appears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamUse {
    /// The parameter's name without the colon (`auth.teams`).
    pub name: String,
    /// Whether it stands for a list (`IN :name`).
    pub list: bool,
    /// Where it appears in the subscription text.
    pub pos: Pos,
}

impl Template {
    /// Every use of a parameter, in the order they appear.
    pub fn parameter_uses(&self) -> Vec<ParamUse> {
        let mut out = Vec::new();
        if let Some(node) = &self.filter {
            collect_uses(node, &mut out);
        }
        if let Some(Limit::Param { name, pos }) = self.window.as_ref().map(|w| &w.limit) {
            out.push(ParamUse {
                name: name.clone(),
                list: false,
                pos: *pos,
            });
        }
        out
    }
}

fn collect_uses(node: &Node, out: &mut Vec<ParamUse>) {
    let operand = |o: &Operand, out: &mut Vec<ParamUse>| {
        if let Operand::Param { name, pos } = o {
            out.push(ParamUse {
                name: name.clone(),
                list: false,
                pos: *pos,
            });
        }
    };
    match node {
        Node::And(members) | Node::Or(members) => {
            members.iter().for_each(|m| collect_uses(m, out));
        }
        Node::Not(a) => collect_uses(a, out),
        Node::Cmp { rhs, .. } => operand(rhs, out),
        Node::In {
            list: InList::Items(items),
            ..
        } => items.iter().for_each(|o| operand(o, out)),
        Node::In {
            list: InList::Array { name, pos },
            ..
        } => out.push(ParamUse {
            name: name.clone(),
            list: true,
            pos: *pos,
        }),
        Node::Between { low, high, .. } => {
            operand(low, out);
            operand(high, out);
        }
        Node::Like { pattern, .. } | Node::Glob { pattern, .. } => operand(pattern, out),
        Node::Truth { .. } => {}
    }
}

fn collect_params(node: &Node, out: &mut Vec<String>) {
    let mut operand = |o: &Operand| {
        if let Operand::Param { name, .. } = o {
            out.push(name.clone());
        }
    };
    match node {
        Node::And(members) | Node::Or(members) => {
            members.iter().for_each(|m| collect_params(m, out));
        }
        Node::Not(a) => collect_params(a, out),
        Node::Cmp { rhs, .. } => operand(rhs),
        Node::In {
            list: InList::Items(items),
            ..
        } => items.iter().for_each(operand),
        Node::In {
            list: InList::Array { name, .. },
            ..
        } => out.push(name.clone()),
        Node::Between { low, high, .. } => {
            operand(low);
            operand(high);
        }
        Node::Like { pattern, .. } | Node::Glob { pattern, .. } => operand(pattern),
        Node::Truth { .. } => {}
    }
}

/// Replaces the quoted parameter markers of a symbolic binding with `:name`.
fn unmark_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let quoted_marker = format!("'{PARAM_MARKER}");
    while let Some(i) = rest.find(&quoted_marker) {
        let (before, after) = rest.split_at(i);
        let after = &after[quoted_marker.len()..];
        let end = after.find('\'').unwrap_or(after.len());
        let name = after[..end].trim_start_matches('+');
        let mut before = before.to_string();
        let mut tail = &after[(end + 1).min(after.len())..];
        if let Some(array) = name.strip_prefix("[]") {
            // `IN ('<marker>')` prints as `IN :name`.
            if before.ends_with('(') && tail.starts_with(')') {
                before.pop();
                tail = &tail[1..];
            }
            out.push_str(&before);
            out.push(':');
            out.push_str(array);
        } else {
            out.push_str(&before);
            out.push(':');
            out.push_str(name);
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Binds a [`Node`] tree into a [`Pred`]. Recursive over the tree, whose depth is the
/// text's nesting (at most [`super::MAX_DEPTH`] levels, checked before parsing); AND/OR
/// groups are already flat.
struct Binder<'a> {
    table: &'a Table,
    /// `None` binds symbolically, for display of an unbound template.
    params: Option<&'a Params>,
    /// The longest list a parameter may be bound to.
    max_list: usize,
}

impl Binder<'_> {
    fn pred(&self, node: &Node, negate: bool) -> Result<Pred, QueryError> {
        Ok(match node {
            Node::And(members) | Node::Or(members) => {
                let children = members
                    .iter()
                    .map(|m| self.pred(m, negate))
                    .collect::<Result<Vec<_>, _>>()?;
                if matches!(node, Node::And(..)) != negate {
                    Pred::And(children)
                } else {
                    Pred::Or(children)
                }
            }
            Node::Not(inner) => self.pred(inner, !negate)?,
            Node::Cmp { col, op, rhs } => {
                let value = self.scalar(col, rhs)?;
                let op = if negate { op.negate() } else { *op };
                Pred::Cmp {
                    col: col.idx,
                    op,
                    value,
                }
            }
            Node::In { col, list, negated } => {
                let values = match list {
                    InList::Items(items) => items
                        .iter()
                        .map(|o| self.scalar(col, o))
                        .collect::<Result<_, _>>()?,
                    InList::Array { name, pos } => self.array(col, name, *pos)?,
                };
                Pred::In {
                    col: col.idx,
                    values,
                    negated: *negated != negate,
                }
            }
            Node::Between {
                col,
                low,
                high,
                negated,
            } => {
                let (low, high) = (self.scalar(col, low)?, self.scalar(col, high)?);
                if *negated != negate {
                    Pred::Or(vec![
                        Pred::Cmp {
                            col: col.idx,
                            op: CmpOp::Lt,
                            value: low,
                        },
                        Pred::Cmp {
                            col: col.idx,
                            op: CmpOp::Gt,
                            value: high,
                        },
                    ])
                } else {
                    Pred::And(vec![
                        Pred::Cmp {
                            col: col.idx,
                            op: CmpOp::Ge,
                            value: low,
                        },
                        Pred::Cmp {
                            col: col.idx,
                            op: CmpOp::Le,
                            value: high,
                        },
                    ])
                }
            }
            Node::Like {
                col,
                pattern,
                escape,
                negated,
            } => Pred::Like {
                col: *col,
                pattern: self.pattern(pattern)?,
                escape: *escape,
                negated: *negated != negate,
            },
            Node::Glob {
                col,
                pattern,
                negated,
            } => Pred::Glob {
                col: *col,
                pattern: self.pattern(pattern)?,
                negated: *negated != negate,
            },
            Node::Truth { col, test } => Pred::Truth {
                col: *col,
                test: if negate { test.negate() } else { *test },
            },
        })
    }

    fn convert(&self, col: &ColRef, value: Value) -> Value {
        if col.affinity {
            self.table.columns[col.idx]
                .affinity
                .apply_for_comparison(value)
        } else {
            value
        }
    }

    fn marker(&self, col: &ColRef, name: &str, array: bool) -> Value {
        let plus = if col.affinity { "" } else { "+" };
        let array = if array { "[]" } else { "" };
        Value::Text(format!("{PARAM_MARKER}{plus}{array}{name}"))
    }

    fn scalar(&self, col: &ColRef, operand: &Operand) -> Result<Value, QueryError> {
        match operand {
            Operand::Lit(v) => Ok(self.convert(col, v.clone())),
            Operand::Param { name, pos } => match self.params {
                None => Ok(self.marker(col, name, false)),
                Some(params) => match params.get(name) {
                    Some(super::Param::Value(v)) => Ok(self.convert(col, v.clone())),
                    Some(super::Param::List(_)) => Err(QueryError::new(
                        QueryErrorKind::ParameterType,
                        format!(
                            ":{name} is bound to a list; use it as `IN :{name}`",
                            name = snippet(name)
                        ),
                        *pos,
                    )),
                    None => Err(unbound(name, *pos)),
                },
            },
        }
    }

    fn array(&self, col: &ColRef, name: &str, pos: Pos) -> Result<Vec<Value>, QueryError> {
        match self.params {
            None => Ok(vec![self.marker(col, name, true)]),
            Some(params) => match params.get(name) {
                Some(super::Param::List(values)) if values.len() > self.max_list => {
                    Err(QueryError::new(
                        QueryErrorKind::TooComplex,
                        format!(
                            ":{} is bound to {} values; an IN list takes at most {MAX_IN_LIST}",
                            snippet(name),
                            values.len()
                        ),
                        pos,
                    ))
                }
                Some(super::Param::List(values)) => Ok(values
                    .iter()
                    .map(|v| self.convert(col, v.clone()))
                    .collect()),
                Some(super::Param::Value(_)) => Err(QueryError::new(
                    QueryErrorKind::ParameterType,
                    format!(
                        "`IN :{name}` needs a list, but :{name} is bound to a single value",
                        name = snippet(name)
                    ),
                    pos,
                )),
                None => Err(unbound(name, pos)),
            },
        }
    }

    fn pattern(&self, operand: &Operand) -> Result<Option<Vec<u8>>, QueryError> {
        let no_affinity = ColRef {
            idx: 0,
            affinity: false,
        };
        let value = self.scalar(&no_affinity, operand)?;
        let bytes = value.text_bytes().map(|b| b.into_owned());
        if bytes.as_ref().is_some_and(|b| b.len() > MAX_PATTERN_BYTES) {
            let pos = match operand {
                Operand::Param { pos, .. } => *pos,
                Operand::Lit(_) => Pos::START,
            };
            return Err(QueryError::new(
                QueryErrorKind::TooComplex,
                format!("pattern longer than {MAX_PATTERN_BYTES} bytes"),
                pos,
            ));
        }
        Ok(bytes)
    }
}

fn unbound(name: &str, pos: Pos) -> QueryError {
    QueryError::new(
        QueryErrorKind::UnboundParameter,
        format!("parameter :{} is not bound", snippet(name)),
        pos,
    )
}
