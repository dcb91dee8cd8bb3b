"""Triplet-loss adaptation of the frozen encoder to a site's own faces (FaceNet's loss).

A linear head ``y = scale * normalize(W x + b)`` (engines/models/adapter.py) is trained on the
encoder's descriptors x of a folder-per-identity layout with the triplet loss of
../shared/THEORY.md on squared distances, ``max(d(A, P) - d(A, N) + alpha, 0)``. Each batch
holds ``identities_per_batch`` people with ``faces_per_identity`` descriptors each, and the
triplets are mined inside the batch:

- ``batch-hard`` (Hermans et al. 2017): for every anchor, its farthest positive and its
  nearest negative;
- ``semi-hard`` (Schroff et al. 2015): for every anchor-positive pair, the nearest negative
  that is still farther than the positive (``d(A, P) < d(A, N)``), else the farthest negative
  (an easy one, which then adds no loss unless it is within the margin).

W starts as the identity and ``b`` as zero, and ``stay_close`` * ||W - I||^2 keeps the head
near the encoder: a site has tens of people, not the millions the encoder learnt from.
Whether it helps is measured on identities held out of training (``AdapterReport``), against
the plain encoder at the same kind of threshold (chosen on the training people).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnx
import torch
from torch.nn import functional

from calibration.errors import CalibrationDataError
from calibration.faceset import LabelledFaces, all_pairs
from calibration.roc import best_accuracy_point
from calibration.verifier import MethodResult, held_out_result
from engines.models.adapter import adapter_head_onnx, apply_head

__all__ = [
    "AdapterReport",
    "AdapterSettings",
    "TrainedAdapter",
    "batch_hard_triplets",
    "evaluate_adapter",
    "semi_hard_triplets",
    "squared_distances",
    "train_adapter",
    "triplet_loss",
]

Mining = Literal["batch-hard", "semi-hard"]
_log = logging.getLogger(__name__)


def squared_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """(B, B) squared Euclidean distances between the rows of ``embeddings`` (B, D)."""
    squares = (embeddings * embeddings).sum(dim=1)
    gram = embeddings @ embeddings.T
    return (squares[:, None] - 2.0 * gram + squares[None, :]).clamp_min(0.0)


def _masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) (B, B) masks: same label but not itself, and other label."""
    same = labels[:, None] == labels[None, :]
    itself = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~itself, ~same


def batch_hard_triplets(
    distances: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(d(A, P), d(A, N)) per anchor with a positive and a negative in the batch: its
    farthest positive and its nearest negative."""
    positive, negative = _masks(labels)
    usable = positive.any(dim=1) & negative.any(dim=1)
    hardest_positive = distances.masked_fill(~positive, float("-inf")).amax(dim=1)
    hardest_negative = distances.masked_fill(~negative, float("inf")).amin(dim=1)
    return hardest_positive[usable], hardest_negative[usable]


def semi_hard_triplets(
    distances: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(d(A, P), d(A, N)) per anchor-positive pair: the nearest negative farther than the
    positive, or the farthest negative when none is (anchors without a negative are left out)."""
    positive, negative = _masks(labels)
    anchors, positives = torch.nonzero(positive & negative.any(dim=1)[:, None], as_tuple=True)
    to_positive = distances[anchors, positives]
    to_negatives = distances[anchors]  # (T, B)
    candidates = negative[anchors]
    farther = candidates & (to_negatives > to_positive[:, None])
    semi_hard = to_negatives.masked_fill(~farther, float("inf")).amin(dim=1)
    easiest = to_negatives.masked_fill(~candidates, float("-inf")).amax(dim=1)
    return to_positive, torch.where(farther.any(dim=1), semi_hard, easiest)


def triplet_loss(
    to_positive: torch.Tensor, to_negative: torch.Tensor, *, margin: float
) -> torch.Tensor:
    """Mean of ``max(d(A, P) - d(A, N) + margin, 0)`` over the triplets (0 when there are none)."""
    if to_positive.numel() == 0:
        return to_positive.new_zeros(())
    return functional.relu(to_positive - to_negative + margin).mean()


@dataclass(frozen=True, slots=True)
class AdapterSettings:
    """How the head is trained; ``margin`` alpha is in squared descriptor units."""

    mining: Mining = "batch-hard"
    margin: float = 0.2
    steps: int = 400
    learning_rate: float = 1e-3
    identities_per_batch: int = 8
    faces_per_identity: int = 4
    stay_close: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mining not in ("batch-hard", "semi-hard"):
            raise CalibrationDataError(
                f"mining must be batch-hard or semi-hard, got {self.mining!r}"
            )
        if self.margin <= 0 or self.steps < 1 or self.learning_rate <= 0 or self.stay_close < 0:
            raise CalibrationDataError(
                "margin and learning rate must be > 0, steps >= 1, stay_close >= 0"
            )
        if self.identities_per_batch < 2 or self.faces_per_identity < 2:
            raise CalibrationDataError(
                "a batch needs at least 2 identities with at least 2 faces each"
            )


class _Head(torch.nn.Module):
    def __init__(self, size: int, scale: float) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(size, size)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(size))
            self.linear.bias.zero_()
        self.scale = scale

    def forward(self, descriptors: torch.Tensor) -> torch.Tensor:
        return self.scale * functional.normalize(self.linear(descriptors), dim=1)


