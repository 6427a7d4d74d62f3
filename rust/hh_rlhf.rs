//! Converts Anthropic HH-RLHF preference data to (prompt, chosen, rejected) records.
//!
//! Each HH-RLHF record contains two whole conversations, `chosen` and `rejected`, written as
//! `\n\nHuman: ...\n\nAssistant: ...` turns. A turn starts at a marker, `Human:` or
//! `Assistant:`, that opens the text or follows a blank line (`\n\n`), so `Human:` inside the
//! text of a turn is ordinary text. Text before the first marker, when not blank, is a human
//! turn.
//!
//! The split of a record:
//!
//! 1. Both conversations must end with an assistant turn.
//! 2. The shared prompt is the longest run of leading turns that are identical in both
//!    conversations (same role, same text), cut back so that it ends with a human turn that an
//!    assistant turn follows in both. A record without such a prompt is malformed.
//! 3. Each response is the rest of its conversation after that human turn, stripped. It is
//!    usually the final assistant turn. When the conversations part before their final turns,
//!    the response keeps every later turn with its markers, so no character is lost.
//! 4. The prompt is the text of the shared prompt's last human turn, stripped (`last-turn`), or
//!    every turn of the shared prompt as `{role, content}` messages with stripped contents
//!    (`full-context`), the form a chat template renders.
//!
//! A record whose prompt or response is empty is skipped and counted. A malformed record (bad
//! JSON, bad UTF-8, a missing column, no final assistant turn, no shared prompt) is an error
//! that names the file and line, or a counted skip under `skip_bad_records`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::ControlFlow;
use std::path::Path;
use std::str::FromStr;

use crate::chat::{messages_to_json, Message};
use crate::error::{Error, Location, Result};
use crate::table::{for_each_record_lenient, Columns};
use crate::table_writer::{self, ColumnValues};

const HUMAN_MARKER: &str = "Human:";
const ASSISTANT_MARKER: &str = "Assistant:";

pub use crate::table_writer::SUPPORTED_OUTPUT_EXTENSIONS;

/// The layout of converted rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// One row per pair: `prompt`, `chosen`, `rejected`.
    #[default]
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

/// The content of a converted record's prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PromptMode {
    /// The text of the last shared human turn.
    #[default]
    LastTurn,
    /// Every shared turn, as messages for a chat template.
    FullContext,
}

impl FromStr for PromptMode {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "last-turn" => Ok(PromptMode::LastTurn),
            "full-context" => Ok(PromptMode::FullContext),
            other => Err(Error::invalid_value(
                "prompt",
                format!("{other:?}"),
                "\"last-turn\" or \"full-context\"",
            )),
        }
    }
}

/// The prompt of a converted record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    Text(String),
    Messages(Vec<Message>),
}

impl Prompt {
    /// Returns the prompt as a table string: the text, or the compact JSON text of the messages.
    pub fn to_text(&self) -> String {
        match self {
            Prompt::Text(text) => text.clone(),
            Prompt::Messages(messages) => messages_to_json(messages).to_string(),
        }
    }
}

/// One record split into prompt and responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferencePair {
    pub prompt: Prompt,
    pub chosen: String,
    pub rejected: String,
}

/// The reason a record was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// `chosen` does not end with an assistant turn. Malformed.
    NoChosenAssistantTurn,
    /// `rejected` does not end with an assistant turn. Malformed.
    NoRejectedAssistantTurn,
    /// No human turn, followed by an assistant turn in both conversations, starts them alike.
    /// Malformed.
    NoSharedPrompt,
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
            SkipReason::NoSharedPrompt => "no_shared_prompt",
            SkipReason::EmptyPrompt => "empty_prompt",
            SkipReason::EmptyChosenResponse => "empty_chosen_response",
            SkipReason::EmptyRejectedResponse => "empty_rejected_response",
        }
    }

    /// Returns a sentence for logs and error messages.
    pub fn describe(&self) -> &'static str {
        match self {
            SkipReason::NoChosenAssistantTurn => {
                "chosen does not end with an \"Assistant:\" turn after its last human turn"
            }
            SkipReason::NoRejectedAssistantTurn => {
                "rejected does not end with an \"Assistant:\" turn after its last human turn"
            }
            SkipReason::NoSharedPrompt => {
                "chosen and rejected do not start with the same human turn followed by an \
                 assistant turn"
            }
            SkipReason::EmptyPrompt => "the last shared human turn is empty",
            SkipReason::EmptyChosenResponse => "the chosen response is empty",
            SkipReason::EmptyRejectedResponse => "the rejected response is empty",
        }
    }

    /// Reports whether the record's structure is broken, as opposed to an empty part.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            SkipReason::NoChosenAssistantTurn
                | SkipReason::NoRejectedAssistantTurn
                | SkipReason::NoSharedPrompt
        )
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Human,
    Assistant,
}

