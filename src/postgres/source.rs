//! The replication side of a server: creates its slot, copies the tables into a fresh
//! replica in the slot's exported snapshot, then turns the `pgoutput` stream into
//! [`ReplicatedTxn`]s, one per PostgreSQL transaction, with its commit LSN as sync id.
//!
//! The slot is TEMPORARY: PostgreSQL drops it when the replication connection ends, also
//! when the server is killed, so a server that is gone holds no WAL back. A server that
//! starts again makes a new slot and a new replica; a running server that loses its
//! stream makes a new slot and compares its replica with the slot's snapshot
//! ([`resync_source`]). [`drop_slots`] removes slots left
//! by other tools or versions (`sluice slots --drop-inactive`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::SimpleQueryMessage;
use tracing::info;

use super::ddl::{pg_type, PgType, PUBLICATION, TXNS_TABLE};
use super::pgoutput::{decode, decode_stream, status_update, Datum, Lsn, Message, StreamMessage};
use super::replication::ReplicationConn;
use super::{connect, values, PgConfig, PgError, SLOT_PREFIX};
use crate::ids::{ClientId, SyncId};
use crate::schema::{quote_ident, Schema, Table};
use crate::store::{NoObserver, ReplicatedTxn, RowOp, SqliteStore, Store, StoreOptions};
use crate::value::Value;

/// Rows handed to the replica per SQLite transaction during the initial copy.
const COPY_CHUNK_ROWS: usize = 5_000;

/// What the stream yields.
#[derive(Debug)]
pub enum Event {
    /// A committed transaction (`xid` is PostgreSQL's 32-bit transaction id); the WAL up
    /// to `end` has been read.
    Txn {
        txn: ReplicatedTxn,
        xid: u32,
        end: Lsn,
    },
    /// Nothing is pending up to this WAL position (a keepalive between transactions).
    Progress(Lsn),
    /// The row operations so far of a transaction too large to hold whole
    /// ([`ReplicatedTxn::partial`]); its last part comes as [`Event::Txn`].
    Part(ReplicatedTxn),
}

/// A replication slot, as `sluice slots` lists it.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    /// The slot's name (`sluice_…`).
    pub name: String,
    /// Whether a server is reading it now.
    pub active: bool,
    /// Whether PostgreSQL drops it when its connection ends.
    pub temporary: bool,
}

/// How a relation of the stream maps onto the schema.
struct Rel {
    kind: RelKind,
    /// For each PostgreSQL column: its index in the schema's table and its type.
    columns: Vec<Option<(usize, PgType)>>,
}

enum RelKind {
    Table(Arc<Table>),
    Txns,
    Ignored,
}

/// The replication stream of one server.
pub struct Source {
    conn: ReplicationConn,
    schema: Arc<Schema>,
    rels: HashMap<u32, Rel>,
    open: Option<(u32, ReplicatedTxn)>,
    /// Whether the open transaction was handed out in parts.
    parted: bool,
    /// The most row operations held before they are handed out as a part
    /// ([`StoreOptions::replicated_changes_in_memory`]).
    part_ops: usize,
    /// The last position confirmed to PostgreSQL (applied to the replica).
    confirmed: Lsn,
    /// The slot's name.
    pub slot: String,
}

