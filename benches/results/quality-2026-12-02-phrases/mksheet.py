# Blind sheet for the sentences of the phrases runs (free, `--form sentence`, `--length 8..12`):
# every distinct sentence (a text not opening `{`) no earlier reading judged under its task (the
# free and sentence tasks pooled), plus OVERLAP sentences judged alike by every earlier reader
# (an agreement check), shuffled; every reader reads the whole sheet. Run from the repository root:
#   python3 benches/results/quality-2026-12-02-phrases/mksheet.py OUT OVERLAP SAMPLES...
import json, random, sys
sys.path.insert(0, 'benches/results/quality-2026-12-02-phrases')
from judged import all_judgments, by_text
out, overlap, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
import glob, os
# Earlier readings of this folder count as judged too.
J = all_judgments([d for d in sorted(glob.glob(f'{os.path.dirname(out)}/reading*'))
                   if os.path.abspath(d) != os.path.abspath(out) and glob.glob(f'{d}/judged*')])
T = by_text(J)
INTENT = {'unconstrained': 'any text about a restaurant',
          'sentence': 'a sentence about a restaurant (`--form sentence`)',
          'length': 'any text about a restaurant, 8 to 12 tokens'}
def judged(task, t):
    return t in T if task in ('unconstrained', 'sentence') else (task, t) in J
todo = {}
for f in files:
    for l in open(f):
        s = json.loads(l)
        t = s['text']
        if s['task'] in INTENT and not t.lstrip().startswith('{') and not judged(s['task'], t):
            todo.setdefault(t, s['task'])
seen = sorted(t for t, js in T.items() if len(set(js)) == 1 and t not in todo)
rng = random.Random(12)
rng.shuffle(seen)
lines = [(t, task, False) for t, task in sorted(todo.items())]
lines += [(t, 'unconstrained', True) for t in seen[:overlap]]
rng.shuffle(lines)
key = {}
with open(f'{out}/sheet.jsonl', 'w') as f:
    for i, (t, task, before) in enumerate(lines):
        key[i] = {'task': task, 'text': t, 'judged_before': before}
        f.write(json.dumps({'id': i, 'intent': INTENT[task], 'text': t}, ensure_ascii=False) + '\n')
json.dump(key, open(f'{out}/key.json', 'w'), indent=0)
print('new', len(todo), 'overlap', min(overlap, len(seen)), 'total', len(lines))
