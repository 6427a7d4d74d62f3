//! Reads tables of text columns from CSV, JSON Lines and JSON files, plain or gzipped.
//!
//! Every value comes back as a string, because the consumers tokenize text. JSON strings are
//! taken as they are, `null` becomes the empty string and any other JSON value (a boolean, a
//! number, an array, an object) becomes its JSON text, so `true` reads as `"true"`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde_json::{Map, Value};

use crate::error::{Error, Location, Result};

/// The extensions that [`read_table`] accepts, as error messages list them.
pub const SUPPORTED_EXTENSIONS: &str = ".csv, .csv.gz, .jsonl, .jsonl.gz, .json, .json.gz";

const EMPTY_FILE: &str = "the file is empty, expected a header row and at least one record";
const EMPTY_JSON_FILE: &str = "the file is empty, expected at least one JSON object";
const HEADER_ONLY: &str = "the file has a header row but no records";
const EMPTY_JSON_ARRAY: &str = "the JSON array is empty, expected at least one object";

/// The requested columns of a file, each as one string per record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Column names in the order they were requested.
    pub columns: Vec<String>,
    /// `values[c][r]` is the value of column `columns[c]` in record `r`.
    pub values: Vec<Vec<String>>,
}

impl Table {
    /// Returns the values of the column `name`, if it was requested.
    pub fn column(&self, name: &str) -> Option<&[String]> {
        let position = self.columns.iter().position(|column| column == name)?;
        Some(&self.values[position])
    }

    /// Returns the number of records.
    pub fn num_rows(&self) -> usize {
        self.values.first().map_or(0, Vec::len)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    JsonLines,
    /// `.json` contains either one array of objects or JSON Lines. The first non-blank byte
    /// decides.
    Json,
}

/// Reads the `columns` of every record in the file at `path`.
///
/// The format follows the extension (see [`SUPPORTED_EXTENSIONS`]). A file without records is
/// an error, and so is a record that lacks one of the columns.
pub fn read_table(path: &Path, columns: &[String]) -> Result<Table> {
    let mut values: Vec<Vec<String>> = vec![Vec::new(); columns.len()];
    for_each_record(path, columns, |_, record| {
        for (column_values, value) in values.iter_mut().zip(record) {
            column_values.push(value);
        }
        ControlFlow::Continue(())
    })?;
    log::debug!(
        "read {} records from {}",
        values.first().map_or(0, Vec::len),
        path.display()
    );
    Ok(Table {
        columns: columns.to_vec(),
        values,
    })
}

/// Streams the `columns` of each record in the file at `path` to `visit`, in file order.
///
/// `visit` receives the record's location and its values in the order of `columns`. It returns
/// `ControlFlow::Break` to stop reading early.
pub fn for_each_record<F>(path: &Path, columns: &[String], mut visit: F) -> Result<()>
where
    F: FnMut(Location, Vec<String>) -> ControlFlow<()>,
{
    let (format, gzipped) = detect_format(path)?;
    let mut reader = open_reader(path, gzipped)?;
    match format {
        Format::Csv => read_csv(path, reader, columns, &mut visit),
        Format::JsonLines => read_json_lines(path, reader, columns, &mut visit),
        Format::Json => {
            if starts_with_array(path, &mut reader)? {
                read_json_array(path, reader, columns, &mut visit)
            } else {
                read_json_lines(path, reader, columns, &mut visit)
            }
        }
    }
}

fn detect_format(path: &Path) -> Result<(Format, bool)> {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().to_lowercase());
    let name = name.unwrap_or_default();
    let (stem, gzipped) = match name.strip_suffix(".gz") {
        Some(stem) => (stem, true),
        None => (name.as_str(), false),
    };

    let format = if stem.ends_with(".csv") {
        Format::Csv
    } else if stem.ends_with(".jsonl") {
        Format::JsonLines
    } else if stem.ends_with(".json") {
        Format::Json
    } else {
        return Err(Error::UnsupportedExtension {
            path: path.to_path_buf(),
            supported: SUPPORTED_EXTENSIONS,
        });
    };
    Ok((format, gzipped))
}

/// Opens `path` for buffered reading, through a gzip decoder when `gzipped` is set.
pub(crate) fn open_reader(path: &Path, gzipped: bool) -> Result<Box<dyn BufRead>> {
    let file = File::open(path).map_err(|source| Error::io(path, source))?;
    if gzipped {
        // MultiGzDecoder, because gzip files written by concatenation hold several members.
        let decoder = MultiGzDecoder::new(BufReader::new(file));
        Ok(Box::new(BufReader::new(decoder)))
    } else {
        Ok(Box::new(BufReader::new(file)))
    }
}

