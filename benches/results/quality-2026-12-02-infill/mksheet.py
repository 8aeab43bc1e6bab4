# Blind sheet for the Eagle infill after the hole-before-punctuation rule: every distinct text of
# the given samples files' infill-eagle task (both engines pooled), plus OVERLAP continuous
# texts of that task judged alike by every earlier reader, shuffled; every reader reads the
# whole sheet. Run from the repository root:
#   python3 benches/results/quality-2026-12-02-infill/mksheet.py OUT OVERLAP SAMPLES...
import json, random, sys
sys.path.insert(0, 'benches/results/quality-2026-12-02-phrases')
from judged import all_judgments
out, overlap, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
TASK = 'infill-eagle'
INTENT = '`The Eagle is a ___ near ___.` with the holes filled: a kind of venue and what it is near'
J = all_judgments()
todo = set()
for f in files:
    for l in open(f):
        s = json.loads(l)
        if s['task'] == TASK:
            todo.add(s['text'])
seen = sorted(t for (task, t), js in J.items() if task == TASK and len(set(js)) == 1 and t not in todo)
rng = random.Random(13)
rng.shuffle(seen)
lines = [(t, False) for t in sorted(todo)] + [(t, True) for t in seen[:overlap]]
rng.shuffle(lines)
key = {}
with open(f'{out}/sheet.jsonl', 'w') as f:
    for i, (t, before) in enumerate(lines):
        key[i] = {'task': TASK, 'text': t, 'judged_before': before}
        f.write(json.dumps({'id': i, 'intent': INTENT, 'text': t}, ensure_ascii=False) + '\n')
json.dump(key, open(f'{out}/key.json', 'w'), indent=0)
print('new', len(todo), 'overlap', min(overlap, len(seen)), 'total', len(lines))
