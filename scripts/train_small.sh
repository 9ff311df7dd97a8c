#!/usr/bin/env bash
# Train the shipped 128 px small ASUKA (src/asuka/pretrained/asuka-small; configs/asuka-small-128),
# end to end, with the project's own commands (`asuka train ...`, `asuka make-latent-aug`), then
# assemble the folders. The VAE and the UNet continue the 64 px model it replaced (commit f318a01).
#
#   python scripts/fetch_photos.py --out data/photos --crop-size 128 --crops-per-image 300 --seed 0
#   bash scripts/train_small.sh                        # everything, two stages at a time
#   # as the shipped model was run (MODEL_CARD.md), with the photos fetched to /work/runs/photos:
#   RUNS=/work/runs/a128 DATA=/work/runs/photos/train_crops/128 NICE=0 bash scripts/train_small.sh
#
# REUSE=<model folder> reruns only the latent augmentation and the decoder on the VAE, UNet, MAE
# and aligners of an existing pipeline folder (and of its -ablations folder beside it), copied
# into $RUNS/model first; REUSE_COMMIT=<commit> takes that folder from the shipped model of a
# commit (extracted into $RUNS/reuse-<commit>). DECODER_INIT=<decoder folder> continues that
# decoder instead of starting from the VAE's ("reuse" = the REUSE folder's own decoder).
#
# ONESTEP_STEPS=<n> (with REUSE or REUSE_COMMIT) keeps every component of that folder and continues
# its UNet for n steps at the one timestep the pipeline calls it at, on the pipeline's own condition
# (stage unet_onestep, configs/asuka-small-128/unet_onestep.yaml).
# UNET_CONTINUE_STEPS=<n> (with REUSE or REUSE_COMMIT) keeps every component of that folder and
# continues its UNet for n steps over every noise level on its own training condition, e.g. on
# more photos (stage unet_continue, configs/asuka-small-128/unet_continue.yaml).
# ALIGN_ONESTEP_STEPS=<n> (with REUSE or REUSE_COMMIT) keeps every component of that folder and
# continues its aligner for n steps through the frozen UNet at that one timestep
# (stage align_onestep, configs/asuka-small-128/align_onestep.yaml).
# LINEAR_ONESTEP_STEPS=<n> (with REUSE or REUSE_COMMIT) does the same for the ablation's linear
# aligner (stage align_linear_onestep, exported to the -ablations folder), so that the ablation
# is aligned to the same UNet at the same timestep as the aligner it is compared with.
#
# The shipped decoder was made so (MODEL_CARD.md):
#   REUSE_COMMIT=191c543 DECODER_INIT=reuse DECODER_STEPS=3500 DEFAULT_RESOLUTION=256 \
#     RUNS=/work/runs/a128d DATA=/work/runs/photos/train_crops/128 NICE=0 bash scripts/train_small.sh
# and the continuation of its UNet, then of its decoder, that was tried and not shipped (MODEL_CARD.md):
#   REUSE_COMMIT=ba95912 ONESTEP_STEPS=2000 OMP_NUM_THREADS=2 RUNS=/work/runs/a128o \
#     DATA=/work/runs/photos/train_crops/128 NICE=0 bash scripts/train_small.sh
#   REUSE=/work/runs/a128o/asuka-small DECODER_INIT=reuse DECODER_STEPS=1200 OMP_NUM_THREADS=2 \
#     RUNS=/work/runs/a128od DATA=/work/runs/photos/train_crops/128 NICE=0 bash scripts/train_small.sh
# and the shipped aligner's continuation at t = 999 on the model shipped at 86c92bd (MODEL_CARD.md; by hand to
# step 400 with the same settings, then resumed by):
#   REUSE_COMMIT=86c92bd ALIGN_ONESTEP_STEPS=1000 OMP_NUM_THREADS=2 RUNS=/work/runs/a128al \
#     DATA=/work/runs/photos/train_crops/128 NICE=0 bash scripts/train_small.sh
# and the continuation of that model on the 51-photo crops, one component per run (not shipped on its own;
# TRAINING.md; D=/work/runs/photos/train_crops/128):
#   REUSE_COMMIT=40fce2e UNET_CONTINUE_STEPS=1500 OMP_NUM_THREADS=2 RUNS=/work/runs/b_unet DATA=$D NICE=0 bash scripts/train_small.sh
#   REUSE=/work/runs/b_unet/asuka-small ALIGN_ONESTEP_STEPS=800 OMP_NUM_THREADS=2 RUNS=/work/runs/b_al DATA=$D NICE=0 bash scripts/train_small.sh
#   REUSE=/work/runs/b_al/asuka-small DECODER_INIT=reuse DECODER_STEPS=1200 OMP_NUM_THREADS=2 RUNS=/work/runs/b_dec \
#     DATA=$D NICE=0 bash scripts/train_small.sh
#   REUSE=/work/runs/b_dec/asuka-small LINEAR_ONESTEP_STEPS=1800 OMP_NUM_THREADS=2 RUNS=/work/runs/b_lin DATA=$D NICE=0 bash scripts/train_small.sh
# and the continuation of that one (the b_lin folder above; it was run from a copy in src/asuka/pretrained) on the
# 197-photo crops, the shipped model since 2026-12-07 (MODEL_CARD.md; D=data/photos/train_crops/128):
#   REUSE=/work/runs/b_lin/asuka-small UNET_CONTINUE_STEPS=2500 OMP_NUM_THREADS=2 RUNS=runs/c_unet DATA=$D NICE=0 bash scripts/train_small.sh
#   REUSE=runs/c_unet/asuka-small ALIGN_ONESTEP_STEPS=800 OMP_NUM_THREADS=2 RUNS=runs/c_al DATA=$D NICE=0 bash scripts/train_small.sh
#   REUSE=runs/c_al/asuka-small DECODER_INIT=reuse DECODER_STEPS=1200 OMP_NUM_THREADS=2 RUNS=runs/c_dec DATA=$D NICE=0 bash scripts/train_small.sh
#   REUSE=runs/c_dec/asuka-small LINEAR_ONESTEP_STEPS=800 OMP_NUM_THREADS=2 RUNS=runs/c_lin DATA=$D NICE=0 bash scripts/train_small.sh
#
# Step counts default to what the shipped model was trained for (MODEL_CARD.md); override any of
# them, e.g. `UNET_STEPS=20000 bash scripts/train_small.sh`. Runs go to $RUNS (default
# runs/asuka-small-128): re-running resumes every stage from its newest checkpoint (a finished
# stage only re-exports), so a longer schedule continues the same runs. Each stage uses one torch
# thread (OMP_NUM_THREADS=1) and two lanes run side by side on a 2-core machine (a stage that
# needs another lane's export waits for it); NICE (default 10) keeps them from starving
# interactive work. PARALLEL=0 runs lane A then lane B.
set -euo pipefail
cd "$(dirname "$0")/.."

