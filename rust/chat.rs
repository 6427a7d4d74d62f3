//! Chat messages and the Jinja chat templates of Hugging Face tokenizers, rendered with
//! minijinja.
//!
//! A template renders a list of messages to the text that the model was trained on, as
//! `transformers`' `apply_chat_template` does. The environment trims blocks and strips their
//! leading blank space (`trim_blocks`, `lstrip_blocks`). Python string and dict methods work
//! through minijinja-contrib's pycompat layer, and the functions `raise_exception` and
//! `strftime_now` exist. The variables are `messages`, `add_generation_prompt`, and `bos_token`
//! and `eos_token` where the tokenizer defines them.
//!
//! Prompts and responses arrive as table strings. A prompt is conversational when its text is
//! a JSON array of objects that each have a `"role"`, the form JSON Lines and Parquet files give
//! for a list of messages; any other prompt is plain text and becomes one user message.

use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use serde_json::Value as JsonValue;

use crate::error::{Error, Result};

/// One chat message with text content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `"user"`, `"assistant"` or `"system"` in the common templates.
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Returns the JSON text of `messages` as a list of `{"role", "content"}` objects, the form that
/// conversational prompts take in CSV cells.
pub fn messages_to_json(messages: &[Message]) -> JsonValue {
    let items = messages
        .iter()
        .map(|message| {
            let mut object = serde_json::Map::new();
            object.insert("role".into(), JsonValue::String(message.role.clone()));
            object.insert("content".into(), JsonValue::String(message.content.clone()));
            JsonValue::Object(object)
        })
        .collect();
    JsonValue::Array(items)
}

/// Parses a conversational prompt: a JSON array of objects that each have a `"role"`.
/// Returns `None` for any other text, which is then a plain prompt.
pub fn parse_conversation(text: &str) -> Option<Vec<JsonValue>> {
    if !text.trim_start().starts_with('[') {
        return None;
    }
    let JsonValue::Array(items) = serde_json::from_str::<JsonValue>(text).ok()? else {
        return None;
    };
    let all_messages = items.iter().all(|item| {
        item.as_object()
            .is_some_and(|object| object.contains_key("role"))
    });
    (all_messages && !items.is_empty()).then_some(items)
}

/// Returns the text of a response: the content of a conversational response, which must be
/// one assistant message with string content, or the text itself.
///
/// The error is a message for the caller to place in context.
pub fn response_text(text: &str) -> std::result::Result<std::borrow::Cow<'_, str>, String> {
    let Some(messages) = parse_conversation(text) else {
        return Ok(text.into());
    };
    let [message] = messages.as_slice() else {
        return Err(format!(
            "a conversational response must be one assistant message, found {} messages",
            messages.len()
        ));
    };
    let role = message.get("role").and_then(JsonValue::as_str);
    let content = message.get("content").and_then(JsonValue::as_str);
    match (role, content) {
        (Some("assistant"), Some(content)) => Ok(content.to_owned().into()),
        (Some("assistant"), None) => {
            Err("the assistant message of a response has no string \"content\"".into())
        }
        (role, _) => Err(format!(
            "a conversational response must be an assistant message, found role {role:?}"
        )),
    }
}

/// The special tokens that a template can use, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateTokens {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

/// A compiled chat template.
pub struct ChatTemplate {
    environment: Environment<'static>,
    tokens: TemplateTokens,
    /// The template's source (a file path or "chat template"), named in error messages.
    origin: String,
}

const TEMPLATE_NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compiles `source`. `origin` names it in error messages, for example the file it came
    /// from.
    pub fn new(source: &str, origin: impl Into<String>, tokens: TemplateTokens) -> Result<Self> {
        let origin = origin.into();
        let mut environment = Environment::new();
        // jinja2, as transformers configures it, leaves undefined names falsy and printable.
        environment.set_undefined_behavior(UndefinedBehavior::Lenient);
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("the default delimiters are valid");
        environment.set_syntax(syntax);
        environment
            .set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        environment.add_function("raise_exception", raise_exception);
        environment.add_function("strftime_now", strftime_now);
        environment
            .add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|error| {
                template_error(&origin, "failed to compile the chat template", error)
            })?;
        Ok(ChatTemplate {
            environment,
            tokens,
            origin,
        })
    }

    /// Returns where the template came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Renders `messages`, each a JSON object with at least a `"role"`.
    pub fn render(&self, messages: &[JsonValue], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .environment
            .get_template(TEMPLATE_NAME)
            .expect("the template was added in new()");
        let tokens = &self.tokens;
        let context = minijinja::context! {
            messages => Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => tokens.bos_token.as_deref(),
            eos_token => tokens.eos_token.as_deref(),
        };
        template.render(context).map_err(|error| {
            template_error(&self.origin, "failed to render the chat template", error)
        })
    }

    /// Renders a prompt for generation: a conversational prompt as its messages, plain text as
    /// one user message, with `add_generation_prompt` set.
    pub fn render_prompt(&self, prompt: &str) -> Result<String> {
        match parse_conversation(prompt) {
            Some(messages) => self.render(&messages, true),
            None => {
                let message = serde_json::json!({"role": "user", "content": prompt});
                self.render(&[message], true)
            }
        }
    }
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("tokens", &self.tokens)
            .finish()
    }
}

