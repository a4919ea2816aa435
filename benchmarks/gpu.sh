#!/usr/bin/env bash
# The GPU paths no CPU machine runs, in one go on a lent GPU machine (about 6 minutes on an H100 or H200):
# fine-tune img/s with JPEGs decoded on the device (nvJPEG), feature extraction img/s, and the served
# model's batch-1 p50 and batched throughput. Never part of CI or the tests.
#
#   make gpu-wheels                     # here, once: wheels of what the GPU image lacks, into .whl/
#   bash benchmarks/gpu.sh RESULTS      # there: every figure, one `name value` line each, into RESULTS
#
# With no CUDA device it says so and exits 2 before doing anything.
set -euo pipefail
cd "$(dirname "$0")/.."

results=${1:?usage: bash benchmarks/gpu.sh RESULTS_FILE}
python=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/dogbreed-gpu.XXXXXX")
trap 'rm -rf "$work"' EXIT

if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "error: benchmarks/gpu.sh needs a CUDA GPU and $python sees none; run it on a lent GPU machine" >&2
    exit 2
fi
# The GPU image has torch, torchvision, PIL, numpy and matplotlib; hydra, omegaconf and boto3 come as wheels.
if compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$work/site" .whl/*.whl
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

record() {  # name value: one line of RESULTS, shown as it comes
    echo "$1 $2" | tee -a "$results"
}
: >"$results"
record gpu "$("$python" -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '_'))")"
record torch "$("$python" -c "import torch; print(torch.__version__)")"

# 133 breeds of dogImages-sized JPEGs (1 in 25 at 2000x1500), 12 per breed to train on.
"$python" - "$work/data" <<'PY'
import sys
from pathlib import Path
from dogbreed.data.synthetic import SyntheticSpec, generate
spec = SyntheticSpec(classes=133, train_per_class=12, valid_per_class=2, test_per_class=2, width=500, height=375,
                     large_every=25)
generate(Path(sys.argv[1]), spec)
PY

# Full fine-tune of a ResNet50, JPEGs decoded on the GPU; its img/s is the epoch's, from metrics.csv.
"$python" train.py experiment=finetune data.root="$work/data" \
    model.pretrained=false data.decode_on_device=true data.batch_size=128 trainer.epochs=2 \
    trainer.progress_bar=false hydra.run.dir="$work/finetune" paths.cache_dir="$work/cache" >"$work/finetune.log" 2>&1 \
    || { tail -20 "$work/finetune.log" >&2; exit 1; }
record finetune_decode_on_device_img_per_s "$("$python" -c "import csv, sys
print(list(csv.DictReader(open(sys.argv[1])))[-1]['train_images_per_s'])" "$work/finetune/metrics.csv")"

# Feature extraction from JPEG files against the backbone's raw forward, compiled, batch 256.
"$python" -m benchmarks.extraction --images 2048 --batch-size 256 --rounds 3 | tee "$work/extraction.log"
record extraction_goal "\"$(grep '^GOAL' "$work/extraction.log" | head -1)\""

# The served model alone on the GPU: a packaged ResNet50 (random weights), batch 1 and batch 64.
"$python" - "$work/run" <<'PY'
import sys
from pathlib import Path
from benchmarks.serving_latency import stand_in_run
from deploy.model_archive import package_run
package_run(str(stand_in_run(Path(sys.argv[1]), "resnet50")), Path(sys.argv[1]) / "model.tar.gz")
PY
mkdir -p "$work/model" && tar -xzf "$work/run/model.tar.gz" -C "$work/model"
"$python" -m benchmarks.model_reference "$work/model" --max-batch 64 --seconds 5 | tail -1 >"$work/serving.json"
for key in batch1_p50_ms sequential_ips batched_ips dtype compiled; do
    record "serving_$key" "$("$python" -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" \
        "$work/serving.json" "$key")"
done
echo "figures in $results"
