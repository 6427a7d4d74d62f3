//! Truncation rules and padded batches.
//!
//! A sequence is a prompt followed by a response. Both are tokenized separately (see
//! [`TextTokenizer::encode_prompt`] and [`TextTokenizer::encode_response`]) and joined, so no
//! token merge crosses the boundary and a pair's prompt tokens are identical in its chosen and
//! rejected sequences.
//!
//! Truncation follows [`LengthLimits`]: the prompt is cut to `max_prompt_length`, then the
//! response is cut from its end until the sequence fits `max_length`. A prompt that leaves no
//! room for one response token is cut further instead, down to `max_length - 1` tokens. No cut
//! splits a character: where a cut would fall between the byte tokens of one character, it
//! moves to the character's edge and keeps fewer tokens (see [`CharBoundaries`]).
//!
//! [`TextTokenizer::encode_prompt`]: crate::tokenize::TextTokenizer::encode_prompt
//! [`TextTokenizer::encode_response`]: crate::tokenize::TextTokenizer::encode_response

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::tokenize::CharBoundaries;

pub use crate::dataset::{
    PairDataset, PromptDataset, ResponseDataset, TokenizedPair, TokenizedResponse,
};

/// The end of a prompt that survives truncation. BOS stays first in either case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncationMode {
    /// Keep the end of the prompt, the part nearest the response.
    KeepEnd,
    /// Keep the start of the prompt.
    KeepStart,
}

impl FromStr for TruncationMode {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "keep_end" => Ok(TruncationMode::KeepEnd),
            "keep_start" => Ok(TruncationMode::KeepStart),
            other => Err(Error::invalid_value(
                "truncation_mode",
                format!("{other:?}"),
                "\"keep_end\" or \"keep_start\"",
            )),
        }
    }
}

/// Length limits of the sequences, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthLimits {
    max_length: usize,
    max_prompt_length: Option<usize>,
    truncation_mode: TruncationMode,
}

impl LengthLimits {
    /// Validates the limits. `max_length` must be at least 2, so that a sequence contains one
    /// prompt token (such as BOS) and one response token. `max_prompt_length` must be at
    /// least 1.
    pub fn new(
        max_length: usize,
        max_prompt_length: Option<usize>,
        truncation_mode: TruncationMode,
    ) -> Result<Self> {
        if max_length < 2 {
            return Err(Error::invalid_value(
                "max_length",
                max_length,
                "at least 2, so that a sequence contains a prompt token and a response token",
            ));
        }
        if max_prompt_length == Some(0) {
            return Err(Error::invalid_value(
                "max_prompt_length",
                0,
                "at least 1, or None",
            ));
        }
        Ok(LengthLimits {
            max_length,
            max_prompt_length,
            truncation_mode,
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn max_prompt_length(&self) -> Option<usize> {
        self.max_prompt_length
    }

    pub fn truncation_mode(&self) -> TruncationMode {
        self.truncation_mode
    }

    /// Applies both prompt limits: `max_prompt_length`, then `max_length - 1`, which leaves
    /// room for one response token.
    pub(crate) fn fit_prompt(
        &self,
        mut prompt: Vec<u32>,
        bos: Option<u32>,
        boundaries: &CharBoundaries,
    ) -> Vec<u32> {
        let cut = |prompt, max_tokens| {
            cut_prompt(prompt, max_tokens, self.truncation_mode, bos, boundaries)
        };
        if let Some(max_prompt_length) = self.max_prompt_length {
            prompt = cut(prompt, max_prompt_length);
        }
        if prompt.len() >= self.max_length {
            prompt = cut(prompt, self.max_length - 1);
        }
        prompt
    }

    /// Keeps the start of `response` that fits after a prompt of `prompt_length` tokens,
    /// ending on a character boundary. `prompt_length` must be below `max_length`, as
    /// [`Self::fit_prompt`] ensures. The result is empty only when the room left is shorter
    /// than the response's first character.
    pub(crate) fn fit_response<'a>(
        &self,
        prompt_length: usize,
        response: &'a [u32],
        boundaries: &CharBoundaries,
    ) -> &'a [u32] {
        let room = self.max_length - prompt_length;
        &response[..boundaries.floor_end(response, room)]
    }
}

/// Cuts `prompt` to at most `max_tokens` (at least 1), keeping BOS first when it starts there
/// and never splitting a character.
pub(crate) fn cut_prompt(
    prompt: Vec<u32>,
    max_tokens: usize,
    mode: TruncationMode,
    bos: Option<u32>,
    boundaries: &CharBoundaries,
) -> Vec<u32> {
    if prompt.len() <= max_tokens {
        return prompt;
    }
    let starts_with_bos = bos.is_some() && prompt.first() == bos.as_ref();
    let (head, body) = if starts_with_bos {
        prompt.split_at(1)
    } else {
        prompt.split_at(0)
    };
    let body_tokens = max_tokens - head.len();

    let mut kept = match mode {
        TruncationMode::KeepStart => &body[..boundaries.floor_end(body, body_tokens)],
        TruncationMode::KeepEnd => &body[boundaries.ceil_start(body, body.len() - body_tokens)..],
    };
    // A cut inside the prompt text can expose a BOS that the text contained. Behind the
    // leading BOS it would be a second one in a row.
    if starts_with_bos {
        while kept.first() == bos.as_ref() {
            kept = &kept[1..];
        }
    }
    head.iter().chain(kept).copied().collect()
}

/// The reason a record was dropped while building a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    /// The chosen response has no token apart from EOS.
    EmptyChosenResponse,
    /// The rejected response has no token apart from EOS.
    EmptyRejectedResponse,
    /// The chosen and rejected responses tokenize to the same ids.
    IdenticalResponses,
    /// The responses differ only after the part that fits `max_length`.
    IdenticalAfterTruncation,
    /// The response has no token apart from EOS.
    EmptyResponse,
    /// The room that `max_length` leaves after the prompt is shorter than the first character
    /// of a response, so the response would be empty.
    EmptyAfterTruncation,
    /// The prompt has no token: the text is empty and the tokenizer has no BOS.
    EmptyPrompt,
}

