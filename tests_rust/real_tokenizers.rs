//! Tokenization and batching with the two real tokenizers in the shared folder: Llama 2
//! (32,000 tokens, its post-processor adds no BOS) and stories260K (512 tokens, its
//! post-processor adds BOS). Each test prints a reason and passes when the folder is missing.

mod common;

use pyalign::hh_rlhf::{self, ConvertOptions, OutputFormat};
use pyalign::{
    LengthLimits, PairDataset, ResponseDataset, SpecialTokens, TextTokenizer, TruncationMode,
};

const LLAMA2: &str = "tokenizers/llama2";
const STORIES: &str = "models/stories260K";
const HH_RLHF: &str = "data/hh-rlhf/harmless-base-test.jsonl.gz";

const BOS: u32 = 1;
const EOS: u32 = 2;

fn load(relative: &str) -> Option<TextTokenizer> {
    let path = common::shared_path(relative)?;
    Some(TextTokenizer::from_path(&path, &SpecialTokens::default()).unwrap())
}

#[test]
fn special_tokens_from_config() {
    for relative in [LLAMA2, STORIES] {
        let Some(tokenizer) = load(relative) else {
            return;
        };

        assert_eq!(tokenizer.bos_token_id(), Some(BOS), "{relative}");
        assert_eq!(tokenizer.eos_token_id(), Some(EOS), "{relative}");
        // Neither config names a padding token, so padding falls back to EOS.
        assert_eq!(tokenizer.pad_token_id(), EOS, "{relative}");
    }
    let Some(llama2) = load(LLAMA2) else { return };
    let Some(stories) = load(STORIES) else { return };
    assert_eq!(llama2.vocab_size(), 32000);
    assert_eq!(stories.vocab_size(), 512);
}

#[test]
fn golden_ids() {
    // Ids from transformers' PreTrainedTokenizerFast on the same tokenizer.json files.
    let Some(llama2) = load(LLAMA2) else { return };
    let Some(stories) = load(STORIES) else { return };

    assert_eq!(llama2.encode("Hello world", true).unwrap(), [15043, 3186]);
    assert_eq!(
        stories.encode("Hello world", true).unwrap(),
        [BOS, 346, 306, 414, 263, 304, 341]
    );
    assert_eq!(
        stories.encode("Hello world", false).unwrap(),
        [346, 306, 414, 263, 304, 341]
    );
}

#[test]
fn prompt_has_bos_once() {
    for relative in [LLAMA2, STORIES] {
        let Some(tokenizer) = load(relative) else {
            return;
        };
        let plain = tokenizer.encode("Hello world", false).unwrap();

        for text in ["Hello world", "<s>Hello world", "<s><s>Hello world"] {
            let prompt = tokenizer.encode_prompt(text).unwrap();

            assert_eq!(prompt[0], BOS, "{relative} {text:?}");
            assert_eq!(
                prompt.iter().filter(|&&id| id == BOS).count(),
                1,
                "{relative} {text:?}"
            );
            assert_eq!(prompt.last(), plain.last(), "{relative} {text:?}");
        }
    }
}

#[test]
fn response_has_eos_once() {
    for relative in [LLAMA2, STORIES] {
        let Some(tokenizer) = load(relative) else {
            return;
        };

        for text in ["It was sunny.", "It was sunny.</s>"] {
            let response = tokenizer.encode_response(text).unwrap();

            assert_eq!(response.last(), Some(&EOS), "{relative} {text:?}");
            assert_eq!(
                response.iter().filter(|&&id| id == EOS).count(),
                1,
                "{relative} {text:?}"
            );
            assert!(!response.contains(&BOS), "{relative} {text:?}");
        }
    }
}

#[test]
fn hh_rlhf_batches_keep_invariants() {
    let Some(data) = common::shared_path(HH_RLHF) else {
        return;
    };
    // 300 pairs keep the debug-build test fast.
    let options = ConvertOptions {
        format: OutputFormat::Dpo,
        max_samples: Some(300),
        ..ConvertOptions::default()
    };
    let conversion = hh_rlhf::convert(&data, options).unwrap();
    let rows = conversion.rows();
    let column =
        |position: usize| -> Vec<String> { rows.iter().map(|row| row[position].clone()).collect() };
    let (prompts, chosen, rejected) = (column(0), column(1), column(2));
    let count = prompts.len();

    for relative in [LLAMA2, STORIES] {
        let Some(tokenizer) = load(relative) else {
            return;
        };
        let settings = [
            (64, Some(16), TruncationMode::KeepEnd),
            (256, None, TruncationMode::KeepEnd),
            (8, None, TruncationMode::KeepStart),
        ];
        for (max_length, max_prompt_length, mode) in settings {
            let limits = LengthLimits::new(max_length, max_prompt_length, mode).unwrap();
            let dataset =
                PairDataset::new(&tokenizer, &prompts, &chosen, &rejected, limits).unwrap();
            let case = format!("{relative} max_length {max_length}");

            assert_eq!(dataset.len() + dataset.num_dropped(), count, "{case}");
            let indices: Vec<usize> = (0..dataset.len()).collect();
            let batch = dataset.collate(&indices, 8).unwrap();
            let pairs = dataset.len();
            assert_eq!(batch.num_rows, 2 * pairs, "{case}");
            assert_eq!(batch.num_columns % 8, 0, "{case}");

            for (pair_index, length) in dataset.lengths().into_iter().enumerate() {
                assert!(length <= max_length, "{case}");
                let pair = dataset.pair(pair_index);
                for row in [pair_index, pairs + pair_index] {
                    let start = row * batch.num_columns;
                    let ids = &batch.input_ids[start..start + batch.num_columns];
                    let labels = &batch.label_mask[start..start + batch.num_columns];
                    let prompt: Vec<i64> = pair.prompt.iter().map(|&id| i64::from(id)).collect();

                    assert_eq!(&ids[..prompt.len()], prompt.as_slice(), "{case}");
                    assert_eq!(ids[0], i64::from(BOS), "{case}");
                    assert!(labels[..prompt.len()].iter().all(|&label| !label), "{case}");
                    assert!(labels[prompt.len()], "{case}");
                }
            }
        }
    }
}

