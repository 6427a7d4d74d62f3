//! The data side of pyalign: preference data in, padded token batches out.
//!
//! - [`table`] reads columns from CSV, JSON Lines, JSON (plain or gzipped) and Parquet files,
//!   and [`table_writer`] writes them.
//! - [`hh_rlhf`] converts Anthropic HH-RLHF conversations to prompt, chosen and rejected text.
//! - [`chat`] renders conversational prompts with a tokenizer's Jinja chat template.
//! - [`tokenize`] loads a `tokenizer.json` and applies the BOS and EOS rules to prompts and
//!   responses.
//! - [`batch`] tokenizes whole data sets in parallel, truncates them and pads batches, and
//!   [`batch_order`] groups them by length.
//! - [`stats`] summarizes token lengths.
//!
//! These modules know nothing of Python. The bindings, the extension module `pyalign._core`,
//! live in `py.rs` behind the `python` feature, so `cargo test` needs no interpreter.

pub mod batch;
pub mod batch_order;
pub mod chat;
pub mod dataset;
pub mod error;
pub mod hh_rlhf;
pub mod parquet_table;
pub mod stats;
pub mod table;
pub mod table_writer;
pub mod tokenize;

#[cfg(feature = "python")]
mod py;

pub use batch::{
    Batch, DropReason, LengthLimits, PaddingSide, PairDataset, PromptDataset, ResponseDataset,
    TruncationMode,
};
pub use chat::ChatTemplate;
pub use error::{Error, Location, Result};
pub use table::{list_columns, read_all_columns, read_table, Table};
pub use tokenize::{SpecialToken, SpecialTokens, TextTokenizer};
