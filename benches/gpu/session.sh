#!/usr/bin/env bash
# One device call (about 9 minutes) of GPU work for the quality and masked-engine issues:
#  1. the masked engine's text on cuda:0 against the CPU, same seeds, six tasks (free, --form
#     sentence, the sentence template, the Eagle infill, --length 10..20, the restaurant schema),
#     with the shipped masked model and its recommended settings; in the background;
#  2. a masked model and a continuous model of 6 layers x 256 trained side by side on the GPU,
#     each run's step count sized by a 150-step probe of both together so that it ends in time
#     (END_M, END_C seconds after the start; --timeout stops a run that would not, and its last
#     checkpoint stays);
#  3. the first stage of the new continuous model's prediction classifier (models/e2e/README.md),
#     in the time the continuous run leaves.
# Results: session.txt (this log), parity-cpu.txt, and pack.tgz.partNN (a tar of the models'
# small files, weights and logs, split under the 16 MiB a device call returns per file; join with
# `cat pack.tgz.part* | tar -xzf -`).
#
# Prepare here (docs/gpu.md builds target-cuda/release/diffusion-lm):
#   mkdir -p .gpu/run && xz -6 -T2 -c target-cuda/release/diffusion-lm > .gpu/run/diffusion-lm.xz
# and run from the repository root on the GPU machine, carrying .gpu:
#   bash benches/gpu/session.sh
# A dry run of the script's logic on a CPU, with tiny models and the CPU build:
#   DRY=1 DEV=cpu END_M=130 END_C=100 SAMPLES=1 OUT=/tmp/dry bash benches/gpu/session.sh
set -uo pipefail
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
LOG=$OUT/session.txt
exec > >(tee "$LOG") 2>&1
nvidia-smi --query 2>/dev/null; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
if [ -n "${DRY:-}" ]; then cp target/release/diffusion-lm /tmp/dlm; else
python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('${DIR:-.gpu/run}/diffusion-lm.xz'), open('/tmp/dlm', 'wb'))"; fi
chmod +x /tmp/dlm
L=
for n in libcublas.so.13 libcublasLt.so.13 libcudart.so.13 libcurand.so.10; do
  f=$(find /opt/torch/.venv /usr/local/cuda/ /usr /opt -name $n -not -path '*/stubs/*' -not -path '*/compat/*' -print -quit 2>/dev/null)
  [ -n "$f" ] && L=$L:${f%/*} || echo "MISSING $n"
done
ldconfig -p | grep -q 'libcuda\.so\.1 ' || { f=$(find / -xdev -name libcuda.so.1 -not -path '*/stubs/*' -not -path '*/compat/*' -print -quit 2>/dev/null); [ -n "$f" ] && L=$L:${f%/*}; }
export LD_LIBRARY_PATH=${L#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
rm -rf /tmp/pm /tmp/pc /tmp/masked /tmp/cont /tmp/cls /tmp/pack /tmp/pack.tgz /tmp/parity-*
echo "ready at $(el)s"
CORPUS=(--corpus data/e2e/devset.csv data/e2e/testset_w_refs.csv)
TOK=(--tokenizer models/e2e/tokenizer.json)
MASKED=(--engine masked "${TOK[@]}" --hidden 256 --layers 6 --heads 8 --ffn-hidden 1024 --batch-size 256 --lr 1e-3 --ema-decay 0.9995 --seed 0)
CONT=("${TOK[@]}" --hidden 256 --layers 6 --heads 8 --ffn-hidden 1024 --batch-size 256 --lr 1e-3 --ema-decay 0.9995 --seed 0)
DEV=${DEV:-cuda:0}; END_M=${END_M:-540}; END_C=${END_C:-400}
if [ -n "${DRY:-}" ]; then # a dry run of the script's logic on a CPU, tiny models
  MASKED=(--engine masked "${TOK[@]}" --hidden 32 --layers 1 --heads 2 --ffn-hidden 64 --batch-size 4)
  CONT=("${TOK[@]}" --hidden 32 --layers 1 --heads 2 --ffn-hidden 64 --batch-size 4)
fi
# --- issue 19: the masked engine's text, cpu against cuda:0, same seeds (in the background) ---
task_args() { # the task's generate flags, one per line
  case $1 in
    0) ;;
    1) printf '%s\n' --form sentence ;;
    2) printf '%s\n' --regex '[A-Z][A-Za-z ]+ is a (pub|restaurant|coffee shop)[a-z ,]* near [A-Z][A-Za-z ]+\.' ;;
    3) printf '%s\n' --infill 'The Eagle is a ___ near ___.' ;;
    4) printf '%s\n' --length 10..20 ;;
    5) printf '%s\n' --schema examples/schemas/restaurant.json ;;
  esac
}
parity() {
  local i dev args
  for i in 0 1 2 3 4 5; do
    mapfile -t args < <(task_args $i)
    for dev in cpu $DEV; do
      RAYON_NUM_THREADS=6 /tmp/dlm generate --device $dev --samples ${SAMPLES:-16} --seed 3 "${args[@]}" > "/tmp/parity-$i-$dev.txt" 2>"/tmp/parity-$i-$dev.err"
      echo "rc $? task $i (${args[*]}) $dev"
    done
    if cmp -s "/tmp/parity-$i-cpu.txt" "/tmp/parity-$i-$DEV.txt"; then echo "task $i identical ($(wc -l < /tmp/parity-$i-cpu.txt) lines)"; else
      echo "task $i DIFFERENT"; diff "/tmp/parity-$i-cpu.txt" "/tmp/parity-$i-$DEV.txt" | head -8; tail -3 "/tmp/parity-$i-$DEV.err"; fi
  done
  cat /tmp/parity-*-cpu.txt > "$OUT/parity-cpu.txt"
  echo "parity done at $(el)s"
}
parity > /tmp/parity.log 2>&1 &
PAR=$!
# --- probes, side by side, to size the runs ---
/tmp/dlm train "${MASKED[@]}" "${CORPUS[@]}" --out /tmp/pm --steps 150 --warmup 50 --log-every 25 --checkpoint-every 100000 --device $DEV --no-progress > /tmp/pm.txt 2>&1 &
P1=$!
/tmp/dlm train "${CONT[@]}" "${CORPUS[@]}" --out /tmp/pc --steps 150 --warmup 50 --log-every 25 --checkpoint-every 100000 --device $DEV --no-progress > /tmp/pc.txt 2>&1 &
P2=$!
wait $P1; R1=$?; wait $P2; R2=$?
echo "probes rc $R1 $R2 at $(el)s"; grep -E "^step (50|150)/|rror" /tmp/pm.txt /tmp/pc.txt
steptime() { python3 -c "
import re,sys
t={int(m[0]):float(m[1]) for m in re.findall(r'^step (\d+)/\d+ .*\| ([0-9.]+)s$', open(sys.argv[1]).read(), re.M)}
print((t[150]-t[50])/100)" "$1" 2>/dev/null || echo 0; }
SM=$(steptime /tmp/pm.txt); SC=$(steptime /tmp/pc.txt)
echo "side by side: masked $SM s/step, continuous $SC s/step"
# Sized to 85% of the time left: side by side, the runs' steps went 15% slower than the probes'
# on an H200 (2026-11-30), and a run stopped by its timeout never anneals its learning rate.
steps() { python3 -c "s=float('$1'); print(max(500, int(0.85*$2/s)//100*100) if s>0 else 0)"; }
NOW=$(el)
if [ "$R1" = 0 ] && [ "$R2" = 0 ]; then
  NM=$(steps "$SM" $((END_M - NOW - 15))); NC=$(steps "$SC" $((END_C - NOW - 15)))
elif [ "$R1" = 0 ]; then NM=$(steps "$SM" $(( (END_M - NOW - 15) * 3 / 2 ))); NC=0
elif [ "$R2" = 0 ]; then NC=$(steps "$SC" $(( (END_M - NOW - 15) * 3 / 2 ))); NM=0; END_C=$END_M
else NM=0; NC=0; cat /tmp/pm.txt /tmp/pc.txt | tail -30; fi
echo "training: masked $NM steps, continuous $NC steps (from $(el)s)"
if [ "$NM" -gt 0 ]; then
  timeout $((END_M - $(el))) /tmp/dlm train "${MASKED[@]}" "${CORPUS[@]}" --out /tmp/masked --steps "$NM" --warmup 500 --log-every 250 --checkpoint-every 1000 --device $DEV --no-progress > /tmp/masked.txt 2>&1 &
  PM=$!
fi
if [ "$NC" -gt 0 ]; then
  timeout $((END_C - $(el))) /tmp/dlm train "${CONT[@]}" "${CORPUS[@]}" --out /tmp/cont --steps "$NC" --warmup 500 --log-every 250 --checkpoint-every 1000 --device $DEV --no-progress > /tmp/cont.txt 2>&1
  echo "continuous rc $? at $(el)s"; tail -2 /tmp/cont.txt
  if [ -e /tmp/cont/model.safetensors ] && [ $(el) -lt $((END_M - 60)) ]; then
    # The prediction classifier's first stage, on the new model (see models/e2e/README.md).
    timeout $((END_M - $(el))) /tmp/dlm train-classifier --model /tmp/cont --reads prediction --device $DEV \
      --hidden 192 --layers 3 --heads 6 --steps 3000 --batch-size 128 --lr 1e-3 --warmup 200 --ema-decay 0.999 \
      --checkpoint-every 500 --log-every 250 --no-progress --out /tmp/cls > /tmp/cls.txt 2>&1
    echo "classifier rc $? at $(el)s"; tail -2 /tmp/cls.txt
  fi
fi
[ -n "${PM:-}" ] && { wait $PM; echo "masked rc $? at $(el)s"; tail -2 /tmp/masked.txt; }
while kill -0 $PAR 2>/dev/null && [ $(el) -lt $((END_M + 10)) ]; do sleep 2; done
kill -0 $PAR 2>/dev/null && { echo "parity unfinished at $(el)s"; pkill -f "dlm generate"; kill $PAR; }
cat /tmp/parity.log
# --- pack: the small files in one tar, the weights split under 16 MiB ---
mkdir -p /tmp/pack
for d in masked cont cls; do
  [ -d /tmp/$d ] || continue
  mkdir -p /tmp/pack/$d
  cp /tmp/$d/config.json /tmp/$d/model.safetensors /tmp/$d/loss.png /tmp/pack/$d/ 2>/dev/null
  cp /tmp/$d/train_state.json /tmp/pack/$d/training.json 2>/dev/null
  cp /tmp/$d.txt /tmp/pack/$d/log.txt
done
cp /tmp/pm.txt /tmp/pc.txt /tmp/parity.log /tmp/pack/ 2>/dev/null
tar -C /tmp/pack -czf /tmp/pack.tgz . && split -b 15M -d /tmp/pack.tgz "$OUT/pack.tgz.part"
ls -la "$OUT"; echo "end at $(el)s"
