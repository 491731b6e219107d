//! Fuzz target: arbitrary text compiled as a subscription and checked against SQLite.
#![no_main]

use std::sync::Mutex;

use sluice_fuzz::Oracle;

// rusqlite's Connection is Send but not Sync.
static ORACLE: Mutex<Option<Oracle>> = Mutex::new(None);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut oracle = ORACLE.lock().unwrap_or_else(|p| p.into_inner());
    sluice_fuzz::query(oracle.get_or_insert_with(Oracle::new), data);
});
