"""Loading an experiment file and every strategy it names into a VariantSet, or refusing the whole of it.

A bad file yields one line per error, `path.to.field: problem`, as a strategy file does: the experiment's own
fields, then each variant's strategy (loaded and validated as dispatcher.core.strategy loads one), prefixed
with the variant's place (`variants.1.strategy: challenger.yaml: stages.0.name: ...`). Strategy paths are
read relative to the experiment file. Nothing of a refused file is used: the caller keeps what it had.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from config.errors import ConfigurationError
from dispatcher.core.experiments.arms import Arm, VariantSet, strategy_digest
from dispatcher.core.experiments.variants import Experiment
from dispatcher.core.strategy import Strategy, StrategyError, load_strategy


class ExperimentError(ConfigurationError, ValueError):
    """The experiment file, or a strategy it names, is unreadable or invalid; one `path: problem` line each."""

    def __init__(self, source: str, errors: list[str]):
        super().__init__(f"{source}: {len(errors)} error(s)\n" + "\n".join(errors))
        self.source = source
        self.errors = errors


def _field_lines(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"{path}: {error['msg'].removeprefix('Value error, ')}")
    return lines


def parse_experiment(path: Path) -> Experiment:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ExperimentError(str(path), [f"(file): {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise ExperimentError(str(path), [f"(yaml): {exc}"]) from None
    if not isinstance(data, dict):
        raise ExperimentError(str(path), ["(top level): expected a mapping with `salt` and `variants`"])
    try:
        return Experiment.model_validate(data)
    except ValidationError as exc:
        raise ExperimentError(str(path), _field_lines(exc)) from None


def load_experiment(path: Path) -> VariantSet:
    """The experiment file's variant set, every strategy loaded and validated; ExperimentError otherwise."""
    experiment = parse_experiment(path)
    arms, problems = [], []
    for index, variant in enumerate(experiment.variants):
        strategy_path = path.parent / variant.strategy
        try:
            strategy: Strategy = load_strategy(strategy_path)
        except StrategyError as exc:
            problems += [f"variants.{index}.strategy: {variant.strategy}: {line}" for line in exc.errors]
            continue
        arms.append(Arm(variant.name, strategy, strategy_digest(strategy), variant.weight))
    if problems:
        raise ExperimentError(str(path), problems)
    return VariantSet(arms, experiment.salt, experiment.holdout)


def load_variants(experiment: Path | None, strategy_path: Path) -> VariantSet:
    """What a process works with: the experiment file's set, or the one strategy as the champion."""
    if experiment is not None:
        return load_experiment(experiment)
    return VariantSet.single(load_strategy(strategy_path))
