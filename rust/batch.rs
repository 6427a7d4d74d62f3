//! Tokenized preference data and the padded batches built from it.
//!
//! A sequence is a prompt followed by a response. Both are tokenized separately (see
//! [`TextTokenizer::encode_prompt`] and [`TextTokenizer::encode_response`]) and joined, so no
//! token merge crosses the boundary and a pair's prompt tokens are identical in its chosen and
//! rejected sequences.
//!
//! Truncation follows [`LengthLimits`]: the prompt is cut to `max_prompt_length`, then the
//! response is cut from its end until the sequence fits `max_length`. A prompt that leaves no
//! room for one response token is cut further instead, down to `max_length - 1` tokens.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::tokenize::TextTokenizer;

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

    /// Applies both prompt limits: `max_prompt_length`, then `max_length - 1`, which leaves
    /// room for one response token.
    fn fit_prompt(&self, mut prompt: Vec<u32>, bos: Option<u32>) -> Vec<u32> {
        if let Some(max_prompt_length) = self.max_prompt_length {
            prompt = cut_prompt(prompt, max_prompt_length, self.truncation_mode, bos);
        }
        if prompt.len() >= self.max_length {
            prompt = cut_prompt(prompt, self.max_length - 1, self.truncation_mode, bos);
        }
        prompt
    }

    /// Keeps the start of `response` that fits after a prompt of `prompt_length` tokens.
    /// `prompt_length` must be below `max_length`, as [`Self::fit_prompt`] ensures.
    fn fit_response<'a>(&self, prompt_length: usize, response: &'a [u32]) -> &'a [u32] {
        let room = self.max_length - prompt_length;
        &response[..response.len().min(room)]
    }
}

/// Cuts `prompt` to at most `max_tokens` (at least 1), keeping BOS first when it starts there.
fn cut_prompt(
    prompt: Vec<u32>,
    max_tokens: usize,
    mode: TruncationMode,
    bos: Option<u32>,
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
        TruncationMode::KeepStart => &body[..body_tokens],
        TruncationMode::KeepEnd => &body[body.len() - body_tokens..],
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
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A padded batch of B sequences of T tokens, stored row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// B, the number of sequences.
    pub num_rows: usize,
    /// T, the length of the longest sequence rounded up to the padding multiple.
    pub num_columns: usize,
    /// Token ids, padded on the right with the tokenizer's padding id. Shape (B, T).
    pub input_ids: Vec<i64>,
    /// 1 on real tokens, 0 on padding. Shape (B, T).
    pub attention_mask: Vec<i64>,
    /// True exactly on response tokens, EOS included. Shape (B, T).
    pub label_mask: Vec<bool>,
}

/// Pads `sequences`, each a prompt and a response, into one batch.
fn build_batch(
    sequences: &[(&[u32], &[u32])],
    pad_token_id: u32,
    pad_to_multiple_of: usize,
) -> Batch {
    let longest = sequences
        .iter()
        .map(|(prompt, response)| prompt.len() + response.len())
        .max();
    let num_columns = longest.unwrap_or(0).div_ceil(pad_to_multiple_of) * pad_to_multiple_of;
    let num_rows = sequences.len();

    let mut input_ids = vec![i64::from(pad_token_id); num_rows * num_columns]; // (B, T)
    let mut attention_mask = vec![0i64; num_rows * num_columns]; // (B, T)
    let mut label_mask = vec![false; num_rows * num_columns]; // (B, T)

    for (row, (prompt, response)) in sequences.iter().enumerate() {
        let start = row * num_columns;
        let tokens = prompt.iter().chain(response.iter());
        for (slot, &id) in input_ids[start..].iter_mut().zip(tokens) {
            *slot = i64::from(id);
        }
        let length = prompt.len() + response.len();
        attention_mask[start..start + length].fill(1);
        label_mask[start + prompt.len()..start + length].fill(true);
    }

    Batch {
        num_rows,
        num_columns,
        input_ids,
        attention_mask,
        label_mask,
    }
}

