# Re-chooses best of 8 from candidates-best8.jsonl (every candidate and its score, a build not kept)
# with and without avoiding repeated words, and counts the texts judged grammatical and faithful.
# Run from the repository root.
import json,re,sys
from collections import defaultdict
import sys; sys.path.insert(0,'benches/results/quality-2026-12-02-edits'); from judgments import load_judgments; J2=load_judgments()
C=[json.loads(l) for l in open('benches/results/quality-2026-12-02-edits/candidates-best8.jsonl')]
order=['template-short','infill-eagle','infill-bakers']
# assign tasks: blocks of 32*8
for n,c in enumerate(C): c['task']=order[n//256]
G=defaultdict(list)
for c in C: G[(c['task'],c['index'])].append(c)
def words(s): return re.findall(r"[A-Za-z\u00c0-\uffff]+",s)
def repeats(text):
    if text.startswith('{'): return False
    for sent in re.split(r'[.!?]',text):
        seen=set()
        for w in [w.lower() for w in words(sent) if len(w)>=4]:
            if w in seen: return True
            seen.add(w)
    return False
for t in order:
    keys=[k for k in G if k[0]==t]
    if len(keys)<32: continue
    res={'old':[0,0],'new':[0,0]}; ch=[]
    for k in sorted(keys):
        cs=[c for c in G[k] if c['ok']]
        old=max(cs,key=lambda c:(c['score'],-c['j']))
        new=max(cs,key=lambda c:(not repeats(c['text']),c['score'],-c['j']))
        for name,c in (('old',old),('new',new)):
            v=J2.get((t,c['text']))
            if v is None: res[name][1]+=1
            else: res[name][0]+=all(a and b for a,b in v)
        if new is not old: ch.append((old['text'],J2.get((t,old['text'])),new['text'],J2.get((t,new['text']))))
    print(t,res)
    for x in ch: print('  ',x)
