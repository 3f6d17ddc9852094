"""How one Ray Tune experiment sweeps several specialists at once (``interceptor tune``).

A sweep is one Tuner whose trials belong to different specialists (``config["specialist"]``), so
that a single ``max_concurrent_trials`` caps them all and trials of every specialist run side by
side. What must stay per specialist is split out by these two wrappers:

* :class:`SpecialistSearch` (a Tune ``Searcher``) holds one searcher per specialist (Optuna's TPE,
  or :class:`RandomSearch`), each with the recipe point and ``space.points`` first, and hands out
  suggestions round-robin (the specialist with the fewest trials so far next) until every
  specialist has ``num_samples``. A specialist's results only ever reach its own searcher.
* :class:`SpecialistASHA` (a Tune scheduler) keeps one :class:`ResumableASHA` per specialist, so a
  trial is only compared with the trials of its own specialist (their val AUCs are not on one scale).

Both are saved with the experiment and restored by ``Tuner.restore``.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher

#: the trial config key naming a trial's specialist
SPECIALIST = "specialist"


class PickledSearcher(Searcher):
    """A searcher whose whole state is its attributes: saved and restored with the experiment."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class RandomSearch(PickledSearcher):
    """Random search as a ``Searcher``: the given points first, then seeded samples of the space."""

    def __init__(self, points: list[dict] | None = None, seed: int | None = None):
        import numpy as np

        super().__init__()
        self.points = [dict(p) for p in points or []]
        self.rng = np.random.default_rng(seed)
        self.space: dict = {}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        from ray.tune.search.sample import Domain

        self._metric, self._mode = metric or self._metric, mode or self._mode
        self.space = {k: v for k, v in config.items() if isinstance(v, Domain)}
        return True

    def suggest(self, trial_id: str) -> dict | None:
        if self.points:
            return self.points.pop(0)
        return {k: domain.sample(random_state=self.rng) for k, domain in self.space.items()}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass


class SpecialistSearch(PickledSearcher):
    """One searcher per specialist behind one ``Searcher``: round-robin suggestions tagged with
    their specialist, ``num_samples`` per specialist, results routed to the trial's own searcher."""

    def __init__(self, searchers: dict[str, Searcher], num_samples: int):
        super().__init__()
        self.searchers = searchers
        self.num_samples = num_samples
        self.suggested = dict.fromkeys(searchers, 0)
        self.owner: dict[str, str] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        self._metric, self._mode = metric or self._metric, mode or self._mode
        done = [s.set_search_properties(metric, mode, config, **spec) for s in self.searchers.values()]
        return all(done)

    def suggest(self, trial_id: str) -> dict | str | None:
        open_ = [k for k in self.searchers if self.suggested[k] < self.num_samples]
        if not open_:
            return Searcher.FINISHED
        key = min(open_, key=lambda k: self.suggested[k])  # ties: the specialists' order
        config = self.searchers[key].suggest(trial_id)
        if config is None:
            return None
        if config == Searcher.FINISHED:  # that searcher has nothing more: count it as done
            self.suggested[key] = self.num_samples
            return self.suggest(trial_id)
        self.suggested[key] += 1
        self.owner[trial_id] = key
        return {**config, SPECIALIST: key}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.owner:
            self.searchers[self.owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.owner:
            self.searchers[self.owner.pop(trial_id)].on_trial_complete(trial_id, result=result, error=error)


def reported_results(trial: Any) -> list[dict]:
    """The results a Tune trial reported so far, from its ``result.json`` in storage ([] if none)."""
    import pyarrow.fs as pafs

    if not trial.storage.trial_dir_name:  # a new trial: no folder, no results yet
        return []
    fs, path = trial.storage.storage_filesystem, f"{trial.path}/result.json"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return []
    with fs.open_input_stream(path) as f:
        text = f.read().decode()
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by the interruption
            continue
    return rows


class ResumableASHA(ASHAScheduler):
    """ASHA whose rung records survive ``Tuner.restore``.

    Tune does not save scheduler state with an experiment. On restore it re-adds every trial; this
    replays the results each one had already reported into its bracket, so the trials that ran before
    an interruption still set the cutoffs for those that run after it (new trials have no results,
    so nothing changes for them).
    """

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        bracket = self._trial_info[trial.trial_id]
        replayed = [r for r in reported_results(trial)
                    if r.get(self._time_attr) is not None and r.get(self._metric) is not None]
        for result in replayed:
            bracket.on_result(trial, result[self._time_attr], self._metric_op * result[self._metric])
        if replayed:
            print(f"[tune] trial {trial.trial_id}: {len(replayed)} earlier result(s) restored into ASHA's rungs",
                  flush=True)


class SpecialistASHA(FIFOScheduler):
    """One :class:`ResumableASHA` per specialist: a trial's rungs hold only its specialist's trials.
    Trials start in the order the searcher made them (FIFO)."""

    def __init__(self, specialists: list[str], **asha: Any):
        super().__init__()
        self.by_specialist = {k: ResumableASHA(**asha) for k in specialists}

    def _of(self, trial: Any) -> ResumableASHA:
        return self.by_specialist[trial.config[SPECIALIST]]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        self._metric = metric or self._metric
        done = [s.set_search_properties(metric, mode, **spec) for s in self.by_specialist.values()]
        return all(done)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"{k}: {s.debug_string()}" for k, s in self.by_specialist.items())