impl DropReason {
    /// Returns the key under which the reason is counted.
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::EmptyChosenResponse => "empty_chosen_response",
            DropReason::EmptyRejectedResponse => "empty_rejected_response",
            DropReason::IdenticalResponses => "identical_responses",
            DropReason::IdenticalAfterTruncation => "identical_after_truncation",
            DropReason::EmptyResponse => "empty_response",
            DropReason::EmptyAfterTruncation => "empty_after_truncation",
            DropReason::EmptyPrompt => "empty_prompt",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The side of a row that padding fills.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PaddingSide {
    /// Padding after the tokens, for training.
    #[default]
    Right,
    /// Padding before the tokens, for generation, so every row ends at the last column.
    Left,
}

impl FromStr for PaddingSide {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "right" => Ok(PaddingSide::Right),
            "left" => Ok(PaddingSide::Left),
            other => Err(Error::invalid_value(
                "padding_side",
                format!("{other:?}"),
                "\"right\" or \"left\"",
            )),
        }
    }
}

/// How [`build_batch`] lays out a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLayout {
    pub pad_token_id: u32,
    pub pad_to_multiple_of: usize,
    pub padding_side: PaddingSide,
}

/// A padded batch of B sequences of T tokens, stored row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// B, the number of sequences.
    pub num_rows: usize,
    /// T, the length of the longest sequence rounded up to the padding multiple.
    pub num_columns: usize,
    /// Token ids, padded with the tokenizer's padding id. Shape (B, T).
    pub input_ids: Vec<i64>,
    /// 1 on real tokens, 0 on padding. Shape (B, T).
    pub attention_mask: Vec<i64>,
    /// True exactly on response tokens, EOS included. Shape (B, T).
    pub label_mask: Vec<bool>,
    /// The position of each real token within its sequence, from 0, whichever side the
    /// padding is on; 0 on padding. Shape (B, T).
    pub position_ids: Vec<i64>,
}

impl Batch {
    /// Returns the number of padding slots.
    pub fn num_padding(&self) -> usize {
        self.attention_mask
            .iter()
            .filter(|&&mask| mask == 0)
            .count()
    }
}

/// Returns T for sequences whose longest has `longest` tokens.
pub(crate) fn padded_length(longest: usize, pad_to_multiple_of: usize) -> usize {
    longest.div_ceil(pad_to_multiple_of) * pad_to_multiple_of
}

/// Pads `sequences`, each a prompt and a response, into one batch.
pub(crate) fn build_batch(sequences: &[(&[u32], &[u32])], layout: BatchLayout) -> Batch {
    let longest = sequences
        .iter()
        .map(|(prompt, response)| prompt.len() + response.len())
        .max();
    let num_columns = padded_length(longest.unwrap_or(0), layout.pad_to_multiple_of);
    let num_rows = sequences.len();

    let mut input_ids = vec![i64::from(layout.pad_token_id); num_rows * num_columns]; // (B, T)
    let mut attention_mask = vec![0i64; num_rows * num_columns]; // (B, T)
    let mut label_mask = vec![false; num_rows * num_columns]; // (B, T)
    let mut position_ids = vec![0i64; num_rows * num_columns]; // (B, T)

    for (row, (prompt, response)) in sequences.iter().enumerate() {
        let length = prompt.len() + response.len();
        let start = match layout.padding_side {
            PaddingSide::Right => row * num_columns,
            PaddingSide::Left => row * num_columns + num_columns - length,
        };
        let tokens = prompt.iter().chain(response.iter());
        for (slot, &id) in input_ids[start..start + length].iter_mut().zip(tokens) {
            *slot = i64::from(id);
        }
        attention_mask[start..start + length].fill(1);
        label_mask[start + prompt.len()..start + length].fill(true);
        for (position, slot) in position_ids[start..start + length].iter_mut().enumerate() {
            *slot = position as i64;
        }
    }

    Batch {
        num_rows,
        num_columns,
        input_ids,
        attention_mask,
        label_mask,
        position_ids,
    }
}

