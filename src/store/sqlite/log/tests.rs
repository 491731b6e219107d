use super::*;
use crate::value::Value;
use crate::vocab::{ChangeKind, ClientId};

fn conn() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(DDL).unwrap();
    conn
}

/// A change to row `key` of `table` at `sync_id`, from `client` if any.
fn change(sync_id: u64, table: &str, key: i64, client: Option<(&str, u64)>) -> Change {
    Change {
        sync_id: SyncId(sync_id),
        table: table.into(),
        key: Value::Integer(key),
        kind: ChangeKind::Insert,
        old: None,
        new: Some(vec![Value::Integer(key), Value::Text(format!("row {key}"))]),
        origin: client.map(|(c, s)| (ClientId(c.into()), s)),
    }
}

fn pk(_: &str) -> usize {
    0
}

fn read_all(conn: &Connection, after: u64, head: u64) -> (Vec<Change>, LogRead) {
    let mut seen = Vec::new();
    let read = read(conn, SyncId(after), SyncId(head), SyncId(0), &mut |c| {
        seen.push(c);
        ControlFlow::Continue(())
    })
    .unwrap();
    (seen, read)
}

fn chunks(conn: &Connection) -> Vec<(i64, u64, u64, i64)> {
    let mut stmt = conn
        .prepare(
            "SELECT rowid, first_sync_id, last_sync_id, changes FROM _sluice_log ORDER BY rowid",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

#[test]
fn changes_read_back_as_written_with_their_names_and_keys() {
    let conn = conn();
    let mut odd = change(3, "b", 9, None);
    // A key that is not the image's first column is kept apart.
    odd.key = Value::Text("elsewhere".into());
    let written = vec![
        change(1, "a", 1, Some(("c1", 7))),
        change(1, "b", 2, Some(("c1", 7))),
        change(2, "a", 3, Some(("c2", 1))),
        odd,
        change(4, "a", 4, Some(("c1", 8))),
    ];
    append(&conn, &mut ChunkWriter::default(), &written, &pk).unwrap();
    assert_eq!(chunks(&conn).len(), 1, "one batch, one chunk");
    let (seen, end) = read_all(&conn, 0, 4);
    assert_eq!(seen, written);
    assert_eq!(end, LogRead::Complete { head: SyncId(4) });
    let (seen, _) = read_all(&conn, 1, 3);
    assert_eq!(seen, written[2..4].to_vec(), "after 1, up to the head 3");
}

#[test]
fn large_batches_are_split_into_chunks_in_order() {
    let conn = conn();
    let written: Vec<Change> = (1..=2000)
        .map(|n| change(n, "a", n as i64, Some((&format!("c{}", n % 100), n))))
        .collect();
    append(&conn, &mut ChunkWriter::default(), &written, &pk).unwrap();
    let rows = chunks(&conn);
    assert!(rows.len() > 2, "{} chunks", rows.len());
    let mut next = 1;
    for (_, first, last, count) in &rows {
        assert_eq!(*first, next);
        assert_eq!(*count as u64, last - first + 1);
        next = last + 1;
    }
    assert_eq!(next, 2001);
    assert_eq!(read_all(&conn, 0, 2000).0, written);
    assert_eq!(read_all(&conn, 1500, 2000).0, written[1500..].to_vec());
}

#[test]
fn a_read_stops_where_the_callback_does() {
    let conn = conn();
    let written: Vec<Change> = (1..=5).map(|n| change(n, "a", n as i64, None)).collect();
    append(&conn, &mut ChunkWriter::default(), &written, &pk).unwrap();
    let mut seen = 0;
    let end = read(&conn, SyncId(0), SyncId(5), SyncId(0), &mut |_| {
        seen += 1;
        if seen == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(end, LogRead::Stopped { last: SyncId(3) });
}

#[test]
fn compaction_drops_whole_chunks_and_rewrites_the_one_it_cuts() {
    let conn = conn();
    let mut writer = ChunkWriter::default();
    for batch in [1..=3u64, 4..=6, 7..=9] {
        let changes: Vec<Change> = batch.map(|n| change(n, "a", n as i64, None)).collect();
        append(&conn, &mut writer, &changes, &pk).unwrap();
    }
    assert_eq!(chunks(&conn).len(), 3);
    // 1..=3 go whole, 4 and 5 out of the second chunk.
    assert_eq!(compact(&conn, SyncId(5), &pk).unwrap(), 5);
    let rows = chunks(&conn);
    assert_eq!(
        rows.iter().map(|r| (r.1, r.2, r.3)).collect::<Vec<_>>(),
        vec![(6, 6, 1), (7, 9, 3)]
    );
    let ids: Vec<u64> = read_all(&conn, 5, 9)
        .0
        .iter()
        .map(|c| c.sync_id.0)
        .collect();
    assert_eq!(ids, vec![6, 7, 8, 9]);
    assert_eq!(compact(&conn, SyncId(9), &pk).unwrap(), 4);
    assert!(chunks(&conn).is_empty());
    assert_eq!(compact(&conn, SyncId(9), &pk).unwrap(), 0);
}

#[test]
fn finds_the_first_chunk_ending_above() {
    let conn = conn();
    for (rowid, first, last) in [(3, 1, 5), (4, 5, 5), (9, 6, 6), (10, 7, 8), (40, 9, 9)] {
        conn.execute(
            "INSERT INTO _sluice_log (rowid, first_sync_id, last_sync_id, changes, entries) \
             VALUES (?1, ?2, ?3, 1, x'')",
            [rowid, first, last],
        )
        .unwrap();
    }
    let start = |after| start_after(&conn, SyncId(after)).unwrap();
    assert_eq!(start(0), Some(3));
    assert_eq!(start(4), Some(3));
    // Between two rows any rowid in the gap will do; the search gives the first.
    assert_eq!(start(5), Some(5));
    assert_eq!(start(6), Some(10));
    assert_eq!(start(7), Some(10));
    assert_eq!(start(8), Some(11));
    assert_eq!(start(9), None);
    assert_eq!(start_after(&self::conn(), SyncId(0)).unwrap(), None);
}

#[test]
fn a_chunk_names_at_most_64_clients_and_a_large_change_ends_its_chunk() {
    let conn = conn();
    // 100 clients, a change each, well under the chunk's byte size: two chunks.
    let written: Vec<Change> = (1..=100)
        .map(|n| change(n, "a", n as i64, Some((&format!("client-{n}"), 1))))
        .collect();
    append(&conn, &mut ChunkWriter::default(), &written, &pk).unwrap();
    let counts: Vec<i64> = chunks(&conn).iter().map(|c| c.3).collect();
    assert_eq!(counts, vec![64, 36]);
    let mut big = change(101, "a", 101, None);
    big.new.as_mut().unwrap()[1] = Value::Blob(vec![7; 100_000]);
    let after = vec![big, change(102, "a", 102, None)];
    append(&conn, &mut ChunkWriter::default(), &after, &pk).unwrap();
    let counts: Vec<i64> = chunks(&conn).iter().map(|c| c.3).collect();
    assert_eq!(counts, vec![64, 36, 1, 1]);
    let (seen, _) = read_all(&conn, 0, 102);
    assert_eq!(seen[..100], written[..]);
    assert_eq!(seen[100..], after[..]);
}

#[test]
fn compaction_cuts_the_chunk_past_a_gap_in_rowids() {
    let conn = conn();
    let mut writer = ChunkWriter::default();
    for batch in [1..=2u64, 3..=4, 5..=6] {
        let changes: Vec<Change> = batch.map(|n| change(n, "a", n as i64, None)).collect();
        append(&conn, &mut writer, &changes, &pk).unwrap();
    }
    // Rowids 1, 5 and 9.
    conn.execute_batch("UPDATE _sluice_log SET rowid = rowid * 4 - 3 WHERE rowid > 1")
        .unwrap();
    assert_eq!(compact(&conn, SyncId(3), &pk).unwrap(), 3);
    let ids: Vec<u64> = read_all(&conn, 3, 6)
        .0
        .iter()
        .map(|c| c.sync_id.0)
        .collect();
    assert_eq!(ids, vec![4, 5, 6]);
}

#[test]
fn a_read_from_inside_a_gap_is_refused_until_compaction_passes_it() {
    let conn = conn();
    let mut writer = ChunkWriter::default();
    append(&conn, &mut writer, &[change(10, "a", 1, None)], &pk).unwrap();
    // A resynchronisation at 20 folded in whatever happened after 10.
    record_gap(&conn, SyncId(10), SyncId(20)).unwrap();
    append(&conn, &mut writer, &[change(20, "a", 2, None)], &pk).unwrap();
    // No cut lies strictly inside (29, 30): nothing to record.
    record_gap(&conn, SyncId(29), SyncId(30)).unwrap();
    let gaps = |conn: &Connection| -> Vec<(u64, u64)> {
        let mut stmt = conn
            .prepare("SELECT after, through FROM _sluice_gaps ORDER BY through")
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    assert_eq!(gaps(&conn), vec![(10, 20)]);

    let ids = |after: u64| -> Vec<u64> {
        let (seen, read) = read_all(&conn, after, 20);
        assert_eq!(read, LogRead::Complete { head: SyncId(20) }, "from {after}");
        seen.iter().map(|c| c.sync_id.0).collect()
    };
    // At either end of the gap the log is whole.
    assert_eq!(ids(9), vec![10, 20]);
    assert_eq!(ids(10), vec![20]);
    assert_eq!(ids(20), Vec::<u64>::new());
    for inside in [11, 15, 19] {
        let (seen, read) = read_all(&conn, inside, 20);
        assert!(seen.is_empty());
        assert_eq!(
            read,
            LogRead::Compacted {
                horizon: SyncId(20)
            },
            "from {inside}"
        );
    }

    // Compacting into the gap keeps it (a cut above the new horizon may still be inside);
    // compacting to its end forgets it.
    compact(&conn, SyncId(15), &pk).unwrap();
    assert_eq!(gaps(&conn), vec![(10, 20)]);
    compact(&conn, SyncId(20), &pk).unwrap();
    assert!(gaps(&conn).is_empty());
}
