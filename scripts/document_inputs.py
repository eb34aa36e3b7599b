"""How many model inputs a CoNLL file becomes, sentence by sentence or packed by document (``data.context``).

python scripts/document_inputs.py ../shared/data/conll2003/eng.testb   # the README's 3,453 -> 251 figures
"""

from __future__ import annotations

import argparse
import statistics

from tokexit.backbones import load_tokenizer
from tokexit.data.tagging import ReaderOptions, build_dataset, load_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file")
    parser.add_argument("--backbone", default="minilm-l6")
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.backbone)
    for context in ("sentence", "document"):
        corpus = load_corpus(args.file, ReaderOptions(context=context))
        lengths = [len(ids) for ids in build_dataset(corpus, tokenizer, None, args.max_length)["input_ids"]]
        print(f"{context:8s}: {len(corpus.sentences)} sentences -> {len(lengths)} inputs, subwords per input mean "
              f"{statistics.mean(lengths):.1f}, median {statistics.median(lengths):g}, max {max(lengths)}")


if __name__ == "__main__":
    main()