/// Texts whose characters take two to four UTF-8 bytes, which byte-fallback tokenizers spell
/// as runs of `<0xNN>` tokens where the vocabulary lacks the character.
const MULTI_BYTE: [&str; 4] = [
    "Ünïcödé, emoji 🙂🚀 and 中文字符",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🧪🧬🔭 ꙮ",
    "Привет, мир! Ελληνικά",
    "日本語のテキストです。",
];

#[test]
fn truncation_never_splits_a_character() {
    for relative in [LLAMA2, STORIES] {
        let Some(tokenizer) = load(relative) else {
            return;
        };
        let mut num_continuations = 0;
        for text in MULTI_BYTE {
            let full = tokenizer.encode(text, false).unwrap();
            let boundaries = tokenizer.char_boundaries();
            num_continuations += full
                .iter()
                .filter(|&&id| boundaries.continues_char(id))
                .count();

            for max_length in 2..full.len() + 3 {
                for mode in [TruncationMode::KeepEnd, TruncationMode::KeepStart] {
                    let limits = LengthLimits::new(max_length, Some(max_length), mode).unwrap();
                    let prompts = vec![text.to_owned()];
                    let responses = vec![text.to_owned()];
                    let dataset =
                        ResponseDataset::new(&tokenizer, &prompts, &responses, limits).unwrap();
                    let case = format!("{relative} {text:?} max_length {max_length} {mode:?}");
                    if dataset.is_empty() {
                        // The room after the prompt was shorter than the first character.
                        assert_eq!(
                            dataset.drop_reasons().get("empty_after_truncation"),
                            Some(&1)
                        );
                        continue;
                    }

                    let batch = dataset.collate(&[0], 1).unwrap();
                    let row = dataset.row(0);
                    let response_length = batch.label_mask.iter().filter(|&&label| label).count();
                    let response = &row.response[..response_length];
                    for ids in [&row.prompt[..], response] {
                        let decoded = tokenizer.decode(ids, true).unwrap();
                        assert!(!decoded.contains('\u{fffd}'), "{case}: {decoded:?}");
                    }
                    let response_text = tokenizer.decode(response, true).unwrap();
                    assert!(text.starts_with(response_text.trim_start()), "{case}");
                    let prompt_text = tokenizer.decode(&row.prompt, true).unwrap();
                    match mode {
                        TruncationMode::KeepStart => {
                            assert!(text.starts_with(prompt_text.trim_start()), "{case}")
                        }
                        TruncationMode::KeepEnd => {
                            assert!(text.ends_with(prompt_text.trim_start()), "{case}")
                        }
                    }
                }
            }
        }
        // The texts must exercise the rule: some characters are spelled in byte tokens.
        assert!(num_continuations > 10, "{relative}: {num_continuations}");
    }
}

#[test]
fn chat_template_keeps_one_bos() {
    let llama2_style = "{{ bos_token }}{% for message in messages %}{% if message['role'] == \
        'user' %}{{ '[INST] ' + message['content'].strip() + ' [/INST]' }}{% else %}{{ ' ' + \
        message['content'].strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
    for relative in [LLAMA2, STORIES] {
        let Some(tokenizer) = load(relative) else {
            return;
        };
        let template = tokenizer.chat_template(Some(llama2_style)).unwrap();
        let prompts = vec![r#"[{"role": "user", "content": "Hi"}, {"role": "assistant",
            "content": "Hello"}, {"role": "user", "content": "Tell a story"}]"#
            .to_owned()];
        let limits = LengthLimits::new(256, None, TruncationMode::KeepEnd).unwrap();

        let dataset = PairDataset::with_template(
            &tokenizer,
            &prompts,
            &["Once".to_owned()],
            &["No".to_owned()],
            limits,
            Some(&template),
        )
        .unwrap();

        let prompt = &dataset.pair(0).prompt;
        let rendered = "<s>[INST] Hi [/INST] Hello </s>[INST] Tell a story [/INST]";
        let expected = tokenizer.encode(rendered, false).unwrap();
        assert_eq!(prompt, &expected, "{relative}");
        assert_eq!(
            prompt.iter().filter(|&&id| id == BOS).count(),
            1,
            "{relative}"
        );
    }
}
