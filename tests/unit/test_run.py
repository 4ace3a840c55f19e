"""cas.experiments.runs.run / save end to end, through the library: the classic four-stage
DVC project, skips, the run-cache, failures and every bad input of the issue."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cas.experiments import runs as experiments
from cas.pipeline import tallylock as lockfile
from cas.objects import record
from cas.store import refs
from cas.pipeline import runcache
from cas.core.errors import Conflict, NotFound, ParamError, PipelineError, StoreError, UsageError
from cas.gc.fsck import fsck
from cas.workspace.project import init_project
from cas.experiments.request import RunRequest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pipelines" / "get-started"

SCRIPTS = {
    "src/prepare.py": """\
import os, sys
os.makedirs("data/prepared", exist_ok=True)
rows = open(sys.argv[1]).read().split()
open("data/prepared/train.tsv", "w").write("\\n".join(rows[:3]))
open("data/prepared/test.tsv", "w").write("\\n".join(rows[3:]))
""",
    "src/featurization.py": """\
import os, sys
os.makedirs(sys.argv[2], exist_ok=True)
for part in ("train", "test"):
    text = open(f"{sys.argv[1]}/{part}.tsv").read()
    open(f"{sys.argv[2]}/{part}.pkl", "w").write(str(len(text)))
""",
    "src/train.py": """\
import re, sys
n = int(re.search(r"n_est: (\\d+)", open("params.yaml").read()).group(1))
open(sys.argv[2], "w").write(f"model n_est={n}")
""",
    "src/evaluate.py": """\
import json, os, re, sys
n = int(re.search(r"n_est=(\\d+)", open(sys.argv[1]).read()).group(1))
os.makedirs("eval/plots/sklearn/roc", exist_ok=True)
json.dump({"avg_prec": {"train": 0.97, "test": n / 1000}, "roc_auc": {"test": 0.5, "n": n}},
          open("eval/metrics.json", "w"))