fn check_pad_multiple(pad_to_multiple_of: usize) -> Result<()> {
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

fn check_equal_lengths(names: &[&str], lengths: &[usize]) -> Result<()> {
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
fn partition<T>(
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

/// One tokenized and truncated preference pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedPair {
    pub prompt: Vec<u32>,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
}

/// Preference pairs (prompt, chosen, rejected), tokenized once and batched on request.
#[derive(Debug, Clone)]
pub struct PairDataset {
    pairs: Vec<TokenizedPair>,
    kept_indices: Vec<usize>,
    drop_reasons: BTreeMap<String, usize>,
    pad_token_id: u32,
}

impl PairDataset {
    /// Tokenizes and truncates every pair. Pairs run in parallel on rayon's global thread
    /// pool, which rayon owns and sizes from `RAYON_NUM_THREADS` or the number of cores.
    ///
    /// A pair with an empty response, or whose chosen and rejected ids are identical after
    /// truncation, is dropped and counted in [`Self::drop_reasons`].
    pub fn new(
        tokenizer: &TextTokenizer,
        prompts: &[String],
        chosen: &[String],
        rejected: &[String],
        limits: LengthLimits,
    ) -> Result<Self> {
        check_equal_lengths(
            &["prompts", "chosen", "rejected"],
            &[prompts.len(), chosen.len(), rejected.len()],
        )?;

        let outcomes = (0..prompts.len())
            .into_par_iter()
            .map(|i| tokenize_pair(tokenizer, &prompts[i], &chosen[i], &rejected[i], &limits))
            .collect::<Result<Vec<_>>>()?;
        let (pairs, kept_indices, drop_reasons) = partition(outcomes);

        log::info!(
            "tokenized {} preference pairs: kept {}, dropped {} {:?}",
            prompts.len(),
            pairs.len(),
            prompts.len() - pairs.len(),
            drop_reasons
        );
        Ok(PairDataset {
            pairs,
            kept_indices,
            drop_reasons,
            pad_token_id: tokenizer.pad_token_id(),
        })
    }

    /// Returns the number of kept pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn pair(&self, index: usize) -> &TokenizedPair {
        &self.pairs[index]
    }

    /// Returns the input index of each kept pair.
    pub fn kept_indices(&self) -> &[usize] {
        &self.kept_indices
    }

    /// Dropped pairs per reason, keyed by [`DropReason::as_str`].
    pub fn drop_reasons(&self) -> &BTreeMap<String, usize> {
        &self.drop_reasons
    }

    pub fn num_dropped(&self) -> usize {
        self.drop_reasons.values().sum()
    }

    /// Returns, per kept pair, the length of its longer sequence.
    pub fn lengths(&self) -> Vec<usize> {
        let longer =
            |pair: &TokenizedPair| pair.prompt.len() + pair.chosen.len().max(pair.rejected.len());
        self.pairs.iter().map(longer).collect()
    }

    /// Pads the pairs at `indices` into one batch of 2P rows: the P chosen sequences, then
    /// the P rejected sequences in the same order.
    pub fn collate(&self, indices: &[usize], pad_to_multiple_of: usize) -> Result<Batch> {
        check_pad_multiple(pad_to_multiple_of)?;
        let pairs: Vec<&TokenizedPair> = indices
            .iter()
            .map(|&index| self.get(index))
            .collect::<Result<_>>()?;

        let chosen = pairs
            .iter()
            .map(|pair| (pair.prompt.as_slice(), pair.chosen.as_slice()));
        let rejected = pairs
            .iter()
            .map(|pair| (pair.prompt.as_slice(), pair.rejected.as_slice()));
        let sequences: Vec<(&[u32], &[u32])> = chosen.chain(rejected).collect();
        Ok(build_batch(
            &sequences,
            self.pad_token_id,
            pad_to_multiple_of,
        ))
    }

    fn get(&self, index: usize) -> Result<&TokenizedPair> {
        self.pairs.get(index).ok_or_else(|| {
            Error::invalid_value(
                "index",
                index,
                format!("an index of a kept pair, in 0..{}", self.len()),
            )
        })
    }
}

fn tokenize_pair(
    tokenizer: &TextTokenizer,
    prompt: &str,
    chosen: &str,
    rejected: &str,
    limits: &LengthLimits,
) -> Result<Result<TokenizedPair, DropReason>> {
    let prompt = limits.fit_prompt(tokenizer.encode_prompt(prompt)?, tokenizer.bos_token_id());
    let chosen = tokenizer.encode_response(chosen)?;
    let rejected = tokenizer.encode_response(rejected)?;

    if tokenizer.is_empty_response(&chosen) {
        return Ok(Err(DropReason::EmptyChosenResponse));
    }
    if tokenizer.is_empty_response(&rejected) {
        return Ok(Err(DropReason::EmptyRejectedResponse));
    }
    if chosen == rejected {
        return Ok(Err(DropReason::IdenticalResponses));
    }

    let chosen = limits.fit_response(prompt.len(), &chosen);
    let rejected = limits.fit_response(prompt.len(), &rejected);
    if chosen == rejected {
        return Ok(Err(DropReason::IdenticalAfterTruncation));
    }

    Ok(Ok(TokenizedPair {
        prompt,
        chosen: chosen.to_vec(),
        rejected: rejected.to_vec(),
    }))
}

/// One tokenized prompt and response. The prompt is already cut to fit; the response is whole,
/// because [`ResponseDataset::collate_pairs`] may join it to another row's prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedResponse {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
}

