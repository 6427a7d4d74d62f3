//! Reads tables of text columns from CSV, JSON Lines, JSON and Parquet files; the text formats
//! may be gzipped.
//!
//! Every value comes back as a string, because the consumers tokenize text. JSON strings are
//! taken as they are, `null` becomes the empty string and any other JSON value (a boolean, a
//! number, an array, an object) becomes its JSON text, so `true` reads as `"true"`. Parquet
//! values follow the same rule through their JSON form (see [`crate::parquet_table`]).
//!
//! A reader either stops at the first bad record ([`for_each_record`]) or hands each bad
//! record to the caller as an error and goes on ([`for_each_record_lenient`]). Errors that
//! concern the whole file, such as a missing header column or a JSON array that does not
//! parse, end the read in both cases.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde_json::{Map, Value};

use crate::error::{Error, Location, Result};
use crate::parquet_table;

/// The extensions that [`read_table`] accepts, as error messages list them.
pub const SUPPORTED_EXTENSIONS: &str =
    ".csv, .csv.gz, .jsonl, .jsonl.gz, .json, .json.gz, .parquet";

const EMPTY_FILE: &str = "the file is empty, expected a header row and at least one record";
const EMPTY_JSON_FILE: &str = "the file is empty, expected at least one JSON object";
const HEADER_ONLY: &str = "the file has a header row but no records";
const EMPTY_JSON_ARRAY: &str = "the JSON array is empty, expected at least one object";

/// The columns of a file, each as one string per record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Column names, in the order they were requested, or in file order when all were read.
    pub columns: Vec<String>,
    /// `values[c][r]` is the value of column `columns[c]` in record `r`.
    pub values: Vec<Vec<String>>,
}

impl Table {
    /// Returns the values of the column `name`, if it was read.
    pub fn column(&self, name: &str) -> Option<&[String]> {
        let position = self.columns.iter().position(|column| column == name)?;
        Some(&self.values[position])
    }

    /// Returns the number of records.
    pub fn num_rows(&self) -> usize {
        self.values.first().map_or(0, Vec::len)
    }
}

/// The columns that a reader extracts from each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns<'a> {
    /// Every column, in file order: the CSV header, the Parquet schema, or the keys of the
    /// first JSON record.
    All,
    /// These columns, in this order.
    Named(&'a [String]),
}

/// A record's values in column order, or the reason the record cannot be used.
pub type RecordResult = Result<Vec<String>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    JsonLines,
    /// `.json` contains either one array of objects or JSON Lines. The first non-blank byte
    /// decides.
    Json,
    Parquet,
}

/// Reads the `columns` of every record in the file at `path`.
///
/// The format follows the extension (see [`SUPPORTED_EXTENSIONS`]). A file without records is
/// an error, and so is a record that lacks one of the columns.
pub fn read_table(path: &Path, columns: &[String]) -> Result<Table> {
    read_columns(path, Columns::Named(columns))
}

/// Reads every column of every record, in file order. A JSON file's columns are the keys of
/// its first record, and every later record must contain them.
pub fn read_all_columns(path: &Path) -> Result<Table> {
    read_columns(path, Columns::All)
}

fn read_columns(path: &Path, columns: Columns<'_>) -> Result<Table> {
    let mut values: Vec<Vec<String>> = Vec::new();
    let names = for_each_record_in(path, columns, &mut |_, record| {
        push_record(&mut values, record?);
        Ok(ControlFlow::Continue(()))
    })?;
    values.resize(names.len(), Vec::new());
    log::debug!(
        "read {} records of {} columns from {}",
        values.first().map_or(0, Vec::len),
        names.len(),
        path.display()
    );
    Ok(Table {
        columns: names,
        values,
    })
}

/// Returns the column names of the file at `path` in file order, reading as little as the
/// format allows: the CSV header, the Parquet footer, or the first JSON record.
pub fn list_columns(path: &Path) -> Result<Vec<String>> {
    if detect_format(path)?.0 == Format::Parquet {
        return parquet_table::list_columns(path);
    }
    for_each_record_in(path, Columns::All, &mut |_, record| {
        record?;
        Ok(ControlFlow::Break(()))
    })
}

