"""Python API: load a trained model directory and tag raw or pre-tokenised sentences, or classify sentences
and sentence pairs.

>>> tagger = Tagger.load("runs/wnut16-minilm-l6/model")
>>> tagger.tag("Empire State Building is in New York")
[[TaggedWord(word='Empire', tag='B-facility', exit_layer=6), ...]]
>>> Classifier.load("runs/mrpc/model").classify([("He said so .", "He told us so .")], exit=PatienceExit(2))
[Classified(label='1', exit_layer=3)]

Both take an exit policy (``exit=``, :mod:`tokexit.exits`) and a token fate (``fate=``, :mod:`tokexit.fates`):
``tagger.tag(text, exit=TokenWindowExit(0.1), fate=Drop())``; ``fate=TokenReduction(keep_ratio=0.5)`` needs a
model trained with ``model=token_reduction`` and runs without an exit policy too. Or a speed profile stored in the
model directory (``tokexit.evaluate ... exit.target_speedup=2 save_profile=true``): ``tagger.tag(text, speed=2)``;
``tagger.profiles`` lists them. ``Tagger.load(dir, quantize="bf16")`` runs the backbone in bfloat16 (fastest on CPUs
with AMX/AVX512-BF16), ``quantize="int8"`` quantizes every linear layer.

Tagging is one pass (no warm-up, no timing, no FLOPs): the path of ``python -m tokexit.tag`` too.
"""

from __future__ import annotations

import copy
import gc
from dataclasses import dataclass
from pathlib import Path

from tokexit.data.classification import encode_examples, sorted_example_loader
from tokexit.data.glue import Example
from tokexit.exits.base import ExitPolicy
from tokexit.exits.none import NoExit
from tokexit.fates.base import TokenFate
from tokexit.fates.copy import HaltAndCopy
from tokexit.inference.classification import ExampleBatches
from tokexit.inference.runs import predict_batches
from tokexit.inference.setting import Setting
from tokexit.inference.tagging import tag_words
from tokexit.io.formats import is_text, split_words
from tokexit.model_io import MIN_MAX_LENGTH, load_classifier, load_tagger, resolve_device, select_profile


def _kind(value) -> str:
    return "None" if value is None else type(value).__name__


def run_setting(method: str, batch_size, exit, fate, speed=None, profiles: dict | None = None,
                directory: str | Path | None = None) -> Setting:
    """The checked run arguments of :meth:`Tagger.tag` and :meth:`Classifier.classify` as a setting: ``exit`` and
    ``fate``, or ``speed``, a profile among ``profiles`` (those of the model ``directory``)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{method}: batch_size must be a whole number >= 1, not {batch_size!r}")
    classifier = method.startswith("Classifier")
    if speed is not None:
        if exit is not None or fate is not None:
            given = " and ".join(name for name, value in (("exit", exit), ("fate", fate)) if value is not None)
            raise ValueError(f"{method}: speed={speed} is a stored exit policy and token fate; give speed or "
                             f"{given}, not both")
        return select_profile(profiles or {}, speed, directory or "<model>",
                              "entropy" if classifier else "token_window")
    if exit is not None and not isinstance(exit, ExitPolicy):
        raise TypeError(f"{method}: exit must be an exit policy from tokexit.exits (e.g. TokenWindowExit(0.1), "
                        f"PatienceExit(2)) or None for the full model, not {_kind(exit)}")
    if exit is not None:
        exit.check_kind("sequence_classifier" if classifier else "token_tagger")
    if fate is not None and not isinstance(fate, TokenFate):
        raise TypeError(f"{method}: fate must be a token fate from tokexit.fates (HaltAndCopy(), Drop(), "
                        f"TokenReduction()) or None for halt-and-copy, not {_kind(fate)}")
    return Setting(exit or NoExit(), fate or HaltAndCopy())


TAG_INPUT = ("Tagger.tag accepts a raw string, a list of raw strings, or a list of pre-tokenised sentences "
             "(each a list of str words)")


def sentence_words(sentences) -> list[list[str]]:
    """The words of :meth:`Tagger.tag`'s input, checked: TypeError/ValueError saying what is accepted."""
    if isinstance(sentences, str):
        sentences = [sentences]
    if not isinstance(sentences, list | tuple):
        raise TypeError(f"{TAG_INPUT}, not {_kind(sentences)}")
    raw = [isinstance(s, str) for s in sentences]
    if any(raw) and not all(raw):
        raise TypeError(f"{TAG_INPUT}, not a list mixing raw strings and word lists")
    words = []
    for i, s in enumerate(sentences):
        if isinstance(s, str):
            if not is_text(s):
                raise ValueError(f"Tagger.tag: text {i} holds a lone surrogate (an unpaired \\ud800-\\udfff "
                                 "code point), which is not text")
            words.append(split_words(s))
            continue
        if not isinstance(s, list | tuple):
            raise TypeError(f"{TAG_INPUT}; sentence {i} is {_kind(s)}")
        for j, w in enumerate(s):
            if not isinstance(w, str):
                raise TypeError(f"{TAG_INPUT}; word {j} of sentence {i} is {_kind(w)} ({w!r}), not str")
            if not w.strip():
                raise ValueError(f"Tagger.tag: word {j} of sentence {i} is {w!r}: a pre-tokenised word must not be "
                                 "empty or blank")
            if not is_text(w):
                raise ValueError(f"Tagger.tag: word {j} of sentence {i} is {w!r}: it holds a lone surrogate (an "
                                 "unpaired \\ud800-\\udfff code point), which is not text")
        words.append(list(s))
    return words


