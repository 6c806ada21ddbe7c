"""Triton fused embedding lookup + site rows + cast, one pass over the output.

Two modes, both writing ``out [B, L, D]`` (``out.view(B, L*D)`` is the free flatten):

* additive: ``out[b, l] = token_table[tokens[b, l]] + site_rows[l]`` (or ``site_rows[b, l]``),
  exact for an embedding ``E[t] + P[l] + A[l]`` (fold ``P + A`` into ``site_rows``);
* per-site table: ``out[b, l] = site_table[l, tokens[b, l]]``, exact for ANY per-site embedding
  (fusion MLP, LayerNorm...): precompute ``f_l(t)`` for the few tokens once per refresh.

The sum is formed in float32 (float64 if an input is float64) and rounded once to the
output dtype, exactly like the torch reference in :mod:`vcfbert_fast.ops.embed_flatten`.
Tokens outside ``[0, V)`` are never read out of bounds (masked to 0); the op API asserts
on them separately.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vcfbert_fast.ops.triton import interpret_mode

_BR = 16


@triton.jit
def _embed_flatten_kernel(
    tok_ptr,
    table_ptr,
    site_ptr,
    out_ptr,
    R,
    L,
    D,
    V,
    PER_SITE_TABLE: tl.constexpr,
    SITE_BATCHED: tl.constexpr,
    F64: tl.constexpr,
    OUT16: tl.constexpr,
    BF16_RNE: tl.constexpr,
    BR: tl.constexpr,
    BD: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = (pid_r * BR + tl.arange(0, BR)).to(tl.int64)
    cols = pid_d * BD + tl.arange(0, BD)
    rmask = rows < R
    tok = tl.load(tok_ptr + rows, mask=rmask, other=0)
    ok = rmask & (tok >= 0) & (tok < V)
    tok = tl.where(ok, tok, 0)
    m = ok[:, None] & (cols < D)[None, :]
    site = rows % L
    if PER_SITE_TABLE:
        x = tl.load(table_ptr + (site * V + tok)[:, None] * D + cols[None, :], mask=m, other=0.0)
    else:
        a = tl.load(table_ptr + tok[:, None] * D + cols[None, :], mask=m, other=0.0)
        if SITE_BATCHED:
            srow = rows
        else:
            srow = site
        b = tl.load(site_ptr + srow[:, None] * D + cols[None, :], mask=m, other=0.0)
        if F64:
            x = a.to(tl.float64) + b.to(tl.float64)
        else:
            x = a.to(tl.float32) + b.to(tl.float32)
    if OUT16:
        # torch rounds float64 -> 16-bit through float32; do the same
        x = x.to(tl.float32)
    if BF16_RNE:
        # the interpreter truncates float32 -> bfloat16; GPUs and torch round to nearest even
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        y = bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        y = x.to(out_ptr.dtype.element_ty)
    omask = rmask[:, None] & (cols < D)[None, :]
    tl.store(out_ptr + rows[:, None] * D + cols[None, :], y, mask=omask)


def _cast_flags(out_dtype: torch.dtype) -> dict:
    out16 = out_dtype in (torch.float16, torch.bfloat16)
    return {"OUT16": out16, "BF16_RNE": out_dtype == torch.bfloat16 and interpret_mode()}


def _grid_and_blocks(n_rows: int, dim: int) -> tuple[tuple[int, int], int]:
    bd = min(triton.next_power_of_2(dim), 256)
    return (triton.cdiv(n_rows, _BR), triton.cdiv(dim, bd)), bd


def embed_flatten_add_triton(
    tokens: torch.Tensor, token_table: torch.Tensor, site_rows: torch.Tensor, out_dtype: torch.dtype
) -> torch.Tensor:
    """Additive mode launch; shapes checked by the op API (tokens [B, L], table [V, D],
    site_rows [L, D] or [B, L, D])."""
    tokens = tokens.contiguous()
    token_table = token_table.contiguous()
    site_rows = site_rows.contiguous()
    n_b, n_l = tokens.shape
    n_v, dim = token_table.shape
    out = torch.empty((n_b, n_l, dim), dtype=out_dtype, device=tokens.device)
    if out.numel() == 0:
        return out
    f64 = torch.float64 in (token_table.dtype, site_rows.dtype)
    grid, bd = _grid_and_blocks(n_b * n_l, dim)
    _embed_flatten_kernel[grid](
        tokens,
        token_table,
        site_rows,
        out,
        n_b * n_l,
        n_l,
        dim,
        n_v,
        PER_SITE_TABLE=False,
        SITE_BATCHED=site_rows.dim() == 3,
        F64=f64,
        **_cast_flags(out_dtype),
        BR=_BR,
        BD=bd,
    )
    return out


def embed_flatten_table_triton(
    tokens: torch.Tensor, site_table: torch.Tensor, out_dtype: torch.dtype
) -> torch.Tensor:
    """Per-site table mode launch; tokens [B, L], site_table [L, V, D]."""
    tokens = tokens.contiguous()
    site_table = site_table.contiguous()
    n_b, n_l = tokens.shape
    _, n_v, dim = site_table.shape
    out = torch.empty((n_b, n_l, dim), dtype=out_dtype, device=tokens.device)
    if out.numel() == 0:
        return out
    grid, bd = _grid_and_blocks(n_b * n_l, dim)
    _embed_flatten_kernel[grid](
        tokens,
        site_table,
        site_table,
        out,
        n_b * n_l,
        n_l,
        dim,
        n_v,
        PER_SITE_TABLE=True,
        SITE_BATCHED=False,
        F64=site_table.dtype == torch.float64,
        **_cast_flags(out_dtype),
        BR=_BR,
        BD=bd,
    )
    return out
