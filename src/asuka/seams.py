"""Gradient-domain (Poisson) seam blending of a fill into its surroundings.

A departure from the paper, off unless asked for or a model folder turns it on
(``default_poisson_blend`` in ``model_index.json``): the mask-conditioned decoder is meant to
make the hole meet its surroundings, and a small one does not quite (its colours drift at the
hole's edge). :func:`poisson_blend` re-solves the hole as Perez et al.'s seamless cloning
("Poisson Image Editing", SIGGRAPH 2003): the result equals the known pixels at the hole's edge
and, inside, follows the *gradients* of the model's fill -- its content and texture, without
its colour offset. ``fade`` lets those gradients fade in over the first pixels of the hole, so
the edge continues the surroundings instead of starting with the model's texture; over the fade,
the solution follows a ``guide``'s gradients instead (none: a smooth membrane; the pipelines'
pass at the output size uses :func:`continuation_guide`, a classical continuation of the
surroundings' edges into the hole).

The system (a 5-point Laplacian on the hole's pixels, Dirichlet on the known ones, Neumann at
the image border) is solved by conjugate gradients in torch, on the hole's bounding box grown by
a pixel (the only pixels its equations read), in place. The pipelines solve it twice
(:class:`asuka.pipeline_base.AsukaPipelineBase`): on the working batch, to convergence (work
bounded by the working resolution, on the pipeline's device), then on the region at the output
size, from the resized first solution, for a bounded number of iterations, guided over the fade
by :func:`continuation_guide`, so the hole's first pixels meet the original's full-resolution
detail.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: the 4-neighbourhood as (dy, dx)
_NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``out[..., y, x] = x[..., y + dy, x + dx]``, zero outside."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    return padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def fade_weight(mask: torch.Tensor, fade: float) -> torch.Tensor:
    """``(B, 1, H, W)`` weight of the fill's gradients: ``(d - 0.5) / fade`` clamped to [0, 1] at
    a hole pixel ``d`` pixels (chessboard distance) from the nearest known one; 1 everywhere
    when ``fade <= 0``."""
    if fade <= 0:
        return torch.ones_like(mask)
    reached = 1.0 - mask
    dist = mask.clone()
    # grow the known region a pixel a step, counting the steps each pixel missed; no further than
    # the fade, nor once every pixel is reached (work bounded by the image, whatever the fade)
    for _ in range(min(math.ceil(fade), max(mask.shape[-2:]))):
        reached = F.max_pool2d(reached, 3, stride=1, padding=1)
        dist = dist + (1.0 - reached)
    return ((dist - 0.5) / fade).clamp(0.0, 1.0)


def _inside_image(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Whether the neighbour ``(dy, dx)`` of each pixel lies in the image (``(B, 1, H, W)``)."""
    return _shift(torch.ones_like(x[:, :1]), dy, dx).bool()


