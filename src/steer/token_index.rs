//! A compact index of the vocabulary's byte strings, built once per tokenizer and shared by every
//! constraint (in the spirit of llguidance's `toktrie`).
//!
//! Byte-level BPE tokens are stored as printable stand-in characters (GPT-2's byte-to-unicode
//! map); the index turns each back into the raw bytes it decodes to, and arranges all tokens in a
//! trie. Walking the trie through a byte automaton visits each shared prefix once, so computing
//! where every token leads from a state costs one pass over the trie, not one pass per token.
//!
//! ```
//! use diffusion_lm::{TextTokenizer, steer::{token_index::TokenIndex}};
//! let tok = TextTokenizer::train(["ab ab abc", "abc ab"].into_iter(), 300).unwrap();
//! let index = TokenIndex::new(&tok);
//! let ids = tok.encode("abc ab").unwrap();
//! let bytes: Vec<u8> = ids.iter().flat_map(|&i| index.bytes(i).to_vec()).collect();
//! assert_eq!(bytes, b"abc ab");
//! // Every token whose bytes lead from "state 0" through a toy automaton that accepts only 'a'/'b':
//! let mut reached = Vec::new();
//! index.walk(0u8, |_, b| (b == b'a' || b == b'b').then_some(0), |id, _| reached.push(id));
//! assert!(reached.iter().all(|&id| index.bytes(id).iter().all(|b| *b == b'a' || *b == b'b')));
//! ```

use std::collections::HashMap;

use crate::TextTokenizer;

/// GPT-2's byte-to-unicode map, inverted: stand-in character → byte.
fn char_to_byte() -> HashMap<char, u8> {
    let mut bs: Vec<u8> = (b'!'..=b'~').chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs: Vec<u32> = bs.iter().map(|&b| b as u32).collect();
    let mut n = 0;
    for b in 0..=255u8 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .filter_map(|(b, c)| char::from_u32(c).map(|c| (c, b)))
        .collect()
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// (byte, child node), sorted by byte.
    children: Vec<(u8, u32)>,
    /// Tokens whose bytes end here.
    tokens: Vec<u32>,
}

/// The vocabulary as byte strings and a trie over them.
///
/// The trie is stored flat, in preorder: node `i` holds the byte leading to it, its depth and
/// the size of its subtree, so a walk is one forward scan over a few arrays, and a dead prefix
/// is skipped by jumping over its subtree (as llguidance's `toktrie` does). At 150,000 tokens
/// the trie has about 530,000 nodes.
#[derive(Debug, Clone)]
pub struct TokenIndex {
    bytes: Vec<Vec<u8>>,
    pad_id: u32,
    /// Per node (preorder; node 0 is the root): the byte from its parent.
    byte: Vec<u8>,
    /// Per node: its depth (the root is 0).
    depth: Vec<u32>,
    /// Per node: the number of nodes in its subtree, itself included.
    subtree: Vec<u32>,
    /// Per node `i`: its tokens are `tokens[token_start[i]..token_start[i + 1]]`.
    token_start: Vec<u32>,
    tokens: Vec<u32>,
    max_depth: usize,
}

impl TokenIndex {
    /// Indexes every token of `tokenizer`. PAD (and any other special token) gets an empty byte
    /// string and is left out of the trie: it never appears inside content.
    pub fn new(tokenizer: &TextTokenizer) -> Self {
        Self::with_vocab_size(tokenizer, tokenizer.vocab_size())
    }

