# Every judgment of continuous-engine texts in the blind readings so far: (task, text) -> list
# of (grammatical, faithful), one per reader. Run from the repository root.
import glob, json, sys
sys.path.insert(0, 'benches/results/quality-2026-12-02-edits')
from judgments import load_judgments


def all_judgments(extra=()):
    J = load_judgments()
    for D in ['benches/results/quality-2026-12-02-lexicon/free256',
              'benches/results/quality-2026-12-02-forms/reading', *extra]:
        key = json.load(open(f'{D}/key.json'))
        for f in glob.glob(f'{D}/judged*.jsonl'):
            for l in open(f):
                j = json.loads(l); k = key[str(j['id'])]
                J.setdefault((k['task'], k['text']), []).append((j['grammatical'], j['faithful']))
    return J


def by_text(J, tasks=('unconstrained', 'sentence')):
    """Judgments by text, pooled over the free and sentence tasks (the same intent in effect)."""
    T = {}
    for (task, t), v in J.items():
        if task in tasks:
            T.setdefault(t, []).extend(v)
    return T
