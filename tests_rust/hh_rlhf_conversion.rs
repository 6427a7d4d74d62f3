//! HH-RLHF conversion from files: gzipped input, CSV, JSON Lines and Parquet output read back
//! with `read_table`, KTO rows, `max_samples`, the messages of malformed records with and
//! without `skip_bad_records`, and the real test split when the shared folder exists.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use pyalign::hh_rlhf::{self, ConvertOptions, OutputFormat, PromptMode};
use pyalign::table::{read_all_columns, read_table};

fn write_gzip_lines(dir: &Path, lines: &[String]) -> PathBuf {
    let path = dir.join("hh.jsonl.gz");
    let file = std::fs::File::create(&path).unwrap();
    let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    for line in lines {
        writeln!(encoder, "{line}").unwrap();
    }
    encoder.finish().unwrap();
    path
}

fn record(chosen: &str, rejected: &str) -> String {
    serde_json::json!({"chosen": chosen, "rejected": rejected}).to_string()
}

fn sample_input(dir: &Path) -> PathBuf {
    write_gzip_lines(
        dir,
        &[
            record(
                "\n\nHuman: Hi, \"you\"\n\nAssistant: Hello,\nfriend",
                "\n\nHuman: Hi, \"you\"\n\nAssistant: Go away",
            ),
            record(
                "\n\nHuman: Q2\n\nAssistant:",
                "\n\nHuman: Q2\n\nAssistant: y",
            ),
            record(
                "\n\nHuman: Q3\n\nAssistant: a3\n\nHuman: Q4\n\nAssistant: a4",
                "\n\nHuman: Q3\n\nAssistant: a3\n\nHuman: Q4\n\nAssistant: b4",
            ),
        ],
    )
}

fn columns(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

fn options(format: OutputFormat, prompt: PromptMode) -> ConvertOptions {
    ConvertOptions {
        format,
        prompt,
        ..ConvertOptions::default()
    }
}

#[test]
fn dpo_csv_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_input(dir.path());
    let output = dir.path().join("pairs.csv");

    let conversion =
        hh_rlhf::convert(&input, options(OutputFormat::Dpo, PromptMode::LastTurn)).unwrap();
    hh_rlhf::write_rows(&conversion, &output).unwrap();

    assert_eq!(conversion.num_read, 3);
    assert_eq!(conversion.num_kept, 2);
    assert_eq!(conversion.num_skipped(), 1);
    assert_eq!(
        conversion.skip_reasons.get("empty_chosen_response"),
        Some(&1)
    );
    let table = read_table(&output, &columns(&["prompt", "chosen", "rejected"])).unwrap();
    assert_eq!(table.column("prompt").unwrap(), ["Hi, \"you\"", "Q4"]);
    assert_eq!(table.column("chosen").unwrap(), ["Hello,\nfriend", "a4"]);
    assert_eq!(table.column("rejected").unwrap(), ["Go away", "b4"]);
}

#[test]
fn kto_jsonl_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_input(dir.path());
    let output = dir.path().join("rows.jsonl");

    let conversion =
        hh_rlhf::convert(&input, options(OutputFormat::Kto, PromptMode::LastTurn)).unwrap();
    hh_rlhf::write_rows(&conversion, &output).unwrap();

    assert_eq!(conversion.num_rows(), 4);
    let text = std::fs::read_to_string(&output).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        first,
        serde_json::json!({"prompt": "Hi, \"you\"", "response": "Hello,\nfriend", "label": true})
    );
    let table = read_table(&output, &columns(&["prompt", "response", "label"])).unwrap();
    assert_eq!(
        table.column("prompt").unwrap(),
        ["Hi, \"you\"", "Hi, \"you\"", "Q4", "Q4"]
    );
    assert_eq!(
        table.column("response").unwrap(),
        ["Hello,\nfriend", "Go away", "a4", "b4"]
    );
    assert_eq!(
        table.column("label").unwrap(),
        ["true", "false", "true", "false"]
    );
}

