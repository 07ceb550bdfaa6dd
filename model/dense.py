"""Matrix products laid out for XLA:CPU's fast kernels, in the forward and the backward pass.

XLA:CPU hands a dot to its fast library kernels (YNNPACK) only in one form: operands in
row-major layout, the lhs contracted over its last dimension, the rhs over its first, and for
bfloat16 operands a float32 result. Anything else runs on a generic kernel: bfloat16 products
are converted to float32 first and run at about half the speed. Autodiff of `x @ w` produces
the weight gradient `x^T @ g`, which contracts the lhs over its *first* dimension, the slow
form. `dense` writes all three products of a layer in the fast form:

    forward   y  = x @ w             [M, K] x [K, N], float32 accumulation, cast to `dtype`
    backward  dx = g @ w^T           [M, N] x [N, K]
              dw = x^T @ g           [K, M] x [M, N], float32, as the float32 parameter

(`benchmarks/model.py` prints where a step's time goes; see `_first_axis_product` for float32).

>>> import jax, jax.numpy as jnp
>>> x = jnp.arange(6, dtype=jnp.float32).reshape(1, 2, 3)        # [B, T, K]
>>> w = jnp.ones((3, 2), jnp.float32)                             # [K, N]
>>> dense(x, w, jnp.float32)
Array([[[ 3.,  3.],
        [12., 12.]]], dtype=float32)
>>> jax.grad(lambda w: dense(x, w, jnp.bfloat16).astype(jnp.float32).sum())(w)   # x^T @ 1
Array([[3., 3.],
       [5., 5.],
       [7., 7.]], dtype=float32)
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_F32 = jnp.float32


def dense(x: jax.Array, w: jax.Array, dtype, out_dtype=None, *,
          w_transposed: bool = False) -> jax.Array:
  """`x [..., K] @ w [K, N] -> [..., N]`: operands in `dtype`, accumulated in float32, the
  result in `out_dtype` (default `dtype`). `w_transposed`: `w` is stored [N, K] (a tied
  embedding table read out as logits).

  `w` is the (float32) parameter; it is cast to `dtype` for the product and its gradient comes
  back in its own dtype. The incoming gradient is cast to `dtype` for the backward products.
  """
  lead = x.shape[:-1]
  y = _dense_2d(jnp.dtype(dtype), jnp.dtype(out_dtype or dtype), w_transposed,
                x.reshape(-1, x.shape[-1]), w)
  return y.reshape(*lead, y.shape[-1])


# [M, K] x [K, N] (or [N, K] transposed): contracting dimensions of lhs and rhs.
def _contract(w_transposed):
  return (((1,), (1 if w_transposed else 0,)), ((), ()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _dense_2d(dtype, out_dtype, w_transposed, x, w):
  y = jax.lax.dot_general(x.astype(dtype), w.astype(dtype), _contract(w_transposed),
                          preferred_element_type=_F32)
  return y.astype(out_dtype)


def _dense_2d_fwd(dtype, out_dtype, w_transposed, x, w):
  return _dense_2d(dtype, out_dtype, w_transposed, x, w), (x, w)


def _dense_2d_bwd(dtype, out_dtype, w_transposed, residuals, g):
  del out_dtype
  x, w = residuals
  x16, w16, g = x.astype(dtype), w.astype(dtype), g.astype(dtype)
  # dx = g @ w^T: [M, N] x [K, N] (rhs contracted over its last dimension; XLA lays the small
  # weight out transposed for the fast kernel itself), or g @ w for a transposed w.
  dx = jax.lax.dot_general(g, w16, _contract(not w_transposed), preferred_element_type=_F32)
  dw = _first_axis_product(g, x16) if w_transposed else _first_axis_product(x16, g)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_dense_2d.defvjp(_dense_2d_fwd, _dense_2d_bwd)


def _first_axis_product(a, b):
  """`a^T @ b`: a [M, P], b [M, Q] -> float32 [P, Q], contracted over the long first axis.

  For bfloat16 operands it is written with a unit leading axis contracted too: XLA's dot
  canonicalisation then materialises a^T [P, M] row-major, the form of the fast kernel (~2.5x
  on the recipe model's shapes), where `a.T @ b` stays a slow dot. Never transposed afterwards
  either: XLA folds a transpose of the result back into the dot, in a form its CPU runtime
  cannot run for bfloat16 operands. float32 operands keep the plain product: there the
  materialised transpose costs more than it saves (small_gemma2's step: 598 vs 698 ms).
  """
  if a.dtype == _F32:
    return jnp.einsum("mp,mq->pq", a, b, preferred_element_type=_F32)
  return jnp.einsum("cmp,cmq->pq", a[None], b[None], preferred_element_type=_F32)
