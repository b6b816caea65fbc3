"""The trainer: a fast epoch loop over pre-built tensors, metrics, and the callback protocol.

Why it is fast: the splits live on the device as whole tensors; each epoch
shuffles once and slices contiguous batches (no ``DataLoader``, no per-sample
Python); losses and gradient norms are accumulated on the device and read back
once per epoch, so no batch waits for the host. Variable-length sequences are
bucketed by length so that a batch is padded only to its own longest sequence;
the model keeps the padding out of its output (see :class:`RecurrentNet`).

Callbacks see a :class:`TrainState` at ``on_train_begin``, after every epoch
(``on_epoch_end``) and at ``on_train_end`` (always, also when a callback
stopped or pruned the run). A callback stops training by setting
``state.stop_reason``, or prunes it by raising :class:`optuna.TrialPruned`.

Resuming: :meth:`TrainState.state_dict` captures everything the loop depends
on (weights, optimiser, the shuffling generator and torch's global RNG, the
epoch, history and best weights); ``Trainer.fit(..., resume_from=...)`` loads
it and carries on with the next epoch, so that a run interrupted after epoch
*k* and resumed ends exactly as an uninterrupted one on the CPU. Callbacks
that keep state of their own rebuild it from ``state.history`` in
``on_train_begin`` (see :class:`~optuna_rnn.callbacks.EarlyStopping`).

Example::

    from optuna_rnn import Hyperparams, Trainer, build_model, load_dataset

    data = load_dataset("digits")
    hp = Hyperparams(hidden_size=16, batch_size=128)
    model = build_model(hp, input_size=data.input_size, output_size=data.output_size)
    result = Trainer(max_epochs=2, seed=0).fit(model, data, hp)
    assert 0.0 <= result.best_value <= 1.0
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from optuna_rnn import shutdown
from optuna_rnn.data import SequenceData, Split
from optuna_rnn.models import OriginalUnits
from optuna_rnn.space import Hyperparams, check_task


@dataclass(frozen=True)
class Metric:
    """The validation metric a task is judged by."""

    name: str
    direction: Literal["maximize", "minimize"]

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        if math.isnan(b):
            return not math.isnan(a)
        return a > b if self.direction == "maximize" else a < b

    @property
    def worst(self) -> float:
        return -math.inf if self.direction == "maximize" else math.inf


ACCURACY = Metric("accuracy", "maximize")
RMSE = Metric("rmse", "minimize")


def metric_for(task: str) -> Metric:
    """Accuracy for classification, RMSE in original units for forecasting."""
    check_task(task)
    return ACCURACY if task == "classification" else RMSE


class Callback:
    """Base class of trainer callbacks; override the hooks you need."""

    def on_train_begin(self, state: TrainState) -> None:
        """Called once before the first epoch (``state.epoch`` is the epoch about to run, minus 1).

        After a resume, ``state.epoch`` and ``state.history`` already hold the restored epochs.
        """

    def on_epoch_end(self, state: TrainState) -> None:
        """Called after each epoch's training and validation."""

    def on_train_end(self, state: TrainState) -> None:
        """Called once at the end, whether training finished, stopped or was pruned.

        Every callback's hook runs even when an earlier one raises; :meth:`Trainer.fit`
        then raises the first such error, unless training itself had already failed.
        """


