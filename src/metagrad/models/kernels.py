"""Layer kernels that accept an optional leading *task* dimension on weights and inputs.

A weight with one more dimension than usual (``conv: [tasks, out, in, kh, kw]``,
``linear: [tasks, out, in]``, ``norm: [tasks, C]``) means "one weight per task"; the input then
carries a matching task dimension (``[tasks, N, ...]``). With ordinary weights the kernels are
the ordinary ``torch.nn.functional`` calls, so a model built on them runs unchanged under
:func:`torch.func.functional_call`, per task or batched over tasks, without ``vmap``.

The per-task convolution is swappable (``set_conv_impl``) because its best implementation
depends on the backend and the shapes: see ``benchmarks/``. A network may also keep its
activations in the grouped layout ``[N, tasks*C, H, W]`` throughout (``to_grouped``,
``grouped_conv2d``, ``grouped_batch_norm``, ``from_grouped``), as Conv4 does with the default
``"grouped"`` kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

ConvImpl = Callable[[Tensor, Tensor, Tensor | None, int, int], Tensor]


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weight.T + bias``; per-task when ``weight`` is ``[tasks, out, in]``.

    Shapes: shared ``x [..., in]``; per task ``x [tasks, N, in]`` -> ``[tasks, N, out]``.
    """
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _conv_grouped(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int):
    # [T, N, C, H, W] -> [N, T*C, H, W]: one grouped convolution, one group per task.
    t, n, c, h, w = x.shape
    xg = x.transpose(0, 1).reshape(n, t * c, h, w)
    wg = weight.reshape(t * weight.shape[1], *weight.shape[2:])
    bg = None if bias is None else bias.reshape(-1)
    y = F.conv2d(xg, wg, bg, stride=stride, padding=padding, groups=t)
    return y.reshape(n, t, weight.shape[1], *y.shape[-2:]).transpose(0, 1)


def _conv_unfold(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int):
    # im2col per task, then one batched matrix product: [T, N*L, C*k*k] @ [T, C*k*k, O].
    t, n, c, h, w = x.shape
    out_ch, kh, kw = weight.shape[1], weight.shape[3], weight.shape[4]
    cols = F.unfold(x.reshape(t * n, c, h, w), (kh, kw), padding=padding, stride=stride)
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (w + 2 * padding - kw) // stride + 1
    cols = cols.reshape(t, n, c * kh * kw, oh * ow).transpose(2, 3).reshape(t, n * oh * ow, -1)
    wm = weight.reshape(t, out_ch, -1).transpose(1, 2)  # [T, C*k*k, O]
    y = torch.bmm(cols, wm) if bias is None else torch.baddbmm(bias.unsqueeze(1), cols, wm)
    return y.reshape(t, n, oh, ow, out_ch).permute(0, 1, 4, 2, 3)


def _conv_loop(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int):
    # One ordinary convolution per task: oneDNN's fastest kernel, Python-level loop.
    bs = [None] * x.shape[0] if bias is None else bias.unbind(0)
    outs = [
        F.conv2d(xi, wi, bi, stride=stride, padding=padding)
        for xi, wi, bi in zip(x.unbind(0), weight.unbind(0), bs)
    ]
    return torch.stack(outs)


CONV_IMPLS: dict[str, ConvImpl] = {
    "grouped": _conv_grouped,
    "unfold": _conv_unfold,
    "loop": _conv_loop,
}
_conv_impl: list[str] = ["grouped"]  # fastest measured where the vectorised path wins


def set_conv_impl(name: str) -> None:
    """Choose how per-task convolutions run: one of ``CONV_IMPLS`` ("grouped", "unfold", "loop")."""
    if name not in CONV_IMPLS:
        raise ValueError(
            f"unknown conv implementation {name!r}: expected one of {list(CONV_IMPLS)}"
        )
    _conv_impl[0] = name


