"""The attack interface and registry: what the pool audit and the model audit run.

An attack is a subclass of :class:`Attack` decorated with :func:`register_attack`, in any module of this
package (every module is imported by ``tasks/attacks/__init__.py``, so adding an attack is one new file).
Both audits iterate :func:`list_attacks` for their audit, feed each attack one block of records at a time
(:class:`AttackInputs`) and summarise what it returns; neither names an attack, except the model audit,
whose record risk is its offline LiRA.

* ``audits``: which audits run the attack: ``"pool"`` (held-out target models of a pool, many references)
  and/or ``"model"`` (one existing model, ``medaudit audit-model``). Names are unique per audit; the model
  audit's ``lira_offline`` is the few-reference variant.
* ``needs``: ``"scores"`` (score transform of the logits, tasks/attacks/scores.py) or ``"probs"``
  (view-averaged probabilities of the correct outcome, plus a population of records that are non-members
  of every model). The pool audit streams scores first and probabilities in a second pass, so its results
  list the score attacks first, then the probability attacks, each in registry order.
* ``version``: bump it when the attack's numbers change, so stored results are not mixed.
* ``llr``: the attack's scores are log-likelihood ratios, so the pool audit adds a patient-level result
  whose statistic is the sum over the patient's records.

Higher score = more likely a member, for every attack. An attack object lives for one audit run: it may
keep state between blocks (a tuned parameter, a pooled variance from the first block).
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

AUDITS = ("pool", "model")
NEEDS = ("scores", "probs")
_T = TypeVar("_T")


@dataclass(frozen=True)
class AttackContext:
    """What an audit tells its attacks once, before the first block.

    variance: the few-reference LiRA's variance rule ("auto", "per_record", "fixed"; model audit only).
    """

    audit: str
    n_views: int
    score_transform: str
    variance: str = "auto"


@dataclass(frozen=True)
class AttackInputs:
    """One block of n records as the attacks read them; T target (audited) models, M reference models.

    ref_in: (M, n) bool, reference model trained on the record.
    target_scores (T, n, V), ref_scores (M, n, V): scores, NaN = not scored (``needs == "scores"``).
    target_probs (T, n), ref_probs (M, n): view-averaged probabilities (``needs == "probs"``).
    target_population (T, P), ref_population (M, P): the same on population records, non-members of every model.
    ref_models: (M,) the reference models' ids, for the parameters as run.
    """

    ref_in: np.ndarray
    target_scores: np.ndarray | None = None
    ref_scores: np.ndarray | None = None
    target_probs: np.ndarray | None = None
    ref_probs: np.ndarray | None = None
    target_population: np.ndarray | None = None
    ref_population: np.ndarray | None = None
    ref_models: tuple[int, ...] = ()
    _memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def shared(self, key: str, compute: Callable[[], _T]) -> _T:
        """``compute()`` once per block for every attack that asks by ``key`` (e.g. one LiRA fit for four variants)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


class Attack(ABC):
    """One membership-inference attack (module docstring)."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    needs: ClassVar[str] = "scores"
    audits: ClassVar[tuple[str, ...]] = AUDITS
    llr: ClassVar[bool] = False

    def __init__(self, context: AttackContext) -> None:
        self.context = context

    def usable(self, n_references: int, n_population: int) -> bool:
        """Whether the attack can run with this many reference models and population records."""
        return True

    @abstractmethod
    def score(self, inputs: AttackInputs) -> np.ndarray:
        """Per-record scores (T, n) float64 of the block's target models; NaN = no score."""

    def params(self, n_reference_models: int) -> dict[str, Any]:
        """The attack's parameters as run (JSON-able), after the last block; ``n_reference_models``: those with scores."""
        return {}


ATTACK_REGISTRY: dict[str, dict[str, type[Attack]]] = {audit: {} for audit in AUDITS}


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: add ``cls`` to the registry of every audit in ``cls.audits``."""
    if cls.needs not in NEEDS or not cls.audits or not set(cls.audits) <= set(AUDITS):
        raise ValueError(f"attack {cls.__name__}: needs must be one of {NEEDS}, audits a subset of {AUDITS}")
    for audit in cls.audits:
        if cls.name in ATTACK_REGISTRY[audit]:
            raise ValueError(f"attack {cls.name!r} is registered twice for the {audit} audit")
        ATTACK_REGISTRY[audit][cls.name] = cls
    return cls


def list_attacks(audit: str) -> list[type[Attack]]:
    """The attacks ``audit`` runs, in registration order."""
    return list(ATTACK_REGISTRY[audit].values())


def get_attack(name: str, audit: str) -> type[Attack]:
    """The attack ``name`` of ``audit``; KeyError naming the registered ones if there is none."""
    try:
        return ATTACK_REGISTRY[audit][name]
    except KeyError:
        raise KeyError(f"unknown {audit} attack {name!r}; registered: {', '.join(sorted(ATTACK_REGISTRY[audit]))}") from None


def start_attacks(context: AttackContext) -> dict[str, Attack]:
    """One fresh object per attack of ``context.audit``, by name, score attacks first (module docstring)."""
    classes = sorted(list_attacks(context.audit), key=lambda cls: NEEDS.index(cls.needs))
    return {cls.name: cls(context) for cls in classes}


def view_mean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis (views) ignoring NaN; NaN where every view is NaN (a model without scores)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=-1)
