//! A Hugging Face `tokenizer.json` with the BOS, EOS and padding tokens that a causal language
//! model expects, and the rules that turn a prompt and a response into token ids.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tokenizers::DecoderWrapper;

use crate::chat::{find_template_source, ChatTemplate, TemplateTokens};
use crate::error::{Error, Result};
use crate::table::json_type_name;

/// The source of one special token (BOS, EOS or padding).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SpecialToken {
    /// Read the token from `tokenizer_config.json` beside `tokenizer.json`. The token is absent
    /// when that file or its field is missing or null.
    #[default]
    FromConfig,
    /// The tokenizer has no such token.
    Absent,
    /// The token with this text, which must be in the vocabulary.
    Token(String),
}

/// The choices for the three special tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: SpecialToken,
    pub eos: SpecialToken,
    pub pad: SpecialToken,
}

/// A loaded tokenizer with the ids of its special tokens resolved.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    bos_token_id: Option<u32>,
    eos_token_id: Option<u32>,
    pad_token_id: u32,
    char_boundaries: CharBoundaries,
}

/// The tokens that continue a character an earlier token started, before which a cut would
/// split the character's UTF-8 bytes.
///
/// Two kinds of token do: the byte-fallback tokens `<0x80>` to `<0xBF>` of SentencePiece-style
/// BPE (Llama 2), and the byte-level BPE tokens (GPT-2, Llama 3) whose first byte is a UTF-8
/// continuation byte. Decoding a sequence cut before such a token yields U+FFFD.
#[derive(Debug, Clone, Default)]
pub struct CharBoundaries {
    /// Indexed by token id. Empty when no token continues a character.
    continues_char: Arc<[bool]>,
}

impl CharBoundaries {
    fn from_tokenizer(inner: &tokenizers::Tokenizer) -> Self {
        let byte_level = inner.get_decoder().is_some_and(uses_byte_level);
        let byte_of_char = byte_level.then(byte_level_alphabet);
        let vocab = inner.get_vocab(true);
        let mut continues_char = vec![false; inner.get_vocab_size(true)];
        for (token, id) in vocab {
            let first_byte = match byte_fallback_value(&token) {
                Some(byte) => Some(byte),
                None => byte_of_char
                    .as_ref()
                    .and_then(|alphabet| token.chars().next().and_then(alphabet)),
            };
            let is_continuation = first_byte.is_some_and(|byte| byte & 0xC0 == 0x80);
            if let Some(slot) = continues_char.get_mut(id as usize) {
                *slot = is_continuation;
            }
        }
        if !continues_char.contains(&true) {
            continues_char.clear();
        }
        CharBoundaries {
            continues_char: continues_char.into(),
        }
    }

    /// Reports whether the token `id` continues a character.
    pub fn continues_char(&self, id: u32) -> bool {
        self.continues_char
            .get(id as usize)
            .copied()
            .unwrap_or(false)
    }

    /// Returns the largest `end <= max_end` at which `ids[..end]` ends on a character
    /// boundary.
    pub fn floor_end(&self, ids: &[u32], max_end: usize) -> usize {
        let mut end = max_end.min(ids.len());
        while end > 0 && end < ids.len() && self.continues_char(ids[end]) {
            end -= 1;
        }
        end
    }

    /// Returns the smallest `start >= min_start` at which `ids[start..]` starts on a character
    /// boundary.
    pub fn ceil_start(&self, ids: &[u32], min_start: usize) -> usize {
        let mut start = min_start.min(ids.len());
        while start < ids.len() && self.continues_char(ids[start]) {
            start += 1;
        }
        start
    }
}

