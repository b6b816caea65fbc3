from __future__ import annotations

import contextlib
import inspect
import math
import threading
from collections.abc import Sequence

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial

from optuna_rnn import (
    Choice,
    Diverged,
    DivergenceGuard,
    EarlyStopping,
    Hyperparams,
    PruningCallback,
    SearchSpace,
    Trainer,
    build_model,
    load_dataset,
)
from optuna_rnn.data import SequenceData
from optuna_rnn.training import Callback, TrainState, make_optimizer


@pytest.fixture(scope="module")
def digits() -> SequenceData:
    data = load_dataset("digits")
    assert isinstance(data, SequenceData)
    return data


@pytest.mark.parametrize(
    ("optimizer", "cls", "expected"),
    [
        ("sgd", torch.optim.SGD, ("momentum", "nesterov")),
        ("adam", torch.optim.Adam, ("betas",)),
        ("adamw", torch.optim.AdamW, ("betas",)),
        ("rmsprop", torch.optim.RMSprop, ("alpha",)),
    ],
)
def test_optimiser_gets_the_sampled_parameters(optimizer: str, cls: type, expected: tuple[str, ...]) -> None:
    space = SearchSpace(optimizer=Choice([optimizer]))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    trial = study.ask()
    hp = space.suggest(trial)
    opt = make_optimizer(build_model(hp, input_size=2, output_size=2), hp)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == trial.params["lr"]
    decay = "adamw_weight_decay" if optimizer == "adamw" else "weight_decay"  # decoupled: its own range
    assert group["weight_decay"] == trial.params[decay]
    if "momentum" in expected:
        assert group["momentum"] == trial.params["momentum"]
        assert group["nesterov"] == trial.params["nesterov"]
    if "betas" in expected:
        assert group["betas"] == (trial.params["beta1"], trial.params["beta2"])
    if "alpha" in expected:
        assert group["alpha"] == trial.params["rmsprop_alpha"]


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_weight_decay_changes_the_update(optimizer: str) -> None:
    def one_step(weight_decay: float) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        hp = Hyperparams(
            cell="gru", hidden_size=4, optimizer=optimizer, lr=0.1, weight_decay=weight_decay, momentum=0.0
        )
        model = build_model(hp, input_size=2, output_size=2)
        opt = make_optimizer(model, hp)
        x, y = torch.randn(8, 5, 2), torch.randint(0, 2, (8,))
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        return {k: v.clone() for k, v in model.state_dict().items()}

    plain, decayed = one_step(0.0), one_step(0.1)
    assert any(not torch.allclose(plain[k], decayed[k]) for k in plain)
    if optimizer == "sgd":
        # plain SGD with L2: the update differs by exactly lr * wd * w
        torch.manual_seed(0)
        w0 = build_model(Hyperparams(cell="gru", hidden_size=4), input_size=2, output_size=2).state_dict()
        key = "rnn.weight_ih_l0"
        assert torch.allclose(plain[key] - decayed[key], 0.1 * 0.1 * w0[key], atol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_weight_decay_is_l2_except_for_adamw_where_it_is_decoupled(optimizer: str) -> None:
    lr, wd = 0.01, 0.1
    hp = Hyperparams(cell="gru", hidden_size=4, optimizer=optimizer, lr=lr, weight_decay=wd, momentum=0.0)
    torch.manual_seed(0)
    model = build_model(hp, input_size=2, output_size=2)
    before = model.rnn.weight_ih_l0.detach().clone()
    opt = make_optimizer(model, hp)
    (model(torch.randn(4, 3, 2)) * 0.0).sum().backward()  # zero gradients: only the decay moves w
    opt.step()
    step = before - model.rnn.weight_ih_l0.detach()
    if optimizer in ("sgd", "adamw"):  # w <- w - lr * wd * w (for SGD the L2 gradient gives the same)
        expected = lr * wd * before
    elif optimizer == "adam":  # the L2 gradient wd * w goes through Adam's normalisation: lr * sign(w)
        expected = lr * torch.sign(before)
    else:  # RMSprop divides the L2 gradient by its root mean square, sqrt(1 - alpha) * |wd * w|
        expected = lr * torch.sign(before) / math.sqrt(1 - hp.rmsprop_alpha)
    assert torch.allclose(step, expected, rtol=1e-3, atol=1e-7)


def test_fit_learns_and_is_repeatable(digits: SequenceData) -> None:
    hp = Hyperparams(cell="gru", hidden_size=16, batch_size=128, lr=1e-2)

    def fit() -> tuple[float, list[float]]:
        torch.manual_seed(0)
        model = build_model(hp, input_size=digits.input_size, output_size=digits.output_size)
        result = Trainer(max_epochs=4, seed=0, device="cpu").fit(model, digits, hp)
        return result.best_value, [h["train_loss"] for h in result.history]

    (value_a, losses_a), (value_b, losses_b) = fit(), fit()
    assert value_a > 0.5  # ten classes: chance is 0.1
    assert losses_a == losses_b and value_a == value_b
    assert losses_a[-1] < losses_a[0]


def test_gradient_clipping_bounds_the_step(digits: SequenceData) -> None:
    hp = Hyperparams(
        cell="rnn", hidden_size=8, optimizer="sgd", lr=1.0, momentum=0.0, grad_clip=1e-3, batch_size=4096
    )
    torch.manual_seed(0)
    model = build_model(hp, input_size=digits.input_size, output_size=digits.output_size)
    before = torch.nn.utils.parameters_to_vector(model.parameters()).clone()
    Trainer(max_epochs=1, seed=0, device="cpu").fit(model, digits, hp)
    after = torch.nn.utils.parameters_to_vector(model.parameters())
    # one full batch, one SGD step of lr=1 with the gradient clipped to norm 1e-3
    assert (after - before).norm().item() == pytest.approx(1e-3, rel=1e-3)


def test_divergence_guard_stops_a_diverging_run() -> None:
    data = load_dataset("sunspots").windowed(8)
    hp = Hyperparams(cell="lstm", hidden_size=16, optimizer="sgd", lr=20.0, grad_clip=None)
    torch.manual_seed(0)
    model = build_model(hp, input_size=data.input_size, output_size=1)
    with pytest.raises(Diverged, match="diverged at epoch"):
        Trainer(max_epochs=20, seed=0, device="cpu", callbacks=[DivergenceGuard()]).fit(model, data, hp)


def test_divergence_guard_on_exploding_gradient_norm(digits: SequenceData) -> None:
    hp = Hyperparams(cell="gru", hidden_size=8, grad_clip=1.0)
    model = build_model(hp, input_size=digits.input_size, output_size=digits.output_size)
    with pytest.raises(Diverged, match="gradient norm .* exceeds 1e-09"):
        Trainer(max_epochs=3, device="cpu", callbacks=[DivergenceGuard(max_grad_norm=1e-9)]).fit(
            model, digits, hp
        )
    norms: list[float] = []

    class Norms(Callback):
        def on_epoch_end(self, state: TrainState) -> None:
            norms.append(state.grad_norm)

    unclipped = Hyperparams(cell="gru", hidden_size=8, grad_clip=None, batch_size=512)
    Trainer(max_epochs=1, device="cpu", callbacks=[Norms()]).fit(model, digits, unclipped)
    assert math.isnan(norms[0])  # not measured without clipping: unknown, not a reassuring 0


def test_weights_gone_non_finite_in_an_epochs_last_step_are_neither_best_nor_complete(
    digits: SequenceData,
) -> None:
    # One full batch per epoch: the step that breaks the weights comes after the (finite) training
    # loss, and NaN logits still score an accuracy (argmax picks class 0). No clipping to see it.
    hp = Hyperparams(cell="gru", hidden_size=4, batch_size=4096, optimizer="sgd", lr=0.1, grad_clip=None)

    def broken_model() -> torch.nn.Module:
        torch.manual_seed(0)
        model = build_model(hp, input_size=digits.input_size, output_size=digits.output_size)
        model.head.weight.register_hook(lambda grad: torch.full_like(grad, math.inf))
        return model

    with pytest.raises(Diverged, match="diverged at epoch 1: validation loss is nan"):
        Trainer(max_epochs=1, seed=0, device="cpu", callbacks=[DivergenceGuard()]).fit(
            broken_model(), digits, hp
        )
    result = Trainer(max_epochs=2, seed=0, device="cpu").fit(broken_model(), digits, hp)  # no guard
    assert math.isnan(result.history[0]["val_loss"]) and 0 < result.history[0]["val_metric"] < 1
    assert result.best_epoch == 0 and math.isnan(result.best_value)


class _ScaledCpuTrainer(Trainer):
    """The CUDA mixed-precision path's gradient scaling, run on the CPU (autocast itself stays off)."""

    def __init__(self, **options: object) -> None:
        super().__init__(device="cpu", **options)  # type: ignore[arg-type]
        self.amp_dtype = torch.float16

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()


def test_an_overflow_that_the_gradient_scaler_skips_is_not_a_divergence(digits: SequenceData) -> None:
    # In float16 an overflowing step is routine: the scaler skips it and halves its scale.
    class OverflowOnce(Callback):
        def on_train_begin(self, state: TrainState) -> None:
            calls = []

            def overflow(grad: torch.Tensor) -> torch.Tensor:
                calls.append(1)
                return grad * math.inf if len(calls) == 1 else grad

            next(state.model.parameters()).register_hook(overflow)

        def on_train_end(self, state: TrainState) -> None:
            assert state.scaler is not None
            scales.append(state.scaler.get_scale())

    scales: list[float] = []
    hp = Hyperparams(cell="gru", hidden_size=8, grad_clip=1.0, batch_size=256)
    torch.manual_seed(0)
    model = build_model(hp, input_size=digits.input_size, output_size=digits.output_size)
    trainer = _ScaledCpuTrainer(max_epochs=2, seed=0, callbacks=[DivergenceGuard(), OverflowOnce()])
    result = trainer.fit(model, digits, hp)
    assert result.stop_reason == "max_epochs" and result.epochs == 2
    assert scales == [2.0**15]  # started at 2**16, halved once by the skipped step
    assert all(math.isfinite(h["train_loss"]) for h in result.history)


def test_validation_scores_in_full_precision_where_training_runs_mixed(digits: SequenceData) -> None:
    class _BFloat16CpuTrainer(Trainer):  # mixed precision as on a GPU, here on the CPU
        def _autocast(self) -> contextlib.AbstractContextManager[object]:
            return torch.autocast("cpu", dtype=torch.bfloat16)

    hp = Hyperparams(cell="gru", hidden_size=8, batch_size=256)
    torch.manual_seed(0)
    model = build_model(hp, input_size=digits.input_size, output_size=digits.output_size)
    result = _BFloat16CpuTrainer(max_epochs=2, seed=0, device="cpu").fit(model, digits, hp)
    # the value that selects and prunes trials is the one the test metric's fp32 evaluation gives
    assert result.best_value == Trainer(device="cpu").evaluate(model, digits, "valid")
    loss = torch.nn.CrossEntropyLoss()
    full = Trainer(device="cpu")._evaluate(model, digits.valid, loss, "classification")[0]
    assert _BFloat16CpuTrainer(device="cpu")._evaluate(model, digits.valid, loss, "classification")[0] == full


def test_early_stopping(digits: SequenceData) -> None:
    hp = Hyperparams(cell="gru", hidden_size=4, lr=1e-12, batch_size=256)  # learns nothing
    model = build_model(hp, input_size=digits.input_size, output_size=digits.output_size)
    result = Trainer(max_epochs=50, seed=0, device="cpu", callbacks=[EarlyStopping(patience=2)]).fit(
        model, digits, hp
    )
    assert result.epochs < 50
    assert result.stop_reason.startswith("early stopping")


class _SpoilAfter(Callback):
    """Scrambles the weights after ``epoch``, so that the epochs after it are worse."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch == self.epoch:
            with torch.no_grad():
                for p in state.model.parameters():
                    p.normal_(0.0, 3.0)


def test_best_epoch_weights_are_restored(digits: SequenceData) -> None:
    hp = Hyperparams(cell="gru", hidden_size=12, batch_size=128, lr=1e-2)
    torch.manual_seed(0)
    model = build_model(hp, input_size=digits.input_size, output_size=digits.output_size)
    trainer = Trainer(max_epochs=4, seed=0, device="cpu")
    result = trainer.fit(model, digits, hp, callbacks=[_SpoilAfter(2)])
    assert result.best_epoch == 2 and result.epochs == 4
    assert math.isclose(trainer.evaluate(model, digits, "valid"), result.best_value)


def test_sgd_with_nesterov_but_no_momentum_trains_without_it() -> None:
    hp = Hyperparams(cell="gru", hidden_size=4, optimizer="sgd", momentum=0.0, nesterov=True)
    group = make_optimizer(build_model(hp, input_size=2, output_size=2), hp).param_groups[0]
    assert group["momentum"] == 0.0 and group["nesterov"] is False
    hp = Hyperparams(cell="gru", hidden_size=4, optimizer="sgd", momentum=0.5, nesterov=True)
    assert make_optimizer(build_model(hp, input_size=2, output_size=2), hp).param_groups[0]["nesterov"]


class _NanWeights(Callback):
    def on_train_begin(self, state: TrainState) -> None:
        with torch.no_grad():
            for p in state.model.parameters():
                p.fill_(math.nan)


def test_early_stopping_counts_nan_epochs_as_no_improvement() -> None:
    series = load_dataset("sunspots").windowed(8)
    hp = Hyperparams(cell="gru", hidden_size=4, batch_size=256)
    model = build_model(hp, input_size=series.input_size, output_size=1, task="forecasting")
    trainer = Trainer(
        max_epochs=4, seed=0, device="cpu", callbacks=[_NanWeights(), EarlyStopping(patience=1)]
    )
    result = trainer.fit(model, series, hp)
    assert math.isnan(result.best_value) and result.best_epoch == 0
    assert result.epochs == 1 and result.stop_reason.startswith("early stopping")


def test_fit_leaves_torchs_global_generator_to_the_caller(digits: SequenceData) -> None:
    # Without dropout the model draws nothing at random while training (dropout masks come from
    # the global generator, which the caller seeds before building the model, as Objective does).
    hp = Hyperparams(cell="gru", hidden_size=4, batch_size=256)
    torch.manual_seed(123)
    untouched = torch.rand(1).item()
    for seed in (None, 7):  # its own random order, or its own seed: neither draws from the caller's
        model = build_model(hp, input_size=digits.input_size, output_size=digits.output_size)
        torch.manual_seed(123)
        Trainer(max_epochs=1, device="cpu", seed=seed).fit(model, digits, hp)
        assert torch.rand(1).item() == untouched


class _StopAt(Callback):
    """Asks the trainer to stop at once after ``epoch``, as a background check would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.ended_at: int | None = None

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch == self.epoch:
            state.stop_now(RuntimeError("stop requested"))

    def on_train_end(self, state: TrainState) -> None:
        self.ended_at = state.epoch


class _Raises(Callback):
    def on_train_end(self, state: TrainState) -> None:
        raise ValueError("from on_train_end")


def test_stop_now_abandons_the_next_epoch_and_keeps_the_finished_ones(digits: SequenceData) -> None:
    hp = Hyperparams(cell="gru", hidden_size=8, batch_size=64)
    model = build_model(hp, input_size=digits.input_size, output_size=digits.output_size)
    stop, later = _StopAt(2), _StopAt(99)
    with pytest.raises(RuntimeError, match="stop requested"):
        Trainer(max_epochs=5, seed=0, device="cpu").fit(model, digits, hp, callbacks=[stop, _Raises(), later])
    # every on_train_end ran, after a raising one too, and saw the last finished epoch;
    # the error from on_train_end did not mask the stop
    assert stop.ended_at == later.ended_at == 2


def test_stop_now_during_the_last_epoch_is_raised_not_dropped(digits: SequenceData) -> None:
    hp = Hyperparams(cell="gru", hidden_size=8, batch_size=256)
    model = build_model(hp, input_size=digits.input_size, output_size=digits.output_size)
    stop = _StopAt(2)
    with pytest.raises(RuntimeError, match="stop requested"):
        Trainer(max_epochs=2, seed=0, device="cpu").fit(model, digits, hp, callbacks=[stop])
    assert stop.ended_at == 2


def test_an_error_in_on_train_end_is_raised_after_the_others_ran(digits: SequenceData) -> None:
    hp = Hyperparams(cell="gru", hidden_size=8, batch_size=256)
    model = build_model(hp, input_size=digits.input_size, output_size=digits.output_size)
    later = _StopAt(99)
    with pytest.raises(ValueError, match="from on_train_end"):
        Trainer(max_epochs=1, seed=0, device="cpu").fit(model, digits, hp, callbacks=[_Raises(), later])
    assert later.ended_at == 1


class _PruneFrom(optuna.pruners.BasePruner):
    """Prunes every trial from ``step`` on; with ``until``, answers only once that event is set."""

    def __init__(self, step: int, until: threading.Event | None = None) -> None:
        self.step, self.until = step, until

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.last_step is None or trial.last_step < self.step:
            return False
        if self.until is not None:
            assert self.until.wait(timeout=60)
        return True


class _SetAt(Callback):
    def __init__(self, epoch: int, event: threading.Event) -> None:
        self.epoch, self.event = epoch, event

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch == self.epoch:
            self.event.set()


def _pruned_trial(
    digits: SequenceData,
    pruner: optuna.pruners.BasePruner,
    *,
    background: bool,
    first: Sequence[Callback] = (),
) -> FrozenTrial:
    hp = Hyperparams(cell="gru", hidden_size=8, batch_size=32)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    recorded: list[int] = []

    class Record(Callback):
        def on_train_end(self, state: TrainState) -> None:
            recorded.append(state.epoch)

    def objective(trial: optuna.Trial) -> float:
        model = build_model(hp, input_size=digits.input_size, output_size=digits.output_size)
        callbacks = [*first, PruningCallback(trial, background=background), Record()]
        trainer = Trainer(max_epochs=6, seed=0, device="cpu")
        return trainer.fit(model, digits, hp, callbacks=callbacks).best_value

    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert sorted(trial.intermediate_values) == list(range(1, recorded[0] + 1))
    return trial


@pytest.mark.parametrize("background", [False, True])
def test_pruning_stops_at_the_judged_epoch(digits: SequenceData, background: bool) -> None:
    trial = _pruned_trial(digits, _PruneFrom(2), background=background)
    # in the background the verdict normally lands while epoch 3 trains, which is then abandoned
    assert max(trial.intermediate_values) in ((2,) if not background else (2, 3))


def test_a_verdict_slower_than_an_epoch_prunes_at_the_epoch_after(digits: SequenceData) -> None:
    epoch_3_done = threading.Event()
    pruner = _PruneFrom(2, until=epoch_3_done)
    trial = _pruned_trial(digits, pruner, background=True, first=[_SetAt(3, epoch_3_done)])
    assert max(trial.intermediate_values) == 3


def test_the_last_epoch_is_judged_before_fit_returns(digits: SequenceData) -> None:
    trial = _pruned_trial(digits, _PruneFrom(6), background=True)
    assert max(trial.intermediate_values) == 6


def test_a_stop_inside_an_epoch_leaves_the_epoch_count_at_the_epochs_that_finished(digits) -> None:
    hp = Hyperparams(cell="gru", hidden_size=4, batch_size=256)
    model = build_model(hp, input_size=digits.input_size, output_size=digits.output_size)
    seen: list[tuple[int, int]] = []

    class Record(Callback):
        finished = 0

        def on_epoch_end(self, state: TrainState) -> None:
            self.finished += 1

        def on_train_end(self, state: TrainState) -> None:
            seen.append((state.epoch, len(state.history)))

    record = Record()

    def stop_in_the_third_epoch(module: torch.nn.Module, args: object) -> None:
        if record.finished == 2:
            raise KeyboardInterrupt  # as Ctrl-C does in the middle of a batch

    model.register_forward_pre_hook(stop_in_the_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        Trainer(max_epochs=5, device="cpu", seed=0).fit(model, digits, hp, callbacks=[record])
    assert seen == [(2, 2)]


def test_mixed_precision_is_off_unless_asked_for() -> None:
    # On an H200, bf16 autocast made every net of the GPU benchmark 1.29-1.65x slower per epoch.
    assert inspect.signature(Trainer).parameters["mixed_precision"].default is False


@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_a_raw_forecasting_series_is_refused_with_how_to_cut_it(method: str) -> None:
    series = load_dataset("sunspots")
    hp = Hyperparams(hidden_size=4)
    model = build_model(hp, input_size=1, output_size=1, task="forecasting")
    trainer = Trainer(device="cpu")
    with pytest.raises(TypeError, match=rf"{method} takes SequenceData, got ForecastSeries.*windowed"):
        if method == "fit":
            trainer.fit(model, series, hp)  # type: ignore[arg-type]
        else:
            trainer.evaluate(model, series)  # type: ignore[arg-type]
