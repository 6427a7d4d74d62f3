//! Runs the `pyalign-data` binary as a user would.

use std::io::Write;
use std::process::Command;

fn write_input(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("hh.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    let lines = [
        serde_json::json!({
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello",
            "rejected": "\n\nHuman: Hi\n\nAssistant: No",
        }),
        serde_json::json!({
            "chosen": "\n\nHuman: Hi",
            "rejected": "\n\nHuman: Hi\n\nAssistant: No",
        }),
    ];
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
    path
}

#[test]
fn hh_rlhf_writes_csv_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let output = dir.path().join("pairs.csv");

    let result = Command::new(env!("CARGO_BIN_EXE_pyalign-data"))
        .args([
            "hh-rlhf",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ])
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert!(
        stderr.contains("read 2 records, kept 1, wrote 1 rows, skipped 1"),
        "{stderr}"
    );
    assert!(stderr.contains("no_chosen_assistant_turn: 1"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "prompt,chosen,rejected\nHi,Hello,No\n"
    );
}

#[test]
fn hh_rlhf_kto_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let output = dir.path().join("rows.jsonl");

    let result = Command::new(env!("CARGO_BIN_EXE_pyalign-data"))
        .args([
            "hh-rlhf",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ])
        .args(["--format", "kto", "--max-samples", "5"])
        .output()
        .unwrap();

    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let text = std::fs::read_to_string(&output).unwrap();
    assert_eq!(
        text,
        "{\"prompt\":\"Hi\",\"response\":\"Hello\",\"label\":true}\n\
         {\"prompt\":\"Hi\",\"response\":\"No\",\"label\":false}\n"
    );
}

#[test]
fn missing_input_fails_with_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");

    let result = Command::new(env!("CARGO_BIN_EXE_pyalign-data"))
        .args(["hh-rlhf", missing.to_str().unwrap(), "-o", "out.csv"])
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(stderr.contains("pyalign-data: error:"), "{stderr}");
    assert!(stderr.contains("missing.jsonl"), "{stderr}");
}

#[test]
fn bad_output_extension_fails_first() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");

    let result = Command::new(env!("CARGO_BIN_EXE_pyalign-data"))
        .args(["hh-rlhf", missing.to_str().unwrap(), "-o", "out.txt"])
        .output()
        .unwrap();

    // The output is checked before the input is opened, so the missing input goes unreported.
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(
        stderr.contains("out.txt: unsupported file extension"),
        "{stderr}"
    );
    assert!(stderr.contains("expected one of .csv, .jsonl"), "{stderr}");
}