/// Streams the `columns` of each record in the file at `path` to `visit`, in file order.
///
/// `visit` receives the record's location and its values in the order of `columns`. It returns
/// `ControlFlow::Break` to stop reading early. The first bad record ends the read with its
/// error.
pub fn for_each_record<F>(path: &Path, columns: &[String], mut visit: F) -> Result<()>
where
    F: FnMut(Location, Vec<String>) -> ControlFlow<()>,
{
    for_each_record_in(path, Columns::Named(columns), &mut |location, record| {
        Ok(visit(location, record?))
    })?;
    Ok(())
}

/// Streams each record of the file at `path` to `visit` like [`for_each_record`], but hands a
/// bad record to `visit` as an error and goes on with the next one.
///
/// A bad record is a JSON line that does not parse or is not an object, a line that is not
/// valid UTF-8, a CSV row with the wrong number of fields, or a record that lacks a column.
pub fn for_each_record_lenient<F>(path: &Path, columns: Columns<'_>, mut visit: F) -> Result<()>
where
    F: FnMut(Location, RecordResult) -> ControlFlow<()>,
{
    for_each_record_in(path, columns, &mut |location, record| {
        Ok(visit(location, record))
    })?;
    Ok(())
}

/// The callback of the format readers. It receives each record, good or bad, and returns an
/// error to stop the read with it.
pub(crate) type Visit<'v> = dyn FnMut(Location, RecordResult) -> Result<ControlFlow<()>> + 'v;

/// Runs the reader for the format of `path` and returns the column names it resolved.
fn for_each_record_in(
    path: &Path,
    columns: Columns<'_>,
    visit: &mut Visit<'_>,
) -> Result<Vec<String>> {
    let (format, gzipped) = detect_format(path)?;
    if format == Format::Parquet {
        return parquet_table::for_each_record(path, columns, visit);
    }
    let reader = open_reader(path, gzipped)?;
    read_text_format(path, format, reader, columns, visit)
}

/// Reads the records of a CSV or JSON stream. `path` names the stream in messages.
fn read_text_format(
    path: &Path,
    format: Format,
    mut reader: Box<dyn BufRead + '_>,
    columns: Columns<'_>,
    visit: &mut Visit<'_>,
) -> Result<Vec<String>> {
    match format {
        Format::Csv => read_csv(path, reader, columns, visit),
        Format::JsonLines => read_json_lines(path, reader, columns, visit),
        Format::Json => {
            if starts_with_array(path, &mut reader)? {
                read_json_array(path, reader, columns, visit)
            } else {
                read_json_lines(path, reader, columns, visit)
            }
        }
        Format::Parquet => unreachable!("Parquet is not a text format"),
    }
}

/// Reads a table from the bytes of a file named `name`, whose extension selects the format as
/// for [`read_table`]. Parquet is not supported here. Reading from memory lets the fuzz
/// targets exercise the readers without files.
pub fn read_table_from_bytes(name: &str, bytes: &[u8], columns: Columns<'_>) -> Result<Table> {
    let path = Path::new(name);
    let (format, gzipped) = detect_format(path)?;
    if format == Format::Parquet {
        return Err(Error::UnsupportedExtension {
            path: path.to_path_buf(),
            supported: ".csv, .jsonl, .json and their .gz forms, for reading from memory",
        });
    }
    let reader: Box<dyn BufRead + '_> = if gzipped {
        Box::new(BufReader::new(MultiGzDecoder::new(bytes)))
    } else {
        Box::new(bytes)
    };
    let mut values: Vec<Vec<String>> = Vec::new();
    let names = read_text_format(path, format, reader, columns, &mut |_, record| {
        push_record(&mut values, record?);
        Ok(ControlFlow::Continue(()))
    })?;
    values.resize(names.len(), Vec::new());
    Ok(Table {
        columns: names,
        values,
    })
}

fn push_record(values: &mut Vec<Vec<String>>, record: Vec<String>) {
    if values.is_empty() {
        values.resize(record.len(), Vec::new());
    }
    for (column_values, value) in values.iter_mut().zip(record) {
        column_values.push(value);
    }
}

