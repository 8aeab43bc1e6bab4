"""Byte-level BPE tokenizers with the vocabulary sizes of LLaDA (126,336 ids) and Qwen2/Dream
(151,643 BPE tokens plus special tokens), trained on local text (Rust sources and docs of the
cargo registry, Python's standard library), for timing the token index and the constraints'
automata at the real vocabulary sizes without the real tokenizers (docs/results.md).

    python3 benches/make_vocab_tokenizers.py OUT_DIR    # ~5 minutes on 2 cores; needs `tokenizers`

writes OUT_DIR/qwen-tokenizer.json and OUT_DIR/llada-tokenizer.json, whose special tokens carry
the real mask / end-of-text names (`<|mask|>`, `<|mdm_mask|>`, `<|endoftext|>`). Copy one into a
folder next to a config.json (benches/gpu/pretrained/*/) as tokenizer.json, with the mask and
end-of-text ids of config.json equal to the real ones, which these tokenizers reproduce (the
script prints them).
"""
import glob, sys, json, os, random
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers

files = sorted(glob.glob('/root/.cargo/registry/src/*/**/*.rs', recursive=True))
files += sorted(glob.glob('/root/.cargo/registry/src/*/**/*.md', recursive=True))
files += sorted(glob.glob('/usr/lib/python3*/**/*.py', recursive=True))
random.Random(0).shuffle(files)
def texts():
    total = 0
    for f in files:
        try:
            t = open(f, encoding='utf-8', errors='ignore').read()
        except Exception:
            continue
        total += len(t)
        yield t
        if total > 150e6: break
# Qwen2's ids: <|endoftext|> 151643, <|im_end|> 151645, <|mask|> 151666 (Dream's).
for name, n_bpe, specials in [
    ('qwen', 151643, ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] + [f'<|extra_{i}|>' for i in range(20)] + ['<|mask|>']),
    # LLaDA's ids: <|startoftext|> 126080, <|endoftext|> 126081, <|mdm_mask|> 126336.
    ('llada', 126080, ['<|startoftext|>', '<|endoftext|>'] + [f'<|reserved_{i}|>' for i in range(254)] + ['<|mdm_mask|>']),
]:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=n_bpe, min_frequency=2, show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts(), trainer=tr)
    print(name, 'bpe vocab', tok.get_vocab_size(), flush=True)
    tok.add_special_tokens(specials)
    out = sys.argv[1] if len(sys.argv) > 1 else '.'
    os.makedirs(out, exist_ok=True)
    tok.save(os.path.join(out, f'{name}-tokenizer.json'))
    ids = {t: tok.token_to_id(t) for t in ['<|endoftext|>', '<|mask|>', '<|mdm_mask|>', '<|im_end|>'] if tok.token_to_id(t) is not None}
    print(name, 'total', tok.get_vocab_size(), ids, flush=True)
