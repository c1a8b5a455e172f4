#!/usr/bin/env bash
# Same model, same images, two harnesses: `emtbench eval` (lm-eval) and TRI-ML vlm-evaluation's own
# scripts (prepare.py -> evaluate.py -> score.py through `emtbench vlm-eval run`); then compare every
# sample (answers, verdicts, accuracy) with scripts/compare_samples.py.
#
#   scripts/vlm_eval_parity.sh VLM_EVAL_CHECKOUT MODEL_DIR WORK_DIR [SUBSET_ARGS...]
#
# Needs vlm_eval installed in the active environment (pip install --no-deps VLM_EVAL_CHECKOUT, plus its
# light dependencies; see docs/vlm-eval.md). EMTBENCH_VLM_EVAL_RUN overrides how `emtbench vlm-eval`
# is invoked (e.g. a driver that provides import stand-ins). Runs digits (test split, every image) and
# Fashion-MNIST (a seeded 2% of test) with the rule judge.
set -euo pipefail
checkout=$1 model=$2 work=$3
run=${EMTBENCH_VLM_EVAL_RUN:-"emtbench vlm-eval"}
export HF_TOKEN=${HF_TOKEN:-unused} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
root=$work/root results=$work/vlm-eval lm=$work/lm-eval
mkdir -p "$work"

one() {  # task dataset_id metadata_json vlm_eval_subset_flags...
  local task=$1 dataset_id=$2 metadata=$3; shift 3
  local family=${dataset_id%-test*}; family=${family%-train*}
  emtbench eval --model hf-multimodal --model_args "pretrained=$model" --tasks "$task" --apply_chat_template \
    --batch_size 1 --log_samples --output_path "$lm/$task" --metadata "$metadata"
  $run run "$checkout/scripts/datasets/prepare.py" --dataset_family "$family" --root_dir "$root" --hf_token HF_TOKEN
  $run run "$checkout/scripts/evaluate.py" --dataset.type "$@" --dataset.root_dir "$root" \
    --model_family emtbench-hf --model_id parity --model_dir "$model" --results_dir "$results" \
    --hf_token HF_TOKEN --device_batch_size 1 --num_workers 0
  $run run "$checkout/scripts/score.py" --dataset.type "$@" --dataset.root_dir "$root" \
    --model_id parity --results_dir "$results"
  python "$(dirname "$0")/compare_samples.py" "$lm/$task" "$results/$family/$dataset_id/parity" --task "$task"
}

one emt_digits emt-digits-test '{"split": "test"}' emt-digits-test
one emt_fashion_mnist emt-fashion-mnist-test-2pct-seed5 '{"split": "test", "fraction": 0.02, "seed": 5}' \
  emt-fashion-mnist-test --dataset.fraction 0.02 --dataset.seed 5
$run collect "$results" --model_id parity --output "$work/collected"