CLASSIFY_INPUT = ("Classifier.classify accepts one text (str), a list of texts, or a list of (text, text) pairs "
                  "for a sentence-pair model")


def classify_examples(texts, pairs: bool | None = None) -> list[Example]:
    """The examples of :meth:`Classifier.classify`'s input, checked: TypeError/ValueError saying what is accepted.
    ``pairs``: the model reads sentence pairs (True), single texts (False), or unknown (None: either)."""
    if isinstance(texts, str) or pairs and isinstance(texts, tuple) and len(texts) == 2 and \
            all(isinstance(t, str) for t in texts):
        texts = [texts]  # one text, or one (text, text) pair for a pair model
    if not isinstance(texts, list | tuple):
        raise TypeError(f"{CLASSIFY_INPUT}, not {_kind(texts)}")
    single = [isinstance(t, str) for t in texts]
    if any(single) and not all(single):
        raise TypeError(f"{CLASSIFY_INPUT}, not a list mixing single texts and pairs")
    examples = []
    for i, t in enumerate(texts):
        pair = t if isinstance(t, list | tuple) else None
        if pair is not None and (len(pair) != 2 or not all(isinstance(x, str) for x in pair)):
            raise TypeError(f"{CLASSIFY_INPUT}; item {i} is a {_kind(t)} of "
                            f"{len(pair)} {'/'.join(sorted({_kind(x) for x in pair})) or 'items'}, not two str")
        if pair is None and not isinstance(t, str):
            raise TypeError(f"{CLASSIFY_INPUT}; item {i} is {_kind(t)}")
        if pairs is not None and (pair is not None) != pairs:
            raise ValueError(f"Classifier.classify: item {i} is {'a pair' if pair is not None else 'a single text'}, "
                             f"but the model was trained on {'text pairs' if pairs else 'single texts'}: give "
                             f"{'(text, text) pairs' if pairs else 'texts'}")
        examples.append(Example(pair[0], pair[1], None, i) if pair is not None else Example(t, None, None, i))
    return examples


def check_max_length(max_length) -> None:
    """``max_length`` (subwords per input) must be a whole number >= :data:`~tokexit.model_io.MIN_MAX_LENGTH`."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < MIN_MAX_LENGTH:
        raise ValueError(f"max_length must be a whole number >= {MIN_MAX_LENGTH} (subwords per input), not "
                         f"{max_length!r}")


@dataclass
class TaggedWord:
    word: str
    tag: str
    exit_layer: int  # 1-based layer whose exit gave the tag


def settle_gc() -> None:
    """Collect garbage, then move every object alive now (the model, torch's and transformers' modules: several
    hundred thousand objects) out of the cyclic garbage collector's reach (``gc.freeze``). Without it, each full
    collection that a long tagging run sets off walks them all, a pause of a noticeable fraction of a second.
    Objects created later are collected as usual; ``gc.unfreeze()`` undoes it."""
    gc.collect()
    gc.freeze()


def quantized(model, quantize: str | None):
    """``model`` with its linear layers quantized by :func:`tokexit.engine.quantize.quantize_model` (in place; a
    ValueError names the schemes it accepts); ``quantize`` None leaves it as it is."""
    if quantize is None:
        return model
    from tokexit.engine.quantize import quantize_model  # imported only when asked for

    return quantize_model(model, quantize)


class Tagger:
    """A trained multi-exit tagger."""

    def __init__(self, encoder, tokenizer, labels, max_length: int = 512, device: str = "cpu",
                 profiles: dict[str, dict] | None = None, directory: str | Path | None = None):
        check_max_length(max_length)
        self.encoder, self.tokenizer, self.labels = encoder.to(device).eval(), tokenizer, labels
        self.max_length, self.device = max_length, device
        self._profiles, self.directory = dict(profiles or {}), directory

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None, quantize: str | None = None) -> Tagger:
        """The tagger in ``directory``; ``device`` None or "auto": a GPU when one is visible; ``quantize``: None
        (fp32), ``"bf16"`` (the backbone in bfloat16) or ``"int8"`` (int8 weights with dynamic activation
        quantization in every linear layer; CPU only) — :func:`tokexit.engine.quantize.quantize_model`."""
        encoder, tokenizer, labels, meta = load_tagger(directory)
        device = resolve_device(device)
        tagger = cls(encoder, tokenizer, labels, meta.get("max_length", 512), device, meta.get("profiles"), directory)
        quantized(tagger.encoder, quantize)  # on its device: int8 refuses anything but the CPU
        settle_gc()
        return tagger

    @property
    def profiles(self) -> dict[str, dict]:
        """The speed profiles stored with the model, by speed (``"2"``: a 2x FLOPs speed-up): each its ``exit``,
        ``fate``, measured ``flops_speedup``/``wall_speedup`` and ``dev_score``
        (:func:`tokexit.model_io.save_profile`)."""
        return copy.deepcopy(self._profiles)

    def setting(self, exit: ExitPolicy | None = None, fate: TokenFate | None = None, speed=None,
                batch_size: int = 32) -> Setting:
        """The setting :meth:`tag` runs for these arguments (checked)."""
        return run_setting("Tagger.tag", batch_size, exit, fate, speed, self._profiles, self.directory)

    def tag(self, sentences: str | list[str] | list[list[str]], batch_size: int = 32,
            exit: ExitPolicy | None = None, fate: TokenFate | None = None, speed: float | None = None,
            ) -> list[list[TaggedWord]]:
        """Tag one raw string, a list of raw strings, or a list of pre-tokenised sentences (lists of words).

        ``exit``: an exit policy (e.g. ``TokenWindowExit(0.1, window=5)``); None runs the full model.
        ``fate``: what stopping means for later layers (``Drop()``, ``TokenReduction()``); None: halt-and-copy.
        ``speed``: a speed profile stored with the model (:attr:`profiles`), instead of ``exit`` and ``fate``.
        Every input word gets a tag and its exit layer, however long the sentence; an empty sentence gives [].
        Tags are in the scheme the model was trained on (an IOB1-trained model tags in IOB1). Any other input is
        a TypeError saying what is accepted.
        """
        words = sentence_words(sentences)
        setting = self.setting(exit, fate, speed, batch_size)
        return [[TaggedWord(word, tag, e) for word, tag, e in zip(w, tags, layers, strict=True)]
                for w, (tags, layers) in zip(words, self.predict(words, setting, batch_size), strict=True)]

    def predict(self, words: list[list[str]], setting: Setting, batch_size: int = 32,
                ) -> list[tuple[list[str], list[int]]]:
        """The one-pass path behind :meth:`tag` and ``tokexit.tag``: sentences of words (not checked) -> per
        sentence its tags and each word's exit layer (:func:`~tokexit.inference.tagging.tag_words`)."""
        return tag_words(self.encoder, self.tokenizer, self.labels, words, setting, batch_size=batch_size,
                         max_length=self.max_length, device=self.device)