json.dump([{"fpr": 0, "tpr": 0}], open("eval/plots/sklearn/roc/test.json", "w"))
""",
}
# Every script records that it ran, outside the project (so the workspace is unaffected).
TRACE = "import os\nopen(os.environ['CALLS_LOG'], 'a').write(os.path.basename(__file__) + '\\n')\n"


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def env(tmp_path, monkeypatch):
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Tally Test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "tally@example.com")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    calls = tmp_path / "calls.log"
    calls.write_text("")
    monkeypatch.setenv("CALLS_LOG", str(calls))
    return calls


def make_repo(root: Path, files: dict[str, str], *, commit: bool = True):
    root.mkdir(parents=True, exist_ok=True)
    _git(root, "init", "-q", "-b", "main")
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    if commit:
        _git(root, "add", "-A")
        _git(root, "commit", "-q", "-m", "init")
    return init_project(root)[0]


@pytest.fixture
def getstarted(tmp_path, env, monkeypatch):
    """The classic DVC project: dvc.yaml and params.yaml as DVC ships them, unchanged."""
    from cas.workspace import tracking

    root = tmp_path / "example-get-started"
    files = {"dvc.yaml": (FIXTURE / "dvc.yaml").read_text(),
             "params.yaml": "# tuned by hand\n" + (FIXTURE / "params.yaml").read_text()}
    files.update({k: TRACE + v for k, v in SCRIPTS.items()})
    project = make_repo(root, files, commit=False)
    (root / "data").mkdir()
    (root / "data" / "data.xml").write_text("a b c d e f\n")
    monkeypatch.chdir(root)
    tracking.add(project, ["data/data.xml"])
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "init")
    return project


def calls(env_log: Path) -> list[str]:
    text = env_log.read_text().split()
    env_log.write_text("")
    return text


def states(exp) -> dict[str, str]:
    return {s.name: s.state for s in exp.record.stages}


def test_four_stage_dvc_project(getstarted, env):
    project = getstarted
    root = project.root

    first = experiments.run(project)
    rec = first.record
    assert rec.status == "success" and rec.exit_code == 0
    assert states(first) == dict.fromkeys(["prepare", "featurize", "train", "evaluate"], "ran")
    assert calls(env) == ["prepare.py", "featurization.py", "train.py", "evaluate.py"]
    assert rec.outs["data/prepared"][1] is True and rec.outs["data/features"][1] is True
    assert rec.outs["model.pkl"][1] is False and rec.outs["eval"][1] is True
    assert rec.metrics == {"eval/metrics.json": {"avg_prec": {"train": 0.97, "test": 0.05},
                                                 "roc_auc": {"test": 0.5, "n": 50}}}
    assert type(rec.metrics["eval/metrics.json"]["roc_auc"]["n"]) is int
    assert rec.params["params.yaml"]["train"]["n_est"] == 50
    assert rec.baseline == _git(root, "rev-parse", "HEAD").strip()
    assert refs.read(project, rec.baseline, first.name) == first.oid
    assert record.load(project.store, first.oid) == rec
    lock = lockfile.read(root)
    assert set(lock) == {"prepare", "featurize", "train", "evaluate"}
    assert lock["train"].params == {"params.yaml": {"train.min_split": 0.01, "train.n_est": 50,
                                                    "train.seed": 20170428}}
    # outputs are git-ignored, as DVC does; tally.lock is for Git
    ignored = _git(root, "status", "--porcelain", "--ignored")
    assert "!! model.pkl" in ignored and "!! eval/" in ignored and "?? tally.lock" in ignored
    # the workspace tree holds code, params, lock, pointer data and outputs
    from cas.objects import tree
    names = {p for p, _ in tree.walk(rec.workspace, lambda o: tree.decode(project.store.get(o)))}
    assert {"dvc.yaml", "params.yaml", "tally.lock", "src/train.py", "data/data.xml",
            "data/data.xml.tally", "model.pkl", "eval/metrics.json", "data/features/train.pkl"} <= names

    # nothing changed: everything is skipped, nothing runs
    second = experiments.run(project)
    assert set(states(second).values()) == {"skipped"}
    assert calls(env) == []
    assert second.record.exit_code is None and second.record.status == "success"

    # -S edits the nested param round-trip; only train and evaluate run
    third = experiments.run(project, RunRequest(set_params=("train.n_est=100",), name="more-trees"))
    assert third.name == "more-trees"
    assert states(third) == {"prepare": "skipped", "featurize": "skipped", "train": "ran", "evaluate": "ran"}
    assert calls(env) == ["train.py", "evaluate.py"]
    text = (root / "params.yaml").read_text()
    assert "# tuned by hand" in text and "n_est: 100" in text
    assert third.record.metrics["eval/metrics.json"]["avg_prec"]["test"] == 0.1

    # back to 50: the run-cache restores train's and evaluate's outputs, nothing runs
    fourth = experiments.run(project, RunRequest(set_params=("train.n_est=50",)))
    assert states(fourth) == {"prepare": "skipped", "featurize": "skipped",
                              "train": "cache-hit", "evaluate": "cache-hit"}
    assert calls(env) == []
    assert (root / "model.pkl").read_text() == "model n_est=50"
    assert fourth.record.metrics == rec.metrics
    assert fourth.record.outs == rec.outs

    # --no-run-cache and --force really run
    fifth = experiments.run(project, RunRequest(set_params=("train.n_est=100",), no_run_cache=True))
    assert states(fifth)["train"] == "ran" and calls(env) == ["train.py", "evaluate.py"]
    sixth = experiments.run(project, RunRequest(force=True, stages=("train",)))
    assert states(sixth) == {"prepare": "ran", "featurize": "ran", "train": "ran"}
    calls(env)

    assert len(refs.list_refs(project, rec.baseline)) == 6
    report = fsck(project)
    assert report.ok, report.problems


def test_removed_output_comes_back_from_the_run_cache(getstarted, env):
    project = getstarted
    experiments.run(project)
    calls(env)
    shutil.rmtree(project.root / "data" / "features")
    exp = experiments.run(project)
    assert states(exp) == {"prepare": "skipped", "featurize": "cache-hit", "train": "skipped",
                           "evaluate": "skipped"}
    assert calls(env) == []
    assert (project.root / "data" / "features" / "train.pkl").exists()


def test_stage_selection_and_unknown_stage(getstarted, env):
    exp = experiments.run(getstarted, RunRequest(stages=("featurize",)))
    assert states(exp) == {"prepare": "ran", "featurize": "ran"}
    with pytest.raises(NotFound, match="no stage named 'trian'"):
        experiments.run(getstarted, RunRequest(stages=("trian",)))


# ---------------------------------------------------------------- small projects

def simple(tmp_path, stages_yaml: str, extra: dict[str, str] | None = None, *, file="tally.yaml",
           commit=True):
    files = {file: stages_yaml, "params.yaml": "lr: 0.1\nnested:\n  a: 1\n", **(extra or {})}
    return make_repo(tmp_path / "p", files, commit=commit)


def test_failing_stage_keeps_record_logs_and_partial_outputs(tmp_path, env, monkeypatch):
    project = simple(tmp_path, """\