/// One turn: its role and the byte range of its text, between its marker and the next one.
#[derive(Debug, Clone, Copy)]
struct Turn {
    role: Role,
    start: usize,
    end: usize,
}

/// Splits a conversation into turns at the markers that open the text or follow `\n\n`.
fn parse_turns(conversation: &str) -> Vec<Turn> {
    // Each marker: (where the marker starts, where its text starts, role).
    let mut markers: Vec<(usize, usize, Role)> = Vec::new();
    for (marker, role) in [
        (HUMAN_MARKER, Role::Human),
        (ASSISTANT_MARKER, Role::Assistant),
    ] {
        if conversation.starts_with(marker) {
            markers.push((0, marker.len(), role));
        }
        let bytes = conversation.as_bytes();
        for (position, _) in conversation.match_indices(marker) {
            if position >= 2 && &bytes[position - 2..position] == b"\n\n" {
                markers.push((position - 2, position + marker.len(), role));
            }
        }
    }
    // A marker ends with ':' and starts with '\n' or at 0, so two markers never overlap.
    markers.sort_unstable_by_key(|&(start, _, _)| start);

    let mut turns = Vec::with_capacity(markers.len() + 1);
    let first_marker = markers
        .first()
        .map_or(conversation.len(), |marker| marker.0);
    if !conversation[..first_marker].trim().is_empty() {
        turns.push(Turn {
            role: Role::Human,
            start: 0,
            end: first_marker,
        });
    }
    for (index, &(_, text_start, role)) in markers.iter().enumerate() {
        let end = markers
            .get(index + 1)
            .map_or(conversation.len(), |next| next.0);
        turns.push(Turn {
            role,
            start: text_start,
            end,
        });
    }
    turns
}

/// Splits one record by the rules in the module documentation.
pub fn split_record(
    chosen: &str,
    rejected: &str,
    mode: PromptMode,
) -> Result<PreferencePair, SkipReason> {
    let chosen_turns = parse_turns(chosen);
    let rejected_turns = parse_turns(rejected);
    if chosen_turns.last().map(|turn| turn.role) != Some(Role::Assistant) {
        return Err(SkipReason::NoChosenAssistantTurn);
    }
    if rejected_turns.last().map(|turn| turn.role) != Some(Role::Assistant) {
        return Err(SkipReason::NoRejectedAssistantTurn);
    }

    let text = |conversation: &str, turn: &Turn| conversation[turn.start..turn.end].to_owned();
    let same = |(a, b): &(&Turn, &Turn)| {
        a.role == b.role && chosen[a.start..a.end] == rejected[b.start..b.end]
    };
    let num_shared = chosen_turns
        .iter()
        .zip(&rejected_turns)
        .take_while(same)
        .count();
    // The prompt's length in turns: it ends with a human turn and an assistant turn follows
    // in both conversations. Below num_shared the turns agree, so checking chosen suffices
    // there.
    let is_assistant = |turns: &[Turn], index: usize| {
        turns.get(index).map(|turn| turn.role) == Some(Role::Assistant)
    };
    let prompt_length = (1..=num_shared).rev().find(|&length| {
        chosen_turns[length - 1].role == Role::Human
            && is_assistant(&chosen_turns, length)
            && is_assistant(&rejected_turns, length)
    });
    let Some(prompt_length) = prompt_length else {
        return Err(SkipReason::NoSharedPrompt);
    };

    let last_human = text(chosen, &chosen_turns[prompt_length - 1]);
    let chosen_response = chosen[chosen_turns[prompt_length].start..].trim();
    let rejected_response = rejected[rejected_turns[prompt_length].start..].trim();
    if last_human.trim().is_empty() {
        return Err(SkipReason::EmptyPrompt);
    }
    if chosen_response.is_empty() {
        return Err(SkipReason::EmptyChosenResponse);
    }
    if rejected_response.is_empty() {
        return Err(SkipReason::EmptyRejectedResponse);
    }

    let prompt = match mode {
        PromptMode::LastTurn => Prompt::Text(last_human.trim().to_owned()),
        PromptMode::FullContext => Prompt::Messages(
            chosen_turns[..prompt_length]
                .iter()
                .map(|turn| {
                    let role = match turn.role {
                        Role::Human => "user",
                        Role::Assistant => "assistant",
                    };
                    Message::new(role, chosen[turn.start..turn.end].trim())
                })
                .collect(),
        ),
    };
    Ok(PreferencePair {
        prompt,
        chosen: chosen_response.to_owned(),
        rejected: rejected_response.to_owned(),
    })
}