VAE_STEPS=${VAE_STEPS:-400}
MAE_STEPS=${MAE_STEPS:-5000}
UNET_STEPS=${UNET_STEPS:-3000}
ALIGN_STEPS=${ALIGN_STEPS:-600}       # align and align_linear (ablation) alike
DECODER_STEPS=${DECODER_STEPS:-3500}   # decoder and decoder_noaug (ablation) alike
DEFAULT_STEPS=${DEFAULT_STEPS:-1}     # the folder's default denoising steps (chosen on validation views of training photos: MODEL_CARD.md)
DEFAULT_RESOLUTION=${DEFAULT_RESOLUTION:-256}  # the folder's crop-mode working side in px (same validation)
DEFAULT_POISSON_BLEND=${DEFAULT_POISSON_BLEND:-16}  # the folder's seam blending fade in working px (same validation; "" = none)
PARALLEL=${PARALLEL:-1}
NICE=${NICE:-10}
CFG=configs/asuka-small-128
RUNS=${RUNS:-runs/asuka-small-128}
LOGS=${LOGS:-$RUNS/logs}
MODEL=$RUNS/model
DATA=${DATA:-data/photos/train_crops/128}   # the 128 px crops of scripts/fetch_photos.py
# The VAE and the UNet continue the 64 px demonstration model that was shipped until this one
# replaced it (src/asuka/pretrained/asuka-small at commit f318a01): taken from git history.
INIT=${INIT:-$RUNS/init-64px}
INIT_COMMIT=f318a01
if [ -z "${REUSE:-}${REUSE_COMMIT:-}" ] && [ -n "${ONESTEP_STEPS:-}${ALIGN_ONESTEP_STEPS:-}${UNET_CONTINUE_STEPS:-}${LINEAR_ONESTEP_STEPS:-}" ]; then
  echo "ONESTEP_STEPS / ALIGN_ONESTEP_STEPS / UNET_CONTINUE_STEPS / LINEAR_ONESTEP_STEPS continue a component of an existing model: give REUSE=<model folder>" \
    "or REUSE_COMMIT=<commit> too" >&2; exit 2
