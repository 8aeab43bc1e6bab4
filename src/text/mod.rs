//! Text in and out: the tokenizer and the corpus readers.

pub mod corpus;
pub mod lexicon;
pub mod phrases;
pub mod tokenizer;

pub use tokenizer::TextTokenizer;

/// Per token id: whether it is a whole word with its leading space (`Ġword`), the tokens a
/// doubled word repeats ("located located"); sub-word pieces and punctuation are not.
pub(crate) fn word_tokens(tok: &TextTokenizer) -> Vec<bool> {
    (0..tok.vocab_size() as u32)
        .map(|t| {
            tok.id_to_token(t).is_some_and(|s| {
                let rest = s
                    .strip_prefix('Ġ')
                    .or_else(|| s.strip_prefix('▁'))
                    .or_else(|| s.strip_prefix(' '));
                rest.is_some_and(|w| !w.is_empty() && w.chars().all(char::is_alphabetic))
            })
        })
        .collect()
}

/// `row` without the word tokens ([`word_tokens`]) that repeat the token before them, the
/// content moved up over them and the tail padded with `pad`; `None` when no word repeats.
pub(crate) fn without_doubled_words(row: &[u32], words: &[bool], tok: &TextTokenizer) -> Option<Vec<u32>> {
    let end = tok.content_len(row);
    let mut kept: Vec<u32> = Vec::with_capacity(row.len());
    for (p, &t) in row[..end].iter().enumerate() {
        if !(p > 0 && row[p - 1] == t && words.get(t as usize) == Some(&true)) {
            kept.push(t);
        }
    }
    if kept.len() == end {
        return None;
    }
    kept.extend_from_slice(&row[end..]);
    kept.resize(row.len(), tok.pad_id());
    Some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubled_words_are_dropped_and_the_tail_padded() {
        let texts = ["the cat sat on the mat"; 20];
        let tok = TextTokenizer::train(texts.iter().copied(), 300).unwrap();
        let words = word_tokens(&tok);
        let row = tok.encode_padded("the cat cat sat on on the mat", 12).unwrap();
        let kept = without_doubled_words(&row, &words, &tok).unwrap();
        assert_eq!(tok.decode_content(&kept), "the cat sat on the mat");
        assert_eq!(kept.len(), 12);
        assert_eq!(
            kept[tok.content_len(&kept)..],
            vec![tok.pad_id(); 12 - tok.content_len(&kept)]
        );
        let single = tok.encode_padded("the cat sat on the mat", 12).unwrap();
        assert!(without_doubled_words(&single, &words, &tok).is_none());
    }
}
