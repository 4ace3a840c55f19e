"""cas.pipeline.pipelinefile: dvc.yaml / tally.yaml schema, templating, foreach/matrix, DAG and order."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cas.core.errors import NotFound, ParamError, PipelineError
from cas.pipeline.pipelinefile import Out, ParamRef, Pipeline, Plot, load_pipeline

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pipelines"


def make(root: Path, pipeline: str, params: str | None = None, *, name: str = "dvc.yaml",
         files: dict[str, str] | None = None) -> Path:
    (root / name).write_text(textwrap.dedent(pipeline).lstrip("\n"), encoding="utf-8")
    if params is not None:
        (root / "params.yaml").write_text(textwrap.dedent(params).lstrip("\n"), encoding="utf-8")
    for rel, text in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


def load(root: Path, pipeline: str, params: str | None = None, **kw) -> Pipeline:
    return load_pipeline(make(root, pipeline, params, **kw))


def fails(root: Path, pipeline: str, *needles: str, params: str | None = None, **kw) -> PipelineError:
    with pytest.raises(PipelineError) as info:
        load(root, pipeline, params, **kw)
    text = f"{info.value} (hint: {info.value.hint})"  # suggestions live in the hint
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"
    return info.value


# ------------------------------------------------------------------ example-get-started

@pytest.fixture
def get_started(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES / "get-started", tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_get_started_stages_and_order(get_started: Path) -> None:
    p = load_pipeline(get_started)
    assert p.path == "dvc.yaml"
    assert [s.name for s in p.stages] == ["prepare", "featurize", "train", "evaluate"]
    prepare, featurize, train, evaluate = p.stages
    assert prepare.cmd == ("python src/prepare.py data/data.xml",)
    assert prepare.deps == ("data/data.xml", "src/prepare.py")
    assert prepare.params == (ParamRef(file="params.yaml", key="prepare.seed"),
                              ParamRef(file="params.yaml", key="prepare.split"))
    assert prepare.outs == (Out(path="data/prepared", kind="out", cache=True, persist=False),)
    assert featurize.params[0] == ParamRef(file="params.yaml", key="featurize.max_features")
    assert {r.key for r in train.params} == {"train.min_split", "train.n_est", "train.seed"}
    assert evaluate.outs[0].path == "eval" and prepare.wdir == "."
    assert dict(p.upstream) == {"prepare": (), "featurize": ("prepare",), "train": ("featurize",),
                                "evaluate": ("featurize", "train")}
    assert prepare.line == 3 and evaluate.line == 34


def test_get_started_top_level(get_started: Path) -> None:
    p = load_pipeline(get_started)
    assert p.metrics == ("eval/metrics.json",)
    assert p.params == ("params.yaml",)
    assert [pl.id for pl in p.plots] == ["ROC", "Confusion-Matrix", "Precision-Recall",
                                         "eval/plots/images/importance.png"]
    roc = p.plots[0]
    assert roc.files == ("eval/plots/sklearn/roc/train.json", "eval/plots/sklearn/roc/test.json")
    assert roc.props["template"] == "simple" and roc.props["x"] == "fpr"
    assert p.plots[3] == Plot(id="eval/plots/images/importance.png", files=("eval/plots/images/importance.png",))


def test_get_started_select(get_started: Path) -> None:
    p = load_pipeline(get_started)
    assert [s.name for s in p.select(["train"])] == ["prepare", "featurize", "train"]
    assert [s.name for s in p.select(["featurize"])] == ["prepare", "featurize"]
    assert [s.name for s in p.select(["evaluate", "prepare"])] == ["prepare", "featurize", "train", "evaluate"]
    assert p.select([]) == p.stages
    assert p.stage("train").name == "train"
    with pytest.raises(NotFound) as info:
        p.stage("trian")
    assert "trian" in str(info.value) and "train" in (info.value.hint or "")
    with pytest.raises(NotFound):
        p.select(["nope"])


# ------------------------------------------------------------------ files

def test_tally_yaml_wins_over_dvc_yaml(tmp_path: Path) -> None:
    make(tmp_path, "stages:\n  a:\n    cmd: echo dvc\n")
    p = load(tmp_path, "stages:\n  b:\n    cmd: echo tally\n", name="tally.yaml")
    assert p.path == "tally.yaml" and [s.name for s in p.stages] == ["b"]


def test_no_pipeline_file(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as info:
        load_pipeline(tmp_path)
    assert "tally.yaml or dvc.yaml" in str(info.value) and info.value.hint


def test_empty_pipeline(tmp_path: Path) -> None:
    assert load(tmp_path, "# nothing yet\n").stages == ()


# ------------------------------------------------------------------ stage fields

def test_stage_fields_wdir_and_outs(tmp_path: Path) -> None:
    p = load(tmp_path, """
        stages:
          build:
            desc: builds it
            wdir: sub
            cmd:
              - make one
              - make two
            deps: [../data/raw, ./src/]
            params:
              - lr
              - ../conf/other.yaml: [a.b, c]
              - all.json:
              - empty.toml: []
            outs:
              - out/model.pkl
              - cache_off: {cache: false, persist: true, push: false, remote: s3, desc: x}
            metrics:
              - m.json: {cache: false}
              - m2.json
            plots:
              - p.csv: {x: step, y: loss, template: linear, cache: false}
            frozen: true
            always_changed: false
            meta: {anything: [1, 2]}
    """)
    [st] = p.stages
    assert st.cmd == ("make one", "make two") and st.wdir == "sub" and st.desc == "builds it"
    assert st.deps == ("data/raw", "sub/src")
    assert st.params == (ParamRef(file="sub/params.yaml", key="lr"), ParamRef(file="conf/other.yaml", key="a.b"),
                         ParamRef(file="conf/other.yaml", key="c"), ParamRef(file="sub/all.json", key=None),
                         ParamRef(file="sub/empty.toml", key=None))
    assert st.outs == (
        Out(path="sub/out/model.pkl"),
        Out(path="sub/cache_off", cache=False, persist=True, push=False, remote="s3"),
        Out(path="sub/m.json", kind="metric", cache=False),
        Out(path="sub/m2.json", kind="metric", cache=True),  # metrics are cached by default, as in DVC
        Out(path="sub/p.csv", kind="plot", cache=False),
    )
    assert st.frozen and not st.always_changed
    assert p.metrics == ("sub/m.json", "sub/m2.json")
    assert p.params == ("sub/params.yaml", "conf/other.yaml", "sub/all.json", "sub/empty.toml")
    assert p.plots == (Plot(id="sub/p.csv", files=("sub/p.csv",), props={"x": "step", "y": "loss",
                                                                        "template": "linear"}),)


def test_run_order_is_topological_with_file_order_ties(tmp_path: Path) -> None:
    p = load(tmp_path, """
        stages:
          report: {cmd: r, deps: [model, stats]}
          train: {cmd: t, deps: [data/clean/part1], outs: [model]}
          lint: {cmd: l}
          clean: {cmd: c, deps: [data/raw], outs: [data/clean]}
          stats: {cmd: s, deps: [data], outs: [stats]}
    """)
    assert [s.name for s in p.stages] == ["lint", "clean", "train", "stats", "report"]
    assert p.upstream["train"] == ("clean",)  # dep inside an out
    assert p.upstream["stats"] == ("clean",)  # dep containing an out
    assert set(p.upstream["report"]) == {"train", "stats"}
    assert [s.name for s in p.select(["report"])] == ["clean", "train", "stats", "report"]


def test_params_file_written_by_a_stage_is_a_dep(tmp_path: Path) -> None:
    p = load(tmp_path, """
        stages:
          use: {cmd: u, params: [{gen/p.yaml: [x]}]}
          gen: {cmd: g, outs: [gen]}
    """)
    assert [s.name for s in p.stages] == ["gen", "use"]


# ------------------------------------------------------------------ templating

PARAMS = """
train:
  lr: 0.1
  epochs: 3
  layers: [64, 32]
  opts: {fast: true, slow: false, name: my net, ks: [1, 2]}
