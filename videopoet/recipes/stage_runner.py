"""Running a recipe of pipeline stages: one folder per stage in the run folder, each with its
record ``stage.json``, and ``run.json``.

A stage's key is a SHA-256 of the stage, its options, its merged config (less how it runs:
threads, device) and its inputs (an earlier stage's output by that stage's key, a
path by the content of its files). A stage whose
record says ``done`` with the same key, and whose outputs are still there, is skipped. Any
other stage runs in its folder:

- when its inputs changed (an earlier stage made something else) or ``force`` is given, the
  folder is emptied first: the stage starts over;
- otherwise it goes on from what the folder holds: training resumes from its checkpoints (a
  longer ``train.steps`` continues), tokenized chunks are kept, the rest is simply redone.

A stage that stops before its work is done (``train.stop_at``, a time limit) is recorded as
``stopped`` and raises :class:`~videopoet.recipes.errors.StageStopped`; running again goes on.
Wall time is recorded per stage, summed over the attempts that continued it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videopoet.core.errors import ConfigError, VideoPoetError
from videopoet.recipes.errors import StageStopped, StepError
from videopoet.recipes.schema import StepRef
from videopoet.recipes.validate import Plan, PlannedStep

if TYPE_CHECKING:
    from videopoet.recipes.runner import RecipeResult

#: bump when the meaning of a key changes, so old stage folders are not reused
KEY_VERSION = 1


def _what_it_makes(config: Any) -> Any:
    """The config less the ``train`` settings that say how it runs on this machine
    (``videopoet.core.training.RUN_FIELDS``), so more cores or another device do not redo a
    finished stage."""
    from videopoet.core.training import RUN_FIELDS

    if not isinstance(config, dict) or not isinstance(config.get("train"), dict):
        return config
    train = {k: v for k, v in config["train"].items() if k not in RUN_FIELDS}
    return config | {"train": train}


RECORD_NAME, RUN_NAME = "stage.json", "run.json"


@dataclass
class StageResult:
    """One stage of a run: its outputs (paths), whether it was skipped or resumed."""

    name: str
    target: str  # the stage
    folder: Path
    outputs: dict[str, Path]
    skipped: bool
    resumed: bool
    wall_s: float  # this stage's wall time, over the attempts that made its outputs
    result: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    kind: str = "stage"

    @property
    def files(self) -> list[Path]:
        return list(self.outputs.values())

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "target": self.target,
            "skipped": self.skipped,
            "resumed": self.resumed,
            "outputs": {k: str(v) for k, v in self.outputs.items()},
            "wall_s": round(self.wall_s, 1),
        }


def path_identity(path: Path) -> str:
    """A folder by its files (see ``bundle_identity``), a file by its content."""
    from videopoet.core.serialization import file_sha256
    from videopoet.recipes.runner import bundle_identity

    return bundle_identity(path) if path.is_dir() else file_sha256(path)


def command_line(plan: Plan, out: Path) -> str:
    """The ``videopoet run`` command that makes (and continues) this run."""
    source = plan.loaded.source
    recipe = source.name if source.builtin or source.path is None else str(source.path)
    # options may stand anywhere among the overrides (videopoet.cli.IntermixedParser)
    return shlex.join(["videopoet", "run", recipe, *plan.loaded.overrides, "--out", str(out)])


def _sha(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _read(path: Path) -> dict[str, Any]:
    from videopoet.core.serialization import load_json

    try:
        record = load_json(path)
    except ConfigError:
        return {}
    return record if isinstance(record, dict) else {}


def _now() -> str:
    from videopoet.recipes.runner import _now as now

    return now()


class StageRunner:
    """Runs a plan of stages into ``out``; see the module docstring."""

    def __init__(self, planned: Plan, out: Path, force: bool, progress: bool) -> None:
        from videopoet.recipes.stage_work import RunInfo

        self.plan, self.out, self.force, self.progress = planned, Path(out), force, progress
        self.root = self.out.resolve()  # stages get absolute paths: the same from any cwd
        self.keys: dict[str, str] = {}
        self.results: dict[str, StageResult] = {}
        self.records: list[dict[str, Any]] = []
        self.started = _now()
        recipe = planned.loaded.recipe
        self.info = RunInfo(
            recipe=recipe.name,
            source=str(planned.loaded.source),
            command=command_line(planned, self.out),
            parameters=dict(recipe.inputs),
            out=self.root,
        )

    def run(self) -> RecipeResult:
        from tqdm.auto import tqdm

        from videopoet.recipes.runner import RecipeResult

        result = RecipeResult(self.plan.name, self.out, self.out / RUN_NAME)
        self.root.mkdir(parents=True, exist_ok=True)
        bar = tqdm(
            total=len(self.plan.steps),
            desc=f"recipe {self.plan.name}",
            unit="stage",
            disable=not self.progress,
        )
        step = None
        try:
            for step in self.plan.steps:
                bar.set_postfix_str(step.name)
                done = self._step(step)
                self.results[step.name] = result.steps[step.name] = done
                self._write_run("running")
                bar.update(1)
        except StageStopped as exc:
            self._write_run("stopped", step.name if step else None, exc)
            raise
        except BaseException as exc:
            self._write_run("failed", step.name if step else None, exc)
            raise
        finally:
            bar.close()
        self._write_run("ok")
        return result

    # -------------------------------------------------------------- one stage

    def _key(self, step: PlannedStep) -> tuple[str, str]:
        from videopoet.recipes.stage_work import key_paths

        inputs: dict[str, Any] = {}
        for name, value in step.inputs.items():
            if isinstance(value, StepRef):
                inputs[name] = {"step": value.step, "key": self.keys[value.step]}
            else:
                inputs[name] = {"path": path_identity(value.path)}
        inputs_key = _sha({"version": KEY_VERSION, "stage": step.target, "inputs": inputs})
        options = {k: v for k, v in step.options.items() if k not in ("config", "overrides")}
        reads = {k: path_identity(p) for k, p in key_paths(step.target, step.options).items()}
        key = _sha(
            {
                "version": KEY_VERSION,
                "inputs": inputs_key,
                "options": options,
                "config": _what_it_makes(step.config),  # the YAML with its overrides
                "reads": reads,
            }
        )
        return key, inputs_key

    def _step(self, step: PlannedStep) -> StageResult:
        key, inputs_key = self._key(step)
        self.keys[step.name] = key
        folder = self.root / step.name
        record = _read(folder / RECORD_NAME)
        if folder.is_dir() and not record and any(folder.iterdir()):
            raise ConfigError(
                "out",
                str(self.out),
                f"a run folder of recipe {self.plan.name}: {folder} holds other files (no "
                f"{RECORD_NAME}); choose another --out",
            )
        if not self.force and record.get("status") == "done" and record.get("key") == key:
            outputs = {k: (self.root / v).resolve() for k, v in record.get("outputs", {}).items()}
            if all(p.exists() for p in outputs.values()):
                self._note(f"{step.name}: done earlier, skipped")
                self.records.append(record | {"skipped": True})
                return StageResult(
                    step.name,
                    step.target,
                    folder,
                    outputs,
                    skipped=True,
                    resumed=False,
                    wall_s=float(record.get("seconds", 0.0)),
                    result=record.get("result", {}),
                    key=key,
                )
        return self._execute(step, key, inputs_key, folder, record)

    def _execute(
        self,
        step: PlannedStep,
        key: str,
        inputs_key: str,
        folder: Path,
        record: dict[str, Any],
    ) -> StageResult:
        from videopoet.core.serialization import save_json
        from videopoet.recipes.model_card import machine
        from videopoet.recipes.stage_work import WORK, StageContext
        from videopoet.recipes.stages import STAGES

        fresh = (
            self.force
            or not record
            or record.get("stage") != step.target
            or record.get("inputs") != inputs_key
        )
        if fresh and folder.exists():
            shutil.rmtree(folder)  # the stage's own folder: what an earlier attempt left
        folder.mkdir(parents=True, exist_ok=True)
        carried = not fresh and STAGES[step.target].resumes
        entry: dict[str, Any] = {
            "name": step.name,
            "stage": step.target,
            "key": key,
            "inputs": inputs_key,
            "status": "running",
            "attempts": (record.get("attempts", 0) if carried else 0) + 1,
            "seconds": float(record.get("seconds", 0.0)) if carried else 0.0,
            "started": _now(),
            "machine": machine(),
        }
        save_json(folder / RECORD_NAME, entry)
        self._note(f"{step.name}: {'continuing' if carried else 'running'} stage {step.target}")
        self.info.records = list(self.records)
        context = StageContext(
            step=step.name,
            folder=folder,
            inputs=self._inputs(step),
            options=dict(step.options),
            config=step.config,
            progress=self.progress,
            run=self.info,
        )
        began = time.perf_counter()
        try:
            outcome = WORK[step.target](context)
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            entry |= {
                "status": status,
                "seconds": entry["seconds"] + time.perf_counter() - began,
                "error": f"{type(exc).__name__}: {exc}",
            }
            save_json(folder / RECORD_NAME, entry)
            if isinstance(exc, VideoPoetError | ValueError) and not isinstance(exc, StepError):
                raise StepError(step.name, f"stage {step.target}", exc) from exc
            raise
        if outcome.restarted:  # what the earlier attempts did was thrown away
            carried, entry["attempts"], entry["seconds"] = False, 1, 0.0
        entry |= {
            "machine": machine(),  # after the work: the threads it ran with
            "status": "stopped" if outcome.stopped else "done",
            "seconds": round(entry["seconds"] + time.perf_counter() - began, 2),
            "finished": _now(),
            "outputs": {k: os.path.relpath(v, self.root) for k, v in outcome.outputs.items()},
            "result": json.loads(json.dumps(outcome.result, default=str)),
        }
        save_json(folder / RECORD_NAME, entry)
        self.records.append(entry | {"skipped": False})
        if outcome.stopped:
            raise StageStopped(step.name, step.target, outcome.stopped)
        return StageResult(
            step.name,
            step.target,
            folder,
            {k: Path(v).resolve() for k, v in outcome.outputs.items()},
            skipped=False,
            resumed=carried,
            wall_s=entry["seconds"],
            result=entry["result"],
            key=key,
        )

    def _inputs(self, step: PlannedStep) -> dict[str, Path]:
        out = {}
        for name, value in step.inputs.items():
            if isinstance(value, StepRef):
                out[name] = self.results[value.step].outputs[value.output]
            else:
                out[name] = value.path
        return out

    def _note(self, message: str) -> None:
        if self.progress:
            from videopoet.recipes.stage_work import note

            note(message)

    # -------------------------------------------------------------- run.json

    def _write_run(
        self, status: str, failed: str | None = None, error: BaseException | None = None
    ) -> None:
        from videopoet.recipes.runner import write_run_record

        steps = [
            {k: r.get(k) for k in ("name", "stage", "status", "skipped", "seconds", "key")}
            | {"outputs": r.get("outputs", {}), "attempts": r.get("attempts")}
            for r in self.records
        ]
        write_run_record(
            self.root / RUN_NAME,
            self.plan,
            {"command": self.info.command},
            steps,
            status=status,
            started=self.started,
            forced=self.force,
            failed=failed,
            error=error,
        )
