"""The CUDA path where a GPU exists (mark `cuda`): models, training, checkpoints, bad labels and OOM recovery."""
import json

import numpy as np
import pytest
import torch

from conftest import digits_npz
from mscompare.checkpoints import load_checkpoint
from mscompare.config import TrainConfig
from mscompare.jobs import execute
from mscompare.models import ModelConfig, build_model, list_units
from mscompare.runs import RunStore

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")]
SMALL = ModelConfig(model="ms_add", width=8, units=2, num_classes=4)


def tcfg(root, **kw):
    return TrainConfig(**{"dataset": "tinydigits", "data_root": str(root), "iters": 30, "batch_size": 32,
                          "eval_every": 10, "device": "cuda", **kw})


@pytest.mark.parametrize("model", list_units())
def test_every_unit_runs_forward_and_backward_on_cuda(model):
    net = build_model(ModelConfig(model=model, width=16, in_channels=3, input_size=32)).cuda()
    out = net(torch.randn(4, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_training_on_cuda_records_the_device_and_round_trips_its_checkpoint(tmp_path):
    digits_npz(tmp_path)
    store = RunStore(tmp_path / "runs")
    row = execute(store, store.create(SMALL, tcfg(tmp_path, lr=3e-3)), tmp_path / "ck")
    assert row["status"] == "done", row["message"]
    env = json.loads(row["env"])
    assert env["device"].startswith("cuda") and env["cudnn"] and "tf32_matmul" in env
    model, cfg, meta = load_checkpoint(row["checkpoint"])
    assert cfg == SMALL and next(model.parameters()).device.type == "cpu"
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(model(x), model.cuda()(x.cuda()).cpu(), atol=1e-4)


def test_a_bad_label_fails_its_run_and_the_next_cuda_run_succeeds(tmp_path):
    digits_npz(tmp_path)
    bad = tmp_path / "badlabels"
    bad.mkdir()
    x = np.zeros((64, 28, 28, 1), np.uint8)
    x[:, 5:10, 5:10] = 200
    np.savez(bad / "train.npz", x=x, y=np.r_[np.arange(63) % 4, 99])  # one label out of range
    np.savez(bad / "test.npz", x=x[:8], y=np.arange(8) % 4)
    (bad / "classes.txt").write_text("a\nb\nc\nd\n")
    store = RunStore(tmp_path / "runs")
    failed = execute(store, store.create(SMALL, tcfg(tmp_path, dataset="badlabels")))
    assert failed["status"] == "failed" and "99" in failed["message"]
    assert execute(store, store.create(SMALL, tcfg(tmp_path)))["status"] == "done"


def test_out_of_memory_fails_its_run_and_the_process_trains_the_next(tmp_path):
    free, total = torch.cuda.mem_get_info()
    n = 32768
    digits_npz(tmp_path, name="big", n_train=n, n_test=64)
    huge = ModelConfig(model="alexnet", width=512, units=1, num_classes=4)
    # batch n at width 512 on 28x28 (stem at full size): activations alone are ~n*512*28*28*4 bytes per layer
    batch = n if n * 512 * 28 * 28 * 4 * 3 > free else pytest.skip(f"GPU too large to force OOM ({total >> 30} GiB)")
    store = RunStore(tmp_path / "runs")
    row = execute(store, store.create(huge, tcfg(tmp_path, dataset="big", batch_size=batch, iters=2)))
    assert row["status"] == "failed" and "out of memory" in row["message"]
    digits_npz(tmp_path)
    assert execute(store, store.create(SMALL, tcfg(tmp_path)))["status"] == "done"