/// Creates this server's slot and the replica at `replica_path`, then starts streaming
/// from the slot's consistent point. A replica a previous run left there (of this
/// database, `server_id`, with its copy finished) is kept and resynchronised with the
/// slot's snapshot, its log intact so clients resume without a new bootstrap; otherwise
/// a fresh replica gets every table copied as of the consistent point. Fails with
/// [`PgError`].
pub async fn connect_source(
    config: &PgConfig,
    schema: Arc<Schema>,
    replica_path: &Path,
    options: StoreOptions,
    server_id: &str,
) -> Result<(Source, Arc<SqliteStore>), PgError> {
    let (path, s, id) = (
        replica_path.to_path_buf(),
        schema.clone(),
        server_id.to_string(),
    );
    let o = options.clone();
    let kept = blocking(move || SqliteStore::reopen_replica(&path, s, o, &id)).await?;
    if let Some(replica) = kept {
        let replica = Arc::new(replica);
        info!(head = %replica.head(), "replica kept from the last run; resynchronising");
        let (source, sync_id) = resync_source(config, schema, &replica).await?;
        // Its result is for a fan-out, and no session runs yet.
        let r = replica.clone();
        blocking(move || r.apply_resync(sync_id, &mut NoObserver)).await?;
        return Ok((source, replica));
    }
    let (path, s, id) = (
        replica_path.to_path_buf(),
        schema.clone(),
        server_id.to_string(),
    );
    let part_ops = options.replicated_changes_in_memory;
    let replica =
        Arc::new(blocking(move || SqliteStore::open_replica(&path, s, options, &id)).await?);
    let (conn, slot, start, snapshot) = create_slot(config).await?;
    copy_tables(config, &schema, &replica, &snapshot, CopyInto::Tables).await?;
    let r = replica.clone();
    blocking(move || r.finish_copy(state_before(start))).await?;
    let source = Source::start(conn, schema, slot, start, part_ops).await?;
    Ok((source, replica))
}

/// After the stream was lost, or for a replica kept from the last run: creates a new
/// slot, reads the tables in its snapshot beside `replica`, and starts streaming from
/// the slot's consistent point. Returns the stream and the sync id (just below the
/// consistent point, before anything the new slot streams) at which
/// [`SqliteStore::apply_resync`] brings the replica to that snapshot: whatever was
/// committed while no stream ran.
pub async fn resync_source(
    config: &PgConfig,
    schema: Arc<Schema>,
    replica: &Arc<SqliteStore>,
) -> Result<(Source, SyncId), PgError> {
    let (conn, slot, start, snapshot) = create_slot(config).await?;
    let r = replica.clone();
    blocking(move || r.begin_resync()).await?;
    copy_tables(config, &schema, replica, &snapshot, CopyInto::Staging).await?;
    info!(%slot, %start, "PostgreSQL's tables staged beside the replica");
    let part_ops = replica.options().replicated_changes_in_memory;
    let source = Source::start(conn, schema, slot, start, part_ops).await?;
    Ok((source, state_before(start)))
}

/// The sync id of a slot's snapshot: just below its consistent point. A transaction whose
/// commit record starts exactly at the consistent point is not in the snapshot but is
/// streamed, with the consistent point as its sync id; the snapshot's state must be
/// older than that, or the replica would take the transaction as applied and skip it.
/// (Every earlier commit record starts well below: a record is longer than one byte.)
fn state_before(start: Lsn) -> SyncId {
    SyncId(start.0.saturating_sub(1))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, PgError> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PgError::Replication(e.to_string()))??)
}

/// Creates a temporary slot with an exported snapshot: the replication connection, the
/// slot's name, its consistent point and the snapshot's name.
async fn create_slot(config: &PgConfig) -> Result<(ReplicationConn, String, Lsn, String), PgError> {
    let mut conn = ReplicationConn::connect(config).await?;
    let slot = format!("{SLOT_PREFIX}{:016x}", random_u64());
    let rows = conn
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {slot} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT"
        ))
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| PgError::Replication("CREATE_REPLICATION_SLOT returned nothing".into()))?;
    let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let start = Lsn::parse(&field(1))
        .ok_or_else(|| PgError::Replication(format!("bad consistent point {:?}", field(1))))?;
    let snapshot = field(2);
    info!(%slot, %start, "replication slot created; copying tables");
    Ok((conn, slot, start, snapshot))
}

/// Where [`copy_tables`] puts the rows it reads.
#[derive(Clone, Copy)]
enum CopyInto {
    /// Into the replica's tables (a fresh replica).
    Tables,
    /// Into the replica's staging tables, to be compared ([`resync_source`]).
    Staging,
}

