# Tallies the phrases reading: reader agreement, agreement with earlier judgments on the overlap
# lines, and per samples file and task the sentences judged grammatical / faithful / both by
# every reader (earlier readings included), records in the value sets and distinct outputs.
#   python3 benches/results/quality-2026-12-02-phrases/tally.py SAMPLES...
import glob, json, sys
sys.path.insert(0, 'benches/results/quality-2026-12-02-phrases')
from judged import all_judgments, by_text
R = 'benches/results/quality-2026-12-02-phrases/reading'
key = json.load(open(f'{R}/key.json'))
new = {}
for f in sorted(glob.glob(f'{R}/judged*.jsonl')):
    for l in open(f):
        j = json.loads(l); new.setdefault(j['id'], []).append((j['grammatical'], j['faithful']))
print('readers agree on', sum(len(set(v)) == 1 for v in new.values()), 'of', len(new))
T = by_text(all_judgments())
ov = [i for i, k in key.items() if k['judged_before']]
print('overlap lines', len(ov), 'judged as before',
      sum(all(p == v for p in T[key[i]['text']] for v in new[int(i)]) for i in ov))
for i, k in key.items():
    if not k['judged_before']:
        T.setdefault(k['text'], []).extend(new[int(i)])
    if len(set(new[int(i)])) > 1:
        print('readers differ:', k['text'], new[int(i)])
for f in sys.argv[1:]:
    S = [json.loads(l) for l in open(f)]
    for task in sorted({s['task'] for s in S}):
        ts = [s for s in S if s['task'] == task]
        sent = [s['text'] for s in ts if not s['text'].lstrip().startswith('{')]
        rec = [s for s in ts if s['text'].lstrip().startswith('{')]
        miss = [t for t in sent if t not in T]
        g = sum(all(a for a, _ in T[t]) for t in sent if t in T)
        fa = sum(all(b for _, b in T[t]) for t in sent if t in T)
        both = sum(all(a and b for a, b in T[t]) for t in sent if t in T)
        print(f'{f} {task}: samples {len(ts)} distinct {len({s["text"] for s in ts})} '
              f'sentences {len(sent)} grammatical {g} faithful {fa} both {both} unread {len(miss)} '
              f'records {len(rec)} in value sets {sum(bool(s["in_value_sets"]) for s in rec)}')
