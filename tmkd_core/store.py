"""The artefact store: finished teachers and run records kept outside the data root (the cpu
study's `artefacts/cpu/`, in git), restored to a data root that lacks them, so that a fresh
clone (or a machine whose `data/` was wiped) continues a plan where it stopped and every table
can be recomputed from the committed records. A task still training is kept there as its last
epoch's checkpoint (`partial/`), so that it resumes on another machine; `--prune-store` removes
those no unfinished task resumes from. Teacher-output caches are rebuilt, not stored (hundreds
of MB). Each plan start's output is kept there too (`logs/`, `StoreLog`, `plan_wall_time`).

It knows tasks and files, nothing of comparisons.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .config import ExperimentConfig
from .experiment import Pipeline
from .utils import atomic_copy

if TYPE_CHECKING:
    from .scheduler import Task


def in_store(path: Path, cfg: ExperimentConfig, store: Path, folder: str = "") -> Path:
    """Where the store keeps a file of the data root (`path`, under `cfg.data.root`)."""
    return Path(store) / folder / path.relative_to(Path(cfg.data.root))


STORED_STAGES = ("rgb_teacher", "multiview_teacher", "student")  # caches are rebuilt: too large


def stored_copy(task: Task, store: Path) -> Path | None:
    """Where the store keeps `task`'s artefact (its path under the data root), or None for
    a stage that is not stored."""
    if task.stage not in STORED_STAGES:
        return None
    return in_store(task.artefact, task.cfg, store)


def stored_partial(task: Task, store: Path) -> Path | None:
    """Where the store keeps `task`'s resumable checkpoint while it is unfinished (under
    `partial/`), or None for a task that has none (a cache)."""
    if task.partial is None:
        return None
    return in_store(task.partial, task.cfg, store, "partial")


PARTIAL_FIELDS = ("epoch", "model", "optimizer", "scheduler", "history")  # what train.fit resumes from


def partial_epoch(path: Path) -> int:
    """The epoch a resumable checkpoint holds; DamagedArtifact if it is not one `fit` resumes."""
    from .utils import damaged, load_checkpoint

    state = load_checkpoint(path)
    if not isinstance(state, dict) or any(k not in state for k in PARTIAL_FIELDS):
        raise damaged(path, f"it is not a resumable checkpoint (it needs {', '.join(PARTIAL_FIELDS)})")
    return int(state["epoch"])


def keep_partial(task: Task, store: Path) -> None:
    """Copy a running task's resumable checkpoint into the store if it changed, so that a
    machine that loses its data root resumes the task from its last epoch, not its first.
    A checkpoint that vanishes meanwhile (its task just finished) is not an error."""
    kept = stored_partial(task, store)
    if kept is None:
        return
    try:
        if not kept.exists() or kept.read_bytes() != task.partial.read_bytes():
            atomic_copy(task.partial, kept)
    except FileNotFoundError:
        return


def check_artefact(task: Task, path: Path) -> None:
    """Raise DamagedArtifact unless `path` holds `task`'s artefact: a run record of this
    run's key and settings, or a checkpoint (loaded with weights_only) of this stage key."""
    pipe = Pipeline(task.cfg)
    if task.stage == "student":
        pipe._read_record(path)
    else:
        pipe.read_checkpoint(task.stage, path)


def sound_stored_copy(task: Task, store: Path, say=None) -> bool:
    """Whether the store holds `task`'s finished artefact and it passes `check_artefact`; a
    damaged one is named through `say`, if given."""
    from .utils import DamagedArtifact

    kept = stored_copy(task, store)
    if kept is None or not kept.exists():
        return False
    try:
        check_artefact(task, kept)
    except DamagedArtifact as exc:
        if say is not None:
            say(f"[plan] not restored, the task runs again: {exc} (the stored copy: {kept})")
        return False
    return True


