"""A normal (non-editable) install works: the wheel holds every config and module, and the installed console scripts
(``tokexit-train``, ``tokexit-evaluate``, ``tokexit-export``, ``tokexit-tag``) and ``python -m tokexit.train`` run
from a directory outside the checkout, on the packaged configs plus a user's own config directory (``--config-dir`` and
``hydra.searchpath``).

The wheel goes into a fresh venv; the dependencies come from this venv's site-packages through a plain path line in
a ``.pth`` file (a path line does not run that directory's own ``.pth`` files, so the editable tokexit stays off)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, synthetic_sentences, write_conll
from test_configs import write_user_configs

pytestmark = pytest.mark.slow

SCRIPTS = {"tokexit-train": "tokexit.train:main", "tokexit-evaluate": "tokexit.evaluate:main",
           "tokexit-export": "tokexit.export.__main__:main", "tokexit-tag": "tokexit.tag:main"}
SHIPPED = {".py", ".yaml", ".json"}  # every such file under tokexit/ must be in the wheel
TIMEOUT = 300


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def check(proc, what: str):
    assert proc.returncode == 0, f"{what}: rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    # built without build isolation, with this venv's setuptools (pyproject: setuptools>=77; torch pulls it in)
    pytest.importorskip("setuptools", minversion="77")
    root = tmp_path_factory.mktemp("packaging")
    # build from a snapshot of the checkout: an in-tree build would write build/ (stale files and all) into the repo
    src = root / "src"
    src.mkdir()
    for f in REPO.iterdir():
        if f.is_file():
            shutil.copy2(f, src / f.name)
    shutil.copytree(REPO / "tokexit", src / "tokexit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_CONSTRAINT")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    check(run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
               "-w", str(root / "dist")], src, env), "pip wheel")
    (wheel,) = (root / "dist").glob("tokexit-*.whl")

    venv = root / "venv"
    check(run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root, env), "python -m venv")
    python = venv / "bin" / "python"
    # this venv's pip installs into the fresh one; nothing of this venv is visible to it yet
    check(run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
               str(wheel)], root, env), "pip install wheel")
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root, env)
                .stdout.strip())
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "_tokexit_test_deps.pth").write_text("".join(f"{d}\n" for d in deps), encoding="utf-8")

    env = {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")}
    env.pop("TOKEXIT_DATA_ROOT", None)  # the default ../shared/data, relative to a directory that has none
    work = root / "work"  # outside the checkout: nothing there but what the runs write
    work.mkdir()
    return {"src": src, "wheel": wheel, "venv": venv, "python": python, "site": site, "env": env, "work": work}


def test_wheel_holds_every_config_module_and_script(installed):
    with zipfile.ZipFile(installed["wheel"]) as z:
        names = set(z.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = z.read(entry_points).decode()
    src = installed["src"]
    expected = {p.relative_to(src).as_posix() for p in (src / "tokexit").rglob("*")
                if p.is_file() and p.suffix in SHIPPED}
    assert {n for n in expected if n.startswith("tokexit/conf/")} >= {
        "tokexit/conf/train.yaml", "tokexit/conf/evaluate.yaml", "tokexit/conf/export.yaml",
        "tokexit/conf/data/wnut16.yaml", "tokexit/conf/model/tiny.yaml", "tokexit/conf/trainer/default.yaml",
        "tokexit/conf/exit/none.yaml", "tokexit/conf/experiment/conll2003_minilm.yaml"}
    assert {n for n in expected if "/slim_bert/" in n} >= {
        "tokexit/export/slim_bert/configuration_slim_bert.py", "tokexit/export/slim_bert/modeling_slim_bert.py"}
    assert expected - names == set(), "files of the package missing from the wheel"
    for name, target in SCRIPTS.items():
        assert f"{name} = {target}" in scripts


def test_installed_tokexit_is_the_wheel_not_the_checkout(installed):
    probe = ("import json, sys, tokexit; print(json.dumps({'file': tokexit.__file__, 'conf': str(tokexit.CONFIG_DIR),"
             " 'editable': [m for m in sys.modules if 'editable' in m]}))")
    proc = run([str(installed["python"]), "-c", probe], installed["work"], installed["env"])
    check(proc, "import tokexit")
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(found["file"]).is_relative_to(installed["site"]), found
    assert not Path(found["file"]).resolve().is_relative_to(REPO), found
    assert found["editable"] == [], found
    assert (Path(found["conf"]) / "train.yaml").is_file()
    for name in SCRIPTS:
        assert (installed["venv"] / "bin" / name).read_text().startswith(f"#!{installed['python']}")


def test_console_scripts_run_outside_the_checkout(installed, tmp_path):
    env, work, bin_dir = installed["env"], installed["work"], installed["venv"] / "bin"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_conll(corpus / "train.txt", synthetic_sentences(60, seed=1))
    write_conll(corpus / "dev.txt", synthetic_sentences(12, seed=2))
    write_conll(corpus / "test.txt", synthetic_sentences(12, seed=3))
    user = write_user_configs(tmp_path / "myconf", corpus)  # data/mydata.yaml, experiment/mine.yaml
    quiet = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    run_a, run_b = tmp_path / "run_a", tmp_path / "run_b"

    # the console script with --config-dir, and python -m with hydra.searchpath, side by side
    train_a = subprocess.Popen(
        [str(bin_dir / "tokexit-train"), "--config-dir", str(user), "data=mydata", "model=tiny", *quiet,
         f"output_dir={run_a}"], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    train_b = run([str(installed["python"]), "-m", "tokexit.train", f"hydra.searchpath=[file://{user}]",
                   "experiment=mine", *quiet, "save_model=false", f"output_dir={run_b}"], work, env)
    out, err = train_a.communicate(timeout=TIMEOUT)
    check(subprocess.CompletedProcess(train_a.args, train_a.returncode, out, err), "tokexit-train --config-dir")
    check(train_b, "python -m tokexit.train hydra.searchpath=...")
    for run_dir in (run_a, run_b):
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert (metrics["data"], metrics["model"]) == ("mydata", "tiny")
        assert len(metrics["layers"]) == 3
    assert (run_a / "model" / "tokexit.json").is_file()
    # the configs came from the installed package, the user's next to them
    hydra_yaml = (run_a / ".hydra" / "hydra.yaml").read_text()
    assert str(installed["site"] / "tokexit" / "conf") in hydra_yaml and str(user) in hydra_yaml

    evaluate = subprocess.Popen(
        [str(bin_dir / "tokexit-evaluate"), f"model_dir={run_a / 'model'}", f"data.test_file={corpus / 'test.txt'}",
         f"output_dir={tmp_path / 'eval'}", "timing_repeats=1"],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    export = run([str(bin_dir / "tokexit-export"), f"model_dir={run_a / 'model'}", "width=0.5", "depth=0.67",
                  f"output_dir={tmp_path / 'small'}"], work, env)
    out, err = evaluate.communicate(timeout=TIMEOUT)
    check(subprocess.CompletedProcess(evaluate.args, evaluate.returncode, out, err), "tokexit-evaluate")
    check(export, "tokexit-export")
    assert (tmp_path / "eval" / "metrics.json").is_file()
    text = tmp_path / "raw.txt"
    text.write_text("Alice flew to Paris .\n\nBob stayed\n")
    check(run([str(bin_dir / "tokexit-tag"), f"model_dir={run_a / 'model'}", f"input={text}",
               f"output={tmp_path / 'raw.conll'}"], work, env), "tokexit-tag")
    lines = (tmp_path / "raw.conll").read_text().split("\n")  # a blank line ends a sentence; the empty one is blank
    assert [line.split("\t")[0] for line in lines] == ["Alice", "flew", "to", "Paris", ".", "", "", "Bob", "stayed",
                                                       "", ""]
    assert all(len(line.split("\t")) == 2 for line in lines if line)  # word and tag
    # the exported model directory carries the slim_bert code from the installed package
    assert {"modeling_slim_bert.py", "configuration_slim_bert.py", "export.json"} <= {
        p.name for p in (tmp_path / "small").iterdir()}
    assert list(work.iterdir()) == [], "a run wrote into the directory it was started from"
