//! The verified identity of a session: the token's subject, expiry and other claims, and
//! how they become the `:auth.*` parameters of permission rules.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::query::{Param, Params};
use crate::value::Value;

/// Claim names with a fixed meaning; `--claim` may not set them.
pub const RESERVED_CLAIMS: [&str; 4] = ["sub", "exp", "iat", "nbf"];

/// What a verified token says about its bearer. [`Claims::default`] is the anonymous
/// identity (no subject, no claims) that `NoAuth` gives every client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims {
    /// The user id (`sub`); bound as `:auth.sub`.
    pub sub: Option<String>,
    /// Expiry, seconds since the UNIX epoch (`exp`).
    pub exp: Option<u64>,
    /// Every other claim, bound as `:auth.<name>`.
    pub extra: BTreeMap<String, Json>,
}

/// A claim that cannot be put in a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    #[error("claim name `{0}` must be a letter or `_` followed by letters, digits or `_`")]
    /// The name is not a letter or `_` followed by letters, digits or `_`.
    BadName(String),
    #[error("claim `{0}` is reserved; it is set by its own option")]
    /// The name is set by its own option (`sub`, `exp`, ...), not by `--claim`.
    Reserved(String),
    #[error("claim `{name}`: `{text}` is not JSON ({reason})")]
    /// The value is not JSON.
    BadJson {
        /// The claim's name.
        name: String,
        /// The value as given.
        text: String,
        /// The JSON parser's message.
        reason: String,
    },
    #[error("`{0}` is not KEY=JSON")]
    /// The argument has no `=`.
    NotKeyValue(String),
}

impl Claims {
    /// Claims for user `sub` with no expiry and nothing else.
    pub fn for_user(sub: impl Into<String>) -> Claims {
        Claims {
            sub: Some(sub.into()),
            ..Claims::default()
        }
    }

    /// Adds one claim (a string, number, boolean or array of those).
    pub fn with(mut self, name: &str, value: Json) -> Result<Claims, ClaimsError> {
        check_name(name)?;
        self.extra.insert(name.to_string(), value);
        Ok(self)
    }

    /// Parses `KEY=JSON` (as given to `sluice token --claim`) and adds it. A value that
    /// is not valid JSON is refused, so `teams=[T1]` is an error, `teams=["T1"]` is not.
    pub fn with_assignment(self, assignment: &str) -> Result<Claims, ClaimsError> {
        let (name, text) = assignment
            .split_once('=')
            .ok_or_else(|| ClaimsError::NotKeyValue(assignment.to_string()))?;
        let value = serde_json::from_str(text).map_err(|e| ClaimsError::BadJson {
            name: name.to_string(),
            text: text.to_string(),
            reason: e.to_string(),
        })?;
        self.with(name, value)
    }

    /// The rule parameters: `auth.sub` and `auth.<claim>` for each claim. Strings,
    /// numbers and booleans (as 0/1) bind as values, arrays as lists (for
    /// `IN :auth.teams`). Objects and `null` are not bound; rules see them as NULL.
    /// Inside an array, anything that is not a scalar becomes NULL.
    pub fn params(&self) -> Params {
        let mut params = Params::new();
        if let Some(sub) = &self.sub {
            params.insert("auth.sub", Param::Value(Value::Text(sub.clone())));
        }
        for (name, json) in &self.extra {
            let param = match json {
                Json::Array(items) => Param::List(
                    items
                        .iter()
                        .map(|j| scalar(j).unwrap_or(Value::Null))
                        .collect(),
                ),
                other => match scalar(other) {
                    Some(v) if !v.is_null() => Param::Value(v),
                    _ => continue,
                },
            };
            params.insert(&format!("auth.{name}"), param);
        }
        params
    }
}

fn check_name(name: &str) -> Result<(), ClaimsError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(ClaimsError::BadName(name.to_string()));
    }
    if RESERVED_CLAIMS.contains(&name) {
        return Err(ClaimsError::Reserved(name.to_string()));
    }
    Ok(())
}

/// A JSON scalar as a SQLite value; `None` for arrays and objects.
fn scalar(json: &Json) -> Option<Value> {
    match json {
        Json::Null => Some(Value::Null),
        Json::Bool(b) => Some(Value::Integer(*b as i64)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Some(Value::Integer(i)),
            None => n.as_f64().map(Value::Real),
        },
        Json::String(s) => Some(Value::Text(s.clone())),
        Json::Array(_) | Json::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_become_auth_params() {
        let claims = Claims::for_user("u1")
            .with("teams", json!(["T1", "T2"]))
            .unwrap()
            .with("level", json!(3))
            .unwrap()
            .with("admin", json!(true))
            .unwrap()
            .with("profile", json!({"a": 1}))
            .unwrap();
        let params = claims.params();
        assert_eq!(
            params.get("auth.sub"),
            Some(&Param::Value(Value::Text("u1".into())))
        );
        assert_eq!(
            params.get("auth.teams"),
            Some(&Param::List(vec![
                Value::Text("T1".into()),
                Value::Text("T2".into())
            ]))
        );
        assert_eq!(
            params.get("auth.level"),
            Some(&Param::Value(Value::Integer(3)))
        );
        assert_eq!(
            params.get("auth.admin"),
            Some(&Param::Value(Value::Integer(1)))
        );
        assert_eq!(params.get("auth.profile"), None);
        assert_eq!(Claims::default().params(), Params::new());
    }

    #[test]
    fn assignments_are_checked() {
        let c = Claims::for_user("u")
            .with_assignment("teams=[\"T1\"]")
            .unwrap();
        assert_eq!(c.extra["teams"], json!(["T1"]));
        assert!(matches!(
            Claims::default().with_assignment("teams=[T1]"),
            Err(ClaimsError::BadJson { .. })
        ));
        assert!(matches!(
            Claims::default().with_assignment("sub=\"x\""),
            Err(ClaimsError::Reserved(_))
        ));
        assert!(matches!(
            Claims::default().with_assignment("a.b=1"),
            Err(ClaimsError::BadName(_))
        ));
        assert!(matches!(
            Claims::default().with_assignment("nothing"),
            Err(ClaimsError::NotKeyValue(_))
        ));
    }
}
