"""How much the pooled summaries of a trained classifier vary across sentences, per layer: std over 64 dev
examples of the [CLS] state, of the pooler output and of the mean over real tokens (README's pooling finding).

    .venv/bin/python scripts/cls_variation.py runs/sst2-minilm-l6-classifier/model ../shared/data/glue/SST-2/dev.tsv
"""

import sys

import torch

from tokexit.data.classification import collate_examples, encode_examples
from tokexit.data.glue import TsvColumns, read_tsv
from tokexit.model_io import load_classifier

model, tokenizer, task, _ = load_classifier(sys.argv[1])
examples = read_tsv(sys.argv[2], TsvColumns(**task.columns), regression=task.regression)[:64]
batch = collate_examples(encode_examples(examples, tokenizer, task, 128), tokenizer.pad_token_id)
with torch.no_grad():
    states = model.hidden_states(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    mask = batch["attention_mask"][..., None].float()
    for i, h in enumerate(states, start=1):
        mean = (h * mask).sum(1) / mask.sum(1)
        print(f"layer {i}: [CLS] std {h[:, 0].std(0).mean():.4f}  pooler std "
              f"{model.pooler(h, batch['attention_mask']).std(0).mean():.4f}  token-mean std {mean.std(0).mean():.4f}")
