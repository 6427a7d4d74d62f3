//! Converts Anthropic HH-RLHF preference data to (prompt, chosen, rejected) records.
//!
//! Each HH-RLHF record contains two whole conversations, `chosen` and `rejected`, written as
//! `\n\nHuman: ...\n\nAssistant: ...` turns. They share every turn but the last assistant turn.
//! The last-turn rule keeps only the final exchange:
//!
//! - prompt: the last human turn of `chosen`, up to the next `\n\nAssistant:`, stripped. A
//!   conversation without a human turn uses all the text before its last assistant turn.
//! - chosen and rejected: the last assistant turn of each conversation, to its end, stripped.
//!
//! A turn starts only at a marker that follows a blank line, so `Human:` inside the text of a
//! turn is ordinary text. A record is kept only when prompt, chosen and rejected are all
//! non-empty; every other record is counted under its [`SkipReason`].

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::str::FromStr;

use crate::error::{Error, Location, Result};
use crate::table::for_each_record;

const HUMAN_MARKER: &str = "\n\nHuman:";
const ASSISTANT_MARKER: &str = "\n\nAssistant:";

/// The extensions that [`write_rows`] accepts.
pub const SUPPORTED_OUTPUT_EXTENSIONS: &str = ".csv, .jsonl";

/// The layout of converted rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// One row per pair: `prompt`, `chosen`, `rejected`.
    Dpo,
    /// Two rows per pair: `(prompt, chosen, true)` and `(prompt, rejected, false)`, in the
    /// columns `prompt`, `response`, `label`.
    Kto,
}

impl OutputFormat {
    pub fn columns(&self) -> &'static [&'static str] {
        match self {
            OutputFormat::Dpo => &["prompt", "chosen", "rejected"],
            OutputFormat::Kto => &["prompt", "response", "label"],
        }
    }
}

impl FromStr for OutputFormat {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "dpo" => Ok(OutputFormat::Dpo),
            "kto" => Ok(OutputFormat::Kto),
            other => Err(Error::invalid_value(
                "format",
                format!("{other:?}"),
                "\"dpo\" or \"kto\"",
            )),
        }
    }
}

/// One record split by the last-turn rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferencePair {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
}

/// The reason a record was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// `chosen` has no assistant turn after its last human turn.
    NoChosenAssistantTurn,
    /// `rejected` has no assistant turn after its last human turn.
    NoRejectedAssistantTurn,
    EmptyPrompt,
    EmptyChosenResponse,
    EmptyRejectedResponse,
}

impl SkipReason {
    /// Returns the key under which the reason is counted.
    pub fn as_str(&self) -> &'static str {
        match self {
            SkipReason::NoChosenAssistantTurn => "no_chosen_assistant_turn",
            SkipReason::NoRejectedAssistantTurn => "no_rejected_assistant_turn",
            SkipReason::EmptyPrompt => "empty_prompt",
            SkipReason::EmptyChosenResponse => "empty_chosen_response",
            SkipReason::EmptyRejectedResponse => "empty_rejected_response",
        }
    }

    /// Returns a sentence for logs.
    pub fn describe(&self) -> &'static str {
        match self {
            SkipReason::NoChosenAssistantTurn => {
                "no \"\\n\\nAssistant:\" turn after the last human turn of chosen"
            }
            SkipReason::NoRejectedAssistantTurn => {
                "no \"\\n\\nAssistant:\" turn after the last human turn of rejected"
            }
            SkipReason::EmptyPrompt => "the last human turn is empty",
            SkipReason::EmptyChosenResponse => "the last assistant turn of chosen is empty",
            SkipReason::EmptyRejectedResponse => "the last assistant turn of rejected is empty",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Splits one record by the last-turn rule.
pub fn split_last_turn(chosen: &str, rejected: &str) -> Result<PreferencePair, SkipReason> {
    let (prompt, chosen_response) =
        split_conversation(chosen).ok_or(SkipReason::NoChosenAssistantTurn)?;
    let (_, rejected_response) =
        split_conversation(rejected).ok_or(SkipReason::NoRejectedAssistantTurn)?;

    if prompt.is_empty() {
        return Err(SkipReason::EmptyPrompt);
    }
    if chosen_response.is_empty() {
        return Err(SkipReason::EmptyChosenResponse);
    }
    if rejected_response.is_empty() {
        return Err(SkipReason::EmptyRejectedResponse);
    }
    Ok(PreferencePair {
        prompt: prompt.to_owned(),
        chosen: chosen_response.to_owned(),
        rejected: rejected_response.to_owned(),
    })
}

/// Returns the stripped (last human turn, last assistant turn) of a conversation, or `None`
/// when no assistant turn follows the last human turn.
fn split_conversation(conversation: &str) -> Option<(&str, &str)> {
    let assistant_start = conversation.rfind(ASSISTANT_MARKER)?;
    let human_start = conversation.rfind(HUMAN_MARKER);

    let prompt = match human_start {
        Some(human_start) if human_start > assistant_start => return None,
        Some(human_start) => {
            let turn = &conversation[human_start + HUMAN_MARKER.len()..];
            // The last assistant marker follows, so the search always succeeds.
            let end = turn.find(ASSISTANT_MARKER).unwrap_or(turn.len());
            &turn[..end]
        }
        None => &conversation[..assistant_start],
    };
    // No human marker follows the last assistant marker, so the turn runs to the end.
    let response = &conversation[assistant_start + ASSISTANT_MARKER.len()..];
    Some((prompt.trim(), response.trim()))
}

/// Settings of one conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvertOptions {
    pub format: OutputFormat,
    /// Stop after this many kept pairs. Under [`OutputFormat::Kto`] each pair gives two rows.
    pub max_samples: Option<usize>,
}

