//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::PathBuf;

/// Returns the folder with the shared tokenizers and data sets: `PYALIGN_SHARED` when set,
/// else `../shared` beside the repository. Prints why and returns `None` when `relative`
/// is missing under it, so the calling test can return early as a skip.
pub fn shared_path(relative: &str) -> Option<PathBuf> {
    let root = match std::env::var_os("PYALIGN_SHARED") {
        Some(root) => PathBuf::from(root),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("shared"),
    };
    let path = root.join(relative);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "skipped: {} not found (set PYALIGN_SHARED to the shared folder)",
            path.display()
        );
        None
    }
}

/// Builds a word-level tokenizer over whitespace-separated words: `<unk>` 0, `<s>` 1 (BOS),
/// `</s>` 2 (EOS), `<pad>` 3, then `words` from id 4. With `adds_bos` its post-processor
/// prepends `<s>`, and with `adds_eos` it appends `</s>`.
pub fn word_tokenizer(words: &[&str], adds_bos: bool, adds_eos: bool) -> pyalign::TextTokenizer {
    let mut single = Vec::new();
    if adds_bos {
        single.push(serde_json::json!({"SpecialToken": {"id": "<s>", "type_id": 0}}));
    }
    single.push(serde_json::json!({"Sequence": {"id": "A", "type_id": 0}}));
    if adds_eos {
        single.push(serde_json::json!({"SpecialToken": {"id": "</s>", "type_id": 0}}));
    }
    let mut vocab = serde_json::Map::new();
    let specials = ["<unk>", "<s>", "</s>", "<pad>"];
    for (id, word) in specials.iter().chain(words).enumerate() {
        vocab.insert(word.to_string(), serde_json::json!(id));
    }
    let added: Vec<serde_json::Value> = specials[1..]
        .iter()
        .enumerate()
        .map(|(offset, token)| {
            serde_json::json!({"id": offset + 1, "content": token, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": single,
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}
            }
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    let inner: tokenizers::Tokenizer = json.to_string().parse().unwrap();
    pyalign::TextTokenizer::from_parts(inner, "word-tokenizer", Some(1), Some(2), Some(3))
}
