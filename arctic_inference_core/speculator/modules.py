"""PyTorch modules of the Arctic speculator draft heads.

Both heads read the base model's last hidden state ``h`` ([batch,
input_hidden_dim]) and the last accepted token, and run ``n_predict`` heads in
sequence; head ``i`` consumes the state of head ``i-1`` and the token that head
``i-1`` proposed. Tensor names follow the published checkpoints (see
docs/speculator.md) so that ``state_dict()`` is the checkpoint layout.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeVar

import torch
from torch import nn

from arctic_inference_core.speculator.config import SpeculatorConfig
from arctic_inference_core.speculator.draft import draft

__all__ = ["SpeculatorLayerNorm", "MLPSpeculator", "LSTMSpeculator", "SpeculatorBase"]

_SQRT2 = math.sqrt(2.0)

_M = TypeVar("_M", bound=nn.Module)


def _each(modules: Iterable[nn.Module], kind: type[_M]) -> list[_M]:
    """The modules of a ModuleList, typed (all are ``kind`` by construction)."""
    out = []
    for m in modules:
        if not isinstance(m, kind):
            raise TypeError(f"expected {kind.__name__}, got {type(m).__name__}")
        out.append(m)
    return out


class SpeculatorLayerNorm(nn.Module):
    """RMS-style normalisation of the MLP speculator (no mean subtraction).

    ``y = x * rsqrt(mean(x**2) + eps)``, then ``weight * y + bias`` when
    ``elementwise_scale_and_shift``. Computed in the input dtype, like the
    reference implementation.
    """

    def __init__(
        self, normalized_shape: int, eps: float = 1e-6, elementwise_scale_and_shift: bool = True
    ) -> None:
        super().__init__()
        self.normalized_shape = normalized_shape
        self.eps = eps
        self.elementwise_scale_and_shift = elementwise_scale_and_shift
        if elementwise_scale_and_shift:
            self.weight = nn.Parameter(torch.ones(normalized_shape))
            self.bias = nn.Parameter(torch.zeros(normalized_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.elementwise_scale_and_shift:
            y = self.weight * y + self.bias
        return y


def _n_unique(n_predict: int, tie: bool) -> int:
    return 1 if tie else n_predict


def _n_proj(n_predict: int, tie: bool) -> int:
    # the first projection reads the base hidden state (different width), so
    # tying keeps two: [first, shared] (as in the reference, even for n_predict=1)
    return 2 if tie else n_predict


class SpeculatorBase(nn.Module):
    """Common part of both heads: config, mixing weights, input scaling.

    Subclasses implement :meth:`initial_cell` and :meth:`step`; the generic
    greedy loop lives in :func:`arctic_inference_core.speculator.draft`.
    """

    config: SpeculatorConfig

    def __init__(self, config: SpeculatorConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.n_predict = config.n_predict
        self.input_hidden_dim = config.input_hidden_dim
        self.inner_dim = config.inner_dim
        self.vocab_size = config.vocab_size
        self.scale_input = config.scale_input
        self.tie_weights = config.tie_weights
        # fms-extras / ArcticInference conventions
        self.state_weight = 0.5 ** (0.5 / config.n_predict)
        self.emb_weight = math.sqrt((1.0 - self.state_weight**2) * (config.inner_dim / 2.0))
        # state*sw + emb*ew is computed as (state + emb * ew/sw) and the
        # following (scale-invariant) norm absorbs the sw factor
        self.emb_scale = self.emb_weight / self.state_weight
        self.activation = nn.GELU()
        if config.scale_input:
            self.ln0 = SpeculatorLayerNorm(
                config.input_hidden_dim, elementwise_scale_and_shift=False
            )

    # ---- indices of the (possibly tied) module used by head i -------------
    @staticmethod
    def _idx(i: int, n: int) -> int:
        return i if i < n else n - 1

    def check_compatible(self, base_hidden_size: int, base_vocab_size: int) -> None:
        """See :meth:`SpeculatorConfig.check_compatible`."""
        self.config.check_compatible(base_hidden_size, base_vocab_size)

    def _scale_input(self, h: torch.Tensor) -> torch.Tensor:
        if self.scale_input:
            scaled: torch.Tensor = self.ln0(h) / _SQRT2
            return scaled
        return h

    def initial_cell(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        """Recurrent cell state before head 0 (``None`` for stateless heads)."""
        return None

    def step(
        self, head_index: int, state: torch.Tensor, cell: torch.Tensor | None, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Run head ``head_index``.

        Args:
            head_index: 0-based head (static Python int).
            state: [batch, input_hidden_dim] for head 0, else [batch, inner_dim].
            cell: recurrent cell state (LSTM) or ``None``.
            tokens: [batch] int64, the previous token.

        Returns:
            ``(new_state, new_cell, logits)`` with logits [batch, vocab_size].
        """
        raise NotImplementedError

    def forward_logits(
        self, hidden_states: torch.Tensor, input_tokens: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced logits (training / scoring).

        Args:
            hidden_states: [batch, input_hidden_dim] base hidden state.
            input_tokens: [batch, n] int64 with ``n <= n_predict``; head ``i``
                consumes ``input_tokens[:, i]`` (column 0 is the last base
                token, column ``i`` the ``i``-th token after it).

        Returns:
            [batch, n, vocab_size] logits.
        """
        state, cell = hidden_states, self.initial_cell(hidden_states)
        out = []
        for i in range(input_tokens.shape[1]):
            state, cell, logits = self.step(i, state, cell, input_tokens[:, i])
            out.append(logits)
        return torch.stack(out, dim=1)

    def forward(self, hidden_states: torch.Tensor, last_tokens: torch.Tensor) -> torch.Tensor:
        """Greedy draft; same as :func:`~arctic_inference_core.speculator.draft`."""
        return draft(self, hidden_states, last_tokens)


class MLPSpeculator(SpeculatorBase):
    """MLP speculator (IBM fms-extras MLPSpeculator / ArcticMLPSpeculator).

    Per head ``i`` (state starts as the base hidden state ``h``)::

        if i == 0 and scale_input: state = rmsnorm(state) / sqrt(2)
        z     = emb[i](token)                          # [b, inner]
        state = proj[i](state) + z * emb_weight / state_weight
        state = gelu(ln[i](state))                     # ln: learned RMS norm
        logits = head[i](state); token = argmax(logits)

    With ``tie_weights`` one ``emb``/``ln``/``head`` is shared by all heads
    and ``proj`` holds ``[first, shared]``.

    Tensors: ``emb.{i}.weight`` [vocab, inner], ``proj.{i}.weight``
    [inner, input_hidden_dim (i=0) | inner], ``ln.{i}.weight``/``.bias``
    [inner], ``head.{i}.weight`` [vocab, inner].

    A stacked ``sum_rnn`` head (``config.stacked``: dotted widths) builds
    ``emb``, ``proj`` and ``ln`` as ArcticTraining's ``nn.Sequential``
    stacks, so its tensor names are the released ones
    (``emb.{i}.0.weight``, ``proj.{i}.3.weight``, ...)::

        emb[i]  = Embedding(vocab, p), then per further emb width: norm(p), GELU, Linear(p, p)
        proj[i] = Linear(in, p),       then per further proj width: norm(p), GELU, Linear(p, p)
        ln[i]   = norm(p),             then per further inner width q: GELU, Linear(prev, q), norm(q)

    and the LM heads and later projections read the last inner width.
    """

    def __init__(self, config: SpeculatorConfig) -> None:
        if config.method != "mlp":
            raise ValueError(f"MLPSpeculator needs method='mlp', got {config.method!r}")
        super().__init__(config)
        n, tie, d = config.n_predict, config.tie_weights, config.inner_dim
        out = config.out_dim
        if config.stacked:
            self.emb = nn.ModuleList(self._emb_stack() for _ in range(_n_unique(n, tie)))
            self.proj = nn.ModuleList(
                self._proj_stack(config.input_hidden_dim if j == 0 else out)
                for j in range(_n_proj(n, tie))
            )
            self.ln = nn.ModuleList(self._ln_stack() for _ in range(_n_unique(n, tie)))
        else:
            self.emb = nn.ModuleList(
                nn.Embedding(config.vocab_size, d) for _ in range(_n_unique(n, tie))
            )
            self.proj = nn.ModuleList(
                nn.Linear(config.input_hidden_dim if j == 0 else d, d, bias=False)
                for j in range(_n_proj(n, tie))
            )
            self.ln = nn.ModuleList(SpeculatorLayerNorm(d) for _ in range(_n_unique(n, tie)))
        self.head = nn.ModuleList(
            nn.Linear(out, config.vocab_size, bias=False) for _ in range(_n_unique(n, tie))
        )
        self.reset_parameters()

    # ArcticTraining's / Arctic Inference's sum_rnn stacks (same module order,
    # so the same state_dict names)
    def _emb_stack(self) -> nn.Sequential:
        c = self.config
        layers: list[nn.Module] = [nn.Embedding(c.vocab_size, c.inner_dim)]
        for _ in (c.emb_dims or (c.inner_dim,))[1:]:
            layers += [
                SpeculatorLayerNorm(c.inner_dim),
                nn.GELU(),
                nn.Linear(c.inner_dim, c.inner_dim, bias=False),
            ]
        return nn.Sequential(*layers)

    def _proj_stack(self, in_features: int) -> nn.Sequential:
        c = self.config
        layers: list[nn.Module] = [nn.Linear(in_features, c.inner_dim, bias=False)]
        for _ in (c.proj_dims or (c.inner_dim,))[1:]:
            layers += [
                SpeculatorLayerNorm(c.inner_dim),
                nn.GELU(),
                nn.Linear(c.inner_dim, c.inner_dim, bias=False),
            ]
        return nn.Sequential(*layers)

    def _ln_stack(self) -> nn.Sequential:
        dims = self.config.inner_dims or (self.config.inner_dim,)
        layers: list[nn.Module] = [SpeculatorLayerNorm(dims[0])]
        for prev, width in zip(dims, dims[1:]):
            layers += [nn.GELU(), nn.Linear(prev, width, bias=False), SpeculatorLayerNorm(width)]
        return nn.Sequential(*layers)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random init (fms-extras style); checkpoints overwrite it."""
        d = self.inner_dim
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(d))
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(m.in_features))
            elif isinstance(m, SpeculatorLayerNorm) and m.elementwise_scale_and_shift:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def step(
        self, head_index: int, state: torch.Tensor, cell: torch.Tensor | None, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        i = head_index
        if i == 0:
            state = self._scale_input(state)
        z = self.emb[self._idx(i, len(self.emb))](tokens)
        state = self.proj[self._idx(i, len(self.proj))](state)
        state = torch.add(state, z, alpha=self.emb_scale)
        state = self.activation(self.ln[self._idx(i, len(self.ln))](state))
        logits = self.head[self._idx(i, len(self.head))](state)
        return state, cell, logits


class LSTMSpeculator(SpeculatorBase):
    """Arctic "sum_lstm" speculator (ArcticLSTMSpeculator in ArcticInference).

    Per head ``i``, with cell state ``c`` (zeros before head 0, carried across
    heads) and ``p = inner_dim``::

        if i == 0 and scale_input: state = rmsnorm(state) / sqrt(2)
        z = emb(token)                     # [b, 4p]: the forget embedding
                                           # repeated 4x (tie_lstm_embs), else
                                           # cat(forget, input, output, cell) embs
        a = projs[i](state) + z * emb_weight / state_weight     # [b, 4p]
        f, in, o = sigmoid(a[:, :3p]).split(p)
        cand = gelu(cell_ln[i](a[:, 3p:])) * in
        c = c * f + cand
        state = gelu(state_ln[i](c)) * o
        logits = head[i](state); token = argmax(logits)

    The published checkpoints use ``tie_weights=True`` and
    ``tie_lstm_embs=True``: one ``forget_emb``/``cell_ln``/``state_ln``/
    ``head`` and ``projs = [first, shared]``. ``tie_weights=False`` (one set
    per head) and ``tie_lstm_embs=False`` (separate ``input_emb``,
    ``output_emb``, ``cell_emb`` concatenated in gate order) are extensions
    of this package; the reference vLLM code accepts neither.

    Tensors: ``forget_emb.{i}.weight`` [vocab, p] (plus ``input_emb``,
    ``output_emb``, ``cell_emb`` when untied), ``projs.{i}.weight``
    [4p, input_hidden_dim (i=0) | p], ``cell_ln.{i}.weight``/``.bias``,
    ``state_ln.{i}.weight``/``.bias`` [p], ``head.{i}.weight`` [vocab, p].
    """

    def __init__(self, config: SpeculatorConfig) -> None:
        if config.method != "sum_lstm":
            raise ValueError(f"LSTMSpeculator needs method='sum_lstm', got {config.method!r}")
        super().__init__(config)
        n, tie, p = config.n_predict, config.tie_weights, config.inner_dim
        self.tie_lstm_embs = config.tie_lstm_embs
        ne = _n_unique(n, tie)
        self.forget_emb = nn.ModuleList(nn.Embedding(config.vocab_size, p) for _ in range(ne))
        if not config.tie_lstm_embs:
            self.input_emb = nn.ModuleList(nn.Embedding(config.vocab_size, p) for _ in range(ne))
            self.output_emb = nn.ModuleList(nn.Embedding(config.vocab_size, p) for _ in range(ne))
            self.cell_emb = nn.ModuleList(nn.Embedding(config.vocab_size, p) for _ in range(ne))
        self.projs = nn.ModuleList(
            nn.Linear(config.input_hidden_dim if j == 0 else p, 4 * p, bias=False)
            for j in range(_n_proj(n, tie))
        )
        self.cell_ln = nn.ModuleList(SpeculatorLayerNorm(p) for _ in range(ne))
        self.state_ln = nn.ModuleList(SpeculatorLayerNorm(p) for _ in range(ne))
        self.head = nn.ModuleList(nn.Linear(p, config.vocab_size, bias=False) for _ in range(ne))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random init; checkpoints overwrite it."""
        p = self.inner_dim
        for name in ("forget_emb", "input_emb", "output_emb", "cell_emb"):
            for e in getattr(self, name, ()):
                nn.init.normal_(e.weight, 0.0, 1.0 / math.sqrt(p))
        for lin in _each(self.projs, nn.Linear):
            nn.init.normal_(lin.weight, 0.0, 1.0 / math.sqrt(lin.in_features))
        for h in _each(self.head, nn.Linear):
            nn.init.normal_(h.weight, 0.0, 1.0 / math.sqrt(p))
        for ln in _each([*self.cell_ln, *self.state_ln], SpeculatorLayerNorm):
            nn.init.ones_(ln.weight)
            nn.init.zeros_(ln.bias)

    def initial_cell(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states.new_zeros(hidden_states.shape[:-1] + (self.inner_dim,))

    def _token_emb(self, j: int, tokens: torch.Tensor) -> torch.Tensor:
        f = self.forget_emb[j](tokens)
        if self.tie_lstm_embs:
            return torch.cat([f, f, f, f], dim=-1)
        return torch.cat(
            [f, self.input_emb[j](tokens), self.output_emb[j](tokens), self.cell_emb[j](tokens)],
            dim=-1,
        )

    def step(
        self, head_index: int, state: torch.Tensor, cell: torch.Tensor | None, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        i, p = head_index, self.inner_dim
        if cell is None:
            cell = self.initial_cell(state)
        if i == 0:
            state = self._scale_input(state)
        j = self._idx(i, len(self.forget_emb))
        z = self._token_emb(j, tokens)
        a = torch.add(self.projs[self._idx(i, len(self.projs))](state), z, alpha=self.emb_scale)
        gates, cand = a.split([3 * p, p], dim=-1)
        forget_gate, input_gate, output_gate = torch.sigmoid(gates).split([p, p, p], dim=-1)
        cand = self.activation(self.cell_ln[j](cand)) * input_gate
        cell = cell * forget_gate + cand
        state = self.activation(self.state_ln[j](cell)) * output_gate
        logits = self.head[self._idx(i, len(self.head))](state)
        return state, cell, logits
