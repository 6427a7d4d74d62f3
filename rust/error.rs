//! The crate's error type. Each variant is one kind of failure, and `py.rs` maps each kind to
//! one Python exception type.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// The position of a record in its file: a line for CSV and JSON Lines, a position in the array
/// (1-based) for a JSON array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Line(u64),
    Record(u64),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(line) => write!(f, "line {line}"),
            Location::Record(record) => write!(f, "record {record}"),
        }
    }
}

/// Every failure the crate reports. Messages start with what failed and name the file, line,
/// column or value involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening, reading or writing a file failed. A corrupt gzip stream also arrives here,
    /// because flate2 reports it as an I/O error.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The file contains no records.
    #[error("{}: {detail}", path.display())]
    Empty { path: PathBuf, detail: &'static str },

    /// The file extension names no format that the reader or writer supports.
    #[error("{}: unsupported file extension, expected one of {supported}", path.display())]
    UnsupportedExtension {
        path: PathBuf,
        supported: &'static str,
    },

    /// The bytes of a line are not valid UTF-8.
    #[error("{}: line {line} is not valid UTF-8", path.display())]
    InvalidUtf8 { path: PathBuf, line: u64 },

    /// A line or a whole file is not valid JSON, or is JSON of the wrong shape.
    #[error("{}: {location}: {message}", path.display())]
    InvalidJson {
        path: PathBuf,
        location: Location,
        message: String,
    },

    /// The CSV reader rejected the file: a ragged row or an unterminated quote.
    #[error("{}: line {line}: invalid CSV: {message}", path.display())]
    InvalidCsv {
        path: PathBuf,
        line: u64,
        message: String,
    },

    /// A Parquet file could not be read or written: a bad footer, an unsupported codec or a
    /// column type that has no text form.
    #[error("{}: invalid Parquet: {message}", path.display())]
    InvalidParquet { path: PathBuf, message: String },

    /// A record was read but its content is unusable, for example an HH-RLHF conversation
    /// without a final assistant turn.
    #[error("{}: {location}: {message}", path.display())]
    InvalidRecord {
        path: PathBuf,
        location: Location,
        message: String,
    },

    /// A requested column is absent from the header or from one record.
    #[error(
        "{}{}: no column {column:?}, the columns found are {found:?}",
        path.display(),
        location.map(|location| format!(": {location}")).unwrap_or_default()
    )]
    MissingColumn {
        path: PathBuf,
        location: Option<Location>,
        column: String,
        found: Vec<String>,
    },

    /// A special token named by the caller or by tokenizer_config.json is not in the vocabulary.
    #[error("{role} token {token:?} is not in the vocabulary of {}", path.display())]
    MissingToken {
        path: PathBuf,
        role: &'static str,
        token: String,
    },

    /// A value has the wrong type, for example a special token that is a number.
    #[error("{what} must be {expected}, found {found}")]
    WrongType {
        what: String,
        expected: &'static str,
        found: String,
    },

    /// A chat template is missing, does not compile, or failed to render a conversation.
    #[error("{context}: {message}")]
    ChatTemplate { context: String, message: String },

    /// tokenizer.json could not be loaded, or encoding or decoding failed.
    #[error("{context}: {message}")]
    Tokenizer { context: String, message: String },

    /// An argument is out of its allowed range or set: a length, a mode, an index.
    #[error("invalid {name} {value}: expected {expected}")]
    InvalidValue {
        name: &'static str,
        value: String,
        expected: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::InvalidValue`].
    pub fn invalid_value(
        name: &'static str,
        value: impl ToString,
        expected: impl Into<String>,
    ) -> Self {
        Error::InvalidValue {
            name,
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}
