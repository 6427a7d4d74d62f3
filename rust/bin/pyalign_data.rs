//! `pyalign-data`: prepares preference data files for pyalign without Python.
//!
//! ```text
//! pyalign-data hh-rlhf harmless-base-test.jsonl.gz -o pairs.csv
//! pyalign-data hh-rlhf train.jsonl.gz -o rows.jsonl --format kto --max-samples 1000
//! ```
//!
//! Set `RUST_LOG=debug` to see where the first skipped records of each reason sit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use pyalign::hh_rlhf::{self, ConvertOptions, OutputFormat};

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
    /// The prompt is the last human turn and each response the last assistant turn. Records
    /// with an empty part or without a final assistant turn are skipped and counted.
    HhRlhf {
        /// HH-RLHF records, one JSON object with "chosen" and "rejected" per line
        /// (.jsonl or .jsonl.gz).
        input: PathBuf,
        /// Output file. Its extension selects CSV (.csv) or JSON Lines (.jsonl).
        #[arg(short, long)]
        output: PathBuf,
        /// Output layout. dpo writes one row per pair with prompt, chosen and rejected. kto
        /// writes two rows per pair with prompt, response and a true or false label.
        #[arg(long, value_enum, default_value_t = Format::Dpo)]
        format: Format,
        /// Stop after this many kept pairs.
        #[arg(long, value_name = "N")]
        max_samples: Option<usize>,
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

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pyalign-data: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> pyalign::Result<()> {
    match command {
        Command::HhRlhf {
            input,
            output,
            format,
            max_samples,
        } => {
            let format = OutputFormat::from(format);
            hh_rlhf::check_output_path(&output)?;
            let conversion = hh_rlhf::convert(
                &input,
                ConvertOptions {
                    format,
                    max_samples,
                },
            )?;
            hh_rlhf::write_rows(&conversion, &output, format)?;
            eprintln!("{}: {}", output.display(), conversion.summary());
            Ok(())
        }
    }
}

/// Sends `log` records at or above the level in `RUST_LOG` (error, warn, info, debug, trace)
/// to stderr. Without `RUST_LOG` nothing is logged, because the summary line already reports
/// the counts.
fn init_logging() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|level| level.parse().ok());
    if let Some(level) = level {
        log::set_max_level(level);
        // Only fails when a logger is already set, and none is at this point.
        let _ = log::set_logger(&STDERR_LOGGER);
    }
}

struct StderrLogger;

static STDERR_LOGGER: StderrLogger = StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            eprintln!("[{}] {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}