pub(crate) fn check_pad_multiple(pad_to_multiple_of: usize) -> Result<()> {
    if pad_to_multiple_of == 0 {
        return Err(Error::invalid_value("pad_to_multiple_of", 0, "at least 1"));
    }
    Ok(())
}

/// Converts caller indices to positions in a dataset of `len` records.
pub fn check_indices(indices: &[i64], len: usize) -> Result<Vec<usize>> {
    indices
        .iter()
        .map(|&index| match usize::try_from(index) {
            Ok(position) if position < len => Ok(position),
            _ => Err(Error::invalid_value(
                "index",
                index,
                format!("an index of a kept record, in 0..{len}"),
            )),
        })
        .collect()
}

pub(crate) fn check_equal_lengths(names: &[&str], lengths: &[usize]) -> Result<()> {
    if lengths.windows(2).all(|pair| pair[0] == pair[1]) {
        return Ok(());
    }
    let described: Vec<String> = names
        .iter()
        .zip(lengths)
        .map(|(name, length)| format!("{name} {length}"))
        .collect();
    Err(Error::invalid_value(
        "list lengths",
        described.join(", "),
        "lists of equal length",
    ))
}

/// Counts the reasons of dropped records and collects the kept ones with their input index.
pub(crate) fn partition<T>(
    outcomes: Vec<Result<T, DropReason>>,
) -> (Vec<T>, Vec<usize>, BTreeMap<String, usize>) {
    let mut kept = Vec::with_capacity(outcomes.len());
    let mut kept_indices = Vec::with_capacity(outcomes.len());
    let mut drop_reasons = BTreeMap::new();
    for (index, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Ok(record) => {
                kept.push(record);
                kept_indices.push(index);
            }
            Err(reason) => *drop_reasons.entry(reason.as_str().to_owned()).or_insert(0) += 1,
        }
    }
    (kept, kept_indices, drop_reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(padding_side: PaddingSide, pad_to_multiple_of: usize) -> BatchLayout {
        BatchLayout {
            pad_token_id: 9,
            pad_to_multiple_of,
            padding_side,
        }
    }

    #[test]
    fn right_and_left_padding() {
        let sequences: [(&[u32], &[u32]); 2] = [(&[1, 4], &[5, 2]), (&[1], &[6])];

        let right = build_batch(&sequences, layout(PaddingSide::Right, 1));
        let left = build_batch(&sequences, layout(PaddingSide::Left, 1));

        assert_eq!(right.input_ids, [1, 4, 5, 2, 1, 6, 9, 9]);
        assert_eq!(right.attention_mask, [1, 1, 1, 1, 1, 1, 0, 0]);
        assert_eq!(right.position_ids, [0, 1, 2, 3, 0, 1, 0, 0]);
        assert_eq!(
            right.label_mask,
            [false, false, true, true, false, true, false, false]
        );
        assert_eq!(left.input_ids, [1, 4, 5, 2, 9, 9, 1, 6]);
        assert_eq!(left.attention_mask, [1, 1, 1, 1, 0, 0, 1, 1]);
        assert_eq!(left.position_ids, [0, 1, 2, 3, 0, 0, 0, 1]);
        assert_eq!(
            left.label_mask,
            [false, false, true, true, false, false, false, true]
        );
        assert_eq!(left.num_padding(), 2);
    }

    #[test]
    fn left_padding_to_multiple() {
        let sequences: [(&[u32], &[u32]); 1] = [(&[1, 4, 5], &[])];

        let batch = build_batch(&sequences, layout(PaddingSide::Left, 4));

        assert_eq!(batch.input_ids, [9, 1, 4, 5]);
        assert_eq!(batch.position_ids, [0, 0, 1, 2]);
        assert_eq!(batch.label_mask, [false; 4]);
    }

    #[test]
    fn padding_side_parsing() {
        assert_eq!("left".parse::<PaddingSide>().unwrap(), PaddingSide::Left);
        let error = "top".parse::<PaddingSide>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid padding_side \"top\": expected \"right\" or \"left\""
        );
    }
}