stages:
  ok:
    cmd: echo fine > a.txt
    outs: [a.txt]
  bad:
    cmd: mkdir -p part && echo half > part/x && echo oops >&2 && exit 3
    deps: [a.txt]
    outs: [part]
  never:
    cmd: echo no > c.txt
    deps: [part]
    outs: [c.txt]
""")
    monkeypatch.chdir(project.root)
    exp = experiments.run(project)
    rec = exp.record
    assert rec.status == "failed" and rec.exit_code == 3
    assert states(exp) == {"ok": "ran", "bad": "failed", "never": "not-run"}
    assert "exit code 3" in exp.reason
    log = project.store.get(rec.logs).decode()
    assert "oops" in log and "Running stage 'bad'" in log
    assert "part" in rec.outs  # the partial output is stored
    assert project.store.has(rec.outs["part"][0])
    assert refs.read(project, rec.baseline, exp.name) == exp.oid
    # the successful stage is locked, the failed one is not
    assert set(lockfile.read(project.root)) == {"ok"}
    assert not (project.root / "c.txt").exists()
    assert fsck(project).ok


def test_stage_that_does_not_create_its_output_fails(tmp_path, env):
    project = simple(tmp_path, "stages:\n  s:\n    cmd: 'true'\n    outs: [missing.txt]\n")
    exp = experiments.run(project)
    assert exp.record.status == "failed" and "missing.txt" in exp.reason


@pytest.mark.parametrize("yaml_text, message", [
    ("stages:\n  a:\n    cmd: echo\n    outz: [x]\n", r"tally\.yaml:4: stages\.a\.outz: unknown"),
    ("stages:\n  a:\n    cmd: [echo\n", r"tally\.yaml:\d+: YAML"),
    ("stages:\n  a:\n    deps: [x]\n", r"tally\.yaml:2: stages\.a: missing cmd"),
    ("stages:\n  a:\n    cmd: c\n    deps: [b.txt]\n    outs: [a.txt]\n"
     "  b:\n    cmd: c\n    deps: [a.txt]\n    outs: [b.txt]\n", "cycle"),
    ("stages:\n  a:\n    cmd: c\n    outs: [o.txt]\n  b:\n    cmd: c\n    outs: [o.txt]\n",
     "overlaps 'o.txt'"),
])
def test_malformed_pipelines(tmp_path, env, yaml_text, message):
    project = simple(tmp_path, yaml_text)
    before = (project.root / "params.yaml").read_text()
    with pytest.raises(PipelineError, match=message):
        experiments.run(project, RunRequest(set_params=("lr=0.5",)))
    assert (project.root / "params.yaml").read_text() == before  # nothing edited
    assert refs.list_refs(project) == []


def test_dvc_yaml_is_read_when_there_is_no_tally_yaml(tmp_path, env):
    project = simple(tmp_path, "stages:\n  a:\n    cmd: echo x > o.txt\n    outs: [o.txt]\n    bogus: 1\n",
                     file="dvc.yaml")
    with pytest.raises(PipelineError, match=r"dvc\.yaml:5: stages\.a\.bogus"):
        experiments.run(project)


def test_missing_dep_and_param(tmp_path, env):
    project = simple(tmp_path, """\
stages:
  a:
    cmd: echo x > o.txt
    deps: [input.csv]
    outs: [o.txt]
  b:
    cmd: echo y > p.txt
    params: [nested.b]
    outs: [p.txt]
