#!/usr/bin/env bash
# A one-minute end-to-end tour in a throwaway Git repository: init, add data, commit
# the pointer, lose the data, get it back, damage the store and watch fsck catch it,
# and (when the experiment commands are installed) run and compare experiments.
set -euo pipefail

demo=$(mktemp -d "${TMPDIR:-/tmp}/tally-demo.XXXXXX")
trap 'rm -rf "$demo"' EXIT
cd "$demo"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

git init -q -b main .
git config user.email demo@example.com
git config user.name "tally demo"

run tally init
mkdir -p data/raw
python3 - <<'PY'
import os, random
r = random.Random(0)
with open("data/raw/train.csv", "w") as f:
    f.write("x,y\n")
    for i in range(50_000):
        x = r.random()
        f.write(f"{x:.6f},{2 * x + r.gauss(0, 0.1):.6f}\n")
for i in range(200):
    with open(f"data/raw/img{i:03d}.bin", "wb") as f:
        f.write(r.randbytes(r.randint(1024, 4096)))
PY
run tally add data
run cat data.tally
run git add data.tally .gitignore .tally/config .tally/.gitignore
git commit -qm "Track data with tally"

say "rm -rf data   # lose the workspace copy"
rm -rf data
run tally status
run tally checkout
run tally status

say "echo edit >> data/raw/train.csv   # a change that is not in the store"
echo edit >> data/raw/train.csv
run tally status
say "tally checkout   # refuses: it would destroy that change"
tally checkout || echo "(exit $? — nothing was touched)"
run tally checkout --force

say "flip one byte in a stored object"
obj=$(find .tally/objects -type f -print -quit)
chmod u+w "$obj"
python3 -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[len(b)//2]^=1; open(p,'wb').write(b)" "$obj"
say "tally fsck"
tally fsck || echo "(exit $? — corruption found and named)"
run tally fsck --repair || true
say "tally add data   # the workspace still has the good bytes: store them again"
tally add data
run tally fsck

if tally run --help >/dev/null 2>&1; then
  cat > train.py <<'PY'
import json, re
lr = float(re.search(r"lr:\s*([0-9.e-]+)", open("params.yaml").read()).group(1))
json.dump({"loss": round(abs(lr - 0.01) * 10, 4)}, open("metrics.json", "w"))
PY
  printf 'lr: 0.1\n' > params.yaml
  cat > tally.yaml <<'YAML'
stages:
  train:
    cmd: python3 train.py
    deps: [train.py]
    params: [lr]
    metrics:
      - metrics.json:
          cache: false
YAML
  git add train.py params.yaml tally.yaml && git commit -qm "Add a pipeline"
  run tally run -S lr=0.1 -n fast
  run tally run -S lr=0.01 -n slow
  if tally show --help >/dev/null 2>&1; then
    run tally show --sort-by metrics.loss
  fi
fi
printf '\nDemo finished in %s (removed on exit).\n' "$demo"