/// The result of a conversion: the rows and the counts for its summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    /// Column names, as [`OutputFormat::columns`] gives them.
    pub columns: Vec<String>,
    /// One entry per output row, in the order of `columns`. KTO labels are "true" or "false".
    pub rows: Vec<Vec<String>>,
    /// Input records read.
    pub num_read: usize,
    /// Input records kept.
    pub num_kept: usize,
    /// Skipped input records per [`SkipReason::as_str`].
    pub skip_reasons: BTreeMap<String, usize>,
}

impl Conversion {
    pub fn num_skipped(&self) -> usize {
        self.skip_reasons.values().sum()
    }

    /// Returns a one-line summary: counts, then each skip reason with its count.
    pub fn summary(&self) -> String {
        let mut summary = format!(
            "read {} records, kept {}, wrote {} rows, skipped {}",
            self.num_read,
            self.num_kept,
            self.rows.len(),
            self.num_skipped()
        );
        if !self.skip_reasons.is_empty() {
            let reasons: Vec<String> = self
                .skip_reasons
                .iter()
                .map(|(reason, count)| format!("{reason}: {count}"))
                .collect();
            summary.push_str(&format!(" ({})", reasons.join(", ")));
        }
        summary
    }
}

/// Reads HH-RLHF records from `input` (any format that `read_table` reads, usually
/// `.jsonl.gz`) and converts them by the last-turn rule.
pub fn convert(input: &Path, options: ConvertOptions) -> Result<Conversion> {
    let columns = ["chosen".to_owned(), "rejected".to_owned()];
    let mut conversion = Conversion {
        columns: options
            .format
            .columns()
            .iter()
            .map(|column| column.to_string())
            .collect(),
        rows: Vec::new(),
        num_read: 0,
        num_kept: 0,
        skip_reasons: BTreeMap::new(),
    };
    if options.max_samples == Some(0) {
        return Ok(conversion);
    }

    for_each_record(input, &columns, |location, record| {
        conversion.num_read += 1;
        match split_last_turn(&record[0], &record[1]) {
            Ok(pair) => {
                conversion.num_kept += 1;
                push_rows(&mut conversion.rows, pair, options.format);
            }
            Err(reason) => record_skip(&mut conversion, input, location, reason),
        }

        match options.max_samples {
            Some(max_samples) if conversion.num_kept >= max_samples => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    })?;

    log::info!("converted {}: {}", input.display(), conversion.summary());
    Ok(conversion)
}

fn push_rows(rows: &mut Vec<Vec<String>>, pair: PreferencePair, format: OutputFormat) {
    match format {
        OutputFormat::Dpo => rows.push(vec![pair.prompt, pair.chosen, pair.rejected]),
        OutputFormat::Kto => {
            rows.push(vec![pair.prompt.clone(), pair.chosen, "true".to_owned()]);
            rows.push(vec![pair.prompt, pair.rejected, "false".to_owned()]);
        }
    }
}

fn record_skip(conversion: &mut Conversion, input: &Path, location: Location, reason: SkipReason) {
    let count = conversion
        .skip_reasons
        .entry(reason.as_str().to_owned())
        .or_insert(0);
    *count += 1;
    // The first three skips of each reason are logged with their location, the rest only counted.
    if *count <= 3 {
        log::debug!(
            "HH-RLHF {} {location}: skipped, {}",
            input.display(),
            reason.describe()
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputFile {
    Csv,
    JsonLines,
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
    } else {
        Err(Error::UnsupportedExtension {
            path: output.to_path_buf(),
            supported: SUPPORTED_OUTPUT_EXTENSIONS,
        })
    }
}

/// Checks that [`write_rows`] supports the extension of `output`, so that a caller can fail
/// before reading the input.
pub fn check_output_path(output: &Path) -> Result<()> {
    output_file(output).map(|_| ())
}

/// Writes the rows of `conversion` to `output` as CSV or JSON Lines, by its extension.
/// In JSON Lines the KTO label is a JSON boolean.
pub fn write_rows(conversion: &Conversion, output: &Path, format: OutputFormat) -> Result<()> {
    let io_error = |source| Error::io(output, source);

    match output_file(output)? {
        OutputFile::Csv => {
            let mut writer =
                csv::Writer::from_path(output).map_err(|error| csv_write_error(output, error))?;
            writer
                .write_record(&conversion.columns)
                .map_err(|error| csv_write_error(output, error))?;
            for row in &conversion.rows {
                writer
                    .write_record(row)
                    .map_err(|error| csv_write_error(output, error))?;
            }
            writer.flush().map_err(io_error)?;
        }
        OutputFile::JsonLines => {
            let file = File::create(output).map_err(io_error)?;
            let mut writer = BufWriter::new(file);
            for row in &conversion.rows {
                let line = json_line(&conversion.columns, row, format);
                writeln!(writer, "{line}").map_err(io_error)?;
            }
            writer.flush().map_err(io_error)?;
        }
    }
    Ok(())
}

fn json_line(columns: &[String], row: &[String], format: OutputFormat) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for (column, value) in columns.iter().zip(row) {
        let value = if format == OutputFormat::Kto && column == "label" {
            serde_json::Value::Bool(value == "true")
        } else {
            serde_json::Value::String(value.clone())
        };
        object.insert(column.clone(), value);
    }
    serde_json::Value::Object(object)
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

    fn pair(prompt: &str, chosen: &str, rejected: &str) -> PreferencePair {
        PreferencePair {
            prompt: prompt.into(),
            chosen: chosen.into(),
            rejected: rejected.into(),
        }
    }

    #[test]
    fn last_turn_of_multi_turn_record() {
        let chosen = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: What is 2+2? \n\nAssistant: 4.";
        let rejected = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: What is 2+2? \n\nAssistant: 5";

        assert_eq!(
            split_last_turn(chosen, rejected),
            Ok(pair("What is 2+2?", "4.", "5"))
        );
    }

    #[test]
    fn human_inside_turn_is_text() {
        let chosen =
            "\n\nHuman: Quote \"Human: be kind\" please\n\nAssistant: Sure. Human: be kind";
        let rejected = "\n\nHuman: Quote \"Human: be kind\" please\n\nAssistant: No.\nHuman: no";

        let split = split_last_turn(chosen, rejected).unwrap();

        assert_eq!(split.prompt, "Quote \"Human: be kind\" please");
        assert_eq!(split.chosen, "Sure. Human: be kind");
        assert_eq!(split.rejected, "No.\nHuman: no");
    }

    #[test]
    fn response_keeps_inner_blank_lines() {
        let chosen = "\n\nHuman: List two\n\nAssistant: 1. a\n\n2. b\n";
        let rejected = "\n\nHuman: List two\n\nAssistant: no";

        assert_eq!(
            split_last_turn(chosen, rejected),
            Ok(pair("List two", "1. a\n\n2. b", "no"))
        );
    }

    #[test]
    fn no_assistant_turn_is_skipped() {
        let with_reply = "\n\nHuman: Hi\n\nAssistant: Hello";
        let ends_with_human = "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bye";

        assert_eq!(
            split_last_turn("\n\nHuman: Hi", with_reply),
            Err(SkipReason::NoChosenAssistantTurn)
        );
        assert_eq!(
            split_last_turn(ends_with_human, with_reply),
            Err(SkipReason::NoChosenAssistantTurn)
        );
        assert_eq!(
            split_last_turn(with_reply, "plain text"),
            Err(SkipReason::NoRejectedAssistantTurn)
        );
    }

    #[test]
    fn empty_parts_are_skipped() {
        let good = "\n\nHuman: Hi\n\nAssistant: Hello";

        assert_eq!(
            split_last_turn("\n\nHuman:  \n\nAssistant: x", good),
            Err(SkipReason::EmptyPrompt)
        );
        assert_eq!(
            split_last_turn("\n\nHuman: Hi\n\nAssistant:", good),
            Err(SkipReason::EmptyChosenResponse)
        );
        assert_eq!(
            split_last_turn(good, "\n\nHuman: Hi\n\nAssistant:  \n"),
            Err(SkipReason::EmptyRejectedResponse)
        );
    }

    #[test]
    fn no_human_turn_uses_text_before_reply() {
        let chosen = "Summarize this.\n\nAssistant: Short.";
        let rejected = "Summarize this.\n\nAssistant: Long.";

        assert_eq!(
            split_last_turn(chosen, rejected),
            Ok(pair("Summarize this.", "Short.", "Long."))
        );
    }

    #[test]
    fn output_format_parsing() {
        assert_eq!("dpo".parse::<OutputFormat>().unwrap(), OutputFormat::Dpo);
        assert_eq!("kto".parse::<OutputFormat>().unwrap(), OutputFormat::Kto);
        let error = "orpo".parse::<OutputFormat>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid format \"orpo\": expected \"dpo\" or \"kto\""
        );
    }
}
