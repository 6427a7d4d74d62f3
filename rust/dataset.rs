//! Tokenized data sets, built once in parallel and batched on request: preference pairs
//! ([`PairDataset`]), prompt-response rows for KTO ([`ResponseDataset`]) and prompts alone for
//! generation ([`PromptDataset`]).
//!
//! The truncation and padding rules live in [`crate::batch`]. With a chat template, each prompt
//! is rendered to text first (see [`crate::chat`]). Without one, a prompt that is a list of
//! messages is an error, so its JSON text is never tokenized by mistake.

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::batch::{
    build_batch, check_equal_lengths, check_pad_multiple, cut_prompt, partition, Batch,
    BatchLayout, DropReason, LengthLimits, PaddingSide, TruncationMode,
};
use crate::batch_order::{batch_order, padding_fraction, BatchOrderOptions, RecordSize};
use crate::chat::{parse_conversation, response_text, ChatTemplate};
use crate::error::{Error, Result};
use crate::tokenize::{CharBoundaries, TextTokenizer};

/// The `log` target of this module's records: `pyalign.batch` in Python's logging, the logger
/// these records had before the data sets moved out of `batch.rs`.
const LOG_TARGET: &str = "pyalign::batch";

/// Encodes the prompts and responses of one data set, with or without a chat template.
#[derive(Clone, Copy)]
struct Encoder<'a> {
    tokenizer: &'a TextTokenizer,
    template: Option<&'a ChatTemplate>,
}

impl Encoder<'_> {
    /// Encodes the prompt of record `index`: rendered by the chat template when there is one,
    /// then by the BOS rules of [`TextTokenizer::encode_prompt`], which keep one BOS when the
    /// template writes the BOS text too.
    fn prompt(&self, index: usize, text: &str) -> Result<Vec<u32>> {
        let Some(template) = self.template else {
            if parse_conversation(text).is_some() {
                return Err(Error::invalid_value(
                    "prompt",
                    format!("of record {index}"),
                    "text, found a list of messages; pass chat_template=True to render it \
                     with the tokenizer's chat template",
                ));
            }
            return self.tokenizer.encode_prompt(text);
        };
        let rendered = template.render_prompt(text).map_err(|error| match error {
            Error::ChatTemplate { context, message } => Error::ChatTemplate {
                context: format!("record {index}: {context}"),
                message,
            },
            other => other,
        })?;
        self.tokenizer.encode_prompt(&rendered)
    }

    /// Encodes the response `column` of record `index`: text, or one assistant message.
    fn response(&self, index: usize, column: &'static str, text: &str) -> Result<Vec<u32>> {
        let text = response_text(text).map_err(|expected| {
            Error::invalid_value(column, format!("of record {index}"), expected)
        })?;
        self.tokenizer.encode_response(&text)
    }
}

