"""The fast recipe with logit offsets: chosen on validation rows the validation model never learned from,
then folded into the refitted model's bias (serving unchanged), on tiny stand-ins for the two data sets."""

from __future__ import annotations

import numpy as np
import pytest

from connectors.generators import ChatGenerator
from models.onnx_runtime import OnnxScorer
from models.registry import ModelRegistry
from models.sentiment.recipes import choose_fast_offsets, fast
from models.sentiment.scorer import TextScorer
from models.sentiment.train import train_sentiment
from streams.settings import Settings


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An 'airline' file (split by time) and a 'SemEval' file (split by source), both synthetic chat."""
    root = tmp_path_factory.mktemp("data")
    airline = ChatGenerator(seed=11, start_ts=1_700_000_000.0).batch(600)
    semeval = ChatGenerator(seed=12, start_ts=1_700_000_000.0).batch(600).drop(columns=["ts"])
    semeval["source"] = np.array(["twitter-2013train", "twitter-2016dev", "twitter-2016devtest",
                                  "twitter-2016test"])[np.arange(600) % 4]
    a, s = root / "airline.csv", root / "semeval.csv"
    airline.to_csv(a, index=False)
    semeval.to_csv(s, index=False)
    return a, s


def test_fast_offsets_are_chosen_on_validation_and_folded_into_the_bias(files, tmp_path) -> None:
    a, s = files
    settings = Settings(home=tmp_path / "home")
    offsets, notes = choose_fast_offsets(settings, a, s, teacher=None, log=lambda line: None)
    assert offsets[0] == 0 and np.all(np.abs(offsets) <= 1.0)
    assert notes["offsets_validation"]["with"]["score"] >= notes["offsets_validation"]["without"]["score"]

    shifted = fast(settings, a, s, teacher=None, progress=False, offsets=True, log=lambda line: None)
    assert shifted.training["logit_offsets"] == pytest.approx(offsets.tolist())


def test_offsets_folded_into_the_bias_shift_every_log_odds_by_them(files, tmp_path) -> None:
    a, s = files
    settings = Settings(home=tmp_path / "home")
    common = {"test_where": "source=twitter-2016test", "train_part_only": True, "epochs": 2}
    plain = train_sentiment(settings, [a, s], **common)
    given = [0.0, 0.7, -0.4]
    shifted = train_sentiment(settings, [a, s], logit_offsets=given, **common)
    assert plain.training["logit_offsets"] is None and shifted.training["logit_offsets"] == given
    registry = ModelRegistry(settings.models_dir)
    texts = ["thanks so much, great help", "still waiting for my refund", "where is the gate", "ok"]
    p0, p1 = (TextScorer(OnnxScorer.from_registry(registry, "sentiment", m.version, threads=1)).predict(texts)
              for m in (plain, shifted))
    # the same deterministic refit, only the bias moved: log-odds against 'negative' shift by the offsets
    np.testing.assert_allclose(np.log(p1 / p1[:, :1]) - np.log(p0 / p0[:, :1]),
                               np.broadcast_to(given, p0.shape), atol=1e-4)


def test_fast_validation_scores_the_held_out_parts_with_and_without_prior_adaptation(files, tmp_path) -> None:
    from models.sentiment.prior import PRIOR_FILE
    from models.sentiment.recipes import fast_validation, validation_parts

    a, s = files
    lines: list[str] = []
    out = fast_validation(a, s, tmp_path / "home", subwords=True, log=lines.append)
    assert set(out) == {"off", "on"}
    for way in out.values():
        assert way["score"] == pytest.approx(way["airline_accuracy"] + way["airline_macro_f1"]
                                             + way["semeval_macro_recall"], abs=1e-3)
    assert out["off"]["airline_accuracy"] > 0.5  # synthetic chat is easy; the model was fitted on the fit rows
    assert (tmp_path / "home" / "models" / "sentiment" / "v1" / PRIOR_FILE).is_file()
    parts = validation_parts(a, s)
    assert len(parts["semeval_val"]) == 300 and any("estimated" in line for line in lines)


def test_fast_recipe_registers_an_ngram_model_by_default(files, tmp_path) -> None:
    a, s = files
    settings = Settings(home=tmp_path / "home")
    plain = fast(settings, a, s, teacher=None, progress=False, log=lambda line: None, subwords=False)
    grams = fast(settings, a, s, teacher=None, progress=False, log=lambda line: None)
    assert plain.training["subwords"] is False and grams.training["subwords"] is True
    registry = ModelRegistry(settings.models_dir)
    served = [TextScorer(OnnxScorer.from_registry(registry, "sentiment", m.version, threads=1)) for m in (plain, grams)]
    assert served[0].encoder.subwords is None and served[1].encoder.subwords["min_n"] == 3
    assert (served[1].encoder.encode(["zzqxv bad"]) >= served[1].encoder.n_ids).any()


def test_distil_validation_compares_the_same_fit_with_and_without_the_teacher(files, tmp_path) -> None:
    from models.sentiment.recipes import DISTIL_MARGIN, choose_fast_offsets, distil_validation
    from models.sentiment.train import texts_digest

    a, s = files
    settings = Settings(home=tmp_path / "home")
    teacher = fast(settings, a, s, teacher=None, progress=False, log=lambda line: None, subwords=False)
    lines: list[str] = []
    out = distil_validation(settings, a, s, teacher.version, subwords=True, log=lines.append)
    # the undistilled arm is the recipe's own validation fit (same rows, order and seed)
    _, notes = choose_fast_offsets(settings, a, s, teacher=None, log=lambda line: None, subwords=True)
    assert out["undistilled"] == notes["offsets_validation"]["without"]
    assert out["distilled"] != out["undistilled"]  # the teacher's targets changed the fit
    assert out["gain"] == pytest.approx(out["distilled"]["score"] - out["undistilled"]["score"], abs=1e-4)
    assert out["distil"] == (out["gain"] > DISTIL_MARGIN)
    # the teacher's scores of every training row are cached beside it, for the refit that follows
    cached = list((tmp_path / "home" / "models" / "sentiment" / f"v{teacher.version}").glob("teacher-*.npy"))
    assert len(cached) == 1 and len(lines) == 3
    from models.sentiment.train import load_training

    frame, _ = load_training([a, s], test_where="source=twitter-2016test", train_part_only=True)
    assert cached[0].name == f"teacher-{texts_digest(frame['text'].tolist())}.npy"


def test_the_fast_recipe_distils_from_the_newest_accurate_model_by_default(files, tmp_path, monkeypatch,
                                                                           capsys) -> None:
    """Round 6, rule 2: distillation won on validation, so ``recipes fast`` without ``--teacher`` takes the
    newest registered accurate model; with none registered it refuses rather than silently not distilling."""
    import sys

    from models.sentiment import recipes

    a, s = files
    settings = Settings(home=tmp_path / "home")
    monkeypatch.setattr("streams.settings.get_settings", lambda: settings)
    cli = ["recipes", "fast", "--airline", str(a), "--semeval", str(s)]
    assert recipes.default_teacher(settings) is None  # nothing registered
    plain = fast(settings, a, s, teacher=None, progress=False, log=lambda line: None, subwords=False)
    assert recipes.default_teacher(settings) is None  # a fast model teaches nobody
    monkeypatch.setattr(sys, "argv", cli)
    with pytest.raises(SystemExit):
        recipes.main()
    assert "--no-teacher" in capsys.readouterr().err

    registry = ModelRegistry(settings.models_dir)
    onnx = registry.model_path("sentiment", plain.version).read_bytes()
    as_accurate = plain.model_copy(update={"extra": {**plain.extra, "kind": "accurate"}})
    accurate = [registry.register("sentiment", onnx, as_accurate, promote=False) for _ in range(2)]
    registry.register("sentiment", onnx, plain, promote=False)  # a newer fast model does not count
    assert recipes.default_teacher(settings) == accurate[-1].version

    given: list[int | None] = []
    monkeypatch.setattr(recipes, "fast", lambda *args, **kw: given.append(args[3]) or plain)
    for argv, teacher in ((cli, accurate[-1].version), ([*cli, "--teacher", "2"], 2), ([*cli, "--no-teacher"], None)):
        monkeypatch.setattr(sys, "argv", argv)
        recipes.main()
        assert given[-1] == teacher
    monkeypatch.setattr(sys, "argv", [*cli, "--teacher", "2", "--no-teacher"])
    with pytest.raises(SystemExit):
        recipes.main()


def test_round7_judges_six_candidates_on_the_twins_and_keeps_the_cheapest_near_the_best(files, tmp_path) -> None:
    from models.sentiment.recipes import CHOICE_MARGIN, choose_offsets, round7_validation, validation_parts

    a, s = files
    settings = _two_versions(a, s, tmp_path)
    out = round7_validation(settings, a, s, 1, 2, log=lambda line: None)
    table = out["candidates"]
    assert list(table) == list("ABCDEF") and table["A"]["eligible"] and table["A"]["offsets"] is None
    assert all(table[k]["offsets"][0] == 0 for k in "BDF")
    assert all(v["semeval_macro_recall"] >= out["semeval_floor"] for v in table.values() if v["eligible"])
    order = list(table)
    w = out["winner"]
    assert table[w]["round7_score"] >= out["best"] - CHOICE_MARGIN
    assert all(not table[k]["eligible"] or table[k]["round7_score"] < out["best"] - CHOICE_MARGIN
               for k in order[:order.index(w)])
    only_a_b = round7_validation(settings, a, s, 1, None, log=lambda line: None)
    assert list(only_a_b["candidates"]) == ["A", "B"]
    # a shift that no objective allows is never chosen: no shift is the fallback
    parts = validation_parts(a, s)
    p = np.full((len(parts["airline_val"]), 3), 1 / 3)
    q = np.full((len(parts["semeval_val"]), 3), 1 / 3)
    assert choose_offsets(parts, p, q, objective=lambda figures: None).tolist() == [0.0, 0.0, 0.0]


def test_weighted_metrics_give_the_validation_part_another_class_mix() -> None:
    """Round 8, rule 2: rows weighted by reference share / validation share of their class."""
    from models.sentiment.quality import classification_metrics
    from models.sentiment.recipes import mix_weights

    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    p = np.array([0, 0, 0, 0, 0, 1, 0, 1, 2, 0])
    plain = classification_metrics(y, p)
    assert classification_metrics(y, p, weights=np.ones(len(y)))["macro_f1"] == pytest.approx(plain["macro_f1"])
    ref = np.array([0, 1, 2] * 5)  # a balanced reference mix
    w = mix_weights(y, ref)
    assert np.bincount(y, weights=w, minlength=3) / w.sum() == pytest.approx([1 / 3] * 3)
    weighted = classification_metrics(y, p, weights=w)
    # with a balanced mix, weighted accuracy is the mean recall; per-class recalls do not move
    assert weighted["accuracy"] == pytest.approx(plain["macro_recall"])
    assert weighted["macro_recall"] == pytest.approx(plain["macro_recall"])
    assert weighted["n"] == len(y) and weighted["confusion"][0][0] == pytest.approx(5 * w[0])


def test_round1_passes_its_class_weights_to_every_run_and_can_stop_after_run_1(files, tmp_path, monkeypatch) -> None:
    from models.sentiment import recipes

    a, s = files
    given: list = []
    monkeypatch.setattr("models.sentiment.accurate.train_accurate",
                        lambda texts, y, cfg, start=None, progress=None, row_weights=None:
                        given.append(cfg) or (None, _Stub()))
    monkeypatch.setattr("models.sentiment.train.register_model",
                        lambda settings, kind, encoder, model, metrics, training, promote, check_texts:
                        type("M", (), {"version": len(given), "training": training})())
    settings = Settings(home=tmp_path / "home")
    meta = recipes.round1(settings, a, s, hold_out=True, class_weight_power=1.0, runs=1, log=lambda line: None)
    assert [c.class_weight_power for c in given] == [1.0] and meta.training["runs"][0]["class_weight_power"] == 1.0
    recipes.round1(settings, a, s, log=lambda line: None)
    assert [c.class_weight_power for c in given[1:]] == [0.5, 0.5]  # round 1's recipe unchanged by default
    with pytest.raises(ValueError):
        recipes.round1(settings, a, s, runs=3, log=lambda line: None)


def test_source_row_weights_balance_the_airline_rows_alone_and_keep_their_total() -> None:
    """Round 9: the airline rows get their own mix's class weights, the others round 1's."""
    from models.sentiment.fast import class_weights
    from models.sentiment.recipes import source_row_weights

    y_air = np.array([0] * 12 + [1] * 4 + [2] * 4)  # 60 / 20 / 20 %, like the airline part
    y_sem = np.array([0] * 2 + [1] * 9 + [2] * 9)  # neutral-heavy, like SemEval
    y = np.concatenate([y_air, y_sem])
    w = source_row_weights(y, len(y_air), 0.5, 1.0)
    per_class = np.bincount(y_air, weights=w[:len(y_air)], minlength=3)
    assert per_class == pytest.approx([len(y_air) / 3] * 3)  # balanced within the airline rows
    assert w[:len(y_air)].sum() == pytest.approx(len(y_air))  # the airline part's weight in the mix is kept
    assert w[len(y_air):] == pytest.approx((class_weights(y) ** 0.5)[y_sem])  # round 1's
    half = source_row_weights(y, len(y_air), 0.5, 0.5)
    assert half[:len(y_air)] == pytest.approx((class_weights(y_air) ** 0.5)[y_air])


def test_round1_passes_per_row_weights_only_when_asked(files, tmp_path, monkeypatch) -> None:
    from models.sentiment import recipes

    a, s = files
    given: list = []
    monkeypatch.setattr("models.sentiment.accurate.train_accurate",
                        lambda texts, y, cfg, start=None, progress=None, row_weights=None:
                        given.append((y, row_weights)) or (None, _Stub()))
    monkeypatch.setattr("models.sentiment.train.register_model",
                        lambda settings, kind, encoder, model, metrics, training, promote, check_texts:
                        type("M", (), {"version": len(given), "training": training})())
    settings = Settings(home=tmp_path / "home")
    meta = recipes.round1(settings, a, s, hold_out=True, runs=1, airline_class_weight_power=1.0,
                          log=lambda line: None)
    (y, w), = given
    assert w is not None and len(w) == len(y) and meta.training["airline_class_weight_power"] == 1.0
    n_air = len(recipes.validation_parts(a, s)["airline_fit"])
    assert w == pytest.approx(recipes.source_row_weights(y, n_air, 0.5, 1.0))
    meta = recipes.round1(settings, a, s, hold_out=True, runs=1, log=lambda line: None)
    assert given[1][1] is None and meta.training["airline_class_weight_power"] is None  # round 1 unchanged


def test_round1_draws_the_given_number_of_semeval_tweets_per_run(files, tmp_path, monkeypatch) -> None:
    """Round 10: fewer SemEval tweets per run, every airline row kept: a larger airline share."""
    from models.sentiment import recipes

    a, s = files
    given: list = []
    monkeypatch.setattr("models.sentiment.accurate.train_accurate",
                        lambda texts, y, cfg, start=None, progress=None, row_weights=None:
                        given.append(list(texts)) or (None, _Stub()))
    monkeypatch.setattr("models.sentiment.train.register_model",
                        lambda settings, kind, encoder, model, metrics, training, promote, check_texts:
                        type("M", (), {"version": len(given), "training": training})())
    settings = Settings(home=tmp_path / "home")
    parts = recipes.validation_parts(a, s)
    n_air, n_sem = len(parts["airline_fit"]), len(parts["semeval_fit"])
    meta = recipes.round1(settings, a, s, hold_out=True, runs=1, semeval_per_run=100, log=lambda line: None)
    assert len(given[0]) == n_air + 100 and meta.training["semeval_per_epoch"] == 100
    assert given[0][:n_air] == parts["airline_fit"]["text"].tolist()  # every airline row, first
    assert set(given[0][n_air:]) <= set(parts["semeval_fit"]["text"])
    meta = recipes.round1(settings, a, s, hold_out=True, runs=1, log=lambda line: None)  # round 1 unchanged
    assert len(given[1]) == n_air + min(recipes.ROUND1_SEMEVAL_PER_RUN, n_sem)
    assert meta.training["semeval_per_epoch"] == recipes.ROUND1_SEMEVAL_PER_RUN
    with pytest.raises(ValueError):
        recipes.round1(settings, a, s, runs=1, semeval_per_run=0, log=lambda line: None)
    meta = recipes.round1(settings, a, s, hold_out=True, runs=1, airline_repeats=2, log=lambda line: None)
    air = parts["airline_fit"]["text"].tolist()
    assert given[2][:2 * n_air] == air + air and len(given[2]) == len(given[1]) + n_air  # airline rows twice
    assert meta.training["airline_repeats"] == 2



def test_round1_seed_is_run_1s_and_the_default_is_round_1s(files, tmp_path, monkeypatch) -> None:
    """Round 11: --seed N changes run 1's seed only (recorded in the meta, checked by --start-from)."""
    from dataclasses import replace

    from models.sentiment import recipes
    from models.sentiment.accurate import AccurateConfig

    a, s = files
    given = _record_round1_runs(monkeypatch)
    settings = Settings(home=tmp_path / "home")
    recipes.round1(settings, a, s, log=lambda line: None)
    assert [c.seed for c, _ in given] == [0, 1]  # round 1's seeds by default, unchanged
    assert given[0][0] == AccurateConfig(epochs=1, lr=8e-5, head_lr=2e-3, freeze_layers=2, seed=0)
    meta = recipes.round1(settings, a, s, runs=1, seed=2, log=lambda line: None)
    assert given[2][0].seed == 2 and meta.training["runs"][0]["seed"] == 2
    assert given[2][1] == given[0][1]  # the same rows in the same order: only training randomness moves
    assert replace(given[2][0], seed=0) == given[0][0]  # and nothing else in run 1's config
    run1 = meta.training
    monkeypatch.setattr("models.registry.ModelRegistry", lambda root: type("R", (), {
        "get": lambda self, pipeline, version: type("M", (), {"training": run1})(),
        "model_path": lambda self, pipeline, version: tmp_path / "model.onnx"})())
    monkeypatch.setattr("models.sentiment.accurate.classifier_from_onnx", lambda path, directory=None: _Stub())
    with pytest.raises(ValueError):
        recipes.round1(settings, a, s, start_version=3, log=lambda line: None)  # run 1 had seed 2, not 0
    recipes.round1(settings, a, s, start_version=3, seed=2, log=lambda line: None)
    assert given[3][0].seed == 1  # run 2 keeps round 1's seed


