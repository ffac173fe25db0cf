"""The streamed GNN's message sums in one Triton kernel, without materialising gamma.

For a piece of n edges with features e [n, D], the aggregation of a message-passing layer needs two sums at the
target nodes (see ``stream.py``):

    esum[dst(i)] += e[i]
    acc[dst(i)]  += (e[i] @ W_g^T + b_g) * c_src[src(i)]        W_g [D, D], b_g [D], c_src [N, D]

The unfused path writes gamma = e @ W_g^T + b_g to an [n, D] buffer, multiplies it by the gathered source rows
and reduces it: three more passes over n x D floats. Here each program multiplies its tile of edge features by
W_g^T in registers (``input_precision="ieee"``: true float32 products, so results match torch's to ~1e-6
relative rather than TF32's ~1e-3) and adds the tile straight into ``esum`` and ``acc`` with atomics; e is read
once and gamma never reaches memory.

Tiles differ by kind of piece:

* sparse edges: BLOCK_M consecutive edges, src/dst read from the piece's index tensors, one atomic per edge row;
* a dense block (a row slice of a ``graph.blocks.Block``): one target and BLOCK_M of its sources. The edge of
  local source s and target t is row ``s * s_stride + t * t_stride`` of the piece (source-major: s_stride =
  n_dst, t_stride = 1; target-major: s_stride = 1, t_stride = n_src), so no index tensors exist for the dense
  part, and since the whole tile shares its target it is summed in registers first: one atomic row per tile.

Atomics make the float32 sums order-dependent (not bitwise reproducible run to run); the differences are at
rounding level.

Measured on an H200 (triton 3.6, ``experiments/fused_check.py``, ``docs/bench/h200/fused_check.txt``): the results
match torch's to float32 rounding and small pieces run 1.3-2x faster, but big dense blocks run 20-30x slower than
cuBLAS plus reductions (1M edges: 42 ms against 1.5 ms), so a whole nowcast of a 3.4M-parameter GPT-2 takes
312 ms against native's 87 ms. That is why this kernel is opt-in and native stays the default.
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from ..graph.blocks import Block

BLOCK_M = 64  # edge rows per tile (sparse pieces; blocks pick 16, 32 or 64, see _block_rows)
NUM_WARPS = 4


@triton.jit
def _message_sums_kernel(e_ptr, e_stride, w_ptr, b_ptr, c_ptr, src_ptr, dst_ptr, esum_ptr, acc_ptr,
                         n_rows, n_src, n_dst, src0, dst0, s_stride, t_stride,
                         D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, SPARSE: tl.constexpr):
    """One tile: esum/acc [N, D] += its edges' e [., D] and (e @ w^T + b) * c[src]; w [D, D], b [D], c [N, D]."""
    pid = tl.program_id(0)
    m = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, D)
    if SPARSE:
        rows = pid.to(tl.int64) * BLOCK_M + m
        live = rows < n_rows
        src = tl.load(src_ptr + rows, mask=live, other=0)
        dst = tl.load(dst_ptr + rows, mask=live, other=0)
    else:
        # Targets vary fastest over the programs, so programs running side by side add into different rows.
        # (On an H200 this measured the same as the other order: the atomics are not what makes blocks slow.)
        t = pid % n_dst  # the tile's target, local to the piece
        s = (pid // n_dst) * BLOCK_M + m
        live = s < n_src
        s, t = s.to(tl.int64), t.to(tl.int64)  # int64 offsets: E * D exceeds 2^31 on big models
        rows = s * s_stride + t * t_stride
        src = src0 + s
        dst = dst0 + t
    gamma = tl.zeros((BLOCK_M, D), dtype=tl.float32)
    # D is split into BLOCK_K-wide slices so only a [BLOCK_K, D] slice of W^T is live at a time; each e slice
    # serves both the product and the edge sum.
    for k0 in tl.static_range(0, D, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        e = tl.load(e_ptr + rows[:, None] * e_stride + k[None, :], mask=live[:, None], other=0.0)
        w_t = tl.load(w_ptr + cols[None, :] * D + k[:, None])  # W^T[k, j] = W[j, k]
        gamma += tl.dot(e, w_t, input_precision="ieee")
        if SPARSE:
            tl.atomic_add(esum_ptr + dst[:, None] * D + k[None, :], e, mask=live[:, None], sem="relaxed")
        else:
            tl.atomic_add(esum_ptr + dst * D + k, tl.sum(e, axis=0), sem="relaxed")
    # Dead rows gather c = 0, so they add nothing to the tile sum below.
    c = tl.load(c_ptr + src[:, None] * D + cols[None, :], mask=live[:, None], other=0.0)
    gamma = (gamma + tl.load(b_ptr + cols)[None, :]) * c
    if SPARSE:
        tl.atomic_add(acc_ptr + dst[:, None] * D + cols[None, :], gamma, mask=live[:, None],
                      sem="relaxed")
    else:
        tl.atomic_add(acc_ptr + dst * D + cols, tl.sum(gamma, axis=0), sem="relaxed")


def interpreted() -> bool:
    """Whether the kernel runs in Triton's CPU interpreter (``TRITON_INTERPRET=1`` when this module was imported)."""
    return type(_message_sums_kernel).__name__ == "InterpretedFunction"


def runs_on(device: torch.device) -> bool:
    """Whether the kernel can run on tensors of ``device``: CUDA, or the CPU under the interpreter."""
    return device.type == "cuda" or (device.type == "cpu" and interpreted())


def supports(d: int) -> bool:
    """Whether the kernel handles hidden size ``d``: a power of two >= 16 (``tl.dot``'s smallest tile; the tests
    cover 16 to 128)."""
    return d >= 16 and d & (d - 1) == 0


def _block_rows(n_src: int) -> int:
    """Tile height for a block with ``n_src`` sources: the largest of 64, 32, 16 that pads by at most 1/8 (each
    tile reloads W_g, so taller is better), else the one that pads least.

    A source-major chunk often has few sources: 65536 edges of a 768-wide row are 85, where 3 tiles of 32 pad 11
    rows and 2 of 64 pad 43.
    """
    padded = {m: -(-n_src // m) * m for m in (64, 32, 16)}
    fitting = [m for m, rows in padded.items() if 8 * rows <= 9 * n_src]
    return fitting[0] if fitting else min(padded, key=padded.get)  # min keeps the first of equals: the taller


def message_sums_(esum: torch.Tensor, acc: torch.Tensor, e: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor, c_src: torch.Tensor, *, block: Block | None = None,
                  src: torch.Tensor | None = None, dst: torch.Tensor | None = None,
                  block_m: int | None = None) -> None:
    """``esum[dst(i)] += e[i]`` and ``acc[dst(i)] += (e[i] @ weight^T + bias) * c_src[src(i)]`` in one launch.

    Args:
        esum, acc: [N, D] float32, contiguous, added to in place.
        e: [n, D] float32 edge features of the piece (rows contiguous).
        weight: [D, D] (W_g), bias: [D] (b_g).
        c_src: [N, D] float32, the per-source factor.
        block: the piece as a dense block (row i of ``e`` is its local edge i), or
        src, dst: [n] LongTensor node ids of each edge (a sparse piece).
        block_m: tile height (a power of two >= 16); by default 64 for sparse pieces and 16..64 for blocks.
    D must be a power of two >= 16 (``tl.dot``'s smallest tile).
    """
    n, d = e.shape
    if not supports(d):
        raise ValueError(f"the fused kernel needs a power-of-two hidden size >= 16, got {d}")
    if e.dtype != torch.float32 or e.stride(1) != 1:
        raise ValueError("the fused kernel needs float32 edge features with contiguous rows")
    if not (esum.is_contiguous() and acc.is_contiguous()):
        raise ValueError("esum and acc must be contiguous")
    if n == 0:
        return
    weight, bias, c_src = weight.contiguous(), bias.contiguous(), c_src.contiguous()
    if block is not None:
        if block.num_edges != n:
            raise ValueError(f"block has {block.num_edges} edges but e has {n} rows")
        rows = block_m or _block_rows(block.n_src)
        n_tiles = -(-block.n_src // rows)
        grid = (block.n_dst * n_tiles,)
        geometry = (block.n_src, block.n_dst, block.src, block.dst,
                    *((1, block.n_src) if block.target_major else (block.n_dst, 1)))  # s_stride, t_stride
        src = dst = e  # the kernel reads no index tensors for a block; any tensor fills the pointer slots
    else:
        if src is None or dst is None:
            raise ValueError("give either a block or src and dst")
        rows = block_m or BLOCK_M
        grid = (-(-n // rows),)
        geometry = (0, 1, 0, 0, 0, 0)
    # Triton launches on the current CUDA device, which need not be the tensors' one.
    with torch.cuda.device(e.device) if e.is_cuda else contextlib.nullcontext():
        _message_sums_kernel[grid](e, e.stride(0), weight, bias, c_src, src, dst, esum, acc, n, *geometry,
                                   D=d, BLOCK_M=rows, BLOCK_K=min(d, 32), SPARSE=block is None,
                                   num_warps=NUM_WARPS)
