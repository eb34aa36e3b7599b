"""Export a DynaBERT sub-network of a trained tokexit model as a smaller model directory:
``python -m tokexit.export model_dir=DIR width=0.5 depth=0.5 output_dir=OUT``.

OUT is a Hugging Face model directory with the sliced weights (without tokexit: ``AutoModel.from_pretrained(OUT,
trust_remote_code=True)``, with the ``slim_bert`` code shipped in OUT) and, next to it, the kept exit heads, so that
tokexit's ``evaluate``/API run it as a model of its own, at its real size. tokexit itself loads OUT (and the
``model_dir`` it exports from) with its own registered classes and never runs code from a model directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from tokexit import CONFIG_DIR
from tokexit.config import UsageError, require_output_dir
from tokexit.engine.subnetwork import SubNetwork
from tokexit.export.subnetwork import copy_code, slice_bert, with_code
from tokexit.model_io import load_model, save_model, warn_untrained_subnetwork
from tokexit.reporting.output import write_json

# what the exported model keeps besides the sliced backbone and the exits of the kept layers (a classifier's pooler)
NOT_CARRIED = ("backbone.", "exits.", "selector.")


def export(model_dir: str, width: float, depth: float, output_dir: str) -> dict:
    """Write the (``width``, ``depth``) sub-network of the model in ``model_dir`` to ``output_dir``; its summary."""
    missing = [name for name, value in (("model_dir", model_dir), ("output_dir", output_dir))
               if value is None or str(value).strip() in ("", "???")]
    if missing:
        raise UsageError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
                         "python -m tokexit.export model_dir=DIR width=W depth=D output_dir=OUT")
    require_output_dir(output_dir)
    if Path(output_dir).resolve() == Path(model_dir).resolve():
        raise UsageError(f"output_dir={output_dir} is the model being exported: write the sub-network to another "
                         "directory (it would replace the model, its weights and speed profiles)")
    sub = SubNetwork(width, depth)  # checked before the model loads
    model, tokenizer, task, meta = load_model(model_dir)
    warn_untrained_subnetwork(meta, width, depth, model_dir)
    plan = sub.plan(model.num_layers)
    parts = model.adapter.layer(0)
    heads, neurons = sub.heads(parts.num_heads), sub.neurons(parts.ffn_in.out_features)
    slim = with_code(slice_bert(model.backbone, heads, neurons, [layer for layer, _ in plan]))
    small = task.build(slim)
    for j, (_, exit_index) in enumerate(plan):
        small.exits[j].load_state_dict(model.exits[exit_index].state_dict())
    rest = {k: v for k, v in model.state_dict().items() if not k.startswith(NOT_CARRIED)}
    small.load_state_dict(rest, strict=False)  # the same task, the same heads: every key fits
    exported = {"from": str(model_dir), "width": width, "depth": depth, "heads": heads, "neurons": neurons,
                "layers": [layer for layer, _ in plan]}
    out = Path(output_dir)
    save_model(small, tokenizer, task.labels, out, meta.get("max_length", 512), {"exported_subnetwork": exported})
    copy_code(out)
    params = sum(p.numel() for p in slim.parameters())
    summary = {**exported, "backbone_parameters": params,
               "original_backbone_parameters": sum(p.numel() for p in model.backbone.parameters())}
    write_json(out / "export.json", summary)
    print(f"exported width {width} depth {depth}: {heads} heads, {neurons} neurons, layers {exported['layers']}, "
          f"{params / 1e6:.2f}M backbone parameters -> {out}")
    return summary


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    try:
        export(cfg.get("model_dir"), cfg.width, cfg.depth, cfg.get("output_dir"))
    except (ValueError, FileNotFoundError) as e:  # a usage or model error: one line, no traceback
        sys.exit(f"tokexit.export: error: {e}")


if __name__ == "__main__":
    main()