/// Orders the records into batches and logs the padding share of the order.
fn ordered_batches(
    what: &str,
    lengths: &[usize],
    sizes: &[RecordSize],
    options: BatchOrderOptions,
) -> Result<Vec<Vec<usize>>> {
    let batches = batch_order(lengths, options)?;
    let padding = padding_fraction(&batches, sizes, 1)?;
    let num_batched: usize = batches.iter().map(Vec::len).sum();
    log::info!(
        target: LOG_TARGET,
        "ordered {num_batched} of {} {what} into {} batches of up to {} (shuffle {}, grouped by \
         length {}): {:.1}% of the slots are padding",
        lengths.len(),
        batches.len(),
        options.batch_size,
        options.shuffle,
        options.group_by_length,
        100.0 * padding
    );
    Ok(batches)
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
        Self::with_template(tokenizer, prompts, chosen, rejected, limits, None)
    }

    /// Builds the data set like [`Self::new`], rendering each prompt with `template` first
    /// when one is given.
    pub fn with_template(
        tokenizer: &TextTokenizer,
        prompts: &[String],
        chosen: &[String],
        rejected: &[String],
        limits: LengthLimits,
        template: Option<&ChatTemplate>,
    ) -> Result<Self> {
        check_equal_lengths(
            &["prompts", "chosen", "rejected"],
            &[prompts.len(), chosen.len(), rejected.len()],
        )?;
        let encoder = Encoder {
            tokenizer,
            template,
        };

        let outcomes = (0..prompts.len())
            .into_par_iter()
            .map(|i| tokenize_pair(encoder, i, &prompts[i], &chosen[i], &rejected[i], &limits))
            .collect::<Result<Vec<_>>>()?;
        let (pairs, kept_indices, drop_reasons) = partition(outcomes);

        log::info!(
            target: LOG_TARGET,
            "tokenized {} preference pairs: kept {}, dropped {}{}",
            prompts.len(),
            pairs.len(),
            prompts.len() - pairs.len(),
            describe_drops(&drop_reasons)
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

    /// Returns, per kept pair, its two rows for padding accounting.
    pub fn record_sizes(&self) -> Vec<RecordSize> {
        let size = |pair: &TokenizedPair| {
            let chosen = pair.prompt.len() + pair.chosen.len();
            let rejected = pair.prompt.len() + pair.rejected.len();
            RecordSize {
                rows: 2,
                longest: chosen.max(rejected),
                tokens: chosen + rejected,
            }
        };
        self.pairs.iter().map(size).collect()
    }

    /// Returns batches of pair indices (see [`crate::batch_order`]) and logs their padding.
    pub fn batch_order(&self, options: BatchOrderOptions) -> Result<Vec<Vec<usize>>> {
        ordered_batches("pairs", &self.lengths(), &self.record_sizes(), options)
    }

    /// Pads the pairs at `indices` into one right-padded batch of 2P rows: the P chosen
    /// sequences, then the P rejected sequences in the same order.
    pub fn collate(&self, indices: &[usize], pad_to_multiple_of: usize) -> Result<Batch> {
        self.collate_with(indices, pad_to_multiple_of, PaddingSide::Right)
    }

    /// Pads like [`Self::collate`] on the given side.
    pub fn collate_with(
        &self,
        indices: &[usize],
        pad_to_multiple_of: usize,
        padding_side: PaddingSide,
    ) -> Result<Batch> {
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
            self.layout(pad_to_multiple_of, padding_side),
        ))
    }

    /// Pads the prompts alone of the pairs at `indices`, left-padded for generation. Shape
    /// (P, T), with no label.
    pub fn collate_prompts(&self, indices: &[usize], pad_to_multiple_of: usize) -> Result<Batch> {
        check_pad_multiple(pad_to_multiple_of)?;
        let sequences = indices
            .iter()
            .map(|&index| Ok((self.get(index)?.prompt.as_slice(), &[][..])))
            .collect::<Result<Vec<(&[u32], &[u32])>>>()?;
        Ok(build_batch(
            &sequences,
            self.layout(pad_to_multiple_of, PaddingSide::Left),
        ))
    }

    fn layout(&self, pad_to_multiple_of: usize, padding_side: PaddingSide) -> BatchLayout {
        BatchLayout {
            pad_token_id: self.pad_token_id,
            pad_to_multiple_of,
            padding_side,
        }
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
    encoder: Encoder<'_>,
    index: usize,
    prompt: &str,
    chosen: &str,
    rejected: &str,
    limits: &LengthLimits,
) -> Result<Result<TokenizedPair, DropReason>> {
    let tokenizer = encoder.tokenizer;
    let boundaries = tokenizer.char_boundaries();
    let prompt = encoder.prompt(index, prompt)?;
    let prompt = limits.fit_prompt(prompt, tokenizer.bos_token_id(), boundaries);
    let chosen = encoder.response(index, "chosen", chosen)?;
    let rejected = encoder.response(index, "rejected", rejected)?;

    if tokenizer.is_empty_response(&chosen) {
        return Ok(Err(DropReason::EmptyChosenResponse));
    }
    if tokenizer.is_empty_response(&rejected) {
        return Ok(Err(DropReason::EmptyRejectedResponse));
    }
    if chosen == rejected {
        return Ok(Err(DropReason::IdenticalResponses));
    }

    let chosen = limits.fit_response(prompt.len(), &chosen, boundaries);
    let rejected = limits.fit_response(prompt.len(), &rejected, boundaries);
    if chosen.is_empty() || rejected.is_empty() {
        return Ok(Err(DropReason::EmptyAfterTruncation));
    }
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
    char_boundaries: CharBoundaries,
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
        Self::with_template(tokenizer, prompts, responses, limits, None)
    }

    /// Builds the data set like [`Self::new`], rendering each prompt with `template` first
    /// when one is given.
    pub fn with_template(
        tokenizer: &TextTokenizer,
        prompts: &[String],
        responses: &[String],
        limits: LengthLimits,
        template: Option<&ChatTemplate>,
    ) -> Result<Self> {
        check_equal_lengths(&["prompts", "responses"], &[prompts.len(), responses.len()])?;
        let encoder = Encoder {
            tokenizer,
            template,
        };
        let boundaries = tokenizer.char_boundaries();

        let outcomes = (0..prompts.len())
            .into_par_iter()
            .map(|i| -> Result<Result<TokenizedResponse, DropReason>> {
                let prompt = encoder.prompt(i, &prompts[i])?;
                let prompt = limits.fit_prompt(prompt, tokenizer.bos_token_id(), boundaries);
                let response = encoder.response(i, "response", &responses[i])?;
                if tokenizer.is_empty_response(&response) {
                    return Ok(Err(DropReason::EmptyResponse));
                }
                if limits
                    .fit_response(prompt.len(), &response, boundaries)
                    .is_empty()
                {
                    return Ok(Err(DropReason::EmptyAfterTruncation));
                }
                Ok(Ok(TokenizedResponse { prompt, response }))
            })
            .collect::<Result<Vec<_>>>()?;
        let (rows, kept_indices, drop_reasons) = partition(outcomes);

        log::info!(
            target: LOG_TARGET,
            "tokenized {} prompt-response rows: kept {}, dropped {}{}",
            prompts.len(),
            rows.len(),
            prompts.len() - rows.len(),
            describe_drops(&drop_reasons)
        );
        Ok(ResponseDataset {
            rows,
            kept_indices,
            drop_reasons,
            limits,
            char_boundaries: boundaries.clone(),
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
                    .fit_response(row.prompt.len(), &row.response, &self.char_boundaries)
                    .len()
        };
        self.rows.iter().map(length).collect()
    }

    /// Returns, per kept row, its size for padding accounting.
    pub fn record_sizes(&self) -> Vec<RecordSize> {
        self.lengths()
            .into_iter()
            .map(|length| RecordSize {
                rows: 1,
                longest: length,
                tokens: length,
            })
            .collect()
    }

    /// Returns batches of row indices (see [`crate::batch_order`]) and logs their padding.
    pub fn batch_order(&self, options: BatchOrderOptions) -> Result<Vec<Vec<usize>>> {
        ordered_batches("rows", &self.lengths(), &self.record_sizes(), options)
    }

    /// Pads the rows at `indices` into a right-padded batch of B = `indices.len()` sequences.
    pub fn collate(&self, indices: &[usize], pad_to_multiple_of: usize) -> Result<Batch> {
        self.collate_pairs(indices, indices, pad_to_multiple_of)
    }

    /// Pads like [`Self::collate`] on the given side.
    pub fn collate_with(
        &self,
        indices: &[usize],
        pad_to_multiple_of: usize,
        padding_side: PaddingSide,
    ) -> Result<Batch> {
        self.collate_pairs_with(indices, indices, pad_to_multiple_of, padding_side)
    }

    /// Pads sequences that join the prompt of row `prompt_indices[k]` with the response of
    /// row `response_indices[k]`, truncated to `max_length` by the usual rule. KTO uses such
    /// mismatched sequences to estimate its KL term.
    ///
    /// NOTE: a mismatched row whose prompt leaves less room than the first character of the
    /// response gets no response token, so it has no label.
    pub fn collate_pairs(
        &self,
        prompt_indices: &[usize],
        response_indices: &[usize],
        pad_to_multiple_of: usize,
    ) -> Result<Batch> {
        self.collate_pairs_with(
            prompt_indices,
            response_indices,
            pad_to_multiple_of,
            PaddingSide::Right,
        )
    }

    /// Pads like [`Self::collate_pairs`] on the given side.
    pub fn collate_pairs_with(
        &self,
        prompt_indices: &[usize],
        response_indices: &[usize],
        pad_to_multiple_of: usize,
        padding_side: PaddingSide,
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
            let response = self
                .limits
                .fit_response(prompt.len(), response, &self.char_boundaries);
            sequences.push((prompt.as_slice(), response));
        }
        Ok(build_batch(
            &sequences,
            self.layout(pad_to_multiple_of, padding_side),
        ))
    }

    /// Pads the prompts alone of the rows at `indices`, left-padded for generation.
    pub fn collate_prompts(&self, indices: &[usize], pad_to_multiple_of: usize) -> Result<Batch> {
        check_pad_multiple(pad_to_multiple_of)?;
        let sequences = indices
            .iter()
            .map(|&index| Ok((self.get(index)?.prompt.as_slice(), &[][..])))
            .collect::<Result<Vec<(&[u32], &[u32])>>>()?;
        Ok(build_batch(
            &sequences,
            self.layout(pad_to_multiple_of, PaddingSide::Left),
        ))
    }

    fn layout(&self, pad_to_multiple_of: usize, padding_side: PaddingSide) -> BatchLayout {
        BatchLayout {
            pad_token_id: self.pad_token_id,
            pad_to_multiple_of,
            padding_side,
        }
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

/// Prompts alone, tokenized once, for the generation step of GRPO and similar methods.
#[derive(Debug, Clone)]
pub struct PromptDataset {
    prompts: Vec<Vec<u32>>,
    kept_indices: Vec<usize>,
    drop_reasons: BTreeMap<String, usize>,
    pad_token_id: u32,
}

impl PromptDataset {
    /// Tokenizes every prompt by the rules of [`PairDataset::with_template`] and cuts it to
    /// `max_prompt_length` tokens by `truncation_mode`. A prompt without tokens is dropped.
    pub fn new(
        tokenizer: &TextTokenizer,
        prompts: &[String],
        max_prompt_length: Option<usize>,
        truncation_mode: TruncationMode,
        template: Option<&ChatTemplate>,
    ) -> Result<Self> {
        if max_prompt_length == Some(0) {
            return Err(Error::invalid_value(
                "max_prompt_length",
                0,
                "at least 1, or None",
            ));
        }
        let encoder = Encoder {
            tokenizer,
            template,
        };
        let boundaries = tokenizer.char_boundaries();
        let bos = tokenizer.bos_token_id();

        let outcomes = (0..prompts.len())
            .into_par_iter()
            .map(|i| -> Result<Result<Vec<u32>, DropReason>> {
                let mut prompt = encoder.prompt(i, &prompts[i])?;
                if let Some(max_prompt_length) = max_prompt_length {
                    prompt =
                        cut_prompt(prompt, max_prompt_length, truncation_mode, bos, boundaries);
                }
                if prompt.is_empty() {
                    return Ok(Err(DropReason::EmptyPrompt));
                }
                Ok(Ok(prompt))
            })
            .collect::<Result<Vec<_>>>()?;
        let (prompts_kept, kept_indices, drop_reasons) = partition(outcomes);

        log::info!(
            target: LOG_TARGET,
            "tokenized {} prompts: kept {}, dropped {}{}",
            prompts.len(),
            prompts_kept.len(),
            prompts.len() - prompts_kept.len(),
            describe_drops(&drop_reasons)
        );
        Ok(PromptDataset {
            prompts: prompts_kept,
            kept_indices,
            drop_reasons,
            pad_token_id: tokenizer.pad_token_id(),
        })
    }

    /// Returns the number of kept prompts.
    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    pub fn prompt(&self, index: usize) -> &[u32] {
        &self.prompts[index]
    }

    /// Returns the input index of each kept prompt.
    pub fn kept_indices(&self) -> &[usize] {
        &self.kept_indices
    }

    /// Dropped prompts per reason, keyed by [`DropReason::as_str`].
    pub fn drop_reasons(&self) -> &BTreeMap<String, usize> {
        &self.drop_reasons
    }

    pub fn num_dropped(&self) -> usize {
        self.drop_reasons.values().sum()
    }

    /// Returns the length of each kept prompt.
    pub fn lengths(&self) -> Vec<usize> {
        self.prompts.iter().map(Vec::len).collect()
    }

    /// Returns, per kept prompt, its size for padding accounting.
    pub fn record_sizes(&self) -> Vec<RecordSize> {
        self.prompts
            .iter()
            .map(|prompt| RecordSize {
                rows: 1,
                longest: prompt.len(),
                tokens: prompt.len(),
            })
            .collect()
    }

    /// Returns batches of prompt indices (see [`crate::batch_order`]) and logs their padding.
    pub fn batch_order(&self, options: BatchOrderOptions) -> Result<Vec<Vec<usize>>> {
        ordered_batches("prompts", &self.lengths(), &self.record_sizes(), options)
    }

    /// Pads the prompts at `indices` into a batch of shape (B, T) on `padding_side`, which is
    /// left for generation. No token carries a label.
    pub fn collate(
        &self,
        indices: &[usize],
        pad_to_multiple_of: usize,
        padding_side: PaddingSide,
    ) -> Result<Batch> {
        check_pad_multiple(pad_to_multiple_of)?;
        let sequences = indices
            .iter()
            .map(|&index| {
                let prompt = self.prompts.get(index).ok_or_else(|| {
                    Error::invalid_value(
                        "index",
                        index,
                        format!("an index of a kept prompt, in 0..{}", self.len()),
                    )
                })?;
                Ok((prompt.as_slice(), &[][..]))
            })
            .collect::<Result<Vec<(&[u32], &[u32])>>>()?;
        let layout = BatchLayout {
            pad_token_id: self.pad_token_id,
            pad_to_multiple_of,
            padding_side,
        };
        Ok(build_batch(&sequences, layout))
    }
}

/// Formats drop counts for the log: empty when nothing was dropped, else
/// ` (reason: count, ...)`.
fn describe_drops(drop_reasons: &BTreeMap<String, usize>) -> String {
    if drop_reasons.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = drop_reasons
        .iter()
        .map(|(reason, count)| format!("{reason}: {count}"))
        .collect();
    format!(" ({})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{check_indices, TruncationMode};
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
