# Blind sheet for the free sentences of the mixed-form runs: every distinct sentence (a text not
# opening `{`) of the given samples files, plus `overlap` sentences judged in earlier readings
# (as an agreement check), shuffled; every reader reads the whole sheet.
#   python3 benches/results/quality-2026-12-02-forms/mksheet.py OUT OVERLAP SAMPLES...
import json, random, sys
sys.path.insert(0, 'benches/results/quality-2026-12-02-edits')
from judgments import load_judgments
import glob
out, overlap, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
J = load_judgments()
for D in ['benches/results/quality-2026-12-02-lexicon/free256']:
    key = json.load(open(f'{D}/key.json'))
    for f in glob.glob(f'{D}/judged*.jsonl'):
        for l in open(f):
            j = json.loads(l); k = key[str(j['id'])]
            J.setdefault((k['task'], k['text']), []).append((j['grammatical'], j['faithful']))
INTENT = 'any text about a restaurant'
todo = set()
for f in files:
    for l in open(f):
        s = json.loads(l)
        if s['task'] == 'unconstrained' and not s['text'].lstrip().startswith('{'):
            todo.add(s['text'])
# Earlier-judged lines on which every reader agreed, from the free and sentence tasks.
seen = sorted(t for (task, t), js in J.items()
              if task in ('unconstrained', 'sentence') and t not in todo and len(set(js)) == 1)
rng = random.Random(11)
rng.shuffle(seen)
lines = [(t, False) for t in sorted(todo)] + [(t, True) for t in seen[:overlap]]
rng.shuffle(lines)
key = {}
with open(f'{out}/sheet.jsonl', 'w') as f:
    for i, (t, before) in enumerate(lines):
        key[i] = {'task': 'unconstrained', 'text': t, 'judged_before': before}
        f.write(json.dumps({'id': i, 'intent': INTENT, 'text': t}, ensure_ascii=False) + '\n')
json.dump(key, open(f'{out}/key.json', 'w'), indent=0)
print('new', len(todo), 'overlap', min(overlap, len(seen)), 'total', len(lines))