/// Splits one record by the last-turn rule.
pub fn split_last_turn(chosen: &str, rejected: &str) -> Result<PreferencePair, SkipReason> {
    split_record(chosen, rejected, PromptMode::LastTurn)
}

/// Settings of one conversion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    pub format: OutputFormat,
    /// Stop after this many kept pairs. Under [`OutputFormat::Kto`] each pair gives two rows.
    pub max_samples: Option<usize>,
    pub prompt: PromptMode,
    /// Count malformed records as skips instead of failing on the first one.
    pub skip_bad_records: bool,
}

/// The result of a conversion: the pairs and the counts for its summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    pub format: OutputFormat,
    pub pairs: Vec<PreferencePair>,
    /// Input records read, good or bad.
    pub num_read: usize,
    /// Input records kept.
    pub num_kept: usize,
    /// Skipped input records per reason: a [`SkipReason::as_str`], or for a record that could
    /// not be read `invalid_json`, `invalid_utf8`, `invalid_csv` or `missing_column`.
    pub skip_reasons: BTreeMap<String, usize>,
}

impl Conversion {
    /// Returns the column names, as [`OutputFormat::columns`] gives them.
    pub fn columns(&self) -> Vec<String> {
        self.format
            .columns()
            .iter()
            .map(|c| c.to_string())
            .collect()
    }

    /// Returns the number of output rows: one per pair, or two under KTO.
    pub fn num_rows(&self) -> usize {
        match self.format {
            OutputFormat::Dpo => self.pairs.len(),
            OutputFormat::Kto => 2 * self.pairs.len(),
        }
    }

