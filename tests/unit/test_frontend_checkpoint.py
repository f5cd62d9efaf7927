"""load_checkpoint: tensors only (weights_only=True); anything needing more is refused, explained."""

from __future__ import annotations

import argparse

import pytest

torch = pytest.importorskip("torch")

from edgeq.errors import ModelLoadError  # noqa: E402
from edgeq.frontends.torch import load_checkpoint  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)
        self.bn = torch.nn.BatchNorm1d(2)


class NotATensor:
    pass


def test_state_dict_round_trip(tmp_path):
    net = Net()
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    loaded = load_checkpoint(tmp_path / "sd.pt")
    assert set(loaded) == set(net.state_dict())
    for name, tensor in net.state_dict().items():
        assert torch.equal(loaded[name], tensor)
    Net().load_state_dict(loaded)  # usable as is


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model"])
def test_training_checkpoint_is_unwrapped(tmp_path, key):
    net = Net()
    torch.save({key: net.state_dict(), "epoch": 7, "lr": 0.1}, tmp_path / "ckpt.pt")
    loaded = load_checkpoint(tmp_path / "ckpt.pt")
    assert torch.equal(loaded["fc.weight"], net.fc.weight)


@pytest.mark.parametrize(
    "payload,culprit",
    [
        (lambda: Net(), "Net"),  # a whole pickled module
        (lambda: {"fc.weight": torch.ones(1), "extra": NotATensor()}, "NotATensor"),
        (lambda: {"state_dict": Net().state_dict(), "args": argparse.Namespace(lr=0.1)}, "argparse.Namespace"),
    ],
)
def test_pickles_needing_more_than_tensors_are_refused_with_the_reason(tmp_path, payload, culprit):
    torch.save(payload(), tmp_path / "unsafe.pt")
    with pytest.raises(ModelLoadError) as info:
        load_checkpoint(tmp_path / "unsafe.pt")
    message = str(info.value)
    assert "\n" not in message
    assert "the checkpoint contains arbitrary Python objects" in message and culprit in message
    assert "weights_only=True" in message and "torch.save(model.state_dict(), path)" in message


def test_missing_garbage_and_non_state_dict_files(tmp_path):
    with pytest.raises(ModelLoadError, match=r"missing\.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelLoadError, match=r"junk\.pt: not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(ModelLoadError, match=r"list\.pt: expected a state dict \(names → tensors\), found list"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(ModelLoadError, match=r"found a dict with keys \['epoch'\]"):
        load_checkpoint(tmp_path / "meta.pt")
