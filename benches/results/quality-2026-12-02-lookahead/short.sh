#!/bin/bash
# usage: short.sh ALPHA [extra flags]; template-short, 32 samples, seed 1
a=$1; shift
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296
DLM_LA_ALPHA=$a ./target/release/diffusion-lm generate --model models/e2e --regex '[A-Z][a-z]+ is a (pub|restaurant) near [A-Z][a-z]+\.' --samples 32 --seed 1 "$@" 2>/dev/null > runs/q/short-$a-$(echo "$@" | tr ' -' '_').txt
python3 - runs/q/short-$a-$(echo "$@" | tr ' -' '_').txt <<'PY'
import sys,collections
names={'Alimentum','Aromi','Clowns','Cocum','Cotto','Fitzbillies','Wildwood','Zizzi','Strada','Giraffe','Loch','Avalon','Ranch','Wrestlers','Sorrento','Rice','Bakers','Eagle','Phoenix','Mill','Punter','Cricketers','Raja','Burger','Yippee','Bibimbap','Browns','Midsummer','Taste','Travellers','Blue','Vaults','Portland','Express','Caf\u00e9','Crowne','Haywain','Rainbow','Sicilia','Lion','Fyne','Golden','Cambridge','Dumpling','Kings','Pizza'}
L=[l.strip() for l in open(sys.argv[1])]
ok=0
for l in L:
    w=l.split()
    a,b=w[0],w[-1].rstrip('.')
    good = a in names and b in names and a!=b
    ok+=good
print(sys.argv[1], 'name-ok', ok,'/',len(L), 'distinct', len(set(L)))
print(collections.Counter(l.split()[0] for l in L).most_common(8))
PY
