"""The paper's metrics on codes Z (n, c) and dictionaries D (c, d), as pure functions.

Inputs are numpy arrays (memory-mapped ones too) or torch tensors, on any device; outputs are
numpy arrays or Python floats. Sums are accumulated in float64.

Streaming. `r2`, `energy` (and `l0`, `dead_fraction`, `energy_share`), `modality_score` and
`bridge_matrix` also take an iterable of batches instead of arrays, so that a memory-mapped set
of millions of rows is processed chunk by chunk; the result equals the in-memory call:

    r2(((A_batch, A_hat_batch) for ...))            pairs of equally long (m, d) batches
    energy((Z_batch for ...))                       (m, c) batches
    modality_score(((Z_img_batch, Z_txt_batch) for ...))   the two may differ in length
    bridge_matrix(((Z_img_batch, Z_txt_batch) for ...), D=D)  equally long, row r pairs row r

Arrays passed whole are themselves read `batch_rows` rows at a time, so a memmap never has to
fit in memory. Code batches may be dense or torch sparse (COO or CSR) tensors.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

DEFAULT_BATCH_ROWS = 65_536
# Elements (rows x concepts) sorted at once by `modality_classifier_accuracy`.
SORT_BLOCK_ELEMENTS = 1 << 24


# ----------------------------------------------------------------------------- input handling
def as_matrix(x, name: str, *, device=None, cols: int | None = None, allow_sparse: bool = False) -> torch.Tensor:
    """`x` as a 2-D float torch tensor (on `device` if given), checked for shape and finiteness.

    Float64 stays float64; every other dtype becomes float32. Raises ValueError naming `name`.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (rows, columns), got shape {tuple(x.shape)}")
    if x.layout != torch.strided and not allow_sparse:
        raise ValueError(f"{name} is a sparse tensor; pass it dense (x.to_dense())")
    if cols is not None and x.shape[1] != cols:
        raise ValueError(f"{name} has {x.shape[1]} columns, expected {cols}: check it matches the other inputs")
    if device is not None:
        x = x.to(device)
    if x.dtype != torch.float64:
        x = x.float()
    values = x if x.layout == torch.strided else x.coalesce().values() if x.layout == torch.sparse_coo else x.values()
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name} contains NaN or infinite values: clean or drop those rows first")
    return x


def _is_stream(x) -> bool:
    return not isinstance(x, (np.ndarray, torch.Tensor)) and isinstance(x, Iterable) and not isinstance(x, (str, bytes))


def _row_batches(x, batch_rows: int) -> Iterator:
    """Row slices of an array, or the batches of an iterable, unchanged."""
    if _is_stream(x):
        yield from x
        return
    if isinstance(x, torch.Tensor) and x.layout != torch.strided:
        yield x  # sparse codes are already compact: one batch
        return
    for start in range(0, max(len(x), 1), batch_rows):
        yield x[start : start + batch_rows]


def _paired_batches(first, second, batch_rows: int, names: tuple[str, str]) -> Iterator[tuple]:
    """(first, second) batch pairs: from a stream of pairs (second is None) or two arrays."""
    if second is None:
        if not _is_stream(first):
            raise ValueError(f"{names[1]} is missing: pass both arrays, or one iterable of ({names[0]}, {names[1]}) batches")
        for pair in first:
            _check_pair(pair, names)
            yield pair
        return
    if _is_stream(first) or _is_stream(second):
        yield from zip(_row_batches(first, batch_rows), _row_batches(second, batch_rows), strict=True)
        return
    if first.shape[0] != second.shape[0]:
        raise ValueError(
            f"{names[0]} has {first.shape[0]} rows but {names[1]} has {second.shape[0]}: they must be "
            "row-aligned, row r of one with row r of the other"
        )
    if isinstance(first, torch.Tensor) and first.layout != torch.strided or (
        isinstance(second, torch.Tensor) and second.layout != torch.strided
    ):
        yield first, second
        return
    for start in range(0, max(len(first), len(second), 1), batch_rows):
        yield first[start : start + batch_rows], second[start : start + batch_rows]


def _check_pair(pair, names: tuple[str, str]) -> None:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise ValueError(f"a streamed batch must be a ({names[0]}, {names[1]}) pair, got {type(pair).__name__}")


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


