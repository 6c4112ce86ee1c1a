#!/usr/bin/env bash
# The main job, end to end on the bundled model:
#   convert it to four quantized .tflite files (with a report), evaluate one,
#   show suggestions, personalize on SMS text, then a federated round:
#   ten simulated phones (SMS writers) personalize and export sealed updates,
#   the server aggregates them into a new global model, and its gain on what
#   those users type next is measured.
# Everything lands in ./out (removed and rebuilt on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh "convert"
export PATH="$PWD/.venv/bin:$PATH"
rm -rf out && mkdir -p out
export EDGEKIT_STATE_DIR="$PWD/out/state"

step() { printf '\n== %s\n' "$*"; }

step "1. Convert the bundled Keras model to all four variants, and to int8-mixed (the bundled int8 file's recipe)"
edgekit convert --quantize all -o out/models --eval-max 2000
edgekit convert --quantize int8-mixed -o out/models --eval-max 2000
MODEL=out/models/edgekit-en-int8-mixed.tflite
# Converted here, so signed by no one: device commands run it only when told to (--unsigned-local).

step "2. Evaluate the int8 file on held-out text (email it never saw)"
edgekit evaluate -m "$MODEL" --unsigned-local --text data/heldout/email_easy_ham_2.txt --max-targets 3000
edgekit info -m "$MODEL" --unsigned-local

step "3. Suggestions"
for text in "see you tomo" "i am going to " "thank you for your " "could you please send me the " "she could not help "; do
  printf '%-32s -> %s\n' "\"$text\"" "$(edgekit suggest -m "$MODEL" --unsigned-local "$text" | awk '{printf "%s ", $1}')"
done

step "4. Personalize on SMS messages (first 80%), test on the rest"
.venv/bin/python - <<'PY'
from edgekit.converters.corpus import personal_split
from edgekit.tokenizer import read_text_lines
train, test = personal_split(list(read_text_lines("data/personal/sms_ham.txt")))
open("out/sms_train.txt", "w").write("".join(train)); open("out/sms_test.txt", "w").write("".join(test))
PY
edgekit evaluate -m "$MODEL" --unsigned-local --text out/sms_test.txt --max-targets 3000 | sed 's/^/before: /'
edgekit personalize -m "$MODEL" --unsigned-local --text out/sms_train.txt
edgekit evaluate -m "$MODEL" --unsigned-local --text out/sms_test.txt --max-targets 3000 --state-dir "$EDGEKIT_STATE_DIR" | sed 's/^/after:  /'
for text in "ok lor " "i'll call you " "sorry i'll "; do
  printf '%-32s -> %s\n' "\"$text\"" "$(edgekit suggest -m "$MODEL" --unsigned-local "$text" | awk '{printf "%s ", $1}')"
done

step "5. A federated round: 10 texters' phones, sealed updates, server aggregation"
edgekit keygen -o out/server.key
.venv/bin/python -m examples.device_texts --devices 10 --sources sms_ham --out out/devices --union out/devices-heldout.txt
mkdir -p out/updates
for d in out/devices/client-*; do
  name=$(basename "$d")
  edgekit personalize -m "$MODEL" --unsigned-local --state-dir "$d/state" --text "$d/train.txt" --json > "$d/personalize.json"
  # The default clip norm on both sides: about a contribution's median norm, so only outliers are clipped.
  edgekit export-update -m "$MODEL" --unsigned-local --state-dir "$d/state" --server-key out/server.key.pub \
    -o "out/updates/$name.edgekit-update" || echo "$name: nothing to export (personalization kept nothing)"
done
# Each phone's identity key (made by its first export) is enrolled once: one update per phone per round.
for d in out/devices/client-*; do
  edgekit enroll "$d/state/device.pub" --registry out/devices.pem
done
# FedAvg: ten honest phones (the default, a trimmed mean, is built for a round with hostile updates).
edgekit aggregate --key out/server.key -m "$MODEL" out/updates -o out/edgekit-en-round1.tflite --mode fedavg \
  --devices out/devices.pem
edgekit evaluate -m "$MODEL" --unsigned-local --text out/devices-heldout.txt | sed 's/^/global, before round: /'
# The server scores the version it just signed: no phone's trusted key is involved.
edgekit evaluate -m out/edgekit-en-round1.tflite --unsigned-local --text out/devices-heldout.txt | sed 's/^/global, after round: /'
step "done: files in out/"