fi
n_modes=0
for v in "${ONESTEP_STEPS:-}" "${ALIGN_ONESTEP_STEPS:-}" "${UNET_CONTINUE_STEPS:-}" "${LINEAR_ONESTEP_STEPS:-}"; do [ -n "$v" ] && n_modes=$((n_modes + 1)); done
if [ "$n_modes" -gt 1 ]; then
  echo "ONESTEP_STEPS, ALIGN_ONESTEP_STEPS, UNET_CONTINUE_STEPS, LINEAR_ONESTEP_STEPS: give one of them (each continues one component of REUSE)" >&2
  exit 2
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$LOGS"
rm -f "$RUNS"/*.done
if [ ! -e "$INIT/unet/config.json" ]; then
  mkdir -p "$INIT"
  git archive "$INIT_COMMIT" src/asuka/pretrained/asuka-small | tar -x -C "$INIT" --strip-components=4
fi

stage() {  # stage NAME STEPS asuka-args...: train (or resume) to STEPS, export, mark done
  local name=$1 steps=$2; shift 2
  echo "[$(date +%T)] $name: $steps steps"
  local start=$SECONDS
  nice -n "$NICE" asuka "$@" output_dir="$RUNS/$name" max_steps="$steps" data.root="$DATA" >> "$LOGS/$name.log" 2>&1
  echo "[$(date +%T)] $name done in $((SECONDS - start)) s"
  touch "$RUNS/$name.done"
}

wait_for() {  # wait_for NAME: until stage NAME of the other lane is done (fail if that lane died)
  while [ ! -e "$RUNS/$1.done" ]; do
    if [ -e "$RUNS/lane.failed" ]; then echo "the other lane failed; stopping"; return 1; fi
    sleep 10
  done
}

lane_a() {  # VAE -> UNet -> latent augmentation -> decoder
  # 1. small KL-VAE (the SD VAE stand-in)
  stage vae "$VAE_STEPS" train vae --config $CFG/vae.yaml export_dir=$MODEL vae.init=$INIT/vae
  # 2. inpainting UNet on the VAE's latents, conditioned on tokens of a low-resolution view
  #    of the whole image (null condition for 20% of the samples)
  stage unet "$UNET_STEPS" train unet --config $CFG/unet.yaml export_dir=$MODEL backbone.vae=$MODEL/vae \
      unet.init=$INIT/unet
  # 3. latent augmentation (the UNet's one-step estimates), then the decoder with both augmentations
  echo "[$(date +%T)] make-latent-aug"
  nice -n "$NICE" asuka make-latent-aug --config $CFG/latent_aug.yaml output_dir=$RUNS/latent_aug data.root="$DATA" \
      backbone.pretrained=$MODEL > "$LOGS/latent_aug.log" 2>&1
  stage decoder "$DECODER_STEPS" train decoder --config $CFG/decoder.yaml export_dir=$MODEL \
      backbone.pretrained=$MODEL latent_aug.dir=$RUNS/latent_aug
}

lane_b() {  # MAE -> decoder without augmentation (ablation) -> aligner -> linear aligner (ablation)
  stage mae "$MAE_STEPS" train mae --config $CFG/mae.yaml export_dir=$MODEL
  wait_for vae
  stage decoder_noaug "$DECODER_STEPS" train decoder --config $CFG/decoder_noaug.yaml \
      export_dir=$RUNS/ablations/noaug backbone.vae=$MODEL/vae
  wait_for unet
  stage align "$ALIGN_STEPS" train align --config $CFG/align.yaml export_dir=$MODEL \
      mae=$MODEL/mae backbone.pretrained=$MODEL
  stage align_linear "$ALIGN_STEPS" train align --config $CFG/align_linear.yaml \
      export_dir=$RUNS/ablations/linear mae=$MODEL/mae backbone.pretrained=$MODEL
}

if [ -n "${REUSE_COMMIT:-}" ]; then
  REUSE=$RUNS/reuse-$REUSE_COMMIT/asuka-small
  if [ ! -e "$REUSE/model_index.json" ]; then
    mkdir -p "$RUNS/reuse-$REUSE_COMMIT"
    git archive "$REUSE_COMMIT" src/asuka/pretrained/asuka-small src/asuka/pretrained/asuka-small-ablations \
      | tar -x -C "$RUNS/reuse-$REUSE_COMMIT" --strip-components=3
  fi
fi
if [ "${DECODER_INIT:-}" = reuse ]; then DECODER_INIT=$REUSE/decoder; fi

take_reused() {  # copy every component of REUSE (and its -ablations) and every stage's training record but $1's
  local abl=${REUSE%/}-ablations part rec stage
  for part in "$REUSE/model_index.json" "$abl/aligner-linear" "$abl/decoder-noaug"; do
    [ -e "$part" ] || { echo "REUSE=$REUSE: $part is missing; expected a pipeline folder as" \
      "scripts/assemble_small.py writes it, with its -ablations folder beside it" >&2; exit 2; }
  done
  mkdir -p "$MODEL" "$RUNS/ablations/linear" "$RUNS/ablations/noaug"
  for part in vae unet scheduler mae aligner decoder; do rm -rf "${MODEL:?}/$part"; cp -r "$REUSE/$part" "$MODEL/"; done
  rm -rf "$RUNS/ablations/linear/aligner" "$RUNS/ablations/noaug/decoder"
  cp -r "$abl/aligner-linear" "$RUNS/ablations/linear/aligner"
  cp -r "$abl/decoder-noaug" "$RUNS/ablations/noaug/decoder"
  for rec in "$REUSE"/training/*.csv; do  # keep the record of how they were trained
    [ -e "$rec" ] || continue  # (a folder without training records)
    stage=$(basename "$rec" .csv)
    [ "$stage" = "$1" ] && continue
    mkdir -p "$RUNS/$stage"
    cp "$REUSE/training/$stage.yaml" "$RUNS/$stage/config.yaml"
    cp "$rec" "$RUNS/$stage/metrics.csv"
  done
}

decoder_only() {  # REUSE=<model folder>: keep its VAE, UNet, MAE and aligners; redo latent aug + decoder
  take_reused decoder
  echo "[$(date +%T)] make-latent-aug"
  nice -n "$NICE" asuka make-latent-aug --config $CFG/latent_aug.yaml output_dir=$RUNS/latent_aug data.root="$DATA" \
      backbone.pretrained=$MODEL > "$LOGS/latent_aug.log" 2>&1
  stage decoder "$DECODER_STEPS" train decoder --config $CFG/decoder.yaml export_dir=$MODEL \
      backbone.pretrained=$MODEL latent_aug.dir=$RUNS/latent_aug ${DECODER_INIT:+decoder=$DECODER_INIT}
}

continue_one() {  # continue_one STAGE FROM INIT STEPS asuka-args...: keep every component of REUSE and
  # train STAGE from a copy of folder FROM at $RUNS/INIT (the export replaces the copy take_reused made)
  local name=$1 from=$2 init=$3 steps=$4; shift 4
  take_reused "$name"
  rm -rf "${RUNS:?}/$init"; cp -r "$from" "$RUNS/$init"
  stage "$name" "$steps" "$@"
}

rm -f "$RUNS/lane.failed"
if [ -n "${REUSE:-}" ] && [ -n "${UNET_CONTINUE_STEPS:-}" ]; then  # the UNet over every noise level, on more photos
  continue_one unet_continue "$REUSE/unet" unet_init "$UNET_CONTINUE_STEPS" train unet --config $CFG/unet_continue.yaml export_dir=$MODEL \
      backbone.vae=$MODEL/vae unet.init=$RUNS/unet_init
elif [ -n "${REUSE:-}" ] && [ -n "${ONESTEP_STEPS:-}" ]; then  # the UNet at its one timestep, on the prior
  continue_one unet_onestep "$REUSE/unet" unet_init "$ONESTEP_STEPS" train unet --config $CFG/unet_onestep.yaml export_dir=$MODEL \
      backbone.pretrained=$MODEL backbone.vae=$MODEL/vae unet.init=$RUNS/unet_init \
      condition.mae=$MODEL/mae condition.aligner=$MODEL/aligner
elif [ -n "${REUSE:-}" ] && [ -n "${ALIGN_ONESTEP_STEPS:-}" ]; then  # the aligner through the UNet at that timestep
  continue_one align_onestep "$REUSE/aligner" aligner_init "$ALIGN_ONESTEP_STEPS" train align --config $CFG/align_onestep.yaml \
      export_dir=$MODEL mae=$MODEL/mae aligner=$RUNS/aligner_init backbone.pretrained=$MODEL
elif [ -n "${REUSE:-}" ] && [ -n "${LINEAR_ONESTEP_STEPS:-}" ]; then  # the ablation's linear aligner, alike
  continue_one align_linear_onestep "${REUSE%/}-ablations/aligner-linear" aligner_linear_init "$LINEAR_ONESTEP_STEPS" train align --config $CFG/align_onestep.yaml \
      export_dir=$RUNS/ablations/linear mae=$MODEL/mae aligner=$RUNS/aligner_linear_init backbone.pretrained=$MODEL
elif [ -n "${REUSE:-}" ]; then
  decoder_only
elif [ "$PARALLEL" = 1 ]; then
  # a failing stage stops its lane (set -e) and marks it, so the other lane stops waiting
  (set -eE; trap 'touch "$RUNS/lane.failed"' ERR; lane_a) & pa=$!
  (set -eE; trap 'touch "$RUNS/lane.failed"' ERR; lane_b) & pb=$!
  wait $pa; wait $pb
else
  lane_a; lane_b
fi

# 4. assemble the folders (weights + configs + metrics of every stage) into $RUNS/asuka-small and
#    $RUNS/asuka-small-ablations; shipping them is a separate, deliberate copy (TRAINING.md)
python scripts/assemble_small.py --runs "$RUNS" --default-steps "$DEFAULT_STEPS" --default-resolution "$DEFAULT_RESOLUTION" \
    ${DEFAULT_POISSON_BLEND:+--default-poisson-blend "$DEFAULT_POISSON_BLEND"}
echo "[$(date +%T)] all stages done"