# ----------------------------------------------------------------------------- reconstruction
def r2(A, A_hat=None, mean: str = "per_dim", *, batch_rows: int = DEFAULT_BATCH_ROWS) -> float:
    """Coefficient of determination of a reconstruction.

        R2 = 1 - ||A - A_hat||_F^2 / ||A - mean(A)||_F^2

    mean="per_dim" (default, the paper's): mean(A) is the (d,) vector of column means, so a
    reconstruction that outputs the average embedding scores exactly 0.
    mean="global": mean(A) is one scalar, the mean of all n*d entries, as in
    `overcomplete.metrics.r2_score`. On data whose columns have different means (every VLM
    embedding set: L2-normalised vectors sharing an offset, plus the image/text modality gap)
    the denominator then also counts the spread of the column means, which any reconstruction
    with a bias recovers for free: e.g. columns with means of spread 9 times the within-column
    variance, reconstructed by the column means alone, score 0.9 with "global" and 0 with
    "per_dim". That is why the per-dimension mean is the default here.

    A, A_hat: (n, d) arrays, or pass A as an iterable of (A_batch, A_hat_batch) pairs and
    A_hat=None. Column statistics are merged across batches with Chan's parallel formula.
    """
    if mean not in ("per_dim", "global"):
        raise ValueError(f"mean must be 'per_dim' or 'global', got {mean!r}")
    count = 0
    column_mean = column_m2 = None  # running column means and sums of squared deviations
    residual = 0.0
    for a, a_hat in _paired_batches(A, A_hat, batch_rows, ("A", "A_hat")):
        a = as_matrix(a, "A")
        a_hat = as_matrix(a_hat, "A_hat", device=a.device, cols=a.shape[1])
        if a.shape[0] != a_hat.shape[0]:
            raise ValueError(f"A has {a.shape[0]} rows but A_hat has {a_hat.shape[0]}: they must be row-aligned")
        if a.shape[0] == 0:
            continue
        a, a_hat = a.double(), a_hat.double()
        residual = residual + ((a - a_hat) ** 2).sum()
        m = a.shape[0]
        batch_mean = a.mean(dim=0)
        batch_m2 = ((a - batch_mean) ** 2).sum(dim=0)
        if column_mean is None:
            column_mean, column_m2 = batch_mean, batch_m2
        else:
            if batch_mean.shape != column_mean.shape:
                raise ValueError(f"batches have different widths ({batch_mean.shape[0]} vs {column_mean.shape[0]})")
            delta = batch_mean - column_mean
            total = count + m
            column_m2 = column_m2 + batch_m2 + delta**2 * (count * m / total)
            column_mean = column_mean + delta * (m / total)
        count += m
    if count == 0:
        raise ValueError("r2 got no rows: A is empty")
    total_ss = column_m2.sum()
    if mean == "global":
        # sum_ij (A_ij - g)^2 = sum_j [M2_j + n (mean_j - g)^2], g = mean of the column means
        total_ss = total_ss + count * ((column_mean - column_mean.mean()) ** 2).sum()
    total_ss = float(total_ss)
    if total_ss == 0.0:
        raise ValueError("A is constant, so R2 is undefined: check the data is not a repeated row")
    return 1.0 - float(residual) / total_ss


# ----------------------------------------------------------------------------- codes
class _CodeTotals:
    """Running totals over code batches: rows, sum of z per concept, non-zero count per concept."""

    def __init__(self, name: str, device=None):
        self.name, self.device = name, device
        self.rows, self.sums, self.fires = 0, None, None

    def add(self, batch) -> None:
        width = None if self.sums is None else self.sums.shape[0]
        batch = as_matrix(batch, self.name, device=self.device, allow_sparse=True, cols=width)
        if batch.layout == torch.strided:
            batch_sums = batch.double().sum(dim=0)
            batch_fires = (batch != 0).sum(dim=0)
        else:
            coo = batch.to_sparse_coo().coalesce()
            columns, values = coo.indices()[1], coo.values().double()
            batch_sums = torch.zeros(batch.shape[1], dtype=torch.float64, device=batch.device).index_add_(0, columns, values)
            batch_fires = torch.bincount(columns[values != 0], minlength=batch.shape[1])
        self.sums = batch_sums if self.sums is None else self.sums + batch_sums
        self.fires = batch_fires if self.fires is None else self.fires + batch_fires
        self.rows += batch.shape[0]

    def means(self) -> torch.Tensor:
        self._check_not_empty()
        return self.sums / self.rows

    def _check_not_empty(self) -> None:
        if self.sums is None or self.rows == 0:
            raise ValueError(f"{self.name} is empty: no rows of codes were given")


