"""The CUDA path on a real GPU: device selection, mixed precision, packing, checkpoints, memory.

Skipped on a machine without a CUDA GPU (CI has none); run on one with
``pytest tests/test_cuda.py``. What they check cannot be shown on a CPU: where tensors live,
cuDNN's recurrent kernels under autocast, a checkpoint crossing between GPU and CPU, and the
CUDA caching allocator giving back each trial's memory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from optuna_rnn import (
    Checkpoint,
    Hyperparams,
    IntRange,
    Objective,
    SearchSpace,
    Trainer,
    build_model,
    load_best_model,
    load_checkpoint,
    load_dataset,
)
from optuna_rnn.training import make_optimizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SMALL = Hyperparams(cell="lstm", hidden_size=32, batch_size=64, lr=3e-3)


def _finite(history: list[dict[str, float]]) -> bool:
    return all(math.isfinite(h[k]) for h in history for k in ("train_loss", "val_loss", "val_metric"))


def test_auto_picks_the_gpu_and_mixed_precision_is_asked_for() -> None:
    assert Trainer(max_epochs=1).device.type == "cuda" and Trainer(max_epochs=1).amp_dtype is None
    data = load_dataset("digits")
    model = build_model(SMALL, input_size=data.input_size, output_size=data.output_size)
    trainer = Trainer(max_epochs=6, seed=0, mixed_precision=True)  # device="auto"
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    assert trainer.device.type == "cuda" and trainer.amp_dtype == expected
    result = trainer.fit(model, data, SMALL)
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 for p in model.parameters())
    assert _finite(result.history) and result.best_value > 0.85  # digits: 8 steps, 10 classes


def test_mixed_and_full_precision_learn_alike() -> None:
    data = load_dataset("sunspots").windowed(24)
    values = {}
    for mixed in (True, False):
        torch.manual_seed(0)
        model = build_model(SMALL, input_size=data.input_size, output_size=data.output_size, task=data.task)
        values[mixed] = Trainer(max_epochs=8, seed=0, device="cuda", mixed_precision=mixed).fit(
            model, data, SMALL
        )
    assert _finite(values[True].history) and _finite(values[False].history)
    assert values[True].best_value == pytest.approx(values[False].best_value, rel=0.15)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_variable_length_batches_give_the_same_answer_on_gpu_and_cpu(bidirectional: bool) -> None:
    data = load_dataset("japanese_vowels")
    assert data.valid.lengths is not None and int(data.valid.lengths.min()) < data.valid.X.shape[1]
    hp = Hyperparams(cell="gru", hidden_size=24, batch_size=32, bidirectional=bidirectional, lr=1e-2)
    model = build_model(hp, input_size=data.input_size, output_size=data.output_size)
    result = Trainer(max_epochs=8, seed=0, device="cuda").fit(model, data, hp)
    assert _finite(result.history) and result.best_value > 0.7  # 9 speakers
    model.eval()
    with torch.inference_mode():
        on_gpu = model(data.valid.X.cuda(), data.valid.lengths).cpu()
        on_cpu = model.cpu()(data.valid.X, data.valid.lengths)
    # cuDNN's recurrent kernels use TF32 matrix products: logits agree to about 1e-3.
    torch.testing.assert_close(on_gpu, on_cpu, atol=1e-2, rtol=1e-2)
    assert (on_gpu.argmax(1) == on_cpu.argmax(1)).float().mean() >= 0.95


def test_a_gpu_checkpoint_resumes_on_the_gpu_and_on_a_cpu(tmp_path: Path) -> None:
    data = load_dataset("digits")
    hp = Hyperparams(cell="gru", hidden_size=16, batch_size=128, optimizer="adam")
    path = tmp_path / "run.ckpt"

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(hp, input_size=data.input_size, output_size=data.output_size)

    trainer = Trainer(max_epochs=2, seed=0, device="cuda", mixed_precision=True)
    trainer.fit(fresh(), data, hp, callbacks=[Checkpoint(path)])
    saved = load_checkpoint(path)
    assert saved is not None and saved["epoch"] == 2 and saved["scaler"] is not None
    assert all(t.device.type == "cpu" for t in saved["model"].values())  # loadable without a GPU
    for device in ("cuda", "cpu"):
        resumed = Trainer(max_epochs=4, seed=0, device=device, mixed_precision=True).fit(
            fresh(), data, hp, resume_from=load_checkpoint(path)
        )
        assert resumed.epochs == 4 and [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
        assert resumed.history[:2] == saved["history"] and _finite(resumed.history)


def test_a_cpu_checkpoint_resumes_on_the_gpu_with_fused_adam(tmp_path: Path) -> None:
    data = load_dataset("digits")
    hp = Hyperparams(cell="lstm", hidden_size=16, batch_size=128, optimizer="adamw")
    path = tmp_path / "run.ckpt"
    model = build_model(hp, input_size=data.input_size, output_size=data.output_size)
    Trainer(max_epochs=2, seed=0, device="cpu").fit(model, data, hp, callbacks=[Checkpoint(path)])
    model = build_model(hp, input_size=data.input_size, output_size=data.output_size)
    saved = load_checkpoint(path)
    assert saved is not None
    result = Trainer(max_epochs=4, seed=0, device="cuda").fit(model, data, hp, resume_from=saved)
    assert result.epochs == 4 and result.history[:2] == saved["history"] and _finite(result.history)
    assert make_optimizer(model, hp).defaults["fused"]  # as the optimiser that loaded the CPU state


def test_gpu_memory_goes_back_after_each_trial(tmp_path: Path) -> None:
    space = SearchSpace(hidden_size=IntRange(64, 256), batch_size=64, num_layers=IntRange(1, 2))
    objective = Objective(load_dataset("digits"), space=space, max_epochs=3, device="cuda", seed=0)
    study = optuna.create_study(direction=objective.direction, sampler=optuna.samplers.RandomSampler(seed=0))
    after: list[int] = []
    study.optimize(objective, n_trials=10, callbacks=[lambda *_: after.append(torch.cuda.memory_allocated())])
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    # What stays allocated between trials (cuBLAS/cuDNN workspaces, made once per thread in the
    # first trials: about 70 MB on an H200) does not grow with the number of trials.
    assert max(after[3:]) <= max(after[:3]) + 1024**2, after


def test_a_cli_study_on_the_gpu_and_its_best_model_on_a_cpu(run_cli, tmp_path, tiny_space) -> None:
    out = run_cli(
        "run", "--dataset", "japanese_vowels", "--device", "cuda", "--n-trials", "4",
        "--space", str(tiny_space), "--max-epochs", "3", "--seed", "0", "-q",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    storage = f"sqlite:///{tmp_path / 'optuna-rnn.db'}"
    study = optuna.load_study(study_name="japanese_vowels", storage=storage)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 4
    best = json.loads(run_cli("best", "--study", "japanese_vowels").stdout)
    assert 0 < best["test_metric"] <= 1
    model = load_best_model("japanese_vowels", storage=storage)
    assert all(p.device.type == "cpu" for p in model.parameters())
    data = load_dataset("japanese_vowels")
    assert model(data.test.X[:5], data.test.lengths[:5]).shape == (5, 9)


def test_two_workers_share_one_gpu(run_cli, tmp_path, tiny_space) -> None:
    out = run_cli(
        "run", "--dataset", "digits", "--device", "cuda", "--workers", "2", "--n-trials", "6",
        "--space", str(tiny_space), "--max-epochs", "2", "--seed", "0", "-q",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    study = optuna.load_study(study_name="digits", storage=f"sqlite:///{tmp_path / 'optuna-rnn.db'}")
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 6
