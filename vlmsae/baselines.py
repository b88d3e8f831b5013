"""Dictionary-learning methods that are not SAEs, for the paper's Pareto figure (R2 against L0).

All share the SAE face, scikit-learn style: `fit(A) -> self`, `encode(A) -> Z` (n, c),
`decode(Z) -> A_hat` (n, d), and `dictionary`, the (c, d) tensor of atoms (concepts). Each runs
in torch on `device` (CPU here, GPU when given one) in float32, and takes one sparsity knob:

    PCA(n_components)             dense codes, L0 = n_components; the data mean is kept aside
    KMeans(n_atoms)               one atom per example, code = the projection on it (L0 = 1)
    SemiNMF(n_atoms, top_k=None)  non-negative codes, signed atoms; optional top-k codes
    SparseCoding(n_atoms, k)      orthogonal matching pursuit, exactly k atoms per example,
                                  dictionary updated by least squares (MOD)

Fitting works on all rows at once: subsample millions of embeddings before calling `fit`.
No autocast: least squares and eigen-decompositions need float32 or better.
"""

from __future__ import annotations

import torch

from .metrics import as_matrix

EPS = 1e-10


class DictionaryMethod:
    """The shared face: input checks, device handling and the dictionary."""

    def __init__(self, *, device: str | torch.device = "cpu", seed: int = 0):
        self.device = torch.device(device)
        self.seed = seed
        self._dictionary: torch.Tensor | None = None

    @property
    def dictionary(self) -> torch.Tensor:
        """(c, d) atoms; unit rows except for PCA's orthonormal components (also unit)."""
        if self._dictionary is None:
            raise ValueError(f"{type(self).__name__} is not fitted yet: call fit(A) first")
        return self._dictionary

    def fit(self, A) -> "DictionaryMethod":
        raise NotImplementedError

    def encode(self, A) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, Z) -> torch.Tensor:
        """A_hat = Z D."""
        return self._codes(Z) @ self.dictionary

    def _data(self, A, *, fitting: bool = False) -> torch.Tensor:
        cols = None if fitting else self.dictionary.shape[1]
        A = as_matrix(A, "A", device=self.device, cols=cols).float()
        if A.shape[0] == 0:
            raise ValueError("A has no rows")
        return A

    def _codes(self, Z) -> torch.Tensor:
        return as_matrix(Z, "Z", device=self.device, cols=self.dictionary.shape[0]).float()

    def _generator(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.seed)

    def _random_rows(self, A: torch.Tensor, count: int) -> torch.Tensor:
        """`count` distinct rows of A, normalised: the usual atom initialisation."""
        if count > A.shape[0]:
            raise ValueError(f"{type(self).__name__} needs at least {count} rows to initialise {count} atoms, got {A.shape[0]}")
        chosen = torch.randperm(A.shape[0], generator=self._generator(), device=self.device)[:count]
        return _unit_rows(A[chosen])


def _unit_rows(X: torch.Tensor) -> torch.Tensor:
    return X / X.norm(dim=1, keepdim=True).clamp_min(EPS)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")


# ----------------------------------------------------------------------------- PCA
class PCA(DictionaryMethod):
    """Principal components: A_hat = (A - mu) V^T V + mu with V the top eigenvectors of the covariance.

    dictionary: (n_components, d) orthonormal rows V; codes Z = (A - mu) V^T (dense, signed);
    decode adds the mean mu back. L0 = n_components.
    """

    def __init__(self, n_components: int, *, device: str | torch.device = "cpu", seed: int = 0):
        _check_positive(n_components=n_components)
        super().__init__(device=device, seed=seed)
        self.n_components = n_components
        self.mean: torch.Tensor | None = None

    def fit(self, A) -> "PCA":
        A = self._data(A, fitting=True)
        if self.n_components > A.shape[1]:
            raise ValueError(f"n_components={self.n_components} exceeds the data width {A.shape[1]}")
        mean = A.double().mean(dim=0)
        centred = A.double() - mean
        covariance = centred.T @ centred / A.shape[0]
        _, vectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
        self.mean = mean.float()
        self._dictionary = vectors[:, -self.n_components :].flip(1).T.contiguous().float()
        return self

    def encode(self, A) -> torch.Tensor:
        return (self._data(A) - self.mean) @ self.dictionary.T

    def decode(self, Z) -> torch.Tensor:
        return super().decode(Z) + self.mean