/// Reads every table in `snapshot` (exported by the slot) into the replica.
async fn copy_tables(
    config: &PgConfig,
    schema: &Schema,
    replica: &Arc<SqliteStore>,
    snapshot: &str,
    into: CopyInto,
) -> Result<(), PgError> {
    let client = connect(config).await?;
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'"
        ))
        .await?;
    for table in schema.tables() {
        let types: Vec<PgType> = table
            .columns
            .iter()
            .map(|c| pg_type(table, c))
            .collect::<Result<_, _>>()?;
        let cols: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let stream = client
            .simple_query_raw(&format!(
                "SELECT {} FROM {}",
                cols.join(", "),
                quote_ident(&table.name)
            ))
            .await?;
        pin_mut!(stream);
        let mut chunk = Vec::with_capacity(COPY_CHUNK_ROWS);
        let mut copied = 0usize;
        while let Some(message) = stream.try_next().await? {
            let SimpleQueryMessage::Row(row) = message else {
                continue;
            };
            let mut values = Vec::with_capacity(types.len());
            for (i, ty) in types.iter().enumerate() {
                values.push(match row.get(i) {
                    None => Value::Null,
                    Some(text) => text_value(table, i, *ty, text)?,
                });
            }
            chunk.push(values);
            if chunk.len() == COPY_CHUNK_ROWS {
                copied += chunk.len();
                load(replica, table, std::mem::take(&mut chunk), into).await?;
            }
        }
        copied += chunk.len();
        load(replica, table, chunk, into).await?;
        info!(table = %table.name, rows = copied, "table copied");
    }
    client.batch_execute("COMMIT").await?;
    Ok(())
}

async fn load(
    replica: &Arc<SqliteStore>,
    table: &Arc<Table>,
    rows: Vec<Vec<Value>>,
    into: CopyInto,
) -> Result<(), PgError> {
    if rows.is_empty() {
        return Ok(());
    }
    let (r, t) = (replica.clone(), table.clone());
    blocking(move || match into {
        CopyInto::Tables => r.load_rows(&t, &rows),
        CopyInto::Staging => r.load_resync_rows(&t, &rows),
    })
    .await
}

fn text_value(table: &Table, i: usize, ty: PgType, text: &str) -> Result<Value, PgError> {
    values::from_text(ty, text).ok_or_else(|| PgError::Schema {
        table: table.name.clone(),
        column: table.columns[i].name.clone(),
        message: format!("holds {text:?}, which is not a {}", ty.sql()),
    })
}

impl Source {
    /// Starts streaming `slot` from `start` on `conn`.
    async fn start(
        mut conn: ReplicationConn,
        schema: Arc<Schema>,
        slot: String,
        start: Lsn,
        part_ops: usize,
    ) -> Result<Source, PgError> {
        conn.start(&format!(
            "START_REPLICATION SLOT {slot} LOGICAL {start} \
             (proto_version '1', publication_names '{PUBLICATION}')"
        ))
        .await?;
        info!(%slot, %start, "streaming");
        Ok(Source {
            conn,
            schema,
            rels: HashMap::new(),
            open: None,
            parted: false,
            part_ops: part_ops.max(1),
            confirmed: start,
            slot,
        })
    }

    /// The next committed transaction, or progress while idle. Answers the server's
    /// keepalives. Cancel-safe: state lives in `self` between reads.
    pub async fn next(&mut self) -> Result<Event, PgError> {
        loop {
            let payload = self.conn.recv().await?;
            match decode_stream(&payload)? {
                StreamMessage::Keepalive { end, reply } => {
                    if reply {
                        let update = status_update(self.confirmed, pg_now());
                        self.conn.send(&update).await?;
                    }
                    if self.open.is_none() {
                        return Ok(Event::Progress(end));
                    }
                }
                StreamMessage::XLogData { data, .. } => {
                    if let Some(event) = self.message(decode(data)?)? {
                        return Ok(event);
                    }
                }
            }
        }
    }

