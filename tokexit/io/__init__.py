"""Corpora in and out of ``tokexit.tag``: the input and output formats (:mod:`~.formats`: CoNLL columns, plain
text, JSONL), the progress record that lets a run resume (:mod:`~.progress`) and the streaming, chunked, sharded
tagging of a whole file (:mod:`~.streaming`). Torch-free except through the ``tag`` function it is given."""
