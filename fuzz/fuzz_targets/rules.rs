//! Fuzz target: arbitrary text read as a permission rules file (`Rules::parse`) against
//! the example schema. Any panic, stack overflow or hang is a bug; a refusal is fine.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use sluice::auth::Rules;
use sluice::schema::Schema;

static SCHEMA: OnceLock<Schema> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let schema = SCHEMA.get_or_init(sluice_fuzz::schema);
    if let Ok(rules) = Rules::parse(schema, Path::new("fuzz.rules"), text) {
        // Walk what was accepted, as the server does when it loads a rules file.
        for table in ["teams", "users", "issues", "comments", "messages", "no_such_table"] {
            let _ = rules.hidden_columns(table);
        }
    }
});