/// Returns the byte of a byte-fallback token such as `<0xE2>`.
fn byte_fallback_value(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn uses_byte_level(decoder: &DecoderWrapper) -> bool {
    match decoder {
        DecoderWrapper::ByteLevel(_) => true,
        DecoderWrapper::Sequence(sequence) => sequence.get_decoders().iter().any(uses_byte_level),
        _ => false,
    }
}

/// Returns the inverse of GPT-2's byte-to-character table, which byte-level BPE vocabularies
/// are written in: printable bytes stand for themselves, and the others map in order onto the
/// characters from U+0100 on.
fn byte_level_alphabet() -> impl Fn(char) -> Option<u8> {
    let printable = |byte: u8| matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = std::collections::HashMap::with_capacity(256);
    let mut next = 0u32;
    for byte in 0..=255u8 {
        let c = if printable(byte) {
            char::from(byte)
        } else {
            next += 1;
            char::from_u32(255 + next).expect("U+0100 to U+0143 are characters")
        };
        table.insert(c, byte);
    }
    move |c| table.get(&c).copied()
}

impl TextTokenizer {
    /// Loads `path`, a `tokenizer.json` file or a folder containing one, and resolves the
    /// special tokens.
    ///
    /// Without a padding token the padding id is the EOS id, or 0 when EOS is absent too.
    /// Padding never carries a label, so sharing the id with EOS is safe.
    pub fn from_path(path: &Path, special_tokens: &SpecialTokens) -> Result<Self> {
        if !path.exists() {
            let message = "not found, expected a tokenizer.json file or a folder containing one";
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, message);
            return Err(Error::io(path, source));
        }
        let path = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        let bytes = std::fs::read(&path).map_err(|source| Error::io(&path, source))?;
        let inner =
            tokenizers::Tokenizer::from_bytes(&bytes).map_err(|error| Error::Tokenizer {
                context: format!("{}: failed to load the tokenizer", path.display()),
                message: error.to_string(),
            })?;

        let config = read_tokenizer_config(&path, special_tokens)?;
        let char_boundaries = CharBoundaries::from_tokenizer(&inner);
        let mut tokenizer = TextTokenizer {
            inner,
            path,
            bos_token_id: None,
            eos_token_id: None,
            pad_token_id: 0,
            char_boundaries,
        };
        tokenizer.bos_token_id =
            tokenizer.resolve("BOS", "bos_token", &special_tokens.bos, &config)?;
        tokenizer.eos_token_id =
            tokenizer.resolve("EOS", "eos_token", &special_tokens.eos, &config)?;
        let pad_token_id =
            tokenizer.resolve("padding", "pad_token", &special_tokens.pad, &config)?;
        tokenizer.pad_token_id = pad_token_id.or(tokenizer.eos_token_id).unwrap_or(0);

        log::debug!(
            "loaded {}: vocabulary of {}, BOS {:?}, EOS {:?}, padding {}",
            tokenizer.path.display(),
            tokenizer.vocab_size(),
            tokenizer.bos_token_id,
            tokenizer.eos_token_id,
            tokenizer.pad_token_id
        );
        Ok(tokenizer)
    }

    /// Builds a tokenizer from an already parsed `tokenizers::Tokenizer` and explicit ids.
    /// `path` only names the tokenizer in messages.
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        path: impl Into<PathBuf>,
        bos_token_id: Option<u32>,
        eos_token_id: Option<u32>,
        pad_token_id: Option<u32>,
    ) -> Self {
        let pad_token_id = pad_token_id.or(eos_token_id).unwrap_or(0);
        let char_boundaries = CharBoundaries::from_tokenizer(&inner);
        TextTokenizer {
            inner,
            path: path.into(),
            bos_token_id,
            eos_token_id,
            pad_token_id,
            char_boundaries,
        }
    }

    /// Returns the path that names the tokenizer in messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns which tokens continue a character, for truncation that must not split one.
    pub fn char_boundaries(&self) -> &CharBoundaries {
        &self.char_boundaries
    }

    /// Returns the text of the token `id`, if the vocabulary has it.
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Compiles a chat template: `source` when given, else the tokenizer's own from
    /// `chat_template.jinja` or the `chat_template` field of `tokenizer_config.json` beside
    /// `tokenizer.json`. The template receives this tokenizer's BOS and EOS text.
    pub fn chat_template(&self, source: Option<&str>) -> Result<ChatTemplate> {
        let tokens = TemplateTokens {
            bos_token: self.bos_token_id.and_then(|id| self.token_text(id)),
            eos_token: self.eos_token_id.and_then(|id| self.token_text(id)),
        };
        if let Some(source) = source {
            return ChatTemplate::new(source, "chat template", tokens);
        }
        match find_template_source(&self.path)? {
            Some((source, origin)) => {
                ChatTemplate::new(&source, origin.display().to_string(), tokens)
            }
            None => Err(Error::ChatTemplate {
                context: self.path.display().to_string(),
                message: "the tokenizer has no chat template: neither chat_template.jinja nor \
                          a \"chat_template\" field in tokenizer_config.json exists beside it; \
                          pass the template text instead"
                    .into(),
            }),
        }
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token_id
    }

    pub fn pad_token_id(&self) -> u32 {
        self.pad_token_id
    }

    /// Returns the vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes `text` as the underlying tokenizer does. With `add_special_tokens` the
    /// post-processor may add tokens such as BOS.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        Ok(self
            .encode_raw(text, add_special_tokens)?
            .get_ids()
            .to_vec())
    }

    /// Decodes `ids`, which must all be in the vocabulary.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        if let Some(&id) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            let expected = format!("an id in the vocabulary of {}", self.path.display());
            return Err(Error::invalid_value("token id", id, expected));
        }
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|error| Error::Tokenizer {
                context: format!(
                    "{}: failed to decode {} ids",
                    self.path.display(),
                    ids.len()
                ),
                message: error.to_string(),
            })
    }

    /// Encodes a prompt so that it starts with exactly one BOS and ends without EOS.
    ///
    /// The post-processor runs, so a tokenizer that adds BOS itself adds it here. When the
    /// tokenizer defines BOS and the ids do not start with it, BOS is prepended. A run of
    /// leading BOS ids, from the post-processor plus a prompt whose text starts with the BOS
    /// string, collapses to one. An EOS that the post-processor appended is removed, because the
    /// response follows the prompt. An EOS written in the prompt text stays.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.encode_raw(text, true)?;
        let mut ids = encoding.get_ids().to_vec();

        let added_by_post_processor = encoding.get_special_tokens_mask().last() == Some(&1);
        if added_by_post_processor
            && self.eos_token_id.is_some()
            && ids.last() == self.eos_token_id.as_ref()
        {
            ids.pop();
        }

        if let Some(bos) = self.bos_token_id {
            let num_leading = ids.iter().take_while(|&&id| id == bos).count();
            match num_leading {
                0 => ids.insert(0, bos),
                1 => {}
                _ => {
                    ids.drain(..num_leading - 1);
                }
            }
        }
        Ok(ids)
    }

    /// Encodes a response without the post-processor and ends it with one EOS, when the
    /// tokenizer defines EOS. A response whose text already ends with the EOS string gets no
    /// second EOS.
    pub fn encode_response(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text, false)?;
        if let Some(eos) = self.eos_token_id {
            if ids.last() != Some(&eos) {
                ids.push(eos);
            }
        }
        Ok(ids)
    }

    /// Reports whether `response` has no token apart from a final EOS.
    pub fn is_empty_response(&self, response: &[u32]) -> bool {
        match response {
            [] => true,
            [only] => Some(*only) == self.eos_token_id,
            _ => false,
        }
    }

    fn encode_raw(&self, text: &str, add_special_tokens: bool) -> Result<tokenizers::Encoding> {
        // encode_fast skips the character offsets, which nothing here needs.
        self.inner
            .encode_fast(text, add_special_tokens)
            .map_err(|error| Error::Tokenizer {
                context: format!(
                    "{}: failed to encode {} bytes of text",
                    self.path.display(),
                    text.len()
                ),
                message: error.to_string(),
            })
    }

    fn resolve(
        &self,
        role: &'static str,
        field: &str,
        choice: &SpecialToken,
        config: &Option<Value>,
    ) -> Result<Option<u32>> {
        let token = match choice {
            SpecialToken::Absent => return Ok(None),
            SpecialToken::Token(token) => token.clone(),
            SpecialToken::FromConfig => match config_token(&self.path, field, config)? {
                Some(token) => token,
                None => return Ok(None),
            },
        };
        match self.inner.token_to_id(&token) {
            Some(id) => Ok(Some(id)),
            None => Err(Error::MissingToken {
                path: self.path.clone(),
                role,
                token,
            }),
        }
    }
}

