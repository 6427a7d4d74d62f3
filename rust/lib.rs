//! The data side of pyalign: preference data in, padded token batches out.
//!
//! - [`table`] reads text columns from CSV, JSON Lines and JSON files, plain or gzipped.
//! - [`hh_rlhf`] converts Anthropic HH-RLHF conversations to prompt, chosen and rejected text.
//! - [`tokenize`] loads a `tokenizer.json` and applies the BOS and EOS rules to prompts and
//!   responses.
//! - [`batch`] tokenizes whole data sets in parallel, truncates them and pads batches.
//!
//! These modules know nothing of Python. The bindings, the extension module `pyalign._core`,
//! live in `py.rs` behind the `python` feature, so `cargo test` needs no interpreter.

pub mod batch;
pub mod error;
pub mod hh_rlhf;
pub mod table;
pub mod tokenize;

#[cfg(feature = "python")]
mod py;

pub use batch::{Batch, DropReason, LengthLimits, PairDataset, ResponseDataset, TruncationMode};
pub use error::{Error, Location, Result};
pub use table::{read_table, Table};
pub use tokenize::{SpecialToken, SpecialTokens, TextTokenizer};
