from __future__ import annotations

import math

import pytest
import torch

from optuna_rnn import Hyperparams, build_model

CELLS_GATES = [("lstm", 4), ("gru", 3), ("rnn", 1)]


def blocks(model: torch.nn.Module, prefix: str, gates: int) -> list[torch.Tensor]:
    """Each gate's block of every ``prefix`` weight; never empty, so loops over it check something."""
    found = [
        block
        for name, p in model.rnn.named_parameters()
        if name.startswith(prefix)
        for block in p.detach().chunk(gates, dim=0)
    ]
    assert found and len(found) % gates == 0, f"no {prefix} weights of {gates} gates"
    return found


@pytest.mark.parametrize(("cell", "gates"), CELLS_GATES)
def test_orthogonal_recurrent_blocks(cell: str, gates: int) -> None:
    hp = Hyperparams(cell=cell, hidden_size=24, num_layers=2, bidirectional=True, recurrent_init="orthogonal")
    model = build_model(hp, input_size=5, output_size=3)
    found = blocks(model, "weight_hh", gates)
    assert len(found) == gates * 2 * 2  # gates x layers x directions
    for w in found:
        assert torch.allclose(w @ w.T, torch.eye(24), atol=1e-5)


@pytest.mark.parametrize(("cell", "gates"), CELLS_GATES)
@pytest.mark.parametrize(
    ("scheme", "expected_std"),
    [
        ("xavier_uniform", lambda fi, fo: math.sqrt(2 / (fi + fo))),
        ("xavier_normal", lambda fi, fo: math.sqrt(2 / (fi + fo))),
        ("kaiming_uniform", lambda fi, fo: math.sqrt(2 / fi)),
        ("kaiming_normal", lambda fi, fo: math.sqrt(2 / fi)),
        ("uniform", lambda fi, fo: 1 / math.sqrt(fo) / math.sqrt(3)),
        ("normal", lambda fi, fo: 1 / math.sqrt(fo)),
    ],
)
def test_input_initialisers_act_on_input_weights(cell: str, gates: int, scheme: str, expected_std) -> None:
    torch.manual_seed(0)
    hidden, inputs = 96, 16  # fans far apart, so that each scheme's spread is its own
    hp = Hyperparams(cell=cell, hidden_size=hidden, input_init=scheme, recurrent_init="orthogonal")
    model = build_model(hp, input_size=inputs, output_size=2)
    std = expected_std(inputs, hidden)
    for w in blocks(model, "weight_ih", gates):
        assert w.shape == (hidden, inputs)
        assert w.std().item() == pytest.approx(std, rel=0.1)
        assert abs(w.mean().item()) < 0.1 * std
        # a uniform draw never passes its bound sqrt(3) * std; about 8% of a normal one does
        beyond = (w.abs() > math.sqrt(3) * std * 1.001).float().mean().item()
        assert beyond == 0.0 if scheme.endswith("uniform") else beyond > 0.03
    # the recurrent weights kept their own (orthogonal) initialiser
    for w in blocks(model, "weight_hh", gates):
        assert torch.allclose(w @ w.T, torch.eye(hidden), atol=1e-4)


def test_recurrent_initialiser_other_than_orthogonal() -> None:
    hp = Hyperparams(cell="gru", hidden_size=128, recurrent_init="xavier_normal", input_init="uniform")
    model = build_model(hp, input_size=4, output_size=2)
    for w in blocks(model, "weight_hh", 3):
        assert w.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.1)
        assert not torch.allclose(w @ w.T, torch.eye(128), atol=1e-2)


def test_lstm_forget_gate_bias() -> None:
    hp = Hyperparams(cell="lstm", hidden_size=7, num_layers=2, bidirectional=True, forget_bias=1.7)
    model = build_model(hp, input_size=3, output_size=2)
    seen = {"bias_ih": 0, "bias_hh": 0}
    for name, p in model.rnn.named_parameters():
        if name.startswith("bias_ih"):
            i, f, g, o = p.detach().chunk(4)
            assert torch.all(f == 1.7)
            assert torch.all(torch.cat([i, g, o]) == 0)
            seen["bias_ih"] += 1
        elif name.startswith("bias_hh"):
            assert torch.all(p == 0)
            seen["bias_hh"] += 1
    assert seen == {"bias_ih": 4, "bias_hh": 4}  # 2 layers x 2 directions


