//! Runs the `pyalign-data` binary as a user would.

mod common;

use std::io::Write;
use std::process::{Command, Output};

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

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pyalign-data"))
        .args(args)
        .output()
        .unwrap()
}

fn path_str(path: &std::path::Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn hh_rlhf_writes_csv_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let output = dir.path().join("pairs.csv");

    let result = run(&[
        "hh-rlhf",
        path_str(&input),
        "-o",
        path_str(&output),
        "--skip-bad-records",
    ]);

    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert!(
        stderr.contains("read 2 records, kept 1, wrote 1 rows, skipped 1"),
        "{stderr}"
    );
    assert!(stderr.contains("no_chosen_assistant_turn: 1"), "{stderr}");
    // The skipped malformed record is reported with its line.
    assert!(
        stderr.contains("hh.jsonl: line 2: invalid HH-RLHF record"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "prompt,chosen,rejected\nHi,Hello,No\n"
    );
}

#[test]
fn malformed_record_fails_without_skip() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let output = dir.path().join("pairs.csv");

    let result = run(&["hh-rlhf", path_str(&input), "-o", path_str(&output)]);

    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(
        stderr.contains("pyalign-data: error: ")
            && stderr.contains("hh.jsonl: line 2: invalid HH-RLHF record: chosen does not end"),
        "{stderr}"
    );
    assert!(stderr.contains("--skip-bad-records"), "{stderr}");
    assert!(!output.exists());
}

#[test]
fn hh_rlhf_kto_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let output = dir.path().join("rows.jsonl");

    let result = run(&[
        "hh-rlhf",
        path_str(&input),
        "-o",
        path_str(&output),
        "--format",
        "kto",
        "--max-samples",
        "1",
    ]);

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
fn full_context_creates_parent_folder() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let output = dir.path().join("new").join("folder").join("pairs.jsonl");

    let result = run(&[
        "hh-rlhf",
        path_str(&input),
        "-o",
        path_str(&output),
        "--prompt",
        "full-context",
        "--skip-bad-records",
    ]);

    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "{\"prompt\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"chosen\":\"Hello\",\
         \"rejected\":\"No\"}\n"
    );
}

#[test]
fn missing_input_fails_with_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");

    let result = run(&["hh-rlhf", path_str(&missing), "-o", "out.csv"]);

    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(stderr.contains("pyalign-data: error:"), "{stderr}");
    assert!(stderr.contains("missing.jsonl"), "{stderr}");
}

#[test]
fn bad_output_extension_fails_first() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");

    let result = run(&["hh-rlhf", path_str(&missing), "-o", "out.txt"]);

    // The output is checked before the input is opened, so the missing input goes unreported.
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(
        stderr.contains("out.txt: unsupported file extension"),
        "{stderr}"
    );
    assert!(
        stderr.contains("expected one of .csv, .jsonl, .parquet"),
        "{stderr}"
    );
}

#[test]
fn stats_prints_table_and_json() {
    let Some(tokenizer) = common::shared_path("tokenizers/llama2/tokenizer.json") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.csv");
    std::fs::write(
        &input,
        "prompt,chosen,rejected,id\nHello world,Hi there,No,1\nOnce upon a time,The end,x,2\n",
    )
    .unwrap();

    let result = run(&[
        "stats",
        path_str(&input),
        "--tokenizer",
        path_str(&tokenizer),
    ]);

    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert!(stderr.contains("read 2 records"), "{stderr}");
    assert!(stdout.starts_with("column    kind"), "{stdout}");
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    assert!(!stdout.contains("id "), "{stdout}");

    let result = run(&[
        "stats",
        path_str(&input),
        "--tokenizer",
        path_str(&tokenizer),
        "--json",
        "--response-columns",
        "chosen",
    ]);
    let stats: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    // "Hello world" is BOS + 2 tokens, "Once upon a time" BOS + 4.
    assert_eq!(stats["prompt"]["min"], 3);
    assert_eq!(stats["prompt"]["max"], 5);
    assert_eq!(stats["prompt"]["count"], 2);
    assert_eq!(stats["chosen"]["kind"], "response");
    assert!(stats.get("rejected").is_none());
}

#[test]
fn stats_without_known_columns_fails() {
    let Some(tokenizer) = common::shared_path("tokenizers/llama2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("other.csv");
    std::fs::write(&input, "question,answer\nq,a\n").unwrap();

    let result = run(&[
        "stats",
        path_str(&input),
        "--tokenizer",
        path_str(&tokenizer),
    ]);

    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(stderr.contains("[\"question\", \"answer\"]"), "{stderr}");
    assert!(stderr.contains("--prompt-column"), "{stderr}");
}

#[test]
fn stats_renders_messages_with_template_file() {
    let Some(tokenizer) = common::shared_path("tokenizers/llama2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let pairs = dir.path().join("pairs.jsonl");
    let template = dir.path().join("template.jinja");
    std::fs::write(
        &template,
        "{% for m in messages %}{{ m.content }}{% endfor %}",
    )
    .unwrap();
    let converted = run(&[
        "hh-rlhf",
        path_str(&input),
        "-o",
        path_str(&pairs),
        "--prompt",
        "full-context",
        "--skip-bad-records",
    ]);
    assert!(converted.status.success());

    let plain = run(&[
        "stats",
        path_str(&pairs),
        "--tokenizer",
        path_str(&tokenizer),
    ]);
    let rendered = run(&[
        "stats",
        path_str(&pairs),
        "--tokenizer",
        path_str(&tokenizer),
        "--chat-template-file",
        path_str(&template),
        "--json",
    ]);

    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success());
    assert!(
        stderr.contains("invalid prompt of record 0: expected text, found a list of messages"),
        "{stderr}"
    );
    let stats: serde_json::Value = serde_json::from_slice(&rendered.stdout).unwrap();
    // The template renders the single message "Hi": BOS and one token.
    assert_eq!(stats["prompt"]["max"], 2);
}
