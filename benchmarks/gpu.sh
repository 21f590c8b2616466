#!/usr/bin/env bash
# The GPU figures of the benchmarks, in one go (about 5 minutes): run from the repository root
# on a machine with an NVIDIA GPU, a CUDA build of JAX, rich, matplotlib and sympy. Each step
# has a time limit; its output goes to ${OUT:-gpu-results}/<step>.txt and its tail is printed.
#     bash benchmarks/gpu.sh
set -u
out=${OUT:-gpu-results}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" >"$out/$name.txt" 2>&1
    echo "== $name: exit $? after $((SECONDS - start)) s"
    tail -n 40 "$out/$name.txt"
}

nvidia-smi -L
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
step compare 150 python3 -m diffkit compare --backend gpu --out "$out/compare"
step hand 150 python3 benchmarks/bench_hand.py
step memory 45 python3 benchmarks/bench_jax_fwd_memory.py
step rules 150 python3 benchmarks/bench_rules.py --sizes 10000,1000000
step sweep 150 python3 benchmarks/harness_sweep.py --problem mlp --sizes 10,1000,100000 \
    --methods jax-fwd,jax-rev,tape,dual,fd --budget 30 --min-time 0.1 \
    --out "$out/sweep.jsonl" --fresh
tar -C "$out" -cf "$out/compare.tar" compare && rm -r "$out/compare"
