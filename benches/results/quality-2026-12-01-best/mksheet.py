import json, random, sys
tasks=['unconstrained','sentence','template','template-short','infill-eagle','infill-bakers','length','schema']
exec(open(__file__.rsplit('/',1)[0]+'/intent.py' if '/' in __file__ else 'intent.py').read())
c=[json.loads(l) for l in open(sys.argv[1])]
ONLY=sys.argv[3].split(',')
OUT=sys.argv[4]
systems={}  # name -> task -> index -> text
for ti,t in enumerate(tasks):
    chunk=c[ti*128:(ti+1)*128]
    if t not in ONLY or len(chunk)<128: continue
    by={}
    for r in chunk: by.setdefault(r['index'],[]).append(r)
    for k in [1,2,4]:
        sel={}
        for i,rs in by.items():
            rs=sorted(rs,key=lambda r:r['j'])[:k]
            best=rs[0]
            for r in rs[1:]:
                if r['ok'] and r['score']>best['score']: best=r
            sel[i]=best['text']
        systems.setdefault(f'b{k}',{})[t]=sel
json.dump(systems,open(OUT+'/systems.json','w'),indent=0)
def is_json(t): return t.lstrip().startswith('{')
items=set()
for s,tt in systems.items():
    for t,sel in tt.items():
        if t=='schema': continue
        for i,x in sel.items():
            if t in('unconstrained','length') and is_json(x): continue
            items.add((t,x))
items=sorted(items); random.Random(11).shuffle(items)
sheet=[{'id':n,'intent':intent[t],'text':x} for n,(t,x) in enumerate(items)]
key={n:{'task':t,'text':x} for n,(t,x) in enumerate(items)}
json.dump(key,open(OUT+'/key.json','w'))
R=int(sys.argv[2]) if len(sys.argv)>2 else 3; overlap=20
# split: each reader a share; first `overlap` ids read by reader 0 and reader 1 both
parts=[[] for _ in range(R)]
for n,row in enumerate(sheet):
    parts[n%R].append(row)
    if n<overlap: parts[(n+1)%R].append(row)
for k,p in enumerate(parts):
    random.Random(k).shuffle(p)
    with open(f'{OUT}/sheet.reader{k}.jsonl','w') as f:
        for row in p: f.write(json.dumps(row)+'\n')
print(len(sheet),[len(p) for p in parts])
for s,tt in systems.items():
    print(s,{t:sum(('{' in x or '"' in x) for x in sel.values()) for t,sel in tt.items() if t.startswith('infill')})
