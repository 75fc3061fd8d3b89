"""core.runs.checkpoint: the one owner of saving, loading and rebuilding models from checkpoints."""
import pickle
import shutil
import struct
import zipfile

import pytest
import torch

from conftest import tiny_digits
from core.data.datasets import load_dataset
from core.runs.checkpoint import (
    CHECKPOINT_SCHEMA_VERSION,
    load_checkpoint,
    load_model,
    plain_module,
    save_checkpoint,
    torch_file_damage,
)
from core.training.trainer import Trainer


def test_load_model_rebuilds_what_was_trained(store, trained):
    model, checkpoint = load_model(store.checkpoint_path(trained, "best"))
    assert not model.training and checkpoint["schema_version"] == CHECKPOINT_SCHEMA_VERSION
    assert "optimizer" not in checkpoint            # best.pt is for inference: no optimizer state
    latest = load_checkpoint(store.checkpoint_path(trained, "latest"))
    assert {"optimizer", "rng", "callbacks"} <= set(latest)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, latest["model"][name]), name


def test_a_wrapped_model_saves_the_plain_modules_weights():
    config = tiny_digits(epochs=1)
    trainer = Trainer(config, load_dataset(config), device=torch.device("cpu"))
    plain_keys = set(trainer.model.state_dict())
    trainer.model = torch.compile(trainer.model)          # wraps at once, compiles on first call
    assert any(k.startswith("_orig_mod.") for k in trainer.model.state_dict())
    assert set(trainer.state_dict()["model"]) == plain_keys
    assert plain_module(torch.nn.DataParallel(torch.nn.Linear(2, 2))).__class__ is torch.nn.Linear


def test_a_failed_save_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint({"value": torch.ones(2)}, path)
    before = path.read_bytes()
    # the pickler's refusal, re-raised: AttributeError up to Python 3.13, PicklingError from 3.14
    with pytest.raises((AttributeError, pickle.PicklingError)):
        save_checkpoint({"value": lambda: None}, path)     # cannot be pickled: the write fails midway
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_version_1_checkpoints_are_upgraded(store, trained):
    latest = load_checkpoint(store.checkpoint_path(trained, "latest"))
    old = {k: v for k, v in latest.items() if k not in ("schema_version", "callbacks")}
    old["loop"] = {**old["loop"], "best_value": 0.5, "best_epoch": 1, "epochs_without_improvement": 0}
    path = store.run_dir(trained) / "old.pt"
    torch.save(old, path)
    upgraded = load_checkpoint(path)
    assert upgraded["callbacks"]["Checkpointer"] == {"best": 0.5, "best_epoch": 1, "since_best": 0}
    assert upgraded["callbacks"]["EarlyStopping"] == upgraded["callbacks"]["Checkpointer"]


@pytest.mark.parametrize("content, message", [
    ({"model": {}}, "not a Trainboard checkpoint"),
    ("newer", "written by a newer Trainboard"),
    (b"\x00garbage", "not a readable Trainboard checkpoint"),
])
def test_other_files_are_refused_with_a_reason(store, trained, tmp_path, content, message):
    path = tmp_path / "other.pt"
    if content == "newer":
        torch.save({**load_checkpoint(store.checkpoint_path(trained, "best")), "schema_version": 99}, path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)


def test_a_pickle_with_code_is_refused_without_advice_to_trust_it(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("this code ran",))
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": Boom(), "config": {}}))
    with pytest.raises(ValueError, match="not a readable Trainboard checkpoint: the safe loader refused it "
                                         r"\(.+\), so nothing in it ran") as error:
        load_checkpoint(path)
    assert "weights_only" not in str(error.value) and "False" not in str(error.value)   # never that advice


def test_a_torch_file_with_a_function_inside_is_refused_naming_it_without_advice(tmp_path):
    """torch.save's zip format words the refusal differently ('(1) ... weights_only ...' lines first)."""
    path = tmp_path / "hook.pt"
    torch.save({"model": {}, "config": {}, "hook": print}, path)
    with pytest.raises(ValueError, match=r"the safe loader refused it \(Unsupported global: GLOBAL print") as error:
        load_checkpoint(path)
    assert "weights_only" not in str(error.value)


def flip_a_byte_in_the_largest_tensor(path) -> str:
    """Flip one byte in the middle of the stored bytes of the file's largest tensor; its entry name."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        entry = max((info for info in archive.infolist() if "/data/" in info.filename), key=lambda i: i.file_size)
    assert entry.compress_type == zipfile.ZIP_STORED
    # The local header's own name and extra lengths: torch pads the extra field to align the data.
    name_length, extra_length = struct.unpack("<HH", data[entry.header_offset + 26:entry.header_offset + 30])
    data[entry.header_offset + 30 + name_length + extra_length + entry.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return entry.filename


def test_a_flipped_byte_in_a_tensor_is_refused_by_its_checksum(store, trained, tmp_path):
    best = store.checkpoint_path(trained, "best")
    torn = tmp_path / "best.pt"
    shutil.copy(best, torn)
    entry = flip_a_byte_in_the_largest_tensor(torn)
    weights = torch.load(torn, weights_only=True)["model"]        # torch.load alone reads it...
    assert any(not torch.equal(weights[k], v) for k, v in load_checkpoint(best)["model"].items())  # ...torn
    assert torch_file_damage(best) is None and "fails its checksum" in torch_file_damage(torn)
    with pytest.raises(ValueError, match="checksum") as error:
        load_checkpoint(torn)
    assert str(error.value) == (f"{torn} is not a readable Trainboard checkpoint: it is corrupt "
                                f"(its entry {entry} fails its checksum)")
    with pytest.raises(ValueError, match="checksum"):
        load_model(torn)
    load_model(best)                                                # the untouched file still loads
