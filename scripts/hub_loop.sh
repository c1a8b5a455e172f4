#!/usr/bin/env bash
# The Hub loop of the README, each step a real command, against emtbench's FAKE Hub on 127.0.0.1
# (python -m emtbench.testing.fake_hub: started here, stopped on exit). It is not huggingface.co: this
# machine has no Hub. Against the real Hub, skip the fake Hub and set HF_TOKEN yourself.
#
#   emt-user      builds a base, fine-tunes it, evaluates base and fine-tune, writes the card, pushes both
#   emt-outsider  ("another person", who runs a leaderboard) requests an evaluation of the Hub id, runs
#                 the worker (it downloads and evaluates it), builds the page from the Hub and publishes it
#
# Base: the flagship from `emtbench build-base` if $EMTBENCH_CACHE_DIR holds a finished build, else the
# tiny random LLaVA of emtbench.testing (HUB_LOOP_BASE=tiny forces it). Work folder: $HUB_LOOP_DIR or a
# temporary one. Usage: bash scripts/hub_loop.sh
set -euo pipefail

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
export TOKENIZERS_PARALLELISM=false
W=${HUB_LOOP_DIR:-$(mktemp -d -t emtbench-hub-loop-XXXXXX)}
mkdir -p "$W"
LIMIT=${HUB_LOOP_LIMIT:-16}   # images per task in every evaluation
STEPS=${HUB_LOOP_STEPS:-10}   # fine-tuning steps
TASKS=emt_digits,emt_fashion_mnist
TIMINGS=()

now() { date +%s.%N; }
# step WHO CMD...: print the command (as WHO would type it), run it, time it.
step() {
    local who=$1 t0 t1
    shift
    printf '\n[%s] $ %s\n' "$who" "$*"
    t0=$(now)
    if [ "$who" = emt-outsider ]; then
        HF_TOKEN=$OTHER_HF_TOKEN HF_HOME=$W/hf-home-outsider "$@"
    else
        HF_TOKEN=$USER_HF_TOKEN HF_HOME=$W/hf-home-user "$@"
    fi
    t1=$(now)
    TIMINGS+=("$(printf '%7.1f s  %s' "$(echo "$t1 - $t0" | bc)" "$*")")
}

# ---- the fake Hub ----------------------------------------------------------------------------------
python -m emtbench.testing.fake_hub --root "$W/fake-hub" >"$W/fake-hub.out" 2>"$W/fake-hub.err" &
HUB_PID=$!
trap 'kill "$HUB_PID" 2>/dev/null; wait "$HUB_PID" 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q HF_HUB_OFFLINE "$W/fake-hub.out" 2>/dev/null && break; sleep 0.2; done
grep -q HF_HUB_OFFLINE "$W/fake-hub.out" || { cat "$W/fake-hub.err"; exit 1; }
echo "\$ python -m emtbench.testing.fake_hub --root $W/fake-hub &"
sed 's/\(TOKEN=hf_\)[A-Za-z0-9]*/\1…/' "$W/fake-hub.out"   # the fake Hub's tokens, shortened
# shellcheck disable=SC1090
source <(grep '^export ' "$W/fake-hub.out")
USER_HF_TOKEN=$HF_TOKEN
unset HF_TOKEN
echo "work folder: $W"

# ---- emt-user: a base on the Hub, a fine-tune, its card, the push -----------------------------------
FLAGSHIP=$(python -c 'from emtbench.methods.build_base import AlignmentOptions, cached_base_folder; print(cached_base_folder(AlignmentOptions()))')
if [ "${HUB_LOOP_BASE:-auto}" != tiny ] && [ -f "$FLAGSHIP/config.json" ] && [ -f "$FLAGSHIP/model.safetensors" ]; then
    BASE_KIND=flagship
    step emt-user emtbench build-base --output "$W/base"        # cached: copies the finished build
else
    BASE_KIND=tiny
    step emt-user python -c "from emtbench.testing import build_tiny_llava; build_tiny_llava('$W/base')"
fi
BASE_ID=emt-user/emt-$BASE_KIND-base
MODEL_ID=emt-user/emt-$BASE_KIND-linear-digits
step emt-user emtbench push "$W/base" "$BASE_ID"
step emt-user emtbench finetune --model "$W/base" --method linear --data emt:digits --max-steps "$STEPS" \
    --batch-size 8 --output "$W/ft"
for who in base ft; do
    step emt-user emtbench eval --model hf-multimodal --model_args "pretrained=$W/$who" --tasks "$TASKS" \
        --limit "$LIMIT" --batch_size 8 --device cpu --apply_chat_template --log_samples \
        --output_path "$W/results/$who"
done
step emt-user emtbench card "$W/ft" --results "$W/results/ft" --base-results "$W/results/base"
step emt-user emtbench push "$W/ft" "$MODEL_ID"
printf '\n[anyone] $ curl -s %s/%s/resolve/main/README.md | grep "^|"   # the card on the Hub\n' \
    "$HF_ENDPOINT" "$MODEL_ID"
curl -sf "$HF_ENDPOINT/$MODEL_ID/resolve/main/README.md" | grep '^|'

# ---- emt-outsider: evaluate the Hub id, submit, publish ---------------------------------------------
step emt-outsider hf repos create emt-outsider/emt-requests --type dataset --exist-ok
step emt-outsider hf repos create emt-outsider/emt-results --type dataset --exist-ok
step emt-outsider emtbench submit --model "$MODEL_ID" --to emt-outsider/emt-requests --base "$BASE_ID" \
    --tasks "$TASKS"
step emt-outsider emtbench leaderboard worker --requests emt-outsider/emt-requests \
    --results emt-outsider/emt-results --once --limit "$LIMIT" --device cpu --batch-size 8
step emt-outsider emtbench leaderboard build hf://datasets/emt-outsider/emt-results/leaderboard.yaml \
    --out "$W/site"
step emt-outsider emtbench leaderboard publish "$W/site" --repo-id emt-outsider/emt-leaderboard

# ---- the published page shows the run ---------------------------------------------------------------
printf '\n[anyone] $ curl -s %s/spaces/emt-outsider/emt-leaderboard | grep -o "%s@[0-9a-f]*" | sort -u\n' \
    "$HF_ENDPOINT" "$MODEL_ID"
curl -s "$HF_ENDPOINT/spaces/emt-outsider/emt-leaderboard" >"$W/space-index.html"
FOUND=$(grep -o "$MODEL_ID@[0-9a-f]*" "$W/space-index.html" | sort -u)
echo "$FOUND"
[ -n "$FOUND" ] || { echo "FAIL: the published page does not mention $MODEL_ID"; exit 1; }
cmp -s "$W/space-index.html" "$W/site/index.html" && echo "(the Space serves the index.html that was built)"
printf '\n[anyone] $ curl -s %s/spaces/emt-outsider/emt-leaderboard/leaderboard.json   # its rows:\n' "$HF_ENDPOINT"
curl -sf "$HF_ENDPOINT/spaces/emt-outsider/emt-leaderboard/leaderboard.json" | python -c '
import json, sys
for run in json.load(sys.stdin)["runs"]:
    name, method, base = run["name"], run["method"], run["base"]
    acc = ", ".join(f"{task} {value:.1f}" for task, value in sorted(run["accuracy"].items()))
    print(f"{name:<44} {method:<10} base={base}  accuracy %: {acc}")
'

printf '\nTimings (wall clock; base: %s):\n' "$BASE_KIND"
printf '%s\n' "${TIMINGS[@]}"
echo "hub loop OK (fake Hub at $HF_ENDPOINT, work folder $W)"