#[test]
fn full_context_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_input(dir.path());
    let conversion =
        hh_rlhf::convert(&input, options(OutputFormat::Dpo, PromptMode::FullContext)).unwrap();
    let expected_prompt = r#"[{"role":"user","content":"Q3"},{"role":"assistant","content":"a3"},{"role":"user","content":"Q4"}]"#;

    let mut tables = Vec::new();
    for name in ["pairs.csv", "pairs.jsonl", "made/here/pairs.parquet"] {
        let output = dir.path().join(name);
        hh_rlhf::write_rows(&conversion, &output).unwrap();
        tables.push(read_all_columns(&output).unwrap());
    }

    assert_eq!(tables[0].column("prompt").unwrap()[1], expected_prompt);
    assert_eq!(tables[0], tables[1]);
    assert_eq!(tables[0], tables[2]);
    assert_eq!(conversion.rows()[1][0], expected_prompt);
    // JSON Lines stores the prompt as an array, not as a string.
    let text = std::fs::read_to_string(dir.path().join("pairs.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(first["prompt"].is_array(), "{first}");
}

#[test]
fn max_samples_counts_kept_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_input(dir.path());
    let mut options = options(OutputFormat::Kto, PromptMode::LastTurn);
    options.max_samples = Some(1);

    let conversion = hh_rlhf::convert(&input, options).unwrap();

    assert_eq!(conversion.num_read, 1);
    assert_eq!(conversion.num_kept, 1);
    assert_eq!(conversion.num_rows(), 2);
    assert_eq!(
        conversion.summary(),
        "read 1 records, kept 1, wrote 2 rows, skipped 0"
    );
}

#[test]
fn unsupported_output_extension() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_input(dir.path());
    let conversion = hh_rlhf::convert(&input, ConvertOptions::default()).unwrap();

    let error = hh_rlhf::write_rows(&conversion, &dir.path().join("pairs.txt")).unwrap_err();

    assert!(
        error
            .to_string()
            .contains("expected one of .csv, .jsonl, .parquet"),
        "{error}"
    );
}

/// Lines of one malformed record each, after a good first line, with the reason it is
/// counted under and a part of the error it raises without `skip_bad_records`.
fn malformed_lines() -> Vec<(String, &'static str, &'static str)> {
    vec![
        (
            "{\"chosen\": ".to_owned(),
            "invalid_json",
            "line 2: invalid JSON: EOF while parsing",
        ),
        (
            "[1, 2]".to_owned(),
            "invalid_json",
            "line 2: expected a JSON object, found an array",
        ),
        (
            serde_json::json!({"chosen": "x"}).to_string(),
            "missing_column",
            "line 2: no column \"rejected\"",
        ),
        (
            record("\n\nHuman: Only a question", "\n\nHuman: Q\n\nAssistant: x"),
            "no_chosen_assistant_turn",
            "line 2: invalid HH-RLHF record: chosen does not end with an \"Assistant:\" turn",
        ),
        (
            record(
                "\n\nHuman: Q\n\nAssistant: x",
                "\n\nHuman: Q\n\nAssistant: x\n\nHuman: more",
            ),
            "no_rejected_assistant_turn",
            "line 2: invalid HH-RLHF record: rejected does not end",
        ),
        (
            record(
                "\n\nHuman: A\n\nAssistant: x",
                "\n\nHuman: B\n\nAssistant: x",
            ),
            "no_shared_prompt",
            "line 2: invalid HH-RLHF record: chosen and rejected do not start with the same",
        ),
    ]
}