@dataclass(frozen=True, slots=True)
class TrainedAdapter:
    """The trained head: ``x @ weight + bias``, normalised, times ``scale``; ``losses`` per step."""

    weight: npt.NDArray[np.float32]
    bias: npt.NDArray[np.float32]
    scale: float
    base_model_id: str
    losses: tuple[float, ...]

    def apply(self, descriptors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The head on descriptors (N, D)."""
        return apply_head(descriptors, self.weight, self.bias, self.scale)

    def onnx_model(self) -> onnx.ModelProto:
        """The head as ONNX, naming the encoder it was trained on."""
        return adapter_head_onnx(
            self.weight, self.bias, scale=self.scale, base_model_id=self.base_model_id
        )


def _batch(
    labels: npt.NDArray[np.int64], settings: AdapterSettings, generator: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Row indices of one P x K batch (K drawn with replacement from people with few faces)."""
    people = np.unique(labels)
    chosen = generator.choice(
        people, min(settings.identities_per_batch, people.size), replace=False
    )
    rows = []
    for person in chosen:
        own = np.flatnonzero(labels == person)
        take = settings.faces_per_identity
        rows.append(generator.choice(own, take, replace=own.size < take))
    return np.concatenate(rows).astype(np.int64)


def train_adapter(faces: LabelledFaces, settings: AdapterSettings) -> TrainedAdapter:
    """Train the head on ``faces`` (their descriptors are the frozen encoder's)."""
    labels = faces.labels
    if sum(int((labels == person).sum()) >= 2 for person in np.unique(labels)) < 2:
        raise CalibrationDataError(
            "training the adapter needs at least 2 identities with two faces or more"
        )
    torch.manual_seed(settings.seed)
    generator = np.random.default_rng(settings.seed)
    vectors = torch.from_numpy(np.asarray(faces.vectors, np.float32))
    targets = torch.from_numpy(labels)
    scale = float(np.median(np.linalg.norm(faces.vectors, axis=1)))
    head = _Head(vectors.shape[1], scale)
    identity = torch.eye(vectors.shape[1])
    optimiser = torch.optim.Adam(head.parameters(), lr=settings.learning_rate)
    mine = batch_hard_triplets if settings.mining == "batch-hard" else semi_hard_triplets
    losses = []
    for _ in range(settings.steps):
        rows = torch.from_numpy(_batch(labels, settings, generator))
        distances = squared_distances(head(vectors[rows]))
        to_positive, to_negative = mine(distances, targets[rows])
        loss = triplet_loss(to_positive, to_negative, margin=settings.margin)
        loss = loss + settings.stay_close * ((head.linear.weight - identity) ** 2).sum()
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        losses.append(float(loss.detach()))
    return TrainedAdapter(
        weight=head.linear.weight.detach().numpy().T.copy(),
        bias=head.linear.bias.detach().numpy().copy(),
        scale=scale,
        base_model_id=faces.model_id,
        losses=tuple(losses),
    )


@dataclass(frozen=True, slots=True)
class AdapterReport:
    """Held-out people: the plain encoder vs encoder + adapter, each at the threshold that was
    most accurate on the training people."""

    train_identities: int
    held_out_identities: int
    held_out_genuine_pairs: int
    held_out_impostor_pairs: int
    encoder: MethodResult
    adapted: MethodResult
    encoder_tau: float
    adapted_tau: float
    final_loss: float

    @property
    def helps(self) -> bool:
        """More accurate held out, AUC no lower, and McNemar's p < 0.05 on the disagreements."""
        return self.adapted.beats(self.encoder)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "train_identities": self.train_identities,
            "held_out_identities": self.held_out_identities,
            "held_out_genuine_pairs": self.held_out_genuine_pairs,
            "held_out_impostor_pairs": self.held_out_impostor_pairs,
            "encoder": self.encoder.as_dict(),
            "adapted": self.adapted.as_dict(),
            "encoder_tau": round(self.encoder_tau, 6),
            "adapted_tau": round(self.adapted_tau, 6),
            "final_loss": round(self.final_loss, 6),
            "helps": self.helps,
        }


def evaluate_adapter(
    adapter: TrainedAdapter, train: LabelledFaces, held_out: LabelledFaces
) -> AdapterReport:
    """Compare encoder and adapted descriptors on every pair of the held-out people."""
    encoder_tau = best_accuracy_point(all_pairs(train).scores()).tau
    adapted_train = train.with_vectors(adapter.apply(train.vectors), "adapted")
    adapted_tau = best_accuracy_point(all_pairs(adapted_train).scores()).tau
    plain = all_pairs(held_out)
    adapted = all_pairs(held_out.with_vectors(adapter.apply(held_out.vectors), "adapted"))
    try:
        plain_scores, adapted_scores = plain.scores(), adapted.scores()
    except CalibrationDataError as exc:
        raise CalibrationDataError(
            f"the held-out people give no pairs of one kind ({exc}): hold out more identities"
        ) from exc
    plain_accepted = plain.distances <= encoder_tau
    plain_right = plain_accepted == plain.same
    return AdapterReport(
        train_identities=len(train.identity_names),
        held_out_identities=len(held_out.identity_names),
        held_out_genuine_pairs=int(plain.same.sum()),
        held_out_impostor_pairs=int((~plain.same).sum()),
        encoder=held_out_result(plain_scores, plain_accepted, plain_right),
        adapted=held_out_result(adapted_scores, adapted.distances <= adapted_tau, plain_right),
        encoder_tau=encoder_tau,
        adapted_tau=adapted_tau,
        final_loss=float(np.mean(adapter.losses[-20:])),
    )
