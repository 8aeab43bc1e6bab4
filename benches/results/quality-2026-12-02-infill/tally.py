# Tallies the Eagle infill reading: reader agreement, agreement with earlier judgments on the
# overlap lines, and per samples file the texts judged grammatical / faithful / both by every
# reader. Run from the repository root:
#   python3 benches/results/quality-2026-12-02-infill/tally.py SAMPLES...
import glob, json, sys
sys.path.insert(0, 'benches/results/quality-2026-12-02-phrases')
from judged import all_judgments
R = 'benches/results/quality-2026-12-02-infill/reading'
key = json.load(open(f'{R}/key.json'))
new = {}
for f in sorted(glob.glob(f'{R}/judged*.jsonl')):
    for l in open(f):
        j = json.loads(l); new.setdefault(j['id'], []).append((j['grammatical'], j['faithful']))
print('readers agree on', sum(len(set(v)) == 1 for v in new.values()), 'of', len(new))
J = all_judgments()
ov = [i for i, k in key.items() if k['judged_before']]
print('overlap lines', len(ov), 'judged as before',
      sum(all(p == v for p in J[('infill-eagle', key[i]['text'])] for v in new[int(i)]) for i in ov))
T = {k['text']: new[int(i)] for i, k in key.items() if not k['judged_before']}
for i, k in key.items():
    if len(set(new[int(i)])) > 1:
        print('readers differ:', k['text'], new[int(i)])
for f in sys.argv[1:]:
    S = [json.loads(l) for l in open(f) if '"infill-eagle"' in l]
    g = sum(all(a for a, _ in T[s['text']]) for s in S)
    fa = sum(all(b for _, b in T[s['text']]) for s in S)
    both = sum(all(a and b for a, b in T[s['text']]) for s in S)
    print(f'{f}: samples {len(S)} distinct {len({s["text"] for s in S})} grammatical {g} faithful {fa} both {both}')
