import json,sys,glob
old=sys.argv[1]; new=sys.argv[2]
def load(p):
    d={}
    for l in open(p):
        j=json.loads(l); d[(j['task'],j['index'])]=j['text']
    return d
O=load(old); N=load(new)
J={}
for D in glob.glob('benches/results/quality-2026-12-01-best/read*'):
    key=json.load(open(f'{D}/key.json'))
    for f in glob.glob(f'{D}/judged*.jsonl'):
        for l in open(f):
            j=json.loads(l); k=key[str(j['id'])]
            J.setdefault((k['task'],k['text']),[]).append(j['grammatical'] and j['faithful'])
tasks=sorted(set(t for t,_ in N))
for t in tasks:
    idx=sorted(i for tt,i in N if tt==t)
    same=sum(O.get((t,i))==N[(t,i)] for i in idx)
    def score(D):
        ok=unk=0
        for i in idx:
            v=J.get((t,D.get((t,i))))
            if v is None: unk+=1
            else: ok+= all(v)
        return ok,unk
    print(t,'same',same,'/',len(idx),'old ok/unknown',score(O),'new ok/unknown',score(N))
    if '-v' in sys.argv:
        for i in idx:
            if O.get((t,i))!=N[(t,i)]:
                v=J.get((t,N[(t,i)])); vo=J.get((t,O.get((t,i))))
                print(f'   {i}: {O.get((t,i))!r} [{vo}]\n    -> {N[(t,i)]!r} [{v}]')