    /// Tells PostgreSQL that the WAL up to `lsn` is applied: the slot may advance.
    pub async fn confirm(&mut self, lsn: Lsn) -> Result<(), PgError> {
        self.confirmed = self.confirmed.max(lsn);
        let update = status_update(self.confirmed, pg_now());
        self.conn.send(&update).await
    }

    /// Asks PostgreSQL for a keepalive now (it carries the sender's WAL position).
    pub async fn ping(&mut self) -> Result<(), PgError> {
        let mut update = status_update(self.confirmed, pg_now());
        if let Some(last) = update.last_mut() {
            *last = 1;
        }
        self.conn.send(&update).await
    }

    fn message(&mut self, message: Message) -> Result<Option<Event>, PgError> {
        match message {
            Message::Begin { final_lsn, xid } => {
                let txn = ReplicatedTxn {
                    sync_id: SyncId(final_lsn.0),
                    ..ReplicatedTxn::default()
                };
                self.open = Some((xid, txn));
                self.parted = false;
            }
            Message::Commit {
                commit_lsn,
                end_lsn,
            } => {
                let (xid, mut txn) = self
                    .open
                    .take()
                    .ok_or_else(|| PgError::Replication("COMMIT without BEGIN".into()))?;
                if self.parted && txn.sync_id != SyncId(commit_lsn.0) {
                    return Err(PgError::Replication(format!(
                        "a transaction begun as {} committed as {commit_lsn}",
                        txn.sync_id
                    )));
                }
                txn.sync_id = SyncId(commit_lsn.0);
                return Ok(Some(Event::Txn {
                    txn,
                    xid,
                    end: end_lsn,
                }));
            }
            Message::Relation {
                id,
                namespace: _,
                name,
                columns,
            } => {
                let rel = self.relation(&name, &columns)?;
                self.rels.insert(id, rel);
            }
            Message::Insert { rel, new } => self.row(rel, None, Some(new))?,
            Message::Update { rel, old, new } => self.row(rel, old, Some(new))?,
            Message::Delete { rel, old } => self.row(rel, Some(old), None)?,
            Message::Truncate { rels } => {
                for id in rels {
                    if let Some(Rel {
                        kind: RelKind::Table(table),
                        ..
                    }) = self.rels.get(&id)
                    {
                        let op = RowOp::Truncate {
                            table: table.clone(),
                        };
                        self.txn()?.ops.push(op);
                    }
                }
            }
            Message::Other(_) => {}
        }
        Ok(self.full_part())
    }

    /// The open transaction's row operations so far as a part, once they reach
    /// `part_ops`.
    fn full_part(&mut self) -> Option<Event> {
        let (_, txn) = self.open.as_mut()?;
        if txn.ops.len() < self.part_ops {
            return None;
        }
        self.parted = true;
        Some(Event::Part(ReplicatedTxn {
            sync_id: txn.sync_id,
            ops: std::mem::take(&mut txn.ops),
            origins: std::mem::take(&mut txn.origins),
            resync: false,
            partial: true,
        }))
    }

    fn txn(&mut self) -> Result<&mut ReplicatedTxn, PgError> {
        self.open
            .as_mut()
            .map(|(_, t)| t)
            .ok_or_else(|| PgError::Replication("row change outside a transaction".into()))
    }

    fn relation(&self, name: &str, columns: &[super::pgoutput::RelColumn]) -> Result<Rel, PgError> {
        if name == TXNS_TABLE {
            let columns = columns
                .iter()
                .map(|c| match c.name.as_str() {
                    "client_id" => Some((0, PgType::Text)),
                    "seq" => Some((1, PgType::Int8)),
                    _ => None,
                })
                .collect();
            return Ok(Rel {
                kind: RelKind::Txns,
                columns,
            });
        }
        let Some(table) = self.schema.table(name) else {
            return Ok(Rel {
                kind: RelKind::Ignored,
                columns: Vec::new(),
            });
        };
        let mut mapped = Vec::with_capacity(columns.len());
        for c in columns {
            mapped.push(match table.column_index(&c.name) {
                Some(i) => Some((i, pg_type(table, &table.columns[i])?)),
                None => None,
            });
        }
        Ok(Rel {
            kind: RelKind::Table(table.clone()),
            columns: mapped,
        })
    }

