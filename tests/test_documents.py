"""data.context=document: documents read from -DOCSTART- / "# newdoc", a document's sentences packed into inputs
of up to max_length subwords, predictions back per sentence (train, Lightning test, evaluate, CoNLL-2003)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import read_predictions, shared, synthetic_sentences, write_conll
from hydra import compose, initialize_config_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from tokexit import CONFIG_DIR
from tokexit.backbones import load_tokenizer
from tokexit.data import encoding
from tokexit.data.conll import Corpus, read_conll, read_conllu
from tokexit.data.encoding import pack_sentences, word_subwords
from tokexit.data.tagging import LabelSet, ReaderOptions, build_dataset, collate, length_sorted_loader, load_corpus
from tokexit.evaluate import evaluate
from tokexit.inference.collect import PredictionCollector, per_sentence
from tokexit.train import train

Sentences = list[list[tuple[str, str]]]
FAST = ["model=tiny", "model.backbone_lr=2e-3", "model.head_lr=5e-3", "data.batch_size=4",
        "trainer.max_epochs=4", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm-l6")


def split_documents(sentences: Sentences, seed: int, most: int = 9) -> list[Sentences]:
    """Cut a list of sentences into consecutive documents of 1..``most`` sentences."""
    rng, docs, i = random.Random(seed), [], 0
    while i < len(sentences):
        n = rng.randint(1, most)
        docs.append(sentences[i : i + n])
        i += n
    return docs


def write_documents(path: Path, documents: list[Sentences], sep: str = "\t") -> Path:
    """A CoNLL file in the CoNLL-2003 layout: a -DOCSTART- line and a blank line before every document."""
    text = "".join(f"-DOCSTART-{sep}O\n\n" + "".join("".join(f"{w}{sep}{t}\n" for w, t in s) + "\n" for s in doc)
                   for doc in documents)
    path.write_text(text, encoding="utf-8")
    return path


def long_sentence(seed: int) -> list[tuple[str, str]]:
    return [pair for s in synthetic_sentences(12, seed=seed) for pair in s]  # ~90 words, over 60 subwords


def check_inputs(data, corpus: Corpus, tokenizer, max_length: int, labels: LabelSet | None = None,
                 greedy: bool = True) -> dict:
    """Every documented rule of the packing, on ``build_dataset``'s rows in order (``greedy``: document mode,
    an input ends only where the next sentence does not fit). Returns counts."""
    budget = max_length - 2
    sizes = [sum(len(p) for p in pieces) for pieces in word_subwords(tokenizer, [s.words for s in corpus.sentences])]
    rows = data.to_list()
    inputs_of: dict[int, set[int]] = {}  # sentence -> the inputs holding any of its words
    owned_order = []
    packed = 0
    for r, row in enumerate(rows):
        ids = row["input_ids"]
        assert len(ids) <= max_length
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        sents = row["word_sentence"]
        assert len(sents) == len(row["word_index"]) == len(row["word_positions"]) == len(row["owned"])
        assert len({corpus.sentences[s].document for s in sents}) == 1  # documents never mixed
        assert (row["sentence_id"], row["word_offset"]) == (sents[0], row["word_index"][0])
        pairs = list(zip(sents, row["word_index"], strict=True))
        assert pairs == sorted(pairs) and len(set(pairs)) == len(pairs)  # sentences and words in order
        for s, j, gold in zip(sents, row["word_index"], row["labels"], strict=True):
            tag = corpus.sentences[s].tags[j]
            assert gold == (labels.to_id.get(tag, -100) if labels else -100)
            inputs_of.setdefault(s, set()).add(r)
        owned_order += [p for p, own in zip(pairs, row["owned"], strict=True) if own]
        packed += len(set(sents)) > 1
    everything = [(s, j) for s, sent in enumerate(corpus.sentences) for j in range(len(sent.words))]
    assert owned_order == everything  # every word owned exactly once, in file order
    for s, held in inputs_of.items():
        if sizes[s] <= budget:
            assert len(held) == 1  # a sentence that fits is never split
        else:
            assert len(held) > 1 and all(set(rows[r]["word_sentence"]) == {s} for r in held)  # windowed, alone
    for a, b in zip(rows, rows[1:], strict=False):  # greedy: the next input's first sentence did not fit
        first, last = b["word_sentence"][0], a["word_sentence"][-1]
        same_doc = corpus.sentences[first].document == corpus.sentences[last].document
        if greedy and same_doc and first != last and sizes[first] <= budget and sizes[last] <= budget:
            assert len(a["input_ids"]) - 2 + sizes[first] > budget
    return {"inputs": len(rows), "packed": packed, "windowed": sum(sz > budget for sz in sizes)}


# ----------------------------------------------------------------------------- reading documents


def test_conll_documents_are_numbered_from_docstart_lines(tmp_path):
    docs = split_documents(synthetic_sentences(30, seed=4), seed=5)
    text = write_documents(tmp_path / "d.txt", docs).read_text()
    path = tmp_path / "extra.txt"
    path.write_text("-DOCSTART-\tO\n\n" + text, encoding="utf-8")  # an empty document takes no index
    c = read_conll(path)
    assert [s.document for s in c.sentences] == [d for d, doc in enumerate(docs) for _ in doc]
    no_marks = tmp_path / "n.txt"
    no_marks.write_text(text.replace("-DOCSTART-\tO\n\n", ""), encoding="utf-8")
    assert {s.document for s in read_conll(no_marks).sentences} == {0}  # a file without marks: one document


def test_conllu_documents_follow_newdoc_comments(tmp_path):
    def sent(word: str) -> str:
        return f"# text = {word}\n1\t{word}\t{word}\tNOUN\tNN\t_\t0\troot\t_\t_\n\n"

    path = tmp_path / "x.conllu"
    path.write_text("# newdoc id = a\n" + sent("a") + sent("b") + "# newdoc id = b\n" + sent("c")
                    + "# newdoc\n" + sent("d"), encoding="utf-8")
    assert [(s.words[0], s.document) for s in read_conllu(path).sentences] == [("a", 0), ("b", 0), ("c", 1),
                                                                                ("d", 2)]


def test_context_is_checked():
    with pytest.raises(ValueError, match="sentence|document"):
        ReaderOptions(context="paragraph")


# ----------------------------------------------------------------------------- packing


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3)), max_size=60), st.integers(5, 30))
def test_pack_sentences_rules(items, budget):
    sizes = [s for s, _ in items]
    documents = sorted(d for _, d in items)  # documents are runs of sentences
    groups = pack_sentences(sizes, documents, budget)
    assert [i for g in groups for i in g] == [i for i, s in enumerate(sizes) if s > 0]  # each once, in order
    for g in groups:
        assert len({documents[i] for i in g}) == 1
        assert sum(sizes[i] for i in g) <= budget or len(g) == 1
        assert len(g) == 1 or all(sizes[i] <= budget for i in g)  # an oversized sentence is alone
    for a, b in zip(groups, groups[1:], strict=False):
        if documents[a[0]] == documents[b[0]] and sizes[b[0]] <= budget and sizes[a[-1]] <= budget:
            assert sum(sizes[i] for i in a) + sizes[b[0]] > budget  # greedy: b's first sentence did not fit


def test_document_inputs_pack_in_order_window_long_sentences_and_never_mix_documents(tmp_path, tokenizer):
    sentences = synthetic_sentences(120, seed=6)
    sentences[40] = long_sentence(7)  # longer than the limit: windowed inside its document
    docs = split_documents(sentences, seed=8)
    corpus = load_corpus(str(write_documents(tmp_path / "docs.txt", docs)), ReaderOptions(context="document"))
    labels = LabelSet.from_corpus(corpus)
    counts = check_inputs(build_dataset(corpus, tokenizer, labels, 64), corpus, tokenizer, 64, labels)
    assert counts["windowed"] == 1 and counts["packed"] > 10
    assert len(docs) < counts["inputs"] < len(sentences) // 2
    sentence_mode = build_dataset(corpus, tokenizer, labels, 64, context="sentence")
    assert check_inputs(sentence_mode, corpus, tokenizer, 64, labels, greedy=False)["packed"] == 0
    assert len(sentence_mode) > len(sentences)  # one input per sentence, several for the long one
    # a file without -DOCSTART- is one document: inputs fill up to the limit across the whole file
    flat = load_corpus(str(write_conll(tmp_path / "flat.txt", sentences)), ReaderOptions(context="document"))
    one_doc = check_inputs(build_dataset(flat, tokenizer, None, 64), flat, tokenizer, 64)
    assert one_doc["inputs"] < counts["inputs"]


def test_collate_and_collector_put_predictions_back_in_their_sentences(tmp_path, tokenizer):
    docs = split_documents(synthetic_sentences(60, seed=10), seed=11)
    docs[2].insert(1, long_sentence(12))
    corpus = load_corpus(str(write_documents(tmp_path / "docs.txt", docs)), ReaderOptions(context="document"))
    labels = LabelSet.from_corpus(corpus)
    loader = length_sorted_loader(build_dataset(corpus, tokenizer, labels, 48), 5, tokenizer.pad_token_id)
    collector = PredictionCollector()
    for batch in loader:
        words = batch["word_positions"] >= 0  # (B, W)
        assert torch.equal(batch["word_sentence"] >= 0, words) and torch.equal(batch["word_index"] >= 0, words)
        collector.add(batch, torch.stack([batch["labels"][words], batch["word_index"][words]]))  # (2, N)
    columns = per_sentence(collector.table(), corpus)
    assert [c[0].tolist() for c in columns] == [[labels.to_id[t] for t in s.tags] for s in corpus.sentences]
    assert [c[1].tolist() for c in columns] == [list(range(len(s.words))) for s in corpus.sentences]


def test_collate_fills_word_sentence_for_rows_of_one_sentence():
    rows = [{"input_ids": [2, 10, 11, 3], "word_positions": [1, 2], "labels": [0, 1], "owned": [1, 1],
             "sentence_id": 4, "word_offset": 7},
            {"input_ids": [2, 13, 14, 15, 3], "word_positions": [1, 2, 3], "labels": [0, 0, 1], "owned": [1, 1, 1],
             "sentence_id": 0, "word_offset": 5, "word_sentence": [0, 1, 1], "word_index": [5, 0, 1]}]
    batch = collate(rows, pad_id=0)
    assert batch["word_sentence"].tolist() == [[4, 4, -1], [0, 1, 1]]
    assert batch["word_index"].tolist() == [[7, 8, -1], [5, 0, 1]]


# ----------------------------------------------------------------------------- end to end


def config(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(name, overrides=overrides)


def test_configs_take_the_context():
    assert config("train", ["data=conll2003", "data.context=document"]).data.context == "document"
    assert config("train", ["data=ewt"]).data.context == "sentence"  # the default, inherited from wnut16
    assert config("evaluate", ["model_dir=m", "output_dir=o", "data.context=document"]).data.context == "document"


def test_train_and_evaluate_in_document_mode(tmp_path, monkeypatch):
    root = tmp_path
    packed: list[int] = []  # inputs packed by each build_dataset in document mode

    def counting_pack(sizes: list[int], documents: list[int], budget: int) -> list[list[int]]:
        groups = pack_sentences(sizes, documents, budget)
        packed.append(len(groups))
        return groups

    monkeypatch.setattr(encoding, "pack_sentences", counting_pack)
    test_sentences = synthetic_sentences(37, seed=3)
    test_sentences[20] = long_sentence(13)
    files = {
        "train": write_documents(root / "train.txt", split_documents(synthetic_sentences(200, seed=1), seed=1)),
        "validation": write_documents(root / "dev.txt", split_documents(synthetic_sentences(41, seed=2), seed=2)),
        "test": write_documents(root / "test.txt", split_documents(test_sentences, seed=3), sep=" "),
    }
    data = [f"data.{split}_file={path}" for split, path in files.items()]
    result = train(config("train", [*FAST, *data, "data.context=document", "data.max_length=64",
                                    f"output_dir={root / 'run'}"]))
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    assert metrics["counts"]["test_sentences"] == 37 and metrics["full_depth"]["f1"] > 50, metrics["layers"]

    def run(out: str, *extra: str) -> dict:
        return evaluate(config("evaluate", [f"model_dir={root / 'run' / 'model'}", f"data.test_file={files['test']}",
                                            f"output_dir={root / out}", "batch_size=3", *extra]))

    assert len(packed) == 3  # train, validation and test files were packed
    doc = run("doc", "data.context=document")
    assert len(packed) == 4 and packed[-1] < 37  # evaluation packed the test file too
    assert doc["layers"] == result["layers"]  # the plain loop == the Lightning test loop, both on packed inputs
    assert doc["counts"] == {"sentences": 37, "words": sum(len(s) for s in test_sentences)}
    gold = [[[w, t] for w, t in s] for s in test_sentences]
    predicted = read_predictions(root / "doc" / "predictions.conll")
    assert [[row[:2] for row in s] for s in predicted] == gold  # sentence breaks restored, every word once
    early = run("early", "data.context=document", "exit=token_window", "exit.threshold=0.3", "timing_repeats=1")
    assert [[row[:2] for row in s] for s in read_predictions(root / "early" / "predictions.conll")] == gold
    assert sum(early["exit_histogram"].values()) == doc["counts"]["words"]
    calls = len(packed)
    single = run("single")  # the same model, each sentence alone: the same words, other context
    assert len(packed) == calls
    assert [[row[:2] for row in s] for s in read_predictions(root / "single" / "predictions.conll")] == gold
    assert single["counts"] == doc["counts"]


# ----------------------------------------------------------------------------- CoNLL-2003


def test_conll2003_testb_in_document_mode(tokenizer):
    path = shared("conll2003/eng.testb")
    corpus = load_corpus(str(path), ReaderOptions(context="document"))
    assert len(corpus.sentences) == 3453 and corpus.sentences[-1].document == 230  # 231 documents
    data = build_dataset(corpus, tokenizer, None, 512)
    counts = check_inputs(data, corpus, tokenizer, 512)
    assert counts == {"inputs": 251, "packed": 248, "windowed": 0}
    assert len(build_dataset(corpus, tokenizer, None, 512, context="sentence")) == 3453