pub(crate) fn detect_format(path: &Path) -> Result<(Format, bool)> {
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
    } else if stem.ends_with(".parquet") && !gzipped {
        // Parquet compresses its pages itself, so a gzipped Parquet file is not supported.
        Format::Parquet
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

/// Returns the position of each of `columns` in `found`, or the error for the first missing one.
pub(crate) fn column_positions(
    path: &Path,
    columns: &[String],
    found: &[String],
) -> Result<Vec<usize>> {
    columns
        .iter()
        .map(|column| {
            found
                .iter()
                .position(|name| name == column)
                .ok_or_else(|| missing_column(path, None, column, found.to_vec()))
        })
        .collect()
}

fn read_csv(
    path: &Path,
    reader: impl Read,
    columns: Columns<'_>,
    visit: &mut Visit<'_>,
) -> Result<Vec<String>> {
    // The csv crate strips a leading UTF-8 byte order mark and handles quoted fields that
    // contain delimiters, doubled quotes and newlines. Records are read as bytes so that a
    // row that is not UTF-8 is one bad record rather than the end of the file.
    let mut csv_reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(reader);
    let headers = csv_reader
        .byte_headers()
        .map_err(|error| csv_error(path, error))?
        .clone();
    if headers.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
            detail: EMPTY_FILE,
        });
    }
    let found = headers
        .iter()
        .map(|header| {
            std::str::from_utf8(header)
                .map(str::to_owned)
                .map_err(|_| Error::InvalidUtf8 {
                    path: path.to_path_buf(),
                    line: 1,
                })
        })
        .collect::<Result<Vec<String>>>()?;

    let (names, positions) = match columns {
        Columns::Named(columns) => (columns.to_vec(), column_positions(path, columns, &found)?),
        Columns::All => {
            check_unique(path, &found)?;
            (found.clone(), (0..found.len()).collect())
        }
    };

    let mut num_records = 0usize;
    let mut record = csv::ByteRecord::new();
    loop {
        let (line, values) = match csv_reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(0, csv::Position::line);
                (line, csv_values(path, line, &record, &positions))
            }
            Err(error) => {
                let line = error.position().map_or(0, csv::Position::line);
                match csv_record_error(path, error) {
                    Ok(error) => (line, Err(error)),
                    Err(fatal) => return Err(fatal),
                }
            }
        };
        num_records += 1;
        if visit(Location::Line(line), values)?.is_break() {
            return Ok(names);
        }
    }

    if num_records == 0 {
        return Err(Error::Empty {
            path: path.to_path_buf(),
            detail: HEADER_ONLY,
        });
    }
    Ok(names)
}

fn csv_values(
    path: &Path,
    line: u64,
    record: &csv::ByteRecord,
    positions: &[usize],
) -> RecordResult {
    // The whole record is checked, as a JSON line is, so that a corrupt row is reported even
    // when the bad bytes sit in a column that is not read.
    if std::str::from_utf8(record.as_slice()).is_err() {
        return Err(Error::InvalidUtf8 {
            path: path.to_path_buf(),
            line,
        });
    }
    let text = |position: usize| String::from_utf8_lossy(&record[position]).into_owned();
    Ok(positions.iter().map(|&position| text(position)).collect())
}

fn check_unique(path: &Path, names: &[String]) -> Result<()> {
    for (position, name) in names.iter().enumerate() {
        if names[..position].contains(name) {
            return Err(Error::InvalidCsv {
                path: path.to_path_buf(),
                line: 1,
                message: format!("the header names column {name:?} twice"),
            });
        }
    }
    Ok(())
}

/// Sorts a CSV error into a bad record (`Ok`), after which reading can go on, or a fatal
/// error (`Err`).
fn csv_record_error(path: &Path, error: csv::Error) -> Result<Error> {
    match error.kind() {
        csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. } => {
            Ok(csv_error(path, error))
        }
        _ => Err(csv_error(path, error)),
    }
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

/// The column names of a JSON file, fixed by the caller or by the first good record.
struct JsonColumns<'a> {
    columns: Columns<'a>,
    first_keys: Option<Vec<String>>,
    warned_extra_keys: bool,
}

impl<'a> JsonColumns<'a> {
    fn new(columns: Columns<'a>) -> Self {
        JsonColumns {
            columns,
            first_keys: None,
            warned_extra_keys: false,
        }
    }

