"""Several registered sentiment models merged into one ONNX graph that averages their probabilities.

Why one graph rather than scoring the members side by side: the registry, the
model slot, the challenger and ``lepton evaluate sentiment --version N`` all
handle one ``model.onnx`` per version, so an ensemble needs no serving code of
its own. Every member must tokenize identically (the same text encoder in its
ONNX metadata), since the merged graph is fed one token matrix.

The weights are fixed by the caller (equal by default) and normalized to sum
to 1; nothing is fitted here. Optional per-class log-space offsets ``o`` (a prior
correction chosen elsewhere, e.g. on validation, round 7) turn the mix ``p`` into
``p * exp(o)`` renormalized: for one model, the same as adding ``o`` to its
logits; for an ensemble, a shift of the mean's log. With offsets a single
member is allowed (the model itself, shifted).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.meta import ModelMeta
from models.registry import META_FILE, MODEL_FILE, ModelRegistry

from . import LABELS
from .export import ENCODER_KEY, INPUT, LABELS_KEY, OUTPUT


class EnsembleError(ValueError):
    """The members cannot be merged (different tokenizers, inputs or outputs)."""


def member_dir(registry: ModelRegistry, spec: str | int | Path) -> Path:
    """A member given as a version of this registry (``3``) or any registered version's directory."""
    if isinstance(spec, int) or str(spec).isdigit():
        return registry.model_path("sentiment", int(spec)).parent
    path = Path(spec)
    if not (path / MODEL_FILE).is_file() or not (path / META_FILE).is_file():
        raise EnsembleError(f"{path}: not a registered model version (needs {MODEL_FILE} and {META_FILE}); "
                            "give a version number or a directory like $LEPTON_HOME/models/sentiment/v2")
    return path


def apply_offsets(p: np.ndarray, offsets: Sequence[float] | None) -> np.ndarray:
    """``p * exp(offsets)`` renormalized per row (what :func:`merge` computes with ``offsets``)."""
    if offsets is None:
        return p
    q = np.asarray(p, dtype=np.float64) * np.exp(np.asarray(offsets, dtype=np.float64))
    return (q / q.sum(1, keepdims=True)).astype(np.float32)


def merge(members: Sequence[bytes], weights: Sequence[float] | None = None,
          offsets: Sequence[float] | None = None) -> bytes:
    """ONNX bytes whose output is ``sum_i w_i * member_i(tokens)``, weights normalized to sum to 1,
    then (with ``offsets``) multiplied by ``exp(offsets)`` per class and renormalized.

    Each member's nodes, edges and initializers get a prefix ``m<i>_``; the shared
    input feeds each through an Identity. Encoder and labels metadata come from
    the members (which must agree on them).
    """
    import onnx
    from onnx import compose, helper, numpy_helper

    if len(members) < 2 and offsets is None:
        raise EnsembleError("an ensemble needs at least two members (or offsets for one)")
    if offsets is not None and np.shape(offsets) != (len(LABELS),):
        raise EnsembleError(f"offsets {list(offsets)}: need one per class {list(LABELS)}")
    w = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(members),) or (w < 0).any() or w.sum() <= 0:
        raise EnsembleError(f"weights {list(w)}: need one non-negative weight per member, not all zero")
    w = w / w.sum()
    protos = [onnx.load_from_string(b) for b in members]
    props = [{p.key: p.value for p in m.metadata_props} for m in protos]
    if any(p.get(ENCODER_KEY) is None for p in props):
        raise EnsembleError(f"every member needs its text encoder in the ONNX metadata ({ENCODER_KEY})")
    if any(p[ENCODER_KEY] != props[0][ENCODER_KEY] for p in props):
        raise EnsembleError("the members tokenize differently (different text encoders): "
                            "only models with the same tokenizer can share one input")
    opsets = {(o.domain, o.version) for m in protos for o in m.opset_import}
    if len({d for d, _ in opsets}) != len(opsets):
        raise EnsembleError(f"the members use different opset versions {sorted(opsets)}: export them alike")
    nodes, inits, parts = [], [], []
    for i, proto in enumerate(protos):
        if [x.name for x in proto.graph.input] != [INPUT] or [x.name for x in proto.graph.output] != [OUTPUT]:
            raise EnsembleError(f"member {i}: expected one input {INPUT!r} and one output {OUTPUT!r}")
        prefixed = compose.add_prefix(proto, f"m{i}_")
        nodes.append(helper.make_node("Identity", [INPUT], [f"m{i}_{INPUT}"], name=f"m{i}_feed"))
        nodes += list(prefixed.graph.node)
        inits += list(prefixed.graph.initializer)
        inits.append(numpy_helper.from_array(np.asarray([w[i]], dtype=np.float32), f"ensemble_w{i}"))
        nodes.append(helper.make_node("Mul", [f"m{i}_{OUTPUT}", f"ensemble_w{i}"], [f"ensemble_p{i}"],
                                      name=f"ensemble_weigh{i}"))
        parts.append(f"ensemble_p{i}")
    mix = OUTPUT if offsets is None else "ensemble_mix"
    nodes.append(helper.make_node("Sum", parts, [mix], name="ensemble_sum"))
    if offsets is not None:
        # q = p * exp(o); q / rowsum(q), the row sum as q @ ones(k, k) (no opset-dependent ReduceSum)
        k = len(LABELS)
        inits.append(numpy_helper.from_array(np.exp(np.asarray(offsets, dtype=np.float64)).astype(np.float32)
                                             .reshape(1, k), "ensemble_factors"))
        inits.append(numpy_helper.from_array(np.ones((k, k), dtype=np.float32), "ensemble_ones"))
        nodes.append(helper.make_node("Mul", [mix, "ensemble_factors"], ["ensemble_q"], name="ensemble_shift"))
        nodes.append(helper.make_node("MatMul", ["ensemble_q", "ensemble_ones"], ["ensemble_rowsum"],
                                      name="ensemble_rowsum"))
        nodes.append(helper.make_node("Div", ["ensemble_q", "ensemble_rowsum"], [OUTPUT], name="ensemble_norm"))
    graph = helper.make_graph(nodes, "sentiment_ensemble", [protos[0].graph.input[0]],
                              [protos[0].graph.output[0]], initializer=inits)
    model = helper.make_model(graph, opset_imports=list(protos[0].opset_import),
                              ir_version=max(m.ir_version for m in protos))
    helper.set_model_props(model, {ENCODER_KEY: props[0][ENCODER_KEY],
                                   LABELS_KEY: props[0].get(LABELS_KEY, json.dumps(list(LABELS)))})
    onnx.checker.check_model(model)
    return model.SerializeToString()