def _code_totals(Z, batch_rows: int = DEFAULT_BATCH_ROWS) -> _CodeTotals:
    totals = _CodeTotals("Z")
    for batch in _row_batches(Z, batch_rows):
        totals.add(batch)
    totals._check_not_empty()
    return totals


def l0(Z, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> float:
    """Mean number of non-zero codes per row: L0 = (1/n) sum_r |{i : Z_ri != 0}| (a count)."""
    totals = _code_totals(Z, batch_rows)
    return float(totals.fires.sum()) / totals.rows


def dead_fraction(Z, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> float:
    """Fraction of concepts that never fire: |{i : Z_ri = 0 for all r}| / c."""
    return float((_code_totals(Z, batch_rows).fires == 0).double().mean())


def energy(Z, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> np.ndarray:
    """Energy_i = E_r[Z_ri] = (1/n) sum_r Z_ri, shape (c,): how strongly and often concept i is used."""
    return _to_numpy(_code_totals(Z, batch_rows).means())


def energy_share(Z_or_energy, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> np.ndarray:
    """Cumulative share of the total energy held by the m most energetic concepts, m = 1..c.

        share[m-1] = sum of the m largest Energy_i / sum_i Energy_i

    Takes codes Z (2-D, or a stream of batches) or a precomputed energy vector (1-D).
    Needs non-negative energies (SAE codes); pass |Z| for signed codes.
    """
    values = np.asarray(Z_or_energy, dtype=np.float64) if _is_energy_vector(Z_or_energy) else energy(Z_or_energy, batch_rows=batch_rows)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError("energy_share needs a non-empty, finite energy vector")
    if (values < 0).any():
        raise ValueError("energy_share needs non-negative energies (SAE codes); pass |Z| for signed codes")
    total = values.sum()
    if total == 0:
        raise ValueError("all energies are zero: no concept ever fires")
    return np.cumsum(np.sort(values)[::-1]) / total


def concepts_for_energy(Z_or_energy, fraction: float = 0.9) -> int:
    """Smallest m such that the m most energetic concepts hold at least `fraction` of the energy."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    share = energy_share(Z_or_energy)
    # Tolerance so that fraction=1.0 is reached despite float rounding of the cumulative sum.
    return int(np.searchsorted(share, fraction - 1e-12) + 1)


def _is_energy_vector(x) -> bool:
    return (isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim == 1) or (
        isinstance(x, (list, tuple)) and len(x) > 0 and np.isscalar(x[0])
    )


# ----------------------------------------------------------------------------- dictionaries
def _unit_rows(D: torch.Tensor) -> torch.Tensor:
    norms = D.norm(dim=1, keepdim=True)
    return D / norms.clamp_min(torch.finfo(D.dtype).tiny)


def match_concepts(D1, D2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hungarian matching of the rows of D1 (c1, d) to the rows of D2 (c2, d) by cosine.

    Rows are L2-normalised, S = D1n D2n^T, and the permutation maximising sum S[r, col(r)] is
    found by scipy's linear_sum_assignment. Returns (rows of D1, matched rows of D2, their
    cosines), min(c1, c2) of each.
    """
    D1 = as_matrix(D1, "D1").double()
    D2 = as_matrix(D2, "D2", device=D1.device, cols=D1.shape[1]).double()
    cosines = _to_numpy(_unit_rows(D1) @ _unit_rows(D2).T)
    rows, cols = linear_sum_assignment(cosines, maximize=True)
    return rows, cols, cosines[rows, cols]


def stability(D1, D2, top: int | None = None, energy1=None, energy2=None) -> float:
    """Stability(D1, D2) = max over permutations P of (1/c) Tr(D1n^T P D2n): mean matched cosine.

    Rows are L2-normalised first; the matching is Hungarian (`match_concepts`). With `top=m`,
    each dictionary is first restricted to its own m highest-energy rows (energy1, energy2:
    (c,) energies, e.g. `energy(Z)`), as in the paper's "top-512" stability. Dictionaries with
    different numbers of rows are matched on min(c1, c2) pairs and averaged over those.
    """
    if top is not None:
        if energy1 is None or energy2 is None:
            raise ValueError("stability(top=...) needs energy1 and energy2, the concepts' energies of each run")
        D1 = _top_energy_rows(as_matrix(D1, "D1"), energy1, top, "energy1")
        D2 = _top_energy_rows(as_matrix(D2, "D2"), energy2, top, "energy2")
    _, _, cosines = match_concepts(D1, D2)
    return float(cosines.mean())


def _top_energy_rows(D: torch.Tensor, energies, top: int, name: str) -> torch.Tensor:
    energies = np.asarray(_to_numpy(energies) if isinstance(energies, torch.Tensor) else energies, dtype=np.float64)
    if energies.shape != (D.shape[0],):
        raise ValueError(f"{name} has shape {energies.shape}, expected ({D.shape[0]},): one energy per dictionary row")
    if not 0 < top <= D.shape[0]:
        raise ValueError(f"top must be in 1..{D.shape[0]}, got {top}")
    keep = np.argsort(-energies, kind="stable")[:top]
    return D[torch.as_tensor(keep, device=D.device)]


# ----------------------------------------------------------------------------- modality
def modality_score(Z_img, Z_txt=None, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> np.ndarray:
    """ModalityScore_i = E_img[z_i] / (E_img[z_i] + E_txt[z_i]), shape (c,).

    Each expectation is the mean over that modality's own rows (about 5 captions per image in
    COCO, so per-modality means, not sums). 1 = fires only on images, 0 = only on texts.
    NaN for a concept that never fires in either modality (0/0: it has no modality).
    Codes must be non-negative (SAE codes). Z_img (n_img, c) and Z_txt (n_txt, c) may differ
    in length; or pass one iterable of (Z_img_batch, Z_txt_batch) pairs and Z_txt=None.
    """
    image, text = _CodeTotals("Z_img"), _CodeTotals("Z_txt")
    if Z_txt is None:
        if not _is_stream(Z_img):
            raise ValueError("Z_txt is missing: pass both code arrays, or one iterable of (Z_img, Z_txt) batches")
        for pair in Z_img:
            _check_pair(pair, ("Z_img", "Z_txt"))
            image.add(pair[0])
            text.add(pair[1])
    else:
        for batch in _row_batches(Z_img, batch_rows):
            image.add(batch)
        for batch in _row_batches(Z_txt, batch_rows):
            text.add(batch)
    mean_img, mean_txt = _to_numpy(image.means()), _to_numpy(text.means())
    if mean_img.shape != mean_txt.shape:
        raise ValueError(f"Z_img has {mean_img.shape[0]} concepts but Z_txt has {mean_txt.shape[0]}: codes of one dictionary expected")
    if (mean_img < 0).any() or (mean_txt < 0).any():
        raise ValueError("modality_score needs non-negative codes (SAE codes); got negative mean codes")
    with np.errstate(invalid="ignore", divide="ignore"):
        return mean_img / (mean_img + mean_txt)


def modality_classifier_accuracy(A_img, A_txt, D, *, balanced: bool = True) -> np.ndarray:
    """Each concept as a one-threshold modality classifier: its best accuracy, shape (c,).

    Every embedding a is projected on the concept direction, p = <a, D_i>; the classifier says
    "image" when p > t (or, the other orientation, when p < t). The returned value is the best
    accuracy over all thresholds t and both orientations: 0.5 = the direction is blind to
    modality, 1.0 = it separates images from texts perfectly.
    balanced=True: accuracy = (image recall + text recall) / 2, so 0.5 is chance whatever the
    image:text ratio (COCO has about 5 captions per image). balanced=False: plain accuracy.

    All concepts at once: the projections are sorted per concept; with I_t and T_t the numbers of
    images and texts at or below sorted position t, the cut after t has balanced accuracy
    (n_img - I_t) / (2 n_img) + T_t / (2 n_txt) for "above = image" (plain accuracy
    (n_img - I_t + T_t) / n), and one minus that for the other orientation, so the best is
    0.5 + max_t |acc_t - 0.5|. Only cuts between distinct values count (ties cannot be split).
    """
    A_img = as_matrix(A_img, "A_img")
    device = A_img.device
    A_txt = as_matrix(A_txt, "A_txt", device=device, cols=A_img.shape[1])
    D = as_matrix(D, "D", device=device)
    if D.shape[1] != A_img.shape[1]:
        raise ValueError(f"D has width {D.shape[1]} but the embeddings have {A_img.shape[1]} dimensions: wrong dictionary")
    n_img, n_txt = A_img.shape[0], A_txt.shape[0]
    if n_img == 0 or n_txt == 0:
        raise ValueError(f"need embeddings of both modalities, got {n_img} images and {n_txt} texts")
    n_all = n_img + n_txt
    is_image = torch.cat([torch.ones(n_img, dtype=torch.long, device=device), torch.zeros(n_txt, dtype=torch.long, device=device)])
    positions = torch.arange(1, n_all + 1, device=device).unsqueeze(1)
    directions = D.to(A_img.dtype)
    best = []
    block = max(1, SORT_BLOCK_ELEMENTS // n_all)
    for start in range(0, D.shape[0], block):
        projections = torch.cat([A_img @ directions[start : start + block].T, A_txt @ directions[start : start + block].T])
        ordered, order = projections.sort(dim=0)
        # Counts (exact integers) of images and texts at or below each sorted position.
        images_below = is_image[order].cumsum(dim=0)
        texts_below = positions - images_below
        if balanced:
            accuracy = 0.5 * (n_img - images_below) / n_img + 0.5 * texts_below / n_txt
        else:
            accuracy = ((n_img - images_below) + texts_below) / n_all
        # A cut after position t is real only if the next value is strictly larger; the cut
        # after the last position (everything below) always is.
        distinct = torch.ones_like(ordered, dtype=torch.bool)
        distinct[:-1] = ordered[1:] > ordered[:-1]
        margin = torch.where(distinct, (accuracy - 0.5).abs(), torch.zeros_like(accuracy)).amax(dim=0)
        everything_above = 0.5 if balanced else n_img / n_all  # the cut before the first position
        best.append(0.5 + margin.clamp_min(abs(everything_above - 0.5)))
    return _to_numpy(torch.cat(best))


# ----------------------------------------------------------------------------- bridges
def bridge_matrix(Z_img, Z_txt=None, D=None, *, batch_rows: int = DEFAULT_BATCH_ROWS, device=None) -> np.ndarray:
    """Bridge matrix B = E_pairs[z_img^T z_txt] ⊙ (D D^T), shape (c, c), float64.

        B[i, j] = (1/n) sum_r Z_img[r, i] Z_txt[r, j] * <D_i, D_j>

    over n matched pairs: row r of Z_img is the image of the caption in row r of Z_txt (repeat
    image rows for several captions per image). B[i, j] is large when image concept i and text
    concept j fire together on pairs and point the same way. D is used as given (SAE concepts
    have unit rows, so D D^T holds cosines).

    Codes are sparse (k of c non-zero), so Z_img^T Z_txt is accumulated from CSR batches with
    n*k^2 multiply-adds instead of the dense n*c^2 (on CPU by the compiled kernel of
    ``vlmsae.cooccurrence``): n=600k, c=8192, k=32 needs the (c, c) result and one batch in
    memory. Inputs: two (n, c) arrays or torch sparse tensors, or one iterable of
    (Z_img_batch, Z_txt_batch) pairs with Z_txt=None.
    `device`: where to compute (defaults to the codes' device).
    """
    if D is None:
        raise ValueError("bridge_matrix needs the dictionary D (c, d): bridge_matrix(Z_img, Z_txt, D)")
    total, rows = None, 0
    for z_img, z_txt in _paired_batches(Z_img, Z_txt, batch_rows, ("Z_img", "Z_txt")):
        z_img = as_matrix(z_img, "Z_img", device=device, allow_sparse=True)
        z_txt = as_matrix(z_txt, "Z_txt", device=z_img.device, cols=z_img.shape[1], allow_sparse=True)
        if z_img.shape[0] != z_txt.shape[0]:
            raise ValueError(
                f"Z_img has {z_img.shape[0]} rows but Z_txt has {z_txt.shape[0]}: the bridge needs matched "
                "image-text pairs, row r with row r (repeat each image's row once per caption)"
            )
        if total is None:
            total = torch.zeros(z_img.shape[1], z_img.shape[1], dtype=torch.float64, device=z_img.device)
        elif z_img.shape[1] != total.shape[0]:
            raise ValueError(f"batches have {z_img.shape[1]} concepts, earlier ones {total.shape[0]}")
        _add_cross_product(total, z_img, z_txt)
        rows += z_img.shape[0]
    if total is None or rows == 0:
        raise ValueError("bridge_matrix got no pairs: Z_img and Z_txt are empty")
    D = as_matrix(D, "D", device=total.device)
    if D.shape[0] != total.shape[0]:
        raise ValueError(f"D has {D.shape[0]} rows but the codes have {total.shape[0]} concepts: wrong dictionary")
    return _to_numpy(total.div_(rows).mul_((D @ D.T).double()))  # D D^T in D's own precision


def _add_cross_product(total: torch.Tensor, z_img: torch.Tensor, z_txt: torch.Tensor) -> None:
    """total (c, c) float64 += Z_img^T Z_txt, from the CSR forms of both batches.

    CPU: the compiled Gustavson kernel of ``vlmsae.cooccurrence`` accumulates straight into
    total. Other devices: torch's sparse-by-sparse product, densified.
    """
    with warnings.catch_warnings():  # torch flags CSR/CSC as beta; both paths are tested
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        dtype = torch.promote_types(z_img.dtype, z_txt.dtype)
        z_img, z_txt = z_img.to(dtype).to_sparse_csr(), z_txt.to(dtype).to_sparse_csr()
        if total.device.type == "cpu":
            from vlmsae.cooccurrence import add_cooccurrence

            csr = lambda z: (z.crow_indices().numpy(), z.col_indices().numpy(), z.values().numpy())
            add_cooccurrence(total.numpy(), csr(z_img), csr(z_txt))
            return
        total += _torch_cross_product(z_img, z_txt)


def _torch_cross_product(z_img: torch.Tensor, z_txt: torch.Tensor) -> torch.Tensor:
    """Z_img^T Z_txt, dense, from two CSR matrices with torch's sparse-by-sparse product."""
    # Z^T in CSR is Z in CSC with the roles of the index arrays swapped: no transposing copy.
    by_column = z_img.to_sparse_csc()
    image_by_concept = torch.sparse_csr_tensor(
        by_column.ccol_indices(), by_column.row_indices(), by_column.values(), (z_img.shape[1], z_img.shape[0]),
        check_invariants=False,
    )
    return torch.sparse.mm(image_by_concept, z_txt).to_dense()


def top_bridges(B, n: int, *, include_diagonal: bool = False) -> list[tuple[int, int, float]]:
    """The n largest entries of B as (image concept i, text concept j, B[i, j]), largest first.

    The diagonal (a concept bridging to itself, i.e. one firing on both sides of a pair) is left
    out unless include_diagonal=True: a bridge links two different concepts.
    """
    B = np.asarray(_to_numpy(B) if isinstance(B, torch.Tensor) else B, dtype=np.float64)
    if B.ndim != 2 or B.shape[0] != B.shape[1]:
        raise ValueError(f"B must be a square (c, c) bridge matrix, got shape {B.shape}")
    if np.isnan(B).any():
        raise ValueError("B contains NaN: recompute it from finite codes")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    scores = B.copy()
    if not include_diagonal:
        np.fill_diagonal(scores, -np.inf)
    flat = scores.ravel()
    n = min(n, int(np.isfinite(flat).sum()))
    if n == 0:
        return []
    chosen = np.argpartition(-flat, n - 1)[:n]
    chosen = chosen[np.argsort(-flat[chosen], kind="stable")]
    image_concepts, text_concepts = np.unravel_index(chosen, B.shape)
    return [(int(i), int(j), float(B[i, j])) for i, j in zip(image_concepts, text_concepts)]