def restore_artefacts(tasks: list[Task], store: Path, say=print) -> int:
    """Copy into the data root every stored artefact it lacks, each checked first
    (`check_artefact`; a bad one is named and skipped, so its task runs again), and the
    last epoch's checkpoint of each unfinished task (`stored_partial`) where the data root
    holds none or an earlier epoch; how many were copied. No finished artefact in the data
    root is overwritten."""
    from .utils import DamagedArtifact

    copied = 0
    for task in tasks:
        if task.done():
            continue
        if sound_stored_copy(task, store, say):
            atomic_copy(stored_copy(task, store), task.artefact)
            copied += 1
            continue
        partial = stored_partial(task, store)
        if partial is None or not partial.exists():
            continue
        try:  # an unfinished task's last epoch: it resumes from there
            epoch = partial_epoch(partial)
        except DamagedArtifact as exc:
            say(f"[plan] not restored, the task resumes from what data/ holds or starts afresh: {exc}")
            continue
        if task.partial.exists():  # a later epoch here is kept; an earlier one gives way
            try:
                if partial_epoch(task.partial) >= epoch:
                    continue
            except DamagedArtifact:
                pass
            say(f"[plan] {task.title}: the store's epoch {epoch} replaces an earlier checkpoint in {task.partial}")
        atomic_copy(partial, task.partial)
        copied += 1
    return copied


def keep_artefact(task: Task, store: Path, say=print) -> None:
    """Copy a finished task's artefact into the store, checked first (nothing for a cache),
    and drop its stored last epoch; a stored copy that differs (a run retrained with
    --force) is replaced."""
    kept = stored_copy(task, store)
    if kept is not None and not (kept.exists() and kept.read_bytes() == task.artefact.read_bytes()):
        check_artefact(task, task.artefact)
        if kept.exists():
            say(f"[plan] the store's copy of {task.title} differs from {task.artefact}: replaced")
        atomic_copy(task.artefact, kept)
    partial = stored_partial(task, store)
    if partial is not None:  # finished: its last epoch's checkpoint is no longer needed
        partial.unlink(missing_ok=True)


def stale_partials(tasks: list[Task], store: Path) -> list[Path]:
    """The store's last-epoch checkpoints that no unfinished task of `tasks` (the whole plan,
    as this checkout defines it) resumes from: those of tasks finished here or in the store
    (a stored copy that passes `check_artefact`: a damaged one leaves its task's epoch live),
    and those no task names (its key has changed since). `--prune-store` removes them."""
    live = {stored_partial(t, store) for t in tasks
            if t.partial is not None and not (t.done() or sound_stored_copy(t, store))}
    folder = Path(store) / "partial"
    return sorted(p for p in folder.rglob("*.pt") if p not in live) if folder.is_dir() else []


class StoreLog:
    """Every line the plan says, also kept in the store (`<store>/logs/<start>_plan.log`) once
    the plan has something to run, so that its output and wall time add up across machines
    and sessions (`plan_wall_time`). Lines said before that are written then."""

    def __init__(self, say: Callable[[str], None], store: Path):
        self.say, self.path = say, Path(store) / "logs" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_plan.log"
        self.held: list[str] | None = []

    def __call__(self, line: str) -> None:
        self.say(line)
        if self.held is not None:
            self.held.append(line)
            return
        with self.path.open("a") as f:
            f.write(line + "\n")

    def keep(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(line + "\n" for line in self.held or []))
        self.held = None


ELAPSED = re.compile(r"\| elapsed (\d+):(\d\d):(\d\d) \|")


START = re.compile(r"\[plan\] \d+ tasks, ")  # the line a start with work to do begins with


def plan_wall_time(log_dir: Path) -> tuple[int, float]:
    """(starts, seconds of wall time) of the plan logs in `log_dir`: each start's last
    `elapsed`, summed. A file may hold several starts: each begins at its `START` line, or
    where the elapsed time falls back (a log cut before that line)."""
    starts, seconds = 0, 0.0
    for path in sorted(Path(log_dir).glob("*.log")):
        last = None
        for line in path.read_text(errors="replace").splitlines():
            if START.match(line):
                starts, last = starts + 1, 0
                continue
            found = ELAPSED.search(line)
            if not found:
                continue
            h, m, sec = found.groups()
            now = int(h) * 3600 + int(m) * 60 + int(sec)
            if last is None or now < last:
                starts, last = starts + 1, 0
            seconds, last = seconds + now - last, now
    return starts, seconds