fn read_csv(
    path: &Path,
    reader: impl Read,
    columns: &[String],
    visit: &mut dyn FnMut(Location, Vec<String>) -> ControlFlow<()>,
) -> Result<()> {
    // The csv crate strips a leading UTF-8 byte order mark and handles quoted fields that
    // contain delimiters, doubled quotes and newlines.
    let mut csv_reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(reader);
    let headers = csv_reader
        .headers()
        .map_err(|error| csv_error(path, error))?
        .clone();
    if headers.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
            detail: EMPTY_FILE,
        });
    }

    let found: Vec<String> = headers.iter().map(str::to_owned).collect();
    let mut positions = Vec::with_capacity(columns.len());
    for column in columns {
        let Some(position) = found.iter().position(|header| header == column) else {
            return Err(missing_column(path, None, column, found));
        };
        positions.push(position);
    }

    let mut num_records = 0usize;
    for record in csv_reader.records() {
        let record = record.map_err(|error| csv_error(path, error))?;
        num_records += 1;
        let line = record.position().map_or(0, csv::Position::line);
        let values = positions
            .iter()
            .map(|&position| record[position].to_owned())
            .collect();
        if visit(Location::Line(line), values).is_break() {
            return Ok(());
        }
    }

    if num_records == 0 {
        return Err(Error::Empty {
            path: path.to_path_buf(),
            detail: HEADER_ONLY,
        });
    }
    Ok(())
}

fn csv_error(path: &Path, error: csv::Error) -> Error {
    let line = error.position().map_or(0, csv::Position::line);
    let message = error.to_string();
    match error.into_kind() {
        csv::ErrorKind::Io(source) => Error::io(path, source),
        csv::ErrorKind::Utf8 { pos, .. } => Error::InvalidUtf8 {
            path: path.to_path_buf(),
            line: pos.map_or(line, |pos| pos.line()),
        },
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => Error::InvalidCsv {
            path: path.to_path_buf(),
            line: pos.map_or(line, |pos| pos.line()),
            message: format!("the record has {len} fields, the header has {expected_len}"),
        },
        _ => Error::InvalidCsv {
            path: path.to_path_buf(),
            line,
            message,
        },
    }
}

fn read_json_lines(
    path: &Path,
    mut reader: impl BufRead,
    columns: &[String],
    visit: &mut dyn FnMut(Location, Vec<String>) -> ControlFlow<()>,
) -> Result<()> {
    let mut bytes = Vec::new();
    let mut line = 0u64;
    let mut num_records = 0usize;
    loop {
        bytes.clear();
        let num_read = reader
            .read_until(b'\n', &mut bytes)
            .map_err(|e| Error::io(path, e))?;
        if num_read == 0 {
            break;
        }
        line += 1;

        let text = std::str::from_utf8(&bytes).map_err(|_| Error::InvalidUtf8 {
            path: path.to_path_buf(),
            line,
        })?;
        let text = if line == 1 {
            text.trim_start_matches('\u{feff}')
        } else {
            text
        };
        if text.trim().is_empty() {
            continue;
        }

        let value: Value = serde_json::from_str(text).map_err(|error| Error::InvalidJson {
            path: path.to_path_buf(),
            location: Location::Line(line),
            message: error.to_string(),
        })?;
        let values = object_values(path, Location::Line(line), &value, columns)?;
        num_records += 1;
        if visit(Location::Line(line), values).is_break() {
            return Ok(());
        }
    }

    if num_records == 0 {
        return Err(Error::Empty {
            path: path.to_path_buf(),
            detail: EMPTY_JSON_FILE,
        });
    }
    Ok(())
}

/// Reports whether the first byte after an optional byte order mark and blank space is `[`.
/// Only the reader's buffer is inspected, so nothing is consumed.
fn starts_with_array(path: &Path, reader: &mut Box<dyn BufRead>) -> Result<bool> {
    let buffer = reader
        .fill_buf()
        .map_err(|source| Error::io(path, source))?;
    let buffer = buffer.strip_prefix("\u{feff}".as_bytes()).unwrap_or(buffer);
    let first = buffer.iter().find(|byte| !byte.is_ascii_whitespace());
    Ok(first == Some(&b'['))
}

fn read_json_array(
    path: &Path,
    mut reader: impl BufRead,
    columns: &[String],
    visit: &mut dyn FnMut(Location, Vec<String>) -> ControlFlow<()>,
) -> Result<()> {
    // serde_json checks UTF-8 itself and reports the line of a bad byte.
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|source| Error::io(path, source))?;
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&bytes);

    let value: Value = serde_json::from_slice(bytes).map_err(|error| Error::InvalidJson {
        path: path.to_path_buf(),
        location: Location::Line(error.line() as u64),
        message: error.to_string(),
    })?;
    let Value::Array(records) = value else {
        unreachable!("the text starts with '[' and parsed, so it is an array");
    };
    if records.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
            detail: EMPTY_JSON_ARRAY,
        });
    }

    for (index, record) in records.iter().enumerate() {
        let location = Location::Record(index as u64 + 1);
        let values = object_values(path, location, record, columns)?;
        if visit(location, values).is_break() {
            break;
        }
    }
    Ok(())
}