/// Rows of (prompt, response), as KTO uses them, tokenized once and batched on request.
#[derive(Debug, Clone)]
pub struct ResponseDataset {
    rows: Vec<TokenizedResponse>,
    kept_indices: Vec<usize>,
    drop_reasons: BTreeMap<String, usize>,
    limits: LengthLimits,
    pad_token_id: u32,
}

impl ResponseDataset {
    /// Tokenizes every row by the rules of [`PairDataset::new`], in parallel on rayon's global
    /// thread pool. A row with an empty response is dropped and counted.
    pub fn new(
        tokenizer: &TextTokenizer,
        prompts: &[String],
        responses: &[String],
        limits: LengthLimits,
    ) -> Result<Self> {
        check_equal_lengths(&["prompts", "responses"], &[prompts.len(), responses.len()])?;

        let outcomes = (0..prompts.len())
            .into_par_iter()
            .map(|i| -> Result<Result<TokenizedResponse, DropReason>> {
                let prompt = limits.fit_prompt(
                    tokenizer.encode_prompt(&prompts[i])?,
                    tokenizer.bos_token_id(),
                );
                let response = tokenizer.encode_response(&responses[i])?;
                if tokenizer.is_empty_response(&response) {
                    return Ok(Err(DropReason::EmptyResponse));
                }
                Ok(Ok(TokenizedResponse { prompt, response }))
            })
            .collect::<Result<Vec<_>>>()?;
        let (rows, kept_indices, drop_reasons) = partition(outcomes);

        log::info!(
            "tokenized {} prompt-response rows: kept {}, dropped {} {:?}",
            prompts.len(),
            rows.len(),
            prompts.len() - rows.len(),
            drop_reasons
        );
        Ok(ResponseDataset {
            rows,
            kept_indices,
            drop_reasons,
            limits,
            pad_token_id: tokenizer.pad_token_id(),
        })
    }