    /// Indexes `vocab_size` ids: a model's output layer can be wider than its tokenizer (LLaDA
    /// pads it to 126,464 rows); ids the tokenizer does not know get an empty byte string, like
    /// special tokens, and so are never content.
    pub fn with_vocab_size(tokenizer: &TextTokenizer, vocab_size: usize) -> Self {
        let map = char_to_byte();
        let special = tokenizer.special_ids();
        let mut bytes = vec![Vec::new(); vocab_size];
        for (id, slot) in bytes.iter_mut().enumerate() {
            let id = id as u32;
            if id == tokenizer.pad_id() || special.binary_search(&id).is_ok() {
                continue;
            }
            if let Some(text) = tokenizer.id_to_token(id) {
                let b: Option<Vec<u8>> = text.chars().map(|c| map.get(&c).copied()).collect();
                // A token with characters outside the byte alphabet would be an added special
                // token: keep it out of content.
                *slot = b.unwrap_or_default();
            }
        }
        let mut nodes = vec![Node::default()];
        for (id, b) in bytes.iter().enumerate() {
            if b.is_empty() {
                continue;
            }
            let mut at = 0usize;
            for &byte in b {
                let next = match nodes[at].children.binary_search_by_key(&byte, |c| c.0) {
                    Ok(i) => nodes[at].children[i].1 as usize,
                    Err(i) => {
                        nodes.push(Node::default());
                        let new = (nodes.len() - 1) as u32;
                        nodes[at].children.insert(i, (byte, new));
                        new as usize
                    }
                };
                at = next;
            }
            nodes[at].tokens.push(id as u32);
        }
        let mut index = TokenIndex {
            bytes,
            pad_id: tokenizer.pad_id(),
            byte: Vec::with_capacity(nodes.len()),
            depth: Vec::with_capacity(nodes.len()),
            subtree: Vec::with_capacity(nodes.len()),
            token_start: Vec::with_capacity(nodes.len() + 1),
            tokens: Vec::new(),
            max_depth: 0,
        };
        // Preorder with each node's children in descending byte order: the order in which a
        // depth-first walk with an explicit stack (children pushed in ascending order) visits
        // them, which fixes the order in which automata discover their states.
        let mut stack: Vec<(u32, u8, u32)> = vec![(0, 0, 0)]; // (trie node, byte, depth)
        while let Some((node, byte, depth)) = stack.pop() {
            index.byte.push(byte);
            index.depth.push(depth);
            index.subtree.push(1);
            index.token_start.push(index.tokens.len() as u32);
            index.tokens.extend(&nodes[node as usize].tokens);
            index.max_depth = index.max_depth.max(depth as usize);
            for &(b, child) in &nodes[node as usize].children {
                stack.push((child, b, depth + 1));
            }
        }
        index.token_start.push(index.tokens.len() as u32);
        // Subtree sizes: each node's parent is the last node before it one level up; add the
        // sizes from the back, so every child is complete before it is added.
        let n = index.byte.len();
        let mut parent_of = vec![0usize; n];
        let mut current = vec![0usize; index.max_depth + 1];
        for i in 0..n {
            let d = index.depth[i] as usize;
            current[d] = i;
            if d > 0 {
                parent_of[i] = current[d - 1];
            }
        }
        for i in (1..n).rev() {
            let size = index.subtree[i];
            index.subtree[parent_of[i]] += size;
        }
        index
    }

    /// Number of token ids (PAD included).
    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// The PAD id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The bytes token `id` decodes to (empty for PAD and special tokens).
    pub fn bytes(&self, id: u32) -> &[u8] {
        &self.bytes[id as usize]
    }

    /// Concatenated bytes of a token sequence.
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        ids.iter().flat_map(|&i| self.bytes(i).iter().copied()).collect()
    }

    /// Number of trie nodes.
    pub fn trie_size(&self) -> usize {
        self.byte.len()
    }

    /// Walks every content token from `start` through a byte automaton: `step(state, byte)`
    /// returns the next state or `None` (dead). `emit(token, state)` is called for every token
    /// whose whole byte string survives, with the state after it. Dead prefixes are pruned, so
    /// tokens sharing a dead prefix cost nothing.
    pub fn walk<S: Copy>(&self, start: S, mut step: impl FnMut(S, u8) -> Option<S>, mut emit: impl FnMut(u32, S)) {
        // `states[d]`: the state after the first `d` bytes of the current path. In preorder a
        // node's parent is the last node visited one level up, so `states[depth − 1]` is the
        // state its byte leaves from.
        let mut states: Vec<S> = vec![start; self.max_depth + 1];
        let n = self.byte.len();
        let mut i = 1;
        while i < n {
            let d = self.depth[i] as usize;
            match step(states[d - 1], self.byte[i]) {
                None => i += self.subtree[i] as usize,
                Some(next) => {
                    states[d] = next;
                    let (a, b) = (self.token_start[i] as usize, self.token_start[i + 1] as usize);
                    for &t in &self.tokens[a..b] {
                        emit(t, next);
                    }
                    i += 1;
                }
            }
        }
    }
}
