"""Fused embedding lookup + site rows + cast for queries and reference pre-encoding.

``embed_flatten(tokens, token_table, site_rows, out_dtype)`` returns ``out [B, L, D]`` with
``out[b, l] = token_table[tokens[b, l]] + site_rows[l]`` (``site_rows`` ``[L, D]``, or
``[B, L, D]`` for per-item rows), rounded once to ``out_dtype``; ``out.view(B, L * D)`` is the
free flatten the seed's FAISS path needs. This is exact when the embedding decomposes as
``E[t] + P[l] + A[l]`` (fold position and AF rows into ``site_rows``).

For an embedding whose per-site map ``f_l`` is a general MLP/LayerNorm, pass
``site_table=[L, V, D]`` instead (``out[b, l] = site_table[l, tokens[b, l]]``): the outputs of
``f_l`` for every token (in practice alleles 5/6 and MASK) are precomputed once per refresh in
O(L * V * D), and the lookup is then exact for ANY per-site embedding.

Both are torch custom ops (``torch.ops.vcfbert_fast.embed_flatten_add`` / ``embed_flatten_table``)
with fake impls and autograd, so they work under ``torch.compile``: CUDA runs the Triton
kernel, CPU the torch reference below (Triton on CPU only under ``TRITON_INTERPRET=1``).
Gradients: ``token_table`` gets a scatter-add of the output grad over the tokens,
``site_rows`` the sum over the batch (identity for ``[B, L, D]``), ``site_table`` a
scatter-add over ``(site, token)``. Accumulation is float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch

from vcfbert_fast.ops.triton import use_triton

_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _acc_dtype(*dtypes: torch.dtype) -> torch.dtype:
    return torch.float64 if torch.float64 in dtypes else torch.float32


# ----------------------------------------------------------------------------- references


def _reference_add(tokens, token_table, site_rows, out_dtype):
    acc = _acc_dtype(token_table.dtype, site_rows.dtype)
    sites = site_rows.to(acc) if site_rows.dim() == 3 else site_rows.to(acc)[None]
    return (token_table.to(acc)[tokens] + sites).to(out_dtype)


def _reference_table(tokens, site_table, out_dtype):
    n_l = tokens.shape[1]
    site = torch.arange(n_l, device=tokens.device)[None, :]
    return site_table[site, tokens].to(out_dtype)


def embed_flatten_reference(
    tokens: torch.Tensor,
    token_table: torch.Tensor | None = None,
    site_rows: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    *,
    site_table: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plain torch version of :func:`embed_flatten` (same rounding: one cast at the end)."""
    mode, out_dtype = _check(tokens, token_table, site_rows, site_table, out_dtype)
    if mode == "table":
        return _reference_table(tokens.long(), site_table, out_dtype)
    return _reference_add(tokens.long(), token_table, site_rows, out_dtype)


# ----------------------------------------------------------------------------- backend


def embed_flatten_backend(device: torch.device | str) -> str:
    """Which implementation :func:`embed_flatten` uses on ``device``: ``"triton"`` (CUDA),
    ``"triton-interpret"`` (CPU under ``TRITON_INTERPRET=1``) or ``"torch"``."""
    device = torch.device(device)
    if use_triton(device):
        return "triton" if device.type == "cuda" else "triton-interpret"
    return "torch"


# ----------------------------------------------------------------------------- custom ops


@torch.library.custom_op("vcfbert_fast::embed_flatten_add", mutates_args=())
def _embed_add_op(
    tokens: torch.Tensor, token_table: torch.Tensor, site_rows: torch.Tensor, out_dtype: torch.dtype
) -> torch.Tensor:
    if embed_flatten_backend(tokens.device) != "torch":
        from vcfbert_fast.ops.triton.embed_flatten import embed_flatten_add_triton

        return embed_flatten_add_triton(tokens, token_table, site_rows, out_dtype)
    return _reference_add(tokens, token_table, site_rows, out_dtype)


@_embed_add_op.register_fake
def _(tokens, token_table, site_rows, out_dtype):
    return token_table.new_empty((tokens.shape[0], tokens.shape[1], token_table.shape[1]), dtype=out_dtype)


def _add_setup(ctx, inputs, output):
    tokens, token_table, site_rows, _ = inputs
    ctx.save_for_backward(tokens)
    ctx.n_vocab = token_table.shape[0]
    ctx.table_dtype = token_table.dtype
    ctx.site_dtype = site_rows.dtype
    ctx.site_batched = site_rows.dim() == 3


def _add_backward(ctx, grad):
    (tokens,) = ctx.saved_tensors
    dim = grad.shape[-1]
    acc = _acc_dtype(grad.dtype, ctx.table_dtype, ctx.site_dtype)
    g = grad.to(acc)
    g_table = g_site = None
    if ctx.needs_input_grad[1]:
        g_table = g.new_zeros((ctx.n_vocab, dim)).index_add_(0, tokens.reshape(-1), g.reshape(-1, dim))
        g_table = g_table.to(ctx.table_dtype)
    if ctx.needs_input_grad[2]:
        g_site = (g if ctx.site_batched else g.sum(0)).to(ctx.site_dtype)
    return None, g_table, g_site, None


