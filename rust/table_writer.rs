//! Writes columns to CSV, JSON Lines or Parquet files, chosen by the file's extension.
//!
//! The three formats read back through [`crate::table`] as the same strings: a boolean reads as
//! `"true"` or `"false"`, and a list of messages as its compact JSON text. CSV stores that JSON
//! text in the cell, JSON Lines stores the JSON value, and Parquet a list of structs.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::Value;

use crate::chat::messages_to_json;
use crate::error::{Error, Result};
use crate::parquet_table;

pub use crate::parquet_table::ColumnValues;

/// The extensions that [`write_table`] accepts.
pub const SUPPORTED_OUTPUT_EXTENSIONS: &str = ".csv, .jsonl, .parquet";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputFile {
    Csv,
    JsonLines,
    Parquet,
}

fn output_file(output: &Path) -> Result<OutputFile> {
    let name = output
        .file_name()
        .map(|name| name.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.ends_with(".csv") {
        Ok(OutputFile::Csv)
    } else if name.ends_with(".jsonl") {
        Ok(OutputFile::JsonLines)
    } else if name.ends_with(".parquet") {
        Ok(OutputFile::Parquet)
    } else {
        Err(Error::UnsupportedExtension {
            path: output.to_path_buf(),
            supported: SUPPORTED_OUTPUT_EXTENSIONS,
        })
    }
}

/// Checks that [`write_table`] supports the extension of `output`, so that a caller can fail
/// before doing the work.
pub fn check_output_path(output: &Path) -> Result<()> {
    output_file(output).map(|_| ())
}

/// Writes `columns`, which must all have the same length, to `output`. The parent folder is
/// created when it is missing.
pub fn write_table(output: &Path, columns: &[(&str, ColumnValues<'_>)]) -> Result<()> {
    let format = output_file(output)?;
    let lengths: Vec<usize> = columns.iter().map(|(_, values)| values.len()).collect();
    if lengths.windows(2).any(|pair| pair[0] != pair[1]) {
        return Err(Error::invalid_value(
            "column lengths",
            format!("{lengths:?}"),
            "columns of equal length",
        ));
    }
    if let Some(parent) = output
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|source| Error::io(parent, source))?;
    }

    match format {
        OutputFile::Csv => write_csv(output, columns),
        OutputFile::JsonLines => write_json_lines(output, columns),
        OutputFile::Parquet => parquet_table::write_table(output, columns),
    }
}

fn write_csv(output: &Path, columns: &[(&str, ColumnValues<'_>)]) -> Result<()> {
    let csv_error = |error: csv::Error| csv_write_error(output, error);
    let mut writer = csv::Writer::from_path(output).map_err(csv_error)?;
    writer
        .write_record(columns.iter().map(|(name, _)| name))
        .map_err(csv_error)?;
    let num_rows = columns.first().map_or(0, |(_, values)| values.len());
    let mut cells: Vec<String> = Vec::with_capacity(columns.len());
    for row in 0..num_rows {
        cells.clear();
        for (_, values) in columns {
            cells.push(match values {
                ColumnValues::Text(values) => values[row].to_owned(),
                ColumnValues::Bool(values) => values[row].to_string(),
                ColumnValues::Messages(values) => messages_to_json(values[row]).to_string(),
            });
        }
        writer.write_record(&cells).map_err(csv_error)?;
    }
    writer.flush().map_err(|source| Error::io(output, source))?;
    Ok(())
}

fn write_json_lines(output: &Path, columns: &[(&str, ColumnValues<'_>)]) -> Result<()> {
    let io_error = |source| Error::io(output, source);
    let file = File::create(output).map_err(io_error)?;
    let mut writer = BufWriter::new(file);
    let num_rows = columns.first().map_or(0, |(_, values)| values.len());
    for row in 0..num_rows {
        let mut object = serde_json::Map::new();
        for (name, values) in columns {
            let value = match values {
                ColumnValues::Text(values) => Value::String(values[row].to_owned()),
                ColumnValues::Bool(values) => Value::Bool(values[row]),
                ColumnValues::Messages(values) => messages_to_json(values[row]),
            };
            object.insert((*name).to_owned(), value);
        }
        writeln!(writer, "{}", Value::Object(object)).map_err(io_error)?;
    }
    writer.flush().map_err(io_error)?;
    Ok(())
}

fn csv_write_error(path: &Path, error: csv::Error) -> Error {
    let message = error.to_string();
    match error.into_kind() {
        csv::ErrorKind::Io(source) => Error::io(path, source),
        _ => Error::InvalidCsv {
            path: path.to_path_buf(),
            line: 0,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Message;
    use crate::table::read_all_columns;

    #[test]
    fn formats_read_back_alike() {
        let dir = tempfile::tempdir().unwrap();
        let turns = [
            Message::new("user", "Hi, \"you\""),
            Message::new("assistant", "a\nb"),
        ];
        let conversations: [&[Message]; 2] = [&turns, &turns[..1]];
        let columns = [
            ("prompt", ColumnValues::Messages(&conversations)),
            ("response", ColumnValues::Text(&["x,y", ""])),
            ("label", ColumnValues::Bool(&[true, false])),
        ];

        let mut tables = Vec::new();
        for name in ["rows.csv", "nested/deeper/rows.jsonl", "rows.parquet"] {
            let path = dir.path().join(name);
            write_table(&path, &columns).unwrap();
            tables.push(read_all_columns(&path).unwrap());
        }

        assert_eq!(tables[0], tables[1]);
        assert_eq!(tables[0], tables[2]);
        assert_eq!(
            tables[0].column("prompt").unwrap()[1],
            r#"[{"role":"user","content":"Hi, \"you\""}]"#
        );
        assert_eq!(tables[0].column("label").unwrap(), ["true", "false"]);
    }

    #[test]
    fn rejects_bad_extension_and_ragged_columns() {
        let dir = tempfile::tempdir().unwrap();

        let error = check_output_path(&dir.path().join("rows.txt")).unwrap_err();
        assert!(
            error.to_string().contains(SUPPORTED_OUTPUT_EXTENSIONS),
            "{error}"
        );

        let columns = [
            ("a", ColumnValues::Text(&["1"])),
            ("b", ColumnValues::Text(&["1", "2"])),
        ];
        let error = write_table(&dir.path().join("rows.csv"), &columns).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid column lengths [1, 2]: expected columns of equal length"
        );
    }
}
