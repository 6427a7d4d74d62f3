//! Property tests of the tokenized data sets and their batches, on random words with a
//! word-level tokenizer. Labels sit exactly on response tokens and no sequence exceeds
//! `max_length`. Every input pair is either in exactly one batch or counted as dropped. A
//! pair's prompt tokens are identical in its chosen and rejected rows, in both paddings.

mod common;

use proptest::prelude::*;

use pyalign::batch::{Batch, PaddingSide, TruncationMode};
use pyalign::batch_order::BatchOrderOptions;
use pyalign::{LengthLimits, PairDataset, ResponseDataset, TextTokenizer};

const WORDS: [&str; 6] = ["hello", "world", "how", "are", "you", "xyz"];
const BOS: u32 = 1;

fn tokenizer(adds_bos: bool, adds_eos: bool) -> TextTokenizer {
    common::word_tokenizer(&WORDS[..5], adds_bos, adds_eos)
}

/// Texts of up to `max_words` words, with the special-token texts and an unknown word among
/// them.
fn text(max_words: usize) -> impl Strategy<Value = String> {
    let word = prop::sample::select(vec![
        "hello", "world", "how", "are", "you", "xyz", "<s>", "</s>",
    ]);
    prop::collection::vec(word, 0..=max_words).prop_map(|words| words.join(" "))
}

fn mode() -> impl Strategy<Value = TruncationMode> {
    prop_oneof![
        Just(TruncationMode::KeepEnd),
        Just(TruncationMode::KeepStart)
    ]
}

fn side() -> impl Strategy<Value = PaddingSide> {
    prop_oneof![Just(PaddingSide::Right), Just(PaddingSide::Left)]
}