#[test]
fn malformed_record_messages() {
    let dir = tempfile::tempdir().unwrap();
    let good = record(
        "\n\nHuman: Q\n\nAssistant: a",
        "\n\nHuman: Q\n\nAssistant: b",
    );
    for (line, _, expected) in malformed_lines() {
        let input = write_gzip_lines(dir.path(), &[good.clone(), line.clone()]);

        let error = hh_rlhf::convert(&input, ConvertOptions::default()).unwrap_err();

        let message = error.to_string();
        assert!(
            message.starts_with(&input.display().to_string()),
            "{message}"
        );
        assert!(message.contains(expected), "{line}: {message}");
    }
}

#[test]
fn invalid_utf8_line_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hh.jsonl");
    let good = record(
        "\n\nHuman: Q\n\nAssistant: a",
        "\n\nHuman: Q\n\nAssistant: b",
    );
    std::fs::write(
        &path,
        [good.as_bytes(), b"\n{\"chosen\": \"\xff\"}\n"].concat(),
    )
    .unwrap();

    let error = hh_rlhf::convert(&path, ConvertOptions::default()).unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("hh.jsonl: line 2 is not valid UTF-8"),
        "{error}"
    );

    let options = ConvertOptions {
        skip_bad_records: true,
        ..ConvertOptions::default()
    };
    let conversion = hh_rlhf::convert(&path, options).unwrap();
    assert_eq!(conversion.skip_reasons.get("invalid_utf8"), Some(&1));
    assert_eq!(conversion.num_kept, 1);
}

#[test]
fn skip_bad_records_counts_each_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = record(
        "\n\nHuman: Q\n\nAssistant: a",
        "\n\nHuman: Q\n\nAssistant: b",
    );
    let cases = malformed_lines();
    let mut lines = vec![good.clone()];
    lines.extend(cases.iter().map(|(line, _, _)| line.clone()));
    lines.push(good);
    let input = write_gzip_lines(dir.path(), &lines);
    let options = ConvertOptions {
        skip_bad_records: true,
        ..ConvertOptions::default()
    };

    let conversion = hh_rlhf::convert(&input, options).unwrap();

    assert_eq!(conversion.num_read, lines.len());
    assert_eq!(conversion.num_kept, 2);
    assert_eq!(conversion.num_skipped(), cases.len());
    for (_, reason, _) in &cases {
        let expected = cases.iter().filter(|(_, other, _)| other == reason).count();
        assert_eq!(
            conversion.skip_reasons.get(*reason),
            Some(&expected),
            "{reason}"
        );
    }
}

#[test]
fn parquet_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hh.parquet");
    let chosen = ["\n\nHuman: Q\n\nAssistant: a"];
    let rejected = ["\n\nHuman: Q\n\nAssistant: b"];
    pyalign::table_writer::write_table(
        &path,
        &[
            ("chosen", pyalign::table_writer::ColumnValues::Text(&chosen)),
            (
                "rejected",
                pyalign::table_writer::ColumnValues::Text(&rejected),
            ),
        ],
    )
    .unwrap();

    let conversion = hh_rlhf::convert(&path, ConvertOptions::default()).unwrap();

    assert_eq!(conversion.rows(), [["Q", "a", "b"]]);
}

#[test]
fn real_test_split() {
    let Some(input) = common::shared_path("data/hh-rlhf/harmless-base-test.jsonl.gz") else {
        return;
    };

    for prompt in [PromptMode::LastTurn, PromptMode::FullContext] {
        let conversion = hh_rlhf::convert(&input, options(OutputFormat::Dpo, prompt)).unwrap();

        assert_eq!(conversion.num_read, 2312);
        assert_eq!(
            conversion.num_kept + conversion.num_skipped(),
            conversion.num_read
        );
        assert!(conversion.num_kept > 2300, "{}", conversion.summary());
        for row in conversion.rows() {
            assert!(row.iter().all(|value| !value.is_empty()), "{row:?}");
            assert!(row.iter().all(|value| value.trim() == value), "{row:?}");
            assert!(!row[0].contains("\n\nAssistant:"), "{:?}", row[0]);
        }
    }
}