@dataclass
class TrainState:
    """What callbacks see and may change while a model trains.

    ``grad_norm`` is the epoch's largest gradient norm before clipping; it is measured only
    when clipping is on (``hp.grad_clip``) and is NaN otherwise.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    hp: Hyperparams
    data: SequenceData
    metric: Metric
    max_epochs: int
    generator: torch.Generator
    epoch: int = 0
    train_loss: float = math.nan
    grad_norm: float = math.nan
    val_loss: float = math.nan
    val_metric: float = math.nan
    best_value: float = math.nan
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str | None = None
    started: float = field(default_factory=time.perf_counter)
    extras: dict[str, Any] = field(default_factory=dict)
    best_weights: dict[str, torch.Tensor] | None = None
    scaler: torch.amp.GradScaler | None = None
    abort: BaseException | None = None

    def stop_now(self, error: BaseException) -> None:
        """Abandon the running epoch at its next batch and raise ``error`` from :meth:`Trainer.fit`.

        Safe to call from another thread (a background check that finishes
        while the next epoch trains). The abandoned epoch is not recorded:
        ``epoch`` and ``history`` stay at the last finished epoch.
        """
        self.abort = error

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume after this epoch, as tensors and plain values.

        Tensors are copied to the CPU, so the result loads with
        ``torch.load(..., weights_only=True)`` on any machine.
        """
        device = next(self.model.parameters()).device
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return {
            "epoch": self.epoch,
            "model": _cpu(self.model.state_dict()),
            "optimizer": _cpu(self.optimizer.state_dict()),  # moments and step counts, too
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng,
            "history": copy.deepcopy(self.history),
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "best_weights": _cpu(self.best_weights) if self.best_weights is not None else None,
            "last": {
                "train_loss": self.train_loss,
                "grad_norm": self.grad_norm,
                "val_loss": self.val_loss,
                "val_metric": self.val_metric,
            },
            "stop_reason": self.stop_reason,
            "seconds": self.seconds,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` captured; training goes on with epoch ``epoch + 1``."""
        device = next(self.model.parameters()).device
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scaler is not None and saved.get("scaler") is not None:
            self.scaler.load_state_dict(saved["scaler"])
        rng = saved["rng"]
        torch.set_rng_state(rng["torch"])
        self.generator.set_state(rng["generator"])
        if device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], device)
        self.epoch = int(saved["epoch"])
        self.history = copy.deepcopy(saved["history"])
        self.best_value = float(saved["best_value"])
        self.best_epoch = int(saved["best_epoch"])
        best = saved.get("best_weights")
        self.best_weights = {k: v.to(device) for k, v in best.items()} if best is not None else None
        for name, value in saved["last"].items():
            setattr(self, name, float(value))
        self.stop_reason = saved.get("stop_reason")
        self.started = time.perf_counter() - float(saved.get("seconds", 0.0))


@dataclass(frozen=True)
class FitResult:
    """The outcome of :meth:`Trainer.fit`; the model holds the best epoch's weights."""

    best_value: float
    best_epoch: int
    epochs: int
    stop_reason: str
    seconds: float
    history: list[dict[str, float]]


def _end_training(callbacks: Sequence[Callback], state: TrainState, failure: BaseException | None) -> None:
    """Call every ``on_train_end``, even after one raises; then raise the first error.

    When training itself failed (``failure``), that error goes on alone: a
    callback's error at the end never masks it.
    """
    errors = []
    for cb in callbacks:
        try:
            cb.on_train_end(state)
        except Exception as exc:
            errors.append(exc)
    if errors and failure is None:
        raise errors[0]


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cpu``, ``cuda``, ``cuda:N`` (or another
    of torch's device types) name one.

    A device that is not there is refused here, in one line, rather than by torch at the first
    tensor moved to it (``cuda:0`` on a CPU-only build fails with an ``AssertionError``).
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r} (--device) was asked for but no CUDA device is available")
        if chosen.index is not None and chosen.index >= count:
            raise ValueError(
                f"device {device!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}"
            )
    elif chosen.type != "cpu":  # mps, xpu, ...: torch's own module for it says whether it is there
        backend = getattr(torch, chosen.type, None)
        if not getattr(backend, "is_available", lambda: False)():
            raise ValueError(f"device {device!r} is not available here; use 'auto', 'cpu' or 'cuda'")
    return chosen


def make_optimizer(model: nn.Module, hp: Hyperparams) -> torch.optim.Optimizer:
    """The optimiser ``hp`` names, with its own conditional parameters.

    ``weight_decay`` is L2 regularisation for SGD, Adam and RMSprop and
    decoupled weight decay for AdamW. Nesterov momentum applies only where
    ``momentum`` is above 0 (a space may sample both from ranges that allow 0).
    SGD, Adam and AdamW use PyTorch's fused kernels where this torch build
    has them for the model's device (one kernel for all parameters instead of
    a Python loop over them).
    """
    params = list(model.parameters())
    fused = {"fused": True} if _fused_available(params) else {}
    if hp.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=hp.lr,
            momentum=hp.momentum,
            nesterov=hp.nesterov and hp.momentum > 0,  # PyTorch refuses Nesterov without momentum
            weight_decay=hp.weight_decay,
            **fused,
        )
    if hp.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if hp.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=hp.lr, betas=(hp.beta1, hp.beta2), weight_decay=hp.weight_decay, **fused)
    if hp.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=hp.lr, alpha=hp.rmsprop_alpha, weight_decay=hp.weight_decay)
    raise ValueError(f"unknown optimiser {hp.optimizer!r}")


def _native_bf16(device: torch.device) -> bool:
    """Whether the GPU computes in bfloat16 natively (Ampere, compute capability 8, and later).

    Asked of the device rather than through ``torch.cuda.is_bf16_supported``, whose
    ``including_emulation`` switch is missing before torch 2.4.
    """
    return torch.cuda.get_device_capability(device)[0] >= 8


def _require_samples(data: object, method: str) -> None:
    if not isinstance(data, SequenceData):
        raise TypeError(
            f"{method} takes SequenceData, got {type(data).__name__}; cut a forecasting series into "
            "samples first: data.windowed(hp.window, forecast=hp.forecast), with hp from "
            "space.suggest(trial, task=data.task)"
        )


def _network(model: nn.Module) -> nn.Module:
    """The network inside a loaded model: the trainer's data are standardised, and the wrapper
    (:class:`~optuna_rnn.models.OriginalUnits`) would standardise them a second time."""
    return model.net if isinstance(model, OriginalUnits) else model


def _check_output_size(model: nn.Module, split: Split, data: SequenceData) -> None:
    """Refuse a model whose answer per sequence does not fit ``data``: a forecaster with 3 outputs
    would train by broadcasting against the one target, and 10 logits for 2 classes would score."""
    if len(split) == 0:
        return
    was_training = model.training
    model.eval()
    with torch.no_grad():  # not inference_mode: a lazy layer made here must train afterwards
        out = model(split.X[:1], None if split.lengths is None else split.lengths[:1])
    model.train(was_training)
    if out.shape != (1, data.output_size):
        wanted = f"{data.output_size} logits, one per class" if data.task == "classification" else "1 value"
        raise ValueError(
            f"the model answers {tuple(out.shape[1:])} per sequence where {data.name} needs {wanted}; "
            f"build it with output_size={data.output_size}"
        )


def _fused_available(params: Sequence[torch.Tensor]) -> bool:
    """Fused optimisers run on CUDA, and on the CPU from torch 2.4 on."""
    if not params or not all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params):
        return False
    device = params[0].device.type
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return device == "cuda" or (device == "cpu" and (major, minor) >= (2, 4))


class Trainer:
    """Trains one model on one :class:`SequenceData` and notifies callbacks.

    ``max_epochs`` bounds the run; ``seed`` fixes shuffling (and, when the
    caller seeds before building the model, the whole trial); ``device`` is
    ``auto``, ``cpu`` or ``cuda``; ``mixed_precision`` uses autocast on CUDA
    (bfloat16 where the GPU has it natively, else float16) with gradient scaling for
    training; validation and test always run in full precision. It is off by default:
    on an H200 it made every recurrent net of the GPU benchmark (hidden 32 to 256) 1.30-1.57x
    slower per epoch, since such small steps are bound by kernel launches, which autocast's
    casts multiply; turn it on for nets large enough to be bound by arithmetic.
    """

    def __init__(
        self,
        *,
        max_epochs: int = 30,
        device: str = "auto",
        seed: int | None = None,
        callbacks: Sequence[Callback] = (),
        mixed_precision: bool = False,
        eval_batch_size: int = 4096,
    ) -> None:
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, int | np.integer) or max_epochs < 1:
            raise ValueError(f"max_epochs must be a whole number >= 1, got {max_epochs!r}")
        self.max_epochs = int(max_epochs)
        self.device = resolve_device(device)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
            raise ValueError(f"seed must be a whole number or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self.callbacks = list(callbacks)
        whole = isinstance(eval_batch_size, int | np.integer) and not isinstance(eval_batch_size, bool)
        if not whole or eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be a whole number >= 1, got {eval_batch_size!r}")
        self.eval_batch_size = int(eval_batch_size)
        self.amp_dtype: torch.dtype | None = None
        if mixed_precision and self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if _native_bf16(self.device) else torch.float16

    def fit(
        self,
        model: nn.Module,
        data: SequenceData,
        hp: Hyperparams,
        *,
        callbacks: Sequence[Callback] = (),
        resume_from: dict[str, Any] | None = None,
    ) -> FitResult:
        """Train ``model`` for up to ``max_epochs``; returns with the best epoch's weights loaded.

        The best epoch is the one with the best validation metric among those whose validation
        loss is finite; if there is none, the last epoch's weights stay and ``best_epoch`` is 0.

        ``resume_from`` is a :meth:`TrainState.state_dict` (for instance from a
        :class:`~optuna_rnn.callbacks.Checkpoint` file): training restores it
        and continues after its epoch instead of starting at epoch 1.
        """
        _require_samples(data, "fit")
        model = _network(model)
        model.to(self.device)
        train = _to_device(data.train, self.device)
        valid = _to_device(data.valid, self.device)
        _check_output_size(model, train, data)
        generator = torch.Generator()
        if self.seed is None:
            generator.seed()  # from the OS, leaving torch's global generator to the caller
        else:
            generator.manual_seed(self.seed)
        state = TrainState(
            model=model,
            optimizer=make_optimizer(model, hp),
            hp=hp,
            data=data,
            metric=metric_for(data.task),
            max_epochs=self.max_epochs,
            generator=generator,
            best_value=math.nan,
            # Scaled whatever the dtype: under autocast cuDNN runs recurrent layers in float16 even
            # when bfloat16 is asked for, and unscaled float16 gradients underflow.
            scaler=torch.amp.GradScaler(self.device.type) if self.amp_dtype is not None else None,
        )
        if resume_from is not None:
            state.load_state_dict(resume_from)
        loss_fn: nn.Module = nn.CrossEntropyLoss() if data.task == "classification" else nn.MSELoss()
        scaler = state.scaler
        all_callbacks = [*self.callbacks, *callbacks]
        failure: BaseException | None = None
        try:
            for cb in all_callbacks:
                cb.on_train_begin(state)
            while state.epoch < self.max_epochs and state.stop_reason is None:
                state.epoch += 1
                t0 = time.perf_counter()
                with shutdown.interruptible():  # Ctrl-C/SIGTERM stop the epoch at once, not the callbacks
                    train_sum, norm_max = self._train_epoch(state, train, loss_fn, scaler)
                    if state.abort is not None:
                        raise state.abort
                    val_loss_sum, val_metric_sum = self._evaluate(model, valid, loss_fn, data.task)
                    totals = torch.stack([train_sum, norm_max, val_loss_sum, val_metric_sum]).tolist()
                state.train_loss = totals[0] / len(train)
                state.grad_norm = totals[1] if hp.grad_clip is not None else math.nan  # see TrainState
                state.val_loss = totals[2] / len(valid)
                state.val_metric = _finish_metric(totals[3], len(valid), data)
                state.history.append(
                    {
                        "epoch": state.epoch,
                        "train_loss": state.train_loss,
                        "val_loss": state.val_loss,
                        "val_metric": state.val_metric,
                        "seconds": time.perf_counter() - t0,
                    }
                )
                # Non-finite weights can still score an accuracy (argmax of NaN logits is class
                # 0); their validation loss gives them away.
                if math.isfinite(state.val_loss) and state.metric.better(state.val_metric, state.best_value):
                    state.best_value = state.val_metric
                    state.best_epoch = state.epoch
                    state.best_weights = copy.deepcopy(model.state_dict())
                for cb in all_callbacks:
                    cb.on_epoch_end(state)
            if state.abort is not None:  # asked for during the last epoch's validation or callbacks
                raise state.abort
        except BaseException as exc:
            # Stopped inside an epoch: the callbacks see the epochs that finished.
            state.epoch = min(state.epoch, int(state.history[-1]["epoch"]) if state.history else 0)
            failure = exc
            raise
        finally:
            _end_training(all_callbacks, state, failure)
        if state.best_weights is not None:
            model.load_state_dict(state.best_weights)
        return FitResult(
            best_value=state.best_value,
            best_epoch=state.best_epoch,
            epochs=state.epoch,
            stop_reason=state.stop_reason or "max_epochs",
            seconds=state.seconds,
            history=state.history,
        )

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _train_epoch(
        self,
        state: TrainState,
        train: Split,
        loss_fn: nn.Module,
        scaler: torch.amp.GradScaler | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model, optimizer, hp = state.model, state.optimizer, state.hp
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        loss_sum = torch.zeros((), device=self.device)
        norm_max = torch.zeros((), device=self.device)
        clip = hp.grad_clip
        for xb, yb, lb in iterate_batches(train, hp.batch_size, generator=state.generator):
            if state.abort is not None:
                break
            optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss = loss_fn(model(xb, lb), yb)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if clip is not None:
                norm = nn.utils.clip_grad_norm_(params, clip, foreach=True).detach().float()
                if scaler is not None:  # an overflowing step is the scaler's to skip, not a divergence
                    norm = torch.where(norm.isfinite(), norm, torch.zeros_like(norm))
                norm_max = torch.maximum(norm_max, norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            loss_sum += loss.detach().float() * yb.shape[0]
        return loss_sum, norm_max

    def _evaluate(
        self, model: nn.Module, split: Split, loss_fn: nn.Module, task: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed loss and summed metric (correct count, or squared error) over ``split``.

        In full precision even where training runs mixed: this value selects and prunes trials,
        and bf16's 8-bit mantissa would add noise of about 0.4% to every forecast.
        """
        model.eval()
        loss_sum = torch.zeros((), device=self.device)
        metric_sum = torch.zeros((), device=self.device)
        with torch.inference_mode():
            for xb, yb, lb in iterate_batches(split, self.eval_batch_size, generator=None):
                out = model(xb, lb).float()
                loss_sum += loss_fn(out, yb) * yb.shape[0]
                if task == "classification":
                    metric_sum += (out.argmax(dim=1) == yb).sum()
                else:
                    metric_sum += ((out - yb) ** 2).sum()
        return loss_sum, metric_sum

    def evaluate(self, model: nn.Module, data: SequenceData, split: str = "test") -> float:
        """The task's metric (accuracy, or RMSE in original units) of ``model`` on a split."""
        _require_samples(data, "evaluate")
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")
        part = _to_device(getattr(data, split), self.device)
        model = _network(model)
        model.to(self.device)
        _check_output_size(model, part, data)
        loss_fn: nn.Module = nn.CrossEntropyLoss() if data.task == "classification" else nn.MSELoss()
        _, metric_sum = self._evaluate(model, part, loss_fn, data.task)
        return _finish_metric(float(metric_sum.item()), len(part), data)

    def predict(self, model: nn.Module, split: Split) -> torch.Tensor:
        """Raw outputs for every sequence of ``split`` (``data.test``, say), in order, on the CPU.

        These are in the trainer's standardised units, as ``split`` is: class logits, or forecasts
        that ``out * data.target_scale + data.target_mean`` puts back in the target's units (for
        ``forecast="change"`` samples, the change from each window's last target value, which is
        added to give the forecast; a loaded model does both).
        """
        if not isinstance(split, Split):
            raise TypeError(f"predict takes a Split such as data.test, got {type(split).__name__}")
        model = _network(model)
        model.to(self.device).eval()
        part = _to_device(split, self.device)
        outs = []
        with torch.inference_mode():
            for xb, _, lb in iterate_batches(part, self.eval_batch_size, generator=None):
                outs.append(model(xb, lb).float().cpu())
        out = torch.cat(outs)
        if part.lengths is None:
            return out
        # variable-length batches come longest first: put each output back at its sequence
        ordered = torch.empty_like(out)
        ordered[torch.from_numpy(_longest_first(part.lengths.numpy()))] = out
        return ordered


def _cpu(value: Any) -> Any:
    """A copy of ``value`` with every tensor in it (through dicts, lists and tuples) on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cpu(v) for v in value)
    return copy.deepcopy(value)


def _finish_metric(total: float, n: int, data: SequenceData) -> float:
    if data.task == "classification":
        return total / n
    return math.sqrt(total / n) * data.target_scale


def _to_device(split: Split, device: torch.device) -> Split:
    if split.X.device == device:
        return split
    return Split(split.X.to(device), split.y.to(device), split.lengths)


BUCKET_NOISE = 3.0


def iterate_batches(
    split: Split, batch_size: int, *, generator: torch.Generator | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Yield ``(X, y, lengths)`` batches; shuffled when a ``generator`` is given.

    Equal-length data is shuffled once per epoch and sliced into contiguous
    batches. Variable-length data is bucketed: sorted by length plus a little
    random noise (so batches change from epoch to epoch), cut into batches
    trimmed to their own longest sequence, and served in random order.
    ``lengths`` is ``None`` for a batch whose sequences all fill it.
    """
    n = len(split)
    if split.lengths is None:
        if generator is not None:
            perm = torch.randperm(n, generator=generator).to(split.X.device)
            X, y = split.X[perm], split.y[perm]
        else:
            X, y = split.X, split.y
        for start in range(0, n, batch_size):
            yield X[start : start + batch_size], y[start : start + batch_size], None
        return
    lengths = split.lengths.numpy()
    if generator is None:
        order = _longest_first(lengths)
        starts = list(range(0, n, batch_size))
    else:
        # Sort by length plus noise of up to BUCKET_NOISE steps: batches hold sequences of
        # nearly equal length yet differ from epoch to epoch; then serve them in random order.
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        order = np.argsort(-(lengths + rng.uniform(0.0, BUCKET_NOISE, size=n)), kind="stable")
        starts = [int(i) * batch_size for i in rng.permutation(-(-n // batch_size))]
    sorted_lengths = lengths[order]
    index_all = torch.from_numpy(order).to(split.X.device)
    for start in starts:
        index = index_all[start : start + batch_size]
        batch_lengths = sorted_lengths[start : start + batch_size]
        longest = int(batch_lengths.max())
        lb = None if batch_lengths.min() == longest else torch.from_numpy(batch_lengths)
        yield split.X[index, :longest], split.y[index], lb


def _longest_first(lengths: np.ndarray) -> np.ndarray:
    """The order in which unshuffled variable-length batches serve sequences: longest first."""
    return np.argsort(-lengths, kind="stable")
