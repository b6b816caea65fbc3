"""The recurrent model and the weight initialisers sampled for it.

:class:`RecurrentNet` is an ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (batch first)
followed by dropout and a linear head on the last hidden state of the last
layer (both directions concatenated when bidirectional). In variable-length
batches padding never reaches the head: a unidirectional net reads each
sequence's output at its own last step, a bidirectional one packs the batch.

Initialisers act per gate block: ``weight_ih_l*`` of an LSTM holds four
``hidden x input`` blocks (input, forget, cell, output gates) and each is
initialised on its own, so that an orthogonal recurrent initialiser gives four
orthogonal ``hidden x hidden`` matrices rather than one tall one.

Example::

    import torch
    from optuna_rnn import Hyperparams, build_model

    model = build_model(Hyperparams(cell="gru", hidden_size=8), input_size=3, output_size=2)
    logits = model(torch.randn(5, 7, 3))
    assert logits.shape == (5, 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from optuna_rnn.space import Hyperparams, Task, check_task

_CELLS: dict[str, type[nn.LSTM] | type[nn.GRU] | type[nn.RNN]] = {
    "lstm": nn.LSTM,
    "gru": nn.GRU,
    "rnn": nn.RNN,
}
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


class RecurrentNet(nn.Module):
    """A recurrent encoder with a linear head on its final hidden state."""

    def __init__(
        self,
        *,
        cell: str,
        input_size: int,
        hidden_size: int,
        output_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.cell = cell
        self.directions = 2 if bidirectional else 1
        self.rnn = _CELLS[cell](
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size * self.directions, output_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Map ``x`` (batch, time, features) to (batch, outputs).

        ``lengths`` (a CPU tensor) gives each sequence's true length in a padded
        batch; steps past it never reach the output. A unidirectional network
        runs over the padded batch (one fused kernel) and reads each sequence's
        output at its own last step: a recurrence only looks back, so later
        padding cannot change it. A bidirectional one packs the batch, since
        its backward direction would otherwise start in the padding.
        """
        if lengths is None:
            _, state = self.rnn(x)
        elif self.directions == 1:
            output, _ = self.rnn(x)
            index = (lengths - 1).to(x.device)
            last_step: torch.Tensor = output[torch.arange(x.shape[0], device=x.device), index]
            return self.head(self.dropout(last_step))
        else:
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            _, state = self.rnn(packed)
        hidden = state[0] if isinstance(state, tuple) else state
        last = hidden[-self.directions :].transpose(0, 1).reshape(x.shape[0], -1)
        out: torch.Tensor = self.head(self.dropout(last))
        return out


