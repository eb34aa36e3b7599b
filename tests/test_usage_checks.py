"""Plain mistakes with the CLIs and the API are caught before any work and named in one line: files given only in
part, exit policies of the other task, thresholds out of range, an export onto its own source; and last.ckpt is the
latest epoch whatever the validation score did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import synthetic_sentences, write_conll
from test_model_safety import LABELS, WORDS, tiny_bert
from test_pipeline import FAST, config
from transformers import BertTokenizer

from tokexit.api import Tagger
from tokexit.config import UsageError
from tokexit.engine import MultiExitEncoder
from tokexit.evaluate import evaluate
from tokexit.exits import PatienceExit, SentenceExit, TokenWindowExit
from tokexit.export.__main__ import export
from tokexit.fates import TokenReduction
from tokexit.model_io import save_model
from tokexit.train import train


@pytest.fixture(scope="module")
def tagger(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("usage")
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(WORDS)})
    return save_model(MultiExitEncoder(tiny_bert(0), len(LABELS.labels)), tokenizer, LABELS, root / "tagger", 64)


def test_train_refuses_a_mix_of_own_and_built_in_files(tmp_path):
    mine = write_conll(tmp_path / "train.conll", synthetic_sentences(10, seed=1))
    with pytest.raises(UsageError, match=r"data.train_file=.*train.conll given, but data.validation_file, "
                                         r"data.test_file still read data=wnut16's own .*give data.validation_file="
                                         r"PATH and data.test_file=PATH too \(or =null for none\)"):
        train(config("train", [*FAST, f"data.train_file={mine}", f"output_dir={tmp_path / 'run'}"]))
    assert not (tmp_path / "run").exists()


def test_last_checkpoint_is_the_latest_epoch_without_a_better_score(tmp_path):
    """Validation without entities scores F1 0 every epoch: best.ckpt stays at the first, last.ckpt follows."""
    files = {"train": write_conll(tmp_path / "train.conll", synthetic_sentences(16, seed=1)),
             "validation": write_conll(tmp_path / "dev.conll", [[("alice", "O"), ("went", "O")]] * 4),
             "test": None}
    overrides = [*FAST, "trainer.max_epochs=2", f"output_dir={tmp_path / 'run'}", "save_model=false",
                 *[f"data.{k}_file={'null' if v is None else v}" for k, v in files.items()]]
    train(config("train", overrides))
    checkpoints = tmp_path / "run" / "checkpoints"
    epochs = {name: torch.load(checkpoints / f"{name}.ckpt", weights_only=False)["epoch"] for name in ("best", "last")}
    assert epochs == {"best": 0, "last": 1}, epochs


def test_evaluate_checks_the_policy_the_validation_file_and_repeats_first(tagger, tmp_path):
    test = write_conll(tmp_path / "test.conll", synthetic_sentences(6, seed=3))
    base = [f"model_dir={tagger}", f"data.test_file={test}", f"output_dir={tmp_path / 'out'}"]
    with pytest.raises(UsageError, match="exit=patience does not decide for a token_tagger model .*use "
                                         "exit=token_window"):
        evaluate(config("evaluate", [*base, "exit=patience"]))
    with pytest.raises(UsageError, match=r"data.validation_file=.*nodev.conll: no such file"):
        evaluate(config("evaluate", [*base, "exit=token_window", "exit.target_speedup=2",
                                     f"data.validation_file={tmp_path / 'nodev.conll'}"]))
    with pytest.raises(UsageError, match="timing_repeats=0 must be a whole number >= 1"):
        evaluate(config("evaluate", [*base, "timing_repeats=0"]))
    with pytest.raises(UsageError, match=r"exit.threshold must be a number >= 0"):
        evaluate(config("evaluate", [*base, "exit=token_window", "exit.threshold=-0.1"]))
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_thresholds_and_kinds_are_checked_where_policies_are_built(tagger):
    for bad in (-0.1, "abc", float("nan"), True):
        with pytest.raises(ValueError, match="exit.threshold must be a number >= 0"):
            TokenWindowExit(bad, window=3)
    with pytest.raises(ValueError, match="exit.thresholds must be a number >= 0"):
        SentenceExit(0.1, thresholds=[0.1, -1.0])
    with pytest.raises(ValueError, match="exit.upper_factor must be a number >= 0"):
        TokenWindowExit(0.1, window=3, upper_factor=-1)
    with pytest.raises(ValueError, match=r"fate.threshold must be a keep probability in \[0, 1\]"):
        TokenReduction(threshold=-1)
    with pytest.raises(ValueError, match="exit=patience does not decide for a token_tagger model"):
        Tagger.load(tagger, device="cpu").tag("alice went", exit=PatienceExit(2))


def test_export_refuses_its_own_source_and_bad_sizes(tagger, tmp_path):
    before = sorted(p.name for p in tagger.iterdir())
    with pytest.raises(UsageError, match="is the model being exported"):
        export(str(tagger), 0.5, 0.5, str(tagger))
    for width in ("abc", 0, 1.5):
        with pytest.raises(ValueError, match="width and depth multipliers must lie in"):
            export(str(tagger), width, 0.5, str(tmp_path / "slim"))
    assert sorted(p.name for p in tagger.iterdir()) == before and not (tmp_path / "slim").exists()


def test_train_names_the_data_and_model_that_do_not_fit(tmp_path):
    files = {s: write_conll(tmp_path / f"{s}.conll", synthetic_sentences(8, seed=i)) for i, s in
             enumerate(("train", "validation", "test"))}
    overrides = ["model=tiny_classifier", *FAST[1:], f"output_dir={tmp_path / 'run'}",
                 *[f"data.{k}_file={v}" for k, v in files.items()]]
    with pytest.raises(UsageError, match=r"the data files given \(data.train_file, data.validation_file, "
                                         r"data.test_file\): a ner task, but model=.* builds .*use model=minilm"):
        train(config("train", overrides))


def test_a_sub_network_the_model_was_not_trained_for_is_warned_about(tagger, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="tokexit"):
        export(str(tagger), 0.5, 0.5, str(tmp_path / "slim"))
    assert "not a sub-network this model was trained for (it was not trained with DynaBERT" in caplog.text


@pytest.mark.parametrize("program", ["train", "evaluate", "export"])
def test_output_dir_that_is_a_file_is_one_line_from_the_entry_point(tagger, tmp_path, program):
    """Hydra makes its run directory (output_dir) before tokexit runs: where output_dir is a file, it runs in a
    scratch directory and the entry point reports the file."""
    (tmp_path / "a_file").write_text("")
    extra = {"train": [], "evaluate": [f"model_dir={tagger}", f"data.test_file={tmp_path / 'absent.conll'}"],
             "export": [f"model_dir={tagger}", "width=0.5", "depth=0.5"]}[program]
    done = subprocess.run([sys.executable, "-m", f"tokexit.{program}", *extra, f"output_dir={tmp_path / 'a_file'}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().endswith(f"tokexit.{program}: error: output_dir={tmp_path / 'a_file'} is a file: give "
                                        "a directory (it is created if missing)"), done.stderr[-2000:]