# ----------------------------------------------------------------------------- K-Means
class KMeans(DictionaryMethod):
    """Gain-shape K-Means: each example uses one unit atom, a ~ z D_j, with z = <a, D_j>.

    Assignment j = argmax_j |<a, D_j>| (the atom whose line is closest); update D_j = the top
    eigenvector of sum over its examples of a a^T, by one power-iteration step per round
    (D_j <- normalise(sum_i z_i a_i)). An atom left without examples restarts at the worst
    reconstructed example. The sparsity knob is the number of atoms; L0 is always 1.
    """

    def __init__(self, n_atoms: int, *, n_iter: int = 50, device: str | torch.device = "cpu", seed: int = 0):
        _check_positive(n_atoms=n_atoms, n_iter=n_iter)
        super().__init__(device=device, seed=seed)
        self.n_atoms, self.n_iter = n_atoms, n_iter

    def fit(self, A) -> "KMeans":
        A = self._data(A, fitting=True)
        atoms = self._random_rows(A, self.n_atoms)
        for _ in range(self.n_iter):
            assignment, projection = _nearest_line(A, atoms)
            summed = torch.zeros_like(atoms).index_add_(0, assignment, projection[:, None] * A)
            used = torch.bincount(assignment, minlength=self.n_atoms) > 0
            atoms = torch.where(used[:, None], _unit_rows(summed), atoms)
            atoms = _restart_unused(atoms, used, A, A - projection[:, None] * atoms[assignment])
        self._dictionary = atoms
        return self

    def encode(self, A) -> torch.Tensor:
        A = self._data(A)
        assignment, projection = _nearest_line(A, self.dictionary)
        return torch.zeros(A.shape[0], self.n_atoms, device=self.device).scatter_(1, assignment[:, None], projection[:, None])