flags: {frozen: true}
models: {us: {thresh: 10}, uk: {thresh: 15}}
"""


def test_interpolation_from_params_and_vars(tmp_path: Path) -> None:
    p = load(tmp_path, r"""
        vars:
          - out_dir: results
          - config.json:data
        stages:
          train:
            cmd: python train.py --lr ${train.lr} --l0 ${train.layers[0]} ${train.opts} \${HOME}
            deps: ["${data.path}"]
            outs: ["${out_dir}/model-${train.epochs}.pkl", "${out_dir}/log": {cache: false}]
            frozen: ${flags.frozen}
            desc: epochs ${train.epochs}
    """, PARAMS, files={"config.json": '{"data": {"path": "data/x.csv"}, "other": 1}'})
    [st] = p.stages
    assert st.cmd == ("python train.py --lr 0.1 --l0 64 --fast --name 'my net' --ks 1 2 ${HOME}",)
    assert st.deps == ("data/x.csv",) and st.outs[0].path == "results/model-3.pkl"
    assert st.outs[1] == Out(path="results/log", cache=False)
    assert st.frozen is True and st.desc == "epochs 3"
    # values read from params files are tracked (DVC's tracked vars), not deps; vars mappings are not
    assert st.params == ()
    assert st.tracked_params == (
        ParamRef(file="params.yaml", key="train.lr"), ParamRef(file="params.yaml", key="train.layers.0"),
        ParamRef(file="params.yaml", key="train.opts"), ParamRef(file="config.json", key="data.path"),
        ParamRef(file="params.yaml", key="train.epochs"), ParamRef(file="params.yaml", key="flags.frozen"))
    assert p.params == ("params.yaml", "config.json")


def test_tracked_params_are_separate_from_declared(tmp_path: Path) -> None:
    p = load(tmp_path, """
        stages:
          a: {cmd: "x ${train.lr} ${train.lr} ${train.epochs}", params: [train.lr, {params.yaml: }]}
          b: {foreach: [1], do: {cmd: "y ${item}"}}
    """, PARAMS)
    assert p.stage("a").params == (ParamRef(file="params.yaml", key="train.lr"),
                                   ParamRef(file="params.yaml", key=None))
    assert p.stage("a").tracked_params == (ParamRef(file="params.yaml", key="train.lr"),
                                           ParamRef(file="params.yaml", key="train.epochs"))
    assert p.stage("b@1").tracked_params == ()  # item/key are not params


def test_stage_vars_relative_to_wdir(tmp_path: Path) -> None:
    p = load(tmp_path, """
        stages:
          s:
            wdir: sub
            vars: [local.yaml, {extra: 5}]
            cmd: run ${n} ${extra}
    """, files={"sub/local.yaml": "n: 7\n"})
    assert p.stages[0].cmd == ("run 7 5",)
    assert p.stages[0].tracked_params == (ParamRef(file="sub/local.yaml", key="n"),)


@pytest.mark.parametrize(("body", "needles"), [
    ("stages:\n  a:\n    cmd: echo ${nope.x}\n", ["dvc.yaml:3:", "stages.a.cmd", "${nope.x} is not defined"]),
    ("stages:\n  a:\n    cmd: echo\n    deps:\n      - x\n      - ${missing}\n",
     ["dvc.yaml:6:", "stages.a.deps[1]", "${missing}"]),
    ("stages:\n  a:\n    cmd: echo\n    outs: ['x-${train.layers}']\n",
     ["dvc.yaml:4:", "stages.a.outs", "cannot interpolate a list"]),
    ("stages:\n  a:\n    cmd: echo ${train.layers}\n", ["stages.a.cmd", "cannot interpolate a list"]),
    ("vars:\n  - train: {lr: 5}\nstages: {}\n", ["dvc.yaml:2:", "vars[0]", "cannot redefine train.lr"]),
    ("vars:\n  - ${x}.yaml\nstages: {}\n", ["vars[0]", "interpolation is not allowed"]),
    ("vars:\n  - params.yaml:train.nope\nstages: {}\n", ["vars[0]", "no key 'train.nope'"]),
])
def test_templating_errors(tmp_path: Path, body: str, needles: list[str]) -> None:
    fails(tmp_path, body, *needles, params=PARAMS)


def test_vars_file_missing_or_malformed(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load(tmp_path, "vars: [nope.yaml]\nstages: {}\n")
    with pytest.raises(ParamError, match=r"bad\.json:1: malformed JSON"):
        load(tmp_path, "vars: [bad.json]\nstages: {}\n", files={"bad.json": "{"})


# ------------------------------------------------------------------ foreach and matrix

def test_foreach_forms(tmp_path: Path) -> None:
    p = load(tmp_path, """
        stages:
          clean:
            foreach: [raw1, labels1]
            do:
              cmd: clean.py "${item}"
              outs: ["${item}.cln"]
          train:
            foreach:
              - {epochs: 3, thresh: 10}
              - {epochs: 10, thresh: 15}
            do:
              cmd: python train.py ${item.epochs} ${item.thresh}
          build:
            foreach: ${models}
            do:
              cmd: python train.py '${key}' ${item.thresh}
              outs: ["model-${key}.hdf5"]
    """, PARAMS)
    assert [s.name for s in p.stages] == ["clean@raw1", "clean@labels1", "train@0", "train@1",
                                          "build@us", "build@uk"]
    assert p.stage("clean@raw1").outs[0].path == "raw1.cln"
    assert p.stage("train@1").cmd == ("python train.py 10 15",)
    assert p.stage("build@uk").cmd == ("python train.py 'uk' 15",)
    assert p.stage("build@uk").group == "build"
    assert [s.name for s in p.select(["train"])] == ["train@0", "train@1"]
    assert [s.name for s in p.select(["train@1"])] == ["train@1"]


def test_matrix_names_and_items(tmp_path: Path) -> None:
    p = load(tmp_path, """
        stages:
          fit:
            matrix:
              opt: [adam, sgd]
              lr: [0.1, 0.01]
              cfg: [{a: 1}, {a: 2}]
            cmd: fit --opt ${item.opt} --lr ${item.lr} --a ${item.cfg.a} --key ${key}
            outs: ["out/${key}"]
          sweep:
            matrix: {n: "${train.layers}"}
            cmd: echo ${item.n}
    """, PARAMS)
    names = [s.name for s in p.stages]
    assert names[:3] == ["fit@adam-0.1-cfg0", "fit@adam-0.1-cfg1", "fit@adam-0.01-cfg0"]
    assert len(names) == 10 and names[-2:] == ["sweep@64", "sweep@32"]
    st = p.stage("fit@sgd-0.01-cfg1")
    assert st.cmd == ("fit --opt sgd --lr 0.01 --a 2 --key sgd-0.01-cfg1",)
    assert st.outs[0].path == "out/sgd-0.01-cfg1"


@pytest.mark.parametrize(("body", "needles"), [
    ("stages:\n  a:\n    foreach: [1]\n    do: {cmd: x}\n    cmd: y\n",
     ["dvc.yaml:5:", "stages.a.cmd", "only foreach and do"]),
    ("stages:\n  a:\n    foreach: 3\n    do: {cmd: x}\n", ["dvc.yaml:3:", "stages.a.foreach", "list or mapping"]),
    ("stages:\n  a:\n    foreach: [1]\n", ["stages.a.do", "foreach needs a do"]),
    ("stages:\n  a:\n    matrix: {x: 1}\n    cmd: y\n", ["dvc.yaml:3:", "stages.a.matrix.x", "list of values"]),
    ("stages:\n  a:\n    foreach: [x, x]\n    do: {cmd: y}\n", ["stages.a@x", "two stages have this name"]),
    ("stages:\n  a:\n    foreach: [x]\n    do:\n      cmd: y\n      outz: [o]\n",
     ["dvc.yaml:6:", "stages.a@x.outz", "unknown stage key", "did you mean 'outs'"]),
])
def test_foreach_matrix_errors(tmp_path: Path, body: str, needles: list[str]) -> None:
    fails(tmp_path, body, *needles)


# ------------------------------------------------------------------ schema errors

@pytest.mark.parametrize(("body", "needles"), [
    ("stages:\n  a:\n    cmd: x\n  b: [1\n", ["dvc.yaml:5:", "malformed"]),
    ("stages:\n  a: {cmd: x}\n  a: {cmd: y}\n", ["dvc.yaml:3:", "malformed", "duplicate key"]),
    ("- a\n- b\n", ["dvc.yaml:1:", "expected a mapping"]),
    ("stage:\n  a: {cmd: x}\n", ["dvc.yaml:1:", "stage", "unknown top-level key", "'stages'"]),
    ("stages:\n  a:\n    cmd: x\n    outz: [y]\n",
     ["dvc.yaml:4:", "stages.a.outz", "unknown stage key", "did you mean 'outs'"]),
    ("stages:\n  a:\n    deps: [x]\n", ["dvc.yaml:2:", "stages.a", "missing cmd"]),
    ("stages:\n  a:\n    cmd: ''\n", ["dvc.yaml:3:", "stages.a.cmd", "non-empty"]),
    ("stages:\n  a:\n    cmd: [x, 3]\n", ["dvc.yaml:3:", "stages.a.cmd"]),
    ("stages:\n  a:\n    cmd: x\n    deps: data\n", ["dvc.yaml:4:", "stages.a.deps", "expected a list"]),
    ("stages:\n  a:\n    cmd: x\n    frozen: yes\n", ["dvc.yaml:4:", "stages.a.frozen", "true or false"]),
    ("stages:\n  a:\n    cmd: x\n    outs:\n      - m:\n          cache: false\n          persit: true\n",
     ["dvc.yaml:7:", "stages.a.outs[0].m.persit", "unknown output option", "'persist'"]),
    ("stages:\n  a:\n    cmd: x\n    outs:\n      - m: {cache: no}\n", ["stages.a.outs[0].m.cache", "true or false"]),
    ("stages:\n  a:\n    cmd: x\n    metrics:\n      - m.json: {x: step}\n", ["unknown output option"]),
    ("stages:\n  a:\n    cmd: x\n    params:\n      - 3\n", ["dvc.yaml:5:", "stages.a.params[0]"]),
    ("stages:\n  a:\n    cmd: x\n    params:\n      - p.yaml: lr\n", ["stages.a.params[0]", "list of keys"]),
    ("stages:\n  a@b:\n    cmd: x\n", ["dvc.yaml:2:", "invalid stage name"]),
    ("stages:\n  a: echo\n", ["dvc.yaml:2:", "stages.a", "expected a mapping"]),
    ("metrics: m.json\nstages: {}\n", ["metrics", "expected a list"]),
])
def test_schema_errors(tmp_path: Path, body: str, needles: list[str]) -> None:
    fails(tmp_path, body, *needles)


@pytest.mark.parametrize(("body", "needles"), [
    ("stages:\n  a:\n    cmd: x\n    deps: [/etc/passwd]\n", ["dvc.yaml:4:", "stages.a.deps[0]", "absolute"]),
    ("stages:\n  a:\n    cmd: x\n    outs: [../out]\n", ["dvc.yaml:4:", "stages.a.outs[0]", "escapes the project"]),
    ("stages:\n  a:\n    cmd: x\n    wdir: ..\n", ["dvc.yaml:4:", "stages.a.wdir", "escapes"]),
    ("stages:\n  a:\n    cmd: x\n    wdir: sub\n    deps: [../../x]\n", ["stages.a.deps[0]", "escapes"]),
    ("stages:\n  a:\n    cmd: x\n    deps: [a/../../x]\n", ["escapes"]),
    ("stages:\n  a:\n    cmd: x\n    deps: ['s3://bucket/x']\n", ["stages.a.deps[0]", "URL"]),
    ("stages:\n  a:\n    cmd: x\n    params: [{/abs.yaml: [k]}]\n", ["stages.a.params[0]", "absolute"]),
    ("stages:\n  a:\n    cmd: x\n    outs: [.]\n", ["whole project"]),
    ("stages:\n  a:\n    cmd: x\n    outs: [dvc.yaml]\n", ["would contain dvc.yaml"]),
    ("metrics: [../m.json]\nstages: {}\n", ["metrics[0]", "escapes"]),
])
def test_paths_must_stay_inside_root(tmp_path: Path, body: str, needles: list[str]) -> None:
    fails(tmp_path, body, *needles)


@pytest.mark.parametrize(("body", "needles"), [
    ("stages:\n  a: {cmd: x, deps: [c], outs: [a]}\n  b: {cmd: x, deps: [a], outs: [b]}\n"
     "  c: {cmd: x, deps: [b], outs: [c]}\n", ["dvc.yaml:2:", "cycle: a -> b -> c -> a"]),
    ("stages:\n  a:\n    cmd: x\n    deps: [data]\n    outs: [data/out]\n",
     ["dvc.yaml:2:", "stages.a", "cycle", "own output"]),
    ("stages:\n  a: {cmd: x, outs: [model.pkl]}\n  b: {cmd: y, outs: [model.pkl]}\n",
     ["dvc.yaml:3:", "stages.b.outs", "'model.pkl'", "stage 'a'"]),
    ("stages:\n  a: {cmd: x, outs: [data]}\n  b: {cmd: y, outs: [data/sub]}\n",
     ["dvc.yaml:3:", "stages.b.outs", "inside 'data'", "stage 'a'"]),
    ("stages:\n  a: {cmd: x, outs: [data/sub]}\n  b: {cmd: y, outs: [data]}\n",
     ["dvc.yaml:3:", "stages.b.outs", "overlaps 'data/sub'", "stage 'a'"]),
    ("stages:\n  a:\n    cmd: x\n    outs: [data]\n    metrics: [data/m.json]\n",
     ["dvc.yaml:5:", "stages.a.metrics", "inside 'data'", "same stage"]),
    ("stages:\n  a:\n    cmd: x\n    outs:\n      - data\n  b:\n    cmd: y\n    outs:\n      - out\n"
     "      - data/sub\n", ["dvc.yaml:10:", "stages.b.outs", "inside 'data'", "stage 'a'"]),
])
def test_graph_errors(tmp_path: Path, body: str, needles: list[str]) -> None:
    fails(tmp_path, body, *needles)


def test_tally_yaml_errors_name_tally_yaml(tmp_path: Path) -> None:
    err = fails(tmp_path, "stages:\n  a:\n    cmd: x\n    bogus: 1\n", "tally.yaml:4:", name="tally.yaml")
    assert err.path and err.path.endswith("tally.yaml")


def test_dep_on_whole_project_and_plots_mapping(tmp_path: Path) -> None:
    p = load(tmp_path, """
        stages:
          report: {cmd: r, deps: [.]}
          build: {cmd: b, outs: [out]}
        plots:
          loss.csv: {x: step}
          acc:
            y: {a.csv: acc, b.csv: acc}
    """)
    assert [s.name for s in p.stages] == ["build", "report"] and p.upstream["report"] == ("build",)
    assert [(pl.id, pl.files) for pl in p.plots] == [("loss.csv", ("loss.csv",)), ("acc", ("a.csv", "b.csv"))]
    fails(tmp_path, "stages:\n  a: {cmd: x, deps: [.], outs: [o]}\n", "dvc.yaml:2:", "own output")


# ------------------------------------------------------------------ properties

@st.composite
def dags(draw: st.DrawFn) -> tuple[list[int], list[set[int]]]:
    """Stages 0..n-1 where stage i may read outputs of stages < i; then a random file order."""
    n = draw(st.integers(1, 12))
    reads = [draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set() for i in range(n)]
    order = draw(st.permutations(range(n)))
    return list(order), reads


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dag=dags(), nested=st.booleans())
def test_property_order_is_topological_with_file_order_ties(tmp_path: Path, dag, nested: bool) -> None:
    order, reads = dag
    # Half the time a stage reads a file inside another's output directory, not the output itself.
    lines = ["stages:"]
    for i in order:
        deps = [f"out{j}/part" if nested else f"out{j}" for j in sorted(reads[i])]
        lines.append(f"  s{i}: {{cmd: run {i}, deps: [{', '.join(deps)}], outs: [out{i}]}}")
    p = load(tmp_path, "\n".join(lines) + "\n")
    got = [int(s.name[1:]) for s in p.stages]
    # Reference: Kahn's algorithm taking the ready stage that comes first in the file.
    done: list[int] = []
    while len(done) < len(order):
        done.append(next(i for i in order if i not in done and reads[i] <= set(done)))
    assert got == done
    assert all(set(p.upstream[f"s{i}"]) == {f"s{j}" for j in reads[i]} for i in order)
