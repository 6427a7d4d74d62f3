//! Reads and writes Parquet files through the `parquet` crate's record API, without Arrow.
//!
//! Reading yields the same strings as the text formats. A string column gives its text, a null
//! gives `""`, and every other value gives the JSON text of its JSON form: an int64 column
//! reads as `"3"` and a list of structs as `[{"role":"user","content":"Hi"}]`. A binary column
//! without the string annotation reads as text when its bytes are UTF-8, and as base64
//! otherwise. Top-level fields are the columns, in schema order.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, Type as PhysicalType};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;
use parquet::schema::types::{Type, TypePtr};

use crate::chat::Message;
use crate::error::{Error, Location, Result};
use crate::table::{column_positions, json_to_text, Columns, Visit};

const EMPTY_FILE: &str = "the Parquet file has no rows";

/// Rows per row group when writing. A row group is the unit that readers load at once. On the
/// HH-RLHF test split, 100,000 converted pairs average 45 MB of text (last-turn) and 95 MB
/// (full-context).
const ROWS_PER_GROUP: usize = 100_000;

fn parquet_error(path: &Path, error: parquet::errors::ParquetError) -> Error {
    Error::InvalidParquet {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

fn open(path: &Path) -> Result<SerializedFileReader<File>> {
    let file = File::open(path).map_err(|source| Error::io(path, source))?;
    SerializedFileReader::new(file).map_err(|error| parquet_error(path, error))
}

/// Returns the names of the top-level fields, read from the file's footer.
pub(crate) fn list_columns(path: &Path) -> Result<Vec<String>> {
    let reader = open(path)?;
    let schema = reader.metadata().file_metadata().schema();
    Ok(schema
        .get_fields()
        .iter()
        .map(|field| field.name().to_owned())
        .collect())
}

/// Streams the rows of a Parquet file to `visit` and returns the column names read.
/// Errors concern the whole file, so no row reaches `visit` as a bad record.
pub(crate) fn for_each_record(
    path: &Path,
    columns: Columns<'_>,
    visit: &mut Visit<'_>,
) -> Result<Vec<String>> {
    let reader = open(path)?;
    let schema = reader.metadata().file_metadata().schema();
    let fields = schema.get_fields();
    let found: Vec<String> = fields.iter().map(|field| field.name().to_owned()).collect();
    let names = match columns {
        Columns::Named(columns) => columns.to_vec(),
        Columns::All => found.clone(),
    };

    // The projection lists each needed field once, in schema order, as the row reader expects.
    let mut positions = column_positions(path, &names, &found)?;
    positions.sort_unstable();
    positions.dedup();
    let projected: Vec<TypePtr> = positions.iter().map(|&p| Arc::clone(&fields[p])).collect();
    let projection = Type::group_type_builder(schema.name())
        .with_fields(projected)
        .build()
        .map_err(|error| parquet_error(path, error))?;
    // Where each requested column sits within a projected row.
    let slots: Vec<usize> = names
        .iter()
        .map(|name| {
            positions
                .iter()
                .position(|&p| &found[p] == name)
                .expect("every name was found above")
        })
        .collect();

    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|error| parquet_error(path, error))?;
    let mut num_rows = 0u64;
    for row in rows {
        let row = row.map_err(|error| parquet_error(path, error))?;
        num_rows += 1;
        let fields: Vec<&Field> = row.get_column_iter().map(|(_, field)| field).collect();
        let values = slots.iter().map(|&slot| field_text(fields[slot])).collect();
        if visit(Location::Record(num_rows), Ok(values))?.is_break() {
            return Ok(names);
        }
    }

    if num_rows == 0 {
        return Err(Error::Empty {
            path: path.to_path_buf(),
            detail: EMPTY_FILE,
        });
    }
    Ok(names)
}

fn field_text(field: &Field) -> String {
    match field {
        Field::Str(text) => text.clone(),
        Field::Null => String::new(),
        Field::Bytes(bytes) => match std::str::from_utf8(bytes.data()) {
            Ok(text) => text.to_owned(),
            Err(_) => json_to_text(&field.to_json_value()),
        },
        other => json_to_text(&other.to_json_value()),
    }
}

/// The values of one column to write.
#[derive(Debug, Clone, Copy)]
pub enum ColumnValues<'a> {
    /// A required string column.
    Text(&'a [&'a str]),
    /// A required boolean column.
    Bool(&'a [bool]),
    /// Conversations: a required `list<struct<role: string, content: string>>` column, the
    /// form Hugging Face datasets use for chat messages.
    Messages(&'a [&'a [Message]]),
}

