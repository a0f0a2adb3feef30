"""Ulysses all-to-all layout changes (see the package docstring and docs/ulysses.md).

Layouts (``W`` = group size, ``r`` = this rank's index in the group):

* sequence-sharded: ``[local_seq, num_heads, head_dim]``: this rank's
  contiguous slice of the sequence (tokens ``[sum(seq_lens[:r]),
  sum(seq_lens[:r+1]))``), all heads;
* head-sharded: ``[total_seq, num_heads // W, head_dim]``: the whole sequence
  in rank order, this rank's contiguous slice of heads
  ``[r * num_heads // W, (r + 1) * num_heads // W)``.

All functions are collectives: every rank of ``group`` must call them in the
same order with the same ``seq_lens`` and head counts. The argument checks
run before any communication and depend only on arguments that all ranks
share (plus the local shape), so a bad call raises on every rank instead of
hanging. The functions are not autograd-aware (inference only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import torch
import torch.distributed as dist

from arctic_inference_core._validate import check_index, check_int

T = TypeVar("T")

# Test hook: route every exchange through the list-based ``dist.all_to_all``
# fallback instead of ``dist.all_to_all_single``.
_FORCE_LIST_ALL_TO_ALL = False
# Backends on which all_to_all_single turned out to be unsupported (filled lazily).
_NO_A2A_SINGLE: set[str] = set()


class UlyssesWork(Generic[T]):
    """Handle of an asynchronous Ulysses exchange (``async_op=True``).

    Call :meth:`wait` to block until the communication finished (on NCCL:
    until the current CUDA stream is ordered after it) and get the result.
    Compute issued between the call and :meth:`wait` overlaps the exchange.
    :meth:`wait` may be called more than once; it returns the same object.
    """

    __slots__ = ("_works", "_finish", "_result", "_done")

    def __init__(self, works: Sequence[Any], finish: Callable[[], T]) -> None:
        self._works = list(works)
        self._finish = finish
        self._result: T | None = None
        self._done = False

    def wait(self) -> T:
        """Wait for the exchange and return its result."""
        if not self._done:
            for w in self._works:
                w.wait()
            self._result = self._finish()
            self._works = []
            self._done = True
        return self._result  # type: ignore[return-value]

    def is_completed(self) -> bool:
        """True once the underlying communication finished (non-blocking)."""
        return self._done or all(w.is_completed() for w in self._works)


# ---------------------------------------------------------------- validation


def _world_rank(group: dist.ProcessGroup | None) -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "torch.distributed is not initialized: call torch.distributed.init_process_group() "
            "before using arctic_inference_core.ulysses"
        )
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("this process is not a member of the given process group")
    return world, rank


def _check_tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(
            f"{name} must have 3 dimensions [seq, num_heads, head_dim], got shape {tuple(x.shape)}"
        )
    return x


def _check_seq_lens(seq_lens: Sequence[int], world: int) -> list[int]:
    if isinstance(seq_lens, (str, bytes)) or not hasattr(seq_lens, "__len__"):
        raise TypeError(f"seq_lens must be a sequence of ints, got {type(seq_lens).__name__}")
    # ints, numpy integers, 0-d integer tensors
    lens = [check_index(f"seq_lens[{i}]", n, 0) for i, n in enumerate(seq_lens)]
    if len(lens) != world:
        raise ValueError(
            f"seq_lens has {len(lens)} entries but the process group has {world} ranks "
            "(one length per rank is needed)"
        )
    return lens


def _local_seq_lens(
    seq_lens: Sequence[int] | None, world: int, rank: int, local_seq: int, name: str
) -> list[int]:
    if seq_lens is None:
        return [local_seq] * world
    lens = _check_seq_lens(seq_lens, world)
    if lens[rank] != local_seq:
        raise ValueError(
            f"{name} holds {local_seq} tokens but seq_lens[{rank}] (this rank) is {lens[rank]}"
        )
    return lens


def _check_heads_divisible(num_heads: int, world: int, what: str) -> int:
    if num_heads % world != 0:
        raise ValueError(
            f"{what}: {num_heads} heads cannot be split evenly over {world} ranks "
            f"({num_heads} is not divisible by {world})"
        )
    return num_heads // world


def expand_kv_heads_for(world: int, num_kv_heads: int, num_q_heads: int | None = None) -> int:
    """How many times each K/V head must be replicated before :func:`seq_to_head`.

    The rule (grouped-query attention, query head ``q`` uses K/V head
    ``q // (num_q_heads // num_kv_heads)``; rank ``r`` holds query heads
    ``[r * Hq / W, (r + 1) * Hq / W)``):

    * ``num_kv_heads >= world``: no replication (returns 1); ``num_kv_heads``
      must be divisible by ``world``, rank ``r`` gets K/V heads
      ``[r * Hkv / W, (r + 1) * Hkv / W)``, exactly the ones its query heads use.
    * ``num_kv_heads < world``: ``world`` must be divisible by
      ``num_kv_heads``; each K/V head is repeated ``world // num_kv_heads``
      times in place (``repeat_interleave`` order), so rank ``r`` gets exactly
      one K/V head, original head ``r // (world // num_kv_heads)``, which is the
      one all of its query heads use.

    Pass the result as ``num_kv_replicas`` to :func:`seq_to_head` (or use
    :func:`seq_to_head_qkv`, which applies the rule itself). With
    ``num_q_heads`` given, also checks that ``num_q_heads`` is divisible by
    ``world`` and by ``num_kv_heads``.

    Raises:
        ValueError: when no such replication exists.
    """
    check_int("world", world, 1)
    check_int("num_kv_heads", num_kv_heads, 1)
    if num_q_heads is not None:
        check_int("num_q_heads", num_q_heads, 1)
        _check_heads_divisible(num_q_heads, world, "query heads")
        if num_q_heads % num_kv_heads != 0:
            raise ValueError(
                f"grouped-query attention needs num_q_heads divisible by num_kv_heads, "
                f"got {num_q_heads} query heads and {num_kv_heads} K/V heads"
            )
    if num_kv_heads >= world:
        if num_kv_heads % world != 0:
            raise ValueError(
                f"K/V heads: {num_kv_heads} heads cannot be split evenly over {world} ranks "
                f"({num_kv_heads} is not divisible by {world})"
            )
        return 1
    if world % num_kv_heads != 0:
        raise ValueError(
            f"K/V heads: {num_kv_heads} heads cannot be replicated evenly over {world} ranks "
            f"({world} is not divisible by {num_kv_heads})"
        )
    return world // num_kv_heads


# ------------------------------------------------------------ communication


def _all_to_all(
    output: torch.Tensor,
    inp: torch.Tensor,
    out_splits: list[int] | None,
    in_splits: list[int] | None,
    group: dist.ProcessGroup | None,
    async_op: bool,
) -> list[Any]:
    """Exchange along dim 0; returns the pending works (empty when ``async_op`` is False).

    Uses ``all_to_all_single``. Where a backend rejects it as unsupported,
    falls back to the list-based ``all_to_all`` for equal splits (Gloo's
    requires equal sizes) and to batched point-to-point ``isend``/``irecv``
    for uneven splits.
    """
    backend = str(dist.get_backend(group))
    if not _FORCE_LIST_ALL_TO_ALL and backend not in _NO_A2A_SINGLE:
        try:
            work = dist.all_to_all_single(
                output, inp, out_splits, in_splits, group=group, async_op=async_op
            )
            return [work] if async_op else []
        except RuntimeError as e:  # e.g. a backend/dtype without alltoall_base
            msg = str(e).lower()
            if "support" not in msg and "implement" not in msg:
                raise
            _NO_A2A_SINGLE.add(backend)
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    outs = list(torch.split(output, out_splits or [output.shape[0] // world] * world))
    ins = list(torch.split(inp, in_splits or [inp.shape[0] // world] * world))
    if out_splits is None and in_splits is None:
        work = dist.all_to_all(outs, ins, group=group, async_op=async_op)
        return [work] if async_op else []
    outs[rank].copy_(ins[rank])
    ops = []
    for peer in range(world):
        if peer == rank:
            continue
        global_peer = dist.get_global_rank(group, peer) if group is not None else peer
        if ins[peer].numel():
            ops.append(dist.P2POp(dist.isend, ins[peer], global_peer, group))
        if outs[peer].numel():
            ops.append(dist.P2POp(dist.irecv, outs[peer], global_peer, group))
    works = dist.batch_isend_irecv(ops) if ops else []
    if async_op:
        return list(works)
    for w in works:
        w.wait()
    return []


def _splits(lens: list[int]) -> list[int] | None:
    return None if len(set(lens)) <= 1 else lens


def _fill_send(
    buf: torch.Tensor, x: torch.Tensor, world: int, heads_out: int, replicas: int
) -> None:
    """Write ``x`` [L, H, D] (each head repeated ``replicas`` times) into ``buf`` [W, L, heads_out, D]."""
    length, num_heads, dim = x.shape
    if replicas == 1:
        buf.copy_(x.reshape(length, world, heads_out, dim).transpose(0, 1))
    elif heads_out == 1:  # the GQA rule: num_heads * replicas == world, one head per rank
        buf.select(2, 0).view(num_heads, replicas, length, dim).copy_(
            x.permute(1, 0, 2).unsqueeze(1).expand(num_heads, replicas, length, dim)
        )
    else:
        expanded = x.repeat_interleave(replicas, dim=1)
        buf.copy_(expanded.reshape(length, world, heads_out, dim).transpose(0, 1))


def seq_to_head(
    x: torch.Tensor,
    group: dist.ProcessGroup | None = None,
    *,
    seq_lens: Sequence[int] | None = None,
    num_kv_replicas: int | None = None,
    async_op: bool = False,
) -> torch.Tensor | UlyssesWork[torch.Tensor]:
    """Sequence-sharded ``[local_seq, H, D]`` -> head-sharded ``[total_seq, H' // W, D]``.

    Args:
        x: this rank's slice of the sequence, all heads.
        group: process group (default: the world group).
        seq_lens: tokens held by each rank, in rank order, identical on all
            ranks; allows uneven (including zero) lengths. ``None`` means every
            rank holds ``x.shape[0]`` tokens (this cannot be checked without
            communication: pass ``seq_lens`` whenever lengths may differ, see
            :func:`all_gather_seq_lens`).
        num_kv_replicas: repeat each head this many times (``repeat_interleave``
            order) before splitting, ``H' = H * num_kv_replicas``; for K/V of
            grouped-query attention with fewer heads than ranks, pass
            :func:`expand_kv_heads_for` ``(W, H)``. ``None`` means 1.
        async_op: return a :class:`UlyssesWork` whose ``wait()`` returns the result.

    Returns:
        ``[sum(seq_lens), H' // W, D]``: the whole sequence in rank order, heads
        ``[r * H' / W, (r + 1) * H' / W)`` of this rank ``r``; contiguous.

    Raises:
        TypeError/ValueError: wrong type or ndim, ``H'`` not divisible by the
            group size, bad ``seq_lens``.
    """
    x = _check_tensor(x, "x")
    world, rank = _world_rank(group)
    replicas = 1 if num_kv_replicas is None else check_int("num_kv_replicas", num_kv_replicas, 1)
    local_seq, num_heads, dim = x.shape
    lens = _local_seq_lens(seq_lens, world, rank, local_seq, "x")
    heads_out = _check_heads_divisible(
        num_heads * replicas,
        world,
        "seq_to_head"
        if replicas == 1
        else f"seq_to_head ({num_heads} heads x {replicas} replicas)",
    )
    send = torch.empty((world, local_seq, heads_out, dim), dtype=x.dtype, device=x.device)
    _fill_send(send, x, world, heads_out, replicas)
    out = torch.empty((sum(lens), heads_out, dim), dtype=x.dtype, device=x.device)
    works = _all_to_all(
        out, send.view(world * local_seq, heads_out, dim), _splits(lens), None, group, async_op
    )
    if async_op:
        return UlyssesWork(works, lambda: out)
    return out


def seq_to_head_qkv(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    group: dist.ProcessGroup | None = None,
    *,
    seq_lens: Sequence[int] | None = None,
    async_op: bool = False,
) -> (
    tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    | UlyssesWork[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
):
    """:func:`seq_to_head` of q, k and v in one fused all-to-all, with the GQA rule.

    ``q`` is ``[local_seq, Hq, D]``, ``k`` and ``v`` are ``[local_seq, Hkv, D]``
    (same dtype and device). K/V heads are replicated as
    :func:`expand_kv_heads_for` says, so rank ``r`` gets query heads
    ``[r * Hq / W, (r + 1) * Hq / W)`` and exactly the K/V heads they use; the
    local head mapping stays standard GQA (local query head ``i`` uses local
    K/V head ``i // (Hq_local // Hkv_local)``).

    Returns ``(q, k, v)`` as ``[total_seq, Hq // W, D]`` and
    ``[total_seq, max(Hkv // W, 1), D]``. They are views of one receive buffer
    (not contiguous along the head dimension; call ``.contiguous()`` if a
    kernel needs that). With ``async_op=True`` returns a :class:`UlyssesWork`.
    """
    q = _check_tensor(q, "q")
    k = _check_tensor(k, "k")
    v = _check_tensor(v, "v")
    if k.shape != v.shape:
        raise ValueError(
            f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}"
        )
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"head_dim mismatch: q has head_dim {q.shape[2]}, k/v have {k.shape[2]}")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"q holds {q.shape[0]} tokens but k/v hold {k.shape[0]}")
    if q.dtype != k.dtype or k.dtype != v.dtype:
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.device != k.device or k.device != v.device:
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    world, rank = _world_rank(group)
    local_seq, num_q, dim = q.shape
    num_kv = k.shape[1]
    lens = _local_seq_lens(seq_lens, world, rank, local_seq, "q")
    replicas = expand_kv_heads_for(world, num_kv, num_q)
    hq, hk = num_q // world, num_kv * replicas // world
    width = hq + 2 * hk
    send = torch.empty((world, local_seq, width, dim), dtype=q.dtype, device=q.device)
    _fill_send(send[:, :, :hq], q, world, hq, 1)
    _fill_send(send[:, :, hq : hq + hk], k, world, hk, replicas)
    _fill_send(send[:, :, hq + hk :], v, world, hk, replicas)
    out = torch.empty((sum(lens), width, dim), dtype=q.dtype, device=q.device)
    works = _all_to_all(
        out, send.view(world * local_seq, width, dim), _splits(lens), None, group, async_op
    )

    def finish() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return out[:, :hq], out[:, hq : hq + hk], out[:, hq + hk :]

    if async_op:
        return UlyssesWork(works, finish)
    return finish()


def head_to_seq(
    y: torch.Tensor,
    group: dist.ProcessGroup | None = None,
    *,
    seq_lens: Sequence[int] | None = None,
    async_op: bool = False,
) -> torch.Tensor | UlyssesWork[torch.Tensor]:
    """Head-sharded ``[total_seq, h, D]`` -> sequence-sharded ``[local_seq, h * W, D]``.

    The inverse of :func:`seq_to_head` (without replication): rank ``r`` gets
    its tokens ``[sum(seq_lens[:r]), sum(seq_lens[:r+1]))`` with the heads of
    all ranks in rank order. ``seq_lens`` as in :func:`seq_to_head`; with
    ``None``, ``total_seq`` must be divisible by the group size. With
    ``async_op=True`` returns a :class:`UlyssesWork` whose ``wait()`` returns
    the (contiguous) result.
    """
    y = _check_tensor(y, "y")
    world, rank = _world_rank(group)
    total, heads, dim = y.shape
    if seq_lens is None:
        if total % world != 0:
            raise ValueError(
                f"y holds {total} tokens, not divisible by {world} ranks; pass seq_lens for "
                "uneven sequence lengths"
            )
        lens = [total // world] * world
    else:
        lens = _check_seq_lens(seq_lens, world)
        if sum(lens) != total:
            raise ValueError(f"y holds {total} tokens but sum(seq_lens) is {sum(lens)} ({lens})")
    local_seq = lens[rank]
    recv = torch.empty((world * local_seq, heads, dim), dtype=y.dtype, device=y.device)
    works = _all_to_all(recv, y.contiguous(), None, _splits(lens), group, async_op)

    def finish() -> torch.Tensor:
        out = torch.empty((local_seq, world * heads, dim), dtype=y.dtype, device=y.device)
        out.view(local_seq, world, heads, dim).copy_(
            recv.view(world, local_seq, heads, dim).transpose(0, 1)
        )
        return out

    if async_op:
        return UlyssesWork(works, finish)
    return finish()


def all_gather_seq_lens(
    local_seq: int, group: dist.ProcessGroup | None = None, device: torch.device | None = None
) -> list[int]:
    """Collect every rank's token count (a small all-gather), in rank order.

    For callers that do not already know all ranks' lengths. ``device``
    defaults to the current CUDA device on NCCL and the CPU otherwise.
    """
    check_int("local_seq", local_seq, 0)
    world, _ = _world_rank(group)
    if device is None:
        nccl = str(dist.get_backend(group)) == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    mine = torch.tensor([local_seq], dtype=torch.int64, device=device)
    parts = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(parts, mine, group=group)
    return [int(p.item()) for p in parts]