""")
    with pytest.raises(NotFound, match="stage 'a': dependency input.csv does not exist"):
        experiments.run(project)
    (project.root / "input.csv").write_text("1\n")
    with pytest.raises(ParamError, match="stage 'b'.*nested.b"):
        experiments.run(project)
    assert not (project.root / "o.txt").exists()  # checked before anything ran
    assert refs.list_refs(project) == []
    assert list(project.store.tmp.glob("run-*")) == []  # no log left behind


def test_bad_overrides(tmp_path, env):
    project = simple(tmp_path, "stages:\n  a:\n    cmd: echo x > o.txt\n    outs: [o.txt]\n")
    with pytest.raises(ParamError, match="nope"):
        experiments.run(project, RunRequest(set_params=("nope=1",)))
    with pytest.raises(ParamError, match="sweep"):
        experiments.run(project, RunRequest(set_params=("lr=0.1,0.2",)))
    with pytest.raises(ParamError):
        experiments.run(project, RunRequest(set_params=("lr",)))
    assert (project.root / "params.yaml").read_text() == "lr: 0.1\nnested:\n  a: 1\n"


def test_names(tmp_path, env):
    project = simple(tmp_path, "stages:\n  a:\n    cmd: echo x > o.txt\n    outs: [o.txt]\n")
    experiments.run(project, RunRequest(name="first"))
    with pytest.raises(Conflict, match="already exists"):
        experiments.run(project, RunRequest(name="first"))
    with pytest.raises(UsageError, match="invalid experiment name"):
        experiments.run(project, RunRequest(name="a/b"))
    gen = experiments.run(project)
    assert refs.name_problem(gen.name) is None and "-" in gen.name


def test_no_git_repo_and_no_commit(tmp_path, env):
    project = simple(tmp_path, "stages:\n  a:\n    cmd: echo x > o.txt\n    outs: [o.txt]\n", commit=False)
    with pytest.raises(StoreError, match="no commit yet") as info:
        experiments.run(project)
    assert "git commit" in info.value.hint
    with pytest.raises(StoreError, match="no commit yet"):
        experiments.save(project)
    shutil.rmtree(project.root / ".git")
    with pytest.raises(StoreError, match="not a Git repository"):
        experiments.run(project)


def test_params_json_toml_and_templated_cmd(tmp_path, env):
    project = simple(tmp_path, """\
stages:
  a:
    cmd: echo ${lr} > o.txt
    params:
    - cfg.json: [opt.momentum]
    - cfg.toml: [model.depth]
    outs: [o.txt]
