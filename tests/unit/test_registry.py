"""The registry: versions, champion pointer, rollback, and writes a poller can trust."""

from __future__ import annotations

import doctest
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import ValidationError

import models.meta
import models.registry
from models.meta import ModelMeta
from models.registry import ModelRegistry, RegistryError


def meta(pipeline: str = "fraud", **kw) -> ModelMeta:
    return ModelMeta(pipeline=pipeline, features=["amount", "count_1h", "new_country"], **kw)


@pytest.fixture
def reg(tmp_path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def test_doctests():
    for module in (models.meta, models.registry):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# --- ModelMeta -------------------------------------------------------------------


def test_meta_json_round_trip():
    m = meta(version=3, threshold=0.73, metrics={"roc_auc": 0.91, "average_precision": 0.4},
             training={"rows": 1000, "positives": 7, "source": "synthetic", "period": ["2024-01-01", "2024-02-01"]},
             extra={"hidden": [64, 64]})
    back = ModelMeta.from_json(m.to_json())
    assert back == m
    assert back.features == ["amount", "count_1h", "new_country"]
    assert back.n_features == 3


def test_meta_rejects_bad_values_and_ignores_unknown_keys():
    with pytest.raises(ValidationError, match="duplicate feature"):
        ModelMeta(pipeline="fraud", features=["a", "b", "a"])
    with pytest.raises(ValidationError):
        ModelMeta(pipeline="../etc", features=["a"])
    with pytest.raises(ValidationError):
        ModelMeta(pipeline="fraud", features=[])
    m = meta()
    text = m.to_json().replace('"kind"', '"added_by_a_newer_trainer": 1, "kind"')
    assert ModelMeta.from_json(text) == m


# --- register / versions / get ---------------------------------------------------


def test_register_assigns_versions_and_first_is_champion(reg):
    assert reg.champion("fraud") is None
    assert reg.versions("fraud") == []
    first = reg.register("fraud", b"model-1", meta(threshold=0.8), promote=False)
    assert first.version == 1
    assert reg.champion("fraud").version == 1, "the first version is promoted regardless"
    second = reg.register("fraud", b"model-2", meta(), promote=False)
    assert second.version == 2
    assert reg.champion("fraud").version == 1
    third = reg.register("fraud", b"model-3", meta())
    assert reg.champion("fraud") == third

    assert [m.version for m in reg.versions("fraud")] == [1, 2, 3]
    assert reg.get("fraud", 1).threshold == 0.8
    assert reg.model_path("fraud", 2).read_bytes() == b"model-2"
    assert reg.model_path("fraud", 2) == reg.root / "fraud" / "v2" / "model.onnx"
    assert (reg.root / "fraud" / "v2" / "meta.json").is_file()
    assert reg.pipelines() == ["fraud"]


def test_pipelines_are_independent(reg):
    reg.register("fraud", b"f", meta())
    reg.register("anomaly", b"a", meta("anomaly"))
    reg.register("anomaly", b"a2", meta("anomaly"))
    assert reg.pipelines() == ["anomaly", "fraud"]
    assert reg.champion("fraud").version == 1
    assert reg.champion("anomaly").version == 2


def test_versions_sort_numerically(reg):
    for i in range(11):
        reg.register("fraud", f"m{i}".encode(), meta(), promote=False)
    assert [m.version for m in reg.versions("fraud")] == list(range(1, 12))
    assert reg.register("fraud", b"m", meta()).version == 12


# --- promote / rollback / token --------------------------------------------------


def test_promote_and_rollback_follow_history(reg):
    for i in range(1, 4):
        reg.register("fraud", f"m{i}".encode(), meta(), promote=False)
    reg.promote("fraud", 3)
    reg.promote("fraud", 2)
    assert reg.champion("fraud").version == 2
    assert reg.rollback("fraud").version == 3
    assert reg.rollback("fraud").version == 1
    assert reg.champion("fraud").version == 1
    with pytest.raises(RegistryError, match="no previous champion"):
        reg.rollback("fraud")
    assert reg.champion("fraud").version == 1


def test_promote_current_champion_is_a_no_op(reg):
    reg.register("fraud", b"m1", meta())
    token = reg.champion_token("fraud")
    reg.promote("fraud", 1)
    assert reg.champion_token("fraud") == token
    with pytest.raises(RegistryError, match="no previous champion"):
        reg.rollback("fraud")


def test_rollback_skips_versions_deleted_by_hand(reg):
    import shutil

    for i in range(1, 4):
        reg.register("fraud", f"m{i}".encode(), meta())
    shutil.rmtree(reg.root / "fraud" / "v2")
    assert reg.rollback("fraud").version == 1


def test_champion_token_changes_on_every_pointer_write(reg):
    assert reg.champion_token("fraud") == ""
    reg.register("fraud", b"m1", meta())
    t1 = reg.champion_token("fraud")
    assert t1 and reg.champion_token("fraud") == t1, "stable while nothing changes"
    reg.register("fraud", b"m2", meta(), promote=False)
    assert reg.champion_token("fraud") == t1, "registering a challenger does not move the champion"
    reg.promote("fraud", 2)
    t2 = reg.champion_token("fraud")
    assert t2 != t1 and t2.startswith("v2")
    reg.rollback("fraud")
    t3 = reg.champion_token("fraud")
    assert t3 not in (t1, t2) and t3.startswith("v1")


# --- errors -----------------------------------------------------------------------


def test_errors_say_what_to_do(reg):
    with pytest.raises(RegistryError, match="no fraud model registered.*lepton train fraud"):
        reg.get("fraud", 1)
    with pytest.raises(RegistryError, match="lepton train fraud"):
        reg.rollback("fraud")
    with pytest.raises(RegistryError, match="lepton train fraud"):
        reg.promote("fraud", 1)
    reg.register("fraud", b"m1", meta())
    reg.register("fraud", b"m2", meta())
    with pytest.raises(RegistryError, match=r"no version 7 \(registered: v1, v2\)"):
        reg.get("fraud", 7)
    with pytest.raises(RegistryError, match="no version 7"):
        reg.model_path("fraud", 7)
    with pytest.raises(RegistryError, match="invalid pipeline name"):
        reg.versions("../../etc")
    with pytest.raises(RegistryError, match="not 'fraud'"):
        reg.register("fraud", b"m", meta("anomaly"))
    with pytest.raises(RegistryError, match="empty"):
        reg.register("fraud", b"", meta())


def test_corrupt_champion_file_is_reported(reg):
    reg.register("fraud", b"m1", meta())
    (reg.root / "fraud" / "champion.json").write_text("{not json")
    with pytest.raises(RegistryError, match="corrupt"):
        reg.champion("fraud")
    with pytest.raises(RegistryError, match="corrupt"):
        reg.champion_token("fraud")


# --- atomicity --------------------------------------------------------------------


def test_failed_write_leaves_nothing_behind(reg, monkeypatch):
    reg.register("fraud", b"m1", meta())
    before = sorted(p.name for p in (reg.root / "fraud").iterdir())
    real_write = models.registry._write_synced

    def failing(path, data):
        if path.name == "meta.json":
            raise OSError("disk full")
        real_write(path, data)

    monkeypatch.setattr(models.registry, "_write_synced", failing)
    with pytest.raises(OSError, match="disk full"):
        reg.register("fraud", b"m2", meta())
    assert sorted(p.name for p in (reg.root / "fraud").iterdir()) == before
    assert [m.version for m in reg.versions("fraud")] == [1]
    assert reg.champion("fraud").version == 1


def test_no_temporary_files_remain(reg):
    reg.register("fraud", b"m1", meta())
    reg.register("fraud", b"m2", meta())
    reg.rollback("fraud")
    assert sorted(p.name for p in (reg.root / "fraud").iterdir()) == [".lock", "champion.json", "v1", "v2"]


def test_concurrent_registers_get_distinct_versions(reg):
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: reg.register("fraud", f"m{i}".encode(), meta()).version, range(16)))
    assert sorted(got) == list(range(1, 17))
    assert [reg.model_path("fraud", v).read_bytes() for v in got] == [f"m{i}".encode() for i in range(16)]


def test_poller_always_sees_a_whole_champion(reg):
    """A worker polling while a trainer registers and promotes never reads half a model."""
    payload = lambda v: f"model-{v}-".encode() * 20_000  # noqa: E731
    reg.register("fraud", payload(1), meta())
    stop = threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def poll():
        while not stop.is_set():
            champ = reg.champion("fraud")
            data = reg.model_path("fraud", champ.version).read_bytes()
            if data != payload(champ.version):
                problems.append(f"v{champ.version}: {len(data)} bytes")
            seen.append(champ.version)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for v in range(2, 12):
            assert reg.register("fraud", payload(v), meta()).version == v
    finally:
        stop.set()
        poller.join()
    assert not problems
    assert seen
