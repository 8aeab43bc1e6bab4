import json,sys,glob
D=sys.argv[1]
key=json.load(open(f'{D}/key.json')); systems=json.load(open(f'{D}/systems.json'))
J={}
pairs=[]
for f in sorted(glob.glob(f'{D}/judged*.jsonl')):
    for l in open(f):
        j=json.loads(l)
        if j['id'] in J: pairs.append((J[j['id']],j))
        else: J[j['id']]=j
lookup={(v['task'],v['text']):J[int(k)] for k,v in key.items() if int(k) in J}
print('overlap',len(pairs),'agree g',sum(a['grammatical']==b['grammatical'] for a,b in pairs),'agree f',sum(a['faithful']==b['faithful'] for a,b in pairs))
for s,tt in systems.items():
    row=[]
    for t,sel in tt.items():
        if t=='schema': continue
        n=g=b=0; leak=0
        for i,x in sel.items():
            if ('{' in x or '"' in x) and t not in('unconstrained','length'): leak+=1
            j=lookup.get((t,x))
            if j is None: continue
            n+=1; g+=j['grammatical']; b+=j['grammatical'] and j['faithful']
        distinct=len(set(sel.values()))
        row.append(f'{t}: g {g}/{n} both {b}/{n} leaks {leak} distinct {distinct}')
    print(s); [print('  ',r) for r in row]
