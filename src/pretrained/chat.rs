//! Chat templates: the Jinja template of an Instruct checkpoint's `tokenizer_config.json`,
//! rendered as `transformers`' `apply_chat_template` renders it (blocks trimmed, Python string
//! methods available, `raise_exception`), so the model sees the prompt format it was tuned on.
//!
//! ```
//! use diffusion_lm::pretrained::chat::{ChatTemplate, Message};
//! let t = ChatTemplate::new(
//!     "{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}\n{% endfor %}\
//!      {% if add_generation_prompt %}<|assistant|>{% endif %}",
//!     Default::default(),
//! ).unwrap();
//! let text = t.render(&[Message::user(" Hi ")], true).unwrap();
//! assert_eq!(text, "<|user|>Hi\n<|assistant|>");
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::{Error, Result};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message {
            role: "system".into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template and the special-token strings it may refer to (`bos_token`,
/// `eos_token`, ...).
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    tokens: BTreeMap<String, String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("tokens", &self.tokens).finish()
    }
}

const NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compiles `template`; `tokens` maps names such as `bos_token` to their text.
    pub fn new(template: &str, tokens: BTreeMap<String, String>) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned(NAME, template.to_string())
            .map_err(|e| Error::Config(format!("chat template: {e}")))?;
        Ok(ChatTemplate { env, tokens })
    }

    /// The chat template of the snapshot in `dir`, if it has one: `chat_template.jinja`, else
    /// the `chat_template` field of `tokenizer_config.json` (a string, or a list of named
    /// templates, of which the one named `default` is used). The special-token strings come
    /// from `tokenizer_config.json`, else `special_tokens_map.json`.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = if path.exists() {
            crate::train::checkpoint::read_json(&path)?
        } else {
            serde_json::Value::Null
        };
        // Recent `transformers` saves the template in its own file, which wins over the field.
        let jinja = dir.join("chat_template.jinja");
        let from_file = if jinja.is_file() {
            Some(std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?)
        } else {
            None
        };
        let template = match from_file
            .map(serde_json::Value::String)
            .as_ref()
            .or(config.get("chat_template"))
        {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => {
                let named = list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .or_else(|| list.first());
                match named.and_then(|t| t.get("template")).and_then(|t| t.as_str()) {
                    Some(t) => t.to_string(),
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        let map_path = dir.join("special_tokens_map.json");
        let map: serde_json::Value = if map_path.is_file() {
            crate::train::checkpoint::read_json(&map_path)?
        } else {
            serde_json::Value::Null
        };
        let mut tokens = BTreeMap::new();
        for key in ["bos_token", "eos_token", "pad_token", "unk_token", "mask_token"] {
            // A string, or an AddedToken object with a `content` field; from
            // tokenizer_config.json, else special_tokens_map.json.
            let text = match config.get(key).filter(|v| !v.is_null()).or(map.get(key)) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(v) => v.get("content").and_then(|c| c.as_str()).map(str::to_string),
                None => None,
            };
            if let Some(t) = text {
                tokens.insert(key.to_string(), t);
            }
        }
        ChatTemplate::new(&template, tokens)
            .map(Some)
            .map_err(|e| Error::checkpoint(dir, format!("chat template: {}", e.bare_message())))
    }

    /// The prompt text for `messages`; with `add_generation_prompt`, ending where the
    /// assistant's answer begins.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| Error::Config(format!("chat template: {e}")))?;
        let mut ctx: BTreeMap<String, minijinja::Value> = self
            .tokens
            .iter()
            .map(|(k, v)| (k.clone(), minijinja::Value::from(v.as_str())))
            .collect();
        ctx.insert("messages".into(), minijinja::Value::from_serialize(messages));
        ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());
        template
            .render(ctx)
            .map_err(|e| Error::Config(format!("chat template: {e}")))
    }
}
