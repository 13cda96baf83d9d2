"""The model registry: versioned ONNX models on a file system, plus a champion pointer.

Layout::

    root/<pipeline>/v<N>/model.onnx
    root/<pipeline>/v<N>/meta.json
    root/<pipeline>/champion.json     {"version": N, "history": [previous champions...]}

A version directory is written under a temporary name and renamed into place,
and ``champion.json`` is replaced the same way, so a worker polling the
registry sees either the old state or the new one, never half a model. Writers
(train, promote, rollback) serialise on a lock file per pipeline; readers take
no lock. Deliberately no onnxruntime or torch here: the CLI lists models
without loading them.

>>> import tempfile
>>> from models.meta import ModelMeta
>>> reg = ModelRegistry(Path(tempfile.mkdtemp()))
>>> reg.champion("fraud") is None
True
>>> meta = ModelMeta(pipeline="fraud", features=["amount"])
>>> reg.register("fraud", b"onnx-1", meta).version
1
>>> reg.register("fraud", b"onnx-2", meta, promote=False).version
2
>>> reg.champion("fraud").version
1
>>> reg.promote("fraud", 2).version
2
>>> reg.rollback("fraud").version
1
>>> [m.version for m in reg.versions("fraud")]
[1, 2]
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from models.meta import PIPELINE_PATTERN, ModelMeta

try:  # POSIX only; elsewhere writers are not serialised (a single trainer is assumed).
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

_VERSION_DIR = re.compile(r"^v([0-9]+)$")
_PIPELINE = re.compile(PIPELINE_PATTERN)
MODEL_FILE = "model.onnx"
META_FILE = "meta.json"
CHAMPION_FILE = "champion.json"


class RegistryError(Exception):
    """A registry operation failed; the message says what to do about it."""


class ModelRegistry:
    """Versioned models per pipeline under ``root`` (default: ``settings.models_dir``)."""

    def __init__(self, root: Path | str | None = None) -> None:
        if root is None:
            from streams.settings import get_settings  # late: streams may import models


            root = get_settings().models_dir
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"

    # --- reading ---------------------------------------------------------------

    def pipelines(self) -> list[str]:
        """Pipelines with at least one registered version."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if _PIPELINE.match(p.name) and self._version_numbers(p)
        )

    def versions(self, pipeline: str) -> list[ModelMeta]:
        """Every registered version, oldest first (empty if none)."""
        pdir = self._pipeline_dir(pipeline)
        return [self.get(pipeline, v) for v in self._version_numbers(pdir)]

    def get(self, pipeline: str, version: int) -> ModelMeta:
        path = self._version_dir(pipeline, version) / META_FILE
        try:
            return ModelMeta.from_json(path.read_bytes())
        except FileNotFoundError:
            raise self._missing_version(pipeline, version) from None
        except ValueError as exc:
            raise RegistryError(f"{path} is not valid model metadata ({exc}); re-register the model") from exc

    def model_path(self, pipeline: str, version: int) -> Path:
        path = self._version_dir(pipeline, version) / MODEL_FILE
        if not path.is_file():
            raise self._missing_version(pipeline, version)
        return path

    def champion(self, pipeline: str) -> ModelMeta | None:
        """The version workers should serve, or None if nothing is registered."""
        state = self._read_champion(self._pipeline_dir(pipeline))
        if state is None:
            return None
        try:
            return self.get(pipeline, state["version"])
        except RegistryError as exc:
            raise RegistryError(
                f"{pipeline} champion points to v{state['version']}, which is missing: "
                f"run `lepton models promote {pipeline} VERSION` ({exc})"
            ) from None

    def champion_token(self, pipeline: str) -> str:
        """A string that changes whenever the champion pointer is rewritten; "" if none.

        One open, fstat and a ~100-byte read: cheap enough to poll between batches.
        """
        path = self._pipeline_dir(pipeline) / CHAMPION_FILE
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                version = json.loads(f.read())["version"]
        except FileNotFoundError:
            return ""
        except (ValueError, KeyError) as exc:
            raise RegistryError(f"{path} is corrupt ({exc}): run `lepton models promote {pipeline} VERSION`") from exc
        return f"v{version}:{st.st_mtime_ns}:{st.st_ino}"

    # --- writing ---------------------------------------------------------------

    def register(self, pipeline: str, onnx_bytes: bytes, meta: ModelMeta, promote: bool = True) -> ModelMeta:
        """Store a new version (next number) and return its metadata.

        The first version of a pipeline always becomes champion, so a fresh
        install serves something; later ones only if ``promote``.
        """
        if meta.pipeline != pipeline:
            raise RegistryError(f"metadata is for pipeline {meta.pipeline!r}, not {pipeline!r}")
        if not onnx_bytes:
            raise RegistryError(f"refusing to register an empty {pipeline} model")
        pdir = self._pipeline_dir(pipeline)
        pdir.mkdir(parents=True, exist_ok=True)
        with self._locked(pdir):
            numbers = self._version_numbers(pdir)
            version = (numbers[-1] if numbers else 0) + 1
            meta = meta.model_copy(update={"version": version})
            tmp = pdir / f".tmp-v{version}-{uuid.uuid4().hex}"
            tmp.mkdir()
            try:
                _write_synced(tmp / MODEL_FILE, onnx_bytes)
                _write_synced(tmp / META_FILE, meta.to_json().encode())
                os.replace(tmp, pdir / f"v{version}")
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _fsync_dir(pdir)
            state = self._read_champion(pdir)
            if state is None:
                self._write_champion(pdir, version, [])
            elif promote:
                self._write_champion(pdir, version, [*state["history"], state["version"]])
        return meta

    def promote(self, pipeline: str, version: int) -> ModelMeta:
        """Make ``version`` the champion; the current one is remembered for rollback."""
        meta = self.get(pipeline, version)
        pdir = self._pipeline_dir(pipeline)
        with self._locked(pdir):
            state = self._read_champion(pdir)
            if state is None:
                self._write_champion(pdir, version, [])
            elif state["version"] != version:
                self._write_champion(pdir, version, [*state["history"], state["version"]])
        return meta

    def rollback(self, pipeline: str) -> ModelMeta:
        """Restore the previous champion (versions deleted by hand are skipped)."""
        pdir = self._pipeline_dir(pipeline)
        if not pdir.is_dir():
            raise self._no_model(pipeline)
        with self._locked(pdir):
            state = self._read_champion(pdir)
            if state is None:
                raise self._no_model(pipeline)
            history = list(state["history"])
            while history:
                previous = history.pop()
                if (pdir / f"v{previous}" / META_FILE).is_file():
                    self._write_champion(pdir, previous, history)
                    return self.get(pipeline, previous)
        raise RegistryError(
            f"{pipeline} has no previous champion to roll back to (champion is v{state['version']}): "
            f"pick a version with `lepton models list {pipeline}` and `lepton models promote {pipeline} VERSION`"
        )

    # --- internals -------------------------------------------------------------

    def _pipeline_dir(self, pipeline: str) -> Path:
        if not _PIPELINE.match(pipeline):
            raise RegistryError(f"invalid pipeline name {pipeline!r}: use lower-case letters, digits, '-' and '_'")
        return self.root / pipeline

    def _version_dir(self, pipeline: str, version: int) -> Path:
        return self._pipeline_dir(pipeline) / f"v{int(version)}"

    @staticmethod
    def _version_numbers(pdir: Path) -> list[int]:
        if not pdir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in pdir.iterdir() if (m := _VERSION_DIR.match(p.name)))

    def _read_champion(self, pdir: Path) -> dict | None:
        path = pdir / CHAMPION_FILE
        try:
            state = json.loads(path.read_bytes())
            return {"version": int(state["version"]), "history": [int(v) for v in state.get("history", [])]}
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"{path} is corrupt ({exc}): run `lepton models promote {pdir.name} VERSION`") from exc

    @staticmethod
    def _write_champion(pdir: Path, version: int, history: list[int]) -> None:
        state = {
            "version": version,
            "history": history,
            "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        tmp = pdir / f".{CHAMPION_FILE}.{uuid.uuid4().hex}.tmp"
        try:
            _write_synced(tmp, json.dumps(state, indent=2).encode())
            os.replace(tmp, pdir / CHAMPION_FILE)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(pdir)

    @staticmethod
    @contextlib.contextmanager
    def _locked(pdir: Path) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(pdir / ".lock", "a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _no_model(self, pipeline: str) -> RegistryError:
        return RegistryError(f"no {pipeline} model registered in {self.root}: run `lepton train {pipeline}`")

    def _missing_version(self, pipeline: str, version: int) -> RegistryError:
        known = self._version_numbers(self._pipeline_dir(pipeline))
        if not known:
            return self._no_model(pipeline)
        listed = ", ".join(f"v{v}" for v in known)
        return RegistryError(f"{pipeline} has no version {version} (registered: {listed}); see `lepton models list {pipeline}`")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make renames inside ``path`` survive a power cut (best effort, POSIX)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