/// Extracts `columns` from one JSON record, which must be an object.
fn object_values(
    path: &Path,
    location: Location,
    value: &Value,
    columns: &[String],
) -> Result<Vec<String>> {
    let Value::Object(object) = value else {
        return Err(Error::InvalidJson {
            path: path.to_path_buf(),
            location,
            message: format!("expected a JSON object, found {}", json_type_name(value)),
        });
    };

    let mut values = Vec::with_capacity(columns.len());
    for column in columns {
        let Some(value) = object.get(column) else {
            return Err(missing_column(
                path,
                Some(location),
                column,
                object_keys(object),
            ));
        };
        values.push(json_to_text(value));
    }
    Ok(values)
}

/// Converts one JSON value to the string the table stores for it.
pub(crate) fn json_to_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn object_keys(object: &Map<String, Value>) -> Vec<String> {
    object.keys().cloned().collect()
}

fn missing_column(
    path: &Path,
    location: Option<Location>,
    column: &str,
    found: Vec<String>,
) -> Error {
    Error::MissingColumn {
        path: PathBuf::from(path),
        location,
        column: column.to_owned(),
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn write_gzip(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        let file = File::create(&path).unwrap();
        let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap();
        path
    }

    fn columns(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn csv_quoting_newlines_and_bom() {
        let dir = tempfile::tempdir().unwrap();
        let text = "\u{feff}prompt,chosen,extra\n\
                    \"Hi, there\",\"line one\nline two\",x\n\
                    \"say \"\"no\"\"\",plain,y\n";
        let path = write_file(&dir, "pairs.csv", text.as_bytes());

        let table = read_table(&path, &columns(&["prompt", "chosen"])).unwrap();

        assert_eq!(table.num_rows(), 2);
        assert_eq!(table.column("prompt").unwrap(), ["Hi, there", "say \"no\""]);
        assert_eq!(
            table.column("chosen").unwrap(),
            ["line one\nline two", "plain"]
        );
        assert_eq!(table.column("extra"), None);
    }

    #[test]
    fn csv_missing_column_lists_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "pairs.csv", b"prompt,chosen\na,b\n");

        let error = read_table(&path, &columns(&["rejected"])).unwrap_err();

        assert!(matches!(error, Error::MissingColumn { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("\"rejected\""), "{message}");
        assert!(message.contains("pairs.csv"), "{message}");
        assert!(message.contains("[\"prompt\", \"chosen\"]"), "{message}");
    }

    #[test]
    fn csv_ragged_row_names_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "pairs.csv", b"a,b\n1,2\n3\n");

        let error = read_table(&path, &columns(&["a"])).unwrap_err();

        assert!(
            matches!(error, Error::InvalidCsv { line: 3, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn csv_invalid_utf8_names_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "pairs.csv", b"a,b\n1,2\n3,\xff\xfe\n");

        let error = read_table(&path, &columns(&["a"])).unwrap_err();

        assert!(
            matches!(error, Error::InvalidUtf8 { line: 3, .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("pairs.csv: line 3"), "{error}");
    }

    #[test]
    fn csv_empty_and_header_only() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write_file(&dir, "empty.csv", b"");
        let header_only = write_file(&dir, "header.csv", b"a,b\n");

        let error = read_table(&empty, &columns(&["a"])).unwrap_err();
        assert!(
            error.to_string().contains("empty.csv: the file is empty"),
            "{error}"
        );

        let error = read_table(&header_only, &columns(&["a"])).unwrap_err();
        assert!(
            error.to_string().contains("header row but no records"),
            "{error}"
        );
    }

    #[test]
    fn jsonl_values_become_text() {
        let dir = tempfile::tempdir().unwrap();
        let text = "{\"text\": \"a\", \"label\": true, \"score\": 1, \"note\": null}\n\
                    \n\
                    {\"text\": \"b\\nc\", \"label\": false, \"score\": 2.5, \"note\": [1]}\n";
        let path = write_file(&dir, "rows.jsonl", text.as_bytes());

        let table = read_table(&path, &columns(&["text", "label", "score", "note"])).unwrap();

        assert_eq!(table.column("text").unwrap(), ["a", "b\nc"]);
        assert_eq!(table.column("label").unwrap(), ["true", "false"]);
        assert_eq!(table.column("score").unwrap(), ["1", "2.5"]);
        assert_eq!(table.column("note").unwrap(), ["", "[1]"]);
    }

    #[test]
    fn jsonl_invalid_json_names_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "rows.jsonl", b"{\"a\": \"x\"}\n{\"a\": \n");

        let error = read_table(&path, &columns(&["a"])).unwrap_err();

        assert!(
            matches!(
                error,
                Error::InvalidJson {
                    location: Location::Line(2),
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error
            .to_string()
            .starts_with(&format!("{}: line 2: ", path.display())));
    }

    #[test]
    fn jsonl_line_not_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "rows.jsonl", b"{\"a\": \"x\"}\n[1, 2]\n");

        let error = read_table(&path, &columns(&["a"])).unwrap_err();

        assert!(error
            .to_string()
            .contains("line 2: expected a JSON object, found an array"));
    }

    #[test]
    fn jsonl_missing_key_names_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "rows.jsonl", b"{\"a\": \"x\"}\n{\"b\": \"y\"}\n");

        let error = read_table(&path, &columns(&["a"])).unwrap_err();

        assert!(
            matches!(
                error,
                Error::MissingColumn {
                    location: Some(Location::Line(2)),
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn jsonl_invalid_utf8_names_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(
            &dir,
            "rows.jsonl",
            b"{\"a\": \"x\"}\n{\"a\": \"\xc3\x28\"}\n",
        );

        let error = read_table(&path, &columns(&["a"])).unwrap_err();

        assert!(
            matches!(error, Error::InvalidUtf8 { line: 2, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn jsonl_blank_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "rows.jsonl", b"\n  \n");

        let error = read_table(&path, &columns(&["a"])).unwrap_err();

        assert!(matches!(error, Error::Empty { .. }), "{error:?}");
    }

    #[test]
    fn gzipped_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"{\"a\": \"x\"}\n{\"a\": \"y\"}\n";
        for name in ["rows.jsonl.gz", "rows.json.gz"] {
            let path = write_gzip(&dir, name, text);

            let table = read_table(&path, &columns(&["a"])).unwrap();

            assert_eq!(table.column("a").unwrap(), ["x", "y"], "{name}");
        }
    }

    #[test]
    fn corrupt_gzip_is_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "rows.jsonl.gz", b"\x1f\x8b\x08\x00garbage");

        let error = read_table(&path, &columns(&["a"])).unwrap_err();

        assert!(matches!(error, Error::Io { .. }), "{error:?}");
    }

    #[test]
    fn json_array_of_objects() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "rows.json", b"\n [{\"a\": \"x\"}, {\"a\": 3}]");

        let table = read_table(&path, &columns(&["a"])).unwrap();

        assert_eq!(table.column("a").unwrap(), ["x", "3"]);
    }

    #[test]
    fn json_array_errors() {
        let dir = tempfile::tempdir().unwrap();
        let not_object = write_file(&dir, "a.json", b"[{\"a\": \"x\"}, 5]");
        let empty = write_file(&dir, "b.json", b"[]");
        let broken = write_file(&dir, "c.json", b"[\n{\"a\": \"x\"},\n{\"a\" \"y\"}]");

        let error = read_table(&not_object, &columns(&["a"])).unwrap_err();
        assert!(error
            .to_string()
            .contains("record 2: expected a JSON object, found a number"));

        let error = read_table(&empty, &columns(&["a"])).unwrap_err();
        assert!(matches!(error, Error::Empty { .. }), "{error:?}");

        let error = read_table(&broken, &columns(&["a"])).unwrap_err();
        assert!(
            matches!(
                error,
                Error::InvalidJson {
                    location: Location::Line(3),
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn json_file_with_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "rows.json", b"{\"a\": \"x\"}\n{\"a\": \"y\"}\n");

        let table = read_table(&path, &columns(&["a"])).unwrap();

        assert_eq!(table.column("a").unwrap(), ["x", "y"]);
    }

    #[test]
    fn unknown_extension_lists_supported() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "rows.parquet", b"");

        let error = read_table(&path, &columns(&["a"])).unwrap_err();

        assert!(error.to_string().contains(SUPPORTED_EXTENSIONS), "{error}");
    }

    #[test]
    fn missing_file_is_not_found() {
        let error = read_table(Path::new("/nonexistent/rows.csv"), &columns(&["a"])).unwrap_err();

        let Error::Io { source, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert!(error.to_string().contains("/nonexistent/rows.csv"));
    }

    #[test]
    fn early_break_stops_reading() {
        let dir = tempfile::tempdir().unwrap();
        // The second line is broken, so reading it would fail.
        let path = write_file(&dir, "rows.jsonl", b"{\"a\": \"x\"}\n{oops\n");
        let mut seen = Vec::new();

        for_each_record(&path, &columns(&["a"]), |location, values| {
            seen.push((location, values));
            ControlFlow::Break(())
        })
        .unwrap();

        assert_eq!(seen, [(Location::Line(1), vec!["x".to_string()])]);
    }
}