/// Reads `tokenizer_config.json` beside `tokenizer_path` when some token comes from it.
/// A missing file yields `None`, so every token read from it is absent.
fn read_tokenizer_config(tokenizer_path: &Path, tokens: &SpecialTokens) -> Result<Option<Value>> {
    let needed = [&tokens.bos, &tokens.eos, &tokens.pad].contains(&&SpecialToken::FromConfig);
    if !needed {
        return Ok(None);
    }

    let config_path = tokenizer_path.with_file_name("tokenizer_config.json");
    let bytes = match std::fs::read(&config_path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            log::debug!(
                "{} not found, so BOS, EOS and padding are absent",
                config_path.display()
            );
            return Ok(None);
        }
        Err(error) => return Err(Error::io(config_path, error)),
    };

    let config: Value = serde_json::from_slice(&bytes).map_err(|error| Error::InvalidJson {
        path: config_path.clone(),
        location: crate::error::Location::Line(error.line() as u64),
        message: error.to_string(),
    })?;
    if !config.is_object() {
        return Err(Error::WrongType {
            what: config_path.display().to_string(),
            expected: "a JSON object",
            found: json_type_name(&config).to_owned(),
        });
    }
    Ok(Some(config))
}

/// Reads one special token field of tokenizer_config.json: a string, null, or an object
/// whose "content" is a string (the form transformers writes for `AddedToken`).
fn config_token(
    tokenizer_path: &Path,
    field: &str,
    config: &Option<Value>,
) -> Result<Option<String>> {
    let Some(value) = config.as_ref().and_then(|config| config.get(field)) else {
        return Ok(None);
    };
    let content = match value {
        Value::Object(object) => object.get("content"),
        other => Some(other),
    };
    match content {
        Some(Value::String(token)) => Ok(Some(token.clone())),
        Some(Value::Null) => Ok(None),
        _ => Err(Error::WrongType {
            what: format!(
                "{} field {field:?}",
                tokenizer_path
                    .with_file_name("tokenizer_config.json")
                    .display()
            ),
            expected: "a string, null, or an object with a string \"content\"",
            found: json_type_name(value).to_owned(),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds the JSON of a word-level tokenizer over whitespace-separated words. `<s>` and
    /// `</s>` are special added tokens. With `adds_bos` the post-processor prepends `<s>`, and
    /// with `adds_eos` it appends `</s>`.
    pub(crate) fn word_tokenizer_json(adds_bos: bool, adds_eos: bool) -> String {
        let mut single = Vec::new();
        if adds_bos {
            single.push(r#"{"SpecialToken": {"id": "<s>", "type_id": 0}}"#);
        }
        single.push(r#"{"Sequence": {"id": "A", "type_id": 0}}"#);
        if adds_eos {
            single.push(r#"{"SpecialToken": {"id": "</s>", "type_id": 0}}"#);
        }
        let words = [
            "<unk>", "<s>", "</s>", "<pad>", "hello", "world", "how", "are", "you",
        ];
        let vocab: Vec<String> = words
            .iter()
            .enumerate()
            .map(|(id, word)| format!("\"{word}\": {id}"))
            .collect();
        format!(
            r#"{{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [
    {{"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
      "normalized": false, "special": true}},
    {{"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false,
      "normalized": false, "special": true}},
    {{"id": 3, "content": "<pad>", "single_word": false, "lstrip": false, "rstrip": false,
      "normalized": false, "special": true}}
  ],
  "normalizer": null,
  "pre_tokenizer": {{"type": "Whitespace"}},
  "post_processor": {{
    "type": "TemplateProcessing",
    "single": [{single}],
    "pair": [
      {{"Sequence": {{"id": "A", "type_id": 0}}}},
      {{"Sequence": {{"id": "B", "type_id": 1}}}}
    ],
    "special_tokens": {{
      "<s>": {{"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
      "</s>": {{"id": "</s>", "ids": [2], "tokens": ["</s>"]}}
    }}
  }},
  "decoder": null,
  "model": {{"type": "WordLevel", "vocab": {{{vocab}}}, "unk_token": "<unk>"}}
}}"#,
            single = single.join(", "),
            vocab = vocab.join(", ")
        )
    }

    pub(crate) const BOS: u32 = 1;
    pub(crate) const EOS: u32 = 2;
    pub(crate) const PAD: u32 = 3;

    pub(crate) fn word_tokenizer(
        adds_bos: bool,
        adds_eos: bool,
        pad: Option<u32>,
    ) -> TextTokenizer {
        let json = word_tokenizer_json(adds_bos, adds_eos);
        let inner: tokenizers::Tokenizer = json.parse().unwrap();
        TextTokenizer::from_parts(inner, "word-tokenizer", Some(BOS), Some(EOS), pad)
    }

    fn write_tokenizer(dir: &tempfile::TempDir, config: Option<&str>) -> PathBuf {
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, word_tokenizer_json(false, false)).unwrap();
        if let Some(config) = config {
            std::fs::write(dir.path().join("tokenizer_config.json"), config).unwrap();
        }
        path
    }

    #[test]
    fn prompt_gets_one_bos() {
        for adds_bos in [false, true] {
            let tokenizer = word_tokenizer(adds_bos, false, None);

            assert_eq!(
                tokenizer.encode_prompt("hello world").unwrap(),
                [BOS, 4, 5],
                "{adds_bos}"
            );
            assert_eq!(
                tokenizer.encode_prompt("<s> hello").unwrap(),
                [BOS, 4],
                "{adds_bos}"
            );
            assert_eq!(
                tokenizer.encode_prompt("<s><s>hello").unwrap(),
                [BOS, 4],
                "{adds_bos}"
            );
            assert_eq!(tokenizer.encode_prompt("").unwrap(), [BOS], "{adds_bos}");
        }
    }

    #[test]
    fn prompt_drops_post_processor_eos() {
        let tokenizer = word_tokenizer(true, true, None);

        assert_eq!(tokenizer.encode("hello", true).unwrap(), [BOS, 4, EOS]);
        assert_eq!(tokenizer.encode_prompt("hello").unwrap(), [BOS, 4]);
    }

    #[test]
    fn prompt_keeps_eos_from_text() {
        let tokenizer = word_tokenizer(false, false, None);

        assert_eq!(
            tokenizer.encode_prompt("hello </s>").unwrap(),
            [BOS, 4, EOS]
        );
    }

    #[test]
    fn response_gets_one_eos() {
        let tokenizer = word_tokenizer(true, true, None);

        assert_eq!(
            tokenizer.encode_response("how are you").unwrap(),
            [6, 7, 8, EOS]
        );
        assert_eq!(
            tokenizer.encode_response("how are you</s>").unwrap(),
            [6, 7, 8, EOS]
        );
        assert_eq!(tokenizer.encode_response("<s>how").unwrap(), [BOS, 6, EOS]);
    }

    #[test]
    fn empty_response_detection() {
        let tokenizer = word_tokenizer(false, false, None);

        assert!(tokenizer.is_empty_response(&tokenizer.encode_response("").unwrap()));
        assert!(tokenizer.is_empty_response(&tokenizer.encode_response("</s>").unwrap()));
        assert!(!tokenizer.is_empty_response(&tokenizer.encode_response("you").unwrap()));
    }

    #[test]
    fn pad_falls_back_to_eos_then_zero() {
        let json = word_tokenizer_json(false, false);
        let parse = || json.parse::<tokenizers::Tokenizer>().unwrap();

        assert_eq!(
            TextTokenizer::from_parts(parse(), "t", None, Some(EOS), Some(PAD)).pad_token_id(),
            PAD
        );
        assert_eq!(
            TextTokenizer::from_parts(parse(), "t", None, Some(EOS), None).pad_token_id(),
            EOS
        );
        assert_eq!(
            TextTokenizer::from_parts(parse(), "t", None, None, None).pad_token_id(),
            0
        );
    }

    #[test]
    fn config_tokens_string_null_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let config = r#"{"bos_token": "<s>", "eos_token": {"content": "</s>", "lstrip": false},
                         "pad_token": null}"#;
        let path = write_tokenizer(&dir, Some(config));

        let tokenizer = TextTokenizer::from_path(dir.path(), &SpecialTokens::default()).unwrap();

        assert_eq!(tokenizer.bos_token_id(), Some(BOS));
        assert_eq!(tokenizer.eos_token_id(), Some(EOS));
        assert_eq!(tokenizer.pad_token_id(), EOS);
        assert_eq!(tokenizer.vocab_size(), 9);
        let same = TextTokenizer::from_path(&path, &SpecialTokens::default()).unwrap();
        assert_eq!(same.bos_token_id(), Some(BOS));
    }

    #[test]
    fn explicit_tokens_override_config() {
        let dir = tempfile::tempdir().unwrap();
        write_tokenizer(&dir, Some(r#"{"bos_token": "<s>", "eos_token": "</s>"}"#));
        let tokens = SpecialTokens {
            bos: SpecialToken::Absent,
            eos: SpecialToken::FromConfig,
            pad: SpecialToken::Token("<pad>".into()),
        };

        let tokenizer = TextTokenizer::from_path(dir.path(), &tokens).unwrap();

        assert_eq!(tokenizer.bos_token_id(), None);
        assert_eq!(tokenizer.eos_token_id(), Some(EOS));
        assert_eq!(tokenizer.pad_token_id(), PAD);
    }

    #[test]
    fn missing_config_means_no_tokens() {
        let dir = tempfile::tempdir().unwrap();
        write_tokenizer(&dir, None);

        let tokenizer = TextTokenizer::from_path(dir.path(), &SpecialTokens::default()).unwrap();

        assert_eq!(tokenizer.bos_token_id(), None);
        assert_eq!(tokenizer.eos_token_id(), None);
        assert_eq!(tokenizer.pad_token_id(), 0);
    }

    #[test]
    fn unknown_token_is_missing_token() {
        let dir = tempfile::tempdir().unwrap();
        write_tokenizer(&dir, Some(r#"{"bos_token": "<bos>"}"#));

        let error = TextTokenizer::from_path(dir.path(), &SpecialTokens::default())
            .err()
            .unwrap();

        assert!(
            matches!(error, Error::MissingToken { role: "BOS", .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("\"<bos>\""), "{error}");
    }

    #[test]
    fn config_token_of_wrong_type() {
        let dir = tempfile::tempdir().unwrap();
        write_tokenizer(&dir, Some(r#"{"eos_token": 2}"#));

        let error = TextTokenizer::from_path(dir.path(), &SpecialTokens::default())
            .err()
            .unwrap();

        assert!(matches!(error, Error::WrongType { .. }), "{error:?}");
        assert!(error.to_string().contains("\"eos_token\""), "{error}");
    }

    #[test]
    fn missing_tokenizer_file_is_io_error() {
        let dir = tempfile::tempdir().unwrap();

        let error = TextTokenizer::from_path(dir.path(), &SpecialTokens::default())
            .err()
            .unwrap();

        let Error::Io { source, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn byte_level_continuation_tokens() {
        // "é" is the bytes C3 A9, which byte-level BPE writes as the characters "Ã" and "©".
        let json = r#"{"version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [], "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false,
                              "trim_offsets": true, "use_regex": true},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                        "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false,
                      "vocab": {"Ã": 0, "©": 1, "a": 2}, "merges": []}}"#;
        let inner: tokenizers::Tokenizer = json.parse().unwrap();
        let tokenizer = TextTokenizer::from_parts(inner, "byte-level", None, None, None);

        let ids = tokenizer.encode("aé", false).unwrap();

        assert_eq!(ids, [2, 0, 1]);
        let boundaries = tokenizer.char_boundaries();
        assert!(boundaries.continues_char(1));
        assert!(!boundaries.continues_char(0));
        assert_eq!(boundaries.floor_end(&ids, 2), 1);
        assert_eq!(boundaries.ceil_start(&ids, 2), 3);
        assert_eq!(
            tokenizer
                .decode(&ids[..boundaries.floor_end(&ids, 2)], true)
                .unwrap(),
            "a"
        );
    }

    #[test]
    fn byte_fallback_continuation_tokens() {
        assert_eq!(byte_fallback_value("<0xE2>"), Some(0xE2));
        assert_eq!(byte_fallback_value("<0x8>"), None);
        assert_eq!(byte_fallback_value("hello"), None);
        // The word tokenizer has no byte tokens, so nothing continues a character.
        let tokenizer = word_tokenizer(false, false, None);
        assert!((0..9).all(|id| !tokenizer.char_boundaries().continues_char(id)));
    }

    #[test]
    fn decode_rejects_unknown_id() {
        let tokenizer = word_tokenizer(false, false, None);

        let error = tokenizer.decode(&[4, 999], true).unwrap_err();

        assert!(
            error.to_string().contains("invalid token id 999"),
            "{error}"
        );
    }
}
