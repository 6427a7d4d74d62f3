//! `pyalign-data`: prepares preference data files for pyalign without Python.
//!
//! ```text
//! pyalign-data hh-rlhf harmless-base-test.jsonl.gz -o pairs.csv
//! pyalign-data hh-rlhf train.jsonl.gz -o rows.jsonl --format kto --max-samples 1000
//! pyalign-data hh-rlhf train.jsonl.gz -o chat/pairs.parquet --prompt full-context
//! pyalign-data stats pairs.csv --tokenizer tokenizer.json
//! ```
//!
//! Progress and summaries go to stderr, results of `stats` to stdout. Set `RUST_LOG=debug` to
//! see where the first skipped records of each reason sit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use pyalign::hh_rlhf::{self, ConvertOptions, OutputFormat, PromptMode};
use pyalign::stats::{self, ColumnKind, ColumnStats};
use pyalign::{table, SpecialTokens, TextTokenizer};

#[derive(Parser)]
#[command(
    name = "pyalign-data",
    version,
    about = "Prepare preference data for pyalign"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert Anthropic HH-RLHF conversations to prompt, chosen and rejected columns.
    ///
    /// The prompt is the conversation the two share up to their last common human turn, and
    /// each response the rest of its conversation, usually the final assistant turn. Records
    /// with an empty part are skipped and counted. A malformed record (bad JSON or UTF-8, a
    /// missing column, no final assistant turn) stops the conversion unless
    /// --skip-bad-records is given.
    HhRlhf {
        /// HH-RLHF records with "chosen" and "rejected" columns: .jsonl(.gz), .json(.gz),
        /// .csv(.gz) or .parquet.
        input: PathBuf,
        /// Output file; its extension selects CSV (.csv), JSON Lines (.jsonl) or Parquet
        /// (.parquet). Missing parent folders are created.
        #[arg(short, long)]
        output: PathBuf,
        /// Output layout. dpo writes one row per pair with prompt, chosen and rejected. kto
        /// writes two rows per pair with prompt, response and a true or false label.
        #[arg(long, value_enum, default_value_t = Format::Dpo)]
        format: Format,
        /// Prompt content. last-turn: the text of the last shared human turn. full-context:
        /// every shared turn as a list of {role, content} messages for a chat template,
        /// written as a JSON string in CSV, a JSON array in JSON Lines and a list of structs
        /// in Parquet.
        #[arg(long, value_enum, default_value_t = Prompt::LastTurn)]
        prompt: Prompt,
        /// Stop after this many kept pairs.
        #[arg(long, value_name = "N")]
        max_samples: Option<usize>,
        /// Count malformed records as skips instead of stopping at the first one.
        #[arg(long)]
        skip_bad_records: bool,
    },
    /// Print the token-length distribution of a data set's prompt and response columns.
    ///
    /// Prompts are measured with one BOS and responses with one EOS, before truncation.
    Stats {
        /// A table with a prompt column and one or more response columns, in any format that
        /// pyalign reads.
        input: PathBuf,
        /// tokenizer.json, or a folder containing it and tokenizer_config.json.
        #[arg(long)]
        tokenizer: PathBuf,
        /// The prompt column. Default: "prompt" when the file has one.
        #[arg(long, value_name = "NAME")]
        prompt_column: Option<String>,
        /// Comma-separated response columns. Default: those of chosen, rejected, response
        /// and completion that the file has.
        #[arg(long, value_name = "NAMES", value_delimiter = ',')]
        response_columns: Option<Vec<String>>,
        /// Render prompts with the tokenizer's chat template (from chat_template.jinja or
        /// tokenizer_config.json) before measuring them. Needed for prompts that are lists of
        /// messages.
        #[arg(long, conflicts_with = "chat_template_file")]
        chat_template: bool,
        /// Render prompts with the Jinja chat template in FILE before measuring them.
        #[arg(long, value_name = "FILE")]
        chat_template_file: Option<PathBuf>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Dpo,
    Kto,
}

