//! Windows on the client: reading a window subscription in order from the local view
//! (the server's window plus the app's pending writes that sort into it), and resizing it
//! in place.
//!
//! Part of the client's API; reads go to the local store, a resize goes to the sync task.

use super::{command, Client, ClientError};
use crate::query::{order_sql_quoted, where_sql, Shape};
use crate::schema::quote_ident;
use crate::value::Value;
use crate::wire::SubId;

impl Client {
    /// The rows of window subscription `sub` (`... ORDER BY ... LIMIT n`) as the app should
    /// show them, in the window's order: the first `n` rows of the local view that match,
    /// so the app's own pending writes sort in at once (an offline message appears at
    /// the top) and nothing moves when the server acknowledges them. Works offline. Fails
    /// with [`ClientError::SubscriptionFailed`] when `sub` is no window the schema
    /// accepts, [`ClientError::Store`] when the local database fails.
    pub fn window(&self, sub: SubId) -> Result<Vec<Vec<Value>>, ClientError> {
        let shape = self.window_shape(sub)?;
        let window = shape.window().expect("checked by window_shape");
        let table = shape.table();
        let (filter, values) = where_sql(shape.filter(), table);
        let columns: Vec<String> = shape
            .column_names()
            .iter()
            .map(|c| quote_ident(c))
            .collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE {filter} {} LIMIT {}",
            columns.join(", "),
            quote_ident(&table.name),
            order_sql_quoted(table, window.order()),
            window.limit()
        );
        self.query(&sql, &values)
    }

    /// Grows or shrinks window subscription `sub` to `limit` rows in place: the server
    /// sends only the rows between the old and the new edge (growing from 1000 to 2000
    /// rows costs 1000 rows). The new limit is remembered at once (a later run or
    /// reconnection subscribes with it); a subscription still bootstrapping resizes when
    /// it joins. Fails with [`ClientError::SubscriptionFailed`] when `sub` is no window
    /// or the limit is outside 1 to [`crate::query::MAX_WINDOW_LIMIT`], and
    /// [`ClientError::Store`] when the local database fails.
    pub fn set_limit(&self, sub: SubId, limit: u64) -> Result<(), ClientError> {
        let shape = self.window_shape(sub)?;
        if limit == 0 || limit > crate::query::MAX_WINDOW_LIMIT {
            return Err(ClientError::SubscriptionFailed(format!(
                "a window holds 1 to {} rows, not {limit}",
                crate::query::MAX_WINDOW_LIMIT
            )));
        }
        let resized = shape.with_limit(limit).expect("a window");
        self.shared.local().set_sub_sql(sub, resized.text())?;
        self.send(command::Deferred::Resize(sub, limit));
        Ok(())
    }

    /// The compiled window of subscription `sub`.
    fn window_shape(&self, sub: SubId) -> Result<Shape, ClientError> {
        let local = self.shared.local();
        let record = local
            .subs()?
            .into_iter()
            .find(|s| s.id == sub)
            .ok_or_else(|| ClientError::SubscriptionFailed(format!("no subscription {sub}")))?;
        let shape = crate::query::compile(local.schema(), &record.sql, &record.params)
            .map_err(|e| ClientError::SubscriptionFailed(e.to_string()))?;
        if shape.window().is_none() {
            return Err(ClientError::SubscriptionFailed(format!(
                "subscription {sub} is not a window (ORDER BY ... LIMIT n)"
            )));
        }
        Ok(shape)
    }
}
