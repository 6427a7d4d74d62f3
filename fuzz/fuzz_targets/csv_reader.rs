//! Reads arbitrary bytes as a CSV file, plain and gzipped, with all columns and with named
//! ones. Errors are fine; panics and tables of ragged columns are not.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pyalign::table::{read_table_from_bytes, Columns, Table};

fn check(table: &Table) {
    assert_eq!(table.columns.len(), table.values.len());
    let rows = table.num_rows();
    assert!(table.values.iter().all(|column| column.len() == rows));
}

fuzz_target!(|data: &[u8]| {
    let named = ["prompt".to_owned(), "chosen".to_owned()];
    for columns in [Columns::All, Columns::Named(&named)] {
        if let Ok(table) = read_table_from_bytes("input.csv", data, columns) {
            check(&table);
        }
        // Arbitrary bytes are rarely gzip; the decoder's errors must still surface as errors.
        if let Ok(table) = read_table_from_bytes("input.csv.gz", data, columns) {
            check(&table);
        }
    }
});