def continuation_guide(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A guide for :func:`poisson_blend`'s fade: the known pixels continued into the hole along
    their edges (OpenCV's Navier-Stokes inpainting, radius 3, on the 8-bit image), ``(B, C, H, W)``
    in [-1, 1] like ``image``."""
    from asuka.baselines import opencv_inpaint

    return opencv_inpaint(image.float().clamp(-1.0, 1.0), mask, "ns").to(image.device)


@torch.no_grad()
def poisson_blend(generated: torch.Tensor, image: torch.Tensor, mask: torch.Tensor, *, fade: float = 0.0,
                  guide: torch.Tensor | None = None, tol: float = 1e-4, max_iter: int = 2000) -> torch.Tensor:
    """``generated`` re-solved in the hole so it meets ``image`` there without a seam.

    Args:
        generated: ``(B, C, H, W)`` the model's output (any range; [-1, 1] in the pipelines).
        image: ``(B, C, H, W)`` the input; only its known pixels (``mask == 0``) are read.
        mask: ``(B, 1, H, W)``, 1 = hole.
        fade: pixels over which the fill's gradients fade in from the hole's edge (0: plain
            seamless cloning).
        guide: ``(B, C, H, W)`` whose gradients the solution follows where the fill's have faded
            out (weight ``1 - w``), e.g. :func:`continuation_guide`; None: none (a membrane).
        tol: conjugate gradients stop when the residual's RMS over the hole is below ``tol``
            times the right-hand side's (or after ``max_iter`` iterations).

    Returns:
        ``(B, C, H, W)``: ``generated`` with its hole re-solved (outside the hole it is
        unchanged: pasting the known pixels back stays the caller's composite step). An item
        without known pixels or without a hole (nothing to meet) is returned unchanged.
    """
    if generated.shape != image.shape or mask.shape != (image.shape[0], 1, *image.shape[2:]):
        raise ValueError(f"poisson_blend: generated {tuple(generated.shape)} and image {tuple(image.shape)} must "
                         f"match, mask must be (B, 1, H, W); got mask {tuple(mask.shape)}")
    if guide is not None and guide.shape != image.shape:
        raise ValueError(f"poisson_blend: guide {tuple(guide.shape)} must match image {tuple(image.shape)}")
    dtype = generated.dtype
    hole = (mask > 0.5).float()
    hole = hole * ((1.0 - hole).sum((-2, -1), keepdim=True) > 0)  # an all-hole item: nothing to meet, kept
    box = _hole_box(hole)
    if box is None:
        return generated.clone()
    # Only the hole's pixels are unknowns, and each equation reads its 4 neighbours: the system
    # lives in the hole's bounding box grown by a pixel (the same solution, less work)
    window = (..., slice(box[0], box[1]), slice(box[2], box[3]))

    def part(t):  # the window, as a contiguous float32 copy (the solver's slices are ~3x slower in other layouts)
        return t[window].float().contiguous()

    x = _solve(part(generated), part(image), part(hole), fade, None if guide is None else part(guide), tol, max_iter)
    out = generated.clone()
    out[window] = torch.where(hole[window] > 0, x.to(dtype), generated[window])
    return out


def _hole_box(hole: torch.Tensor) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` of every item's hole pixels, grown by one pixel and clipped
    to the image; None without a hole pixel."""
    rows = torch.nonzero(hole.amax(dim=(0, 1, 3)) > 0).flatten()
    if rows.numel() == 0:
        return None
    cols = torch.nonzero(hole.amax(dim=(0, 1, 2)) > 0).flatten()
    h, w = hole.shape[-2:]
    return (max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, h), max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, w))


def _solve(g: torch.Tensor, known_img: torch.Tensor, hole: torch.Tensor, fade: float, guide: torch.Tensor | None,
           tol: float, max_iter: int) -> torch.Tensor:
    """The hole's pixels of :func:`poisson_blend` (float32, zero outside the hole); every hole
    pixel's neighbours lie in the window (known pixels, or outside the image: Neumann)."""
    known = 1.0 - hole
    weight = fade_weight(hole, fade)
    # right-hand side: sum over neighbours q of w_pq (g_p - g_q), plus f_q for known q
    degree = torch.zeros_like(hole)
    b = torch.zeros_like(g)
    for dy, dx in _NEIGHBOURS:
        inside = _inside_image(hole, dy, dx).float()
        degree += inside
        w_pq = 0.5 * (weight + _shift(weight, dy, dx)) * inside
        b += w_pq * (g - _shift(g, dy, dx)) + inside * _shift(known * known_img, dy, dx)
        if guide is not None:
            b += (inside - w_pq) * (guide - _shift(guide, dy, dx))
    b = b * hole
    return _conjugate_gradients(g * hole, b, degree * hole, hole, tol, max_iter)


def _conjugate_gradients(x: torch.Tensor, b: torch.Tensor, degree: torch.Tensor, hole: torch.Tensor, tol: float,
                         max_iter: int) -> torch.Tensor:
    """Solve ``A x = b`` on the hole's pixels by conjugate gradients from ``x`` (zero outside the
    hole), per item and channel, where ``A v = degree * v - (the sum of v's 4 neighbours)`` there.

    The search direction lives inside a zero-bordered buffer, so its neighbours are four slices
    of it, and every update is in place: the loop is memory-bound, and this allocates nothing."""

    def dot(u, v):  # per item and channel, (B, C, 1, 1)
        return (u * v).sum((-2, -1), keepdim=True)

    padded = torch.zeros(*x.shape[:-2], x.shape[-2] + 2, x.shape[-1] + 2, dtype=x.dtype, device=x.device)
    p = padded[..., 1:-1, 1:-1]
    neighbours, ap = torch.empty_like(x), torch.empty_like(x)

    def apply_to_p():  # ap = A p
        torch.add(padded[..., 2:, 1:-1], padded[..., :-2, 1:-1], out=neighbours)
        neighbours.add_(padded[..., 1:-1, 2:]).add_(padded[..., 1:-1, :-2])
        torch.mul(p, degree, out=ap)
        ap.addcmul_(neighbours, hole, value=-1.0)

    p.copy_(x)
    apply_to_p()
    r = b - ap
    p.copy_(r)
    rr = dot(r, r)
    stop = (tol ** 2) * dot(b, b).clamp_min(1e-12)
    for _ in range(max_iter):
        if bool((rr <= stop).all()):
            break
        apply_to_p()
        alpha = rr / dot(p, ap).clamp_min(1e-20)
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1.0)
        rr_new = dot(r, r)
        p.mul_(rr_new / rr.clamp_min(1e-20)).add_(r)
        rr = rr_new
    return x