@dataclass
class Classified:
    label: str | float  # class name, or the value for regression
    exit_layer: int  # 1-based layer whose exit decided


class Classifier:
    """A trained multi-exit sentence(-pair) classifier."""

    def __init__(self, model, tokenizer, task, max_length: int = 512, device: str = "cpu",
                 profiles: dict[str, dict] | None = None, directory: str | Path | None = None):
        check_max_length(max_length)
        self.model, self.tokenizer, self.task = model.to(device).eval(), tokenizer, task
        self.max_length, self.device = max_length, device
        self._profiles, self.directory = dict(profiles or {}), directory

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None, quantize: str | None = None) -> Classifier:
        """The classifier in ``directory``; ``device`` None or "auto": a GPU when one is visible;
        ``quantize``: None (fp32), ``"bf16"`` or ``"int8"``, as in :meth:`Tagger.load`."""
        model, tokenizer, task, meta = load_classifier(directory)
        device = resolve_device(device)
        classifier = cls(model, tokenizer, task, meta.get("max_length", 512), device, meta.get("profiles"), directory)
        quantized(classifier.model, quantize)
        settle_gc()
        return classifier

    @property
    def profiles(self) -> dict[str, dict]:
        """The speed profiles stored with the model, by speed (see :attr:`Tagger.profiles`)."""
        return copy.deepcopy(self._profiles)

    def classify(self, texts: str | list[str] | list[tuple[str, str]], batch_size: int = 32,
                 exit: ExitPolicy | None = None, fate: TokenFate | None = None, speed: float | None = None,
                 ) -> list[Classified]:
        """Classify one text, a list of texts, or a list of (text, text) pairs, in input order.

        ``exit``: e.g. ``PatienceExit(2)`` or ``EntropyExit(0.2)``; None runs the full model. ``fate``: e.g.
        ``TokenReduction(keep_ratio=0.5)``; None: halt-and-copy. ``speed``: a speed profile stored with the model
        (:attr:`profiles`), instead of ``exit`` and ``fate``. One pass, no timing. Any other input is a TypeError
        saying what is accepted.
        """
        columns = self.task.columns
        examples = classify_examples(texts, None if columns is None else columns.get("text_b") is not None)
        setting = run_setting("Classifier.classify", batch_size, exit, fate, speed, self._profiles, self.directory)
        if not examples:
            return []
        rows = encode_examples(examples, self.tokenizer, None, self.max_length)
        loader = sorted_example_loader(rows, batch_size, self.tokenizer.pad_token_id)
        batches = ExampleBatches(len(rows), self.task.regression)
        table = predict_batches(self.model, loader, batches, setting, self.device)  # (2, N)
        values = table[0].tolist()
        labels = values if self.task.regression else [self.task.labels[int(v)] for v in values]
        return [Classified(label, int(e)) for label, e in zip(labels, table[1].tolist(), strict=True)]
