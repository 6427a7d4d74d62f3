//! Token-length distributions of a data set's columns, as `pyalign-data stats` prints them.
//!
//! A prompt column is measured as [`crate::batch`] tokenizes prompts (one BOS, rendered by a
//! chat template when one is given), and a response column as responses (one EOS). Lengths
//! are taken before any truncation, so they show what `max_length` and `max_prompt_length`
//! would cut.

use rayon::prelude::*;

use crate::chat::{parse_conversation, response_text, ChatTemplate};
use crate::error::{Error, Result};
use crate::tokenize::TextTokenizer;

/// The distribution of one column's token lengths. Percentiles use the nearest-rank rule: the
/// p-th percentile is the smallest length that at least p% of the values do not exceed.
#[derive(Debug, Clone, PartialEq)]
pub struct LengthSummary {
    pub count: usize,
    pub min: usize,
    pub p50: usize,
    pub p90: usize,
    pub p99: usize,
    pub max: usize,
    pub mean: f64,
}

impl LengthSummary {
    /// Summarizes `lengths`, or returns `None` when it is empty.
    pub fn from_lengths(mut lengths: Vec<usize>) -> Option<Self> {
        if lengths.is_empty() {
            return None;
        }
        lengths.sort_unstable();
        let count = lengths.len();
        let percentile = |p: usize| lengths[(p * count).div_ceil(100).max(1) - 1];
        let total: usize = lengths.iter().sum();
        Some(LengthSummary {
            count,
            min: lengths[0],
            p50: percentile(50),
            p90: percentile(90),
            p99: percentile(99),
            max: lengths[count - 1],
            mean: total as f64 / count as f64,
        })
    }
}

/// The tokenization rule of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Prompt,
    Response,
}

impl ColumnKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ColumnKind::Prompt => "prompt",
            ColumnKind::Response => "response",
        }
    }
}

/// The token lengths of one column.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnStats {
    pub column: String,
    pub kind: ColumnKind,
    /// `None` for a column without values.
    pub summary: Option<LengthSummary>,
}

/// Tokenizes `values` as `kind` on rayon's global thread pool and summarizes the lengths.
pub fn column_stats(
    tokenizer: &TextTokenizer,
    column: &str,
    kind: ColumnKind,
    values: &[String],
    template: Option<&ChatTemplate>,
) -> Result<ColumnStats> {
    let lengths = values
        .par_iter()
        .enumerate()
        .map(|(index, text)| -> Result<usize> {
            let ids = match (kind, template) {
                (ColumnKind::Prompt, Some(template)) => {
                    tokenizer.encode_prompt(&template.render_prompt(text)?)?
                }
                (ColumnKind::Prompt, None) => {
                    if parse_conversation(text).is_some() {
                        return Err(Error::invalid_value(
                            "prompt",
                            format!("of record {index}"),
                            "text, found a list of messages; measure it with a chat template \
                             (pyalign-data stats --chat-template)",
                        ));
                    }
                    tokenizer.encode_prompt(text)?
                }
                (ColumnKind::Response, _) => {
                    let text = response_text(text).map_err(|expected| {
                        Error::invalid_value("response", format!("of record {index}"), expected)
                    })?;
                    tokenizer.encode_response(&text)?
                }
            };
            Ok(ids.len())
        })
        .collect::<Result<Vec<usize>>>()?;
    Ok(ColumnStats {
        column: column.to_owned(),
        kind,
        summary: LengthSummary::from_lengths(lengths),
    })
}

/// Formats `stats` as an aligned text table with a header row.
pub fn format_table(stats: &[ColumnStats]) -> String {
    let width = stats
        .iter()
        .map(|stats| stats.column.len())
        .max()
        .unwrap_or(0)
        .max("column".len());
    let mut text = format!(
        "{:<width$}  {:<8}  {:>8}  {:>6}  {:>6}  {:>6}  {:>6}  {:>6}  {:>8}\n",
        "column", "kind", "count", "min", "p50", "p90", "p99", "max", "mean"
    );
    for column in stats {
        let kind = column.kind.as_str();
        let name = &column.column;
        match &column.summary {
            Some(s) => text.push_str(&format!(
                "{name:<width$}  {kind:<8}  {:>8}  {:>6}  {:>6}  {:>6}  {:>6}  {:>6}  {:>8.1}\n",
                s.count, s.min, s.p50, s.p90, s.p99, s.max, s.mean
            )),
            None => text.push_str(&format!("{name:<width$}  {kind:<8}  {:>8}\n", 0)),
        }
    }
    text
}

/// Returns `stats` as a JSON object keyed by column.
pub fn to_json(stats: &[ColumnStats]) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for column in stats {
        let value = match &column.summary {
            Some(s) => serde_json::json!({
                "kind": column.kind.as_str(),
                "count": s.count, "min": s.min, "p50": s.p50, "p90": s.p90, "p99": s.p99,
                "max": s.max, "mean": s.mean,
            }),
            None => serde_json::json!({"kind": column.kind.as_str(), "count": 0}),
        };
        object.insert(column.column.clone(), value);
    }
    serde_json::Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::tests::word_tokenizer;

    #[test]
    fn nearest_rank_percentiles() {
        let summary = LengthSummary::from_lengths((1..=100).rev().collect()).unwrap();

        assert_eq!(
            (
                summary.count,
                summary.min,
                summary.p50,
                summary.p90,
                summary.p99,
                summary.max
            ),
            (100, 1, 50, 90, 99, 100)
        );
        assert!((summary.mean - 50.5).abs() < 1e-12);
        let one = LengthSummary::from_lengths(vec![7]).unwrap();
        assert_eq!((one.p50, one.p99), (7, 7));
        assert_eq!(LengthSummary::from_lengths(Vec::new()), None);
    }

    #[test]
    fn prompt_and_response_rules() {
        let tokenizer = word_tokenizer(false, false, None);
        let values = vec!["hello world".to_owned(), "how".to_owned()];

        let prompts = column_stats(&tokenizer, "prompt", ColumnKind::Prompt, &values, None);
        let responses = column_stats(&tokenizer, "chosen", ColumnKind::Response, &values, None);

        // Prompts gain BOS and responses EOS: 3 and 2 tokens.
        let prompts = prompts.unwrap().summary.unwrap();
        assert_eq!((prompts.min, prompts.max), (2, 3));
        let table = format_table(&[responses.unwrap()]);
        assert!(table.starts_with("column  kind"), "{table}");
        assert!(table.contains("chosen  response         2"), "{table}");
    }
}
