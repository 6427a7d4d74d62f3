//! The order in which a data set's records form batches: sequential, shuffled, or grouped by
//! length so that a batch holds records of similar length and carries less padding.
//!
//! Grouping follows the length-grouped sampler of `transformers`: the shuffled records are
//! split into mega-batches of [`MEGABATCH_FACTOR`] batches, each mega-batch is sorted by length
//! (longest first) and cut into batches, and the batches are shuffled. The batch holding the
//! longest record goes first, so that an out-of-memory error shows at the first step. The
//! shuffle is seeded, so a seed gives the same order on every machine.

use crate::batch::padded_length;
use crate::error::{Error, Result};

/// Batches per mega-batch when grouping by length, as in `transformers`. Larger mega-batches
/// cut more padding but make batches less random.
pub const MEGABATCH_FACTOR: usize = 50;

/// How [`batch_order`] forms batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOrderOptions {
    /// Records per batch, at least 1. The last batch may be smaller unless `drop_last` is set.
    pub batch_size: usize,
    pub seed: u64,
    pub shuffle: bool,
    pub group_by_length: bool,
    /// Leave out a last batch smaller than `batch_size`.
    pub drop_last: bool,
}

/// The size of one record for padding accounting: the rows it adds to a batch, the tokens of
/// its longest row and the tokens of all its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSize {
    pub rows: usize,
    pub longest: usize,
    pub tokens: usize,
}

/// SplitMix64: a small generator whose output is the same on every platform, so a seed fixes
/// the order without pulling in a random number crate.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Returns a uniform integer in `0..bound`, rejecting the draws that would bias it.
    fn below(&mut self, bound: usize) -> usize {
        let bound = bound as u64;
        let zone = u64::MAX - u64::MAX % bound;
        loop {
            let draw = self.next();
            if draw < zone {
                return (draw % bound) as usize;
            }
        }
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for last in (1..items.len()).rev() {
            items.swap(last, self.below(last + 1));
        }
    }
}

/// Returns the batches of record indices for records of `lengths` tokens. Every index is in
/// exactly one batch, except those of a partial last batch under `drop_last`.
pub fn batch_order(lengths: &[usize], options: BatchOrderOptions) -> Result<Vec<Vec<usize>>> {
    if options.batch_size == 0 {
        return Err(Error::invalid_value("batch_size", 0, "at least 1"));
    }
    let mut random = SplitMix64(options.seed);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    if options.shuffle {
        random.shuffle(&mut order);
    }

    if options.group_by_length {
        let megabatch = options.batch_size * MEGABATCH_FACTOR;
        for chunk in order.chunks_mut(megabatch) {
            // A stable sort, so records of equal length keep their shuffled order.
            chunk.sort_by_key(|&index| std::cmp::Reverse(lengths[index]));
        }
    }
    let mut batches: Vec<Vec<usize>> = order
        .chunks(options.batch_size)
        .map(<[usize]>::to_vec)
        .collect();
    if options.drop_last
        && batches
            .last()
            .is_some_and(|last| last.len() < options.batch_size)
    {
        batches.pop();
    }

    if options.group_by_length && options.shuffle {
        random.shuffle(&mut batches);
        let longest_batch = batches
            .iter()
            .enumerate()
            .max_by_key(|(position, batch)| {
                let longest = batch.iter().map(|&index| lengths[index]).max();
                (longest, std::cmp::Reverse(*position))
            })
            .map(|(position, _)| position);
        if let Some(position) = longest_batch {
            batches.swap(0, position);
        }
    }
    Ok(batches)
}