impl ColumnValues<'_> {
    pub fn len(&self) -> usize {
        match self {
            ColumnValues::Text(values) => values.len(),
            ColumnValues::Bool(values) => values.len(),
            ColumnValues::Messages(values) => values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn string_field(name: &str) -> Result<Type, parquet::errors::ParquetError> {
    Type::primitive_type_builder(name, PhysicalType::BYTE_ARRAY)
        .with_repetition(Repetition::REQUIRED)
        .with_logical_type(Some(LogicalType::String))
        .build()
}

fn column_type(name: &str, values: &ColumnValues<'_>) -> parquet::errors::Result<Type> {
    match values {
        ColumnValues::Text(_) => string_field(name),
        ColumnValues::Bool(_) => Type::primitive_type_builder(name, PhysicalType::BOOLEAN)
            .with_repetition(Repetition::REQUIRED)
            .build(),
        ColumnValues::Messages(_) => {
            // The three-level list layout of the Parquet format specification:
            // <name> (LIST) { repeated group list { required group element { ... } } }.
            let element = Type::group_type_builder("element")
                .with_repetition(Repetition::REQUIRED)
                .with_fields(vec![
                    Arc::new(string_field("role")?),
                    Arc::new(string_field("content")?),
                ])
                .build()?;
            let list = Type::group_type_builder("list")
                .with_repetition(Repetition::REPEATED)
                .with_fields(vec![Arc::new(element)])
                .build()?;
            Type::group_type_builder(name)
                .with_repetition(Repetition::REQUIRED)
                .with_logical_type(Some(LogicalType::List))
                .with_fields(vec![Arc::new(list)])
                .build()
        }
    }
}

/// Writes `columns`, all of the same length, to a snappy-compressed Parquet file at `path`.
pub fn write_table(path: &Path, columns: &[(&str, ColumnValues<'_>)]) -> Result<()> {
    let error = |error| parquet_error(path, error);
    let fields = columns
        .iter()
        .map(|(name, values)| column_type(name, values).map(Arc::new))
        .collect::<parquet::errors::Result<Vec<_>>>()
        .map_err(error)?;
    let schema = Type::group_type_builder("pyalign")
        .with_fields(fields)
        .build()
        .map_err(error)?;
    // Snappy is what pyarrow writes by default, so every Parquet reader can decode it.
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();

    let file = File::create(path).map_err(|source| Error::io(path, source))?;
    let mut writer =
        SerializedFileWriter::new(file, Arc::new(schema), Arc::new(properties)).map_err(error)?;
    let num_rows = columns.first().map_or(0, |(_, values)| values.len());
    let mut start = 0;
    while start < num_rows {
        let end = (start + ROWS_PER_GROUP).min(num_rows);
        write_row_group(&mut writer, columns, start..end).map_err(error)?;
        start = end;
    }
    writer.close().map_err(error)?;
    Ok(())
}

fn write_row_group(
    writer: &mut SerializedFileWriter<File>,
    columns: &[(&str, ColumnValues<'_>)],
    rows: std::ops::Range<usize>,
) -> parquet::errors::Result<()> {
    let mut row_group = writer.next_row_group()?;
    for (_, values) in columns {
        match values {
            ColumnValues::Text(values) => {
                let values: Vec<ByteArray> = values[rows.clone()]
                    .iter()
                    .map(|&text| text.into())
                    .collect();
                let mut column = row_group.next_column()?.expect("one leaf per text column");
                column
                    .typed::<ByteArrayType>()
                    .write_batch(&values, None, None)?;
                column.close()?;
            }
            ColumnValues::Bool(values) => {
                let mut column = row_group.next_column()?.expect("one leaf per bool column");
                column
                    .typed::<BoolType>()
                    .write_batch(&values[rows.clone()], None, None)?;
                column.close()?;
            }
            ColumnValues::Messages(conversations) => {
                let conversations = &conversations[rows.clone()];
                for leaf in [message_role, message_content] {
                    let (values, definition, repetition) = message_leaf(conversations, leaf);
                    let mut column = row_group.next_column()?.expect("two leaves per list");
                    column.typed::<ByteArrayType>().write_batch(
                        &values,
                        Some(&definition),
                        Some(&repetition),
                    )?;
                    column.close()?;
                }
            }
        }
    }
    row_group.close()?;
    Ok(())
}

fn message_role(message: &Message) -> &str {
    &message.role
}

fn message_content(message: &Message) -> &str {
    &message.content
}

/// Returns the values and the definition and repetition levels of one leaf of a messages
/// column. The repeated `list` group is the only level that is not required, so a message has
/// definition level 1 and an empty conversation a single level 0. Repetition level 0 starts a
/// row and 1 continues its list.
fn message_leaf(
    conversations: &[&[Message]],
    leaf: fn(&Message) -> &str,
) -> (Vec<ByteArray>, Vec<i16>, Vec<i16>) {
    let mut values = Vec::new();
    let mut definition = Vec::new();
    let mut repetition = Vec::new();
    for conversation in conversations {
        if conversation.is_empty() {
            definition.push(0);
            repetition.push(0);
            continue;
        }
        for (position, message) in conversation.iter().enumerate() {
            values.push(leaf(message).into());
            definition.push(1);
            repetition.push(i16::from(position > 0));
        }
    }
    (values, definition, repetition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{list_columns, read_all_columns, read_table};

    fn message(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn round_trip_text_bool_and_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet");
        let first = [message("user", "Hi"), message("assistant", "Hello")];
        let second = [message("user", "Bye \"now\"")];
        let conversations: [&[Message]; 3] = [&first, &second, &[]];

        write_table(
            &path,
            &[
                ("prompt", ColumnValues::Messages(&conversations)),
                ("response", ColumnValues::Text(&["a", "b\nc", ""])),
                ("label", ColumnValues::Bool(&[true, false, true])),
            ],
        )
        .unwrap();

        assert_eq!(
            list_columns(&path).unwrap(),
            ["prompt", "response", "label"]
        );
        let table = read_all_columns(&path).unwrap();
        assert_eq!(table.columns, ["prompt", "response", "label"]);
        assert_eq!(
            table.column("prompt").unwrap(),
            [
                r#"[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"}]"#,
                r#"[{"role":"user","content":"Bye \"now\""}]"#,
                "[]",
            ]
        );
        assert_eq!(table.column("response").unwrap(), ["a", "b\nc", ""]);
        assert_eq!(table.column("label").unwrap(), ["true", "false", "true"]);
    }

    #[test]
    fn requested_columns_in_requested_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet");
        write_table(
            &path,
            &[
                ("a", ColumnValues::Text(&["1", "2"])),
                ("b", ColumnValues::Text(&["x", "y"])),
            ],
        )
        .unwrap();
        let names = |names: &[&str]| {
            names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>()
        };

        let table = read_table(&path, &names(&["b", "a", "b"])).unwrap();

        assert_eq!(table.columns, ["b", "a", "b"]);
        assert_eq!(table.values, [["x", "y"], ["1", "2"], ["x", "y"]]);
        let error = read_table(&path, &names(&["c"])).unwrap_err();
        assert!(matches!(error, Error::MissingColumn { .. }), "{error:?}");
        assert!(error.to_string().contains(r#"["a", "b"]"#), "{error}");
    }

    #[test]
    fn empty_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.parquet");
        write_table(&empty, &[("a", ColumnValues::Text(&[]))]).unwrap();
        let corrupt = dir.path().join("corrupt.parquet");
        std::fs::write(&corrupt, b"PAR1 not really").unwrap();

        let error = read_all_columns(&empty).unwrap_err();
        assert!(error.to_string().contains("has no rows"), "{error}");
        let error = read_all_columns(&corrupt).unwrap_err();
        assert!(matches!(error, Error::InvalidParquet { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}: invalid Parquet", corrupt.display())),
            "{error}"
        );
    }
}
