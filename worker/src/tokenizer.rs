//! Tokenizer (a Hugging Face `tokenizer.json` through the `tokenizers` crate) and chat templates.
//!
//! Two templates are built in, chosen from the folder's `tokenizer_config.json`
//! (`chat_template`): ChatML (SmolLM2, Qwen2.5), with the default system prompt that the
//! template inserts when the conversation has none, and Llama-3. Templates are rendered by code,
//! not by a Jinja engine, so an unrecognised template is an error rather than a guess.

use std::path::{Path, PathBuf};

/// Errors loading or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: {what}")]
    Load { path: PathBuf, what: String },
    #[error("tokenizer: {0}")]
    Encode(String),
    #[error("{path}: chat_template is neither ChatML nor Llama-3; airlift renders only those two")]
    UnknownTemplate { path: PathBuf },
}

/// A chat message role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// A chat template.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatTemplate {
    /// `<|im_start|>role\n…<|im_end|>\n`; `default_system` is inserted when the first message is
    /// not a system message (SmolLM2 and Qwen2.5 templates do this).
    ChatMl { default_system: Option<String> },
    /// `<|begin_of_text|><|start_header_id|>role<|end_header_id|>\n\n…<|eot_id|>`.
    Llama3,
}

impl ChatTemplate {
    /// Recognises a Jinja chat template by its markers.
    pub fn from_jinja(template: &str) -> Option<Self> {
        if template.contains("<|im_start|>") {
            // The default system prompt is the literal between "<|im_start|>system\n" and
            // "<|im_end|>" that contains no Jinja expression.
            let marker = "<|im_start|>system\\n";
            let marker_raw = "<|im_start|>system\n";
            let default_system = [marker, marker_raw].iter().find_map(|m| {
                template.match_indices(m).find_map(|(i, _)| {
                    let rest = &template[i + m.len()..];
                    let end = rest.find("<|im_end|>")?;
                    let text = &rest[..end];
                    // Not a Jinja expression, nor a string concatenation inside one (Qwen2.5's
                    // `'<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>'`).
                    let expression = ["{{", "{%", "messages[", "' +", "+ '"].iter().any(|m| text.contains(m));
                    (!expression && !text.is_empty()).then(|| text.to_string())
                })
            });
            Some(ChatTemplate::ChatMl { default_system })
        } else if template.contains("<|start_header_id|>") {
            Some(ChatTemplate::Llama3)
        } else {
            None
        }
    }

    /// Renders `messages` and opens an assistant turn (the generation prompt).
    pub fn render(&self, messages: &[(Role, &str)]) -> String {
        let mut s = String::new();
        match self {
            ChatTemplate::ChatMl { default_system } => {
                if let (Some(sys), Some((first, _))) = (default_system, messages.first()) {
                    if *first != Role::System {
                        s.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
                    }
                }
                for (role, text) in messages {
                    s.push_str(&format!("<|im_start|>{}\n{text}<|im_end|>\n", role.as_str()));
                }
                s.push_str("<|im_start|>assistant\n");
            }
            ChatTemplate::Llama3 => {
                s.push_str("<|begin_of_text|>");
                for (role, text) in messages {
                    s.push_str(&format!("<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>", role.as_str(), text.trim()));
                }
                s.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
            }
        }
        s
    }
}

/// A loaded tokenizer with its chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    template: Option<ChatTemplate>,
    config_path: PathBuf,
}

impl Tokenizer {
    /// Loads `<dir>/tokenizer.json` and, if present, the chat template of
    /// `<dir>/tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| TokenizerError::Load {
            path: path.clone(),
            what: e.to_string(),
        })?;
        let config_path = dir.join("tokenizer_config.json");
        let mut template = None;
        if config_path.exists() {
            let text = std::fs::read_to_string(&config_path).map_err(|e| TokenizerError::Load {
                path: config_path.clone(),
                what: e.to_string(),
            })?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| TokenizerError::Load {
                path: config_path.clone(),
                what: format!("not valid JSON: {e}"),
            })?;
            if let Some(t) = v.get("chat_template").and_then(|t| t.as_str()) {
                template = Some(ChatTemplate::from_jinja(t).ok_or(TokenizerError::UnknownTemplate { path: config_path.clone() })?);
            }
        }
        Ok(Tokenizer { inner, template, config_path })
    }

    /// The chat template, if the folder has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// Renders a single user message as a chat prompt (or returns the text unchanged when the
    /// folder has no chat template).
    pub fn chat_prompt(&self, user: &str) -> String {
        match &self.template {
            Some(t) => t.render(&[(Role::User, user)]),
            None => user.to_string(),
        }
    }

    /// Token ids of `text`; special-token strings in `text` map to their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self.inner.encode(text, false).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` with the byte span of each token in `text`.
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<(usize, usize)>), TokenizerError> {
        let enc = self.inner.encode(text, false).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// Text of `ids`, with special tokens removed.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner.decode(ids, true).map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// The id of a token string, if in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Where the chat template was read from.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_template_inserts_default_system_prompt() {
        let jinja = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
        let t = ChatTemplate::from_jinja(jinja).unwrap();
        assert_eq!(
            t.render(&[(Role::User, "Hi")]),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&[(Role::System, "S"), (Role::User, "Hi")]),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    /// Qwen2.5's template concatenates the system message in one branch before it writes its
    /// literal default in the other; the literal is the default.
    #[test]
    fn qwen25_template_default_system_prompt_is_the_literal() {
        let jinja = "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- else %}{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- endif %}";
        let t = ChatTemplate::from_jinja(jinja).unwrap();
        assert_eq!(
            t,
            ChatTemplate::ChatMl {
                default_system: Some("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.".into())
            }
        );
    }

    #[test]
    fn llama3_template() {
        let t = ChatTemplate::from_jinja("{{ '<|start_header_id|>' + message['role'] }}").unwrap();
        assert_eq!(
            t.render(&[(Role::User, "Hi ")]),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }
}