def test_round1_hold_out_twin_keeps_the_encoder_its_frozen_layers_and_bf16(files, tmp_path, monkeypatch) -> None:
    """Round 13: an mpnet twin (``--hold-out --encoder DIR --freeze-layers N --bf16``) trains on the fit rows
    with the encoder settings given, and records them, as the full build does."""
    from models.sentiment import recipes

    a, s = files
    given = _record_round1_runs(monkeypatch)
    settings = Settings(home=tmp_path / "home")
    parts = recipes.validation_parts(a, s)
    for frozen in (8, 4):
        meta = recipes.round1(settings, a, s, hold_out=True, runs=1, seed=0, encoder="/enc/mpnet",
                              freeze_layers=frozen, bf16=True, log=lambda line: None)
        cfg, texts = given[-1]
        assert (cfg.encoder, cfg.freeze_layers, cfg.bf16, cfg.seed) == ("/enc/mpnet", frozen, True, 0)
        assert meta.training["hold_out"] and len(meta.training["runs"]) == 1
        assert {k: meta.training["runs"][0][k] for k in ("encoder", "freeze_layers", "bf16")} == \
            {"encoder": "/enc/mpnet", "freeze_layers": frozen, "bf16": True}
        n_air = len(parts["airline_fit"])
        assert texts[:n_air] == parts["airline_fit"]["text"].tolist()  # fit rows only: no validation row
        assert set(texts[n_air:]) <= set(parts["semeval_fit"]["text"])
    assert given[0][1] == given[1][1]  # A's and B's twins see the same rows in the same order