def _nearest_line(A: torch.Tensor, atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    projections = A @ atoms.T
    assignment = projections.abs().argmax(dim=1)
    return assignment, projections.gather(1, assignment[:, None])[:, 0]


def _restart_unused(atoms: torch.Tensor, used: torch.Tensor, A: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Unused atoms restart at the examples with the largest residuals (no host sync: fixed sizes)."""
    worst = residual.norm(dim=1).argsort(descending=True)[: atoms.shape[0]]
    replacement = _unit_rows(A[worst])
    if replacement.shape[0] < atoms.shape[0]:
        return atoms
    # The i-th unused atom takes the i-th worst example.
    rank = (~used).long().cumsum(0) - 1
    return torch.where(used[:, None], atoms, replacement[rank.clamp_min(0)])


# ----------------------------------------------------------------------------- Semi-NMF
class SemiNMF(DictionaryMethod):
    """Semi-NMF (Ding, Li & Jordan 2010): A ~ Z D with Z >= 0 and D signed.

    Alternates D = (Z^T Z)^-1 Z^T A (least squares) with the multiplicative update
        Z <- Z * sqrt(([A D^T]^+ + Z [D D^T]^-) / ([A D^T]^- + Z [D D^T]^+))
    (X^+ = max(X, 0), X^- = max(-X, 0)), which never increases ||A - Z D||_F and keeps Z >= 0.
    `encode` runs the same Z update with D fixed. After fitting, atoms are scaled to unit rows
    (codes absorb the norms). top_k: k-sparse Semi-NMF for a sparsity sweep: every code update,
    in fitting and in `encode`, keeps each row's k largest codes; None keeps all n_atoms. `loss_history` holds ||A - Z D||_F^2 / n after each fitting round.
    """

    def __init__(self, n_atoms: int, *, top_k: int | None = None, n_iter: int = 200, encode_iter: int = 100,
                 device: str | torch.device = "cpu", seed: int = 0):
        _check_positive(n_atoms=n_atoms, n_iter=n_iter, encode_iter=encode_iter)
        if top_k is not None:
            _check_positive(top_k=top_k)
            if top_k > n_atoms:
                raise ValueError(f"top_k={top_k} exceeds n_atoms={n_atoms}")
        super().__init__(device=device, seed=seed)
        self.n_atoms, self.top_k, self.n_iter, self.encode_iter = n_atoms, top_k, n_iter, encode_iter
        self.loss_history: list[float] = []

    def fit(self, A) -> "SemiNMF":
        A = self._data(A, fitting=True)
        generator = self._generator()
        codes = torch.rand(A.shape[0], self.n_atoms, generator=generator, device=self.device) + 0.1
        losses = []
        for _ in range(self.n_iter):
            atoms = _least_squares_atoms(codes, A)
            codes = self._code_step(A, atoms, codes)
            losses.append(((A - codes @ atoms) ** 2).sum() / A.shape[0])
        self.loss_history = torch.stack(losses).tolist()
        self._dictionary = _unit_rows(atoms)
        return self

    def encode(self, A) -> torch.Tensor:
        A = self._data(A)
        atoms = self.dictionary
        # Start from the non-negative part of the least-squares codes (plus a floor: the
        # multiplicative update cannot move a zero).
        codes = torch.linalg.lstsq(atoms.T, A.T).solution.T.clamp_min(0) + 1e-3
        for _ in range(self.encode_iter):
            codes = self._code_step(A, atoms, codes)
        if self.top_k is not None:
            # Refit the kept codes: the multiplicative update leaves zeros at zero, so this is
            # non-negative least squares on each row's support.
            for _ in range(self.encode_iter):
                codes = _semi_nmf_code_step(A, atoms, codes)
        return codes

    def _code_step(self, A, atoms, codes):
        """One multiplicative update; with top_k, sparsified inside the loop so the dictionary is
        learned for k-sparse codes (truncating dense Semi-NMF codes afterwards scored R2 < 0).
        The small floor lets a code that was cut come back: the update cannot move a zero."""
        if self.top_k is None:
            return _semi_nmf_code_step(A, atoms, codes)
        codes = _semi_nmf_code_step(A, atoms, codes + 1e-3)
        values, indices = codes.topk(self.top_k, dim=1)
        return torch.zeros_like(codes).scatter_(1, indices, values)


def _semi_nmf_code_step(A: torch.Tensor, atoms: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    cross, gram = A @ atoms.T, atoms @ atoms.T
    numerator = cross.clamp_min(0) + codes @ (-gram).clamp_min(0)
    denominator = (-cross).clamp_min(0) + codes @ gram.clamp_min(0)
    return codes * torch.sqrt(numerator / denominator.clamp_min(EPS))


def _least_squares_atoms(codes: torch.Tensor, A: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """D = (Z^T Z + ridge * tr/c * I)^-1 Z^T A; the small ridge keeps unused atoms finite."""
    gram = codes.T @ codes
    scale = ridge * gram.diagonal().mean().clamp_min(EPS)
    eye = torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype)
    return torch.linalg.solve(gram + scale * eye, codes.T @ A)


# ----------------------------------------------------------------------------- sparse coding
class SparseCoding(DictionaryMethod):
    """Sparse coding with a learned dictionary: OMP codes with exactly k atoms, MOD updates.

    encode: orthogonal matching pursuit (`omp`). fit: alternate codes = omp(A, D, k) and
    D = (Z^T Z)^-1 Z^T A (the method of optimal directions), atoms rescaled to unit rows, and
    atoms no example uses restart at the worst reconstructed examples.
    """

    def __init__(self, n_atoms: int, k: int, *, n_iter: int = 20, batch_rows: int = 8192,
                 device: str | torch.device = "cpu", seed: int = 0):
        _check_positive(n_atoms=n_atoms, k=k, n_iter=n_iter, batch_rows=batch_rows)
        if k > n_atoms:
            raise ValueError(f"k={k} exceeds n_atoms={n_atoms}: OMP picks k distinct atoms")
        super().__init__(device=device, seed=seed)
        self.n_atoms, self.k, self.n_iter, self.batch_rows = n_atoms, k, n_iter, batch_rows

    def fit(self, A) -> "SparseCoding":
        A = self._data(A, fitting=True)
        if self.k > A.shape[1]:
            raise ValueError(f"k={self.k} exceeds the data width {A.shape[1]}: more atoms than dimensions are not independent")
        atoms = self._random_rows(A, self.n_atoms)
        for _ in range(self.n_iter):
            codes = self._omp_in_batches(A, atoms)
            atoms = _least_squares_atoms(codes, A)
            norms = atoms.norm(dim=1)
            used = (codes != 0).any(dim=0) & (norms > EPS)
            atoms = _restart_unused(_unit_rows(atoms), used, A, A - codes @ atoms)
        self._dictionary = atoms
        return self

    def encode(self, A) -> torch.Tensor:
        return self._omp_in_batches(self._data(A), self.dictionary)

    def _omp_in_batches(self, A: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
        return torch.cat([omp(A[start : start + self.batch_rows], atoms, self.k) for start in range(0, A.shape[0], self.batch_rows)])


def omp(A: torch.Tensor, D: torch.Tensor, k: int) -> torch.Tensor:
    """Orthogonal matching pursuit for all rows at once: (n, c) codes with k non-zeros per row.

    For s = 1..k: pick the atom most correlated (in absolute value) with the residual among
    those not yet picked, then refit all picked coefficients by least squares,
    coef = (D_S D_S^T)^-1 D_S a, and set the residual to a - coef D_S. D rows should be unit norm.
    A row exactly reconstructed by fewer atoms can get zero coefficients for the rest.
    """
    n, c = A.shape[0], D.shape[0]
    gram = D @ D.T
    initial = A @ D.T
    support = torch.zeros(n, k, dtype=torch.long, device=A.device)
    picked = torch.zeros(n, c, dtype=torch.bool, device=A.device)
    rows = torch.arange(n, device=A.device)
    correlation = initial
    for step in range(k):
        choice = correlation.abs().masked_fill(picked, -1.0).argmax(dim=1)
        support[:, step] = choice
        picked[rows, choice] = True
        chosen = support[:, : step + 1]
        system = gram[chosen[:, :, None], chosen[:, None, :]]
        coefficients = torch.linalg.solve(system, initial.gather(1, chosen))
        codes = torch.zeros(n, c, device=A.device, dtype=A.dtype).scatter_(1, chosen, coefficients)
        correlation = initial - codes @ gram  # = (A - codes D) D^T
    return codes