""", {"cfg.json": '{"opt": {"momentum": 0.9}}\n', "cfg.toml": "[model]\ndepth = 3\n"})
    exp = experiments.run(project, RunRequest(set_params=("lr=0.25", "cfg.toml:model.depth=4")))
    assert (project.root / "o.txt").read_text().strip() == "0.25"
    assert exp.record.params["cfg.toml"] == {"model": {"depth": 4}}
    assert exp.record.params["cfg.json"] == {"opt": {"momentum": 0.9}}
    assert exp.record.params["params.yaml"]["lr"] == 0.25


def test_a_params_edit_keeps_a_plain_pipeline_parsed(tmp_path, env, monkeypatch):
    """Without `${...}` or vars the parse does not depend on params values: after a
    `-S` run, the next run reuses it; a params.yaml gone bad still fails the run."""
    from cas.pipeline import pipelinefile as pipeline

    from support import helpers

    project = simple(tmp_path, "stages:\n  a:\n    cmd: echo x > o.txt\n    params: [lr]\n"
                               "    outs: [o.txt]\n")
    parses = helpers.CallCounter(monkeypatch, pipeline, "load_pipeline")
    helpers.settle(project.statcache, [project.root / "tally.yaml", project.root / "params.yaml"])
    experiments.run(project, RunRequest(set_params=("lr=0.2",)))
    assert len(parses) == 1
    helpers.settle(project.statcache, [project.root / "params.yaml"])
    assert states(experiments.run(project, RunRequest(set_params=("lr=0.3",)))) == {"a": "ran"}
    assert states(experiments.run(project)) == {"a": "skipped"}
    assert len(parses) == 1  # parsed once, although params.yaml changed twice
    (project.root / "params.yaml").write_text("lr: [\n")
    with pytest.raises(ParamError, match="malformed YAML"):
        experiments.run(project)
    (project.root / "tally.yaml").write_text("stages:\n  a:\n    cmd: echo ${lr} > o.txt\n")
    (project.root / "params.yaml").write_text("lr: 0.4\n")
    helpers.settle(project.statcache, [project.root / "tally.yaml", project.root / "params.yaml"])
    experiments.run(project, RunRequest(set_params=("lr=0.5",)))
    assert (project.root / "o.txt").read_text() == "0.5\n"  # templated: parsed again
    assert len(parses) == 3  # before and after the edit


def test_quick_stage_and_its_run_cache(tmp_path, env):
    project = simple(tmp_path, "", {"in.txt": "5\n"})
    (project.root / "tally.yaml").unlink()
    q = experiments.QuickStage(cmd=("sh", "-c", "cat in.txt > out.txt; echo '{\"m\": 1.5}' > m.json; "
                                    "echo ran >> \"$CALLS_LOG\""),
                               deps=("in.txt",), outs=("out.txt",), metrics=("m.json",))
    a = experiments.run(project, RunRequest(quick_stage=q))
    assert a.record.status == "success" and a.record.metrics == {"m.json": {"m": 1.5}}
    assert "out.txt" in a.record.outs and "m.json" not in a.record.outs  # -M is not stored
    assert not (project.root / "tally.lock").exists()
    assert calls(env) == ["ran"]
    # m.json is an output that is not cached, but is kept for the run-cache (as DVC does)
    (project.root / "m.json").write_text('{"m": 0}')
    b = experiments.run(project, RunRequest(quick_stage=q))
    assert states(b) == {"run": "cache-hit"} and calls(env) == []
    assert b.record.outs == a.record.outs and b.record.metrics == {"m.json": {"m": 1.5}}
    q2 = experiments.QuickStage(cmd=("cp in.txt out2.txt && echo ran >> \"$CALLS_LOG\"",),
                                deps=("in.txt",), outs=("out2.txt",))
    experiments.run(project, RunRequest(quick_stage=q2))
    assert calls(env) == ["ran"]
    (project.root / "out2.txt").unlink()
    c = experiments.run(project, RunRequest(quick_stage=q2))
    assert states(c) == {"run": "cache-hit"} and calls(env) == []
    with pytest.raises(UsageError):
        experiments.run(project, RunRequest(quick_stage=experiments.QuickStage(cmd=("x",), outs=("/abs",))))


def test_save_records_the_workspace(tmp_path, env):
    project = simple(tmp_path, "stages:\n  a:\n    cmd: echo 7 > o.txt\n    outs: [o.txt]\n"
                               "metrics:\n- m.json\n")
    experiments.run(project)
    (project.root / "m.json").write_text('{"acc": 0.75}')
    (project.root / "notes.md").write_text("untracked but visible\n")
    exp = experiments.save(project, name="snap", message="by hand")
    rec = exp.record
    assert rec.status == "success" and rec.stages == () and rec.message == "by hand"
    assert rec.metrics == {"m.json": {"acc": 0.75}} and "o.txt" in rec.outs
    from cas.objects import tree
    names = {p for p, _ in tree.walk(rec.workspace, lambda o: tree.decode(project.store.get(o)))}
    assert {"notes.md", "o.txt", "m.json", "tally.yaml"} <= names
    assert fsck(project).ok


def test_runcache_replays_a_stage_with_uncached_metrics_and_plots(tmp_path, env):
    """DVC's idiom `metrics: - m.json: {cache: false}`: -S lr=1, lr=2, lr=1 runs twice;
    the third comes from the run-cache, its metrics and plots restored as plain copies,
    kept out of the record's outs."""
    train = ("import json, os, re\n"
             "lr = int(re.search(r'lr: (\\d+)', open('params.yaml').read()).group(1))\n"
             "open('model.txt', 'w').write(f'model {lr}')\n"
             "json.dump({'acc': lr}, open('m.json', 'w'))\n"
             "open('p.csv', 'w').write(f'step,loss\\n0,{lr}\\n')\n"
             "open(os.environ['CALLS_LOG'], 'a').write('ran\\n')\n")
    project = simple(tmp_path, """\
stages:
  train:
    cmd: python train.py
    deps: [in.txt, train.py]
    params: [lr]
    outs: [model.txt]
    metrics: [{m.json: {cache: false}}]
    plots: [{p.csv: {cache: false}}]
""", {"in.txt": "data\n", "train.py": train})
    from cas.store import config as config_mod
    config_mod.set_value(project.store_dir / "config", "cache.type", "hardlink,copy")
    project.config = config_mod.load(project.store_dir / "config")
    root = project.root
    a = experiments.run(project, RunRequest(set_params=("lr=1",)))
    b = experiments.run(project, RunRequest(set_params=("lr=2",)))
    assert states(a) == states(b) == {"train": "ran"} and calls(env) == ["ran", "ran"]
    assert b.record.metrics == {"m.json": {"acc": 2}}
    c = experiments.run(project, RunRequest(set_params=("lr=1",)))
    assert states(c) == {"train": "cache-hit"} and calls(env) == []
    assert c.record.metrics == a.record.metrics == {"m.json": {"acc": 1}}
    assert (root / "p.csv").read_text() == "step,loss\n0,1\n"
    assert set(c.record.outs) == {"model.txt"}
    for name in ("m.json", "p.csv"):  # the user's own files: writable, not linked to the store
        st = (root / name).stat()
        assert st.st_nlink == 1 and st.st_mode & 0o200, name
    lock = lockfile.read(root)["train"]
    assert {f.path for f in lock.outs} == {"model.txt", "m.json", "p.csv"}
    assert fsck(project).ok