/// Returns the real tokens of `row` and where they start, checking that the padding is on
/// `side` and that the attention mask and position ids agree with it.
fn real_tokens(batch: &Batch, row: usize, side: PaddingSide) -> (Vec<i64>, usize) {
    let columns = batch.num_columns;
    let mask = &batch.attention_mask[row * columns..(row + 1) * columns];
    let length = mask.iter().filter(|&&value| value == 1).count();
    let start = match side {
        PaddingSide::Right => 0,
        PaddingSide::Left => columns - length,
    };
    assert!(mask[start..start + length].iter().all(|&value| value == 1));
    let positions = &batch.position_ids[row * columns + start..row * columns + start + length];
    assert!(positions.iter().enumerate().all(|(i, &p)| p == i as i64));
    let ids = batch.input_ids[row * columns + start..row * columns + start + length].to_vec();
    (ids, row * columns + start)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pair_batches_keep_invariants(
        adds_bos in any::<bool>(),
        adds_eos in any::<bool>(),
        max_length in 2usize..14,
        max_prompt_length in prop::option::of(1usize..8),
        mode in mode(),
        side in side(),
        pad_to_multiple_of in 1usize..5,
        records in prop::collection::vec((text(8), text(6), text(6)), 0..12),
        batch_size in 1usize..5,
        seed in any::<u64>(),
        group_by_length in any::<bool>(),
    ) {
        let tokenizer = tokenizer(adds_bos, adds_eos);
        let prompts: Vec<String> = records.iter().map(|r| r.0.clone()).collect();
        let chosen: Vec<String> = records.iter().map(|r| r.1.clone()).collect();
        let rejected: Vec<String> = records.iter().map(|r| r.2.clone()).collect();
        let limits = LengthLimits::new(max_length, max_prompt_length, mode).unwrap();

        let dataset = PairDataset::new(&tokenizer, &prompts, &chosen, &rejected, limits).unwrap();

        // Every input pair is kept or counted as dropped, and kept indices are unique.
        prop_assert_eq!(dataset.len() + dataset.num_dropped(), records.len());
        let kept = dataset.kept_indices();
        prop_assert!(kept.windows(2).all(|pair| pair[0] < pair[1]));
        prop_assert!(kept.iter().all(|&index| index < records.len()));

        // Every kept pair is in exactly one batch.
        let options = BatchOrderOptions {
            batch_size,
            seed,
            shuffle: true,
            group_by_length,
            drop_last: false,
        };
        let batches = dataset.batch_order(options).unwrap();
        let mut seen = vec![0usize; dataset.len()];
        for batch in &batches {
            prop_assert!(!batch.is_empty() && batch.len() <= batch_size);
            for &index in batch {
                seen[index] += 1;
            }
        }
        prop_assert!(seen.iter().all(|&count| count == 1));

        for indices in &batches {
            let batch = dataset.collate_with(indices, pad_to_multiple_of, side).unwrap();
            let pairs = indices.len();
            prop_assert_eq!(batch.num_rows, 2 * pairs);
            prop_assert_eq!(batch.num_columns % pad_to_multiple_of, 0);
            for (slot, &index) in indices.iter().enumerate() {
                let pair = dataset.pair(index);
                prop_assert_eq!(pair.prompt.first(), Some(&BOS));
                prop_assert_eq!(pair.prompt.iter().take_while(|&&id| id == BOS).count(), 1);
                prop_assert_ne!(&pair.chosen, &pair.rejected);
                let mut prompt_rows = Vec::new();
                for (row, response) in [(slot, &pair.chosen), (pairs + slot, &pair.rejected)] {
                    let (ids, start) = real_tokens(&batch, row, side);
                    // No sequence exceeds max_length, and no response is empty.
                    prop_assert!(ids.len() <= max_length);
                    prop_assert!(!response.is_empty());
                    prop_assert_eq!(ids.len(), pair.prompt.len() + response.len());
                    // Labels sit exactly on the response tokens.
                    let row_start = row * batch.num_columns;
                    for column in 0..batch.num_columns {
                        let position = row_start + column;
                        let in_response = position >= start + pair.prompt.len()
                            && position < start + ids.len();
                        prop_assert_eq!(batch.label_mask[position], in_response);
                    }
                    prompt_rows.push(ids[..pair.prompt.len()].to_vec());
                }
                // The prompt tokens are identical in the chosen and rejected rows.
                prop_assert_eq!(&prompt_rows[0], &prompt_rows[1]);
            }
        }
    }

    #[test]
    fn response_batches_keep_invariants(
        max_length in 2usize..12,
        mode in mode(),
        side in side(),
        records in prop::collection::vec((text(8), text(6)), 0..10),
        shift in 0usize..10,
    ) {
        let tokenizer = tokenizer(false, false);
        let prompts: Vec<String> = records.iter().map(|r| r.0.clone()).collect();
        let responses: Vec<String> = records.iter().map(|r| r.1.clone()).collect();
        let limits = LengthLimits::new(max_length, None, mode).unwrap();

        let dataset = ResponseDataset::new(&tokenizer, &prompts, &responses, limits).unwrap();
        prop_assert_eq!(dataset.len() + dataset.num_dropped(), records.len());

        // Mismatched pairs, as KTO builds them, also fit and label only responses.
        let count = dataset.len();
        let prompt_indices: Vec<usize> = (0..count).collect();
        let response_indices: Vec<usize> = (0..count).map(|i| (i + shift) % count.max(1)).collect();
        let batch = dataset
            .collate_pairs_with(&prompt_indices, &response_indices, 1, side)
            .unwrap();
        for (row, &prompt_index) in prompt_indices.iter().enumerate() {
            let (ids, start) = real_tokens(&batch, row, side);
            let prompt = &dataset.row(prompt_index).prompt;
            prop_assert!(ids.len() <= max_length);
            let prompt_ids: Vec<i64> = prompt.iter().map(|&id| i64::from(id)).collect();
            prop_assert_eq!(&ids[..prompt.len()], prompt_ids.as_slice());
            let labels = &batch.label_mask[start..start + ids.len()];
            prop_assert!(labels[..prompt.len()].iter().all(|&label| !label));
            prop_assert!(labels[prompt.len()..].iter().all(|&label| label));
        }
    }
}