def _record_round1_runs(monkeypatch) -> list:
    """round1 without training: each run's (config, texts) is recorded, its registration faked."""
    given: list = []
    monkeypatch.setattr("models.sentiment.accurate.train_accurate",
                        lambda texts, y, cfg, start=None, progress=None, row_weights=None:
                        given.append((cfg, list(texts))) or (None, _Stub()))
    monkeypatch.setattr("models.sentiment.train.register_model",
                        lambda settings, kind, encoder, model, metrics, training, promote, check_texts:
                        type("M", (), {"version": len(given), "training": training})())
    return given


class _Stub:
    def train(self):
        return self


def test_round8_judges_a_b_and_their_average_on_the_reweighted_part(files, tmp_path) -> None:
    from models.sentiment.recipes import CHOICE_MARGIN, round8_validation

    a, s = files
    settings = _two_versions(a, s, tmp_path)
    out = round8_validation(settings, a, s, 1, 2, log=lambda line: None)
    table = out["candidates"]
    assert list(table) == ["A", "B", "C"] and table["A"]["eligible"]
    assert out["semeval_floor"] == pytest.approx(table["A"]["semeval_macro_recall"] - 0.01, abs=1e-4)
    for row in table.values():
        assert row["round8_score"] == pytest.approx(row["airline_accuracy_weighted"] + row["airline_macro_f1_weighted"],
                                                    abs=2e-4)
        assert row["eligible"] == (row["semeval_macro_recall"] >= out["semeval_floor"])
    w, order = out["winner"], list(table)
    assert table[w]["round8_score"] >= out["best"] - CHOICE_MARGIN
    assert all(not table[k]["eligible"] or table[k]["round8_score"] < out["best"] - CHOICE_MARGIN
               for k in order[:order.index(w)])
    assert sum(out["mix"]) == pytest.approx(1, abs=1e-3)


def _two_versions(a, s, tmp_path) -> Settings:
    """Two fast models (v1: one epoch, v2: three) on both files' training parts: stand-ins for twins."""
    settings = Settings(home=tmp_path / "home")
    common = {"test_where": "source=twitter-2016test", "train_part_only": True}
    train_sentiment(settings, [a, s], epochs=1, **common)
    train_sentiment(settings, [a, s], epochs=3, **common)
    return settings
