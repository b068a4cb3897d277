"""The ports the reconcile loop is handed besides the adapters: the desired-state loader, the
observer told about every pass, and the progress told as one pass's actions run.

Implemented by app.py (DesiredLoader, over desired_source.py), admin_backend.py,
adapters/store/events.py and adapters/hooks/observer.py (PassObserver), cli_output.py
(ActionProgress); called by reconcile.py and execute.py (ActionProgress). Part of
controller/ports/ (which re-exports every name; the rules of every port are in its docstring).
"""

from __future__ import annotations

from typing import Protocol

from controller.fold import Outcome
from controller.model import Desired, Observed
from controller.plan import Plan
from controller.status import CertStatus


class DesiredLoader(Protocol):
    """Loads desired state (app.App.load_desired over desired_source.DesiredSource).

    With `fresh=False` it may return the previous, unchanged value when no file it read
    changed; `fresh=True` always re-parses. Raises ConfigError naming the file and line when
    njet.conf cannot be used.
    """

    def __call__(self, *, fresh: bool = False) -> Desired: ...


class PassObserver(Protocol):
    """Told about every finished reconcile pass (admin_backend.py feeds metrics from it).

    Called on the event loop after the pass's status was folded (and saved where possible);
    must be quick and must not raise (an exception fails the pass's caller, which logs it).
    """

    def on_pass(self, *, plan: Plan, outcomes: list[Outcome], seconds: float,
                observed: Observed, statuses: dict[str, CertStatus]) -> None: ...


class ActionProgress(Protocol):
    """Told as one pass's actions run (the CLI's `reconcile`: a progress bar on a terminal,
    one line per finished action otherwise; cli_output.py). The Executor calls `started(total)`
    once before the first action, `finished(outcome)` as each one ends (in any order) and
    `ended()` after the last, also when the pass is cancelled. On the event loop; quick; never
    raises."""

    def started(self, total: int) -> None: ...
    def finished(self, outcome: Outcome) -> None: ...
    def ended(self) -> None: ...