def register_ensemble(settings: Any, members: Sequence[str | int | Path], weights: Sequence[float] | None = None,
                      *, promote: bool = False, note: str = "", offsets: Sequence[float] | None = None) -> ModelMeta:
    """Merge the members (versions of this registry or version directories), register the result.

    The ensemble's kind is its members' (they share a tokenizer, so they are of one kind).
    """
    registry = ModelRegistry(settings.models_dir)
    dirs = [member_dir(registry, m) for m in members]
    metas = [ModelMeta.from_json((d / META_FILE).read_bytes()) for d in dirs]
    kinds = {str(m.extra.get("kind", "fast")) for m in metas}
    if len(kinds) != 1:
        raise EnsembleError(f"members of different kinds {sorted(kinds)} do not share a tokenizer")
    onnx_bytes = merge([(d / MODEL_FILE).read_bytes() for d in dirs], weights, offsets)
    w = np.ones(len(dirs)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = (w / w.sum()).round(6).tolist()
    training = {"recipe": "models.sentiment.ensemble", "kind": kinds.pop(), "weights": w, "note": note,
                "offsets": None if offsets is None else [float(o) for o in offsets],
                "members": [{"path": str(d.resolve()), "version": m.version, "metrics": m.metrics,
                             "training": m.training} for d, m in zip(dirs, metas)],
                "train_part_only": all(m.training.get("train_part_only") for m in metas),
                "test_where": metas[0].training.get("test_where")}
    meta = ModelMeta(pipeline="sentiment", features=[INPUT], input_name=INPUT, output_name=OUTPUT, threshold=0.5,
                     metrics={}, training=training,
                     extra={**metas[0].extra, "kind": training["kind"], "online_checkpoint": None,
                            "ensemble_of": [m.version for m in metas]})
    return registry.register("sentiment", onnx_bytes, meta, promote=promote)


def member_paths(meta: ModelMeta) -> list[tuple[Path, float]] | None:
    """(directory, weight) of an ensemble's members while they are all still on disk, else None."""
    members = meta.training.get("members") if meta.training.get("recipe") == "models.sentiment.ensemble" else None
    if not members:
        return None
    paths = [Path(m["path"]) for m in members]
    if not all((p / MODEL_FILE).is_file() for p in paths):
        return None
    return list(zip(paths, meta.training["weights"]))
