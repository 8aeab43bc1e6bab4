import json,glob
def load_judgments():
    J2={}
    for D in glob.glob('benches/results/quality-2026-12-01-best/read*')+['benches/results/quality-2026-12-02-lexicon/reading','benches/results/quality-2026-12-02-edits/reading','benches/results/quality-2026-12-02-edits/reading-best8','benches/results/quality-2026-12-02-edits/reading-best8b','benches/results/quality-2026-12-02-edits/reading-repeat']:
        try: key=json.load(open(f'{D}/key.json'))
        except FileNotFoundError: continue
        for f in glob.glob(f'{D}/judged*.jsonl'):
            for l in open(f):
                j=json.loads(l); k=key[str(j['id'])]
                J2.setdefault((k['task'],k['text']),[]).append((j['grammatical'],j['faithful']))
    S={}
    for l in open('benches/results/quality-2026-12-01-best/e2e-best4-sc2/samples.jsonl'):
        d=json.loads(l); S[(d['task'],d['index'])]=d['text']
    D='benches/results/quality-2026-12-02-defaults/reading-length'
    key=json.load(open(D+'/key.json'))
    for f in glob.glob(D+'/judged*.jsonl'):
        for l in open(f):
            j=json.loads(l); k=key[str(j['id'])]
            if k['system']!='e2e-best4-sc2': continue
            J2.setdefault((k['task'],S[(k['task'],k['index'])]),[]).append((j['grammatical'],j['faithful']))
    return J2