def get_conv_impl() -> str:
    """The name of the per-task convolution in use."""
    return _conv_impl[0]


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int = 1, padding: int = 0):
    """2D convolution; per task when ``weight`` is ``[tasks, out, in, kh, kw]``.

    Shapes: shared ``x [..., C, H, W]`` (any leading dims); per task ``x [tasks, N, C, H, W]``.
    """
    if weight.dim() == 4:
        lead = x.shape[:-3]
        y = F.conv2d(x.reshape(-1, *x.shape[-3:]), weight, bias, stride=stride, padding=padding)
        return y.reshape(*lead, *y.shape[1:])
    return CONV_IMPLS[_conv_impl[0]](x, weight, bias, stride, padding)


def batch_norm(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    spatial_dims: int,
    eps: float = 1e-5,
    mask: Tensor | None = None,
) -> Tensor:
    """Normalise with the statistics of the current batch (the papers' "transductive" BN).

    ``x`` is ``[*groups, N, C, *spatial]``: statistics are per channel over the ``N`` examples
    (and spatial positions) of each group, e.g. of each task for ``x [tasks, N, C, H, W]``.
    ``weight``/``bias`` are ``[C]`` (shared) or ``[tasks, C]`` (per task). ``mask`` (bool
    ``[N]``, optional) takes the statistics from the examples it marks only and normalises all
    ``N`` with them: ``[support; queries]`` with the support marked gives every query the
    support set's statistics, whatever the other queries (the ``"support"`` BatchNorm mode).
    Per-task weights, grouped inputs and masks use ``torch.var_mean`` and one fused
    multiply-add; a single group with shared weights uses PyTorch's fused kernel (faster).
    """
    examples = x.dim() - spatial_dims - 2
    if mask is None and examples == 0 and (weight is None or weight.dim() == 1):
        # One group with shared weights (the per-task loop): PyTorch's fused kernel, exact to
        # every order here because metagrad never differentiates inside vmap (see README).
        return F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)
    dims = (examples, *range(examples + 2, x.dim()))
    reference = x
    if mask is not None:
        if mask.dtype != torch.bool or mask.shape != (x.shape[examples],):
            raise ValueError(
                f"a BatchNorm statistics mask must be bool [{x.shape[examples]}] (one entry per "
                f"example), got {mask.dtype} {list(mask.shape)}"
            )
        reference = x.index_select(examples, mask.nonzero().squeeze(-1))
    var, mean = torch.var_mean(reference, dim=dims, keepdim=True, correction=0)
    inv_std = torch.rsqrt(var + eps)
    if weight is None:
        return (x - mean) * inv_std
    # Fold normalisation and affine map into one per-channel scale and shift, so the
    # full-size tensor is touched by a single fused multiply-add (forward and backward):
    # [C] or [tasks, C] -> broadcastable over examples and spatial positions.
    shape = (*weight.shape[:-1], *[1] * (weight.dim() - 1), weight.shape[-1], *[1] * spatial_dims)
    scale = weight.reshape(shape) * inv_std
    shift = -mean * scale if bias is None else bias.reshape(shape) - mean * scale
    return torch.addcmul(shift, x, scale)


def to_grouped(x: Tensor) -> Tensor:
    """``[tasks, N, C, H, W] -> [N, tasks*C, H, W]``: the layout of the grouped convolution."""
    t, n = x.shape[:2]
    return x.transpose(0, 1).reshape(n, t * x.shape[2], *x.shape[3:])


def from_grouped(x: Tensor, tasks: int) -> Tensor:
    """``[N, tasks*F, ...] -> [tasks, N, F*...]``: features back in the task-major layout
    (per task the order of ``flatten`` over ``[F, ...]``)."""
    return x.reshape(x.shape[0], tasks, -1).transpose(0, 1)