    /// Returns the output rows as strings, in the order of [`Self::columns`]. A prompt of
    /// messages is its JSON text, and a KTO label `"true"` or `"false"`.
    pub fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = Vec::with_capacity(self.num_rows());
        for pair in &self.pairs {
            let prompt = pair.prompt.to_text();
            match self.format {
                OutputFormat::Dpo => {
                    rows.push(vec![prompt, pair.chosen.clone(), pair.rejected.clone()])
                }
                OutputFormat::Kto => {
                    rows.push(vec![prompt.clone(), pair.chosen.clone(), "true".into()]);
                    rows.push(vec![prompt, pair.rejected.clone(), "false".into()]);
                }
            }
        }
        rows
    }

    pub fn num_skipped(&self) -> usize {
        self.skip_reasons.values().sum()
    }

    /// Returns a one-line summary: counts, then each skip reason with its count.
    pub fn summary(&self) -> String {
        let mut summary = format!(
            "read {} records, kept {}, wrote {} rows, skipped {}",
            self.num_read,
            self.num_kept,
            self.num_rows(),
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

    /// Counts one skip and logs the first three of each reason with the record's location.
    fn record_skip(&mut self, reason: &str, message: impl FnOnce() -> String, malformed: bool) {
        let count = self.skip_reasons.entry(reason.to_owned()).or_insert(0);
        *count += 1;
        if *count <= 3 {
            if malformed {
                log::warn!("skipped a malformed record: {}", message());
            } else {
                log::debug!("skipped: {}", message());
            }
        }
    }
}

/// Reads HH-RLHF records from `input` (any format that `read_table` reads, usually
/// `.jsonl.gz`) and converts them.
pub fn convert(input: &Path, options: ConvertOptions) -> Result<Conversion> {
    convert_with_progress(input, options, &mut |_| {})
}

/// How often [`convert_with_progress`] reports, in records read.
pub const PROGRESS_INTERVAL: usize = 50_000;

/// Converts like [`convert`] and calls `progress` with the number of records read after every
/// [`PROGRESS_INTERVAL`] records.
pub fn convert_with_progress(
    input: &Path,
    options: ConvertOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Conversion> {
    let columns = ["chosen".to_owned(), "rejected".to_owned()];
    let mut conversion = Conversion {
        format: options.format,
        pairs: Vec::new(),
        num_read: 0,
        num_kept: 0,
        skip_reasons: BTreeMap::new(),
    };
    if options.max_samples == Some(0) {
        return Ok(conversion);
    }

    let mut failure: Option<Error> = None;
    let read = for_each_record_lenient(input, Columns::Named(&columns), |location, record| {
        conversion.num_read += 1;
        if conversion.num_read.is_multiple_of(PROGRESS_INTERVAL) {
            progress(conversion.num_read);
        }
        let outcome = match record {
            Ok(record) => convert_record(input, location, &record, options, &mut conversion),
            Err(error) => Err((unreadable_reason(&error), error)),
        };
        if let Err((reason, error)) = outcome {
            if !options.skip_bad_records {
                failure = Some(error);
                return ControlFlow::Break(());
            }
            conversion.record_skip(reason, || error.to_string(), true);
        }

        match options.max_samples {
            Some(max_samples) if conversion.num_kept >= max_samples => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    });
    read?;
    if let Some(error) = failure {
        return Err(error);
    }

    log::info!("converted {}: {}", input.display(), conversion.summary());
    Ok(conversion)
}

/// Splits one record into `conversion`. Returns the skip reason and the error of a malformed
/// record, which the caller reports or counts.
fn convert_record(
    input: &Path,
    location: Location,
    record: &[String],
    options: ConvertOptions,
    conversion: &mut Conversion,
) -> Result<(), (&'static str, Error)> {
    match split_record(&record[0], &record[1], options.prompt) {
        Ok(pair) => {
            conversion.num_kept += 1;
            conversion.pairs.push(pair);
            Ok(())
        }
        Err(reason) if reason.is_malformed() => {
            let error = Error::InvalidRecord {
                path: input.to_path_buf(),
                location,
                message: format!(
                    "invalid HH-RLHF record: {}; pass skip_bad_records (--skip-bad-records) \
                     to skip such records",
                    reason.describe()
                ),
            };
            Err((reason.as_str(), error))
        }
        Err(reason) => {
            let message = || format!("{}: {location}: {}", input.display(), reason.describe());
            conversion.record_skip(reason.as_str(), message, false);
            Ok(())
        }
    }
}

/// Returns the skip reason of a record that could not be read.
fn unreadable_reason(error: &Error) -> &'static str {
    match error {
        Error::InvalidJson { .. } => "invalid_json",
        Error::InvalidUtf8 { .. } => "invalid_utf8",
        Error::InvalidCsv { .. } => "invalid_csv",
        Error::MissingColumn { .. } => "missing_column",
        _ => "invalid_record",
    }
}

/// Checks that [`write_rows`] supports the extension of `output`, so that a caller can fail
/// before reading the input.
pub fn check_output_path(output: &Path) -> Result<()> {
    table_writer::check_output_path(output)
}

/// Writes the rows of `conversion` to `output` as CSV, JSON Lines or Parquet, by its
/// extension, creating the parent folder when it is missing. A prompt of messages is a JSON
/// string in CSV, a JSON array in JSON Lines and a list of structs in Parquet. The KTO label
/// is a boolean in JSON Lines and Parquet.
pub fn write_rows(conversion: &Conversion, output: &Path) -> Result<()> {
    let pairs = &conversion.pairs;
    let texts: Vec<String>;
    let prompt_texts: Vec<&str>;
    let prompt_messages: Vec<&[Message]>;
    let prompt = if pairs
        .iter()
        .all(|pair| matches!(pair.prompt, Prompt::Messages(_)))
        && !pairs.is_empty()
    {
        fn messages(pair: &PreferencePair) -> &[Message] {
            match &pair.prompt {
                Prompt::Messages(messages) => messages,
                Prompt::Text(_) => unreachable!("every prompt is messages"),
            }
        }
        prompt_messages = match conversion.format {
            OutputFormat::Dpo => pairs.iter().map(messages).collect(),
            OutputFormat::Kto => pairs.iter().flat_map(|p| [messages(p); 2]).collect(),
        };
        ColumnValues::Messages(&prompt_messages)
    } else {
        texts = pairs.iter().map(|pair| pair.prompt.to_text()).collect();
        prompt_texts = match conversion.format {
            OutputFormat::Dpo => texts.iter().map(String::as_str).collect(),
            OutputFormat::Kto => texts.iter().flat_map(|t| [t.as_str(); 2]).collect(),
        };
        ColumnValues::Text(&prompt_texts)
    };

    match conversion.format {
        OutputFormat::Dpo => {
            let chosen: Vec<&str> = pairs.iter().map(|pair| pair.chosen.as_str()).collect();
            let rejected: Vec<&str> = pairs.iter().map(|pair| pair.rejected.as_str()).collect();
            table_writer::write_table(
                output,
                &[
                    ("prompt", prompt),
                    ("chosen", ColumnValues::Text(&chosen)),
                    ("rejected", ColumnValues::Text(&rejected)),
                ],
            )
        }
        OutputFormat::Kto => {
            let responses: Vec<&str> = pairs
                .iter()
                .flat_map(|pair| [pair.chosen.as_str(), pair.rejected.as_str()])
                .collect();
            let labels: Vec<bool> = pairs.iter().flat_map(|_| [true, false]).collect();
            table_writer::write_table(
                output,
                &[
                    ("prompt", prompt),
                    ("response", ColumnValues::Text(&responses)),
                    ("label", ColumnValues::Bool(&labels)),
                ],
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_pair(prompt: &str, chosen: &str, rejected: &str) -> PreferencePair {
        PreferencePair {
            prompt: Prompt::Text(prompt.into()),
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
            Ok(text_pair("What is 2+2?", "4.", "5"))
        );
    }

    #[test]
    fn full_context_keeps_turns() {
        let chosen = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: What is 2+2? \n\nAssistant: 4.";
        let rejected = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: What is 2+2? \n\nAssistant: 5";

        let pair = split_record(chosen, rejected, PromptMode::FullContext).unwrap();

        assert_eq!(
            pair.prompt,
            Prompt::Messages(vec![
                Message::new("user", "Hi"),
                Message::new("assistant", "Hello!"),
                Message::new("user", "What is 2+2?"),
            ])
        );
        assert_eq!((pair.chosen.as_str(), pair.rejected.as_str()), ("4.", "5"));
        assert_eq!(
            pair.prompt.to_text(),
            r#"[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"},{"role":"user","content":"What is 2+2?"}]"#
        );
    }

    #[test]
    fn human_inside_turn_is_text() {
        let chosen =
            "\n\nHuman: Quote \"Human: be kind\" please\n\nAssistant: Sure. Human: be kind";
        let rejected = "\n\nHuman: Quote \"Human: be kind\" please\n\nAssistant: No.\nHuman: no";

        let split = split_last_turn(chosen, rejected).unwrap();

        assert_eq!(
            split.prompt,
            Prompt::Text("Quote \"Human: be kind\" please".into())
        );
        assert_eq!(split.chosen, "Sure. Human: be kind");
        assert_eq!(split.rejected, "No.\nHuman: no");
    }

    #[test]
    fn response_keeps_inner_blank_lines() {
        let chosen = "\n\nHuman: List two\n\nAssistant: 1. a\n\n2. b\n";
        let rejected = "\n\nHuman: List two\n\nAssistant: no";

        assert_eq!(
            split_last_turn(chosen, rejected),
            Ok(text_pair("List two", "1. a\n\n2. b", "no"))
        );
    }

    #[test]
    fn early_divergence_keeps_later_turns() {
        // Chosen repeats the assistant marker, so the two part inside the final exchange.
        let chosen = "\n\nHuman: Q\n\nAssistant: First part.\n\nAssistant: Second part.";
        let rejected = "\n\nHuman: Q\n\nAssistant: Other.";

        assert_eq!(
            split_last_turn(chosen, rejected),
            Ok(text_pair(
                "Q",
                "First part.\n\nAssistant: Second part.",
                "Other."
            ))
        );
    }

    #[test]
    fn divergence_at_human_turn_cuts_back() {
        let chosen = "\n\nHuman: A\n\nAssistant: B\n\nHuman: C1\n\nAssistant: D1";
        let rejected = "\n\nHuman: A\n\nAssistant: B\n\nHuman: C2\n\nAssistant: D2";

        let pair = split_record(chosen, rejected, PromptMode::FullContext).unwrap();

        assert_eq!(
            pair.prompt,
            Prompt::Messages(vec![Message::new("user", "A")])
        );
        assert_eq!(pair.chosen, "B\n\nHuman: C1\n\nAssistant: D1");
        assert_eq!(pair.rejected, "B\n\nHuman: C2\n\nAssistant: D2");
    }

    #[test]
    fn no_shared_prompt_is_malformed() {
        let error = split_last_turn(
            "\n\nHuman: A\n\nAssistant: B",
            "\n\nHuman: X\n\nAssistant: B",
        );

        assert_eq!(error, Err(SkipReason::NoSharedPrompt));
        assert!(SkipReason::NoSharedPrompt.is_malformed());
        assert!(!SkipReason::EmptyPrompt.is_malformed());
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
        assert_eq!(
            split_last_turn("", ""),
            Err(SkipReason::NoChosenAssistantTurn)
        );
    }

    #[test]
    fn empty_parts_are_skipped() {
        let good = "\n\nHuman: Hi\n\nAssistant: Hello";

        assert_eq!(
            split_last_turn(
                "\n\nHuman:  \n\nAssistant: x",
                "\n\nHuman:  \n\nAssistant: y"
            ),
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
    fn text_before_first_marker_is_human_turn() {
        let chosen = "Summarize this.\n\nAssistant: Short.";
        let rejected = "Summarize this.\n\nAssistant: Long.";

        assert_eq!(
            split_last_turn(chosen, rejected),
            Ok(text_pair("Summarize this.", "Short.", "Long."))
        );
        // A marker at the very start counts without a blank line before it.
        assert_eq!(
            split_last_turn("Human: Q\n\nAssistant: A", "Human: Q\n\nAssistant: B"),
            Ok(text_pair("Q", "A", "B"))
        );
    }

    #[test]
    fn three_newlines_before_marker() {
        let chosen = "\n\nHuman: Q\n\n\nAssistant: A";
        let rejected = "\n\nHuman: Q\n\n\nAssistant: B";

        assert_eq!(
            split_last_turn(chosen, rejected),
            Ok(text_pair("Q", "A", "B"))
        );
    }

    #[test]
    fn option_parsing() {
        assert_eq!("dpo".parse::<OutputFormat>().unwrap(), OutputFormat::Dpo);
        assert_eq!("kto".parse::<OutputFormat>().unwrap(), OutputFormat::Kto);
        let error = "orpo".parse::<OutputFormat>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid format \"orpo\": expected \"dpo\" or \"kto\""
        );
        assert_eq!(
            "full-context".parse::<PromptMode>().unwrap(),
            PromptMode::FullContext
        );
        let error = "all".parse::<PromptMode>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid prompt \"all\": expected \"last-turn\" or \"full-context\""
        );
    }
}
