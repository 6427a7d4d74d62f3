//! Reads arbitrary bytes as JSON Lines and as a `.json` file, the other text readers that
//! HH-RLHF input goes through.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pyalign::table::{read_table_from_bytes, Columns};

fuzz_target!(|data: &[u8]| {
    let named = ["chosen".to_owned(), "rejected".to_owned()];
    for name in ["input.jsonl", "input.json"] {
        for columns in [Columns::All, Columns::Named(&named)] {
            if let Ok(table) = read_table_from_bytes(name, data, columns) {
                let rows = table.num_rows();
                assert!(table.values.iter().all(|column| column.len() == rows));
            }
        }
    }
});
