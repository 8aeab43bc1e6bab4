//! Byte-level BPE tokenizer, trained on the corpus with the `tokenizers` crate.
//!
//! Byte-level BPE starts from the 256 byte symbols, so **every** UTF-8 string can be encoded: later
//! constraints (JSON keys, regex matches) may ask for text the corpus never contained. Id 0 is the
//! `[PAD]` token, which fills the tail of every fixed-length sequence; the content of a sequence is
//! everything before its first PAD.
//!
//! ```
//! use diffusion_lm::TextTokenizer;
//! let corpus = ["the cat sat", "the dog sat", "a cat ran"];
//! let tok = TextTokenizer::train(corpus.iter().copied(), 300).unwrap();
//! let ids = tok.encode_padded("the cat ran ☃", 12).unwrap();
//! assert_eq!(ids.len(), 12);
//! assert_eq!(tok.decode_content(&ids), "the cat ran ☃");
//! ```

use std::path::Path;

use std::str::FromStr;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

use crate::{Error, Result};

/// The padding token's text.
pub const PAD_TOKEN: &str = "[PAD]";

/// A byte-level BPE tokenizer with a PAD token.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    /// Other tokens that end the content (a chat model's end of turn).
    stops: Vec<u32>,
}

fn tk_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl TextTokenizer {
    /// Trains a byte-level BPE tokenizer of at most `vocab_size` tokens (PAD included) on `texts`.
    pub fn train<'a>(texts: impl Iterator<Item = &'a str> + Send, vocab_size: usize) -> Result<Self> {
        if vocab_size < 257 {
            return Err(Error::Tokenizer(format!(
                "vocab_size {vocab_size} is too small: byte-level BPE needs 256 byte tokens plus PAD"
            )));
        }
        let alphabet: std::collections::HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        let mut trainer = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(vocab_size)
            .min_frequency(2)
            .special_tokens(vec![AddedToken::from(PAD_TOKEN, true)])
            .initial_alphabet(alphabet)
            .build();
        // No prefix space: a sequence's first word is encoded as it is written.
        let byte_level = ByteLevel::new(false, true, true);
        let mut tokenizer =
            TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, PostProcessorWrapper, ByteLevel>::new()
                .with_model(BPE::default())
                .with_pre_tokenizer(Some(byte_level))
                .with_decoder(Some(byte_level))
                .build()
                .map_err(tk_err)?;
        tokenizer.train(&mut trainer, texts).map_err(tk_err)?;
        // Round-trip through JSON to get the type-erased `Tokenizer` that `load` also returns.
        let json = tokenizer.to_string(false).map_err(tk_err)?;
        let inner = Tokenizer::from_str(&json).map_err(tk_err)?;
        Self::from_tokenizer(inner)
    }

    fn from_tokenizer(inner: Tokenizer) -> Result<Self> {
        let pad_id = inner
            .token_to_id(PAD_TOKEN)
            .ok_or_else(|| Error::Tokenizer(format!("the vocabulary has no {PAD_TOKEN} token")))?;
        Ok(TextTokenizer {
            inner,
            pad_id,
            stops: Vec::new(),
        })
    }

    /// Loads a `tokenizer.json` with a `[PAD]` token.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let inner = Self::read(path)?;
        let tok = Self::from_tokenizer(inner).map_err(|e| named(path, e))?;
        tok.check_encodes().map_err(|e| named(path, e))?;
        Ok(tok)
    }

    /// Loads the `tokenizer.json` of a pretrained checkpoint whose end-of-text token `end_id`
    /// plays the part of PAD: it fills the tail of a generation, and the content of a sequence
    /// is what comes before it.
    pub fn load_pretrained(path: impl AsRef<Path>, end_id: u32) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::Tokenizer(format!("{} does not exist", path.display())));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::pretrained_from_json(&text, path, end_id)
    }

    /// A pretrained tokenizer from the text of a `tokenizer.json` (`origin` names it in errors),
    /// with `end_id` in the part of PAD (see [`TextTokenizer::load_pretrained`]).
    pub(crate) fn pretrained_from_json(text: &str, origin: &Path, end_id: u32) -> Result<Self> {
        let inner = Self::parse(text, origin)?;
        if inner.id_to_token(end_id).is_none() {
            return Err(Error::Tokenizer(format!(
                "{}: the end-of-text id {end_id} is not in the vocabulary",
                origin.display()
            )));
        }
        let tok = TextTokenizer {
            inner,
            pad_id: end_id,
            stops: Vec::new(),
        };
        tok.check_encodes().map_err(|e| named(origin, e))?;
        Ok(tok)
    }

    fn read(path: &Path) -> Result<Tokenizer> {
        if !path.exists() {
            return Err(Error::Tokenizer(format!("{} does not exist", path.display())));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Tokenizer> {
        // The `tokenizers` crate panics on some malformed files (a syntax error inside
        // `decoder`, an incomplete `Precompiled` normalizer): check the syntax here, and turn
        // any panic left into an error naming the file.
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|e| Error::Tokenizer(format!("{}: invalid JSON: {e}", path.display())))?;
        std::panic::catch_unwind(|| Tokenizer::from_str(text))
            .map_err(|panic| {
                Error::Tokenizer(format!(
                    "{}: not a valid tokenizer file: {}",
                    path.display(),
                    panic_message(&panic)
                ))
            })?
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// A pipeline that loads but cannot encode ordinary text is refused at load time, not at
    /// the first sample.
    fn check_encodes(&self) -> Result<()> {
        self.encode("The Eagle is a pub. {\"a\": [1, 2.5]} ☃").map(|_| ())
    }

    /// Ids of the added tokens (PAD, end of text, chat markers, `[MASK]`, tool-call and
    /// fill-in-the-middle markers, ...): they never stand for content text, even those not
    /// marked special (ordinary tokens can still spell the same characters).
    pub fn special_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.inner.get_added_tokens_decoder().into_keys().collect();
        ids.sort_unstable();
        ids
    }

    /// Saves as `tokenizer.json`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.inner
            .save(path, false)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// Number of tokens, PAD included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of the PAD token.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Encodes `text` without padding.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        // The `tokenizers` crate panics inside some malformed pipelines (found by fuzzing
        // tokenizer.json files that load): an error here, not a crash.
        let enc = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.inner.encode(text, false)))
            .map_err(|panic| Error::Tokenizer(format!("the tokenizer failed on {text:?}: {}", panic_message(&panic))))?
            .map_err(tk_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes `text` and pads it with PAD to exactly `len` tokens.
    ///
    /// Fails if the text needs more than `len` tokens.
    pub fn encode_padded(&self, text: &str, len: usize) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        if ids.len() > len {
            return Err(Error::Tokenizer(format!(
                "text needs {} tokens, more than the sequence length {len}",
                ids.len()
            )));
        }
        ids.resize(len, self.pad_id);
        Ok(ids)
    }

    /// Decodes ids to text (PAD tokens are skipped).
    pub fn decode(&self, ids: &[u32]) -> String {
        let kept: Vec<u32> = ids.iter().copied().filter(|&i| i != self.pad_id).collect();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.inner.decode(&kept, true)))
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default()
    }

    /// Decodes the content of a fixed-length sequence: the tokens before its first PAD (or
    /// other stop token, see [`TextTokenizer::with_stops`]).
    pub fn decode_content(&self, ids: &[u32]) -> String {
        self.decode(&ids[..self.content_len(ids)])
    }

    /// How many of `ids` are content: those before the first PAD or other stop token.
    pub fn content_len(&self, ids: &[u32]) -> usize {
        ids.iter()
            .position(|&i| i == self.pad_id || self.stops.contains(&i))
            .unwrap_or(ids.len())
    }

    /// Adds tokens that end the content like PAD does (a chat model's end-of-turn token).
    pub fn with_stops(mut self, ids: impl IntoIterator<Item = u32>) -> Self {
        self.stops.extend(ids);
        self
    }

    /// Whether tokens are byte-level BPE symbols (GPT-2's byte-to-unicode map, which the token
    /// index reads): the decoder is `ByteLevel`, alone or in a sequence.
    pub fn is_byte_level(&self) -> bool {
        self.inner
            .get_decoder()
            .and_then(|d| serde_json::to_string(d).ok())
            .is_some_and(|json| json.contains("\"ByteLevel\""))
    }

    /// The id of a token given by its text (e.g. `<|eot_id|>`), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The text of one token (byte-level symbols), for debugging.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

fn named(path: &Path, e: Error) -> Error {
    match e {
        Error::Tokenizer(m) => Error::Tokenizer(format!("{}: {m}", path.display())),
        e => e,
    }
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

/// The message of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}
