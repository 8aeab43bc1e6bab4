# mksheet2.py OUT READERS TASKS name=samples.jsonl ...
import json, random, sys
OUT=sys.argv[1]; R=int(sys.argv[2]); ONLY=sys.argv[3].split(',')
exec(open(__file__.rsplit('/',1)[0]+'/intent.py' if '/' in __file__ else 'intent.py').read())
systems={}
for arg in sys.argv[4:]:
    name,path=arg.split('=')
    for l in open(path):
        r=json.loads(l)
        if r['task'] in ONLY:
            systems.setdefault(name,{}).setdefault(r['task'],{})[str(r['index'])]=r['text']
json.dump(systems,open(OUT+'/systems.json','w'))
def is_json(t): return t.lstrip().startswith('{')
items=set()
for s,tt in systems.items():
    for t,sel in tt.items():
        for i,x in sel.items():
            if t in('unconstrained','length') and is_json(x): continue
            items.add((t,x))
items=sorted(items); random.Random(23).shuffle(items)
sheet=[{'id':n,'intent':intent[t],'text':x} for n,(t,x) in enumerate(items)]
json.dump({n:{'task':t,'text':x} for n,(t,x) in enumerate(items)},open(OUT+'/key.json','w'))
parts=[[] for _ in range(R)]
for n,row in enumerate(sheet):
    parts[n%R].append(row)
    if n<20: parts[(n+1)%R].append(row)
for k,p in enumerate(parts):
    random.Random(k).shuffle(p)
    with open(f'{OUT}/sheet.reader{k}.jsonl','w') as f:
        for row in p: f.write(json.dumps(row)+'\n')
print(len(sheet),[len(p) for p in parts])