fn template_error(origin: &str, what: &str, error: minijinja::Error) -> Error {
    // minijinja's message names the template line; a cause, such as the text given to
    // raise_exception, follows it.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    Error::ChatTemplate {
        context: format!("{origin}: {what}"),
        message,
    }
}

/// `raise_exception(message)`, which Hugging Face templates call to reject a conversation,
/// for example one whose roles do not alternate.
fn raise_exception(message: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the local time in a strftime format, as transformers provides it.
fn strftime_now(format: String) -> String {
    chrono::Local::now().format(&format).to_string()
}

/// Finds the chat template of the tokenizer at `tokenizer_path`: the file `chat_template.jinja`
/// beside it, else the `chat_template` field of `tokenizer_config.json`. That field is a string,
/// or a list of `{"name", "template"}` objects from which the one named `"default"` is taken.
/// Returns the source and the path it came from, or `None` when neither exists.
pub fn find_template_source(tokenizer_path: &Path) -> Result<Option<(String, PathBuf)>> {
    let jinja_path = tokenizer_path.with_file_name("chat_template.jinja");
    match std::fs::read_to_string(&jinja_path) {
        Ok(source) => return Ok(Some((source, jinja_path))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(Error::io(jinja_path, error)),
    }

    let config_path = tokenizer_path.with_file_name("tokenizer_config.json");
    let bytes = match std::fs::read(&config_path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io(config_path, error)),
    };
    let config: JsonValue = serde_json::from_slice(&bytes).map_err(|error| Error::InvalidJson {
        path: config_path.clone(),
        location: crate::error::Location::Line(error.line() as u64),
        message: error.to_string(),
    })?;
    let source = match config.get("chat_template") {
        None | Some(JsonValue::Null) => return Ok(None),
        Some(JsonValue::String(source)) => source.clone(),
        Some(JsonValue::Array(named)) => named_template(&config_path, named)?,
        Some(other) => {
            return Err(Error::WrongType {
                what: format!("{} field \"chat_template\"", config_path.display()),
                expected: "a string or a list of {\"name\", \"template\"} objects",
                found: crate::table::json_type_name(other).to_owned(),
            })
        }
    };
    Ok(Some((source, config_path)))
}

fn named_template(config_path: &Path, named: &[JsonValue]) -> Result<String> {
    let name_of = |item: &JsonValue| {
        item.get("name")
            .and_then(JsonValue::as_str)
            .map(str::to_owned)
    };
    let default = named
        .iter()
        .find(|item| name_of(item).as_deref() == Some("default"));
    match default
        .and_then(|item| item.get("template"))
        .and_then(JsonValue::as_str)
    {
        Some(source) => Ok(source.to_owned()),
        None => Err(Error::ChatTemplate {
            context: config_path.display().to_string(),
            message: format!(
                "no chat template named \"default\" among {:?}; pass the template text instead",
                named.iter().filter_map(name_of).collect::<Vec<_>>()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A template in the style of Llama 2 chat: BOS text, [INST] markers, strip() calls.
    pub(crate) const LLAMA2_STYLE: &str = "{{ bos_token }}{% for message in messages %}\
        {% if message['role'] == 'user' %}{{ '[INST] ' + message['content'].strip() + ' [/INST]' }}\
        {% elif message['role'] == 'assistant' %}{{ ' ' + message['content'].strip() + ' ' + eos_token }}\
        {% else %}{{ raise_exception('Unknown role: ' + message['role']) }}{% endif %}{% endfor %}";

    /// A ChatML template, which emits no BOS.
    pub(crate) const CHATML: &str = "{% for message in messages %}\
        {{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}\
        {% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn tokens() -> TemplateTokens {
        TemplateTokens {
            bos_token: Some("<s>".into()),
            eos_token: Some("</s>".into()),
        }
    }

    #[test]
    fn renders_plain_and_conversational_prompts() {
        let template = ChatTemplate::new(LLAMA2_STYLE, "test", tokens()).unwrap();

        assert_eq!(
            template.render_prompt("  Hi  ").unwrap(),
            "<s>[INST] Hi [/INST]"
        );
        let conversation = r#"[{"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]"#;
        assert_eq!(
            template.render_prompt(conversation).unwrap(),
            "<s>[INST] Hi [/INST] Hello </s>[INST] Bye [/INST]"
        );
    }

    #[test]
    fn generation_prompt_and_trim_blocks() {
        let template = ChatTemplate::new(CHATML, "test", TemplateTokens::default()).unwrap();
        let messages = [serde_json::json!({"role": "user", "content": "Hi"})];

        assert_eq!(
            template.render(&messages, true).unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            template.render(&messages, false).unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n"
        );
        let blocks = "{% for m in messages %}\n  {{ m.content }}\n{% endfor %}\n";
        let template = ChatTemplate::new(blocks, "test", TemplateTokens::default()).unwrap();
        assert_eq!(template.render(&messages, true).unwrap(), "  Hi\n");
    }

    #[test]
    fn raise_exception_and_syntax_errors() {
        let template = ChatTemplate::new(LLAMA2_STYLE, "test", tokens()).unwrap();
        let messages = [serde_json::json!({"role": "tool", "content": "x"})];

        let error = template.render(&messages, true).unwrap_err();
        assert!(matches!(error, Error::ChatTemplate { .. }), "{error:?}");
        assert!(error.to_string().contains("Unknown role: tool"), "{error}");

        let error = ChatTemplate::new("{% for %}", "broken.jinja", tokens()).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("broken.jinja: failed to compile the chat template"),
            "{error}"
        );
    }

    #[test]
    fn conversation_detection() {
        assert!(parse_conversation("Hello").is_none());
        assert!(parse_conversation("[1, 2]").is_none());
        assert!(parse_conversation("[]").is_none());
        assert!(parse_conversation("[not json").is_none());
        assert!(parse_conversation(r#"[{"content": "x"}]"#).is_none());
        let messages = parse_conversation(r#" [{"role": "user", "content": "x"}]"#).unwrap();
        assert_eq!(messages.len(), 1);
    }

    #[test]
    fn response_text_forms() {
        assert_eq!(response_text("plain").unwrap(), "plain");
        assert_eq!(
            response_text(r#"[{"role": "assistant", "content": "Hi"}]"#).unwrap(),
            "Hi"
        );
        let error = response_text(r#"[{"role": "user", "content": "Hi"}]"#).unwrap_err();
        assert!(error.contains("found role Some(\"user\")"), "{error}");
        let two =
            r#"[{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]"#;
        assert!(response_text(two).unwrap_err().contains("found 2 messages"));
    }

    #[test]
    fn template_source_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = dir.path().join("tokenizer.json");
        assert_eq!(find_template_source(&tokenizer).unwrap(), None);

        let config = dir.path().join("tokenizer_config.json");
        std::fs::write(&config, r#"{"chat_template": "A"}"#).unwrap();
        assert_eq!(
            find_template_source(&tokenizer).unwrap(),
            Some(("A".to_owned(), config.clone()))
        );

        let named = r#"{"chat_template": [{"name": "tool_use", "template": "T"},
                                          {"name": "default", "template": "D"}]}"#;
        std::fs::write(&config, named).unwrap();
        assert_eq!(find_template_source(&tokenizer).unwrap().unwrap().0, "D");

        std::fs::write(
            &config,
            r#"{"chat_template": [{"name": "x", "template": "X"}]}"#,
        )
        .unwrap();
        let error = find_template_source(&tokenizer).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("no chat template named \"default\""),
            "{error}"
        );

        std::fs::write(&config, r#"{"chat_template": 3}"#).unwrap();
        assert!(matches!(
            find_template_source(&tokenizer),
            Err(Error::WrongType { .. })
        ));

        std::fs::write(dir.path().join("chat_template.jinja"), "J").unwrap();
        assert_eq!(find_template_source(&tokenizer).unwrap().unwrap().0, "J");
    }
}