def test_runcache_entries_are_fsck_roots(tmp_path, env):
    project = simple(tmp_path, "stages:\n  a:\n    cmd: cp params.yaml o.txt\n    deps: [params.yaml]\n"
                               "    outs: [o.txt]\n")
    experiments.run(project)
    keys = list(runcache.iter_index(project))
    assert len(keys) == 1
    report = fsck(project)
    assert report.ok and report.roots >= 3


def test_frozen_stage_never_runs(tmp_path, env):
    project = simple(tmp_path, "stages:\n  a:\n    cmd: echo x > o.txt\n    outs: [o.txt]\n    frozen: true\n")
    exp = experiments.run(project)
    assert states(exp) == {"a": "skipped"} and not (project.root / "o.txt").exists()
    # `dvc exp run -f` does not run a frozen stage either
    assert states(experiments.run(project, RunRequest(force=True))) == {"a": "skipped"}
    assert not (project.root / "o.txt").exists()
    assert [p["action"] for p in experiments.plan(project, RunRequest(force=True))] == ["skip"]


def test_a_stage_that_stages_files_leaves_the_index_as_it_was(tmp_path, env):
    """Git's index is the user's: entries a stage command adds, changes or removes are
    set back after it (dvclive does so inside `dvc exp run`, and DVC resets them)."""
    project = simple(tmp_path, "stages:\n  a:\n    cmd: sh stage.sh\n    deps: [stage.sh]\n    outs: [o.txt]\n",
                     {"stage.sh": "echo x > o.txt; echo new > new.txt; echo changed >> params.yaml\n"
                                  "git add new.txt params.yaml && git rm -q --cached tally.yaml\n"})
    root = project.root
    (root / "mine.txt").write_text("staged by the user\n")
    _git(root, "add", "mine.txt")
    before = _git(root, "ls-files", "-s")
    exp = experiments.run(project)
    log = project.store.get(exp.record.logs).decode()
    assert exp.record.status == "success", log
    assert _git(root, "ls-files", "-s") == before
    assert "set back: new.txt, params.yaml, tally.yaml" in log
    assert (root / "new.txt").read_text() == "new\n"  # the files themselves are the stage's
    assert not list(project.store.tmp.glob("index-*"))  # the old index's link is gone


STAGE_WAITS = """\
import os, time
from cas.live import Live
live = Live()
live.log_metric("loss", 0.25)
live.next_step()
live.log_metric("loss", 0.125)
live.make_summary()
while not os.path.exists(os.environ["GO"]):
    time.sleep(0.02)
open("o.txt", "w").write("done")
"""


@pytest.mark.parametrize("how", ["finishes", "is killed"])
def test_a_foreground_run_is_listed_while_it_runs(tmp_path, env, monkeypatch, how):
    """As DVC shows its running workspace row: `tally show` lists a foreground run with
    its live values; the row goes when the run ends, or when its process dies (SIGKILL)."""
    import signal
    import time as clock

    from cas.experiments import listing

    project = simple(tmp_path, f"stages:\n  a:\n    cmd: {sys.executable} stage.py\n    outs: [o.txt]\n",
                     {"stage.py": STAGE_WAITS, ".gitignore": "/tally-live/\n"})
    go = tmp_path / "go"
    monkeypatch.setenv("GO", str(go))
    proc = subprocess.Popen([sys.executable, "-m", "cli", "run", "-n", "fg", "-q"], cwd=project.root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = clock.time() + 60
        while True:
            rows = [e for e in listing.list_experiments(project) if e.status == "running"]
            if rows and rows[0].values.get("metrics:live:step") == 1:
                break
            assert clock.time() < deadline and proc.poll() is None, "no running row for the run"
            clock.sleep(0.05)
        [row] = rows
        assert row.name == "fg" and row.baseline == _git(project.root, "rev-parse", "HEAD").strip()
        assert row.metrics == {"tally-live/metrics.json:loss": 0.125, "live:step": 1}
        assert listing.show(project, filter="metrics.loss < 0.2").experiments[0].name == "fg"
        if how == "finishes":
            go.touch()
            assert proc.wait(60) == 0
            [done] = listing.list_experiments(project)
            assert (done.name, done.status) == ("fg", "success")
        else:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(60)
            assert listing.list_experiments(project) == []  # the dead run's marker is not listed
        assert list((project.store_dir / "running").iterdir()) == []
    finally:
        go.touch()  # a stage left behind (its own process group) ends too
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