class OriginalUnits(nn.Module):
    """A trained :class:`RecurrentNet` that reads and answers in the units of the user's data.

    The trainer sees standardised data: each input channel minus its training-split mean,
    divided by its standard deviation, and for forecasting the target likewise. A model file
    keeps those statistics, and :func:`~optuna_rnn.load_model_file` wraps the network with
    them: ``model(x, lengths)`` takes raw inputs and returns class logits, or forecasts in the
    target's units. ``net`` is the network itself, for data that is already standardised.

    What the file knows about its data is kept alongside: ``task``, ``classes`` (the label of
    each logit, in order) and ``hyperparams`` (``hyperparams.window`` is the number of steps a
    forecaster reads); for a forecaster, ``columns`` (the input channels' names, in the order
    ``x`` must hold them), ``target`` (the forecast column's name) and ``horizon`` (how many steps
    after the last input row the forecast is for); ``None`` where the file does not say.
    ``relative_channel`` is set for a forecaster of changes (``forecast="change"``): that input
    channel is read relative to its last step, and the forecast is that last value plus the
    predicted change.
    """

    def __init__(
        self,
        net: RecurrentNet,
        *,
        input_mean: Sequence[float],
        input_std: Sequence[float],
        target_mean: float = 0.0,
        target_scale: float = 1.0,
        task: Task | None = None,
        classes: Sequence[Any] | None = None,
        hyperparams: Hyperparams | None = None,
        columns: Sequence[str] | None = None,
        target: str | None = None,
        horizon: int | None = None,
        relative_channel: int | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        # Float64, as the trainer standardised with them: a float32 mean of 1e8 is off by up to 4.
        self.input_mean: torch.Tensor
        self.input_std: torch.Tensor
        self.register_buffer("input_mean", torch.tensor(input_mean, dtype=torch.float64))
        self.register_buffer("input_std", torch.tensor(input_std, dtype=torch.float64))
        self.target_mean = target_mean
        self.target_scale = target_scale
        self.task = task
        self.classes = tuple(classes) if classes is not None else None
        self.hyperparams = hyperparams
        self.columns = tuple(columns) if columns is not None else None
        self.target = target
        self.horizon = horizon
        self.relative_channel = relative_channel

    def _apply(self, fn: Any, recurse: bool = True) -> OriginalUnits:
        """Move the statistics with the module, but keep them float64: ``model.float()`` or
        ``model.half()`` would round a mean of 100000003.7 to 1e8, or to infinity."""
        kept = {"input_mean": self.input_mean, "input_std": self.input_std}
        super()._apply(fn, recurse)
        for name, value in kept.items():
            self._buffers[name] = value.to(getattr(self, name).device)
        return self

    def forward(self, x: torch.Tensor | np.ndarray, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (batch, time, features) in original units; steps past ``lengths`` are ignored.

        ``x`` is a tensor or a NumPy array. The answer has ``x``'s precision: give float64 (NumPy's
        default) for data whose level is large against its changes (a meter reading of 1e8 that
        moves by 20), float32 otherwise.
        """
        x = torch.as_tensor(x, device=self.input_mean.device)
        channels = self.input_mean.numel()
        if x.ndim != 3 or x.shape[-1] != channels:
            # a (batch, time, 1) input would broadcast over every channel and answer wrongly
            raise ValueError(
                f"the model reads input shaped (batch, time, {channels}): {channels} channels, as in "
                f"training; got {tuple(x.shape)}"
            )
        if lengths is not None:
            lengths = _checked_lengths(lengths, batch=x.shape[0], steps=x.shape[1])
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        mean, std = self.input_mean.to(dtype), self.input_std.to(dtype)
        weights = next(self.net.parameters()).dtype
        raw = x.to(dtype)
        last = None
        if self.relative_channel is not None:  # that channel relative to its last step
            at = (lengths.to(x.device) - 1) if lengths is not None else torch.full((len(x),), x.shape[1] - 1)
            last = raw[torch.arange(len(x)), at.to(x.device), self.relative_channel].unsqueeze(1)
            raw = raw.clone()
            raw[:, :, self.relative_channel] -= last
        out = self.net(((raw - mean) / std).to(weights), lengths).to(dtype)
        answer: torch.Tensor = out * self.target_scale + self.target_mean
        if last is not None:
            answer = answer + last
        return answer.to(x.dtype) if x.is_floating_point() else answer


def _checked_lengths(lengths: Any, *, batch: int, steps: int) -> torch.Tensor:
    """``lengths`` as a CPU tensor, one per sequence, each in 1..``steps``; else a clear ``ValueError``."""
    lengths = torch.as_tensor(lengths).cpu()
    if lengths.shape != (batch,) or lengths.is_floating_point():
        shape = tuple(lengths.shape)
        raise ValueError(f"lengths must hold one whole number per sequence ({batch}), got shape {shape}")
    low, high = (int(lengths.min()), int(lengths.max())) if batch else (1, 1)
    if low < 1 or high > steps:
        raise ValueError(f"lengths must lie in 1..{steps} (the batch's time steps), got {low}..{high}")
    return lengths


def build_model(
    hp: Hyperparams,
    *,
    input_size: int,
    output_size: int,
    task: Task = "classification",
) -> RecurrentNet:
    """Build the network that ``hp`` describes, with its initialisers applied.

    ``output_size`` is the number of classes for classification and the number
    of predicted values (usually 1) for forecasting; ``task`` is accepted so
    that callers can pass a dataset's description unchanged.
    """
    check_task(task)  # the architecture is the same; the loss differs, in the trainer
    for name, size in (("input_size", input_size), ("output_size", output_size)):
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {size!r}")
    model = RecurrentNet(
        cell=hp.cell,
        input_size=input_size,
        hidden_size=hp.hidden_size,
        output_size=output_size,
        num_layers=hp.num_layers,
        bidirectional=hp.bidirectional,
        dropout=hp.dropout,
    )
    initialise(model.rnn, hp)
    return model


def initialise(rnn: nn.RNNBase, hp: Hyperparams) -> None:
    """Apply ``hp.input_init``, ``hp.recurrent_init`` and the LSTM forget bias to ``rnn``.

    Biases start at zero, except the LSTM forget gate whose input-side bias is
    ``hp.forget_bias`` (so the gate's total bias is exactly that value).
    """
    gates = _GATES[hp.cell]
    with torch.no_grad():
        for name, param in rnn.named_parameters():
            if name.startswith("weight_ih"):
                for block in param.chunk(gates, dim=0):
                    init_matrix(block, hp.input_init)
            elif name.startswith("weight_hh"):
                for block in param.chunk(gates, dim=0):
                    init_matrix(block, hp.recurrent_init)
            elif name.startswith("bias"):
                param.zero_()
                if hp.cell == "lstm" and name.startswith("bias_ih"):
                    param.chunk(4, dim=0)[1].fill_(hp.forget_bias)


def init_matrix(weight: torch.Tensor, scheme: str) -> None:
    """Initialise one ``out x in`` block in place.

    ``uniform`` is PyTorch's own U(-1/sqrt(out), 1/sqrt(out)); ``normal`` is
    N(0, 1/out) with the same scale; Xavier (Glorot) and He (Kaiming, fan-in,
    ReLU gain) use the block's own fans; ``orthogonal`` is Saxe et al.'s
    orthogonal matrix, the usual choice for recurrent weights.
    """
    bound = 1.0 / math.sqrt(weight.shape[0])
    if scheme == "uniform":
        nn.init.uniform_(weight, -bound, bound)
    elif scheme == "normal":
        nn.init.normal_(weight, 0.0, bound)
    elif scheme == "xavier_uniform":
        nn.init.xavier_uniform_(weight)
    elif scheme == "xavier_normal":
        nn.init.xavier_normal_(weight)
    elif scheme == "kaiming_uniform":
        nn.init.kaiming_uniform_(weight, nonlinearity="relu")
    elif scheme == "kaiming_normal":
        nn.init.kaiming_normal_(weight, nonlinearity="relu")
    elif scheme == "orthogonal":
        nn.init.orthogonal_(weight)
    else:
        raise ValueError(f"unknown initialiser {scheme!r}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
