# Tallies the free-sentence reading: reader agreement, agreement with earlier judgments on the
# overlap lines, and per run the sentences judged grammatical / faithful / both by every reader.
import json, glob, sys
sys.path.insert(0, 'benches/results/quality-2026-12-02-edits')
from judgments import load_judgments
R = 'benches/results/quality-2026-12-02-forms/reading'
key = json.load(open(f'{R}/key.json'))
J = {}
for f in sorted(glob.glob(f'{R}/judged*.jsonl')):
    for l in open(f):
        j = json.loads(l); J.setdefault(j['id'], []).append((j['grammatical'], j['faithful']))
print('readers agree on', sum(len(set(v)) == 1 for v in J.values()), 'of', len(J))
E = load_judgments()
D = 'benches/results/quality-2026-12-02-lexicon/free256'; k2 = json.load(open(D + '/key.json'))
for f in glob.glob(D + '/judged*.jsonl'):
    for l in open(f):
        j = json.loads(l); k = k2[str(j['id'])]
        E.setdefault((k['task'], k['text']), []).append((j['grammatical'], j['faithful']))
ov = ova = 0
for i, k in key.items():
    if k['judged_before']:
        prev = [p for (t, x), ps in E.items() if x == k['text'] for p in ps]
        ov += 1; ova += all(p == v for p in prev for v in J[int(i)])
print('overlap lines', ov, 'judged as before', ova)
text_j = {k['text']: J[int(i)] for i, k in key.items()}
for f in sys.argv[1:]:
    S = [json.loads(l) for l in open(f)]
    sent = [s['text'] for s in S if not s['text'].lstrip().startswith('{')]
    g = sum(all(a for a, _ in text_j[t]) for t in sent)
    fa = sum(all(b for _, b in text_j[t]) for t in sent)
    both = sum(all(a and b for a, b in text_j[t]) for t in sent)
    print(f, 'sentences', len(sent), 'grammatical', g, 'faithful', fa, 'both', both)
for i, k in key.items():
    if len(set(J[int(i)])) > 1: print('readers differ:', k['text'], J[int(i)])
