# Blind sheet: every distinct (task, text) of the new run not judged in the earlier readings
# (read1-3 of quality-2026-12-01-best), plus `overlap` judged ones as an agreement check.
import json,glob,random,sys
new=sys.argv[1]; out=sys.argv[2]; overlap=int(sys.argv[3]); readers=int(sys.argv[4])
INTENT={'length':'any text about a restaurant, 8 to 12 tokens'}
J={}
for D in glob.glob('benches/results/quality-2026-12-01-best/read*')+['benches/results/quality-2026-12-02-lexicon/reading','benches/results/quality-2026-12-02-edits/reading','benches/results/quality-2026-12-02-edits/reading-best8','benches/results/quality-2026-12-02-edits/reading-best8b']:
    key=json.load(open(f'{D}/key.json'))
    for f in glob.glob(f'{D}/sheet*.jsonl'):
        for l in open(f):
            j=json.loads(l); INTENT[key[str(j['id'])]['task']]=j['intent']
    for f in glob.glob(f'{D}/judged*.jsonl'):
        for l in open(f):
            j=json.loads(l); k=key[str(j['id'])]
            J.setdefault((k['task'],k['text']),[]).append(j)

def _extra(J, pair=False):
    import json,glob
    S={}
    for l in open('benches/results/quality-2026-12-01-best/e2e-best4-sc2/samples.jsonl'):
        d=json.loads(l); S[(d['task'],d['index'])]=d['text']
    D='benches/results/quality-2026-12-02-defaults/reading-length'
    key=json.load(open(D+'/key.json'))
    for f in glob.glob(D+'/judged*.jsonl'):
        for l in open(f):
            j=json.loads(l); k=key[str(j['id'])]
            if k['system']!='e2e-best4-sc2': continue
            t=S[(k['task'],k['index'])]
            J.setdefault((k['task'],t),[]).append(j)

_extra(J)
todo=set(); seen=[]
for l in open(new):
    s=json.loads(l)
    if s['task'] in ('schema','unconstrained'): continue
    if s['task']=='length' and (s['text'].startswith('{')): continue
    k=(s['task'],s['text'])
    if k in J: seen.append(k)
    else: todo.add(k)
rng=random.Random(7)
seen=sorted(set(seen)); rng.shuffle(seen)
lines=sorted(todo)+seen[:overlap]
rng.shuffle(lines)
key={}
sheets=[[] for _ in range(readers)]
for i,(t,x) in enumerate(lines):
    key[i]={'task':t,'text':x,'judged_before':(t,x) in J}
    sheets[i%readers].append({'id':i,'intent':INTENT.get(t,t),'text':x})
json.dump(key,open(out+'/key.json','w'),indent=0)
for r,sh in enumerate(sheets):
    with open(f'{out}/sheet.reader{r}.jsonl','w') as f:
        for x in sh: f.write(json.dumps(x, ensure_ascii=False)+'\n')
print('new',len(todo),'overlap',min(overlap,len(seen)),'total',len(lines))