    /// Extracts the columns from one record, which must be an object.
    fn values(&mut self, path: &Path, location: Location, value: &Value) -> RecordResult {
        let Value::Object(object) = value else {
            return Err(Error::InvalidJson {
                path: path.to_path_buf(),
                location,
                message: format!("expected a JSON object, found {}", json_type_name(value)),
            });
        };
        let names = match self.columns {
            Columns::Named(columns) => columns,
            Columns::All => {
                let first_keys = self.first_keys.get_or_insert_with(|| object_keys(object));
                if !self.warned_extra_keys && object.len() > first_keys.len() {
                    let extra: Vec<&String> = object
                        .keys()
                        .filter(|key| !first_keys.contains(key))
                        .collect();
                    if !extra.is_empty() {
                        self.warned_extra_keys = true;
                        log::warn!(
                            "{}: {location}: keys {extra:?} are not in the first record, so \
                             they are not read",
                            path.display()
                        );
                    }
                }
                first_keys.as_slice()
            }
        };

        let mut values = Vec::with_capacity(names.len());
        for column in names {
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

    fn into_names(self) -> Vec<String> {
        match self.columns {
            Columns::Named(columns) => columns.to_vec(),
            Columns::All => self.first_keys.unwrap_or_default(),
        }
    }
}

fn read_json_lines(
    path: &Path,
    mut reader: impl BufRead,
    columns: Columns<'_>,
    visit: &mut Visit<'_>,
) -> Result<Vec<String>> {
    let mut columns = JsonColumns::new(columns);
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
        let location = Location::Line(line);

        let record = match std::str::from_utf8(&bytes) {
            Ok(text) => {
                let text = if line == 1 {
                    text.trim_start_matches('\u{feff}')
                } else {
                    text
                };
                if text.trim().is_empty() {
                    continue;
                }
                parse_json_line(path, location, text)
                    .and_then(|value| columns.values(path, location, &value))
            }
            Err(_) => Err(Error::InvalidUtf8 {
                path: path.to_path_buf(),
                line,
            }),
        };
        num_records += 1;
        if visit(location, record)?.is_break() {
            return Ok(columns.into_names());
        }
    }

    if num_records == 0 {
        return Err(Error::Empty {
            path: path.to_path_buf(),
            detail: EMPTY_JSON_FILE,
        });
    }
    Ok(columns.into_names())
}

fn parse_json_line(path: &Path, location: Location, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|error| Error::InvalidJson {
        path: path.to_path_buf(),
        location,
        message: json_line_message(&error),
    })
}

/// Describes a parse error within one line: serde_json counts lines from the start of the
/// text it was given, so its "at line 1 column C" would contradict the file line already
/// named. Only the column is kept.
fn json_line_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let reason = match text.rsplit_once(" at line ") {
        Some((reason, _)) => reason,
        None => text.as_str(),
    };
    if error.column() == 0 {
        format!("invalid JSON: {reason}")
    } else {
        format!("invalid JSON at column {}: {reason}", error.column())
    }
}

/// Reports whether the first byte after an optional byte order mark and blank space is `[`.
/// Only the reader's buffer is inspected, so nothing is consumed.
fn starts_with_array(path: &Path, reader: &mut Box<dyn BufRead + '_>) -> Result<bool> {
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
    columns: Columns<'_>,
    visit: &mut Visit<'_>,
) -> Result<Vec<String>> {
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

    let mut columns = JsonColumns::new(columns);
    for (index, record) in records.iter().enumerate() {
        let location = Location::Record(index as u64 + 1);
        let values = columns.values(path, location, record);
        if visit(location, values)?.is_break() {
            break;
        }
    }
    Ok(columns.into_names())
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

pub(crate) fn missing_column(
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
        let path = write_file(&dir, "rows.txt", b"");

        let error = read_table(&path, &columns(&["a"])).unwrap_err();

        assert!(error.to_string().contains(SUPPORTED_EXTENSIONS), "{error}");
        let error = read_table(&dir.path().join("rows.parquet.gz"), &columns(&["a"]));
        assert!(matches!(error, Err(Error::UnsupportedExtension { .. })));
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
