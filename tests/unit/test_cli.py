"""The command line: every command has help; the registry commands work offline."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from streams.cli import main

COMMANDS = ["worker", "produce", "train", "models", "replay-dead-letters", "status", "bench", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_models_list_promote_rollback(tmp_path) -> None:
    from models.meta import ModelMeta
    from models.registry import ModelRegistry
    from models.training import export_onnx
    import torch

    registry = ModelRegistry(tmp_path / "models")
    net = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Sigmoid())
    blob = export_onnx(net, 3)
    for _ in range(2):
        registry.register("fraud", blob, ModelMeta(pipeline="fraud", features=["a", "b", "c"]))
    runner = CliRunner()
    home = ["--home", str(tmp_path)]
    listed = runner.invoke(main, [*home, "models", "list"])
    assert listed.exit_code == 0 and "* fraud      v2" in listed.output
    assert runner.invoke(main, [*home, "models", "promote", "fraud", "1"]).exit_code == 0
    assert registry.champion("fraud").version == 1
    assert runner.invoke(main, [*home, "models", "rollback", "fraud"]).exit_code == 0
    assert registry.champion("fraud").version == 2
    missing = runner.invoke(main, [*home, "models", "promote", "fraud", "9"])
    assert missing.exit_code == 2 and "fix:" in missing.output


def test_unreachable_broker_error_names_the_setting(monkeypatch) -> None:
    monkeypatch.setenv("LEPTON_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("LEPTON_CONNECT_TIMEOUT_S", "1")
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code != 0
    assert "LEPTON_KAFKA_BOOTSTRAP" in result.output and "127.0.0.1:1" in result.output