/// Returns the share of padding slots among all slots of `batches`, when each batch is padded
/// to its longest row rounded up to `pad_to_multiple_of`. 0 for no slots.
pub fn padding_fraction(
    batches: &[Vec<usize>],
    sizes: &[RecordSize],
    pad_to_multiple_of: usize,
) -> Result<f64> {
    if pad_to_multiple_of == 0 {
        return Err(Error::invalid_value("pad_to_multiple_of", 0, "at least 1"));
    }
    let mut slots = 0usize;
    let mut tokens = 0usize;
    for batch in batches {
        let mut rows = 0;
        let mut longest = 0;
        for &index in batch {
            let size = sizes.get(index).ok_or_else(|| {
                Error::invalid_value(
                    "index",
                    index,
                    format!("an index of a kept record, in 0..{}", sizes.len()),
                )
            })?;
            rows += size.rows;
            longest = longest.max(size.longest);
            tokens += size.tokens;
        }
        slots += rows * padded_length(longest, pad_to_multiple_of);
    }
    if slots == 0 {
        return Ok(0.0);
    }
    Ok((slots - tokens) as f64 / slots as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(batch_size: usize, shuffle: bool, group_by_length: bool) -> BatchOrderOptions {
        BatchOrderOptions {
            batch_size,
            seed: 7,
            shuffle,
            group_by_length,
            drop_last: false,
        }
    }

    fn flatten_sorted(batches: &[Vec<usize>]) -> Vec<usize> {
        let mut all: Vec<usize> = batches.iter().flatten().copied().collect();
        all.sort_unstable();
        all
    }

    #[test]
    fn sequential_order() {
        let batches = batch_order(&[1; 5], options(2, false, false)).unwrap();

        assert_eq!(batches, [vec![0, 1], vec![2, 3], vec![4]]);
        let mut dropping = options(2, false, false);
        dropping.drop_last = true;
        assert_eq!(batch_order(&[1; 5], dropping).unwrap().len(), 2);
    }

    #[test]
    fn shuffle_is_seeded_and_complete() {
        let lengths: Vec<usize> = (0..103).map(|i| (i * 37) % 91).collect();
        for group_by_length in [false, true] {
            let first = batch_order(&lengths, options(8, true, group_by_length)).unwrap();
            let again = batch_order(&lengths, options(8, true, group_by_length)).unwrap();
            let mut other_seed = options(8, true, group_by_length);
            other_seed.seed = 8;
            let other = batch_order(&lengths, other_seed).unwrap();

            assert_eq!(first, again);
            assert_ne!(first, other);
            assert_eq!(flatten_sorted(&first), (0..103).collect::<Vec<_>>());
            assert_eq!(first.iter().filter(|batch| batch.len() < 8).count(), 1);
        }
    }

    #[test]
    fn grouping_cuts_padding_and_leads_with_longest() {
        let lengths: Vec<usize> = (0..400).map(|i| 1 + (i * 7919) % 300).collect();
        let sizes: Vec<RecordSize> = lengths
            .iter()
            .map(|&length| RecordSize {
                rows: 1,
                longest: length,
                tokens: length,
            })
            .collect();

        let random = batch_order(&lengths, options(8, true, false)).unwrap();
        let grouped = batch_order(&lengths, options(8, true, true)).unwrap();

        let random_padding = padding_fraction(&random, &sizes, 1).unwrap();
        let grouped_padding = padding_fraction(&grouped, &sizes, 1).unwrap();
        assert!(
            grouped_padding < random_padding / 4.0,
            "{grouped_padding} {random_padding}"
        );
        assert!(grouped[0].iter().any(|&index| lengths[index] == 300));
    }

    #[test]
    fn padding_fraction_counts_rows() {
        // One batch of two records: two rows of 3 and 1 tokens, and one row of 4 tokens.
        let sizes = [
            RecordSize {
                rows: 2,
                longest: 3,
                tokens: 4,
            },
            RecordSize {
                rows: 1,
                longest: 4,
                tokens: 4,
            },
        ];

        // Three rows of 4 slots hold 8 tokens: 4 of 12 slots are padding.
        let fraction = padding_fraction(&[vec![0, 1]], &sizes, 1).unwrap();
        assert!((fraction - 4.0 / 12.0).abs() < 1e-12);
        // Rounded up to 8 columns: 16 of 24 slots are padding.
        let fraction = padding_fraction(&[vec![0, 1]], &sizes, 8).unwrap();
        assert!((fraction - 16.0 / 24.0).abs() < 1e-12);
        assert_eq!(padding_fraction(&[], &sizes, 1).unwrap(), 0.0);
        assert!(padding_fraction(&[vec![2]], &sizes, 1).is_err());
        assert!(batch_order(&[1], options(0, false, false)).is_err());
    }
}
