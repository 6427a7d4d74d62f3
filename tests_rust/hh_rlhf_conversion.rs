//! HH-RLHF conversion from files: gzipped input, CSV and JSON Lines output read back with
//! `read_table`, KTO rows, `max_samples`, and the real test split when the shared folder exists.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use pyalign::hh_rlhf::{self, ConvertOptions, OutputFormat};
use pyalign::table::read_table;

fn write_gzip_lines(dir: &Path, lines: &[serde_json::Value]) -> PathBuf {
    let path = dir.join("hh.jsonl.gz");
    let file = std::fs::File::create(&path).unwrap();
    let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    for line in lines {
        writeln!(encoder, "{line}").unwrap();
    }
    encoder.finish().unwrap();
    path
}

fn record(chosen: &str, rejected: &str) -> serde_json::Value {
    serde_json::json!({"chosen": chosen, "rejected": rejected})
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
                "\n\nHuman: Only a question",
                "\n\nHuman: Only a question\n\nAssistant: x",
            ),
            record(
                "\n\nHuman: Q2\n\nAssistant:",
                "\n\nHuman: Q2\n\nAssistant: y",
            ),
            record(
                "\n\nHuman: Q3\n\nAssistant: a3",
                "\n\nHuman: Q3\n\nAssistant: b3",
            ),
        ],
    )
}

fn columns(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

#[test]
fn dpo_csv_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_input(dir.path());
    let output = dir.path().join("pairs.csv");

    let options = ConvertOptions {
        format: OutputFormat::Dpo,
        max_samples: None,
    };
    let conversion = hh_rlhf::convert(&input, options).unwrap();
    hh_rlhf::write_rows(&conversion, &output, OutputFormat::Dpo).unwrap();

    assert_eq!(conversion.num_read, 4);
    assert_eq!(conversion.num_kept, 2);
    assert_eq!(conversion.num_skipped(), 2);
    assert_eq!(
        conversion.skip_reasons.get("no_chosen_assistant_turn"),
        Some(&1)
    );
    assert_eq!(
        conversion.skip_reasons.get("empty_chosen_response"),
        Some(&1)
    );
    let table = read_table(&output, &columns(&["prompt", "chosen", "rejected"])).unwrap();
    assert_eq!(table.column("prompt").unwrap(), ["Hi, \"you\"", "Q3"]);
    assert_eq!(table.column("chosen").unwrap(), ["Hello,\nfriend", "a3"]);
    assert_eq!(table.column("rejected").unwrap(), ["Go away", "b3"]);
}

#[test]
fn kto_jsonl_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_input(dir.path());
    let output = dir.path().join("rows.jsonl");

    let options = ConvertOptions {
        format: OutputFormat::Kto,
        max_samples: None,
    };
    let conversion = hh_rlhf::convert(&input, options).unwrap();
    hh_rlhf::write_rows(&conversion, &output, OutputFormat::Kto).unwrap();

    assert_eq!(conversion.rows.len(), 4);
    let text = std::fs::read_to_string(&output).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        first,
        serde_json::json!({"prompt": "Hi, \"you\"", "response": "Hello,\nfriend", "label": true})
    );
    let table = read_table(&output, &columns(&["prompt", "response", "label"])).unwrap();
    assert_eq!(
        table.column("prompt").unwrap(),
        ["Hi, \"you\"", "Hi, \"you\"", "Q3", "Q3"]
    );
    assert_eq!(
        table.column("response").unwrap(),
        ["Hello,\nfriend", "Go away", "a3", "b3"]
    );
    assert_eq!(
        table.column("label").unwrap(),
        ["true", "false", "true", "false"]
    );
}

#[test]
fn max_samples_counts_kept_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_input(dir.path());

    let options = ConvertOptions {
        format: OutputFormat::Kto,
        max_samples: Some(1),
    };
    let conversion = hh_rlhf::convert(&input, options).unwrap();

    assert_eq!(conversion.num_read, 1);
    assert_eq!(conversion.num_kept, 1);
    assert_eq!(conversion.rows.len(), 2);
    assert_eq!(
        conversion.summary(),
        "read 1 records, kept 1, wrote 2 rows, skipped 0"
    );
}

#[test]
fn unsupported_output_extension() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_input(dir.path());
    let options = ConvertOptions {
        format: OutputFormat::Dpo,
        max_samples: None,
    };
    let conversion = hh_rlhf::convert(&input, options).unwrap();

    let error = hh_rlhf::write_rows(
        &conversion,
        &dir.path().join("pairs.parquet"),
        OutputFormat::Dpo,
    )
    .unwrap_err();

    assert!(
        error.to_string().contains("expected one of .csv, .jsonl"),
        "{error}"
    );
}

#[test]
fn missing_rejected_field_is_key_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_gzip_lines(dir.path(), &[serde_json::json!({"chosen": "x"})]);
    let options = ConvertOptions {
        format: OutputFormat::Dpo,
        max_samples: None,
    };

    let error = hh_rlhf::convert(&input, options).unwrap_err();

    assert!(
        matches!(error, pyalign::Error::MissingColumn { .. }),
        "{error:?}"
    );
}

#[test]
fn real_test_split() {
    let Some(input) = common::shared_path("data/hh-rlhf/harmless-base-test.jsonl.gz") else {
        return;
    };
    let options = ConvertOptions {
        format: OutputFormat::Dpo,
        max_samples: None,
    };

    let conversion = hh_rlhf::convert(&input, options).unwrap();

    assert_eq!(conversion.num_read, 2312);
    assert_eq!(
        conversion.num_kept + conversion.num_skipped(),
        conversion.num_read
    );
    assert!(conversion.num_kept > 2300, "{}", conversion.summary());
    for row in &conversion.rows {
        assert!(row.iter().all(|value| !value.is_empty()), "{row:?}");
        assert!(row.iter().all(|value| value.trim() == value), "{row:?}");
        assert!(!row[0].contains("\n\nAssistant:"), "{:?}", row[0]);
        assert!(!row[1].contains("\n\nHuman:"), "{:?}", row[1]);
        assert!(!row[2].contains("\n\nHuman:"), "{:?}", row[2]);
    }
}