def test_output_shapes_and_bidirectional_head() -> None:
    hp = Hyperparams(cell="gru", hidden_size=6, bidirectional=True, num_layers=3, dropout=0.2)
    model = build_model(hp, input_size=4, output_size=5)
    assert model.head.in_features == 12
    assert model.rnn.dropout == pytest.approx(0.2)
    assert model(torch.randn(3, 9, 4)).shape == (3, 5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_the_output(cell: str, bidirectional: bool) -> None:
    torch.manual_seed(1)
    hp = Hyperparams(cell=cell, hidden_size=8, num_layers=2, bidirectional=bidirectional)
    model = build_model(hp, input_size=3, output_size=4).eval()
    seq = torch.randn(1, 5, 3)
    alone = model(seq)
    padded = torch.full((3, 11, 3), 99.0)  # loud padding: it must not leak
    padded[1, :5] = seq[0]
    padded[0] = torch.randn(11, 3)
    padded[2, :2] = torch.randn(2, 3)
    batch = model(padded, torch.tensor([11, 5, 2]))
    assert torch.allclose(batch[1], alone[0], atol=1e-5)


def test_a_loaded_forecaster_answers_with_the_precision_of_its_input(tmp_path) -> None:
    import numpy as np

    from optuna_rnn import Trainer, load_model_file
    from optuna_rnn.artifacts import model_payload
    from optuna_rnn.data import ForecastSeries

    # A meter reading near 1e8 that moves by about 20: float32 steps by 8 there.
    rng = np.random.default_rng(0)
    level = 1e8 + 20 * np.sin(np.arange(200) / 4) + rng.normal(size=200)
    series = ForecastSeries(name="meter", values=level[:, None])
    hp = Hyperparams(cell="gru", hidden_size=4, window=6, batch_size=32)
    samples = series.windowed(hp.window)
    torch.manual_seed(0)
    net = build_model(hp, input_size=1, output_size=1, task="forecasting")
    trainer = Trainer(max_epochs=2, seed=0, device="cpu")
    trainer.fit(net, samples, hp)
    stats = {"input_mean": list(samples.input_mean), "input_std": list(samples.input_std)}
    stats |= {"target_mean": samples.target_mean, "target_scale": samples.target_scale}
    payload = model_payload(net, hp, input_size=1, output_size=1, task="forecasting", **stats)
    torch.save(payload, tmp_path / "meter.pt")
    model = load_model_file(tmp_path / "meter.pt")
    rows = series.target_times(hp.window)["test"]
    windows = torch.from_numpy(np.stack([level[t - hp.window : t] for t in rows])[:, :, None])
    with torch.inference_mode():
        forecast = model(windows)  # float64, as NumPy gives it: used to be a dtype error
    assert forecast.dtype == torch.float64
    rmse = float(np.sqrt(np.mean((forecast[:, 0].numpy() - level[rows]) ** 2)))
    assert rmse == pytest.approx(trainer.evaluate(net, samples, "test"), rel=1e-5)
    assert model(windows.float()).dtype == torch.float32  # float32 in, float32 out, as before
    model.float()  # used to round the statistics to float32 with the weights: forecasts off by 0.05
    assert model.input_mean.dtype == torch.float64 and torch.equal(model(windows), forecast)
    # The statistics stay in the state dict; one saved with float32 statistics still loads.
    state = {
        **model.state_dict(),
        "input_mean": model.input_mean.float(),
        "input_std": model.input_std.float(),
    }
    model.load_state_dict(state)
    assert model.input_mean.dtype == torch.float64 and model.input_mean.item() == pytest.approx(1e8, abs=20)