def grouped_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, stride: int = 1, padding: int = 0
) -> Tensor:
    """Per-task convolution in the grouped layout, without the layout's copies.

    Shapes: ``x [N, tasks*C, H, W]``, ``weight [tasks, out, C, kh, kw]``, ``bias [tasks, out]``
    -> ``[N, tasks*out, H', W']`` (one group per task). A network that stays in this layout
    (:func:`to_grouped` once at its input) skips the two layout copies per layer of
    ``_conv_grouped`` (by itself within noise), and can normalise with
    :func:`grouped_batch_norm` and run a 1-channel first layer as a matrix product (together
    1.07-1.13x end to end in the MAML paper's settings, BENCHMARKS.md).
    """
    t, out_ch, c, kh, kw = weight.shape
    if c * kh * kw <= BMM_MAX_PATCH:
        return _grouped_conv_bmm(x, weight, bias, stride, padding)
    wg = weight.reshape(t * out_ch, c, kh, kw)
    bg = None if bias is None else bias.reshape(-1)
    return F.conv2d(x, wg, bg, stride=stride, padding=padding, groups=t)


# Patches of at most this many values (a 3x3 kernel on one input channel: Omniglot's first
# layer) convolve as im2col + one batched matrix product: 2.8-2.9x faster than the grouped
# convolution there, first and second order (16 tasks x 20 images, 28x28, one thread,
# BENCHMARKS.md "Speed in the MAML paper's settings"); with 64 input channels 2-4.5x slower.
BMM_MAX_PATCH = 9


def grouped_patches(
    x: Tensor, weight: Tensor, stride: int, padding: int
) -> tuple[Tensor, tuple[int, int]]:
    """im2col in the grouped layout: ``x [N, T*C, H, W]`` and ``weight [T, O, C, kh, kw]`` ->
    the patch columns ``[N, T, C*kh*kw, H'*W']`` and the output size ``(H', W')``."""
    n, _, h, w = x.shape
    t, _, c, kh, kw = weight.shape
    cols = F.unfold(x.reshape(n * t, c, h, w), (kh, kw), padding=padding, stride=stride)
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (w + 2 * padding - kw) // stride + 1
    return cols.view(n, t, c * kh * kw, oh * ow), (oh, ow)


def _grouped_conv_bmm(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int):
    # columns [N, T, C*k*k, L]; [1, T, O, C*k*k] @ columns -> [N, T, O, L] is already the
    # grouped layout's order (no permute of the output).
    t, out_ch = weight.shape[:2]
    cols, (oh, ow) = grouped_patches(x, weight, stride, padding)
    y = torch.matmul(weight.reshape(1, t, out_ch, -1), cols)
    if bias is not None:
        y = y + bias.reshape(1, t, out_ch, 1)
    return y.reshape(x.shape[0], t * out_ch, oh, ow)


def grouped_batch_norm(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5
) -> Tensor:
    """Per-task batch-statistics BatchNorm in the grouped layout: PyTorch's fused kernel.

    In ``x [N, tasks*C, H, W]`` each channel of each task is one channel, so per-task
    statistics over ``(N, H, W)`` are ordinary BatchNorm statistics over ``tasks*C`` channels;
    ``weight``/``bias`` ``[tasks, C]`` flatten to ``[tasks*C]`` in the same order. The fused
    kernel's first and second derivatives are native (exact: no ``vmap`` involved). As fast
    as ``var_mean`` and a multiply-add in this layout (measured, second order), and the per-task
    loop's kernel, so float32 meta-gradients stay closer to the loop's (6e-5 against 6e-2
    relative in 20-way 1-shot with five second-order steps).
    """
    w = None if weight is None else weight.reshape(-1)
    b = None if bias is None else bias.reshape(-1)
    return F.batch_norm(x, None, None, w, b, training=True, eps=eps)


def max_pool2d(x: Tensor, kernel_size: int, stride: int | None = None, padding: int = 0):
    """Max-pooling over the last two dimensions, with any number of leading dimensions."""
    y = F.max_pool2d(x.reshape(-1, *x.shape[-3:]), kernel_size, stride, padding)
    return y.reshape(*x.shape[:-3], *y.shape[1:])