_embed_add_op.register_autograd(_add_backward, setup_context=_add_setup)


@torch.library.custom_op("vcfbert_fast::embed_flatten_table", mutates_args=())
def _embed_table_op(tokens: torch.Tensor, site_table: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    if embed_flatten_backend(tokens.device) != "torch":
        from vcfbert_fast.ops.triton.embed_flatten import embed_flatten_table_triton

        return embed_flatten_table_triton(tokens, site_table, out_dtype)
    return _reference_table(tokens, site_table, out_dtype)


@_embed_table_op.register_fake
def _(tokens, site_table, out_dtype):
    return site_table.new_empty((tokens.shape[0], tokens.shape[1], site_table.shape[2]), dtype=out_dtype)


def _table_setup(ctx, inputs, output):
    tokens, site_table, _ = inputs
    ctx.save_for_backward(tokens)
    ctx.table_shape = tuple(site_table.shape)
    ctx.table_dtype = site_table.dtype


def _table_backward(ctx, grad):
    (tokens,) = ctx.saved_tensors
    g_table = None
    if ctx.needs_input_grad[1]:
        n_l, n_v, dim = ctx.table_shape
        g = grad.to(_acc_dtype(grad.dtype, ctx.table_dtype))
        flat = (torch.arange(n_l, device=tokens.device) * n_v)[None, :] + tokens
        g_table = g.new_zeros((n_l * n_v, dim)).index_add_(0, flat.reshape(-1), g.reshape(-1, dim))
        g_table = g_table.view(n_l, n_v, dim).to(ctx.table_dtype)
    return None, g_table, None


_embed_table_op.register_autograd(_table_backward, setup_context=_table_setup)


# ----------------------------------------------------------------------------- API


def _check(tokens, token_table, site_rows, site_table, out_dtype) -> tuple[str, torch.dtype]:
    """Validate shapes/dtypes; returns the mode (``"add"``/``"table"``) and the output dtype."""
    if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"embed_flatten: tokens must be int64 [B, L], got {tokens.dtype} {tuple(tokens.shape)}"
        )
    n_b, n_l = tokens.shape
    if site_table is not None:
        if token_table is not None or site_rows is not None:
            raise ValueError("embed_flatten: pass either site_table or token_table + site_rows, not both")
        if site_table.dim() != 3 or site_table.shape[0] != n_l or site_table.dtype not in _FLOATS:
            raise ValueError(
                f"embed_flatten: site_table must be float [L={n_l}, V, D], got "
                f"{site_table.dtype} {tuple(site_table.shape)}"
            )
        tensors, default = (site_table,), site_table.dtype
        mode = "table"
    else:
        if token_table is None or site_rows is None:
            raise ValueError("embed_flatten: need token_table [V, D] and site_rows [L, D] (or site_table)")
        dim = token_table.shape[-1]
        if token_table.dim() != 2 or token_table.dtype not in _FLOATS:
            raise ValueError(
                f"embed_flatten: token_table must be float [V, D], got {token_table.dtype} "
                f"{tuple(token_table.shape)}"
            )
        if site_rows.shape not in ((n_l, dim), (n_b, n_l, dim)) or site_rows.dtype not in _FLOATS:
            raise ValueError(
                f"embed_flatten: site_rows must be float [L={n_l}, D={dim}] or [B={n_b}, L, D], got "
                f"{site_rows.dtype} {tuple(site_rows.shape)}"
            )
        tensors, default = (token_table, site_rows), torch.promote_types(token_table.dtype, site_rows.dtype)
        mode = "add"
    for t in tensors:
        if t.device != tokens.device:
            raise ValueError(f"embed_flatten: tokens on {tokens.device} but a table on {t.device}")
    out_dtype = default if out_dtype is None else out_dtype
    if out_dtype not in _FLOATS:
        raise ValueError(f"embed_flatten: out_dtype must be one of {_FLOATS}, got {out_dtype}")
    return mode, out_dtype


def embed_flatten(
    tokens: torch.Tensor,
    token_table: torch.Tensor | None = None,
    site_rows: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    *,
    site_table: torch.Tensor | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Fused lookup + site rows + cast -> ``[B, L, D]`` (see the module docstring).

    ``out_dtype`` defaults to the inputs' promoted dtype. Differentiable w.r.t. the tables.
    With ``validate`` (default), tokens outside ``[0, V)`` fail an (asynchronous on CUDA)
    assertion; ``validate=False`` skips that extra reduction for tokens known to be in range
    (the Triton kernel never reads out of bounds either way: such rows come out 0).
    """
    mode, out_dtype = _check(tokens, token_table, site_rows, site_table, out_dtype)
    tokens = tokens.long()
    n_vocab = site_table.shape[1] if mode == "table" else token_table.shape[0]
    if validate and tokens.numel():
        torch._assert_async(
            ((tokens >= 0) & (tokens < n_vocab)).all(), f"embed_flatten: a token is outside [0, {n_vocab})"
        )
    if mode == "table":
        return torch.ops.vcfbert_fast.embed_flatten_table(tokens, site_table, out_dtype)
    return torch.ops.vcfbert_fast.embed_flatten_add(tokens, token_table, site_rows, out_dtype)