    fn row(
        &mut self,
        rel: u32,
        old: Option<Vec<Datum>>,
        new: Option<Vec<Datum>>,
    ) -> Result<(), PgError> {
        let info = self
            .rels
            .get(&rel)
            .ok_or_else(|| PgError::Replication(format!("row of unknown relation {rel}")))?;
        match &info.kind {
            RelKind::Ignored => Ok(()),
            RelKind::Txns => {
                let Some(new) = new else { return Ok(()) };
                let mut client = None;
                let mut seq = None;
                for (datum, column) in new.iter().zip(&info.columns) {
                    match (column, datum) {
                        (Some((0, _)), Datum::Text(t)) => client = Some(ClientId(t.clone())),
                        (Some((1, _)), Datum::Text(t)) => seq = t.parse::<i64>().ok(),
                        _ => {}
                    }
                }
                if let (Some(client), Some(seq)) = (client, seq) {
                    self.txn()?.origins.push((client, seq as u64));
                }
                Ok(())
            }
            RelKind::Table(table) => {
                let table = table.clone();
                let decode_row = |datums: &[Datum]| -> Result<Vec<Option<Value>>, PgError> {
                    let mut row = vec![None; table.columns.len()];
                    for (datum, column) in datums.iter().zip(&info.columns) {
                        let Some((i, ty)) = column else { continue };
                        row[*i] = match datum {
                            Datum::Null => Some(Value::Null),
                            Datum::Unchanged => None,
                            Datum::Text(t) => Some(text_value(&table, *i, *ty, t)?),
                        };
                    }
                    Ok(row)
                };
                let old = old.as_deref().map(decode_row).transpose()?;
                let new = new.as_deref().map(decode_row).transpose()?;
                let old_key = old.as_ref().and_then(|o| o[table.pk].clone());
                let new_key = new.as_ref().and_then(|n| n[table.pk].clone());
                let mut ops = Vec::with_capacity(2);
                if let Some(old_key) = old_key {
                    if new_key.as_ref() != Some(&old_key) {
                        ops.push(RowOp::Delete {
                            table: table.clone(),
                            key: old_key,
                        });
                    }
                }
                if let Some(row) = new {
                    ops.push(RowOp::Upsert {
                        table: table.clone(),
                        row,
                    });
                }
                self.txn()?.ops.extend(ops);
                Ok(())
            }
        }
    }
}

/// Lists sluice's replication slots (`sluice_…`) in the database of `config`.
pub async fn list_slots(config: &PgConfig) -> Result<Vec<SlotInfo>, PgError> {
    let client = connect(config).await?;
    let rows = client
        .query(
            "SELECT slot_name::text, active, temporary FROM pg_replication_slots \
             WHERE slot_name LIKE $1 ORDER BY slot_name",
            &[&format!("{SLOT_PREFIX}%")],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| SlotInfo {
            name: r.get(0),
            active: r.get(1),
            temporary: r.get(2),
        })
        .collect())
}

/// Drops sluice's slots that no server is reading (inactive), or only `names` when
/// given. Returns the names dropped.
pub async fn drop_slots(config: &PgConfig, names: &[String]) -> Result<Vec<String>, PgError> {
    let client = connect(config).await?;
    let rows = client
        .query(
            "SELECT slot_name::text, pg_drop_replication_slot(slot_name) IS NULL \
             FROM pg_replication_slots \
             WHERE slot_name LIKE $1 AND NOT active \
               AND (cardinality($2::text[]) = 0 OR slot_name = ANY($2))",
            &[&format!("{SLOT_PREFIX}%"), &names],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Microseconds since 2000-01-01, PostgreSQL's epoch, for status updates.
fn pg_now() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    unix - 946_684_800_000_000
}

/// A random-enough 64-bit number for slot names (no RNG dependency needed).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}
