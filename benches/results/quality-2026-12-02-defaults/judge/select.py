# The selection table of docs/results.md ("A masked-model judge"); run from this folder.
import collections, json
B = '../../quality-2026-12-01-best/candidates.jsonl'
items = {(j['task'], j['text']): j['ok'] for j in map(json.loads, open('read-texts.jsonl'))}
rows = [json.loads(l) for l in open(B)]
sc = [tuple(map(float, l.split())) for l in open('candidates.scores.tsv')]
tasks = ['unconstrained', 'sentence', 'template', 'template-short', 'infill-eagle', 'infill-bakers', 'length', 'schema']
for ti, t in enumerate(tasks):
    if t in ('unconstrained', 'length', 'schema'):
        continue
    g = collections.defaultdict(list)
    for k in range(ti * 128, (ti + 1) * 128):
        g[rows[k]['index']].append((rows[k], sc[k]))
    n, res = 0, collections.Counter()
    for cs in g.values():
        lab = [(r, s) for r, s in cs if (t, r['text']) in items and r['ok']]
        if len({r['text'] for r, _ in lab}) < 2:
            continue
        n += 1
        for name, f in [('continuous', lambda r, s: r['score']), ('masked', lambda r, s: s[1]),
                        ('sum', lambda r, s: s[0] + s[1])]:
            best = max(lab, key=lambda x: f(*x))
            res[name] += items[(t, best[0]['text'])]
        res['best possible'] += any(items[(t, r['text'])] for r, _ in lab)
    print(t, n, dict(res))
