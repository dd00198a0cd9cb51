"""What the README, the docs site and the config comments say is what the code does, where a
machine can check it: every config key they name exists in the composed configs, every output
file the docs name for ``evaluate.py`` and ``predict.py`` is written by them, and every figure
of the README's benchmark table is the one recorded in docs/benchmarks.md."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from inat_lightning.prediction import predict
from tests.helpers.cli import REPO, compose_config

README = (REPO / "README.md").read_text(encoding="utf-8")
#: the README and every page of the docs site, one text
DOCS = "\n".join(
    p.read_text(encoding="utf-8")
    for p in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
)
#: config variants whose keys together are every key a user can set
VARIANTS = {
    "train": [
        [],
        ["hparams_search=optuna_sgd"],
        ["callbacks=finetune"],
        ["hydra/launcher=slurm"],
        ["trainer=ddp"],
        ["trainer=gpu"],
        ["data=imagefolder", "data.root=x"],
        ["data=shards", "data.root=x"],
    ],
    "evaluate": [[]],
    "predict": [[]],
    "scrape": [[], ["scrape/backend=browser"], ["scrape/backend=opendata"]],
    "shards": [[]],
}
FILE_SUFFIXES = {"py", "yaml", "json", "log", "md", "csv", "png", "pt2", "ckpt", "pth", "txt", "db"}
KEY = re.compile(r"`\+{0,2}~?([a-z_]+(?:\.[A-Za-z_0-9]+)+)(?:=[^`]*)?`")


def composed_keys() -> set[str]:
    """Every dotted key of every variant of the primary configs (Hydra's own included)."""
    keys: set[str] = set()

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                path = f"{prefix}.{k}" if prefix else str(k)
                keys.add(path)
                walk(v, path)

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        for name, variants in VARIANTS.items():
            for overrides in variants:
                cfg = compose(name, overrides=overrides, return_hydra_config=True)
                walk(OmegaConf.to_container(cfg, resolve=False), "")
    return keys


def named_keys(text: str, tops: set[str]) -> set[str]:
    """Backticked dotted names whose first part is a config's top-level key (``data.root``,
    ``+trainer.max_epoch=3``), not module or file names (``torch.export``, ``report.md``)."""
    return {
        m
        for m in KEY.findall(text)
        if m.split(".")[0] in tops and m.rsplit(".", 1)[1] not in FILE_SUFFIXES
    }


@pytest.fixture(scope="module")
def keys() -> set[str]:
    return composed_keys()


def test_every_key_the_readme_and_the_docs_name_exists(keys):
    tops = {k for k in keys if "." not in k} - {"hydra"} | {"hydra"}
    # a misspelt key on purpose, to show the error it gets
    on_purpose = {"trainer.max_epoch", "data.synthetic.observations", "open_set.sore"}
    missing = sorted(k for k in named_keys(DOCS, tops) - on_purpose if k not in keys)
    assert not missing, missing


def test_every_key_a_config_comment_names_exists(keys):
    tops = {k for k in keys if "." not in k}
    comments = "\n".join(
        line.split("#", 1)[1]
        for path in sorted((REPO / "conf").rglob("*.yaml"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if "#" in line
    )
    found = {m for m in re.findall(r"\b([a-z_]+(?:\.[a-z_0-9]+)+)=", comments)}
    found |= named_keys(comments, tops)
    missing = sorted(k for k in found if k.split(".")[0] in tops and k not in keys)
    assert not missing, missing


def section(title: str, text: str = DOCS) -> str:
    """From the heading ``# title`` (any level) to the next heading of its level or above; a
    ``# comment`` inside a code block is not a heading."""
    prose = re.sub(r"```.*?```", lambda m: re.sub(r"(?m)^#", " ", m.group(0)), text, flags=re.S)
    match = re.search(rf"^(#+) {re.escape(title)}", prose, re.M)
    assert match, title
    level = len(match.group(1))
    end = re.search(rf"^#{{1,{level}}} ", prose[match.end() :], re.M)
    return text[match.start() : match.end() + end.start() if end else None]


OUTPUT = re.compile(r"`([\w./<>-]+\.(?:md|csv|png|json|yaml|pt2))`")


@pytest.mark.slow
def test_every_file_the_readme_names_for_evaluate_is_written(short_evaluation):
    _, out = short_evaluation
    named = set(OUTPUT.findall(section("Analyse")))
    # written elsewhere (the training run, the data folder), only for data with cue boxes, or
    # only with held-out species (test_evaluate_cli checks that one)
    elsewhere = {"metrics.json", "splits.csv", "dataset_report.md", "audit_gallery.png", "taxa.csv"}
    elsewhere |= {"open_set_scores.png", "discovered_cues.png"}  # the latter: a region recurs
    absent = sorted(f for f in named - elsewhere if "<" not in f and not (out / f).is_file())
    assert not absent, absent
    summary = json.loads((out / "metrics.json").read_text())
    assert (out / "metrics.json").is_file() and summary["audit"]["kind"] == "faithfulness"


@pytest.mark.slow
def test_every_file_the_readme_names_for_predict_is_written(
    short_evaluation, shared_data_dir, tmp_path
):
    run, _ = short_evaluation
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    cfg = compose_config(
        "predict",
        tmp_path,
        f"ckpt_path={best}",
        f"inputs={shared_data_dir / 'synthetic' / '*' / '*1-v0.jpg'}",  # some of the run's photos
        "export=true",
        "explain_max=2",
        "num_workers=0",
        "progress=false",
    )
    predict(cfg)
    out = tmp_path / "out"
    named = set(OUTPUT.findall(section("Predict")))
    # inputs, and what training and evaluate write, named there to say where things come from
    elsewhere = {"docs/benchmarks.md", "manifest.csv", "metrics.json", "reliability.png"}
    elsewhere |= {"conf/train.yaml"}  # where the prior and the out-of-set rule are set
    absent = sorted(
        f for f in named - elsewhere if not ((out / f).is_file() or (out / "export" / f).is_file())
    )
    assert not absent, absent


def numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+(?:\.\d+)?", text)]


def test_the_readme_benchmark_figures_are_the_recorded_ones():
    recorded = set(numbers((REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")))
    table = section("Benchmarks", README)
    rows = [r.split("|")[1:-1] for r in table.splitlines() if r.startswith("| ") and "---" not in r]
    assert len(rows) > 5
    for cells in rows[1:]:
        measured = cells[1]
        for x in numbers(measured):
            ok = x in recorded or round(x / 100, 6) in recorded or x in (1, 2, 6)  # "1/2, 1/6"
            assert ok, (cells[0].strip(), measured.strip(), x)


def test_the_layout_page_names_every_module_and_folder():
    """docs/reference/layout.md, the map a newcomer reads first, leaves nothing out."""
    layout = (REPO / "docs" / "reference" / "layout.md").read_text(encoding="utf-8")
    modules = [
        p for base in ("inat_lightning", "hydra_plugins") for p in (REPO / base).rglob("*.py")
    ]
    unnamed = sorted(
        str(p.relative_to(REPO))
        for p in modules
        if p.name != "__init__.py" and p.name not in layout
    )
    assert not unnamed, unnamed
    listed = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.splitlines()  # what the project holds, not what a developer's runs left beside it
    if not listed:
        pytest.skip("not a git checkout: its folders cannot be told from ones the runs made")
    folders = sorted({f.split("/")[0] for f in listed if "/" in f and not f.startswith(".")})
    assert not [d for d in folders if f"{d}/" not in layout], folders


def test_the_config_reference_lists_every_key_of_the_composed_configs(keys):
    """docs/reference/config.md's tables (generated by docs/hooks.py from the YAML files) name
    every key a user can set: those of every variant of the four primary configs, Hydra's own
    settings aside (Hydra documents them)."""
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    listed = {k for path in hooks.CONF.rglob("*.yaml") for k, _, _ in hooks.keys_of(path)}
    parents = {".".join(k.split(".")[:i]) for k in listed for i in range(1, k.count(".") + 1)}
    missing = sorted(k for k in keys - listed - parents if not k.startswith("hydra"))
    assert not missing, missing[:20]
