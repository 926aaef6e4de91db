"""TypiClust (Hacohen, Dekel & Weinshall, *Active Learning on a Budget: Opposite Strategies Suit
High and Low Budgets*, ICML 2022): for a small budget, query typical points of distinct clusters.

The pool (with the labeled points) is clustered by k-means into ``|D_L| + n`` clusters (at most
:data:`MAX_CLUSTERS`); the clusters that hold the fewest labeled points come first, the larger
first among equals, and each gives its most *typical* unlabeled point, where typicality is the
inverse mean distance to the point's ``K = min(20, |cluster| // 2)`` nearest neighbours within
its cluster (the paper's Eq. 5, as its code computes it). Clusters of fewer than
:data:`MIN_CLUSTER_SIZE` points give none unless the others cannot fill the query.

With no label (:meth:`TypiClustStrategy.choose_label_free`, ``pal label``'s first batch) the
features cost seconds (:func:`pixel_features`): the images standardised per channel,
average-pooled to at most :data:`PIXEL_SIDE` pixels a side, each image standardised on its own
(brightness and contrast out), projected on the pool's top :data:`PCA_DIMS` principal components
and scaled to unit length (the paper clusters L2-normalised self-supervised embeddings). On 3,000
CIFAR-10 JPEGs (5 seeds, batches of 100) the same pixels without the per-image standardisation
and unit length gave batches less balanced than random draws (mean chi-square 23.6 against the
pool's class shares, random draws' median 8.0; with them 6.8), and a short rotation pass (500
images, 5 epochs: 65 s on 2 cores) was no better (7.0 to 17.8 by feature scaling). In labeled
rounds (:meth:`TypiClustStrategy.choose`) the features are the task network's penultimate ones
(:func:`pal.training.predict_features`).

Unlike the paper's code, a cluster's typicality is computed once: a second pick from the same
cluster (only when the query outgrows the clusters) takes its next most typical point without
recomputing the density without the first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pal.placement import Images
from pal.rng import torch_generator
from pal.strategies.base import Query, QueryContext, Strategy, register_strategy
from pal.training import Normalizer, predict_features

MAX_CLUSTERS = 500
"""At most this many k-means clusters (the paper's ``MAX_NUM_CLUSTERS``)."""

MIN_CLUSTER_SIZE = 5
"""Clusters smaller than this give a point only when the others cannot fill the query."""

K_NN = 20
"""Neighbours of a point's typicality (the paper's ``K``), at most half its cluster."""

PIXEL_SIDE = 16
"""Label-free features: images average-pooled to at most this many pixels a side."""

PCA_DIMS = 50
"""Label-free features: principal components kept."""

KMEANS_ITERATIONS = 100
"""Lloyd iterations at most (k-means stops earlier once no point changes cluster)."""

_CHUNK_ELEMENTS = 2**24
"""Distance-matrix entries computed at once (64 MiB of float32)."""


@register_strategy("typiclust")
class TypiClustStrategy(Strategy):
    """TypiClust (Hacohen et al., ICML 2022): the most typical point of each of the largest
    k-means clusters not yet covered by a labeled point. See the module docstring."""

    label_free = True
    cpu_bf16 = True

    def choose(self, ctx: QueryContext, n: int) -> Query:
        """On the task network's features of ``D_L`` and ``D_U``: ``|D_L| + n`` clusters, the
        ones with the fewest labeled points first."""
        bs = self.config.eval_batch_size
        pool = predict_features(ctx.task_model, ctx.x[ctx.unlabeled], ctx.normalize, bs)
        if ctx.labeled.numel():
            labeled = predict_features(ctx.task_model, ctx.x[ctx.labeled], ctx.normalize, bs)
        else:
            labeled = pool.new_empty((0, pool.shape[1]))
        return self._query(ctx, pool, labeled, n)

    def choose_label_free(self, ctx: QueryContext, n: int) -> Query:
        """On :func:`pixel_features` of ``D_U``: ``n`` clusters, one typical point from each."""
        feats = pixel_features(ctx.x[ctx.unlabeled], ctx.normalize, self.config.eval_batch_size)
        query = self._query(ctx, feats, feats.new_empty((0, feats.shape[1])), n)
        query.metrics["label_free"] = 1.0
        return query

    def _query(self, ctx: QueryContext, pool: torch.Tensor, labeled: torch.Tensor, n: int):
        with torch.autocast(pool.device.type, enabled=False):
            pool, labeled = pool.float(), labeled.float()
            positions, typicality, clusters = typiclust_select(
                pool, labeled, n, torch_generator(pool.device, ctx.seed, "typiclust")
            )
        metrics = {"typiclust/clusters": float(clusters)}
        scores = {"typicality": typicality}
        return Query(ctx.unlabeled[positions.to(ctx.unlabeled.device)], metrics, (), scores)


@torch.inference_mode()
def pixel_features(
    x: Images, normalize: Normalizer, batch_size: int, side: int = PIXEL_SIDE, dims: int = PCA_DIMS
) -> torch.Tensor:
    """``float32 [N, min(dims, D)]``, rows of unit length: ``x uint8 [N, C, H, W]`` standardised
    per channel (``normalize``), average-pooled to at most ``side x side`` (``D = C * h * w``
    values), each image's ``D`` values standardised (mean 0, std 1), projected on the top
    ``dims`` principal components (exact: the eigenvectors of the ``D x D`` covariance,
    accumulated in float64 a chunk at a time; no random draw) and L2-normalised."""
    h, w = x.shape[-2:]
    out_hw = (min(h, side), min(w, side))
    flat = []
    for chunk in x.split(batch_size):
        f = normalize(chunk).float()
        if out_hw != (h, w):
            f = F.adaptive_avg_pool2d(f, out_hw)
        f = f.flatten(1)
        flat.append((f - f.mean(1, keepdim=True)) / f.std(1, keepdim=True).clamp_min(1e-3))
    feats = torch.cat(flat) if flat else torch.empty(0, x.shape[1] * out_hw[0] * out_hw[1])
    return F.normalize(pca(feats, dims), dim=1)


def pca(feats: torch.Tensor, dims: int) -> torch.Tensor:
    """``float32 [N, min(dims, D)]``: ``feats [N, D]`` centred and projected on its top ``dims``
    principal components (eigenvectors of the covariance, float64; each sign fixed so its
    largest loading is positive, for the same result on every machine)."""
    n, d = feats.shape
    if n == 0 or dims >= d:
        return feats - feats.mean(dim=0, keepdim=True) if n else feats
    mean = feats.double().mean(dim=0, keepdim=True)
    cov = torch.zeros(d, d, dtype=torch.float64, device=feats.device)
    for chunk in feats.split(max(1, _CHUNK_ELEMENTS // d)):
        c = chunk.double() - mean
        cov += c.T @ c
    _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
    top = vectors[:, -dims:].flip(1)  # [D, dims], largest first
    sign = torch.sign(top.gather(0, top.abs().argmax(dim=0, keepdim=True)))
    top = (top * sign).float()
    return (feats - mean.float()) @ top


def typiclust_select(
    pool: torch.Tensor,
    labeled: torch.Tensor,
    n: int,
    generator: torch.Generator,
    max_clusters: int = MAX_CLUSTERS,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """TypiClust's query of ``n`` of ``pool [U, d]`` given ``labeled [L, d]``.

    k-means (:func:`kmeans`, seeded by ``generator``) of the ``L + U`` points into
    ``k = min(L + n, max_clusters, L + U)`` clusters; each unlabeled point is ranked within its
    cluster by :func:`typicality`, and the picks go by ``(labeled points of the cluster + rank,
    larger cluster first, cluster id)``, clusters under :data:`MIN_CLUSTER_SIZE` last: the
    paper's greedy (fewest labeled first, largest first), one point per cluster while clusters
    last.

    Returns:
        ``(positions int64 [n]`` into ``pool`` in the order chosen, ``typicality float32 [n]``
        of the chosen points, ``k)``.
    """
    u, n_lab = pool.shape[0], labeled.shape[0]
    feats = torch.cat([labeled, pool]) if n_lab else pool
    k = max(1, min(n_lab + n, max_clusters, n_lab + u))
    assign, _ = kmeans(feats, k, generator)
    sizes = torch.bincount(assign, minlength=k)  # [k]
    covered = torch.bincount(assign[:n_lab], minlength=k)  # [k] labeled points per cluster
    typ = torch.empty(feats.shape[0], device=feats.device)
    order = torch.argsort(assign, stable=True)  # members of each cluster, contiguous
    for members in order.split(sizes.tolist()):  # one pass per cluster, not per point
        if members.numel():
            typ[members] = typicality(feats[members], min(K_NN, members.numel() // 2))
    cand = torch.arange(n_lab, n_lab + u, device=feats.device)
    c_of = assign[cand]
    # rank of each unlabeled point within its cluster by typicality (most typical 0)
    by_typ = cand[torch.argsort(typ[cand], descending=True, stable=True)]
    by_cluster = by_typ[torch.argsort(assign[by_typ], stable=True)]
    rank = torch.empty(u, dtype=torch.int64, device=feats.device)
    starts = torch.cumsum(torch.bincount(assign[cand], minlength=k), 0)
    first = torch.cat([starts.new_zeros(1), starts[:-1]])
    rank[by_cluster - n_lab] = torch.arange(u, device=feats.device) - first[assign[by_cluster]]
    small = (sizes[c_of] < MIN_CLUSTER_SIZE).long()
    # lexicographic key: small clusters last, level, larger cluster first, cluster id
    big = u + n_lab + 1
    level = covered[c_of] + rank
    key = ((small * big + level) * big + (big - 1 - sizes[c_of])) * (k + 1) + c_of
    picked = torch.argsort(key, stable=True)[:n]
    return picked, typ[picked + n_lab], k


def typicality(feats: torch.Tensor, k: int) -> torch.Tensor:
    """``float32 [m]``: ``1 / (mean distance to the k nearest other points + 1e-5)`` of each of
    ``feats [m, d]`` (the paper's Eq. 5); ``k = 0`` (a cluster of one) gives 1. Distances in row
    chunks of at most :data:`_CHUNK_ELEMENTS` entries."""
    m = feats.shape[0]
    if k < 1:
        return torch.ones(m, device=feats.device)
    means = []
    sq = feats.square().sum(dim=1)
    for rows, rsq in zip(
        feats.split(max(1, _CHUNK_ELEMENTS // m)),
        sq.split(max(1, _CHUNK_ELEMENTS // m)),
        strict=True,
    ):
        d2 = (rsq[:, None] - 2 * rows @ feats.T + sq[None, :]).clamp_min_(0)
        nearest = torch.topk(d2, k + 1, dim=1, largest=False).values[:, 1:]  # self excluded
        means.append(nearest.sqrt().mean(dim=1))
    return 1.0 / (torch.cat(means) + 1e-5)


def kmeans(
    feats: torch.Tensor, k: int, generator: torch.Generator, iterations: int = KMEANS_ITERATIONS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means of ``feats float32 [N, d]`` into ``k`` clusters from a k-means++ seeding
    drawn from ``generator``; stops once no point changes cluster. An emptied cluster keeps
    its center.

    Returns:
        ``(assignment int64 [N], centers float32 [k, d])``.
    """
    n = feats.shape[0]
    sq = feats.square().sum(dim=1)
    first = torch.randint(n, (1,), generator=generator, device=generator.device)
    chosen = [first.to(feats.device)]
    nearest = _sq_dist(feats, sq, feats[chosen[0]]).squeeze(1)  # [N]
    for _ in range(1, k):  # k-means++: one draw per center, D^2-weighted
        weights = nearest.clamp_min(0)
        if float(weights.sum()) <= 0:
            weights = torch.ones_like(weights)
        pick = torch.multinomial(weights.to(generator.device), 1, generator=generator)
        chosen.append(pick.to(feats.device))
        nearest = torch.minimum(nearest, _sq_dist(feats, sq, feats[chosen[-1]]).squeeze(1))
    centers = feats[torch.cat(chosen)].clone()
    assign = _assign(feats, sq, centers)
    for _ in range(iterations):
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)  # [k, 1]
        sums = torch.zeros_like(centers).index_add_(0, assign, feats)
        centers = torch.where(counts > 0, sums / counts.clamp_min(1), centers)
        new = _assign(feats, sq, centers)
        if torch.equal(new, assign):
            break
        assign = new
    return assign, centers


def _sq_dist(feats: torch.Tensor, sq: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``[N, k]`` squared distances of ``feats [N, d]`` (``sq`` their squared norms) to
    ``centers [k, d]``."""
    return sq[:, None] - 2 * feats @ centers.T + centers.square().sum(dim=1)[None, :]


def _assign(feats: torch.Tensor, sq: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``int64 [N]``: each point's nearest center, in row chunks."""
    step = max(1, _CHUNK_ELEMENTS // max(centers.shape[0], 1))
    parts = [
        _sq_dist(rows, rsq, centers).argmin(dim=1)
        for rows, rsq in zip(feats.split(step), sq.split(step), strict=True)
    ]
    return torch.cat(parts)