impl From<Format> for OutputFormat {
    fn from(format: Format) -> Self {
        match format {
            Format::Dpo => OutputFormat::Dpo,
            Format::Kto => OutputFormat::Kto,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Prompt {
    LastTurn,
    FullContext,
}

impl From<Prompt> for PromptMode {
    fn from(prompt: Prompt) -> Self {
        match prompt {
            Prompt::LastTurn => PromptMode::LastTurn,
            Prompt::FullContext => PromptMode::FullContext,
        }
    }
}

const RESPONSE_COLUMNS: [&str; 4] = ["chosen", "rejected", "response", "completion"];

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::HhRlhf {
            input,
            output,
            format,
            prompt,
            max_samples,
            skip_bad_records,
        } => {
            let options = ConvertOptions {
                format: format.into(),
                max_samples,
                prompt: prompt.into(),
                skip_bad_records,
            };
            convert_hh_rlhf(&input, &output, options)
        }
        Command::Stats {
            input,
            tokenizer,
            prompt_column,
            response_columns,
            chat_template,
            chat_template_file,
            json,
        } => {
            let columns = StatsColumns {
                prompt: prompt_column,
                responses: response_columns,
            };
            let template = match (chat_template, chat_template_file) {
                (_, Some(path)) => TemplateChoice::File(path),
                (true, None) => TemplateChoice::Tokenizer,
                (false, None) => TemplateChoice::None,
            };
            print_stats(&input, &tokenizer, columns, template, json)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pyalign-data: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn convert_hh_rlhf(
    input: &std::path::Path,
    output: &std::path::Path,
    options: ConvertOptions,
) -> pyalign::Result<()> {
    hh_rlhf::check_output_path(output)?;
    eprintln!("pyalign-data: converting {}", input.display());
    let mut progress = |num_read: usize| eprintln!("pyalign-data: read {num_read} records");
    let conversion = hh_rlhf::convert_with_progress(input, options, &mut progress)?;
    hh_rlhf::write_rows(&conversion, output)?;
    eprintln!("{}: {}", output.display(), conversion.summary());
    Ok(())
}

/// The chat template that `stats` renders prompts with.
enum TemplateChoice {
    None,
    Tokenizer,
    File(PathBuf),
}

struct StatsColumns {
    prompt: Option<String>,
    responses: Option<Vec<String>>,
}

impl StatsColumns {
    /// Returns the columns to measure with their kind, checking them against `found`.
    fn resolve(
        self,
        input: &std::path::Path,
        found: &[String],
    ) -> pyalign::Result<Vec<(String, ColumnKind)>> {
        let has = |name: &str| found.iter().any(|column| column == name);
        let prompt = self
            .prompt
            .or_else(|| has("prompt").then(|| "prompt".to_owned()));
        let responses = self.responses.unwrap_or_else(|| {
            RESPONSE_COLUMNS
                .iter()
                .filter(|name| has(name))
                .map(|name| name.to_string())
                .collect()
        });
        let mut columns: Vec<(String, ColumnKind)> = Vec::new();
        columns.extend(prompt.map(|name| (name, ColumnKind::Prompt)));
        columns.extend(
            responses
                .into_iter()
                .map(|name| (name, ColumnKind::Response)),
        );
        if columns.is_empty() {
            return Err(pyalign::Error::invalid_value(
                "columns",
                format!("of {}", input.display()),
                format!(
                    "a \"prompt\" column or one of {RESPONSE_COLUMNS:?}, found {found:?}; name \
                     them with --prompt-column and --response-columns"
                ),
            ));
        }
        Ok(columns)
    }
}

fn print_stats(
    input: &std::path::Path,
    tokenizer_path: &std::path::Path,
    columns: StatsColumns,
    template: TemplateChoice,
    json: bool,
) -> pyalign::Result<()> {
    let tokenizer = TextTokenizer::from_path(tokenizer_path, &SpecialTokens::default())?;
    let template = match template {
        TemplateChoice::None => None,
        TemplateChoice::Tokenizer => Some(tokenizer.chat_template(None)?),
        TemplateChoice::File(path) => {
            let source = std::fs::read_to_string(&path).map_err(|source| pyalign::Error::Io {
                path: path.clone(),
                source,
            })?;
            Some(tokenizer.chat_template(Some(&source))?)
        }
    };
    let columns = columns.resolve(input, &table::list_columns(input)?)?;
    let names: Vec<String> = columns.iter().map(|(name, _)| name.clone()).collect();
    let table = table::read_table(input, &names)?;
    eprintln!(
        "pyalign-data: read {} records from {}, tokenizing {} columns",
        table.num_rows(),
        input.display(),
        names.len()
    );

    let mut results: Vec<ColumnStats> = Vec::with_capacity(columns.len());
    for (position, (name, kind)) in columns.iter().enumerate() {
        let values = &table.values[position];
        let result = stats::column_stats(&tokenizer, name, *kind, values, template.as_ref())?;
        eprintln!("pyalign-data: tokenized {name}");
        results.push(result);
    }

    if json {
        println!("{}", stats::to_json(&results));
    } else {
        print!("{}", stats::format_table(&results));
    }
    Ok(())
}

/// Sends `log` records at or above the level in `RUST_LOG` (error, warn, info, debug, trace)
/// to stderr. Without `RUST_LOG` only warnings and errors are logged, because the summary
/// lines already report the counts.
fn init_logging() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|level| level.parse().ok())
        .unwrap_or(log::LevelFilter::Warn);
    log::set_max_level(level);
    // Only fails when a logger is already set, and none is at this point.
    let _ = log::set_logger(&STDERR_LOGGER);
}

struct StderrLogger;

static STDERR_LOGGER: StderrLogger = StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // The tokenizers crate logs its own details at info; only its problems matter here.
        let noisy =
            metadata.target().starts_with("tokenizers") && metadata.level() > log::Level::Warn;
        metadata.level() <= log::max_level() && !noisy
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            eprintln!("[{}] {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}
