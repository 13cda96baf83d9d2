"""Chat sentiment: text handling, the fast and accurate classifiers, online learning, evaluation.

Three classes, always in this order (the columns of every probability matrix):

>>> LABELS
('negative', 'neutral', 'positive')

Modules: :mod:`.text` (normalization and tokens, shared by training and
serving), :mod:`.encoder` (word and character n-gram ids of the fast model), :mod:`.fast` (the
fast torch model), :mod:`.accurate` (MiniLM with a classification head),
:mod:`.export` (ONNX export with the tokenizer inside), :mod:`.scorer` (texts
to probabilities through ONNX), :mod:`.online` (the River learner and its
prequential quality), :mod:`.store` (texts kept for corrections), :mod:`.mood`
(per-channel mood and escalation), :mod:`.prior` (optional unsupervised class-prior
adaptation on the stream), :mod:`.data` (labelled files and splits),
:mod:`.quality` (accuracy, macro-F1, macro-recall), :mod:`.report`,
:mod:`.evaluate` and :mod:`.train`.
"""

LABELS = ("negative", "neutral", "positive")
