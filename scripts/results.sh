#!/usr/bin/env bash
# Makes the distillation table of docs/RESULTS.md with the CLI: every student x method x seed
# distilled from the shipped resnet20 on Fashion-MNIST, then the CKA heatmap of the teacher
# against each OFA student. Prints Markdown rows; each run's folder keeps its config.toml,
# metrics.jsonl and charts.
#
#   scripts/results.sh                       # the budget of docs/RESULTS.md
#   DATA=fashion-mnist LIMIT=0 EPOCHS=20 scripts/results.sh   # the full budget, for a real GPU
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/webdistill}
OUT=${OUT:-runs/results}
DATA=${DATA:-bundled}
LIMIT=${LIMIT:-1000}
TEST_LIMIT=${TEST_LIMIT:-1000}
EPOCHS=${EPOCHS:-2}
BATCH=${BATCH:-32}
SEEDS=${SEEDS:-"0 1"}
STUDENTS=${STUDENTS:-"vit_micro_p4 mixer_micro_p4 mobilenetv2_cifar"}
METHODS=${METHODS:-"none kd dkd fitnet ofa"}
TEACHER=assets/teacher/resnet20_fmnist.safetensors
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
[ -x "$BIN" ] || cargo build --release
mkdir -p "$OUT"

echo "| student | method | seed | test top-1 | train img/s |"
echo "| --- | --- | --- | --- | --- |"
for s in $STUDENTS; do
    for m in $METHODS; do
        for seed in $SEEDS; do
            dir="$OUT/$s-$m-$seed"
            cmd="$BIN distill --teacher resnet20 --teacher-weights $TEACHER --student $s --method $m --data $DATA \
--train-limit $LIMIT --test-limit $TEST_LIMIT --epochs $EPOCHS --batch $BATCH --opt adamw --lr 2e-3 --warmup-epochs 0.2 \
--seed $seed --quiet --out $dir"
            echo "$cmd" >> "$OUT/commands.txt"
            if line=$($cmd 2>"$OUT/$s-$m-$seed.err" | grep '^final:'); then
                top1=$(sed -E 's/^final: top-1 ([0-9.]+)%.*/\1/' <<<"$line")
                ips=$(sed -E 's/.*, ([0-9.]+) img\/s.*/\1/' <<<"$line")
                echo "| $s | $m | $seed | $top1% | $ips |"
            else
                echo "| $s | $m | $seed | refused: $(tail -1 "$OUT/$s-$m-$seed.err" | sed 's/^error: //') | |"
            fi
        done
    done
done
for s in $STUDENTS; do
    if [ -f "$OUT/$s-ofa-0/best.safetensors" ]; then
        $BIN cka --teacher resnet20 --teacher-weights $TEACHER --student "$s" --student-weights "$OUT/$s-ofa-0/best.safetensors" \
            --data "$DATA" --images 256 --out "$OUT/cka-$s" > "$OUT/cka-$s.txt"
    fi
done