    /// Returns the number of kept rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn row(&self, index: usize) -> &TokenizedResponse {
        &self.rows[index]
    }

    /// Returns the input index of each kept row.
    pub fn kept_indices(&self) -> &[usize] {
        &self.kept_indices
    }

    /// Dropped rows per reason, keyed by [`DropReason::as_str`].
    pub fn drop_reasons(&self) -> &BTreeMap<String, usize> {
        &self.drop_reasons
    }

    pub fn num_dropped(&self) -> usize {
        self.drop_reasons.values().sum()
    }

    /// Returns the length of each kept row's sequence after truncation.
    pub fn lengths(&self) -> Vec<usize> {
        let length = |row: &TokenizedResponse| {
            row.prompt.len()
                + self
                    .limits
                    .fit_response(row.prompt.len(), &row.response)
                    .len()
        };
        self.rows.iter().map(length).collect()
    }

    /// Pads the rows at `indices` into a batch of B = `indices.len()` sequences.
    pub fn collate(&self, indices: &[usize], pad_to_multiple_of: usize) -> Result<Batch> {
        self.collate_pairs(indices, indices, pad_to_multiple_of)
    }

    /// Pads sequences that join the prompt of row `prompt_indices[k]` with the response of
    /// row `response_indices[k]`, truncated to `max_length` by the usual rule. KTO uses such
    /// mismatched sequences to estimate its KL term.
    pub fn collate_pairs(
        &self,
        prompt_indices: &[usize],
        response_indices: &[usize],
        pad_to_multiple_of: usize,
    ) -> Result<Batch> {
        check_pad_multiple(pad_to_multiple_of)?;
        check_equal_lengths(
            &["prompt_indices", "response_indices"],
            &[prompt_indices.len(), response_indices.len()],
        )?;

        let mut sequences = Vec::with_capacity(prompt_indices.len());
        for (&prompt_index, &response_index) in prompt_indices.iter().zip(response_indices) {
            let prompt = &self.get(prompt_index)?.prompt;
            let response = &self.get(response_index)?.response;
            sequences.push((
                prompt.as_slice(),
                self.limits.fit_response(prompt.len(), response),
            ));
        }
        Ok(build_batch(
            &sequences,
            self.pad_token_id,
            pad_to_multiple_of,
        ))
    }

    fn get(&self, index: usize) -> Result<&TokenizedResponse> {
        self.rows.get(index).ok_or_else(|| {
            Error::invalid_value(
                "index",
                index,
                format!("an index of a kept row, in 0..{}", self.len()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::tests::{word_tokenizer, BOS, EOS, PAD};

    fn strings(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|text| text.to_string()).collect()
    }

    fn limits(
        max_length: usize,
        max_prompt_length: Option<usize>,
        mode: TruncationMode,
    ) -> LengthLimits {
        LengthLimits::new(max_length, max_prompt_length, mode).unwrap()
    }

    fn row<'a>(batch: &'a Batch, values: &'a [i64], index: usize) -> &'a [i64] {
        &values[index * batch.num_columns..(index + 1) * batch.num_columns]
    }

    fn label_row(batch: &Batch, index: usize) -> &[bool] {
        &batch.label_mask[index * batch.num_columns..(index + 1) * batch.num_columns]
    }

    #[test]
    fn collate_layout_chosen_then_rejected() {
        let tokenizer = word_tokenizer(false, false, Some(PAD));
        let prompts = strings(&["hello", "how"]);
        let chosen = strings(&["world", "are you"]);
        let rejected = strings(&["you you you", "hello"]);
        let dataset = PairDataset::new(
            &tokenizer,
            &prompts,
            &chosen,
            &rejected,
            limits(16, None, TruncationMode::KeepEnd),
        )
        .unwrap();

        let batch = dataset.collate(&[1, 0], 1).unwrap();

        let pad = i64::from(PAD);
        assert_eq!((batch.num_rows, batch.num_columns), (4, 6));
        assert_eq!(row(&batch, &batch.input_ids, 0), [1, 6, 7, 8, 2, pad]);
        assert_eq!(row(&batch, &batch.input_ids, 1), [1, 4, 5, 2, pad, pad]);
        assert_eq!(row(&batch, &batch.input_ids, 2), [1, 6, 4, 2, pad, pad]);
        assert_eq!(row(&batch, &batch.input_ids, 3), [1, 4, 8, 8, 8, 2]);
        assert_eq!(row(&batch, &batch.attention_mask, 1), [1, 1, 1, 1, 0, 0]);
        assert_eq!(
            label_row(&batch, 0),
            [false, false, true, true, true, false]
        );
        assert_eq!(
            label_row(&batch, 1),
            [false, false, true, true, false, false]
        );
        assert_eq!(label_row(&batch, 3), [false, false, true, true, true, true]);
        assert_eq!(dataset.lengths(), [6, 5]);
    }

    #[test]
    fn pad_equal_to_eos_keeps_eos_labelled() {
        let tokenizer = word_tokenizer(false, false, None);
        assert_eq!(tokenizer.pad_token_id(), EOS);
        let dataset = PairDataset::new(
            &tokenizer,
            &strings(&["hello"]),
            &strings(&["world"]),
            &strings(&["how are you"]),
            limits(16, None, TruncationMode::KeepEnd),
        )
        .unwrap();

        let batch = dataset.collate(&[0], 1).unwrap();

        // Chosen row: BOS hello world EOS, then one padding slot that reuses the EOS id.
        assert_eq!(row(&batch, &batch.input_ids, 0), [1, 4, 5, 2, 2, 2]);
        assert_eq!(
            label_row(&batch, 0),
            [false, false, true, true, false, false]
        );
        assert_eq!(row(&batch, &batch.attention_mask, 0), [1, 1, 1, 1, 0, 0]);
    }

    #[test]
    fn pad_to_multiple_rounds_up() {
        let tokenizer = word_tokenizer(false, false, Some(PAD));
        let dataset = PairDataset::new(
            &tokenizer,
            &strings(&["hello"]),
            &strings(&["world"]),
            &strings(&["how are you"]),
            limits(16, None, TruncationMode::KeepEnd),
        )
        .unwrap();

        assert_eq!(dataset.collate(&[0], 8).unwrap().num_columns, 8);
        assert_eq!(dataset.collate(&[0], 6).unwrap().num_columns, 6);
        assert_eq!(dataset.collate(&[0], 4).unwrap().num_columns, 8);
        assert_eq!(dataset.collate(&[], 4).unwrap().num_columns, 0);
        assert!(dataset
            .collate(&[0], 0)
            .unwrap_err()
            .to_string()
            .contains("pad_to_multiple_of"));
    }

    #[test]
    fn prompt_truncation_keeps_bos_first() {
        let tokenizer = word_tokenizer(true, false, Some(PAD));
        let prompt = strings(&["hello world how are"]);
        let chosen = strings(&["you"]);
        let rejected = strings(&["hello"]);

        let keep_end = limits(16, Some(3), TruncationMode::KeepEnd);
        let dataset = PairDataset::new(&tokenizer, &prompt, &chosen, &rejected, keep_end).unwrap();
        assert_eq!(dataset.pair(0).prompt, [BOS, 6, 7]);

        let keep_start = limits(16, Some(3), TruncationMode::KeepStart);
        let dataset =
            PairDataset::new(&tokenizer, &prompt, &chosen, &rejected, keep_start).unwrap();
        assert_eq!(dataset.pair(0).prompt, [BOS, 4, 5]);

        // The cut exposes the "<s>" of the text, which must not become a second BOS.
        let inner_bos = strings(&["hello <s> world how"]);
        let keep_end = limits(16, Some(4), TruncationMode::KeepEnd);
        let dataset =
            PairDataset::new(&tokenizer, &inner_bos, &chosen, &rejected, keep_end).unwrap();
        assert_eq!(dataset.pair(0).prompt, [BOS, 5, 6]);
    }

    #[test]
    fn response_cut_keeps_its_start() {
        let tokenizer = word_tokenizer(false, false, Some(PAD));
        let dataset = PairDataset::new(
            &tokenizer,
            &strings(&["hello"]),
            &strings(&["how are you"]),
            &strings(&["you are how"]),
            limits(4, None, TruncationMode::KeepEnd),
        )
        .unwrap();

        let pair = dataset.pair(0);
        assert_eq!(pair.prompt, [BOS, 4]);
        assert_eq!(pair.chosen, [6, 7]);
        assert_eq!(pair.rejected, [8, 7]);
    }

    #[test]
    fn long_prompt_is_cut_for_one_response_token() {
        let tokenizer = word_tokenizer(false, false, Some(PAD));
        let prompts = strings(&["hello world how are you"]);
        let chosen = strings(&["hello"]);
        let rejected = strings(&["world"]);

        for (mode, expected_prompt) in [
            (TruncationMode::KeepEnd, [BOS, 7, 8]),
            (TruncationMode::KeepStart, [BOS, 4, 5]),
        ] {
            let dataset = PairDataset::new(
                &tokenizer,
                &prompts,
                &chosen,
                &rejected,
                limits(4, None, mode),
            )
            .unwrap();

            let pair = dataset.pair(0);
            assert_eq!(pair.prompt, expected_prompt, "{mode:?}");
            assert_eq!(pair.chosen, [4], "{mode:?}");
            assert_eq!(pair.rejected, [5], "{mode:?}");
        }
    }

    #[test]
    fn drops_are_counted_by_reason() {
        let tokenizer = word_tokenizer(false, false, Some(PAD));
        let prompts = strings(&["hello", "hello", "hello", "hello", "hello", "hello"]);
        let chosen = strings(&["world", "", "you", "how", "how are you", "how are"]);
        let rejected = strings(&["you", "you", "</s>", "how", "how are how", "how are"]);

        let dataset = PairDataset::new(
            &tokenizer,
            &prompts,
            &chosen,
            &rejected,
            limits(4, None, TruncationMode::KeepEnd),
        )
        .unwrap();

        assert_eq!(dataset.len(), 1);
        assert_eq!(dataset.kept_indices(), [0]);
        assert_eq!(dataset.num_dropped(), 5);
        let reasons: Vec<(&str, usize)> = dataset
            .drop_reasons()
            .iter()
            .map(|(reason, &count)| (reason.as_str(), count))
            .collect();
        assert_eq!(
            reasons,
            [
                ("empty_chosen_response", 1),
                ("empty_rejected_response", 1),
                ("identical_after_truncation", 1),
                ("identical_responses", 2),
            ]
        );
    }

    #[test]
    fn invalid_arguments_are_rejected() {
        let tokenizer = word_tokenizer(false, false, Some(PAD));
        let one = strings(&["hello"]);
        let two = strings(&["hello", "world"]);
        let limits = limits(8, None, TruncationMode::KeepEnd);

        let error = PairDataset::new(&tokenizer, &one, &two, &one, limits).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid list lengths prompts 1, chosen 2, rejected 1: expected lists of equal length"
        );

        let error = LengthLimits::new(1, None, TruncationMode::KeepEnd).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("invalid max_length 1: expected at least 2"),
            "{error}"
        );

        let error = LengthLimits::new(8, Some(0), TruncationMode::KeepEnd).unwrap_err();
        assert!(
            error.to_string().starts_with("invalid max_prompt_length 0"),
            "{error}"
        );

        let error = "left".parse::<TruncationMode>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid truncation_mode \"left\": expected \"keep_end\" or \"keep_start\""
        );

        let dataset = PairDataset::new(&tokenizer, &one, &one, &two[1..], limits).unwrap();
        let error = dataset.collate(&[1], 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid index 1: expected an index of a kept pair, in 0..1"
        );

        let error = check_indices(&[0, -1], 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid index -1: expected an index of a kept record, in 0..1"
        );
    }

    #[test]
    fn response_dataset_collate_pairs() {
        let tokenizer = word_tokenizer(false, false, Some(PAD));
        let prompts = strings(&["hello world how", "you", "hello"]);
        let responses = strings(&["are", "how are you you", ""]);

        let dataset = ResponseDataset::new(
            &tokenizer,
            &prompts,
            &responses,
            limits(6, None, TruncationMode::KeepEnd),
        )
        .unwrap();
        assert_eq!(dataset.len(), 2);
        assert_eq!(dataset.kept_indices(), [0, 1]);
        assert_eq!(dataset.drop_reasons().get("empty_response"), Some(&1));
        assert_eq!(dataset.lengths(), [6, 6]);

        // Row 0's four prompt tokens leave room for two of row 1's five response tokens.
        let batch = dataset.collate_pairs(&[0, 1], &[1, 0], 1).unwrap();
        assert_eq!((batch.num_rows, batch.num_columns), (2, 6));
        assert_eq!(row(&batch, &batch.input_ids, 0), [1, 4, 5, 6, 6, 7]);
        assert_eq!(
            label_row(&batch, 0),
            [false, false, false, false, true, true]
        );
        assert_eq!(
            row(&batch, &batch.input_ids, 1),
            [1, 8, 7, 2, PAD as i64, PAD as i64]
        );
        assert_eq!(
            label_row(&batch, 1),
            [false, false, true, true, false, false]
        );

        let error = dataset.collate_pairs(&[0], &[0, 1], 1).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("prompt_indices 1, response_indices 2"),
            "{error}"
        );
        assert!(dataset.collate_pairs(&[0], &[2], 1).is_err());
    }

    /// A small deterministic generator, so the property test needs no extra crate.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, bound: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) % bound as u64) as usize
        }

        fn words(&mut self, max_words: usize) -> String {
            let words = ["hello", "world", "how", "are", "you", "</s>", "<s>", "xyz"];
            let count = self.below(max_words + 1);
            (0..count)
                .map(|_| words[self.below(words.len())])
                .collect::<Vec<_>>()
                .join(" ")
        }
    }

    #[test]
    fn batch_invariants_on_random_pairs() {
        let mut random = Lcg(17);
        for case in 0..200 {
            let adds_bos = random.below(2) == 1;
            let tokenizer = word_tokenizer(adds_bos, random.below(2) == 1, Some(PAD));
            let max_length = 2 + random.below(10);
            let max_prompt_length = [None, Some(1 + random.below(6))][random.below(2)];
            let mode = [TruncationMode::KeepEnd, TruncationMode::KeepStart][random.below(2)];
            let count = 1 + random.below(8);
            let prompts: Vec<String> = (0..count).map(|_| random.words(8)).collect();
            let chosen: Vec<String> = (0..count).map(|_| random.words(6)).collect();
            let rejected: Vec<String> = (0..count).map(|_| random.words(6)).collect();
            let limits = limits(max_length, max_prompt_length, mode);

            let dataset =
                PairDataset::new(&tokenizer, &prompts, &chosen, &rejected, limits).unwrap();
            assert_eq!(dataset.len() + dataset.num_dropped(), count, "case {case}");

            let indices: Vec<usize> = (0..dataset.len()).collect();
            let batch = dataset.collate(&indices, 1).unwrap();
            let pairs = dataset.len();
            assert!(batch.num_columns <= max_length, "case {case}");
            for pair_index in 0..pairs {
                let pair = dataset.pair(pair_index);
                assert_eq!(pair.prompt.first(), Some(&BOS), "case {case}");
                assert_eq!(
                    pair.prompt.iter().take_while(|&&id| id == BOS).count(),
                    1,
                    "case {case}"
                );
                if let Some(max_prompt_length) = max_prompt_length {
                    assert!(pair.prompt.len() <= max_prompt_length.max(1), "case {case}");
                }
                assert_ne!(pair.chosen, pair.rejected, "case {case}");

                for (row_index, response) in [
                    (pair_index, &pair.chosen),
                    (pairs + pair_index, &pair.rejected),
                ] {
                    let ids = row(&batch, &batch.input_ids, row_index);
                    let labels = label_row(&batch, row_index);
                    let mask = row(&batch, &batch.attention_mask, row_index);
                    let length = pair.prompt.len() + response.len();
                    assert!(length <= max_length, "case {case}");
                    assert!(!response.is_empty(), "case {case}");

                    // Prompt tokens are the same in the chosen and rejected rows.
                    let prompt_ids: Vec<i64> =
                        pair.prompt.iter().map(|&id| i64::from(id)).collect();
                    assert_eq!(
                        &ids[..pair.prompt.len()],
                        prompt_ids.as_slice(),
                        "case {case}"
                    );
                    // Labels cover exactly the response, and the mask exactly the real tokens.
                    for position in 0..batch.num_columns {
                        let in_response = position >= pair.prompt.len() && position < length;
                        assert_eq!(
                            labels[position], in_response,
                            "case {case} position {position}"
                        );
                        assert_eq!(mask[position], i64::from(position < length), "case {case}");
                    }
                }
            }
        }
    }
}
